//! The `icmp` target: see `stack::fuzzing::icmp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stack::fuzzing::icmp(data);
});
