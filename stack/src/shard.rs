//! Shards: every smoltcp socket lives alone in a `SocketSet` of its own, polled only with its own
//! packets and when its own timer comes due.
//!
//! smoltcp looks for the socket of an arriving packet by scanning its `SocketSet`, and visits
//! every socket of the set on each egress poll and each `poll_at`. With one socket per set those
//! scans are O(1); the stack finds the shard of a packet itself (the `demux` module) and keeps
//! the shards' timers in one heap, so a poll does work in proportion to what happened (packets,
//! calls, timers), not to how many sockets exist. smoltcp stays unmodified: one `Interface` per
//! device is polled with whichever shard's set is at hand.
//!
//! A shard also carries the state the packet path keeps for its socket: for a TCP connection its
//! owner, deadline, Fast Open state, the sequence number of its SYN (for ICMP) and what the wire
//! saw (for its TIME-WAIT entry).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU64;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;

use crate::fastopen;
use crate::ids::{IfaceId, ShardId, Slab, SocketId, Tuple};

/// One smoltcp socket and what the stack keeps beside it.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) iface: IfaceId,
    pub(crate) set: SocketSet<'static>,
    pub(crate) handle: SocketHandle,
    /// Bytes of socket buffers it holds (`StackConfig::buffer_limit`).
    pub(crate) bytes: usize,
    /// The time its entry in the timer heap stands for, if it has one.
    timer: Option<Instant>,
    /// In this round's work list.
    listed: bool,
    pub(crate) kind: Kind,
}

/// What a shard is.
#[derive(Debug)]
pub(crate) enum Kind {
    Tcp(Box<TcpConn>),
    /// Boxed: inline, it would make every shard, TCP ones too, 48 bytes larger.
    Udp(Box<UdpPart>),
}

/// A TCP connection (or a handshake under way), as the packet path and the stack see it.
#[derive(Debug)]
pub(crate) struct TcpConn {
    /// (local, remote), as on the wire.
    pub(crate) tuple: Tuple,
    pub(crate) owner: Owner,
    /// Connect timeout (our handshake), handshake timeout (a peer's), linger (an orphan).
    pub(crate) deadline: Option<Instant>,
    /// smoltcp's state when the stack last looked.
    pub(crate) last_state: tcp::State,
    /// Fast Open state, for connections that use it (boxed: most do not).
    pub(crate) fo: Option<Box<fastopen::Conn>>,
    /// The sequence number of our SYN while our handshake is under way: an ICMP error counts
    /// only if it quotes it (RFC 5927 §4.1).
    pub(crate) syn_isn: Option<u32>,
    /// Sequence numbers the wire saw, for the TIME-WAIT entry.
    pub(crate) wire: WireSeq,
    /// Segments to play to smoltcp as if they had arrived (Fast Open).
    pub(crate) inject: Vec<Vec<u8>>,
    /// A connection made from a SYN cookie: the cookie (our sequence number on the wire), until
    /// smoltcp's own SYN-ACK tells how far apart the two are.
    pub(crate) cookie_isn: Option<u32>,
    /// Added to our sequence numbers on the way out, taken from the peer's acknowledgements on
    /// the way in (a connection made from a SYN cookie).
    pub(crate) shift: u32,
    /// The loss recovery layer's state.
    pub(crate) recovery: crate::recovery::Conn,
    /// In the demux table: false once its tuple went to the TIME-WAIT table, or its socket
    /// closed, while the application still holds it.
    pub(crate) registered: bool,
}

/// Who a TCP connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An application socket.
    Socket(SocketId),
    /// A listener: a handshake a peer started (`queued` false), or a connection waiting in the
    /// accept queue.
    Listener { id: SocketId, queued: bool },
    /// Closed by the application, finishing in the background.
    Orphan,
}

/// What the wire saw of a connection's sequence numbers (after the Fast Open layer's
/// translation, as the peer sees them).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WireSeq {
    /// One past the last sequence number we sent (SYN and FIN count).
    pub(crate) snd_nxt: Option<u32>,
    /// The acknowledgement number and window of the last segment we sent with ACK.
    pub(crate) last_ack: Option<(u32, u16)>,
    /// One past the peer's FIN.
    pub(crate) peer_fin: Option<u32>,
    /// The next sequence number expected from the peer, as our acknowledgements said it (only
    /// what smoltcp accepted, checksums included, moves it).
    pub(crate) rcv_nxt: Option<u32>,
    /// When the last challenge ACK went out (RFC 5961 §7: at most one a second).
    pub(crate) challenged: Option<smoltcp::time::Instant>,
    /// Payload bytes of the peer's that went to smoltcp since our last segment with ACK (for
    /// the acknowledgement of every second segment on an offload interface: see
    /// `Stack::ack_every_second`).
    pub(crate) unacked: u32,
}

impl WireSeq {
    /// A segment left: `seq` and `len` (sequence space), its ack and window if it had ACK.
    pub(crate) fn sent(&mut self, seq: u32, len: u32, ack: Option<(u32, u16)>) {
        let end = seq.wrapping_add(len);
        if self.snd_nxt.is_none_or(|n| seq_after(end, n)) {
            self.snd_nxt = Some(end);
        }
        if let Some((a, _)) = ack {
            self.last_ack = ack;
            self.unacked = 0;
            if self.rcv_nxt.is_none_or(|n| seq_after(a, n)) {
                self.rcv_nxt = Some(a);
            }
        }
    }

    /// RFC 5961 §3.2: a RST resets the connection only at exactly the next expected sequence
    /// number, as our last acknowledgement gave it. (While an ACK of ours waits on the delayed
    /// ACK timer, a genuine RST past it draws a challenge ACK; the peer's answer to that is a
    /// RST at exactly the number it carries.)
    pub(crate) fn rst_acceptable(&self, seq: u32) -> bool {
        self.rcv_nxt == Some(seq)
    }
}

/// `a` comes after `b` in sequence space (RFC 9293 §3.4, modulo 2^32).
pub(crate) fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One interface's part of a datagram socket.
#[derive(Debug)]
pub(crate) struct UdpPart {
    /// The socket, or `None` once it was closed with datagrams still to send.
    pub(crate) owner: Option<SocketId>,
    /// The bound address and port.
    pub(crate) local: SocketAddr,
    /// The port binding's holder once orphaned, shared by the parts of one socket.
    pub(crate) orphan_token: Option<NonZeroU64>,
    /// Datagrams the stack built itself, if any (boxed: the shard of every TCP connection is
    /// as large as this part).
    pub(crate) held: Option<Box<Held>>,
}

/// Packets the stack built itself for a datagram socket (datagrams above the MTU, in
/// fragments, and those sent after one), sent once smoltcp's queue ahead of them is out.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) packets: VecDeque<Vec<u8>>,
    /// Bytes of `packets`, counted against the socket's send buffer.
    pub(crate) bytes: usize,
}

/// Every shard, their timers, and this round's work.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    slab: Slab<Shard>,
    /// (when, shard): a shard's entry is current while its `timer` says the same time.
    timers: BinaryHeap<Reverse<(Instant, ShardId)>>,
    /// Shards to send for and look at before this round ends.
    work: Vec<ShardId>,
    /// Bytes of socket buffers held by all shards.
    committed: usize,
    /// Closed TCP sockets kept to serve the next connections: their buffers are reused as they
    /// are, where a new socket would allocate (and the allocator clear) megabytes.
    spare_tcp: Vec<tcp::Socket<'static>>,
    /// Most spare sockets kept.
    pub(crate) spare_limit: usize,
    /// Connections with Fast Open state.
    fast_open: usize,
}

impl Shards {
    pub(crate) fn insert(
        &mut self,
        iface: IfaceId,
        socket: impl smoltcp::socket::AnySocket<'static>,
        bytes: usize,
        kind: Kind,
    ) -> ShardId {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        self.committed = self.committed.saturating_add(bytes);
        if matches!(&kind, Kind::Tcp(c) if c.fo.is_some()) {
            self.fast_open += 1;
        }
        let id = ShardId(self.slab.insert(Shard {
            iface,
            set,
            handle,
            bytes,
            timer: None,
            listed: false,
            kind,
        }));
        self.mark(id);
        id
    }

    /// Remove a shard. A TCP socket that is done with its connection goes to the spares.
    pub(crate) fn remove(&mut self, id: ShardId) -> Option<Shard> {
        let mut shard = self.slab.remove(id.0)?;
        self.committed = self.committed.saturating_sub(shard.bytes);
        if matches!(&shard.kind, Kind::Tcp(c) if c.fo.is_some()) {
            self.fast_open -= 1;
        }
        if matches!(shard.kind, Kind::Tcp(_))
            && self.spare_tcp.len() < self.spare_limit
            && !shard.tcp().is_open()
        {
            if let smoltcp::socket::Socket::Tcp(s) = shard.set.remove(shard.handle) {
                self.spare_tcp.push(s);
            }
        }
        Some(shard)
    }

    /// A spare TCP socket (closed; `connect` and `listen` reset it), if one is kept.
    pub(crate) fn spare_tcp(&mut self) -> Option<tcp::Socket<'static>> {
        self.spare_tcp.pop()
    }

    pub(crate) fn get(&self, id: ShardId) -> Option<&Shard> {
        self.slab.get(id.0)
    }

    pub(crate) fn get_mut(&mut self, id: ShardId) -> Option<&mut Shard> {
        self.slab.get_mut(id.0)
    }

    pub(crate) fn committed(&self) -> usize {
        self.committed
    }

    /// (shards, connections with Fast Open state, timer heap entries, spare sockets).
    pub(crate) fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.slab.len(),
            self.fast_open,
            self.timers.len(),
            self.spare_tcp.len(),
        )
    }

    /// Put a shard on this round's work list (once): it gets an egress pass and is looked at
    /// before the round ends.
    pub(crate) fn mark(&mut self, id: ShardId) {
        if let Some(s) = self.slab.get_mut(id.0) {
            if !s.listed {
                s.listed = true;
                self.work.push(id);
            }
        }
    }

    /// Whether any shard waits for a round.
    pub(crate) fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Take the work list; each shard leaves it (and may be marked again).
    pub(crate) fn take_work(&mut self, into: &mut Vec<ShardId>) {
        into.clear();
        std::mem::swap(into, &mut self.work);
        for id in into.iter() {
            if let Some(s) = self.slab.get_mut(id.0) {
                s.listed = false;
            }
        }
    }

    /// Schedule a shard's next poll without a packet (`None`: none). Entries the heap already
    /// has for other times go stale and are skipped.
    pub(crate) fn schedule(&mut self, id: ShardId, at: Option<Instant>) {
        let Some(s) = self.slab.get_mut(id.0) else {
            return;
        };
        if s.timer == at {
            return;
        }
        s.timer = at;
        if let Some(at) = at {
            self.timers.push(Reverse((at, id)));
            // Stale entries are dropped as they surface; rebuild if they pile up.
            if self.timers.len() > 4 * self.slab.len() + 64 {
                let slab = &self.slab;
                self.timers
                    .retain(|Reverse((t, id))| slab.get(id.0).is_some_and(|s| s.timer == Some(*t)));
            }
        }
    }

    /// Move the shards whose timer is due at `now` to the work list.
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.slab.get(id.0).is_some_and(|s| s.timer == Some(at));
            if current {
                if let Some(s) = self.slab.get_mut(id.0) {
                    s.timer = None;
                }
                self.mark(id);
            }
        }
    }

    /// The earliest timer.
    pub(crate) fn next_timer(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if self.slab.get(id.0).is_some_and(|s| s.timer == Some(at)) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }
}

impl Shard {
    pub(crate) fn tcp(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket<'static>>(self.handle)
    }

    pub(crate) fn tcp_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket<'static>>(self.handle)
    }

    pub(crate) fn udp(&self) -> &udp::Socket<'static> {
        self.set.get::<udp::Socket<'static>>(self.handle)
    }

    pub(crate) fn udp_mut(&mut self) -> &mut udp::Socket<'static> {
        self.set.get_mut::<udp::Socket<'static>>(self.handle)
    }

    pub(crate) fn conn(&self) -> Option<&TcpConn> {
        match &self.kind {
            Kind::Tcp(c) => Some(c),
            Kind::Udp(_) => None,
        }
    }

    pub(crate) fn conn_mut(&mut self) -> Option<&mut TcpConn> {
        match &mut self.kind {
            Kind::Tcp(c) => Some(c),
            Kind::Udp(_) => None,
        }
    }
}
