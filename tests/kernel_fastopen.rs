//! TCP Fast Open against the Linux kernel's own client and server, each test in its own
//! network namespace (where `net.ipv4.tcp_fastopen` is the namespace's own).

mod support;

use std::io::{IoSlice, Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use connectx_api::{
    CookieKey, Errno, Fallback, FastOpenInfo, FastOpenServerConfig, Net, SaEndpoints, TcpListener,
    CONNECT_DATA_IDEMPOTENT, SAE_ASSOCID_ANY,
};
use stack::{Family, SocketType};
use support::{in_netns, kernel_echo, kernel_tfo_client, net, tcp_ext};
use tun_driver::netns::set_sysctl;

const KEY: &str = "a0bf63f7-ed803d81-cd641d30-cebc4a90";
const OTHER_KEY: &str = "01234567-89abcdef-fedcba98-76543210";

/// Connect with `CONNECT_DATA_IDEMPOTENT` and `data` as iov, half-close, read to the end.
fn tfo_exchange(net: &Net, to: SocketAddr, data: &[u8]) -> (Vec<u8>, FastOpenInfo) {
    let fd = net
        .socket(
            if to.is_ipv4() { Family::V4 } else { Family::V6 },
            SocketType::Stream,
        )
        .unwrap();
    let mut len = 0;
    net.connectx(
        fd,
        &SaEndpoints::to(to),
        SAE_ASSOCID_ANY,
        CONNECT_DATA_IDEMPOTENT,
        &[IoSlice::new(data)],
        Some(&mut len),
        None,
    )
    .unwrap();
    assert_eq!(len, data.len());
    let back = support::shutdown_and_read_all(net, fd);
    let info = net
        .fast_open_info(fd)
        .unwrap()
        .expect("a Fast Open connection");
    net.close(fd).unwrap();
    (back, info)
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn stack_client_against_kernel_fast_open_server() {
    in_netns("stack_client_against_kernel_fast_open_server", || {
        // 0x1 client, 0x2 server, 0x400 server on every listener without the socket option.
        set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
        set_sysctl("net/ipv4/tcp_fastopen_key", KEY).unwrap();
        let net = net();
        let (addr, echo) = kernel_echo("192.0.2.1:7", 4);

        let (back, info) = tfo_exchange(&net, addr, b"first");
        assert_eq!(back, b"first");
        assert!(
            info.cookie_requested && info.cookie_received == Some(8),
            "{info:?}"
        );
        assert_eq!(info.syn_data_sent, 0);
        // The kernel's cookie is the one this stack computes from the same key.
        let key: CookieKey = KEY.parse().unwrap();
        let cache = net.cookie_cache();
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache[0].cookie,
            key.cookie(ip("192.0.2.2"), ip("192.0.2.1"))
        );

        let passive = tcp_ext("TCPFastOpenPassive");
        let (back, info) = tfo_exchange(&net, addr, b"second, in the SYN");
        assert_eq!(back, b"second, in the SYN");
        assert_eq!(
            (info.syn_data_sent, info.syn_data_acked, info.fallback),
            (18, 18, None),
            "{info:?}"
        );
        assert_eq!(
            tcp_ext("TCPFastOpenPassive"),
            passive + 1,
            "the kernel took the SYN data"
        );

        // The kernel's key changes: our cookie is refused, the data goes after the handshake,
        // and the fresh cookie replaces the old one.
        set_sysctl("net/ipv4/tcp_fastopen_key", OTHER_KEY).unwrap();
        let (back, info) = tfo_exchange(&net, addr, b"third, resent");
        assert_eq!(back, b"third, resent", "nothing lost or doubled");
        assert_eq!(
            (info.syn_data_sent, info.syn_data_acked),
            (13, 0),
            "{info:?}"
        );
        assert_eq!(info.fallback, Some(Fallback::DataNotAcked));
        let other: CookieKey = OTHER_KEY.parse().unwrap();
        assert_eq!(
            net.cookie_cache()[0].cookie,
            other.cookie(ip("192.0.2.2"), ip("192.0.2.1"))
        );
        let (back, info) = tfo_exchange(&net, addr, b"fourth");
        assert_eq!((back.as_slice(), info.syn_data_acked), (&b"fourth"[..], 6));
        assert_eq!(tcp_ext("TCPFastOpenPassive"), passive + 2);
        assert_eq!(net.fast_open_counters().TCPFastOpenActive, 2);
        echo.join().unwrap();
    });
}

#[test]
fn stack_client_against_kernel_server_without_fast_open() {
    in_netns(
        "stack_client_against_kernel_server_without_fast_open",
        || {
            set_sysctl("net/ipv4/tcp_fastopen", "1").unwrap();
            let net = net();
            let (addr, echo) = kernel_echo("[2001:db8::1]:7", 2);
            for _ in 0..2 {
                let (back, info) = tfo_exchange(&net, addr, b"plain and intact");
                assert_eq!(back, b"plain and intact");
                assert_eq!(
                    (info.cookie_received, info.syn_data_sent),
                    (None, 0),
                    "{info:?}"
                );
            }
            assert!(net.cookie_cache().iter().all(|e| e.cookie.is_none()));
            echo.join().unwrap();
        },
    );
}

#[test]
fn kernel_fast_open_client_against_stack_server() {
    in_netns("kernel_fast_open_client_against_stack_server", || {
        set_sysctl("net/ipv4/tcp_fastopen", "1").unwrap();
        let net = net();
        let key: CookieKey = KEY.parse().unwrap();
        let listener = TcpListener::bind(&net, "192.0.2.2:8080".parse().unwrap()).unwrap();
        net.set_fast_open(listener.fd(), Some(FastOpenServerConfig::new(key)))
            .unwrap();
        let server_net = net.clone();
        let server = std::thread::spawn(move || {
            let mut infos = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
                infos.push(server_net.server_fast_open_info(s.fd()).unwrap());
            }
            infos
        });
        let active = tcp_ext("TCPFastOpenActive");
        assert_eq!(kernel_tfo_client("192.0.2.2", 8080, "one"), "one");
        assert_eq!(
            kernel_tfo_client("192.0.2.2", 8080, "two, in the SYN"),
            "two, in the SYN"
        );
        let infos = server.join().unwrap();
        assert!(infos[0].unwrap().cookie_requested, "{infos:?}");
        let second = infos[1].expect("the second connection used Fast Open");
        assert_eq!(
            (second.cookie_valid, second.syn_data),
            (Some(true), 15),
            "{second:?}"
        );
        assert_eq!(
            tcp_ext("TCPFastOpenActive"),
            active + 1,
            "the kernel counts its SYN data acked"
        );
        assert_eq!(net.fast_open_counters().TCPFastOpenPassive, 1);
        // The kernel cached exactly the cookie a Linux server with this key would issue.
        let want = key
            .cookie(ip("192.0.2.1"), ip("192.0.2.2"))
            .unwrap()
            .to_string();
        let metrics = Command::new("ip")
            .args(["tcp_metrics", "show", "192.0.2.2"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&metrics.stdout);
        assert!(text.contains(&format!("fo_cookie {want}")), "{text}");
    });
}

#[test]
fn non_blocking_connectx_with_cookie_queues_everything() {
    in_netns(
        "non_blocking_connectx_with_cookie_queues_everything",
        || {
            set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
            let net = net();
            let (addr, echo) = kernel_echo("192.0.2.1:7", 2);
            tfo_exchange(&net, addr, b"get a cookie");
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_nonblocking(fd, true).unwrap();
            // More than a SYN carries: XNU queues it all and says so in `len`.
            let data = support::pattern(4000);
            let mut len = 0;
            let e = net
                .connectx(
                    fd,
                    &SaEndpoints::to(addr),
                    SAE_ASSOCID_ANY,
                    CONNECT_DATA_IDEMPOTENT,
                    &[IoSlice::new(&data[..1000]), IoSlice::new(&data[1000..])],
                    Some(&mut len),
                    None,
                )
                .unwrap_err();
            assert_eq!(Errno::of(&e), Some(Errno::EINPROGRESS));
            assert_eq!(len, 4000, "every byte queued");
            let mut p = [connectx_api::PollFd::new(fd, connectx_api::POLLOUT)];
            net.poll(&mut p, Some(std::time::Duration::from_secs(5)))
                .unwrap();
            assert_eq!(net.so_error(fd).unwrap(), None);
            let acked = net.fast_open_info(fd).unwrap().unwrap().syn_data_acked;
            assert!(
                acked > 0 && acked < 4000,
                "the SYN carried the first {acked} bytes"
            );
            net.set_nonblocking(fd, false).unwrap();
            net.set_timeouts(fd, Some(std::time::Duration::from_secs(5)), None)
                .unwrap();
            assert!(
                support::shutdown_and_read_all(&net, fd) == data,
                "all of it echoed"
            );
            net.close(fd).unwrap();
            drop(echo);
        },
    );
}

#[test]
fn middlebox_dropping_syn_data_falls_back_then_stops_offering() {
    in_netns(
        "middlebox_dropping_syn_data_falls_back_then_stops_offering",
        || {
            set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
            let net = net();
            let (addr, echo) = kernel_echo("192.0.2.1:7", 3);
            let (_, info) = tfo_exchange(&net, addr, b"fetch a cookie first");
            assert_eq!(info.cookie_received, Some(8));
            // The middlebox, in this namespace only: drop IPv4 SYNs longer than any SYN without data
            // (20 bytes of IP and at most 60 of TCP header).
            let nft = |args: &str| {
                let out = Command::new("nft")
                    .args(args.split(' '))
                    .output()
                    .expect("nft (apt-get install nftables)");
                assert!(
                    out.status.success(),
                    "nft {args}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            nft("add table ip middlebox");
            nft("add chain ip middlebox in { type filter hook prerouting priority -300 ; }");
            nft(
                "add rule ip middlebox in tcp flags & (syn|ack) == syn ip length > 80 counter drop",
            );

            let (back, info) = tfo_exchange(&net, addr, b"this SYN is dropped, the data survives");
            assert_eq!(
                back, b"this SYN is dropped, the data survives",
                "nothing lost"
            );
            assert_eq!(info.fallback, Some(Fallback::SynRetransmitted), "{info:?}");
            assert_eq!(net.fast_open_counters().TCPFastOpenBlackhole, 1);
            let rules = Command::new("nft")
                .args(["list", "table", "ip", "middlebox"])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&rules.stdout).contains("packets 1"),
                "the middlebox dropped one SYN"
            );

            // The next connection does not offer SYN data to that server.
            let (back, info) = tfo_exchange(&net, addr, b"plain handshake now");
            assert_eq!(back, b"plain handshake now");
            assert_eq!(
                (info.fallback, info.syn_data_sent),
                (Some(Fallback::Blackhole), 0),
                "{info:?}"
            );
            echo.join().unwrap();
        },
    );
}

#[test]
fn fast_open_with_the_kernel_over_ipv6_both_ways() {
    in_netns("fast_open_with_the_kernel_over_ipv6_both_ways", || {
        set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
        set_sysctl("net/ipv4/tcp_fastopen_key", KEY).unwrap();
        let net = net();
        let key: CookieKey = KEY.parse().unwrap();
        // Our client, the kernel's server.
        let (addr, echo) = kernel_echo("[2001:db8::1]:7", 2);
        tfo_exchange(&net, addr, b"cookie please");
        let passive = tcp_ext("TCPFastOpenPassive");
        let (back, info) = tfo_exchange(&net, addr, b"six in the SYN");
        assert_eq!(
            (back.as_slice(), info.syn_data_acked),
            (&b"six in the SYN"[..], 14),
            "{info:?}"
        );
        assert_eq!(tcp_ext("TCPFastOpenPassive"), passive + 1);
        let cached = net
            .cookie_cache()
            .into_iter()
            .find(|e| e.server == ip("2001:db8::1"))
            .unwrap();
        assert_eq!(
            cached.cookie,
            key.cookie(ip("2001:db8::2"), ip("2001:db8::1"))
        );
        echo.join().unwrap();
        // The kernel's client, our server.
        let listener = TcpListener::bind(&net, "[2001:db8::2]:8080".parse().unwrap()).unwrap();
        net.set_fast_open(listener.fd(), Some(FastOpenServerConfig::new(key)))
            .unwrap();
        let server_net = net.clone();
        let server = std::thread::spawn(move || {
            let mut last = None;
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 256];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
                last = server_net.server_fast_open_info(s.fd()).unwrap();
            }
            last
        });
        let active = tcp_ext("TCPFastOpenActive");
        assert_eq!(kernel_tfo_client("2001:db8::2", 8080, "one"), "one");
        assert_eq!(kernel_tfo_client("2001:db8::2", 8080, "two"), "two");
        let info = server
            .join()
            .unwrap()
            .expect("Fast Open on the second connection");
        assert_eq!((info.cookie_valid, info.syn_data), (Some(true), 3));
        assert_eq!(tcp_ext("TCPFastOpenActive"), active + 1);
    });
}
