//! Sysctls of a network namespace (needs root). The host's are only ever read.

use std::sync::mpsc;
use std::thread;

use tun_driver::netns::{require_root, set_sysctl, sysctl, unshare_net};

const FASTOPEN: &str = "net/ipv4/tcp_fastopen";

#[test]
fn sysctls_are_per_namespace() {
    if !require_root("sysctls_are_per_namespace") {
        return;
    }
    let host = sysctl(FASTOPEN).unwrap();
    let value = if host == "3" { "1" } else { "3" };

    let (set_tx, set_rx) = mpsc::channel();
    let (checked_tx, checked_rx) = mpsc::channel::<()>();
    let namespaced = thread::spawn(move || {
        unshare_net().unwrap();
        set_sysctl(FASTOPEN, value).unwrap();
        assert_eq!(sysctl(FASTOPEN).unwrap(), value);
        // Threads spawned in the namespace are in it too.
        let seen = thread::spawn(|| sysctl(FASTOPEN).unwrap()).join().unwrap();
        assert_eq!(seen, value);
        assert!(set_sysctl(FASTOPEN, "not a number").is_err());
        assert!(set_sysctl("net/ipv4/no_such_sysctl", "1").is_err());
        set_tx.send(()).unwrap();
        // Keep the namespace alive until the host has been checked.
        let _ = checked_rx.recv();
    });

    // This thread is still in the host's namespace, which is unchanged.
    let namespace_ready = set_rx.recv().is_ok();
    if namespace_ready {
        assert_eq!(
            sysctl(FASTOPEN).unwrap(),
            host,
            "the host's value is unchanged"
        );
    }
    drop(checked_tx);
    if let Err(panic) = namespaced.join() {
        std::panic::resume_unwind(panic);
    }
    assert!(namespace_ready);
}
