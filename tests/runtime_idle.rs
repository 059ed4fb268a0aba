//! The runtime thread sleeps when there is nothing to do: no busy polling.
//!
//! This is not a timing test: a busy loop burns the whole second (100 clock ticks); a sleeping
//! runtime burns almost none. The bound sits far between the two.

mod support;

use std::time::Duration;

use connectx_api::TcpStream;
use support::{in_netns, kernel_echo, net};

/// CPU time (user + system, in clock ticks) of this process's threads named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut total = 0;
    let mut found = false;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        found = true;
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        total += fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        total += fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(
        found,
        "no thread named {name}: the measurement would be empty"
    );
    total
}

#[test]
fn runtime_thread_sleeps_when_idle() {
    in_netns("runtime_thread_sleeps_when_idle", || {
        let net = net();
        let (addr, _echo) = kernel_echo("192.0.2.1:7", 1);
        // An open, idle connection and the stack's timers must not keep the thread awake.
        let _conn = TcpStream::connect(&net, addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let before = thread_ticks("connectx-runtim");
        std::thread::sleep(Duration::from_secs(2));
        let used = thread_ticks("connectx-runtim") - before;
        // 2 s of a busy loop is 200 ticks; a sleeping thread uses 0 or 1.
        assert!(
            used < 20,
            "the runtime thread used {used} ticks of CPU in 2 s of idleness"
        );
    });
}
