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
    p.a.connect(c, addr(SERVER), opts).unwrap();
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
