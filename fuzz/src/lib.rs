//! The harness the whole-stack fuzz targets share: a stack with listeners (Fast Open on one),
//! a datagram socket and a connection of its own, packets from the fuzzer, and the invariants
//! checked on everything it sends and on its tables once everything is closed.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use stack::{
    Cidr, ConnectOptions, CookieKey, Family, FastOpenMode, FastOpenServerConfig, IfaceId, Instant,
    InterfaceConfig, PacketIo, SocketId, SocketType, Stack, StackConfig, TableSizes,
};

/// The interface's MTU.
pub const MTU: usize = 1500;

/// The stack's IPv4 address (on a /24).
pub const OURS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The stack's IPv6 address (on a /64).
pub const OURS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The peer the harness connects and sends to, on each family.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The IPv6 peer.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The stack's addresses.
pub fn ours() -> Vec<IpAddr> {
    vec![OURS_V4.into(), OURS_V6.into()]
}

/// What `Early`, `Send` and `SendTo` send: a slice of one constant payload, made once for the
/// whole run (a fresh 64 KiB vector per input cost an allocation and a clear every run).
static PAYLOAD: [u8; 65535] = [0x61; 65535];

/// The packet path of the harness: hands over the fuzzer's packets, and checks every packet the
/// stack sends (fits the MTU, valid checksums, a source of ours).
#[derive(Default)]
pub struct Checked {
    pub inbox: VecDeque<Vec<u8>>,
    pub sent: usize,
    ours: Vec<IpAddr>,
}

impl PacketIo for Checked {
    fn recv(&mut self, _: IfaceId, buf: &mut [u8]) -> Option<usize> {
        let p = self.inbox.pop_front()?;
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Some(n)
    }

    fn send(&mut self, _: IfaceId, packet: &[u8]) {
        if let Err(e) = stack::fuzzing::check_emitted(packet, MTU, &self.ours) {
            panic!("the stack sent a bad packet ({e}): {packet:02x?}");
        }
        self.sent += 1;
    }
}

/// A stack with small buffers (fast to make and to free, and small enough that the fuzzer's
/// sends and packets fill them, so the buffer-full paths are reached), one interface, a Fast
/// Open listener on 7, a plain IPv6 listener on 80, a datagram socket on 53, and a connection
/// to 192.0.2.1:9.
pub fn stack() -> (Stack, Vec<SocketId>) {
    let mut config = StackConfig::default();
    config.random_seed = 1;
    config.tcp_rx_buffer = 4096;
    config.tcp_tx_buffer = 4096;
    config.udp_rx_buffer = 2048;
    config.udp_tx_buffer = 2048;
    config.udp_packets = 4;
    config.max_half_open = 64;
    let mut st = Stack::new(config);
    let ic = InterfaceConfig::new("fuzz0")
        .mtu(MTU)
        .address(Cidr::new(OURS_V4.into(), 24).unwrap())
        .address(Cidr::new(OURS_V6.into(), 64).unwrap());
    let id = st.add_interface(ic).unwrap();
    st.add_route(Cidr::default_v4(), id).unwrap();
    st.add_route(Cidr::default_v6(), id).unwrap();
    let mut sockets = Vec::new();
    let l = st.socket(Family::V4, SocketType::Stream);
    st.bind(l, SocketAddr::new(OURS_V4.into(), 7)).unwrap();
    st.listen(l, 16).unwrap();
    let key = CookieKey::from_bytes([7; 16]);
    st.set_fast_open(l, Some(FastOpenServerConfig::new(key)))
        .unwrap();
    sockets.push(l);
    let l6 = st.socket(Family::V6, SocketType::Stream);
    st.bind(l6, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 80))
        .unwrap();
    st.listen(l6, 16).unwrap();
    sockets.push(l6);
    let u = st.socket(Family::V4, SocketType::Datagram);
    st.bind(u, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 53))
        .unwrap();
    sockets.push(u);
    let c = st.socket(Family::V4, SocketType::Stream);
    let opts = ConnectOptions {
        fast_open: FastOpenMode::Cookie,
        ..ConnectOptions::default()
    };
    st.connect(c, SocketAddr::new(PEER_V4.into(), 9), opts, Instant::ZERO)
        .unwrap();
    let _ = st.queue_early(c, b"hello");
    sockets.push(c);
    (st, sockets)
}

/// Run the clock from `now` in steps until `end`, polling.
pub fn run_until(st: &mut Stack, io: &mut Checked, now: &mut Instant, end: Instant) {
    while *now < end {
        st.poll(*now, io);
        let next = st
            .poll_timeout()
            .unwrap_or(end)
            .max(*now + stack::SmolDuration::from_millis(1));
        *now = next.min(end);
    }
    st.poll(*now, io);
}

/// Close everything, let every timer run out, and check that every table is empty again.
pub fn close_and_check(st: &mut Stack, io: &mut Checked, sockets: &[SocketId], now: &mut Instant) {
    // The application takes what is queued on the listeners, then closes it all.
    for &l in &sockets[..2] {
        while let Ok((s, _)) = st.accept(l) {
            st.close(s, *now);
        }
    }
    for &s in sockets {
        st.close(s, *now);
    }
    let end = *now + stack::SmolDuration::from_secs(400);
    run_until(st, io, now, end);
    let t = st.table_sizes();
    let empty = TableSizes {
        spare_sockets: t.spare_sockets,
        events: t.events,
        fast_open_suspended: t.fast_open_suspended,
        cookies: t.cookies,
        timers: t.timers,
        ..TableSizes::default()
    };
    assert_eq!(t, empty, "every table back to empty after close and time");
}

/// Packets from `data`: each is `[flags, len_hi, len_lo, bytes…]`; flag bit 0 asks for valid
/// checksums (so that the packet gets past the check), bits 1-7 how many ms pass after it.
pub fn packets(data: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() && out.len() < 64 {
        let flags = data[i];
        let len = usize::from(u16::from_be_bytes([data[i + 1], data[i + 2]])).min(MTU);
        i += 3;
        let end = (i + len).min(data.len());
        let mut p = data[i..end].to_vec();
        i = end;
        if flags & 1 != 0 {
            stack::fuzzing::fix_checksums(&mut p);
        }
        out.push((p, u64::from(flags >> 1) * 10));
    }
    out
}

/// Whole-stack ingress: the fuzzer's packets into a stack with listeners, sockets and a
/// connection; every packet out checked; every table empty once all is closed.
pub fn ingress(data: &[u8]) {
    let (mut st, sockets) = stack();
    let mut io = Checked {
        ours: ours(),
        ..Checked::default()
    };
    let mut now = Instant::ZERO;
    st.poll(now, &mut io);
    for (p, wait) in packets(data) {
        io.inbox.push_back(p);
        st.poll(now, &mut io);
        let end = now + stack::SmolDuration::from_millis(wait);
        run_until(&mut st, &mut io, &mut now, end);
    }
    close_and_check(&mut st, &mut io, &sockets, &mut now);
}

/// One step of an API-sequence run.
#[derive(Debug, arbitrary::Arbitrary)]
pub enum Op {
    Socket { v6: bool, datagram: bool },
    Bind { s: u8, port: u8 },
    Listen { s: u8, backlog: u8 },
    Accept { s: u8 },
    Connect { s: u8, port: u8, fast_open: bool },
    Early { s: u8, len: u8 },
    Send { s: u8, len: u16 },
    SendTo { s: u8, len: u8, port: u8 },
    Recv { s: u8 },
    Shutdown { s: u8, how: u8 },
    Close { s: u8 },
    FastOpen { s: u8, on: bool },
    Packet { flags: u8, bytes: Vec<u8> },
    Wait { ms: u16 },
}

/// API calls interleaved with packets, in any order: no panic, every packet out checked, every
/// table empty once all is closed.
pub fn api(ops: Vec<Op>) {
    let (mut st, mut sockets) = stack();
    let mut io = Checked {
        ours: ours(),
        ..Checked::default()
    };
    let mut now = Instant::ZERO;
    let pick = |sockets: &Vec<SocketId>, s: u8| sockets[usize::from(s) % sockets.len()];
    let peer = |port: u8, v6: bool| -> SocketAddr {
        let ip: IpAddr = if v6 { PEER_V6.into() } else { PEER_V4.into() };
        SocketAddr::new(ip, 1 + u16::from(port))
    };
    let mut buf = vec![0u8; 4096];
    let data = &PAYLOAD;
    for op in ops.into_iter().take(200) {
        match op {
            Op::Socket { v6, datagram } => {
                if sockets.len() < 64 {
                    let fam = if v6 { Family::V6 } else { Family::V4 };
                    let ty = if datagram {
                        SocketType::Datagram
                    } else {
                        SocketType::Stream
                    };
                    sockets.push(st.socket(fam, ty));
                }
            }
            Op::Bind { s, port } => {
                let id = pick(&sockets, s);
                let ip: IpAddr = if st.socket_family(id) == Some(Family::V6) {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                };
                let _ = st.bind(id, SocketAddr::new(ip, u16::from(port)));
            }
            Op::Listen { s, backlog } => {
                let _ = st.listen(pick(&sockets, s), usize::from(backlog));
            }
            Op::Accept { s } => {
                if let Ok((new, _)) = st.accept(pick(&sockets, s)) {
                    sockets.push(new);
                }
            }
            Op::Connect { s, port, fast_open } => {
                let id = pick(&sockets, s);
                let v6 = st.socket_family(id) == Some(Family::V6);
                let opts = ConnectOptions {
                    fast_open: if fast_open {
                        FastOpenMode::Cookie
                    } else {
                        FastOpenMode::Off
                    },
                    ..ConnectOptions::default()
                };
                let _ = st.connect(id, peer(port, v6), opts, now);
            }
            Op::Early { s, len } => {
                let _ = st.queue_early(pick(&sockets, s), &data[..usize::from(len)]);
            }
            Op::Send { s, len } => {
                let _ = st.send(pick(&sockets, s), &data[..usize::from(len)]);
            }
            Op::SendTo { s, len, port } => {
                let id = pick(&sockets, s);
                let v6 = st.socket_family(id) == Some(Family::V6);
                let _ = st.send_to(id, &data[..usize::from(len)], Some(peer(port, v6)));
            }
            Op::Recv { s } => {
                let _ = st.recv_from(pick(&sockets, s), &mut buf);
            }
            Op::Shutdown { s, how } => {
                let how = match how % 3 {
                    0 => stack::Shutdown::Read,
                    1 => stack::Shutdown::Write,
                    _ => stack::Shutdown::Both,
                };
                let _ = st.shutdown(pick(&sockets, s), how);
            }
            Op::Close { s } => {
                let id = pick(&sockets, s);
                st.close(id, now);
            }
            Op::FastOpen { s, on } => {
                let config = on.then(|| FastOpenServerConfig::new(CookieKey::from_bytes([3; 16])));
                let _ = st.set_fast_open(pick(&sockets, s), config);
            }
            Op::Packet { flags, mut bytes } => {
                bytes.truncate(MTU);
                if flags & 1 != 0 {
                    stack::fuzzing::fix_checksums(&mut bytes);
                }
                io.inbox.push_back(bytes);
            }
            Op::Wait { ms } => {
                let end = now + stack::SmolDuration::from_millis(u64::from(ms));
                run_until(&mut st, &mut io, &mut now, end);
                continue;
            }
        }
        st.poll(now, &mut io);
    }
    close_and_check(&mut st, &mut io, &sockets, &mut now);
}
