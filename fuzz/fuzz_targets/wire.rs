//! The `wire` target: see `stack::fuzzing::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stack::fuzzing::wire(data);
});
