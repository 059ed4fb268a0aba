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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

use crate::error::ConnectionError;
use crate::stack::Proto;

/// Most connection attempts whose initial sequence number is remembered.
const MAX_SYNS: usize = 1 << 16;

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

/// What the interfaces saw for ICMP during a poll, and the SYNs needed to check reports.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) reports: Vec<Report>,
    /// Initial sequence number of each connection attempt, by (local, remote).
    syns: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl Tracker {
    /// Look at a packet that arrived; keep it if it is an ICMP error about one of ours.
    pub(crate) fn arrived(&mut self, packet: &[u8]) {
        if let Some(r) = parse(packet) {
            // A flood of ICMP errors costs at most this much until the next settle.
            if self.reports.len() < 1024 {
                self.reports.push(r);
            }
        }
    }

    /// Look at a packet about to leave: remember the sequence number of a SYN.
    pub(crate) fn sent(&mut self, packet: &[u8]) {
        let Some((local, remote, seq)) = outgoing_syn(packet) else {
            return;
        };
        if self.syns.len() < MAX_SYNS || self.syns.contains_key(&(local, remote)) {
            self.syns.insert((local, remote), seq);
        }
    }

    /// The sequence number of the SYN of attempt (`local`, `remote`).
    pub(crate) fn syn_seq(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        self.syns.get(&(local, remote)).copied()
    }

    /// How many attempts' SYNs are remembered.
    #[cfg(test)]
    pub(crate) fn syns_remembered(&self) -> usize {
        self.syns.len()
    }

    /// The attempt is over (connected, failed or closed): its SYN no longer matters.
    pub(crate) fn forget_syn(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.syns.remove(&(local, remote));
    }
}

fn ipv4(b: Option<&[u8]>) -> Option<Ipv4Addr> {
    let b: [u8; 4] = b?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv6(b: Option<&[u8]>) -> Option<Ipv6Addr> {
    let b: [u8; 16] = b?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

fn be16(b: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_be_bytes(b?.try_into().ok()?))
}

fn be32(b: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_be_bytes(b?.try_into().ok()?))
}

/// (source, destination, header length, protocol) of an IP header, possibly truncated after
/// its first 8 bytes of payload, as ICMP quotes it. IPv6 extension headers are not followed.
fn ip_header(p: &[u8]) -> Option<(IpAddr, IpAddr, usize, u8)> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let src = ipv4(p.get(12..16))?;
            let dst = ipv4(p.get(16..20))?;
            Some((src.into(), dst.into(), ihl, *p.get(9)?))
        }
        6 => {
            let src = ipv6(p.get(8..24))?;
            let dst = ipv6(p.get(24..40))?;
            Some((src.into(), dst.into(), 40, *p.get(6)?))
        }
        _ => None,
    }
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
    let (src, dst, hlen, proto) = ip_header(quoted)?;
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

/// (local, remote, sequence number) of a TCP SYN without ACK about to be sent.
fn outgoing_syn(packet: &[u8]) -> Option<(SocketAddr, SocketAddr, u32)> {
    let (src, dst, hlen, proto) = match packet.first()? >> 4 {
        4 if packet.get(9) == Some(&6) => ip_header(packet)?,
        6 if packet.get(6) == Some(&6) => ip_header(packet)?,
        _ => return None,
    };
    debug_assert_eq!(proto, 6);
    let tcp = packet.get(hlen..)?;
    let flags = *tcp.get(13)?;
    // SYN set, ACK clear.
    if flags & 0x12 != 0x02 {
        return None;
    }
    Some((
        SocketAddr::new(src, be16(tcp.get(0..2))?),
        SocketAddr::new(dst, be16(tcp.get(2..4))?),
        be32(tcp.get(4..8))?,
    ))
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
        assert_eq!(
            outgoing_syn(&syn),
            Some((r.local, r.remote, 1234)),
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
            let _ = outgoing_syn(&p[..n]);
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
            let _ = outgoing_syn(&buf);
        }
    }

    #[test]
    fn tracker_remembers_syns_and_forgets_them() {
        let mut t = Tracker::default();
        let syn = syn_v4();
        t.sent(&syn);
        let (l, r) = (
            "192.0.2.2:40000".parse().unwrap(),
            "198.51.100.7:80".parse().unwrap(),
        );
        assert_eq!(t.syn_seq(l, r), Some(1234));
        t.forget_syn(l, r);
        assert_eq!(t.syn_seq(l, r), None);
        t.arrived(&icmp_v4(3, 1, &syn, [192, 0, 2, 2]));
        assert_eq!(t.reports.len(), 1);
    }
}
