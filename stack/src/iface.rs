//! Interfaces: one smoltcp `Interface` and one `SocketSet` each, and the adapter that lets
//! smoltcp read and write packets through the caller's [`PacketIo`].
//!
//! A `SocketSet` is never shared between interfaces: smoltcp resets a TCP socket polled by an
//! interface that does not own its source address, and a UDP socket would leave through
//! whichever interface polled first.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::addr::Cidr;
use crate::config::InterfaceConfig;
use crate::fastopen::Layer;

/// An interface of a [`Stack`](crate::Stack), by position; stable for the stack's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceId(pub usize);

/// Where packets come from and go to: a TUN device, a socketpair, a simulated link.
///
/// The stack never touches a descriptor; the caller implements this over whatever carries its
/// packets. Each call concerns one interface.
pub trait PacketIo {
    /// Copy the next packet that arrived on `iface` into `buf` and return its length, or `None`
    /// when nothing is pending. A packet longer than `buf` may be truncated; the stack drops it.
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize>;
    /// Send `packet` out of `iface`. Delivery is best effort, as on a wire.
    fn send(&mut self, iface: IfaceId, packet: &[u8]);

    /// The time of the poll about to run; [`Stack::poll`](crate::Stack::poll) calls it first.
    /// Decorators that hold packets for a while (impairment) or stamp them (capture) take their
    /// clock from here, so they never read one themselves.
    fn advance(&mut self, now: Instant) {
        let _ = now;
    }

    /// When this packet path next has something to hand over on its own (a held packet coming
    /// due), so that the caller's sleep ends then. `None`: only when a packet arrives.
    fn next_due(&self) -> Option<Instant> {
        None
    }

    /// The poll is over: write out anything buffered (a capture file), so that a program that
    /// stops after this point loses nothing.
    fn flush(&mut self) {}
}

/// What an interface is and how it is doing, as callers see it.
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    /// The id within the stack.
    pub id: IfaceId,
    /// Name of the device.
    pub name: String,
    /// Kernel interface index of the device, if it has one.
    pub kernel_index: Option<u32>,
    /// MTU.
    pub mtu: usize,
    /// The stack's addresses on it.
    pub addresses: Vec<Cidr>,
    /// Whether it is up.
    pub up: bool,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

pub(crate) struct Iface {
    pub(crate) config: InterfaceConfig,
    pub(crate) up: bool,
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
}

impl std::fmt::Debug for Iface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iface")
            .field("config", &self.config)
            .field("up", &self.up)
            .finish()
    }
}

impl Iface {
    pub(crate) fn new(config: InterfaceConfig, seed: u64) -> Iface {
        let mut smol_config = Config::new(HardwareAddress::Ip);
        smol_config.random_seed = seed;
        let mut probe = Probe { mtu: config.mtu };
        // smoltcp keeps no timer of its own for an IP-medium interface; every poll passes the
        // time.
        let mut iface = Interface::new(smol_config, &mut probe, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            for cidr in &config.addresses {
                // The caller checked the count against the capacity.
                let _ = addrs.push(cidr.to_smoltcp());
            }
        });
        // Which interface a packet leaves through is decided by the stack's own routing table,
        // before smoltcp sees it. smoltcp only needs to believe every destination is reachable
        // from here; on an IP-medium device the gateway address is never used.
        iface.routes_mut().update(|routes| {
            let _ = routes.push(smoltcp::iface::Route {
                cidr: IpCidr::new(IpAddress::v4(0, 0, 0, 0), 0),
                via_router: IpAddress::v4(0, 0, 0, 1),
                preferred_until: None,
                expires_at: None,
            });
            let _ = routes.push(smoltcp::iface::Route {
                cidr: IpCidr::new(IpAddress::v6(0, 0, 0, 0, 0, 0, 0, 0), 0),
                via_router: IpAddress::v6(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                preferred_until: None,
                expires_at: None,
            });
        });
        Iface {
            config,
            up: true,
            iface,
            sockets: SocketSet::new(Vec::new()),
            rx_packets: 0,
            tx_packets: 0,
        }
    }
}

/// A device used only to tell `Interface::new` the medium.
struct Probe {
    mtu: usize,
}

impl phy::Device for Probe {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = NullTx;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, NullTx)> {
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<NullTx> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

pub(crate) struct NullTx;

impl phy::TxToken for NullTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0; len])
    }
}

fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps.checksum = ChecksumCapabilities::default();
    caps
}

/// The per-poll view smoltcp gets of one interface's packet path.
pub(crate) struct Port<'a, P: PacketIo + ?Sized> {
    pub(crate) io: &'a mut P,
    pub(crate) id: IfaceId,
    pub(crate) rx: &'a mut [u8],
    pub(crate) tx: &'a mut [u8],
    pub(crate) mtu: usize,
    /// Packets this poll may still read.
    pub(crate) budget: usize,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    /// The Fast Open layer, which may rewrite, drop, inject and answer segments.
    pub(crate) fo: &'a mut Layer,
    /// ICMP errors arriving, SYNs leaving.
    pub(crate) icmp: &'a mut crate::icmp::Tracker,
    pub(crate) now: Instant,
}

impl<P: PacketIo + ?Sized> phy::Device for Port<'_, P> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b, P>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_, P>)> {
        while let Some(p) = self.fo.take_outgoing(self.id) {
            self.io.send(self.id, &p);
            self.tx_packets += 1;
        }
        let n = loop {
            if let Some(p) = self.fo.take_injected(self.id) {
                let n = p.len().min(self.rx.len());
                self.rx[..n].copy_from_slice(&p[..n]);
                break n;
            }
            if self.budget == 0 {
                return None;
            }
            let n = self.io.recv(self.id, self.rx)?.min(self.rx.len());
            self.budget -= 1;
            self.rx_packets += 1;
            self.icmp.arrived(&self.rx[..n]);
            let n = self.fo.ingress(self.id, self.rx, n, self.now);
            if n > 0 {
                break n;
            }
        };
        let packet = &self.rx[..n];
        let tx = TxToken {
            io: &mut *self.io,
            id: self.id,
            buf: &mut *self.tx,
            sent: &mut self.tx_packets,
            fo: &mut *self.fo,
            icmp: &mut *self.icmp,
            now: self.now,
        };
        Some((RxToken { packet }, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_, P>> {
        Some(TxToken {
            io: &mut *self.io,
            id: self.id,
            buf: &mut *self.tx,
            sent: &mut self.tx_packets,
            fo: &mut *self.fo,
            icmp: &mut *self.icmp,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

pub(crate) struct RxToken<'a> {
    packet: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.packet)
    }
}

pub(crate) struct TxToken<'a, P: PacketIo + ?Sized> {
    io: &'a mut P,
    id: IfaceId,
    buf: &'a mut [u8],
    sent: &'a mut u64,
    fo: &'a mut Layer,
    icmp: &'a mut crate::icmp::Tracker,
    now: Instant,
}

impl<P: PacketIo + ?Sized> phy::TxToken for TxToken<'_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU, which sized the buffer.
        let len = len.min(self.buf.len());
        let packet = &mut self.buf[..len];
        let r = f(packet);
        let n = self.fo.egress(self.id, self.buf, len, self.now);
        if n > 0 {
            self.icmp.sent(&self.buf[..n]);
            self.io.send(self.id, &self.buf[..n]);
            *self.sent += 1;
        }
        r
    }
}
