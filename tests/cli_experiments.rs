//! The experiment tools of `tun_client` and `tun_server` against the Linux kernel: `--pcap`
//! (read back by tcpdump, tshark and a small reader here), `--cookie-cache` across processes,
//! the impairment flags, and their bad input. Each kernel test runs in a network namespace of
//! its own, with addresses from 192.0.2.0/24 only.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use connectx_api::CookieKey;
use stack::fastopen::cache_file;
use support::{in_netns, tcp_ext};
use tun_driver::netns::set_sysctl;
use tun_driver::Device;

/// The kernel's Fast Open key in the tests' namespaces, so that its cookie is known.
const KEY: &str = "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4";
const STACK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const KERNEL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

// ----- running the tools -----

/// An example binary `cargo test` built next to this test.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

#[track_caller]
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(example(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything about a run, for assertion messages.
fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `tun_client` on its own TUN device `cx0` (the stack at 192.0.2.2, the kernel at 192.0.2.1),
/// connecting to `to`, with `extra` flags and `--json`.
#[track_caller]
fn client(to: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--tun",
        "cx0",
        "--local",
        "192.0.2.2/24",
        "--peer",
        "192.0.2.1/24",
        "--connect",
        to,
        "--json",
    ];
    args.extend_from_slice(extra);
    run("tun_client", &args)
}

/// The connection lines of a `--json` run (all lines but the counters).
fn conn_lines(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"conn\":"))
        .map(str::to_owned)
        .collect()
}

/// The raw text of a JSON field's value in one of the tools' lines (numbers, `null`, `true`,
/// quoted strings without commas).
#[track_caller]
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no field {name} in {line}"))
        + key.len();
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    &rest[..end]
}

#[track_caller]
fn number(line: &str, name: &str) -> u64 {
    let v = field(line, name);
    v.parse()
        .unwrap_or_else(|_| panic!("{name} is `{v}`, not a number, in {line}"))
}

/// A text of `len` letters and digits (the JSON `received` field shows it as is).
fn long_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    support::pattern(len)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The cookie the kernel issues 192.0.2.2 under [`KEY`], in hex.
fn kernel_cookie_hex() -> String {
    let key: CookieKey = KEY.parse().unwrap();
    let cookie = key.cookie(STACK.into(), KERNEL.into()).unwrap();
    cookie
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kernel's Fast Open client and server in this namespace, with the known key. Set before
/// any listener opens.
fn kernel_fast_open() {
    // 0x1 client, 0x2 server, 0x400 server on every listener without the socket option.
    set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
    set_sysctl("net/ipv4/tcp_fastopen_key", KEY).unwrap();
}

/// A tool the test needs on PATH; `None` (after saying so) when it is missing and that is
/// allowed, a failure under `CONNECTX_REQUIRE_ROOT_TESTS`, as CI installs them.
fn tool_or_skip(tool: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CONNECTX_REQUIRE_ROOT_TESTS").is_some_and(|v| !v.is_empty()) {
            panic!("{test}: `{tool}` is not on PATH and CONNECTX_REQUIRE_ROOT_TESTS is set");
        }
        eprintln!("skipped: {test} needs `{tool}`");
    }
    found
}

/// `tcpdump -nn [extra] -r FILE`: its stdout, one line per packet (without -A/-v); fails the
/// test unless it exits 0.
#[track_caller]
fn tcpdump(tcpdump: &Path, file: &Path, extra: &[&str]) -> String {
    let out = Command::new(tcpdump)
        .arg("-nn")
        .args(extra)
        .arg("-r")
        .arg(file)
        .output()
        .expect("tcpdump runs");
    assert!(out.status.success(), "tcpdump -r failed: {}", show(&out));
    assert!(
        text(&out.stderr).contains("link-type RAW"),
        "{}",
        show(&out)
    );
    text(&out.stdout)
}

// ----- a scratch directory, the kernel's side of a device, echo servers -----

/// A directory of this test's own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "connectx-cli-experiments-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TUN device this test creates, the kernel at 192.0.2.1/24 on it, handed to a tool with
/// `--tun-fd`. It outlives the tool, so the kernel's packet counters of the device can be read
/// afterwards: the kernel counts a packet the moment the stack reads or writes it.
struct KernelSide {
    device: Device,
    name: String,
}

impl KernelSide {
    fn new(name: &str) -> KernelSide {
        // No IPv6 on the device: no router solicitations among the captured packets.
        set_sysctl("net/ipv6/conf/default/disable_ipv6", "1").unwrap();
        let device = Device::create(name).unwrap();
        let link = device.link().unwrap();
        link.add_address(KERNEL.into(), 24).unwrap();
        link.set_up(true).unwrap();
        tun_driver::make_inheritable(device.as_fd()).unwrap();
        KernelSide {
            device,
            name: name.to_owned(),
        }
    }

    fn fd(&self) -> String {
        self.device.as_raw_fd().to_string()
    }

    /// Packets the kernel received from the stack and sent to it, from
    /// `/proc/thread-self/net/dev` (this thread's namespace).
    fn packets(&self) -> (u64, u64) {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let line = dev
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{}:", self.name)))
            .unwrap_or_else(|| panic!("{} not in /proc/net/dev:\n{dev}", self.name));
        let fields: Vec<u64> = line
            .split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        // rx_bytes rx_packets … (8 receive fields), tx_bytes tx_packets …
        (fields[1], fields[9])
    }
}

/// A kernel TCP echo server on `addr` that accepts until dropped: echoes every byte, closes
/// after the peer's FIN.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn new(addr: &str) -> Echo {
        let listener = TcpListener::bind(addr).expect("kernel listener");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            std::thread::spawn(move || echo_stream(s));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo_stream(mut s: std::net::TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
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

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- reading a capture file ourselves -----

/// One IPv4 TCP packet of a capture.
#[derive(Debug)]
struct Segment {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    flags: u8,
    payload: usize,
}

const SYN: u8 = 0x02;

/// The packets of a classic pcap file with link type raw IP, checking its header.
#[track_caller]
fn pcap_packets(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 24, "no pcap header: {} bytes", b.len());
    let le = match b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        _ => panic!("not a pcap file: {:02x?}", &b[..4]),
    };
    let u32_at = |at: usize| {
        let w: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(20), 101, "link type raw IP");
    let mut at = 24;
    let mut packets = Vec::new();
    while at < b.len() {
        assert!(at + 16 <= b.len(), "a record header cut short at {at}");
        let len = u32_at(at + 8) as usize;
        assert_eq!(len, u32_at(at + 12) as usize, "a packet cut short");
        at += 16;
        assert!(at + len <= b.len(), "a record cut short at {at}");
        packets.push(b[at..at + len].to_vec());
        at += len;
    }
    packets
}

/// The IPv4 TCP segments among `packets`.
fn segments(packets: &[Vec<u8>]) -> Vec<Segment> {
    packets
        .iter()
        .filter(|p| p.len() >= 40 && p[0] >> 4 == 4 && p[9] == 6)
        .map(|p| {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let tcp = &p[ihl..];
            let data_off = usize::from(tcp[12] >> 4) * 4;
            Segment {
                src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                flags: tcp[13],
                payload: total - ihl - data_off,
            }
        })
        .collect()
}

/// Packets from `src` among `packets`.
fn from(packets: &[Vec<u8>], src: Ipv4Addr) -> u64 {
    packets
        .iter()
        .filter(|p| p.len() >= 20 && p[12..16] == src.octets())
        .count() as u64
}

// ----- --pcap -----

#[test]
fn pcap_of_fast_open_run_is_read_by_tcpdump_and_tshark_with_every_packet() {
    let name = "pcap_of_fast_open_run_is_read_by_tcpdump_and_tshark_with_every_packet";
    in_netns(name, move || {
        let (Some(tcpdump_bin), Some(tshark)) =
            (tool_or_skip("tcpdump", name), tool_or_skip("tshark", name))
        else {
            return;
        };
        let dir = Scratch::new("tfo-pcap");
        let pcap = dir.path_str("tfo.pcap");
        kernel_fast_open();
        let kernel = KernelSide::new("cxp0");
        let echo = Echo::new("192.0.2.1:7");
        let fd = kernel.fd();
        let out = run(
            "tun_client",
            &[
                "--tun-fd",
                &fd,
                "--local",
                "192.0.2.2/24",
                "--connect",
                "192.0.2.1:7",
                "--tfo",
                "--count",
                "2",
                "--json",
                "--pcap",
                &pcap,
            ],
        );
        drop(echo);
        assert!(out.status.success(), "{}", show(&out));
        let conns = conn_lines(&out);
        assert_eq!(conns.len(), 2, "{}", show(&out));
        assert_eq!(field(&conns[0], "cookie_requested"), "true", "{}", conns[0]);
        assert_eq!(number(&conns[1], "syn_data_acked"), 6, "{}", conns[1]);

        // Every packet the stack read or wrote is in the file: the kernel counted the same.
        let (kernel_rx, kernel_tx) = kernel.packets();
        let packets = pcap_packets(Path::new(&pcap));
        assert_eq!(
            (from(&packets, STACK), from(&packets, KERNEL)),
            (kernel_rx, kernel_tx),
            "packets from the stack and from the kernel in the capture vs the kernel's counters"
        );
        assert_eq!(packets.len() as u64, kernel_rx + kernel_tx);
        // Per connection at least SYN, SYN-ACK, the data each way and a FIN each way.
        assert!(packets.len() >= 2 * 6, "{} packets", packets.len());

        let cookie = kernel_cookie_hex();
        let dump = tcpdump(&tcpdump_bin, Path::new(&pcap), &[]);
        assert_eq!(
            dump.lines().count(),
            packets.len(),
            "one tcpdump line per packet:\n{dump}"
        );
        let syns: Vec<&str> = dump
            .lines()
            .filter(|l| untimed(l).starts_with("IP 192.0.2.2.") && l.contains("Flags [S],"))
            .collect();
        assert_eq!(syns.len(), 2, "two SYNs from the stack:\n{dump}");
        assert!(syns[0].contains("tfo  cookiereq"), "{}", syns[0]);
        assert!(
            syns[1].contains(&format!("tfo  cookie {cookie}")) && syns[1].contains("length 6"),
            "the second SYN carries the cookie {cookie} and the data: {}",
            syns[1]
        );
        let syn_acks: Vec<&str> = dump
            .lines()
            .filter(|l| untimed(l).starts_with("IP 192.0.2.1.7 > ") && l.contains("Flags [S.]"))
            .collect();
        assert_eq!(syn_acks.len(), 2, "{dump}");
        assert!(
            syn_acks[0].contains(&format!("tfo  cookie {cookie}")),
            "the kernel issued cookie {cookie}: {}",
            syn_acks[0]
        );

        let out = Command::new(tshark)
            .arg("-r")
            .arg(&pcap)
            .arg("-V")
            .output()
            .expect("tshark runs");
        let decoded = text(&out.stdout);
        assert!(out.status.success(), "tshark -r failed: {}", show(&out));
        assert_eq!(
            decoded.lines().filter(|l| l.starts_with("Frame ")).count(),
            packets.len(),
            "tshark sees every packet"
        );
        assert_eq!(
            decoded.matches("Fast Open Cookie Request").count(),
            1,
            "{decoded}"
        );
        assert_eq!(
            decoded
                .matches(&format!("Fast Open Cookie: {cookie}"))
                .count(),
            2,
            "the kernel's cookie in its SYN-ACK and in the second SYN:\n{decoded}"
        );
        assert!(
            decoded.contains("TCP SYN-ACK accepting TFO data"),
            "{decoded}"
        );
        assert!(
            !decoded.contains("[Checksum Status: Bad]"),
            "bad checksum:\n{decoded}"
        );
    });
}

/// A tcpdump line without its timestamp.
fn untimed(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, rest)| rest)
}

#[test]
fn pcap_keeps_syn_and_rst_when_tun_client_fails() {
    let name = "pcap_keeps_syn_and_rst_when_tun_client_fails";
    in_netns(name, move || {
        let dir = Scratch::new("refused-pcap");
        let pcap = dir.path_str("refused.pcap");
        // Nothing listens on port 9: the kernel answers the SYN with a RST.
        let out = client("192.0.2.1:9", &["--pcap", &pcap]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(text(&out.stderr).contains("ECONNREFUSED"), "{}", show(&out));
        let segs = segments(&pcap_packets(Path::new(&pcap)));
        let syn = segs
            .iter()
            .find(|s| s.src == STACK && s.flags & SYN != 0)
            .unwrap_or_else(|| panic!("no SYN in {segs:?}"));
        let rst = segs
            .iter()
            .find(|s| s.src == KERNEL && s.flags & 0x04 != 0)
            .unwrap_or_else(|| panic!("no RST in {segs:?}"));
        assert_eq!((syn.dst, rst.dst), (KERNEL, STACK));
        if let Some(tcpdump_bin) = tool_or_skip("tcpdump", name) {
            let dump = tcpdump(&tcpdump_bin, Path::new(&pcap), &[]);
            assert!(
                dump.lines()
                    .any(|l| l.contains("> 192.0.2.1.9: Flags [S],")),
                "{dump}"
            );
            assert!(
                dump.lines()
                    .any(|l| untimed(l).starts_with("IP 192.0.2.1.9 > 192.0.2.2.")
                        && l.contains("Flags [R.]")),
                "{dump}"
            );
        }
    });
}

/// Wait for `child` to exit on its own, at most `limit`; kill it and fail otherwise.
#[track_caller]
fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let until = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("did not exit within {limit:?}: {}", show(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn tun_server_pcap_with_kernel_client() {
    let name = "tun_server_pcap_with_kernel_client";
    in_netns(name, move || {
        let dir = Scratch::new("server-pcap");
        let pcap = dir.path_str("server.pcap");
        let kernel = KernelSide::new("cxs0");
        let fd = kernel.fd();
        let mut child = Command::new(example("tun_server"))
            .args([
                "--tun-fd",
                &fd,
                "--local",
                "192.0.2.2/24",
                "--listen",
                "8080",
            ])
            .args(["--count", "1", "--json", "--pcap", &pcap])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        support::wait_ready(&mut child);
        let data = b"through tun_server\n";
        let back = support::kernel_client("192.0.2.2:8080".parse().unwrap(), data);
        assert_eq!(back, data);
        let out = wait_exit(child, Duration::from_secs(10));
        assert!(out.status.success(), "{}", show(&out));

        let (kernel_rx, kernel_tx) = kernel.packets();
        let packets = pcap_packets(Path::new(&pcap));
        assert_eq!(
            (from(&packets, STACK), from(&packets, KERNEL)),
            (kernel_rx, kernel_tx),
            "every packet the stack read and wrote is in the capture"
        );
        let segs = segments(&packets);
        let first = segs.first().expect("packets in the capture");
        assert_eq!(
            (first.src, first.flags & SYN != 0),
            (KERNEL, true),
            "the kernel's SYN first: {segs:?}"
        );
        assert!(
            segs.iter()
                .any(|s| s.src == STACK && s.flags & SYN != 0 && s.flags & 0x10 != 0),
            "the stack's SYN-ACK: {segs:?}"
        );
        for src in [KERNEL, STACK] {
            let bytes: usize = segs
                .iter()
                .filter(|s| s.src == src)
                .map(|s| s.payload)
                .sum();
            assert_eq!(bytes, data.len(), "bytes from {src}: {segs:?}");
        }
        if let Some(tcpdump_bin) = tool_or_skip("tcpdump", name) {
            let dump = tcpdump(&tcpdump_bin, Path::new(&pcap), &["-A"]);
            assert_eq!(
                dump.matches("through tun_server").count(),
                2,
                "the text in and out:\n{dump}"
            );
        }
    });
}

// ----- --cookie-cache -----

/// The entry lines of a cookie cache file (neither comments nor blank).
fn entry_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn cookie_cache_file_carries_the_cookie_to_a_second_process() {
    in_netns(
        "cookie_cache_file_carries_the_cookie_to_a_second_process",
        || {
            let dir = Scratch::new("cookie-cache");
            let file = dir.path_str("cookies");
            kernel_fast_open();
            let _echo = Echo::new("0.0.0.0:7");

            let out = client("192.0.2.1:7", &["--tfo", "--cookie-cache", &file]);
            assert!(out.status.success(), "{}", show(&out));
            assert_eq!(text(&out.stderr), "", "no warning for a missing file");
            let first = &conn_lines(&out)[0];
            assert_eq!(field(first, "cookie_requested"), "true", "{first}");
            assert_eq!(number(first, "syn_data_sent"), 0, "{first}");
            assert_eq!(number(first, "cookie_received"), 8, "{first}");

            let saved = std::fs::read_to_string(&file).expect("the cache file exists");
            let entries = entry_lines(&saved);
            assert_eq!(entries.len(), 1, "one entry:\n{saved}");
            let fields: Vec<&str> = entries[0].split_whitespace().collect();
            assert_eq!(
                fields[..3],
                ["192.0.2.2", "192.0.2.1", kernel_cookie_hex().as_str()],
                "{saved}"
            );
            assert_eq!(dir.names(), ["cookies"], "no temporary files left");

            let passive = tcp_ext("TCPFastOpenPassive");
            let out = client("192.0.2.1:7", &["--tfo", "--cookie-cache", &file]);
            assert!(out.status.success(), "{}", show(&out));
            let second = &conn_lines(&out)[0];
            assert_eq!(field(second, "cookie_requested"), "false", "{second}");
            assert_eq!(number(second, "syn_data_sent"), 6, "{second}");
            assert_eq!(number(second, "syn_data_acked"), 6, "{second}");
            assert!(second.contains("\"received\":\"hello\\n\""), "{second}");
            assert_eq!(
                tcp_ext("TCPFastOpenPassive") - passive,
                1,
                "the kernel took the second process's data from its SYN"
            );
            assert_eq!(dir.names(), ["cookies"], "no temporary files left");
        },
    );
}

/// A run with a cookie cache file that cannot be used: it warns, requests a fresh cookie, and
/// succeeds. Returns the warning lines.
#[track_caller]
fn run_with_bad_cache(file: &str) -> Vec<String> {
    let out = client("192.0.2.1:7", &["--tfo", "--cookie-cache", file]);
    assert!(out.status.success(), "{}", show(&out));
    let conn = &conn_lines(&out)[0];
    assert_eq!(field(conn, "cookie_requested"), "true", "{conn}");
    assert_eq!(number(conn, "cookie_received"), 8, "{conn}");
    let err = text(&out.stderr);
    let lines: Vec<String> = err.lines().map(str::to_owned).collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("tun_client: warning: cookie cache {file}"))),
        "warnings name the file: {err}"
    );
    assert!(
        lines.iter().any(|l| l.contains("empty cache")),
        "says it starts with an empty cache: {err}"
    );
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "no warning twice: {err}");
    lines
}

#[test]
fn corrupt_or_unreadable_cookie_cache_warns_once_and_is_replaced() {
    in_netns(
        "corrupt_or_unreadable_cookie_cache_warns_once_and_is_replaced",
        || {
            let dir = Scratch::new("bad-cookie-cache");
            kernel_fast_open();
            let _echo = Echo::new("0.0.0.0:7");
            let cookie = kernel_cookie_hex();

            let binary = dir.path_str("binary");
            let mut garbage = vec![0xff, 0xfe, 0x00];
            garbage.extend(support::pattern(300));
            std::fs::write(&binary, garbage).unwrap();
            let malformed = dir.path_str("malformed");
            std::fs::write(
                &malformed,
                format!(
                    "{}\n192.0.2.2 192.0.2.1 not-a-cookie 1460\n",
                    cache_file::HEADER
                ),
            )
            .unwrap();
            for file in [&binary, &malformed] {
                let warnings = run_with_bad_cache(file);
                assert_eq!(warnings.len(), 1, "one warning line: {warnings:?}");
                let saved = std::fs::read_to_string(file).unwrap();
                let entries = cache_file::from_text(&saved)
                    .unwrap_or_else(|e| panic!("{file} is a cache file again: {e}\n{saved}"));
                assert_eq!(entries.len(), 1, "{saved}");
                let got: String = entries[0]
                    .cookie
                    .expect("a cookie")
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(got, cookie);
            }

            // A directory cannot be read as a file, nor replaced by one.
            let subdir = dir.path_str("a-directory");
            std::fs::create_dir(&subdir).unwrap();
            let warnings = run_with_bad_cache(&subdir);
            assert!(warnings[0].contains("empty cache"), "{warnings:?}");
            assert!(Path::new(&subdir).is_dir());
            assert_eq!(
                dir.names(),
                ["a-directory", "binary", "malformed"],
                "no temporary files left"
            );
        },
    );
}

// ----- impairment -----

#[test]
fn delay_20ms_makes_handshake_take_at_least_40ms() {
    in_netns("delay_20ms_makes_handshake_take_at_least_40ms", || {
        let _echo = Echo::new("0.0.0.0:7");
        let out = client("192.0.2.1:7", &["--delay-ms", "20"]);
        assert!(out.status.success(), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        // SYN out and SYN-ACK back: one round trip; the echo of the data after it: another.
        assert!(number(conn, "connect_us") >= 40_000, "{conn}");
        assert!(number(conn, "ttfb_us") >= 80_000, "{conn}");
        assert!(conn.contains("\"received\":\"hello\\n\""), "{conn}");

        let udp = UdpSocket::bind("0.0.0.0:5300").unwrap();
        let server = std::thread::spawn(move || {
            udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 64];
            let (n, peer) = udp.recv_from(&mut buf).unwrap();
            udp.send_to(&buf[..n], peer).unwrap();
        });
        let out = client("192.0.2.1:5300", &["--udp", "--delay-ms", "20"]);
        server.join().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        assert!(number(conn, "ttfb_us") >= 40_000, "{conn}");
    });
}

#[test]
fn loss_20_percent_is_repaired_by_retransmission() {
    in_netns("loss_20_percent_is_repaired_by_retransmission", || {
        let dir = Scratch::new("loss");
        let pcap = dir.path_str("loss.pcap");
        let _echo = Echo::new("0.0.0.0:7");
        let segments_in = tcp_snmp("InSegs");
        let text = long_text(20_000);
        let out = client(
            "192.0.2.1:7",
            &[
                "--send",
                &text,
                "--loss",
                "0.2",
                "--seed",
                "7",
                "--timeout-ms",
                "20000",
                "--pcap",
                &pcap,
            ],
        );
        assert!(out.status.success(), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        assert!(
            conn.contains(&format!("\"received\":\"{text}\"")),
            "the exact text came back"
        );
        // The capture sees what the stack sent before the loss; the kernel fewer of them.
        let sent = segments(&pcap_packets(Path::new(&pcap)))
            .iter()
            .filter(|s| s.src == STACK)
            .count() as u64;
        let arrived = tcp_snmp("InSegs") - segments_in;
        assert!(
            arrived < sent,
            "some of the stack's {sent} segments were lost, yet the kernel got {arrived}"
        );
    });
}

/// A counter of the kernel's `Tcp:` MIB in this thread's namespace.
fn tcp_snmp(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    lines[0]
        .split_whitespace()
        .zip(lines[1].split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Tcp counter {name}"))
}

#[test]
fn total_loss_fails_connectx_with_etimedout() {
    in_netns("total_loss_fails_connectx_with_etimedout", || {
        let _echo = Echo::new("0.0.0.0:7");
        let out = client("192.0.2.1:7", &["--loss", "1", "--timeout-ms", "1500"]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        assert_eq!(field(conn, "ok"), "false", "{conn}");
        assert_eq!(field(conn, "errno"), "\"ETIMEDOUT\"", "{conn}");
        assert_eq!(field(conn, "failed_in"), "\"connectx\"", "{conn}");
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("tun_client: ")
                && err.contains("connectx")
                && err.contains("ETIMEDOUT"),
            "{err}"
        );
    });
}

#[test]
fn duplicate_and_reorder_still_deliver_the_exact_text() {
    in_netns("duplicate_and_reorder_still_deliver_the_exact_text", || {
        let dir = Scratch::new("dup-reorder");
        let text = long_text(20_000);
        let _echo = Echo::new("0.0.0.0:7");

        // Held-back packets let later ones overtake them: the kernel queues segments that
        // came out of order.
        let ofo = tcp_ext("TCPOFOQueue");
        let out = client(
            "192.0.2.1:7",
            &["--send", &text, "--reorder", "0.5", "--seed", "3"],
        );
        assert!(out.status.success(), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        assert!(conn.contains(&format!("\"received\":\"{text}\"")), "{conn}");
        assert!(
            tcp_ext("TCPOFOQueue") > ofo,
            "the kernel saw segments out of order"
        );

        // Every packet twice, both ways: the kernel gets twice what the stack sent, the
        // stack (and its capture) twice what the kernel sent.
        let kernel = KernelSide::new("cxd0");
        let fd = kernel.fd();
        let pcap = dir.path_str("dup.pcap");
        let out = run(
            "tun_client",
            &[
                "--tun-fd",
                &fd,
                "--local",
                "192.0.2.2/24",
                "--connect",
                "192.0.2.1:7",
                "--json",
                "--send",
                &text,
                "--duplicate",
                "1",
                "--pcap",
                &pcap,
            ],
        );
        assert!(out.status.success(), "{}", show(&out));
        let conn = &conn_lines(&out)[0];
        assert!(conn.contains(&format!("\"received\":\"{text}\"")), "{conn}");
        let packets = pcap_packets(Path::new(&pcap));
        let (kernel_rx, kernel_tx) = kernel.packets();
        assert_eq!(
            (kernel_rx, from(&packets, KERNEL)),
            (2 * from(&packets, STACK), 2 * kernel_tx),
            "(kernel received, stack received) = 2 × (stack sent, kernel sent)"
        );
    });
}

/// The outcome of each connection of a `--json` run: `ok`, `errno`, `failed_in`.
fn outcomes(out: &Output) -> Vec<String> {
    conn_lines(out)
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                field(l, "ok"),
                field(l, "errno"),
                field(l, "failed_in")
            )
        })
        .collect()
}

#[test]
fn same_seed_loses_the_same_handshakes() {
    in_netns("same_seed_loses_the_same_handshakes", || {
        // No IPv6: the kernel's first packet to each stack is its SYN-ACK, not a router
        // solicitation sent at a moment of its choosing.
        set_sysctl("net/ipv6/conf/default/disable_ipv6", "1").unwrap();
        let _echo = Echo::new("0.0.0.0:7");
        // Two runs per seed, all at once, each on a device and /30 of its own. The timeout is
        // far shorter than the first retransmission of the stack's SYN (1 s) or of the
        // kernel's SYN-ACK (1 s), so whether connectx succeeds is decided by the fate of the
        // first packet each way: the seed's first decisions. (What happens after the handshake
        // also depends on when the kernel's timers fire, so only the handshake is compared.)
        const SEEDS: u64 = 12;
        let children: Vec<(u64, Child)> = (0..2 * SEEDS)
            .map(|n| {
                let seed = n % SEEDS;
                let child = Command::new(example("tun_client"))
                    .args(["--tun", &format!("cxl{n}")])
                    .args(["--local", &format!("192.0.2.{}/30", 4 * n + 2)])
                    .args(["--peer", &format!("192.0.2.{}/30", 4 * n + 1)])
                    .args(["--connect", &format!("192.0.2.{}:7", 4 * n + 1)])
                    .args(["--json", "--loss", "0.3", "--seed", &seed.to_string()])
                    .args(["--timeout-ms", "400"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (seed, child)
            })
            .collect();
        let mut by_seed: HashMap<u64, Vec<bool>> = HashMap::new();
        for (seed, child) in children {
            let out = wait_exit(child, Duration::from_secs(20));
            let conns = conn_lines(&out);
            assert_eq!(conns.len(), 1, "{}", show(&out));
            let connected = field(&conns[0], "failed_in") != "\"connectx\"";
            if !connected {
                assert_eq!(field(&conns[0], "errno"), "\"ETIMEDOUT\"", "{}", conns[0]);
            }
            by_seed.entry(seed).or_default().push(connected);
        }
        let mut connected = Vec::new();
        for seed in 0..SEEDS {
            let runs = &by_seed[&seed];
            assert_eq!(
                runs[0], runs[1],
                "seed {seed}: the two runs differ: {by_seed:?}"
            );
            if runs[0] {
                connected.push(seed);
            }
        }
        assert!(
            !connected.is_empty() && connected.len() < SEEDS as usize,
            "the seed decides: some seeds lose the handshake, others not; connected: {connected:?}"
        );
    });
}

// ----- bad input -----

#[test]
fn bad_impairment_values_are_one_line_and_exit_2() {
    // A descriptor that is not open: if a value were accepted, the run would fail later with
    // exit 1 instead, touching no network.
    let device = ["--tun-fd", "987654", "--local", "192.0.2.2/24"];
    for (flag, value) in [
        ("--loss", "1.5"),
        ("--loss", "-0.1"),
        ("--loss", "abc"),
        ("--reorder", "2"),
        ("--duplicate", "nan"),
        ("--delay-ms", "-5"),
        ("--jitter-ms", "x"),
        ("--seed", "-1"),
        ("--offload", "maybe"),
        ("--cc", "vegas"),
    ] {
        for (tool, tail) in [
            ("tun_client", ["--connect", "192.0.2.1:7"]),
            ("tun_server", ["--listen", "7"]),
        ] {
            let mut args = device.to_vec();
            args.extend([flag, value]);
            args.extend(tail);
            let out = run(tool, &args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{tool} {flag} {value}: {}",
                show(&out)
            );
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{tool} {flag} {value}: {err}");
            assert!(
                err.starts_with(&format!("{tool}: {flag}")) && err.contains(value),
                "{tool} {flag} {value}: names the flag and the value: {err}"
            );
        }
    }
}

#[test]
fn offload_on_with_an_impairment_is_one_line_and_exit_1() {
    for (tool, tail) in [
        ("tun_client", ["--connect", "192.0.2.1:7"]),
        ("tun_server", ["--listen", "7"]),
    ] {
        // Refused before any device is opened (the descriptor is not open either).
        let args = [
            "--tun-fd",
            "987654",
            "--local",
            "192.0.2.2/24",
            "--offload",
            "on",
            "--loss",
            "0.1",
            tail[0],
            tail[1],
        ];
        let out = run(tool, &args);
        assert_eq!(out.status.code(), Some(1), "{tool}: {}", show(&out));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{tool}: {err}");
        assert!(
            err.contains("offload") && err.contains("impairment"),
            "{tool}: {err}"
        );
    }
}

#[test]
fn unwritable_pcap_is_one_line_naming_the_path_and_exit_1() {
    let path = "/nonexistent-dir/x.pcap";
    for (tool, tail) in [
        ("tun_client", ["--connect", "192.0.2.1:7"]),
        ("tun_server", ["--listen", "7"]),
    ] {
        // The descriptor is not open either: the capture file is checked first.
        let mut args = vec!["--tun-fd", "987654", "--local", "192.0.2.2/24"];
        args.extend(["--pcap", path]);
        args.extend(tail);
        let out = run(tool, &args);
        assert_eq!(out.status.code(), Some(1), "{tool}: {}", show(&out));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{tool}: {err}");
        assert!(
            err.starts_with(&format!("{tool}: ")) && err.contains(path),
            "{tool}: {err}"
        );
    }
}

// ----- the counters line -----

/// Assert that stdout ends with exactly one `{"counters":{...}}` line, after `conns` lines.
#[track_caller]
fn ends_with_counters(out: &Output, conns: usize) {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), conns + 1, "{}", show(out));
    assert!(
        lines[..conns].iter().all(|l| l.starts_with("{\"conn\":")),
        "{stdout}"
    );
    let last = lines[conns];
    assert!(
        last.starts_with("{\"counters\":{\"TCPFastOpenActive\":") && last.ends_with("}}"),
        "{last}"
    );
    assert!(
        last.contains("\"ListenDrops\":") && last.contains("\"tables\":{\"sockets\":"),
        "the TCP counters and the table sizes follow: {last}"
    );
    assert_eq!(stdout.matches("\"counters\"").count(), 1, "{stdout}");
}

#[test]
fn json_ends_with_one_counters_line_for_udp_and_failures() {
    in_netns(
        "json_ends_with_one_counters_line_for_udp_and_failures",
        || {
            let udp = UdpSocket::bind("0.0.0.0:5300").unwrap();
            let server = std::thread::spawn(move || {
                udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 64];
                let (n, peer) = udp.recv_from(&mut buf).unwrap();
                udp.send_to(&buf[..n], peer).unwrap();
            });
            let out = client("192.0.2.1:5300", &["--udp", "--send", "ping"]);
            server.join().unwrap();
            assert!(out.status.success(), "{}", show(&out));
            assert!(
                conn_lines(&out)[0].contains("\"received\":\"ping\""),
                "{}",
                show(&out)
            );
            ends_with_counters(&out, 1);

            // Refused twice: the counters still close the output.
            let out = client("192.0.2.1:9", &["--count", "2"]);
            assert_eq!(out.status.code(), Some(1), "{}", show(&out));
            assert_eq!(
                outcomes(&out),
                ["false \"ECONNREFUSED\" \"connectx\""; 2],
                "{}",
                show(&out)
            );
            ends_with_counters(&out, 2);
        },
    );
}
