//! Plans as JSON documents: parse, validate, and re-read the stored form.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::plan_json(data));
