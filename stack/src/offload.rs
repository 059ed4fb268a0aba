//! Segmentation and checksum offload: the stack's side of a device that moves TCP segments of
//! up to 64 KB and leaves transport checksums to whoever needs them (a Linux TUN device with a
//! virtio-net header, `tun_driver::Device::create_offload`).
//!
//! ```text
//!  device ─► accept(): check what the device says of the packet, fill a partial checksum ─► stack
//!                        (a TCP super-packet goes to smoltcp whole: it takes any segment size)
//!  SYN in  ─► raise_mss(): a peer that takes full-sized segments looks to smoltcp as if it took
//!             64 KB ones, so smoltcp writes segments as large as window and congestion allow
//!  SYN out ◄─ lower_mss(): smoltcp's own MSS option back to the device's MTU
//!  stack ─► transmit(): a TCP packet leaves with a partial checksum, and one larger than the
//!           MTU with the segment size the device cuts it to ─► device
//! ```
//!
//! smoltcp's `segmentation-offload` feature is not used: it drops IPv6 packets larger than the
//! MTU. The stack gets the same result on an unmodified smoltcp by giving its interface a
//! 64 KB MTU and translating the MSS options on the way in and out. A peer that announces less
//! than the device's MTU allows (a path with a smaller MTU behind it) keeps its own MSS, and
//! its segments stay small.
//!
//! This module is sans-IO: it reads and rewrites packets and says what the device must be told;
//! the caller owns the device and its header format.

use std::fmt;
use std::net::IpAddr;

use crate::wire::{self, OPT_EOL, OPT_MSS, OPT_NOP, PROTO_TCP, SYN};

/// The largest packet a device with offload moves: the IPv4 total length's limit.
pub const MAX_PACKET: usize = 65_535;

/// How a device asks for a packet to be cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gso {
    /// A packet of its own.
    None,
    /// A TCP over IPv4 super-packet.
    TcpV4,
    /// A TCP over IPv6 super-packet.
    TcpV6,
    /// Anything else the device may name (UDP fragmentation or segmentation, an unknown type):
    /// the stack does not take it.
    Other(u8),
}

/// What the device says about a packet it hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Whether it is a super-packet, and of what.
    pub gso: Gso,
    /// Length of each segment's headers, as the device gives it (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// A partial checksum: where the summed part starts, and where from there the checksum
    /// field is. `None`: the checksum is complete.
    pub partial: Option<(u16, u16)>,
    /// The device checked the checksum (`VIRTIO_NET_HDR_F_DATA_VALID`).
    pub valid: bool,
}

impl RxMeta {
    /// A packet the device says nothing about.
    pub const PLAIN: RxMeta = RxMeta {
        gso: Gso::None,
        hdr_len: 0,
        gso_size: 0,
        partial: None,
        valid: false,
    };
}

/// Why a packet from an offload device was dropped (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// A GSO type the stack does not take (it asks only for TCP).
    GsoType(u8),
    /// A super-packet that is not the TCP packet its GSO type names, or is malformed.
    NotTcp,
    /// A header length beyond the packet, or a segment size of 0.
    HdrLen,
    /// A partial checksum whose start or field lies outside the packet.
    ChecksumOffset,
    /// A TCP segment whose checksum is wrong.
    Checksum,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::GsoType(t) => write!(f, "unsupported GSO type {t}"),
            Rejected::NotTcp => write!(f, "a TCP super-packet that is not a TCP packet"),
            Rejected::HdrLen => write!(f, "a header length or segment size out of range"),
            Rejected::ChecksumOffset => write!(f, "a partial checksum outside the packet"),
            Rejected::Checksum => write!(f, "a TCP segment with a bad checksum"),
        }
    }
}

/// Check what the device says about `pkt` against the packet, fill in a partial checksum, and
/// check the checksum of a TCP segment the device did not vouch for, so that the stack sees a
/// packet like any other: whole checksum, any size. A super-packet stays whole (smoltcp takes
/// segments larger than its MSS). On `Err` the packet must be dropped; nothing in it was acted
/// on.
///
/// This is the checksum check of TCP on an offload interface: smoltcp does not check again
/// there (see [`InterfaceConfig::offload`](crate::InterfaceConfig::offload)), so that each
/// byte of a 64 KB segment is summed once, not twice. A partial checksum comes from the local
/// kernel, which wrote the packet: filling it in is what receiving hardware would do, not
/// trusting a checksum from the network.
///
/// # Errors
/// [`Rejected`]: a GSO type other than TCP, a super-packet that is not TCP of the family its
/// type names, a header length beyond the packet or a zero segment size, a checksum start or
/// field outside the packet, or a TCP segment with a wrong checksum.
pub fn accept(pkt: &mut [u8], meta: &RxMeta) -> Result<(), Rejected> {
    let v6 = match meta.gso {
        Gso::None => None,
        Gso::TcpV4 => Some(false),
        Gso::TcpV6 => Some(true),
        Gso::Other(t) => return Err(Rejected::GsoType(t)),
    };
    if let Some(v6) = v6 {
        let ip = wire::ip(pkt).ok_or(Rejected::NotTcp)?;
        if ip.proto != PROTO_TCP || ip.dst.is_ipv6() != v6 || ip.total != pkt.len() {
            return Err(Rejected::NotTcp);
        }
        if usize::from(meta.hdr_len) > pkt.len() || meta.gso_size == 0 {
            return Err(Rejected::HdrLen);
        }
    }
    if let Some((start, offset)) = meta.partial {
        let (start, field) = (usize::from(start), usize::from(start) + usize::from(offset));
        if field + 2 > pkt.len() || field < start {
            return Err(Rejected::ChecksumOffset);
        }
        if let Some(t) = wire::parse(pkt) {
            // A TCP segment's partial checksum can only be its own, and nothing checks it
            // again: it is computed whole, not from the pseudo-header sum the field should
            // hold (the same single pass over the bytes).
            if (start, field) != (t.ip_len, t.ip_len + 16) {
                return Err(Rejected::ChecksumOffset);
            }
            wire::set_tcp_checksum(pkt, &t);
            return Ok(());
        }
        match wire::ip(pkt) {
            // TCP that does not parse: filling it in could only make a corrupt segment parse.
            Some(ip) if ip.proto == PROTO_TCP => return Err(Rejected::NotTcp),
            // The field lies in the transport part, never in the IP header it would change.
            Some(ip) if start >= ip.hdr_len => {}
            _ => return Err(Rejected::ChecksumOffset),
        }
        // Anything else (UDP; smoltcp checks it): the field holds the pseudo-header's sum, and
        // the rest is summed with it.
        let sum = wire::sum16(&pkt[start..], 0);
        let ck = !wire::fold_sum(sum);
        // RFC 768: a UDP checksum that comes out 0 is sent as all ones.
        let ck = if ck == 0 { 0xffff } else { ck };
        pkt[field..field + 2].copy_from_slice(&ck.to_be_bytes());
    } else if !meta.valid {
        if let Some(t) = wire::parse(pkt) {
            if !wire::tcp_checksum_ok(pkt, &t) {
                return Err(Rejected::Checksum);
            }
        }
    }
    Ok(())
}

/// What the device must be told to send a packet: a partial TCP checksum, and the segment size
/// for a packet larger than the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxMeta {
    /// [`Gso::TcpV4`] or [`Gso::TcpV6`] for a super-packet, else [`Gso::None`].
    pub gso: Gso,
    /// Length of the IP and TCP headers (each segment's).
    pub hdr_len: u16,
    /// Payload bytes per segment: what fills the MTU after the headers.
    pub gso_size: u16,
    /// Where the TCP header starts, and where from there its checksum field is.
    pub partial: (u16, u16),
}

/// The most header bytes [`transmit`] copies: a 60-byte IPv4 header and a 60-byte TCP one.
pub const MAX_HEADERS: usize = 120;

/// For a TCP packet the stack sends on an offload device with MTU `mtu`: its headers, copied
/// into `head` with the checksum field set to the pseudo-header's sum (the device sums the rest,
/// so nobody sums the payload twice), and what to tell the device. The packet goes out as
/// `head[..hdr_len]` followed by `pkt[hdr_len..]`. `None` for anything else, which goes out as
/// it is.
pub fn transmit(pkt: &[u8], mtu: usize, head: &mut [u8; MAX_HEADERS]) -> Option<TxMeta> {
    let t = wire::parse(pkt)?;
    let hdr_len = t.ip_len + t.hdr_len;
    if t.total != pkt.len() || hdr_len > MAX_HEADERS {
        return None;
    }
    let gso = if pkt.len() > mtu {
        if mtu <= hdr_len {
            return None;
        }
        if t.src.is_ipv6() {
            Gso::TcpV6
        } else {
            Gso::TcpV4
        }
    } else {
        Gso::None
    };
    head[..hdr_len].copy_from_slice(&pkt[..hdr_len]);
    let partial = pseudo_header_sum(t.src.ip(), t.dst.ip(), pkt.len() - t.ip_len);
    head[t.ip_len + 16..t.ip_len + 18].copy_from_slice(&partial.to_be_bytes());
    Some(TxMeta {
        gso,
        hdr_len: hdr_len as u16,
        gso_size: if gso == Gso::None {
            0
        } else {
            (mtu - hdr_len) as u16
        },
        partial: (t.ip_len as u16, 16),
    })
}

/// The folded (not complemented) pseudo-header sum of a TCP segment of `len` bytes: what a
/// partial checksum's field holds.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, len: usize) -> u16 {
    let len = len as u32;
    let mut acc = u32::from(PROTO_TCP) + (len >> 16) + (len & 0xffff);
    acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => wire::sum16(&d.octets(), wire::sum16(&s.octets(), acc)),
        (IpAddr::V6(s), IpAddr::V6(d)) => wire::sum16(&d.octets(), wire::sum16(&s.octets(), acc)),
        _ => acc,
    };
    wire::fold_sum(acc)
}

/// The MSS a segment of `mtu` bytes leaves room for (no TCP options).
pub(crate) fn mss_for(mtu: usize, v6: bool) -> u16 {
    let ip = if v6 { 40 } else { 20 };
    mtu.saturating_sub(ip + 20).min(usize::from(u16::MAX)) as u16
}

/// A SYN on its way to smoltcp on an offload interface of MTU `mtu`: if its MSS option lets us
/// send full-sized segments, raise it to what a 64 KB packet holds, so that smoltcp writes
/// super-packets; the device cuts them to the real size. The checksum is updated for the
/// changed word only (a bad one stays bad). Returns whether it changed the segment.
pub(crate) fn raise_mss(pkt: &mut [u8], mtu: usize) -> bool {
    let Some(t) = wire::parse(pkt) else {
        return false;
    };
    if !t.has(SYN) {
        return false;
    }
    let v6 = t.src.is_ipv6();
    let full = mss_for(mtu, v6);
    set_mss(pkt, &t, |mss| {
        (mss >= full).then(|| mss_for(MAX_PACKET, v6))
    })
}

/// A SYN smoltcp wrote on an offload interface of MTU `mtu`: its MSS option (computed from the
/// 64 KB MTU smoltcp is given) back to what the device's MTU holds, so that peers send
/// segments that fit the wire. Returns whether it changed the segment.
pub(crate) fn lower_mss(pkt: &mut [u8], mtu: usize) -> bool {
    let Some(t) = wire::parse(pkt) else {
        return false;
    };
    if !t.has(SYN) {
        return false;
    }
    let full = mss_for(mtu, t.src.is_ipv6());
    set_mss(pkt, &t, |mss| (mss > full).then_some(full))
}

/// Whether a segment smoltcp is about to take on an offload interface of MTU `mtu` must be
/// acknowledged at once: it carries more than one wire segment's payload (a super-packet).
///
/// smoltcp acknowledges at once when more than the peer's MSS is unacknowledged, else after
/// its delayed-ACK timer (10 ms). The peer's MSS it sees is the raised one (64 KB), so a
/// super-packet of a slow-starting sender (its first flight, 14 KB) would wait for the timer:
/// each round trip of its slow start 10 ms long. Linux acknowledges every second full-sized
/// segment; a super-packet is at least two.
pub(crate) fn ack_at_once(pkt: &[u8], mtu: usize) -> bool {
    wire::parse(pkt).is_some_and(|t| {
        !t.has(SYN) && t.payload_len() > usize::from(mss_for(mtu, t.src.is_ipv6()))
    })
}

/// Replace the value of the MSS option by `to(value)` when that is `Some`.
fn set_mss(pkt: &mut [u8], t: &wire::Tcp, to: impl FnOnce(u16) -> Option<u16>) -> bool {
    let (start, end) = (t.ip_len + 20, t.ip_len + t.hdr_len);
    let mut i = start;
    while i < end {
        let kind = pkt[i];
        match kind {
            OPT_EOL => return false,
            OPT_NOP => i += 1,
            _ => {
                let Some(&len) = pkt.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > end {
                    return false;
                }
                if kind == OPT_MSS && len == 4 {
                    let old = u16::from_be_bytes([pkt[i + 2], pkt[i + 3]]);
                    let Some(new) = to(old) else {
                        return false;
                    };
                    wire::replace_word(pkt, t, i + 2, new);
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn segment(src: &str, dst: &str, flags: u8, mss: Option<u16>, payload: usize) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        let mut opts = Vec::new();
        if let Some(m) = mss {
            opts.extend([OPT_MSS, 4]);
            opts.extend(m.to_be_bytes());
        }
        opts.extend([OPT_NOP, OPT_NOP, 4, 2]);
        let data = (0..payload).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>();
        let mut bare = [0; 60];
        let n = wire::build(src, dst, 1000, 2000, flags, 64_000, &[], &mut bare).unwrap();
        let t = wire::parse(&bare[..n]).unwrap();
        let mut out = vec![0; 70_000];
        let n = wire::rebuild(&bare[..n], &t, &opts, &data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn checksum_ok(pkt: &[u8]) -> bool {
        let t = wire::parse(pkt).unwrap();
        wire::tcp_checksum_ok(pkt, &t)
    }

    #[test]
    fn the_fast_sum_agrees_with_the_word_by_word_one() {
        let mut seed = 0x1234_5678_u32;
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 9, 63, 1500, 65_535] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let mut slow: u64 = 7;
            for c in data.chunks(2) {
                slow += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            let fold = |mut v: u64| {
                while v > 0xffff {
                    v = (v & 0xffff) + (v >> 16);
                }
                v as u16
            };
            assert_eq!(
                fold(u64::from(wire::sum16(&data, 7))),
                fold(slow),
                "length {len}"
            );
        }
    }

    #[test]
    fn a_partial_checksum_is_filled_in_for_tcp_v4_and_v6_super_packets() {
        for (src, dst, gso) in [
            ("192.0.2.1:80", "192.0.2.2:4000", Gso::TcpV4),
            ("[2001:db8::1]:80", "[2001:db8::2]:4000", Gso::TcpV6),
        ] {
            let mut pkt = segment(src, dst, wire::ACK, None, 60_000);
            assert!(checksum_ok(&pkt));
            let mut head = [0; MAX_HEADERS];
            let tx = transmit(&pkt, 1500, &mut head).unwrap();
            assert_eq!(tx.gso, gso);
            let h = usize::from(tx.hdr_len);
            assert_eq!(usize::from(tx.gso_size), 1500 - h);
            // What a device gets: partial headers, then the payload; it fills the checksum.
            pkt[..h].copy_from_slice(&head[..h]);
            assert!(!checksum_ok(&pkt));
            let meta = RxMeta {
                gso,
                hdr_len: tx.hdr_len,
                gso_size: tx.gso_size,
                partial: Some(tx.partial),
                valid: false,
            };
            accept(&mut pkt, &meta).unwrap();
            assert!(checksum_ok(&pkt), "{src}");
        }
    }

    #[test]
    fn bad_metadata_is_rejected_without_touching_the_packet() {
        let pkt = segment("192.0.2.1:80", "192.0.2.2:4000", wire::ACK, None, 3000);
        let len = pkt.len() as u16;
        let cases = [
            (Gso::Other(3), 40, 1460, None, Rejected::GsoType(3)),
            (Gso::TcpV6, 40, 1460, None, Rejected::NotTcp),
            (Gso::TcpV4, len + 1, 1460, None, Rejected::HdrLen),
            (Gso::TcpV4, 40, 0, None, Rejected::HdrLen),
            (Gso::None, 0, 0, Some((20, len)), Rejected::ChecksumOffset),
            (
                Gso::None,
                0,
                0,
                Some((len - 1, 0)),
                Rejected::ChecksumOffset,
            ),
            (
                Gso::None,
                0,
                0,
                Some((u16::MAX, u16::MAX)),
                Rejected::ChecksumOffset,
            ),
            // Inside the packet, but not the TCP checksum field.
            (Gso::None, 0, 0, Some((20, 6)), Rejected::ChecksumOffset),
            (Gso::None, 0, 0, Some((0, 10)), Rejected::ChecksumOffset),
        ];
        for (gso, hdr_len, gso_size, partial, why) in cases {
            let mut p = pkt.clone();
            let meta = RxMeta {
                gso,
                hdr_len,
                gso_size,
                partial,
                valid: false,
            };
            assert_eq!(accept(&mut p, &meta), Err(why));
            assert_eq!(p, pkt);
        }
        // A corrupt segment is rejected unless the device vouched for it.
        let mut bad = pkt.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(accept(&mut bad, &RxMeta::PLAIN), Err(Rejected::Checksum));
        let vouched = RxMeta {
            valid: true,
            ..RxMeta::PLAIN
        };
        assert_eq!(accept(&mut bad, &vouched), Ok(()));
        assert_eq!(accept(&mut pkt.clone(), &RxMeta::PLAIN), Ok(()));
        // A UDP packet named a TCP super-packet.
        let mut udp = pkt.clone();
        udp[9] = wire::PROTO_UDP;
        let meta = RxMeta {
            gso: Gso::TcpV4,
            hdr_len: 40,
            gso_size: 1460,
            partial: None,
            valid: true,
        };
        assert_eq!(accept(&mut udp, &meta), Err(Rejected::NotTcp));
    }

    #[test]
    fn mss_options_are_raised_on_the_way_in_and_lowered_on_the_way_out() {
        for (src, dst, full, big) in [
            ("192.0.2.1:80", "192.0.2.2:4000", 1460, 65_495),
            ("[2001:db8::1]:80", "[2001:db8::2]:4000", 1440, 65_475),
        ] {
            let mut syn = segment(src, dst, SYN, Some(full), 0);
            assert!(raise_mss(&mut syn, 1500));
            let t = wire::parse(&syn).unwrap();
            assert_eq!(wire::mss(t.options(&syn)), Some(big));
            assert!(checksum_ok(&syn));
            assert!(lower_mss(&mut syn, 1500));
            let t = wire::parse(&syn).unwrap();
            assert_eq!(wire::mss(t.options(&syn)), Some(full));
            assert!(checksum_ok(&syn));
            // A peer that takes less than full-sized segments keeps its MSS.
            let mut small = segment(src, dst, SYN | wire::ACK, Some(1200), 0);
            let before = small.clone();
            assert!(!raise_mss(&mut small, 1500));
            assert_eq!(small, before);
            // Not a SYN, or no MSS option: untouched.
            let mut ack = segment(src, dst, wire::ACK, None, 10);
            assert!(!raise_mss(&mut ack, 1500));
            let mut bare = segment(src, dst, SYN, None, 0);
            assert!(!raise_mss(&mut bare, 1500));
        }
    }

    #[test]
    fn only_tcp_gets_offload_metadata_and_small_packets_are_not_cut() {
        let mut head = [0; MAX_HEADERS];
        let small = segment("192.0.2.1:80", "192.0.2.2:4000", wire::ACK, None, 100);
        let tx = transmit(&small, 1500, &mut head).unwrap();
        assert_eq!((tx.gso, tx.gso_size), (Gso::None, 0));
        let mut udp = small.clone();
        udp[9] = wire::PROTO_UDP;
        assert_eq!(transmit(&udp, 1500, &mut head), None);
    }
}
