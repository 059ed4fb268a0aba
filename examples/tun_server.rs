//! `tun_server`: an echo server on the userspace stack, with TCP Fast Open.
//!
//! Run `tun_server --help` for the flags.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;

use common::{counters_json, number, opt, recovery_json, value, Devices};
use connectx_api::{
    CookieKey, FastOpenServerConfig, FastOpenServerInfo, KeyUsed, Net, PollFd, TcpListener,
    TcpStream, UdpSocket, POLLIN,
};

const HELP: &str = "\
tun_server — an echo server on a userspace TCP/IP stack, with TCP Fast Open

USAGE:
    tun_server [DEVICE OPTIONS]... --listen PORT [OPTIONS]

DEVICES (repeatable; --local, --peer and --route apply to the device named before them):
    --tun NAME              create TUN device NAME (or attach to a persistent one)
    --tun-fd N              adopt open descriptor N (a TUN device, or a packet socket)
    --local CIDR            the stack's address on the device (repeatable)
    --peer CIDR             the kernel's address on a TUN device this program creates
    --route CIDR            a route through the device; `default` for both
    --mtu N                 MTU of the device named before it

SERVER:
    --listen PORT           the port to listen on, on every address of the stack
    --udp                   echo datagrams instead of TCP connections
    --tfo                   TCP Fast Open on the listener: cookies, and SYN data with a valid one
    --tfo-key KEY           the primary cookie key, as Linux's tcp_fastopen_key writes it
                            (a0bf63f7-ed803d81-cd641d30-cebc4a90); random by default
    --tfo-backup-key KEY    a backup key: validates, never signs (key rotation)
    --tfo-no-cookie         accept SYN data without a cookie (off by default)
    --tfo-pending N         Fast Open connections not yet established, at most (default 16)
    --count N               exit after N connections (or datagrams)
    --json                  one JSON object per connection, and the counters on exit

Every byte is echoed as it arrives; a connection closes after the peer half-closes. One line on
stderr says when the server is ready.
";

struct Args {
    devices: Devices,
    port: u16,
    udp: bool,
    tfo: bool,
    key: Option<CookieKey>,
    backup: Option<CookieKey>,
    cookieless: bool,
    pending: usize,
    count: Option<usize>,
    json: bool,
}

fn parse_args(argv: Vec<String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        devices: Devices::default(),
        port: 0,
        udp: false,
        tfo: false,
        key: None,
        backup: None,
        cookieless: false,
        pending: 16,
        count: None,
        json: false,
    };
    let mut it = argv.into_iter();
    let key = |v: String, flag: &str| v.parse::<CookieKey>().map_err(|e| format!("{flag}: {e}"));
    while let Some(flag) = it.next() {
        if a.devices.take(&flag, &mut it)? {
            continue;
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = value(&mut it, &flag)?;
                a.port = number(&v, &flag)?;
                if a.port == 0 {
                    return Err("--listen: port 0 is not a port to listen on".into());
                }
            }
            "--udp" => a.udp = true,
            "--tfo" => a.tfo = true,
            "--tfo-key" => a.key = Some(key(value(&mut it, &flag)?, &flag)?),
            "--tfo-backup-key" => a.backup = Some(key(value(&mut it, &flag)?, &flag)?),
            "--tfo-no-cookie" => a.cookieless = true,
            "--tfo-pending" => a.pending = number(&value(&mut it, &flag)?, &flag)?,
            "--count" => a.count = Some(number(&value(&mut it, &flag)?, &flag)?),
            "--json" => a.json = true,
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if a.devices.list.is_empty() {
        return Err("no device: give --tun NAME or --tun-fd N".into());
    }
    if a.port == 0 {
        return Err("--listen PORT is required".into());
    }
    Ok(Some(a))
}

/// What one connection did.
struct Done {
    conn: usize,
    /// The stack's address the connection (or datagram) came to.
    local: Option<SocketAddr>,
    peer: SocketAddr,
    tfo: Option<FastOpenServerInfo>,
    received: usize,
    echoed: usize,
    recovery: Option<connectx_api::RecoveryInfo>,
    error: Option<String>,
}

impl Done {
    fn json(&self) -> String {
        let tfo = match self.tfo {
            Some(t) => format!(
                "{{\"cookie_requested\":{},\"cookie_valid\":{},\"syn_data\":{},\"key\":{}}}",
                t.cookie_requested,
                opt(&t.cookie_valid, false),
                t.syn_data,
                opt(
                    &t.key.map(|k| match k {
                        KeyUsed::Primary => "primary",
                        KeyUsed::Backup => "backup",
                    }),
                    true
                ),
            ),
            None => "null".into(),
        };
        format!(
            "{{\"conn\":{},\"local\":{},\"peer\":\"{}\",\"tfo\":{tfo},\"received\":{},\"echoed\":{},\"recovery\":{}}}",
            self.conn,
            opt(&self.local, true),
            self.peer,
            self.received,
            self.echoed,
            recovery_json(self.recovery)
        )
    }
}

/// Echo everything until the peer half-closes, then close.
fn echo(s: &mut TcpStream) -> (usize, usize, Option<String>) {
    let (mut received, mut echoed) = (0, 0);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (received, echoed, None),
            Ok(n) => {
                received += n;
                if let Err(e) = s.write_all(&buf[..n]) {
                    return (received, echoed, Some(e.to_string()));
                }
                echoed += n;
            }
            Err(e) => return (received, echoed, Some(e.to_string())),
        }
    }
}

fn serve_tcp(net: &Net, args: &Args) -> Result<(), String> {
    // [::] hears IPv4 and IPv6 alike.
    let any = SocketAddr::from(([0u16; 8], args.port));
    let listener =
        TcpListener::bind(net, any).map_err(|e| format!("listen on port {}: {e}", args.port))?;
    if args.tfo {
        let mut config = FastOpenServerConfig::new(args.key.unwrap_or_else(CookieKey::random));
        config.backup = args.backup;
        config.cookieless = args.cookieless;
        config.max_pending = args.pending;
        net.set_fast_open(listener.fd(), Some(config))
            .map_err(|e| format!("Fast Open: {e}"))?;
    }
    eprintln!(
        "tun_server: ready, listening on port {}{}",
        args.port,
        if args.tfo { " with TCP Fast Open" } else { "" }
    );
    let (tx, rx) = mpsc::channel::<Done>();
    let mut accepted = 0;
    let mut finished = 0;
    let mut threads = Vec::new();
    loop {
        // Report what finished, then accept the next one (unless enough were accepted).
        while let Ok(done) = rx.try_recv() {
            finished += 1;
            report(&done, args.json);
        }
        if args.count.is_some_and(|c| accepted >= c) {
            break;
        }
        let (s, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let tfo = net.server_fast_open_info(s.fd()).ok().flatten();
        let local = s.local_addr().ok();
        let tx = tx.clone();
        let conn = accepted;
        accepted += 1;
        let net = net.clone();
        threads.push(std::thread::spawn(move || {
            let mut s = s;
            let fd = s.fd();
            let (received, echoed, error) = echo(&mut s);
            // Before the stream closes: what recovery did for the echo (its sending side).
            // The report goes first, so reports come in the order the connections ended.
            let recovery = net.recovery_info(fd).ok();
            let _ = tx.send(Done {
                conn,
                local,
                peer,
                tfo,
                received,
                echoed,
                recovery,
                error,
            });
            drop(s);
        }));
    }
    drop(tx);
    while finished < accepted {
        match rx.recv() {
            Ok(done) => {
                finished += 1;
                report(&done, args.json);
            }
            Err(_) => break,
        }
    }
    for t in threads {
        let _ = t.join();
    }
    linger(net);
    Ok(())
}

/// A closed stream's last bytes and FIN still have to reach the peer, and the stack runs
/// in this process: give closing connections a moment to finish before exiting, as the
/// kernel would finish them on a process's behalf.
fn linger(net: &Net) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while net.connection_counts().0 > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn report(done: &Done, json: bool) {
    if json {
        println!("{}", done.json());
    } else {
        println!(
            "conn {}: {} sent {} bytes, echoed {}",
            done.conn, done.peer, done.received, done.echoed
        );
    }
    if let Some(e) = &done.error {
        eprintln!(
            "tun_server: connection {} from {}: {e}",
            done.conn, done.peer
        );
    }
}

fn serve_udp(net: &Net, args: &Args) -> Result<(), String> {
    // One socket per address of the stack, so that each reply leaves from the address its
    // request came to (a kernel client's connected UDP socket drops replies from elsewhere).
    let mut socks = Vec::new();
    for local in args.devices.list.iter().flat_map(|d| &d.local) {
        let ip: std::net::IpAddr = local
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("--local {local}: not ADDRESS/LEN"))?;
        let addr = SocketAddr::new(ip, args.port);
        socks.push(UdpSocket::bind(net, addr).map_err(|e| format!("bind UDP {addr}: {e}"))?);
    }
    if socks.is_empty() {
        return Err("--udp needs at least one --local address".into());
    }
    eprintln!("tun_server: ready, echoing UDP on port {}", args.port);
    let mut buf = vec![0u8; 65536];
    let mut n_done = 0;
    while args.count.is_none_or(|c| n_done < c) {
        let mut polled: Vec<PollFd> = socks.iter().map(|s| PollFd::new(s.fd(), POLLIN)).collect();
        net.poll(&mut polled, None)
            .map_err(|e| format!("poll: {e}"))?;
        for (sock, p) in socks.iter().zip(&polled) {
            if p.revents == 0 {
                continue;
            }
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                // ICMP errors about an earlier reply, a datagram already taken: nothing to echo.
                Err(_) => continue,
            };
            let echoed = sock
                .send_to(&buf[..n], from)
                .map_err(|e| format!("send to {from}: {e}"))?;
            let done = Done {
                conn: n_done,
                local: sock.local_addr().ok(),
                peer: from,
                tfo: None,
                received: n,
                echoed,
                recovery: None,
                error: None,
            };
            report(&done, args.json);
            n_done += 1;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}\n{}", common::PATH_HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tun_server: {e}");
            return ExitCode::from(2);
        }
    };
    let net = match args.devices.start(None) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("tun_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    common::print_warnings("tun_server", &net);
    let result = if args.udp {
        serve_udp(&net, &args)
    } else {
        serve_tcp(&net, &args)
    };
    if args.json {
        println!("{}", counters_json(&net));
    }
    common::print_warnings("tun_server", &net);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tun_server: {e}");
            ExitCode::FAILURE
        }
    }
}
