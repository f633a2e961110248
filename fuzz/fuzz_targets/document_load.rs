#![no_main]
//! See followup_server::fuzzing::document_load.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    followup_server::fuzzing::document_load(data);
});
