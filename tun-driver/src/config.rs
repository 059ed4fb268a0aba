//! Kernel-side configuration of an interface: MTU, flags and queue length over `ioctl(2)`,
//! addresses over rtnetlink. Never by running `ip`.
//!
//! Everything acts on the calling thread's network namespace.

mod netlink;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use libc::c_short;

use crate::sys::{self, IfReq, IfReqIoctl};
use crate::Error;

/// The index of interface `name` in the calling thread's network namespace (`if_nametoindex`).
///
/// # Errors
/// [`Error::NoSuchDevice`] if there is no such interface.
pub fn ifindex_of(name: &str) -> Result<u32, Error> {
    sys::if_nametoindex(name).map_err(|e| match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => Error::NoSuchDevice(name.to_owned()),
        _ => Error::io(format!("looking up the index of {name}"), e),
    })
}

/// Checks `name` the way the kernel does (`dev_valid_name`): 1 to `IFNAMSIZ - 1` bytes, not
/// `.` or `..`, and no `/`, `:`, whitespace or NUL.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// The kernel side of a network interface: its name and index, to configure it.
///
/// Obtained from [`Device::link`](crate::Device::link) or [`Link::by_name`]. Every method
/// needs `CAP_NET_ADMIN` except the getters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    name: String,
    index: u32,
}

impl Link {
    pub(crate) fn new(name: String, index: u32) -> Link {
        Link { name, index }
    }

    /// The interface called `name` in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::InvalidName`], or [`Error::NoSuchDevice`] if there is no such interface.
    pub fn by_name(name: &str) -> Result<Link, Error> {
        validate_name(name)?;
        Ok(Link::new(name.to_owned(), ifindex_of(name)?))
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Sets the MTU (`SIOCSIFMTU`).
    ///
    /// # Errors
    /// [`Error::Io`], e.g. `EINVAL` for an MTU the device does not accept, `EPERM` without
    /// `CAP_NET_ADMIN`.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), Error> {
        let what = || format!("setting the MTU of {} to {mtu}", self.name);
        let mtu = i32::try_from(mtu).map_err(|_| Error::invalid_input(what(), "MTU too large"))?;
        let mut req = IfReq::new(&self.name);
        req.set_int(mtu);
        self.ioctl(&mut req, IfReqIoctl::SetMtu, what)
    }

    /// The MTU (`SIOCGIFMTU`).
    ///
    /// # Errors
    /// [`Error::Io`], e.g. `ENODEV` if the interface is gone.
    pub fn mtu(&self) -> Result<u32, Error> {
        let mut req = IfReq::new(&self.name);
        self.ioctl(&mut req, IfReqIoctl::GetMtu, || {
            format!("reading the MTU of {}", self.name)
        })?;
        Ok(req.int().unsigned_abs())
    }

    /// Brings the interface up or down (`IFF_UP`).
    ///
    /// # Errors
    /// [`Error::Io`], e.g. `EPERM` without `CAP_NET_ADMIN`.
    pub fn set_up(&self, up: bool) -> Result<(), Error> {
        let what = || format!("bringing {} {}", self.name, if up { "up" } else { "down" });
        let mut req = IfReq::new(&self.name);
        self.ioctl(&mut req, IfReqIoctl::GetFlags, what)?;
        let flags = req.flags();
        let wanted = if up {
            flags | libc::IFF_UP as c_short
        } else {
            flags & !(libc::IFF_UP as c_short)
        };
        if wanted != flags {
            req.set_flags(wanted);
            self.ioctl(&mut req, IfReqIoctl::SetFlags, what)?;
        }
        Ok(())
    }

    /// Whether the interface is administratively up (`IFF_UP`).
    ///
    /// # Errors
    /// [`Error::Io`], e.g. `ENODEV` if the interface is gone.
    pub fn is_up(&self) -> Result<bool, Error> {
        let mut req = IfReq::new(&self.name);
        self.ioctl(&mut req, IfReqIoctl::GetFlags, || {
            format!("reading the flags of {}", self.name)
        })?;
        Ok(req.flags() & libc::IFF_UP as c_short != 0)
    }

    /// Sets the transmit queue length (`SIOCSIFTXQLEN`): how many packets the kernel queues
    /// for this device before dropping.
    ///
    /// # Errors
    /// [`Error::Io`], e.g. `EPERM` without `CAP_NET_ADMIN`.
    pub fn set_txqueuelen(&self, len: u32) -> Result<(), Error> {
        let what = || format!("setting the queue length of {} to {len}", self.name);
        let len = i32::try_from(len).map_err(|_| Error::invalid_input(what(), "too long"))?;
        let mut req = IfReq::new(&self.name);
        req.set_int(len);
        self.ioctl(&mut req, IfReqIoctl::SetTxQueueLen, what)
    }

    /// Adds address `addr/prefix_len` (`RTM_NEWADDR`), with the prefix route it implies.
    ///
    /// IPv6 addresses are added with `IFA_F_NODAD`, so they are usable at once rather than
    /// "tentative" while duplicate address detection runs. Adding an address the interface
    /// already has succeeds (`EEXIST` is ignored).
    ///
    /// # Errors
    /// [`Error::Io`]: `InvalidInput` for a prefix longer than the address, else the error the
    /// kernel acknowledged with (e.g. `EPERM` without `CAP_NET_ADMIN`).
    pub fn add_address(&self, addr: IpAddr, prefix_len: u8) -> Result<(), Error> {
        let what = || format!("adding address {addr}/{prefix_len} to {}", self.name);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(Error::invalid_input(what(), "prefix length too long"));
        }
        match netlink::add_address(self.index, addr, prefix_len) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            result => result.map_err(|e| Error::io(what(), e)),
        }
    }

    /// Wait until the kernel can deliver packets to a local IPv6 address of this link: until its
    /// local route is installed. The kernel adds that route shortly *after* it acknowledges the
    /// address (measured: 2–23 ms later, even without duplicate address detection), and drops
    /// packets for the address in between. Returns whether the route appeared within `timeout`.
    ///
    /// Reads `/proc/thread-self/net/ipv6_route`, which shows the calling thread's namespace.
    ///
    /// # Errors
    /// [`Error::Io`] when the routing table cannot be read.
    pub fn wait_ipv6_local_route(
        &self,
        addr: std::net::Ipv6Addr,
        timeout: std::time::Duration,
    ) -> Result<bool, Error> {
        let want = format!("{:032x} 80 ", addr.to_bits());
        let start = std::time::Instant::now();
        loop {
            let table = std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
                .map_err(|e| Error::io(format!("reading the IPv6 routes of {}", self.name), e))?;
            if table.lines().any(|l| l.starts_with(&want)) {
                return Ok(true);
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn ioctl(
        &self,
        req: &mut IfReq,
        request: IfReqIoctl,
        what: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        control_socket()
            .and_then(|socket| req.ioctl(socket.as_fd(), request))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENODEV) => Error::NoSuchDevice(self.name.clone()),
                _ => Error::io(what(), e),
            })
    }
}

/// A socket to issue interface ioctls on. Any family works (the kernel falls through to
/// `dev_ioctl`); `AF_UNIX` is always there, and, like all sockets, belongs to the calling
/// thread's network namespace.
fn control_socket() -> std::io::Result<OwnedFd> {
    sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_the_kernel_does() {
        for good in ["cx0", "tun%d", "a", "fifteen-bytes-x", "eth0.100"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a\tb",
            "a:1",
            "a\0b",
            "sixteen-bytes-xx",
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_interfaces_are_reported() {
        let error = ifindex_of("cxnosuch0").unwrap_err();
        assert!(
            matches!(&error, Error::NoSuchDevice(name) if name == "cxnosuch0"),
            "{error}"
        );
        assert!(matches!(
            Link::by_name("cxnosuch0"),
            Err(Error::NoSuchDevice(_))
        ));
    }

    #[test]
    fn loopback_is_readable_without_privileges() {
        let lo = Link::by_name("lo").unwrap();
        assert_eq!(lo.index(), ifindex_of("lo").unwrap());
        assert!(lo.mtu().unwrap() > 0);
    }
}
