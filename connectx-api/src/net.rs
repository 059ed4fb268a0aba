//! [`Net`]: the handle that owns the runtime thread, and the state the application's threads
//! and the runtime share.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use stack::{IfaceId, InterfaceInfo, SocketId, Stack};
use tun_driver::{Alarm, Waker};

use crate::fd::FdTable;
use crate::runtime::{Arrivals, IoSide, Queue, RuntimeCounters, TxSide};
use crate::waiters::{Waiter, Waiters};

/// The protocol state shared by the application's threads and the runtime thread, behind one
/// lock that is held only for stack work: no device I/O, capture write or file save happens
/// under it.
pub(crate) struct State {
    pub(crate) stack: Stack,
    pub(crate) fds: FdTable,
    pub(crate) running: bool,
    pub(crate) waiters: Waiters,
    /// Problems with the cookie cache file, for [`Net::take_cookie_cache_warnings`].
    pub(crate) cookie_warnings: Vec<String>,
    /// Packets polls made, in order, not yet written ([`Shared::flush`]).
    pub(crate) outbox: Queue,
    /// When the runtime's alarm goes off (the stack's next timer as last planned).
    planned: Option<stack::Instant>,
    /// What the runtime did ([`Net::runtime_counters`]).
    runtime: RuntimeCounters,
    events: Vec<SocketId>,
}

impl State {
    pub(crate) fn new(stack: Stack, cookie_warnings: Vec<String>) -> State {
        State {
            stack,
            fds: FdTable::default(),
            running: true,
            waiters: Waiters::default(),
            cookie_warnings,
            outbox: Queue::default(),
            planned: None,
            runtime: RuntimeCounters::default(),
            events: Vec::new(),
        }
    }

    /// Take the waiters of the sockets the stack reported since the last look, to wake once
    /// the lock is released.
    pub(crate) fn take_due_waiters(&mut self, into: &mut Vec<Arc<Waiter>>) {
        self.stack.take_events(&mut self.events);
        for id in self.events.drain(..) {
            self.waiters.take(id, into);
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
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> stack::Instant {
        stack::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }
}

/// What a round found.
pub(crate) struct RoundOutcome {
    pub(crate) running: bool,
    /// Work is left: go again without sleeping.
    pub(crate) more: bool,
}

/// Whether the alarm, set for `planned` (`None`: not set, or gone off), moves for the stack's
/// next timer at `next`: only ever earlier. A timer that moves later leaves the alarm where it
/// is; the alarm then goes off early, the runtime finds nothing due, and plans again from
/// there.
///
/// The loss recovery layer moves a connection's timer later with each acknowledgement (its
/// tail loss probe waits two round trips and 2 ms from the last one). Following every move
/// meant a `timerfd_settime` per round, each for a time 2–3 ms ahead: the nearest timer on the
/// CPU, so the kernel reprograms the CPU's timer each time (on a VM, an exit to the
/// hypervisor). Sending to a kernel receiver at 15 Gbit/s (the bench's `recovery` section, with
/// offload), that was 7,000 alarm settings a second and about 10% of the throughput; the alarm
/// is now set about 400 times a second, most of them after it went off early. Timers that move
/// earlier (a call that sends after a quiet spell) still move the alarm at once.
fn alarm_moves(planned: Option<stack::Instant>, next: stack::Instant) -> bool {
    planned.is_none_or(|p| next < p)
}

/// How long from `now` until `at` (zero when past).
fn until(at: stack::Instant, now: stack::Instant) -> Duration {
    Duration::from_micros((at.max(now) - now).total_micros())
}

pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) state: Mutex<State>,
    /// The packet path (capture, impairment, devices), behind its own lock. Lock order: this
    /// one before the state's, never the other way round.
    io: Mutex<IoSide>,
    /// The packets a round read, held by whoever runs the round (the runtime, or a call that
    /// helps) from its read to the end of its poll. Lock order: this one first.
    arrivals: Mutex<Arrivals>,
    /// With neither capture nor impairment, packets are written here, not through the
    /// packet path: a thread that sends writes its own packets, even while the runtime reads.
    direct: Option<Mutex<TxSide>>,
    /// As `flush_wanted`, for the direct write side.
    direct_wanted: AtomicBool,
    /// Someone has packets in the outbox and could not take the packet path: its holder
    /// writes them before it lets go.
    flush_wanted: AtomicBool,
    /// Calls run their own egress and write their own packets. Off with an impairment, which
    /// holds packets on the runtime's clock: calls kick the runtime instead.
    inline_sends: bool,
    /// The kernel side of each interface (by interface id), for the TUN devices that have one.
    pub(crate) links: Vec<Option<tun_driver::Link>>,
    /// Wakes the runtime thread out of `poll(2)` after a call queued work.
    waker: Waker,
    /// A kick is on its way: further calls need not write the eventfd again this round.
    kicked: AtomicBool,
    /// Ends the runtime's sleep at the stack's next timer; a call that sets an earlier timer
    /// moves it, without waking the runtime now.
    alarm: Alarm,
}

impl Shared {
    pub(crate) fn new(
        clock: Clock,
        state: State,
        io: IoSide,
        direct: Option<TxSide>,
        inline_sends: bool,
        links: Vec<Option<tun_driver::Link>>,
    ) -> std::io::Result<Shared> {
        Ok(Shared {
            clock,
            state: Mutex::new(state),
            io: Mutex::new(io),
            arrivals: Mutex::new(Arrivals::default()),
            direct: direct.map(Mutex::new),
            direct_wanted: AtomicBool::new(false),
            flush_wanted: AtomicBool::new(false),
            inline_sends,
            links,
            waker: Waker::new()?,
            kicked: AtomicBool::new(false),
            alarm: Alarm::new()?,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this crate; the state is still the
        // best there is, so keep serving rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The packet path (never while holding the state lock). Give it back with
    /// [`Shared::let_go`], never by dropping it: a call may have left packets for its holder.
    pub(crate) fn io(&self) -> MutexGuard<'_, IoSide> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the packet path back, writing first what calls left in the outbox while it was
    /// held.
    pub(crate) fn let_go<'a>(&'a self, io: MutexGuard<'a, IoSide>) {
        if self.direct.is_some() {
            // Nothing is written through the packet path.
            drop(io);
        } else {
            self.flush_held(io);
        }
    }

    /// End a call: if it queued something to send, run the round's egress now (stack work,
    /// under the lock); release the lock; wake the waiters of the sockets the call touched;
    /// write the packets it made.
    pub(crate) fn release(&self, mut state: MutexGuard<'_, State>) {
        let mut wake = Vec::new();
        let mut kick = false;
        let mut flush = false;
        if state.stack.needs_poll() && state.running {
            if self.inline_sends {
                let now = self.clock.now();
                let st = &mut *state;
                st.stack.poll(now, &mut st.outbox);
                flush = !st.outbox.is_empty();
                self.plan_wake(st, now);
            } else {
                kick = true;
            }
        }
        state.take_due_waiters(&mut wake);
        drop(state);
        for w in wake {
            w.wake();
        }
        if flush {
            self.flush();
        }
        if kick {
            self.kick();
        }
    }

    /// A round of the engine on this thread: read a burst from the devices (holding the packet
    /// path only for that), poll the stack under the state lock, wake the waiters of the
    /// sockets it touched, write the outbox. The runtime runs one per wake-up; a call about
    /// to wait runs one first ([`Shared::help`]), which often finds the answer already queued
    /// and so spares two thread switches.
    ///
    /// The packet path is free while the stack works, and with direct writes a call that sends
    /// meanwhile can write its own packets; who writes whose is decided at the end
    /// ([`Shared::take_batch`], [`Shared::flush_all_direct`]).
    pub(crate) fn round(&self, runtime: bool) -> RoundOutcome {
        let rx = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        self.round_with(rx, runtime)
    }

    fn round_with(&self, mut rx: MutexGuard<'_, Arrivals>, runtime: bool) -> RoundOutcome {
        let full = {
            let mut io = self.io();
            if !runtime {
                io.look_everywhere();
            }
            let full = io.read(self.clock.now(), &mut rx);
            self.let_go(io);
            full
        };
        let mut wake = Vec::new();
        let more = {
            let mut state = self.lock();
            if !state.running {
                drop(state);
                drop(rx);
                self.flush();
                return RoundOutcome {
                    running: false,
                    more: false,
                };
            }
            // The stack's time, read under its lock: calls that raced for it read their clocks
            // in another order than they got in, and time must not go back for the stack (its
            // loss detection orders segments by when they left).
            let now = self.clock.now();
            let st = &mut *state;
            if runtime {
                st.runtime.rounds += 1;
            }
            let outcome = st.stack.poll(now, &mut rx.round(&mut st.outbox));
            st.take_due_waiters(&mut wake);
            self.plan_wake(st, now);
            outcome.more_pending
        };
        drop(rx);
        for w in wake {
            w.wake();
        }
        if runtime && !full && self.direct.is_some() {
            // The runtime keeps up with its devices: it writes for everyone.
            self.flush_all_direct();
        } else {
            self.flush();
        }
        RoundOutcome {
            running: true,
            more: full || more,
        }
    }

    /// Whether calls may run rounds themselves (not with an impairment, whose held packets
    /// only the runtime releases).
    pub(crate) fn can_help(&self) -> bool {
        self.inline_sends
    }

    /// Before a call waits: run a round here if no one else is running one (the answer to
    /// what this thread just sent is often queued on the device already), trying every
    /// device. Returns whether it ran one.
    pub(crate) fn help(&self) -> bool {
        if !self.inline_sends {
            return false;
        }
        let rx = match self.arrivals.try_lock() {
            Ok(rx) => rx,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        self.round_with(rx, false);
        true
    }

    /// Write the outbox. Whoever holds the packet path writes everything queued, in order,
    /// before letting go; a thread that finds it taken leaves its packets to the holder.
    pub(crate) fn flush(&self) {
        if self.direct.is_some() {
            return self.flush_direct();
        }
        self.flush_wanted.store(true, Ordering::SeqCst);
        let io = match self.io.try_lock() {
            Ok(io) => io,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // The holder sees `flush_wanted` before it lets go.
            Err(TryLockError::WouldBlock) => return,
        };
        self.flush_held(io);
    }

    /// Write the outbox to the devices directly (a plain packet path).
    fn flush_direct(&self) {
        let batch = self.take_batch(&mut self.lock());
        if let Some(batch) = batch {
            self.write_batch(batch);
        }
    }

    /// The runtime's flush while it keeps up with its devices (its last read found less than
    /// a burst): everything queued, going back for packets calls leave meanwhile, so that the
    /// application threads' sends cost them no device write. Once the runtime falls behind
    /// (full bursts), it writes one batch only ([`Shared::take_batch`]) and the calls write
    /// their own. In the bench's `async` section (10,000 connections) this policy gave p99
    /// 1.2–1.9× the kernel's in 12 runs of 12, with nothing sent twice; writing for everyone
    /// always gave 1.0–1.5× or, in over half the runs, 3–9× (the collapse described there),
    /// and one batch always 1.8–3.9× at half the kernel's rate.
    fn flush_all_direct(&self) {
        loop {
            let batch = self.take_batch(&mut self.lock());
            let Some(mut held) = batch else { return };
            held.write_taken();
            while held.take_outbox(&mut self.lock().outbox) {
                held.write_taken();
            }
            drop(held);
            // As in `write_batch`.
            std::sync::atomic::fence(Ordering::SeqCst);
            if !self.direct_wanted.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// With direct writes, under the state lock: the write side if it is free, holding the
    /// outbox's packets (all that is queued, one batch) to write once the lock is released.
    ///
    /// A thread that finds the write side taken leaves its packets to the next batch; and no
    /// thread goes back for packets queued while it wrote: it kicks the runtime instead, whose
    /// next round writes them (unless a call has done so first). Going back would make the
    /// writer of the moment write for everyone else as long as they keep sending: a runtime
    /// busy with reads would then do every device write of the process (with the kernel's
    /// processing of each) on one core, or an application thread every write of the runtime.
    /// In the bench's `async` section (10,000 connections) the runtime so fell behind the
    /// kernel's queue towards it by more than the kernel's retransmission timeout, and both
    /// sides sent everything twice.
    fn take_batch<'a>(&'a self, st: &mut State) -> Option<MutexGuard<'a, TxSide>> {
        let tx = self.direct.as_ref()?;
        if st.outbox.is_empty() {
            return None;
        }
        self.direct_wanted.store(true, Ordering::SeqCst);
        let mut held = match tx.try_lock() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // The holder sees `direct_wanted` before it lets go.
            Err(TryLockError::WouldBlock) => return None,
        };
        self.direct_wanted.store(false, Ordering::SeqCst);
        held.take_outbox(&mut st.outbox);
        Some(held)
    }

    /// Write a batch [`Shared::take_batch`] took (outside the state lock), let go of the write
    /// side, and kick the runtime if someone left packets meanwhile.
    fn write_batch(&self, mut held: MutexGuard<'_, TxSide>) {
        held.write_taken();
        drop(held);
        // The unlock is a release only; a thread that set the flag and found the lock taken
        // must be seen here.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.direct_wanted.load(Ordering::SeqCst) {
            self.kick();
        }
    }

    /// Write the outbox with the packet path held, then let go of it; if someone queued
    /// packets and found it taken meanwhile, take it again for them.
    fn flush_held<'a>(&'a self, mut io: MutexGuard<'a, IoSide>) {
        loop {
            loop {
                self.flush_wanted.store(false, Ordering::SeqCst);
                let taken = io.take_outbox(&mut self.lock().outbox);
                if !taken {
                    break;
                }
                io.write_taken(self.clock);
            }
            drop(io);
            // The unlock is a release only; a thread that set the flag and found the lock taken
            // must be seen here.
            std::sync::atomic::fence(Ordering::SeqCst);
            if !self.flush_wanted.load(Ordering::SeqCst) {
                return;
            }
            io = match self.io.try_lock() {
                Ok(io) => io,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
        }
    }

    /// Set the runtime's alarm for the stack's next timer, if that is earlier than the alarm
    /// ([`alarm_moves`]).
    pub(crate) fn plan_wake(&self, st: &mut State, now: stack::Instant) {
        let next = st.stack.poll_timeout();
        if let Some(at) = next.filter(|&at| alarm_moves(st.planned, at)) {
            st.planned = Some(at);
            st.runtime.alarm_settings += 1;
            self.alarm.set(Some(until(at, now)));
        }
    }

    /// The runtime woke on its alarm: the next round plans again.
    pub(crate) fn alarm_went_off(&self) {
        self.alarm.drain();
        let mut st = self.lock();
        st.planned = None;
        st.runtime.alarm_wakeups += 1;
    }

    /// The descriptors that end the runtime's sleep besides the devices: kicks and the alarm.
    pub(crate) fn wake_fds(&self) -> [RawFd; 2] {
        [self.waker.as_raw_fd(), self.alarm.as_raw_fd()]
    }

    /// Ask the runtime for a round soon: at most one eventfd write per round.
    pub(crate) fn kick(&self) {
        if !self.kicked.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// The runtime starts a round: calls made from now on kick again.
    pub(crate) fn clear_kick(&self) {
        self.kicked.store(false, Ordering::Release);
    }

    /// The runtime woke on the eventfd.
    pub(crate) fn drain_kicks(&self) {
        self.waker.drain();
    }

    /// Follow the kernel's view of each TUN link: a device an administrator set down (`ip link
    /// set DEV down`) carries nothing, so new connections through it fail with `ENETDOWN`, as
    /// through a downed interface on Darwin. One `SIOCGIFFLAGS` per device, read before the
    /// lock is taken; returns what to apply under it.
    pub(crate) fn link_states(&self) -> Vec<(IfaceId, bool)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(n, link)| match link.as_ref().map(|l| l.is_up()) {
                Some(Ok(up)) => Some((IfaceId(n), up)),
                _ => None,
            })
            .collect()
    }
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop(&self.shared, &self.thread);
    }
}

fn stop(shared: &Shared, thread: &Mutex<Option<JoinHandle<()>>>) {
    let mut wake = Vec::new();
    {
        let mut state = shared.lock();
        state.running = false;
        state.waiters.take_all(&mut wake);
    }
    for w in wake {
        w.wake();
    }
    shared.waker.wake();
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
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

impl Net {
    /// Describe the devices and addresses of a new stack.
    pub fn builder() -> crate::NetBuilder {
        crate::NetBuilder::default()
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

    /// What the devices did that the stack does not see: writes dropped, packets rejected for
    /// their offload header or checksum.
    pub fn device_counters(&self) -> crate::DeviceCounters {
        let io = self.shared().io();
        let counters = io.path.inner().inner().counters();
        self.shared().let_go(io);
        counters
    }

    /// What the runtime thread did: its rounds, and how often it set its alarm and woke on
    /// it.
    pub fn runtime_counters(&self) -> RuntimeCounters {
        self.shared().lock().runtime
    }

    /// The stack's TCP counters, with Linux's names (`ListenOverflows`, `ListenDrops`, …).
    pub fn tcp_counters(&self) -> stack::TcpCounters {
        self.shared().lock().stack.tcp_counters()
    }

    /// The loss recovery layer's counters, with Linux's names (`TcpRetransSegs`,
    /// `TCPSackRecovery`, `TCPLossProbes`, …).
    pub fn recovery_counters(&self) -> stack::RecoveryCounters {
        self.shared().lock().stack.recovery_counters()
    }

    /// Set a TCP socket's congestion control (Linux's `TCP_CONGESTION`): a connected socket's
    /// from now on (its window carries over), another's for the connection it makes, a
    /// listener's for the connections it accepts.
    /// [`StackConfig::congestion_control`](stack::StackConfig::congestion_control) is the
    /// default.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `ENOPROTOOPT` for a datagram socket.
    pub fn set_congestion_control(
        &self,
        fd: crate::Fd,
        algorithm: stack::CongestionControl,
    ) -> std::io::Result<()> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        let now = self.shared().clock.now();
        state
            .stack
            .set_congestion_control(id, algorithm, now)
            .map_err(option_error)
    }

    /// A TCP socket's congestion control: the one set on it, else the stack's.
    ///
    /// # Errors
    /// As [`Net::set_congestion_control`].
    pub fn congestion_control(&self, fd: crate::Fd) -> std::io::Result<stack::CongestionControl> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        state.stack.congestion_control(id).map_err(option_error)
    }

    /// What the loss recovery layer knows of a connected TCP socket's sending side: round
    /// trip, congestion window, what is in flight, SACKed and lost, and its share of the
    /// counters (Linux's `TCP_INFO`, for what concerns recovery).
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `ENOTCONN` for a socket that is not a TCP connection.
    pub fn recovery_info(&self, fd: crate::Fd) -> std::io::Result<stack::RecoveryInfo> {
        let mut state = self.shared().lock();
        let id = Self::descriptor(&mut state, fd)?.socket;
        state
            .stack
            .recovery_info(id)
            .ok_or_else(|| crate::Errno::ENOTCONN.to_io())
    }

    /// TCP connections the stack holds a socket for, and connections in TIME-WAIT.
    pub fn connection_counts(&self) -> (usize, usize) {
        self.shared().lock().stack.connection_counts()
    }

    /// The sizes of the stack's internal tables and of this handle's own, so that a leak is
    /// something a caller (or a test) can see.
    pub fn tables(&self) -> Tables {
        let state = self.shared().lock();
        Tables {
            stack: state.stack.table_sizes(),
            descriptors: state.fds.len(),
            waiting_sockets: state.waiters.sockets(),
            outbox: state.outbox.len(),
        }
    }
}

/// The sizes of a [`Net`]'s tables ([`Net::tables`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tables {
    /// The stack's.
    pub stack: stack::TableSizes,
    /// Open descriptors.
    pub descriptors: usize,
    /// Sockets with a call waiting on them.
    pub waiting_sockets: usize,
    /// Packets made and not yet written to a device.
    pub outbox: usize,
}

impl Tables {
    /// (name, value) pairs: the stack's, then the handle's.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.stack.iter().chain([
            ("descriptors", self.descriptors),
            ("waiting_sockets", self.waiting_sockets),
            ("outbox", self.outbox),
        ])
    }
}

/// The errno of a socket option that could not be set or read.
fn option_error(e: stack::SocketOptionError) -> std::io::Error {
    match e {
        stack::SocketOptionError::NoSuchSocket => crate::Errno::EBADF.to_io(),
        _ => crate::Errno::ENOPROTOOPT.to_io(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> stack::Instant {
        stack::Instant::from_millis(ms)
    }

    #[test]
    fn the_alarm_moves_only_earlier() {
        // Not set, or gone off: any timer sets it.
        assert!(alarm_moves(None, at(5)));
        assert!(alarm_moves(Some(at(5)), at(4)));
        // A timer moved later (a probe pushed back by an acknowledgement) leaves it.
        assert!(!alarm_moves(Some(at(5)), at(6)));
        assert!(!alarm_moves(Some(at(5)), at(5)));
    }
}
