//! The `recovery` target: see `stack::fuzzing::recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stack::fuzzing::recovery(data);
});
