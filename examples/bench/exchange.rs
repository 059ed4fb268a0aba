//! Request and reply, one connection at a time, for `rate` and `ttfb`: the server reads the
//! request, answers with its first bytes, reads up to the client's FIN and closes.

use std::io::{Read, Write};
use std::thread::{self, JoinHandle};

use crate::conn::read_some;

/// The request byte that tells a server to stop.
const QUIT: u8 = b'q';

/// The server side of one connection: read the `request`-byte request, answer with its first
/// `reply` bytes, read up to the client's FIN, close. `Ok(false)` for the 1-byte request that
/// says stop.
fn serve_one(mut s: impl Read + Write, request: usize, reply: usize) -> Result<bool, String> {
    let mut buf = vec![0u8; request.max(1)];
    match read_some(&mut s, &mut buf[..1]) {
        Ok(1) if buf[0] == QUIT => return Ok(false),
        Ok(1) => {}
        Ok(_) => return Err("the client closed before its request".into()),
        Err(e) => return Err(format!("server reading: {e}")),
    }
    s.read_exact(&mut buf[1..])
        .map_err(|e| format!("server reading the request: {e}"))?;
    s.write_all(&buf[..reply.clamp(1, buf.len())])
        .map_err(|e| format!("server writing: {e}"))?;
    let mut byte = [0u8; 1];
    match read_some(&mut s, &mut byte) {
        Ok(0) => Ok(true),
        Ok(_) => Err("the client sent more than its request".into()),
        Err(e) => Err(format!("server waiting for the FIN: {e}")),
    }
}

/// Serve `request`-byte requests on a thread of its own, one connection at a time, until the
/// stop request, each answered with its first `reply` bytes (1 to `request`). A request's first
/// byte must not be [`QUIT`].
pub fn request_server<S: Read + Write>(
    request: usize,
    reply: usize,
    mut accept: impl FnMut() -> Result<S, String> + Send + 'static,
) -> JoinHandle<Result<(), String>> {
    thread::spawn(move || {
        while serve_one(accept()?, request, reply)? {}
        Ok(())
    })
}

/// Send the stop request on a fresh connection to the server.
pub fn ask_to_stop(mut s: impl Write) -> Result<(), String> {
    s.write_all(&[QUIT])
        .map_err(|e| format!("client asking the server to stop: {e}"))
}

/// Wait for a server thread.
pub fn wait(server: JoinHandle<Result<(), String>>) -> Result<(), String> {
    server
        .join()
        .map_err(|_| "the server panicked".to_owned())?
}

/// Wait for a request server, unless the client failed (then the server may wait forever).
pub fn server_outcome<T>(
    what: &str,
    client: Result<T, String>,
    server: JoinHandle<Result<(), String>>,
) -> Result<T, String> {
    let outcome = client.map_err(|e| format!("{what}: {e}"))?;
    wait(server).map_err(|e| format!("{what}: {e}"))?;
    Ok(outcome)
}
