//! Packet sockets, adopted descriptors and waiting: no privileges needed.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tun_driver::{wait_readable, Device, DeviceKind, Error, Waker};

#[test]
fn pairs_carry_packets_both_ways() {
    let (a, b) = Device::pair().unwrap();
    assert_eq!(a.kind(), DeviceKind::PacketSocket);
    assert_eq!((a.name(), a.ifindex(), a.link()), (None, None, None));

    let mut buf = [0; 1500];
    assert_eq!(b.recv(&mut buf).unwrap(), None, "nothing to read yet");
    assert!(a.send(b"one packet").unwrap());
    assert!(a.send(b"and another").unwrap());
    assert_eq!(b.recv(&mut buf).unwrap(), Some(10));
    assert_eq!(&buf[..10], b"one packet");
    assert_eq!(b.recv(&mut buf).unwrap(), Some(11));
    assert_eq!(b.recv(&mut buf).unwrap(), None);

    assert!(b.send(&[0x45; 1400]).unwrap());
    assert_eq!(a.recv(&mut buf).unwrap(), Some(1400));
    assert_eq!(a.recv(&mut buf).unwrap(), None);
}

#[test]
fn pairs_truncate_long_packets_and_report_hangups() {
    let (a, b) = Device::pair().unwrap();
    assert!(a.send(&[1; 100]).unwrap());
    let mut small = [0; 10];
    assert_eq!(b.recv(&mut small).unwrap(), Some(10));
    assert_eq!(
        b.recv(&mut small).unwrap(),
        None,
        "the rest of the packet is gone"
    );

    drop(a);
    let mut ready = [false];
    assert_eq!(
        wait_readable(&[b.as_raw_fd()], &mut ready, Some(Duration::ZERO)).unwrap(),
        1
    );
    let error = b.recv(&mut small).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(b.send(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn pairs_report_a_full_buffer() {
    let (a, _b) = Device::pair().unwrap();
    let packet = [0; 1500];
    let sent = std::iter::repeat_with(|| a.send(&packet).unwrap())
        .take(100_000)
        .take_while(|&sent| sent)
        .count();
    assert!(sent > 10 && sent < 100_000, "{sent} packets fit");
}

#[test]
fn adopting_unopened_descriptors_fails() {
    for fd in [987_654, -1] {
        let error = Device::adopt_fd(fd).unwrap_err();
        assert!(
            matches!(error, Error::BadDescriptor(n) if n == fd),
            "{error}"
        );
        assert_eq!(error.to_string(), format!("descriptor {fd} is not open"));
    }
}

#[test]
fn adopting_other_descriptors_fails() {
    let file = std::fs::File::open("/proc/self/status")
        .unwrap()
        .into_raw_fd();
    let error = Device::adopt_fd(file).unwrap_err();
    assert!(matches!(error, Error::Unsupported(_)), "{error}");
    assert_eq!(
        error.to_string(),
        format!("descriptor {file} is neither a TUN device nor a SOCK_SEQPACKET/SOCK_DGRAM socket")
    );

    let (stream, _peer) = UnixStream::pair().unwrap();
    let error = Device::adopt_fd(stream.into_raw_fd()).unwrap_err();
    assert!(matches!(error, Error::Unsupported(_)), "{error}");
}

#[test]
fn adopting_datagram_sockets_works() {
    let (socket, peer) = UnixDatagram::pair().unwrap();
    let device = Device::adopt_fd(socket.into_raw_fd()).unwrap();
    assert_eq!(device.kind(), DeviceKind::PacketSocket);
    assert_eq!(device.link(), None);

    let mut buf = [0; 100];
    assert_eq!(
        device.recv(&mut buf).unwrap(),
        None,
        "adopted descriptors are non-blocking"
    );
    peer.send(b"packet").unwrap();
    assert_eq!(device.recv(&mut buf).unwrap(), Some(6));
    assert!(device.send(b"reply").unwrap());
    assert_eq!(peer.recv(&mut buf).unwrap(), 5);

    let (socket, _peer) = UnixDatagram::pair().unwrap();
    let device = Device::try_from(std::os::fd::OwnedFd::from(socket)).unwrap();
    assert_eq!(device.kind(), DeviceKind::PacketSocket);
}

#[test]
fn wakers_wake_waiting_threads() {
    let waker = Arc::new(Waker::new().unwrap());
    let (a, _b) = Device::pair().unwrap();
    let fds = [a.as_raw_fd(), waker.as_raw_fd()];

    let remote = Arc::clone(&waker);
    let start = Instant::now();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        remote.wake();
    });
    let mut ready = [false; 2];
    let n = wait_readable(&fds, &mut ready, Some(Duration::from_secs(10))).unwrap();
    let elapsed = start.elapsed();
    thread.join().unwrap();

    assert_eq!((n, ready), (1, [false, true]));
    assert!(
        elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    waker.drain();
    assert_eq!(
        wait_readable(&fds, &mut ready, Some(Duration::ZERO)).unwrap(),
        0
    );
    assert_eq!(ready, [false, false]);
}

#[test]
fn short_timeouts_do_not_spin() {
    let waker = Waker::new().unwrap();
    let mut ready = [true];
    let start = Instant::now();
    let n = wait_readable(
        &[waker.as_raw_fd()],
        &mut ready,
        Some(Duration::from_micros(300)),
    )
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!((n, ready), (0, [false]));
    assert!(
        elapsed >= Duration::from_millis(1),
        "returned after {elapsed:?}"
    );
}

#[test]
fn devices_and_wakers_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Device>();
    assert_send_sync::<Waker>();
    assert_send_sync::<tun_driver::Link>();
    assert_send_sync::<Error>();
}
