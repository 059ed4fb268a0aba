//! What a socket is, and what callers can ask of any socket.

use super::tcp::TcpSocket;
use super::udp::UdpSocket;

/// Stream or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// TCP.
    Stream,
    /// UDP.
    Datagram,
}

/// Readiness of a socket, as `poll(2)` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read would not block: data, end of stream, a pending connection to accept, or an error.
    pub readable: bool,
    /// A write would not block, or a connection attempt has finished (either way).
    pub writable: bool,
    /// An error is pending (`SO_ERROR` would report it).
    pub error: bool,
    /// The connection is finished in both directions (or was never made).
    pub hangup: bool,
}

/// Which half of a connection to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// No more receiving.
    Read,
    /// No more sending: a FIN follows the queued data.
    Write,
    /// Both.
    Both,
}

#[derive(Debug)]
pub(crate) enum Entry {
    Tcp(TcpSocket),
    Udp(UdpSocket),
}
