//! What the C library adds to a call: the time per 1-byte send through `cx_send` (the C ABI a C
//! program calls) beside the same send through the Rust API (`Net::send`), on one socket of one
//! stack, in alternating rounds so that both see the same machine.
//!
//!     cargo run --release -p connectx-ffi --example call_cost [-- CALLS_PER_ROUND ROUNDS]
//!
//! Needs root: it makes its own network namespace, a TUN device in it, and a kernel TCP reader
//! at 192.0.2.1 that drains what the stack sends.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use connectx_api::{Family, Net, SocketType};

/// Calls timed together, alternately through each API.
const BLOCK: usize = 1000;

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    if !tun_driver::netns::is_root() {
        eprintln!("call_cost: needs root (a network namespace and a TUN device)");
        std::process::exit(1);
    }
    // Everything runs in a namespace of this thread's own, with only the test addresses.
    let report = std::thread::spawn(move || {
        tun_driver::netns::unshare_net()
            .map_err(|e| format!("a private network namespace: {e}"))?;
        measure(calls, rounds)
    })
    .join()
    .expect("the measuring thread");
    match report {
        Ok(()) => {}
        Err(e) => {
            eprintln!("call_cost: {e}");
            std::process::exit(1);
        }
    }
}

fn measure(calls: usize, rounds: usize) -> Result<(), String> {
    let net = Net::builder()
        .tun("cx0")
        .address("192.0.2.2/24")
        .peer("192.0.2.1/24")
        .start()
        .map_err(|e| e.to_string())?;
    // The C calls act on the same stack and the same descriptors.
    connectx::install(net.clone()).map_err(|_| "a stack is installed already".to_string())?;

    let listener = TcpListener::bind("192.0.2.1:0").map_err(|e| e.to_string())?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the stack's connection");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let fd = net
        .socket(Family::V4, SocketType::Stream)
        .map_err(|e| e.to_string())?;
    net.connect(fd, to).map_err(|e| format!("connect: {e}"))?;

    let byte = [b'x'];
    let c_send = || {
        // SAFETY: `byte` is a live 1-byte buffer for the whole call; `fd` is this stack's.
        let n = unsafe { connectx::abi::cx_send(fd, byte.as_ptr().cast(), 1, 0) };
        assert_eq!(n, 1, "cx_send");
    };
    let rust_send = || assert_eq!(net.send(fd, &byte).expect("Net::send"), 1);
    let mut c_ns = Vec::with_capacity(rounds);
    let mut rust_ns = Vec::with_capacity(rounds);
    // One unmeasured round first: the buffers and the kernel's window settle. Within a round
    // the two alternate in blocks of BLOCK calls, each going first in turn, so that both see
    // the same moments of the machine.
    for round in 0..=rounds {
        let (mut c, mut r) = (Duration::ZERO, Duration::ZERO);
        for block in 0..calls / BLOCK {
            let timed = |f: &dyn Fn(), total: &mut Duration| {
                let t = Instant::now();
                for _ in 0..BLOCK {
                    f();
                }
                *total += t.elapsed();
            };
            if block % 2 == 0 {
                timed(&c_send, &mut c);
                timed(&rust_send, &mut r);
            } else {
                timed(&rust_send, &mut r);
                timed(&c_send, &mut c);
            }
        }
        if round > 0 {
            c_ns.push(per_call(c, calls / BLOCK * BLOCK));
            rust_ns.push(per_call(r, calls / BLOCK * BLOCK));
        }
    }
    net.close(fd).map_err(|e| e.to_string())?;
    let received = reader.join().map_err(|_| "the kernel reader".to_string())?;
    let expected = (2 * (calls / BLOCK * BLOCK) * (rounds + 1)) as u64;
    if received != expected {
        return Err(format!("the kernel read {received} bytes, not {expected}"));
    }
    connectx::uninstall();
    net.stop();

    let (c, r) = (median(&mut c_ns), median(&mut rust_ns));
    println!(
        "1-byte TCP send, {calls} calls x {rounds} rounds (median of rounds), {expected} bytes \
         read by the kernel:"
    );
    println!("  cx_send (C ABI)   {c:8.1} ns/call");
    println!("  Net::send (Rust)  {r:8.1} ns/call");
    println!("  ratio C/Rust      {:8.3}", c / r);
    Ok(())
}

fn per_call(d: Duration, calls: usize) -> f64 {
    d.as_nanos() as f64 / calls as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
