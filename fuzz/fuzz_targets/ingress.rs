//! The `ingress` target: packets into a whole stack (see `connectx_fuzz::ingress`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    connectx_fuzz::ingress(data);
});
