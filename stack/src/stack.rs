//! The [`Stack`]: interfaces, routing, the socket table and the poll loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::iface::SocketHandle;
use smoltcp::time::Instant;

use crate::addr::{is_unicast_destination, Cidr};
use crate::config::{InterfaceConfig, StackConfig};
use crate::error::{BindError, InterfaceError, RouteError};
use crate::iface::{Iface, IfaceId, InterfaceInfo, PacketIo, Port};
use crate::route::RoutingTable;
use crate::socket::{Family, SocketId, Table};
use crate::source::select_source;

/// Most addresses one interface holds (smoltcp's `iface-max-addr-count-8`).
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 8;

/// Transport protocol of a port binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// Who holds a port binding: an open socket, or a connection the application closed that is
/// still finishing (FIN-WAIT, TIME-WAIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Socket(SocketId),
    Orphan(u64),
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    addr: IpAddr,
    holder: Holder,
}

/// A TCP connection the application closed, kept until it has finished closing.
#[derive(Debug)]
pub(crate) struct Orphan {
    pub(crate) iface: IfaceId,
    pub(crate) handle: SocketHandle,
    /// When it is aborted if it has not finished closing (`None`: already aborted, kept until
    /// its RST has gone out).
    pub(crate) deadline: Option<Instant>,
    pub(crate) token: u64,
    pub(crate) port: Option<u16>,
    /// (local, remote), to forget the connection's Fast Open state with it.
    pub(crate) tuple: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// What a poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Packets were read or written, or a socket changed state: waiters should look again.
    pub activity: bool,
    /// An interface still had packets waiting when its read budget ran out: poll again soon.
    pub more_pending: bool,
}

/// The protocol core: interfaces, routes and sockets. No threads, no clock, no descriptors:
/// time is passed to [`Stack::poll`], packets move through the caller's [`PacketIo`].
#[derive(Debug)]
pub struct Stack {
    pub(crate) config: StackConfig,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) routes: RoutingTable,
    pub(crate) table: Table,
    bindings: HashMap<(Proto, u16), Vec<Binding>>,
    pub(crate) orphans: Vec<Orphan>,
    /// smoltcp sockets of closed datagram sockets that still had datagrams to send.
    pub(crate) udp_orphans: Vec<crate::udp::UdpOrphan>,
    next_orphan: u64,
    pub(crate) rng: StdRng,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// TCP Fast Open: cookie cache, per-connection rewriting, listeners.
    pub(crate) fo: crate::fastopen::Layer,
    /// Bytes of socket buffers held by smoltcp sockets (see `StackConfig::buffer_limit`).
    committed: usize,
    /// ICMP errors about our packets, and the SYNs they may quote.
    pub(crate) icmp: crate::icmp::Tracker,
}

impl Stack {
    /// A stack with no interfaces yet.
    pub fn new(config: StackConfig) -> Stack {
        let rng = StdRng::seed_from_u64(config.random_seed);
        let mut fo = crate::fastopen::Layer::default();
        fo.disabled = !config.fast_open_layer;
        Stack {
            config,
            ifaces: Vec::new(),
            routes: RoutingTable::default(),
            table: Table::default(),
            bindings: HashMap::new(),
            orphans: Vec::new(),
            udp_orphans: Vec::new(),
            next_orphan: 0,
            rng,
            rx_buf: Vec::new(),
            tx_buf: Vec::new(),
            fo,
            committed: 0,
            icmp: crate::icmp::Tracker::default(),
        }
    }

    /// The configuration the stack was made with.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Add an interface. Its addresses also give connected routes for their networks.
    ///
    /// # Errors
    /// [`InterfaceError::TooManyAddresses`] past [`MAX_ADDRESSES_PER_INTERFACE`];
    /// [`InterfaceError::BadMtu`] for an MTU the addresses' families cannot use.
    pub fn add_interface(&mut self, config: InterfaceConfig) -> Result<IfaceId, InterfaceError> {
        if config.addresses.len() > MAX_ADDRESSES_PER_INTERFACE {
            return Err(InterfaceError::TooManyAddresses {
                name: config.name,
                max: MAX_ADDRESSES_PER_INTERFACE,
            });
        }
        let needs_v6 = config.addresses.iter().any(|c| !c.is_ipv4());
        let min = if needs_v6 { 1280 } else { 576 };
        if config.mtu < min || config.mtu > 65535 {
            return Err(InterfaceError::BadMtu {
                name: config.name,
                mtu: config.mtu,
            });
        }
        let id = IfaceId(self.ifaces.len());
        for cidr in &config.addresses {
            self.routes.add(*cidr, id);
        }
        let seed = self.rng.random();
        let mtu = config.mtu;
        self.ifaces.push(Iface::new(config, seed));
        if self.rx_buf.len() < mtu {
            self.rx_buf.resize(mtu, 0);
            self.tx_buf.resize(mtu, 0);
        }
        Ok(id)
    }

    /// Route `dest` through `iface` (`0.0.0.0/0` and `::/0` are default routes).
    ///
    /// # Errors
    /// [`InterfaceError::NoSuchInterface`] for an id this stack did not give.
    pub fn add_route(&mut self, dest: Cidr, iface: IfaceId) -> Result<(), InterfaceError> {
        if iface.0 >= self.ifaces.len() {
            return Err(InterfaceError::NoSuchInterface);
        }
        self.routes.add(dest, iface);
        Ok(())
    }

    /// The routing table.
    pub fn routes(&self) -> &RoutingTable {
        &self.routes
    }

    /// Bring an interface up or down. A down interface sends nothing; what arrives on it is
    /// dropped; new connections through it fail with `ENETDOWN`.
    ///
    /// # Errors
    /// [`InterfaceError::NoSuchInterface`] for an id this stack did not give.
    pub fn set_interface_up(&mut self, iface: IfaceId, up: bool) -> Result<(), InterfaceError> {
        let i = self
            .ifaces
            .get_mut(iface.0)
            .ok_or(InterfaceError::NoSuchInterface)?;
        i.up = up;
        Ok(())
    }

    /// The interfaces, in the order they were added.
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.ifaces
            .iter()
            .enumerate()
            .map(|(n, i)| InterfaceInfo {
                id: IfaceId(n),
                name: i.config.name.clone(),
                kernel_index: i.config.kernel_index,
                mtu: i.config.mtu,
                addresses: i.config.addresses.clone(),
                up: i.up,
                rx_packets: i.rx_packets,
                tx_packets: i.tx_packets,
            })
            .collect()
    }

    /// The interface whose kernel index is `index`.
    pub fn interface_by_kernel_index(&self, index: u32) -> Option<IfaceId> {
        self.ifaces
            .iter()
            .position(|i| i.config.kernel_index == Some(index))
            .map(IfaceId)
    }

    /// The interface named `name`.
    pub fn interface_by_name(&self, name: &str) -> Option<IfaceId> {
        self.ifaces
            .iter()
            .position(|i| i.config.name == name)
            .map(IfaceId)
    }

    /// Move packets and run timers: read what arrived on each interface (up to a burst), let
    /// smoltcp process it, send what the sockets have queued, then settle connection states.
    pub fn poll(&mut self, now: Instant, io: &mut (impl PacketIo + ?Sized)) -> PollOutcome {
        io.advance(now);
        let mut outcome = PollOutcome::default();
        let budget = self.config.rx_burst.max(1);
        for (n, iface) in self.ifaces.iter_mut().enumerate() {
            let id = IfaceId(n);
            if !iface.up {
                while io.recv(id, &mut self.rx_buf).is_some() {}
                continue;
            }
            let mtu = iface.config.mtu;
            let mut port = Port {
                io: &mut *io,
                id,
                rx: &mut self.rx_buf[..mtu],
                tx: &mut self.tx_buf[..mtu],
                mtu,
                budget,
                rx_packets: 0,
                tx_packets: 0,
                fo: &mut self.fo,
                icmp: &mut self.icmp,
                now,
            };
            let mut changed = iface.iface.poll(now, &mut port, &mut iface.sockets);
            // Segments the Fast Open layer plays to smoltcp (a server's view of the client's
            // final ACK and SYN data) are taken at once, so the application sees them now.
            for _ in 0..4 {
                if !port.fo.has_injected(id) {
                    break;
                }
                if iface.iface.poll(now, &mut port, &mut iface.sockets)
                    == smoltcp::iface::PollResult::SocketStateChanged
                {
                    changed = smoltcp::iface::PollResult::SocketStateChanged;
                }
            }
            outcome.activity |= changed == smoltcp::iface::PollResult::SocketStateChanged
                || port.rx_packets > 0
                || port.tx_packets > 0;
            outcome.more_pending |= port.budget == 0;
            iface.rx_packets += port.rx_packets;
            iface.tx_packets += port.tx_packets;
        }
        outcome.activity |= self.handle_icmp();
        outcome.activity |= self.settle(now);
        io.flush();
        outcome
    }

    /// How long until [`Stack::poll`] has something to do if no packet arrives: a retransmission,
    /// a delayed ACK, a connect timeout. `None`: nothing until a packet or a call.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let mut delay: Option<smoltcp::time::Duration> = None;
        let mut take = |d: smoltcp::time::Duration| {
            delay = Some(delay.map_or(d, |cur| cur.min(d)));
        };
        for iface in &mut self.ifaces {
            if let Some(d) = iface.iface.poll_delay(now, &iface.sockets) {
                take(d);
            }
        }
        if let Some(deadline) = self.next_deadline(now) {
            take(deadline - now);
        }
        delay.map(|d| Duration::from_micros(d.total_micros()))
    }

    // ----- paths -----

    /// Choose the interface and source address for `dest`.
    ///
    /// `via` forces the interface (`sae_srcif`); `src` forces the source address (`sae_srcaddr`,
    /// or an address the socket is bound to), which then also decides the interface: a packet
    /// may only leave through the interface that owns its source address.
    pub(crate) fn path(
        &self,
        dest: IpAddr,
        via: Option<IfaceId>,
        src: Option<IpAddr>,
    ) -> Result<(IfaceId, IpAddr), RouteError> {
        if !is_unicast_destination(&dest) {
            return Err(RouteError::InvalidDestination(dest));
        }
        let src = src.filter(|s| !s.is_unspecified());
        let (id, src) = match (via, src) {
            (Some(id), Some(src)) => {
                let iface = self.ifaces.get(id.0).ok_or(RouteError::NoSuchInterface)?;
                if !iface.config.addresses.iter().any(|c| c.addr() == src) {
                    return Err(RouteError::AddressNotAvailable(src));
                }
                (id, src)
            }
            (Some(id), None) => {
                let iface = self.ifaces.get(id.0).ok_or(RouteError::NoSuchInterface)?;
                let src = select_source(&dest, &iface.config.addresses)
                    .ok_or(RouteError::NoSourceAddress(dest))?;
                (id, src)
            }
            (None, Some(src)) => {
                let id = self
                    .interface_owning(&src)
                    .ok_or(RouteError::AddressNotAvailable(src))?;
                (id, src)
            }
            (None, None) => {
                let route = match self.routes.lookup(&dest, |i| self.ifaces[i.0].up) {
                    Some(route) => route,
                    None if self.routes.lookup(&dest, |_| true).is_some() => {
                        return Err(RouteError::NetworkDown(dest))
                    }
                    None => return Err(RouteError::NetworkUnreachable(dest)),
                };
                let iface = &self.ifaces[route.iface.0];
                let src = select_source(&dest, &iface.config.addresses)
                    .ok_or(RouteError::NoSourceAddress(dest))?;
                (route.iface, src)
            }
        };
        if !self.ifaces[id.0].up {
            return Err(RouteError::NetworkDown(dest));
        }
        Ok((id, src))
    }

    /// The interface that owns address `ip`.
    pub(crate) fn interface_owning(&self, ip: &IpAddr) -> Option<IfaceId> {
        self.ifaces
            .iter()
            .position(|i| i.config.addresses.iter().any(|c| c.addr() == *ip))
            .map(IfaceId)
    }

    /// Whether a datagram or connection from `ip` can use this stack: unspecified, or owned.
    pub(crate) fn check_local_addr(&self, ip: &IpAddr) -> Result<(), BindError> {
        if ip.is_unspecified() || self.interface_owning(ip).is_some() {
            Ok(())
        } else {
            Err(BindError::AddressNotAvailable(*ip))
        }
    }

    /// Interfaces on which a socket bound to `ip` lives: the owner of a specific address, or
    /// every interface with an address of the family.
    pub(crate) fn interfaces_for(&self, ip: &IpAddr, family: Family) -> Vec<IfaceId> {
        if ip.is_unspecified() {
            (0..self.ifaces.len())
                // An AF_INET6 socket on the unspecified address hears IPv4 too (as Linux with
                // IPV6_V6ONLY off), so it lives on every interface.
                .filter(|&n| {
                    family == Family::V6
                        || self.ifaces[n]
                            .config
                            .addresses
                            .iter()
                            .any(|c| family.admits(&c.addr()))
                })
                .map(IfaceId)
                .collect()
        } else {
            self.interface_owning(ip).into_iter().collect()
        }
    }

    // ----- ports -----

    /// Register `holder` on (`addr`, `port`), or on a random ephemeral port when `port` is 0.
    /// Two bindings clash when their addresses overlap (equal, or either unspecified).
    pub(crate) fn bind_port(
        &mut self,
        proto: Proto,
        addr: IpAddr,
        port: u16,
        holder: Holder,
    ) -> Result<u16, BindError> {
        if port != 0 {
            if self.port_taken(proto, &addr, port) {
                return Err(BindError::AddressInUse);
            }
            self.bindings
                .entry((proto, port))
                .or_default()
                .push(Binding { addr, holder });
            return Ok(port);
        }
        // RFC 6056 algorithm 1: a random start, then the next free port.
        let range = self.config.ephemeral_ports.clone();
        let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
        let count = hi.saturating_sub(lo) + 1;
        let start = self.rng.random_range(0..count);
        for step in 0..count {
            // `lo + offset` stays within the u16 range by construction.
            let candidate = (lo + (start + step) % count) as u16;
            if !self.port_taken(proto, &addr, candidate) {
                self.bindings
                    .entry((proto, candidate))
                    .or_default()
                    .push(Binding { addr, holder });
                return Ok(candidate);
            }
        }
        Err(BindError::NoPortsLeft)
    }

    fn port_taken(&self, proto: Proto, addr: &IpAddr, port: u16) -> bool {
        self.bindings.get(&(proto, port)).is_some_and(|list| {
            list.iter().any(|b| {
                b.addr.is_ipv4() == addr.is_ipv4()
                    && (b.addr == *addr || b.addr.is_unspecified() || addr.is_unspecified())
            })
        })
    }

    pub(crate) fn release_port(&mut self, proto: Proto, port: u16, holder: Holder) {
        if let Some(list) = self.bindings.get_mut(&(proto, port)) {
            list.retain(|b| b.holder != holder);
            if list.is_empty() {
                self.bindings.remove(&(proto, port));
            }
        }
    }

    /// Hand a socket's port binding over to an orphan.
    pub(crate) fn orphan_port(&mut self, proto: Proto, port: u16, from: SocketId) -> u64 {
        let token = self.next_orphan;
        self.next_orphan += 1;
        if let Some(list) = self.bindings.get_mut(&(proto, port)) {
            for b in list.iter_mut().filter(|b| b.holder == Holder::Socket(from)) {
                b.holder = Holder::Orphan(token);
            }
        }
        token
    }

    /// Fail the attempts and associations that ICMP errors of this poll concern.
    fn handle_icmp(&mut self) -> bool {
        let mut changed = false;
        for r in std::mem::take(&mut self.icmp.reports) {
            changed |= match r.proto {
                Proto::Tcp => self.tcp_icmp_error(&r),
                Proto::Udp => self.udp_icmp_error(&r),
            };
        }
        changed
    }

    // ----- socket buffers -----

    pub(crate) fn tcp_buffer_size(&self) -> usize {
        self.config.tcp_rx_buffer + self.config.tcp_tx_buffer
    }

    pub(crate) fn udp_buffer_size(&self) -> usize {
        self.config.udp_rx_buffer + self.config.udp_tx_buffer
    }

    /// Whether `bytes` more of socket buffers fit under the limit.
    pub(crate) fn buffers_fit(&self, bytes: usize) -> bool {
        self.committed.saturating_add(bytes) <= self.config.buffer_limit
    }

    /// Put a smoltcp socket on an interface, counting its buffers.
    pub(crate) fn add_smol_socket<T: smoltcp::socket::AnySocket<'static>>(
        &mut self,
        iface: IfaceId,
        socket: T,
        bytes: usize,
    ) -> SocketHandle {
        self.committed = self.committed.saturating_add(bytes);
        self.ifaces[iface.0].sockets.add(socket)
    }

    /// Take a smoltcp socket off its interface, releasing its buffers.
    pub(crate) fn remove_smol_socket(&mut self, iface: IfaceId, handle: SocketHandle) {
        let bytes = match self.ifaces[iface.0].sockets.remove(handle) {
            smoltcp::socket::Socket::Tcp(_) => self.tcp_buffer_size(),
            smoltcp::socket::Socket::Udp(_) => self.udp_buffer_size(),
            #[allow(unreachable_patterns)]
            _ => 0,
        };
        self.committed = self.committed.saturating_sub(bytes);
    }

    /// Bytes of socket buffers the stack holds now.
    pub fn buffers_committed(&self) -> usize {
        self.committed
    }

    // ----- sockets -----

    /// Whether `id` names an open socket.
    pub fn is_open(&self, id: SocketId) -> bool {
        self.table.get(id).is_some()
    }

    /// How many sockets are open.
    pub fn socket_count(&self) -> usize {
        self.table.len()
    }
}
