#![no_main]
//! Fuzz target `scram`: see `harness::Target::Scram` and FUZZING.md.

#[global_allocator]
static ALLOC: loggate_fuzz::alloc::Counting = loggate_fuzz::alloc::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    loggate_fuzz::fuzz(loggate_fuzz::harness::Target::Scram, data);
});
