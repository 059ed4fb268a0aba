//! The `api` target: API calls interleaved with packets (see `connectx_fuzz::api`).
#![no_main]

libfuzzer_sys::fuzz_target!(|ops: Vec<connectx_fuzz::Op>| {
    connectx_fuzz::api(ops);
});
