//! Plans as JSON/YAML text (`Plan::from_text`): parse, validate, and re-read the stored form.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::plan_text(data));
