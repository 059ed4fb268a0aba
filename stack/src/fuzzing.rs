//! Entry points for the fuzz targets in `fuzz/` (the `fuzz` feature; not part of the API): the
//! parts no public call reaches on their own (the packet parser and rewriter, the Fast Open
//! layer, the recovery layer, ICMP errors), and the invariants every packet the stack emits
//! must hold.
//!
//! Each function panics when an invariant breaks, which is what a fuzzer reports.

use std::net::IpAddr;

use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use crate::fastopen::{self, CookieKey, Mode, ServerConfig};
use crate::wire::{self, ACK, OPT_FAST_OPEN, SYN};

/// Parse `data` and, if it is a TCP segment, put it through every rewrite the layers use. A
/// rewritten segment must parse again, with what was asked of it, and a checksum that is valid
/// exactly when the original's was (a rewrite never launders a bad checksum, nor breaks a good
/// one).
pub fn wire(data: &[u8]) {
    let _ = wire::ip_prefix(data);
    if let Some(ip) = wire::ip(data) {
        let _ = wire::udp_ports(data, &ip);
    }
    let Some(t) = wire::parse(data) else {
        return;
    };
    let good = wire::tcp_checksum_ok(data, &t);
    let opts = t.options(data).to_vec();
    let _ = wire::options(&opts).count();
    let _ = wire::mss(&opts);
    let stripped = wire::without_option(&opts, OPT_FAST_OPEN);
    assert!(stripped.len() <= opts.len());
    // Sequence numbers moved in place: the checksum is updated, not recomputed.
    let mut moved = data[..t.total].to_vec();
    wire::set_seq_ack(&mut moved, &t, t.seq ^ 0x5a5a, t.ack.wrapping_add(77), 1000);
    let mt = wire::parse(&moved).expect("a segment whose numbers moved still parses");
    assert_eq!((mt.seq, mt.ack), (t.seq ^ 0x5a5a, t.ack.wrapping_add(77)));
    assert_eq!(
        wire::tcp_checksum_ok(&moved, &mt),
        good,
        "moving sequence numbers kept the checksum's verdict"
    );
    // Rebuilt with other options and payload: a fresh, valid checksum (the layers check the
    // original first).
    let mut out = vec![0u8; t.total + 64];
    if let Some(n) = wire::rebuild(data, &t, &stripped, t.payload(data), &mut out) {
        let rt = wire::parse(&out[..n]).expect("a rebuilt segment parses");
        assert!(wire::tcp_checksum_ok(&out[..n], &rt));
        assert_eq!(rt.payload(&out[..n]), t.payload(data));
        check_ip_checksum(&out[..n]);
    }
}

/// ICMP error parsing: never panics; a report names ports of the quoted packet.
pub fn icmp(data: &[u8]) {
    let _ = crate::icmp::parse(data);
}

/// The offload layer: what a device says of a packet (the first 10 bytes, as a virtio-net
/// header's fields) and the packet (the rest). A TCP packet `accept` lets through has a valid
/// checksum unless the device vouched for it (the stack does not check TCP again on an offload
/// interface); what `transmit` and the MSS translations make of a packet with a valid checksum
/// keeps it valid.
pub fn offload(data: &[u8]) {
    use crate::offload::{self, Gso, RxMeta};
    if data.len() < 10 {
        return;
    }
    let (h, body) = data.split_at(10);
    let word = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let meta = RxMeta {
        gso: match h[1] & 0x7f {
            0 => Gso::None,
            1 => Gso::TcpV4,
            4 => Gso::TcpV6,
            t => Gso::Other(t),
        },
        hdr_len: word(2),
        gso_size: word(4),
        partial: (h[0] & 1 != 0).then(|| (word(6), word(8))),
        valid: h[0] & 2 != 0,
    };
    let mut pkt = body[..body.len().min(offload::MAX_PACKET)].to_vec();
    if offload::accept(&mut pkt, &meta).is_ok() && !meta.valid {
        if let Some(t) = wire::parse(&pkt) {
            assert!(
                wire::tcp_checksum_ok(&pkt, &t),
                "accepted a bad TCP checksum"
            );
        }
    }
    let good = wire::parse(&pkt).is_some_and(|t| wire::tcp_checksum_ok(&pkt, &t));
    let mut head = [0u8; offload::MAX_HEADERS];
    if let Some(m) = offload::transmit(&pkt, 1500, &mut head) {
        let h = usize::from(m.hdr_len);
        assert!(h <= pkt.len() && h <= head.len());
        assert!(m.gso == Gso::None || pkt.len() > 1500);
        // What the device gets: the headers with the pseudo-header sum, then the rest; filled
        // in, the checksum is valid again.
        let mut sent = head[..h].to_vec();
        sent.extend_from_slice(&pkt[h..]);
        let back = RxMeta {
            gso: Gso::None,
            hdr_len: 0,
            gso_size: 0,
            partial: Some(m.partial),
            valid: false,
        };
        if good {
            assert_eq!(offload::accept(&mut sent, &back), Ok(()));
        }
    }
    for raise in [true, false] {
        let changed = if raise {
            offload::raise_mss(&mut pkt, 1500)
        } else {
            offload::lower_mss(&mut pkt, 1500)
        };
        if changed && good {
            let t = wire::parse(&pkt).expect("still a TCP segment");
            assert!(
                wire::tcp_checksum_ok(&pkt, &t),
                "MSS translation broke the checksum"
            );
        }
    }
}

/// The Fast Open layer alone, as client and as server, fed `data` cut into segments. Every
/// segment the layer makes or rewrites must parse, with a valid checksum if the input had one.
pub fn fast_open(data: &[u8]) {
    let mut layer = fastopen::Layer::default();
    let now = Instant::from_secs(1);
    let key: CookieKey = CookieKey::from_bytes([7; 16]);
    let mut listener = fastopen::server::Listener::new(ServerConfig::new(key));
    let local: IpAddr = "192.0.2.2".parse().expect("an address");
    let remote: IpAddr = "192.0.2.1".parse().expect("an address");
    let mut client = fastopen::Conn::Client(layer.client(Mode::Cookie, local, remote, 1400, now));
    let mut server: Option<fastopen::Conn> = None;
    let mut inject = Vec::new();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 1500];
    for chunk in data.split(|b| *b == 0xfe).take(32) {
        let len = chunk.len().min(buf.len());
        buf[..len].copy_from_slice(&chunk[..len]);
        let Some(t) = wire::parse(&buf[..len]) else {
            continue;
        };
        let good = wire::tcp_checksum_ok(&buf[..len], &t);
        match chunk.first().map(|b| b & 3) {
            // What smoltcp sends is always sound.
            Some(0) if good => {
                let n = layer.egress(&mut client, &t, &mut buf, len, now, &mut inject);
                check_segment(&buf[..n], good);
            }
            // The stack checks a segment the layer would rebuild before it gets there.
            Some(1) if good || !client_rewrites(&client) => {
                let out =
                    layer.ingress(&mut client, &t, &mut buf, len, now, &mut inject, &mut reply);
                check_segment(&buf[..out.len], good);
            }
            Some(2) if t.has(SYN) && !t.has(ACK) && good => {
                let (n, conn) = layer.server_syn(&mut listener, &t, &mut buf, len, now);
                check_segment(&buf[..n], good);
                if let Some(c) = conn {
                    server = Some(fastopen::Conn::Server(c));
                }
            }
            Some(3) if good => {
                if let Some(s) = server.as_mut() {
                    let n = layer.egress(s, &t, &mut buf, len, now, &mut inject);
                    check_segment(&buf[..n], good);
                    if let Some(t) = wire::parse(&buf[..n]) {
                        let out = layer.ingress(s, &t, &mut buf, n, now, &mut inject, &mut reply);
                        check_segment(&buf[..out.len], true);
                    }
                }
            }
            _ => {}
        }
        for p in inject.drain(..).chain(reply.drain(..)) {
            check_segment(&p, true);
        }
    }
}

/// The recovery layer alone, on one connection running CUBIC or BBR, driven by `data` read as a list of
/// operations: segments smoltcp sends (new data, data sent before, with or without a FIN),
/// acknowledgements from the peer with any SACK blocks (in the window, out of it, reversed,
/// overlapping, beyond what was sent), the window smoltcp is let see, and time passing (its
/// timers: reordering, probes, timeouts). Every segment the layer sends must parse, carry a
/// valid checksum, lie within what was sent, and carry the bytes first sent at its sequence
/// numbers; its accounting must stay consistent.
pub fn recovery(data: &[u8]) {
    use crate::recovery::{Ctx, Layer};
    use crate::shard::WireSeq;

    const ISN: u32 = 0xffff_f000; // wraps around 2^32 early on
    let local: std::net::SocketAddr = "192.0.2.2:40000".parse().expect("an address");
    let remote: std::net::SocketAddr = "192.0.2.1:7".parse().expect("an address");
    // The byte at sequence number `seq` of our stream.
    let byte = |seq: u32| (seq.wrapping_sub(ISN).wrapping_mul(2_654_435_761) >> 24) as u8;
    // The first byte's low bit picks the congestion control (the byte is read again below).
    let algorithm = match data.first() {
        Some(b) if b & 1 == 1 => crate::config::CongestionControl::Bbr,
        _ => crate::config::CongestionControl::Cubic,
    };
    let mut layer = Layer::new(false, algorithm);
    let mut conn = layer.conn(1400, None);
    let mut now = Instant::from_secs(1);
    let mut wire_seq = WireSeq {
        last_ack: Some((5000, 100)),
        snd_nxt: Some(ISN),
        ..WireSeq::default()
    };
    let mut buf = vec![0u8; 1 << 16];
    // The peer's SYN-ACK: SACK permitted, window scale 7, MSS 1400.
    let opts = [2, 4, 0x05, 0x78, 4, 2, 3, 3, 7, 0];
    if let Some(n) = build_with(
        remote,
        local,
        4999,
        ISN,
        SYN | ACK,
        65535,
        &opts,
        &[],
        &mut buf,
    ) {
        layer.to_smoltcp(&mut conn, &mut buf[..n], None);
    }
    let mut nxt = ISN; // what "smoltcp" has sent
    let mut largest = 0usize; // the most payload it sent in one segment
    let mut out = Vec::new();
    for op in data.chunks(8) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let word = |i: usize| u32::from_le_bytes([b(i), b(i + 1), b(i + 2), b(i + 3)]);
        out.clear();
        match b(0) % 6 {
            // New data (and maybe a FIN).
            0 | 1 => {
                // Now and then a super-packet (segmentation offload), which the layer holds
                // where it was written instead of copying it.
                let len = if b(2) & 2 != 0 {
                    usize::from(b(1)) * 211 % 50_001
                } else {
                    usize::from(b(1)) * 6 % 1401
                };
                let fin = b(2) & 1 == 1 && len > 0;
                let payload: Vec<u8> = (0..len as u32).map(|i| byte(nxt.wrapping_add(i))).collect();
                let flags = ACK | if fin { wire::FIN } else { 0 };
                if let Some(n) = build_with(
                    local,
                    remote,
                    nxt,
                    5000,
                    flags,
                    100,
                    &[],
                    &payload,
                    &mut buf,
                ) {
                    if let Some(mut t) = wire::parse(&buf[..n]) {
                        let m = layer.egress(&mut conn, &mut t, &mut buf, n, &wire_seq, now);
                        let shared = layer.take_shared();
                        let out: &[u8] = shared.as_deref().unwrap_or(&buf);
                        check_segment(&out[..m], true);
                        check_described(&out[..m], &t);
                    }
                }
                largest = largest.max(len);
                nxt = nxt.wrapping_add(len as u32 + u32::from(fin));
                wire_seq.snd_nxt = Some(nxt);
            }
            // smoltcp sending again from somewhere back.
            2 => {
                let back = word(1) % 20_000;
                let seq = nxt.wrapping_sub(back);
                let len = (usize::from(b(5)) * 6 % 1401).min(back as usize);
                let payload: Vec<u8> = (0..len as u32).map(|i| byte(seq.wrapping_add(i))).collect();
                if let Some(n) =
                    build_with(local, remote, seq, 5000, ACK, 100, &[], &payload, &mut buf)
                {
                    if let Some(mut t) = wire::parse(&buf[..n]) {
                        let m = layer.egress(&mut conn, &mut t, &mut buf, n, &wire_seq, now);
                        let shared = layer.take_shared();
                        let out: &[u8] = shared.as_deref().unwrap_or(&buf);
                        check_segment(&out[..m], true);
                        check_described(&out[..m], &t);
                    }
                }
            }
            // An acknowledgement, with SACK blocks.
            3 | 4 => {
                let ack = if b(1) & 0x80 != 0 {
                    word(1)
                } else {
                    ISN.wrapping_add(word(1) % 0x20_0000)
                };
                let mut opts = vec![1, 1, 5];
                let blocks = usize::from(b(5) % 5);
                opts.push(2 + 8 * blocks as u8);
                for k in 0..blocks {
                    let l = ack
                        .wrapping_add(u32::from(b(6)) * 97 * (k as u32 + 1))
                        .wrapping_sub(u32::from(b(7)) * 13);
                    let r = l
                        .wrapping_add(u32::from(b(6 + (k & 1))) * 53)
                        .wrapping_sub(u32::from(b(5)) & 0x40);
                    opts.extend_from_slice(&l.to_be_bytes());
                    opts.extend_from_slice(&r.to_be_bytes());
                }
                let window = u16::from(b(7));
                if let Some(n) =
                    build_with(remote, local, 5000, ack, ACK, window, &opts, &[], &mut buf)
                {
                    if let Some(t) = wire::parse(&buf[..n]) {
                        let ctx = Ctx {
                            tuple: (local, remote),
                            wire: &wire_seq,
                            peer_numbers_plain: true,
                        };
                        layer.ingress(&mut conn, &t, &buf[..n], ctx, now, &mut out);
                        layer.to_smoltcp(&mut conn, &mut buf[..n], None);
                        check_segment(&buf[..n], true);
                    }
                }
            }
            // Time passes; the timer fires if due.
            _ => {
                now += smoltcp::time::Duration::from_micros(u64::from(word(1) % 3_000_000));
                let ctx = Ctx {
                    tuple: (local, remote),
                    wire: &wire_seq,
                    peer_numbers_plain: true,
                };
                if let Some(mut update) = layer.on_timer(&mut conn, ctx, now, &mut out) {
                    // The idle window update, as smoltcp gets it: the peer's acknowledgement
                    // of everything sent, valid, and clamped on the way.
                    let t = wire::parse(&update).expect("the window update parses");
                    assert!(wire::tcp_checksum_ok(&update, &t), "a valid checksum");
                    assert_eq!(t.src, remote, "as from the peer");
                    assert_eq!(Some(t.ack), wire_seq.snd_nxt, "acknowledging what was sent");
                    layer.to_smoltcp(&mut conn, &mut update, None);
                }
            }
        }
        for p in &out {
            let t = wire::parse(p).expect("a segment the layer built parses");
            assert!(wire::tcp_checksum_ok(p, &t), "a valid checksum");
            // Lost wire segments that follow each other go again in one packet up to the
            // largest "smoltcp" sent: a super-packet, which an offload device cuts.
            assert!(
                p.len() <= 1500.max(80 + largest),
                "within the MTU, or a super-packet's size"
            );
            let payload = t.payload(p);
            let end = t.seq.wrapping_add(payload.len() as u32);
            assert!(
                !crate::recovery::scoreboard::before(nxt, end),
                "sent again only what was sent"
            );
            for (i, &x) in payload.iter().enumerate() {
                assert_eq!(
                    x,
                    byte(t.seq.wrapping_add(i as u32)),
                    "the bytes first sent there"
                );
            }
        }
        crate::recovery::Layer::check(&conn);
    }
}

/// `wire::build` with options.
#[allow(clippy::too_many_arguments)]
fn build_with(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let mut plain = [0u8; 60];
    let n = wire::build(src, dst, seq, ack, flags, window, &[], &mut plain)?;
    let t = wire::parse(&plain[..n])?;
    wire::rebuild(&plain[..n], &t, opts, payload, out)
}

/// Whether the client layer would rebuild an arriving segment (the stack checks those first).
fn client_rewrites(c: &fastopen::Conn) -> bool {
    c.acts_on_ingress()
}

/// A segment the layer passed on (0 bytes: dropped) parses, and has a valid checksum if the one
/// it came from had.
fn check_segment(pkt: &[u8], was_good: bool) {
    if pkt.is_empty() {
        return;
    }
    let Some(t) = wire::parse(pkt) else {
        // Not TCP, or not understood: passed on untouched.
        return;
    };
    if was_good {
        assert!(
            wire::tcp_checksum_ok(pkt, &t),
            "a segment the layer passed on lost its valid checksum"
        );
    }
}

/// The header the recovery layer hands back describes the segment it leaves in the buffer
/// (the engine does not parse it again).
fn check_described(pkt: &[u8], t: &wire::Tcp) {
    let Some(p) = wire::parse(pkt) else {
        return;
    };
    let fields = |t: &wire::Tcp| {
        (
            t.seq, t.ack, t.flags, t.window, t.hdr_len, t.total, t.src, t.dst,
        )
    };
    assert_eq!(
        fields(&p),
        fields(t),
        "the layer's header does not describe its segment"
    );
}

fn check_ip_checksum(pkt: &[u8]) {
    if pkt.first().map(|b| b >> 4) == Some(4) {
        let ip = Ipv4Packet::new_checked(pkt).expect("an IPv4 packet we built");
        assert!(ip.verify_checksum(), "IPv4 header checksum");
    }
}

/// Give a TCP segment (IPv4 or IPv6) valid checksums, so that a fuzzer's packets get past the
/// check and into the layers. Anything else is left as it is.
pub fn fix_checksums(pkt: &mut [u8]) {
    let Some(t) = wire::parse(pkt) else {
        return;
    };
    let opts = t.options(pkt).to_vec();
    let payload = t.payload(pkt).to_vec();
    let mut out = vec![0u8; pkt.len() + 64];
    if let Some(n) = wire::rebuild(pkt, &t, &opts, &payload, &mut out) {
        if n == t.total {
            pkt[..n].copy_from_slice(&out[..n]);
        }
    }
}

/// The source of a packet the stack sent must be one of its addresses.
fn check_source(src: IpAddress, ours: &[IpAddr]) -> Result<(), String> {
    let src_ip = crate::addr::from_smoltcp(src);
    if ours.contains(&src_ip) {
        Ok(())
    } else {
        Err(format!("source {src_ip} is not one of ours"))
    }
}

/// A fragment the stack built: of a UDP datagram, 8-byte aligned unless the last, within
/// the datagram limit.
fn check_fragment(offset: usize, more: bool, len: usize, inner: IpProtocol) -> Result<(), String> {
    if inner != IpProtocol::Udp {
        return Err(format!("a fragment of {inner}"));
    }
    if more && len % 8 != 0 {
        return Err(format!("a fragment of {len} bytes that is not the last"));
    }
    if len == 0 || offset + len > 8 + crate::fragment::MAX_DATAGRAM {
        return Err(format!("a fragment of {len} bytes at {offset}"));
    }
    Ok(())
}

/// What must hold of a packet the stack sends on an interface with MTU `mtu` and addresses
/// `ours`: it fits the MTU, it is IPv4 or IPv6 with a valid header checksum, its TCP, UDP or
/// ICMP checksum is valid, and its source is one of `ours`. A fragment (of a UDP datagram above
/// the MTU, `crate::fragment`) is checked for its shape: the checksum covers the whole
/// datagram, which the fragment tests of `crate::fragment` check reassembled. `Err` says what
/// does not hold.
pub fn check_emitted(pkt: &[u8], mtu: usize, ours: &[IpAddr]) -> Result<(), String> {
    if pkt.len() > mtu {
        return Err(format!("{} bytes on an MTU of {mtu}", pkt.len()));
    }
    let (src, dst, mut proto, mut payload): (IpAddress, IpAddress, IpProtocol, &[u8]) =
        match pkt.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(pkt).map_err(|e| format!("IPv4: {e}"))?;
                if !ip.verify_checksum() {
                    return Err("IPv4 header checksum".into());
                }
                let end = usize::from(ip.total_len()).min(pkt.len());
                let start = usize::from(ip.header_len());
                let payload = pkt.get(start..end).unwrap_or(&[]);
                if ip.more_frags() || ip.frag_offset() != 0 {
                    // A fragment of a datagram above the MTU (`crate::fragment`).
                    check_fragment(
                        usize::from(ip.frag_offset()),
                        ip.more_frags(),
                        payload.len(),
                        ip.next_header(),
                    )?;
                    return check_source(ip.src_addr().into(), ours);
                }
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    ip.next_header(),
                    payload,
                )
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(pkt).map_err(|e| format!("IPv6: {e}"))?;
                (
                    ip.src_addr().into(),
                    ip.dst_addr().into(),
                    ip.next_header(),
                    ip.payload(),
                )
            }
            _ => return Err("neither IPv4 nor IPv6".into()),
        };
    if proto == IpProtocol::Ipv6Frag {
        // RFC 8200 §4.5: next header, reserved, offset (13 bits) and M, identification.
        let f = payload
            .get(..8)
            .ok_or_else(|| "IPv6 Fragment header cut short".to_string())?;
        let offset_flags = u16::from_be_bytes([f[2], f[3]]);
        let data = &payload[8..];
        if usize::from(offset_flags & !7) != 0 || offset_flags & 1 == 1 {
            check_fragment(
                usize::from(offset_flags & !7),
                offset_flags & 1 == 1,
                data.len(),
                IpProtocol::from(f[0]),
            )?;
            return check_source(src, ours);
        }
        // An atomic fragment (offset 0, no more): the whole datagram follows.
        proto = IpProtocol::from(f[0]);
        payload = data;
    }
    check_source(src, ours)?;
    match proto {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|e| format!("TCP: {e}"))?;
            if !tcp.verify_checksum(&src, &dst) {
                return Err("TCP checksum".into());
            }
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|e| format!("UDP: {e}"))?;
            if !udp.verify_checksum(&src, &dst) {
                return Err("UDP checksum".into());
            }
        }
        IpProtocol::Icmp => {
            let icmp = smoltcp::wire::Icmpv4Packet::new_checked(payload)
                .map_err(|e| format!("ICMP: {e}"))?;
            if !icmp.verify_checksum() {
                return Err("ICMP checksum".into());
            }
        }
        IpProtocol::Icmpv6 => {
            let icmp = smoltcp::wire::Icmpv6Packet::new_checked(payload)
                .map_err(|e| format!("ICMPv6: {e}"))?;
            let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (src, dst) else {
                return Err("ICMPv6 over IPv4".into());
            };
            if !icmp.verify_checksum(&s, &d) {
                return Err("ICMPv6 checksum".into());
            }
        }
        other => return Err(format!("protocol {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragments_the_stack_builds_pass_and_misshapen_ones_do_not() {
        for (src, dst) in [
            ("192.0.2.2:5353", "192.0.2.1:53"),
            ("[2001:db8::2]:5353", "[2001:db8::1]:53"),
        ] {
            let (src, dst): (std::net::SocketAddr, std::net::SocketAddr) =
                (src.parse().unwrap(), dst.parse().unwrap());
            let ours = [src.ip()];
            let packets = crate::fragment::udp_packets(src, dst, &[9; 9216], 1500, 77).unwrap();
            assert_eq!(packets.len(), 7);
            for p in &packets {
                assert_eq!(check_emitted(p, 1500, &ours), Ok(()), "{src}");
            }
            assert!(check_emitted(&packets[0], 1500, &["192.0.2.9".parse().unwrap()]).is_err());
            // A first fragment cut to a length that is not a multiple of 8.
            let mut cut = packets[0].clone();
            cut.truncate(cut.len() - 3);
            if src.is_ipv4() {
                let total = (cut.len() as u16).to_be_bytes();
                cut[2..4].copy_from_slice(&total);
                cut[10..12].copy_from_slice(&[0, 0]);
                let ck = crate::wire::ipv4_header_checksum(&cut[..20]);
                cut[10..12].copy_from_slice(&ck.to_be_bytes());
            } else {
                let len = ((cut.len() - 40) as u16).to_be_bytes();
                cut[4..6].copy_from_slice(&len);
            }
            assert!(check_emitted(&cut, 1500, &ours).is_err(), "{src}");
        }
    }
}
