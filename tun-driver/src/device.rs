//! [`Device`]: one open packet descriptor, either a TUN device or a packet socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use libc::{c_int, c_short};

use crate::config::{validate_name, Link};
use crate::sys::{self, IfReq, IfReqIoctl};
use crate::vnet::VnetHeader;
use crate::{ifindex_of, Error};

/// The offloads a TUN device with a virtio-net header is given: the kernel may hand over TCP
/// segments of up to 64 KB (IPv4 and IPv6) and leave transport checksums to fill.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Socket buffer size [`Device::pair`] asks for, so that bursts are not dropped.
const PAIR_BUFFER_BYTES: c_int = 4 << 20;

/// What the descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A TUN device (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`): one raw IP packet per read/write.
    Tun,
    /// A `SOCK_SEQPACKET` or `SOCK_DGRAM` socket carrying one raw IP packet per message.
    PacketSocket,
}

/// An open, non-blocking, close-on-exec packet descriptor: every [`recv`](Device::recv) yields
/// one IP packet and every [`send`](Device::send) writes one.
///
/// The descriptor is closed when the `Device` is dropped; a non-persistent TUN interface
/// disappears with it.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    kind: DeviceKind,
    /// A `SOCK_SEQPACKET` socket, whose zero-length read means the peer hung up.
    seqpacket: bool,
    name: Option<String>,
    ifindex: Option<u32>,
    /// Size of the virtio-net header before each packet (`IFF_VNET_HDR`); 0 without one.
    vnet: usize,
    /// Whether the kernel may hand over super-packets and partial checksums (`TUNSETOFFLOAD`).
    offloads: bool,
}

impl Device {
    /// Creates TUN device `name` (`IFF_TUN | IFF_NO_PI`) in the calling thread's network
    /// namespace.
    ///
    /// If a persistent TUN device of that name exists and this user may open it, this attaches
    /// to it instead (that is how `TUNSETIFF` behaves). Offloads are reset, since a persistent
    /// device may keep old ones. A `%d` in `name` lets the kernel pick a free number; see
    /// [`name`](Device::name) for the result.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::NoTunDevice`] without kernel TUN support;
    /// [`Error::PermissionDenied`] without `CAP_NET_ADMIN` (or if a persistent device belongs to
    /// another user); [`Error::Unsupported`] if an interface of that name exists and is not a
    /// single-queue TUN device; [`Error::Io`] otherwise, e.g. `EBUSY` when another process has
    /// the device open.
    pub fn create(name: &str) -> Result<Device, Error> {
        Device::open_tun(name, "creating", false)
    }

    /// Creates TUN device `name` as [`create`](Device::create) does, with a virtio-net header
    /// before every packet (`IFF_VNET_HDR`) and segmentation and checksum offload on
    /// (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`): the kernel hands over TCP segments of up to
    /// 64 KB with their checksums left to fill, and takes such segments to cut itself. Use
    /// [`recv_offload`](Device::recv_offload) and [`send_offload`](Device::send_offload) to see
    /// and give the header.
    ///
    /// # Errors
    /// As [`create`](Device::create); [`Error::Unsupported`] if the kernel refuses the
    /// offloads.
    pub fn create_offload(name: &str) -> Result<Device, Error> {
        Device::open_tun(name, "creating", true)
    }

    /// Attaches to the existing TUN device `name`, typically a persistent one made with
    /// `ip tuntap add dev NAME mode tun user $USER`.
    ///
    /// # Errors
    /// [`Error::NoSuchDevice`] if there is no interface of that name, and otherwise as
    /// [`Device::create`].
    pub fn attach(name: &str) -> Result<Device, Error> {
        validate_name(name)?;
        ifindex_of(name)?;
        Device::open_tun(name, "attaching to", false)
    }

    /// Adopts an already-open descriptor by number, e.g. one inherited for `--fd N`.
    ///
    /// This takes ownership: the descriptor is closed when the `Device` is dropped, or right
    /// away if it is rejected, so nothing else may own or close it (prefer
    /// `Device::try_from(OwnedFd)` when you have one). A TUN descriptor must be set up with
    /// `IFF_TUN | IFF_NO_PI` (and may have `IFF_VNET_HDR`, in which case it gets the offloads
    /// of [`create_offload`](Device::create_offload)); its name comes from the kernel and its
    /// index is looked up by name in the calling thread's namespace. Otherwise it must be a `SOCK_SEQPACKET` or
    /// `SOCK_DGRAM` socket. The descriptor is made non-blocking and close-on-exec.
    ///
    /// # Errors
    /// [`Error::BadDescriptor`] if `fd` is not open; [`Error::Unsupported`] if it is of another
    /// kind (a TAP device, a TUN device with packet information, a regular file, a stream…).
    pub fn adopt_fd(fd: RawFd) -> Result<Device, Error> {
        if fd < 0 {
            return Err(Error::BadDescriptor(fd));
        }
        let fd = sys::adopt(fd).map_err(|e| match e.raw_os_error() {
            Some(libc::EBADF) => Error::BadDescriptor(fd),
            _ => Error::io(format!("checking descriptor {fd}"), e),
        })?;
        Device::try_from(fd)
    }

    /// A connected pair of `SOCK_SEQPACKET` sockets, wrapped as two
    /// [`PacketSocket`](DeviceKind::PacketSocket) devices: what one sends, the other receives,
    /// one packet per message. For tests and sandboxes.
    ///
    /// # Errors
    /// [`Error::Io`] if `socketpair(2)` fails (e.g. out of descriptors).
    pub fn pair() -> Result<(Device, Device), Error> {
        let (a, b) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        for fd in [&a, &b] {
            for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                // Best effort: the kernel caps the size at net.core.[wr]mem_max anyway.
                let _ =
                    sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, option, PAIR_BUFFER_BYTES);
            }
        }
        let device = |fd| Device {
            fd,
            kind: DeviceKind::PacketSocket,
            seqpacket: true,
            name: None,
            ifindex: None,
            vnet: 0,
            offloads: false,
        };
        Ok((device(a), device(b)))
    }

    /// What the descriptor is.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The interface name of a TUN device.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The interface index of a TUN device, if it could be found.
    pub fn ifindex(&self) -> Option<u32> {
        self.ifindex
    }

    /// Whether offload is on: the kernel may hand over 64 KB TCP segments with partial
    /// checksums, and takes them (see [`create_offload`](Device::create_offload)).
    pub fn offload(&self) -> bool {
        self.offloads
    }

    /// Whether packets carry a virtio-net header (`IFF_VNET_HDR`), offload on or off.
    pub fn vnet_header(&self) -> bool {
        self.vnet != 0
    }

    /// Turn offload on or off on a device with a virtio-net header (`TUNSETOFFLOAD`). With it
    /// off the header stays, all zero from the kernel.
    ///
    /// # Errors
    /// [`Error::Unsupported`] to turn it on for a device without a virtio-net header;
    /// [`Error::Io`] if the kernel refuses.
    pub fn set_offload(&mut self, on: bool) -> Result<(), Error> {
        if on && self.vnet == 0 {
            return Err(Error::Unsupported(
                "offload needs a TUN device with a virtio-net header (IFF_VNET_HDR)".into(),
            ));
        }
        if self.kind == DeviceKind::Tun {
            sys::tun_set_offload(self.fd.as_fd(), if on { OFFLOADS } else { 0 })
                .map_err(|e| Error::io("TUNSETOFFLOAD", e))?;
        }
        self.offloads = on;
        Ok(())
    }

    /// The kernel side of a TUN device, to configure it; `None` for a packet socket.
    pub fn link(&self) -> Option<Link> {
        Some(Link::new(self.name.clone()?, self.ifindex?))
    }

    /// Reads one packet into `buf`: `Ok(Some(n))` for a packet of `n` bytes, `Ok(None)` if
    /// there is none right now.
    ///
    /// A packet longer than `buf` is truncated to `buf.len()` bytes and the rest is lost; the
    /// caller's parser rejects it, so give a buffer of at least the MTU.
    ///
    /// # Errors
    /// Any error of `read(2)`/`recv(2)` other than `EAGAIN` (`EINTR` is retried), and
    /// [`io::ErrorKind::UnexpectedEof`] when the peer of a `SOCK_SEQPACKET` socket has closed
    /// its end.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.vnet != 0 {
            return Ok(self.recv_offload(buf)?.map(|(_, n)| n));
        }
        let fd = self.fd.as_fd();
        let result = sys::retry_eintr(|| match self.kind {
            DeviceKind::Tun => sys::read(fd, buf),
            DeviceKind::PacketSocket => sys::recv(fd, buf, 0),
        });
        match result {
            Ok(0) if self.seqpacket && !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed its end of the packet socket",
            )),
            // Never more than `buf` holds, whatever length the kernel reports.
            Ok(n) => Ok(Some(n.min(buf.len()))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one packet: `Ok(true)` if it was sent, `Ok(false)` if it would block (`EAGAIN`,
    /// `ENOBUFS`), in which case the caller drops it (TCP retransmits).
    ///
    /// # Errors
    /// Any other error of `write(2)`/`send(2)` (`EINTR` is retried), e.g. `EINVAL` for a TUN
    /// write that is no valid IP packet, or `EPIPE` when the peer socket is closed.
    pub fn send(&self, packet: &[u8]) -> io::Result<bool> {
        if self.vnet != 0 {
            return self.send_offload(&VnetHeader::default(), &[packet]);
        }
        let fd = self.fd.as_fd();
        let result = sys::retry_eintr(|| match self.kind {
            DeviceKind::Tun => sys::write(fd, packet),
            DeviceKind::PacketSocket => sys::send(fd, packet, 0),
        });
        Device::sent(result)
    }

    /// Reads one packet and its virtio-net header, on a device with [`offload`](Device::offload)
    /// on (a device without gives an all-zero header): `Ok(Some((header, n)))`, or `Ok(None)`
    /// if there is none right now. The packet may be a TCP super-packet of up to 64 KB whose
    /// checksum is partial; give a buffer of 65,535 bytes. The header comes from the kernel and
    /// is passed on as it is: checking it against the packet is the caller's part.
    ///
    /// # Errors
    /// As [`recv`](Device::recv).
    pub fn recv_offload(&self, buf: &mut [u8]) -> io::Result<Option<(VnetHeader, usize)>> {
        if self.vnet == 0 {
            return Ok(self.recv(buf)?.map(|n| (VnetHeader::default(), n)));
        }
        // The header the device was set up with; a larger one (e.g. with `num_buffers`) ends
        // with fields this crate does not use.
        let mut head = [0u8; 24];
        let vnet = self.vnet.min(head.len());
        let fd = self.fd.as_fd();
        match sys::retry_eintr(|| sys::read2(fd, &mut head[..vnet], buf)) {
            Ok(n) if n < vnet => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TUN read shorter than its virtio-net header",
            )),
            Ok(n) => {
                let mut h = [0; VnetHeader::LEN];
                h.copy_from_slice(&head[..VnetHeader::LEN]);
                Ok(Some((VnetHeader::decode(&h), (n - vnet).min(buf.len()))))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one packet, given in up to three `parts` (e.g. rewritten headers and the payload
    /// they belong to), after virtio-net header `header`, on a device with
    /// [`offload`](Device::offload) on; on a device without, the header must be all zero and
    /// the parts go out as one packet. Results as [`send`](Device::send).
    ///
    /// # Errors
    /// As [`send`](Device::send); `EINVAL` from the kernel for a header it rejects (a GSO type
    /// it does not know, a checksum offset outside the packet), and [`io::ErrorKind::InvalidInput`]
    /// for a non-zero header on a device without offload, or more than three parts.
    pub fn send_offload(&self, header: &VnetHeader, parts: &[&[u8]]) -> io::Result<bool> {
        if parts.len() > 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a packet in more than three parts",
            ));
        }
        let fd = self.fd.as_fd();
        if self.vnet == 0 {
            if *header != VnetHeader::default() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a virtio-net header for a device without offload",
                ));
            }
            if let [packet] = parts {
                return self.send(packet);
            }
            let packet = parts.concat();
            return self.send(&packet);
        }
        let mut head = [0u8; 24];
        let vnet = self.vnet.min(head.len());
        head[..VnetHeader::LEN].copy_from_slice(&header.encode());
        let mut all: [&[u8]; 4] = [&head[..vnet], &[], &[], &[]];
        all[1..=parts.len()].copy_from_slice(parts);
        let result = sys::retry_eintr(|| sys::write_parts(fd, &all[..=parts.len()]));
        Device::sent(result)
    }

    fn sent(result: io::Result<usize>) -> io::Result<bool> {
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn open_tun(name: &str, verb: &str, offload: bool) -> Result<Device, Error> {
        validate_name(name)?;
        let fd = sys::open_tun().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => Error::NoTunDevice,
            Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied {
                what: format!("{verb} TUN device {name}"),
            },
            _ => Error::io("opening /dev/net/tun", e),
        })?;

        let mut req = IfReq::new(name);
        let vnet_flag = if offload { libc::IFF_VNET_HDR } else { 0 };
        req.set_flags((libc::IFF_TUN | libc::IFF_NO_PI | vnet_flag) as c_short);
        req.ioctl(fd.as_fd(), IfReqIoctl::TunSetIff)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied {
                    what: format!("{verb} TUN device {name}"),
                },
                Some(libc::EINVAL) => Error::Unsupported(format!(
                    "cannot use interface {name}: it exists but is not a single-queue TUN device"
                )),
                Some(libc::EBUSY) => Error::io(
                    format!("TUNSETIFF on {name} (in use by another process?)"),
                    e,
                ),
                _ => Error::io(format!("TUNSETIFF on {name}"), e),
            })?;
        let name = req.name();

        let vnet = if offload {
            sys::tun_set_offload(fd.as_fd(), OFFLOADS).map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => Error::Unsupported(format!(
                    "the kernel refuses segmentation offload (TSO) on TUN device {name}"
                )),
                _ => Error::io(format!("TUNSETOFFLOAD on {name}"), e),
            })?;
            sys::tun_vnet_header_size(fd.as_fd())
                .map_err(|e| Error::io(format!("TUNGETVNETHDRSZ on {name}"), e))?
        } else {
            sys::tun_set_offload(fd.as_fd(), 0)
                .map_err(|e| Error::io(format!("TUNSETOFFLOAD on {name}"), e))?;
            0
        };
        let ifindex = sys::if_nametoindex(&name)
            .map_err(|e| Error::io(format!("looking up the index of {name}"), e))?;
        Ok(Device {
            fd,
            kind: DeviceKind::Tun,
            seqpacket: false,
            name: Some(name),
            ifindex: Some(ifindex),
            vnet,
            offloads: offload,
        })
    }
}

impl TryFrom<OwnedFd> for Device {
    type Error = Error;

    /// Adopts an owned descriptor, as [`Device::adopt_fd`] does (and closes it if rejected).
    fn try_from(fd: OwnedFd) -> Result<Device, Error> {
        let raw = fd.as_raw_fd();
        let device = match tun_interface(fd.as_fd(), raw)? {
            Some((name, ifindex, vnet)) => Device {
                fd,
                kind: DeviceKind::Tun,
                seqpacket: false,
                name: Some(name),
                ifindex,
                vnet,
                offloads: vnet != 0,
            },
            None => match sys::socket_type(fd.as_fd()) {
                Ok(ty @ (libc::SOCK_SEQPACKET | libc::SOCK_DGRAM)) => Device {
                    fd,
                    kind: DeviceKind::PacketSocket,
                    seqpacket: ty == libc::SOCK_SEQPACKET,
                    name: None,
                    ifindex: None,
                    vnet: 0,
                    offloads: false,
                },
                _ => {
                    return Err(Error::Unsupported(format!(
                        "descriptor {raw} is neither a TUN device nor a SOCK_SEQPACKET/SOCK_DGRAM socket"
                    )))
                }
            },
        };
        let fd = device.fd.as_fd();
        sys::set_nonblocking(fd)
            .map_err(|e| Error::io(format!("making descriptor {raw} non-blocking"), e))?;
        sys::set_cloexec(fd)
            .map_err(|e| Error::io(format!("setting FD_CLOEXEC on descriptor {raw}"), e))?;
        if device.kind == DeviceKind::Tun {
            // Best effort, as for a created device: without a virtio-net header, stale offloads
            // would hand us GSO packets; with one, the offloads the header is there for.
            let offloads = if device.vnet != 0 { OFFLOADS } else { 0 };
            let _ = sys::tun_set_offload(fd, offloads);
        }
        Ok(device)
    }
}

/// If `fd` is a TUN descriptor: its interface name, index and virtio-net header size (0 for
/// none), after checking that it is set up as this crate needs it. `Ok(None)` if it is no TUN
/// descriptor.
#[allow(clippy::type_complexity)]
fn tun_interface(
    fd: BorrowedFd<'_>,
    raw: RawFd,
) -> Result<Option<(String, Option<u32>, usize)>, Error> {
    let mut req = IfReq::new("");
    match req.ioctl(fd, IfReqIoctl::TunGetIff) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
            return Err(Error::Unsupported(format!(
                "descriptor {raw} is a /dev/net/tun descriptor not attached to any interface"
            )))
        }
        Err(_) => return Ok(None),
    }
    let name = req.name();
    // The flags are a 16-bit mask; do not let IFF_TUN_EXCL (0x8000) sign-extend.
    let flags = c_int::from(req.flags() as u16);
    let problem = if flags & libc::IFF_TAP != 0 {
        Some("is a TAP device; only TUN (IP-level) devices are supported")
    } else if flags & libc::IFF_NO_PI == 0 {
        Some("was set up without IFF_NO_PI; packet-information headers are not supported")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Error::Unsupported(format!(
            "descriptor {raw} (interface {name}) {problem}"
        )));
    }
    let vnet = if flags & libc::IFF_VNET_HDR != 0 {
        let size = sys::tun_vnet_header_size(fd)
            .map_err(|e| Error::io(format!("TUNGETVNETHDRSZ on descriptor {raw}"), e))?;
        if !(VnetHeader::LEN..=24).contains(&size) {
            return Err(Error::Unsupported(format!(
                "descriptor {raw} (interface {name}) has a {size}-byte virtio-net header; \
                 10 to 24 bytes are supported"
            )));
        }
        size
    } else {
        0
    };
    let ifindex = sys::if_nametoindex(&name).ok();
    Ok(Some((name, ifindex, vnet)))
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Device> for OwnedFd {
    /// Gives up the device, keeping its descriptor open (e.g. to pass it to another process).
    fn from(device: Device) -> OwnedFd {
        device.fd
    }
}
