//! TCP Fast Open on descriptors: listener settings, what happened per connection, the
//! counters and the client cookie cache.

use std::io;

use stack::{
    CookieEntry, FastOpenCounters, FastOpenInfo, FastOpenServerConfig, FastOpenServerInfo,
};

use crate::errno::Errno;
use crate::fd::Fd;
use crate::net::Net;

impl Net {
    /// Switch Fast Open on (or off with `None`) for a bound or listening stream socket, as
    /// `setsockopt(TCP_FASTOPEN)` with the key and limits of `config`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EOPNOTSUPP` for a datagram socket, one not bound yet, or a
    /// connected one.
    pub fn set_fast_open(&self, fd: Fd, config: Option<FastOpenServerConfig>) -> io::Result<()> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        state.stack.set_fast_open(id, config).map_err(|e| match e {
            stack::ListenError::NoSuchSocket => Errno::EBADF.to_io(),
            _ => Errno::EOPNOTSUPP.to_io(),
        })
    }

    /// What Fast Open did on a client connection (`None` when it did not ask for it).
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn fast_open_info(&self, fd: Fd) -> io::Result<Option<FastOpenInfo>> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        Ok(state.stack.fast_open_info(id))
    }

    /// What Fast Open did on an accepted connection.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn server_fast_open_info(&self, fd: Fd) -> io::Result<Option<FastOpenServerInfo>> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        Ok(state.stack.server_fast_open_info(id))
    }

    /// The stack's Fast Open counters (named as Linux's `TcpExt` MIB).
    pub fn fast_open_counters(&self) -> FastOpenCounters {
        self.shared().lock().stack.fast_open_counters()
    }

    /// The client cookie cache.
    pub fn cookie_cache(&self) -> Vec<CookieEntry> {
        self.shared().lock().stack.cookie_cache()
    }

    /// Empty the client cookie cache.
    pub fn flush_cookie_cache(&self) {
        self.shared().lock().stack.flush_cookie_cache();
    }
}
