//! An impaired link between two kernels, for `loss`'s kernel reference under reordering (this
//! kernel has no netem): two TUN devices, each in a namespace of its own with a kernel endpoint
//! behind it, joined by a thread of the bench that forwards the raw IP packets of each through
//! the stack's own [`Impaired`] decorator to the other. The stack's runs are impaired by the
//! same code: each packet passes one impaired queue, in each direction.
//!
//! ```text
//!   kernel A ── TUN ──► relay: Impaired, queue 0 ──► TUN ── kernel B
//!            ◄─────────        Impaired, queue 1 ◄──────────
//! ```
//!
//! Packets go out through [`Impaired`]'s outgoing queues only (its `send`): interface 0 is the
//! way from A to B, interface 1 the way back. Held packets leave when a later call finds them
//! due; the thread sleeps until the next is due (a `timerfd`, to the microsecond) or a device
//! has a packet.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use connectx_api::Impairment;
use stack::{IfaceId, ImpairStats, Impaired, PacketIo};
use tun_driver::{wait_readable, Alarm, Device, Waker};

/// Most packets read from one device before turning to the other.
const BURST: usize = 64;

/// The two devices as the far ends of the impaired queues: what goes out on interface 0 is
/// written to `b`, on interface 1 to `a`.
struct Wire {
    a: Device,
    b: Device,
    /// Packets written to a device.
    forwarded: u64,
    /// Packets a device would not take (its kernel's backlog full).
    refused: u64,
    /// The first error of a write.
    error: Option<String>,
}

impl PacketIo for Wire {
    fn recv(&mut self, _: IfaceId, _: &mut [u8]) -> Option<usize> {
        // The relay reads the devices itself and hands packets to `send`.
        None
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        let to = if iface.0 == 0 { &self.b } else { &self.a };
        match to.send(packet) {
            Ok(true) => self.forwarded += 1,
            Ok(false) => self.refused += 1,
            Err(e) => {
                self.error
                    .get_or_insert_with(|| format!("writing a packet: {e}"));
            }
        }
    }
}

/// What the relay did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayStats {
    /// Packets read from the two devices.
    pub read: u64,
    /// Packets written to them (duplicates included).
    pub forwarded: u64,
    /// Packets a device would not take.
    pub refused: u64,
    /// What the impairment did.
    pub impair: ImpairStats,
}

/// The relay thread, running until [`Relay::stop`].
pub struct Relay {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<Result<RelayStats, String>>,
}

impl Relay {
    /// Forward packets between `a` and `b` with `impairment`, each way.
    pub fn start(a: Device, b: Device, impairment: Impairment) -> Result<Relay, String> {
        let wire = Wire {
            a,
            b,
            forwarded: 0,
            refused: 0,
            error: None,
        };
        let path = Impaired::new(wire, impairment).map_err(|e| e.to_string())?;
        let waker = Arc::new(Waker::new().map_err(|e| format!("eventfd: {e}"))?);
        let alarm = Alarm::new().map_err(|e| format!("timerfd: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, waker) = (Arc::clone(&stop), Arc::clone(&waker));
            thread::Builder::new()
                .name("bench-relay".into())
                .spawn(move || relay(path, &stop, &waker, &alarm))
                .map_err(|e| format!("cannot start the relay thread: {e}"))?
        };
        Ok(Relay {
            stop,
            waker,
            thread,
        })
    }

    /// Stop the thread; what it did, or why it stopped early.
    pub fn stop(self) -> Result<RelayStats, String> {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        self.thread
            .join()
            .map_err(|_| "the relay thread panicked".to_owned())?
    }
}

/// The relay's loop: read what the devices have, let due packets out, sleep.
fn relay(
    mut path: Impaired<Wire>,
    stop: &AtomicBool,
    waker: &Waker,
    alarm: &Alarm,
) -> Result<RelayStats, String> {
    let epoch = Instant::now();
    // The impairment's clock: microseconds since the relay started.
    let clock = || {
        let micros = i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        stack::Instant::from_micros(micros)
    };
    let fds = [
        path.inner().a.as_raw_fd(),
        path.inner().b.as_raw_fd(),
        alarm.as_raw_fd(),
        waker.as_raw_fd(),
    ];
    let mut ready = [false; 4];
    let mut buf = vec![0u8; 65536];
    let mut read = 0u64;
    while !stop.load(Ordering::Acquire) {
        path.advance(clock());
        let mut busy = false;
        for side in 0..2 {
            for n in 0..=BURST {
                if n == BURST {
                    busy = true;
                    break;
                }
                let wire = path.inner();
                let device = if side == 0 { &wire.a } else { &wire.b };
                let len = match device.recv(&mut buf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => return Err(format!("reading a packet: {e}")),
                };
                read += 1;
                path.send(IfaceId(side), &buf[..len]);
            }
        }
        path.flush();
        if let Some(e) = path.inner_mut().error.take() {
            return Err(e);
        }
        if busy {
            continue;
        }
        let wait = match path.next_due() {
            None => None,
            Some(due) => {
                let now = clock();
                if due <= now {
                    continue;
                }
                Some(Duration::from_micros((due - now).total_micros()))
            }
        };
        alarm.set(wait);
        wait_readable(&fds, &mut ready, None).map_err(|e| format!("poll: {e}"))?;
        if ready[2] {
            alarm.drain();
        }
        if ready[3] {
            waker.drain();
        }
    }
    let wire = path.inner();
    Ok(RelayStats {
        read,
        forwarded: wire.forwarded,
        refused: wire.refused,
        impair: path.stats(),
    })
}
