//! The `offload` target: see `stack::fuzzing::offload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stack::fuzzing::offload(data);
});
