#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wolf_rs::fuzz_harness::state_identity(data));
