//! The fuzz targets' shared code: the counting allocator and what each target runs and
//! checks (`harness.rs`, also compiled into the main package's `tests/fuzz_regressions.rs`).

pub mod alloc;
pub mod harness;

/// Runs one fuzz input of `target`, armed: the allocator aborts past the bound.
pub fn fuzz(target: harness::Target, data: &[u8]) {
    harness::run(target, data, true);
}
