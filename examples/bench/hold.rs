//! Idle connections from the stack to a kernel server that holds them, for `idle` and
//! `memory`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use connectx_api::{Net, PollFd, POLLOUT};

use crate::conn::{kernel_listener, StackConn, IO_TIMEOUT};
use crate::netns::{Netns, KERNEL_ADDR};

/// How long connections settle, once all are established, before a measurement starts.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How many connection attempts are kept under way at once.
pub const OPEN_BATCH: usize = 64;

/// A kernel server in `ns` that accepts `count` connections and holds them, open and idle,
/// until released.
pub struct Holder {
    pub to: SocketAddr,
    count: usize,
    /// How many it has accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Why it stopped accepting early, if it did.
    error: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
}

impl Holder {
    pub fn start(ns: &Netns, count: usize) -> Result<Holder, String> {
        let listener = kernel_listener(ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let (fail, error) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        // Every slot written now, so that filling them later adds nothing to the RSS.
        let mut held: Vec<Option<std::net::TcpStream>> = (0..count).map(|_| None).collect();
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for slot in held.iter_mut() {
                match listener.accept() {
                    Ok((s, _)) => *slot = Some(s),
                    Err(e) => {
                        let _ = fail.send(format!("kernel accept: {e}"));
                        return;
                    }
                }
                counter.fetch_add(1, Ordering::Release);
            }
            let _ = released.recv();
            drop(held);
        });
        Ok(Holder {
            to,
            count,
            accepted,
            error,
            release,
        })
    }

    /// Wait until it has accepted `n` connections.
    fn wait_accepted(&self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let accepted = self.accepted.load(Ordering::Acquire);
            if accepted >= n {
                return Ok(());
            }
            if let Ok(e) = self.error.try_recv() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the kernel server accepted only {accepted} of {n} connections"
                ));
            }
            thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.release.send(());
    }
}

/// The stack's last `count` connections to `holder`, all established and accepted, made
/// `OPEN_BATCH` at a time (a batch once the one before is accepted, so that the kernel's
/// accept queue never overflows); each slot was written before the first connection.
pub fn open_idle(
    net: &Net,
    holder: &Holder,
    count: usize,
) -> Result<Vec<Option<StackConn>>, String> {
    let mut conns: Vec<Option<StackConn>> = (0..count).map(|_| None).collect();
    let before = holder.count.saturating_sub(count);
    for (b, batch) in conns.chunks_mut(OPEN_BATCH).enumerate() {
        holder.wait_accepted(before + b * OPEN_BATCH)?;
        for slot in batch.iter_mut() {
            *slot = Some(StackConn::connect_nonblocking(net, holder.to)?);
        }
        let mut pending: Vec<PollFd> = batch
            .iter()
            .flatten()
            .map(|c| PollFd::new(c.fd, POLLOUT))
            .collect();
        let deadline = Instant::now() + IO_TIMEOUT;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} connections of batch {b} still not established after {IO_TIMEOUT:?}",
                    pending.len()
                ));
            }
            net.poll(&mut pending, Some(left))
                .map_err(|e| format!("poll: {e}"))?;
            let mut still = Vec::new();
            for p in pending {
                if p.revents == 0 {
                    still.push(PollFd::new(p.fd, POLLOUT));
                } else if let Some(e) = net.so_error(p.fd).map_err(|e| e.to_string())? {
                    return Err(format!("connecting to {}: {e}", holder.to));
                }
            }
            pending = still;
        }
        for c in batch.iter().flatten() {
            net.set_nonblocking(c.fd, false)
                .map_err(|e| e.to_string())?;
        }
    }
    holder.wait_accepted(holder.count)?;
    Ok(conns)
}
