//! An echo server with a thread per connection, for `scale` and `loss`: the pattern of
//! `examples/tun_server.rs` (an accept loop that spawns a thread per connection, which reads and
//! writes back what it read until the peer closes), on the stack or on kernel sockets, with
//! small thread stacks (and, for `scale`, small buffers).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::conn::IO_TIMEOUT;

/// The stack size of the server's threads.
pub const THREAD_STACK: usize = 64 << 10;
/// What [`EchoServer::start`]'s threads read and write at most at a time.
const SMALL_BUFFER: usize = 1024;

/// What the server's threads tell the bench.
struct Shared {
    /// When the server started: what `last_accept_ns` counts from.
    base: Instant,
    accepted: AtomicUsize,
    last_accept_ns: AtomicU64,
    /// Echo threads still running.
    live: AtomicUsize,
    /// Connections that ended with an error rather than with the peer's FIN (or for which no
    /// thread could be started), before the server was told to stop; the first one's error.
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Why the accept loop ended, if it ended before it was told to stop.
    ended: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn error(&self, e: String) {
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// An echo server with a thread per connection, listening at `to`.
pub struct EchoServer {
    pub to: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

impl EchoServer {
    /// Start the accept loop: `accept` waits for the next connection. Each connection's thread
    /// reads and writes back 1 KiB at most at a time.
    pub fn start<S: Read + Write + Send + 'static>(
        to: SocketAddr,
        accept: impl FnMut() -> io::Result<S> + Send + 'static,
    ) -> Result<EchoServer, String> {
        EchoServer::start_with_buffer(to, SMALL_BUFFER, accept)
    }

    /// [`EchoServer::start`] with `buffer` bytes at most per read and write (a heap buffer of
    /// that size per connection).
    pub fn start_with_buffer<S: Read + Write + Send + 'static>(
        to: SocketAddr,
        buffer: usize,
        mut accept: impl FnMut() -> io::Result<S> + Send + 'static,
    ) -> Result<EchoServer, String> {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            accepted: AtomicUsize::new(0),
            last_accept_ns: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            ended: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let server = Arc::clone(&shared);
        let accept_loop = thread::Builder::new()
            .name("bench-echo".into())
            .stack_size(THREAD_STACK)
            .spawn(move || loop {
                let s = match accept() {
                    Ok(s) => s,
                    Err(_) if server.stop.load(Ordering::Acquire) => return,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    Err(e) => {
                        *server.ended.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("the echo server's accept failed: {e}"));
                        return;
                    }
                };
                if server.stop.load(Ordering::Acquire) {
                    return;
                }
                let ns = server.base.elapsed().as_nanos() as u64;
                server.last_accept_ns.fetch_max(ns, Ordering::Relaxed);
                server.accepted.fetch_add(1, Ordering::Release);
                server.live.fetch_add(1, Ordering::Relaxed);
                let echo_shared = Arc::clone(&server);
                let spawned = thread::Builder::new()
                    .stack_size(THREAD_STACK)
                    .spawn(move || echo(s, buffer, &echo_shared));
                if let Err(e) = spawned {
                    server.live.fetch_sub(1, Ordering::Relaxed);
                    server.error(format!("cannot start an echo thread: {e}"));
                }
            })
            .map_err(|e| format!("cannot start the echo server: {e}"))?;
        Ok(EchoServer {
            to,
            shared,
            accept_loop,
        })
    }

    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }

    /// When the server accepted its last connection so far.
    pub fn last_accept(&self) -> Instant {
        let ns = self.shared.last_accept_ns.load(Ordering::Relaxed);
        self.shared.base + Duration::from_nanos(ns)
    }

    /// Wait until the server has accepted `n` connections in all. Gives up when it accepts
    /// none for `IO_TIMEOUT`, or when its accept loop ended.
    pub fn wait_accepted(&self, n: usize) -> Result<(), String> {
        let mut seen = self.accepted();
        let mut deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let accepted = self.accepted();
            if accepted >= n {
                return Ok(());
            }
            if let Some(e) = self
                .shared
                .ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(format!("{e} (after {accepted} of {n} connections)"));
            }
            let now = Instant::now();
            if accepted > seen {
                seen = accepted;
                deadline = now + IO_TIMEOUT;
            } else if now >= deadline {
                return Err(format!(
                    "the server accepted {accepted} of {n} connections, none in the last \
                     {IO_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stop the server: `wake` must make a blocked accept return (a connection to the server,
    /// or stopping the stack) and say whether it did. Waits for the accept loop, and at most
    /// `IO_TIMEOUT` for the echo threads, whose connections the clients should have closed.
    /// Returns what went wrong on the server's side, if anything.
    pub fn stop(self, wake: impl FnOnce() -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        let errors = self.shared.errors.load(Ordering::Relaxed);
        if errors > 0 {
            let first = self
                .shared
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            problems.push(format!(
                "{errors} connections ended with an error on the server (the first: {first})"
            ));
        }
        self.shared.stop.store(true, Ordering::Release);
        let woken = self.accept_loop.is_finished() || wake();
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.accept_loop.is_finished() && woken && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if self.accept_loop.is_finished() {
            let _ = self.accept_loop.join();
        } else {
            problems.push("the echo server's accept loop did not stop".into());
        }
        while self.shared.live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let live = self.shared.live.load(Ordering::Relaxed);
        if live > 0 {
            problems.push(format!(
                "{live} echo threads still running {IO_TIMEOUT:?} after the stop"
            ));
        }
        problems
    }
}

/// Echo what arrives, `buffer` bytes at most at a time, until the peer closes.
fn echo(mut s: impl Read + Write, buffer: usize, shared: &Shared) {
    let mut buf = vec![0u8; buffer];
    let outcome = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]) {
                    break Err(format!("echo server writing: {e}"));
                }
            }
            Err(e) => break Err(format!("echo server reading: {e}")),
        }
    };
    if let Err(e) = outcome {
        shared.error(e);
    }
    drop(s);
    shared.live.fetch_sub(1, Ordering::Relaxed);
}
