#![no_main]
//! See followup_server::fuzzing::admin_json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    followup_server::fuzzing::admin_json(data);
});
