//! Source address selection: RFC 6724 section 5 for IPv6, the same ideas for IPv4.
//!
//! smoltcp's own selection is not used: it breaks rule 1, answers `::1` when an interface has
//! no IPv6 address, and picks link-local sources for global destinations. Candidates here are the
//! addresses of the one interface the route (or `sae_srcif`) chose, so rule 5 (prefer the outgoing
//! interface) holds by construction. Rules 3, 4 and 7 (deprecated, home and temporary addresses)
//! do not arise: this stack has none of those.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv6Addr};

use crate::addr::{common_prefix_len, Cidr};

/// Scope of an address (RFC 6724 §3.1 and RFC 4291 §2.5); larger is wider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    InterfaceLocal = 0x1,
    LinkLocal = 0x2,
    SiteLocal = 0x5,
    Global = 0xe,
}

pub(crate) fn scope(ip: &IpAddr) -> Scope {
    match ip {
        // RFC 6724 §3.2: IPv4 loopback and autoconfiguration addresses are link-local in scope.
        IpAddr::V4(a) if a.is_loopback() || a.is_link_local() => Scope::LinkLocal,
        IpAddr::V4(_) => Scope::Global,
        IpAddr::V6(a) if a.is_loopback() => Scope::LinkLocal,
        IpAddr::V6(a) if a.is_multicast() => match a.segments()[0] & 0x000f {
            0x1 => Scope::InterfaceLocal,
            0x2 => Scope::LinkLocal,
            0x5 => Scope::SiteLocal,
            _ => Scope::Global,
        },
        IpAddr::V6(a) if a.is_unicast_link_local() => Scope::LinkLocal,
        // fec0::/10, deprecated site-local.
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfec0 => Scope::SiteLocal,
        IpAddr::V6(_) => Scope::Global,
    }
}

/// The label of the default policy table (RFC 6724 §2.1).
fn label(ip: &Ipv6Addr) -> u8 {
    let s = ip.segments();
    if *ip == Ipv6Addr::LOCALHOST {
        0
    } else if s[0] == 0x2002 {
        2
    } else if s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        4
    } else if s[..6] == [0; 6] {
        3
    } else if s[0] == 0x2001 && s[1] == 0 {
        5
    } else if s[0] & 0xfe00 == 0xfc00 {
        13
    } else if s[0] & 0xffc0 == 0xfec0 {
        11
    } else if s[0] == 0x3ffe {
        12
    } else {
        1
    }
}

/// Choose the source for `dest` among `candidates` (the outgoing interface's addresses).
///
/// Only addresses of the destination's family are considered. A source of smaller scope than a
/// global destination (link-local for a global address) is never chosen: such a packet could not
/// be answered beyond the link.
pub fn select_source(dest: &IpAddr, candidates: &[Cidr]) -> Option<IpAddr> {
    candidates
        .iter()
        .map(|c| c.addr())
        .filter(|a| a.is_ipv4() == dest.is_ipv4() && !a.is_unspecified() && !a.is_multicast())
        .filter(|a| !(scope(a) == Scope::LinkLocal && scope(dest) == Scope::Global))
        .min_by(|a, b| compare(a, b, dest))
}

/// RFC 6724 §5: `Less` means `a` is preferred.
fn compare(a: &IpAddr, b: &IpAddr, dest: &IpAddr) -> Ordering {
    // Rule 1: prefer the same address.
    if a == dest {
        return Ordering::Less;
    }
    if b == dest {
        return Ordering::Greater;
    }
    // Rule 2: prefer appropriate scope.
    let (sa, sb, sd) = (scope(a), scope(b), scope(dest));
    if sa < sb {
        return if sa < sd {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    if sb < sa {
        return if sb < sd {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // Rule 6: prefer matching label.
    if let (IpAddr::V6(a6), IpAddr::V6(b6), IpAddr::V6(d6)) = (a, b, dest) {
        let (la, lb, ld) = (label(a6), label(b6), label(d6));
        if la == ld && lb != ld {
            return Ordering::Less;
        }
        if lb == ld && la != ld {
            return Ordering::Greater;
        }
    }
    // Rule 8: longest matching prefix (compared over at most the 64-bit IPv6 prefix, as the
    // RFC's CommonPrefixLen is bounded by the source's prefix; IPv4 over the whole address).
    let cap = if dest.is_ipv4() { 32 } else { 64 };
    let pa = common_prefix_len(a, dest).min(cap);
    let pb = common_prefix_len(b, dest).min(cap);
    pb.cmp(&pa)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn pick(dest: &str, list: &[&str]) -> Option<String> {
        select_source(&dest.parse().unwrap(), &cands(list)).map(|a| a.to_string())
    }

    #[test]
    fn global_destination_never_gets_link_local() {
        let c = ["fe80::2/64", "2001:db8:1::2/64"];
        assert_eq!(pick("2001:db8:2::1", &c).as_deref(), Some("2001:db8:1::2"));
        assert_eq!(pick("2001:db8:2::1", &["fe80::2/64"]), None);
    }

    #[test]
    fn link_local_destination_prefers_link_local() {
        let c = ["2001:db8:1::2/64", "fe80::2/64"];
        assert_eq!(pick("fe80::1", &c).as_deref(), Some("fe80::2"));
    }

    #[test]
    fn rule1_same_address_first() {
        let c = ["2001:db8::5/64", "2001:db8::7/64"];
        assert_eq!(pick("2001:db8::7", &c).as_deref(), Some("2001:db8::7"));
    }

    #[test]
    fn rule6_matching_label() {
        // A ULA destination prefers the ULA source over a global one.
        let c = ["2001:db8::2/64", "fd00:1::2/64"];
        assert_eq!(pick("fd00:2::1", &c).as_deref(), Some("fd00:1::2"));
    }

    #[test]
    fn rule8_longest_prefix_and_family() {
        let c = ["192.0.2.2/24", "198.51.100.2/24", "2001:db8::2/64"];
        assert_eq!(pick("198.51.100.9", &c).as_deref(), Some("198.51.100.2"));
        assert_eq!(pick("2001:db8::9", &c).as_deref(), Some("2001:db8::2"));
        assert_eq!(pick("2001:db8::9", &["192.0.2.2/24"]), None);
        assert_eq!(pick("192.0.2.1", &["2001:db8::2/64"]), None);
    }
}
