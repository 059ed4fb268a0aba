//! ICMP errors about the stack's own packets: which connection one concerns and what it means.
//!
//! smoltcp reads ICMP errors and drops them; a connection to an unreachable host would then
//! retry its SYNs until the connect timeout. The stack looks at each arriving ICMP error first,
//! finds the connection or association from the packet quoted in it, and fails it the way Linux
//! does:
//!
//! - TCP in SYN-SENT: the attempt ends at once with the error (`EHOSTUNREACH`, `ENETUNREACH`,
//!   `ECONNREFUSED`), provided the quoted sequence number is the SYN's (RFC 5927 §4.1: a blind
//!   attacker must guess it). Darwin instead keeps retrying and reports the error only when the
//!   attempt times out; failing at once is what Linux does and what a caller waiting on a
//!   blocking `connectx` wants. Established connections ignore ICMP errors (RFC 5461: they are
//!   soft errors; a route may come back).
//! - UDP with an association: the next `send` or `recv` (and `SO_ERROR`) reports it, once.
//!
//! Path MTU discovery (fragmentation needed, packet too big) is not done: the stack sends
//! nothing larger than its interface's MTU.

use std::net::{IpAddr, SocketAddr};

use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

use crate::error::ConnectionError;
use crate::ids::Proto;
use crate::wire;

/// An ICMP error about a packet this stack sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) proto: Proto,
    /// Our end of the quoted packet (its source).
    pub(crate) local: SocketAddr,
    /// Its destination.
    pub(crate) remote: SocketAddr,
    /// The quoted TCP sequence number.
    pub(crate) seq: Option<u32>,
    pub(crate) error: ConnectionError,
}

fn be16(b: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_be_bytes(b?.try_into().ok()?))
}

fn be32(b: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_be_bytes(b?.try_into().ok()?))
}

/// The ICMP error in `packet`, if it is one (checksums verified) about a TCP or UDP packet sent
/// from the address it arrived at.
pub(crate) fn parse(packet: &[u8]) -> Option<Report> {
    // The common case, not ICMP, costs two byte reads.
    let (to, quoted, error) = match packet.first()? >> 4 {
        4 if packet.get(9) == Some(&1) => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if !ip.verify_checksum() {
                return None;
            }
            let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
            if !icmp.verify_checksum() {
                return None;
            }
            let error = match (u8::from(icmp.msg_type()), icmp.msg_code()) {
                // Fragmentation needed: path MTU discovery, not done.
                (3, 4) => return None,
                (3, 0 | 6 | 9 | 11) => ConnectionError::NetworkUnreachable,
                (3, 2 | 3) => ConnectionError::Refused,
                (3, _) | (11, _) => ConnectionError::HostUnreachable,
                _ => return None,
            };
            (IpAddr::from(ip.dst_addr()), icmp.data(), error)
        }
        6 if packet.get(6) == Some(&58) => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let payload = ip.payload();
            let icmp = Icmpv6Packet::new_checked(payload).ok()?;
            if !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
                return None;
            }
            let error = match (u8::from(icmp.msg_type()), icmp.msg_code()) {
                (1, 0) => ConnectionError::NetworkUnreachable,
                (1, 4) => ConnectionError::Refused,
                (1, _) | (3, _) => ConnectionError::HostUnreachable,
                _ => return None,
            };
            // Destination unreachable and time exceeded quote the packet after 4 unused bytes.
            (IpAddr::from(ip.dst_addr()), payload.get(8..)?, error)
        }
        _ => return None,
    };
    let (src, dst, hlen, proto) = wire::ip_prefix(quoted)?;
    if src != to {
        return None;
    }
    let l4 = quoted.get(hlen..)?;
    let proto = match proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    let sport = be16(l4.get(0..2))?;
    let dport = be16(l4.get(2..4))?;
    let seq = match proto {
        Proto::Tcp => Some(be32(l4.get(4..8))?),
        Proto::Udp => None,
    };
    Some(Report {
        proto,
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        seq,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(data: &[u8], init: u32) -> u16 {
        let mut sum = init;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
        let total = (20 + payload_len) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let c = checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// A SYN from 192.0.2.2:40000 to 198.51.100.7:80 with sequence number 1234.
    fn syn_v4() -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1234u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x02;
        let mut p = ipv4_header([192, 0, 2, 2], [198, 51, 100, 7], 6, tcp.len());
        p.extend_from_slice(&tcp);
        p
    }

    fn icmp_v4(ty: u8, code: u8, quoted: &[u8], to: [u8; 4]) -> Vec<u8> {
        let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..quoted.len().min(28)]);
        let c = checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = ipv4_header([192, 0, 2, 1], to, 1, icmp.len());
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn host_unreachable_about_a_syn_names_the_attempt() {
        let syn = syn_v4();
        let r = parse(&icmp_v4(3, 1, &syn, [192, 0, 2, 2])).expect("an ICMP error");
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.local, "192.0.2.2:40000".parse().unwrap());
        assert_eq!(r.remote, "198.51.100.7:80".parse().unwrap());
        assert_eq!(r.seq, Some(1234));
        assert_eq!(r.error, ConnectionError::HostUnreachable);
        let t = wire::parse(&syn).unwrap();
        assert_eq!(
            (t.src, t.dst, t.seq),
            (r.local, r.remote, 1234),
            "the SYN's own sequence number is what the report quotes"
        );
    }

    #[test]
    fn codes_map_as_linux_maps_them() {
        let syn = syn_v4();
        let error = |ty, code| parse(&icmp_v4(ty, code, &syn, [192, 0, 2, 2])).map(|r| r.error);
        assert_eq!(error(3, 0), Some(ConnectionError::NetworkUnreachable));
        assert_eq!(error(3, 3), Some(ConnectionError::Refused));
        assert_eq!(error(3, 13), Some(ConnectionError::HostUnreachable));
        assert_eq!(error(11, 0), Some(ConnectionError::HostUnreachable));
        assert_eq!(
            error(3, 4),
            None,
            "fragmentation needed is not an error here"
        );
        assert_eq!(error(8, 0), None, "an echo request is no error");
    }

    #[test]
    fn bad_checksum_or_foreign_quote_is_ignored() {
        let syn = syn_v4();
        let mut p = icmp_v4(3, 1, &syn, [192, 0, 2, 2]);
        let last = p.len() - 1;
        p[last] ^= 0xff;
        assert_eq!(parse(&p), None, "corrupt ICMP checksum");
        assert_eq!(
            parse(&icmp_v4(3, 1, &syn, [192, 0, 2, 9])),
            None,
            "quoted packet not sent from the address the error came to"
        );
    }

    #[test]
    fn never_panics_on_truncations_and_garbage() {
        let p = icmp_v4(3, 1, &syn_v4(), [192, 0, 2, 2]);
        for n in 0..p.len() {
            let _ = parse(&p[..n]);
        }
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            let len = (x % 120) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                buf.push((x >> 16) as u8);
            }
            if let Some(b) = buf.first_mut() {
                *b = if x & 1 == 0 { 0x45 } else { 0x60 };
            }
            let _ = parse(&buf);
        }
    }
}
