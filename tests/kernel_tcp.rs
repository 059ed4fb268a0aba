//! The stack against the Linux kernel's TCP, over a real TUN device in a private namespace.

mod support;

use std::io::{IoSlice, Read, Write};
use std::net::SocketAddr;

use connectx_api::{Errno, SaEndpoints, TcpListener, TcpStream, SAE_ASSOCID_ANY};
use stack::{Family, Shutdown, SocketType};
use support::{in_netns, kernel_client, kernel_echo, net};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn stack_client_to_kernel(server: &'static str) {
    let net = net();
    let (addr, h) = kernel_echo(server, 1);
    let fd = net
        .socket(
            if addr.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            SocketType::Stream,
        )
        .unwrap();
    let mut len = 0;
    net.connectx(
        fd,
        &SaEndpoints::to(addr),
        SAE_ASSOCID_ANY,
        0,
        &[IoSlice::new(b"hello\n")],
        Some(&mut len),
        None,
    )
    .unwrap();
    assert_eq!(len, 6);
    let got = support::shutdown_and_read_all(&net, fd);
    assert_eq!(got, b"hello\n");
    net.close(fd).unwrap();
    h.join().unwrap();
}

#[test]
fn tcp_stack_client_to_kernel_server_ipv4() {
    in_netns("tcp_stack_client_to_kernel_server_ipv4", || {
        stack_client_to_kernel("192.0.2.1:7")
    });
}

#[test]
fn tcp_stack_client_to_kernel_server_ipv6() {
    in_netns("tcp_stack_client_to_kernel_server_ipv6", || {
        stack_client_to_kernel("[2001:db8::1]:7")
    });
}

fn kernel_client_to_stack(listen: &'static str) {
    let net = net();
    let listener = TcpListener::bind(&net, sa(listen)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        peer
    });
    let back = kernel_client(sa(listen), b"from the kernel\n");
    assert_eq!(back, b"from the kernel\n");
    let peer = server.join().unwrap();
    assert_eq!(peer.ip().is_ipv4(), sa(listen).is_ipv4());
}

#[test]
fn tcp_kernel_client_to_stack_server_ipv4() {
    in_netns("tcp_kernel_client_to_stack_server_ipv4", || {
        kernel_client_to_stack("192.0.2.2:8080")
    });
}

#[test]
fn tcp_kernel_client_to_stack_server_ipv6() {
    in_netns("tcp_kernel_client_to_stack_server_ipv6", || {
        kernel_client_to_stack("[2001:db8::2]:8080")
    });
}

#[test]
fn connectx_refused_by_kernel_is_econnrefused_nonblocking_einprogress() {
    in_netns(
        "connectx_refused_by_kernel_is_econnrefused_nonblocking_einprogress",
        || {
            let net = net();
            let e = TcpStream::connect(&net, sa("192.0.2.1:9")).unwrap_err();
            assert_eq!(Errno::of(&e), Some(Errno::ECONNREFUSED), "{e}");
            // Non-blocking: EINPROGRESS, then writable, then SO_ERROR says refused.
            let fd = net.socket(Family::V6, SocketType::Stream).unwrap();
            net.set_nonblocking(fd, true).unwrap();
            let e = net.connect(fd, sa("[2001:db8::1]:9")).unwrap_err();
            assert_eq!(Errno::of(&e), Some(Errno::EINPROGRESS));
            let mut p = [connectx_api::PollFd::new(fd, connectx_api::POLLOUT)];
            assert_eq!(
                net.poll(&mut p, Some(std::time::Duration::from_secs(5)))
                    .unwrap(),
                1
            );
            assert_ne!(p[0].revents & connectx_api::POLLOUT, 0);
            assert_eq!(net.so_error(fd).unwrap(), Some(Errno::ECONNREFUSED));
            assert_eq!(net.so_error(fd).unwrap(), None);
        },
    );
}

#[test]
fn tcp_10mb_both_ways_intact() {
    in_netns("tcp_10mb_both_ways_intact", || {
        let net = net();
        let (addr, h) = kernel_echo("192.0.2.1:9000", 1);
        let payload = support::pattern(10 << 20);
        let expect = support::fnv1a(&payload);
        let mut s = TcpStream::connect(&net, addr).unwrap();
        let writer_net = net.clone();
        let fd = s.fd();
        let data = payload.clone();
        let w = std::thread::spawn(move || {
            let mut off = 0;
            while off < data.len() {
                off += writer_net.send(fd, &data[off..]).unwrap();
            }
            writer_net.shutdown(fd, Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(payload.len());
        s.read_to_end(&mut back).unwrap();
        w.join().unwrap();
        h.join().ok();
        assert_eq!(back.len(), payload.len());
        assert_eq!(
            support::fnv1a(&back),
            expect,
            "the echo differs from what was sent"
        );
    });
}

/// Connect, then close and stop at once, as a program does when it exits, `rounds` times: the
/// kernel peer must see the end of the stream, not silence.
fn close_and_stop_sends_the_fin(port: u16, rounds: usize, start: impl Fn() -> connectx_api::Net) {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    for _ in 0..rounds {
        let net = start();
        let s = TcpStream::connect(&net, sa(&format!("192.0.2.1:{port}"))).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        drop(s);
        drop(net);
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            peer.read(&mut buf).unwrap(),
            0,
            "the peer sees the end of the stream, not silence"
        );
    }
}

#[test]
fn closing_then_stopping_the_stack_still_sends_the_fin() {
    in_netns(
        "closing_then_stopping_the_stack_still_sends_the_fin",
        || close_and_stop_sends_the_fin(9100, 20, net),
    );
}

#[test]
fn stopping_the_stack_sends_the_fin_an_impairment_still_holds() {
    in_netns(
        "stopping_the_stack_sends_the_fin_an_impairment_still_holds",
        || {
            // Each packet is held 30 ms on its way out: at the stop, the FIN is still queued in
            // the impairment.
            close_and_stop_sends_the_fin(9101, 5, || {
                connectx_api::Net::builder()
                    .tun("cx0")
                    .address("192.0.2.2/24")
                    .peer("192.0.2.1/24")
                    .impairment(connectx_api::Impairment {
                        delay: std::time::Duration::from_millis(30),
                        ..Default::default()
                    })
                    .start()
                    .unwrap()
            })
        },
    );
}

/// The runtime sleeps without a timer while nothing is due; the connect timeout still counts
/// from the call, not from the last time the runtime woke.
#[test]
fn connect_after_the_runtime_slept_longer_than_the_connect_timeout() {
    in_netns(
        "connect_after_the_runtime_slept_longer_than_the_connect_timeout",
        || {
            let mut config = connectx_api::StackConfig::default();
            config.connect_timeout = std::time::Duration::from_secs(2);
            let net = connectx_api::Net::builder()
                .tun("cx0")
                .address("192.0.2.2/24")
                .peer("192.0.2.1/24")
                .stack_config(config)
                .start()
                .unwrap();
            let (addr, h) = kernel_echo("192.0.2.1:0", 1);
            std::thread::sleep(std::time::Duration::from_secs(3));
            let started = std::time::Instant::now();
            let mut s = TcpStream::connect(&net, addr).expect("connects after 3 s of idling");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
            s.write_all(b"ping").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"ping");
            h.join().unwrap();
        },
    );
}
