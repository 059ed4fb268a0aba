//! `tun_client` and `tun_server` over two TUN devices: `--srcif`, `--srcaddr`, the local address
//! the JSON reports, errno names on failure, `--udp` through an association.
//!
//! Set-up (one namespace per test): the stack on `cxa` (192.0.2.2; kernel 192.0.2.1) and `cxb`
//! (198.51.100.2; kernel 198.51.100.1), the kernel's servers on its loopback at 203.0.113.10,
//! reachable through either device; the routes point at `cxa`.

mod support;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use support::in_netns;

fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

const DEVICES: [&str; 12] = [
    "--tun",
    "cxa",
    "--local",
    "192.0.2.2/24",
    "--peer",
    "192.0.2.1/24",
    "--route",
    "default",
    "--tun",
    "cxb",
    "--local",
    "198.51.100.2/24",
];

fn tun_client(extra: &[&str]) -> Output {
    Command::new(example("tun_client"))
        .args(DEVICES)
        .args(["--peer", "198.51.100.1/24"])
        .args(extra)
        .output()
        .expect("tun_client runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip");
    assert!(out.status.success(), "ip {args}: {}", text(&out.stderr));
}

/// A kernel TCP echo server on 203.0.113.10 serving `count` connections; returns its port.
fn kernel_tcp_echo(count: usize) -> (u16, std::thread::JoinHandle<Vec<std::net::SocketAddr>>) {
    ip("addr add 203.0.113.10/32 dev lo");
    let l = std::net::TcpListener::bind("203.0.113.10:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..count {
            let (mut s, peer) = l.accept().unwrap();
            peers.push(peer);
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        peers
    });
    (port, h)
}

/// The `"local"` field of a JSON line.
fn local_of(line: &str) -> &str {
    let start = line.find("\"local\":\"").expect("a local address") + 9;
    let end = start + line[start..].find('"').unwrap();
    &line[start..end]
}

#[test]
fn srcif_by_name_and_srcaddr_choose_the_source() {
    in_netns("srcif_by_name_and_srcaddr_choose_the_source", || {
        let (port, server) = kernel_tcp_echo(3);
        let to = format!("203.0.113.10:{port}");
        let mut seen = Vec::new();
        for (extra, want) in [
            (&[][..], "192.0.2.2:"),
            (&["--srcif", "cxb"][..], "198.51.100.2:"),
            (
                &["--srcaddr", "198.51.100.2:40321"][..],
                "198.51.100.2:40321",
            ),
        ] {
            let mut args = extra.to_vec();
            args.extend(["--connect", &to, "--json"]);
            let out = tun_client(&args);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{args:?}: {}\n{stdout}",
                text(&out.stderr)
            );
            let line = stdout.lines().next().unwrap();
            assert!(local_of(line).starts_with(want), "{args:?}: {line}");
            assert!(line.contains("\"received\":\"hello\\n\""), "{line}");
            seen.push(local_of(line).to_owned());
        }
        // The kernel saw each connection come from the address the JSON reported.
        let peers: Vec<String> = server
            .join()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(peers, seen);
    });
}

#[test]
fn srcif_as_a_number_is_the_kernel_index() {
    in_netns("srcif_as_a_number_is_the_kernel_index", || {
        let (port, server) = kernel_tcp_echo(1);
        let to = format!("203.0.113.10:{port}");
        // cxb is opened here and handed over with --tun-fd, so its index is known beforehand.
        let cxb = tun_driver::Device::create("cxb").unwrap();
        let index = cxb.ifindex().unwrap().to_string();
        tun_driver::make_inheritable(cxb.as_fd()).unwrap();
        let fd = cxb.as_raw_fd().to_string();
        let out = Command::new(example("tun_client"))
            .args([
                "--tun",
                "cxa",
                "--local",
                "192.0.2.2/24",
                "--peer",
                "192.0.2.1/24",
            ])
            .args(["--route", "default"])
            .args([
                "--tun-fd",
                &fd,
                "--local",
                "198.51.100.2/24",
                "--peer",
                "198.51.100.1/24",
            ])
            .args(["--srcif", &index, "--connect", &to, "--json"])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
        let line = stdout.lines().next().unwrap();
        assert!(local_of(line).starts_with("198.51.100.2:"), "{line}");
        assert_eq!(server.join().unwrap()[0].to_string(), local_of(line));
    });
}

#[test]
fn mismatched_srcif_and_srcaddr_print_eaddrnotavail() {
    in_netns("mismatched_srcif_and_srcaddr_print_eaddrnotavail", || {
        let (port, _server) = kernel_tcp_echo(0);
        let to = format!("203.0.113.10:{port}");
        for json in [false, true] {
            let mut args = vec![
                "--srcif",
                "cxa",
                "--srcaddr",
                "198.51.100.2",
                "--connect",
                &to,
            ];
            if json {
                args.push("--json");
            }
            let out = tun_client(&args);
            assert_eq!(out.status.code(), Some(1));
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains(": connectx: EADDRNOTAVAIL"),
                "the call and the errno name: {err}"
            );
            if json {
                let stdout = text(&out.stdout);
                assert!(
                    stdout.contains(
                        "\"ok\":false,\"errno\":\"EADDRNOTAVAIL\",\"failed_in\":\"connectx\""
                    ),
                    "{stdout}"
                );
            }
        }
        // An index that is no device of the stack: ENXIO.
        let out = tun_client(&["--srcif", "999999", "--connect", &to]);
        assert!(
            text(&out.stderr).contains("connectx: ENXIO"),
            "{}",
            text(&out.stderr)
        );
        // A name that is no device at all: one line, exit 1.
        let out = tun_client(&["--srcif", "nosuchdev0", "--connect", &to]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("--srcif: no device named `nosuchdev0`"));
    });
}

#[test]
fn bad_srcaddr_is_one_line_and_exit_2() {
    let out = Command::new(example("tun_client"))
        .args([
            "--tun",
            "cxa",
            "--srcaddr",
            "nope",
            "--connect",
            "192.0.2.1:7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--srcaddr: `nope`"), "{err}");
}

#[test]
fn udp_association_through_srcif_reports_its_local_address() {
    in_netns(
        "udp_association_through_srcif_reports_its_local_address",
        || {
            ip("addr add 203.0.113.10/32 dev lo");
            let u = std::net::UdpSocket::bind("203.0.113.10:0").unwrap();
            let to = u.local_addr().unwrap().to_string();
            let echo = std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                let (n, from) = u.recv_from(&mut buf).unwrap();
                u.send_to(&buf[..n], from).unwrap();
                from
            });
            let out = tun_client(&["--udp", "--srcif", "cxb", "--connect", &to, "--json"]);
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
            let line = stdout.lines().next().unwrap();
            let from = echo.join().unwrap();
            assert_eq!(local_of(line), from.to_string());
            assert!(from.to_string().starts_with("198.51.100.2:"), "{from}");
            assert!(line.contains("\"received\":\"hello\\n\""), "{line}");
            assert!(stdout.lines().last().unwrap().starts_with("{\"counters\":"));
        },
    );
}

#[test]
fn tun_server_serves_on_two_devices() {
    in_netns("tun_server_serves_on_two_devices", || {
        let mut child = Command::new(example("tun_server"))
            .args(DEVICES)
            .args(["--peer", "198.51.100.1/24"])
            .args(["--listen", "8080", "--count", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        support::wait_ready(&mut child);
        for to in ["192.0.2.2:8080", "198.51.100.2:8080"] {
            let back = support::kernel_client(to.parse().unwrap(), b"ping");
            assert_eq!(back, b"ping", "through {to}");
        }
        let out = child.wait_with_output().unwrap();
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        assert!(
            lines[0].contains("\"local\":\"192.0.2.2:8080\""),
            "{stdout}"
        );
        assert!(
            lines[1].contains("\"local\":\"198.51.100.2:8080\""),
            "{stdout}"
        );
    });
}

#[test]
fn tun_server_udp_replies_from_the_address_each_request_came_to() {
    in_netns(
        "tun_server_udp_replies_from_the_address_each_request_came_to",
        || {
            let mut child = Command::new(example("tun_server"))
                .args(DEVICES)
                .args(["--peer", "198.51.100.1/24"])
                .args(["--listen", "5353", "--udp", "--count", "2", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            support::wait_ready(&mut child);
            for (bind, to) in [
                ("192.0.2.1:0", "192.0.2.2:5353"),
                ("198.51.100.1:0", "198.51.100.2:5353"),
            ] {
                // A connected kernel socket takes replies only from the address it sent to.
                let k = std::net::UdpSocket::bind(bind).unwrap();
                k.connect(to).unwrap();
                k.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                k.send(b"ping").unwrap();
                let mut buf = [0u8; 16];
                let n = k.recv(&mut buf).expect("a reply from the address asked");
                assert_eq!(&buf[..n], b"ping");
            }
            let out = child.wait_with_output().unwrap();
            let stdout = text(&out.stdout);
            assert!(stdout.contains("\"local\":\"192.0.2.2:5353\""), "{stdout}");
            assert!(
                stdout.contains("\"local\":\"198.51.100.2:5353\""),
                "{stdout}"
            );
        },
    );
}
