//! `tun_client`: connect through the userspace stack with `connectx(2)`, and show what happened.
//!
//! With no arguments (as root) it is a self-contained demo: a private network namespace, a TUN
//! device in it, a kernel echo server behind it, and connections made with `connectx` — nothing
//! outside this process is touched, and everything disappears with it.
//!
//! Run `tun_client --help` for the flags.

mod common;

use std::io::{IoSlice, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{json_string, kernel_counter, number, opt, recovery_json, value};
use connectx_api::{
    Errno, Family, FastOpenInfo, Net, PollFd, SaEndpoints, Shutdown, SocketType,
    CONNECT_DATA_AUTHENTICATED, CONNECT_DATA_IDEMPOTENT, CONNECT_RESUME_ON_READ_WRITE, POLLOUT,
    SAE_ASSOCID_ANY, SAE_CONNID_ANY,
};

const HELP: &str = "\
tun_client — connect through a userspace TCP/IP stack with Darwin's connectx(2)

USAGE:
    sudo tun_client                      the demo: a private namespace, a TUN device, a kernel
                                         echo server, and connectx over TCP and UDP
    tun_client [DEVICE OPTIONS]... --connect ADDR:PORT [OPTIONS]

DEVICES (repeatable; --local, --peer and --route apply to the device named before them):
    --tun NAME          create TUN device NAME (or attach to a persistent one)
    --tun-fd N          adopt open descriptor N: a TUN device, or a SOCK_SEQPACKET/SOCK_DGRAM
                        socket carrying one raw IP packet per message
    --local CIDR        the stack's address on the device, e.g. 192.0.2.2/24 (repeatable)
    --peer CIDR         the kernel's address on a TUN device this program creates (repeatable)
    --route CIDR        a route through the device; `default` for both default routes
                        (repeatable; without any --route the first device carries the defaults)
    --mtu N             MTU of the device named before it (or of every device, if given first)

CONNECTION:
    --connect ADDR:PORT destination; IPv6 as [ADDR]:PORT
    --srcif NAME|INDEX  leave through this device (connectx's sae_srcif), from an address of
                        it, whatever the routes say
    --srcaddr IP[:PORT] connect from this address (and port; IPv6 as [IP]:PORT), as bind then
                        connect would (sae_srcaddr); with --srcif it must be on that device
    --send TEXT         what to send (default \"hello\\n\")
    --udp               UDP through an association: connectx (the text as its first datagram),
                        one reply received, disconnectx
    --tfo               TCP Fast Open (CONNECT_DATA_IDEMPOTENT): the data rides in the SYN when
                        a cookie is cached; otherwise the SYN asks for one. With --count the
                        connections share one cookie cache
    --tfo-no-cookie     SYN data without a cookie (CONNECT_DATA_AUTHENTICATED)
    --resume            CONNECT_RESUME_ON_READ_WRITE: connectx returns at once and the data goes
                        by a write after it (as curl, FFmpeg, shadowsocks and unbound do)
    --count N           connections in sequence, in this one process (default 1)
    --timeout-ms N      give up on a connection after N ms (default 5000)
    --json              one JSON object per connection on stdout, then one line
                        {\"counters\":{...}} with the stack's Fast Open counters

Each TCP connection sends the text, shuts down its sending side and reads until the peer closes.
Errors are one line on stderr, naming the call and its errno as the JSON's \"errno\" does; the
exit code is 1 if any connection failed, 2 for bad usage.
";

struct Args {
    devices: common::Devices,
    connect: Option<SocketAddr>,
    /// `--srcif`: a device name or a kernel interface index.
    srcif: Option<String>,
    /// `--srcaddr`.
    srcaddr: Option<SocketAddr>,
    send: String,
    udp: bool,
    /// connectx flags: --tfo, --tfo-no-cookie, --resume.
    flags: u32,
    count: usize,
    timeout: Duration,
    json: bool,
}

fn parse_args(argv: Vec<String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        devices: common::Devices::default(),
        connect: None,
        srcif: None,
        srcaddr: None,
        send: "hello\n".into(),
        udp: false,
        flags: 0,
        count: 1,
        timeout: Duration::from_millis(5000),
        json: false,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        if a.devices.take(&flag, &mut it)? {
            continue;
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--connect" => {
                let v = value(&mut it, "--connect")?;
                let addr: SocketAddr = v.parse().map_err(|_| {
                    format!("--connect: `{v}` is not ADDR:PORT (IPv6 as [ADDR]:PORT, e.g. [2001:db8::1]:7)")
                })?;
                if addr.port() == 0 {
                    return Err(format!("--connect: port 0 in `{v}` is not a destination"));
                }
                a.connect = Some(addr);
            }
            "--srcif" => a.srcif = Some(value(&mut it, "--srcif")?),
            "--srcaddr" => {
                let v = value(&mut it, "--srcaddr")?;
                let addr = v
                    .parse::<SocketAddr>()
                    .or_else(|_| {
                        v.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 0))
                    })
                    .map_err(|_| {
                        format!(
                            "--srcaddr: `{v}` is not IP or IP:PORT (IPv6 with a port as [IP]:PORT)"
                        )
                    })?;
                a.srcaddr = Some(addr);
            }
            "--send" => a.send = value(&mut it, "--send")?,
            "--udp" => a.udp = true,
            "--tfo" => a.flags |= CONNECT_DATA_IDEMPOTENT,
            "--tfo-no-cookie" => a.flags |= CONNECT_DATA_IDEMPOTENT | CONNECT_DATA_AUTHENTICATED,
            "--resume" => a.flags |= CONNECT_RESUME_ON_READ_WRITE,
            "--json" => a.json = true,
            "--count" => {
                let v = value(&mut it, "--count")?;
                a.count = number(&v, "--count")?;
            }
            "--timeout-ms" => {
                let v = value(&mut it, "--timeout-ms")?;
                a.timeout = Duration::from_millis(number(&v, "--timeout-ms")?);
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if a.devices.list.is_empty() {
        return Err(
            "no device: give --tun NAME or --tun-fd N (or no arguments at all for the demo)".into(),
        );
    }
    if a.connect.is_none() {
        return Err(
            "--connect ADDR:PORT is required (or run with no arguments for the demo)".into(),
        );
    }
    Ok(Some(a))
}

/// What one connection did.
#[derive(Default)]
struct Report {
    ok: bool,
    errno: Option<Errno>,
    /// The call that failed: `connectx`, `send`, `recv`, `disconnectx`.
    failed_in: Option<&'static str>,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    connect_us: Option<u128>,
    ttfb_us: Option<u128>,
    sent: usize,
    received: Vec<u8>,
    tfo: FastOpenInfo,
    recovery: Option<connectx_api::RecoveryInfo>,
}

impl Report {
    fn json(&self, conn: usize) -> String {
        format!(
            "{{\"conn\":{conn},\"ok\":{},\"errno\":{},\"failed_in\":{},\"local\":{},\"remote\":{},\"connect_us\":{},\"ttfb_us\":{},\"sent\":{},\"received\":{},\"tfo\":{{\"cookie_requested\":{},\"cookie_received\":{},\"syn_data_sent\":{},\"syn_data_acked\":{},\"fallback\":{}}},\"recovery\":{}}}",
            self.ok,
            opt(&self.errno.map(|e| e.name()), true),
            opt(&self.failed_in, true),
            opt(&self.local, true),
            opt(&self.remote, true),
            opt(&self.connect_us, false),
            opt(&self.ttfb_us, false),
            self.sent,
            json_string(&self.received),
            self.tfo.cookie_requested,
            opt(&self.tfo.cookie_received, false),
            self.tfo.syn_data_sent,
            self.tfo.syn_data_acked,
            opt(&self.tfo.fallback.map(|f| f.name()), true),
            recovery_json(self.recovery),
        )
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::of(e).unwrap_or(Errno::EINVAL)
}

/// One TCP exchange: connectx (from `from`'s sae_srcif/sae_srcaddr) with the text as iov data,
/// half-close, read to the end.
fn tcp_exchange(
    net: &Net,
    from: SaEndpoints,
    to: SocketAddr,
    text: &[u8],
    timeout: Duration,
    flags: u32,
) -> Report {
    let mut r = Report {
        remote: Some(to),
        ..Report::default()
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let mut stage = "connectx";
    let result = (|| -> std::io::Result<()> {
        let family = if to.is_ipv4() { Family::V4 } else { Family::V6 };
        let fd = net.socket(family, SocketType::Stream)?;
        let _close = Closer(net, fd);
        net.set_nonblocking(fd, true)?;
        let mut queued = 0;
        let ep = SaEndpoints {
            dstaddr: Some(to),
            ..from
        };
        let started = if flags & CONNECT_RESUME_ON_READ_WRITE != 0 {
            // connectx returns at once; the first write starts the connection and says how
            // many bytes it took (into the SYN, with a cookie).
            net.connectx(fd, &ep, SAE_ASSOCID_ANY, flags, &[], None, None)?;
            net.send(fd, text).map(|n| queued = n)
        } else {
            net.connectx(
                fd,
                &ep,
                SAE_ASSOCID_ANY,
                flags,
                &[IoSlice::new(text)],
                Some(&mut queued),
                None,
            )
        };
        match started {
            Ok(()) => {}
            Err(e) if Errno::of(&e) == Some(Errno::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut p = [PollFd::new(fd, POLLOUT)];
        if net.poll(
            &mut p,
            Some(deadline.saturating_duration_since(Instant::now())),
        )? == 0
        {
            return Err(Errno::ETIMEDOUT.into());
        }
        if let Some(e) = net.so_error(fd)? {
            return Err(e.into());
        }
        r.connect_us = Some(start.elapsed().as_micros());
        r.local = net.local_addr(fd).ok();
        r.sent = queued;
        net.set_nonblocking(fd, false)?;
        stage = "send";
        let mut off = queued;
        while off < text.len() {
            off += net.send(fd, &text[off..])?;
        }
        r.sent = off;
        net.shutdown(fd, Shutdown::Write)?;
        stage = "recv";
        let mut buf = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Errno::ETIMEDOUT.into());
            }
            net.set_timeouts(fd, Some(left), None)?;
            match net.recv(fd, &mut buf) {
                Ok(0) => {
                    r.tfo = net.fast_open_info(fd)?.unwrap_or_default();
                    r.recovery = net.recovery_info(fd).ok();
                    return Ok(());
                }
                Ok(n) => {
                    r.ttfb_us.get_or_insert(start.elapsed().as_micros());
                    r.received.extend_from_slice(&buf[..n]);
                }
                Err(e) if Errno::of(&e) == Some(Errno::EAGAIN) => {
                    return Err(Errno::ETIMEDOUT.into())
                }
                Err(e) => return Err(e),
            }
        }
    })();
    match result {
        Ok(()) => r.ok = true,
        Err(e) => {
            r.errno = Some(errno_of(&e));
            r.failed_in = Some(stage);
        }
    }
    r
}

/// One UDP exchange through an association: connectx (the text as the first datagram), one
/// reply, disconnectx.
fn udp_exchange(
    net: &Net,
    from: SaEndpoints,
    to: SocketAddr,
    text: &[u8],
    timeout: Duration,
) -> Report {
    let mut r = Report {
        remote: Some(to),
        ..Report::default()
    };
    let start = Instant::now();
    let mut stage = "connectx";
    let result = (|| -> std::io::Result<()> {
        let family = if to.is_ipv4() { Family::V4 } else { Family::V6 };
        let fd = net.socket(family, SocketType::Datagram)?;
        let _close = Closer(net, fd);
        let mut len = 0;
        net.connectx(
            fd,
            &SaEndpoints {
                dstaddr: Some(to),
                ..from
            },
            SAE_ASSOCID_ANY,
            0,
            &[IoSlice::new(text)],
            Some(&mut len),
            None,
        )?;
        r.connect_us = Some(start.elapsed().as_micros());
        r.sent = len;
        r.local = net.local_addr(fd).ok();
        net.set_timeouts(fd, Some(timeout), None)?;
        stage = "recv";
        let mut buf = [0u8; 65536];
        match net.recv(fd, &mut buf) {
            Ok(n) => {
                r.ttfb_us = Some(start.elapsed().as_micros());
                r.received.extend_from_slice(&buf[..n]);
            }
            Err(e) if Errno::of(&e) == Some(Errno::EAGAIN) => return Err(Errno::ETIMEDOUT.into()),
            Err(e) => return Err(e),
        }
        stage = "disconnectx";
        net.disconnectx(fd, SAE_ASSOCID_ANY, SAE_CONNID_ANY)
    })();
    match result {
        Ok(()) => r.ok = true,
        Err(e) => {
            r.errno = Some(errno_of(&e));
            r.failed_in = Some(stage);
        }
    }
    r
}

/// `--srcif`: a kernel interface index as is (connectx says ENXIO if it is not one of the
/// stack's), or a device name of this stack.
fn resolve_srcif(net: &Net, v: &str) -> Result<u32, String> {
    if let Ok(index) = v.parse::<u32>() {
        return Ok(index);
    }
    net.if_nametoindex(v)
        .or_else(|| tun_driver::ifindex_of(v).ok())
        .ok_or_else(|| format!("--srcif: no device named `{v}`"))
}

/// Closes a descriptor on every way out of a block.
struct Closer<'a>(&'a Net, i32);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        let _ = self.0.close(self.1);
    }
}

fn run(args: Args) -> ExitCode {
    let net = match args.devices.start(None) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("tun_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    common::print_warnings("tun_client", &net);
    let to = args.connect.expect("checked by parse_args");
    let srcif = match args.srcif.as_deref().map(|s| resolve_srcif(&net, s)) {
        None => 0,
        Some(Ok(index)) => index,
        Some(Err(e)) => {
            eprintln!("tun_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let from = SaEndpoints {
        srcif,
        srcaddr: args.srcaddr,
        dstaddr: None,
    };
    let mut failed = false;
    for conn in 0..args.count {
        let r = if args.udp {
            udp_exchange(&net, from, to, args.send.as_bytes(), args.timeout)
        } else {
            tcp_exchange(
                &net,
                from,
                to,
                args.send.as_bytes(),
                args.timeout,
                args.flags,
            )
        };
        failed |= !r.ok;
        if args.json {
            println!("{}", r.json(conn));
        } else if r.ok {
            println!(
                "conn {conn}: {} -> {}: sent {} bytes, received {} bytes, connect {} µs, first byte {} µs",
                opt(&r.local, false),
                to,
                r.sent,
                r.received.len(),
                opt(&r.connect_us, false),
                opt(&r.ttfb_us, false)
            );
        }
        if !r.ok {
            let e = r.errno.unwrap_or(Errno::EINVAL);
            let call = r.failed_in.unwrap_or("connectx");
            eprintln!("tun_client: connection {conn} to {to}: {call}: {e}");
        }
    }
    if args.json {
        println!("{}", common::counters_json(&net));
    }
    common::print_warnings("tun_client", &net);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ----- the demo -----

fn demo() -> ExitCode {
    if !tun_driver::is_root() {
        eprintln!(
            "tun_client: the demo creates a network namespace and a TUN device, which needs root: \
             run `sudo cargo run --example tun_client` (or see --help to use an existing device)"
        );
        return ExitCode::FAILURE;
    }
    match demo_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tun_client: demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo_inner() -> Result<(), String> {
    // Everything from here on lives in a namespace of this process's own: when the process
    // ends, on any path, the kernel removes the namespace and the TUN device with it.
    tun_driver::netns::unshare_net().map_err(|e| e.to_string())?;
    println!(
        "1. A private network namespace (only this process sees it), with a TUN device `cx0`:"
    );
    println!("     the kernel's side   192.0.2.1/24  2001:db8::1/64   (echo servers on TCP and UDP port 7)");
    println!(
        "     the userspace stack 192.0.2.2/24  2001:db8::2/64   (smoltcp, driven by connectx-api)"
    );
    let net = Net::builder()
        .tun("cx0")
        .address("192.0.2.2/24")
        .address("2001:db8::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8::1/64")
        .start()
        .map_err(|e| e.to_string())?;
    let index = net.if_nametoindex("cx0").unwrap_or(0);
    println!("     cx0 has kernel interface index {index} (what connectx's sae_srcif takes)\n");

    // The kernel's own Fast Open server, in this namespace only: 0x1 client, 0x2 server,
    // 0x400 on every listener (set before the echo servers listen).
    tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").map_err(|e| e.to_string())?;
    spawn_kernel_echo_servers()?;

    let text = b"hello from connectx\n";
    for (n, to) in [(2, "192.0.2.1:7"), (3, "[2001:db8::1]:7")] {
        let to: SocketAddr = to.parse().expect("a valid address");
        // The IPv6 connection names its device, as a caller bound to an interface would: the
        // source is then chosen among cx0's addresses (RFC 6724), whatever the routes say.
        let from = if to.is_ipv6() {
            SaEndpoints {
                srcif: index,
                ..SaEndpoints::default()
            }
        } else {
            SaEndpoints::default()
        };
        let how = if from.srcif != 0 {
            format!("sae_srcif {index} (cx0), ")
        } else {
            String::new()
        };
        println!(
            "{n}. TCP: connectx(fd, {how}dst {to}, iov {:?}), then shutdown(SHUT_WR) and read to the end",
            String::from_utf8_lossy(text)
        );
        let r = tcp_exchange(&net, from, to, text, Duration::from_secs(5), 0);
        explain(&r, text, "handshake (SYN, SYN-ACK, ACK)")?;
    }
    let to: SocketAddr = "192.0.2.1:7".parse().expect("a valid address");
    println!("4. UDP: connectx on a datagram socket associates it with {to}; the iov goes as one datagram,");
    println!("   only {to}'s datagrams are received, and disconnectx dissolves the association");
    let r = udp_exchange(
        &net,
        SaEndpoints::default(),
        to,
        text,
        Duration::from_secs(5),
    );
    explain(&r, text, "association (no packet needed)")?;

    println!("5. TCP Fast Open (connectx with CONNECT_DATA_IDEMPOTENT) against the kernel's own Fast Open server:");
    let passive = kernel_counter("TCPFastOpenPassive");
    let mut ttfb = Vec::new();
    for n in 1..=2 {
        let r = tcp_exchange(
            &net,
            SaEndpoints::default(),
            to,
            text,
            Duration::from_secs(5),
            CONNECT_DATA_IDEMPOTENT,
        );
        if !r.ok || r.received != text {
            return Err(format!(
                "Fast Open connection {n} failed: {}",
                r.errno.unwrap_or(Errno::EINVAL)
            ));
        }
        let t = &r.tfo;
        if t.syn_data_sent == 0 {
            println!(
                "     connection {n}: no cookie cached, so the SYN asked for one; the SYN-ACK brought {} bytes of cookie and the data went after the handshake",
                opt(&t.cookie_received, false)
            );
        } else {
            println!(
                "     connection {n}: the SYN carried the cookie and {} bytes of data; the SYN-ACK acknowledged {} of them",
                t.syn_data_sent, t.syn_data_acked
            );
        }
        ttfb.push(r.ttfb_us.unwrap_or(0));
    }
    println!(
        "     first byte back after {} µs without Fast Open, {} µs with it; the kernel counted {} Fast Open connection(s) (TcpExt TCPFastOpenPassive)\n",
        ttfb[0],
        ttfb[1],
        kernel_counter("TCPFastOpenPassive").saturating_sub(passive)
    );

    let info = net.interfaces();
    if let Some(i) = info.first() {
        println!(
            "The stack moved {} packets in and {} out on {}{}.",
            i.rx_packets,
            i.tx_packets,
            i.name,
            if i.offload {
                " (segmentation offload on: TCP segments of up to 64 KB cross the device whole, and the kernel cuts them to the MTU)"
            } else {
                ""
            }
        );
    }
    println!(
        "Done. The namespace and cx0 disappear with this process; nothing on the host was changed."
    );
    Ok(())
}

fn explain(r: &Report, text: &[u8], what: &str) -> Result<(), String> {
    if !r.ok {
        return Err(format!(
            "the connection failed: {}",
            r.errno.unwrap_or(Errno::EINVAL)
        ));
    }
    println!(
        "     from {} — {what}: {} µs",
        opt(&r.local, false),
        opt(&r.connect_us, false)
    );
    println!(
        "     sent {} bytes; {} bytes came back after {} µs: {}",
        r.sent,
        r.received.len(),
        opt(&r.ttfb_us, false),
        json_string(&r.received)
    );
    if r.received != text {
        return Err("the echo differs from what was sent".into());
    }
    println!();
    Ok(())
}

/// Kernel echo servers (TCP and UDP, IPv4 and IPv6) on port 7, on threads of this namespace.
fn spawn_kernel_echo_servers() -> Result<(), String> {
    for addr in ["192.0.2.1:7", "[2001:db8::1]:7"] {
        let l = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("kernel TCP echo on {addr}: {e}"))?;
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
    let u =
        std::net::UdpSocket::bind("192.0.2.1:7").map_err(|e| format!("kernel UDP echo: {e}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        return demo();
    }
    match parse_args(argv) {
        Ok(Some(args)) => run(args),
        Ok(None) => {
            print!("{HELP}\n{}", common::PATH_HELP);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tun_client: {e}");
            ExitCode::from(2)
        }
    }
}
