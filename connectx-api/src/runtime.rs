//! The runtime thread: the one loop that moves packets between the devices and the stack.
//!
//! ```text
//!   poll(2): devices readable, the alarm (the stack's next timer), or a kick
//!     │
//!     ├─ packet path lock: read a burst from each readable device
//!     ├─ state lock: Stack::poll(now) — protocol work only; what it sends goes to the outbox;
//!     │              take the waiters of the sockets it touched; move the alarm earlier if
//!     │              the stack's next timer is (never later: it goes off early instead)
//!     ├─ wake those waiters
//!     ├─ write the outbox: through the packet path with a capture or an impairment,
//!     │  else straight to the devices under a write lock of its own (`TxSide`)
//!     └─ save the cookie cache file if it changed
//! ```
//!
//! Application calls do their own protocol work: a call that queued something to send runs the
//! round's egress itself under the state lock and writes the outbox after releasing it, so a
//! `send` costs no thread switch. The state lock is never held across a device read or write,
//! a capture write or an `fsync`, and the packet path lock never waits for the state lock's
//! holder. With an impairment (which holds packets on the runtime's clock) calls kick the
//! runtime instead (an eventfd, at most once a round).

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stack::capture::Capture;
use stack::impair::Impaired;
use stack::offload::{self, Gso, RxMeta};
use stack::{IfaceId, PacketIo, SharedPacket};
use tun_driver::vnet::{self, VnetHeader};
use tun_driver::{wait_readable, Device};

use crate::cookies::CookieFile;
use crate::net::{Clock, Shared};

/// The devices as the stack sees them. A device is read only while `poll(2)` said it is
/// readable and until it answers "nothing now". Writes go through the [`DeviceWriter`], which
/// calls may also use directly, without this side's lock.
pub(crate) struct Devices {
    pub(crate) writer: Arc<DeviceWriter>,
    readable: Vec<bool>,
    /// Devices that failed (a socketpair whose other end closed): no longer polled, or `poll(2)`
    /// would report them forever.
    dead: Vec<bool>,
    errors: u64,
    offload_rejected: u64,
}

/// The devices' write side: one write per packet, from any thread (a device write needs no
/// state of ours but a counter).
pub(crate) struct DeviceWriter {
    pub(crate) devices: Vec<Device>,
    /// Each device's MTU: what the device cuts a super-packet to.
    mtus: Vec<usize>,
    dropped: AtomicU64,
}

/// Most packets an offload device may hand over in a row that are all dropped for their
/// header, before the runtime goes on with its round.
const MAX_REJECTED: usize = 64;

/// What the devices under a [`Net`](crate::Net) did that the stack does not see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceCounters {
    /// Packets not written because the kernel's queue was full (`EAGAIN`, `ENOBUFS`) or the
    /// write failed: lost, as on a wire.
    pub write_dropped: u64,
    /// Devices that failed (a socketpair whose other end closed, a TUN device removed).
    pub read_errors: u64,
    /// Packets read from an offload device and dropped for their virtio-net header or their
    /// checksum: a GSO type other than TCP, a header or checksum offset outside the packet, a
    /// TCP segment whose checksum is wrong ([`stack::offload::accept`]).
    pub offload_rejected: u64,
}

/// What the runtime thread did: how often it ran a round, and how it kept its alarm (the
/// `timerfd` that wakes it for the stack's next timer). A thread that runs rounds when nothing
/// happens, or resets its alarm at every round, costs CPU time that these show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeCounters {
    /// Rounds the runtime thread ran (reads from the devices, a poll of the stack, writes).
    pub rounds: u64,
    /// Times the alarm was set: by the runtime or by a call, each time for an earlier time than
    /// it was set for, or after it went off.
    pub alarm_settings: u64,
    /// Times the runtime woke with its alarm gone off (some early: the timer it was set for
    /// had moved later).
    pub alarm_wakeups: u64,
}

impl Devices {
    pub(crate) fn new(devices: Vec<Device>, mtus: Vec<usize>) -> Devices {
        let n = devices.len();
        Devices {
            writer: Arc::new(DeviceWriter {
                devices,
                mtus,
                dropped: AtomicU64::new(0),
            }),
            readable: vec![true; n],
            dead: vec![false; n],
            errors: 0,
            offload_rejected: 0,
        }
    }

    pub(crate) fn counters(&self) -> DeviceCounters {
        DeviceCounters {
            write_dropped: self.writer.dropped.load(Ordering::Relaxed),
            read_errors: self.errors,
            offload_rejected: self.offload_rejected,
        }
    }

    /// One packet from an offload device, its virtio-net header checked and its checksum
    /// filled in; packets whose header does not fit are dropped and counted. After
    /// [`MAX_REJECTED`] of them in a row this answers "nothing now" (`poll(2)` brings the
    /// runtime back), so that a stream of bad packets cannot hold it here.
    fn recv_offload(&mut self, iface: IfaceId, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        for _ in 0..MAX_REJECTED {
            let Some((h, n)) = self.writer.devices[iface.0].recv_offload(buf)? else {
                return Ok(None);
            };
            let meta = RxMeta {
                gso: match h.gso_type & !vnet::GSO_ECN {
                    vnet::GSO_NONE => Gso::None,
                    vnet::GSO_TCPV4 => Gso::TcpV4,
                    vnet::GSO_TCPV6 => Gso::TcpV6,
                    other => Gso::Other(other),
                },
                hdr_len: h.hdr_len,
                gso_size: h.gso_size,
                partial: (h.flags & vnet::F_NEEDS_CSUM != 0)
                    .then_some((h.csum_start, h.csum_offset)),
                valid: h.flags & vnet::F_DATA_VALID != 0,
            };
            match offload::accept(&mut buf[..n], &meta) {
                Ok(()) => return Ok(Some(n)),
                Err(_) => self.offload_rejected += 1,
            }
        }
        Ok(None)
    }
}

impl DeviceWriter {
    /// Write one packet; a packet the kernel refuses is lost, as on a wire (TCP retransmits),
    /// and counted.
    pub(crate) fn send(&self, iface: IfaceId, packet: &[u8]) {
        let device = &self.devices[iface.0];
        let sent = if device.vnet_header() {
            self.send_offload(iface, packet)
        } else {
            device.send(packet)
        };
        match sent {
            Ok(true) => {}
            // The kernel's queue is full.
            Ok(false) | Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One packet to an offload device: a TCP packet with a partial checksum (and, above the
    /// MTU, the segment size the kernel cuts it to), anything else as it is.
    fn send_offload(&self, iface: IfaceId, packet: &[u8]) -> std::io::Result<bool> {
        let device = &self.devices[iface.0];
        let mut head = [0u8; offload::MAX_HEADERS];
        let Some(m) = offload::transmit(packet, self.mtus[iface.0], &mut head) else {
            return device.send_offload(&VnetHeader::default(), &[packet]);
        };
        let h = usize::from(m.hdr_len);
        let header = VnetHeader {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: match m.gso {
                Gso::TcpV4 => vnet::GSO_TCPV4,
                Gso::TcpV6 => vnet::GSO_TCPV6,
                _ => vnet::GSO_NONE,
            },
            hdr_len: m.hdr_len,
            gso_size: m.gso_size,
            csum_start: m.partial.0,
            csum_offset: m.partial.1,
        };
        device.send_offload(&header, &[&head[..h], &packet[h..]])
    }
}

impl PacketIo for Devices {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        if !self.readable[iface.0] {
            return None;
        }
        let device = &self.writer.devices[iface.0];
        let got = if device.vnet_header() {
            self.recv_offload(iface, buf)
        } else {
            device.recv(buf)
        };
        match got {
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
        self.writer.send(iface, packet);
    }
}

/// The packet path under the stack: the capture (what the stack itself sends and receives),
/// the impairment, the devices. Either decorator costs one branch per packet when off.
pub(crate) type PacketPath = Capture<Impaired<Devices>>;

/// Packets the stack sent (the outbox), in order. Small ones are copied into one buffer that
/// only grows (`used` bytes of it hold packets); a large one (a 64 KB segment with offload)
/// keeps the buffer smoltcp wrote it in, and the stack gets a spare one of the same size in
/// exchange ([`PacketIo::send_from`]), so it is not copied.
#[derive(Default)]
pub(crate) struct Queue {
    bytes: Vec<u8>,
    used: usize,
    items: Vec<(IfaceId, Slot)>,
    /// The buffers of the large packets held, and spare ones.
    owned: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

/// Where a packet of the queue is.
enum Slot {
    Bytes(Range<usize>),
    /// `owned[i][..len]`
    Owned(usize, usize),
    /// A packet the stack holds too (a segment the loss recovery layer keeps until it is
    /// acknowledged): its first `len` bytes.
    Shared(SharedPacket, usize),
}

/// Packets above this size trade buffers instead of being copied.
const TRADE_ABOVE: usize = 16 << 10;

/// Most spare packet buffers a queue keeps between rounds (2 MB of 64 KB ones): a burst's
/// worth more is freed.
const MAX_SPARE: usize = 32;

impl Queue {
    fn clear(&mut self) {
        self.used = 0;
        self.items.clear();
        self.spare.append(&mut self.owned);
        self.spare.truncate(MAX_SPARE);
    }

    /// Room for `n` more bytes after the packets held.
    fn room(&mut self, n: usize) -> &mut [u8] {
        if self.bytes.len() < self.used + n {
            self.bytes.resize(self.used + n, 0);
        }
        &mut self.bytes[self.used..self.used + n]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn push(&mut self, iface: IfaceId, packet: &[u8]) {
        let start = self.used;
        self.room(packet.len()).copy_from_slice(packet);
        self.used += packet.len();
        self.items.push((iface, Slot::Bytes(start..self.used)));
    }

    /// Keep `buf[..len]`, giving `buf` a spare buffer of the same length in exchange.
    fn trade(&mut self, iface: IfaceId, buf: &mut Vec<u8>, len: usize) {
        let mut other = match self.spare.iter().position(|b| b.len() == buf.len()) {
            Some(i) => self.spare.swap_remove(i),
            None => vec![0; buf.len()],
        };
        std::mem::swap(&mut other, buf);
        self.items.push((iface, Slot::Owned(self.owned.len(), len)));
        self.owned.push(other);
    }

    fn packet<'s>(&'s self, slot: &'s Slot) -> &'s [u8] {
        match slot {
            Slot::Bytes(range) => &self.bytes[range.clone()],
            Slot::Owned(i, len) => &self.owned[*i][..*len],
            Slot::Shared(p, len) => &p[..*len],
        }
    }

    /// The packets held, in order.
    fn packets(&self) -> impl Iterator<Item = (IfaceId, &[u8])> {
        self.items
            .iter()
            .map(|(iface, slot)| (*iface, self.packet(slot)))
    }

    /// Trade this (empty) queue for `outbox`'s packets; whether there were any.
    fn take(&mut self, outbox: &mut Queue) -> bool {
        std::mem::swap(outbox, self);
        !self.is_empty()
    }
}

/// Where a poll's packets go: the outbox, in the state. Packets are appended under the state
/// lock, so their order is the order the stack made them; whoever holds the packet path writes
/// them all, in that order ([`Shared::flush`](crate::net::Shared::flush)).
impl PacketIo for Queue {
    fn recv(&mut self, _: IfaceId, _: &mut [u8]) -> Option<usize> {
        None
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        self.push(iface, packet);
    }

    fn send_from(&mut self, iface: IfaceId, buf: &mut Vec<u8>, len: usize) {
        let len = len.min(buf.len());
        if len > TRADE_ABOVE {
            self.trade(iface, buf, len);
        } else {
            self.push(iface, &buf[..len]);
        }
    }

    fn send_shared(&mut self, iface: IfaceId, packet: &SharedPacket, len: usize) {
        let len = len.min(packet.len());
        self.items.push((iface, Slot::Shared(packet.clone(), len)));
    }
}

/// The packets read for a round. Each is read into one receive buffer; a small one is then
/// copied into the queue's shared bytes, and a large one (a super-packet, with offload) keeps
/// the receive buffer, which a spare replaces. So no packet costs a buffer of its own: before,
/// each took a 64 KB one on an offload device, allocated and zeroed whenever the spares ran
/// out, and under many small packets that zeroing alone was about 8% of the runtime's time.
/// The stack takes a large packet by trading its own receive buffer for it
/// ([`PacketIo::recv_into`]).
///
/// It is not part of the packet path's lock: whoever runs a round holds the arrivals from the
/// read to the end of the stack's poll, while the packet path is free for calls to write
/// their own packets.
#[derive(Default)]
pub(crate) struct Arrivals {
    queue: Queue,
    /// Where the next packet is read.
    receive: Vec<u8>,
    /// Per interface, the index in `queue` of its next packet for the stack.
    next: Vec<usize>,
}

impl Arrivals {
    /// Read one packet of at most `max` bytes from `io`; false when `iface` has none now.
    fn read_from(&mut self, io: &mut PacketPath, iface: IfaceId, max: usize) -> bool {
        if self.receive.len() < max {
            self.receive.resize(max, 0);
        }
        let Some(n) = io.recv(iface, &mut self.receive[..max]) else {
            return false;
        };
        let n = n.min(max);
        if n > TRADE_ABOVE {
            self.queue.trade(iface, &mut self.receive, n);
        } else {
            self.queue.push(iface, &self.receive[..n]);
        }
        true
    }

    /// The stack's view of this round's packets: what was read, and the outbox.
    pub(crate) fn round<'a>(&'a mut self, out: &'a mut Queue) -> impl PacketIo + 'a {
        Round { rx: self, out }
    }
}

/// What the stack sees during a runtime round: the packets read before it, and the outbox.
struct Round<'a> {
    rx: &'a mut Arrivals,
    out: &'a mut Queue,
}

/// A packet of the arrivals, where it is held.
enum Held<'a> {
    Bytes(&'a [u8]),
    Owned(&'a mut Vec<u8>, usize),
}

impl Round<'_> {
    /// The next packet read from `iface`.
    fn next_packet(&mut self, iface: IfaceId) -> Option<Held<'_>> {
        let next = self.rx.next.get_mut(iface.0)?;
        let queue = &mut self.rx.queue;
        while *next < queue.items.len() {
            let i = *next;
            *next += 1;
            if queue.items[i].0 == iface {
                return Some(match queue.items[i].1 {
                    Slot::Bytes(ref range) => Held::Bytes(&queue.bytes[range.clone()]),
                    Slot::Owned(j, len) => Held::Owned(&mut queue.owned[j], len),
                    // Only what the stack sends is shared.
                    Slot::Shared(ref p, len) => Held::Bytes(&p[..len]),
                });
            }
        }
        None
    }
}

impl PacketIo for Round<'_> {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        let p = match self.next_packet(iface)? {
            Held::Bytes(p) => p,
            Held::Owned(p, n) => &p[..n],
        };
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Some(n)
    }

    fn recv_into(&mut self, iface: IfaceId, buf: &mut Vec<u8>, max: usize) -> Option<usize> {
        let max = max.min(buf.len());
        match self.next_packet(iface)? {
            // The stack's old buffer takes the packet's place, and comes back as a spare.
            Held::Owned(p, n) if p.len() == buf.len() => {
                std::mem::swap(p, buf);
                Some(n.min(max))
            }
            Held::Owned(p, n) => {
                let n = n.min(max);
                buf[..n].copy_from_slice(&p[..n]);
                Some(n)
            }
            Held::Bytes(p) => {
                let n = p.len().min(max);
                buf[..n].copy_from_slice(&p[..n]);
                Some(n)
            }
        }
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        self.out.push(iface, packet);
    }

    fn send_from(&mut self, iface: IfaceId, buf: &mut Vec<u8>, len: usize) {
        self.out.send_from(iface, buf, len);
    }

    fn send_shared(&mut self, iface: IfaceId, packet: &SharedPacket, len: usize) {
        self.out.send_shared(iface, packet, len);
    }
}

/// The packet path and a spare outbox, behind their own lock (taken before the state lock,
/// never after it, so a device write never holds up a call).
pub(crate) struct IoSide {
    pub(crate) path: PacketPath,
    spare: Queue,
    mtus: Vec<usize>,
    burst: usize,
}

impl IoSide {
    pub(crate) fn new(path: PacketPath, mtus: Vec<usize>, burst: usize) -> IoSide {
        IoSide {
            path,
            spare: Queue::default(),
            mtus,
            burst: burst.max(1),
        }
    }

    /// Read up to a burst from each device that may have packets into `rx` (what it held
    /// before is dropped). Returns whether one had a whole burst (more may wait).
    pub(crate) fn read(&mut self, now: stack::Instant, rx: &mut Arrivals) -> bool {
        self.path.advance(now);
        rx.queue.clear();
        let mut full = false;
        for (n, &mtu) in self.mtus.iter().enumerate() {
            let mut read = 0;
            while read < self.burst && rx.read_from(&mut self.path, IfaceId(n), mtu) {
                read += 1;
            }
            full |= read == self.burst;
        }
        rx.next.clear();
        rx.next.resize(self.mtus.len(), 0);
        full
    }

    /// Try every device on the next read, whatever `poll(2)` said last (a thread that just
    /// wrote may find the answer already queued).
    pub(crate) fn look_everywhere(&mut self) {
        let devices = self.path.inner_mut().inner_mut();
        for (r, dead) in devices.readable.iter_mut().zip(&devices.dead) {
            *r = !*dead;
        }
    }

    /// Trade the (empty) spare queue for the outbox's packets.
    pub(crate) fn take_outbox(&mut self, outbox: &mut Queue) -> bool {
        self.spare.take(outbox)
    }

    /// Write the packets taken from the outbox, in order.
    pub(crate) fn write_taken(&mut self, clock: Clock) {
        // Stamps for the capture: read under this lock, so they never go back.
        self.path.advance(clock.now());
        for (iface, p) in self.spare.packets() {
            self.path.send(iface, p);
        }
        self.spare.clear();
        self.path.flush();
    }
}

/// The write side of a plain packet path (no capture, no impairment): the devices' writer and
/// a spare outbox, behind a lock of their own, so that a write never waits for a read.
pub(crate) struct TxSide {
    writer: Arc<DeviceWriter>,
    spare: Queue,
}

impl TxSide {
    pub(crate) fn new(writer: Arc<DeviceWriter>) -> TxSide {
        TxSide {
            writer,
            spare: Queue::default(),
        }
    }

    /// Trade the (empty) spare queue for the outbox's packets.
    pub(crate) fn take_outbox(&mut self, outbox: &mut Queue) -> bool {
        self.spare.take(outbox)
    }

    /// Write the packets taken from the outbox, in order.
    pub(crate) fn write_taken(&mut self) {
        for (iface, p) in self.spare.packets() {
            self.writer.send(iface, p);
        }
        self.spare.clear();
    }
}

/// The runtime's own state (none of it shared).
pub(crate) struct Runtime {
    cookie_file: Option<CookieFile>,
}

impl Runtime {
    pub(crate) fn new(cookie_file: Option<CookieFile>) -> Runtime {
        Runtime { cookie_file }
    }

    /// Save the cookie cache if it changed (copied under the state lock, written outside it).
    fn save_cookies(&mut self, shared: &Shared) {
        let Some(file) = self.cookie_file.as_mut() else {
            return;
        };
        let Some(text) = file.snapshot(&shared.lock().stack) else {
            return;
        };
        if let Err(warning) = file.write(&text) {
            let mut state = shared.lock();
            if state.cookie_warnings.len() < crate::cookies::MAX_WARNINGS {
                state.cookie_warnings.push(warning);
            }
        }
    }

    /// Sleep until a device is readable, a call kicks, the stack's alarm goes off, or a packet
    /// the impairment holds comes due.
    fn sleep(&mut self, shared: &Shared, fds: &mut [RawFd], ready: &mut [bool]) {
        let held = {
            let mut io = shared.io();
            let devices = io.path.inner_mut().inner_mut();
            for (fd, dead) in fds.iter_mut().zip(&devices.dead) {
                if *dead {
                    // poll(2) skips negative descriptors.
                    *fd = -1;
                }
            }
            let now = shared.clock.now();
            let held = io
                .path
                .next_due()
                .map(|due| Duration::from_micros((due - now.min(due)).total_micros()));
            shared.let_go(io);
            held
        };
        // A failing poll(2) (EINTR is retried inside) leaves `ready` clear; the loop then runs on
        // its timers alone, which is the best that can be done.
        let _ = wait_readable(fds, ready, held);
        let n = fds.len() - 2;
        {
            let mut io = shared.io();
            let devices = io.path.inner_mut().inner_mut();
            for (readable, ready) in devices.readable.iter_mut().zip(ready.iter()) {
                *readable |= *ready;
            }
            shared.let_go(io);
        }
        if ready[n] {
            shared.drain_kicks();
        }
        if ready[n + 1] {
            shared.alarm_went_off();
        }
    }

    /// The loop. It sleeps in `poll(2)` until a device is readable, a call kicks it, the alarm
    /// goes off (at the stack's next timer, or before it if that moved later), or a packet the
    /// impairment holds comes due; then runs a round ([`Shared::round`]).
    pub(crate) fn run(mut self, shared: &Shared) {
        let mut fds: Vec<RawFd> = {
            let io = shared.io();
            let fds = io
                .path
                .inner()
                .inner()
                .writer
                .devices
                .iter()
                .map(|d| d.as_raw_fd())
                .collect();
            shared.let_go(io);
            fds
        };
        fds.extend(shared.wake_fds());
        let mut ready = vec![false; fds.len()];
        loop {
            // Calls made from here on ask for another round.
            shared.clear_kick();
            let r = shared.round(true);
            if !r.running {
                self.drain(shared);
                break;
            }
            self.save_cookies(shared);
            if r.more {
                continue;
            }
            self.sleep(shared, &mut fds, &mut ready);
        }
    }

    /// On stop, send what the sockets still have queued — above all the FINs of connections the
    /// application just closed — so that peers see an orderly end rather than silence. Bounded:
    /// at most 100 ms, and no waiting for acknowledgements.
    fn drain(&mut self, shared: &Shared) {
        let clock = shared.clock;
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            let (outcome, delay) = {
                let mut state = shared.lock();
                let now = clock.now();
                let st = &mut *state;
                let outcome = st.stack.poll(now, &mut st.outbox);
                (outcome, st.stack.poll_delay(now))
            };
            shared.flush();
            if outcome.activity || outcome.more_pending || delay == Some(Duration::ZERO) {
                continue;
            }
            // Packets an impairment still holds (a delayed FIN) leave when they come due.
            let now = clock.now();
            let due = {
                let mut io = shared.io();
                io.path.advance(now);
                let due = io.path.next_due();
                shared.let_go(io);
                due
            };
            match due {
                Some(due) => {
                    let wait = Duration::from_micros((due - now.min(due)).total_micros());
                    std::thread::sleep(
                        wait.min(until.saturating_duration_since(std::time::Instant::now())),
                    );
                }
                None => break,
            }
        }
        self.save_cookies(shared);
    }
}
