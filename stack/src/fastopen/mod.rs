//! RFC 7413 TCP Fast Open, added to an unmodified smoltcp.

pub mod cookie;

pub use cookie::{Cookie, CookieKey, KeyError};
