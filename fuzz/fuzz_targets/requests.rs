//! Status, trace, rerun and escalation requests (list, get, resolve), JSON or MessagePack by the first byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| baton_fuzz::requests(data));
