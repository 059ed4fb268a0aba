//! The kernel reference's echo server of `scale`, in a child process of its own: the bench
//! binary run again with the hidden argument [`ARG`], spawned from a namespace's thread so that
//! it lives in that namespace. Its connections' descriptors are then the child's, and the
//! bench's process holds only the clients' (one per connection rather than two).
//!
//! The child binds, raises its own `RLIMIT_NOFILE`, serves with [`EchoServer`] (a thread per
//! connection, small stacks) and answers the parent's requests, one line each on its stdin,
//! with lines on its stdout:
//!
//! - first, unasked: `ready ADDR` (the bound address) or `error MESSAGE`;
//! - `wait N`: wait until N connections have been accepted in all (as
//!   [`EchoServer::wait_accepted`]): `ok` or `err MESSAGE`;
//! - `status`: `status ACCEPTED LAST_NS`, the connections accepted in all and when the last one
//!   was, in ns since the Unix epoch (the system clock is the one both processes read; the
//!   parent turns it back into an `Instant`);
//! - `stop`: stop the server ([`EchoServer::stop`]): a `problem MESSAGE` line for each thing
//!   that went wrong, then `stopped`, and the child exits.
//!
//! It exits as soon as its stdin closes, so it never outlives the bench (whose end of the pipe
//! closes when it exits, however it exits); [`EchoProcess`] also kills it when dropped.

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::conn::IO_TIMEOUT;
use crate::echo::{EchoServer, THREAD_STACK};
use crate::netns::Netns;

/// The hidden argument that makes the bench binary this server: `ARG ADDR DESCRIPTORS`.
pub const ARG: &str = "--internal-echo-server";
/// How long the parent waits for the answer to `wait N` (the child gives up by itself after
/// `IO_TIMEOUT` without an accept).
const WAIT_REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// `text` on one line, for the protocol.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The child's `main`: serve until stdin closes or the parent asks it to stop.
pub fn main(args: &[String]) -> ExitCode {
    if io::stdin().is_terminal() {
        eprintln!(
            "bench: {ARG} is internal: the scale section runs it in a child process, talking \
             to it over pipes"
        );
        return ExitCode::from(2);
    }
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The parent may be waiting for the ready line: say why there is none.
            println!("error {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// `at` as ns since the Unix epoch on the system clock.
fn unix_ns(at: Instant) -> u128 {
    let then = SystemTime::now() - at.elapsed();
    then.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn serve(args: &[String]) -> Result<(), String> {
    let [at, fds] = args else {
        return Err(format!("usage: {ARG} ADDR DESCRIPTORS"));
    };
    let at: SocketAddr = at.parse().map_err(|e| format!("{ARG} {at}: {e}"))?;
    let fds: u64 = fds.parse().map_err(|e| format!("{ARG} … {fds}: {e}"))?;
    tun_driver::kernel::raise_fd_limit(fds)
        .map_err(|e| format!("raising RLIMIT_NOFILE of the echo server process: {e}"))?;
    let listener = TcpListener::bind(at).map_err(|e| format!("kernel listener on {at}: {e}"))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = EchoServer::start(to, move || listener.accept().map(|(s, _)| s))?;
    let mut out = io::stdout().lock();
    let mut say = |line: &str| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to the bench: {e}"))
    };
    say(&format!("ready {to}"))?;
    for request in io::stdin().lock().lines() {
        let request = request.map_err(|e| format!("reading the bench's requests: {e}"))?;
        match request.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["wait", n] => {
                let n: usize = n.parse().map_err(|e| format!("{request:?}: {e}"))?;
                match server.wait_accepted(n) {
                    Ok(()) => say("ok")?,
                    Err(e) => say(&format!("err {}", one_line(&e)))?,
                }
            }
            ["status"] => say(&format!(
                "status {} {}",
                server.accepted(),
                unix_ns(server.last_accept())
            ))?,
            ["stop"] => {
                let problems = server.stop(|| TcpStream::connect_timeout(&to, IO_TIMEOUT).is_ok());
                for p in problems {
                    say(&format!("problem {}", one_line(&p)))?;
                }
                return say("stopped");
            }
            _ => return Err(format!("unknown request {request:?}")),
        }
    }
    // Stdin closed: the bench is done with us, or gone.
    Ok(())
}

/// The parent's end of the pipes.
struct Pipes {
    requests: ChildStdin,
    /// The child's stdout, line by line, from a reader thread.
    replies: Receiver<String>,
}

/// The echo server in a child process, seen from the bench.
pub struct EchoProcess {
    /// Where it listens.
    pub to: SocketAddr,
    child: Child,
    pipes: Mutex<Pipes>,
}

impl EchoProcess {
    /// Start the server in `ns`, listening at `at` (port 0: any), with `fds` descriptors
    /// allowed; returns once it listens.
    pub fn spawn(ns: &Netns, at: SocketAddr, fds: u64) -> Result<EchoProcess, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("the bench's own executable: {e}"))?;
        let mut child = ns
            .run(move || {
                Command::new(exe)
                    .args([ARG.to_owned(), at.to_string(), fds.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
            })?
            .map_err(|e| format!("starting the echo server process: {e}"))?;
        let (Some(requests), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the echo server process has no pipes".into());
        };
        let (lines, replies) = mpsc::channel();
        let mut process = EchoProcess {
            to: at,
            child,
            pipes: Mutex::new(Pipes { requests, replies }),
        };
        thread::Builder::new()
            .name("bench-echo-child".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let ready = process.ask(None, IO_TIMEOUT)?;
        match ready.split_once(' ') {
            Some(("ready", addr)) => {
                process.to = addr
                    .parse()
                    .map_err(|e| format!("the echo server process's address {addr:?}: {e}"))?;
                Ok(process)
            }
            Some(("error", e)) => Err(format!("the echo server process: {e}")),
            _ => Err(format!("the echo server process said {ready:?}")),
        }
    }

    /// Send `request`, if any, and read the next line, within `timeout`.
    fn ask(&self, request: Option<&str>, timeout: Duration) -> Result<String, String> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(request) = request {
            writeln!(pipes.requests, "{request}")
                .and_then(|()| pipes.requests.flush())
                .map_err(|e| format!("asking the echo server process {request:?}: {e}"))?;
        }
        pipes.replies.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => {
                format!("the echo server process did not answer within {timeout:?}")
            }
            RecvTimeoutError::Disconnected => "the echo server process ended".into(),
        })
    }

    /// Wait until the server has accepted `n` connections in all (see
    /// [`EchoServer::wait_accepted`]).
    pub fn wait_accepted(&self, n: usize) -> Result<(), String> {
        let reply = self.ask(Some(&format!("wait {n}")), WAIT_REPLY_TIMEOUT)?;
        if reply == "ok" {
            return Ok(());
        }
        match reply.split_once(' ') {
            Some(("err", e)) => Err(e.to_owned()),
            _ => Err(format!("the echo server process said {reply:?}")),
        }
    }

    /// The connections accepted in all, and when the last one was (by the system clock, read
    /// in both processes; the time the server started if none was).
    pub fn status(&self) -> Result<(usize, Instant), String> {
        let reply = self.ask(Some("status"), IO_TIMEOUT)?;
        let parsed = match reply.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["status", accepted, ns] => accepted.parse::<usize>().ok().zip(ns.parse::<u64>().ok()),
            _ => None,
        };
        let (accepted, ns) =
            parsed.ok_or_else(|| format!("the echo server process said {reply:?}"))?;
        let at = UNIX_EPOCH + Duration::from_nanos(ns);
        let age = SystemTime::now().duration_since(at).unwrap_or_default();
        let now = Instant::now();
        Ok((accepted, now.checked_sub(age).unwrap_or(now)))
    }

    /// Stop the server and wait for the child to exit. Returns what went wrong on the
    /// server's side, if anything.
    pub fn stop(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // The child waits up to `IO_TIMEOUT` for its accept loop, then as long for its echo
        // threads.
        let mut request = Some("stop");
        loop {
            match self.ask(request.take(), 3 * IO_TIMEOUT) {
                Ok(line) if line == "stopped" => break,
                Ok(line) => match line.split_once(' ') {
                    Some(("problem", p)) => problems.push(p.to_owned()),
                    _ => problems.push(format!("the echo server process said {line:?}")),
                },
                Err(e) => {
                    problems.push(e);
                    break;
                }
            }
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    problems.push(format!("the echo server process ended with {status}"));
                    break;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                Ok(None) => {
                    problems.push(format!(
                        "the echo server process was still running {IO_TIMEOUT:?} after it \
                         stopped (killed)"
                    ));
                    break;
                }
                Err(e) => {
                    problems.push(format!("waiting for the echo server process: {e}"));
                    break;
                }
            }
        }
        problems
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        // Nothing to do once it has exited and been waited for; otherwise it must not outlive
        // its use.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
