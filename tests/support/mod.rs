//! Helpers for the tests that run against the Linux kernel: each runs on a thread of its own,
//! in a network namespace of its own, with its own TUN device, and leaves nothing behind.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread::JoinHandle;

use connectx_api::Net;

/// Run `f` on a new thread inside a new network namespace (loopback up). Returns `None` when
/// the test is skipped for lack of root (it prints one line saying so; with
/// `CONNECTX_REQUIRE_ROOT_TESTS` set, a missing root fails instead).
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !tun_driver::require_root(name) {
        return None;
    }
    let handle = std::thread::spawn(move || {
        tun_driver::netns::unshare_net().expect("a private network namespace");
        f()
    });
    match handle.join() {
        Ok(v) => Some(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The usual single-device setup: the stack at 192.0.2.2 and 2001:db8::2 on `cx0`, the kernel
/// at 192.0.2.1 and 2001:db8::1.
pub fn net() -> Net {
    usual(Net::builder().tun("cx0"))
}

/// The usual addresses on the device `builder` names (and whatever else it sets).
pub fn usual(builder: connectx_api::NetBuilder) -> Net {
    builder
        .address("192.0.2.2/24")
        .address("2001:db8::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8::1/64")
        .start()
        .expect("the stack starts")
}

/// A `Write` a test reads back: what a stack's pcap capture wrote.
#[derive(Clone, Default)]
pub struct PcapBuffer(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for PcapBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A kernel TCP echo server on `addr` (bound in the calling thread's namespace), serving
/// `count` connections: echoes every byte, closes after the peer's FIN.
pub fn kernel_echo(addr: &str, count: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).expect("kernel listener");
    let local = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut s, _) = listener.accept().expect("kernel accept");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    (local, h)
}

/// A kernel TCP client that sends `data`, half-closes, and returns what it read back.
pub fn kernel_client(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(to).expect("kernel connect");
    s.write_all(data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    back
}

/// FNV-1a, 64 bits: enough to tell two 10 MB streams apart in a message.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Deterministic test bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A counter of the kernel's `TcpExt` MIB in the calling thread's namespace.
pub fn tcp_ext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines[0], lines[1]);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt counter {name}"))
}

/// Wait for a tool's one "ready" line on stderr (the rest of stderr stays with the child), so
/// that the test talks to a server that listens. Fails if the tool exits first.
#[track_caller]
pub fn wait_ready(child: &mut std::process::Child) -> String {
    let err = child.stderr.as_mut().expect("stderr piped");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = err.read(&mut byte).expect("reading the tool's stderr");
        assert_eq!(
            n,
            1,
            "exited before it was ready: {}",
            String::from_utf8_lossy(&line)
        );
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    assert!(line.contains("ready"), "not a ready line: {line}");
    line
}

/// Half-close `fd` and read until the peer closes.
pub fn shutdown_and_read_all(net: &Net, fd: connectx_api::Fd) -> Vec<u8> {
    net.shutdown(fd, connectx_api::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = net.recv(fd, &mut buf).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A kernel peer behind a router: a thread in a second private network namespace (made by
/// this one), joined to the calling thread's namespace by a veth pair, `cxr0` here
/// (198.51.100.1/24) and `cxr1` there (198.51.100.2/24, default route through here), with
/// forwarding on here. Packets between that peer and the stack cross this namespace, where
/// nftables can drop them on the way as a lossy network would (a drop on the sending host's own
/// egress is not loss: its TCP just sends the segment again). Dropping it ends the thread; the
/// namespace goes with its last socket.
pub struct RoutedPeer {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl RoutedPeer {
    pub const ADDR: &'static str = "198.51.100.2";

    /// Make the namespace and the link (call from the router's namespace).
    pub fn new() -> RoutedPeer {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tun_driver::netns::unshare_net().expect("a second private network namespace");
            let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            ready
                .send(format!("/proc/{}/ns/net", me.display()))
                .unwrap();
            for job in queue {
                job();
            }
        });
        let path = started.recv().expect("the peer's namespace");
        let peer = RoutedPeer { jobs };
        run_cmd("ip link add cxr0 type veth peer name cxr1");
        run_cmd(&format!("ip link set cxr1 netns {path}"));
        run_cmd("ip addr add 198.51.100.1/24 dev cxr0");
        run_cmd("ip link set cxr0 up");
        tun_driver::netns::set_sysctl("net/ipv4/ip_forward", "1").expect("forwarding, here");
        peer.run(|| {
            // One segment per packet across the link, as on a wire: what the router drops is
            // a segment.
            run_cmd("ip link set dev cxr1 gso_max_segs 1");
            run_cmd("ip link set lo up");
            run_cmd("ip addr add 198.51.100.2/24 dev cxr1");
            run_cmd("ip link set cxr1 up");
            run_cmd("ip route add default via 198.51.100.1");
        });
        peer
    }

    /// Run `f` in the peer's namespace and wait for its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("the peer's thread");
        rx.recv().expect("the peer's job finished")
    }
}

/// Run a command line (split on spaces) in the calling thread's namespace; fail on error.
pub fn run_cmd(line: &str) {
    let mut words = line.split(' ');
    let out = std::process::Command::new(words.next().unwrap())
        .args(words)
        .output()
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PY_CLIENT: &str = r#"
import socket, sys
host, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT; the socket stays blocking
s.connect((host, port))
s.sendall(data)
s.shutdown(socket.SHUT_WR)
out = b''
while True:
    b = s.recv(4096)
    if not b:
        break
    out += b
sys.stdout.write(out.decode())
"#;

/// A kernel TCP client with Fast Open (`TCP_FASTOPEN_CONNECT`, from Python) in the calling
/// thread's namespace: sends `data`, half-closes, returns what it read back.
pub fn kernel_tfo_client(host: &str, port: u16, data: &str) -> String {
    // Bounded, so that a lost connection fails the test instead of hanging it.
    let out = Command::new("timeout")
        .args([
            "20",
            "python3",
            "-c",
            PY_CLIENT,
            host,
            &port.to_string(),
            data,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "kernel client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
