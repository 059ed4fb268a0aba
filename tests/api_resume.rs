//! `CONNECT_RESUME_ON_READ_WRITE` as curl, FFmpeg, shadowsocks and unbound call it, over a
//! socketpair whose other end never answers (no root needed): what the application sees before
//! the handshake completes.

use std::time::Duration;

use connectx_api::{
    Device, Errno, Net, PollFd, SaEndpoints, CONNECT_DATA_IDEMPOTENT, CONNECT_RESUME_ON_READ_WRITE,
    POLLOUT, SAE_ASSOCID_ANY,
};
use stack::{Family, SocketType};

#[test]
fn resume_on_read_write_defers_the_connection_to_the_first_write() {
    let (ours, wire) = Device::pair().unwrap();
    let net = Net::builder()
        .device(ours)
        .address("192.0.2.2/24")
        .start()
        .unwrap();
    let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
    net.set_nonblocking(fd, true).unwrap();
    let flags = CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT;
    let to = "192.0.2.1:7".parse().unwrap();
    // connectx returns 0 at once, and nothing goes on the wire yet.
    net.connectx(
        fd,
        &SaEndpoints::to(to),
        SAE_ASSOCID_ANY,
        flags,
        &[],
        None,
        None,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut buf = [0u8; 2048];
    assert_eq!(
        wire.recv(&mut buf).unwrap(),
        None,
        "no SYN before the first write"
    );
    // The socket is writable.
    let mut p = [PollFd::new(fd, POLLOUT)];
    assert_eq!(net.poll(&mut p, Some(Duration::ZERO)).unwrap(), 1);
    // The first write starts the connection and takes the data.
    assert_eq!(net.send(fd, b"GET / HTTP/1.1\r\n\r\n").unwrap(), 18);
    // Reads block (EAGAIN here) until the handshake completes; a second write meanwhile is
    // ENOTCONN, as on XNU.
    let e = net.recv(fd, &mut buf).unwrap_err();
    assert_eq!(Errno::of(&e), Some(Errno::EAGAIN));
    let e = net.send(fd, b"more").unwrap_err();
    assert_eq!(Errno::of(&e), Some(Errno::ENOTCONN));
    // The SYN went out: with no cookie cached it asks for one (option 34, length 2) and
    // carries no data.
    let mut syn = None;
    for _ in 0..100 {
        if let Some(n) = wire.recv(&mut buf).unwrap() {
            syn = Some(buf[..n].to_vec());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let syn = syn.expect("a SYN on the wire");
    let t = stack::sim::tcp_view(&syn).unwrap();
    assert_eq!((t.flags, t.payload_len, t.dst), (0x02, 0, to));
    let opts = stack::sim::tcp_options(&syn);
    assert!(
        opts.windows(2).any(|w| w == [34, 2]),
        "a cookie request: {opts:?}"
    );
    // A second connectx on the same socket is refused.
    let e = net
        .connectx(
            fd,
            &SaEndpoints::to(to),
            SAE_ASSOCID_ANY,
            flags,
            &[],
            None,
            None,
        )
        .unwrap_err();
    assert!(
        matches!(Errno::of(&e), Some(Errno::EALREADY) | Some(Errno::EISCONN)),
        "{e}"
    );
}

/// XNU defers only the SYN: `connectx` with `CONNECT_RESUME_ON_READ_WRITE` settles the route,
/// the source address and the port at once, reports there every error a connect would, and
/// `getsockname` answers before anything is sent (curl moves on to the next address on such an
/// error, and logs the local address).
#[test]
fn resume_on_read_write_binds_and_reports_errors_at_once() {
    let (ours, wire) = Device::pair().unwrap();
    let net = Net::builder()
        .device(ours)
        .address("192.0.2.2/24")
        .start()
        .unwrap();
    let flags = CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT;
    let to: std::net::SocketAddr = "192.0.2.1:7".parse().unwrap();
    let defer =
        |fd, ep: &SaEndpoints| net.connectx(fd, ep, SAE_ASSOCID_ANY, flags, &[], None, None);
    let errno = |r: std::io::Result<()>| Errno::of(&r.unwrap_err()).unwrap();

    let listener = net.socket(Family::V4, SocketType::Stream).unwrap();
    net.bind(listener, "192.0.2.2:8080".parse().unwrap())
        .unwrap();
    net.listen(listener, 8).unwrap();
    assert_eq!(
        errno(defer(listener, &SaEndpoints::to(to))),
        Errno::EOPNOTSUPP
    );
    let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
    let from = |src: &str| SaEndpoints {
        srcaddr: Some(src.parse().unwrap()),
        ..SaEndpoints::to(to)
    };
    assert_eq!(
        errno(defer(fd, &from("192.0.2.77:0"))),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(errno(defer(fd, &from("192.0.2.2:8080"))), Errno::EADDRINUSE);
    assert_eq!(
        errno(defer(
            fd,
            &SaEndpoints::to("[2001:db8::1]:7".parse().unwrap())
        )),
        Errno::EAFNOSUPPORT
    );
    assert_eq!(
        errno(defer(fd, &SaEndpoints::to("192.0.2.1:0".parse().unwrap()))),
        Errno::EADDRNOTAVAIL
    );
    // Nothing went wrong for the socket: it defers, and already has its name.
    defer(fd, &SaEndpoints::to(to)).unwrap();
    let local = net.local_addr(fd).unwrap();
    assert_eq!(local.ip().to_string(), "192.0.2.2");
    assert_ne!(local.port(), 0);
    assert_eq!(errno(defer(fd, &SaEndpoints::to(to))), Errno::EISCONN);
    let mut buf = [0u8; 2048];
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(wire.recv(&mut buf).unwrap(), None, "nothing sent yet");
    // The first write starts the connection, from that port.
    net.set_nonblocking(fd, true).unwrap();
    net.send(fd, b"hello").unwrap();
    let mut syn = None;
    for _ in 0..100 {
        if let Some(n) = wire.recv(&mut buf).unwrap() {
            syn = Some(buf[..n].to_vec());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let syn = syn.expect("a SYN");
    let ihl = usize::from(syn[0] & 15) * 4;
    let sport = u16::from_be_bytes([syn[ihl], syn[ihl + 1]]);
    assert_eq!(
        sport,
        local.port(),
        "the SYN leaves from the port getsockname gave"
    );
}

/// XNU: on a blocking socket the first write after a deferred connect waits for the handshake
/// (here one that never completes: until the send timeout), and it takes all the data the send
/// buffer holds, not only what a SYN carries.
#[test]
fn a_blocking_first_write_waits_for_the_handshake_and_takes_everything() {
    let (ours, _wire) = Device::pair().unwrap();
    let net = Net::builder()
        .device(ours)
        .address("192.0.2.2/24")
        .start()
        .unwrap();
    let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
    net.set_timeouts(fd, None, Some(Duration::from_millis(300)))
        .unwrap();
    let flags = CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT;
    net.connectx(
        fd,
        &SaEndpoints::to("192.0.2.1:7".parse().unwrap()),
        SAE_ASSOCID_ANY,
        flags,
        &[],
        None,
        None,
    )
    .unwrap();
    let data = vec![7u8; 20_000];
    let start = std::time::Instant::now();
    assert_eq!(net.send(fd, &data).unwrap(), 20_000, "all of it queued");
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "returned after {:?}: it did not wait for the handshake",
        start.elapsed()
    );
}
