//! The engine (in memory, no root, virtual clock): TIME-WAIT as compact entries outside smoltcp,
//! Linux's listen backlog (SYNs past it dropped and counted, never refused), the global bound on
//! half-open handshakes and their timeout, ephemeral ports shared by distinct tuples, thousands
//! of connections, per-socket readiness events, and corrupt SYNs that create no state.
//!
//! A failure names the seed (`CONNECTX_SIM_SEED` replays it).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stack::sim::{forge_tcp, tcp_view, LinkConfig, Pair, TcpView};
use stack::{
    BindError, ConnectError, ConnectOptions, ConnectStatus, Family, RecvError, SocketId,
    SocketType, StackConfig,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

const SERVER: &str = "192.0.2.1:7";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pair_with(a: StackConfig, b: StackConfig, seed: u64) -> Pair {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        loss: 0.0,
        mtu: 1500,
        seed,
        ..LinkConfig::default()
    };
    Pair::with_configs(
        link,
        a,
        b,
        &["192.0.2.2/24", "2001:db8::2/64"],
        &["192.0.2.1/24", "2001:db8::1/64"],
    )
}

fn pair(seed: u64) -> Pair {
    pair_with(StackConfig::default(), StackConfig::default(), seed)
}

/// A listener on B.
fn listener(p: &mut Pair, at: &str, backlog: usize) -> SocketId {
    let family = if addr(at).is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let l = p.b.socket(family, SocketType::Stream);
    p.b.bind(l, addr(at)).unwrap();
    p.b.listen(l, backlog).unwrap();
    l
}

/// Connect A to B's listener `l` at `to` and accept it: (client on A, server on B).
#[track_caller]
fn connected(p: &mut Pair, l: SocketId, to: &str) -> (SocketId, SocketId) {
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr(to), ConnectOptions::default(), p.now())
        .unwrap();
    let mut s = None;
    p.drive_until(10_000, |p| {
        s = s.or_else(|| p.b.accept(l).ok().map(|(s, _)| s));
        s.is_some() && p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    (c, s.unwrap())
}

/// Every TCP segment on the wire, in both directions, in order (`to_b`, segment).
type Log = Arc<Mutex<Vec<(bool, TcpView)>>>;

/// Log every segment; deliver those `pass` lets through.
fn log_wire(
    p: &mut Pair,
    pass_to_a: impl Fn(&TcpView) -> bool + Send + 'static,
    pass_to_b: impl Fn(&TcpView) -> bool + Send + 'static,
) -> Log {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let (la, lb) = (Arc::clone(&log), Arc::clone(&log));
    p.filter_to_a(move |pkt: &mut Vec<u8>| match tcp_view(pkt) {
        Some(t) => {
            la.lock().unwrap().push((false, t));
            pass_to_a(&t)
        }
        None => true,
    });
    p.filter_to_b(move |pkt: &mut Vec<u8>| match tcp_view(pkt) {
        Some(t) => {
            lb.lock().unwrap().push((true, t));
            pass_to_b(&t)
        }
        None => true,
    });
    log
}

fn taken(log: &Log) -> Vec<(bool, TcpView)> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Read from `s` on B until the end of the stream.
#[track_caller]
fn b_reads_eof(p: &mut Pair, s: SocketId) {
    let mut buf = [0u8; 64];
    p.drive_until(100_000, |p| matches!(p.b.recv(s, &mut buf), Ok(0)));
}

/// Read from `c` on A until the end of the stream.
#[track_caller]
fn a_reads_eof(p: &mut Pair, c: SocketId) {
    let mut buf = [0u8; 64];
    p.drive_until(100_000, |p| matches!(p.a.recv(c, &mut buf), Ok(0)));
}

// ----- 1. TIME-WAIT on the active closer -----

#[test]
fn time_wait_on_the_active_closer_is_a_compact_entry_for_60_s() {
    let mut p = pair(1);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    let (c, s) = connected(&mut p, l, SERVER);
    let per_conn = p.a.config().tcp_rx_buffer + p.a.config().tcp_tx_buffer;
    assert_eq!(p.a.connection_counts(), (1, 0), "seed {seed}");
    assert_eq!(p.a.buffers_committed(), per_conn, "seed {seed}");

    // A closes first, B reads the end and closes too.
    p.a.close(c, p.now());
    b_reads_eof(&mut p, s);
    p.b.close(s, p.now());
    p.drive_until(10_000, |p| p.a.connection_counts() == (0, 1));
    let entered = p.now();
    assert_eq!(
        p.a.buffers_committed(),
        0,
        "the smoltcp socket and its buffers are gone as TIME-WAIT starts, not 60 s later (seed {seed})"
    );
    // B, the passive closer, ends in CLOSED with nothing left.
    p.drive_until(10_000, |p| p.b.connection_counts() == (0, 0));
    assert_eq!(p.b.buffers_committed(), 0, "seed {seed}");

    p.run_for(Duration::from_secs(59));
    assert_eq!(
        p.a.connection_counts(),
        (0, 1),
        "59 s in, the entry is still there (seed {seed})"
    );
    assert_eq!(p.a.tcp_counters().TW, 0, "seed {seed}");
    p.run_for(Duration::from_secs(2));
    assert!(p.now() >= entered + stack::SmolDuration::from_secs(60));
    assert_eq!(
        p.a.connection_counts(),
        (0, 0),
        "gone after 60 s (seed {seed})"
    );
    assert_eq!(p.a.tcp_counters().TW, 1, "seed {seed}");
    assert_eq!(p.a.tcp_counters().TCPTimeWaitOverflow, 0, "seed {seed}");
}

// ----- 2. TIME-WAIT answers a retransmitted FIN, dies on an exact RST -----

#[test]
fn time_wait_acks_a_retransmitted_fin_and_dies_only_on_an_exact_rst() {
    let mut p = pair(2);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    let (c, s) = connected(&mut p, l, SERVER);
    // Once A is in TIME-WAIT, what it sends goes no further than the log: B has forgotten the
    // connection and would answer A's ACKs with a RST at exactly A's rcv_nxt, ending the entry.
    let to_b = Arc::new(AtomicBool::new(true));
    let pass = Arc::clone(&to_b);
    let log = log_wire(&mut p, |_| true, move |_| pass.load(Ordering::SeqCst));
    let client = p.a.local_addr(c).unwrap();
    p.a.close(c, p.now());
    b_reads_eof(&mut p, s);
    p.b.close(s, p.now());
    p.drive_until(10_000, |p| {
        p.a.connection_counts() == (0, 1) && p.b.connection_counts() == (0, 0)
    });
    let wire = taken(&log);
    let a_fin = wire
        .iter()
        .find(|(to_b, t)| *to_b && t.flags & FIN != 0)
        .map(|(_, t)| *t)
        .expect("A sent a FIN");
    let b_fin = wire
        .iter()
        .find(|(to_b, t)| !*to_b && t.flags & FIN != 0)
        .map(|(_, t)| *t)
        .expect("B sent a FIN");
    assert_eq!((a_fin.src, a_fin.dst), (client, addr(SERVER)));
    // One past each FIN (neither carried data).
    let snd_nxt = a_fin.seq.wrapping_add(a_fin.payload_len as u32 + 1);
    let rcv_nxt = b_fin.seq.wrapping_add(b_fin.payload_len as u32 + 1);

    to_b.store(false, Ordering::SeqCst);
    // Halfway through the wait, B's FIN comes again (as if A's last ACK had been lost).
    p.run_for(Duration::from_secs(30));
    let fin = forge_tcp(
        addr(SERVER),
        client,
        b_fin.seq,
        snd_nxt,
        FIN | ACK,
        &[],
        b"",
    )
    .unwrap();
    p.inject_to_a(fin);
    p.run_for(Duration::from_millis(10));
    let answers: Vec<TcpView> = taken(&log)
        .into_iter()
        .filter(|(to_b, _)| *to_b)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        answers.len(),
        1,
        "one answer to the retransmitted FIN (seed {seed}): {answers:?}"
    );
    let ack = answers[0];
    assert_eq!(
        (
            ack.src,
            ack.dst,
            ack.flags,
            ack.seq,
            ack.ack,
            ack.payload_len
        ),
        (client, addr(SERVER), ACK, snd_nxt, rcv_nxt, 0),
        "the answer is the ACK of B's FIN (seed {seed})"
    );
    // The FIN restarted the wait: 61 s after TIME-WAIT began, the entry is still there.
    p.run_for(Duration::from_secs(31));
    assert_eq!(
        p.a.connection_counts(),
        (0, 1),
        "a retransmitted FIN restarts the 60 s (seed {seed})"
    );

    // A RST off the exact sequence number is ignored (and not answered).
    for seq in [
        rcv_nxt.wrapping_add(1),
        rcv_nxt.wrapping_add(1000),
        rcv_nxt.wrapping_sub(1),
    ] {
        let rst = forge_tcp(addr(SERVER), client, seq, 0, RST, &[], b"").unwrap();
        p.inject_to_a(rst);
        p.run_for(Duration::from_millis(10));
        assert_eq!(
            p.a.connection_counts(),
            (0, 1),
            "a RST at {seq} (expected {rcv_nxt}) leaves the entry (seed {seed})"
        );
    }
    assert!(
        taken(&log).iter().all(|(to_b, _)| !*to_b),
        "RSTs are never answered (seed {seed})"
    );
    // The exact one ends it, before its time (it does not count as a TIME-WAIT that ran out).
    let rst = forge_tcp(addr(SERVER), client, rcv_nxt, 0, RST, &[], b"").unwrap();
    p.inject_to_a(rst);
    p.run_for(Duration::from_millis(10));
    assert_eq!(
        p.a.connection_counts(),
        (0, 0),
        "a RST at exactly rcv_nxt ends TIME-WAIT (seed {seed})"
    );
    assert_eq!(p.a.tcp_counters().TW, 0, "seed {seed}");
}

// ----- 3. A higher SYN reopens a tuple in TIME-WAIT on the listener's side -----

/// Connect A to B and let B close first: B keeps the TIME-WAIT entry. Returns A's address and
/// one past A's FIN (the entry's `rcv_nxt`) and one past B's FIN (its `snd_nxt`).
fn server_closes_first(p: &mut Pair, l: SocketId, log: &Log) -> (SocketAddr, u32, u32) {
    taken(log);
    let (c, s) = connected(p, l, SERVER);
    let client = p.a.local_addr(c).unwrap();
    let tw_before = p.b.connection_counts().1;
    p.b.close(s, p.now());
    a_reads_eof(p, c);
    p.a.close(c, p.now());
    p.drive_until(10_000, |p| {
        p.b.connection_counts().1 == tw_before + 1 && p.a.connection_counts() == (0, 0)
    });
    let wire = taken(log);
    let fin_of = |to_b: bool| {
        wire.iter()
            .find(|(d, t)| *d == to_b && t.flags & FIN != 0 && (t.src == client || t.dst == client))
            .map(|(_, t)| t.seq.wrapping_add(t.payload_len as u32 + 1))
            .expect("a FIN each way")
    };
    (client, fin_of(true), fin_of(false))
}

#[test]
fn a_higher_syn_reopens_a_tuple_in_time_wait_on_the_listener() {
    // Seed 12: A's new ISN happens to be above the old connection's (with a lower one, B
    // answers with the entry's ACK, A resets it at exactly rcv_nxt, and the SYN retransmitted
    // a second later gets in).
    let mut p = pair(12);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    // B's answers to A pass unless they belong to a forged SYN's tuple (A would reset them).
    let blocked: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let blocked_in = Arc::clone(&blocked);
    let log = log_wire(
        &mut p,
        move |t| !blocked_in.lock().unwrap().contains(&t.dst),
        |_| true,
    );
    let (x, x_rcv_nxt, x_snd_nxt) = server_closes_first(&mut p, l, &log);
    let (y, y_rcv_nxt, _) = server_closes_first(&mut p, l, &log);
    assert_eq!(p.b.connection_counts(), (0, 2), "seed {seed}");

    // A SYN below what the old connection used is an old duplicate: B answers with the entry's
    // ACK and keeps the entry.
    blocked.lock().unwrap().insert(x);
    taken(&log);
    let old = forge_tcp(
        x,
        addr(SERVER),
        x_rcv_nxt.wrapping_sub(100_000),
        0,
        SYN,
        &[2, 4, 5, 180],
        b"",
    )
    .unwrap();
    p.inject_to_b(old);
    p.run_for(Duration::from_millis(10));
    let answers: Vec<TcpView> = taken(&log)
        .into_iter()
        .filter(|(to_b, _)| !*to_b)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(answers.len(), 1, "seed {seed}: {answers:?}");
    assert_eq!(
        (answers[0].flags, answers[0].seq, answers[0].ack),
        (ACK, x_snd_nxt, x_rcv_nxt),
        "a lower SYN draws the TIME-WAIT ACK (seed {seed})"
    );
    assert_eq!(p.b.connection_counts(), (0, 2), "seed {seed}");

    // A SYN above it opens a new connection on the same tuple.
    let isn = x_rcv_nxt.wrapping_add(100_000);
    let new = forge_tcp(x, addr(SERVER), isn, 0, SYN, &[2, 4, 5, 180], b"").unwrap();
    p.inject_to_b(new);
    p.run_for(Duration::from_millis(10));
    let answers: Vec<TcpView> = taken(&log)
        .into_iter()
        .filter(|(to_b, _)| !*to_b)
        .map(|(_, t)| t)
        .collect();
    assert!(
        answers
            .iter()
            .any(|t| t.flags == SYN | ACK && t.ack == isn.wrapping_add(1) && t.dst == x),
        "a higher SYN gets a SYN-ACK (seed {seed}): {answers:?}"
    );
    assert_eq!(
        p.b.connection_counts(),
        (1, 1),
        "the entry made way for a handshake (seed {seed})"
    );
    // Clean up the forged handshake.
    let rst = forge_tcp(x, addr(SERVER), isn.wrapping_add(1), 0, RST, &[], b"").unwrap();
    p.inject_to_b(rst);
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.b.connection_counts(), (0, 1), "seed {seed}");

    // A real client on the same port as Y, whose tuple is in TIME-WAIT on B: it gets in.
    taken(&log);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.bind(c, y).unwrap();
    let start = p.now();
    p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
        .unwrap();
    let mut s = None;
    p.drive_until(100_000, |p| {
        s = s.or_else(|| p.b.accept(l).ok());
        assert!(
            !matches!(p.a.connect_status(c), Some(ConnectStatus::Failed(_))),
            "seed {seed}"
        );
        s.is_some() && p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    let (s, peer) = s.unwrap();
    assert_eq!(peer, y, "the same tuple again (seed {seed})");
    let syns: Vec<TcpView> = taken(&log)
        .into_iter()
        .filter(|(to_b, t)| *to_b && t.flags == SYN)
        .map(|(_, t)| t)
        .collect();
    let higher = (syns[0].seq.wrapping_sub(y_rcv_nxt) as i32) > 0;
    if higher {
        // RFC 6191 without timestamps: the first SYN reopens the tuple, no retransmission.
        assert_eq!(syns.len(), 1, "seed {seed}: {syns:?}");
        assert!(
            p.now() - start < stack::SmolDuration::from_millis(100),
            "seed {seed}"
        );
    } else {
        assert_eq!(syns.len(), 2, "one retransmission (seed {seed}): {syns:?}");
    }
    assert_eq!(
        p.b.connection_counts(),
        (1, 0),
        "the new connection replaced the entry (seed {seed}, ISN higher: {higher})"
    );
    p.a.send(c, b"again").unwrap();
    let mut buf = [0u8; 8];
    p.drive_until(1000, |p| p.b.recv(s, &mut buf) == Ok(5));
    assert_eq!(&buf[..5], b"again");
}

// ----- 4. The backlog drops SYNs, never refuses them -----

#[test]
fn a_full_backlog_drops_syns_and_the_clients_get_in_by_retransmitting() {
    const BACKLOG: usize = 2;
    const CLIENTS: usize = 10;
    // Without SYN cookies (Linux's tcp_syncookies=0): SYNs past the backlog are dropped, and
    // a handshake that completes onto a full accept queue waits for the next SYN-ACK
    // retransmission; admission comes in waves, so the clients get a long connect timeout.
    let mut a = StackConfig::default();
    a.connect_timeout = Duration::from_secs(600);
    let mut b = StackConfig::default();
    b.syn_cookies = false;
    let mut p = pair_with(a, b, 4);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, BACKLOG);
    let log = log_wire(&mut p, |_| true, |_| true);
    let clients: Vec<SocketId> = (0..CLIENTS)
        .map(|_| {
            let c = p.a.socket(Family::V4, SocketType::Stream);
            p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
                .unwrap();
            c
        })
        .collect();
    let status = |p: &Pair| -> (usize, usize, Vec<ConnectStatus>) {
        let all: Vec<ConnectStatus> = clients
            .iter()
            .map(|&c| p.a.connect_status(c).unwrap())
            .collect();
        let connected = all
            .iter()
            .filter(|s| **s == ConnectStatus::Connected)
            .count();
        let waiting = all
            .iter()
            .filter(|s| **s == ConnectStatus::InProgress)
            .count();
        (connected, waiting, all)
    };
    let no_rst_from_b = |log: &Log| {
        let rst: Vec<TcpView> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(to_b, t)| !*to_b && t.flags & RST != 0)
            .map(|(_, t)| *t)
            .collect();
        assert!(
            rst.is_empty(),
            "B never resets a SYN (seed {seed}): {rst:?}"
        );
    };

    // The SYNs arrive together: the backlog bounds the handshakes under way, so exactly
    // `BACKLOG` get through before any retransmission (smoltcp's first is after 1 s).
    p.run_for(Duration::from_millis(500));
    let (connected, waiting, all) = status(&p);
    assert_eq!(
        (connected, waiting),
        (BACKLOG, CLIENTS - BACKLOG),
        "seed {seed}: {all:?}"
    );
    let t = p.b.tcp_counters();
    assert_eq!(
        t.ListenDrops,
        (CLIENTS - BACKLOG) as u64,
        "seed {seed}: {t:?}"
    );
    assert_eq!(
        t.TCPReqQFullDrop,
        (CLIENTS - BACKLOG) as u64,
        "seed {seed}: {t:?}"
    );
    no_rst_from_b(&log);

    // Nobody accepts for 10 s: the retransmitted SYNs fill the accept queue, then find it full.
    p.run_for(Duration::from_secs(10));
    let (connected, waiting, all) = status(&p);
    assert_eq!(
        connected + waiting,
        CLIENTS,
        "the rest wait, none failed or refused (seed {seed}): {all:?}"
    );
    assert!(waiting > 0, "seed {seed}: {all:?}");
    let t = p.b.tcp_counters();
    assert!(
        t.ListenOverflows > 0,
        "SYNs found the accept queue full (seed {seed}): {t:?}"
    );
    assert_eq!(
        t.ListenDrops,
        t.ListenOverflows + t.TCPReqQFullDrop,
        "{t:?}"
    );
    no_rst_from_b(&log);
    let syns_sent = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(to_b, t)| *to_b && t.flags == SYN)
        .count();
    assert!(
        syns_sent > CLIENTS,
        "the clients retransmitted their SYNs (seed {seed})"
    );
    // What queued meanwhile is taken at once (its bound has a test of its own below).
    let mut accepted = Vec::new();
    while let Ok(a) = p.b.accept(l) {
        accepted.push(a);
    }
    assert!(accepted.len() < CLIENTS, "seed {seed}");

    // Now the application accepts, one at a time: the clients still waiting get in on a later
    // retransmission of their SYN, within their connect timeout.
    p.drive_until(1_000_000, |p| {
        if let Ok(a) = p.b.accept(l) {
            accepted.push(a);
        }
        let (connected, _, all) = status(p);
        assert!(
            all.iter().all(|s| !matches!(s, ConnectStatus::Failed(_))),
            "seed {seed}: {all:?}"
        );
        connected == CLIENTS && accepted.len() == CLIENTS
    });
    no_rst_from_b(&log);
    // Each accepted connection is one of the clients, and carries data.
    let by_port: HashMap<SocketAddr, SocketId> = clients
        .iter()
        .map(|&c| (p.a.local_addr(c).unwrap(), c))
        .collect();
    for (n, &(_, peer)) in accepted.iter().enumerate() {
        let c = by_port[&peer];
        p.a.send(c, &[n as u8]).unwrap();
    }
    let mut got = [None; CLIENTS];
    p.drive_until(10_000, |p| {
        for (n, &(s, _)) in accepted.iter().enumerate() {
            let mut b = [0u8; 4];
            if let Ok(1) = p.b.recv(s, &mut b) {
                got[n] = Some(b[0]);
            }
        }
        got.iter().all(|g| g.is_some())
    });
    for (n, g) in got.iter().enumerate() {
        assert_eq!(*g, Some(n as u8), "seed {seed}");
    }
    let peers: HashSet<SocketAddr> = accepted.iter().map(|&(_, a)| a).collect();
    assert_eq!(peers.len(), CLIENTS, "ten distinct clients (seed {seed})");
}

/// Linux's accept queue is full when it holds more than the backlog (`sk_acceptq_is_full`:
/// `sk_ack_backlog > sk_max_ack_backlog`), and a handshake that completes on a full queue is
/// dropped (`ListenOverflows` in `tcp_v4_syn_recv_sock`): the queue never holds more than
/// backlog + 1 connections, however the SYNs and their retransmissions arrive.
#[test]
fn the_accept_queue_never_holds_more_than_backlog_plus_one() {
    let mut held = Vec::new();
    let mut seed = 0;
    for backlog in [1usize, 2, 4] {
        let mut p = pair(4);
        seed = p.seed;
        let l = listener(&mut p, SERVER, backlog);
        for _ in 0..4 * backlog + 4 {
            let c = p.a.socket(Family::V4, SocketType::Stream);
            p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
                .unwrap();
        }
        // Nobody accepts for 20 s: several waves of retransmitted SYNs.
        p.run_for(Duration::from_secs(20));
        let mut queued = 0;
        while p.b.accept(l).is_ok() {
            queued += 1;
        }
        assert!(queued >= backlog, "seed {seed}");
        held.push((backlog, queued));
    }
    let over: Vec<(usize, usize)> = held.iter().copied().filter(|&(b, q)| q > b + 1).collect();
    assert!(
        over.is_empty(),
        "(backlog, connections queued) past backlog + 1: {over:?}, all: {held:?} (seed {seed})"
    );
}

// ----- 5. Thousands of connections -----

#[test]
fn thousands_of_connections_open_close_and_leave_only_time_wait_entries() {
    const N: usize = 3000;
    let small = || {
        let mut c = StackConfig::default();
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
        c
    };
    let mut p = pair_with(small(), small(), 5);
    let seed = p.seed;
    let started = std::time::Instant::now();
    let l = listener(&mut p, SERVER, 4096);
    let clients: Vec<SocketId> = (0..N)
        .map(|_| {
            let c = p.a.socket(Family::V4, SocketType::Stream);
            p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
                .unwrap();
            c
        })
        .collect();
    let mut servers: Vec<SocketId> = Vec::with_capacity(N);
    p.drive_until(1_000_000, |p| {
        while let Ok((s, _)) = p.b.accept(l) {
            servers.push(s);
        }
        servers.len() == N
    });
    assert!(
        clients
            .iter()
            .all(|&c| p.a.connect_status(c) == Some(ConnectStatus::Connected)),
        "seed {seed}"
    );
    assert_eq!(p.a.connection_counts(), (N, 0), "seed {seed}");
    assert_eq!(p.b.connection_counts(), (N, 0), "seed {seed}");
    assert_eq!(p.a.buffers_committed(), N * 8192, "seed {seed}");
    assert_eq!(p.b.tcp_counters().ListenDrops, 0, "seed {seed}");
    let connect_time = started.elapsed();

    // A closes every connection first; B closes each as it reads the end. B finds out which
    // sockets to look at from its readiness events.
    for &c in &clients {
        p.a.close(c, p.now());
    }
    let mut open: HashSet<SocketId> = servers.iter().copied().collect();
    let mut events = Vec::new();
    let mut buf = [0u8; 64];
    let mut steps = 0usize;
    while !open.is_empty() {
        steps += 1;
        assert!(steps < 1_000_000, "no progress (seed {seed})");
        let idle = !p.step();
        events.clear();
        p.b.take_events(&mut events);
        let look: Vec<SocketId> = if idle {
            open.iter().copied().collect()
        } else {
            events
                .iter()
                .copied()
                .filter(|s| open.contains(s))
                .collect()
        };
        for s in look {
            if let Ok(0) = p.b.recv(s, &mut buf) {
                p.b.close(s, p.now());
                open.remove(&s);
            }
        }
    }
    p.drive_until(1_000_000, |p| {
        p.a.connection_counts() == (0, N) && p.b.connection_counts() == (0, 0)
    });
    assert_eq!(
        p.a.buffers_committed(),
        0,
        "TIME-WAIT holds no buffers (seed {seed})"
    );
    assert_eq!(p.b.buffers_committed(), 0, "seed {seed}");
    assert_eq!(p.a.tcp_counters().TCPTimeWaitOverflow, 0, "seed {seed}");

    p.run_for(Duration::from_secs(61));
    assert_eq!(p.a.connection_counts(), (0, 0), "seed {seed}");
    assert_eq!(p.a.tcp_counters().TW, N as u64, "seed {seed}");
    assert_eq!(p.a.buffers_committed(), 0, "seed {seed}");
    assert_eq!(p.a.poll_timeout(), None, "nothing left to do (seed {seed})");
    eprintln!(
        "{N} connections: open {:?}, all done in {:?}",
        connect_time,
        started.elapsed()
    );
}

// ----- 6. Half-open handshakes: a global bound and a timeout -----

/// Forge `n` SYNs to B's listener from A's address, source ports from `first_port`.
fn syn_flood(p: &mut Pair, first_port: u16, n: u16) {
    for i in 0..n {
        let syn = forge_tcp(
            addr(&format!("192.0.2.2:{}", first_port + i)),
            addr(SERVER),
            1_000_000u32.wrapping_mul(u32::from(i) + 1),
            0,
            SYN,
            &[2, 4, 5, 180],
            b"",
        )
        .unwrap();
        p.inject_to_b(syn);
    }
}

#[test]
fn half_open_handshakes_are_bounded_and_time_out() {
    let mut b = StackConfig::default();
    b.max_half_open = 100;
    // Without SYN cookies, the SYNs past the bound are dropped (with them, see below).
    b.syn_cookies = false;
    let mut p = pair_with(StackConfig::default(), b, 6);
    let seed = p.seed;
    assert_eq!(p.b.config().handshake_timeout, Duration::from_secs(63));
    let l = listener(&mut p, SERVER, 4096);
    // A never answers (its stack would reset the made-up connections).
    p.filter_to_a(|_| false);
    syn_flood(&mut p, 20000, 1000);
    p.run_for(Duration::from_millis(100));
    assert_eq!(
        p.b.connection_counts(),
        (100, 0),
        "max_half_open admits exactly 100 (seed {seed})"
    );
    let t = p.b.tcp_counters();
    assert_eq!(t.TCPReqQFullDrop, 900, "seed {seed}: {t:?}");
    assert_eq!(t.ListenDrops, 900, "seed {seed}: {t:?}");
    assert_eq!(t.ListenOverflows, 0, "seed {seed}: {t:?}");
    let per_conn = p.b.config().tcp_rx_buffer + p.b.config().tcp_tx_buffer;
    assert_eq!(p.b.buffers_committed(), 100 * per_conn, "seed {seed}");

    p.run_for(Duration::from_secs(62));
    assert_eq!(
        p.b.connection_counts().0,
        100,
        "62 s in, the handshakes are still under way (seed {seed})"
    );
    p.run_for(Duration::from_secs(2));
    assert_eq!(
        p.b.connection_counts(),
        (0, 0),
        "gone after handshake_timeout (seed {seed})"
    );
    assert_eq!(p.b.buffers_committed(), 0, "seed {seed}");

    // The count went back to zero: a second flood is admitted to the same bound.
    syn_flood(&mut p, 30000, 150);
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.b.connection_counts(), (100, 0), "seed {seed}");
    assert_eq!(p.b.tcp_counters().TCPReqQFullDrop, 950, "seed {seed}");
    p.run_for(Duration::from_secs(64));
    assert_eq!(p.b.connection_counts(), (0, 0), "seed {seed}");

    // A real client gets in.
    p.filter_to_a(|_| true);
    let (c, s) = connected(&mut p, l, SERVER);
    p.a.send(c, b"hi").unwrap();
    let mut buf = [0u8; 4];
    p.drive_until(1000, |p| p.b.recv(s, &mut buf) == Ok(2));
}

// ----- 7. Readiness events name the sockets that changed -----

#[test]
fn take_events_names_the_socket_a_packet_made_readable_and_no_other() {
    let mut p = pair(7);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    let (c1, s1) = connected(&mut p, l, SERVER);
    let (_c2, s2) = connected(&mut p, l, SERVER);
    // Quiet: nothing due on either side; forget what happened so far.
    p.drive_until(100_000, |p| {
        let now = p.now();
        p.a.poll_delay(now).is_none() && p.b.poll_delay(now).is_none()
    });
    let mut events = Vec::new();
    p.b.take_events(&mut events);
    events.clear();
    p.b.take_events(&mut events);
    assert!(events.is_empty(), "drained (seed {seed})");
    assert!(!p.b.readiness(s1).readable);

    p.a.send(c1, b"ping").unwrap();
    let mut seen = HashSet::new();
    p.drive_until(1000, |p| {
        events.clear();
        p.b.take_events(&mut events);
        seen.extend(events.iter().copied());
        p.b.readiness(s1).readable
    });
    assert!(
        seen.contains(&s1),
        "the socket that became readable is named (seed {seed}): {seen:?}"
    );
    assert!(
        !seen.contains(&s2),
        "a socket nothing happened to is not (seed {seed}): {seen:?}"
    );
    assert!(!p.b.readiness(s2).readable);
    let mut buf = [0u8; 8];
    assert_eq!(p.b.recv(s1, &mut buf), Ok(4));
    // Each socket once per call, however many packets touched it.
    events.clear();
    p.b.take_events(&mut events);
    let unique: HashSet<SocketId> = events.iter().copied().collect();
    assert_eq!(unique.len(), events.len(), "seed {seed}: {events:?}");
}

// ----- 8. A corrupt SYN creates no state -----

#[test]
fn a_syn_with_a_bad_checksum_creates_no_state_and_is_counted() {
    let mut p = pair(8);
    let seed = p.seed;
    listener(&mut p, SERVER, 16);
    listener(&mut p, "[2001:db8::1]:7", 16);
    let log = log_wire(&mut p, |_| false, |_| true);
    assert_eq!(p.b.connection_counts(), (0, 0));
    let mut expected = 0;
    for (from, to) in [
        ("192.0.2.2:40000", SERVER),
        ("[2001:db8::2]:40000", "[2001:db8::1]:7"),
    ] {
        let ip_len = if addr(from).is_ipv4() { 20 } else { 40 };
        // The intact SYN of the previous family left one handshake under way.
        let (conns, committed) = (p.b.connection_counts(), p.b.buffers_committed());
        let syn = forge_tcp(addr(from), addr(to), 4242, 0, SYN, &[2, 4, 5, 180], b"x").unwrap();
        // The checksum itself damaged, or a payload byte.
        let mut bad_sum = syn.clone();
        bad_sum[ip_len + 16] ^= 0x5a;
        let mut bad_byte = syn.clone();
        *bad_byte.last_mut().unwrap() ^= 0x01;
        for bad in [bad_sum, bad_byte] {
            p.inject_to_b(bad);
            p.run_for(Duration::from_millis(20));
            expected += 1;
            assert_eq!(
                p.b.connection_counts(),
                conns,
                "{from}: no state (seed {seed})"
            );
            assert_eq!(p.b.buffers_committed(), committed, "seed {seed}");
            assert_eq!(p.b.tcp_counters().InCsumErrors, expected, "seed {seed}");
            assert_eq!(p.b.tcp_counters().ListenDrops, 0, "seed {seed}");
            assert!(
                taken(&log).is_empty(),
                "{from}: a corrupt SYN is not answered (seed {seed})"
            );
        }
        // The same SYN intact is admitted and answered.
        let before = p.b.connection_counts().0;
        p.inject_to_b(syn);
        p.run_for(Duration::from_millis(20));
        assert_eq!(p.b.connection_counts().0, before + 1, "seed {seed}");
        let wire = taken(&log);
        assert!(
            wire.iter()
                .any(|(_, t)| t.flags == SYN | ACK && t.ack == 4243),
            "{from}: seed {seed}: {wire:?}"
        );
        assert_eq!(p.b.tcp_counters().InCsumErrors, expected, "seed {seed}");
    }
}

// ----- more: ports shared by distinct tuples, TIME-WAIT overflow -----

#[test]
fn ephemeral_ports_are_shared_by_distinct_tuples_and_avoid_time_wait() {
    let mut a = StackConfig::default();
    a.ephemeral_ports = 40000..=40003;
    let mut p = pair_with(a, StackConfig::default(), 9);
    let seed = p.seed;
    let l7 = listener(&mut p, "192.0.2.1:7", 16);
    let l8 = listener(&mut p, "192.0.2.1:8", 16);
    let mut to7 = Vec::new();
    let mut to8 = Vec::new();
    for _ in 0..4 {
        to7.push(connected(&mut p, l7, "192.0.2.1:7"));
        to8.push(connected(&mut p, l8, "192.0.2.1:8"));
    }
    let ports = |v: &[(SocketId, SocketId)], p: &Pair| -> HashSet<u16> {
        v.iter()
            .map(|&(c, _)| p.a.local_addr(c).unwrap().port())
            .collect()
    };
    assert_eq!(ports(&to7, &p), (40000..=40003).collect(), "seed {seed}");
    assert_eq!(
        ports(&to8, &p),
        (40000..=40003).collect(),
        "the same 4 ports serve a second remote (seed {seed})"
    );
    // A fifth to the same remote: every tuple is taken.
    let c = p.a.socket(Family::V4, SocketType::Stream);
    assert_eq!(
        p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now()),
        Err(ConnectError::Bind(BindError::NoPortsLeft)),
        "seed {seed}"
    );
    // The connections to :7 close (A first): their tuples are in TIME-WAIT and still taken.
    for &(c, s) in &to7 {
        p.a.close(c, p.now());
        b_reads_eof(&mut p, s);
        p.b.close(s, p.now());
    }
    p.drive_until(10_000, |p| p.a.connection_counts() == (4, 4));
    assert_eq!(
        p.a.connect(c, addr("192.0.2.1:7"), ConnectOptions::default(), p.now()),
        Err(ConnectError::Bind(BindError::NoPortsLeft)),
        "tuples in TIME-WAIT are not reused (seed {seed})"
    );
    // A third remote has all four ports.
    listener(&mut p, "192.0.2.1:9", 16);
    p.a.connect(c, addr("192.0.2.1:9"), ConnectOptions::default(), p.now())
        .unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    // After the wait, :7 can be reached again.
    p.run_for(Duration::from_secs(61));
    assert_eq!(p.a.connection_counts(), (5, 0), "seed {seed}");
    let d = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(d, addr("192.0.2.1:7"), ConnectOptions::default(), p.now())
        .unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(d) == Some(ConnectStatus::Connected)
    });
}

#[test]
fn past_max_time_wait_a_connection_closes_without_the_wait() {
    let mut a = StackConfig::default();
    a.max_time_wait = 2;
    let mut p = pair_with(a, StackConfig::default(), 10);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    let conns: Vec<(SocketId, SocketId)> = (0..3).map(|_| connected(&mut p, l, SERVER)).collect();
    for &(c, s) in &conns {
        p.a.close(c, p.now());
        b_reads_eof(&mut p, s);
        p.b.close(s, p.now());
    }
    p.drive_until(10_000, |p| {
        p.a.connection_counts().0 == 0 && p.b.connection_counts() == (0, 0)
    });
    assert_eq!(p.a.connection_counts(), (0, 2), "seed {seed}");
    assert_eq!(p.a.tcp_counters().TCPTimeWaitOverflow, 1, "seed {seed}");
    assert_eq!(p.a.buffers_committed(), 0, "seed {seed}");
}

// ----- the passive closer and a reset -----

#[test]
fn the_passive_closer_keeps_no_time_wait_and_data_before_close_arrives() {
    let mut p = pair(11);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, 16);
    let (c, s) = connected(&mut p, l, SERVER);
    p.a.send(c, b"last words").unwrap();
    p.a.close(c, p.now());
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    p.drive_until(10_000, |p| match p.b.recv(s, &mut buf) {
        Ok(0) => true,
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            false
        }
        Err(RecvError::WouldBlock) => false,
        Err(e) => panic!("{e} (seed {seed})"),
    });
    assert_eq!(got, b"last words");
    p.b.close(s, p.now());
    p.drive_until(10_000, |p| {
        p.a.connection_counts() == (0, 1) && p.b.connection_counts() == (0, 0)
    });
}

// ----- SYN cookies -----

/// With SYN cookies (the default, as Linux's `tcp_syncookies=1`), a burst of clients past a
/// small backlog is answered at once: the SYNs past the bound get a cookie SYN-ACK, and each
/// connection is made when its client's segment brings the cookie back and the accept queue has
/// room. No client waits for a SYN retransmission; no SYN is refused.
#[test]
fn syn_cookies_answer_a_burst_past_a_small_backlog_at_once() {
    const BACKLOG: usize = 2;
    const CLIENTS: usize = 10;
    let mut p = pair(31);
    let seed = p.seed;
    let l = listener(&mut p, SERVER, BACKLOG);
    let log = log_wire(&mut p, |_| true, |_| true);
    let clients: Vec<SocketId> = (0..CLIENTS)
        .map(|_| {
            let c = p.a.socket(Family::V4, SocketType::Stream);
            p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
                .unwrap();
            c
        })
        .collect();
    p.run_for(Duration::from_millis(100));
    for &c in &clients {
        assert_eq!(
            p.a.connect_status(c),
            Some(ConnectStatus::Connected),
            "every client is answered within one round trip (seed {seed})"
        );
    }
    let t = p.b.tcp_counters();
    assert_eq!(t.SyncookiesSent, (CLIENTS - BACKLOG) as u64, "{t:?}");
    assert_eq!(t.TCPReqQFullDrop, 0, "{t:?}");
    assert!(
        taken(&log)
            .iter()
            .all(|(to_b, t)| *to_b || t.flags & RST == 0),
        "B never resets (seed {seed})"
    );
    // Each client says who it is; the server accepts as its queue lets it, and every byte
    // arrives (a client whose cookie ACK found the queue full brings the cookie again with its
    // data).
    for (n, &c) in clients.iter().enumerate() {
        p.a.send(c, &[n as u8]).unwrap();
    }
    let mut got = HashSet::new();
    let mut open = Vec::new();
    p.drive_until(1_000_000, |p| {
        while let Ok((s, _)) = p.b.accept(l) {
            open.push(s);
        }
        for &s in &open {
            let mut b = [0u8; 4];
            if let Ok(1) = p.b.recv(s, &mut b) {
                got.insert(b[0]);
            }
        }
        got.len() == CLIENTS
    });
    let t = p.b.tcp_counters();
    assert!(t.SyncookiesRecv >= (CLIENTS - BACKLOG) as u64, "{t:?}");
    assert!(
        p.now().total_millis() < 5_000,
        "no SYN retransmission waves (seed {seed})"
    );
}

/// A connection made from a cookie works both ways: its sequence numbers are shifted to the
/// cookie's and back on every segment, and it has no window scaling (as Linux's cookies without
/// timestamps); a bulk transfer either way arrives intact.
#[test]
fn a_connection_made_from_a_cookie_carries_bulk_data_both_ways() {
    let mut b = StackConfig::default();
    // A listener with room for no handshake at all: every SYN gets a cookie.
    b.max_half_open = 0;
    let mut p = pair_with(StackConfig::default(), b, 32);
    let l = listener(&mut p, SERVER, 16);
    let (c, s) = connected(&mut p, l, SERVER);
    assert_eq!(p.b.tcp_counters().SyncookiesRecv, 1);
    let up: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let down: Vec<u8> = up.iter().rev().map(|b| b ^ 0x5a).collect();
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 65536];
    p.drive_until(1_000_000, |p| {
        if sent_up < up.len() {
            sent_up += p.a.send(c, &up[sent_up..]).unwrap_or(0);
        }
        if sent_down < down.len() {
            sent_down += p.b.send(s, &down[sent_down..]).unwrap_or(0);
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got_up.extend_from_slice(&buf[..n]);
        }
        while let Ok(n) = p.a.recv(c, &mut buf) {
            if n == 0 {
                break;
            }
            got_down.extend_from_slice(&buf[..n]);
        }
        got_up.len() == up.len() && got_down.len() == down.len()
    });
    assert!(got_up == up && got_down == down, "seed {}", p.seed);
    // And it ends as any other: A closes first, B follows; A keeps the TIME-WAIT entry.
    p.a.close(c, p.now());
    b_reads_eof(&mut p, s);
    p.b.close(s, p.now());
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.a.connection_counts(), (0, 1));
    assert_eq!(p.b.connection_counts(), (0, 0));
}

/// An ACK to a listener's port that brings no cookie of ours (a guess, or a stale segment) is
/// answered as any stray segment (a RST) and creates nothing. Cookies are looked for only while
/// one sent could still come back, as Linux does.
#[test]
fn an_ack_without_a_good_cookie_creates_nothing() {
    let mut b = StackConfig::default();
    // Every SYN gets a cookie.
    b.max_half_open = 0;
    let mut p = pair_with(StackConfig::default(), b, 33);
    let _l = listener(&mut p, SERVER, 16);
    let log = log_wire(&mut p, |_| true, |_| true);
    let guesses = |p: &mut Pair| {
        for guess in 0..50u32 {
            let ack = forge_tcp(
                addr("192.0.2.2:45000"),
                addr(SERVER),
                1000,
                guess.wrapping_mul(2_654_435_761),
                ACK,
                &[],
                b"",
            )
            .unwrap();
            p.inject_to_b(ack);
        }
        p.run_for(Duration::from_millis(10));
    };
    // No cookie out: stray segments, not even checked.
    guesses(&mut p);
    let t = p.b.tcp_counters();
    assert_eq!((t.SyncookiesFailed, t.SyncookiesRecv), (0, 0), "{t:?}");
    // A cookie went out (to another client): now the guesses are checked, and fail.
    let syn = forge_tcp(addr("192.0.2.2:45001"), addr(SERVER), 77, 0, SYN, &[], b"").unwrap();
    p.inject_to_b(syn);
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.b.tcp_counters().SyncookiesSent, 1);
    guesses(&mut p);
    assert_eq!(p.b.connection_counts(), (0, 0));
    let t = p.b.tcp_counters();
    assert_eq!((t.SyncookiesFailed, t.SyncookiesRecv), (50, 0), "{t:?}");
    let resets = taken(&log)
        .iter()
        .filter(|(to_b, t)| !*to_b && t.flags & RST != 0)
        .count();
    assert_eq!(resets, 100, "each is answered as a stray segment");
}
