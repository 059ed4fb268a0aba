//! C programs built against `libconnectx.so` and `include/connectx.h` with the system's C
//! compiler, run against the kernel in a network namespace of the test's own (root).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/debug/deps` (or `release`): where cargo built `libconnectx.so` for this test (the
/// copy one level up is refreshed only by `cargo build`, so it may be stale).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

/// Compile `source` (relative to this crate) with warnings as errors; returns the program's
/// path.
fn compile(source: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = Path::new(source).file_stem().unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let lib = lib_dir();
    let status = support::cc()
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
        ])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join(source))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lconnectx", "-lpthread", "-o"])
        .arg(&out)
        .status()
        .expect("cc (the system's C compiler)");
    assert!(status.success(), "compiling {source} failed");
    out
}

/// Run a compiled program (60 s at most). Without cargo's `LD_LIBRARY_PATH`: it lists
/// `target/debug`, whose copy of the library may be older than the one the program was linked
/// against (`-rpath`), and it would win.
fn run(program: &Path) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg(program)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

/// A counter of the kernel's `TcpExt` MIB in the calling thread's namespace.
fn tcp_ext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in netstat"))
}

/// The curl and Exim patterns (TCP Fast Open against the kernel's server: the second
/// connection of each carries its data in the SYN), a UDP association with `disconnectx`, and
/// bad input from C, in one program.
#[test]
fn darwin_patterns_from_c_against_the_kernel() {
    if !tun_driver::netns::require_root("darwin_patterns_from_c_against_the_kernel") {
        return;
    }
    let program = compile("tests/c/patterns.c");
    let outcome = std::thread::spawn(move || {
        tun_driver::netns::unshare_net().expect("a private network namespace");
        // Client and server Fast Open, the server on every listener without the option.
        tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
        let tcp = TcpListener::bind("0.0.0.0:7").unwrap();
        let echo = std::thread::spawn(move || {
            for _ in 0..6 {
                let Ok((mut s, _)) = tcp.accept() else { return };
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        // UDP echo; a datagram too big for one packet is answered with its length and byte
        // sum instead (the stack does not reassemble fragments).
        let udp = UdpSocket::bind("0.0.0.0:9").unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if n > 1472 {
                    let sum: u64 = buf[..n].iter().map(|&b| u64::from(b)).sum();
                    let _ = udp.send_to(format!("{n} {sum}").as_bytes(), from);
                } else {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        let before = tcp_ext("TCPFastOpenPassive");
        let requests_before = tcp_ext("TCPFastOpenCookieReqd");
        // The program inherits this thread's namespace.
        let out = run(&program);
        let passive = tcp_ext("TCPFastOpenPassive") - before;
        let requests = tcp_ext("TCPFastOpenCookieReqd") - requests_before;
        if out.status.success() {
            echo.join().unwrap();
        }
        (out, passive, requests)
    })
    .join()
    .unwrap();
    let (out, passive, requests) = outcome;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok all"), "{stdout}");
    assert_eq!(
        passive, 2,
        "the kernel took data from two SYNs (the second curl request, Exim's greeting)"
    );
    assert_eq!(
        requests, 1,
        "one cookie request (the first curl connection; the IDEMPOTENT one without data sent a \
         plain SYN)"
    );
}

/// README's example: it builds as README says and shows a request riding in a SYN. It makes
/// its own namespace.
#[test]
fn the_c_example_builds_and_runs() {
    if !tun_driver::netns::require_root("the_c_example_builds_and_runs") {
        return;
    }
    let program = compile("../examples/c/connectx_demo.c");
    let out = run(&program);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("this one fetched it").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("rode in the SYN").count(), 1, "{stdout}");
}
