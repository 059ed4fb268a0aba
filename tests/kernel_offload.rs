//! Segmentation offload against the Linux kernel (root): 64 KB TCP segments across a TUN device
//! with a virtio-net header, both ways, IPv4 and IPv6, on a created device and an adopted one.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use connectx_api::{Device, Net};
use support::{fnv1a, in_netns, pattern, usual};

const MB4: usize = 4 << 20;

/// Data packets the stack sent and received while `f` ran.
fn packets_during(net: &Net, f: impl FnOnce()) -> (u64, u64) {
    let count = || {
        let i = &net.interfaces()[0];
        (i.tx_packets, i.rx_packets)
    };
    let before = count();
    f();
    let after = count();
    (after.0 - before.0, after.1 - before.1)
}

/// 4 MB from the stack to a kernel listener at `kernel`, then 4 MB from a kernel client to a
/// stack listener at `stack`: both intact. Returns the packets the stack sent in the first
/// transfer and received in the second.
fn both_ways(net: &Net, kernel: SocketAddr, stack: SocketAddr) -> (u64, u64) {
    let data = pattern(MB4);
    let expect = fnv1a(&data);

    let listener = TcpListener::bind(kernel).unwrap();
    let to = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        (got.len(), fnv1a(&got))
    });
    let (sent, _) = packets_during(net, || {
        let mut s = connectx_api::TcpStream::connect(net, to).unwrap();
        s.write_all(&data).unwrap();
        drop(s);
        assert_eq!(
            reader.join().unwrap(),
            (MB4, expect),
            "stack -> kernel intact"
        );
    });

    let listener = connectx_api::TcpListener::bind(net, stack).unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(stack).unwrap();
        s.write_all(&pattern(MB4)).unwrap();
    });
    let (_, received) = packets_during(net, || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(
            (got.len(), fnv1a(&got)),
            (MB4, expect),
            "kernel -> stack intact"
        );
        writer.join().unwrap();
    });
    (sent, received)
}

/// Fewer packets than a quarter of what 4 MB takes in 1448-byte segments: super-packets.
const FEW: u64 = (MB4 / 1448 / 4) as u64;

/// [`both_ways`] over IPv4.
fn both_ways_v4(net: &Net) -> (u64, u64) {
    both_ways(
        net,
        "192.0.2.1:0".parse().unwrap(),
        "192.0.2.2:7001".parse().unwrap(),
    )
}

/// Packets sent and received for 4 MB each way that are one per wire segment at least.
fn assert_wire_sized((sent, received): (u64, u64)) {
    let least = (MB4 / 1460) as u64;
    assert!(
        sent >= least && received >= least,
        "{sent} / {received} packets"
    );
}

#[test]
fn offload_moves_64_kb_segments_both_ways_over_ipv4_and_ipv6() {
    in_netns(
        "offload_moves_64_kb_segments_both_ways_over_ipv4_and_ipv6",
        || {
            let net = usual(Net::builder().tun("cx0"));
            assert!(
                net.interfaces()[0].offload,
                "on by default on a created device"
            );
            for (kernel, stack) in [
                ("192.0.2.1:0", "192.0.2.2:7001"),
                ("[2001:db8::1]:0", "[2001:db8::2]:7002"),
            ] {
                let (sent, received) =
                    both_ways(&net, kernel.parse().unwrap(), stack.parse().unwrap());
                assert!(sent < FEW, "{kernel}: {sent} packets sent for 4 MB");
                assert!(
                    received < FEW,
                    "{stack}: {received} packets received for 4 MB"
                );
            }
            let d = net.device_counters();
            assert_eq!(d.offload_rejected, 0, "{d:?}");
            assert_eq!(net.tcp_counters().InCsumErrors, 0);
        },
    );
}

#[test]
fn offload_off_moves_one_wire_segment_per_packet() {
    in_netns("offload_off_moves_one_wire_segment_per_packet", || {
        let net = usual(Net::builder().tun("cx0").offload(false));
        assert!(!net.interfaces()[0].offload);
        assert_wire_sized(both_ways_v4(&net));
    });
}

/// A descriptor set up with a virtio-net header, handed over as a descriptor (as a privileged
/// parent hands one to `tun_client --tun-fd N`): adopted with offload on.
#[test]
fn an_adopted_descriptor_with_a_virtio_net_header_keeps_offload() {
    in_netns(
        "an_adopted_descriptor_with_a_virtio_net_header_keeps_offload",
        || {
            let fd: OwnedFd = Device::create_offload("cx0").unwrap().into();
            let device = Device::try_from(fd).unwrap();
            assert!(device.vnet_header() && device.offload());
            let net = usual(Net::builder().device(device));
            assert!(net.interfaces()[0].offload);
            let (sent, received) = both_ways_v4(&net);
            assert!(sent < FEW && received < FEW, "{sent} / {received} packets");
        },
    );
}

/// The same descriptor, offload asked off: the header stays (the device was made with it), the
/// kernel is told to send plain packets, and the stack sends them too.
#[test]
fn offload_off_on_a_descriptor_with_a_header_keeps_the_header_and_sends_plain_packets() {
    in_netns(
        "offload_off_on_a_descriptor_with_a_header_keeps_the_header_and_sends_plain_packets",
        || {
            let device = Device::create_offload("cx0").unwrap();
            let net = usual(Net::builder().device(device).offload(false));
            assert!(!net.interfaces()[0].offload);
            assert_wire_sized(both_ways_v4(&net));
        },
    );
}

/// Offload asked on for a socketpair (no virtio-net header possible): a one-line start error.
#[test]
fn offload_on_for_a_socketpair_is_a_start_error() {
    let (a, _b) = Device::pair().unwrap();
    let err = Net::builder()
        .device(a)
        .address("192.0.2.2/24")
        .offload(true)
        .start()
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("virtio-net header"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

/// With offload on, smoltcp sees the peer's MSS raised to a super-packet's and, left alone,
/// would acknowledge a peer that sends wire-sized segments (a kernel behind a router) only
/// every 64 KB or every 10 ms of its delayed-ACK timer: 6 MB/s. The stack acknowledges every
/// second segment, as Linux does: it sends about one acknowledgement for two data packets.
#[test]
fn with_offload_a_routed_peer_s_wire_segments_are_acknowledged_every_second() {
    in_netns(
        "with_offload_a_routed_peer_s_wire_segments_are_acknowledged_every_second",
        || {
            let net = usual(Net::builder().tun("cx0"));
            let peer = support::RoutedPeer::new();
            let listener =
                connectx_api::TcpListener::bind(&net, "192.0.2.2:7000".parse().unwrap()).unwrap();
            let data = pattern(MB4);
            let expect = fnv1a(&data);
            let mut got = Vec::new();
            let (acks, segments) = packets_during(&net, || {
                let sender = std::thread::spawn(move || {
                    peer.run(move || {
                        let mut s = TcpStream::connect("192.0.2.2:7000").unwrap();
                        s.write_all(&data).unwrap();
                    })
                });
                let (mut s, _) = listener.accept().unwrap();
                s.read_to_end(&mut got).unwrap();
                sender.join().unwrap();
            });
            assert_eq!((got.len(), fnv1a(&got)), (MB4, expect), "intact");
            // Wire-sized segments arrived (the router does not join them).
            assert!(segments >= (MB4 / 1460) as u64, "{segments} data packets");
            assert!(
                acks * 3 >= segments,
                "{acks} packets sent for {segments} received"
            );
        },
    );
}
