#![no_main]
//! Both directions under a tenant prefix rule: see `kafka_filter_fuzz::scenario` and `oracle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kafka_filter_fuzz::scenario::rule(&kafka_filter_fuzz::oracle::PREFIX, data)
});
