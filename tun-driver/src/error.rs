//! The crate's error type.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// Everything that can go wrong opening, adopting or configuring a device.
///
/// Every variant has a one-line [`Display`](fmt::Display) message meant for end users.
/// Converting into [`io::Error`] keeps the raw OS error code (`raw_os_error()`) of an
/// [`Error::Io`] that has one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/net/tun` does not exist: the kernel has no TUN support.
    NoTunDevice,
    /// Creating or attaching to a TUN device was refused (`EPERM`/`EACCES`).
    PermissionDenied {
        /// What was attempted, e.g. "creating TUN device cx0".
        what: String,
    },
    /// No network interface of this name exists (in the current network namespace).
    NoSuchDevice(String),
    /// Not a valid interface name: empty, longer than `IFNAMSIZ - 1` bytes, or containing
    /// `/`, whitespace or NUL.
    InvalidName(String),
    /// The descriptor number is not open.
    BadDescriptor(RawFd),
    /// The descriptor or device is of a kind this crate cannot work with.
    Unsupported(String),
    /// Any other failure of a system call.
    Io {
        /// What was attempted, e.g. "TUNSETIFF on cx0".
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] for `source` while doing `context`.
    ///
    /// `EPERM`/`EACCES` get a hint that the operation needs `CAP_NET_ADMIN`.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        let mut context = context.into();
        if source.kind() == io::ErrorKind::PermissionDenied {
            context.push_str(" (needs CAP_NET_ADMIN: run as root)");
        }
        Error::Io { context, source }
    }

    /// An [`Error::Io`] with kind [`io::ErrorKind::InvalidInput`].
    pub(crate) fn invalid_input(context: impl Into<String>, message: &str) -> Error {
        Error::Io {
            context: context.into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, message.to_owned()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoTunDevice => f.write_str(
                "no /dev/net/tun: this kernel has no TUN support (load the `tun` module)",
            ),
            Error::PermissionDenied { what } => write!(
                f,
                "{what} needs CAP_NET_ADMIN: run as root, or attach to a persistent device \
                 owned by your user (`ip tuntap add dev NAME mode tun user $USER`)"
            ),
            Error::NoSuchDevice(name) => write!(f, "no network interface named {name}"),
            Error::InvalidName(name) => write!(
                f,
                "invalid interface name {name:?}: it must have 1 to 15 bytes and no '/' or whitespace"
            ),
            Error::BadDescriptor(fd) => write!(f, "descriptor {fd} is not open"),
            Error::Unsupported(message) => f.write_str(message),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// An [`Error::Io`] carrying an OS error becomes that very error, so `raw_os_error()`
    /// still works (its context is lost). Every other error keeps its message, with a fitting
    /// [`io::ErrorKind`].
    fn from(error: Error) -> io::Error {
        let kind = match error {
            Error::Io { source, .. } if source.raw_os_error().is_some() => return source,
            Error::Io { ref source, .. } => source.kind(),
            Error::NoTunDevice | Error::NoSuchDevice(_) => io::ErrorKind::NotFound,
            Error::PermissionDenied { .. } => io::ErrorKind::PermissionDenied,
            Error::InvalidName(_) | Error::BadDescriptor(_) => io::ErrorKind::InvalidInput,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno() {
        let error = Error::io(
            "TUNSETIFF on cx0",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert_eq!(
            error.to_string(),
            format!(
                "TUNSETIFF on cx0: {}",
                io::Error::from_raw_os_error(libc::EBUSY)
            )
        );
        assert_eq!(io::Error::from(error).raw_os_error(), Some(libc::EBUSY));
    }

    #[test]
    fn other_errors_keep_their_message() {
        let error = io::Error::from(Error::BadDescriptor(987_654));
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(error.to_string(), "descriptor 987654 is not open");
    }

    #[test]
    fn permission_errors_get_a_hint() {
        let error = Error::io(
            "setting the MTU of cx0",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}");
    }
}
