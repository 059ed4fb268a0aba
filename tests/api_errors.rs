//! Bad input to the socket calls and the builder: each gets its documented errno (or
//! `StartError`), and the stack keeps serving afterwards.

mod support;

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use connectx_api::{
    Errno, Fd, Net, PollFd, SaEndpoints, StartError, CONNECT_RESUME_ON_READ_WRITE, POLLHUP, POLLIN,
    POLLOUT, SAE_ASSOCID_ALL, SAE_ASSOCID_ANY, SAE_CONNID_ANY,
};
use stack::{Family, Shutdown, SocketType};
use support::{in_netns, kernel_echo, net};

const WAIT: Duration = Duration::from_secs(10);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> Errno {
    let e = r.expect_err("the call should fail");
    Errno::of(&e).unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// `connectx` with a destination and nothing else.
fn connectx_to(net: &Net, fd: Fd, dst: SocketAddr) -> io::Result<()> {
    net.connectx(
        fd,
        &SaEndpoints::to(dst),
        SAE_ASSOCID_ANY,
        0,
        &[],
        None,
        None,
    )
}

/// Whether `fd` is an open descriptor of this process (not of the stack).
fn process_fd_open(fd: Fd) -> bool {
    Path::new(&format!("/proc/self/fd/{fd}")).exists()
}

/// Echo a line through an already connected stream descriptor, then close it.
fn echo_through(net: &Net, fd: Fd) {
    let line = b"still serving\n";
    let mut sent = 0;
    while sent < line.len() {
        sent += net.send(fd, &line[sent..]).unwrap();
    }
    let got = support::shutdown_and_read_all(net, fd);
    assert_eq!(got, line);
    net.close(fd).unwrap();
}

/// Connect `fd` (a fresh or failed stream socket) to a kernel echo server and echo a line.
fn echo_on(net: &Net, fd: Fd) {
    let (addr, h) = kernel_echo("192.0.2.1:0", 1);
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
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
    .expect("a connection to the kernel echo server");
    assert_eq!(len, 6);
    let mut buf = [0u8; 6];
    let mut got = 0;
    while got < 6 {
        let n = net.recv(fd, &mut buf[got..]).unwrap();
        assert_ne!(n, 0, "the echo server closed early");
        got += n;
    }
    assert_eq!(&buf, b"hello\n");
    echo_through(net, fd);
    h.join().unwrap();
}

/// The stack still makes a normal connection to a kernel echo server.
fn still_serves(net: &Net) {
    let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
    echo_on(net, fd);
}

/// A stack whose only routes are 192.0.2.0/24 and the connected networks of its addresses
/// (192.0.2.0/24, 2001:db8::/64).
fn net_with_one_route() -> Net {
    Net::builder()
        .tun("cx0")
        .address("192.0.2.2/24")
        .address("2001:db8::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8::1/64")
        .route("192.0.2.0/24")
        .start()
        .expect("the stack starts")
}

// ----- descriptors -----

#[test]
fn never_opened_descriptor_is_ebadf() {
    in_netns("never_opened_descriptor_is_ebadf", || {
        let net = net();
        let fd = 9999;
        assert!(!process_fd_open(fd), "the test needs {fd} not to be open");
        let mut buf = [0u8; 16];
        assert_eq!(errno(net.send(fd, b"x")), Errno::EBADF);
        assert_eq!(errno(net.recv(fd, &mut buf)), Errno::EBADF);
        assert_eq!(errno(net.recv_from(fd, &mut buf)), Errno::EBADF);
        assert_eq!(
            errno(net.send_to(fd, b"x", sa("192.0.2.1:9"))),
            Errno::EBADF
        );
        assert_eq!(errno(net.close(fd)), Errno::EBADF);
        assert_eq!(
            errno(connectx_to(&net, fd, sa("192.0.2.1:7"))),
            Errno::EBADF
        );
        assert_eq!(
            errno(net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)),
            Errno::EBADF
        );
        assert_eq!(errno(net.bind(fd, sa("192.0.2.2:0"))), Errno::EBADF);
        assert_eq!(errno(net.listen(fd, 1)), Errno::EBADF);
        assert_eq!(errno(net.accept(fd)), Errno::EBADF);
        assert_eq!(errno(net.shutdown(fd, Shutdown::Both)), Errno::EBADF);
        assert_eq!(errno(net.set_nonblocking(fd, true)), Errno::EBADF);
        assert_eq!(errno(net.set_timeouts(fd, None, None)), Errno::EBADF);
        assert_eq!(errno(net.so_error(fd)), Errno::EBADF);
        assert_eq!(errno(net.local_addr(fd)), Errno::EBADF);
        assert_eq!(errno(net.peer_addr(fd)), Errno::EBADF);
        let mut p = [PollFd::new(fd, POLLOUT)];
        assert_eq!(net.poll(&mut p, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(p[0].revents, connectx_api::POLLNVAL);
        still_serves(&net);
    });
}

#[test]
fn closed_descriptor_used_again_is_ebadf() {
    in_netns("closed_descriptor_used_again_is_ebadf", || {
        let net = net();
        // Stack descriptors share their numbers with the process's own descriptors, and a
        // number that is open in the process reports ENOTSOCK. Go past the numbers this test
        // process uses, so that the closed one is open nowhere.
        let mut fds = Vec::new();
        let fd = loop {
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            fds.push(fd);
            if fd >= 512 && !process_fd_open(fd) {
                break fd;
            }
        };
        net.close(fds.pop().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(errno(net.send(fd, b"x")), Errno::EBADF);
        assert_eq!(errno(net.recv(fd, &mut buf)), Errno::EBADF);
        assert_eq!(errno(net.close(fd)), Errno::EBADF);
        assert_eq!(
            errno(connectx_to(&net, fd, sa("192.0.2.1:7"))),
            Errno::EBADF
        );
        assert_eq!(errno(net.bind(fd, sa("192.0.2.2:0"))), Errno::EBADF);
        for fd in fds {
            net.close(fd).unwrap();
        }
        // The lowest free number is handed out again.
        let again = net.socket(Family::V4, SocketType::Stream).unwrap();
        assert_eq!(again, 3);
        echo_on(&net, again);
    });
}

#[test]
fn process_descriptors_0_1_2_are_enotsock() {
    in_netns("process_descriptors_0_1_2_are_enotsock", || {
        let net = net();
        let open: Vec<Fd> = (0..3).filter(|&fd| process_fd_open(fd)).collect();
        assert!(
            open.contains(&1) || open.contains(&2),
            "stdout or stderr is open"
        );
        let mut buf = [0u8; 16];
        for fd in open {
            assert_eq!(errno(net.send(fd, b"x")), Errno::ENOTSOCK, "fd {fd}");
            assert_eq!(errno(net.recv(fd, &mut buf)), Errno::ENOTSOCK, "fd {fd}");
            assert_eq!(
                errno(connectx_to(&net, fd, sa("192.0.2.1:7"))),
                Errno::ENOTSOCK,
                "fd {fd}"
            );
            assert_eq!(
                errno(net.bind(fd, sa("192.0.2.2:0"))),
                Errno::ENOTSOCK,
                "fd {fd}"
            );
            assert_eq!(errno(net.listen(fd, 1)), Errno::ENOTSOCK, "fd {fd}");
            assert_eq!(errno(net.so_error(fd)), Errno::ENOTSOCK, "fd {fd}");
            // close refuses, and leaves the process's descriptor alone.
            assert_eq!(errno(net.close(fd)), Errno::ENOTSOCK, "fd {fd}");
            assert!(process_fd_open(fd), "fd {fd} is still open");
        }
        still_serves(&net);
    });
}

// ----- connectx arguments -----

#[test]
fn connectx_ignores_associd_as_xnu_does() {
    in_netns("connectx_ignores_associd_as_xnu_does", || {
        let net = net();
        for associd in [1, 42, SAE_ASSOCID_ALL] {
            let (addr, h) = kernel_echo("192.0.2.1:0", 1);
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            let mut connid = 0;
            net.connectx(
                fd,
                &SaEndpoints::to(addr),
                associd,
                0,
                &[],
                None,
                Some(&mut connid),
            )
            .unwrap_or_else(|e| panic!("associd {associd}: {e}"));
            assert_ne!(connid, 0, "associd {associd}");
            echo_through(&net, fd);
            h.join().unwrap();
        }
    });
}

#[test]
fn connectx_ignores_unknown_flags_as_xnu_does() {
    in_netns("connectx_ignores_unknown_flags_as_xnu_does", || {
        let net = net();
        for flags in [0x100, 0x8, 0x8000_0000] {
            let (addr, h) = kernel_echo("192.0.2.1:0", 1);
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.connectx(
                fd,
                &SaEndpoints::to(addr),
                SAE_ASSOCID_ANY,
                flags,
                &[],
                None,
                None,
            )
            .unwrap_or_else(|e| panic!("flags {flags:#x}: {e}"));
            echo_through(&net, fd);
            h.join().unwrap();
        }
        // Known flags still count among unknown ones: RESUME_ON_READ_WRITE defers.
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.connectx(
            fd,
            &SaEndpoints::to(sa("192.0.2.1:7")),
            SAE_ASSOCID_ANY,
            CONNECT_RESUME_ON_READ_WRITE | 0x100,
            &[],
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            errno(net.peer_addr(fd)),
            Errno::ENOTCONN,
            "nothing sent yet"
        );
        net.close(fd).unwrap();
    });
}

#[test]
fn connectx_writes_len_and_connid_0_on_failure() {
    in_netns("connectx_writes_len_and_connid_0_on_failure", || {
        let net = net();
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        let (mut len, mut connid) = (7, 7);
        let r = net.connectx(
            fd,
            &SaEndpoints::to(sa("192.0.2.1:0")),
            SAE_ASSOCID_ANY,
            0,
            &[IoSlice::new(b"data")],
            Some(&mut len),
            Some(&mut connid),
        );
        assert_eq!(errno(r), Errno::EADDRNOTAVAIL);
        assert_eq!((len, connid), (0, 0));
        // An iov of empty entries still needs `len`; more than IOV_MAX entries is EINVAL.
        let empty = [IoSlice::new(b"")];
        let r = net.connectx(
            fd,
            &SaEndpoints::to(sa("192.0.2.1:7")),
            SAE_ASSOCID_ANY,
            0,
            &empty,
            None,
            None,
        );
        assert_eq!(errno(r), Errno::EINVAL);
        let many = vec![IoSlice::new(b"x"); 1025];
        let r = net.connectx(
            fd,
            &SaEndpoints::to(sa("192.0.2.1:7")),
            SAE_ASSOCID_ANY,
            0,
            &many,
            Some(&mut len),
            Some(&mut connid),
        );
        assert_eq!(errno(r), Errno::EINVAL);
        assert_eq!((len, connid), (0, 0));
        echo_on(&net, fd);
    });
}

#[test]
fn connectx_iov_without_len_is_einval() {
    in_netns("connectx_iov_without_len_is_einval", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            let r = net.connectx(
                fd,
                &SaEndpoints::to(sa("192.0.2.1:7")),
                SAE_ASSOCID_ANY,
                0,
                &[IoSlice::new(b"data")],
                None,
                None,
            );
            assert_eq!(errno(r), Errno::EINVAL, "{ty:?}");
            assert_eq!(errno(net.peer_addr(fd)), Errno::ENOTCONN, "{ty:?}");
            if ty == SocketType::Stream {
                echo_on(&net, fd);
            } else {
                net.close(fd).unwrap();
            }
        }
        still_serves(&net);
    });
}

#[test]
fn connectx_without_dstaddr_is_einval() {
    in_netns("connectx_without_dstaddr_is_einval", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            let no_dst = [
                SaEndpoints::default(),
                SaEndpoints {
                    srcaddr: Some(sa("192.0.2.2:0")),
                    ..SaEndpoints::default()
                },
            ];
            for ep in no_dst {
                let r = net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None);
                assert_eq!(errno(r), Errno::EINVAL, "{ty:?} {ep:?}");
            }
            if ty == SocketType::Stream {
                echo_on(&net, fd);
            } else {
                net.close(fd).unwrap();
            }
        }
    });
}

#[test]
fn connectx_to_port_0_is_eaddrnotavail() {
    in_netns("connectx_to_port_0_is_eaddrnotavail", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            assert_eq!(
                errno(connectx_to(&net, fd, sa("192.0.2.1:0"))),
                Errno::EADDRNOTAVAIL,
                "{ty:?}"
            );
            if ty == SocketType::Stream {
                echo_on(&net, fd);
            } else {
                net.close(fd).unwrap();
            }
        }
        let fd = net.socket(Family::V6, SocketType::Stream).unwrap();
        assert_eq!(
            errno(connectx_to(&net, fd, sa("[2001:db8::1]:0"))),
            Errno::EADDRNOTAVAIL
        );
        net.close(fd).unwrap();
    });
}

#[test]
fn connectx_ipv6_destination_on_inet_socket_is_eafnosupport() {
    in_netns(
        "connectx_ipv6_destination_on_inet_socket_is_eafnosupport",
        || {
            let net = net();
            for ty in [SocketType::Stream, SocketType::Datagram] {
                let fd = net.socket(Family::V4, ty).unwrap();
                assert_eq!(
                    errno(connectx_to(&net, fd, sa("[2001:db8::1]:7"))),
                    Errno::EAFNOSUPPORT,
                    "{ty:?}"
                );
                // A source of the other family, too.
                let ep = SaEndpoints {
                    srcaddr: Some(sa("[2001:db8::2]:0")),
                    ..SaEndpoints::to(sa("192.0.2.1:7"))
                };
                assert_eq!(
                    errno(net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None)),
                    Errno::EAFNOSUPPORT,
                    "{ty:?} from an IPv6 source"
                );
                if ty == SocketType::Stream {
                    echo_on(&net, fd);
                } else {
                    net.close(fd).unwrap();
                }
            }
        },
    );
}

#[test]
fn connectx_without_route_is_enetunreach() {
    in_netns("connectx_without_route_is_enetunreach", || {
        let net = net_with_one_route();
        for (family, dst) in [
            (Family::V4, "203.0.113.1:7"),
            (Family::V4, "198.51.100.1:7"),
            // Off the connected 2001:db8::/64, and there is no IPv6 route.
            (Family::V6, "[2001:db8:1::1]:7"),
        ] {
            for ty in [SocketType::Stream, SocketType::Datagram] {
                let fd = net.socket(family, ty).unwrap();
                assert_eq!(
                    errno(connectx_to(&net, fd, sa(dst))),
                    Errno::ENETUNREACH,
                    "{ty:?} to {dst}"
                );
                if ty == SocketType::Datagram {
                    assert_eq!(
                        errno(net.send_to(fd, b"x", sa(dst))),
                        Errno::ENETUNREACH,
                        "sendto {dst}"
                    );
                }
                net.close(fd).unwrap();
            }
        }
        // 192.0.2.0/24 is routed: the stack serves there.
        still_serves(&net);
    });
}

#[test]
fn connectx_unknown_srcif_is_enxio() {
    in_netns("connectx_unknown_srcif_is_enxio", || {
        let net = net();
        let (addr, h) = kernel_echo("192.0.2.1:0", 1);
        let cx0 = net.if_nametoindex("cx0").expect("cx0 has a kernel index");
        let unknown = cx0 + 1000;
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            let ep = SaEndpoints {
                srcif: unknown,
                srcaddr: None,
                dstaddr: Some(addr),
            };
            let r = net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None);
            assert_eq!(errno(r), Errno::ENXIO, "{ty:?}");
            if ty == SocketType::Stream {
                // The same socket connects through the interface's real index.
                let ep = SaEndpoints { srcif: cx0, ..ep };
                net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
                net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None)
                    .unwrap();
                echo_through(&net, fd);
            } else {
                net.close(fd).unwrap();
            }
        }
        h.join().unwrap();
    });
}

#[test]
fn connectx_srcaddr_not_on_stack_is_eaddrnotavail() {
    in_netns("connectx_srcaddr_not_on_stack_is_eaddrnotavail", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            for src in ["192.0.2.1:0", "203.0.113.9:4000"] {
                let ep = SaEndpoints {
                    srcaddr: Some(sa(src)),
                    ..SaEndpoints::to(sa("192.0.2.1:7"))
                };
                let r = net.connectx(fd, &ep, SAE_ASSOCID_ANY, 0, &[], None, None);
                assert_eq!(errno(r), Errno::EADDRNOTAVAIL, "{ty:?} from {src}");
            }
            assert_eq!(
                net.local_addr(fd).unwrap().port(),
                0,
                "{ty:?}: left unbound"
            );
            if ty == SocketType::Stream {
                echo_on(&net, fd);
            } else {
                net.close(fd).unwrap();
            }
        }
    });
}

// ----- connectx and socket state -----

#[test]
fn connectx_on_listening_socket_is_eopnotsupp() {
    in_netns("connectx_on_listening_socket_is_eopnotsupp", || {
        let net = net();
        let l = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.bind(l, sa("192.0.2.2:8000")).unwrap();
        net.listen(l, 4).unwrap();
        assert_eq!(
            errno(connectx_to(&net, l, sa("192.0.2.1:7"))),
            Errno::EOPNOTSUPP
        );
        // Still listening: a kernel client is accepted and served.
        let client = std::thread::spawn(|| support::kernel_client(sa("192.0.2.2:8000"), b"hi"));
        net.set_timeouts(l, Some(WAIT), None).unwrap();
        let (s, peer) = net.accept(l).unwrap();
        assert_eq!(peer.ip(), sa("192.0.2.1:0").ip());
        let mut buf = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            got += net.recv(s, &mut buf[got..]).unwrap();
        }
        net.send(s, &buf).unwrap();
        net.close(s).unwrap();
        assert_eq!(client.join().unwrap(), b"hi");
        net.close(l).unwrap();
        still_serves(&net);
    });
}

#[test]
fn connectx_on_connected_socket_is_eisconn() {
    in_netns("connectx_on_connected_socket_is_eisconn", || {
        let net = net();
        let (addr, h) = kernel_echo("192.0.2.1:0", 1);
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
        connectx_to(&net, fd, addr).unwrap();
        assert_eq!(errno(connectx_to(&net, fd, addr)), Errno::EISCONN);
        assert_eq!(
            errno(connectx_to(&net, fd, sa("192.0.2.1:9"))),
            Errno::EISCONN
        );
        // The connection is unharmed.
        assert_eq!(net.peer_addr(fd).unwrap(), addr);
        echo_through(&net, fd);
        h.join().unwrap();
    });
}

#[test]
fn second_nonblocking_connectx_in_progress_is_ealready() {
    in_netns(
        "second_nonblocking_connectx_in_progress_is_ealready",
        || {
            let net = net();
            // 192.0.2.99 is on the kernel's connected /24 but nobody owns it. Without forwarding
            // the kernel drops the SYN silently; with forwarding it sends it back down cx0 to the
            // stack, which drops a packet for an address it does not have. No RST, no ICMP error
            // either way, so the attempt stays in progress.
            let silent = sa("192.0.2.99:7");
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_nonblocking(fd, true).unwrap();
            assert_eq!(errno(connectx_to(&net, fd, silent)), Errno::EINPROGRESS);
            assert_eq!(errno(connectx_to(&net, fd, silent)), Errno::EALREADY);
            // Another destination does not matter: an attempt is under way.
            assert_eq!(
                errno(connectx_to(&net, fd, sa("192.0.2.1:7"))),
                Errno::EALREADY
            );
            // Nothing answered: still not writable, no error pending.
            let mut p = [PollFd::new(fd, POLLOUT)];
            assert_eq!(
                net.poll(&mut p, Some(Duration::from_millis(1500))).unwrap(),
                0
            );
            assert_eq!(net.so_error(fd).unwrap(), None);
            assert_eq!(errno(connectx_to(&net, fd, silent)), Errno::EALREADY);
            // A blocking descriptor gets its answer at once too: EISCONN, as XNU gives it.
            net.set_nonblocking(fd, false).unwrap();
            assert_eq!(errno(connectx_to(&net, fd, silent)), Errno::EISCONN);
            net.close(fd).unwrap();
            still_serves(&net);
        },
    );
}

// ----- bind -----

#[test]
fn bind_to_address_not_on_stack_is_eaddrnotavail() {
    in_netns("bind_to_address_not_on_stack_is_eaddrnotavail", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let fd = net.socket(Family::V4, ty).unwrap();
            for addr in ["192.0.2.1:5000", "203.0.113.5:5000", "192.0.2.99:0"] {
                assert_eq!(
                    errno(net.bind(fd, sa(addr))),
                    Errno::EADDRNOTAVAIL,
                    "{ty:?} {addr}"
                );
            }
            // Still unbound: it binds where it may.
            net.bind(fd, sa("192.0.2.2:5000")).unwrap();
            assert_eq!(net.local_addr(fd).unwrap(), sa("192.0.2.2:5000"));
            net.close(fd).unwrap();
        }
        let fd = net.socket(Family::V6, SocketType::Datagram).unwrap();
        assert_eq!(
            errno(net.bind(fd, sa("[2001:db8::1]:5000"))),
            Errno::EADDRNOTAVAIL
        );
        net.close(fd).unwrap();
        still_serves(&net);
    });
}

#[test]
fn second_bind_to_same_address_is_eaddrinuse() {
    in_netns("second_bind_to_same_address_is_eaddrinuse", || {
        let net = net();
        for ty in [SocketType::Stream, SocketType::Datagram] {
            let a = net.socket(Family::V4, ty).unwrap();
            let b = net.socket(Family::V4, ty).unwrap();
            net.bind(a, sa("192.0.2.2:6000")).unwrap();
            assert_eq!(
                errno(net.bind(b, sa("192.0.2.2:6000"))),
                Errno::EADDRINUSE,
                "{ty:?}"
            );
            // The port is free again once the first is closed.
            net.close(a).unwrap();
            net.bind(b, sa("192.0.2.2:6000")).unwrap();
            net.close(b).unwrap();
        }
        // A datagram socket bound after the failure still works.
        let u = net.socket(Family::V4, SocketType::Datagram).unwrap();
        net.bind(u, sa("192.0.2.2:6000")).unwrap();
        let k = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
        k.send_to(b"ok", "192.0.2.2:6000").unwrap();
        net.set_timeouts(u, Some(WAIT), None).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = net.recv_from(u, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ok"[..], k.local_addr().unwrap()));
        net.close(u).unwrap();
        still_serves(&net);
    });
}

// ----- disconnectx -----

/// What XNU's dead socket does after `disconnectx`: reads 0, writes `EPIPE`, readable, writable
/// and hung up to `poll`, and no second life (`EINVAL` for connect, bind, listen and another
/// `disconnectx`).
fn assert_dead(net: &Net, fd: Fd) {
    let mut buf = [0u8; 16];
    assert_eq!(net.recv(fd, &mut buf).unwrap(), 0, "reads give 0");
    assert_eq!(errno(net.send(fd, b"x")), Errno::EPIPE, "writes are EPIPE");
    assert_eq!(
        errno(net.send_to(fd, b"x", sa("192.0.2.1:9"))),
        Errno::EPIPE
    );
    let mut p = [PollFd::new(fd, POLLIN | POLLOUT)];
    assert_eq!(net.poll(&mut p, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(p[0].revents, POLLIN | POLLOUT | POLLHUP);
    assert_eq!(
        errno(connectx_to(net, fd, sa("192.0.2.1:7"))),
        Errno::EINVAL,
        "no reconnect"
    );
    assert_eq!(errno(net.bind(fd, sa("192.0.2.2:0"))), Errno::EINVAL);
    assert_eq!(errno(net.listen(fd, 1)), Errno::EINVAL);
    assert_eq!(errno(net.peer_addr(fd)), Errno::ENOTCONN);
    assert_eq!(
        errno(net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)),
        Errno::EINVAL,
        "a dead socket cannot disconnect again"
    );
    net.close(fd).unwrap();
}

#[test]
fn disconnectx_checks_the_associd_only_and_ends_a_stream_socket_as_xnu_does() {
    in_netns(
        "disconnectx_checks_the_associd_only_and_ends_a_stream_socket_as_xnu_does",
        || {
            let net = net();
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            assert_eq!(errno(net.disconnectx(fd, 7, SAE_CONNID_ANY)), Errno::EINVAL);
            // Any connid (XNU ignores it); a socket that never connected: 0, and dead.
            net.disconnectx(fd, SAE_ASSOCID_ANY, 7).unwrap();
            assert_dead(&net, fd);

            // A listener ends the same way.
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.bind(fd, sa("192.0.2.2:7100")).unwrap();
            net.listen(fd, 4).unwrap();
            net.disconnectx(fd, SAE_ASSOCID_ALL, SAE_CONNID_ANY)
                .unwrap();
            assert_dead(&net, fd);
            // Its port is free again.
            let again = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.bind(again, sa("192.0.2.2:7100")).unwrap();
            net.close(again).unwrap();

            // A datagram socket without a peer: ENOTCONN, and it stays usable.
            let udp = net.socket(Family::V4, SocketType::Datagram).unwrap();
            assert_eq!(
                errno(net.disconnectx(udp, SAE_ASSOCID_ANY, 7)),
                Errno::ENOTCONN
            );
            net.bind(udp, sa("192.0.2.2:0")).unwrap();
            net.close(udp).unwrap();

            still_serves(&net);
        },
    );
}

/// A connection to a kernel peer: `disconnectx` sends the FIN after the queued data (the
/// kernel reads everything, then EOF), and the descriptor is dead.
#[test]
fn disconnectx_of_a_connection_sends_its_data_then_fin_and_leaves_a_dead_descriptor() {
    in_netns(
        "disconnectx_of_a_connection_sends_its_data_then_fin_and_leaves_a_dead_descriptor",
        || {
            use std::io::Read;
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
            net.connect(fd, listener.local_addr().unwrap()).unwrap();
            let (mut kernel, _) = listener.accept().unwrap();
            kernel.set_read_timeout(Some(WAIT)).unwrap();
            let data = support::pattern(100_000);
            let mut sent = 0;
            while sent < data.len() {
                sent += net.send(fd, &data[sent..]).unwrap();
            }
            net.disconnectx(fd, SAE_ASSOCID_ANY, 1234).unwrap();
            let mut got = Vec::new();
            kernel
                .read_to_end(&mut got)
                .expect("the kernel reads to a FIN, not a reset");
            assert_eq!(got.len(), data.len());
            assert!(got == data, "the kernel got the queued data, then EOF");
            assert_dead(&net, fd);
        },
    );
}

// ----- stop -----

#[test]
fn stop_interrupts_blocked_recv_with_eintr() {
    in_netns("stop_interrupts_blocked_recv_with_eintr", || {
        let net = net();
        let udp = net.socket(Family::V4, SocketType::Datagram).unwrap();
        net.bind(udp, sa("192.0.2.2:7000")).unwrap();
        let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
        let tcp = net.socket(Family::V4, SocketType::Stream).unwrap();
        connectx_to(&net, tcp, listener.local_addr().unwrap()).unwrap();
        let (kernel_end, _) = listener.accept().unwrap();

        let blocked = |fd: Fd| {
            let net = net.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                net.recv(fd, &mut buf)
            })
        };
        let (r_udp, r_tcp) = (blocked(udp), blocked(tcp));
        // Give both time to block.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!r_udp.is_finished() && !r_tcp.is_finished(), "recv blocks");
        net.stop();
        assert_eq!(errno(r_udp.join().unwrap()), Errno::EINTR, "datagram recv");
        assert_eq!(errno(r_tcp.join().unwrap()), Errno::EINTR, "stream recv");
        // After the stop, calls fail with ENETDOWN.
        assert_eq!(
            errno(net.socket(Family::V4, SocketType::Stream)),
            Errno::ENETDOWN
        );
        let mut buf = [0u8; 16];
        assert_eq!(errno(net.recv(udp, &mut buf)), Errno::ENETDOWN);
        drop(kernel_end);
    });
}

// ----- builder -----

#[test]
fn builder_address_before_device_is_no_device_for() {
    // Fails before opening anything: no root needed.
    let e = Net::builder().address("192.0.2.2/24").start().unwrap_err();
    assert!(matches!(e, StartError::NoDeviceFor(_)), "{e:?}");
    assert!(e.to_string().contains("before any device"), "{e}");
}

#[test]
fn builder_without_device_is_no_device() {
    let e = Net::builder().start().unwrap_err();
    assert!(matches!(e, StartError::NoDevice), "{e:?}");
}

#[test]
fn builder_unopened_tun_fd_is_not_open() {
    assert!(!process_fd_open(987654));
    let e = Net::builder()
        .tun_fd(987654)
        .address("192.0.2.2/24")
        .start()
        .unwrap_err();
    assert!(matches!(e, StartError::Device(_)), "{e:?}");
    assert!(e.to_string().contains("not open"), "{e}");
}

#[test]
fn builder_address_without_prefix_is_cidr_error() {
    in_netns("builder_address_without_prefix_is_cidr_error", || {
        let e = Net::builder()
            .tun("cx0")
            .address("192.0.2.2")
            .start()
            .unwrap_err();
        assert!(matches!(e, StartError::Cidr(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("192.0.2.2") && text.contains("ADDRESS/LEN"),
            "{text}"
        );
        // The failed start left no device behind in the way: the same name starts now.
        let net = net();
        still_serves(&net);
    });
}
