//! Agent names, step ids, escalation ids, result subjects and `Content-Type` values.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::names(data));
