#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wolf_protocol::fuzz_harness::xml(data));
