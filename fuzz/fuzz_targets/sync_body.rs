#![no_main]
//! See followup_server::fuzzing::sync_body.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    followup_server::fuzzing::sync_body(data);
});
