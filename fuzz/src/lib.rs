//! The fuzz targets' shared code: the counting allocator and what each target runs and
//! checks (`harness.rs`, also compiled into the main package's `tests/fuzz_regressions.rs`).

pub mod alloc;
pub mod harness;

/// Runs one fuzz input of `target`, armed: the allocator aborts past the bound.
///
/// With `LOGGATE_FUZZ_SKIP_HUGE=1` (or `=<bytes>`) in the environment (FUZZING.md),
/// single allocations of 1 GiB (or that many bytes, at least 1 MiB) or more are let
/// through unreserved ([`alloc::skip_huge`]) so that fuzzing goes on past the known
/// count-driven reservations.
pub fn fuzz(target: harness::Target, data: &[u8]) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        match std::env::var("LOGGATE_FUZZ_SKIP_HUGE").as_deref() {
            Ok("1") => alloc::skip_huge(1 << 30),
            Ok(n) => {
                if let Ok(n) = n.parse() {
                    alloc::skip_huge(n)
                }
            }
            Err(_) => {}
        }
    });
    harness::run(target, data, true);
}
