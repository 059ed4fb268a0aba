//! TCP Fast Open between two stacks on the simulated link (virtual clock, no root).

use std::net::SocketAddr;
use std::time::Duration;

use stack::sim::{LinkConfig, Pair};
use stack::{
    ConnectOptions, ConnectStatus, CookieKey, Fallback, Family, FastOpenMode, FastOpenServerConfig,
    RecvError, SocketId, SocketType,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SERVER: &str = "192.0.2.1:7";

fn pair(latency_ms: u64) -> Pair {
    let link = LinkConfig {
        latency: Duration::from_millis(latency_ms),
        loss: 0.0,
        mtu: 1500,
        seed: 11,
        ..LinkConfig::default()
    };
    Pair::new(
        link,
        &["192.0.2.2/24", "2001:db8::2/64"],
        &["192.0.2.1/24", "2001:db8::1/64"],
    )
}

fn key() -> CookieKey {
    "a0bf63f7-ed803d81-cd641d30-cebc4a90".parse().unwrap()
}

/// A Fast Open listener on B.
fn listen(p: &mut Pair, config: FastOpenServerConfig) -> SocketId {
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr(SERVER)).unwrap();
    p.b.listen(l, 16).unwrap();
    p.b.set_fast_open(l, Some(config)).unwrap();
    l
}

/// Connect from A with `mode`, queue `data` before the handshake; the server echoes the first
/// read back at once. Returns (client socket, accepted socket, ms until the client read the
/// echo).
fn exchange(
    p: &mut Pair,
    l: SocketId,
    mode: FastOpenMode,
    data: &[u8],
) -> (SocketId, SocketId, u64) {
    let start = p.now();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: mode,
        ..ConnectOptions::default()
    };
    let to = SocketAddr::new(addr(SERVER).ip(), p.b.local_addr(l).unwrap().port());
    p.a.connect(c, to, opts, p.now()).unwrap();
    assert_eq!(p.a.queue_early(c, data).unwrap(), data.len());
    let mut s = None;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    p.drive_until(100_000, |p| {
        if s.is_none() {
            if let Ok((id, _)) = p.b.accept(l) {
                s = Some(id);
            }
        }
        if let Some(s) = s {
            match p.b.recv(s, &mut buf) {
                Ok(n) if n > 0 => {
                    assert_eq!(p.b.send(s, &buf[..n]).unwrap(), n);
                }
                _ => {}
            }
        }
        match p.a.recv(c, &mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(RecvError::WouldBlock) => {}
            Err(e) => panic!("client recv: {e}"),
        }
        got.len() >= data.len()
    });
    assert_eq!(got, data, "echo intact (seed {})", p.seed);
    let ms = (p.now() - start).total_millis();
    (c, s.unwrap(), ms)
}

#[test]
fn first_connection_requests_cookie_second_sends_data_in_syn() {
    let mut p = pair(20);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    let (c1, s1, plain_ms) = exchange(&mut p, l, FastOpenMode::Cookie, b"hello");
    let info = p.a.fast_open_info(c1).unwrap();
    assert!(info.cookie_requested, "C-01: {info:?}");
    assert_eq!(info.cookie_received, Some(8), "S-01: an 8-byte cookie");
    assert_eq!(info.syn_data_sent, 0);
    assert_eq!(info.fallback, Some(Fallback::NoCookie));
    assert!(p.b.server_fast_open_info(s1).unwrap().cookie_requested);
    let cached = p.a.cookie_cache();
    assert_eq!(cached.len(), 1, "C-02: cached per address pair");
    let expect = key().cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
    assert_eq!(
        cached[0].cookie, expect,
        "the Linux-compatible cookie of the key"
    );

    let (c2, s2, tfo_ms) = exchange(&mut p, l, FastOpenMode::Cookie, b"hello");
    let info = p.a.fast_open_info(c2).unwrap();
    assert_eq!(
        (info.syn_data_sent, info.syn_data_acked, info.fallback),
        (5, 5, None),
        "C-03/C-04: {info:?}"
    );
    let sinfo = p.b.server_fast_open_info(s2).unwrap();
    assert_eq!(sinfo.cookie_valid, Some(true));
    assert_eq!(sinfo.syn_data, 5);
    assert_eq!(p.a.fast_open_counters().TCPFastOpenActive, 1);
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassive, 1);
    assert_eq!(p.b.fast_open_counters().TCPFastOpenCookieReqd, 1);
    // One round trip (40 ms) against two.
    assert!(
        tfo_ms < 60 && plain_ms >= 80,
        "time to first byte: Fast Open {tfo_ms} ms, plain {plain_ms} ms"
    );
    assert_eq!(p.a.connect_status(c2), Some(ConnectStatus::Connected));
}

#[test]
fn without_idempotent_flag_no_option_and_no_syn_data() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    exchange(&mut p, l, FastOpenMode::Cookie, b"x");
    // C-10: a cookie is cached, but a caller that did not opt in never sends SYN data.
    let (c, s, _) = exchange(&mut p, l, FastOpenMode::Off, b"replayable");
    assert!(p.a.fast_open_info(c).is_none());
    assert!(p.b.server_fast_open_info(s).is_none());
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassive, 0);
}

#[test]
fn invalid_cookie_drops_data_and_gets_fresh_cookie() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    exchange(&mut p, l, FastOpenMode::Cookie, b"x");
    // The server's key changes: the cached cookie is now invalid.
    let other: CookieKey = "11111111-22222222-33333333-44444444".parse().unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(other)))
        .unwrap();
    let (c, s, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"resend me");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (info.syn_data_sent, info.syn_data_acked),
        (9, 0),
        "{info:?}"
    );
    assert_eq!(info.fallback, Some(Fallback::DataNotAcked));
    assert_eq!(
        p.b.server_fast_open_info(s).unwrap().cookie_valid,
        Some(false)
    );
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassiveFail, 1);
    // S-03: the fresh cookie replaced the old one.
    let fresh = other.cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
    assert_eq!(p.a.cookie_cache()[0].cookie, fresh);
    let (c, _, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"now in the SYN");
    assert_eq!(p.a.fast_open_info(c).unwrap().syn_data_acked, 14);
}

#[test]
fn backup_key_still_validates_and_primary_cookie_is_reissued() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    exchange(&mut p, l, FastOpenMode::Cookie, b"x");
    let new: CookieKey = "55555555-66666666-77777777-88888888".parse().unwrap();
    let mut rotated = FastOpenServerConfig::new(new);
    rotated.backup = Some(key());
    p.b.set_fast_open(l, Some(rotated)).unwrap();
    let (c, s, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"rotated");
    assert_eq!(
        p.a.fast_open_info(c).unwrap().syn_data_acked,
        7,
        "S-07: accepted under the backup key"
    );
    assert_eq!(
        p.b.server_fast_open_info(s).unwrap().key,
        Some(stack::KeyUsed::Backup)
    );
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassiveAltKey, 1);
    let fresh = new.cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
    assert_eq!(
        p.a.cookie_cache()[0].cookie,
        fresh,
        "and a primary cookie came back"
    );
}

#[test]
fn middlebox_dropping_syn_data_falls_back_and_backs_off() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    exchange(&mut p, l, FastOpenMode::Cookie, b"x");
    // A middlebox towards B drops every SYN that carries data.
    p.filter_to_b(|pkt: &mut Vec<u8>| {
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        let doff = usize::from(pkt[ihl + 12] >> 4) * 4;
        let syn = pkt[ihl + 13] & 0x02 != 0;
        !(syn && total > ihl + doff)
    });
    let (c, _, ms) = exchange(&mut p, l, FastOpenMode::Cookie, b"dropped at first");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        info.fallback,
        Some(Fallback::SynRetransmitted),
        "C-07: {info:?}"
    );
    assert!(ms >= 1000, "it took a SYN retransmission ({ms} ms)");
    assert_eq!(p.a.fast_open_counters().TCPFastOpenBlackhole, 1);
    // C-08: the next connection does not offer SYN data, and so does not wait.
    let (c, _, ms) = exchange(&mut p, l, FastOpenMode::Cookie, b"plain now");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (info.fallback, info.syn_data_sent),
        (Some(Fallback::Blackhole), 0),
        "{info:?}"
    );
    assert!(ms < 100, "{ms} ms");
    assert!(p
        .a
        .fast_open_backoff("192.0.2.1".parse().unwrap())
        .is_some());
}

use std::sync::{Arc, Mutex};

use stack::sim::{forge_tcp, set_tcp_ack, tcp_option, tcp_options, tcp_view, truncate_tcp_payload};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Cache a cookie on A by one exchange.
fn with_cookie(p: &mut Pair, config: FastOpenServerConfig) -> SocketId {
    let l = listen(p, config);
    exchange(p, l, FastOpenMode::Cookie, b"x");
    l
}

/// The client's ISN of the next SYN towards B (recorded by a filter), and a handle to rewrite
/// the next SYN-ACK towards A.
fn rewrite_first_synack(p: &mut Pair, extra: u32) -> Arc<Mutex<Vec<u8>>> {
    let isn = Arc::new(Mutex::new(None::<u32>));
    let seen = Arc::clone(&isn);
    let flags = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&flags);
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            log.lock().unwrap().push(t.flags);
            if t.flags & (SYN | ACK) == SYN {
                seen.lock().unwrap().get_or_insert(t.seq);
            }
        }
        true
    });
    let mut done = false;
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        if let (Some(t), Some(isn)) = (tcp_view(pkt), *isn.lock().unwrap()) {
            if !done && t.flags & (SYN | ACK) == SYN | ACK {
                done = true;
                assert!(set_tcp_ack(pkt, isn.wrapping_add(1).wrapping_add(extra)));
            }
        }
        true
    });
    flags
}

#[test]
fn partial_ack_sends_the_rest_at_once_exactly_once() {
    let mut p = pair(5);
    let l = with_cookie(&mut p, FastOpenServerConfig::new(key()));
    // Only 4 of the 10 SYN bytes reach the server (which then acknowledges those 4).
    p.filter_to_b(|pkt: &mut Vec<u8>| {
        if tcp_view(pkt).is_some_and(|t| t.flags & (SYN | ACK) == SYN && t.payload_len > 0) {
            assert!(truncate_tcp_payload(pkt, 4));
        }
        true
    });
    let (c, s, ms) = exchange(&mut p, l, FastOpenMode::Cookie, b"0123456789");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (info.syn_data_sent, info.syn_data_acked),
        (10, 4),
        "{info:?}"
    );
    assert_eq!(info.fallback, Some(Fallback::PartiallyAcked));
    assert_eq!(p.b.server_fast_open_info(s).unwrap().syn_data, 4);
    // C-05: the rest went with the handshake, not after a retransmission timeout (1 s); the
    // echo (checked by `exchange`) shows every byte once.
    assert!(ms < 100, "{ms} ms");
}

#[test]
fn over_ack_is_answered_with_rst_and_caches_nothing() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    let to_b = rewrite_first_synack(&mut p, 100);
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
    p.a.queue_early(c, b"data").unwrap();
    p.drive_until(10_000, |p| {
        p.a.fast_open_info(c)
            .is_some_and(|i| i.fallback == Some(Fallback::OverAck))
    });
    assert!(
        p.a.cookie_cache().iter().all(|e| e.cookie.is_none()),
        "C-06: nothing cached from it"
    );
    p.drive_until(100_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    assert!(
        to_b.lock().unwrap().iter().any(|f| f & 0x04 != 0),
        "C-06: answered with RST"
    );
    // The connection still completes (after a plain SYN) and the data arrives once.
    let mut s = None;
    p.drive_until(100_000, |p| {
        s = s.or(p.b.accept(l).ok().map(|(s, _)| s));
        s.is_some_and(|s| p.b.readiness(s).readable)
    });
    let mut buf = [0u8; 16];
    assert_eq!(p.b.recv(s.unwrap(), &mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"data");
}

#[test]
fn lost_synack_is_sent_again_and_data_is_not_doubled() {
    let mut p = pair(5);
    let l = with_cookie(&mut p, FastOpenServerConfig::new(key()));
    let mut dropped = false;
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        let synack = tcp_view(pkt).is_some_and(|t| t.flags & (SYN | ACK) == SYN | ACK);
        if synack && !dropped {
            dropped = true;
            return false;
        }
        true
    });
    let (c, s, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"exactly once");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(info.fallback, Some(Fallback::SynRetransmitted), "{info:?}");
    assert_eq!(
        info.syn_data_acked, 12,
        "the server had taken the data from the first SYN"
    );
    assert_eq!(p.b.server_fast_open_info(s).unwrap().syn_data, 12);
}

#[test]
fn pending_limit_turns_fast_open_syns_into_plain_ones() {
    let mut p = pair(5);
    let mut config = FastOpenServerConfig::new(key());
    config.max_pending = 1;
    let l = with_cookie(&mut p, config);
    // Connection 1 uses Fast Open, but its final ACK never reaches B: it stays pending.
    let c1 = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    p.a.connect(c1, addr(SERVER), opts, p.now()).unwrap();
    p.a.queue_early(c1, b"one").unwrap();
    let port1 = p.a.local_addr(c1).unwrap().port();
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        tcp_view(pkt).is_none_or(|t| t.src.port() != port1 || t.flags & SYN != 0)
    });
    p.drive_until(10_000, |p| {
        p.a.connect_status(c1) == Some(ConnectStatus::Connected)
    });
    assert_eq!(p.b.fast_open_counters().TCPFastOpenPassive, 1);
    // B accepts it (it is established for B, pending for Fast Open).
    p.drive_until(10_000, |p| p.b.accept(l).is_ok());
    // S-06: connection 2's SYN is over the limit and handled as a plain SYN.
    let (c2, _, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"two");
    assert_eq!(p.b.fast_open_counters().TCPFastOpenListenOverflow, 1);
    assert_eq!(p.a.fast_open_info(c2).unwrap().syn_data_acked, 0);
}

/// B's answer to a forged SYN from A's address: (ack - isn, option 34 in it).
fn answer_to(
    p: &mut Pair,
    options: &[u8],
    payload: &[u8],
    port: u16,
) -> Option<(u32, Option<Vec<u8>>)> {
    let isn = 1_000_000u32;
    let answer = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&answer);
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            if t.flags & (SYN | ACK) == SYN | ACK && t.dst.port() == port {
                let opts = tcp_options(pkt);
                let fo = tcp_option(&opts, 34).map(<[u8]>::to_vec);
                *seen.lock().unwrap() = Some((t.ack.wrapping_sub(isn), fo));
            }
        }
        true
    });
    let syn = forge_tcp(
        addr(&format!("192.0.2.2:{port}")),
        addr(SERVER),
        isn,
        0,
        SYN,
        options,
        payload,
    )
    .unwrap();
    p.inject_to_b(syn);
    p.run_for(Duration::from_millis(50));
    let a = answer.lock().unwrap().clone();
    a
}

#[test]
fn server_rules_for_odd_syns() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    let cookie = key()
        .cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
        .unwrap();
    let mut with_cookie = vec![34u8, 10];
    with_cookie.extend_from_slice(cookie.as_bytes());
    // S-01: a cookie request gets the cookie.
    let (acked, fo) = answer_to(&mut p, &[34, 2], b"", 40001).unwrap();
    assert_eq!((acked, fo.as_deref()), (1, Some(cookie.as_bytes())));
    // S-02: a valid cookie and data: the SYN-ACK acknowledges the data.
    let (acked, fo) = answer_to(&mut p, &with_cookie, b"12345", 40002).unwrap();
    assert_eq!((acked, fo), (6, None));
    // S-04: data without the option: only the ISN is acknowledged, no cookie offered.
    let (acked, fo) = answer_to(&mut p, &[], b"12345", 40003).unwrap();
    assert_eq!((acked, fo), (1, None));
    // S-03: an invalid cookie: only the ISN, and a valid cookie.
    let (acked, fo) =
        answer_to(&mut p, &[34, 10, 1, 2, 3, 4, 5, 6, 7, 8], b"12345", 40004).unwrap();
    assert_eq!((acked, fo.as_deref()), (1, Some(cookie.as_bytes())));
    // S-05: a listener without Fast Open ignores it all.
    p.b.set_fast_open(l, None).unwrap();
    let (acked, fo) = answer_to(&mut p, &with_cookie, b"12345", 40005).unwrap();
    assert_eq!((acked, fo), (1, None));
    let (_, fo) = answer_to(&mut p, &[34, 2], b"", 40006).unwrap();
    assert_eq!(fo, None);
    // S-09: cookie-less mode takes data without a cookie.
    let mut config = FastOpenServerConfig::new(key());
    config.cookieless = true;
    p.b.set_fast_open(l, Some(config)).unwrap();
    let (acked, _) = answer_to(&mut p, &[], b"12345", 40007).unwrap();
    assert_eq!(acked, 6);
}

#[test]
fn option_34_of_every_length_and_on_non_syns_never_breaks_the_server() {
    let mut p = pair(1);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    // Room for all 41 SYNs at once.
    p.b.listen(l, 64).unwrap();
    for len in 0u8..=40 {
        let mut opt = vec![34u8, len];
        opt.resize(usize::from(len).clamp(2, 40), 0xab);
        let syn = forge_tcp(
            addr(&format!("192.0.2.2:{}", 41000 + u16::from(len))),
            addr(SERVER),
            7,
            0,
            SYN,
            &opt,
            b"payload",
        )
        .unwrap();
        p.inject_to_b(syn);
        // The same option on an ACK and on data segments.
        let ack = forge_tcp(addr("192.0.2.2:42000"), addr(SERVER), 7, 9, ACK, &opt, b"x").unwrap();
        p.inject_to_b(ack);
    }
    p.run_for(Duration::from_millis(100));
    let c = p.b.fast_open_counters();
    // Only even lengths 4..=16 are cookies (all invalid here); length 2 is a request.
    assert_eq!(c.TCPFastOpenCookieReqd, 1);
    assert_eq!(c.TCPFastOpenPassiveFail, 7, "{c:?}");
    assert_eq!(c.TCPFastOpenPassive, 0);
    // The stack still serves: a real Fast Open exchange works.
    exchange(&mut p, l, FastOpenMode::Cookie, b"still fine");
    let (c, _, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"still fine");
    assert_eq!(p.a.fast_open_info(c).unwrap().syn_data_acked, 10);
}

#[test]
fn floods_of_cookie_requests_and_valid_cookie_syns_stay_bounded() {
    let mut p = pair(1);
    let mut config = FastOpenServerConfig::new(key());
    config.max_pending = 8;
    let l = listen(&mut p, config);
    // The backlog is the first bound: 64 handshakes at once; the SYNs past it are dropped
    // before Fast Open looks at them, as Linux does.
    p.b.listen(l, 64).unwrap();
    let cookie = key()
        .cookie("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
        .unwrap();
    let mut with_cookie = vec![34u8, 10];
    with_cookie.extend_from_slice(cookie.as_bytes());
    // A drops what B sends back to these made-up connections (it would RST them).
    p.filter_to_a(|_| false);
    for i in 0..2000u16 {
        let opts: &[u8] = if i % 2 == 0 { &[34, 2] } else { &with_cookie };
        let syn = forge_tcp(
            addr(&format!("192.0.2.2:{}", 20000 + i)),
            addr(SERVER),
            u32::from(i),
            0,
            SYN,
            opts,
            b"flood",
        )
        .unwrap();
        p.inject_to_b(syn);
    }
    p.run_for(Duration::from_millis(200));
    // 64 half open, plus the valid-cookie connections Fast Open established at once (they
    // wait in the accept queue instead); the SYNs past them got SYN cookies (no Fast Open), as
    // Linux answers them.
    let t = p.b.tcp_counters();
    assert_eq!(t.ListenDrops, 0, "{t:?}");
    assert!(t.SyncookiesSent > 0, "{t:?}");
    let admitted = 2000 - t.SyncookiesSent;
    let c = p.b.fast_open_counters();
    assert_eq!(c.TCPFastOpenPassive, 8, "the pending limit: {c:?}");
    assert_eq!(admitted, 64 + c.TCPFastOpenPassive, "{t:?}");
    assert_eq!(
        c.TCPFastOpenCookieReqd + c.TCPFastOpenPassive + c.TCPFastOpenListenOverflow,
        admitted,
        "{c:?}"
    );
    assert!(
        c.TCPFastOpenListenOverflow > 0,
        "the pending limit held: {c:?}"
    );
    // Once the pending ones time out (10 s), Fast Open works again for real clients.
    p.filter_to_a(|_| true);
    p.run_for(Duration::from_secs(11));
    let l = listen_again(&mut p);
    exchange(&mut p, l, FastOpenMode::Cookie, b"x");
    let (c, _, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"after the flood");
    assert_eq!(p.a.fast_open_info(c).unwrap().syn_data_acked, 15);
}

/// The listener on B's port (found by trying to bind it again would fail): make a new one on
/// another port with Fast Open.
fn listen_again(p: &mut Pair) -> SocketId {
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr("192.0.2.1:8")).unwrap();
    p.b.listen(l, 16).unwrap();
    let mut config = FastOpenServerConfig::new(key());
    config.max_pending = 8;
    p.b.set_fast_open(l, Some(config)).unwrap();
    l
}

/// Record the SYNs A sends towards B (their ISN and payload length).
fn record_syns(p: &mut Pair) -> Arc<Mutex<Vec<(u32, usize)>>> {
    let syns = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&syns);
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        if let Some(t) = tcp_view(pkt) {
            if t.flags & (SYN | ACK) == SYN {
                log.lock().unwrap().push((t.seq, t.payload_len));
            }
        }
        true
    });
    syns
}

#[test]
fn syn_data_stays_readable_after_rst_or_fin_before_accept() {
    let mut p = pair(5);
    let l = with_cookie(&mut p, FastOpenServerConfig::new(key()));
    let syns = record_syns(&mut p);
    // Reset: the client's RST arrives before the application accepts.
    let c = p.a.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
    p.a.queue_early(c, b"early").unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    let (isn, len) = syns.lock().unwrap()[0];
    assert_eq!(len, 5);
    let from = p.a.local_addr(c).unwrap();
    let rst = forge_tcp(from, addr(SERVER), isn.wrapping_add(6), 0, 0x04, &[], b"").unwrap();
    p.inject_to_b(rst);
    p.run_for(Duration::from_millis(20));
    let (s, _) = p.b.accept(l).expect("still acceptable");
    let mut buf = [0u8; 16];
    assert_eq!(p.b.recv(s, &mut buf), Ok(5), "S-08: the SYN data once");
    assert_eq!(&buf[..5], b"early");
    assert_eq!(
        p.b.recv(s, &mut buf),
        Err(RecvError::Connection(stack::ConnectionError::Reset)),
        "then the reset"
    );
    assert_eq!(p.b.recv(s, &mut buf), Ok(0));

    // FIN: the client half-closes right after its SYN data; the server reads the data, then EOF.
    let c = p.a.socket(Family::V4, SocketType::Stream);
    p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
    p.a.queue_early(c, b"and bye").unwrap();
    p.drive_until(10_000, |p| {
        p.a.connect_status(c) == Some(ConnectStatus::Connected)
    });
    p.a.shutdown(c, stack::Shutdown::Write).unwrap();
    p.run_for(Duration::from_millis(50));
    let (s, _) = p.b.accept(l).unwrap();
    assert_eq!(p.b.recv(s, &mut buf), Ok(7));
    assert_eq!(&buf[..7], b"and bye");
    assert_eq!(p.b.recv(s, &mut buf), Ok(0));
}

#[test]
fn data_and_fin_in_a_synack_are_accepted() {
    let mut p = pair(5);
    let syns = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&syns);
    // The server is forged: A's SYN goes nowhere, and a SYN-ACK with data and FIN comes back.
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
    let synack = forge_tcp(
        syn.dst,
        syn.src,
        5000,
        syn.seq.wrapping_add(1),
        SYN | ACK | 0x01 | 0x08,
        &[2, 4, 5, 180],
        b"hi",
    )
    .unwrap();
    p.inject_to_a(synack);
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.a.connect_status(c), Some(ConnectStatus::Connected));
    let mut buf = [0u8; 8];
    assert_eq!(p.a.recv(c, &mut buf), Ok(2), "C-09: the SYN-ACK's data");
    assert_eq!(&buf[..2], b"hi");
    assert_eq!(p.a.recv(c, &mut buf), Ok(0), "C-09: and its FIN");
    // The client acknowledged both.
    let last = *syns.lock().unwrap().last().unwrap();
    assert_eq!(last.ack, 5000 + 1 + 2 + 1, "{last:?}");
}

#[test]
fn syn_carries_at_most_cached_mss_minus_40_and_the_rest_follows() {
    let mut p = pair(5);
    let l = with_cookie(&mut p, FastOpenServerConfig::new(key()));
    let mss = p.a.cookie_cache()[0]
        .mss
        .expect("C-02: the MSS is cached with the cookie");
    let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let (c, s, _) = exchange(&mut p, l, FastOpenMode::Cookie, &data);
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(info.syn_data_sent, usize::from(mss) - 40, "C-03: {info:?}");
    assert_eq!(info.syn_data_acked, info.syn_data_sent);
    assert_eq!(
        p.b.server_fast_open_info(s).unwrap().syn_data,
        usize::from(mss) - 40
    );
}

#[test]
fn retransmitted_syn_is_plain_and_a_late_cookie_is_still_cached() {
    let mut p = pair(5);
    let l = listen(&mut p, FastOpenServerConfig::new(key()));
    let syns = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&syns);
    p.filter_to_b(move |pkt: &mut Vec<u8>| {
        if tcp_view(pkt).is_some_and(|t| t.flags & (SYN | ACK) == SYN) {
            log.lock().unwrap().push(tcp_options(pkt));
        }
        true
    });
    // The first SYN-ACK (with the cookie) is lost: the client retransmits its SYN.
    let mut dropped = false;
    p.filter_to_a(move |pkt: &mut Vec<u8>| {
        if !dropped && tcp_view(pkt).is_some_and(|t| t.flags & (SYN | ACK) == SYN | ACK) {
            dropped = true;
            return false;
        }
        true
    });
    let (c, _, _) = exchange(&mut p, l, FastOpenMode::Cookie, b"late");
    let syns = syns.lock().unwrap();
    assert_eq!(syns.len(), 2);
    assert!(
        tcp_option(&syns[0], 34).is_some(),
        "the first SYN asked for a cookie"
    );
    assert!(
        tcp_option(&syns[1], 34).is_none(),
        "C-07: the retransmission carries no option 34"
    );
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(info.cookie_received, Some(8), "{info:?}");
    assert!(
        p.a.cookie_cache()[0].cookie.is_some(),
        "C-07: the late cookie is cached"
    );
    p.a.flush_cookie_cache();
    assert!(p.a.cookie_cache().is_empty());
}

#[test]
fn authenticated_data_rides_without_cookie_to_a_cookieless_server() {
    let mut p = pair(20);
    let mut config = FastOpenServerConfig::new(key());
    config.cookieless = true;
    let l = listen(&mut p, config);
    let (c, s, ms) = exchange(&mut p, l, FastOpenMode::NoCookie, b"self-authenticating");
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (
            info.cookie_requested,
            info.syn_data_sent,
            info.syn_data_acked
        ),
        (false, 19, 19),
        "{info:?}"
    );
    assert_eq!(p.b.server_fast_open_info(s).unwrap().syn_data, 19);
    assert!(ms < 60, "one round trip: {ms} ms");
    assert!(p.a.cookie_cache().iter().all(|e| e.cookie.is_none()));
}

#[test]
fn fast_open_over_ipv6() {
    let mut p = pair(20);
    let l = p.b.socket(Family::V6, SocketType::Stream);
    p.b.bind(l, addr("[2001:db8::1]:7")).unwrap();
    p.b.listen(l, 4).unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(key())))
        .unwrap();
    for round in 0..2 {
        let c = p.a.socket(Family::V6, SocketType::Stream);
        let opts = ConnectOptions {
            fast_open: FastOpenMode::Cookie,
            ..ConnectOptions::default()
        };
        p.a.connect(c, addr("[2001:db8::1]:7"), opts, p.now())
            .unwrap();
        p.a.queue_early(c, b"six").unwrap();
        let mut got = None;
        p.drive_until(10_000, |p| {
            if let Ok((s, _)) = p.b.accept(l) {
                got = Some(s);
            }
            got.is_some_and(|s| p.b.readiness(s).readable)
        });
        let mut buf = [0u8; 8];
        assert_eq!(p.b.recv(got.unwrap(), &mut buf), Ok(3));
        p.drive_until(10_000, |p| {
            p.a.connect_status(c) == Some(ConnectStatus::Connected)
        });
        let info = p.a.fast_open_info(c).unwrap();
        if round == 1 {
            assert_eq!(info.syn_data_acked, 3, "{info:?}");
        }
    }
    let expect = key().cookie(
        "2001:db8::2".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    );
    assert_eq!(p.a.cookie_cache()[0].cookie, expect);
}
