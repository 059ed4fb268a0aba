//! Fast Open cookies as Linux makes them: SipHash-2-4 over client address ‖ server address,
//! keyed with 16 bytes, 8 bytes on the wire (RFC 7413 §4.1.2 leaves the algorithm to the
//! server; using Linux's makes a cookie from a Linux server with the same key valid here, and
//! the reverse).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A cookie: 4 to 16 bytes, even length (RFC 7413 §4.1.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cookie {
    len: u8,
    bytes: [u8; 16],
}

impl Cookie {
    /// The cookie `bytes`, if their length is valid: even, 4 to 16.
    pub fn new(bytes: &[u8]) -> Option<Cookie> {
        let len = bytes.len();
        if !(4..=16).contains(&len) || len % 2 != 0 {
            return None;
        }
        let mut c = Cookie {
            len: len as u8,
            bytes: [0; 16],
        };
        c.bytes[..len].copy_from_slice(bytes);
        Some(c)
    }

    /// The bytes as they appear on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A 16-byte cookie key.
///
/// Written as Linux's `net.ipv4.tcp_fastopen_key` sysctl writes it: four 32-bit words in hex,
/// `a0bf63f7-ed803d81-cd641d30-cebc4a90`, each stored little-endian.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKey {
    k0: u64,
    k1: u64,
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: show only that there is one.
        f.write_str("CookieKey(..)")
    }
}

/// A malformed key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a Fast Open key: expected four 8-digit hex words joined by '-', \
     e.g. a0bf63f7-ed803d81-cd641d30-cebc4a90"
)]
pub struct KeyError(pub String);

impl FromStr for CookieKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<CookieKey, KeyError> {
        let bad = || KeyError(s.to_owned());
        let words: Vec<u32> = s
            .split('-')
            .map(|w| {
                if w.len() == 8 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u32::from_str_radix(w, 16).map_err(|_| bad())
                } else {
                    Err(bad())
                }
            })
            .collect::<Result<_, _>>()?;
        let [w0, w1, w2, w3] = words[..] else {
            return Err(bad());
        };
        let mut bytes = [0u8; 16];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip([w0, w1, w2, w3]) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        Ok(CookieKey::from_bytes(bytes))
    }
}

impl CookieKey {
    /// A key from its 16 bytes (the sysctl's words, each little-endian, in order).
    pub fn from_bytes(bytes: [u8; 16]) -> CookieKey {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&bytes[..8]);
        k1.copy_from_slice(&bytes[8..]);
        CookieKey {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }

    /// A random key.
    pub fn random() -> CookieKey {
        CookieKey::from_bytes(rand::random())
    }

    /// The cookie this key gives a client at `client` talking to a server at `server`.
    /// `None` when the families differ.
    pub fn cookie(&self, client: IpAddr, server: IpAddr) -> Option<Cookie> {
        let mut input = [0u8; 32];
        let len = match (client, server) {
            (IpAddr::V4(c), IpAddr::V4(s)) => {
                input[..4].copy_from_slice(&c.octets());
                input[4..8].copy_from_slice(&s.octets());
                8
            }
            (IpAddr::V6(c), IpAddr::V6(s)) => {
                input[..16].copy_from_slice(&c.octets());
                input[16..].copy_from_slice(&s.octets());
                32
            }
            _ => return None,
        };
        Cookie::new(&siphash24(self.k0, self.k1, &input[..len]).to_le_bytes())
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012).
pub(crate) fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = u64::from_le_bytes(word);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    let b = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    v[3] ^= b;
    round(&mut v);
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_reference_vector() {
        // The paper's appendix A: key 00..0f, message 00..0e.
        let key: Vec<u8> = (0..16).collect();
        let k = CookieKey::from_bytes(key.try_into().unwrap());
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k.k0, k.k1, &msg), 0xa129_ca61_49be_45e5);
    }

    /// The vectors of shared/reference/fast-open.md, which Linux produces.
    #[test]
    fn linux_cookie_vectors() {
        let cases = [
            (
                "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4",
                "192.0.2.1",
                "192.168.0.1",
                "3021b9d889017eeb",
            ),
            (
                "a1a1a1a1-b2b2b2b2-c3c3c3c3-d4d4d4d4",
                "fd3d:fa7b:d17d::1",
                "fd3d:a0b:17d6::1",
                "c1d1e9742a47a9bc",
            ),
            (
                "a0bf63f7-ed803d81-cd641d30-cebc4a90",
                "10.248.0.2",
                "192.168.0.2",
                "00abaaabe8e954c2",
            ),
        ];
        for (key, client, server, want) in cases {
            let key: CookieKey = key.parse().unwrap();
            let cookie = key
                .cookie(client.parse().unwrap(), server.parse().unwrap())
                .unwrap();
            assert_eq!(cookie.to_string(), want, "{client} -> {server}");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "a0bf63f7",
            "a0bf63f7-ed803d81-cd641d30",
            "a0bf63f7-ed803d81-cd641d30-cebc4a9g",
            "a0bf63f7-ed803d81-cd641d30-cebc4a90-00000000",
            "a0bf63f7ed803d81cd641d30cebc4a90",
            "+0bf63f7-ed803d81-cd641d30-cebc4a90",
        ] {
            assert!(bad.parse::<CookieKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cookie_lengths() {
        assert!(Cookie::new(&[1, 2, 3]).is_none());
        assert!(Cookie::new(&[1, 2, 3, 4, 5]).is_none());
        assert!(Cookie::new(&[0; 18]).is_none());
        assert!(Cookie::new(&[0; 2]).is_none());
        assert_eq!(Cookie::new(&[9; 16]).unwrap().as_bytes().len(), 16);
    }
}
