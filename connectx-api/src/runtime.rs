//! The runtime thread: the one loop that moves packets between the devices and the stack.
//!
//! ```text
//!   poll(2): devices readable, eventfd (a call queued work), or the next timer
//!     │
//!     ├─ read a burst from each readable device into the rx batch     ─┐ no lock held:
//!     ├─ lock: Stack::poll(now, batch) — protocol work only; take the    │ device reads and
//!     │        waiters of the sockets it touched; unlock                 │ writes, capture
//!     ├─ wake those waiters                                              │ writes and cookie
//!     ├─ write the tx batch to the devices, flush the capture           │ file saves happen
//!     └─ save the cookie cache file if it changed                       ─┘ here
//! ```
//!
//! Application calls take the same lock only for the stack work they do themselves, so a call
//! never waits behind a device write, a capture write or an `fsync`.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use stack::capture::Capture;
use stack::impair::Impaired;
use stack::{IfaceId, PacketIo};
use tun_driver::{wait_readable, Device};

use crate::cookies::CookieFile;
use crate::net::{Clock, Shared};
use crate::waiters::Waiter;

/// The devices as the stack sees them. A device is read only while `poll(2)` said it is
/// readable and until it answers "nothing now".
pub(crate) struct Devices {
    pub(crate) devices: Vec<Device>,
    readable: Vec<bool>,
    /// Devices that failed (a socketpair whose other end closed): no longer polled, or `poll(2)`
    /// would report them forever.
    dead: Vec<bool>,
    errors: u64,
    dropped: u64,
}

impl Devices {
    pub(crate) fn new(devices: Vec<Device>) -> Devices {
        let n = devices.len();
        Devices {
            devices,
            readable: vec![true; n],
            dead: vec![false; n],
            errors: 0,
            dropped: 0,
        }
    }
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

/// The packet path under the stack: the capture (what the stack itself sends and receives),
/// the impairment, the devices. Either decorator costs one branch per packet when off.
pub(crate) type PacketPath = Capture<Impaired<Devices>>;

/// Packets in one direction for one round, in one buffer.
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    items: Vec<(IfaceId, Range<usize>)>,
}

impl Queue {
    fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    fn push(&mut self, iface: IfaceId, packet: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.items.push((iface, start..self.bytes.len()));
    }

    /// Read one packet from `io` into the queue; false when `iface` has none now.
    fn read_from(&mut self, io: &mut PacketPath, iface: IfaceId, mtu: usize) -> bool {
        let start = self.bytes.len();
        self.bytes.resize(start + mtu, 0);
        match io.recv(iface, &mut self.bytes[start..]) {
            Some(n) => {
                self.bytes.truncate(start + n.min(mtu));
                self.items.push((iface, start..self.bytes.len()));
                true
            }
            None => {
                self.bytes.truncate(start);
                false
            }
        }
    }
}

/// What the stack sees during a round: the packets read before it, and a queue for what it
/// sends (written to the devices after the lock is released).
#[derive(Default)]
struct Batch {
    rx: Queue,
    /// Per interface, the index in `rx.items` of its next packet.
    next: Vec<usize>,
    tx: Queue,
}

impl PacketIo for Batch {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        let next = self.next.get_mut(iface.0)?;
        while let Some((i, range)) = self.rx.items.get(*next) {
            *next += 1;
            if *i == iface {
                let p = &self.rx.bytes[range.clone()];
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                return Some(n);
            }
        }
        None
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        self.tx.push(iface, packet);
    }
}

/// What one round found.
struct Round {
    running: bool,
    /// Work is left: go again without sleeping.
    more: bool,
    /// Until when to sleep if no packet or call comes.
    timeout: Option<Duration>,
}

/// The runtime's own state (none of it shared).
pub(crate) struct Runtime {
    io: PacketPath,
    batch: Batch,
    mtus: Vec<usize>,
    burst: usize,
    cookie_file: Option<CookieFile>,
    to_wake: Vec<Arc<Waiter>>,
}

impl Runtime {
    pub(crate) fn new(
        io: PacketPath,
        mtus: Vec<usize>,
        burst: usize,
        cookie_file: Option<CookieFile>,
    ) -> Runtime {
        Runtime {
            io,
            batch: Batch::default(),
            mtus,
            burst: burst.max(1),
            cookie_file,
            to_wake: Vec::new(),
        }
    }

    /// One round: read, poll under the lock, then wake, write and save outside it.
    fn round(&mut self, shared: &Shared, clock: Clock) -> Round {
        let now = clock.now();
        // Calls made from here on ask for another round.
        shared.clear_kick();
        self.io.advance(now);
        self.batch.rx.clear();
        self.batch.tx.clear();
        let mut full = false;
        for (n, &mtu) in self.mtus.iter().enumerate() {
            let mut read = 0;
            while read < self.burst && self.batch.rx.read_from(&mut self.io, IfaceId(n), mtu) {
                read += 1;
            }
            full |= read == self.burst;
        }
        self.batch.next.clear();
        self.batch.next.resize(self.mtus.len(), 0);
        let (running, outcome, timeout, cookies) = {
            let mut state = shared.lock();
            if !state.running {
                return Round {
                    running: false,
                    more: false,
                    timeout: None,
                };
            }
            let outcome = state.stack.poll(now, &mut self.batch);
            state.take_due_waiters(&mut self.to_wake);
            let timeout = state.stack.poll_delay(now);
            let cookies = self
                .cookie_file
                .as_mut()
                .and_then(|f| f.snapshot(&state.stack));
            (state.running, outcome, timeout, cookies)
        };
        for w in self.to_wake.drain(..) {
            w.wake();
        }
        for (iface, range) in &self.batch.tx.items {
            self.io.send(*iface, &self.batch.tx.bytes[range.clone()]);
        }
        self.io.flush();
        if let (Some(file), Some(text)) = (self.cookie_file.as_mut(), cookies) {
            if let Err(warning) = file.write(&text) {
                let mut state = shared.lock();
                if state.cookie_warnings.len() < crate::cookies::MAX_WARNINGS {
                    state.cookie_warnings.push(warning);
                }
            }
        }
        // Packets the impairment holds come due on their own.
        let held = self
            .io
            .next_due()
            .map(|due| Duration::from_micros((due - now.min(due)).total_micros()));
        let timeout = match (timeout, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Round {
            running,
            more: full || outcome.more_pending,
            timeout,
        }
    }

    /// Sleep until a device is readable, a call kicks, or `timeout`.
    fn sleep(
        &mut self,
        shared: &Shared,
        fds: &mut [RawFd],
        ready: &mut [bool],
        timeout: Option<Duration>,
    ) {
        let devices = self.io.inner_mut().inner_mut();
        let n = devices.devices.len();
        for (fd, dead) in fds.iter_mut().zip(&devices.dead) {
            if *dead {
                // poll(2) skips negative descriptors.
                *fd = -1;
            }
        }
        // A failing poll(2) (EINTR is retried inside) leaves `ready` clear; the loop then runs on
        // its timers alone, which is the best that can be done.
        let _ = wait_readable(fds, ready, timeout);
        for (readable, ready) in devices.readable.iter_mut().zip(ready.iter()) {
            *readable |= *ready;
        }
        if ready[n] {
            shared.drain_kicks();
        }
    }

    /// The loop: the only place that reads the clock for the stack. It sleeps in `poll(2)`
    /// until a device is readable, a call kicks it, the stack's next timer is due, or a packet
    /// the impairment holds comes due.
    pub(crate) fn run(mut self, shared: &Shared) {
        let clock = shared.clock;
        let mut fds: Vec<RawFd> = self
            .io
            .inner()
            .inner()
            .devices
            .iter()
            .map(|d| d.as_raw_fd())
            .collect();
        fds.push(shared.kick_fd());
        let mut ready = vec![false; fds.len()];
        loop {
            let r = self.round(shared, clock);
            if !r.running {
                self.drain(shared, clock);
                break;
            }
            if r.more || r.timeout == Some(Duration::ZERO) {
                continue;
            }
            self.sleep(shared, &mut fds, &mut ready, r.timeout);
        }
    }

    /// On stop, send what the sockets still have queued — above all the FINs of connections the
    /// application just closed — so that peers see an orderly end rather than silence. Bounded:
    /// at most 100 ms, and no waiting for acknowledgements.
    fn drain(&mut self, shared: &Shared, clock: Clock) {
        let until = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < until {
            let now = clock.now();
            self.io.advance(now);
            let (outcome, delay) = {
                let mut state = shared.lock();
                self.batch.rx.clear();
                self.batch.tx.clear();
                self.batch.next.clear();
                self.batch.next.resize(self.mtus.len(), 0);
                let outcome = state.stack.poll(now, &mut self.batch);
                (outcome, state.stack.poll_delay(now))
            };
            for (iface, range) in &self.batch.tx.items {
                self.io.send(*iface, &self.batch.tx.bytes[range.clone()]);
            }
            self.io.flush();
            if outcome.activity || outcome.more_pending || delay == Some(Duration::ZERO) {
                continue;
            }
            // Packets an impairment still holds (a delayed FIN) leave when they come due.
            match self.io.next_due() {
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
}
