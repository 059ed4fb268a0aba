//! The engine against the Linux kernel's TCP (root; each test in a network namespace of its
//! own, with its own TUN device): a burst of kernel clients against a small listen backlog is
//! never refused (SYN cookies answer the SYNs past it, as Linux's do), thousands of sequential connections from the stack reuse ephemeral ports
//! across remotes while avoiding tuples in TIME-WAIT, the stack's TIME-WAIT entries answer
//! the kernel's FIN, and a bulk transfer does not set the runtime's alarm at every round.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectx_api::{Net, StackConfig};
use stack::{Family, SocketType};
use support::{in_netns, kernel_echo, net, tcp_ext};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A counter of the kernel's `Tcp` MIB (`/proc/net/snmp`) in the calling thread's namespace.
fn tcp_snmp(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    lines[0]
        .split_whitespace()
        .zip(lines[1].split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Tcp counter {name}"))
}

/// The kernel's TCP sockets in this namespace, as `ss -tan` prints them (state, local, peer).
fn kernel_sockets() -> Vec<(String, String, String)> {
    let out = std::process::Command::new("ss")
        .arg("-tan")
        .output()
        .expect("ss runs");
    assert!(out.status.success(), "ss -tan failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[0].to_string(), f[3].to_string(), f[4].to_string()))
        })
        .collect()
}

// ----- A. A burst of kernel clients against a small backlog -----

#[test]
fn a_kernel_client_burst_against_a_small_backlog_is_never_refused() {
    in_netns(
        "a_kernel_client_burst_against_a_small_backlog_is_never_refused",
        || {
            const CLIENTS: usize = 50;
            const BACKLOG: usize = 16;
            let net = net();
            let l = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.bind(l, sa("192.0.2.2:8080")).unwrap();
            net.listen(l, BACKLOG).unwrap();
            let syn_retrans = tcp_ext("TCPSynRetrans");
            let started = Instant::now();
            let called = Arc::new(AtomicUsize::new(0));
            let clients: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let called = Arc::clone(&called);
                    std::thread::spawn(move || -> Result<Duration, std::io::Error> {
                        called.fetch_add(1, Ordering::SeqCst);
                        let t0 = Instant::now();
                        let mut s = std::net::TcpStream::connect_timeout(
                            &sa("192.0.2.2:8080"),
                            Duration::from_secs(10),
                        )
                        .map_err(|e| {
                            std::io::Error::new(e.kind(), format!("{e} after {:?}", t0.elapsed()))
                        })?;
                        s.set_read_timeout(Some(Duration::from_secs(20)))?;
                        s.write_all(&[i as u8])?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)?;
                        assert_eq!(b[0], i as u8, "client {i} got its own byte back");
                        Ok(t0.elapsed())
                    })
                })
                .collect();
            // Nobody accepts until every client has called connect (and its SYN is out).
            while called.load(Ordering::SeqCst) < CLIENTS {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
            // Longer than the clients' connect timeout: a missing client ends the loop.
            net.set_timeouts(l, Some(Duration::from_secs(15)), None)
                .unwrap();
            let mut peers = HashSet::new();
            let mut accept_error = None;
            // The server keeps accepting while each connection is served on a thread of its
            // own (as tun_server does), so the queue drains as fast as connections arrive.
            let mut servers = Vec::new();
            for _ in 0..CLIENTS {
                let (fd, peer) = match net.accept(l) {
                    Ok(a) => a,
                    Err(e) => {
                        accept_error = Some(e);
                        break;
                    }
                };
                peers.insert(peer);
                let net = net.clone();
                servers.push(std::thread::spawn(move || {
                    net.set_timeouts(fd, Some(Duration::from_secs(20)), None)
                        .unwrap();
                    let mut b = [0u8; 1];
                    assert_eq!(net.recv(fd, &mut b).unwrap(), 1, "{peer} sent its byte");
                    net.send(fd, &b).unwrap();
                    net.close(fd).unwrap();
                }));
            }
            for s in servers {
                s.join().unwrap();
            }
            let results: Vec<Result<Duration, std::io::Error>> =
                clients.into_iter().map(|h| h.join().unwrap()).collect();
            // When each client had its byte back (ms from its connect call): the waves of SYN
            // retransmissions show.
            let mut times: Vec<u128> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|t| t.as_millis()))
                .collect();
            times.sort_unstable();
            let retransmitted = tcp_ext("TCPSynRetrans") - syn_retrans;
            let refused = results
                .iter()
                .filter(|r| {
                    r.as_ref()
                        .err()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                })
                .count();
            let failed: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            assert_eq!(
                refused, 0,
                "a full backlog drops SYNs, it never refuses them: {failed:?}"
            );
            assert!(
                failed.is_empty(),
                "every client got in and exchanged data within its 10 s connect timeout ({} \
                 failed, {} accepted, accept: {accept_error:?}, {retransmitted} SYN \
                 retransmissions; the others were served after (ms) {times:?}): {failed:?}",
                failed.len(),
                peers.len()
            );
            assert_eq!(peers.len(), CLIENTS);
            let counters = net.tcp_counters();
            assert!(
                counters.SyncookiesSent > 0 && counters.SyncookiesRecv > 0,
                "the SYNs past the backlog got SYN cookies, and came back: {counters:?}"
            );
            eprintln!(
                "{CLIENTS} kernel clients, backlog {BACKLOG}: all in after {:?}, {retransmitted} \
                 SYN retransmissions, served after (ms) {times:?}",
                started.elapsed()
            );
            net.close(l).unwrap();
        },
    );
}

// ----- B. Thousands of sequential connections from the stack -----

#[test]
fn two_thousand_sequential_connections_share_ports_and_avoid_time_wait_tuples() {
    in_netns(
        "two_thousand_sequential_connections_share_ports_and_avoid_time_wait_tuples",
        || {
            const N: usize = 2000;
            // 1,500 ephemeral ports for 2,000 connections (1,000 to each of two servers), each
            // leaving a TIME-WAIT entry on the stack: the count only fits if one port serves
            // both servers, and a tuple in TIME-WAIT is never taken again.
            let mut config = StackConfig::default();
            config.ephemeral_ports = 40000..=41499;
            config.tcp_rx_buffer = 16 << 10;
            config.tcp_tx_buffer = 16 << 10;
            let net = Net::builder()
                .tun("cx0")
                .address("192.0.2.2/24")
                .peer("192.0.2.1/24")
                .stack_config(config)
                .start()
                .unwrap();
            let (s7, h7) = kernel_echo("192.0.2.1:7", N / 2);
            let (s8, h8) = kernel_echo("192.0.2.1:8", N / 2);
            let started = Instant::now();
            let mut tuples = HashSet::new();
            let mut remotes_of: HashMap<u16, HashSet<u16>> = HashMap::new();
            for i in 0..N {
                let to = if i % 2 == 0 { s7 } else { s8 };
                let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
                net.connect(fd, to)
                    .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"));
                let local = net.local_addr(fd).unwrap();
                assert!(
                    (40000..=41499).contains(&local.port()),
                    "an ephemeral port: {local}"
                );
                assert!(
                    tuples.insert((local, to)),
                    "connection {i}: tuple {local} -> {to} reused while in TIME-WAIT"
                );
                remotes_of
                    .entry(local.port())
                    .or_default()
                    .insert(to.port());
                let msg = format!("{:06}", i);
                assert_eq!(net.send(fd, msg.as_bytes()).unwrap(), 6);
                let mut back = Vec::new();
                let mut buf = [0u8; 16];
                while back.len() < 6 {
                    let n = net.recv(fd, &mut buf).unwrap();
                    assert!(n > 0, "connection {i}: the echo ended early");
                    back.extend_from_slice(&buf[..n]);
                }
                assert_eq!(back, msg.as_bytes());
                net.close(fd).unwrap();
            }
            let elapsed = started.elapsed();
            h7.join().unwrap();
            h8.join().unwrap();
            let shared = remotes_of.values().filter(|r| r.len() == 2).count();
            assert!(
                shared >= N - 1500,
                "ports served both servers ({shared} of {} ports)",
                remotes_of.len()
            );
            assert!(
                elapsed < Duration::from_secs(60),
                "all tuples are distinct only because all of them are within one TIME-WAIT"
            );
            eprintln!(
                "{N} sequential connections in {elapsed:?}; {} ports, {shared} shared",
                remotes_of.len()
            );
        },
    );
}

// ----- C. The stack's TIME-WAIT answers the kernel's FIN -----

#[test]
fn the_stack_closes_first_and_the_kernel_is_not_left_in_last_ack() {
    in_netns(
        "the_stack_closes_first_and_the_kernel_is_not_left_in_last_ack",
        || {
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:9000").unwrap();
            let retrans = tcp_snmp("RetransSegs");
            let mut s = connectx_api::TcpStream::connect(&net, sa("192.0.2.1:9000")).unwrap();
            let local = s.local_addr().unwrap();
            let (mut k, peer) = listener.accept().unwrap();
            assert_eq!(peer, local);
            k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"bye").unwrap();
            // The stack closes first ...
            drop(s);
            let mut got = Vec::new();
            k.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"bye");
            // ... then the kernel, whose FIN finds the stack in TIME-WAIT.
            let fin_sent = Instant::now();
            drop(k);
            let ours = |v: &[(String, String, String)]| -> Vec<(String, String, String)> {
                v.iter()
                    .filter(|(_, _, p)| *p == local.to_string())
                    .cloned()
                    .collect()
            };
            let mut last = Vec::new();
            while fin_sent.elapsed() < Duration::from_secs(1) {
                last = ours(&kernel_sockets());
                if last.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                last.is_empty(),
                "1 s after its FIN the kernel still has the connection (LAST-ACK: the stack did \
                 not acknowledge the FIN): {last:?}"
            );
            assert_eq!(
                tcp_snmp("RetransSegs") - retrans,
                0,
                "the kernel never had to retransmit (its FIN was acknowledged at once)"
            );
            // The kernel, the passive closer, keeps no TIME-WAIT of its own: the stack has it.
            let tw: Vec<_> = kernel_sockets()
                .into_iter()
                .filter(|(st, _, _)| st == "TIME-WAIT")
                .collect();
            assert!(tw.is_empty(), "{tw:?}");
        },
    );
}

// ----- D. Calls on one descriptor from several threads -----

/// A kernel server that accepts one connection, keeps it open without writing, and returns
/// what it read once the stack closes.
fn silent_server() -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
    let to = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    (to, h)
}

#[test]
fn disconnectx_from_another_thread_wakes_a_blocked_recv() {
    in_netns(
        "disconnectx_from_another_thread_wakes_a_blocked_recv",
        || {
            let net = net();
            let (to, server) = silent_server();
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.connect(fd, to).unwrap();
            // Without a wake-up the recv would end only by this timeout.
            net.set_timeouts(fd, Some(Duration::from_secs(5)), None)
                .unwrap();
            let reader = {
                let net = net.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut buf = [0u8; 16];
                    let r = net.recv(fd, &mut buf);
                    (r.map_err(|e| e.raw_os_error()), started.elapsed())
                })
            };
            std::thread::sleep(Duration::from_millis(200));
            net.disconnectx(
                fd,
                connectx_api::SAE_ASSOCID_ANY,
                connectx_api::SAE_CONNID_ANY,
            )
            .unwrap();
            let (r, waited) = reader.join().unwrap();
            assert!(
                waited < Duration::from_secs(2),
                "the blocked recv returned when the connection went ({waited:?}): {r:?}"
            );
            assert_eq!(r, Ok(0), "the disconnected descriptor reads 0, as XNU's");
            net.close(fd).unwrap();
            server.join().unwrap();
        },
    );
}

#[test]
fn a_recv_blocked_on_a_descriptor_closed_and_reused_meanwhile_is_ebadf() {
    in_netns(
        "a_recv_blocked_on_a_descriptor_closed_and_reused_meanwhile_is_ebadf",
        || {
            let net = net();
            let (to, server) = silent_server();
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.connect(fd, to).unwrap();
            net.set_timeouts(fd, Some(Duration::from_secs(5)), None)
                .unwrap();
            let reader = {
                let net = net.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16];
                    net.recv(fd, &mut buf).map_err(|e| e.raw_os_error())
                })
            };
            std::thread::sleep(Duration::from_millis(200));
            // Close it, and give its number to a new socket at once (lowest free first).
            let again = {
                let st = net.clone();
                st.close(fd).unwrap();
                st.socket(Family::V4, SocketType::Stream).unwrap()
            };
            assert_eq!(again, fd, "the number is given again");
            assert_eq!(
                reader.join().unwrap(),
                Err(Some(connectx_api::Errno::EBADF.0)),
                "the waiting call does not carry on with the new socket"
            );
            net.close(again).unwrap();
            server.join().unwrap();
        },
    );
}

/// Sends that nobody waits on afterwards (non-blocking, fire and forget) leave at once, whatever
/// the runtime is doing when they are made: none waits for a retransmission timer.
#[test]
fn fire_and_forget_sends_leave_at_once() {
    in_netns("fire_and_forget_sends_leave_at_once", || {
        let net = net();
        let l = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
        net.connect(fd, to).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        net.set_nonblocking(fd, true).unwrap();
        let mut slowest = Duration::ZERO;
        for i in 0..300u32 {
            let started = Instant::now();
            assert_eq!(net.send(fd, &[i as u8]).unwrap(), 1);
            let mut b = [0u8; 1];
            peer.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8);
            slowest = slowest.max(started.elapsed());
        }
        // A segment left behind would wait for smoltcp's 1 s retransmission timer.
        assert!(
            slowest < Duration::from_millis(500),
            "the slowest send took {slowest:?} to arrive"
        );
        net.close(fd).unwrap();
    });
}

// ----- E. Blind resets (RFC 5961), side by side with the kernel -----

/// (source, destination, seq, ack, payload length) of each TCP segment of a raw-IP pcap.
fn segments(pcap: &[u8]) -> Vec<(SocketAddr, SocketAddr, u32, u32, usize)> {
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[i + 8..i + 12].try_into().unwrap()) as usize;
        let p = &pcap[i + 16..(i + 16 + len).min(pcap.len())];
        i += 16 + len;
        if p.len() < 40 || p[0] >> 4 != 4 || p[9] != 6 {
            continue;
        }
        let ihl = usize::from(p[0] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let t = &p[ihl..];
        let doff = usize::from(t[12] >> 4) * 4;
        let ip = |o: usize| std::net::Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
        let port = |o: usize| u16::from_be_bytes([t[o], t[o + 1]]);
        let word = |o: usize| u32::from_be_bytes(t[o..o + 4].try_into().unwrap());
        out.push((
            SocketAddr::from((ip(12), port(0))),
            SocketAddr::from((ip(16), port(2))),
            word(4),
            word(8),
            total - ihl - doff,
        ));
    }
    out
}

/// Send a forged RST from `from` to `to` with sequence number `seq`, through a raw socket of
/// the calling thread's namespace (python3 builds the packet and its checksums).
fn forge_rst(from: SocketAddr, to: SocketAddr, seq: u32) {
    let py = r#"
import socket, struct, sys
src, sport, dst, dport, seq = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s_, d_ = socket.inet_aton(src), socket.inet_aton(dst)
tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x04, 0, 0, 0)
c = csum(s_ + d_ + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s_, d_)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
r.sendto(ip + tcp, (dst, 0))
"#;
    let status = std::process::Command::new("timeout")
        .args(["10", "python3", "-c", py])
        .args([
            from.ip().to_string(),
            from.port().to_string(),
            to.ip().to_string(),
            to.port().to_string(),
            seq.to_string(),
        ])
        .status()
        .expect("python3");
    assert!(status.success(), "the raw socket sent the RST");
}

/// The same blind RST (in the window, not at exactly the next expected sequence number) sent to
/// both ends of one connection, the kernel's and the stack's: each answers with a challenge
/// ACK (TcpExt TCPChallengeACK, and the stack's counter of the same name) and keeps the
/// connection; a RST at exactly the expected number then resets the stack's end.
#[test]
fn a_blind_rst_is_challenged_by_the_stack_as_by_the_kernel() {
    in_netns(
        "a_blind_rst_is_challenged_by_the_stack_as_by_the_kernel",
        || {
            let pcap = support::PcapBuffer::default();
            let net = Net::builder()
                .tun("cx0")
                .address("192.0.2.2/24")
                .peer("192.0.2.1/24")
                .capture(Box::new(pcap.clone()))
                .start()
                .unwrap();
            let l = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let server = l.local_addr().unwrap();
            let fd = net.socket(Family::V4, SocketType::Stream).unwrap();
            net.connect(fd, server).unwrap();
            let (mut k, _) = l.accept().unwrap();
            k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            net.set_timeouts(fd, Some(Duration::from_secs(5)), None)
                .unwrap();
            let mut buf = [0u8; 16];
            net.send(fd, b"ping").unwrap();
            k.read_exact(&mut buf[..4]).unwrap();
            k.write_all(b"pong").unwrap();
            assert_eq!(net.recv(fd, &mut buf).unwrap(), 4);
            std::thread::sleep(Duration::from_millis(100));
            let client = net.local_addr(fd).unwrap();
            let segs = segments(&pcap.0.lock().unwrap());
            // What each end expects next: the ack of the last segment from the other one.
            let stack_expects = segs
                .iter()
                .rev()
                .find(|s| s.0 == client)
                .map(|s| s.3)
                .expect("a segment from the stack");
            let kernel_expects = segs
                .iter()
                .rev()
                .find(|s| s.0 == server)
                .map(|s| s.3)
                .expect("a segment from the kernel");
            let kernel_before = tcp_ext("TCPChallengeACK");
            forge_rst(client, server, kernel_expects.wrapping_add(1000));
            forge_rst(server, client, stack_expects.wrapping_add(1000));
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                tcp_ext("TCPChallengeACK") - kernel_before,
                1,
                "the kernel challenged its blind RST"
            );
            assert_eq!(net.tcp_counters().TCPChallengeACK, 1, "so did the stack");
            // Both ends still talk.
            net.send(fd, b"again").unwrap();
            k.read_exact(&mut buf[..5]).unwrap();
            assert_eq!(&buf[..5], b"again");
            k.write_all(b"still").unwrap();
            assert_eq!(net.recv(fd, &mut buf).unwrap(), 5);
            // A RST at exactly what the stack expects resets its end.
            std::thread::sleep(Duration::from_millis(100));
            let segs = segments(&pcap.0.lock().unwrap());
            let stack_expects = segs
                .iter()
                .rev()
                .find(|s| s.0 == client)
                .map(|s| s.3)
                .unwrap();
            forge_rst(server, client, stack_expects);
            let r = net.recv(fd, &mut buf);
            assert_eq!(
                r.map_err(|e| e.raw_os_error()),
                Err(Some(connectx_api::Errno::ECONNRESET.0))
            );
            net.close(fd).unwrap();
        },
    );
}

/// Under a bulk transfer, the loss recovery layer moves the connection's timer later with each
/// acknowledgement. The runtime's alarm only ever moves earlier: it goes off early now and
/// then, and is set again from there, instead of being set again at every round (a
/// `timerfd_settime` that reprograms the CPU's timer each time, its time being 2–3 ms ahead).
#[test]
fn the_runtime_alarm_is_not_set_again_for_each_acknowledgement() {
    in_netns(
        "the_runtime_alarm_is_not_set_again_for_each_acknowledgement",
        || {
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            let reader = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                std::io::copy(&mut s, &mut std::io::sink()).unwrap()
            });
            let mut stream = connectx_api::TcpStream::connect(&net, to).unwrap();
            let chunk = vec![0x5au8; 64 << 10];
            let total = 64 << 20;
            let mut sent = 0;
            while sent < total {
                sent += stream.write(&chunk).unwrap();
            }
            stream.shutdown(connectx_api::Shutdown::Write).unwrap();
            assert_eq!(reader.join().unwrap(), sent as u64);
            let c = net.runtime_counters();
            // The runtime did run (calls run many of the rounds themselves).
            assert!(c.rounds > 30, "{c:?}");
            // Each setting follows the alarm going off early, but for the few that move it
            // earlier: about 100 settings for 60 wake-ups over 32 MB, 35 for 19 on a busy
            // machine. Set at every round, it was set some 750 times over 32 MB, never going
            // off.
            assert!(
                c.alarm_settings <= 2 * c.alarm_wakeups + 40,
                "the alarm was set {} times in {} rounds, for {} wake-ups",
                c.alarm_settings,
                c.rounds,
                c.alarm_wakeups
            );
        },
    );
}
