//! The command line: which sections run, and their settings.

/// Most `--connections`: the stack has 28232 ephemeral ports.
const MAX_CONNECTIONS: usize = 25_000;
/// Most `--ttfb-connections`.
const MAX_TTFB_CONNECTIONS: usize = 1000;
/// Most `--rate-connections`: the stack's client has 28232 ephemeral ports (`rate` gives the
/// kernel's clients 64512), and a run outlasts neither
/// the stack's TIME-WAIT (10 s, smoltcp's) nor, by much, the kernel's (60 s).
const MAX_RATE_CONNECTIONS: usize = 25_000;
/// Most `--scale-connections`: the kernel client has 28232 ephemeral ports, and each
/// connection is a thread of the echo server (the kernel's `pid_max` is often 32768).
const MAX_SCALE_CONNECTIONS: usize = 20_000;
/// Most `--recovery-rounds`.
const MAX_RECOVERY_ROUNDS: usize = 100;
/// Most `--async-connections`: the kernel's clients have 28232 ephemeral ports.
const MAX_ASYNC_CONNECTIONS: usize = 25_000;

/// The parts of the benchmark, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Throughput,
    FastOpen,
    Recovery,
    Loss,
    Rate,
    Ttfb,
    Idle,
    Memory,
    Scale,
    Async,
}

impl Section {
    pub const ALL: [Section; 10] = [
        Section::Throughput,
        Section::FastOpen,
        Section::Recovery,
        Section::Loss,
        Section::Rate,
        Section::Ttfb,
        Section::Idle,
        Section::Memory,
        Section::Scale,
        Section::Async,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Throughput => "throughput",
            Section::FastOpen => "fastopen",
            Section::Recovery => "recovery",
            Section::Loss => "loss",
            Section::Rate => "rate",
            Section::Ttfb => "ttfb",
            Section::Idle => "idle",
            Section::Memory => "memory",
            Section::Scale => "scale",
            Section::Async => "async",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The names of all sections, as `--only` takes them.
fn section_names() -> String {
    Section::ALL.map(Section::name).join(",")
}

pub fn usage() -> String {
    format!(
        "usage: bench [--only {}] [--mtu N] [--seconds S] [--idle-seconds S] [--connections N] \
         [--ttfb-connections N] [--rate-connections N] [--scale-connections N] \
         [--async-connections N] [--recovery-rounds N] [--offload on|off] [--json]",
        section_names()
    )
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mtu: u32,
    pub seconds: f64,
    pub idle_seconds: f64,
    pub connections: usize,
    /// Connections per variant and case in `ttfb`.
    pub ttfb_connections: usize,
    /// Timed connections per run in `rate`.
    pub rate_connections: usize,
    /// The most idle connections open beside the ping-pong of `scale`.
    pub scale_connections: usize,
    /// Concurrent connections of `async`.
    pub async_connections: usize,
    /// Interleaved runs per variant and case in `recovery`.
    pub recovery_rounds: usize,
    /// `--offload on|off`: segmentation offload for the sections' stacks (`throughput` runs
    /// both; `loss` always runs without).
    pub offload: bool,
    /// The sections to run, one bit each ([`Section::bit`]).
    only: u16,
    pub json: bool,
}

impl Options {
    pub fn runs(&self, section: Section) -> bool {
        self.only & section.bit() != 0
    }

    pub fn sections(&self) -> impl Iterator<Item = Section> + '_ {
        Section::ALL.into_iter().filter(|s| self.runs(*s))
    }
}

pub enum Parsed {
    Run(Options),
    Help,
}

fn seconds_arg(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "{flag} {v}: expected a number of seconds above 0, at most 3600"
        )),
    }
}

/// `v` as a count from 1 to `max`, for `flag`.
fn count_arg(flag: &str, v: &str, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} {v}: expected an integer from 1 to {max}")),
    }
}

pub fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut opts = Options {
        mtu: 1500,
        seconds: 3.0,
        idle_seconds: 10.0,
        connections: 10_000,
        ttfb_connections: 10,
        rate_connections: 15_000,
        scale_connections: 10_000,
        async_connections: 10_000,
        recovery_rounds: 6,
        offload: true,
        only: Section::ALL.iter().fold(0, |bits, s| bits | s.bit()),
        json: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--mtu" => {
                let v = value()?;
                opts.mtu = match v.parse::<u32>() {
                    Ok(m) if (68..=65535).contains(&m) => m,
                    _ => return Err(format!("--mtu {v}: expected an integer from 68 to 65535")),
                };
            }
            "--seconds" => opts.seconds = seconds_arg(flag, &value()?)?,
            "--idle-seconds" => opts.idle_seconds = seconds_arg(flag, &value()?)?,
            "--connections" => opts.connections = count_arg(flag, &value()?, MAX_CONNECTIONS)?,
            "--ttfb-connections" => {
                opts.ttfb_connections = count_arg(flag, &value()?, MAX_TTFB_CONNECTIONS)?
            }
            "--rate-connections" => {
                opts.rate_connections = count_arg(flag, &value()?, MAX_RATE_CONNECTIONS)?
            }
            "--scale-connections" => {
                opts.scale_connections = count_arg(flag, &value()?, MAX_SCALE_CONNECTIONS)?
            }
            "--async-connections" => {
                opts.async_connections = count_arg(flag, &value()?, MAX_ASYNC_CONNECTIONS)?
            }
            "--recovery-rounds" => {
                opts.recovery_rounds = count_arg(flag, &value()?, MAX_RECOVERY_ROUNDS)?
            }
            "--only" => {
                let v = value()?;
                let mut only = 0;
                for name in v.split(',') {
                    let section = Section::ALL
                        .into_iter()
                        .find(|s| s.name() == name.trim())
                        .ok_or_else(|| {
                            format!(
                                "--only: unknown section {name:?} (expected a comma list of {})",
                                section_names()
                            )
                        })?;
                    only |= section.bit();
                }
                opts.only = only;
            }
            "--offload" => {
                opts.offload = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--offload {v}: expected on or off")),
                }
            }
            "--json" if inline.is_none() => opts.json = true,
            "-h" | "--help" if inline.is_none() => return Ok(Parsed::Help),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
        i += 1;
    }
    Ok(Parsed::Run(opts))
}
