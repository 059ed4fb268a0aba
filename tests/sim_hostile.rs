//! Hostile input, in memory (no root, virtual clock): floods of odd SYNs leave nothing behind
//! and Fast Open working; corrupt segments are never acted on or given a fresh checksum; nothing
//! answers from an address the stack does not own as unicast.
//!
//! A failure names the seed (`CONNECTX_SIM_SEED` replays it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stack::sim::{forge_tcp, tcp_view, LinkConfig, Pair, TcpView};
use stack::{
    ConnectOptions, ConnectStatus, CookieKey, Family, FastOpenMode, FastOpenServerConfig,
    RecvError, SocketId, SocketType, StackConfig, TableSizes,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const SERVER: &str = "192.0.2.1:7";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pair(seed: u64) -> Pair {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        loss: 0.0,
        mtu: 1500,
        seed,
        ..LinkConfig::default()
    };
    Pair::with_configs(
        link,
        StackConfig::default(),
        StackConfig::default(),
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    )
}

fn key() -> CookieKey {
    "a0bf63f7-ed803d81-cd641d30-cebc4a90".parse().unwrap()
}

fn fast_open_listener(p: &mut Pair) -> SocketId {
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr(SERVER)).unwrap();
    p.b.listen(l, 128).unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(key())))
        .unwrap();
    l
}

/// A Fast Open connection from A with `data`, echoed once; returns what Fast Open did.
fn genuine_client(p: &mut Pair, l: SocketId, data: &[u8]) -> stack::FastOpenInfo {
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
    p.a.queue_early(c, data).unwrap();
    let mut s = None;
    let mut buf = [0u8; 256];
    p.drive_until(100_000, |p| {
        if s.is_none() {
            s = p.b.accept(l).ok().map(|(s, _)| s);
        }
        if let Some(s) = s {
            if let Ok(n) = p.b.recv(s, &mut buf) {
                if n > 0 {
                    p.b.send(s, &buf[..n]).unwrap();
                }
            }
        }
        matches!(p.a.recv(c, &mut buf), Ok(n) if n == data.len())
    });
    let info = p.a.fast_open_info(c).unwrap();
    p.a.close(c, p.now());
    p.b.close(s.unwrap(), p.now());
    info
}

/// 100,000 SYNs of every odd kind (cookie requests, bad cookies, good cookies, SYN|FIN,
/// SYN|RST, SYN|ACK, to the listener's address and to others on the link, with and without
/// data) leave Fast Open working for the next genuine client, and once their timers have
/// passed every table of the stack is back where it was.
#[test]
fn a_hundred_thousand_odd_syns_leave_nothing_behind() {
    let mut p = pair(41);
    let l = fast_open_listener(&mut p);
    // A cookie first, then the tables' level with the listener alone.
    genuine_client(&mut p, l, b"before");
    p.run_for(Duration::from_secs(70));
    let before: TableSizes = p.b.table_sizes();
    // B's answers go nowhere: A would reset the made-up connections, and the flood is about
    // what B keeps.
    p.filter_to_a(|_| false);
    let good = key()
        .cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
        .unwrap();
    let mut good_opt = vec![34u8, 10];
    good_opt.extend_from_slice(good.as_bytes());
    let mut x: u32 = 0x2545_f491;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for i in 0..100_000u32 {
        let r = next();
        let flags = match r % 6 {
            0 => SYN,
            1 => SYN | FIN,
            2 => SYN | RST,
            3 => SYN | ACK,
            4 => SYN | PSH,
            _ => SYN | FIN | PSH,
        };
        let opts: Vec<u8> = match (r >> 8) % 4 {
            0 => vec![34, 2],
            1 => vec![34, 10, 1, 2, 3, 4, 5, 6, 7, 8],
            2 => good_opt.clone(),
            _ => vec![34, 6, 9, 9, 9, 9],
        };
        let to = match (r >> 12) % 3 {
            0 => SERVER,
            1 => "192.0.2.9:7",
            _ => "192.0.2.255:7",
        };
        let from = addr(&format!(
            "192.0.2.{}:{}",
            2 + (r >> 16) % 50,
            1024 + i % 60000
        ));
        let payload: &[u8] = if r & (1 << 30) != 0 { b"syn data" } else { b"" };
        let syn = forge_tcp(from, addr(to), next(), 0, flags, &opts, payload).unwrap();
        p.inject_to_b(syn);
        if i % 1000 == 999 {
            p.run_for(Duration::from_millis(5));
        }
    }
    p.run_for(Duration::from_millis(100));
    let during = p.b.table_sizes();
    assert!(
        during.handshakes <= 128 && during.connections <= 128 + 129,
        "the backlog bounds what the flood holds: {during:?}"
    );
    let t = p.b.tcp_counters();
    assert!(t.InAddrErrors > 0, "the SYNs to other addresses: {t:?}");
    p.filter_to_a(|_| true);
    // Every handshake the flood started has run out (63 s), every cookie gone stale; the
    // server takes what reached its accept queue (the good cookies with data, which a server
    // must see, as Linux's) and closes it.
    p.run_for(Duration::from_secs(200));
    let mut taken = 0;
    while let Ok((s, _)) = p.b.accept(l) {
        p.b.close(s, p.now());
        taken += 1;
    }
    assert!(taken <= 129, "at most the backlog waited: {taken}");
    p.run_for(Duration::from_secs(70));
    let after = p.b.table_sizes();
    assert_eq!(
        after,
        TableSizes {
            spare_sockets: after.spare_sockets,
            ..before
        },
        "every table back to its level before the flood (seed {})",
        p.seed
    );
    let info = genuine_client(&mut p, l, b"after the flood");
    assert_eq!(
        (info.syn_data_sent, info.syn_data_acked, info.fallback),
        (15, 15, None),
        "Fast Open still works: {info:?} (seed {})",
        p.seed
    );
}

/// Segments to a broadcast or multicast address, or to another host's, are never answered:
/// a reply would leave from an address the stack does not own as unicast.
#[test]
fn nothing_answers_for_an_address_not_ours() {
    let mut p = pair(42);
    let _l = fast_open_listener(&mut p);
    let replies = Arc::new(Mutex::new(Vec::<TcpView>::new()));
    let seen = Arc::clone(&replies);
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            seen.lock().unwrap().push(t);
        }
        true
    });
    for to in [
        "192.0.2.255:7",
        "224.0.0.1:7",
        "192.0.2.9:7",
        "192.0.2.255:9",
    ] {
        for flags in [SYN, ACK, FIN | ACK, PSH | ACK] {
            let seg = forge_tcp(addr("192.0.2.2:5000"), addr(to), 1, 2, flags, &[], b"x").unwrap();
            p.inject_to_b(seg);
        }
    }
    p.run_for(Duration::from_millis(50));
    assert!(
        replies.lock().unwrap().is_empty(),
        "no reply: {:?}",
        replies.lock().unwrap()
    );
    assert_eq!(p.b.tcp_counters().InAddrErrors, 16);
    assert_eq!(p.b.table_sizes().connections, 0);
}

/// Flip one byte of a segment's payload (its checksum is then wrong).
fn corrupt(pkt: &mut [u8]) {
    let last = pkt.len() - 1;
    pkt[last] ^= 0x5a;
}

/// A SYN-ACK carrying data whose checksum is wrong does not complete a Fast Open client's
/// handshake, and its data never reaches the application: the layer would rewrite it (its
/// data goes to smoltcp as the segment after), so it is checked first.
#[test]
fn a_corrupt_synack_with_data_is_not_taken_by_a_fast_open_client() {
    let mut p = pair(43);
    let syns = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&syns);
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            log.lock().unwrap().push(t);
        }
        false
    });
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    p.a.connect(c, addr("192.0.2.1:80"), opts, p.now()).unwrap();
    p.run_for(Duration::from_millis(20));
    let syn = syns.lock().unwrap()[0];
    let forge = |payload: &[u8]| {
        forge_tcp(
            syn.dst,
            syn.src,
            5000,
            syn.seq.wrapping_add(1),
            SYN | ACK | PSH,
            &[2, 4, 5, 180],
            payload,
        )
        .unwrap()
    };
    let mut bad = forge(b"evil");
    corrupt(&mut bad);
    p.inject_to_a(bad);
    p.run_for(Duration::from_millis(20));
    assert_eq!(
        p.a.connect_status(c),
        Some(ConnectStatus::InProgress),
        "the corrupt SYN-ACK is dropped"
    );
    assert_eq!(p.a.tcp_counters().InCsumErrors, 1);
    // The genuine one still works.
    p.inject_to_a(forge(b"good"));
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.a.connect_status(c), Some(ConnectStatus::Connected));
    let mut buf = [0u8; 8];
    assert_eq!(p.a.recv(c, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"good");
}

/// A SYN with a valid Fast Open cookie, data and a wrong checksum is not accepted: its data
/// never reaches the application (the layer would take it out of the SYN).
#[test]
fn a_corrupt_syn_with_a_good_cookie_gives_the_application_nothing() {
    let mut p = pair(44);
    let l = fast_open_listener(&mut p);
    let good = key()
        .cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
        .unwrap();
    let mut opt = vec![34u8, 10];
    opt.extend_from_slice(good.as_bytes());
    let mut syn = forge_tcp(
        addr("192.0.2.2:4444"),
        addr(SERVER),
        9,
        0,
        SYN,
        &opt,
        b"corrupt",
    )
    .unwrap();
    corrupt(&mut syn);
    p.filter_to_a(|_| false);
    p.inject_to_b(syn);
    p.run_for(Duration::from_millis(50));
    assert!(
        matches!(p.b.accept(l), Err(stack::AcceptError::WouldBlock)),
        "nothing to accept"
    );
    assert_eq!(p.b.table_sizes().connections, 0);
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassive, 0);
    assert_eq!(p.b.tcp_counters().InCsumErrors, 1);
}

/// Segments seen on the wire: (towards B, the segment).
type Log = Arc<Mutex<Vec<(bool, TcpView)>>>;

/// An established connection between A and B; the segments on the wire are logged.
fn established(p: &mut Pair) -> (SocketId, SocketId, Log) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (la, lb) = (Arc::clone(&log), Arc::clone(&log));
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            la.lock().unwrap().push((false, t));
        }
        true
    });
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            lb.lock().unwrap().push((true, t));
        }
        true
    });
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr(SERVER)).unwrap();
    p.b.listen(l, 8).unwrap();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
        .unwrap();
    let mut s = None;
    p.drive_until(10_000, |p| {
        s = s.or_else(|| p.b.accept(l).ok().map(|(s, _)| s));
        s.is_some()
    });
    p.a.send(c, b"ping").unwrap();
    let mut buf = [0u8; 8];
    p.drive_until(10_000, |p| p.b.recv(s.unwrap(), &mut buf) == Ok(4));
    p.run_for(Duration::from_millis(50));
    (c, s.unwrap(), log)
}

/// RFC 5961 §3.2: a RST inside the window but not at exactly the next expected sequence number
/// (what a blind attacker can hope to hit) draws a challenge ACK and leaves the connection
/// alone; one at exactly that number resets it.
#[test]
fn a_blind_rst_draws_a_challenge_ack_and_resets_nothing() {
    let mut p = pair(45);
    let (c, s, log) = established(&mut p);
    // What B expects from A next: the ack of B's last segment.
    let last_from_b = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(to_b, t)| !*to_b && t.flags & ACK != 0)
        .map(|(_, t)| *t)
        .unwrap();
    let (a_addr, b_addr) = (last_from_b.dst, last_from_b.src);
    let expected = last_from_b.ack;
    log.lock().unwrap().clear();
    for guess in [1u32, 1000, 30_000, 40_000, 60_000] {
        let rst = forge_tcp(
            a_addr,
            b_addr,
            expected.wrapping_add(guess),
            0,
            RST,
            &[],
            b"",
        )
        .unwrap();
        p.inject_to_b(rst);
    }
    p.run_for(Duration::from_millis(20));
    let challenges: Vec<TcpView> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(to_b, t)| !*to_b && t.flags == ACK)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(
        challenges.len(),
        1,
        "one challenge ACK for the burst (one a second): {challenges:?}"
    );
    assert_eq!(challenges[0].ack, expected, "it says what B expects");
    assert_eq!(p.b.tcp_counters().TCPChallengeACK, 5);
    // The connection is intact both ways.
    p.b.send(s, b"still here").unwrap();
    let mut buf = [0u8; 16];
    p.drive_until(10_000, |p| p.a.recv(c, &mut buf) == Ok(10));
    // A RST at exactly the expected number does reset it.
    let last_from_b = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(to_b, t)| !*to_b && t.flags & ACK != 0)
        .map(|(_, t)| *t)
        .unwrap();
    let rst = forge_tcp(a_addr, b_addr, last_from_b.ack, 0, RST, &[], b"").unwrap();
    p.inject_to_b(rst);
    p.run_for(Duration::from_millis(20));
    assert_eq!(
        p.b.recv(s, &mut buf),
        Err(RecvError::Connection(stack::ConnectionError::Reset))
    );
}

/// RFC 5961 §4.2: a SYN on an established connection draws a challenge ACK (smoltcp's) and
/// resets nothing; §5.2: data whose acknowledgement number is beyond what was sent is dropped.
#[test]
fn a_syn_or_an_impossible_ack_on_an_established_connection_changes_nothing() {
    let mut p = pair(46);
    let (c, s, log) = established(&mut p);
    let last_from_b = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(to_b, t)| !*to_b && t.flags & ACK != 0)
        .map(|(_, t)| *t)
        .unwrap();
    let (a_addr, b_addr) = (last_from_b.dst, last_from_b.src);
    log.lock().unwrap().clear();
    let syn = forge_tcp(a_addr, b_addr, 77, 0, SYN, &[], b"").unwrap();
    p.inject_to_b(syn);
    let data = forge_tcp(
        a_addr,
        b_addr,
        last_from_b.ack,
        last_from_b.seq.wrapping_add(100_000),
        ACK | PSH,
        &[],
        b"evil",
    )
    .unwrap();
    p.inject_to_b(data);
    p.run_for(Duration::from_millis(20));
    let mut buf = [0u8; 16];
    assert_eq!(
        p.b.recv(s, &mut buf),
        Err(RecvError::WouldBlock),
        "the data with an impossible ACK is not taken"
    );
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|(to_b, t)| !*to_b && t.flags == ACK),
        "a challenge ACK answered the SYN"
    );
    p.a.send(c, b"fine").unwrap();
    p.drive_until(10_000, |p| p.b.recv(s, &mut buf) == Ok(4));
    assert_eq!(&buf[..4], b"fine");
}

/// Fast Open settings are for bound or listening sockets and belong to the socket: on a
/// connected socket they are refused, and nothing is left for a later listener on its port.
#[test]
fn fast_open_on_a_connected_socket_is_refused_and_leaves_nothing_behind() {
    let mut p = pair(47);
    let (c, s, _log) = established(&mut p);
    let port = p.a.local_addr(c).unwrap().port();
    assert_eq!(
        p.a.set_fast_open(c, Some(FastOpenServerConfig::new(key()))),
        Err(stack::ListenError::Connected)
    );
    p.a.close(c, p.now());
    p.b.close(s, p.now());
    p.run_for(Duration::from_secs(1));
    // A plain listener on that port of A; a client on B asking for a cookie gets none.
    let l = p.a.socket(Family::V4, SocketType::Stream);
    p.a.bind(l, SocketAddr::new("192.0.2.2".parse().unwrap(), port))
        .unwrap();
    p.a.listen(l, 8).unwrap();
    let c = p.b.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    let to = SocketAddr::new("192.0.2.2".parse().unwrap(), port);
    p.b.connect(c, to, opts, p.now()).unwrap();
    p.drive_until(10_000, |p| {
        p.b.connect_status(c) == Some(ConnectStatus::Connected)
    });
    let info = p.b.fast_open_info(c).unwrap();
    assert!(info.cookie_requested, "{info:?}");
    assert_eq!(
        info.cookie_received, None,
        "no Fast Open on the new listener: {info:?}"
    );
    assert_eq!(p.a.fast_open_counters().TCPFastOpenCookieReqd, 0);
}
