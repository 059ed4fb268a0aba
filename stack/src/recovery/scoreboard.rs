//! What a connection has sent and the peer has not cumulatively acknowledged: every segment,
//! its payload, and what the peer said of it (RFC 6675's scoreboard).
//!
//! Segments are kept in sequence order, exactly as they left (the layer retransmits them with
//! the same boundaries), with their payload from `SND.UNA` on in chunks: a segment that filled
//! the buffer smoltcp wrote it in (a super-packet with segmentation offload, a wire-sized one
//! without) left there, shared with the device's queue instead of copied ([`SharedPacket`]);
//! small ones in large buffers copied, several to a chunk. A
//! segment is in one of three conditions: in flight (sent, nothing known), SACKed, or lost (its
//! last transmission is gone and it waits to be sent again). A SACKed segment stays until the
//! cumulative acknowledgement covers it: a receiver may renege (RFC 2018 §8).
//!
//! RACK (RFC 8985) asks, on every acknowledgement, which segments were sent before the most
//! recently sent one that got through and have waited longer than a round trip plus the
//! reordering window. Original transmissions leave in sequence order, so among them the answer
//! is a prefix: a cursor (`scan`) walks it once over the life of each segment. Retransmissions
//! are checked from a queue in the order they were sent. So an acknowledgement costs in
//! proportion to what it changes, not to how much is in flight.

use std::collections::VecDeque;

use smoltcp::time::{Duration, Instant};

use super::rate::TxStamp;
use crate::shared_packet::{PacketPool, SharedPacket};

/// `a` is before `b` in sequence space (RFC 9293 §3.4, modulo 2^32).
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` is before or at `b`.
pub(crate) fn before_eq(a: u32, b: u32) -> bool {
    !before(b, a)
}

/// One segment as it left (and will leave again if lost).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    pub(crate) seq: u32,
    /// Sequence space: payload, plus one for a FIN.
    pub(crate) len: u32,
    /// Its last transmission.
    pub(crate) sent: Instant,
    /// How many times it was sent again.
    pub(crate) rexmits: u16,
    pub(crate) fin: bool,
    pub(crate) psh: bool,
    pub(crate) sacked: bool,
    /// Its last transmission is known lost; it waits to be sent again.
    pub(crate) lost: bool,
    /// The connection's delivery counters when it last left (delivery rate estimation).
    pub(crate) stamp: TxStamp,
    /// The wire segments it left as: the device cut the packet that carried it, which began
    /// at `origin`, every `cut` bytes of payload (segmentation offload; `u32::MAX`: not cut).
    /// A segment of several is one record while nothing but the cumulative acknowledgement
    /// touches it (no SACK, no loss, not sent again): at 0% loss a 64 KB super-packet costs
    /// one record, not forty-four. Whatever would change it first splits it into its wire
    /// segments ([`Scoreboard::split`]), which the rest of the scoreboard then works on.
    cut: u32,
    origin: u32,
}

impl Seg {
    /// It stands for more than one wire segment.
    fn is_several(&self) -> bool {
        self.payload_len()
            > self
                .cut
                .saturating_sub(self.seq.wrapping_sub(self.origin) % self.cut)
    }

    pub(crate) fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len)
    }

    pub(crate) fn payload_len(&self) -> u32 {
        self.len - u32::from(self.fin)
    }

    /// Whether it was sent before `(t, end)` (RFC 8985's `RACK_sent_after`, reversed): earlier,
    /// or at the same time and earlier in sequence.
    fn sent_before(&self, t: Instant, end: u32) -> bool {
        self.sent < t || (self.sent == t && before(self.end(), end))
    }
}

/// What one acknowledgement delivered (for RACK, the RTT estimator and PRR).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Delivered {
    /// Bytes newly acknowledged cumulatively or SACKed, minus SACKed bytes now cumulatively
    /// acknowledged (RFC 6937's `DeliveredData`).
    pub(crate) bytes: u32,
    /// How far `SND.UNA` moved.
    pub(crate) acked: u32,
    /// The most recently sent of the newly delivered segments: (sent, end, sent again).
    pub(crate) newest: Option<(Instant, u32, bool)>,
    /// The same segment's send time and stamp (the delivery rate sample's).
    pub(crate) rate_from: Option<(Instant, TxStamp)>,
    /// The send time of the most recently sent newly delivered segment that was never sent
    /// again (Karn's rule: only those time a round trip unambiguously).
    pub(crate) rtt_from: Option<Instant>,
    /// A segment sent once was delivered after one sent later in sequence had been SACKed:
    /// the network reordered.
    pub(crate) reordered: bool,
    /// A segment marked lost turned out delivered without being sent again.
    pub(crate) spurious_loss: bool,
}

impl Delivered {
    /// `s` is newly delivered.
    fn saw(&mut self, s: &Seg) {
        if self.newest.is_none_or(|(t, end, _)| !s.sent_before(t, end)) {
            self.newest = Some((s.sent, s.end(), s.rexmits > 0));
            self.rate_from = Some((s.sent, s.stamp));
        }
        if s.rexmits == 0 && self.rtt_from.is_none_or(|t| s.sent > t) {
            self.rtt_from = Some(s.sent);
        }
    }

    /// `s` was delivered before (or is known to have arrived without being marked): it tells
    /// RACK about the segments sent before it, but it is neither a round trip nor a rate
    /// sample (Linux clears a segment's delivery stamp once SACKed).
    fn saw_again(&mut self, s: &Seg) {
        if self.newest.is_none_or(|(t, end, _)| !s.sent_before(t, end)) {
            self.newest = Some((s.sent, s.end(), s.rexmits > 0));
        }
    }
}

/// What the scoreboard made of a segment its connection's smoltcp socket sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// New sequence space (all or part of the segment): recorded.
    New,
    /// Nothing new: smoltcp sending again what is in flight, SACKed or already resent.
    Redundant,
    /// Not the scoreboard's business (entirely acknowledged already: a keep-alive probe; or
    /// past a gap the scoreboard cannot hold).
    Other,
}

/// The payload buffer an idle connection keeps (a larger one goes when it idles).
const IDLE_BUFFER: usize = 64 * 1024;

/// The largest chunk copied payload is gathered in; the smallest is 4 KB, and they grow with
/// the flight.
const COPY_CHUNK: usize = 64 * 1024;

/// The payload of what is in flight, from `SND.UNA` on, in chunks in sequence order: bytes
/// copied (small segments, several to a chunk), or a segment left where smoltcp wrote it, its
/// buffer shared with the device's queue ([`SharedPacket`]: no copy). A
/// segment's payload is always within one chunk.
#[derive(Debug, Default)]
struct Payload {
    chunks: VecDeque<Chunk>,
    /// Bytes held, all chunks.
    len: usize,
    /// Bytes ever held: one past the last byte held, counted from the first byte ever held
    /// (chunks are found by where they end on this count).
    pushed: u64,
    /// The buffers of copied chunks drained, to gather the next ones in (a flight drains and
    /// refills in bursts: together they are at most the largest flight, and go once the
    /// connection idles, as the flight's own would).
    spare: Vec<Vec<u8>>,
    /// The most bytes held at once (when a chunk was started).
    peak: usize,
}

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    /// The payload held: `bytes[start..end]`.
    start: usize,
    end: usize,
    /// Where its end is on [`Payload::pushed`]'s count.
    end_at: u64,
}

#[derive(Debug)]
enum Bytes {
    Copied(Vec<u8>),
    Shared(SharedPacket),
}

impl Chunk {
    fn data(&self) -> &[u8] {
        let all: &[u8] = match &self.bytes {
            Bytes::Copied(v) => v,
            Bytes::Shared(p) => p,
        };
        &all[self.start..self.end]
    }
}

impl Payload {
    /// Copy `data` in after what is held.
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.pushed += data.len() as u64;
        if let Some(Chunk {
            bytes: Bytes::Copied(v),
            end,
            end_at,
            ..
        }) = self.chunks.back_mut()
        {
            if v.capacity() - v.len() >= data.len() {
                v.extend_from_slice(data);
                *end = v.len();
                *end_at = self.pushed;
                return;
            }
        }
        // Chunks as large as the largest flight so far, within bounds: a bulk sender's are
        // 64 KB, and come back as spares.
        self.peak = self.peak.max(self.len);
        let want = data
            .len()
            .max(self.peak.next_power_of_two().clamp(4096, COPY_CHUNK));
        // Those smaller than the chunks now made (a flight's first rounds) are not needed.
        while self.spare.last().is_some_and(|v| v.capacity() < want) {
            self.spare.pop();
        }
        let mut v = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(want));
        v.clear();
        v.extend_from_slice(data);
        let end = v.len();
        self.chunks.push_back(Chunk {
            bytes: Bytes::Copied(v),
            start: 0,
            end,
            end_at: self.pushed,
        });
    }

    /// Hold `packet[start..start + n]` after what is held, where it is.
    fn push_shared(&mut self, packet: &SharedPacket, start: usize, n: usize) {
        if n == 0 {
            return;
        }
        self.len += n;
        self.pushed += n as u64;
        self.chunks.push_back(Chunk {
            bytes: Bytes::Shared(packet.clone()),
            start,
            end: start + n,
            end_at: self.pushed,
        });
    }

    /// Let go of the first `n` bytes: a copied chunk's buffer is kept to copy in again, a shared
    /// one goes back to `pool` if one is given.
    fn pop(&mut self, n: usize, mut pool: Option<&mut PacketPool>) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            let here = n.min(front.end - front.start);
            front.start += here;
            n -= here;
            if front.start == front.end {
                match self.chunks.pop_front().map(|c| c.bytes) {
                    Some(Bytes::Copied(v)) => self.spare.push(v),
                    Some(Bytes::Shared(p)) => {
                        if let Some(pool) = pool.as_deref_mut() {
                            pool.give_back(p);
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// Give the memory back (nothing is in it).
    fn release(&mut self) {
        if self.len == 0 {
            self.chunks = VecDeque::new();
            self.spare = Vec::new();
            self.peak = 0;
        }
    }

    /// Bytes of memory kept while nothing is held.
    fn idle_capacity(&self) -> usize {
        self.spare.iter().map(Vec::capacity).sum::<usize>()
            + self
                .chunks
                .iter()
                .map(|c| match &c.bytes {
                    Bytes::Copied(v) => v.capacity(),
                    Bytes::Shared(_) => 0,
                })
                .sum::<usize>()
    }

    /// `n` bytes from offset `off`, as at most two slices (a segment's payload is in one
    /// chunk: the second is for a span that is not a segment's).
    fn slices(&self, off: usize, n: usize) -> (&[u8], &[u8]) {
        if n == 0 || off + n > self.len {
            return (&[], &[]);
        }
        let at = self.pushed - (self.len - off) as u64;
        let i = self.chunks.partition_point(|c| c.end_at <= at);
        let Some(c) = self.chunks.get(i) else {
            return (&[], &[]);
        };
        let data = c.data();
        let skip = data.len() - (c.end_at - at) as usize;
        let a = &data[skip..data.len().min(skip + n)];
        let rest = n - a.len();
        let b = match (rest, self.chunks.get(i + 1)) {
            (0, _) | (_, None) => &[][..],
            (_, Some(next)) => {
                let d = next.data();
                &d[..rest.min(d.len())]
            }
        };
        (a, b)
    }
}

/// The scoreboard of one connection.
#[derive(Debug, Default)]
pub(crate) struct Scoreboard {
    segs: VecDeque<Seg>,
    data: Payload,
    /// `SND.UNA` and one past the highest sequence number sent, once anything was sent.
    una: u32,
    nxt: u32,
    started: bool,
    /// Bytes SACKed, and bytes lost and not yet sent again.
    sacked_bytes: u32,
    lost_bytes: u32,
    sacked_segs: u32,
    /// One past the highest SACKed sequence number.
    high_sacked: Option<u32>,
    /// RACK's cursor over original transmissions: those before it are SACKed or lost.
    scan: u32,
    /// Retransmissions in the order they left: (sequence number, when). Stale entries (the
    /// segment acknowledged, SACKed, or sent again since) are skipped.
    rexmit_order: VecDeque<(u32, Instant)>,
    /// No segment before it is lost (where the search for the next one to send again starts).
    lost_hint: u32,
    /// The stamp segments get as they leave (the layer sets it before each transmission).
    pub(crate) next_stamp: TxStamp,
    /// The SACK blocks of the last acknowledgement, once read (Linux's `recv_sack_cache`).
    /// Every segment wholly inside one of them is SACKed, so a block that repeats them skips
    /// them: an acknowledgement costs what its blocks add, not the whole SACKed part of the
    /// flight (a receiver repeats its blocks in every acknowledgement of a recovery, and with a
    /// window of thousands of segments the walk over them was most of the layer's time).
    sack_cache: SackCache,
}

/// Most SACK blocks one acknowledgement carries.
const MAX_BLOCKS: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
struct SackCache {
    blocks: [(u32, u32); MAX_BLOCKS],
    len: usize,
}

impl Scoreboard {
    /// Nothing in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Nothing in flight, and a payload buffer larger than a connection needs to keep while
    /// idle ([`Scoreboard::release`]).
    pub(crate) fn holds_idle_memory(&self) -> bool {
        self.is_empty() && self.data.idle_capacity() > IDLE_BUFFER
    }

    /// Give back the payload buffer of a drained flight. A flight drains between every pair
    /// of acknowledgements on a fast path, so the buffer stays until the connection idles
    /// (reallocating it each time cost a tenth of the layer's time).
    pub(crate) fn release(&mut self) {
        self.data.release();
    }

    pub(crate) fn una(&self) -> Option<u32> {
        self.started.then_some(self.una)
    }

    /// One past the highest sequence number sent.
    pub(crate) fn nxt(&self) -> Option<u32> {
        self.started.then_some(self.nxt)
    }

    /// Sequence space outstanding (`SND.NXT - SND.UNA`).
    pub(crate) fn outstanding(&self) -> u32 {
        self.nxt.wrapping_sub(self.una)
    }

    /// RFC 6675's pipe: bytes outstanding that are neither SACKed nor known lost.
    pub(crate) fn pipe(&self) -> u32 {
        self.outstanding()
            .saturating_sub(self.sacked_bytes)
            .saturating_sub(self.lost_bytes)
    }

    pub(crate) fn sacked_bytes(&self) -> u32 {
        self.sacked_bytes
    }

    pub(crate) fn lost_bytes(&self) -> u32 {
        self.lost_bytes
    }

    pub(crate) fn sacked_segs(&self) -> u32 {
        self.sacked_segs
    }

    /// Payload bytes held.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.data.len
    }

    /// The SACKed segments are exactly those starting at `seqs`.
    #[cfg(test)]
    fn check_sacked(&self, seqs: &[u32]) {
        let sacked: Vec<u32> = self
            .segs
            .iter()
            .filter(|s| s.sacked)
            .map(|s| s.seq)
            .collect();
        assert_eq!(sacked, seqs);
    }

    /// The scoreboard's invariants, recomputed from its segments (for the fuzz target).
    #[cfg(feature = "fuzz")]
    pub(crate) fn check(&self) {
        let (mut sacked, mut lost, mut segs, mut payload) = (0u32, 0u32, 0u32, 0usize);
        let mut at = self.una;
        for s in &self.segs {
            assert_eq!(s.seq, at, "segments are contiguous from SND.UNA");
            assert!(s.len > 0);
            assert!(!(s.sacked && s.lost), "SACKed and lost at once");
            assert!(
                !s.is_several() || (!s.sacked && !s.lost && s.rexmits == 0),
                "a record of several wire segments was touched without being split"
            );
            if s.sacked {
                sacked += s.len;
                segs += 1;
            }
            if s.lost {
                lost += s.len;
            }
            payload += s.payload_len() as usize;
            at = s.end();
        }
        if !self.segs.is_empty() {
            assert_eq!(at, self.nxt, "the last segment ends at SND.NXT");
        }
        assert_eq!(sacked, self.sacked_bytes);
        assert_eq!(segs, self.sacked_segs);
        assert_eq!(lost, self.lost_bytes);
        assert_eq!(payload, self.data.len, "one byte held per byte of payload");
        assert!(self.pipe() <= self.outstanding());
    }

    /// The index of the segment holding `seq`.
    fn index_of(&self, seq: u32) -> Option<usize> {
        let i = self.segs.partition_point(|s| before_eq(s.end(), seq));
        self.segs
            .get(i)
            .filter(|s| before_eq(s.seq, seq))
            .map(|_| i)
    }

    /// A segment left: record what is new in it.
    ///
    /// A segment larger than `cut` bytes (a super-packet the device cuts into wire segments of
    /// `cut` bytes: segmentation offload) is recorded as the wire segments it becomes, so that
    /// a loss on the wire costs one wire segment sent again, not the super-packet.
    pub(crate) fn on_send(
        &mut self,
        seq: u32,
        payload: &[u8],
        fin: bool,
        psh: bool,
        now: Instant,
        cut: u32,
    ) -> Sent {
        self.record(seq, payload, None, fin, psh, now, cut)
    }

    /// As [`on_send`](Scoreboard::on_send) for a segment whose payload is `packet[at..at +
    /// len]`: what is new in it stays there, the buffer shared with the device's queue, instead
    /// of being copied.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_send_shared(
        &mut self,
        seq: u32,
        packet: &SharedPacket,
        (at, len): (usize, usize),
        fin: bool,
        psh: bool,
        now: Instant,
        cut: u32,
    ) -> Sent {
        let payload = packet.get(at..at + len).unwrap_or(&[]);
        self.record(seq, payload, Some((packet, at)), fin, psh, now, cut)
    }

    /// `payload` is `shared.0[shared.1..]`'s first bytes if given: held there, not copied.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        seq: u32,
        payload: &[u8],
        shared: Option<(&SharedPacket, usize)>,
        fin: bool,
        psh: bool,
        now: Instant,
        cut: u32,
    ) -> Sent {
        let len = payload.len() as u32 + u32::from(fin);
        if len == 0 {
            return Sent::Other;
        }
        if !self.started {
            self.started = true;
            self.una = seq;
            self.nxt = seq;
            self.scan = seq;
        }
        let end = seq.wrapping_add(len);
        if before_eq(end, self.una) {
            return Sent::Other;
        }
        if before_eq(end, self.nxt) {
            return Sent::Redundant;
        }
        if before(self.nxt, seq) {
            // A gap: smoltcp never sends past what it sent before. Rather than hold something
            // inconsistent, forget what is outstanding (smoltcp still holds it and sends it
            // again on its own timer, below `SND.UNA` for the layer, which lets it pass) and
            // start again from this segment.
            *self = Scoreboard {
                data: std::mem::take(&mut self.data),
                next_stamp: self.next_stamp,
                ..Scoreboard::default()
            };
            self.data.pop(self.data.len, None);
            self.started = true;
            self.una = seq;
            self.nxt = seq;
            self.scan = seq;
            self.lost_hint = seq;
        }
        if self.segs.back().is_some_and(|s| s.fin) {
            // Nothing follows a FIN (the payload ring counts on it).
            return Sent::Other;
        }
        // What is new: from `nxt` on (smoltcp may resend from further back after its own
        // timeout, in other boundaries).
        let skip = self.nxt.wrapping_sub(seq) as usize;
        let fresh = payload.get(skip..).unwrap_or(&[]);
        let fresh_fin = fin && skip <= payload.len();
        if fresh.is_empty() && !fresh_fin {
            return Sent::Redundant;
        }
        match shared {
            Some((packet, at)) => self.data.push_shared(packet, at + skip, fresh.len()),
            None => self.data.push(fresh),
        }
        // One record for all of it, however many wire segments the device makes of it.
        let cut = cut.max(1);
        let s = Seg {
            seq: self.nxt,
            len: fresh.len() as u32 + u32::from(fresh_fin),
            sent: now,
            rexmits: 0,
            fin: fresh_fin,
            psh,
            sacked: false,
            lost: false,
            stamp: self.next_stamp,
            cut,
            origin: seq,
        };
        self.nxt = s.end();
        self.segs.push_back(s);
        Sent::New
    }

    /// Make the record at `i` the wire segments it stands for ([`Seg::cut`]), before anything
    /// but the cumulative acknowledgement touches it; the first of them is then at `i`.
    fn split(&mut self, i: usize) {
        let Some(&s) = self.segs.get(i) else { return };
        if !s.is_several() {
            return;
        }
        let mut pieces = Vec::with_capacity(s.payload_len().div_ceil(s.cut) as usize + 1);
        let data_end = s.seq.wrapping_add(s.payload_len());
        let mut at = s.seq;
        while before(at, data_end) {
            // Up to the device's next cut.
            let into = at.wrapping_sub(s.origin) % s.cut;
            let bytes = (s.cut - into).min(data_end.wrapping_sub(at));
            let last = at.wrapping_add(bytes) == data_end;
            pieces.push(Seg {
                seq: at,
                len: bytes + u32::from(last && s.fin),
                fin: last && s.fin,
                psh: last && s.psh,
                ..s
            });
            at = at.wrapping_add(bytes);
        }
        let tail = self.segs.split_off(i + 1);
        self.segs.truncate(i);
        self.segs.extend(pieces);
        self.segs.extend(tail);
    }

    /// A cumulative acknowledgement up to `ack` (checked by the caller to be within what was
    /// sent). The buffers of shared segments acknowledged whole go back to `pool`.
    pub(crate) fn on_ack(&mut self, ack: u32, d: &mut Delivered, pool: &mut PacketPool) {
        if !self.started || !before(self.una, ack) || before(self.nxt, ack) {
            return;
        }
        let high_sacked = self.high_sacked;
        // Payload bytes let go of, at once after the walk.
        let mut freed = 0usize;
        while let Some(front) = self.segs.front_mut() {
            if before_eq(front.end(), ack) {
                let s = *front;
                self.segs.pop_front();
                freed += s.payload_len() as usize;
                if s.sacked {
                    self.sacked_bytes -= s.len;
                    self.sacked_segs -= 1;
                } else {
                    d.bytes += s.len;
                    if s.lost {
                        self.lost_bytes -= s.len;
                        if s.rexmits == 0 {
                            d.spurious_loss = true;
                        }
                    }
                    if s.rexmits == 0 && high_sacked.is_some_and(|h| before(s.end(), h)) {
                        d.reordered = true;
                    }
                    d.saw(&s);
                }
                continue;
            }
            if before(front.seq, ack) {
                // Part of a record (a peer acknowledging some of the wire segments it stands
                // for, a peer's receive window, a middlebox): trim. What was delivered ends at
                // `ack`: RACK must not take the rest for delivered.
                let cut = ack.wrapping_sub(front.seq);
                let part = Seg {
                    len: cut,
                    fin: false,
                    psh: false,
                    ..*front
                };
                let payload_cut = cut.min(front.payload_len());
                if !front.sacked {
                    d.bytes += cut;
                    if front.lost {
                        self.lost_bytes -= cut;
                    }
                } else {
                    self.sacked_bytes -= cut;
                }
                front.seq = ack;
                front.len -= cut;
                freed += payload_cut as usize;
                if part.sacked {
                    d.saw_again(&part);
                } else {
                    d.saw(&part);
                }
            }
            break;
        }
        self.data.pop(freed, Some(pool));
        d.acked = ack.wrapping_sub(self.una);
        self.una = ack;
        if before(self.scan, ack) {
            self.scan = ack;
        }
        if self.high_sacked.is_some_and(|h| before_eq(h, ack)) {
            self.high_sacked = None;
        }
        if self.segs.is_empty() {
            self.rexmit_order.clear();
        }
    }

    /// A SACK block `[left, right)` (checked by the caller to be within what is outstanding).
    /// Only segments it covers whole are marked.
    pub(crate) fn on_sack(&mut self, left: u32, right: u32, d: &mut Delivered) {
        let high_before = self.high_sacked;
        let mut i = self.segs.partition_point(|s| before_eq(s.end(), left));
        while let Some(s) = self.segs.get(i) {
            if !before(s.seq, right) {
                break;
            }
            if s.sacked {
                i = self.past_known_sacked(i, right);
                continue;
            }
            if s.is_several() {
                // The block says which of its wire segments arrived.
                self.split(i);
                continue;
            }
            let s = &mut self.segs[i];
            i += 1;
            if before(s.seq, left) {
                continue;
            }
            if before(right, s.end()) {
                // A receiver that keeps data past a hole but not the FIN after it (smoltcp's
                // reassembler) SACKs the payload alone: the segment arrived, which tells RACK
                // about the ones sent before it, but its FIN still has to go.
                let data_end = s.seq.wrapping_add(s.payload_len());
                if s.fin && s.payload_len() > 0 && before_eq(data_end, right) {
                    let s = *s;
                    d.saw_again(&s);
                }
                continue;
            }
            s.sacked = true;
            self.sacked_bytes += s.len;
            self.sacked_segs += 1;
            d.bytes += s.len;
            if s.lost {
                s.lost = false;
                self.lost_bytes -= s.len;
                if s.rexmits == 0 {
                    d.spurious_loss = true;
                }
            }
            if s.rexmits == 0 && high_before.is_some_and(|h| before(s.end(), h)) {
                d.reordered = true;
            }
            let s = *s;
            d.saw(&s);
            if self.high_sacked.is_none_or(|h| before(h, s.end())) {
                self.high_sacked = Some(s.end());
            }
        }
    }

    /// The SACK blocks of one acknowledgement were read with [`Scoreboard::on_sack`], these
    /// `blocks` (at most four): the ones the next acknowledgement's repeat.
    pub(crate) fn sacks_read(&mut self, blocks: &[(u32, u32)]) {
        let n = blocks.len().min(MAX_BLOCKS);
        self.sack_cache.blocks[..n].copy_from_slice(&blocks[..n]);
        self.sack_cache.len = n;
    }

    /// Where a block ending at `right` goes on from the SACKed segment at `i`: past every
    /// segment up to `right` that is wholly inside the last acknowledgement's block holding
    /// that one (all SACKed then, and still), else the next one.
    fn past_known_sacked(&self, i: usize, right: u32) -> usize {
        let s = &self.segs[i];
        let c = &self.sack_cache;
        let Some(&(_, cr)) = c.blocks[..c.len]
            .iter()
            .find(|&&(cl, cr)| before_eq(cl, s.seq) && before_eq(s.end(), cr))
        else {
            return i + 1;
        };
        let limit = if before(cr, right) { cr } else { right };
        self.segs
            .partition_point(|x| before_eq(x.end(), limit))
            .max(i + 1)
    }

    /// RACK's loss detection (RFC 8985 §6.2 step 5): mark lost every segment sent before
    /// `(xmit, end)` that has waited `wait` (RACK.rtt + RACK.reo_wnd) since it left. Returns
    /// how long until the next one would be (the reordering timer), and counts retransmissions
    /// found lost again in `lost_rexmits`.
    pub(crate) fn detect_loss(
        &mut self,
        xmit: Instant,
        end: u32,
        wait: Duration,
        now: Instant,
        lost_rexmits: &mut u64,
    ) -> Option<Duration> {
        let mut timeout: Option<Duration> = None;
        let mut later = |remaining: Duration| {
            timeout = Some(timeout.map_or(remaining, |t| t.max(remaining)));
        };
        // Original transmissions, in the order they left.
        if let Some(mut i) = self.index_of(self.scan) {
            while let Some(s) = self.segs.get_mut(i) {
                if s.rexmits > 0 || s.sacked || s.lost {
                    i += 1;
                    self.scan = self.segs.get(i).map_or(self.nxt, |n| n.seq);
                    continue;
                }
                if !s.sent_before(xmit, end) {
                    break;
                }
                let due = s.sent + wait;
                if now < due {
                    later(due - now);
                    break;
                }
                if s.is_several() {
                    // Each wire segment is lost (or not) on its own.
                    self.split(i);
                    continue;
                }
                let (seq, len) = (s.seq, s.len);
                s.lost = true;
                self.lost_at(seq, len);
                i += 1;
                self.scan = self.segs.get(i).map_or(self.nxt, |n| n.seq);
            }
        }
        // Retransmissions, in the order they left.
        while let Some(&(seq, sent)) = self.rexmit_order.front() {
            let Some(i) = self.index_of(seq) else {
                self.rexmit_order.pop_front();
                continue;
            };
            let s = &mut self.segs[i];
            if s.seq != seq || s.sent != sent || s.sacked || s.lost {
                self.rexmit_order.pop_front();
                continue;
            }
            if !s.sent_before(xmit, end) {
                break;
            }
            let due = s.sent + wait;
            if now < due {
                later(due - now);
                break;
            }
            let (seq, len) = (s.seq, s.len);
            s.lost = true;
            self.lost_at(seq, len);
            *lost_rexmits += 1;
            self.rexmit_order.pop_front();
        }
        timeout
    }

    /// Mark lost the first segment outstanding, if it is in flight (the duplicate-ACK rule of
    /// RFC 5681 / RFC 6582 for a peer without SACK). Returns whether it was.
    pub(crate) fn mark_head_lost(&mut self) -> bool {
        self.split(0);
        match self.segs.front_mut() {
            Some(s) if !s.sacked && !s.lost => {
                s.lost = true;
                self.lost_bytes += s.len;
                self.lost_hint = s.seq;
                true
            }
            _ => false,
        }
    }

    /// A retransmission timeout: every segment in flight is taken as lost. SACKed ones stay
    /// SACKed unless the receiver reneged (`forget_sacks`), then they are sent again too.
    pub(crate) fn mark_all_lost(&mut self, forget_sacks: bool) {
        if self.segs.iter().any(Seg::is_several) {
            let segs = std::mem::take(&mut self.segs);
            for s in segs {
                let i = self.segs.len();
                self.segs.push_back(s);
                self.split(i);
            }
        }
        self.rexmit_order.clear();
        self.lost_hint = self.una;
        for s in self.segs.iter_mut() {
            if s.sacked && forget_sacks {
                s.sacked = false;
                self.sacked_bytes -= s.len;
                self.sacked_segs -= 1;
            }
            if !s.sacked && !s.lost {
                s.lost = true;
                self.lost_bytes += s.len;
            }
        }
        if forget_sacks {
            self.high_sacked = None;
            self.sack_cache = SackCache::default();
        }
        self.scan = self.nxt;
    }

    /// The first segment is SACKed: the cumulative acknowledgement stopped at data the
    /// receiver had said it held (it reneged, RFC 2018 §8).
    pub(crate) fn head_sacked(&self) -> bool {
        self.segs.front().is_some_and(|s| s.sacked)
    }

    /// The segment at `seq`, of `len`, was just marked lost.
    fn lost_at(&mut self, seq: u32, len: u32) {
        if self.lost_bytes == 0 || before(seq, self.lost_hint) {
            self.lost_hint = seq;
        }
        self.lost_bytes += len;
    }

    /// The lowest lost segment, to send again first (RFC 6675's `NextSeg`), if any. The search
    /// starts where the last one ended, so a recovery walks the scoreboard about once.
    pub(crate) fn next_lost(&mut self) -> Option<Seg> {
        if self.lost_bytes == 0 {
            return None;
        }
        let from = self.index_of(self.lost_hint).unwrap_or(0);
        let found = (from..self.segs.len())
            .chain(0..from)
            .find(|&i| self.segs[i].lost && !self.segs[i].sacked)?;
        let s = self.segs[found];
        self.lost_hint = s.seq;
        Some(s)
    }

    /// The lowest wire segment not SACKed, if any.
    pub(crate) fn first_unsacked(&mut self) -> Option<Seg> {
        let i = self.segs.iter().position(|s| !s.sacked)?;
        self.split(i);
        self.segs.get(i).copied()
    }

    /// The highest wire segment not SACKed (a tail loss probe's choice), if any.
    pub(crate) fn last_in_flight(&mut self) -> Option<Seg> {
        let i = self.segs.iter().rposition(|s| !s.sacked)?;
        self.split(i);
        self.segs.iter().rev().find(|s| !s.sacked).copied()
    }

    /// Where the packet that carried `seg` began: the segments before it that left with it
    /// (sent at the same time, contiguous, not SACKed: the wire segments of one super-packet),
    /// at most `limit` bytes in all. `seg.seq` itself without offload.
    pub(crate) fn sent_with(&self, seg: &Seg, limit: u32) -> u32 {
        let Some(mut i) = self.index_of(seg.seq) else {
            return seg.seq;
        };
        let mut total = seg.len;
        while i > 0 {
            let (p, s) = (&self.segs[i - 1], &self.segs[i]);
            if p.sent != seg.sent || p.end() != s.seq || p.sacked || total + p.len > limit {
                break;
            }
            total += p.len;
            i -= 1;
        }
        self.segs[i].seq
    }

    /// Where the run of lost segments that starts with `first` ends: contiguous, lost, not
    /// SACKed, at most `limit` bytes in all (`first` whatever its size), up to a FIN.
    pub(crate) fn lost_run(&self, first: &Seg, limit: u32) -> u32 {
        let Some(i) = self.index_of(first.seq) else {
            return first.end();
        };
        let (mut end, mut total) = (first.end(), first.len);
        for s in self.segs.iter().skip(i + 1) {
            if first.fin || s.seq != end || !s.lost || s.sacked || total + s.len > limit {
                break;
            }
            (end, total) = (s.end(), total + s.len);
            if s.fin {
                break;
            }
        }
        end
    }

    /// The segment at `seq` was sent again at `now`; its payload is in the returned slices.
    pub(crate) fn resent(&mut self, seq: u32, now: Instant) -> Option<(Seg, &[u8], &[u8])> {
        let i = self.index_of(seq)?;
        if self.segs[i].is_several() {
            self.split(i);
            return self.resent(seq, now);
        }
        let s = &mut self.segs[i];
        if s.seq != seq {
            return None;
        }
        if s.lost {
            s.lost = false;
            self.lost_bytes -= s.len;
        }
        s.sent = now;
        s.stamp = self.next_stamp;
        s.rexmits = s.rexmits.saturating_add(1);
        let s = *s;
        self.rexmit_order.push_back((seq, now));
        let off = s.seq.wrapping_sub(self.una) as usize;
        let (a, b) = self.data.slices(off, s.payload_len() as usize);
        Some((s, a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Ten 100-byte segments from sequence number 1000, sent 1 ms apart.
    fn ten() -> Scoreboard {
        let mut sb = Scoreboard::default();
        for i in 0..10u32 {
            let payload = vec![i as u8; 100];
            assert_eq!(
                sb.on_send(
                    1000 + 100 * i,
                    &payload,
                    false,
                    false,
                    t(i64::from(i)),
                    u32::MAX
                ),
                Sent::New
            );
        }
        sb
    }

    /// Blocks that repeat the last acknowledgement's skip what it marked, and only that: a
    /// segment a block covered in part is marked when a later block covers it whole, new
    /// segments inside a repeated block's growth are marked, and after the receiver reneged
    /// (the marks forgotten) a repeated block marks them again.
    #[test]
    fn repeated_sack_blocks_skip_only_what_they_already_marked() {
        let mut sb = ten();
        let mut d = Delivered::default();
        // 1200..1450: 1200-1400 whole, half of 1400-1500.
        sb.on_sack(1200, 1450, &mut d);
        sb.sacks_read(&[(1200, 1450)]);
        assert_eq!((sb.sacked_segs(), d.bytes), (2, 200));
        // The next acknowledgement repeats it, grown to 1200..1600, and adds 1700..1800.
        let mut d = Delivered::default();
        sb.on_sack(1200, 1600, &mut d);
        sb.on_sack(1700, 1800, &mut d);
        sb.sacks_read(&[(1200, 1600), (1700, 1800)]);
        assert_eq!(
            sb.sacked_segs(),
            5,
            "1400-1500 and 1500-1600 marked, and 1700-1800"
        );
        assert_eq!(d.bytes, 300);
        sb.check_sacked(&[1200, 1300, 1400, 1500, 1700]);
        // Reneging: the marks go, and the same blocks mark them again.
        sb.mark_all_lost(true);
        assert_eq!(sb.sacked_segs(), 0);
        let mut d = Delivered::default();
        sb.on_sack(1200, 1600, &mut d);
        sb.on_sack(1700, 1800, &mut d);
        assert_eq!((sb.sacked_segs(), d.bytes), (5, 500));
    }

    #[test]
    fn sending_again_what_is_outstanding_is_redundant() {
        let mut sb = ten();
        assert_eq!(
            sb.on_send(1000, &[0; 100], false, false, t(20), u32::MAX),
            Sent::Redundant
        );
        assert_eq!(
            sb.on_send(999, &[0; 1], false, false, t(20), u32::MAX),
            Sent::Other
        );
        // Overlapping the end: the new part is recorded.
        assert_eq!(
            sb.on_send(1950, &[9; 100], false, false, t(20), u32::MAX),
            Sent::New
        );
        assert_eq!(sb.nxt(), Some(2050));
        assert_eq!(sb.outstanding(), 1050);
    }

    #[test]
    fn a_super_packet_is_one_record_until_a_sack_splits_it_into_its_wire_segments() {
        let mut sb = Scoreboard::default();
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let lens = |sb: &Scoreboard| -> Vec<(u32, bool, bool)> {
            sb.segs.iter().map(|s| (s.len, s.fin, s.psh)).collect()
        };
        // 1000 bytes and a FIN, cut to 300-byte wire segments: 300, 300, 300, 100 + FIN.
        assert_eq!(sb.on_send(5000, &payload, true, true, t(0), 300), Sent::New);
        assert_eq!(lens(&sb), [(1001, true, true)], "one record");
        assert_eq!(sb.nxt(), Some(6001));
        // The peer acknowledges the first wire segment: the record is trimmed, not split.
        let mut d = Delivered::default();
        sb.on_ack(5300, &mut d, &mut PacketPool::default());
        assert_eq!((d.bytes, lens(&sb)), (300, vec![(701, true, true)]));
        // The second wire segment is lost on the wire, the others arrive: the SACK block
        // splits the record where the device cut it, and only the lost one goes again.
        sb.on_sack(5600, 6001, &mut d);
        assert_eq!(
            lens(&sb),
            [(300, false, false), (300, false, false), (101, true, true)]
        );
        let mut lr = 0;
        sb.detect_loss(t(0), 6001, Duration::ZERO, t(1), &mut lr);
        let lost = sb.next_lost().unwrap();
        assert_eq!((lost.seq, lost.len), (5300, 300));
        let (seg, a, b) = sb.resent(5300, t(2)).unwrap();
        assert_eq!(seg.len, 300);
        assert_eq!([a, b].concat(), payload[300..600]);
        assert!(sb.next_lost().is_none());
    }

    #[test]
    fn a_partial_acknowledgement_of_a_record_delivers_only_its_part() {
        let mut sb = Scoreboard::default();
        // A super-packet of four wire segments, one record.
        sb.on_send(5000, &[1; 1000], false, true, t(0), 300);
        sb.on_send(6000, &[1; 300], false, false, t(1), 300);
        assert_eq!(sb.segs.len(), 2);
        // The peer acknowledges two of its wire segments: RACK learns that what ends at 5600
        // was delivered, not what ends at 6000.
        let mut d = Delivered::default();
        sb.on_ack(5600, &mut d, &mut PacketPool::default());
        assert_eq!(d.newest, Some((t(0), 5600, false)));
        assert_eq!(d.bytes, 600);
    }

    #[test]
    fn a_record_cut_short_by_an_acknowledgement_splits_at_the_device_s_cuts() {
        let mut sb = Scoreboard::default();
        // 1000 bytes cut every 300 from 5000; the peer acknowledged up to 5100.
        sb.on_send(5000, &[7; 1000], false, false, t(0), 300);
        let mut d = Delivered::default();
        sb.on_ack(5100, &mut d, &mut PacketPool::default());
        // A timeout takes all for lost: the wire segments, as the device made them.
        sb.mark_all_lost(false);
        let segs: Vec<(u32, u32)> = sb.segs.iter().map(|s| (s.seq, s.len)).collect();
        assert_eq!(segs, [(5100, 200), (5300, 300), (5600, 300), (5900, 100)]);
        assert_eq!(sb.lost_bytes(), 900);
        // A tail loss probe's choice is the last wire segment.
        let mut sb = Scoreboard::default();
        sb.on_send(5000, &[7; 1000], false, true, t(0), 300);
        let last = sb.last_in_flight().unwrap();
        assert_eq!((last.seq, last.len, last.psh), (5900, 100, true));
        assert_eq!(sb.segs.len(), 4);
        // Smoltcp sending from further back (after its own timeout) in other boundaries:
        // what is new is cut where the device cuts the packet that carries it.
        let mut sb = Scoreboard::default();
        sb.on_send(5000, &[7; 500], false, false, t(0), 300);
        sb.on_send(5000, &[7; 1000], false, false, t(1), 300);
        sb.mark_all_lost(false);
        let segs: Vec<(u32, u32)> = sb.segs.iter().map(|s| (s.seq, s.len)).collect();
        assert_eq!(
            segs,
            [
                (5000, 300),
                (5300, 200),
                (5500, 100),
                (5600, 300),
                (5900, 100)
            ]
        );
    }

    #[test]
    fn a_hole_is_found_lost_after_later_segments_are_sacked() {
        let mut sb = ten();
        let mut d = Delivered::default();
        sb.on_ack(1100, &mut d, &mut PacketPool::default());
        assert_eq!(d.acked, 100);
        let mut d = Delivered::default();
        // Segment 1 (1100..1200) is missing; 2..5 arrived.
        sb.on_sack(1200, 1600, &mut d);
        assert_eq!(d.bytes, 400);
        assert_eq!(sb.sacked_bytes(), 400);
        let (xmit, end, _) = d.newest.unwrap();
        assert_eq!((xmit, end), (t(5), 1600));
        let mut lr = 0;
        // A round trip of 10 ms and no reordering window: segment 1 (sent at 1 ms) is lost at
        // 11 ms, not before.
        let wait = Duration::from_millis(10);
        assert_eq!(
            sb.detect_loss(xmit, end, wait, t(6), &mut lr),
            Some(Duration::from_millis(5))
        );
        assert_eq!(sb.lost_bytes(), 0);
        assert_eq!(sb.detect_loss(xmit, end, wait, t(11), &mut lr), None);
        assert_eq!(sb.lost_bytes(), 100);
        assert_eq!(sb.pipe(), 900 - 400 - 100);
        let lost = sb.next_lost().unwrap();
        assert_eq!(lost.seq, 1100);
        let (s, a, b) = sb.resent(1100, t(12)).unwrap();
        assert_eq!((s.rexmits, a.len() + b.len()), (1, 100));
        assert!(
            a.iter().chain(b).all(|&x| x == 1),
            "the payload it was sent with"
        );
        assert!(sb.next_lost().is_none());
        // Segments 6..9 were sent after the newest SACKed one: not lost.
        assert_eq!(sb.lost_bytes(), 0);
    }

    #[test]
    fn sacked_segments_are_never_marked_lost_nor_resent() {
        let mut sb = ten();
        let mut d = Delivered::default();
        sb.on_sack(1500, 2000, &mut d);
        let mut lr = 0;
        sb.detect_loss(t(9), 2000, Duration::ZERO, t(100), &mut lr);
        let mut lost = Vec::new();
        while let Some(s) = sb.next_lost() {
            lost.push(s.seq);
            sb.resent(s.seq, t(101));
        }
        assert_eq!(lost, [1000, 1100, 1200, 1300, 1400]);
    }

    #[test]
    fn a_lost_retransmission_is_found_and_counted() {
        let mut sb = ten();
        let mut d = Delivered::default();
        sb.on_sack(1100, 1500, &mut d);
        let mut lr = 0;
        let wait = Duration::from_millis(10);
        sb.detect_loss(t(4), 1500, wait, t(20), &mut lr);
        assert_eq!(sb.next_lost().map(|s| s.seq), Some(1000));
        sb.resent(1000, t(21));
        // New data sent after the retransmission gets through; the retransmission does not.
        sb.on_send(2000, &[7; 100], false, false, t(22), u32::MAX);
        let mut d = Delivered::default();
        sb.on_sack(2000, 2100, &mut d);
        assert_eq!(sb.detect_loss(t(22), 2100, wait, t(35), &mut lr), None);
        assert_eq!(lr, 1);
        // Segments 5..9 (never SACKed) are lost too; the lowest goes first.
        let mut order = Vec::new();
        while let Some(s) = sb.next_lost() {
            order.push(s.seq);
            sb.resent(s.seq, t(36));
        }
        assert_eq!(order, [1000, 1500, 1600, 1700, 1800, 1900]);
    }

    #[test]
    fn cumulative_ack_frees_payload_and_reports_reordering() {
        let mut sb = ten();
        let mut d = Delivered::default();
        sb.on_sack(1300, 1400, &mut d);
        let mut d = Delivered::default();
        // 1000..1300 arrive late, never resent: reordering.
        sb.on_ack(1400, &mut d, &mut PacketPool::default());
        assert!(d.reordered);
        assert_eq!(d.bytes, 300, "SACKed bytes were delivered before");
        assert_eq!(sb.held_bytes(), 600);
        assert_eq!(sb.sacked_bytes(), 0);
        let mut d = Delivered::default();
        sb.on_ack(2000, &mut d, &mut PacketPool::default());
        assert!(sb.is_empty());
        assert_eq!(sb.held_bytes(), 0);
        // Beyond what was sent: ignored.
        let mut d = Delivered::default();
        sb.on_ack(3000, &mut d, &mut PacketPool::default());
        assert_eq!(d.acked, 0);
    }

    #[test]
    fn a_timeout_with_reneging_sends_sacked_data_again() {
        let mut sb = ten();
        let mut d = Delivered::default();
        sb.on_sack(1100, 2000, &mut d);
        sb.mark_all_lost(false);
        assert_eq!(sb.lost_bytes(), 100);
        sb.mark_all_lost(true);
        assert_eq!(sb.lost_bytes(), 1000);
        assert_eq!(sb.sacked_bytes(), 0);
        let mut n = 0;
        while let Some(s) = sb.next_lost() {
            sb.resent(s.seq, t(50));
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn a_drained_flight_keeps_its_chunks_to_write_in_until_released() {
        let mut sb = Scoreboard::default();
        let payload = vec![5u8; 1000];
        let mut d = Delivered::default();
        // 100 KB in flight, acknowledged at once, three times over.
        let mut kept = 0;
        for round in 0..3u32 {
            let from = 1000 + 100_000 * round;
            for i in 0..100u32 {
                sb.on_send(from + 1000 * i, &payload, false, false, t(0), u32::MAX);
            }
            assert!(sb.data.chunks.len() > 1, "copied in chunks");
            if round == 2 {
                // The chunks' buffers were kept while the flight came and went (a drained
                // flight refills at once in bulk)...
                assert_eq!(sb.data.idle_capacity(), kept, "no new allocation");
                assert!(!sb.holds_idle_memory(), "in flight");
            }
            sb.on_ack(from + 100_000, &mut d, &mut PacketPool::default());
            assert!(sb.is_empty());
            kept = sb.data.idle_capacity();
            assert!(kept >= 100_000);
            assert!(sb.holds_idle_memory());
        }
        // ...and are given back when the connection idles.
        sb.release();
        assert_eq!(sb.data.idle_capacity(), 0);
        assert!(!sb.holds_idle_memory());
        // A small flight's chunk stays.
        sb.on_send(301_000, &payload, false, false, t(2), u32::MAX);
        sb.on_ack(302_000, &mut d, &mut PacketPool::default());
        assert!(sb.data.idle_capacity() > 0);
        assert!(!sb.holds_idle_memory(), "at most 64 KB stays while idle");
    }

    #[test]
    fn payload_chunks_are_read_across_and_popped_in_order() {
        let mut p = Payload::default();
        p.push(&[]);
        assert_eq!(p.slices(0, 0), (&[][..], &[][..]));
        p.push(&[1; 3000]);
        p.push(&[2; 3000]);
        p.push(&[3; 70_000]);
        assert_eq!(
            p.chunks.len(),
            3,
            "a chunk grows to 4 KB, then to the flight"
        );
        p.pop(2500, None);
        assert_eq!(p.len, 73_500);
        let (a, b) = p.slices(400, 200);
        let v: Vec<u8> = a.iter().chain(b).copied().collect();
        assert_eq!(&v[..100], &[1; 100]);
        assert_eq!(&v[100..], &[2; 100]);
        let (a, b) = p.slices(3400, 200);
        assert_eq!((a.len(), b.len()), (100, 100));
        assert_eq!((a[0], b[0]), (2, 3));
        assert_eq!(p.slices(73_499, 1).0, &[3]);
        assert_eq!(p.slices(73_499, 2), (&[][..], &[][..]), "past what is held");
        p.pop(3500, None);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.slices(0, 1).0, &[3]);
        p.pop(usize::MAX, None);
        assert_eq!((p.len, p.chunks.len()), (0, 0));
    }

    #[test]
    fn a_super_packet_is_held_where_it_was_sent_and_its_buffer_goes_back_once_acked() {
        let mut pool = PacketPool::default();
        // A 40-byte header, then 3000 bytes of payload, one wire segment of 1000 at a time.
        let mut buf = vec![0u8; 4000];
        for (i, b) in buf[40..3040].iter_mut().enumerate() {
            *b = (i / 1000) as u8 + 1;
        }
        let packet = pool.share(&mut buf);
        let mut sb = Scoreboard::default();
        assert_eq!(
            sb.on_send_shared(5000, &packet, (40, 3000), false, true, t(0), 1000),
            Sent::New
        );
        sb.on_send(8000, &[9; 500], false, false, t(1), 1000);
        drop(packet);
        assert_eq!(sb.data.len, 3500);
        assert_eq!(sb.data.chunks.len(), 2, "one shared, one copied");
        assert_eq!(pool.pooled(), 0, "the scoreboard holds the buffer");
        let mut d = Delivered::default();
        sb.on_sack(6000, 7000, &mut d);
        let (seg, a, b) = sb.resent(5000, t(5)).expect("in flight");
        assert_eq!((seg.len, a, b), (1000, &[1u8; 1000][..], &[][..]));
        let mut d = Delivered::default();
        sb.on_ack(7500, &mut d, &mut pool);
        assert_eq!(pool.pooled(), 0, "part of it is still in flight");
        let (_, a, _) = sb.resent(7500, t(6)).expect("in flight");
        assert_eq!(
            a,
            &[3u8; 500][..],
            "what is left of a segment, where it was"
        );
        sb.on_ack(8000, &mut d, &mut pool);
        assert_eq!(pool.pooled(), 1, "acknowledged: back to the pool");
        let (_, a, _) = sb.resent(8000, t(7)).expect("in flight");
        assert_eq!(a, &[9u8; 500][..]);
    }
}
