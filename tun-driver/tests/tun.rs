//! TUN devices, each test in a network namespace of its own (needs root).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use common::{in_netns, recv_until, udp4_packet};
use tun_driver::netns::require_root;
use tun_driver::{wait_readable, Device, DeviceKind, Error, Link};

const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Creates `name` with an MTU of 1400 and brings it up.
fn up_device(name: &str) -> (Device, Link) {
    let device = Device::create(name).expect("create");
    let link = device.link().expect("a TUN device has a link");
    link.set_mtu(1400).expect("set_mtu");
    link.set_up(true).expect("set_up");
    (device, link)
}

#[test]
fn create_configure_and_receive_kernel_packets() {
    if !require_root("create_configure_and_receive_kernel_packets") {
        return;
    }
    in_netns(|| {
        let device = Device::create("cx0").expect("create");
        assert_eq!(device.kind(), DeviceKind::Tun);
        assert_eq!(device.name(), Some("cx0"));
        let link = device.link().expect("link");
        let index = device.ifindex().expect("ifindex");
        assert!(index > 0);
        assert_eq!(link.index(), index);
        assert_eq!(Link::by_name("cx0").unwrap(), link);

        link.set_mtu(1400).unwrap();
        assert_eq!(link.mtu().unwrap(), 1400);
        link.set_txqueuelen(2000).unwrap();
        assert!(!link.is_up().unwrap());
        link.set_up(true).unwrap();
        assert!(link.is_up().unwrap());

        // IPv4: the kernel routes 192.0.2.0/24 to the device.
        link.add_address(IpAddr::V4(LOCAL4), 24).unwrap();
        link.add_address(IpAddr::V4(LOCAL4), 24)
            .expect("adding twice is fine");
        let socket = UdpSocket::bind((LOCAL4, 0)).unwrap();
        socket.send_to(b"hello", (PEER4, 9)).unwrap();
        let packet = recv_until(&device, |p| p[0] >> 4 == 4 && p[9] == 17);
        assert_eq!(&packet[16..20], &PEER4.octets());

        // IPv6, right after adding the address: NODAD makes it usable at once.
        link.add_address(IpAddr::V6(LOCAL6), 64).unwrap();
        let socket = UdpSocket::bind((LOCAL6, 0)).expect("the address is not tentative");
        socket.send_to(b"hello", (PEER6, 9)).unwrap();
        // Skip the kernel's own traffic (router solicitations, MLD reports).
        let packet = recv_until(&device, |p| p[0] >> 4 == 6 && p[6] == 17);
        assert_eq!(&packet[24..40], &PEER6.octets());

        link.set_up(false).unwrap();
        assert!(!link.is_up().unwrap());
    });
}

#[test]
fn kernel_receives_written_packets() {
    if !require_root("kernel_receives_written_packets") {
        return;
    }
    in_netns(|| {
        let (device, link) = up_device("cx0");
        link.add_address(IpAddr::V4(LOCAL4), 24).unwrap();
        let socket = UdpSocket::bind((LOCAL4, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();

        let packet = udp4_packet(PEER4, 5000, LOCAL4, port, b"from the device");
        assert!(device.send(&packet).unwrap());

        let mut buf = [0; 100];
        let (n, from) = socket
            .recv_from(&mut buf)
            .expect("the kernel delivers the packet");
        assert_eq!(&buf[..n], b"from the device");
        assert_eq!(from, SocketAddr::from((PEER4, 5000)));
    });
}

#[test]
fn short_buffers_truncate() {
    if !require_root("short_buffers_truncate") {
        return;
    }
    in_netns(|| {
        let (device, link) = up_device("cx0");
        link.add_address(IpAddr::V4(LOCAL4), 24).unwrap();
        let socket = UdpSocket::bind((LOCAL4, 0)).unwrap();
        socket.send_to(&[7; 200], (PEER4, 9)).unwrap();
        // Read every packet into a buffer too small for it, until the one sent above.
        let mut ready = [false];
        let fds = [device.as_raw_fd()];
        let mut buf = [0; 20];
        loop {
            match device.recv(&mut buf).unwrap() {
                Some(n) => {
                    assert_eq!(n, 20, "the reported length is what the buffer holds");
                    if buf[0] >> 4 == 4 && buf[16..20] == PEER4.octets() {
                        break;
                    }
                }
                None => {
                    let n = wait_readable(&fds, &mut ready, Some(Duration::from_secs(5))).unwrap();
                    assert_eq!(n, 1, "the expected packet did not arrive");
                }
            }
        }
    });
}

#[test]
fn adopted_tun_descriptors_keep_their_interface() {
    if !require_root("adopted_tun_descriptors_keep_their_interface") {
        return;
    }
    in_netns(|| {
        let (device, link) = up_device("cx0");
        let index = device.ifindex();
        let raw = OwnedFd::from(device).into_raw_fd();

        let device = Device::adopt_fd(raw).expect("adopt_fd");
        assert_eq!(device.kind(), DeviceKind::Tun);
        assert_eq!(device.name(), Some("cx0"));
        assert_eq!(device.ifindex(), index);
        assert_eq!(device.link(), Some(link.clone()));

        link.add_address(IpAddr::V4(LOCAL4), 24).unwrap();
        let socket = UdpSocket::bind((LOCAL4, 0)).unwrap();
        socket.send_to(b"hello", (PEER4, 9)).unwrap();
        recv_until(&device, |p| p[0] >> 4 == 4 && p[16..20] == PEER4.octets());
    });
}

#[test]
fn create_and_attach_errors() {
    if !require_root("create_and_attach_errors") {
        return;
    }
    in_netns(|| {
        assert!(
            matches!(Device::attach("cxnone0"), Err(Error::NoSuchDevice(name)) if name == "cxnone0")
        );
        assert!(matches!(Device::attach("lo"), Err(Error::Unsupported(_))));
        assert!(matches!(Device::create("lo"), Err(Error::Unsupported(_))));
        assert!(matches!(Device::create("a/b"), Err(Error::InvalidName(_))));

        let first = Device::create("cx%d").expect("create with a pattern");
        assert_eq!(first.name(), Some("cx0"));
        let second = Device::create("cx%d").expect("create with a pattern");
        assert_eq!(second.name(), Some("cx1"));

        // A single-queue device already open elsewhere.
        let busy = Device::attach("cx0").unwrap_err();
        assert!(
            matches!(&busy, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY)),
            "{busy}"
        );
        assert_eq!(std::io::Error::from(busy).raw_os_error(), Some(libc::EBUSY));

        // Once closed, a non-persistent device is gone.
        drop(first);
        assert!(matches!(Link::by_name("cx0"), Err(Error::NoSuchDevice(_))));
    });
}
