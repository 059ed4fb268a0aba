//! One round of the engine ([`Stack::poll`]): packets in, timers, packets out, settle.
//!
//! ```text
//!  io.recv ─► wire::ip ─► ICMP error?  ─► icmp::parse ─► the attempt or association it names
//!                     └─► TCP: demux tuple ─► connection shard ─► loss recovery (ACKs, SACK)
//!                                     ─► Fast Open ingress ─► window the recovery layer allows ─► smoltcp
//!                                     ├──► TIME-WAIT entry (ACK a FIN, RST ends it, SYN reopens)
//!                                     └──► SYN: listener ─► backlog admission ─► new shard
//!                     └─► UDP: (interface, port) ─► shard ─► smoltcp
//!                     └─► anything else ─► the interface's empty set (RST, port unreachable)
//!  timers due ─► shards on the work list
//!  work list ─► recovery timers (RACK, probe, timeout) ─► retransmissions ─► io.send
//!            ─► smoltcp egress ─► Fast Open egress ─► loss recovery (record, or drop what smoltcp
//!               sends again) ─► SYN and sequence records ─► io.send
//!            ─► settle (handshakes, deadlines, TIME-WAIT, orphans) ─► readiness events
//! ```
//!
//! Every step costs in proportion to the packets, calls and timers of the round.

use smoltcp::iface::PollResult;
use smoltcp::time::Instant;

use super::tcp::{Admission, CookieAck};
use super::{PollOutcome, Stack};
use crate::demux::TimeWaitVerdict;
use crate::ids::{IfaceId, ShardId};
use crate::iface::{ConnLayers, Iface, PacketIo, Path};
use crate::shard::Kind;
use crate::wire::{self, ACK, FIN, RST, SYN};

/// Most segments one shard sends in a round; the rest waits for the next round, so that one
/// bulk sender does not starve the others.
const EGRESS_BUDGET: usize = 256;

/// RFC 5961 §7's limit on challenge ACKs, per connection.
const ONE_SECOND: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(1);

/// States in which the handshake is over (RFC 5961's synchronized states).
fn synchronized(state: smoltcp::socket::tcp::State) -> bool {
    use smoltcp::socket::tcp::State;
    !matches!(
        state,
        State::Closed | State::Listen | State::SynSent | State::SynReceived
    )
}

/// Most passes over the work list in a round (settling may add work: a RST to send, segments
/// Fast Open plays to smoltcp).
const PASSES: usize = 8;

impl Stack {
    pub(crate) fn round(&mut self, now: Instant, io: &mut (impl PacketIo + ?Sized)) -> PollOutcome {
        io.advance(now);
        let mut outcome = PollOutcome::default();
        self.raised = 0;
        let sent_before: u64 = self.ifaces.iter().map(|i| i.tx_packets).sum();
        // Deadlines that passed are acted on in this round.
        self.shards.fire_timers(now);
        let expired = self.demux.expire_time_wait(now);
        self.counters.TW += expired as u64;
        let budget = self.config.rx_burst.max(1);
        for n in 0..self.ifaces.len() {
            let id = IfaceId(n);
            let mtu = self.ifaces[n].frame();
            let mut left = budget;
            while left > 0 {
                let Some(len) = io.recv_into(id, &mut self.rx_buf, mtu) else {
                    break;
                };
                left -= 1;
                self.ifaces[n].rx_packets += 1;
                outcome.activity = true;
                if self.ifaces[n].up {
                    self.ingress(id, len.min(mtu), now, io);
                }
            }
            outcome.more_pending |= left == 0;
        }
        let mut work = std::mem::take(&mut self.work);
        for _ in 0..PASSES {
            self.shards.take_work(&mut work);
            if work.is_empty() {
                break;
            }
            for &shard in &work {
                outcome.more_pending |= self.egress(shard, now, io);
                match self.shard_is_tcp(shard) {
                    Some(true) => self.settle_tcp(shard, now),
                    Some(false) => self.settle_udp(shard),
                    None => {}
                }
                for (iface, p) in self.pending_tx.drain(..) {
                    if self.ifaces[iface.0].up {
                        io.send(iface, &p);
                        self.ifaces[iface.0].tx_packets += 1;
                    }
                }
            }
        }
        self.work = work;
        outcome.more_pending |= self.shards.has_work();
        let sent: u64 = self.ifaces.iter().map(|i| i.tx_packets).sum();
        outcome.activity |= self.raised > 0 || sent != sent_before;
        io.flush();
        outcome
    }

    /// One packet that arrived on `iface`, in `rx_buf[..len]`.
    fn ingress(
        &mut self,
        iface: IfaceId,
        len: usize,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Some(ip) = wire::ip(&self.rx_buf[..len]) else {
            return self.unclaimed(iface, len, now, io);
        };
        // Only what is addressed to one of this interface's (unicast) addresses is ours. The
        // rest (another host's address, a broadcast or multicast one) is dropped unanswered: no
        // reply may leave from an address the stack does not own.
        if !self.ifaces[iface.0].owns(&ip.dst) {
            self.counters.InAddrErrors += 1;
            return;
        }
        match ip.proto {
            wire::PROTO_TCP => {
                if let Some(t) = wire::tcp_in(&self.rx_buf[..len], &ip) {
                    return self.tcp_ingress(iface, t, len, now, io);
                }
            }
            wire::PROTO_UDP => {
                if let Some((_, dport)) = wire::udp_ports(&self.rx_buf[..len], &ip) {
                    let dst = std::net::SocketAddr::new(ip.dst, dport);
                    if let Some(shard) = self.demux.udp_for(iface, dst) {
                        self.feed(shard, iface, len, None, now, io);
                        return;
                    }
                }
            }
            wire::PROTO_ICMP | wire::PROTO_ICMPV6 => {
                if let Some(r) = crate::icmp::parse(&self.rx_buf[..len]) {
                    match r.proto {
                        crate::ids::Proto::Tcp => self.tcp_icmp_error(&r),
                        crate::ids::Proto::Udp => self.udp_icmp_error(iface, &r),
                    }
                    return;
                }
            }
            _ => {}
        }
        self.unclaimed(iface, len, now, io);
    }

    fn tcp_ingress(
        &mut self,
        iface: IfaceId,
        t: wire::Tcp,
        len: usize,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let tuple = t.arriving_tuple();
        if let Some(shard) = self.demux.connection(&tuple) {
            return self.conn_ingress(shard, iface, t, len, now, io);
        }
        let is_syn = t.has(SYN) && !t.has(ACK) && !t.has(RST);
        if self.demux.time_wait(&tuple).is_some() {
            if !wire::tcp_checksum_ok(&self.rx_buf[..len], &t) {
                self.counters.InCsumErrors += 1;
                return;
            }
            let wait = super::tcp::micros(self.config.time_wait);
            match self.demux.time_wait_segment(&t, now, wait) {
                TimeWaitVerdict::Drop => return,
                TimeWaitVerdict::Ack(p) => {
                    io.send(iface, &p);
                    self.ifaces[iface.0].tx_packets += 1;
                    return;
                }
                TimeWaitVerdict::Reopen => {}
            }
        }
        if is_syn {
            if let Some(listener) = self.demux.listener_for(t.dst) {
                // The stack acts on this SYN itself (admission, Fast Open): a corrupt one must
                // not create state.
                if !wire::tcp_checksum_ok(&self.rx_buf[..len], &t) {
                    self.counters.InCsumErrors += 1;
                    return;
                }
                let mut rx = std::mem::take(&mut self.rx_buf);
                let admitted = self.tcp_admit(listener, iface, &t, &mut rx, len, now);
                self.rx_buf = rx;
                match admitted {
                    Admission::Shard(shard, len) => self.feed(shard, iface, len, None, now, io),
                    Admission::Cookie(synack) => {
                        io.send(iface, &synack);
                        self.ifaces[iface.0].tx_packets += 1;
                    }
                    Admission::Dropped => {}
                }
                return;
            }
        }
        let bare_ack = t.has(ACK) && !t.has(SYN) && !t.has(RST);
        if bare_ack && self.config.syn_cookies {
            if let Some(listener) = self.demux.listener_for(t.dst) {
                if !wire::tcp_checksum_ok(&self.rx_buf[..len], &t) {
                    self.counters.InCsumErrors += 1;
                    return;
                }
                match self.tcp_cookie_ack(listener, iface, &t, now) {
                    CookieAck::NotOurs => {}
                    CookieAck::Dropped => return,
                    CookieAck::Shard(shard, mut syn) => {
                        // smoltcp takes the SYN the cookie stands for and answers it (the
                        // answer is swallowed: the client has ours), then the client's ACK.
                        self.feed_bytes(shard, iface, &mut syn, now, io);
                        self.egress(shard, now, io);
                        self.conn_ingress(shard, iface, t, len, now, io);
                        return;
                    }
                }
            }
        }
        self.unclaimed(iface, len, now, io);
    }

    /// A segment for an existing connection: the Fast Open layer first, then smoltcp.
    fn conn_ingress(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        t: wire::Tcp,
        len: usize,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        // Linux drops the ACK that would complete a handshake while the accept queue is full
        // (`ListenOverflows`): the connection stays half open and the client's next segment
        // tries again, so the queue never holds more than the backlog allows.
        if t.has(ACK) && !t.has(SYN) && !t.has(RST) && self.completes_into_full_queue(shard) {
            self.counters.ListenOverflows += 1;
            self.counters.ListenDrops += 1;
            return;
        }
        let Stack {
            shards,
            fo,
            recovery,
            rx_buf,
            counters,
            ..
        } = self;
        let Some(sh) = shards.get_mut(shard) else {
            return;
        };
        if sh.iface != iface {
            // A connection only takes packets on its own interface.
            return;
        }
        let Kind::Tcp(c) = &mut sh.kind else {
            return;
        };
        // RFC 5961 §3.2 (blind reset): in a synchronized state a RST counts only at exactly the
        // next expected sequence number; any other is answered with a challenge ACK (one a
        // second at most) and dropped, so that a peer that guessed the window cannot reset the
        // connection. smoltcp takes any RST in the window.
        if t.has(RST) && synchronized(c.last_state) && !c.wire.rst_acceptable(t.seq) {
            if wire::tcp_checksum_ok(&rx_buf[..len], &t) {
                counters.TCPChallengeACK += 1;
                let due = c.wire.challenged.is_none_or(|at| now >= at + ONE_SECOND);
                if let (true, Some(snd), Some(rcv)) = (due, c.wire.snd_nxt, c.wire.rcv_nxt) {
                    c.wire.challenged = Some(now);
                    let window = c.wire.last_ack.map_or(0, |(_, w)| w);
                    let ack = crate::demux::ack_segment(c.tuple, snd, rcv, window);
                    io.send(iface, &ack);
                    self.ifaces[iface.0].tx_packets += 1;
                }
            } else {
                counters.InCsumErrors += 1;
            }
            return;
        }
        if t.has(FIN) {
            // Where the peer's FIN ends, for the TIME-WAIT entry; only from a sound segment.
            if wire::tcp_checksum_ok(&rx_buf[..len], &t) {
                c.wire.peer_fin = Some(t.seq.wrapping_add(t.payload_len() as u32 + 1));
            } else {
                counters.InCsumErrors += 1;
                return;
            }
        }
        let mut replies = Vec::new();
        // Loss recovery reads the acknowledgement and SACK blocks as they are on the wire, and
        // may answer with retransmissions.
        let ctx = crate::recovery::Ctx {
            tuple: c.tuple,
            wire: &c.wire,
            peer_numbers_plain: c.fo.is_none(),
        };
        recovery.ingress(&mut c.recovery, &t, &rx_buf[..len], ctx, now, &mut replies);
        if c.shift != 0 && t.has(ACK) {
            // A connection made from a SYN cookie: acknowledgements back in smoltcp's numbers.
            wire::set_seq_ack(
                &mut rx_buf[..len],
                &t,
                t.seq,
                t.ack.wrapping_sub(c.shift),
                0,
            );
        }
        if t.payload_len() > 0
            && !recovery.disabled
            && c.wire
                .rcv_nxt
                .is_some_and(|n| crate::recovery::scoreboard::before(t.seq, n))
            && wire::tcp_checksum_ok(&rx_buf[..len], &t)
        {
            c.recovery.arrived(&t, c.wire.rcv_nxt);
        }
        let mut len = len;
        let mut t = t;
        if let Some(n) = crate::recovery::receive::fin_after_old_data(
            &t,
            rx_buf,
            len,
            c.wire.rcv_nxt,
            &mut recovery.scratch,
        ) {
            // Rebuilt: parse it again.
            let Some(nt) = wire::parse(&rx_buf[..n]) else {
                return;
            };
            (len, t) = (n, nt);
        }
        // A FIN past a hole is noted, for smoltcp to take when the hole is filled; a segment at
        // the next expected number may be what fills it.
        let mut fills = false;
        if !recovery.disabled && synchronized(c.last_state) {
            if let Some(fin) = crate::recovery::receive::fin_beyond_hole(
                &t,
                &rx_buf[..len],
                &c.wire,
                c.recovery.our_scale(),
            ) {
                c.recovery.held_fin = Some(fin);
            }
            fills = c.recovery.held_fin.is_some()
                && t.payload_len() > 0
                && c.wire.rcv_nxt == Some(t.seq);
        }
        let wire_seq = t.seq;
        let payload = t.payload_len();
        let mut released = None;
        if c.fo.as_deref().is_some_and(|f| f.acts_on_ingress())
            && !wire::tcp_checksum_ok(&rx_buf[..len], &t)
        {
            // The Fast Open layer rewrites or acts on this segment (a handshake's): a corrupt one
            // is dropped here, before it could come out with a fresh checksum.
            counters.InCsumErrors += 1;
            return;
        }
        if let Some(state) = c.fo.as_deref_mut() {
            let out = fo.ingress(state, &t, rx_buf, len, now, &mut c.inject, &mut replies);
            len = out.len;
            if out.final_ack {
                if let crate::fastopen::Conn::Server(s) = state {
                    released = Some((s.listener, c.tuple));
                }
                // The handshake is over for real.
                c.deadline = None;
            }
        }
        // The segment as parsed, if nothing rewrote it since (no Fast Open translation, no
        // SYN cookie's shift): the layers below need not parse it again.
        let current = (c.fo.is_none() && c.shift == 0).then_some(t);
        // Segments the recovery layer holds out of order, waiting for this one perhaps.
        let held_any = c.recovery.ooo.is_some();
        // Most segments: the one that follows the last smoltcp took, nothing held.
        let next_in_order = !held_any
            && current.is_some_and(|t| {
                let in_order =
                    t.seq_len() > 0 && c.recovery.next_hint == Some(t.seq) && !t.has(SYN | RST);
                if in_order {
                    c.recovery.next_hint = Some(t.seq.wrapping_add(t.seq_len()));
                }
                in_order
            });
        // What smoltcp's acceptability test would throw away with the segment (after the
        // translations: in smoltcp's numbers).
        let salvaged = if recovery.disabled || !synchronized(c.last_state) {
            None
        } else {
            current
                .or_else(|| wire::parse(&rx_buf[..len]))
                .and_then(|nt| {
                    crate::recovery::receive::ack_outside_window(
                        &nt,
                        &rx_buf[..len],
                        &c.wire,
                        c.recovery.our_scale(),
                    )
                })
        };
        for p in replies {
            io.send(iface, &p);
            self.ifaces[iface.0].tx_packets += 1;
        }
        if let Some((listener, tuple)) = released {
            self.release_fast_open_slot(listener, &tuple);
        }
        if let Some(mut bare) = salvaged {
            // Its acknowledgement first, which smoltcp would drop with the segment.
            self.feed_bytes(shard, iface, &mut bare, now, io);
        }
        if len > 0 {
            // What waited for data smoltcp has by now (its acknowledgements may have gone
            // further than the segments the layer saw go to it), before this segment is looked at.
            if held_any {
                self.release_out_of_order(shard, iface, now, io);
            }
            if !next_in_order && self.hold_out_of_order(shard, iface, len, current, now, io) {
                return;
            }
        }
        // The in-order point before the segment, to see whether it fills a hole.
        let before = held_any.then(|| self.in_order_point(shard)).flatten();
        if len > 0 {
            let handshake = self.completes_handshake(shard);
            // The segment as smoltcp takes it, for the FIN it may have to be followed by.
            let filler = fills.then(|| self.rx_buf[..len].to_vec());
            self.feed(shard, iface, len, current, now, io);
            if handshake {
                // Into the accept queue at once, so that the next segment of this round sees
                // how full it is.
                self.settle_tcp(shard, now);
            }
            if let Some(filler) = filler {
                self.release_held_fin(shard, iface, &filler, wire_seq, now, io);
            }
            if held_any {
                self.release_out_of_order(shard, iface, now, io);
                if before.is_some() && self.in_order_point(shard) != before {
                    // It filled a hole, or part of one: acknowledged at once, with what
                    // followed it (RFC 5681 §4.2). smoltcp, which saw no hole, would delay it.
                    self.ack_now(shard, iface, now, io);
                }
            }
            if let Some(wire_mtu) = self.ifaces[iface.0].offload_mtu() {
                self.ack_every_second(shard, iface, payload, wire_mtu, now, io);
            }
        } else {
            self.shards.mark(shard);
        }
    }

    /// On an offload interface smoltcp sees the peer's MSS raised to that of a super-packet
    /// ([`crate::offload`]), and acknowledges only when that much is unacknowledged or its
    /// delayed-ACK timer runs out (10 ms): a peer that sends wire-sized segments (behind a
    /// router, say) got one acknowledgement every 10 ms and moved 6 MB/s. As Linux, and RFC
    /// 9293 (SHLD-19) asks, the second segment is acknowledged at once: when more than one
    /// wire segment's payload (`wire_mtu`) went to smoltcp since our last acknowledgement.
    /// Only with the recovery layer (which [`Stack::ack_now`] needs).
    fn ack_every_second(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        payload: usize,
        wire_mtu: usize,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        if self.recovery.disabled {
            return;
        }
        let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) else {
            return;
        };
        let unacked = c.wire.unacked.saturating_add(payload as u32);
        c.wire.unacked = unacked;
        let mss = crate::offload::mss_for(wire_mtu, c.tuple.0.is_ipv6());
        if unacked > u32::from(mss) {
            self.ack_now(shard, iface, now, io);
        }
    }

    /// Where the next segment smoltcp takes in order starts ([`crate::recovery::Conn::in_order`]),
    /// while it takes data.
    fn in_order_point(&self, shard: ShardId) -> Option<u32> {
        let sh = self.shards.get(shard)?;
        let c = sh.conn()?;
        let s = sh.set.get::<smoltcp::socket::tcp::Socket<'_>>(sh.handle);
        let (queued, _, taking) = receiving(s);
        c.recovery
            .in_order(queued, c.wire.rcv_nxt)
            .filter(|_| taking)
    }

    /// Make smoltcp acknowledge what it has at once, with its window and the layer's SACK
    /// blocks (its delayed-ACK timer may be running, and nothing else stops it): it gets a
    /// byte just before the data it takes in order, and answers that as it answers a
    /// keep-alive, with an acknowledgement of where it stands (RFC 9293 §3.10.7.4).
    fn ack_now(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Some(nxt) = self.in_order_point(shard) else {
            return;
        };
        let Some(c) = self.shards.get(shard).and_then(|s| s.conn()) else {
            return;
        };
        let Some((ack, window)) = c.recovery.newest_ack() else {
            return;
        };
        let (local, remote) = c.tuple;
        let mut probe = [0u8; 61];
        let seq = nxt.wrapping_sub(1);
        let Some(n) = wire::build(remote, local, seq, ack, ACK, window, &[0], &mut probe) else {
            return;
        };
        self.feed_bytes(shard, iface, &mut probe[..n], now, io);
    }

    /// The segment in `rx_buf[..len]` (as smoltcp would take it) if the recovery layer holds it
    /// out of order instead ([`crate::recovery::reassembly`]): a sound data segment of a
    /// synchronized connection, past the data smoltcp has in order, that smoltcp's buffer will
    /// take once the data before it came. smoltcp gets its acknowledgement and window, if new,
    /// in a bare ACK, and answers it as it would have (an immediate acknowledgement, with the
    /// layer's SACK blocks: [`Stack::ack_now`]). Returns whether it was held; a segment that is
    /// not goes to smoltcp, and the in-order point follows it.
    fn hold_out_of_order(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        len: usize,
        parsed: Option<wire::Tcp>,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) -> bool {
        use crate::recovery::reassembly::Hold;
        use crate::recovery::scoreboard::before;
        let Stack {
            shards,
            recovery,
            rx_buf,
            ..
        } = self;
        if recovery.disabled {
            return false;
        }
        let Some(crate::shard::Shard {
            set, handle, kind, ..
        }) = shards.get_mut(shard)
        else {
            return false;
        };
        let Kind::Tcp(c) = kind else {
            return false;
        };
        let pkt = &rx_buf[..len];
        let Some(t) = parsed.or_else(|| wire::parse(pkt)) else {
            return false;
        };
        let seq_len = t.seq_len();
        if seq_len == 0
            || !t.has(ACK)
            || t.has(SYN)
            || t.has(RST)
            || c.fo.as_deref().is_some_and(|f| f.acts_on_ingress())
        {
            return false;
        }
        let end = t.seq.wrapping_add(seq_len);
        if c.recovery.next_hint == Some(t.seq) {
            // Right after the last segment smoltcp got: in order.
            c.recovery.next_hint = Some(end);
            return false;
        }
        let (queued, capacity, taking) =
            receiving(set.get::<smoltcp::socket::tcp::Socket<'_>>(*handle));
        let Some(nxt) = c
            .recovery
            .in_order(queued, c.wire.rcv_nxt)
            .filter(|_| taking)
        else {
            c.recovery.next_hint = None;
            return false;
        };
        if !before(nxt, t.seq) {
            // In order (or partly old): smoltcp's, and the segment after it too.
            c.recovery.next_hint = Some(end);
            return false;
        }
        // smoltcp takes, once the data before it came, what fits in its buffer: the layer holds
        // no more than that (a sender may still send up to the furthest right edge it was
        // offered, even if later acknowledgements offered less).
        // (smoltcp's window, as it advertises it: in units of its scale).
        let scale = c.recovery.our_scale();
        let room = ((capacity - queued) as u32 >> scale) << scale;
        if before(nxt.wrapping_add(room), end) || !wire::tcp_checksum_ok(pkt, &t) {
            // Past smoltcp's buffer, or corrupt: smoltcp's, as before.
            return false;
        }
        let held = c.recovery.ooo.get_or_insert_with(Default::default);
        match held.hold(t.seq, end, pkt) {
            Hold::Held => {}
            Hold::Duplicate => c.recovery.held_twice(t.seq, end),
            Hold::Full => return false,
        }
        let held = c.recovery.ooo.get_or_insert_with(Default::default);
        if t.has(FIN) && c.recovery.held_fin == Some(end.wrapping_sub(1)) {
            // Its FIN goes to smoltcp with it.
            c.recovery.held_fin = None;
        }
        let news = held.ack_fed != Some((t.ack, t.window));
        held.ack_fed = Some((t.ack, t.window));
        let bare = news
            .then(|| crate::recovery::receive::bare_ack(pkt, &t, nxt))
            .flatten();
        if let Some(mut bare) = bare {
            // Its acknowledgement and window, which smoltcp takes from a segment in order.
            self.feed_bytes(shard, iface, &mut bare, now, io);
        }
        // What smoltcp would have sent: an acknowledgement of the data it has, at once, with
        // the SACK blocks (the layer's, the run that holds this segment first).
        self.ack_now(shard, iface, now, io);
        true
    }

    /// Segments the recovery layer held out of order that smoltcp can now take in order: to
    /// smoltcp, one after another.
    fn release_out_of_order(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        loop {
            let Some(sh) = self.shards.get_mut(shard) else {
                return;
            };
            let (queued, _, _) =
                receiving(sh.set.get::<smoltcp::socket::tcp::Socket<'_>>(sh.handle));
            let Some(c) = sh.conn_mut() else {
                return;
            };
            let released = c
                .recovery
                .in_order(queued, c.wire.rcv_nxt)
                .and_then(|nxt| c.recovery.ooo.as_deref_mut()?.release(nxt));
            let Some(mut packet) = released else {
                if c.recovery.ooo.as_deref().is_some_and(|h| h.is_empty()) {
                    c.recovery.ooo = None;
                }
                return;
            };
            if let Some(t) = wire::parse(&packet) {
                // smoltcp drops a segment whose acknowledgement is older than one it took:
                // the held one carries the newest.
                if let Some(ack) = c
                    .recovery
                    .newest_ack()
                    .map(|(a, _)| a)
                    .filter(|&a| crate::recovery::scoreboard::before(t.ack, a))
                {
                    wire::set_seq_ack(&mut packet, &t, t.seq, ack, 0);
                }
            }
            self.feed_bytes(shard, iface, &mut packet, now, io);
        }
    }

    /// After `filler` (which started at `wire_seq` on the wire) went to smoltcp: if our
    /// acknowledgement now reaches a FIN that arrived past the hole, smoltcp gets that FIN.
    fn release_held_fin(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        filler: &[u8],
        wire_seq: u32,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Some(Kind::Tcp(c)) = self.shards.get_mut(shard).map(|sh| &mut sh.kind) else {
            return;
        };
        let (Some(fin), Some(rcv_nxt)) = (c.recovery.held_fin, c.wire.rcv_nxt) else {
            return;
        };
        if rcv_nxt != fin {
            if crate::shard::seq_after(rcv_nxt, fin) {
                // Taken already (the peer sent it again).
                c.recovery.held_fin = None;
            }
            return;
        }
        c.recovery.held_fin = None;
        // In smoltcp's numbers, which may be offset from the wire's.
        let Some(smol_seq) = wire::parse(filler).map(|f| f.seq) else {
            return;
        };
        let fin = fin.wrapping_add(smol_seq.wrapping_sub(wire_seq));
        if let Some(mut bare) = crate::recovery::receive::bare_fin(filler, fin) {
            self.feed_bytes(shard, iface, &mut bare, now, io);
        }
    }

    /// Hand `rx_buf[..len]` to a shard's socket, then the segments the Fast Open layer plays
    /// after it; the shard gets an egress pass and is settled this round.
    pub(crate) fn feed(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        len: usize,
        parsed: Option<wire::Tcp>,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Stack {
            ifaces,
            shards,
            fo,
            recovery,
            rx_buf,
            tx_buf,
            ..
        } = self;
        let Some(sh) = shards.get_mut(shard) else {
            return;
        };
        let ifc = &mut ifaces[iface.0];
        let (mtu, offload) = (ifc.frame(), ifc.offload_mtu());
        let Iface {
            iface: smol,
            up,
            tx_packets,
            ..
        } = ifc;
        let (set, kind) = (&mut sh.set, &mut sh.kind);
        let mut injected = Vec::new();
        // A super-packet is acknowledged at once (`offload::ack_at_once`): smoltcp's delayed
        // ACK is off while it takes it, so that, if its timer is idle, the next egress sends
        // the ACK. (If the timer runs for an earlier segment, it does not stop it: with the
        // recovery layer, `Stack::ack_every_second` then has smoltcp answer at once.)
        let quick_ack = matches!(kind, Kind::Tcp(_))
            && offload.is_some_and(|mtu| crate::offload::ack_at_once(&rx_buf[..len], mtu));
        let ack_delay = quick_ack.then(|| {
            let s = set.get_mut::<smoltcp::socket::tcp::Socket<'_>>(sh.handle);
            let delay = s.ack_delay();
            s.set_ack_delay(None);
            delay
        });
        {
            let conn = match kind {
                Kind::Tcp(c) => {
                    recovery.to_smoltcp(&mut c.recovery, &mut rx_buf[..len], parsed);
                    if let Some(wire_mtu) = offload {
                        crate::offload::raise_mss(&mut rx_buf[..len], wire_mtu);
                    }
                    Some(ConnLayers {
                        conn: c,
                        fo: &mut *fo,
                        recovery: &mut *recovery,
                        offload,
                    })
                }
                Kind::Udp(_) => None,
            };
            let mut path = Path {
                io,
                iface,
                up: *up,
                mtu,
                rx: Some(&rx_buf[..len]),
                tx: &mut *tx_buf,
                conn,
                now,
                sent: 0,
            };
            smol.poll_ingress_single(now, &mut path, set);
            *tx_packets += path.sent;
        }
        if let Some(delay) = ack_delay {
            set.get_mut::<smoltcp::socket::tcp::Socket<'_>>(sh.handle)
                .set_ack_delay(delay);
        }
        if let Kind::Tcp(c) = kind {
            injected.append(&mut c.inject);
        }
        for p in &mut injected {
            feed_one(
                smol, set, kind, fo, recovery, io, iface, *up, mtu, offload, tx_buf, tx_packets, p,
                now,
            );
        }
        shards.mark(shard);
    }

    /// Hand a packet built by the stack to a shard's socket.
    fn feed_bytes(
        &mut self,
        shard: ShardId,
        iface: IfaceId,
        packet: &mut [u8],
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Stack {
            ifaces,
            shards,
            fo,
            recovery,
            tx_buf,
            ..
        } = self;
        let Some(sh) = shards.get_mut(shard) else {
            return;
        };
        let ifc = &mut ifaces[iface.0];
        let (mtu, offload) = (ifc.frame(), ifc.offload_mtu());
        let Iface {
            iface: smol,
            up,
            tx_packets,
            ..
        } = ifc;
        let (set, kind) = (&mut sh.set, &mut sh.kind);
        feed_one(
            smol, set, kind, fo, recovery, io, iface, *up, mtu, offload, tx_buf, tx_packets,
            packet, now,
        );
        shards.mark(shard);
    }

    /// A packet no shard takes: smoltcp answers it as a host with no socket would.
    fn unclaimed(
        &mut self,
        iface: IfaceId,
        len: usize,
        now: Instant,
        io: &mut (impl PacketIo + ?Sized),
    ) {
        let Stack {
            ifaces,
            rx_buf,
            tx_buf,
            ..
        } = self;
        let ifc = &mut ifaces[iface.0];
        let mtu = ifc.frame();
        let Iface {
            iface: smol,
            nobody,
            up,
            tx_packets,
            ..
        } = ifc;
        let mut path = Path {
            io,
            iface,
            up: *up,
            mtu,
            rx: Some(&rx_buf[..len]),
            tx: &mut *tx_buf,
            conn: None,
            now,
            sent: 0,
        };
        smol.poll_ingress_single(now, &mut path, nobody);
        *tx_packets += path.sent;
    }

    /// Send what a shard has to send (at most [`EGRESS_BUDGET`] segments), playing to smoltcp
    /// what the Fast Open layer produces on the way. Returns whether it had more.
    fn egress(&mut self, shard: ShardId, now: Instant, io: &mut (impl PacketIo + ?Sized)) -> bool {
        let Stack {
            ifaces,
            shards,
            fo,
            recovery,
            tx_buf,
            ..
        } = self;
        let Some(sh) = shards.get_mut(shard) else {
            return false;
        };
        let ifc = &mut ifaces[sh.iface.0];
        let (mtu, offload) = (ifc.frame(), ifc.offload_mtu());
        let Iface {
            iface: smol,
            up,
            tx_packets,
            ..
        } = ifc;
        let iface = sh.iface;
        let handle = sh.handle;
        let (set, kind) = (&mut sh.set, &mut sh.kind);
        if let Kind::Tcp(c) = &mut *kind {
            // The recovery layer's timer (reordering window, tail loss probe, timeout) first:
            // what it sends again goes before new data.
            let mut out = Vec::new();
            let ctx = crate::recovery::Ctx {
                tuple: c.tuple,
                wire: &c.wire,
                peer_numbers_plain: c.fo.is_none(),
            };
            let update = recovery.on_timer(&mut c.recovery, ctx, now, &mut out);
            let open = || {
                matches!(
                    set.get::<smoltcp::socket::tcp::Socket<'_>>(handle).state(),
                    smoltcp::socket::tcp::State::Established
                        | smoltcp::socket::tcp::State::CloseWait
                )
            };
            if let Some(p) = update.filter(|_| open()) {
                // Fed to smoltcp below, with what Fast Open plays.
                c.inject.push(p);
            }
            for p in &out {
                if *up {
                    io.send(iface, p);
                    *tx_packets += 1;
                }
            }
        }
        let mut sent = 0;
        let mut more = false;
        for _ in 0..4 {
            let conn = match &mut *kind {
                Kind::Tcp(c) => Some(ConnLayers {
                    conn: c,
                    fo: &mut *fo,
                    recovery: &mut *recovery,
                    offload,
                }),
                Kind::Udp(_) => None,
            };
            let mut path = Path {
                io: &mut *io,
                iface,
                up: *up,
                mtu,
                rx: None,
                tx: &mut *tx_buf,
                conn,
                now,
                sent: 0,
            };
            more = true;
            while sent < EGRESS_BUDGET {
                if smol.poll_egress(now, &mut path, set) == PollResult::None {
                    more = false;
                    break;
                }
                sent += 1;
            }
            *tx_packets += path.sent;
            // Segments Fast Open plays to smoltcp after a SYN-ACK (a server's view of the
            // client's final ACK and data) are taken now, so the connection is acceptable and
            // readable in this round.
            let mut injected = match &mut *kind {
                Kind::Tcp(c) if !c.inject.is_empty() => std::mem::take(&mut c.inject),
                _ => break,
            };
            for p in &mut injected {
                feed_one(
                    smol, set, kind, fo, recovery, io, iface, *up, mtu, offload, tx_buf,
                    tx_packets, p, now,
                );
            }
        }
        if let Kind::Udp(part) = &mut *kind {
            // Datagrams the stack built itself (in fragments) go once smoltcp's queue ahead of
            // them is out, so that the socket's datagrams leave in the order they were sent.
            let queued = set
                .get::<smoltcp::socket::udp::Socket<'_>>(handle)
                .send_queue();
            if !more && queued == 0 {
                if let Some(held) = part.held.take() {
                    for p in &held.packets {
                        if *up {
                            io.send(iface, p);
                            *tx_packets += 1;
                        }
                    }
                }
            }
        }
        if more {
            shards.mark(shard);
        }
        more
    }
}

/// Hand one packet to one shard's socket (a segment the Fast Open layer plays).
#[allow(clippy::too_many_arguments)]
fn feed_one<P: PacketIo + ?Sized>(
    smol: &mut smoltcp::iface::Interface,
    set: &mut smoltcp::iface::SocketSet<'static>,
    kind: &mut Kind,
    fo: &mut crate::fastopen::Layer,
    recovery: &mut crate::recovery::Layer,
    io: &mut P,
    iface: IfaceId,
    up: bool,
    mtu: usize,
    offload: Option<usize>,
    tx_buf: &mut Vec<u8>,
    tx_packets: &mut u64,
    packet: &mut [u8],
    now: Instant,
) {
    let conn = match kind {
        Kind::Tcp(c) => {
            recovery.to_smoltcp(&mut c.recovery, packet, None);
            if let Some(wire_mtu) = offload {
                crate::offload::raise_mss(packet, wire_mtu);
            }
            Some(ConnLayers {
                conn: c,
                fo: &mut *fo,
                recovery: &mut *recovery,
                offload,
            })
        }
        Kind::Udp(_) => None,
    };
    let mut path = Path {
        io,
        iface,
        up,
        mtu,
        rx: Some(packet),
        tx: &mut *tx_buf,
        conn,
        now,
        sent: 0,
    };
    smol.poll_ingress_single(now, &mut path, set);
    *tx_packets += path.sent;
}

/// (bytes waiting in its buffer, its size, whether it takes data) of a smoltcp TCP socket: it takes
/// data until the peer's FIN.
fn receiving(s: &smoltcp::socket::tcp::Socket<'_>) -> (usize, usize, bool) {
    use smoltcp::socket::tcp::State;
    let taking = matches!(
        s.state(),
        State::Established | State::FinWait1 | State::FinWait2
    );
    (s.recv_queue(), s.recv_capacity(), taking)
}
