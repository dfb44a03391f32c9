#![no_main]
//! Both directions under ACLs: see `kafka_filter_fuzz::scenario` and `acl_oracle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kafka_filter_fuzz::scenario::acl(data));
