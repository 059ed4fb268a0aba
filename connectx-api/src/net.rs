//! [`Net`]: the handle that owns the runtime thread, and its builder.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use stack::capture::Capture;
use stack::impair::{Impaired, Impairment, ImpairmentError};
use stack::{
    Cidr, CidrError, IfaceId, InterfaceConfig, InterfaceError, InterfaceInfo, PacketIo, Stack,
    StackConfig,
};
use tun_driver::{wait_readable, Device, Waker};

use crate::fd::FdTable;

/// The protocol state shared by the application's threads and the runtime thread.
pub(crate) struct State {
    pub(crate) stack: Stack,
    pub(crate) fds: FdTable,
    pub(crate) running: bool,
    /// The kernel side of each interface (by interface id), for the TUN devices that have one.
    pub(crate) links: Vec<Option<tun_driver::Link>>,
    /// The file the client cookie cache is kept in, if any.
    pub(crate) cookie_file: Option<crate::cookies::CookieFile>,
}

impl State {
    /// Follow the kernel's view of each TUN link: a device an administrator set down (`ip link
    /// set DEV down`) carries nothing, so new connections through it fail with `ENETDOWN`, as
    /// through a downed interface on Darwin. One `SIOCGIFFLAGS` per device, at `connectx`.
    pub(crate) fn sync_links(&mut self) {
        for (n, link) in self.links.iter().enumerate() {
            if let Some(Ok(up)) = link.as_ref().map(|l| l.is_up()) {
                let _ = self.stack.set_interface_up(IfaceId(n), up);
            }
        }
    }
}

/// The stack's clock: time since the runtime started, read afresh for every call that needs it
/// (the stack keeps none of its own, so no deadline is ever computed from an old time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> stack::Instant {
        stack::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }
}

pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) state: Mutex<State>,
    /// Notified whenever a poll changed something: blocked calls look again.
    pub(crate) changed: Condvar,
    /// Wakes the runtime thread out of `poll(2)` after a call queued work.
    pub(crate) waker: Waker,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this crate; the state is still the
        // best there is, so keep serving rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop(&self.shared, &self.thread);
    }
}

fn stop(shared: &Shared, thread: &Mutex<Option<JoinHandle<()>>>) {
    shared.lock().running = false;
    shared.waker.wake();
    shared.changed.notify_all();
    let handle = thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// A running stack: its devices, its runtime thread and its descriptor table.
///
/// Clones share the same stack. The runtime stops when the last clone (and the last stream made
/// from it) is dropped, or at [`Net::stop`].
#[derive(Clone)]
pub struct Net {
    inner: Arc<Inner>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

impl Net {
    /// Describe the devices and addresses of a new stack.
    pub fn builder() -> NetBuilder {
        NetBuilder::default()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Stop the runtime thread. Calls blocked in `connectx`, `accept`, `recv`… return `EINTR`;
    /// later calls fail with `ENETDOWN`.
    pub fn stop(&self) {
        stop(&self.inner.shared, &self.inner.thread);
    }

    /// The stack's interfaces: names, kernel indexes, addresses, packet counts.
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.shared().lock().stack.interfaces()
    }
}

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
        let capture = match (self.capture, &self.pcap) {
            (Some(out), _) => Some(out),
            (None, Some(path)) => {
                let file =
                    std::fs::File::create(path).map_err(|e| StartError::Pcap(path.clone(), e))?;
                Some(Box::new(file) as Box<dyn std::io::Write + Send>)
            }
            (None, None) => None,
        };
        let mut stack = Stack::new(self.config.unwrap_or_default());
        let cookie_file = self
            .cookie_file
            .map(|path| crate::cookies::CookieFile::load(path, &mut stack));
        let any_route = self.devices.iter().any(|d| !d.routes.is_empty());
        let mut devices = Vec::new();
        let mut links = Vec::new();
        for (n, spec) in self.devices.into_iter().enumerate() {
            let device = match spec.source {
                Source::Tun(name) => Device::create(&name)?,
                Source::Fd(fd) => Device::adopt_fd(fd)?,
                Source::Device(d) => d,
            };
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
                        // bulk transfer. Best effort: an attached device may not be ours to tune.
                        let _ = link.set_txqueuelen(4096);
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
                .mtu(mtu);
            config.addresses = addresses;
            let id = stack.add_interface(config).map_err(StartError::Interface)?;
            for r in routes {
                stack.add_route(r, id).map_err(StartError::Interface)?;
            }
            links.push(device.link());
            devices.push(device);
        }
        let n = devices.len();
        let devices = Devices {
            devices,
            readable: vec![true; n],
            dead: vec![false; n],
            errors: 0,
            dropped: 0,
        };
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
        let shared = Arc::new(Shared {
            clock,
            state: Mutex::new(State {
                stack,
                fds: FdTable::default(),
                running: true,
                links,
                cookie_file,
            }),
            changed: Condvar::new(),
            waker: Waker::new().map_err(StartError::Io)?,
        });
        let thread = std::thread::Builder::new()
            .name("connectx-runtime".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, io)
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

/// The devices as the stack sees them. A device is read only while `poll(2)` said it is
/// readable and until it answers "nothing now".
struct Devices {
    devices: Vec<Device>,
    readable: Vec<bool>,
    /// Devices that failed (a socketpair whose other end closed): no longer polled, or `poll(2)`
    /// would report them forever.
    dead: Vec<bool>,
    errors: u64,
    dropped: u64,
}

impl PacketIo for Devices {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        if !self.readable[iface.0] {
            return None;
        }
        match self.devices[iface.0].recv(buf) {
            Ok(Some(n)) => Some(n),
            Ok(None) => {
                self.readable[iface.0] = false;
                None
            }
            Err(_) => {
                // A device error (the peer end of a socketpair closed, the TUN device removed):
                // count it and stop reading until poll says otherwise.
                self.errors += 1;
                self.readable[iface.0] = false;
                self.dead[iface.0] = true;
                None
            }
        }
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        match self.devices[iface.0].send(packet) {
            Ok(true) => {}
            // The kernel's queue is full: the packet is lost, as on a wire; TCP retransmits.
            Ok(false) | Err(_) => self.dropped += 1,
        }
    }
}

/// On stop, send what the sockets still have queued — above all the FINs of connections the
/// application just closed — so that peers see an orderly end rather than silence. Bounded: at
/// most 100 ms, and no waiting for acknowledgements.
fn drain(stack: &mut Stack, io: &mut impl PacketIo, clock: Clock) {
    let until = std::time::Instant::now() + Duration::from_millis(100);
    while std::time::Instant::now() < until {
        let now = clock.now();
        let outcome = stack.poll(now, io);
        if outcome.activity || outcome.more_pending || stack.poll_delay(now) == Some(Duration::ZERO)
        {
            continue;
        }
        // Packets an impairment still holds (a delayed FIN) leave when they come due.
        match io.next_due() {
            Some(due) => {
                let wait = Duration::from_micros((due - now.min(due)).total_micros());
                std::thread::sleep(
                    wait.min(until.saturating_duration_since(std::time::Instant::now())),
                );
            }
            None => break,
        }
    }
}

/// The packet path under the stack: the capture (what the stack itself sends and receives),
/// the impairment, the devices. Either decorator costs one branch per packet when off.
type PacketPath = Capture<Impaired<Devices>>;

/// The runtime thread: the only place that reads the clock. It sleeps in `poll(2)` until a
/// device is readable, a call wakes it, the stack's next timer is due, or a packet the
/// impairment holds comes due.
fn run(shared: &Shared, mut io: PacketPath) {
    let n = io.inner().inner().devices.len();
    let mut fds: Vec<RawFd> = io
        .inner()
        .inner()
        .devices
        .iter()
        .map(|d| d.as_raw_fd())
        .collect();
    fds.push(shared.waker.as_raw_fd());
    let mut ready = vec![false; fds.len()];
    loop {
        let timeout = {
            let mut state = shared.lock();
            if !state.running {
                drain(&mut state.stack, &mut io, shared.clock);
                break;
            }
            let now = shared.clock.now();
            let outcome = state.stack.poll(now, &mut io);
            if outcome.activity {
                shared.changed.notify_all();
            }
            let state = &mut *state;
            if let Some(file) = state.cookie_file.as_mut() {
                file.save_if_changed(&state.stack);
            }
            if outcome.more_pending {
                continue;
            }
            // Packets the impairment holds come due on their own.
            let held = io
                .next_due()
                .map(|due| Duration::from_micros((due - now.min(due)).total_micros()));
            match (state.stack.poll_delay(now), held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if timeout == Some(Duration::ZERO) {
            continue;
        }
        let devices = io.inner_mut().inner_mut();
        for (fd, dead) in fds.iter_mut().zip(&devices.dead) {
            if *dead {
                // poll(2) skips negative descriptors.
                *fd = -1;
            }
        }
        // A failing poll(2) (EINTR is retried inside) leaves `ready` clear; the loop then runs on
        // its timers alone, which is the best that can be done.
        let _ = wait_readable(&fds, &mut ready, timeout);
        for (readable, ready) in devices.readable.iter_mut().zip(&ready) {
            *readable |= *ready;
        }
        if ready[n] {
            shared.waker.drain();
        }
    }
}
