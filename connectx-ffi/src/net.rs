//! The process's stack, and the handle a C program describes it with.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use connectx_api::{Net, NetBuilder};
use libc::c_int;

/// The stack the socket calls act on. Calls hold the read side while they run (a blocking one
/// too); `cx_net_free` stops the stack first, which ends blocked calls with `EINTR`, then takes
/// the write side.
static RUNNING: RwLock<Option<Net>> = RwLock::new(None);

/// Whether the stack in [`RUNNING`] came from [`install`] (only such a one is [`uninstall`]ed;
/// one `cx_net_start` started belongs to its handle). Changed under `RUNNING`'s write side.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Make `net`, started in Rust, the stack the C calls act on: for a program whose Rust part
/// sets up the stack and whose C part calls `cx_*` and `connectx`. Gives `net` back when a
/// stack is the process's already.
///
/// # Errors
/// `net` itself, when another stack is installed or started.
pub fn install(net: Net) -> Result<(), Net> {
    let mut running = RUNNING.write().unwrap_or_else(PoisonError::into_inner);
    if running.is_some() {
        return Err(net);
    }
    *running = Some(net);
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// The stack the C calls act on (installed, or started by `cx_net_start`), for Rust code of the
/// same process: its descriptors are the C calls' descriptors.
pub fn running() -> Option<Net> {
    RUNNING
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Take back the stack [`install`] installed (the C calls fail with `ENETDOWN` after); `None`
/// when none is (one `cx_net_start` started stays its handle's). The stack keeps running; stop
/// it with [`Net::stop`].
pub fn uninstall() -> Option<Net> {
    let mut running = RUNNING.write().unwrap_or_else(PoisonError::into_inner);
    if !INSTALLED.swap(false, Ordering::Relaxed) {
        return None;
    }
    running.take()
}

/// `errno` for an `io::Error` of the stack's (always made from an errno).
pub(crate) fn errno(e: &io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Run `f` on the running stack; `ENETDOWN` when none runs.
pub(crate) fn with_net<T>(f: impl FnOnce(&Net) -> io::Result<T>) -> Result<T, c_int> {
    let running = RUNNING.read().unwrap_or_else(PoisonError::into_inner);
    let net = running.as_ref().ok_or(libc::ENETDOWN)?;
    f(net).map_err(|e| errno(&e))
}

/// `cx_net`: a stack being described, then the running one.
pub struct CxNet {
    builder: Option<NetBuilder>,
    running: bool,
    /// What the last failed call on this handle said, for `cx_net_strerror`.
    error: CString,
}

impl fmt::Debug for CxNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CxNet")
            .field("running", &self.running)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl CxNet {
    pub(crate) fn new() -> CxNet {
        CxNet {
            builder: Some(Net::builder()),
            running: false,
            error: CString::default(),
        }
    }

    /// Add to the description; `EISCONN` once started.
    pub(crate) fn describe(
        &mut self,
        f: impl FnOnce(NetBuilder) -> NetBuilder,
    ) -> Result<(), c_int> {
        let b = self.builder.take().ok_or(libc::EISCONN)?;
        self.builder = Some(f(b));
        Ok(())
    }

    /// Start the described stack as the process's. `EBUSY` when one runs already (this one or
    /// another); `EINVAL` when the description is wrong and `ENODEV`/`EPERM`… when a device
    /// cannot be opened, with the reason in [`CxNet::error`].
    pub(crate) fn start(&mut self) -> Result<(), c_int> {
        let mut running = RUNNING.write().unwrap_or_else(PoisonError::into_inner);
        if running.is_some() {
            return Err(self.fail("a stack is running already in this process", libc::EBUSY));
        }
        let b = self.builder.take().ok_or(libc::EBUSY)?;
        match b.start() {
            Ok(net) => {
                *running = Some(net);
                self.running = true;
                Ok(())
            }
            Err(e) => {
                let code = match &e {
                    connectx_api::StartError::Device(d) => device_errno(d),
                    connectx_api::StartError::Io(io) | connectx_api::StartError::Pcap(_, io) => {
                        errno(io)
                    }
                    _ => libc::EINVAL,
                };
                Err(self.fail(&e.to_string(), code))
            }
        }
    }

    /// Stop the stack this handle started, if it runs.
    pub(crate) fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        if let Some(net) = RUNNING
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            net.stop();
        }
        RUNNING
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn fail(&mut self, message: &str, code: c_int) -> c_int {
        self.error = CString::new(message.replace('\0', " ")).unwrap_or_default();
        code
    }

    /// The reason the last call on this handle failed ("" if none did).
    pub(crate) fn error(&self) -> &CString {
        &self.error
    }
}

/// `errno` for a device that could not be opened.
fn device_errno(e: &tun_driver::Error) -> c_int {
    use tun_driver::Error as E;
    match e {
        E::NoTunDevice | E::NoSuchDevice(_) => libc::ENODEV,
        E::PermissionDenied { .. } => libc::EPERM,
        E::InvalidName(_) | E::Unsupported(_) => libc::EINVAL,
        E::BadDescriptor(_) => libc::EBADF,
        E::Io { source, .. } => errno(source),
        _ => libc::ENODEV,
    }
}
