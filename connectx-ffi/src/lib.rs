//! `libconnectx`: the stack for C programs.
//!
//! Darwin's `connectx(2)` and `disconnectx(2)` under their own names and with Darwin's exact
//! signatures, types and constants, so that the call sites of a program written for Darwin
//! compile as they are; around them the socket calls a program needs, prefixed `cx_` so that
//! they never clash with libc's (`cx_socket`, `cx_send`, `cx_poll`, …). Each returns what the
//! libc call of the same name returns and sets `errno` as it would. `include/connectx.h`
//! declares everything; `tests/header.rs` checks it against the functions here.
//!
//! A process runs one stack at a time: `cx_net_new`, the devices and addresses, `cx_net_start`;
//! the socket calls then act on it until `cx_net_free`. Its descriptors are small integers of
//! its own (from 3 up), not kernel descriptors: wait on them with `cx_poll`, not `poll(2)`.
//!
//! Layout: [`abi`] holds every `extern "C"` function and all of this crate's `unsafe` (each
//! block says why it is sound); `net` the process's stack and the handle that describes it.
//! No panic crosses into C: a call that panics returns its failure value with `errno` `EIO`.
//!
//! A program in Rust and C can start the stack in Rust and [`install`] it for its C part; the
//! descriptors are the same on both sides ([`running`] gives the Rust handle).

pub mod abi;
mod net;

pub use net::{install, running, uninstall};
