//! Helpers shared by the integration tests.

#![allow(dead_code)] // Each test file uses a different subset.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tun_driver::{wait_readable, Device};

/// Runs `f` on a new thread inside a new network namespace of its own, and propagates its
/// panics. The host's interfaces and sysctls stay untouched.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    let thread = std::thread::spawn(move || {
        tun_driver::netns::unshare_net().expect("unshare_net");
        f();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Receives packets from `device` until one satisfies `wanted`, for up to 5 seconds.
pub fn recv_until(device: &Device, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0; 65_536];
    let mut ready = [false];
    loop {
        while let Some(n) = device.recv(&mut buf).expect("recv") {
            if wanted(&buf[..n]) {
                return buf[..n].to_vec();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the expected packet did not arrive");
        wait_readable(&[device.as_raw_fd()], &mut ready, Some(left)).expect("wait_readable");
    }
}

/// The Internet checksum (RFC 1071) of `chunks`, concatenated.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = chunks.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet from `src:src_port` to `dst:dst_port`, with correct checksums.
pub fn udp4_packet(
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut udp = Vec::with_capacity(udp_len.into());
    udp.extend_from_slice(&src_port.to_be_bytes());
    udp.extend_from_slice(&dst_port.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo_header = [
        &src.octets()[..],
        &dst.octets(),
        &[0, 17],
        &udp_len.to_be_bytes(),
    ]
    .concat();
    let udp_checksum = match checksum(&[&pseudo_header, &udp]) {
        0 => 0xffff,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&udp_checksum.to_be_bytes());

    let total_len = 20 + udp_len;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total_len.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]); // id, DF, TTL, UDP, checksum
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let ip_checksum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip
}
