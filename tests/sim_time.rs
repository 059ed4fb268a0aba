//! Time passing: every deadline the stack sets on a call is counted from the time of that call,
//! however long the stack sat idle before it (in-memory pair on a virtual clock, no root).
//!
//! While nothing is due, the runtime does not poll at all; these tests idle the same way
//! (`Pair::run_for` on a quiet pair moves the clock without polling), then make the call.

use std::net::SocketAddr;
use std::time::Duration;

use stack::sim::{LinkConfig, Pair};
use stack::{
    ConnectOptions, ConnectStatus, ConnectionError, CookieKey, Fallback, Family, FastOpenMode,
    FastOpenServerConfig, RecvError, SendError, SocketId, SocketType, StackConfig,
};

const IDLE: Duration = Duration::from_secs(100);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pair(a: StackConfig, b: StackConfig) -> Pair {
    let link = LinkConfig {
        latency: Duration::from_millis(5),
        loss: 0.0,
        mtu: 1500,
        seed: 21,
        ..LinkConfig::default()
    };
    Pair::with_configs(link, a, b, &["192.0.2.2/24"], &["192.0.2.1/24"])
}

fn listener(p: &mut Pair) -> SocketId {
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr("192.0.2.1:7")).unwrap();
    p.b.listen(l, 16).unwrap();
    l
}

/// Connect A to B's listener and accept it.
fn connected(p: &mut Pair, l: SocketId, opts: ConnectOptions) -> (SocketId, SocketId) {
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), opts, p.now()).unwrap();
    let mut s = None;
    p.drive_until(10_000, |p| {
        s = s.or_else(|| p.b.accept(l).ok().map(|(s, _)| s));
        s.is_some() && p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    (c, s.unwrap())
}

/// Let the pair run until neither side has anything due, then idle for `d` without a poll.
fn idle(p: &mut Pair, d: Duration) {
    p.drive_until(100_000, |p| {
        let now = p.now();
        p.a.poll_delay(now).is_none() && p.b.poll_delay(now).is_none()
    });
    p.run_for(d);
}

#[test]
fn connect_after_a_long_idle_waits_its_whole_timeout() {
    let mut config = StackConfig::default();
    config.connect_timeout = Duration::from_secs(75);
    let mut p = pair(config, StackConfig::default());
    // Nobody answers: every packet towards B is lost.
    p.filter_to_b(|_| false);
    idle(&mut p, IDLE);
    let start = p.now();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), start)
        .unwrap();
    p.run_for(Duration::from_secs(74));
    assert_eq!(
        p.a.connect_status(c),
        Some(ConnectStatus::InProgress),
        "74 s after the call, a 75 s connect timeout has not run out"
    );
    p.run_for(Duration::from_secs(2));
    assert_eq!(
        p.a.connect_status(c),
        Some(ConnectStatus::Failed(ConnectionError::TimedOut)),
        "and it runs out at 75 s"
    );
}

#[test]
fn data_written_and_closed_after_a_long_idle_all_arrives() {
    let mut p = pair(StackConfig::default(), StackConfig::default());
    let l = listener(&mut p);
    let (c, s) = connected(&mut p, l, ConnectOptions::default());
    idle(&mut p, IDLE);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        match p.a.send(c, &data[sent..]) {
            Ok(n) => sent += n,
            Err(SendError::WouldBlock) => {
                p.step();
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    // The linger deadline of the closed connection counts from now, not from before the idle.
    p.a.close(c, p.now());
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    p.drive_until(1_000_000, |p| loop {
        match p.b.recv(s, &mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(RecvError::WouldBlock) => return false,
            Err(e) => panic!("after {} bytes: {e} (seed {})", got.len(), p.seed),
        }
    });
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes are the ones written");
}

#[test]
fn fast_open_suspension_ends_while_the_stack_idles() {
    let mut p = pair(StackConfig::default(), StackConfig::default());
    let l = listener(&mut p);
    let key: CookieKey = "a0bf63f7-ed803d81-cd641d30-cebc4a90".parse().unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(key)))
        .unwrap();
    let fast_open = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    // A cookie, then a SYN with data that a middlebox drops: Fast Open towards B is suspended
    // for 10 s (C-08).
    connected(&mut p, l, fast_open);
    p.filter_to_b(|pkt: &mut Vec<u8>| {
        stack::sim::tcp_view(pkt).is_none_or(|t| !(t.flags & 0x02 != 0 && t.payload_len > 0))
    });
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), fast_open, p.now())
        .unwrap();
    p.a.queue_early(c, b"dropped").unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    assert_eq!(
        p.a.fast_open_info(c).unwrap().fallback,
        Some(Fallback::SynRetransmitted)
    );
    p.filter_to_b(|_| true);
    // The suspension ran out long ago by the time of the next connection.
    idle(&mut p, IDLE);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr("192.0.2.1:7"), fast_open, p.now())
        .unwrap();
    p.a.queue_early(c, b"in the SYN").unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (info.fallback, info.syn_data_sent),
        (None, 10),
        "Fast Open is used again: {info:?}"
    );
}
