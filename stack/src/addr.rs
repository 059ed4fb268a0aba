//! Addresses with a prefix length, and the small facts about addresses the rest of the stack needs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use smoltcp::wire::{IpAddress, IpCidr};

/// An address with a prefix length, written `192.0.2.2/24` or `2001:db8::2/64`.
///
/// The address keeps its host bits: `192.0.2.2/24` is "the address 192.0.2.2 on the network
/// 192.0.2.0/24", which is what an interface address and a route both need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// No `/len` part: an interface address needs its prefix length.
    #[error(
        "`{0}` has no prefix length: write it as ADDRESS/LEN, e.g. 192.0.2.2/24 or 2001:db8::2/64"
    )]
    MissingPrefix(String),
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The prefix length is not a number, or longer than the address (32 or 128 bits).
    #[error("prefix length `{len}` is not valid for {addr} (0..={max})")]
    BadPrefix {
        /// The address.
        addr: IpAddr,
        /// The prefix length as written.
        len: String,
        /// The largest prefix length for this family.
        max: u8,
    },
}

impl Cidr {
    /// An address and a prefix length.
    ///
    /// # Errors
    /// [`CidrError::BadPrefix`] when `prefix_len` exceeds the family's address length.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(&addr);
        if prefix_len > max {
            return Err(CidrError::BadPrefix {
                addr,
                len: prefix_len.to_string(),
                max,
            });
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// The default route of a family: `0.0.0.0/0` or `::/0`.
    pub fn default_v4() -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix_len: 0,
        }
    }

    /// `::/0`.
    pub fn default_v6() -> Cidr {
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix_len: 0,
        }
    }

    /// The address, host bits included.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network: the address with its host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask32(self.prefix_len))),
            IpAddr::V6(a) => {
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask128(self.prefix_len)))
            }
        };
        Cidr {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies in this prefix (same family, same leading `prefix_len` bits).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = mask32(self.prefix_len);
                a.to_bits() & m == b.to_bits() & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = mask128(self.prefix_len);
                a.to_bits() & m == b.to_bits() & m
            }
            _ => false,
        }
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub(crate) fn to_smoltcp(self) -> IpCidr {
        IpCidr::new(IpAddress::from(self.addr), self.prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix(s.to_owned()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_owned()))?;
        let max = max_prefix(&addr);
        let bad = || CidrError::BadPrefix {
            addr,
            len: len.to_owned(),
            max,
        };
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        Cidr::new(addr, prefix_len).map_err(|_| bad())
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Leading bits two addresses of one family share (0 across families).
pub(crate) fn common_prefix_len(a: &IpAddr, b: &IpAddr) -> u8 {
    let bits = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
        _ => 0,
    };
    // At most 128, so it fits.
    bits as u8
}

/// Whether an address can be the destination of a unicast connection or datagram.
pub(crate) fn is_unicast_destination(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// The address as smoltcp spells it.
pub(crate) fn to_smoltcp(ip: IpAddr) -> IpAddress {
    IpAddress::from(ip)
}

/// The address as std spells it.
pub(crate) fn from_smoltcp(ip: IpAddress) -> IpAddr {
    IpAddr::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        let c: Cidr = "192.0.2.2/24".parse().unwrap();
        assert_eq!(c.addr(), "192.0.2.2".parse::<IpAddr>().unwrap());
        assert!(c.contains(&"192.0.2.200".parse().unwrap()));
        assert!(!c.contains(&"192.0.3.1".parse().unwrap()));
        assert!(!c.contains(&"2001:db8::1".parse().unwrap()));
        assert_eq!(c.network().to_string(), "192.0.2.0/24");
        let d: Cidr = "2001:db8::2/64".parse().unwrap();
        assert!(d.contains(&"2001:db8::ffff".parse().unwrap()));
        assert!(Cidr::default_v6().contains(&"2001:db8::1".parse().unwrap()));
        assert!(Cidr::default_v4().contains(&"203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_text_with_a_reason() {
        assert!(matches!(
            "192.0.2.2".parse::<Cidr>(),
            Err(CidrError::MissingPrefix(_))
        ));
        assert!(matches!(
            "192.0.2.2/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix { .. })
        ));
        assert!(matches!(
            "2001:db8::1/129".parse::<Cidr>(),
            Err(CidrError::BadPrefix { .. })
        ));
        assert!(matches!(
            "cx0/24".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
        assert!(matches!(
            "192.0.2.2/x".parse::<Cidr>(),
            Err(CidrError::BadPrefix { .. })
        ));
    }

    #[test]
    fn common_prefix() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(common_prefix_len(&a, &b), 126);
        assert_eq!(common_prefix_len(&a, &"192.0.2.1".parse().unwrap()), 0);
    }
}
