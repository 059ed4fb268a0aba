//! UDP: bind, send to, receive from, and association (`connect` on a datagram socket).
//!
//! A socket bound to the unspecified address has one smoltcp socket on every interface with an
//! address of its family, so it hears datagrams from all of them; a send goes out of the one
//! interface the route (or the bound source) picks.

use std::net::SocketAddr;
use std::num::NonZeroU64;

use smoltcp::socket::udp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::socket::{Entry, Readiness};
use super::tcp::ConnectOptions;
use super::Stack;
use crate::addr::{from_smoltcp, to_smoltcp};
use crate::error::{BindError, ConnectError, RecvError, SendError};
use crate::ids::{Family, IfaceId, Proto, ShardId, SocketId};
use crate::ports::Holder;
use crate::shard::{Kind, UdpPart};

#[derive(Debug)]
pub(crate) struct UdpSocket {
    pub(crate) family: Family,
    pub(crate) local: Option<SocketAddr>,
    /// One shard per interface it lives on.
    parts: Vec<(IfaceId, ShardId)>,
    /// The associated peer: the default destination, and the only source heard.
    pub(crate) peer: Option<SocketAddr>,
    /// Interface forced by `connectx`'s `sae_srcif`.
    via: Option<IfaceId>,
    /// The source address the association's path uses (what `getsockname` reports for a
    /// socket bound to the unspecified address, as on Linux).
    assoc_src: Option<std::net::IpAddr>,
    /// Datagrams from the associated peer, taken out of smoltcp's buffers as they arrive so that
    /// datagrams from other sources never take their room (smoltcp filters by local endpoint
    /// only).
    inbox: std::collections::VecDeque<(Vec<u8>, SocketAddr)>,
    /// An ICMP error about a datagram sent to the peer, for the next call to report.
    pub(crate) error: Option<crate::error::ConnectionError>,
}

impl UdpSocket {
    pub(crate) fn new(family: Family) -> UdpSocket {
        UdpSocket {
            family,
            local: None,
            parts: Vec::new(),
            peer: None,
            via: None,
            assoc_src: None,
            inbox: std::collections::VecDeque::new(),
            error: None,
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        let local = self
            .local
            .unwrap_or(SocketAddr::new(self.family.unspecified(), 0));
        match self.assoc_src {
            Some(src) if local.ip().is_unspecified() => SocketAddr::new(src, local.port()),
            _ => local,
        }
    }
}

/// Payload bytes one datagram carries in one packet on an interface of this MTU.
pub(crate) fn unfragmented_limit(mtu: usize, family: Family) -> usize {
    let ip_header = if family == Family::V4 { 20 } else { 40 };
    mtu.saturating_sub(ip_header + 8)
}

/// Payload bytes one datagram may carry on an interface of this MTU: what one packet holds, or
/// XNU's 9,216 bytes in fragments when that is more ([`crate::fragment`]).
pub(crate) fn datagram_limit(mtu: usize, family: Family) -> usize {
    unfragmented_limit(mtu, family).max(crate::fragment::MAX_DATAGRAM)
}

impl Stack {
    fn udp_entry(&mut self, id: SocketId) -> Option<&mut UdpSocket> {
        match self.sockets.get_mut(id.0)? {
            Entry::Udp(s) => Some(s),
            Entry::Tcp(_) => None,
        }
    }

    /// Create the smoltcp sockets of a datagram socket just bound to `local`.
    pub(crate) fn udp_attach(&mut self, id: SocketId, local: SocketAddr) -> Result<(), BindError> {
        let family = match self.sockets.get(id.0) {
            Some(Entry::Udp(s)) => s.family,
            _ => return Err(BindError::NoSuchSocket),
        };
        let ifaces = self.interfaces_for(&local.ip(), family);
        let endpoint = IpListenEndpoint {
            addr: if local.ip().is_unspecified() {
                None
            } else {
                Some(to_smoltcp(local.ip()))
            },
            port: local.port(),
        };
        let bytes = self.udp_buffer_size();
        if !self.buffers_fit(bytes.saturating_mul(ifaces.len())) {
            return Err(BindError::NoBuffers);
        }
        let mut made = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let rx = udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; self.config.udp_packets],
                vec![0u8; self.config.udp_rx_buffer],
            );
            let tx = udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; self.config.udp_packets],
                vec![0u8; self.config.udp_tx_buffer],
            );
            let mut sock = udp::Socket::new(rx, tx);
            // Port and address were checked; smoltcp refuses only port 0.
            let _ = sock.bind(endpoint);
            let part = UdpPart {
                owner: Some(id),
                local,
                orphan_token: None,
                held: None,
            };
            let shard = self
                .shards
                .insert(iface, sock, bytes, Kind::Udp(Box::new(part)));
            self.demux.add_udp(iface, local, family, shard);
            made.push((iface, shard));
        }
        let s = self.udp_entry(id).ok_or(BindError::NoSuchSocket)?;
        s.local = Some(local);
        s.parts = made;
        Ok(())
    }

    /// Bind an unbound datagram socket to an ephemeral port on every address.
    fn udp_autobind(&mut self, id: SocketId) -> Result<(), BindError> {
        match self.sockets.get(id.0) {
            Some(Entry::Udp(s)) if s.local.is_none() => {
                let any = SocketAddr::new(s.family.unspecified(), 0);
                self.bind(id, any)
            }
            Some(Entry::Udp(_)) => Ok(()),
            _ => Err(BindError::NoSuchSocket),
        }
    }

    /// Associate a datagram socket with `peer` (`connect` on UDP): sends without a destination
    /// go there and only its datagrams are received. Associating again replaces the peer.
    pub(crate) fn udp_connect(
        &mut self,
        id: SocketId,
        peer: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<(), ConnectError> {
        let (family, local) = match self.sockets.get(id.0) {
            Some(Entry::Udp(s)) => (s.family, s.local),
            _ => return Err(ConnectError::NoSuchSocket),
        };
        if !family.admits(&peer.ip()) || opts.source.is_some_and(|s| !family.admits(&s.ip())) {
            return Err(ConnectError::FamilyMismatch);
        }
        if peer.port() == 0 {
            return Err(ConnectError::InvalidPort);
        }
        let want_src = opts.source.map(|a| a.ip()).or(local.map(|a| a.ip()));
        // Check the path now, so that an unreachable peer fails the association at once.
        let (_, src) = self.path(peer.ip(), opts.interface, want_src)?;
        match (local, opts.source) {
            (None, Some(src)) => self.bind(id, src)?,
            (None, None) => self.udp_autobind(id)?,
            (Some(_), _) => {}
        }
        let s = self.udp_entry(id).ok_or(ConnectError::NoSuchSocket)?;
        s.peer = Some(peer);
        s.via = opts.interface;
        s.assoc_src = Some(src);
        Ok(())
    }

    pub(crate) fn udp_disconnect(&mut self, id: SocketId) -> bool {
        match self.udp_entry(id) {
            Some(s) => {
                s.via = None;
                s.assoc_src = None;
                s.error = None;
                s.peer.take().is_some()
            }
            None => false,
        }
    }

    pub(crate) fn udp_datagram_limit_via(
        &self,
        id: SocketId,
        dest: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<usize, SendError> {
        let Some(Entry::Udp(s)) = self.sockets.get(id.0) else {
            return Err(SendError::NoSuchSocket);
        };
        if !s.family.admits(&dest.ip()) {
            return Err(SendError::FamilyMismatch);
        }
        let src = opts.source.map(|a| a.ip()).or(s.local.map(|l| l.ip()));
        let (iface, _) = self.path(dest.ip(), opts.interface, src)?;
        Ok(datagram_limit(self.ifaces[iface.0].config.mtu, s.family))
    }

    pub(crate) fn udp_datagram_limit(
        &self,
        id: SocketId,
        dest: Option<SocketAddr>,
    ) -> Option<usize> {
        let Some(Entry::Udp(s)) = self.sockets.get(id.0) else {
            return None;
        };
        let dest = dest.or(s.peer)?;
        let (iface, _) = self.path(dest.ip(), s.via, s.local.map(|l| l.ip())).ok()?;
        Some(datagram_limit(self.ifaces[iface.0].config.mtu, s.family))
    }

    /// Send one datagram to `dest`, or to the associated peer when `dest` is `None`.
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NoDestination`] with no destination at all;
    /// [`SendError::FamilyMismatch`]; [`SendError::Route`]; [`SendError::MessageTooLong`] above
    /// the path's datagram limit; [`SendError::WouldBlock`] with the send buffer full;
    /// [`SendError::Bind`] when no ephemeral port is left.
    pub(crate) fn udp_send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<usize, SendError> {
        let (family, local, peer, via) = match self.sockets.get_mut(id.0) {
            Some(Entry::Udp(s)) => {
                if let Some(e) = s.error.take() {
                    return Err(SendError::Connection(e));
                }
                (s.family, s.local, s.peer, s.via)
            }
            Some(Entry::Tcp(_)) => return self.tcp_send(id, data),
            None => return Err(SendError::NoSuchSocket),
        };
        let dest = dest.or(peer).ok_or(SendError::NoDestination)?;
        if !family.admits(&dest.ip()) {
            return Err(SendError::FamilyMismatch);
        }
        if dest.port() == 0 {
            return Err(SendError::Route(
                crate::error::RouteError::InvalidDestination(dest.ip()),
            ));
        }
        let (iface, src) = self.path(dest.ip(), via, local.map(|l| l.ip()))?;
        let mtu = self.ifaces[iface.0].config.mtu;
        let limit = datagram_limit(mtu, family);
        if data.len() > limit {
            return Err(SendError::MessageTooLong {
                size: data.len(),
                limit,
            });
        }
        self.udp_autobind(id)?;
        let Some(Entry::Udp(s)) = self.sockets.get(id.0) else {
            return Err(SendError::NoSuchSocket);
        };
        let local_port = s.local.map_or(0, |l| l.port());
        let Some(&(_, shard)) = s.parts.iter().find(|(i, _)| *i == iface) else {
            // Bound to an address of another interface than the path's: cannot leave here.
            return Err(SendError::Route(
                crate::error::RouteError::AddressNotAvailable(src),
            ));
        };
        let tx_capacity = self.config.udp_tx_buffer;
        let ident = self.fragment_ident;
        let Some(sh) = self.shards.get_mut(shard) else {
            return Err(SendError::NoSuchSocket);
        };
        let Kind::Udp(part) = &mut sh.kind else {
            return Err(SendError::NoSuchSocket);
        };
        if data.len() > unfragmented_limit(mtu, family) || part.held.is_some() {
            // Above the MTU (and anything queued behind such a datagram, to keep the socket's
            // datagrams in order): built here, in fragments.
            let held_bytes = part.held.as_ref().map_or(0, |h| h.bytes);
            if held_bytes > 0 && held_bytes + data.len() > tx_capacity {
                return Err(SendError::WouldBlock);
            }
            let packets = crate::fragment::udp_packets(
                SocketAddr::new(src, local_port),
                dest,
                data,
                mtu,
                ident,
            )
            .ok_or(SendError::MessageTooLong {
                size: data.len(),
                limit,
            })?;
            let held = part.held.get_or_insert_with(Box::default);
            held.bytes += packets.iter().map(Vec::len).sum::<usize>();
            held.packets.extend(packets);
            self.fragment_ident = ident.wrapping_add(1);
            self.shards.mark(shard);
            return Ok(data.len());
        }
        let sock = sh.udp_mut();
        let mut meta = udp::UdpMetadata::from(IpEndpoint::new(to_smoltcp(dest.ip()), dest.port()));
        meta.local_address = Some(to_smoltcp(src));
        match sock.send_slice(data, meta) {
            Ok(()) => {
                self.shards.mark(shard);
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(SendError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(SendError::Route(
                crate::error::RouteError::InvalidDestination(dest.ip()),
            )),
        }
    }

    /// Receive one datagram: its length (the part that fit in `buf`; the rest is discarded,
    /// as with `recvfrom(2)`) and its source. With an association, datagrams from other sources
    /// are dropped unread.
    ///
    /// # Errors
    /// [`RecvError::NoSuchSocket`]; [`RecvError::WouldBlock`] when nothing is queued.
    pub(crate) fn udp_recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), RecvError> {
        let parts = match self.sockets.get_mut(id.0) {
            Some(Entry::Udp(s)) => {
                if let Some(e) = s.error.take() {
                    return Err(RecvError::Connection(e));
                }
                if let Some((data, from)) = s.inbox.pop_front() {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    return Ok((n, from));
                }
                if s.peer.is_some() {
                    return Err(RecvError::WouldBlock);
                }
                s.parts.clone()
            }
            Some(Entry::Tcp(_)) => {
                let n = self.tcp_recv(id, buf)?;
                let from = self.peer_addr(id).ok_or(RecvError::NotConnected)?;
                return Ok((n, from));
            }
            None => return Err(RecvError::NoSuchSocket),
        };
        for (_, shard) in parts {
            let Some(sh) = self.shards.get_mut(shard) else {
                continue;
            };
            if let Ok((data, meta)) = sh.udp_mut().recv() {
                let from = SocketAddr::new(from_smoltcp(meta.endpoint.addr), meta.endpoint.port);
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok((n, from));
            }
        }
        Err(RecvError::WouldBlock)
    }

    /// Look at one interface's part of a datagram socket after this round: an associated
    /// socket moves its datagrams into its inbox, dropping those from other sources (as the
    /// kernel never queues them); a closed socket's part goes once its datagrams have left.
    pub(crate) fn settle_udp(&mut self, shard: ShardId) {
        let limit = self.config.udp_packets;
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        let Kind::Udp(part) = &sh.kind else { return };
        let Some(id) = part.owner else {
            let sent = sh.udp().send_queue() == 0 && part.held.is_none();
            if sent || !self.ifaces[sh.iface.0].up {
                let local = part.local;
                let token = part.orphan_token;
                self.shards.remove(shard);
                if let Some(token) = token {
                    self.ports
                        .release_orphan_part(Proto::Udp, local.port(), token.get());
                }
            }
            return;
        };
        self.events.insert(id);
        self.raised += 1;
        let Some(Entry::Udp(s)) = self.sockets.get_mut(id.0) else {
            return;
        };
        let Some(peer) = s.peer else { return };
        let sock = sh.udp_mut();
        while let Ok((data, meta)) = sock.recv() {
            let from = SocketAddr::new(from_smoltcp(meta.endpoint.addr), meta.endpoint.port);
            // A full inbox drops, as a full receive buffer does.
            if from == peer && s.inbox.len() < limit {
                s.inbox.push_back((data.to_vec(), from));
            }
        }
    }

    pub(crate) fn udp_readiness(&self, s: &UdpSocket) -> Readiness {
        let readable = !s.inbox.is_empty()
            || s.peer.is_none()
                && s.parts.iter().any(|&(_, shard)| {
                    self.shards.get(shard).is_some_and(|sh| sh.udp().can_recv())
                });
        let tx_capacity = self.config.udp_tx_buffer;
        let writable = s.parts.iter().all(|&(_, shard)| {
            self.shards.get(shard).is_none_or(|sh| {
                let held = match &sh.kind {
                    Kind::Udp(part) => part.held.as_ref().map_or(0, |h| h.bytes),
                    Kind::Tcp(_) => 0,
                };
                sh.udp().can_send() && held < tx_capacity
            })
        });
        Readiness {
            readable: readable || s.error.is_some(),
            writable: writable || s.error.is_some(),
            error: s.error.is_some(),
            hangup: false,
        }
    }

    /// An ICMP error about a datagram to an associated peer: the socket reports it next (as
    /// Linux and Darwin do for connected datagram sockets).
    pub(crate) fn udp_icmp_error(&mut self, iface: IfaceId, r: &crate::icmp::Report) {
        let Some(shard) = self.demux.udp_for(iface, r.local) else {
            return;
        };
        let Some(id) = self.shards.get(shard).and_then(|sh| match &sh.kind {
            Kind::Udp(p) => p.owner,
            Kind::Tcp(_) => None,
        }) else {
            return;
        };
        if let Some(Entry::Udp(s)) = self.sockets.get_mut(id.0) {
            if s.peer == Some(r.remote) {
                s.error = Some(r.error);
                self.notify(id);
            }
        }
    }

    /// A closed datagram socket's resources. Datagrams it sent but the interface has not
    /// carried yet still go (as the kernel's, which leave at `sendto`): the parts that hold some
    /// stay, with the port, until they have left.
    pub(crate) fn udp_release(&mut self, id: SocketId, s: UdpSocket) {
        let port = s.local.map(|l| l.port());
        let mut token = None;
        for (iface, shard) in s.parts {
            if let Some(port) = port {
                self.demux.remove_udp(iface, port, shard);
            }
            let pending = self.shards.get(shard).is_some_and(|sh| {
                sh.udp().send_queue() > 0 || matches!(&sh.kind, Kind::Udp(p) if p.held.is_some())
            });
            if pending && self.ifaces[iface.0].up {
                let t = *token.get_or_insert_with(|| match port {
                    Some(p) => self.ports.orphan(Proto::Udp, p, id),
                    None => u64::MAX,
                });
                if let Some(Kind::Udp(part)) = self.shards.get_mut(shard).map(|sh| &mut sh.kind) {
                    part.owner = None;
                    part.orphan_token = port.and_then(|_| NonZeroU64::new(t));
                }
                self.ports.add_orphan_part(t);
                self.shards.mark(shard);
            } else {
                self.shards.remove(shard);
            }
        }
        if let (Some(port), None) = (port, token) {
            self.ports.release(Proto::Udp, port, Holder::Socket(id));
        }
    }
}
