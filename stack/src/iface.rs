//! Interfaces: one smoltcp `Interface` each, and the adapter ([`Path`]) through which smoltcp
//! reads one packet and writes its answers through the caller's [`PacketIo`].
//!
//! A shard is only ever polled by the interface it belongs to: smoltcp resets a TCP socket
//! polled by an interface that does not own its source address, and a UDP socket would leave
//! through whichever interface polled it.

use std::net::IpAddr;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use crate::addr::Cidr;
use crate::config::InterfaceConfig;
use crate::fastopen;
use crate::ids::IfaceId;
use crate::recovery;
use crate::shard::TcpConn;
use crate::shared_packet::SharedPacket;
use crate::wire;

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

    /// As [`send`](PacketIo::send) of `buf[..len]`; an implementation that keeps the packet
    /// for later may trade buffers with the stack instead of copying (`buf` keeps its
    /// length). The stack sends what smoltcp writes through this one.
    fn send_from(&mut self, iface: IfaceId, buf: &mut Vec<u8>, len: usize) {
        let len = len.min(buf.len());
        self.send(iface, &buf[..len]);
    }

    /// As [`send`](PacketIo::send) of `packet[..len]`, a packet that the stack keeps too (the
    /// loss recovery layer holds a segment's buffer until the peer acknowledges it, instead of
    /// copying its payload): an implementation that keeps the packet for later may keep a
    /// clone, which costs no copy. The stack writes in the buffer again once the peer has
    /// acknowledged the segment and the implementation has let go of it.
    fn send_shared(&mut self, iface: IfaceId, packet: &SharedPacket, len: usize) {
        let len = len.min(packet.len());
        self.send(iface, &packet[..len]);
    }

    /// As [`recv`](PacketIo::recv) into `buf[..max]`; an implementation that holds the packet
    /// in a buffer of its own as long as `buf` may trade buffers instead of copying (`buf`
    /// keeps its length). The stack reads through this one: with 64 KB packets (offload) the
    /// copy is one of the costs that count.
    fn recv_into(&mut self, iface: IfaceId, buf: &mut Vec<u8>, max: usize) -> Option<usize> {
        let max = max.min(buf.len());
        self.recv(iface, &mut buf[..max])
    }

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
    /// Whether the device takes and hands over 64 KB TCP super-packets (segmentation offload).
    pub offload: bool,
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
    /// An empty set: packets no shard takes go here, and smoltcp answers them as a host with
    /// no socket would (a RST, an ICMP port unreachable, an echo reply).
    pub(crate) nobody: SocketSet<'static>,
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
    /// The largest packet smoltcp reads or writes here: the MTU, or 64 KB with offload.
    pub(crate) fn frame(&self) -> usize {
        frame_of(&self.config)
    }

    /// The wire's MTU when the device cuts super-packets (offload), for the MSS translation.
    pub(crate) fn offload_mtu(&self) -> Option<usize> {
        self.config.offload.then_some(self.config.mtu)
    }

    /// Whether `ip` is one of this interface's addresses.
    pub(crate) fn owns(&self, ip: &IpAddr) -> bool {
        self.config.addresses.iter().any(|c| c.addr() == *ip)
    }

    pub(crate) fn info(&self, id: IfaceId) -> InterfaceInfo {
        InterfaceInfo {
            id,
            name: self.config.name.clone(),
            kernel_index: self.config.kernel_index,
            mtu: self.config.mtu,
            offload: self.config.offload,
            addresses: self.config.addresses.clone(),
            up: self.up,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
        }
    }

    pub(crate) fn new(config: InterfaceConfig, seed: u64) -> Iface {
        let mut smol_config = Config::new(HardwareAddress::Ip);
        smol_config.random_seed = seed;
        let mut probe = Probe {
            mtu: frame_of(&config),
            offload: config.offload,
        };
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
            nobody: SocketSet::new(Vec::new()),
            rx_packets: 0,
            tx_packets: 0,
        }
    }
}

fn frame_of(config: &InterfaceConfig) -> usize {
    if config.offload {
        crate::offload::MAX_PACKET
    } else {
        config.mtu
    }
}

/// A device used only to tell `Interface::new` the medium and what it checks.
struct Probe {
    mtu: usize,
    offload: bool,
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
        let mut caps = capabilities(self.mtu);
        if self.offload {
            // `offload::accept` checked every TCP checksum once already.
            caps.checksum.tcp = phy::Checksum::Tx;
        }
        caps
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

/// A TCP connection and the stack's layers, as a shard's segments pass them.
pub(crate) struct ConnLayers<'a> {
    pub(crate) conn: &'a mut TcpConn,
    pub(crate) fo: &'a mut fastopen::Layer,
    pub(crate) recovery: &'a mut recovery::Layer,
    /// The wire's MTU on an offload interface, whose SYNs get their MSS option translated.
    pub(crate) offload: Option<usize>,
}

/// smoltcp's view of one interface while it handles one shard (or the interface's default set):
/// the packet to hand over, if any, and the way out, through the layers of the packet path.
pub(crate) struct Path<'a, P: PacketIo + ?Sized> {
    pub(crate) io: &'a mut P,
    pub(crate) iface: IfaceId,
    /// A down interface sends nothing.
    pub(crate) up: bool,
    pub(crate) mtu: usize,
    /// The packet to hand to smoltcp (taken by the first `receive`).
    pub(crate) rx: Option<&'a [u8]>,
    /// Where smoltcp writes a packet: the stack's transmit buffer, at least `mtu` long.
    pub(crate) tx: &'a mut Vec<u8>,
    /// The connection these segments belong to, and the layers its segments pass, for TCP
    /// shards.
    pub(crate) conn: Option<ConnLayers<'a>>,
    pub(crate) now: Instant,
    /// Packets sent.
    pub(crate) sent: u64,
}

impl<'a, P: PacketIo + ?Sized> phy::Device for Path<'a, P> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b, 'a, P>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_, 'a, P>)> {
        let packet = self.rx.take()?;
        Some((RxToken { packet }, TxToken { path: self }))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_, 'a, P>> {
        Some(TxToken { path: self })
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

pub(crate) struct TxToken<'b, 'a, P: PacketIo + ?Sized> {
    path: &'b mut Path<'a, P>,
}

impl<P: PacketIo + ?Sized> phy::TxToken for TxToken<'_, '_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let p = self.path;
        // smoltcp never asks for more than the MTU, which sized the buffer.
        let len = len.min(p.tx.len());
        let r = f(&mut p.tx[..len]);
        let mut n = len;
        let mut shared = None;
        if let Some(l) = p.conn.as_mut() {
            n = egress_layers(l, p.tx, n, p.now);
            shared = l.recovery.take_shared();
        }
        if n > 0 && p.up {
            match shared {
                // The loss recovery layer holds this one too, in its own buffer.
                Some(packet) => p.io.send_shared(p.iface, &packet, n),
                None => p.io.send_from(p.iface, p.tx, n),
            }
            p.sent += 1;
        }
        r
    }
}

/// The layers a connection's outgoing segment passes: Fast Open (which may rewrite or drop
/// it), a SYN cookie's shift, loss recovery (which records it, or drops what smoltcp sends
/// again on its own), then the records the stack keeps from the wire (the SYN's sequence
/// number for ICMP, the sequence numbers for TIME-WAIT). Returns the segment's new length; the
/// segment is then in `buf`, or in the loss recovery layer's shared packet
/// ([`recovery::Layer::take_shared`]), `buf` given another buffer of the same length.
fn egress_layers(l: &mut ConnLayers<'_>, buf: &mut Vec<u8>, len: usize, now: Instant) -> usize {
    let ConnLayers {
        conn,
        fo,
        recovery,
        offload,
    } = l;
    if let Some(mtu) = *offload {
        // smoltcp's MSS comes from its 64 KB MTU: peers get the wire's.
        crate::offload::lower_mss(buf.get_mut(..len).unwrap_or(&mut []), mtu);
    }
    let Some(mut t) = wire::parse(buf.get(..len).unwrap_or(&[])) else {
        return len;
    };
    let orig_seq = t.seq;
    let mut len = len;
    if let Some(state) = conn.fo.as_deref_mut() {
        len = fo.egress(state, &t, buf, len, now, &mut conn.inject);
        if len == 0 {
            return 0;
        }
        match wire::parse(buf.get(..len).unwrap_or(&[])) {
            Some(nt) => t = nt,
            None => return len,
        }
    }
    if let Some(isn) = conn.cookie_isn {
        if t.has(wire::SYN) && t.has(wire::ACK) {
            // smoltcp's SYN-ACK to the SYN replayed from a cookie: the peer has ours already.
            conn.shift = isn.wrapping_sub(t.seq);
            conn.cookie_isn = None;
            return 0;
        }
    }
    if conn.shift != 0 {
        let seq = t.seq.wrapping_add(conn.shift);
        if let Some(pkt) = buf.get_mut(..len) {
            wire::set_seq_ack(pkt, &t, seq, t.ack, 0);
        }
        t.seq = seq;
    }
    if !t.has(wire::SYN) {
        conn.recovery.translated(orig_seq, t.seq);
    }
    // It may become a bare ACK, or gain SACK blocks: `t` follows.
    len = recovery.egress(&mut conn.recovery, &mut t, buf, len, &conn.wire, now);
    if len == 0 {
        return 0;
    }
    if t.has(wire::SYN) && !t.has(wire::ACK) {
        conn.syn_isn = Some(t.seq);
    }
    conn.wire.sent(
        t.seq,
        t.seq_len(),
        t.has(wire::ACK).then_some((t.ack, t.window)),
    );
    len
}
