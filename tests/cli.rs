//! `tun_client` as users run it: the demo, `--tun-fd` with a socketpair, JSON, bad input.

mod support;

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{in_netns, kernel_echo};
use tun_driver::{wait_readable, Device, Link};

/// The example binary `cargo test` built next to this test.
fn tun_client() -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join("tun_client")
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(tun_client())
        .args(args)
        .output()
        .expect("tun_client runs");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn demo_runs_and_explains() {
    if !tun_driver::require_root("demo_runs_and_explains") {
        return;
    }
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{text}",
        stderr(&out)
    );
    assert_eq!(
        text.matches("came back").count(),
        3,
        "three exchanges (TCP v4, TCP v6, UDP):\n{text}"
    );
    assert!(text.contains("\"hello from connectx\\n\""), "{text}");
    assert!(
        text.contains("from 192.0.2.2:") && text.contains("from [2001:db8::2]:"),
        "{text}"
    );
}

#[test]
fn bad_usage_is_one_line_and_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--tun", "cx0", "--connect", "192.0.2.1:0"],
        &["--tun", "cx0", "--connect", "192.0.2.1"],
        &["--local", "192.0.2.2/24"],
        &["--tun", "cx0", "--count", "x", "--connect", "192.0.2.1:7"],
        &["--tun", "cx0"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.starts_with("tun_client: "), "{err}");
    }
}

#[test]
fn bad_device_or_address_is_one_line_and_exit_1() {
    let out = run(&[
        "--tun-fd",
        "987654",
        "--local",
        "192.0.2.2/24",
        "--connect",
        "192.0.2.1:7",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("descriptor 987654 is not open"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
    if !tun_driver::require_root("bad_device_or_address_is_one_line_and_exit_1") {
        return;
    }
    in_netns("bad_device_or_address_is_one_line_and_exit_1", || {
        let out = run(&[
            "--tun",
            "cx0",
            "--local",
            "192.0.2.2",
            "--connect",
            "192.0.2.1:7",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("ADDRESS/LEN"), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1);
    });
}

/// Copy packets between a TUN device and one end of a socketpair until `stop`.
fn relay(tun: Device, pair: Device, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let fds = [tun.as_raw_fd(), pair.as_raw_fd()];
        let mut ready = [false; 2];
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if wait_readable(&fds, &mut ready, Some(Duration::from_millis(20))).is_err() {
                continue;
            }
            for (from, to) in [(&tun, &pair), (&pair, &tun)] {
                while let Ok(Some(n)) = from.recv(&mut buf) {
                    let _ = to.send(&buf[..n]);
                }
            }
        }
    })
}

#[test]
fn tun_fd_socketpair_with_json_and_count() {
    in_netns("tun_fd_socketpair_with_json_and_count", || {
        // The kernel's side: a TUN device this test owns, relayed to a socketpair whose other
        // end `tun_client` adopts with --tun-fd.
        let tun = Device::create("cxr0").unwrap();
        let link: Link = tun.link().unwrap();
        link.add_address("192.0.2.1".parse().unwrap(), 24).unwrap();
        link.set_up(true).unwrap();
        let (mine, theirs) = Device::pair().unwrap();
        tun_driver::make_inheritable(theirs.as_fd()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let relay = relay(tun, mine, Arc::clone(&stop));
        let (addr, echo) = kernel_echo("192.0.2.1:7", 2);

        let fd = theirs.as_raw_fd().to_string();
        let to = addr.to_string();
        let out = run(&[
            "--tun-fd",
            &fd,
            "--local",
            "192.0.2.2/24",
            "--connect",
            &to,
            "--count",
            "2",
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}\n{stdout}", stderr(&out));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "two connections and the counters: {stdout}");
        assert!(
            lines[2].starts_with("{\"counters\":{\"TCPFastOpenActive\":"),
            "{stdout}"
        );
        for (n, line) in lines[..2].iter().enumerate() {
            assert!(
                line.starts_with(&format!(
                    "{{\"conn\":{n},\"ok\":true,\"errno\":null,\"failed_in\":null,\"local\":\"192.0.2.2:"
                )),
                "{line}"
            );
            assert!(line.contains("\"remote\":\"192.0.2.1:7\""), "{line}");
            assert!(
                line.contains(
                    "\"sent\":6,\"received\":\"hello\\n\",\"tfo\":{\"cookie_requested\":false"
                ),
                "{line}"
            );
        }

        // Refused: nothing listens on port 9.
        let out = run(&[
            "--tun-fd",
            &fd,
            "--local",
            "192.0.2.2/24",
            "--connect",
            "192.0.2.1:9",
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout.contains("\"ok\":false,\"errno\":\"ECONNREFUSED\""),
            "{stdout}"
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains("ECONNREFUSED"));

        stop.store(true, Ordering::Relaxed);
        relay.join().unwrap();
        echo.join().unwrap();
    });
}

#[test]
fn udp_flag_exchanges_one_datagram() {
    in_netns("udp_flag_exchanges_one_datagram", || {
        // 2001:db8::1 exists only once tun_client has configured its device, so the kernel's
        // socket listens on the wildcard address from the start.
        let sock = std::net::UdpSocket::bind("[::]:5300").unwrap();
        let child = Command::new(tun_client())
            .args([
                "--tun",
                "cx0",
                "--local",
                "2001:db8::2/64",
                "--peer",
                "2001:db8::1/64",
                "--udp",
                "--connect",
                "[2001:db8::1]:5300",
                "--send",
                "ping",
                "--json",
                "--timeout-ms",
                "10000",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.ip().to_string(), "2001:db8::2");
        sock.send_to(b"pong", from).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout.contains("\"ok\":true") && stdout.contains("\"received\":\"pong\""),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("\"local\":\"{from}\"")),
            "{stdout}"
        );
    });
}

/// Run `tun_client` with [`TO_KERNEL_ECHO_JSON`] and `extra`; it succeeds: its stdout.
fn to_kernel_echo_json(extra: &[&str]) -> String {
    let args: Vec<&str> = TO_KERNEL_ECHO_JSON.iter().chain(extra).copied().collect();
    let out = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{extra:?}: {}\n{stdout}",
        stderr(&out)
    );
    stdout
}

/// `tun_client` on `cx0`, to the kernel's echo server at 192.0.2.1:7, with `--json`.
const TO_KERNEL_ECHO_JSON: [&str; 9] = [
    "--tun",
    "cx0",
    "--local",
    "192.0.2.2/24",
    "--peer",
    "192.0.2.1/24",
    "--connect",
    "192.0.2.1:7",
    "--json",
];

#[test]
fn tfo_count_2_sends_second_data_in_syn_and_resume_works() {
    in_netns(
        "tfo_count_2_sends_second_data_in_syn_and_resume_works",
        || {
            // The kernel's Fast Open server in this namespace (listening on the wildcard address:
            // 192.0.2.1 exists only once tun_client has set up its device).
            tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
            let (_, echo) = kernel_echo("0.0.0.0:7", 4);
            for extra in [
                &["--tfo", "--count", "2"][..],
                &["--tfo", "--resume", "--count", "2"][..],
            ] {
                let stdout = to_kernel_echo_json(extra);
                let lines: Vec<&str> = stdout.lines().collect();
                assert_eq!(lines.len(), 3, "two connections and the counters: {stdout}");
                assert!(
                    lines[2].contains("\"TCPFastOpenActive\":1"),
                    "the second connection was a Fast Open one: {stdout}"
                );
                assert!(
                lines[0].contains(
                    "\"tfo\":{\"cookie_requested\":true,\"cookie_received\":8,\"syn_data_sent\":0,\"syn_data_acked\":0,\"fallback\":\"no_cookie\"},\"recovery\":{\"srtt_us\":"
                ),
                "{extra:?} first: {}",
                lines[0]
            );
                assert!(
                lines[1].contains(
                    "\"tfo\":{\"cookie_requested\":false,\"cookie_received\":null,\"syn_data_sent\":6,\"syn_data_acked\":6,\"fallback\":null},\"recovery\":{"
                ),
                "{extra:?} second: {}",
                lines[1]
            );
                assert!(
                    lines[..2]
                        .iter()
                        .all(|l| l.contains("\"received\":\"hello\\n\"")),
                    "{stdout}"
                );
            }
            echo.join().unwrap();
        },
    );
}

fn tun_server() -> PathBuf {
    tun_client().with_file_name("tun_server")
}

#[test]
fn tun_server_with_kernel_fast_open_client() {
    in_netns("tun_server_with_kernel_fast_open_client", || {
        let key = "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4";
        let mut child = Command::new(tun_server())
            .args([
                "--tun",
                "cxs0",
                "--local",
                "192.0.2.2/24",
                "--peer",
                "192.0.2.1/24",
                "--listen",
                "8080",
            ])
            .args(["--tfo", "--tfo-key", key, "--count", "2", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        support::wait_ready(&mut child);
        let py = r#"
import socket, sys
for data in (b"first", b"hello"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT
    s.connect(("192.0.2.2", 8080))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        out += b
    assert out == data, out
"#;
        // Bounded: a server that went away must fail the test, not hang it.
        let client = Command::new("timeout")
            .args(["20", "python3", "-c", py])
            .output()
            .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(
            client.status.success(),
            "kernel client: {}\ntun_server stdout: {}\ntun_server stderr: {}",
            String::from_utf8_lossy(&client.stderr),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        assert!(lines[0].contains("\"tfo\":{\"cookie_requested\":true,\"cookie_valid\":null,\"syn_data\":0,\"key\":null}"), "{stdout}");
        assert!(lines[1].contains("\"tfo\":{\"cookie_requested\":false,\"cookie_valid\":true,\"syn_data\":5,\"key\":\"primary\"},\"received\":5,\"echoed\":5,\"recovery\":{"), "{stdout}");
        assert!(lines[2].starts_with("{\"counters\":{\"TCPFastOpenActive\":0,\"TCPFastOpenActiveFail\":0,\"TCPFastOpenPassive\":1,"), "{stdout}");
    });
}

#[test]
fn malformed_tfo_key_is_one_line_naming_the_form() {
    let out = Command::new(tun_server())
        .args([
            "--tun",
            "cx0",
            "--listen",
            "7",
            "--tfo",
            "--tfo-key",
            "a0bf63f7-zz",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("a0bf63f7-ed803d81-cd641d30-cebc4a90"),
        "names the expected form: {err}"
    );
}

/// `--cc bbr` runs the connection on BBR, and `--json` shows its model; without the flag the
/// connection runs CUBIC and reports no model.
#[test]
fn tun_client_cc_bbr_runs_bbr_and_reports_its_model() {
    in_netns("tun_client_cc_bbr_runs_bbr_and_reports_its_model", || {
        let (_, echo) = kernel_echo("0.0.0.0:7", 2);
        for (extra, model) in [
            (
                &["--cc", "bbr"][..],
                "\"bbr\":{\"mode\":\"Startup\",\"bw\":",
            ),
            (&[][..], "\"bbr\":null"),
        ] {
            let stdout = to_kernel_echo_json(extra);
            assert!(stdout.contains(model), "{extra:?}: {stdout}");
        }
        echo.join().unwrap();
    });
}
