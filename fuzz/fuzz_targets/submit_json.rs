//! Submissions (`baton.jobs.submit`, `baton.jobs.enqueue`) in JSON: decode, depth, plan validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::submit(baton_protocol::Encoding::Json, data));
