//! Network namespace helpers, for tests and demos that must not touch the host's network.
//!
//! The usual pattern: spawn a thread, call [`unshare_net`] on it, and do everything (create
//! devices, configure them, open sockets, set sysctls) on that thread or threads it spawns.
//! The namespace disappears once that thread has exited and the last descriptor in it is
//! closed.
//!
//! ```no_run
//! if tun_driver::netns::require_root("my_test") {
//!     std::thread::spawn(|| {
//!         tun_driver::netns::unshare_net().unwrap();
//!         let device = tun_driver::Device::create("cx0").unwrap();
//!         // …
//!     })
//!     .join()
//!     .unwrap();
//! }
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::{sys, Error, Link};

/// The environment variable that turns "skipped: needs root" into a test failure.
const REQUIRE_ROOT_VAR: &str = "CONNECTX_REQUIRE_ROOT_TESTS";

/// Moves the calling thread into a new, empty network namespace (`unshare(CLONE_NEWNET)`)
/// and brings its loopback interface up.
///
/// Only this thread moves: other threads, including the one that spawned it, stay where they
/// are. Threads spawned from it afterwards start in the new namespace. There is no way back.
///
/// # Errors
/// [`Error::Io`] with `EPERM` without `CAP_SYS_ADMIN`, or if bringing `lo` up fails.
pub fn unshare_net() -> Result<(), Error> {
    sys::unshare(libc::CLONE_NEWNET).map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM) => Error::Io {
            context: "creating a network namespace needs CAP_SYS_ADMIN: run as root".into(),
            source,
        },
        _ => Error::io("unshare(CLONE_NEWNET)", source),
    })?;
    Link::by_name("lo")?.set_up(true)
}

/// Whether the process runs as root (effective user id 0).
pub fn is_root() -> bool {
    sys::geteuid() == 0
}

/// For tests that need root: whether to run.
///
/// As root, returns `true`. Otherwise prints `skipped: <test_name> needs root
/// (CAP_NET_ADMIN)` to stderr and returns `false` — unless the environment variable
/// `CONNECTX_REQUIRE_ROOT_TESTS` is set to something non-empty, in which case it panics with
/// that message, so that CI cannot skip such tests silently.
pub fn require_root(test_name: &str) -> bool {
    if is_root() {
        return true;
    }
    let message = format!("{test_name} needs root (CAP_NET_ADMIN)");
    if std::env::var_os(REQUIRE_ROOT_VAR).is_some_and(|value| !value.is_empty()) {
        panic!("{message}, and {REQUIRE_ROOT_VAR} is set");
    }
    eprintln!("skipped: {message}");
    false
}

/// Reads a sysctl of the calling thread's network namespace, e.g. `net/ipv4/tcp_fastopen`
/// (or `net.ipv4.tcp_fastopen`), without the trailing newline.
///
/// # Errors
/// [`Error::Io`]: `InvalidInput` for a path that is absolute or has `..`; `NotFound` for no
/// such sysctl.
pub fn sysctl(path: &str) -> Result<String, Error> {
    let file = sysctl_file(path)?;
    let value =
        fs::read_to_string(&file).map_err(|e| sysctl_error(format!("reading sysctl {path}"), e))?;
    Ok(value.trim_end_matches('\n').to_owned())
}

/// Writes a sysctl of the calling thread's network namespace, e.g.
/// `set_sysctl("net/ipv4/tcp_fastopen", "3")`. Only call this in a namespace of your own.
///
/// This writes `/proc/sys/<path>`, which shows the network namespace of the thread that opens
/// the file (not of the process, and not of whoever mounted `/proc`), so it works from the
/// thread that called [`unshare_net`]. (`/proc/net`, unlike `/proc/sys/net`, follows the
/// process's main thread: use `/proc/thread-self/net` there.)
///
/// # Errors
/// [`Error::Io`]: `InvalidInput` for a path that is absolute or has `..`; `NotFound` for no
/// such sysctl; `PermissionDenied` unless root; `EINVAL` for a value the kernel rejects.
pub fn set_sysctl(path: &str, value: &str) -> Result<(), Error> {
    let file = sysctl_file(path)?;
    let context = || format!("setting sysctl {path} to {value}");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .map_err(|e| sysctl_error(context(), e))?;
    // One write(2): the kernel parses each write on its own.
    file.write_all(value.as_bytes())
        .map_err(|e| sysctl_error(context(), e))
}

fn sysctl_error(mut context: String, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::PermissionDenied {
        context.push_str(" (needs root)");
    }
    Error::Io { context, source }
}

/// `/proc/sys/<path>`, accepting `sysctl(8)`'s dotted form when there is no `/`.
fn sysctl_file(path: &str) -> Result<PathBuf, Error> {
    let relative = if path.contains('/') {
        path.to_owned()
    } else {
        path.replace('.', "/")
    };
    let valid = !relative.is_empty()
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !valid {
        return Err(Error::Io {
            context: format!("sysctl {path}"),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a relative path under /proc/sys",
            ),
        });
    }
    Ok(PathBuf::from("/proc/sys").join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        let file = |path| sysctl_file(path).map(|p| p.display().to_string()).ok();
        assert_eq!(
            file("net/ipv4/tcp_fastopen").as_deref(),
            Some("/proc/sys/net/ipv4/tcp_fastopen")
        );
        assert_eq!(
            file("net.ipv4.tcp_fastopen").as_deref(),
            Some("/proc/sys/net/ipv4/tcp_fastopen")
        );
        assert_eq!(
            file("net/ipv4/conf/eth0.100/forwarding").as_deref(),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/ipv4/"] {
            assert_eq!(file(bad), None, "{bad}");
        }
    }

    #[test]
    fn sysctls_can_be_read() {
        let value = sysctl("net/ipv4/tcp_fastopen").unwrap();
        assert!(value.parse::<u32>().is_ok(), "{value:?}");
        assert!(matches!(
            sysctl("net/ipv4/no_such_thing"),
            Err(Error::Io { .. })
        ));
    }
}
