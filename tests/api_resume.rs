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
    // Reads block (EAGAIN here), and so do further writes, until the handshake completes.
    let e = net.recv(fd, &mut buf).unwrap_err();
    assert_eq!(Errno::of(&e), Some(Errno::EAGAIN));
    let e = net.send(fd, b"more").unwrap_err();
    assert_eq!(Errno::of(&e), Some(Errno::EAGAIN));
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
