//! One error enum per operation. Each variant says when it happens; `connectx-api` maps every
//! variant to an errno in one exhaustive table.
//!
//! The enums are deliberately not `#[non_exhaustive]`: the errno table matches them without a
//! wildcard arm, so that a new variant does not compile until someone decides its errno. The
//! crates of this workspace are versioned together.

use std::net::IpAddr;

/// Setting up an interface failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    /// More addresses than one interface holds.
    #[error("interface {name}: at most {max} addresses")]
    TooManyAddresses {
        /// The interface.
        name: String,
        /// The limit.
        max: usize,
    },
    /// An MTU too small for IPv6 (1280) or IPv4 (576) with addresses of that family, or above
    /// 65535.
    #[error(
        "interface {name}: MTU {mtu} is out of range (576..=65535, and at least 1280 for IPv6)"
    )]
    BadMtu {
        /// The interface.
        name: String,
        /// The MTU asked for.
        mtu: usize,
    },
    /// The interface id is not one of this stack's.
    #[error("no such interface")]
    NoSuchInterface,
}

/// Choosing a path (interface and source address) to a destination failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The destination is unspecified, multicast or broadcast, or its port is 0.
    #[error("{0} is not a unicast destination")]
    InvalidDestination(IpAddr),
    /// No route covers the destination.
    #[error("no route to {0}")]
    NetworkUnreachable(IpAddr),
    /// The only routes to the destination go through interfaces that are down.
    #[error("the interface towards {0} is down")]
    NetworkDown(IpAddr),
    /// The outgoing interface has no usable source address of the destination's family.
    #[error("no source address of {0}'s family on the outgoing interface")]
    NoSourceAddress(IpAddr),
    /// The requested source address is not assigned to this stack (or not to the requested
    /// interface).
    #[error("{0} is not an address of this interface")]
    AddressNotAvailable(IpAddr),
    /// The requested interface does not exist.
    #[error("no such interface")]
    NoSuchInterface,
}

/// `bind` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The socket is already bound, listening or connected.
    #[error("socket is already bound")]
    AlreadyBound,
    /// The address's family differs from the socket's.
    #[error("address family does not match the socket")]
    FamilyMismatch,
    /// The address is not one of this stack's.
    #[error("{0} is not an address of this stack")]
    AddressNotAvailable(IpAddr),
    /// Another socket holds this address and port.
    #[error("address and port already in use")]
    AddressInUse,
    /// Every ephemeral port is taken.
    #[error("no ephemeral port left")]
    NoPortsLeft,
    /// The socket's buffers would exceed [`StackConfig::buffer_limit`](crate::StackConfig).
    #[error("socket buffer limit reached")]
    NoBuffers,
}

/// `listen` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The socket is not a stream socket.
    #[error("listen is for stream sockets")]
    NotStream,
    /// The socket is connecting or connected.
    #[error("socket is connected")]
    Connected,
    /// Binding to an ephemeral port failed.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Setting or reading a socket option failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocketOptionError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The option is for stream sockets.
    #[error("the option is for stream sockets")]
    NotStream,
}

/// `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The socket is not listening.
    #[error("socket is not listening")]
    NotListening,
    /// No connection is ready yet.
    #[error("no connection ready")]
    WouldBlock,
}

/// Why an established or attempted connection ended, reported asynchronously (`SO_ERROR`, or
/// by the next call on the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer answered the SYN with a RST: nothing listens on that port.
    #[error("connection refused")]
    Refused,
    /// No answer to the SYNs within the connect timeout.
    #[error("connection timed out")]
    TimedOut,
    /// The peer reset an established connection.
    #[error("connection reset by peer")]
    Reset,
    /// An ICMP message said the host is unreachable.
    #[error("host unreachable")]
    HostUnreachable,
    /// An ICMP message said the network is unreachable.
    #[error("network unreachable")]
    NetworkUnreachable,
}

/// `connect` failed at once (an attempt that starts and fails later reports a
/// [`ConnectionError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The destination's family differs from the socket's, or from the bound source's.
    #[error("address family does not match the socket")]
    FamilyMismatch,
    /// Port 0.
    #[error("port 0 is not a destination")]
    InvalidPort,
    /// No path to the destination.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A stream socket that is already connected.
    #[error("socket is already connected")]
    AlreadyConnected,
    /// A connection attempt is still in progress.
    #[error("connection already in progress")]
    InProgress,
    /// The socket is listening.
    #[error("socket is listening")]
    Listening,
    /// Binding the source failed.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A previous attempt on this socket failed; the error was not yet collected.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The connection's buffers would exceed [`StackConfig::buffer_limit`](crate::StackConfig).
    #[error("socket buffer limit reached")]
    NoBuffers,
}

/// `send` or `send_to` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// A stream socket not connected (or still connecting), or a datagram socket without a
    /// destination.
    #[error("socket is not connected")]
    NotConnected,
    /// A datagram socket with neither a destination nor an associated peer.
    #[error("no destination address")]
    NoDestination,
    /// The send buffer is full.
    #[error("send buffer full")]
    WouldBlock,
    /// The sending side was shut down, or the connection has closed.
    #[error("sending side is shut down")]
    Shutdown,
    /// A datagram larger than the interface carries.
    #[error("datagram of {size} bytes exceeds the limit of {limit}")]
    MessageTooLong {
        /// Bytes asked for.
        size: usize,
        /// The limit on that path.
        limit: usize,
    },
    /// The destination's family differs from the socket's.
    #[error("address family does not match the socket")]
    FamilyMismatch,
    /// No path to the destination.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Binding an ephemeral port failed.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The connection failed or was reset.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The socket is listening.
    #[error("socket is listening")]
    Listening,
}

/// `recv` or `recv_from` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// A stream socket that never connected.
    #[error("socket is not connected")]
    NotConnected,
    /// Nothing to read yet.
    #[error("nothing to read yet")]
    WouldBlock,
    /// The connection failed or was reset.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The socket is listening.
    #[error("socket is listening")]
    Listening,
}

/// `shutdown` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownError {
    /// The socket id is not open.
    #[error("no such socket")]
    NoSuchSocket,
    /// The socket is not connected.
    #[error("socket is not connected")]
    NotConnected,
}
