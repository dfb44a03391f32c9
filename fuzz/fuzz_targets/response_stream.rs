#![no_main]
//! See `kafka_filter_fuzz::scenario::response_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kafka_filter_fuzz::scenario::response_stream(data));
