//! Timed bulk transfers: a sender writes as fast as it can, a receiver reads for a window; and
//! the same through an echo server, whose client reads back what it writes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::{kernel_accept, read_some};
use crate::proc::{machine_busy, process_cpu};

/// What the senders write per call, and the receivers' buffer.
const CHUNK: usize = 256 << 10;

/// What a receiver read in its window, and how long the window really was.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub bytes: u64,
    pub elapsed: Duration,
    /// CPU time the machine spent busy during the window, all CPUs ([`machine_busy`]).
    pub cpu: Option<Duration>,
    /// CPU time this process spent during the window, user and system ([`process_cpu`]): the
    /// stacks it runs, the bench's own end of the transfer, and the kernel's work in their
    /// system calls.
    pub process: Option<(Duration, Duration)>,
}

impl Sample {
    /// CPU seconds the machine spent per GB (10^9 bytes) moved.
    pub fn cpu_s_per_gb(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (self.bytes > 0).then(|| cpu / (self.bytes as f64 / 1e9))
    }

    /// The process's user and system CPU seconds per GB moved.
    pub fn process_s_per_gb(&self) -> Option<(f64, f64)> {
        let (user, system) = self.process?;
        let gb = self.bytes as f64 / 1e9;
        (self.bytes > 0).then(|| (user.as_secs_f64() / gb, system.as_secs_f64() / gb))
    }

    pub fn gbps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 * 8.0 / secs / 1e9
        } else {
            0.0
        }
    }
}

/// Read and discard: the window starts when the first read returns and ends with the first
/// read that returns `window` later. Then tell the sender to stop, and drain up to its FIN.
fn receive(r: &mut impl Read, window: Duration, stop: &AtomicBool) -> Result<Sample, String> {
    let mut buf = vec![0u8; CHUNK];
    let first = read_some(r, &mut buf).map_err(receive_error)?;
    if first == 0 {
        return Err("the sender closed before sending anything".into());
    }
    let start = Instant::now();
    let busy_before = machine_busy();
    let process_before = process_cpu();
    let mut bytes = 0u64;
    let elapsed = loop {
        let n = read_some(r, &mut buf).map_err(receive_error)?;
        if n == 0 {
            return Err("the sender closed before the end of the window".into());
        }
        bytes += n as u64;
        let elapsed = start.elapsed();
        if elapsed >= window {
            break elapsed;
        }
    };
    let cpu = machine_busy()
        .zip(busy_before)
        .map(|(after, before)| after.saturating_sub(before));
    let process = process_cpu()
        .zip(process_before)
        .map(|((user, system), (user0, system0))| {
            (user.saturating_sub(user0), system.saturating_sub(system0))
        });
    stop.store(true, Ordering::Relaxed);
    loop {
        match read_some(r, &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("draining after the window: {}", receive_error(e))),
        }
    }
    Ok(Sample {
        bytes,
        elapsed,
        cpu,
        process,
    })
}

/// What a failed read says: a read timeout means the transfer stalled.
fn receive_error(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "receiving: stalled (nothing arrived within the read timeout)".into()
        }
        _ => format!("receiving: {e}"),
    }
}

/// One run: `accept` gives the receiving end (on a thread of its own), `connect` the sending
/// end (on the calling thread), which writes until the receiver's window is over.
pub fn measure<R, W>(
    window: Duration,
    accept: impl FnOnce() -> Result<R, String> + Send + 'static,
    connect: impl FnOnce() -> Result<W, String>,
) -> Result<Sample, String>
where
    R: Read,
    W: Write,
{
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let result = accept().and_then(|mut r| receive(&mut r, window, &stop));
                stop.store(true, Ordering::Relaxed);
                result
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?
    };
    // On failure here the receiver may be blocked in accept: leave it (the process ends).
    let mut w = connect()?;
    let chunk = vec![0x5au8; CHUNK];
    let mut send_error = None;
    while !stop.load(Ordering::Relaxed) {
        match w.write(&chunk) {
            Ok(0) => {
                send_error = Some("sending: the connection took no more bytes".to_owned());
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                send_error = Some(format!("sending: {e}"));
                break;
            }
        }
    }
    // Closing sends a FIN after what is queued; the receiver drains up to it.
    drop(w);
    let received = receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_owned())?;
    match (received, send_error) {
        (Ok(sample), _) => Ok(sample),
        (Err(e), Some(s)) => Err(format!("{e} ({s})")),
        (Err(e), None) => Err(e),
    }
}

/// Goodput in MB/s (10^6 bytes per second) of payload.
pub fn mb_per_s(sample: &Sample) -> f64 {
    let secs = sample.elapsed.as_secs_f64();
    if secs > 0.0 {
        sample.bytes as f64 / secs / 1e6
    } else {
        0.0
    }
}

/// One echo run: `connect` gives a kernel connection to an echo server. A thread writes to it
/// as fast as it can while the calling thread reads back what the server echoes, for `window`
/// from the first byte back; the figure is what was read back in the window. Then the writer
/// stops and shuts its side down, and the reader reads up to the server's close. A read that
/// waits longer than `stall` fails the run.
pub fn measure_echo(
    window: Duration,
    stall: Duration,
    connect: impl FnOnce() -> Result<TcpStream, String>,
) -> Result<Sample, String> {
    let mut s = connect()?;
    s.set_read_timeout(Some(stall))
        .map_err(|e| format!("setting the read timeout: {e}"))?;
    let mut w = s
        .try_clone()
        .map_err(|e| format!("cloning the client socket: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("bench-echo-writer".into())
            .spawn(move || -> Result<(), String> {
                let chunk = vec![0x5au8; CHUNK];
                while !stop.load(Ordering::Relaxed) {
                    match w.write(&chunk) {
                        Ok(0) => return Err("sending: the connection took no more bytes".into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("sending: {e}")),
                    }
                }
                // The server sees the end, echoes what it still has and closes.
                w.shutdown(Shutdown::Write)
                    .map_err(|e| format!("shutting down the sending side: {e}"))
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?
    };
    let received = receive(&mut s, window, &stop);
    stop.store(true, Ordering::Relaxed);
    if received.is_err() {
        // Unblock a writer waiting for room that will not come.
        let _ = s.shutdown(Shutdown::Both);
    }
    let written = writer
        .join()
        .map_err(|_| "the writer thread panicked".to_owned())?;
    match (received, written) {
        (Ok(sample), _) => Ok(sample),
        (Err(e), Err(w)) => Err(format!("{e} ({w})")),
        (Err(e), Ok(())) => Err(e),
    }
}

/// As [`measure`], kernel receiver, for a sender that may stall for longer than the I/O
/// timeouts (smoltcp's own recovery under loss): the receiver waits at most `window` for its
/// first byte (none: a sample of 0 bytes over `window`), reads for `window` from it, and then
/// closes without draining, which resets the connection. The sender's writes must time out
/// (`SO_SNDTIMEO`) within a fraction of `window`: it checks between them whether to stop. The
/// run lasts at most about twice `window`, plus the connect.
pub fn measure_bounded<W: Write>(
    window: Duration,
    listener: TcpListener,
    connect: impl FnOnce() -> Result<W, String>,
) -> Result<Sample, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let result = kernel_accept(&listener).and_then(|s| receive_bounded(s, window));
                stop.store(true, Ordering::Relaxed);
                result
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?
    };
    // On failure here the receiver may be blocked in accept: leave it (the process ends).
    let mut w = connect()?;
    let chunk = vec![0x5au8; CHUNK];
    let mut send_error = None;
    while !stop.load(Ordering::Relaxed) {
        match w.write(&chunk) {
            Ok(0) => {
                send_error = Some("sending: the connection took no more bytes".to_owned());
                break;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                send_error = Some(format!("sending: {e}"));
                break;
            }
        }
    }
    drop(w);
    let received = receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_owned())?;
    match (received, send_error) {
        (Ok(sample), _) => Ok(sample),
        (Err(e), Some(s)) => Err(format!("{e} ({s})")),
        (Err(e), None) => Err(e),
    }
}

/// The receiving side of [`measure_bounded`].
fn receive_bounded(mut s: TcpStream, window: Duration) -> Result<Sample, String> {
    let mut buf = vec![0u8; CHUNK];
    // A read that waits at most until `deadline`: `None` once it passed.
    let mut read_until = |deadline: Instant| -> Result<Option<usize>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match read_some(&mut s, &mut buf) {
            Ok(0) => Err("the sender closed before the end of the window".into()),
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("receiving: {e}")),
        }
    };
    if read_until(Instant::now() + window)?.is_none() {
        return Ok(Sample {
            bytes: 0,
            elapsed: window,
            cpu: None,
            process: None,
        });
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    while let Some(n) = read_until(start + window)? {
        bytes += n as u64;
    }
    Ok(Sample {
        bytes,
        elapsed: start.elapsed(),
        cpu: None,
        process: None,
    })
}
