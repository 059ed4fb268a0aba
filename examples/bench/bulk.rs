//! Timed bulk transfers: a sender writes as fast as it can, a receiver reads for a window.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::read_some;

/// What the senders write per call, and the receivers' buffer.
const CHUNK: usize = 256 << 10;

/// What a receiver read in its window, and how long the window really was.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Sample {
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
    let first = read_some(r, &mut buf).map_err(|e| format!("receiving: {e}"))?;
    if first == 0 {
        return Err("the sender closed before sending anything".into());
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    let elapsed = loop {
        let n = read_some(r, &mut buf).map_err(|e| format!("receiving: {e}"))?;
        if n == 0 {
            return Err("the sender closed before the end of the window".into());
        }
        bytes += n as u64;
        let elapsed = start.elapsed();
        if elapsed >= window {
            break elapsed;
        }
    };
    stop.store(true, Ordering::Relaxed);
    loop {
        match read_some(r, &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("draining after the window: {e}")),
        }
    }
    Ok(Sample { bytes, elapsed })
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
