//! In-memory tests: two stacks over a simulated link on a virtual clock (no root).

use std::net::SocketAddr;
use std::time::Duration;

use stack::sim::{LinkConfig, Pair};
use stack::{
    ConnectError, ConnectOptions, ConnectStatus, ConnectionError, Family, RecvError, RouteError,
    SendError, Shutdown, SocketType,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pair(latency_ms: u64, loss: f64, seed: u64) -> Pair {
    let link = LinkConfig {
        latency: Duration::from_millis(latency_ms),
        loss,
        mtu: 1500,
        seed,
        ..LinkConfig::default()
    };
    Pair::new(
        link,
        &["192.0.2.2/24", "2001:db8::2/64"],
        &["192.0.2.1/24", "2001:db8::1/64"],
    )
}

/// Connect A to a listener on B, move `payload` both ways, close both; return what each read.
fn echo_once(p: &mut Pair, family: Family, server: &str, payload: &[u8]) -> Vec<u8> {
    let l = p.b.socket(family, SocketType::Stream);
    p.b.bind(l, addr(server)).unwrap();
    p.b.listen(l, 8).unwrap();
    let c = p.a.socket(family, SocketType::Stream);
    p.a.connect(c, addr(server), ConnectOptions::default(), p.now())
        .unwrap();
    assert_eq!(p.a.connect_status(c), Some(ConnectStatus::InProgress));
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    let mut accepted = None;
    p.drive_until(10_000, |p| {
        accepted = p.b.accept(l).ok();
        accepted.is_some()
    });
    let (s, peer) = accepted.unwrap();
    assert_eq!(
        peer,
        p.a.local_addr(c).unwrap(),
        "the server sees the client's address"
    );

    let mut sent = 0;
    let mut echoed = Vec::new();
    let mut back = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut client_eof = false;
    let (mut server_eof, mut server_closed) = (false, false);
    let mut steps = 0;
    while !client_eof {
        steps += 1;
        assert!(steps < 1_000_000, "no progress (seed {})", p.seed);
        if sent < payload.len() {
            match p.a.send(c, &payload[sent..]) {
                Ok(n) => sent += n,
                Err(SendError::WouldBlock) => {}
                Err(e) => panic!("send: {e}"),
            }
            if sent == payload.len() {
                p.a.shutdown(c, Shutdown::Write).unwrap();
            }
        }
        // The server echoes what it reads and closes after the client's FIN.
        while !server_eof {
            match p.b.recv(s, &mut buf) {
                Ok(0) => server_eof = true,
                Ok(n) => echoed.extend_from_slice(&buf[..n]),
                Err(RecvError::WouldBlock) => break,
                Err(e) => panic!("server recv: {e}"),
            }
        }
        while !echoed.is_empty() {
            match p.b.send(s, &echoed) {
                Ok(n) => {
                    echoed.drain(..n);
                }
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("server send: {e}"),
            }
        }
        if server_eof && echoed.is_empty() && !server_closed {
            p.b.close(s, p.now());
            server_closed = true;
        }
        loop {
            match p.a.recv(c, &mut buf) {
                Ok(0) => {
                    client_eof = true;
                    break;
                }
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(RecvError::WouldBlock) => break,
                Err(e) => panic!("client recv: {e} (seed {})", p.seed),
            }
        }
        if !client_eof {
            p.step();
        }
    }
    p.a.close(c, p.now());
    p.b.close(l, p.now());
    back
}

#[test]
fn tcp_echo_ipv4_and_ipv6() {
    let mut p = pair(5, 0.0, 1);
    assert_eq!(
        echo_once(&mut p, Family::V4, "192.0.2.1:7", b"hello\n"),
        b"hello\n"
    );
    assert_eq!(
        echo_once(&mut p, Family::V6, "[2001:db8::1]:7", b"hello six\n"),
        b"hello six\n"
    );
}

#[test]
fn tcp_bulk_over_lossy_link_arrives_intact() {
    let mut p = pair(2, 0.02, 7);
    let payload: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let back = echo_once(&mut p, Family::V4, "192.0.2.1:9000", &payload);
    assert!(
        back == payload,
        "echo differs (len {} vs {}) seed {}",
        back.len(),
        payload.len(),
        p.seed
    );
    assert!(
        p.link.dropped.iter().sum::<u64>() > 0,
        "the link did lose packets"
    );
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut p = pair(1, 0.0, 2);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:81"), ConnectOptions::default(), p.now())
        .unwrap();
    p.drive_until(1000, |p| {
        p.a.connect_status(c) != Some(ConnectStatus::InProgress)
    });
    assert_eq!(
        p.a.connect_status(c),
        Some(ConnectStatus::Failed(ConnectionError::Refused))
    );
    assert!(p.a.readiness(c).writable && p.a.readiness(c).error);
    assert_eq!(p.a.take_error(c), Some(ConnectionError::Refused));
    assert_eq!(p.a.take_error(c), None, "reported once");
}

#[test]
fn connect_without_answer_times_out() {
    let mut p = pair(1, 0.0, 3);
    p.filter_to_b(|_| false);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:80"), ConnectOptions::default(), p.now())
        .unwrap();
    p.drive_until(100_000, |p| {
        p.a.connect_status(c) != Some(ConnectStatus::InProgress)
    });
    assert_eq!(
        p.a.connect_status(c),
        Some(ConnectStatus::Failed(ConnectionError::TimedOut))
    );
    let t = p.now().total_millis();
    assert!(
        (75_000..80_000).contains(&t),
        "gave up after the connect timeout, at {t} ms"
    );
}

#[test]
fn reset_of_established_connection_is_reported() {
    let mut p = pair(1, 0.0, 4);
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr("192.0.2.1:7")).unwrap();
    p.b.listen(l, 1).unwrap();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now())
        .unwrap();
    let mut s = None;
    p.drive_until(1000, |p| {
        s = s.or(p.b.accept(l).ok());
        s.is_some()
    });
    let (s, _) = s.unwrap();
    p.a.send(c, b"unread").unwrap();
    p.drive_until(1000, |p| p.b.readiness(s).readable);
    // Closing with unread data resets the connection.
    p.b.close(s, p.now());
    p.drive_until(1000, |p| p.a.readiness(c).error);
    let mut buf = [0u8; 8];
    assert_eq!(
        p.a.recv(c, &mut buf),
        Err(RecvError::Connection(ConnectionError::Reset))
    );
    assert_eq!(p.a.recv(c, &mut buf), Ok(0), "then end of stream");
}

#[test]
fn bad_destinations_fail_at_once() {
    let mut p = pair(1, 0.0, 5);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    assert_eq!(
        p.a.connect(c, addr("192.0.2.1:0"), ConnectOptions::default(), p.now()),
        Err(ConnectError::InvalidPort)
    );
    assert_eq!(
        p.a.connect(
            c,
            addr("[2001:db8::1]:80"),
            ConnectOptions::default(),
            p.now()
        ),
        Err(ConnectError::FamilyMismatch)
    );
    assert!(matches!(
        p.a.connect(c, addr("0.0.0.0:80"), ConnectOptions::default(), p.now()),
        Err(ConnectError::Route(RouteError::InvalidDestination(_)))
    ));
    // The stack keeps serving: a good connect on the same socket still works.
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr("192.0.2.1:7")).unwrap();
    p.b.listen(l, 1).unwrap();
    p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now())
        .unwrap();
    p.drive_until(1000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    assert_eq!(
        p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now()),
        Err(ConnectError::AlreadyConnected)
    );
}

#[test]
fn udp_both_ways_and_association_filter() {
    let mut p = pair(1, 0.0, 6);
    for (family, server, client_src) in [
        (Family::V4, "192.0.2.1:5353", "192.0.2.2"),
        (Family::V6, "[2001:db8::1]:5353", "2001:db8::2"),
    ] {
        let srv = p.b.socket(family, SocketType::Datagram);
        p.b.bind(srv, addr(server)).unwrap();
        let cli = p.a.socket(family, SocketType::Datagram);
        p.a.send_to(cli, b"ping", Some(addr(server))).unwrap();
        let mut buf = [0u8; 64];
        let mut got = None;
        p.drive_until(1000, |p| {
            got = p.b.recv_from(srv, &mut buf).ok();
            got.is_some()
        });
        let (n, from) = got.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.ip().to_string(), client_src);
        p.b.send_to(srv, b"pong", Some(from)).unwrap();
        let mut got = None;
        p.drive_until(1000, |p| {
            got = p.a.recv_from(cli, &mut buf).ok();
            got.is_some()
        });
        assert_eq!(&buf[..got.unwrap().0], b"pong");
        assert_eq!(got.unwrap().1, addr(server));
        p.a.close(cli, p.now());
        p.b.close(srv, p.now());
    }
}

#[test]
fn udp_datagrams_sent_just_before_close_still_leave() {
    let mut p = pair(1, 0.0, 9);
    let srv = p.b.socket(Family::V4, SocketType::Datagram);
    p.b.bind(srv, addr("192.0.2.1:5353")).unwrap();
    let cli = p.a.socket(Family::V4, SocketType::Datagram);
    p.a.bind(cli, addr("192.0.2.2:4000")).unwrap();
    p.a.send_to(cli, b"last words", Some(addr("192.0.2.1:5353")))
        .unwrap();
    // Closed before any poll carried the datagram, as a program that sends and exits.
    p.a.close(cli, p.now());
    // The port stays taken until the datagram has left.
    let again = p.a.socket(Family::V4, SocketType::Datagram);
    assert!(p.a.bind(again, addr("192.0.2.2:4000")).is_err());
    let mut buf = [0u8; 64];
    let mut got = None;
    p.drive_until(1000, |p| {
        got = p.b.recv_from(srv, &mut buf).ok();
        got.is_some()
    });
    let (n, from) = got.expect("the datagram arrives");
    assert_eq!(&buf[..n], b"last words");
    assert_eq!(from, addr("192.0.2.2:4000"));
    assert_eq!(p.a.bind(again, addr("192.0.2.2:4000")), Ok(()));
}

#[test]
fn udp_oversized_datagram_is_refused() {
    let mut p = pair(1, 0.0, 8);
    let cli = p.a.socket(Family::V4, SocketType::Datagram);
    // XNU's limit: 9,216 bytes, sent in fragments above the MTU.
    let big = vec![0u8; 9217];
    assert_eq!(
        p.a.send_to(cli, &big, Some(addr("192.0.2.1:9"))),
        Err(SendError::MessageTooLong {
            size: 9217,
            limit: 9216
        })
    );
    assert_eq!(
        p.a.send_to(cli, &big[..9216], Some(addr("192.0.2.1:9"))),
        Ok(9216)
    );
}

/// Which datagram (its first payload byte) a UDP packet starts, if it starts one: a whole
/// datagram or a first fragment. `None` for later fragments.
fn datagram_start(pkt: &[u8]) -> Option<u8> {
    match pkt[0] >> 4 {
        4 => {
            let offset = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
            (pkt[9] == 17 && offset == 0).then(|| pkt[20 + 8])
        }
        _ => match pkt[6] {
            17 => Some(pkt[40 + 8]),
            44 => {
                let offset = u16::from_be_bytes([pkt[42], pkt[43]]) & !7;
                (pkt[40] == 17 && offset == 0).then(|| pkt[48 + 8])
            }
            _ => None,
        },
    }
}

#[test]
fn udp_datagrams_above_the_mtu_leave_in_order_with_the_others_and_after_close() {
    for (family, to) in [
        (Family::V4, "192.0.2.1:5353"),
        (Family::V6, "[2001:db8::1]:5353"),
    ] {
        let mut p = pair(1, 0.0, 10);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        p.filter_to_b(move |pkt| {
            log.lock().unwrap().push(pkt.clone());
            true
        });
        let cli = p.a.socket(family, SocketType::Datagram);
        // Queued together, before any poll: smoltcp's queue and the stack's own fragments mix.
        let sizes = [10, 9216, 20, 3000, 30, 1400, 9000];
        for (i, &n) in sizes.iter().enumerate() {
            let d = vec![i as u8; n];
            assert_eq!(p.a.send_to(cli, &d, Some(addr(to))), Ok(n));
        }
        // Closed at once, as a program that sends and exits: all of it still leaves.
        p.a.close(cli, p.now());
        p.run_for(Duration::from_millis(50));
        let packets = seen.lock().unwrap().clone();
        let order: Vec<u8> = packets.iter().filter_map(|p| datagram_start(p)).collect();
        assert_eq!(
            order,
            [0, 1, 2, 3, 4, 5, 6],
            "{family:?}: datagrams out of order"
        );
        assert!(
            packets.iter().all(|p| p.len() <= 1500),
            "{family:?}: a packet above the MTU"
        );
        // 9216 B: 7 fragments; 3000 B: 3; 9000 B: 7 (IPv4 and IPv6 alike at MTU 1500).
        assert_eq!(
            packets.len(),
            4 + 7 + 3 + 7,
            "{family:?}: packets on the wire"
        );

        // A socket whose only datagram is a fragmented one, closed at once: it still leaves.
        seen.lock().unwrap().clear();
        let last = p.a.socket(family, SocketType::Datagram);
        assert_eq!(p.a.send_to(last, &[7u8; 5000], Some(addr(to))), Ok(5000));
        p.a.close(last, p.now());
        p.run_for(Duration::from_millis(50));
        let packets = seen.lock().unwrap().clone();
        assert_eq!(packets.len(), 4, "{family:?}: 5000 B in 4 fragments");
        assert_eq!(datagram_start(&packets[0]), Some(7));
    }
}

#[test]
fn down_interface_and_missing_route() {
    let mut p = pair(1, 0.0, 9);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let iface = p.a.interfaces()[0].id;
    p.a.set_interface_up(iface, false).unwrap();
    assert!(matches!(
        p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now()),
        Err(ConnectError::Route(RouteError::NetworkDown(_)))
    ));
    p.a.set_interface_up(iface, true).unwrap();
    // A stack with only a connected route has no way to 203.0.113.0/24.
    let mut lone = stack::Stack::new(stack::StackConfig::default());
    lone.add_interface(stack::InterfaceConfig::new("x").address("192.0.2.2/24".parse().unwrap()))
        .unwrap();
    let s = lone.socket(Family::V4, SocketType::Stream);
    assert!(matches!(
        lone.connect(
            s,
            addr("203.0.113.1:7"),
            ConnectOptions::default(),
            stack::Instant::ZERO
        ),
        Err(ConnectError::Route(RouteError::NetworkUnreachable(_)))
    ));
    assert!(
        lone.connect(
            s,
            addr("192.0.2.1:7"),
            ConnectOptions::default(),
            stack::Instant::ZERO
        )
        .is_ok(),
        "the connected route works"
    );
}

#[test]
fn ephemeral_ports_are_random_and_distinct() {
    let mut p = pair(1, 0.0, 10);
    let mut ports = Vec::new();
    for _ in 0..64 {
        let s = p.a.socket(Family::V4, SocketType::Datagram);
        p.a.bind(s, addr("0.0.0.0:0")).unwrap();
        ports.push(p.a.local_addr(s).unwrap().port());
    }
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ports.len(), "no port given twice");
    assert!(ports.iter().all(|p| (32768..=60999).contains(p)));
    // Not sequential: a counter would give consecutive ports.
    let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(sequential < 8, "ports look sequential: {ports:?}");
}

#[test]
fn an_orphan_waiting_out_time_wait_does_not_make_the_runtime_spin() {
    let mut a = stack::StackConfig::default();
    // The orphan deadline passes while the connection is still in TIME-WAIT (10 s in smoltcp).
    a.orphan_timeout = Duration::from_millis(100);
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        loss: 0.0,
        mtu: 1500,
        seed: 12,
        ..LinkConfig::default()
    };
    let mut p = Pair::with_configs(
        link,
        a,
        stack::StackConfig::default(),
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    );
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr("192.0.2.1:7")).unwrap();
    p.b.listen(l, 1).unwrap();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now())
        .unwrap();
    let mut s = None;
    p.drive_until(1000, |p| {
        s = s.or(p.b.accept(l).ok().map(|(s, _)| s));
        s.is_some()
    });
    // A closes first (and so waits out TIME-WAIT); B closes after it.
    p.a.close(c, p.now());
    p.run_for(Duration::from_millis(20));
    p.b.close(s.unwrap(), p.now());
    p.run_for(Duration::from_millis(500));
    let now = p.now();
    let delay = p.a.poll_delay(now);
    assert!(
        delay.is_none_or(|d| d >= Duration::from_secs(1)),
        "the next wake-up is TIME-WAIT's end, not now: {delay:?}"
    );
}
