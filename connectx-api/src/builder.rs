//! [`NetBuilder`]: the devices, addresses and settings of a new [`Net`], and starting it.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stack::capture::Capture;
use stack::impair::{Impaired, Impairment, ImpairmentError};
use stack::{Cidr, CidrError, InterfaceConfig, InterfaceError, Stack, StackConfig};
use tun_driver::Device;

use crate::net::{Clock, Inner, Net, Shared, State};
use crate::runtime::{Devices, IoSide, Runtime, TxSide};

/// Why a [`Net`] could not start. Each is one line, fit for a command-line error.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// No device was given.
    NoDevice,
    /// An address, peer, route or MTU was given before any device.
    NoDeviceFor(&'static str),
    /// The capture file could not be created.
    Pcap(std::path::PathBuf, std::io::Error),
    /// An impairment setting is out of range.
    Impairment(ImpairmentError),
    /// Opening or configuring a device failed.
    Device(tun_driver::Error),
    /// An address or route was not in `ADDRESS/LEN` form.
    Cidr(CidrError),
    /// The stack refused the interface (too many addresses, MTU out of range).
    Interface(InterfaceError),
    /// `peer` on a descriptor with no kernel interface of ours to configure.
    NoKernelSide(String),
    /// Offload asked for together with an impairment, which acts on single packets.
    OffloadImpaired,
    /// The runtime thread could not start.
    Io(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoDevice => write!(
                f,
                "no device: give a TUN device (tun NAME) or a descriptor (tun_fd N)"
            ),
            StartError::NoDeviceFor(what) => {
                write!(f, "{what} given before any device: name the device first")
            }
            StartError::Pcap(path, e) => {
                write!(f, "cannot write capture file {}: {e}", path.display())
            }
            StartError::Impairment(e) => write!(f, "{e}"),
            StartError::Device(e) => write!(f, "{e}"),
            StartError::Cidr(e) => write!(f, "{e}"),
            StartError::Interface(e) => write!(f, "{e}"),
            StartError::NoKernelSide(dev) => {
                write!(
                    f,
                    "{dev} has no kernel interface to give a peer address to (a socket descriptor)"
                )
            }
            StartError::OffloadImpaired => write!(
                f,
                "offload cannot be on with an impairment (it acts on packets as they are on the wire): turn one off"
            ),
            StartError::Io(e) => write!(f, "cannot start the runtime thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<tun_driver::Error> for StartError {
    fn from(e: tun_driver::Error) -> Self {
        StartError::Device(e)
    }
}

impl From<CidrError> for StartError {
    fn from(e: CidrError) -> Self {
        StartError::Cidr(e)
    }
}

enum Source {
    Tun(String),
    Fd(RawFd),
    Device(Device),
}

struct DeviceSpec {
    source: Source,
    addresses: Vec<String>,
    peers: Vec<String>,
    routes: Vec<String>,
    mtu: Option<u32>,
}

/// Builds a [`Net`]: devices, each followed by its own addresses, peers, routes and MTU.
///
/// ```no_run
/// let net = connectx_api::Net::builder()
///     .tun("cx0")
///     .address("192.0.2.2/24")
///     .peer("192.0.2.1/24")
///     .start()?;
/// # Ok::<(), connectx_api::StartError>(())
/// ```
#[derive(Default)]
pub struct NetBuilder {
    devices: Vec<DeviceSpec>,
    config: Option<StackConfig>,
    misplaced: Option<&'static str>,
    pcap: Option<std::path::PathBuf>,
    capture: Option<Box<dyn std::io::Write + Send>>,
    impairment: Option<Impairment>,
    cookie_file: Option<std::path::PathBuf>,
    offload: Option<bool>,
}

impl fmt::Debug for NetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetBuilder")
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl NetBuilder {
    fn push(mut self, source: Source) -> Self {
        self.devices.push(DeviceSpec {
            source,
            addresses: vec![],
            peers: vec![],
            routes: vec![],
            mtu: None,
        });
        self
    }

    fn last(&mut self, what: &'static str) -> Option<&mut DeviceSpec> {
        if self.devices.is_empty() {
            self.misplaced.get_or_insert(what);
        }
        self.devices.last_mut()
    }

    /// A TUN device by name: created (`IFF_TUN | IFF_NO_PI`) or, if a persistent one exists,
    /// attached to.
    pub fn tun(self, name: &str) -> Self {
        self.push(Source::Tun(name.to_owned()))
    }

    /// An open descriptor by number: a TUN device handed over by a privileged parent, or one end
    /// of a `SOCK_SEQPACKET`/`SOCK_DGRAM` socketpair carrying one IP packet per message. The
    /// stack takes ownership of it.
    pub fn tun_fd(self, fd: RawFd) -> Self {
        self.push(Source::Fd(fd))
    }

    /// A device opened by the caller.
    pub fn device(self, device: Device) -> Self {
        self.push(Source::Device(device))
    }

    /// An address of the stack on the last device, as `ADDRESS/LEN`.
    pub fn address(mut self, cidr: &str) -> Self {
        if let Some(d) = self.last("an address") {
            d.addresses.push(cidr.to_owned());
        }
        self
    }

    /// An address for the kernel's side of the last device (which must be a TUN device), as
    /// `ADDRESS/LEN`; IPv6 ones skip duplicate address detection.
    pub fn peer(mut self, cidr: &str) -> Self {
        if let Some(d) = self.last("a peer address") {
            d.peers.push(cidr.to_owned());
        }
        self
    }

    /// A route through the last device: `ADDRESS/LEN`, or `default` for both default routes.
    /// Without any route, the first device carries the default routes.
    pub fn route(mut self, cidr: &str) -> Self {
        if let Some(d) = self.last("a route") {
            d.routes.push(cidr.to_owned());
        }
        self
    }

    /// The MTU of the last device (also set on the kernel side of a TUN device).
    pub fn mtu(mut self, mtu: u32) -> Self {
        if let Some(d) = self.last("an MTU") {
            d.mtu = Some(mtu);
        }
        self
    }

    /// Stack settings (buffer sizes, timeouts, congestion control).
    pub fn stack_config(mut self, config: StackConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Capture every packet the stack sends and receives, on every device, to a pcap file
    /// (link type raw IP; tcpdump and tshark read it). Written out after each round of the
    /// runtime, so a program that stops abruptly loses at most the packets of one round.
    pub fn pcap(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.pcap = Some(path.into());
        self
    }

    /// As [`NetBuilder::pcap`], to any writer (a pipe to `tcpdump -r -`, a buffer in a test).
    pub fn capture(mut self, out: Box<dyn std::io::Write + Send>) -> Self {
        self.capture = Some(out);
        self
    }

    /// Delay, jitter, loss, reordering and duplication on every device, both directions (see
    /// [`stack::impair`]): a 20 ms path on a laptop, without the kernel's netem.
    pub fn impairment(mut self, impairment: Impairment) -> Self {
        self.impairment = Some(impairment);
        self
    }

    /// Segmentation offload on the devices: TCP segments of up to 64 KB cross the TUN device
    /// in one system call each way, and the kernel cuts and checksums them (a virtio-net header,
    /// `IFF_VNET_HDR`). The default is on where the device allows it (a TUN device this
    /// builder creates, or a descriptor set up with a virtio-net header) and off with an
    /// impairment, which acts on packets as they are on the wire. `true` makes a device that
    /// cannot have it, or an impairment, an error at [`start`](NetBuilder::start).
    pub fn offload(mut self, on: bool) -> Self {
        self.offload = Some(on);
        self
    }

    /// Keep the client cookie cache in `path`: loaded at start, saved (to a temporary file,
    /// then renamed over it) after each change. A missing file is an empty cache; an unreadable
    /// or corrupt one too, with a warning from [`Net::take_cookie_cache_warnings`].
    pub fn cookie_cache_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.cookie_file = Some(path.into());
        self
    }

    /// Open and configure the devices and start the runtime thread.
    ///
    /// # Errors
    /// [`StartError`]: no device, a malformed address, a device that cannot be opened or
    /// configured (`CAP_NET_ADMIN`), too many addresses.
    pub fn start(self) -> Result<Net, StartError> {
        if let Some(what) = self.misplaced {
            return Err(StartError::NoDeviceFor(what));
        }
        if self.devices.is_empty() {
            return Err(StartError::NoDevice);
        }
        let impairment = self.impairment.unwrap_or_default();
        // Checked before any device is touched.
        impairment.validate().map_err(StartError::Impairment)?;
        let offload = match self.offload {
            Some(true) if !impairment.is_none() => return Err(StartError::OffloadImpaired),
            Some(on) => on,
            None => impairment.is_none(),
        };
        let capture = match (self.capture, &self.pcap) {
            (Some(out), _) => Some(out),
            (None, Some(path)) => {
                let file =
                    std::fs::File::create(path).map_err(|e| StartError::Pcap(path.clone(), e))?;
                Some(Box::new(file) as Box<dyn std::io::Write + Send>)
            }
            (None, None) => None,
        };
        // Socket buffers as fresh pages, whatever the program freed before: an idle
        // connection then costs what it uses, not its buffers' size.
        tun_driver::keep_large_allocations_mapped();
        let mut stack = Stack::new(self.config.unwrap_or_default());
        let (cookie_file, cookie_warnings) = match self.cookie_file {
            Some(path) => {
                let (file, warnings) = crate::cookies::CookieFile::load(path, &mut stack);
                (Some(file), warnings)
            }
            None => (None, Vec::new()),
        };
        let any_route = self.devices.iter().any(|d| !d.routes.is_empty());
        let mut devices = Vec::new();
        let mut links = Vec::new();
        for (n, spec) in self.devices.into_iter().enumerate() {
            let mut device = match spec.source {
                // A kernel without TSO on TUN devices: without offload, unless it was asked for.
                Source::Tun(name) if offload => match Device::create_offload(&name) {
                    Err(tun_driver::Error::Unsupported(_)) if self.offload.is_none() => {
                        Device::create(&name)?
                    }
                    other => other?,
                },
                Source::Tun(name) => Device::create(&name)?,
                Source::Fd(fd) => Device::adopt_fd(fd)?,
                Source::Device(d) => d,
            };
            if device.vnet_header() || self.offload == Some(true) {
                device.set_offload(offload)?;
            }
            let addresses = spec
                .addresses
                .iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()?;
            let peers = spec
                .peers
                .iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()?;
            let mut routes = Vec::new();
            for r in &spec.routes {
                if r == "default" {
                    routes.extend([Cidr::default_v4(), Cidr::default_v6()]);
                } else {
                    routes.push(r.parse::<Cidr>()?);
                }
            }
            if !any_route && n == 0 {
                routes.extend([Cidr::default_v4(), Cidr::default_v6()]);
            }
            let name = device
                .name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("fd{}", device.as_raw_fd()));
            let mtu = match device.link() {
                Some(link) => {
                    if let Some(mtu) = spec.mtu {
                        link.set_mtu(mtu)?;
                    }
                    if !peers.is_empty() || spec.mtu.is_some() {
                        link.set_up(true)?;
                        // The kernel's queue towards us: 500 packets by default overflow under
                        // bulk transfer, and 4,096 under the replies to thousands of connections
                        // at once (the bench's `async` section lost 12% of its packets there,
                        // each a retransmission timeout). The kernel cannot see how fast we
                        // read; a drop here costs a peer's timeout, a queued packet only memory
                        // (the ring is 8 bytes a slot). Best effort: an attached device may not
                        // be ours to tune.
                        let _ = link.set_txqueuelen(65_536);
                    }
                    for p in &peers {
                        link.add_address(p.addr(), p.prefix_len())?;
                    }
                    for p in &peers {
                        if let std::net::IpAddr::V6(a) = p.addr() {
                            // So that the kernel's side is reachable when `start` returns.
                            link.wait_ipv6_local_route(a, Duration::from_secs(2))?;
                        }
                    }
                    link.mtu().map(|m| m as usize).unwrap_or(1500)
                }
                None if !peers.is_empty() => return Err(StartError::NoKernelSide(name)),
                None => spec.mtu.map_or(1500, |m| m as usize),
            };
            let mut config = InterfaceConfig::new(name)
                .kernel_index(device.ifindex())
                .mtu(mtu)
                .offload(device.offload());
            config.addresses = addresses;
            let id = stack.add_interface(config).map_err(StartError::Interface)?;
            for r in routes {
                stack.add_route(r, id).map_err(StartError::Interface)?;
            }
            links.push(device.link());
            devices.push(device);
        }
        let mtus: Vec<usize> = stack.interfaces().iter().map(|i| i.mtu).collect();
        // The largest packet read from each device: a super-packet with offload.
        let frames = devices
            .iter()
            .zip(&mtus)
            .map(|(d, &mtu)| {
                if d.offload() {
                    stack::offload::MAX_PACKET
                } else {
                    mtu
                }
            })
            .collect();
        let burst = stack.config().rx_burst;
        // An impairment holds packets on the runtime's clock: only the runtime writes then.
        let inline_sends = impairment.is_none();
        let devices = Devices::new(devices, mtus);
        let direct =
            (inline_sends && capture.is_none()).then(|| TxSide::new(Arc::clone(&devices.writer)));
        let impaired = Impaired::new(devices, impairment).map_err(StartError::Impairment)?;
        let clock = Clock::new();
        let io = match capture {
            Some(out) => {
                let epoch_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let path = self.pcap.unwrap_or_else(|| "capture".into());
                Capture::new(impaired, out, epoch_unix).map_err(|e| StartError::Pcap(path, e))?
            }
            None => Capture::off(impaired),
        };
        let shared = Arc::new(
            Shared::new(
                clock,
                State::new(stack, cookie_warnings),
                IoSide::new(io, frames, burst),
                direct,
                inline_sends,
                links,
            )
            .map_err(StartError::Io)?,
        );
        let runtime = Runtime::new(cookie_file);
        let thread = std::thread::Builder::new()
            .name("connectx-runtime".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || runtime.run(&shared)
            })
            .map_err(StartError::Io)?;
        Ok(Net {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }
}
