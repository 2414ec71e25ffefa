//! The fuzz targets' shared code: the counting allocator and what each target runs and
//! checks (`harness.rs`, also compiled into the main package's `tests/fuzz_regressions.rs`).

pub mod alloc;
pub mod harness;

/// Runs one fuzz input of `target`, armed: the allocator aborts past the bound.
///
/// With `LOGGATE_FUZZ_SKIP_HUGE=1` in the environment (FUZZING.md), reservations of
/// 1 GiB or more are let through unreserved ([`alloc::skip_huge`]) so that fuzzing goes on
/// past the known count-driven reservations.
pub fn fuzz(target: harness::Target, data: &[u8]) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("LOGGATE_FUZZ_SKIP_HUGE").is_some_and(|v| v == "1") {
            alloc::skip_huge();
        }
    });
    harness::run(target, data, true);
}
