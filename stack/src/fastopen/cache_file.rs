//! The client cookie cache as text, to keep cookies across runs (`--cookie-cache FILE`).
//!
//! One entry per line: client address, server address, the cookie in hex (`-` for none: only
//! the MSS is known), the server's MSS (`-` for unknown). Lines starting with `#` and blank
//! lines are ignored.
//!
//! ```text
//! # connectx-tun TCP Fast Open cookie cache v1: client server cookie mss
//! 192.0.2.2 192.0.2.1 8d3a1f0c29e4b7a6 1460
//! 2001:db8::2 2001:db8::1 - 1440
//! ```
//!
//! Reading and writing the file (atomically: a temporary file, then a rename) is the caller's;
//! this module only turns entries into text and back.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Cookie, CookieEntry};

/// The first line of a saved cache.
pub const HEADER: &str = "# connectx-tun TCP Fast Open cookie cache v1: client server cookie mss";

/// Most entries a file may hold; a longer file is refused as corrupt.
pub const MAX_ENTRIES: usize = 1 << 16;

/// Why a saved cache could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct CacheFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// `entries` as the text of a cache file, header first.
pub fn to_text(entries: &[CookieEntry]) -> String {
    let mut out = String::with_capacity(HEADER.len() + 1 + entries.len() * 64);
    out.push_str(HEADER);
    out.push('\n');
    for e in entries {
        let _ = write!(out, "{} {} ", e.client, e.server);
        match e.cookie {
            Some(c) => {
                for b in c.as_bytes() {
                    let _ = write!(out, "{b:02x}");
                }
            }
            None => out.push('-'),
        }
        match e.mss {
            Some(m) => {
                let _ = writeln!(out, " {m}");
            }
            None => out.push_str(" -\n"),
        }
    }
    out
}

fn hex_cookie(s: &str) -> Option<Cookie> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    Cookie::new(&bytes?)
}

/// The entries of a cache file's text.
///
/// # Errors
/// [`CacheFileError`] naming the first line that is not an entry (wrong field count, a bad
/// address, a cookie that is not 4 to 16 bytes of even length in hex, an MSS that is not a
/// number from 1 to 65535, client and server of different families), or a file of more than
/// [`MAX_ENTRIES`] entries.
pub fn from_text(text: &str) -> Result<Vec<CookieEntry>, CacheFileError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| CacheFileError {
            line: n + 1,
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [client, server, cookie, mss] = fields[..] else {
            return Err(bad(format!(
                "expected 4 fields (client server cookie mss), found {}",
                fields.len()
            )));
        };
        let client: IpAddr = client
            .parse()
            .map_err(|_| bad(format!("`{client}` is not an IP address")))?;
        let server: IpAddr = server
            .parse()
            .map_err(|_| bad(format!("`{server}` is not an IP address")))?;
        if client.is_ipv4() != server.is_ipv4() {
            return Err(bad("client and server are of different families".into()));
        }
        let cookie = match cookie {
            "-" => None,
            hex => Some(hex_cookie(hex).ok_or_else(|| {
                bad(format!(
                    "`{hex}` is not a cookie (4 to 16 bytes, an even number, in hex)"
                ))
            })?),
        };
        let mss = match mss {
            "-" => None,
            m => Some(
                m.parse::<u16>()
                    .ok()
                    .filter(|&m| m > 0)
                    .ok_or_else(|| bad(format!("`{m}` is not an MSS (1 to 65535)")))?,
            ),
        };
        if entries.len() == MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        entries.push(CookieEntry {
            client,
            server,
            cookie,
            mss,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: &str, server: &str, cookie: Option<&[u8]>, mss: Option<u16>) -> CookieEntry {
        CookieEntry {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            cookie: cookie.map(|c| Cookie::new(c).unwrap()),
            mss,
        }
    }

    #[test]
    fn round_trip() {
        let entries = vec![
            entry(
                "192.0.2.2",
                "192.0.2.1",
                Some(&[1, 2, 3, 4, 5, 6, 7, 8]),
                Some(1460),
            ),
            entry("2001:db8::2", "2001:db8::1", None, Some(1440)),
            entry("192.0.2.2", "198.51.100.1", Some(&[0xab; 16]), None),
        ];
        let text = to_text(&entries);
        assert!(text.starts_with(HEADER));
        assert!(text.contains("192.0.2.2 192.0.2.1 0102030405060708 1460\n"));
        assert_eq!(from_text(&text).unwrap(), entries);
    }

    #[test]
    fn garbage_names_the_line() {
        for (text, line) in [
            ("# ok\n192.0.2.2 192.0.2.1 0102030405060708\n", 2),
            ("192.0.2.2 nope 0102030405060708 1460\n", 1),
            ("\n\n192.0.2.2 2001:db8::1 - 1460\n", 3),
            ("192.0.2.2 192.0.2.1 01020 1460\n", 1),
            ("192.0.2.2 192.0.2.1 0102 1460\n", 1),
            ("192.0.2.2 192.0.2.1 zz02030405060708 1460\n", 1),
            ("192.0.2.2 192.0.2.1 - 0\n", 1),
            ("192.0.2.2 192.0.2.1 - 70000\n", 1),
            ("\u{0}\u{1}binary\u{ff}", 1),
            ("192.0.2.2 192.0.2.1 é3 1460\n", 1),
        ] {
            let e = from_text(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
        assert_eq!(from_text("").unwrap(), vec![]);
    }
}
