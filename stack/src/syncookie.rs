//! SYN cookies (RFC 4987 §3.6), as Linux uses them by default (`net.ipv4.tcp_syncookies = 1`):
//! when a listener's queue of half-open handshakes is full, a SYN is answered with a SYN-ACK
//! whose sequence number encodes the connection, a time and the client's MSS, and nothing is
//! kept. The client's ACK brings the number back; if it checks out (and the accept queue has
//! room), the connection is made then.
//!
//! smoltcp picks its own initial sequence number, so a connection made from a cookie is
//! replayed to it: a SYN rebuilt from the ACK (the cookie's MSS, no window scale, no SACK, as
//! Linux's cookies without timestamps), smoltcp's SYN-ACK swallowed, and from then on its
//! sequence numbers shifted to the cookie's on the way out, and the peer's acknowledgements
//! shifted back on the way in.
//!
//! The number, as Linux lays it out (`secure_tcp_syn_cookie`), with SipHash-2-4 under a random
//! key of the stack:
//! `hash(tuple, 0) + client ISN + (count << 24) + ((hash(tuple, count) + mss index) mod 2^24)`,
//! where `count` is the time in 64-second periods; a cookie is good for 2 periods.

use std::net::{IpAddr, SocketAddr};

use smoltcp::time::Instant;

use crate::fastopen::cookie::siphash24;
use crate::ids::Tuple;

/// MSS values a cookie can stand for, by family (Linux's `msstab`).
const MSS_V4: [u16; 4] = [536, 1300, 1440, 1460];
const MSS_V6: [u16; 4] = [1220, 1420, 1440, 8940];
/// One count of the cookie clock, in microseconds.
const PERIOD_US: i64 = 64_000_000;
/// Periods a cookie stays good.
const MAX_AGE: u32 = 2;
/// How long a cookie stays good (after it, an ACK cannot bring back one that checks out).
pub(crate) const LIFETIME: smoltcp::time::Duration =
    smoltcp::time::Duration::from_micros(PERIOD_US as u64 * MAX_AGE as u64);
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;

/// The stack's SYN cookie key.
#[derive(Debug, Clone)]
pub(crate) struct SynCookies {
    k0: u64,
    k1: u64,
}

impl SynCookies {
    pub(crate) fn new(key: [u64; 2]) -> SynCookies {
        SynCookies {
            k0: key[0],
            k1: key[1],
        }
    }

    fn hash(&self, (local, remote): Tuple, count: u32) -> u32 {
        let mut input = [0u8; 40];
        let mut n = 0;
        let mut put = |b: &[u8]| {
            input[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        for a in [local, remote] {
            match a.ip() {
                IpAddr::V4(ip) => put(&ip.octets()),
                IpAddr::V6(ip) => put(&ip.octets()),
            }
        }
        put(&local.port().to_be_bytes());
        put(&remote.port().to_be_bytes());
        put(&count.to_be_bytes());
        siphash24(self.k0, self.k1, &input[..n]) as u32
    }

    fn table(local: &SocketAddr) -> &'static [u16; 4] {
        if local.is_ipv4() {
            &MSS_V4
        } else {
            &MSS_V6
        }
    }

    fn count(now: Instant) -> u32 {
        (now.total_micros().max(0) / PERIOD_US) as u32
    }

    /// The sequence number for a SYN-ACK to `tuple`'s client, whose SYN had `client_isn` and
    /// (maybe) an MSS option; and the MSS it stands for (the largest of the table not above
    /// the client's).
    pub(crate) fn make(
        &self,
        tuple: Tuple,
        client_isn: u32,
        client_mss: Option<u16>,
        now: Instant,
    ) -> (u32, u16) {
        let table = Self::table(&tuple.0);
        // RFC 9293 §3.7.1: without the option, 536 (IPv4) or 1220 (IPv6).
        let mss = client_mss.unwrap_or(table[0]);
        let index = table.iter().rposition(|&m| m <= mss).unwrap_or(0);
        let count = Self::count(now);
        let cookie = self
            .hash(tuple, 0)
            .wrapping_add(client_isn)
            .wrapping_add(count << COOKIE_BITS)
            .wrapping_add(self.hash(tuple, count).wrapping_add(index as u32) & COOKIE_MASK);
        (cookie, table[index])
    }

    /// The MSS a cookie stands for, if `cookie` is one this stack gave `tuple`'s client (whose
    /// ISN was `client_isn`) less than two periods ago.
    pub(crate) fn check(
        &self,
        tuple: Tuple,
        client_isn: u32,
        cookie: u32,
        now: Instant,
    ) -> Option<u16> {
        let c = cookie
            .wrapping_sub(self.hash(tuple, 0))
            .wrapping_sub(client_isn);
        let now_count = Self::count(now);
        let diff = now_count.wrapping_sub(c >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
        if diff >= MAX_AGE {
            return None;
        }
        let count = now_count.wrapping_sub(diff);
        let index = c.wrapping_sub(self.hash(tuple, count)) & COOKIE_MASK;
        Self::table(&tuple.0).get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(a: &str, b: &str) -> Tuple {
        (a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn a_cookie_checks_out_for_its_connection_only_and_only_for_a_while() {
        let c = SynCookies::new([1, 2]);
        let t = tuple("192.0.2.2:80", "192.0.2.1:40000");
        let now = Instant::from_secs(1000);
        let (cookie, mss) = c.make(t, 7777, Some(1460), now);
        assert_eq!(mss, 1460);
        assert_eq!(c.check(t, 7777, cookie, now), Some(1460));
        assert_eq!(
            c.check(
                t,
                7777,
                cookie,
                now + smoltcp::time::Duration::from_secs(64)
            ),
            Some(1460),
            "good for the next period"
        );
        assert_eq!(
            c.check(
                t,
                7777,
                cookie,
                now + smoltcp::time::Duration::from_secs(200)
            ),
            None,
            "not for long"
        );
        assert_eq!(
            c.check(t, 7777 + 100_000, cookie, now),
            None,
            "another client ISN"
        );
        assert_eq!(c.check(t, 7777, cookie.wrapping_add(1), now), None);
        assert_eq!(
            c.check(tuple("192.0.2.2:80", "192.0.2.1:40001"), 7777, cookie, now),
            None,
            "another port"
        );
        assert_eq!(SynCookies::new([1, 3]).check(t, 7777, cookie, now), None);
    }

    #[test]
    fn the_mss_is_rounded_down_to_the_table() {
        let c = SynCookies::new([9, 9]);
        let t4 = tuple("192.0.2.2:80", "192.0.2.1:1");
        let t6 = tuple("[2001:db8::2]:80", "[2001:db8::1]:1");
        let now = Instant::from_secs(5);
        for (t, asked, got) in [
            (t4, Some(1400), 1300),
            (t4, Some(9000), 1460),
            (t4, Some(100), 536),
            (t4, None, 536),
            (t6, Some(1440), 1440),
            (t6, None, 1220),
        ] {
            let (cookie, mss) = c.make(t, 1, asked, now);
            assert_eq!(mss, got);
            assert_eq!(c.check(t, 1, cookie, now), Some(got));
        }
    }

    #[test]
    fn guesses_rarely_check_out() {
        let c = SynCookies::new([5, 6]);
        let t = tuple("192.0.2.2:80", "192.0.2.1:40000");
        let now = Instant::from_secs(10);
        let hits = (0..100_000u32)
            .filter(|g| c.check(t, 1, g.wrapping_mul(2_654_435_761), now).is_some())
            .count();
        // 4 MSS values and 2 periods out of 2^32: about 8 in 2^24 per guess.
        assert!(hits < 10, "{hits}");
    }
}
