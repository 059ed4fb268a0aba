//! The one packet parser of the stack: IPv4 and IPv6 headers, TCP segments (header, options,
//! payload), UDP ports, and the builders and checksum updates the layers that rewrite segments
//! need. Every layer reads packets through here; none reads bytes by hand.
//!
//! No-panic contract: every function takes arbitrary bytes (anything can arrive from the
//! network) and checks each length before reading; a packet it does not understand (a fragment,
//! IPv6 extension headers, inconsistent lengths) is reported as `None` and left to smoltcp,
//! which drops it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// TCP flags.
pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// Option kinds.
pub(crate) const OPT_EOL: u8 = 0;
pub(crate) const OPT_NOP: u8 = 1;
pub(crate) const OPT_MSS: u8 = 2;
pub(crate) const OPT_WINDOW_SCALE: u8 = 3;
pub(crate) const OPT_SACK_PERMITTED: u8 = 4;
pub(crate) const OPT_SACK: u8 = 5;
/// RFC 7413 §4.1.1.
pub(crate) const OPT_FAST_OPEN: u8 = 34;

/// IP protocol numbers.
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// The IP header of a whole packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ip {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// The next header (IPv6) or protocol (IPv4).
    pub(crate) proto: u8,
    /// Length of the IP header.
    pub(crate) hdr_len: usize,
    /// Length of the packet as the IP header gives it (at most the bytes at hand).
    pub(crate) total: usize,
    /// A fragment (not the whole of a datagram).
    pub(crate) fragment: bool,
}

impl Ip {
    /// The IP payload.
    pub(crate) fn payload<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        pkt.get(self.hdr_len..self.total).unwrap_or(&[])
    }
}

/// (source, destination, header length, protocol) of an IP header, reading only the header:
/// the packet may be cut short after it (as ICMP errors quote packets). IPv6 extension headers
/// are not followed.
pub(crate) fn ip_prefix(p: &[u8]) -> Option<(IpAddr, IpAddr, usize, u8)> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            let src = Ipv4Addr::from(be32(p, 12)?);
            let dst = Ipv4Addr::from(be32(p, 16)?);
            Some((src.into(), dst.into(), ihl, *p.get(9)?))
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some((
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                40,
                *p.get(6)?,
            ))
        }
        _ => None,
    }
}

/// The IP header of a whole packet: lengths consistent with the bytes at hand.
pub(crate) fn ip(pkt: &[u8]) -> Option<Ip> {
    let (src, dst, hdr_len, proto) = ip_prefix(pkt)?;
    let (total, fragment) = if src.is_ipv4() {
        let frag = be16(pkt, 6)?;
        (usize::from(be16(pkt, 2)?), frag & 0x3fff != 0)
    } else {
        (40 + usize::from(be16(pkt, 4)?), false)
    };
    if total > pkt.len() || total < hdr_len {
        return None;
    }
    Some(Ip {
        src,
        dst,
        proto,
        hdr_len,
        total,
        fragment,
    })
}

/// (source port, destination port) of a UDP datagram.
pub(crate) fn udp_ports(pkt: &[u8], ip: &Ip) -> Option<(u16, u16)> {
    if ip.proto != PROTO_UDP || ip.fragment {
        return None;
    }
    let u = ip.payload(pkt);
    if u.len() < 8 {
        return None;
    }
    Some((be16(u, 0)?, be16(u, 2)?))
}

/// Where things are in a TCP packet, and its header fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tcp {
    pub(crate) ip_len: usize,
    pub(crate) total: usize,
    pub(crate) hdr_len: usize,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

impl Tcp {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn tcp_start(&self) -> usize {
        self.ip_len
    }

    /// The option bytes.
    pub(crate) fn options<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        pkt.get(self.tcp_start() + 20..self.tcp_start() + self.hdr_len)
            .unwrap_or(&[])
    }

    pub(crate) fn payload_range(&self) -> Range<usize> {
        self.ip_len + self.hdr_len..self.total
    }

    pub(crate) fn payload<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        pkt.get(self.payload_range()).unwrap_or(&[])
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.total.saturating_sub(self.ip_len + self.hdr_len)
    }

    /// Sequence space the segment takes: its payload, plus one each for SYN and FIN.
    pub(crate) fn seq_len(&self) -> u32 {
        self.payload_len() as u32 + u32::from(self.has(SYN)) + u32::from(self.has(FIN))
    }

    /// (local, remote) of the connection this segment belongs to, if it arrived.
    pub(crate) fn arriving_tuple(&self) -> (SocketAddr, SocketAddr) {
        (self.dst, self.src)
    }
}

/// The TCP segment of a packet whose IP header is `ip`.
pub(crate) fn tcp_in(pkt: &[u8], ip: &Ip) -> Option<Tcp> {
    if ip.proto != PROTO_TCP || ip.fragment || ip.total < ip.hdr_len + 20 {
        return None;
    }
    let t = ip.hdr_len;
    let hdr_len = usize::from(pkt.get(t + 12)? >> 4) * 4;
    if hdr_len < 20 || t + hdr_len > ip.total {
        return None;
    }
    Some(Tcp {
        ip_len: ip.hdr_len,
        total: ip.total,
        hdr_len,
        src: SocketAddr::new(ip.src, be16(pkt, t)?),
        dst: SocketAddr::new(ip.dst, be16(pkt, t + 2)?),
        seq: be32(pkt, t + 4)?,
        ack: be32(pkt, t + 8)?,
        flags: *pkt.get(t + 13)?,
        window: be16(pkt, t + 14)?,
    })
}

/// Parse an IPv4 or IPv6 packet carrying a whole TCP segment.
pub(crate) fn parse(pkt: &[u8]) -> Option<Tcp> {
    tcp_in(pkt, &ip(pkt)?)
}

/// Whether the TCP checksum of a parsed segment is right. Anything the stack acts on itself
/// (rather than handing to smoltcp, which checks) is checked here first, so that a corrupted
/// packet never creates state or draws an answer.
pub(crate) fn tcp_checksum_ok(pkt: &[u8], t: &Tcp) -> bool {
    let Some(seg) = pkt.get(t.ip_len..t.total) else {
        return false;
    };
    let len = seg.len() as u32;
    let acc = pseudo_header_sum(t.src.ip(), t.dst.ip(), PROTO_TCP) + (len >> 16) + (len & 0xffff);
    fold(sum16(seg, acc)) == 0
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum16(&d.octets(), sum16(&s.octets(), 0)) + u32::from(proto)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum16(&d.octets(), sum16(&s.octets(), 0)) + u32::from(proto)
        }
        _ => 0,
    }
}

/// The checksum of a transport segment (`proto`'s header and payload, checksum field zero)
/// from `src` to `dst`, over the pseudo-header of RFC 768 / RFC 8200 §8.1.
pub(crate) fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let acc = pseudo_header_sum(src, dst, proto) + (len >> 16) + (len & 0xffff);
    fold(sum16(segment, acc))
}

/// The IPv4 header checksum of `header` (its checksum field zero).
pub(crate) fn ipv4_header_checksum(header: &[u8]) -> u16 {
    fold(sum16(header, 0))
}

/// The options of a segment, as (kind, body) pairs. Stops at the end-of-list option or at the
/// first malformed length.
pub(crate) fn options(opts: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let kind = *opts.get(i)?;
        match kind {
            OPT_EOL => return None,
            OPT_NOP => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                let body = opts.get(i + 2..i + len.max(2)).filter(|_| len >= 2)?;
                i += len;
                return Some((kind, body));
            }
        }
    })
}

/// The body of the first option `kind`.
pub(crate) fn find_option(opts: &[u8], kind: u8) -> Option<&[u8]> {
    options(opts)
        .find(|(k, _)| *k == kind)
        .map(|(_, body)| body)
}

/// The MSS option's value.
pub(crate) fn mss(opts: &[u8]) -> Option<u16> {
    let body = find_option(opts, OPT_MSS)?;
    be16(body, 0).filter(|_| body.len() == 2)
}

/// The options of a segment with every option `kind` removed (NOPs kept, end-of-list dropped).
pub(crate) fn without_option(opts: &[u8], kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(opts.len());
    let mut i = 0;
    while let Some(&k) = opts.get(i) {
        match k {
            OPT_EOL => break,
            OPT_NOP => {
                out.push(OPT_NOP);
                i += 1;
            }
            _ => {
                let len = usize::from(opts.get(i + 1).copied().unwrap_or(0));
                let Some(whole) = opts.get(i..i + len).filter(|_| len >= 2) else {
                    break;
                };
                if k != kind {
                    out.extend_from_slice(whole);
                }
                i += len;
            }
        }
    }
    out
}

/// `acc` plus the one's-complement sum of `data` as big-endian 16-bit words (an odd last byte
/// padded with zero). Sums native 32-bit words into 64 bits and swaps once at the end (RFC 1071
/// §2's byte-order independence): this runs over every byte of a 64 KB offload segment.
pub(crate) fn sum16(data: &[u8], acc: u32) -> u32 {
    let mut wide: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        wide += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut last = [0u8; 4];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    wide += u64::from(u32::from_ne_bytes(last));
    while wide > 0xffff {
        wide = (wide & 0xffff) + (wide >> 16);
    }
    // A native 16-bit sum is the big-endian one with its bytes swapped.
    let native = wide as u16;
    acc + u32::from(u16::from_be(native))
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A one's-complement sum folded to 16 bits, not complemented.
pub(crate) fn fold_sum(acc: u32) -> u16 {
    !fold(acc)
}

/// Set the 16-bit word at byte `at` of a parsed segment's TCP header (an even offset from its
/// start, as every option value the stack rewrites is) to `value`, updating the checksum for
/// that word only (RFC 1624): a bad checksum stays bad.
pub(crate) fn replace_word(pkt: &mut [u8], t: &Tcp, at: usize, value: u16) {
    let s = t.ip_len;
    let (Some(ck), Some(old)) = (be16(pkt, s + 16), be16(pkt, at)) else {
        return;
    };
    if at < s + 20 || at + 2 > s + t.hdr_len {
        return;
    }
    let ck = if (at - s) % 2 == 0 {
        adjust_checksum(ck, u32::from(old), u32::from(value))
    } else {
        adjust_checksum(
            ck,
            u32::from(old.swap_bytes()),
            u32::from(value.swap_bytes()),
        )
    };
    pkt[at..at + 2].copy_from_slice(&value.to_be_bytes());
    pkt[s + 16..s + 18].copy_from_slice(&ck.to_be_bytes());
}

/// Compute the TCP checksum of a parsed segment from scratch, whatever its field held.
pub(crate) fn set_tcp_checksum(pkt: &mut [u8], t: &Tcp) {
    let seg = t.ip_len..t.total;
    let Some(tcp) = pkt.get_mut(seg.clone()) else {
        return;
    };
    tcp[16] = 0;
    tcp[17] = 0;
    if t.src.is_ipv4() != t.dst.is_ipv4() {
        return;
    }
    let mut acc = pseudo_header_sum(t.src.ip(), t.dst.ip(), PROTO_TCP);
    let len = seg.len() as u32;
    acc += (len >> 16) + (len & 0xffff);
    let ck = fold(sum16(tcp, acc));
    tcp[16..18].copy_from_slice(&ck.to_be_bytes());
}

/// Recompute the TCP checksum (and the IPv4 header checksum) of a well-formed packet.
fn fix_checksums(pkt: &mut [u8], t: &Tcp) {
    set_tcp_checksum(pkt, t);
    if t.src.is_ipv4() {
        if let Some(ip) = pkt.get_mut(..t.ip_len) {
            ip[10] = 0;
            ip[11] = 0;
            let ck = fold(sum16(ip, 0));
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
        }
    }
}

/// Write into `out` the packet `pkt` with its TCP options replaced by `opts` (padded to a
/// multiple of four with end-of-list bytes) and its payload by `payload`. Returns the new
/// length, or `None` when the options exceed 40 bytes or `out` is too small.
pub(crate) fn rebuild(
    pkt: &[u8],
    t: &Tcp,
    opts: &[u8],
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let padded = opts.len().div_ceil(4) * 4;
    if padded > 40 {
        return None;
    }
    let hdr_len = 20 + padded;
    let total = t.ip_len + hdr_len + payload.len();
    if total > out.len() || total > 65535 {
        return None;
    }
    out.get_mut(..t.ip_len + 20)?
        .copy_from_slice(pkt.get(..t.ip_len + 20)?);
    out.get_mut(t.ip_len + 20..t.ip_len + 20 + opts.len())?
        .copy_from_slice(opts);
    out.get_mut(t.ip_len + 20 + opts.len()..t.ip_len + hdr_len)?
        .fill(OPT_EOL);
    out.get_mut(t.ip_len + hdr_len..total)?
        .copy_from_slice(payload);
    out[t.ip_len + 12] = ((hdr_len / 4) as u8) << 4 | (out[t.ip_len + 12] & 0x0f);
    if t.src.is_ipv4() {
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    } else {
        out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    }
    let nt = Tcp {
        total,
        hdr_len,
        ..*t
    };
    fix_checksums(out, &nt);
    Some(total)
}

/// RFC 1624 (eqn. 3): checksum `ck` after a 32-bit field of the summed data changed from `old`
/// to `new`.
fn adjust_checksum(ck: u16, old: u32, new: u32) -> u16 {
    let mut acc = u32::from(!ck);
    for (o, n) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        acc += u32::from(!(o as u16)) + n;
    }
    fold(acc)
}

/// Set the sequence and acknowledgement numbers of a segment in place and shift the edges of
/// its SACK blocks by `sack_delta` (subtracted). The TCP checksum is updated for the changed
/// words only (RFC 1624), not summed again over the payload: this runs on every segment of a
/// Fast Open connection whose SYN data was acknowledged. A segment that arrived with a bad
/// checksum keeps a bad one, so smoltcp still drops it.
pub(crate) fn set_seq_ack(pkt: &mut [u8], t: &Tcp, seq: u32, ack: u32, sack_delta: u32) {
    let s = t.ip_len;
    let (Some(mut ck), Some(old_seq), Some(old_ack)) =
        (be16(pkt, s + 16), be32(pkt, s + 4), be32(pkt, s + 8))
    else {
        return;
    };
    ck = adjust_checksum(adjust_checksum(ck, old_seq, seq), old_ack, ack);
    if let Some(f) = pkt.get_mut(s + 4..s + 12) {
        f[..4].copy_from_slice(&seq.to_be_bytes());
        f[4..].copy_from_slice(&ack.to_be_bytes());
    }
    if sack_delta != 0 {
        let range = s + 20..s + t.hdr_len;
        let mut i = range.start;
        while i < range.end {
            let Some(&kind) = pkt.get(i) else { break };
            match kind {
                OPT_EOL => break,
                OPT_NOP => i += 1,
                _ => {
                    let len = usize::from(pkt.get(i + 1).copied().unwrap_or(0));
                    if len < 2 || i + len > range.end {
                        break;
                    }
                    if kind == OPT_SACK {
                        let mut at = i + 2;
                        while at + 4 <= i + len {
                            if let Some(v) = be32(pkt, at) {
                                let shifted = v.wrapping_sub(sack_delta);
                                // An edge at an odd offset from the header's start is summed
                                // with its bytes rotated by one (RFC 1071 byte-order
                                // independence).
                                ck = if (at - s) % 2 == 0 {
                                    adjust_checksum(ck, v, shifted)
                                } else {
                                    adjust_checksum(ck, v.rotate_right(8), shifted.rotate_right(8))
                                };
                                pkt[at..at + 4].copy_from_slice(&shifted.to_be_bytes());
                            }
                            at += 4;
                        }
                    }
                    i += len;
                }
            }
        }
    }
    if let Some(f) = pkt.get_mut(s + 16..s + 18) {
        f.copy_from_slice(&ck.to_be_bytes());
    }
}

/// Set the window field of a segment in place, updating the checksum for that field only
/// (RFC 1624): a segment that arrived with a bad checksum keeps a bad one.
pub(crate) fn set_window(pkt: &mut [u8], t: &Tcp, window: u16) {
    let s = t.ip_len;
    let (Some(ck), Some(old)) = (be16(pkt, s + 16), be16(pkt, s + 14)) else {
        return;
    };
    let ck = adjust_checksum(ck, u32::from(old), u32::from(window));
    if let Some(f) = pkt.get_mut(s + 14..s + 18) {
        f[..2].copy_from_slice(&window.to_be_bytes());
        f[2..].copy_from_slice(&ck.to_be_bytes());
    }
}

/// Build a TCP segment from `src` to `dst` into `out`; returns its length.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let ip_len = if src.is_ipv4() { 20 } else { 40 };
    let total = ip_len + 20 + payload.len();
    if total > out.len() || total > 65535 || src.is_ipv4() != dst.is_ipv4() {
        return None;
    }
    let p = out.get_mut(..total)?;
    p.fill(0);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6] = 0x40; // don't fragment
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
        }
        _ => return None,
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&src.port().to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&dst.port().to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&ack.to_be_bytes());
    p[t + 12] = 5 << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&window.to_be_bytes());
    p[t + 20..].copy_from_slice(payload);
    let tcp = Tcp {
        ip_len,
        total,
        hdr_len: 20,
        src,
        dst,
        seq,
        ack,
        flags,
        window,
    };
    fix_checksums(p, &tcp);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

    fn check_with_smoltcp(pkt: &[u8]) {
        match pkt[0] >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(pkt).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.next_header(), IpProtocol::Tcp);
                let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
            }
            _ => {
                let ip = Ipv6Packet::new_checked(pkt).unwrap();
                let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
            }
        }
    }

    #[test]
    fn build_parse_rebuild_round_trip() {
        for (s, d) in [
            ("192.0.2.2:40000", "192.0.2.1:7"),
            ("[2001:db8::2]:40000", "[2001:db8::1]:7"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut buf = [0u8; 1500];
            let n = build(s, d, 1000, 0, SYN, 64240, &[], &mut buf).unwrap();
            check_with_smoltcp(&buf[..n]);
            let t = parse(&buf[..n]).unwrap();
            assert_eq!((t.src, t.dst, t.seq, t.flags), (s, d, 1000, SYN));
            // Add MSS and a Fast Open cookie, and data.
            let opts = [
                OPT_MSS,
                4,
                0x05,
                0xb4,
                OPT_FAST_OPEN,
                10,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
            ];
            let mut out = [0u8; 1500];
            let m = rebuild(&buf[..n], &t, &opts, b"early", &mut out).unwrap();
            check_with_smoltcp(&out[..m]);
            let t2 = parse(&out[..m]).unwrap();
            assert_eq!(t2.payload(&out[..m]), b"early");
            assert_eq!(
                find_option(t2.options(&out[..m]), OPT_FAST_OPEN),
                Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..])
            );
            assert_eq!(mss(t2.options(&out[..m])), Some(1460));
            let stripped = without_option(t2.options(&out[..m]), OPT_FAST_OPEN);
            assert_eq!(stripped, [OPT_MSS, 4, 0x05, 0xb4]);
            let mut copy = out;
            set_seq_ack(&mut copy[..m], &t2, 5, 6, 0);
            check_with_smoltcp(&copy[..m]);
            let t3 = parse(&copy[..m]).unwrap();
            assert_eq!((t3.seq, t3.ack), (5, 6));
        }
    }

    #[test]
    fn incremental_checksum_matches_a_full_recompute() {
        // SACK blocks at an even offset (NOP NOP SACK) and at an odd one (NOP SACK), odd and
        // even payload lengths, both families, many values.
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for (s, d) in [
            ("192.0.2.2:40000", "192.0.2.1:7"),
            ("[2001:db8::2]:40000", "[2001:db8::1]:7"),
        ] {
            for (lead, payload) in [
                (&[OPT_NOP, OPT_NOP][..], &b"abcd"[..]),
                (&[OPT_NOP][..], b"abc"),
            ] {
                for _ in 0..200 {
                    let mut buf = [0u8; 1500];
                    let n = build(
                        s.parse().unwrap(),
                        d.parse().unwrap(),
                        next(),
                        next(),
                        ACK,
                        1000,
                        payload,
                        &mut buf,
                    )
                    .unwrap();
                    let t = parse(&buf[..n]).unwrap();
                    let mut opts = lead.to_vec();
                    opts.extend([OPT_SACK, 18]);
                    for _ in 0..4 {
                        opts.extend(next().to_be_bytes());
                    }
                    let mut out = [0u8; 1500];
                    let m = rebuild(&buf[..n], &t, &opts, payload, &mut out).unwrap();
                    check_with_smoltcp(&out[..m]);
                    let t2 = parse(&out[..m]).unwrap();
                    let (seq, ack, delta) = (next(), next(), next());
                    set_seq_ack(&mut out[..m], &t2, seq, ack, delta);
                    check_with_smoltcp(&out[..m]);
                    let t3 = parse(&out[..m]).unwrap();
                    assert_eq!((t3.seq, t3.ack), (seq, ack));
                    let edge = opts.len() - 16;
                    let first = be32(t3.options(&out[..m]), edge).unwrap();
                    assert_eq!(
                        first.wrapping_add(delta),
                        u32::from_be_bytes(opts[edge..edge + 4].try_into().unwrap())
                    );
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 7;
        let mut buf = vec![0u8; 120];
        for round in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            buf[0] = if round % 2 == 0 { 0x45 } else { 0x60 };
            buf[9] = 6;
            buf[6] = if round % 3 == 0 { 6 } else { buf[6] };
            let len = (x as usize) % buf.len();
            if let Some(t) = parse(&buf[..len]) {
                let opts = t.options(&buf[..len]).to_vec();
                let _ = options(&opts).count();
                let _ = without_option(&opts, OPT_FAST_OPEN);
                let mut out = [0u8; 200];
                let _ = rebuild(&buf[..len], &t, &opts, t.payload(&buf[..len]), &mut out);
                let mut copy = buf.clone();
                set_seq_ack(&mut copy[..len], &t, 1, 2, 3);
            }
        }
    }
}
