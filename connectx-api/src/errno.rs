//! errno values, and the one table from the stack's errors to them.
//!
//! Every `match` below names every variant and has no wildcard arm: a new error variant in the
//! stack does not compile until it is given an errno here.

use std::fmt;
use std::io;

use stack::{
    AcceptError, BindError, ConnectError, ConnectionError, ListenError, RecvError, RouteError,
    SendError, ShutdownError,
};

/// An errno value, as Linux numbers them (so `io::Error::raw_os_error` works as for C sockets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*

            /// The symbolic name, `"ECONNREFUSED"`; `"E?"` for a value this table does not know.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $(libc::$name => stringify!($name),)*
                    _ => "E?",
                }
            }
        }
    };
}

errnos!(
    EADDRINUSE,
    EADDRNOTAVAIL,
    EAFNOSUPPORT,
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNREFUSED,
    ECONNRESET,
    EDESTADDRREQ,
    EFAULT,
    EHOSTUNREACH,
    EINPROGRESS,
    EINTR,
    EINVAL,
    EISCONN,
    EMSGSIZE,
    ENETDOWN,
    ENETUNREACH,
    ENOBUFS,
    ENOTCONN,
    ENOTSOCK,
    EOPNOTSUPP,
    EPIPE,
    EPROTOTYPE,
    ETIMEDOUT,
    EMFILE,
    ENXIO,
    EPROTONOSUPPORT,
    ENOPROTOOPT,
);

impl Errno {
    /// The error as `std` represents an OS error.
    pub fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.0)
    }

    /// The errno of an `io::Error` made by this crate (or any OS error).
    pub fn of(err: &io::Error) -> Option<Errno> {
        err.raw_os_error().map(Errno)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.name(),
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> io::Error {
        e.to_io()
    }
}

impl From<RouteError> for Errno {
    fn from(e: RouteError) -> Errno {
        match e {
            RouteError::InvalidDestination(_) => Errno::EADDRNOTAVAIL,
            RouteError::NetworkUnreachable(_) => Errno::ENETUNREACH,
            RouteError::NetworkDown(_) => Errno::ENETDOWN,
            // Darwin: "addresses in the specified address family cannot be used": the outgoing
            // interface has no usable address of the destination's family.
            RouteError::NoSourceAddress(_) => Errno::EAFNOSUPPORT,
            RouteError::AddressNotAvailable(_) => Errno::EADDRNOTAVAIL,
            RouteError::NoSuchInterface => Errno::ENXIO,
        }
    }
}

impl From<BindError> for Errno {
    fn from(e: BindError) -> Errno {
        match e {
            BindError::NoSuchSocket => Errno::EBADF,
            BindError::AlreadyBound => Errno::EINVAL,
            BindError::FamilyMismatch => Errno::EAFNOSUPPORT,
            BindError::AddressNotAvailable(_) => Errno::EADDRNOTAVAIL,
            BindError::AddressInUse => Errno::EADDRINUSE,
            // As Linux's connect() when the ephemeral range is exhausted.
            BindError::NoPortsLeft => Errno::EADDRNOTAVAIL,
            BindError::NoBuffers => Errno::ENOBUFS,
        }
    }
}

impl From<ListenError> for Errno {
    fn from(e: ListenError) -> Errno {
        match e {
            ListenError::NoSuchSocket => Errno::EBADF,
            ListenError::NotStream => Errno::EOPNOTSUPP,
            ListenError::Connected => Errno::EINVAL,
            ListenError::Bind(b) => b.into(),
        }
    }
}

impl From<AcceptError> for Errno {
    fn from(e: AcceptError) -> Errno {
        match e {
            AcceptError::NoSuchSocket => Errno::EBADF,
            AcceptError::NotListening => Errno::EINVAL,
            AcceptError::WouldBlock => Errno::EAGAIN,
        }
    }
}

impl From<ConnectionError> for Errno {
    fn from(e: ConnectionError) -> Errno {
        match e {
            ConnectionError::Refused => Errno::ECONNREFUSED,
            ConnectionError::TimedOut => Errno::ETIMEDOUT,
            ConnectionError::Reset => Errno::ECONNRESET,
            ConnectionError::HostUnreachable => Errno::EHOSTUNREACH,
            ConnectionError::NetworkUnreachable => Errno::ENETUNREACH,
        }
    }
}

impl From<ConnectError> for Errno {
    fn from(e: ConnectError) -> Errno {
        match e {
            ConnectError::NoSuchSocket => Errno::EBADF,
            ConnectError::FamilyMismatch => Errno::EAFNOSUPPORT,
            // Darwin and Linux both refuse a connection to port 0 this way.
            ConnectError::InvalidPort => Errno::EADDRNOTAVAIL,
            ConnectError::Route(r) => r.into(),
            ConnectError::AlreadyConnected => Errno::EISCONN,
            ConnectError::InProgress => Errno::EALREADY,
            ConnectError::Listening => Errno::EOPNOTSUPP,
            ConnectError::Bind(b) => b.into(),
            ConnectError::Connection(c) => c.into(),
            ConnectError::NoBuffers => Errno::ENOBUFS,
        }
    }
}

impl From<SendError> for Errno {
    fn from(e: SendError) -> Errno {
        match e {
            SendError::NoSuchSocket => Errno::EBADF,
            SendError::NotConnected => Errno::ENOTCONN,
            SendError::NoDestination => Errno::EDESTADDRREQ,
            SendError::WouldBlock => Errno::EAGAIN,
            SendError::Shutdown => Errno::EPIPE,
            SendError::MessageTooLong { .. } => Errno::EMSGSIZE,
            SendError::FamilyMismatch => Errno::EAFNOSUPPORT,
            SendError::Route(r) => r.into(),
            SendError::Bind(b) => b.into(),
            SendError::Connection(c) => c.into(),
            SendError::Listening => Errno::ENOTCONN,
        }
    }
}

impl From<RecvError> for Errno {
    fn from(e: RecvError) -> Errno {
        match e {
            RecvError::NoSuchSocket => Errno::EBADF,
            RecvError::NotConnected => Errno::ENOTCONN,
            RecvError::WouldBlock => Errno::EAGAIN,
            RecvError::Connection(c) => c.into(),
            RecvError::Listening => Errno::ENOTCONN,
        }
    }
}

impl From<ShutdownError> for Errno {
    fn from(e: ShutdownError) -> Errno {
        match e {
            ShutdownError::NoSuchSocket => Errno::EBADF,
            ShutdownError::NotConnected => Errno::ENOTCONN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_io_errors() {
        assert_eq!(Errno::ECONNREFUSED.name(), "ECONNREFUSED");
        let e: io::Error = Errno::from(ConnectionError::Refused).into();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(Errno::of(&e), Some(Errno::ECONNREFUSED));
        assert_eq!(Errno(9999).name(), "E?");
    }
}
