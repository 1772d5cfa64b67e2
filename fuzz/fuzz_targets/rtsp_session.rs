#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wolf_rs::fuzz_harness::rtsp_session(data));
