//! The connectx(2) contract against the Linux kernel: `sae_srcif` and `sae_srcaddr` over two TUN
//! devices, and every errno of the man page that needs a real peer, each named in its test.
//!
//! The two-device set-up: one namespace, the stack on `cxa` (192.0.2.2, fe80::a2,
//! 2001:db8:a::2; kernel 192.0.2.1, fe80::1, 2001:db8:a::1) and on `cxb` (198.51.100.2,
//! 2001:db8:b::2; kernel 198.51.100.1, 2001:db8:b::1). The kernel's server lives on its
//! loopback at 203.0.113.10 and 2001:db8:ff::10, reachable through either device; the stack's
//! routing table sends it through `cxa` (the default routes).

mod support;

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use connectx_api::{
    Errno, Fd, Net, SaEndpoints, StackConfig, CONNECT_DATA_IDEMPOTENT,
    CONNECT_RESUME_ON_READ_WRITE, SAE_ASSOCID_ANY, SAE_CONNID_ANY,
};
use stack::{Family, SocketType};
use support::{in_netns, kernel_echo, net};

const WAIT: Duration = Duration::from_secs(10);
const SERVER_V4: &str = "203.0.113.10";
const SERVER_V6: &str = "2001:db8:ff::10";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> Errno {
    let e = r.expect_err("the call should fail");
    Errno::of(&e).unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// Run a command of the test's namespace (`ip`, `nft`), panicking with its stderr on failure.
fn run(program: &str, args: &str) {
    let out = Command::new(program)
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn two_devices() -> Net {
    run("ip", &format!("addr add {SERVER_V4}/32 dev lo"));
    run("ip", &format!("-6 addr add {SERVER_V6}/128 dev lo nodad"));
    Net::builder()
        .tun("cxa")
        // The link-local address first: a naive "first IPv6 address" choice would use it.
        .address("fe80::a2/64")
        .address("192.0.2.2/24")
        .address("2001:db8:a::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8:a::1/64")
        .peer("fe80::1/64")
        .route("default")
        .tun("cxb")
        .address("198.51.100.2/24")
        .address("2001:db8:b::2/64")
        .peer("198.51.100.1/24")
        .peer("2001:db8:b::1/64")
        .start()
        .expect("the stack starts on two devices")
}

/// Connect with `endpoints` to a kernel server at `server` and return where the kernel saw the
/// connection come from, after checking the stack reports the same local address.
fn seen_from(net: &Net, server: SocketAddr, mut endpoints: SaEndpoints) -> SocketAddr {
    let listener = TcpListener::bind(server).expect("kernel listener");
    endpoints.dstaddr = Some(listener.local_addr().unwrap());
    let family = if server.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let fd = net.socket(family, SocketType::Stream).unwrap();
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
    net.connectx(fd, &endpoints, SAE_ASSOCID_ANY, 0, &[], None, None)
        .unwrap_or_else(|e| panic!("connectx {endpoints:?}: {e}"));
    let (_conn, peer) = listener.accept().expect("kernel accept");
    assert_eq!(
        net.local_addr(fd).unwrap(),
        peer,
        "getsockname = kernel's view"
    );
    net.close(fd).unwrap();
    peer
}

fn ifindex(name: &str) -> u32 {
    tun_driver::ifindex_of(name).unwrap()
}

fn srcif(index: u32) -> SaEndpoints {
    SaEndpoints {
        srcif: index,
        ..SaEndpoints::default()
    }
}

fn srcaddr(addr: &str) -> SaEndpoints {
    SaEndpoints {
        srcaddr: Some(sa(addr)),
        ..SaEndpoints::default()
    }
}

// ----- sae_srcif, sae_srcaddr, neither -----

#[test]
fn srcif_picks_the_device_and_its_address_ipv4() {
    in_netns("srcif_picks_the_device_and_its_address_ipv4", || {
        let net = two_devices();
        let server = sa(&format!("{SERVER_V4}:0"));
        // Neither: the routing table's default route, through cxa.
        let ip = |p: SocketAddr| p.ip();
        assert_eq!(
            ip(seen_from(&net, server, SaEndpoints::default())),
            ip(sa("192.0.2.2:0"))
        );
        // sae_srcif of each device in turn, although the routes all point at cxa.
        assert_eq!(
            ip(seen_from(&net, server, srcif(ifindex("cxb")))),
            ip(sa("198.51.100.2:0"))
        );
        assert_eq!(
            ip(seen_from(&net, server, srcif(ifindex("cxa")))),
            ip(sa("192.0.2.2:0"))
        );
        // The name lookup a caller would do gives the same index.
        assert_eq!(net.if_nametoindex("cxb"), Some(ifindex("cxb")));
    });
}

#[test]
fn srcif_picks_the_device_and_never_a_link_local_source_for_global_ipv6() {
    in_netns(
        "srcif_picks_the_device_and_never_a_link_local_source_for_global_ipv6",
        || {
            let net = two_devices();
            let server = sa(&format!("[{SERVER_V6}]:0"));
            let a: IpAddr = "2001:db8:a::2".parse().unwrap();
            let b: IpAddr = "2001:db8:b::2".parse().unwrap();
            assert_eq!(seen_from(&net, server, SaEndpoints::default()).ip(), a);
            assert_eq!(seen_from(&net, server, srcif(ifindex("cxb"))).ip(), b);
            // cxa holds fe80::a2 (listed first) and 2001:db8:a::2: a global destination gets the
            // global one (RFC 6724 rule 2).
            assert_eq!(seen_from(&net, server, srcif(ifindex("cxa"))).ip(), a);
        },
    );
}

#[test]
fn link_local_destination_gets_the_link_local_source() {
    in_netns("link_local_destination_gets_the_link_local_source", || {
        let net = two_devices();
        let index = ifindex("cxa");
        let listener = std::net::TcpListener::bind(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            0,
            0,
            index,
        ))
        .expect("kernel listener on fe80::1%cxa");
        let port = listener.local_addr().unwrap().port();
        let fd = net.socket(Family::V6, SocketType::Stream).unwrap();
        net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
        let dst = SocketAddr::new("fe80::1".parse().unwrap(), port);
        net.connectx(
            fd,
            &SaEndpoints {
                srcif: index,
                dstaddr: Some(dst),
                ..SaEndpoints::default()
            },
            SAE_ASSOCID_ANY,
            0,
            &[],
            None,
            None,
        )
        .expect("connectx to a link-local peer");
        let (_c, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), "fe80::a2".parse::<IpAddr>().unwrap());
    });
}

#[test]
fn srcaddr_alone_picks_its_device_and_port() {
    in_netns("srcaddr_alone_picks_its_device_and_port", || {
        let net = two_devices();
        let v4 = sa(&format!("{SERVER_V4}:0"));
        let v6 = sa(&format!("[{SERVER_V6}]:0"));
        assert_eq!(
            seen_from(&net, v4, srcaddr("198.51.100.2:0")).ip(),
            sa("198.51.100.2:0").ip()
        );
        // A non-zero port is bound first, as bind then connect would.
        assert_eq!(
            seen_from(&net, v4, srcaddr("198.51.100.2:40123")),
            sa("198.51.100.2:40123")
        );
        assert_eq!(
            seen_from(&net, v6, srcaddr("[2001:db8:b::2]:0")).ip(),
            sa("[2001:db8:b::2]:0").ip()
        );
        assert_eq!(
            seen_from(&net, v6, srcaddr("[2001:db8:a::2]:40124")),
            sa("[2001:db8:a::2]:40124")
        );
    });
}

#[test]
fn srcif_and_srcaddr_agreeing_work_and_mismatched_are_eaddrnotavail() {
    in_netns(
        "srcif_and_srcaddr_agreeing_work_and_mismatched_are_eaddrnotavail",
        || {
            let net = two_devices();
            let both = |index, addr: &str, dst: &str| SaEndpoints {
                srcif: index,
                srcaddr: Some(sa(addr)),
                dstaddr: Some(sa(dst)),
            };
            let v4 = sa(&format!("{SERVER_V4}:0"));
            // Agreeing: seen_from fills in the destination.
            let ep = SaEndpoints {
                srcif: ifindex("cxb"),
                srcaddr: Some(sa("198.51.100.2:0")),
                dstaddr: None,
            };
            assert_eq!(seen_from(&net, v4, ep).ip(), sa("198.51.100.2:0").ip());
            let _l4 = TcpListener::bind(format!("{SERVER_V4}:7001")).unwrap();
            let _l6 = TcpListener::bind(format!("[{SERVER_V6}]:7001")).unwrap();
            for (family, ep) in [
                (
                    Family::V4,
                    both(ifindex("cxa"), "198.51.100.2:0", "203.0.113.10:7001"),
                ),
                (
                    Family::V4,
                    both(ifindex("cxb"), "192.0.2.2:0", "203.0.113.10:7001"),
                ),
                (
                    Family::V6,
                    both(
                        ifindex("cxa"),
                        "[2001:db8:b::2]:0",
                        "[2001:db8:ff::10]:7001",
                    ),
                ),
            ] {
                let fd = net.socket(family, SocketType::Stream).unwrap();
                let r = net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None);
                assert_eq!(errno(r), Errno::EADDRNOTAVAIL, "{ep:?}");
                // Nothing was bound: the socket can still connect normally.
                net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
                let dst = ep.dstaddr.unwrap();
                net.connect(fd, dst).expect("a plain connect afterwards");
                net.close(fd).unwrap();
            }
        },
    );
}

#[test]
fn longest_prefix_route_beats_the_default_route() {
    in_netns("longest_prefix_route_beats_the_default_route", || {
        run("ip", &format!("addr add {SERVER_V4}/32 dev lo"));
        let net = Net::builder()
            .tun("cxa")
            .address("192.0.2.2/24")
            .peer("192.0.2.1/24")
            .route("default")
            .tun("cxb")
            .address("198.51.100.2/24")
            .peer("198.51.100.1/24")
            .route("203.0.113.0/24")
            .start()
            .unwrap();
        let peer = seen_from(&net, sa(&format!("{SERVER_V4}:0")), SaEndpoints::default());
        assert_eq!(peer.ip(), sa("198.51.100.2:0").ip());
        // Anything else still takes the default route.
        let peer = seen_from(&net, sa("192.0.2.1:0"), SaEndpoints::default());
        assert_eq!(peer.ip(), sa("192.0.2.2:0").ip());
    });
}

#[test]
fn udp_association_leaves_through_srcif() {
    in_netns("udp_association_leaves_through_srcif", || {
        let net = two_devices();
        let kernel = std::net::UdpSocket::bind(format!("{SERVER_V4}:0")).unwrap();
        kernel.set_read_timeout(Some(WAIT)).unwrap();
        let fd = net.socket(Family::V4, SocketType::Datagram).unwrap();
        let mut len = 0;
        net.connectx(
            fd,
            &SaEndpoints {
                srcif: ifindex("cxb"),
                srcaddr: None,
                dstaddr: Some(kernel.local_addr().unwrap()),
            },
            SAE_ASSOCID_ANY,
            // Accepted, and no effect on a datagram socket.
            CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT,
            &[IoSlice::new(b"ping")],
            Some(&mut len),
            None,
        )
        .unwrap();
        assert_eq!(len, 4, "the iov went at once, as one datagram");
        let mut buf = [0u8; 16];
        let (n, from) = kernel.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.ip(), sa("198.51.100.2:0").ip());
        assert_eq!(net.local_addr(fd).unwrap(), from);
    });
}

// ----- errno -----

/// A stack on `cx0` whose connection attempts time out after `timeout`.
fn net_with_timeout(timeout: Duration) -> Net {
    let mut config = StackConfig::default();
    config.connect_timeout = timeout;
    Net::builder()
        .tun("cx0")
        .address("192.0.2.2/24")
        .address("2001:db8::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8::1/64")
        .stack_config(config)
        .start()
        .expect("the stack starts")
}

fn blocking_connect(net: &Net, family: Family, dst: &str) -> (Fd, io::Result<()>) {
    let fd = net.socket(family, SocketType::Stream).unwrap();
    let r = net.connect(fd, sa(dst));
    (fd, r)
}

#[test]
fn connectx_icmp_host_unreachable_is_ehostunreach_ipv4() {
    in_netns(
        "connectx_icmp_host_unreachable_is_ehostunreach_ipv4",
        || {
            // The kernel routes: forwarding on, and 203.0.113.0/24 unreachable, so it answers a SYN
            // for it with ICMP host unreachable (type 3, code 1).
            tun_driver::netns::set_sysctl("net/ipv4/ip_forward", "1").unwrap();
            run("ip", "route add unreachable 203.0.113.0/24");
            // Without the ICMP error the attempt would end in ETIMEDOUT after 20 s.
            let net = net_with_timeout(Duration::from_secs(20));
            let (fd, r) = blocking_connect(&net, Family::V4, "203.0.113.50:80");
            assert_eq!(errno(r), Errno::EHOSTUNREACH);
            // Reported once; the socket may try again.
            assert_eq!(net.so_error(fd).unwrap(), None);
            net.set_nonblocking(fd, true).unwrap();
            assert_eq!(
                errno(net.connect(fd, sa("203.0.113.51:80"))),
                Errno::EINPROGRESS
            );
            let mut p = [connectx_api::PollFd::new(fd, connectx_api::POLLOUT)];
            assert_eq!(net.poll(&mut p, Some(WAIT)).unwrap(), 1);
            assert_eq!(net.so_error(fd).unwrap(), Some(Errno::EHOSTUNREACH));
        },
    );
}

#[test]
fn connectx_icmpv6_address_unreachable_is_ehostunreach_ipv6() {
    in_netns(
        "connectx_icmpv6_address_unreachable_is_ehostunreach_ipv6",
        || {
            run(
                "nft",
                "add table inet t ; add chain inet t in { type filter hook input priority 0 ; } ; \
             add rule inet t in ip6 daddr 2001:db8::1 tcp dport 81 \
             reject with icmpv6 type addr-unreachable",
            );
            let net = net_with_timeout(Duration::from_secs(20));
            let (_fd, r) = blocking_connect(&net, Family::V6, "[2001:db8::1]:81");
            assert_eq!(errno(r), Errno::EHOSTUNREACH);
        },
    );
}

#[test]
fn connectx_icmpv6_no_route_is_enetunreach() {
    in_netns("connectx_icmpv6_no_route_is_enetunreach", || {
        tun_driver::netns::set_sysctl("net/ipv6/conf/all/forwarding", "1").unwrap();
        run("ip", "-6 route add unreachable 2001:db8:dead::/48");
        let net = net_with_timeout(Duration::from_secs(20));
        let (_fd, r) = blocking_connect(&net, Family::V6, "[2001:db8:dead::1]:80");
        assert_eq!(errno(r), Errno::ENETUNREACH);
    });
}

#[test]
fn connectx_unanswered_syns_is_etimedout() {
    in_netns("connectx_unanswered_syns_is_etimedout", || {
        // Forwarding is off in a new namespace: the kernel drops the SYNs for an address that
        // is not its own, silently.
        assert_eq!(
            tun_driver::netns::sysctl("net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "0"
        );
        let net = net_with_timeout(Duration::from_secs(2));
        let (_fd, r) = blocking_connect(&net, Family::V4, "203.0.113.60:80");
        assert_eq!(errno(r), Errno::ETIMEDOUT);
    });
}

#[test]
fn blocking_connectx_interrupted_by_stop_is_eintr() {
    in_netns("blocking_connectx_interrupted_by_stop_is_eintr", || {
        let net = net_with_timeout(Duration::from_secs(20));
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        let (tx, rx) = mpsc::channel();
        let caller = {
            let net = net.clone();
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                net.connect(fd, sa("203.0.113.60:80"))
            })
        };
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        net.stop();
        assert_eq!(errno(caller.join().unwrap()), Errno::EINTR);
    });
}

#[test]
fn blocking_connectx_with_data_past_its_send_timeout_is_einprogress() {
    in_netns(
        "blocking_connectx_with_data_past_its_send_timeout_is_einprogress",
        || {
            let net = net_with_timeout(Duration::from_secs(20));
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_timeouts(fd, None, Some(Duration::from_millis(300)))
                .unwrap();
            // As XNU with SO_SNDTIMEO and data: the wait ends, the attempt goes on with the
            // data queued.
            let mut len = 0;
            let r = net.connectx(
                fd,
                &SaEndpoints::to(sa("203.0.113.60:80")),
                SAE_ASSOCID_ANY,
                0,
                &[IoSlice::new(b"hello")],
                Some(&mut len),
                None,
            );
            assert_eq!(errno(r), Errno::EINPROGRESS);
            assert_eq!(len, 5, "what was queued");
            // XNU: a second connectx during the attempt, blocking: EISCONN; non-blocking:
            // EALREADY.
            assert_eq!(
                errno(net.connect(fd, sa("203.0.113.60:80"))),
                Errno::EISCONN
            );
            net.set_nonblocking(fd, true).unwrap();
            assert_eq!(
                errno(net.connect(fd, sa("203.0.113.60:80"))),
                Errno::EALREADY
            );
        },
    );
}

#[test]
fn blocking_connectx_without_data_ignores_the_send_timeout() {
    in_netns(
        "blocking_connectx_without_data_ignores_the_send_timeout",
        || {
            let net = net_with_timeout(Duration::from_millis(1500));
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_timeouts(fd, None, Some(Duration::from_millis(100)))
                .unwrap();
            // XNU: without data a blocking connectx waits for the outcome, not for SO_SNDTIMEO.
            let start = std::time::Instant::now();
            assert_eq!(
                errno(net.connect(fd, sa("203.0.113.61:80"))),
                Errno::ETIMEDOUT
            );
            assert!(
                start.elapsed() >= Duration::from_millis(1400),
                "{:?}",
                start.elapsed()
            );
        },
    );
}

/// `CONNECT_DATA_IDEMPOTENT` with nothing to send (no iov, not deferred): XNU clears the flag,
/// so the SYN is a plain one; the kernel's Fast Open server sees no cookie request.
#[test]
fn connectx_idempotent_without_data_sends_a_plain_syn() {
    in_netns("connectx_idempotent_without_data_sends_a_plain_syn", || {
        tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
        let net = net();
        let (addr, h) = kernel_echo("192.0.2.1:0", 2);
        let requests = || support::tcp_ext("TCPFastOpenCookieReqd");
        let before = requests();
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.connectx(
            fd,
            &SaEndpoints::to(addr),
            SAE_ASSOCID_ANY,
            CONNECT_DATA_IDEMPOTENT,
            &[],
            None,
            None,
        )
        .unwrap();
        assert_eq!(requests(), before, "no cookie request in a plain SYN");
        assert!(support::shutdown_and_read_all(&net, fd).is_empty());
        net.close(fd).unwrap();
        // With data, the same flag asks for a cookie (the control: the counter moves).
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        let mut len = 0;
        net.connectx(
            fd,
            &SaEndpoints::to(addr),
            SAE_ASSOCID_ANY,
            CONNECT_DATA_IDEMPOTENT,
            &[IoSlice::new(b"hi")],
            Some(&mut len),
            None,
        )
        .unwrap();
        assert_eq!(requests(), before + 1, "the cookie request");
        assert_eq!(support::shutdown_and_read_all(&net, fd), b"hi");
        net.close(fd).unwrap();
        h.join().unwrap();
    });
}

#[test]
fn connectx_srcaddr_port_in_use_is_eaddrinuse() {
    in_netns("connectx_srcaddr_port_in_use_is_eaddrinuse", || {
        let net = net();
        let (server, h) = kernel_echo("192.0.2.1:0", 1);
        let from = |port: u16| SaEndpoints {
            srcif: 0,
            srcaddr: Some(SocketAddr::new(sa("192.0.2.2:0").ip(), port)),
            dstaddr: Some(server),
        };
        let a = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.set_timeouts(a, Some(WAIT), Some(WAIT)).unwrap();
        net.connectx(a, &from(40500), SAE_ASSOCID_ANY, 0, &[], None, None)
            .unwrap();
        let b = net.socket(Family::V4, SocketType::Stream).unwrap();
        let r = net.connectx(b, &from(40500), SAE_ASSOCID_ANY, 0, &[], None, None);
        assert_eq!(errno(r), Errno::EADDRINUSE);
        // A datagram socket on the same port number is another protocol: fine.
        let u = net.socket(Family::V4, SocketType::Datagram).unwrap();
        net.connectx(u, &from(40500), SAE_ASSOCID_ANY, 0, &[], None, None)
            .expect("UDP port 40500 is free");
        // B can still connect from another port.
        net.set_timeouts(b, Some(WAIT), Some(WAIT)).unwrap();
        let (server2, h2) = kernel_echo("192.0.2.1:0", 1);
        net.connect(b, server2).unwrap();
        for fd in [a, b, u] {
            net.close(fd).unwrap();
        }
        h.join().unwrap();
        h2.join().unwrap();
    });
}

#[test]
fn connectx_without_address_of_the_family_is_eafnosupport() {
    in_netns(
        "connectx_without_address_of_the_family_is_eafnosupport",
        || {
            // IPv4 only; the device carries the default routes of both families.
            let net = Net::builder()
                .tun("cx0")
                .address("192.0.2.2/24")
                .peer("192.0.2.1/24")
                .start()
                .unwrap();
            let fd = net.socket(Family::V6, SocketType::Stream).unwrap();
            assert_eq!(
                errno(net.connect(fd, sa("[2001:db8::1]:80"))),
                Errno::EAFNOSUPPORT
            );
            let u = net.socket(Family::V6, SocketType::Datagram).unwrap();
            assert_eq!(
                errno(net.connect(u, sa("[2001:db8::1]:80"))),
                Errno::EAFNOSUPPORT
            );
        },
    );
}

#[test]
fn connectx_source_and_destination_families_differ_is_eafnosupport() {
    in_netns(
        "connectx_source_and_destination_families_differ_is_eafnosupport",
        || {
            let net = net();
            for ty in [SocketType::Stream, SocketType::Datagram] {
                let fd = net.socket(Family::V6, ty).unwrap();
                let ep = SaEndpoints {
                    srcif: 0,
                    srcaddr: Some(sa("192.0.2.2:0")),
                    dstaddr: Some(sa("[2001:db8::1]:80")),
                };
                let r = net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None);
                assert_eq!(errno(r), Errno::EAFNOSUPPORT, "{ty:?}");
            }
        },
    );
}

#[test]
fn connectx_past_the_buffer_limit_is_enobufs() {
    in_netns("connectx_past_the_buffer_limit_is_enobufs", || {
        let mut config = StackConfig::default();
        config.tcp_rx_buffer = 64 << 10;
        config.tcp_tx_buffer = 64 << 10;
        // Room for two connections' buffers.
        config.buffer_limit = 2 * (128 << 10);
        let net = Net::builder()
            .tun("cx0")
            .address("192.0.2.2/24")
            .peer("192.0.2.1/24")
            .stack_config(config)
            .start()
            .unwrap();
        // A kernel server that closes each connection at once: the stack's side then ends in
        // LAST-ACK, not TIME-WAIT (where a connection keeps its buffers for 10 s).
        let listener = TcpListener::bind("192.0.2.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            for _ in 0..3 {
                drop(listener.accept().unwrap());
            }
        });
        let connect = || {
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
            (fd, net.connect(fd, server))
        };
        let (a, ra) = connect();
        ra.unwrap();
        let (b, rb) = connect();
        rb.unwrap();
        let (c, rc) = connect();
        assert_eq!(errno(rc), Errno::ENOBUFS);
        // Once a connection has finished closing its buffers are free again.
        let mut buf = [0u8; 8];
        assert_eq!(net.recv(a, &mut buf).unwrap(), 0, "the server closed");
        net.close(a).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match net.connect(c, server) {
                Ok(()) => break,
                Err(e) if Errno::of(&e) == Some(Errno::ENOBUFS) => {
                    assert!(std::time::Instant::now() < deadline, "buffers never freed");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect after close: {e}"),
            }
        }
        for fd in [b, c] {
            net.close(fd).unwrap();
        }
        h.join().unwrap();
    });
}

#[test]
fn connectx_through_a_downed_interface_is_enetdown() {
    in_netns("connectx_through_a_downed_interface_is_enetdown", || {
        let net = net();
        let link = tun_driver::Link::by_name("cx0").unwrap();
        link.set_up(false).unwrap();
        for (family, dst) in [
            (Family::V4, "192.0.2.1:80"),
            (Family::V6, "[2001:db8::1]:80"),
        ] {
            for ty in [SocketType::Stream, SocketType::Datagram] {
                let fd = net.socket(family, ty).unwrap();
                assert_eq!(
                    errno(net.connect(fd, sa(dst))),
                    Errno::ENETDOWN,
                    "{dst} {ty:?}"
                );
            }
        }
        // Up again (IPv4 addresses survive a down link): connections work again.
        link.set_up(true).unwrap();
        let (server, h) = kernel_echo("192.0.2.1:0", 1);
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
        net.connect(fd, server).unwrap();
        support::shutdown_and_read_all(&net, fd);
        h.join().unwrap();
    });
}

#[test]
fn udp_association_icmp_port_unreachable_is_econnrefused() {
    in_netns(
        "udp_association_icmp_port_unreachable_is_econnrefused",
        || {
            let net = net();
            for dst in ["192.0.2.1:9", "[2001:db8::1]:9"] {
                let family = if sa(dst).is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                let fd = net.socket(family, SocketType::Datagram).unwrap();
                net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
                net.connect(fd, sa(dst)).unwrap();
                net.send(fd, b"anyone?").unwrap();
                let mut buf = [0u8; 16];
                // Nothing listens on port 9: the kernel answers with ICMP port unreachable.
                assert_eq!(errno(net.recv(fd, &mut buf)), Errno::ECONNREFUSED, "{dst}");
                // Reported once; then the association dissolves and the socket is usable.
                net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)
                    .unwrap();
                let kernel = std::net::UdpSocket::bind(if family == Family::V4 {
                    "192.0.2.1:0"
                } else {
                    "[2001:db8::1]:0"
                })
                .unwrap();
                kernel.set_read_timeout(Some(WAIT)).unwrap();
                net.send_to(fd, b"again", kernel.local_addr().unwrap())
                    .unwrap();
                let (n, _) = kernel.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"again");
            }
        },
    );
}
