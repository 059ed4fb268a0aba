//! Random packet loss with nftables, for `loss` (this kernel has no netem): a `netdev` table in
//! one of our namespaces whose chains, each on the ingress hook of a device, count every packet
//! and drop each with probability N/10000 (`numgen random mod 10000 < N`), counting those too.
//! The sender (the peer of a veth, or the stack writing to its TUN device) learns nothing, as
//! with a packet lost on the wire. The device must not do GRO: the hook sees what GRO made of
//! the packets.
//!
//! Why never on egress: a `drop` there makes the local sender's transmit fail
//! (`NET_XMIT_DROP`), and Linux's TCP then sends the same segment again as new data, with no
//! loss to recover from (measured: no `RetransSegs` at all); and the egress hook sees the packets
//! as TCP built them, GSO packets of up to 64 KiB whatever the device's offloads, so one
//! decision takes away dozens of segments. Making the kernel build one segment per packet
//! (`gso_max_segs 1`) costs it several times its throughput towards a TUN device. So packets a
//! kernel sends are dropped where they arrive, after a veth hop.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use crate::netns::{command, Netns};

/// The table's name, in the `netdev` family.
const TABLE: &str = "cxbloss";

/// Where a chain drops: on the ingress hook of `dev`. `forward` when its packets go the run's
/// way (from the sender, or from the echo client), rather than back.
#[derive(Debug, Clone, Copy)]
pub struct Tap {
    pub dev: &'static str,
    pub forward: bool,
}

/// Packets the chains saw, and dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub seen: u64,
    pub dropped: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.seen += other.seen;
        self.dropped += other.dropped;
    }

    /// The share of packets dropped.
    pub fn rate(&self) -> Option<f64> {
        (self.seen > 0).then(|| self.dropped as f64 / self.seen as f64)
    }
}

/// What a run's chains saw, by direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drops {
    pub forward: Counts,
    pub reverse: Counts,
}

impl Drops {
    pub fn total(&self) -> Counts {
        let mut all = self.forward;
        all.add(self.reverse);
        all
    }
}

/// A drop table installed in a namespace, deleted when this is dropped.
pub struct DropTable<'a> {
    ns: &'a Netns,
    taps: Vec<Tap>,
}

impl<'a> DropTable<'a> {
    /// Drop packets arriving at `taps` (devices of `ns`) with probability `per_10k`/10000 each.
    pub fn install(ns: &'a Netns, taps: &[Tap], per_10k: u32) -> Result<DropTable<'a>, String> {
        let mut script = format!("table netdev {TABLE} {{\n");
        for (i, tap) in taps.iter().enumerate() {
            script.push_str(&format!(
                "  counter seen_{i} {{ }}\n  counter dropped_{i} {{ }}\n  chain tap_{i} {{\n    \
                 type filter hook ingress device \"{}\" priority 0; policy accept;\n    \
                 counter name \"seen_{i}\"\n    numgen random mod 10000 < {per_10k} \
                 counter name \"dropped_{i}\" drop\n  }}\n",
                tap.dev
            ));
        }
        script.push_str("}\n");
        ns.run(move || nft_script(&script))??;
        Ok(DropTable {
            ns,
            taps: taps.to_vec(),
        })
    }

    /// Add what the chains saw so far to `drops`.
    pub fn add_counts(&self, drops: &mut Drops) -> Result<(), String> {
        let out = self
            .ns
            .run(|| nft_output(&["list", "counters", "table", "netdev", TABLE]))??;
        let counters = parse_counters(&out);
        let packets = |name: String| {
            counters
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, p)| p)
                .ok_or_else(|| format!("nft lists no counter {name}"))
        };
        for (i, tap) in self.taps.iter().enumerate() {
            let counts = Counts {
                seen: packets(format!("seen_{i}"))?,
                dropped: packets(format!("dropped_{i}"))?,
            };
            if tap.forward {
                drops.forward.add(counts);
            } else {
                drops.reverse.add(counts);
            }
        }
        Ok(())
    }
}

impl Drop for DropTable<'_> {
    fn drop(&mut self) {
        // The namespace goes away with its table anyway; this is for the next run.
        let _ = self
            .ns
            .run(|| command("nft", &["delete", "table", "netdev", TABLE]));
    }
}

/// `nft -f -` with `script` on its input, in the calling thread's namespace.
fn nft_script(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(no_nft)?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    checked("-f -", out).map(drop)
}

/// What `nft ARGS` prints, in the calling thread's namespace.
fn nft_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nft").args(args).output().map_err(no_nft)?;
    checked(&args.join(" "), out)
}

fn no_nft(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "no nft (apt-get install nftables)".into()
    } else {
        format!("nft: {e}")
    }
}

/// `out`'s stdout if nft succeeded, else a one-line error with its stderr.
fn checked(args: &str, out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`nft {args}` failed: {}",
            stderr.lines().next().unwrap_or("").trim()
        ))
    }
}

/// `(name, packets)` of each `counter NAME { packets P bytes B }` that `nft list counters`
/// printed.
fn parse_counters(text: &str) -> Vec<(String, u64)> {
    let mut counters = Vec::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("packets ") {
            let packets = rest.split_whitespace().next().and_then(|p| p.parse().ok());
            if let (Some(name), Some(packets)) = (current.take(), packets) {
                counters.push((name, packets));
            }
        }
    }
    counters
}
