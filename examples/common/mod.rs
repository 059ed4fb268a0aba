//! What the example tools share: device flags, number parsing, JSON strings.
#![allow(dead_code)]

use std::fmt::Write as _;

use std::time::Duration;

use connectx_api::{CongestionControl, Impairment, Net, StackConfig};

/// One `--tun NAME` or `--tun-fd N` with the flags that follow it.
#[derive(Debug, Default)]
pub struct DeviceArgs {
    pub tun: Option<String>,
    pub fd: Option<i32>,
    pub local: Vec<String>,
    pub peer: Vec<String>,
    pub route: Vec<String>,
    pub mtu: Option<u32>,
}

/// The device flags of a command line, and the tools that sit on the packet path.
#[derive(Debug, Default)]
pub struct Devices {
    pub list: Vec<DeviceArgs>,
    /// An `--mtu` given before any device applies to all.
    pub mtu_all: Option<u32>,
    /// `--pcap FILE`.
    pub pcap: Option<String>,
    /// `--delay-ms`, `--jitter-ms`, `--loss`, `--reorder`, `--duplicate`, `--seed`.
    pub impairment: Impairment,
    /// `--cookie-cache FILE`.
    pub cookie_cache: Option<String>,
    /// `--offload on|off`; `None`: the builder's default.
    pub offload: Option<bool>,
    /// `--cc NAME`; `None`: the configuration's.
    pub congestion_control: Option<CongestionControl>,
}

/// The help text of the flags [`Devices::take`] knows beyond the devices.
pub const PATH_HELP: &str = "\
PACKET PATH (all devices, both directions):
    --pcap FILE         capture every packet the stack sends and receives (pcap, raw IP; for
                        tcpdump -r / tshark -r, Fast Open option decoded), written as it goes
    --delay-ms N        hold each packet N ms (one way; a round trip gains 2N)
    --jitter-ms N       add a random 0..N ms to each packet's delay (order is kept)
    --loss P            drop each packet with probability P (0 to 1)
    --reorder P         hold a packet back with probability P so that later ones overtake it
    --duplicate P       send a packet twice with probability P
    --seed N            seed of the random choices: the same seed makes the same choices
    --cookie-cache FILE keep the Fast Open cookie cache in FILE across runs (saved after each
                        change; a corrupt file is reported and replaced)
    --offload on|off    segmentation offload: TCP segments of up to 64 KB cross each TUN
                        device in one system call, and the kernel cuts them to the MTU
                        (default: on for TUN devices, off for descriptors without a
                        virtio-net header and with an impairment flag; `on` with either
                        is an error)
    --cc NAME           congestion control of TCP connections: cubic (default, as Linux), bbr
                        (Linux's BBR: loss does not shrink its window), reno, or none
";

/// `v` as a probability, or a one-line error naming `flag`.
fn probability(v: &str, flag: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{flag}: `{v}` is not a probability from 0 to 1")),
    }
}

/// `v` as milliseconds, or a one-line error naming `flag`.
fn millis(v: &str, flag: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(ms) if ms <= 3_600_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{flag}: `{v}` is not a whole number of milliseconds from 0 to 3600000"
        )),
    }
}

/// The value after `flag`.
pub fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
    it.next()
        .ok_or_else(|| format!("{flag} needs a value (see --help)"))
}

/// `v` as a number, or a one-line error naming `flag`.
pub fn number<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

impl Devices {
    /// Take `flag` if it is a device flag (`--tun`, `--tun-fd`, `--local`, `--peer`, `--route`,
    /// `--mtu`); `Ok(false)` if it is not one.
    pub fn take(
        &mut self,
        flag: &str,
        it: &mut impl Iterator<Item = String>,
    ) -> Result<bool, String> {
        match flag {
            "--tun" => {
                let name = value(it, flag)?;
                self.list.push(DeviceArgs {
                    tun: Some(name),
                    ..DeviceArgs::default()
                });
            }
            "--tun-fd" => {
                let v = value(it, flag)?;
                let fd = number::<i32>(&v, flag)?;
                if fd < 0 {
                    return Err(format!("--tun-fd: `{v}` is not a descriptor number"));
                }
                self.list.push(DeviceArgs {
                    fd: Some(fd),
                    ..DeviceArgs::default()
                });
            }
            "--local" | "--peer" | "--route" => {
                let v = value(it, flag)?;
                let dev = self
                    .list
                    .last_mut()
                    .ok_or_else(|| format!("{flag} must follow --tun or --tun-fd"))?;
                match flag {
                    "--local" => dev.local.push(v),
                    "--peer" => dev.peer.push(v),
                    _ => dev.route.push(v),
                }
            }
            "--mtu" => {
                let v = value(it, flag)?;
                let mtu = number::<u32>(&v, flag)?;
                match self.list.last_mut() {
                    Some(dev) => dev.mtu = Some(mtu),
                    None => self.mtu_all = Some(mtu),
                }
            }
            "--pcap" => self.pcap = Some(value(it, flag)?),
            "--cookie-cache" => self.cookie_cache = Some(value(it, flag)?),
            "--delay-ms" => self.impairment.delay = millis(&value(it, flag)?, flag)?,
            "--jitter-ms" => self.impairment.jitter = millis(&value(it, flag)?, flag)?,
            "--loss" => self.impairment.loss = probability(&value(it, flag)?, flag)?,
            "--reorder" => self.impairment.reorder = probability(&value(it, flag)?, flag)?,
            "--duplicate" => self.impairment.duplicate = probability(&value(it, flag)?, flag)?,
            "--seed" => self.impairment.seed = number(&value(it, flag)?, flag)?,
            "--cc" => {
                let v = value(it, flag)?;
                self.congestion_control = Some(v.parse().map_err(|e| format!("--cc: {e}"))?);
            }
            "--offload" => {
                self.offload = Some(match value(it, flag)?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--offload: `{v}` is neither on nor off")),
                })
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Open the devices and start the stack.
    pub fn start(&self, mut config: Option<StackConfig>) -> Result<Net, String> {
        let mut b = Net::builder();
        if let Some(cc) = self.congestion_control {
            config
                .get_or_insert_with(StackConfig::default)
                .congestion_control = cc;
        }
        if let Some(config) = config {
            b = b.stack_config(config);
        }
        if let Some(path) = &self.pcap {
            b = b.pcap(path);
        }
        if !self.impairment.is_none() {
            b = b.impairment(self.impairment.clone());
        }
        if let Some(path) = &self.cookie_cache {
            b = b.cookie_cache_file(path);
        }
        if let Some(on) = self.offload {
            b = b.offload(on);
        }
        for d in &self.list {
            b = match (&d.tun, d.fd) {
                (Some(name), _) => b.tun(name),
                (None, Some(fd)) => b.tun_fd(fd),
                (None, None) => return Err("a device needs --tun NAME or --tun-fd N".into()),
            };
            if let Some(mtu) = d.mtu.or(self.mtu_all) {
                b = b.mtu(mtu);
            }
            for l in &d.local {
                b = b.address(l);
            }
            for p in &d.peer {
                b = b.peer(p);
            }
            for r in &d.route {
                b = b.route(r);
            }
        }
        b.start().map_err(|e| e.to_string())
    }
}

/// Print the cookie cache file's warnings, one line each, prefixed with the program's name.
pub fn print_warnings(program: &str, net: &Net) {
    for w in net.take_cookie_cache_warnings() {
        eprintln!("{program}: warning: {w}");
    }
}

/// `bytes` as a JSON string (invalid UTF-8 replaced).
pub fn json_string(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value for an optional one: `null`, a number, or (with `quote`) a string.
pub fn opt<T: std::fmt::Display>(v: &Option<T>, quote: bool) -> String {
    match v {
        Some(v) if quote => format!("\"{v}\""),
        Some(v) => v.to_string(),
        None => "null".into(),
    }
}

/// `{"counters":{...},"tables":{...}}`: the stack's Fast Open, TCP and loss recovery counters
/// (Linux's names) and the sizes of its tables (a leak shows there).
pub fn counters_json(net: &Net) -> String {
    let counters: Vec<String> = net
        .fast_open_counters()
        .iter()
        .chain(net.tcp_counters().iter())
        .chain(net.recovery_counters().iter())
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let tables: Vec<String> = net
        .tables()
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!(
        "{{\"counters\":{{{}}},\"tables\":{{{}}}}}",
        counters.join(","),
        tables.join(",")
    )
}

/// What the loss recovery layer did on one connection, as a JSON object: round trip,
/// congestion window, and the connection's share of the counters (Linux's names). `null` when
/// the stack could not say (the connection is gone).
pub fn recovery_json(info: Option<connectx_api::RecoveryInfo>) -> String {
    let Some(i) = info else {
        return "null".into();
    };
    let counters: Vec<String> = i
        .counters
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let window = |w: u32| {
        if w == u32::MAX {
            "null".into()
        } else {
            w.to_string()
        }
    };
    let bbr = i.bbr.map_or("null".into(), |b| {
        format!(
            "{{\"mode\":\"{:?}\",\"bw\":{},\"min_rtt_us\":{},\"pacing_rate\":{}}}",
            b.mode, b.bw, b.min_rtt_us, b.pacing_rate
        )
    });
    format!(
        "{{\"srtt_us\":{},\"min_rtt_us\":{},\"cwnd\":{},\"ssthresh\":{},\"rcv_window\":{},\
         \"delivery_rate\":{},\"bbr\":{},{}}}",
        i.srtt_us,
        i.min_rtt_us,
        window(i.cwnd),
        window(i.ssthresh),
        window(i.rcv_window),
        i.delivery_rate,
        bbr,
        counters.join(",")
    )
}

/// A counter of the kernel's TcpExt MIB in this thread's namespace (0 if unreadable).
pub fn kernel_counter(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
