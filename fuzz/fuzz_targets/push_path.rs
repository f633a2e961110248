#![no_main]
//! See followup_server::fuzzing::push_path.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    followup_server::fuzzing::push_path(data);
});
