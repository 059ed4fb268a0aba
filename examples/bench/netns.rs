//! Private network namespaces, the devices in them, and stacks on those devices.
//!
//! Only namespaces made here are touched: devices, addresses and sysctls are set on threads
//! that have unshared their network namespace, never on the host's.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use connectx_api::{Impairment, Net, StackConfig};
use tun_driver::Link;

/// The TUN device of a section's stack, its address and the kernel's.
pub const TUN: &str = "cxb0";
pub const STACK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The two ends of a veth pair and their addresses.
pub const VETH_A: &str = "cxbvA";
pub const VETH_B: &str = "cxbvB";
const VETH_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const VETH_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The ephemeral ports [`Netns::widen_local_ports`] gives the kernel, as the sysctl takes them.
pub const LOCAL_PORT_RANGE: &str = "1024 65535";

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a private network namespace of its own, running the jobs it is given.
/// Sockets and devices made by a job belong to that namespace wherever they are used later;
/// threads and processes a job starts are born in it too. The namespace goes away once the
/// thread ends (when this is dropped) and the last socket or device in it is closed.
pub struct Netns {
    name: &'static str,
    jobs: mpsc::Sender<Job>,
}

impl Netns {
    pub fn new(name: &'static str) -> Result<Netns, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let entered = tun_driver::netns::unshare_net().map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = ready.send(entered);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })
            .map_err(|e| format!("cannot start thread {name}: {e}"))?;
        started
            .recv()
            .map_err(|_| format!("thread {name} died"))?
            .map_err(|e| format!("private network namespace: {e}"))?;
        Ok(Netns { name, jobs })
    }

    /// Run `f` on the namespace's thread and wait for its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::channel();
        let died = || format!("thread {} died", self.name);
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| died())?;
        rx.recv().map_err(|_| died())
    }

    /// `/proc/<pid>/task/<tid>/ns/net` of the namespace's thread: valid while it lives.
    fn path(&self) -> Result<String, String> {
        let link = self
            .run(|| std::fs::read_link("/proc/thread-self"))?
            .map_err(|e| format!("/proc/thread-self: {e}"))?;
        Ok(format!("/proc/{}/ns/net", link.display()))
    }

    /// Let the kernel's sockets of the namespace use Fast Open: `net.ipv4.tcp_fastopen` 1027,
    /// 0x1 client, 0x2 server, 0x400 server on every listener without the socket option.
    pub fn enable_fast_open(&self) -> Result<(), String> {
        self.set_sysctl("net/ipv4/tcp_fastopen", "1027")
    }

    /// Give the kernel's clients of the namespace the ephemeral ports 1024-65535
    /// (`net.ipv4.ip_local_port_range`; Linux's default is 32768-60999).
    pub fn widen_local_ports(&self) -> Result<(), String> {
        self.set_sysctl("net/ipv4/ip_local_port_range", LOCAL_PORT_RANGE)
    }

    /// Let the namespace forward IPv4 packets between its devices (`net.ipv4.ip_forward`).
    pub fn enable_forwarding(&self) -> Result<(), String> {
        self.set_sysctl("net/ipv4/ip_forward", "1")
    }

    /// Set a sysctl of the namespace (only ever one of ours).
    fn set_sysctl(&self, path: &'static str, value: &'static str) -> Result<(), String> {
        self.run(move || tun_driver::netns::set_sysctl(path, value))?
            .map_err(|e| e.to_string())
    }
}

/// Run a command (in the calling thread's namespace) and fail with its stderr.
pub fn command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Give device `dev` (of the calling thread's namespace) `addr`/24 and `mtu`, and bring it up.
pub fn configure(dev: &str, addr: Ipv4Addr, mtu: u32) -> Result<(), String> {
    let link = Link::by_name(dev).map_err(|e| e.to_string())?;
    link.set_mtu(mtu).map_err(|e| e.to_string())?;
    link.add_address(IpAddr::V4(addr), 24)
        .map_err(|e| e.to_string())?;
    link.set_up(true).map_err(|e| e.to_string())
}

/// Two namespaces joined by a veth pair: `VETH_A_ADDR` in the first, `VETH_B_ADDR` in the
/// second.
pub fn veth_pair(mtu: u32) -> Result<(Netns, Netns), String> {
    let a = Netns::new("bench-veth-a")?;
    let b = Netns::new("bench-veth-b")?;
    join(&a, (VETH_A, VETH_A_ADDR), &b, (VETH_B, VETH_B_ADDR), mtu)?;
    Ok((a, b))
}

/// Join namespaces `a` and `b` with a veth pair: device `a_dev` at `a_addr`/24 in `a`, `b_dev`
/// at `b_addr`/24 in `b`.
pub fn join(
    a: &Netns,
    (a_dev, a_addr): (&'static str, Ipv4Addr),
    b: &Netns,
    (b_dev, b_addr): (&'static str, Ipv4Addr),
    mtu: u32,
) -> Result<(), String> {
    let b_path = b.path()?;
    a.run(move || -> Result<(), String> {
        command(
            "ip",
            &["link", "add", a_dev, "type", "veth", "peer", "name", b_dev],
        )?;
        command("ip", &["link", "set", b_dev, "netns", &b_path])?;
        configure(a_dev, a_addr, mtu)
    })??;
    b.run(move || configure(b_dev, b_addr, mtu))?
}

/// Turn a device's TSO, GSO and GRO off with ethtool. Returns how.
///
/// There is no fallback: `ip link set … gso_max_segs 1`, the one there was, leaves the kernel
/// cutting every segment into packets in software, which made the "offloads off" reference
/// four to six times slower than ethtool's (1.0 against 6.1 Gbit/s on the same machine), and
/// every ratio to it that much too flattering. Without ethtool there is no reference: the
/// error says to install it.
pub fn offloads_off(dev: &str) -> Result<&'static str, String> {
    command(
        "ethtool",
        &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
    )
    .map(|()| "ethtool -K tso off gso off gro off")
    .map_err(|e| {
        format!(
            "turning {dev}'s offloads off needs ethtool (apt-get install ethtool), and without \
             it there is no offloads-off reference: {e}"
        )
    })
}

/// `(tx_packets, tx_dropped)` of the kernel side of a device, from `/proc/thread-self/net/dev`
/// (the calling thread's namespace).
pub fn kernel_tx_stats(dev: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dev}:")))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
    Some((*fields.get(9)?, *fields.get(11)?))
}

/// The kernel's TCP counters of the calling thread's namespace that are among `names`, with
/// the names the stack's `RecoveryCounters` give them: `TcpRetransSegs` is `RetransSegs` of the
/// `Tcp:` lines of `/proc/thread-self/net/snmp`, the others are `TcpExt:` fields of
/// `/proc/thread-self/net/netstat`. A name this kernel does not have is left out.
pub fn kernel_tcp_counters(names: &[&'static str]) -> Result<Vec<(&'static str, u64)>, String> {
    let mut fields = Vec::new();
    for file in [
        "/proc/thread-self/net/snmp",
        "/proc/thread-self/net/netstat",
    ] {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        // Each group is two lines: `Prefix: name name …` then `Prefix: value value …`.
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks_exact(2) {
            let (Some((prefix, keys)), Some((again, values))) =
                (pair[0].split_once(':'), pair[1].split_once(':'))
            else {
                continue;
            };
            if prefix != again {
                return Err(format!("{file}: unexpected layout at {prefix}:"));
            }
            for (key, value) in keys.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = value.parse::<u64>() {
                    fields.push((format!("{prefix}{key}"), v));
                }
            }
        }
    }
    Ok(names
        .iter()
        .filter_map(|&name| {
            let ext = format!("TcpExt{name}");
            fields
                .iter()
                .find(|(k, _)| k == name || *k == ext)
                .map(|&(_, v)| (name, v))
        })
        .collect())
}

/// Whether the sections' stacks use segmentation offload (`--offload`; on by default).
static OFFLOAD: AtomicBool = AtomicBool::new(true);

/// Set what `--offload` said.
pub fn set_offload(on: bool) {
    OFFLOAD.store(on, Ordering::Relaxed);
}

/// What `--offload` said.
pub fn offload() -> bool {
    OFFLOAD.load(Ordering::Relaxed)
}

/// A stack on TUN device `tun` of `ns`: the stack at `stack`, the kernel at `kernel`, with
/// `impairment` on its packet path, and offload as `--offload` says (off with an impairment).
pub fn start_stack(
    ns: &Netns,
    tun: &'static str,
    addrs: (Ipv4Addr, Ipv4Addr),
    mtu: u32,
    config: StackConfig,
    impairment: Impairment,
) -> Result<Net, String> {
    start_stack_with(ns, tun, addrs, mtu, config, impairment, offload())
}

/// [`start_stack`] with offload on or off whatever `--offload` said (off anyway with an
/// impairment).
pub fn start_stack_with(
    ns: &Netns,
    tun: &'static str,
    (stack, kernel): (Ipv4Addr, Ipv4Addr),
    mtu: u32,
    config: StackConfig,
    impairment: Impairment,
    offload: bool,
) -> Result<Net, String> {
    let offload = offload && impairment.is_none();
    ns.run(move || {
        Net::builder()
            .stack_config(config)
            .impairment(impairment)
            .offload(offload)
            .tun(tun)
            .address(&format!("{stack}/24"))
            .peer(&format!("{kernel}/24"))
            .mtu(mtu)
            .start()
    })?
    .map_err(|e| format!("starting the stack on {tun}: {e}"))
}

/// The usual stack of a section: on `TUN` at `STACK_ADDR`, default configuration, a clean path.
pub fn start_default_stack(ns: &Netns, mtu: u32) -> Result<Net, String> {
    start_stack(
        ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        mtu,
        StackConfig::default(),
        Impairment::default(),
    )
}
