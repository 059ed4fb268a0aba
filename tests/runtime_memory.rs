//! What an idle connection costs in resident memory does not depend on what the program did
//! before (root; a network namespace and TUN device of its own).
//!
//! Each TCP socket has a receive and a send buffer (1 MB each by default) that hold nothing
//! until data comes: pages the kernel maps only once written. glibc hands out an allocation that
//! large as fresh pages (`mmap`), but after the program frees one, it raises the size from which
//! it does so, and the next ones come from its heap, memory freed before zeroed by hand, page by
//! page. Each idle connection then held many of its buffers' pages: here, after another stack
//! had come and gone, 53 KB instead of 8.5 KB; in the bench's `async` section, run after
//! another, 286 KB instead of 16.5 KB, and ten seconds to open 10,000 connections instead of
//! half a second. The stack pins that size when it starts.
//!
//! Alone in its binary: it reads the process's resident memory.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use connectx_api::TcpStream;
use support::{in_netns, net};

const CONNECTIONS: usize = 500;

/// `VmRSS` of `/proc/self/status`, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// `n` connections from `net` to a kernel listener: the stack's ends and the kernel's.
fn open(net: &connectx_api::Net, n: usize) -> (Vec<TcpStream>, Vec<std::net::TcpStream>) {
    let listener = TcpListener::bind("192.0.2.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        (0..n)
            .map(|_| listener.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let ours = (0..n)
        .map(|_| TcpStream::connect(net, to).unwrap())
        .collect();
    (ours, accepted.join().unwrap())
}

#[test]
fn an_idle_connection_costs_the_same_after_another_stack_came_and_went() {
    in_netns(
        "an_idle_connection_costs_the_same_after_another_stack_came_and_went",
        || {
            // Before: another stack, with connections, closed and gone (their buffers freed).
            {
                let first = net();
                let conns = open(&first, CONNECTIONS);
                drop(conns);
                first.stop();
            }
            let net = net();
            let before = rss_kib();
            let conns = open(&net, CONNECTIONS);
            std::thread::sleep(Duration::from_millis(100));
            let per_conn = (rss_kib().saturating_sub(before)) * 1024 / CONNECTIONS as u64;
            // 8.5 KB each; 53 KB when glibc handed the buffers out from its heap.
            assert!(
                per_conn < 24 << 10,
                "{per_conn} bytes of resident memory per idle connection"
            );
            drop(conns);
        },
    );
}
