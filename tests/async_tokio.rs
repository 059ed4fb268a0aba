//! The tokio adapter (`connectx_api::tokio`) against kernel peers in a private namespace:
//! thousands of connections on one runtime (current-thread and multi-thread), Fast Open through
//! the deferred connect, UDP, cancellation, a stopped stack, errors that stay.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use connectx_api::tokio::{TcpListener, TcpStream, UdpSocket};
use connectx_api::{
    Errno, FastOpenServerConfig, Net, SaEndpoints, CONNECT_DATA_IDEMPOTENT,
    CONNECT_RESUME_ON_READ_WRITE,
};
use support::{in_netns, net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A kernel echo server (tokio, kernel sockets) on its own thread and runtime, in the caller's
/// namespace; it serves until the process's test ends.
fn kernel_echo(addr: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        current_thread().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
    });
    local
}

/// `count` connections at once through the stack to a kernel echo server, each sending its own
/// message and reading it back, on `rt`.
fn many_echoes(rt: tokio::runtime::Runtime, count: usize) {
    tun_driver::kernel::raise_fd_limit(count as u64 * 2 + 1024).unwrap();
    let net = net();
    let to = kernel_echo("192.0.2.1:0");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..count {
            let net = net.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(&net, to).await?;
                let msg = format!("message {i} of many\n");
                s.write_all(msg.as_bytes()).await?;
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).await?;
                assert_eq!(back, msg.as_bytes(), "connection {i}");
                s.shutdown().await?;
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await?;
                assert!(rest.is_empty());
                std::io::Result::Ok(())
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap_or_else(|_| panic!("connection {i} hangs"))
                .unwrap()
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        }
    });
    // Every stream was dropped: no descriptor and no waiter is left.
    let t = net.tables();
    assert_eq!((t.descriptors, t.waiting_sockets), (0, 0), "{t:?}");
}

#[test]
fn two_thousand_concurrent_echoes_on_a_current_thread_runtime() {
    in_netns(
        "two_thousand_concurrent_echoes_on_a_current_thread_runtime",
        || many_echoes(current_thread(), 2000),
    );
}

#[test]
fn two_thousand_concurrent_echoes_on_a_multi_thread_runtime() {
    in_netns(
        "two_thousand_concurrent_echoes_on_a_multi_thread_runtime",
        || many_echoes(multi_thread(), 2000),
    );
}

/// The deferred connect in async form against the kernel's Fast Open server: `connectx`
/// returns before anything is sent; the first connection fetches a cookie, the second's first
/// write rides in its SYN (the kernel counts it).
#[test]
fn a_deferred_connect_carries_the_first_write_in_the_syn() {
    in_netns(
        "a_deferred_connect_carries_the_first_write_in_the_syn",
        || {
            // Client and server Fast Open, the server on listeners without the socket option.
            tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").unwrap();
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                for s in listener.incoming() {
                    let mut s = s.unwrap();
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            });
            let passive_before = support::tcp_ext("TCPFastOpenPassive");
            current_thread().block_on(async {
                for round in 0..2 {
                    let flags = CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT;
                    let mut s = TcpStream::connectx(&net, &SaEndpoints::to(to), flags)
                        .await
                        .unwrap();
                    // Nothing sent yet, but the local address is settled.
                    assert_ne!(s.local_addr().unwrap().port(), 0);
                    let request = format!("request {round}\n");
                    s.write_all(request.as_bytes()).await.unwrap();
                    // A second write during the handshake waits for it, not ENOTCONN.
                    s.write_all(b"more\n").await.unwrap();
                    let mut back = vec![0u8; request.len() + 5];
                    tokio::time::timeout(WAIT, s.read_exact(&mut back))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(&back[..request.len()], request.as_bytes());
                    let info = s.fast_open_info().unwrap().expect("Fast Open was used");
                    if round == 1 {
                        assert!(
                            info.syn_data_acked > 0,
                            "round 2's data rode in the SYN: {info:?}"
                        );
                    }
                }
            });
            assert_eq!(
                support::tcp_ext("TCPFastOpenPassive") - passive_before,
                1,
                "the kernel took data from one SYN (the second connection's)"
            );
        },
    );
}

#[test]
fn udp_sockets_send_and_receive_and_associate() {
    in_netns("udp_sockets_send_and_receive_and_associate", || {
        let net = net();
        let kernel = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
        kernel.set_read_timeout(Some(WAIT)).unwrap();
        let kernel_addr = kernel.local_addr().unwrap();
        current_thread().block_on(async {
            let s = UdpSocket::bind(&net, sa("0.0.0.0:0")).await.unwrap();
            assert_eq!(s.send_to(b"hello", kernel_addr).await.unwrap(), 5);
            let mut buf = [0u8; 64];
            let (n, from) = kernel.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello");
            // The reply is waited for asynchronously: sent after the recv is pending.
            let reply = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                kernel.send_to(b"world", from).unwrap();
                kernel
            });
            let (n, src) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((&buf[..n], src), (&b"world"[..], kernel_addr));
            let kernel = reply.join().unwrap();
            s.connect(kernel_addr).await.unwrap();
            assert_eq!(s.peer_addr().unwrap(), kernel_addr);
            s.send(b"again").await.unwrap();
            let (n, _) = kernel.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"again");
            kernel.send_to(b"back", from).unwrap();
            let n = tokio::time::timeout(WAIT, s.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"back");
        });
    });
}

/// Tasks sharing one datagram socket, and one listener, each wait on it at the same time:
/// every one is woken for what it waits for (one waiter per socket and direction holds all
/// their wakers).
#[test]
fn tasks_sharing_a_socket_all_get_woken() {
    in_netns("tasks_sharing_a_socket_all_get_woken", || {
        let net = net();
        let kernel = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
        multi_thread().block_on(async {
            let s = Arc::new(UdpSocket::bind(&net, sa("192.0.2.2:7500")).await.unwrap());
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let s = Arc::clone(&s);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 16];
                        let (n, _) = s.recv_from(&mut buf).await.unwrap();
                        buf[..n].to_vec()
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(100)).await;
            for i in 0..4u8 {
                kernel.send_to(&[i], "192.0.2.2:7500").unwrap();
            }
            let mut got: Vec<u8> = Vec::new();
            for r in readers {
                got.extend(tokio::time::timeout(WAIT, r).await.unwrap().unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [0, 1, 2, 3]);

            let l = Arc::new(TcpListener::bind(&net, sa("192.0.2.2:7501")).await.unwrap());
            let acceptors: Vec<_> = (0..3)
                .map(|_| {
                    let l = Arc::clone(&l);
                    tokio::spawn(async move { l.accept().await.map(|(_, peer)| peer) })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let clients: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect("192.0.2.2:7501").unwrap())
                .collect();
            for a in acceptors {
                tokio::time::timeout(WAIT, a)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
            }
            drop(clients);
        });
    });
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// A read on a quiet connection is polled once and then never again until data comes: its
/// task is woken by the socket alone (no polling loop); busy neighbours do not wake it.
#[test]
fn a_task_waiting_on_a_quiet_socket_is_not_woken_until_it_has_data() {
    in_netns(
        "a_task_waiting_on_a_quiet_socket_is_not_woken_until_it_has_data",
        || {
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            let echo = kernel_echo("192.0.2.1:0");
            current_thread().block_on(async {
                let mut quiet = TcpStream::connect(&net, to).await.unwrap();
                let (mut kernel_end, _) = listener.accept().unwrap();
                let polls = Arc::new(AtomicUsize::new(0));
                let reader = tokio::spawn(Counted {
                    inner: Box::pin(async move {
                        let mut buf = [0u8; 16];
                        let n = quiet.read(&mut buf).await.unwrap();
                        buf[..n].to_vec()
                    }),
                    polls: Arc::clone(&polls),
                });
                // A busy neighbour meanwhile: 200 round trips on another connection.
                let mut busy = TcpStream::connect(&net, echo).await.unwrap();
                for _ in 0..200 {
                    busy.write_all(b"ping").await.unwrap();
                    let mut b = [0u8; 4];
                    busy.read_exact(&mut b).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(
                    polls.load(Ordering::Relaxed),
                    1,
                    "the waiting read was polled again with nothing to read"
                );
                use std::io::Write;
                kernel_end.write_all(b"finally").unwrap();
                let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
                assert_eq!(got, b"finally");
                assert_eq!(polls.load(Ordering::Relaxed), 2, "woken once, for its data");
            });
        },
    );
}

/// Futures dropped half-way (a connect to a peer that never answers, a read on a quiet
/// connection, an accept nobody comes to) leave no descriptor, waiter or connection behind.
#[test]
fn cancelled_futures_leave_nothing_behind() {
    in_netns("cancelled_futures_leave_nothing_behind", || {
        let net = net();
        let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        current_thread().block_on(async {
            // 192.0.2.99 is on the link but nobody answers: the SYN goes unanswered.
            for _ in 0..50 {
                let r = tokio::time::timeout(
                    Duration::from_millis(5),
                    TcpStream::connect(&net, sa("192.0.2.99:80")),
                )
                .await;
                assert!(r.is_err(), "the connect was cancelled by the timeout");
            }
            let mut s = TcpStream::connect(&net, to).await.unwrap();
            let _kernel_end = listener.accept().unwrap();
            let mut buf = [0u8; 8];
            for _ in 0..50 {
                let r = tokio::time::timeout(Duration::from_millis(2), s.read(&mut buf)).await;
                assert!(r.is_err(), "nothing to read: the timeout cancels it");
            }
            let l = TcpListener::bind(&net, sa("192.0.2.2:7300")).await.unwrap();
            let r = tokio::time::timeout(Duration::from_millis(5), l.accept()).await;
            assert!(r.is_err());
            assert!(
                net.tables().waiting_sockets > 0,
                "the dropped futures' waiters"
            );
            drop((s, l));
        });
        let t = net.tables();
        assert_eq!(t.descriptors, 0, "{t:?}");
        assert_eq!(t.waiting_sockets, 0, "{t:?}");
        // The closed connection may wait out TIME-WAIT (it closed first); no socket stays.
        let deadline = std::time::Instant::now() + WAIT;
        while net.connection_counts().0 != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "connections left: {:?}",
                net.connection_counts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Stopping the stack fails every pending operation with an error (no hang): reads, accepts,
/// connects, datagram receives, on both runtimes.
#[test]
fn stopping_the_stack_fails_every_pending_future() {
    in_netns("stopping_the_stack_fails_every_pending_future", || {
        for rt in [current_thread(), multi_thread()] {
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            rt.block_on(async {
                let mut s = TcpStream::connect(&net, to).await.unwrap();
                let _kernel_end = listener.accept().unwrap();
                let l = TcpListener::bind(&net, sa("192.0.2.2:7301")).await.unwrap();
                let u = UdpSocket::bind(&net, sa("192.0.2.2:7302")).await.unwrap();
                let read = tokio::spawn(async move {
                    let mut buf = [0u8; 8];
                    s.read(&mut buf).await
                });
                let accept = tokio::spawn(async move { l.accept().await.map(|_| ()) });
                let recv = tokio::spawn(async move {
                    let mut buf = [0u8; 8];
                    u.recv_from(&mut buf).await.map(|_| ())
                });
                let n2 = net.clone();
                let connect = tokio::spawn(async move {
                    TcpStream::connect(&n2, sa("192.0.2.99:80"))
                        .await
                        .map(|_| ())
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                net.stop();
                let read = tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
                assert_eq!(Errno::of(&read.unwrap_err()), Some(Errno::ENETDOWN));
                for (what, r) in [
                    ("accept", accept),
                    ("recv_from", recv),
                    ("connect", connect),
                ] {
                    let r = tokio::time::timeout(WAIT, r)
                        .await
                        .unwrap_or_else(|_| panic!("{what} hangs after stop"))
                        .unwrap();
                    let e = r.expect_err(what);
                    assert!(
                        matches!(Errno::of(&e), Some(Errno::ENETDOWN | Errno::EINTR)),
                        "{what}: {e}"
                    );
                }
            });
        }
    });
}

/// A refused connection, and a connection the peer resets: the error comes back on every later
/// operation (not once, then end-of-stream).
#[test]
fn a_connection_error_is_returned_again_on_every_later_operation() {
    in_netns(
        "a_connection_error_is_returned_again_on_every_later_operation",
        || {
            let net = net();
            let listener = std::net::TcpListener::bind("192.0.2.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            current_thread().block_on(async {
                let e = TcpStream::connect(&net, sa("192.0.2.1:9"))
                    .await
                    .unwrap_err();
                assert_eq!(Errno::of(&e), Some(Errno::ECONNREFUSED));

                let mut s = TcpStream::connect(&net, to).await.unwrap();
                let (kernel_end, _) = listener.accept().unwrap();
                // The kernel closes with our data unread: it sends a reset.
                s.write_all(b"never read").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(kernel_end);
                let mut buf = [0u8; 8];
                let first = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap();
                assert_eq!(Errno::of(&first.unwrap_err()), Some(Errno::ECONNRESET));
                for _ in 0..3 {
                    let again = s.read(&mut buf).await;
                    assert_eq!(Errno::of(&again.unwrap_err()), Some(Errno::ECONNRESET));
                    let w = s.write(b"x").await;
                    assert_eq!(Errno::of(&w.unwrap_err()), Some(Errno::ECONNRESET));
                }
            });
        },
    );
}

/// A listener accepts the kernel's connections asynchronously, serves Fast Open as configured
/// (the kernel's Fast Open client gets a cookie, then sends data in its SYN), and an accept
/// pending when the descriptor is closed underneath completes with an error.
#[test]
fn a_listener_accepts_kernel_clients_and_ends_its_pending_accept_when_closed() {
    in_netns(
        "a_listener_accepts_kernel_clients_and_ends_its_pending_accept_when_closed",
        || {
            tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1").unwrap();
            let net: Net = net();
            current_thread().block_on(async {
                let key = "a0bf63f7-ed803d81-cd641d30-cebc4a90".parse().unwrap();
                let l = TcpListener::bind_with(
                    &net,
                    sa("192.0.2.2:7400"),
                    Some(FastOpenServerConfig::new(key)),
                )
                .unwrap();
                // 20 plain clients, then two with Fast Open, one after the other.
                let clients = std::thread::spawn(|| {
                    let mut back: Vec<String> = (0..20)
                        .map(|i| {
                            let out = support::kernel_client(
                                sa("192.0.2.2:7400"),
                                format!("c{i}").as_bytes(),
                            );
                            String::from_utf8(out).unwrap()
                        })
                        .collect();
                    for i in 20..22 {
                        back.push(support::kernel_tfo_client(
                            "192.0.2.2",
                            7400,
                            &format!("c{i}"),
                        ));
                    }
                    back
                });
                let mut infos = Vec::new();
                for _ in 0..22 {
                    let (mut s, peer) = tokio::time::timeout(WAIT, l.accept())
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(peer.ip(), sa("192.0.2.1:0").ip());
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    s.write_all(&got).await.unwrap();
                    infos.push(net.server_fast_open_info(s.fd()).unwrap());
                }
                let back = clients.join().unwrap();
                for (i, b) in back.iter().enumerate() {
                    assert_eq!(b, &format!("c{i}"));
                }
                assert!(infos[20].is_some_and(|i| i.cookie_requested), "{infos:?}");
                let in_syn = infos[21].expect("the second Fast Open client used it");
                assert_eq!(
                    (in_syn.cookie_valid, in_syn.syn_data),
                    (Some(true), 3),
                    "{in_syn:?}"
                );

                let fd = l.fd();
                let pending = async { l.accept().await.map(|_| ()) };
                let closer = async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    net.close(fd).unwrap();
                };
                let (r, ()) = tokio::join!(pending, closer);
                // EBADF, or ENOTSOCK when the number is also a kernel descriptor of the process
                // (the stack's descriptors are numbers of its own).
                let e = Errno::of(&r.unwrap_err());
                assert!(matches!(e, Some(Errno::EBADF | Errno::ENOTSOCK)), "{e:?}");
            });
        },
    );
}

/// Congestion control on the adapter's sockets: a connecting stream switched to BBR, and a
/// listener whose accepted connections run BBR, both send on it (their model shows).
#[test]
fn streams_and_listeners_take_a_congestion_control() {
    in_netns("streams_and_listeners_take_a_congestion_control", || {
        let net = net();
        let to = kernel_echo("192.0.2.1:0");
        current_thread().block_on(async {
            let mut s = TcpStream::connect(&net, to).await.unwrap();
            s.set_congestion_control(connectx_api::CongestionControl::Bbr)
                .unwrap();
            let data = vec![7u8; 256 << 10];
            s.write_all(&data).await.unwrap();
            let mut back = vec![0u8; data.len()];
            s.read_exact(&mut back).await.unwrap();
            let info = net.recovery_info(s.fd()).unwrap();
            assert!(info.bbr.is_some_and(|b| b.bw > 0), "{info:?}");

            let l = TcpListener::bind(&net, sa("192.0.2.2:7601")).await.unwrap();
            l.set_congestion_control(connectx_api::CongestionControl::Bbr)
                .unwrap();
            let client = std::thread::spawn(|| {
                let mut k = std::net::TcpStream::connect("192.0.2.2:7601").unwrap();
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut k, &mut got).unwrap();
                got.len()
            });
            let (mut a, _) = l.accept().await.unwrap();
            a.write_all(&data).await.unwrap();
            let info = net.recovery_info(a.fd()).unwrap();
            a.shutdown().await.unwrap();
            drop(a);
            assert_eq!(
                tokio::task::spawn_blocking(move || client.join().unwrap())
                    .await
                    .unwrap(),
                data.len()
            );
            assert!(info.bbr.is_some(), "{info:?}");
            assert_eq!(
                net.congestion_control(l.fd()).unwrap(),
                connectx_api::CongestionControl::Bbr
            );
        });
    });
}
