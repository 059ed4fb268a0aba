//! The `fast_open` target: see `stack::fuzzing::fast_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stack::fuzzing::fast_open(data);
});
