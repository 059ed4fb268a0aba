//! IP fragmentation of outgoing UDP datagrams.
//!
//! XNU sends a UDP datagram larger than the path's MTU in fragments, up to its 9,216-byte
//! datagram limit (`net.inet.udp.maxdgram`), and Darwin programs rely on that where Linux's
//! `EMSGSIZE` would surprise them (issue 12, point 7). smoltcp cannot do it for us: it
//! fragments IPv4 only, through one buffer per interface that the next large datagram
//! overwrites before the last fragments of the one before are out, and drops IPv6 packets
//! above the MTU. So the stack builds these datagrams itself, here, and sends them after what
//! the socket queued in smoltcp before them (the datagrams of one socket leave in order).
//!
//! Only sending: fragments that arrive are not reassembled (they are dropped, as before). A
//! reassembly table is one that any peer can fill with first fragments that never complete;
//! it would need per-source limits to be safe, and nothing asks for it yet.

use std::net::{IpAddr, SocketAddr};

use crate::wire;

/// The largest UDP payload sent (XNU's `net.inet.udp.maxdgram`); above the path's MTU, it
/// leaves in fragments.
pub(crate) const MAX_DATAGRAM: usize = 9216;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
/// IPv6's Fragment extension header (RFC 8200 §4.5).
const FRAGMENT_HEADER: usize = 8;
const NEXT_HEADER_FRAGMENT: u8 = 44;
const HOP_LIMIT: u8 = 64;

/// The UDP datagram `payload` from `src` to `dst` as IP packets of at most `mtu` bytes: one
/// packet when it fits, else fragments whose identification is `ident` (its low 16 bits for
/// IPv4). `None` when the addresses' families differ, the datagram exceeds what IP can carry,
/// or `mtu` leaves no room for a fragment's data.
pub(crate) fn udp_packets(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    mtu: usize,
    ident: u32,
) -> Option<Vec<Vec<u8>>> {
    let udp = udp_segment(src, dst, payload)?;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ipv4_packets(src.ip(), dst.ip(), &udp, mtu, ident),
        (IpAddr::V6(_), IpAddr::V6(_)) => ipv6_packets(src.ip(), dst.ip(), &udp, mtu, ident),
        _ => None,
    }
}

/// UDP header and payload, with the checksum.
fn udp_segment(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(UDP_HEADER + payload.len()).ok()?;
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let ck = match wire::transport_checksum(src.ip(), dst.ip(), wire::PROTO_UDP, &udp) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        ck => ck,
    };
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    Some(udp)
}

/// Data bytes per fragment: what fits after `headers`, a multiple of eight (the offset unit).
fn fragment_room(mtu: usize, headers: usize) -> Option<usize> {
    Some(mtu.checked_sub(headers)? & !7).filter(|&n| n > 0)
}

fn ipv4_packets(
    src: IpAddr,
    dst: IpAddr,
    udp: &[u8],
    mtu: usize,
    ident: u32,
) -> Option<Vec<Vec<u8>>> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        return None;
    };
    if IPV4_HEADER + udp.len() > usize::from(u16::MAX) {
        return None;
    }
    let whole = IPV4_HEADER + udp.len() <= mtu;
    let room = if whole {
        udp.len()
    } else {
        fragment_room(mtu, IPV4_HEADER)?
    };
    let mut packets = Vec::with_capacity(udp.len().div_ceil(room.max(1)));
    for (i, data) in udp.chunks(room).enumerate() {
        let offset = i * room;
        let last = offset + data.len() == udp.len();
        let total = IPV4_HEADER + data.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
        // A datagram that fits says "don't fragment", as smoltcp's and Linux's do; fragments
        // carry "more fragments" on all but the last, and their offset in 8-byte units.
        let flags_offset: u16 = if whole {
            0x4000
        } else {
            (if last { 0 } else { 0x2000 }) | (offset / 8) as u16
        };
        p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        p[8] = HOP_LIMIT;
        p[9] = wire::PROTO_UDP;
        p[12..16].copy_from_slice(&s.octets());
        p[16..20].copy_from_slice(&d.octets());
        let ck = wire::ipv4_header_checksum(&p[..IPV4_HEADER]);
        p[10..12].copy_from_slice(&ck.to_be_bytes());
        p[IPV4_HEADER..].copy_from_slice(data);
        packets.push(p);
    }
    Some(packets)
}

fn ipv6_packets(
    src: IpAddr,
    dst: IpAddr,
    udp: &[u8],
    mtu: usize,
    ident: u32,
) -> Option<Vec<Vec<u8>>> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        return None;
    };
    let header = |p: &mut [u8], next: u8| {
        let payload_len = (p.len() - IPV6_HEADER) as u16;
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = next;
        p[7] = HOP_LIMIT;
        p[8..24].copy_from_slice(&s.octets());
        p[24..40].copy_from_slice(&d.octets());
    };
    if IPV6_HEADER + udp.len() <= mtu {
        let mut p = vec![0u8; IPV6_HEADER + udp.len()];
        header(&mut p, wire::PROTO_UDP);
        p[IPV6_HEADER..].copy_from_slice(udp);
        return Some(vec![p]);
    }
    let room = fragment_room(mtu, IPV6_HEADER + FRAGMENT_HEADER)?;
    let mut packets = Vec::with_capacity(udp.len().div_ceil(room));
    for (i, data) in udp.chunks(room).enumerate() {
        let offset = i * room;
        let last = offset + data.len() == udp.len();
        let mut p = vec![0u8; IPV6_HEADER + FRAGMENT_HEADER + data.len()];
        header(&mut p, NEXT_HEADER_FRAGMENT);
        let f = &mut p[IPV6_HEADER..IPV6_HEADER + FRAGMENT_HEADER];
        f[0] = wire::PROTO_UDP;
        // Offset in 8-byte units in the top 13 bits; the low bit says more follow.
        let offset_flags = (offset as u16) | u16::from(!last);
        f[2..4].copy_from_slice(&offset_flags.to_be_bytes());
        f[4..8].copy_from_slice(&ident.to_be_bytes());
        p[IPV6_HEADER + FRAGMENT_HEADER..].copy_from_slice(data);
        packets.push(p);
    }
    Some(packets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket};

    fn addrs(v6: bool) -> (SocketAddr, SocketAddr) {
        if v6 {
            (
                "[2001:db8::2]:5353".parse().unwrap(),
                "[2001:db8::1]:53".parse().unwrap(),
            )
        } else {
            (
                "192.0.2.2:5353".parse().unwrap(),
                "192.0.2.1:53".parse().unwrap(),
            )
        }
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Put the fragments back together (checking every header smoltcp can read) and return the
    /// UDP segment.
    fn reassemble(packets: &[Vec<u8>], mtu: usize) -> Vec<u8> {
        let mut udp = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            assert!(
                p.len() <= mtu,
                "packet {i} is {} bytes, over {mtu}",
                p.len()
            );
            let last = i + 1 == packets.len();
            if p[0] >> 4 == 4 {
                let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.next_header(), IpProtocol::Udp);
                assert_eq!(usize::from(ip.frag_offset()), udp.len());
                assert_eq!(ip.more_frags(), !last);
                if packets.len() == 1 {
                    assert!(ip.dont_frag());
                } else {
                    assert!(!ip.dont_frag());
                    assert_eq!(ip.ident(), 0x5678);
                }
                udp.extend_from_slice(ip.payload());
            } else {
                let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
                if packets.len() == 1 {
                    assert_eq!(ip.next_header(), IpProtocol::Udp);
                    udp.extend_from_slice(ip.payload());
                } else {
                    assert_eq!(ip.next_header(), IpProtocol::Ipv6Frag);
                    // RFC 8200 §4.5, read by hand: next header, reserved, offset and M flag,
                    // identification.
                    let f = &ip.payload()[..FRAGMENT_HEADER];
                    assert_eq!(f[0], wire::PROTO_UDP);
                    let offset_flags = u16::from_be_bytes([f[2], f[3]]);
                    assert_eq!(usize::from(offset_flags & !7), udp.len());
                    assert_eq!(offset_flags & 1 == 1, !last);
                    assert_eq!(u32::from_be_bytes([f[4], f[5], f[6], f[7]]), 0x1234_5678);
                    udp.extend_from_slice(&ip.payload()[FRAGMENT_HEADER..]);
                }
            }
            if !last {
                assert_eq!(
                    udp.len() % 8,
                    0,
                    "a fragment that is not the last is 8-aligned"
                );
            }
        }
        udp
    }

    #[test]
    fn datagrams_above_the_mtu_leave_in_fragments_that_reassemble_to_a_valid_datagram() {
        for v6 in [false, true] {
            let (src, dst) = addrs(v6);
            for (len, mtu, count) in [
                (100, 1500, 1),
                (1472, 1500, 1),
                (9216, 1500, 7),
                (3000, 1280, 3),
            ] {
                let data = payload(len);
                let packets = udp_packets(src, dst, &data, mtu, 0x1234_5678).unwrap();
                let udp = reassemble(&packets, mtu);
                let seg = UdpPacket::new_checked(&udp[..]).unwrap();
                assert!(
                    seg.verify_checksum(&src.ip().into(), &dst.ip().into()),
                    "checksum of {len} B over MTU {mtu} (v6: {v6})"
                );
                assert_eq!((seg.src_port(), seg.dst_port()), (src.port(), dst.port()));
                assert_eq!(seg.payload(), &data[..]);
                // IPv6 fits 8 bytes less per packet (the Fragment header), so 1472 B does not
                // fit whole in 1500 there, nor in fewer packets than IPv4 needs.
                let expected = if v6 && len == 1472 { 2 } else { count };
                assert_eq!(packets.len(), expected, "{len} B over MTU {mtu} (v6: {v6})");
            }
        }
    }

    #[test]
    fn impossible_datagrams_are_refused() {
        let (v4, _) = addrs(false);
        let (v6, _) = addrs(true);
        assert!(
            udp_packets(v4, v6, b"x", 1500, 1).is_none(),
            "mixed families"
        );
        assert!(
            udp_packets(v4, v4, &payload(65_508), 1500, 1).is_none(),
            "over IPv4's limit"
        );
        assert!(
            udp_packets(v4, v4, &payload(100), 24, 1).is_none(),
            "no room for a fragment"
        );
    }
}
