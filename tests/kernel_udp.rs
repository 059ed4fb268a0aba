//! UDP between the stack and the Linux kernel's UDP sockets, over a real TUN device in a private
//! namespace: `sendto`/`recvfrom` both ways, and `connectx`/`disconnectx` on a datagram socket.

mod support;

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, UdpSocket as KernelUdp};
use std::time::Duration;

use connectx_api::{
    Errno, Fd, Net, PollFd, SaEndpoints, CONNID, POLLIN, SAE_ASSOCID_ANY, SAE_CONNID_ANY,
};
use stack::{Family, SocketType};
use support::{in_netns, net};

/// How long a datagram that should arrive may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for a datagram that must not arrive.
const QUIET: Duration = Duration::from_millis(300);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn family_of(a: SocketAddr) -> Family {
    if a.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> Errno {
    let e = r.expect_err("the call should fail");
    Errno::of(&e).unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// Whether the kernel of this thread's namespace has the local (/128) route of 2001:db8::1, the
/// route its input path needs to take a packet to that address as its own.
fn kernel_has_local_route_v6() -> bool {
    std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("20010db8000000000000000000000001 80 "))
}

/// [`net()`], once the kernel's IPv6 address can receive.
///
/// Works around a bug that `kernel_ipv6_peer_address_usable_when_start_returns` shows: `start`
/// can return before the kernel has installed the local route of 2001:db8::1 (the address is
/// already listed, `permanent nodad`); a datagram that arrives meanwhile is dropped
/// (`Ip6InAddrErrors`). Wait until a kernel socket's datagram to 2001:db8::1 comes back over
/// `lo`, which takes that same route. (These tests are about UDP, not about that.)
fn net_ready() -> Net {
    let net = net();
    let probe = KernelUdp::bind("[::]:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let to = SocketAddr::new(ip("2001:db8::1"), probe.local_addr().unwrap().port());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // While not ready this goes down cx0 to the stack, which drops it.
        probe.send_to(b"ready?", to).unwrap();
        if probe.recv_from(&mut [0u8; 16]).is_ok() {
            return net;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "2001:db8::1 never became local"
        );
    }
}

/// A kernel UDP socket in the test's namespace, with a read timeout.
fn kernel_udp(addr: &str) -> KernelUdp {
    let s = KernelUdp::bind(addr).expect("kernel UDP socket");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// One datagram from a kernel socket: its bytes and source.
fn kernel_recv(k: &KernelUdp) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = k
        .recv_from(&mut buf)
        .expect("a datagram at the kernel socket");
    (buf[..n].to_vec(), from)
}

/// One datagram from a stack socket: its bytes and source.
fn stack_recv(net: &Net, fd: Fd) -> io::Result<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 4096];
    let (n, from) = net.recv_from(fd, &mut buf)?;
    Ok((buf[..n].to_vec(), from))
}

/// (a) The stack sends first to a kernel socket, which answers to the source it saw.
fn stack_sends_kernel_replies(kernel: &str, stack_ip: &str) {
    let net = net_ready();
    let k = kernel_udp(kernel);
    let fd = net
        .socket(family_of(sa(kernel)), SocketType::Datagram)
        .unwrap();
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
    assert_eq!(
        net.send_to(fd, b"ping from the stack", sa(kernel)).unwrap(),
        19
    );
    let (got, from) = kernel_recv(&k);
    assert_eq!(got, b"ping from the stack");
    assert_eq!(from.ip(), ip(stack_ip), "the source the kernel saw");
    let local = net.local_addr(fd).unwrap();
    assert_ne!(local.port(), 0, "sendto bound an ephemeral port");
    assert_eq!(from.port(), local.port());

    k.send_to(b"pong from the kernel", from).unwrap();
    let (got, src) = stack_recv(&net, fd).unwrap();
    assert_eq!(got, b"pong from the kernel");
    assert_eq!(src, sa(kernel), "the reply's source is the kernel socket");
    net.close(fd).unwrap();
}

#[test]
fn udp_stack_sends_to_kernel_and_gets_reply_ipv4() {
    in_netns("udp_stack_sends_to_kernel_and_gets_reply_ipv4", || {
        stack_sends_kernel_replies("192.0.2.1:5300", "192.0.2.2")
    });
}

#[test]
fn udp_stack_sends_to_kernel_and_gets_reply_ipv6() {
    in_netns("udp_stack_sends_to_kernel_and_gets_reply_ipv6", || {
        stack_sends_kernel_replies("[2001:db8::1]:5300", "2001:db8::2")
    });
}

/// (b) The kernel sends first to a bound stack socket, which answers.
fn kernel_sends_stack_replies(stack_addr: &str, kernel: &str) {
    let net = net_ready();
    let fd = net
        .socket(family_of(sa(stack_addr)), SocketType::Datagram)
        .unwrap();
    net.bind(fd, sa(stack_addr)).unwrap();
    assert_eq!(net.local_addr(fd).unwrap(), sa(stack_addr));
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
    let k = kernel_udp(kernel);
    let kernel_addr = k.local_addr().unwrap();

    k.send_to(b"hello from the kernel", sa(stack_addr)).unwrap();
    let (got, from) = stack_recv(&net, fd).unwrap();
    assert_eq!(got, b"hello from the kernel");
    assert_eq!(from, kernel_addr, "the source the stack saw");

    assert_eq!(net.send_to(fd, b"reply from the stack", from).unwrap(), 20);
    let (got, src) = kernel_recv(&k);
    assert_eq!(got, b"reply from the stack");
    assert_eq!(
        src,
        sa(stack_addr),
        "the reply leaves from the bound address"
    );
    net.close(fd).unwrap();
}

#[test]
fn udp_kernel_sends_to_stack_and_gets_reply_ipv4() {
    in_netns("udp_kernel_sends_to_stack_and_gets_reply_ipv4", || {
        kernel_sends_stack_replies("192.0.2.2:5301", "192.0.2.1:0")
    });
}

#[test]
fn udp_kernel_sends_to_stack_and_gets_reply_ipv6() {
    in_netns("udp_kernel_sends_to_stack_and_gets_reply_ipv6", || {
        kernel_sends_stack_replies("[2001:db8::2]:5301", "[2001:db8::1]:0")
    });
}

/// (c) `connectx` associates a datagram socket: its iov data goes at once as one datagram,
/// `send` goes to the peer, only the peer is heard; `disconnectx` dissolves the association.
fn connectx_associates(peer: &str, other: &str, stack_ip: &str) {
    let net = net_ready();
    let peer = kernel_udp(peer);
    let other = kernel_udp(other);
    let peer_addr = peer.local_addr().unwrap();
    let fd = net
        .socket(family_of(peer_addr), SocketType::Datagram)
        .unwrap();
    net.set_timeouts(fd, Some(QUIET), Some(WAIT)).unwrap();

    let (mut len, mut connid) = (0, 0);
    net.connectx(
        fd,
        &SaEndpoints::to(peer_addr),
        SAE_ASSOCID_ANY,
        0,
        &[IoSlice::new(b"one "), IoSlice::new(b"datagram")],
        Some(&mut len),
        Some(&mut connid),
    )
    .unwrap();
    assert_eq!(len, 12, "len reports the datagram's size");
    assert_eq!(connid, CONNID);
    assert_eq!(net.peer_addr(fd).unwrap(), peer_addr);

    // The two iov slices arrive as one datagram.
    let (got, stack_addr) = kernel_recv(&peer);
    assert_eq!(got, b"one datagram");
    assert_eq!(stack_addr.ip(), ip(stack_ip));

    // send without an address goes to the peer.
    assert_eq!(net.send(fd, b"second").unwrap(), 6);
    let (got, from) = kernel_recv(&peer);
    assert_eq!(got, b"second");
    assert_eq!(from, stack_addr);

    // Another kernel socket is not heard; the peer is. Sent in this order on one thread, the
    // stranger's datagram reaches the stack first.
    other.send_to(b"from a stranger", stack_addr).unwrap();
    peer.send_to(b"from the peer", stack_addr).unwrap();
    let (got, src) = stack_recv(&net, fd).unwrap();
    assert_eq!(
        (got.as_slice(), src),
        (&b"from the peer"[..], peer_addr),
        "only the peer's datagram is delivered"
    );
    other
        .send_to(b"another from a stranger", stack_addr)
        .unwrap();
    assert_eq!(errno(stack_recv(&net, fd)), Errno::EAGAIN);

    // Dissolve the association.
    net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)
        .unwrap();
    assert_eq!(errno(net.peer_addr(fd)), Errno::ENOTCONN);
    assert_eq!(errno(net.send(fd, b"nowhere")), Errno::EDESTADDRREQ);
    assert_eq!(
        errno(net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)),
        Errno::ENOTCONN
    );

    // Now the stranger is heard, and only what it sent after the association ended: the
    // datagrams dropped while associated stay dropped.
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
    other.send_to(b"heard now", stack_addr).unwrap();
    let (got, src) = stack_recv(&net, fd).unwrap();
    assert_eq!(
        (got.as_slice(), src),
        (&b"heard now"[..], other.local_addr().unwrap())
    );
    // And the socket can still send with an address, from the same port.
    net.send_to(fd, b"to the stranger", other.local_addr().unwrap())
        .unwrap();
    let (got, from) = kernel_recv(&other);
    assert_eq!(got, b"to the stranger");
    assert_eq!(from, stack_addr);
    net.close(fd).unwrap();
}

#[test]
fn udp_connectx_associates_and_disconnectx_dissolves_ipv4() {
    in_netns(
        "udp_connectx_associates_and_disconnectx_dissolves_ipv4",
        || connectx_associates("192.0.2.1:5400", "192.0.2.1:5401", "192.0.2.2"),
    );
}

#[test]
fn udp_connectx_associates_and_disconnectx_dissolves_ipv6() {
    in_netns(
        "udp_connectx_associates_and_disconnectx_dissolves_ipv6",
        || connectx_associates("[2001:db8::1]:5400", "[2001:db8::1]:5401", "2001:db8::2"),
    );
}

/// (d) `connectx` with more data than XNU's 9,216-byte datagram limit fails with `EMSGSIZE`
/// and leaves the socket as it was: unbound, unassociated, usable. Up to the limit, a datagram
/// larger than the path's MTU (1500) leaves in fragments, which the kernel reassembles, as
/// XNU sends them (issue 12, point 7), where Linux would say `EMSGSIZE`.
fn connectx_oversized(peer: &str, limit: usize) {
    let net = net_ready();
    let peer = kernel_udp(peer);
    let peer_addr = peer.local_addr().unwrap();
    let fd = net
        .socket(family_of(peer_addr), SocketType::Datagram)
        .unwrap();
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();

    // One byte too many, spread over two slices.
    let data = support::pattern(limit + 1);
    let mut len = 0;
    let e = net
        .connectx(
            fd,
            &SaEndpoints::to(peer_addr),
            SAE_ASSOCID_ANY,
            0,
            &[IoSlice::new(&data[..1000]), IoSlice::new(&data[1000..])],
            Some(&mut len),
            None,
        )
        .unwrap_err();
    assert_eq!(Errno::of(&e), Some(Errno::EMSGSIZE), "{e}");
    assert_eq!(errno(net.peer_addr(fd)), Errno::ENOTCONN);
    assert_eq!(errno(net.send(fd, b"x")), Errno::EDESTADDRREQ);
    assert_eq!(
        net.local_addr(fd).unwrap().port(),
        0,
        "the failed connectx did not bind the socket"
    );
    // sendto refuses the same datagram the same way.
    assert_eq!(errno(net.send_to(fd, &data, peer_addr)), Errno::EMSGSIZE);
    peer.set_read_timeout(Some(QUIET)).unwrap();
    let r = peer.recv_from(&mut [0u8; 65536]);
    assert!(r.is_err(), "nothing was sent, yet the kernel got {r:?}");
    peer.set_read_timeout(Some(WAIT)).unwrap();

    // Exactly the limit fits, and the socket associates.
    net.connectx(
        fd,
        &SaEndpoints::to(peer_addr),
        SAE_ASSOCID_ANY,
        0,
        &[IoSlice::new(&data[..limit])],
        Some(&mut len),
        None,
    )
    .unwrap();
    assert_eq!(len, limit);
    let (got, from) = kernel_recv(&peer);
    assert_eq!(got.len(), limit);
    assert_eq!(got, data[..limit]);
    assert_eq!(net.peer_addr(fd).unwrap(), peer_addr);
    assert_eq!(net.send(fd, b"after").unwrap(), 5);
    assert_eq!(kernel_recv(&peer).0, b"after");
    peer.send_to(b"back", from).unwrap();
    assert_eq!(stack_recv(&net, fd).unwrap(), (b"back".to_vec(), peer_addr));
    net.close(fd).unwrap();
}

#[test]
fn udp_connectx_above_the_mtu_is_fragmented_and_above_9216_is_emsgsize_ipv4() {
    in_netns(
        "udp_connectx_above_the_mtu_is_fragmented_and_above_9216_is_emsgsize_ipv4",
        || connectx_oversized("192.0.2.1:5500", 9216),
    );
}

#[test]
fn udp_connectx_above_the_mtu_is_fragmented_and_above_9216_is_emsgsize_ipv6() {
    in_netns(
        "udp_connectx_above_the_mtu_is_fragmented_and_above_9216_is_emsgsize_ipv6",
        || connectx_oversized("[2001:db8::1]:5500", 9216),
    );
}

/// Datagrams above the MTU, which the stack fragments itself, and smaller ones, which smoltcp
/// sends, leave one socket in the order they were sent, however they mix; the kernel gets
/// every one whole.
fn fragmented_datagrams_keep_their_order(peer: &str) {
    let net = net_ready();
    let peer = kernel_udp(peer);
    let peer_addr = peer.local_addr().unwrap();
    let fd = net
        .socket(family_of(peer_addr), SocketType::Datagram)
        .unwrap();
    net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
    let sizes = [10, 9216, 20, 1500, 30, 40, 4000, 9000, 50];
    let datagrams: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut d = support::pattern(n);
            d[0] = i as u8;
            d
        })
        .collect();
    for d in &datagrams {
        assert_eq!(net.send_to(fd, d, peer_addr).unwrap(), d.len());
    }
    for (i, d) in datagrams.iter().enumerate() {
        let (got, _) = kernel_recv(&peer);
        assert_eq!(
            (got.len(), got[0]),
            (d.len(), i as u8),
            "datagram {i} ({} B) out of order or cut",
            d.len()
        );
        assert_eq!(&got, d, "datagram {i} arrived whole");
    }
    net.close(fd).unwrap();
}

#[test]
fn udp_fragmented_datagrams_keep_their_order_ipv4() {
    in_netns("udp_fragmented_datagrams_keep_their_order_ipv4", || {
        fragmented_datagrams_keep_their_order("192.0.2.1:5501")
    });
}

#[test]
fn udp_fragmented_datagrams_keep_their_order_ipv6() {
    in_netns("udp_fragmented_datagrams_keep_their_order_ipv6", || {
        fragmented_datagrams_keep_their_order("[2001:db8::1]:5501")
    });
}

/// An associated socket whose peer is silent: another source's datagram makes it neither
/// readable nor returns from `recv`. On Linux such a datagram is never queued, so `poll`
/// does not report `POLLIN` for it.
#[test]
fn udp_associated_socket_not_readable_for_stranger_datagram() {
    in_netns(
        "udp_associated_socket_not_readable_for_stranger_datagram",
        || {
            let net = net_ready();
            let peer = kernel_udp("192.0.2.1:5600");
            let other = kernel_udp("192.0.2.1:5601");
            let peer_addr = peer.local_addr().unwrap();
            let fd = net.socket(Family::V4, SocketType::Datagram).unwrap();
            let mut len = 0;
            net.connectx(
                fd,
                &SaEndpoints::to(peer_addr),
                SAE_ASSOCID_ANY,
                0,
                &[IoSlice::new(b"hi")],
                Some(&mut len),
                None,
            )
            .unwrap();
            let (_, stack_addr) = kernel_recv(&peer);

            other.send_to(b"from a stranger", stack_addr).unwrap();
            let mut p = [PollFd::new(fd, POLLIN)];
            assert_eq!(
                net.poll(&mut p, Some(QUIET)).unwrap(),
                0,
                "readable with only a stranger's datagram (revents {:#x})",
                p[0].revents
            );

            peer.send_to(b"from the peer", stack_addr).unwrap();
            assert_eq!(net.poll(&mut p, Some(WAIT)).unwrap(), 1);
            assert_ne!(p[0].revents & POLLIN, 0);
            net.set_nonblocking(fd, true).unwrap();
            assert_eq!(
                stack_recv(&net, fd).unwrap(),
                (b"from the peer".to_vec(), peer_addr)
            );
            net.close(fd).unwrap();
        },
    );
}

/// Datagrams from other sources must not take the receive buffer of an associated socket: the
/// peer's datagram still arrives after a burst of them that the application never read.
#[test]
fn udp_stranger_flood_does_not_crowd_out_peer() {
    in_netns("udp_stranger_flood_does_not_crowd_out_peer", || {
        let net = net_ready();
        let peer = kernel_udp("192.0.2.1:5700");
        let other = kernel_udp("192.0.2.1:5701");
        let peer_addr = peer.local_addr().unwrap();
        let fd = net.socket(Family::V4, SocketType::Datagram).unwrap();
        net.set_timeouts(fd, Some(WAIT), Some(WAIT)).unwrap();
        net.connect(fd, peer_addr).unwrap();
        net.send(fd, b"hi").unwrap();
        let (_, stack_addr) = kernel_recv(&peer);

        // More than the socket's receive queue holds (256 datagrams by default).
        for i in 0..600u32 {
            other.send_to(&i.to_be_bytes(), stack_addr).unwrap();
        }
        // Let the stack take them in before the peer's datagram follows.
        std::thread::sleep(Duration::from_millis(300));
        peer.send_to(b"from the peer", stack_addr).unwrap();
        // And the peer's datagram before the application reads: reading drains the strangers.
        std::thread::sleep(Duration::from_millis(300));
        let got = stack_recv(&net, fd);
        assert_eq!(
            got.as_ref().ok(),
            Some(&(b"from the peer".to_vec(), peer_addr)),
            "{got:?}"
        );
        net.close(fd).unwrap();
    });
}

/// `start` returns once the devices are configured: the kernel's IPv6 peer address (added with
/// `nodad`) must then accept packets, so that a datagram sent at once is not lost. The window
/// is a few milliseconds (the kernel installs the address's local route after bringing the link
/// up, asynchronously), so several stacks start at once to make it show.
#[test]
fn kernel_ipv6_peer_address_usable_when_start_returns() {
    let name = "kernel_ipv6_peer_address_usable_when_start_returns";
    let starts: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..4)
                    .filter_map(|_| {
                        in_netns(name, || {
                            let k = kernel_udp("[::]:5800");
                            let net = net();
                            let routed = kernel_has_local_route_v6();
                            let fd = net.socket(Family::V6, SocketType::Datagram).unwrap();
                            net.send_to(fd, b"at once", sa("[2001:db8::1]:5800"))
                                .unwrap();
                            k.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                            let delivered = k.recv_from(&mut [0u8; 16]).is_ok();
                            (routed, delivered)
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<_> = starts.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let unrouted = outcomes.iter().filter(|(r, _)| !r).count();
    let lost = outcomes.iter().filter(|(_, d)| !d).count();
    assert_eq!(
        (unrouted, lost),
        (0, 0),
        "of {} starts: no local route for 2001:db8::1 when start returned, first datagram lost",
        outcomes.len()
    );
}
