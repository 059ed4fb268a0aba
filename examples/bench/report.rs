//! The report: a table for people, or JSON; and the helpers the sections format with.

use std::fmt::Write as _;
use std::thread;

use crate::asyncio::Async;
use crate::cli::{Options, Section};
use crate::common;
use crate::fastopen::FastOpenCost;
use crate::idle::IdleCpu;
use crate::loss::Loss;
use crate::memory::Memory;
use crate::rate::Rates;
use crate::recovery::RecoveryCost;
use crate::scale::Scale;
use crate::throughput::Throughput;
use crate::ttfb::Ttfb;

/// What the results of a section give the report.
pub trait Part {
    /// Its lines of the table.
    fn table(&self, opts: &Options, out: &mut String);
    /// Its JSON value (for `throughput`: its fields, spliced into the top level).
    fn json(&self, opts: &Options, out: &mut String);
    /// The measurements that failed while the section ran, each with why (the section still
    /// reports the others).
    fn failures(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The results of the sections that ran.
#[derive(Default)]
pub struct Report {
    pub throughput: Option<Throughput>,
    pub fast_open: Option<FastOpenCost>,
    pub recovery: Option<RecoveryCost>,
    pub loss: Option<Loss>,
    pub rate: Option<Rates>,
    pub ttfb: Option<Ttfb>,
    pub idle: Option<IdleCpu>,
    pub memory: Option<Memory>,
    pub scale: Option<Scale>,
    pub asyncio: Option<Async>,
    pub notes: Vec<String>,
    /// Sections that failed.
    pub failed: Vec<Section>,
}

/// The key of a section's value in the JSON (`None`: its fields are at the top level).
fn json_key(section: Section) -> Option<&'static str> {
    match section {
        Section::Throughput => None,
        Section::FastOpen => Some("fast_open_layer"),
        Section::Recovery => Some("loss_recovery_layer"),
        Section::Loss => Some("loss"),
        Section::Rate => Some("connection_rate"),
        Section::Ttfb => Some("ttfb"),
        Section::Idle => Some("idle_cpu"),
        Section::Memory => Some("memory"),
        Section::Scale => Some("scale"),
        Section::Async => Some("async"),
    }
}

/// What the JSON says for `throughput` when it did not run or failed.
const NO_THROUGHPUT: &str = ",\"reference\":null,\"veth_offloads_off_method\":null,\"results\":{}";

impl Report {
    pub fn part(&self, section: Section) -> Option<&dyn Part> {
        fn dyn_part<T: Part>(p: &Option<T>) -> Option<&dyn Part> {
            p.as_ref().map(|p| p as &dyn Part)
        }
        match section {
            Section::Throughput => dyn_part(&self.throughput),
            Section::FastOpen => dyn_part(&self.fast_open),
            Section::Recovery => dyn_part(&self.recovery),
            Section::Loss => dyn_part(&self.loss),
            Section::Rate => dyn_part(&self.rate),
            Section::Ttfb => dyn_part(&self.ttfb),
            Section::Idle => dyn_part(&self.idle),
            Section::Memory => dyn_part(&self.memory),
            Section::Scale => dyn_part(&self.scale),
            Section::Async => dyn_part(&self.asyncio),
        }
    }

    /// The sections' tables in report order, a blank line between, then the notes.
    pub fn table(&self, opts: &Options) -> String {
        let tables: Vec<String> = opts
            .sections()
            .filter_map(|section| self.part(section))
            .map(|part| {
                let mut s = String::new();
                part.table(opts, &mut s);
                s
            })
            .filter(|s| !s.is_empty())
            .collect();
        let mut out = tables.join("\n");
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// One JSON object: the settings, every section (`null` if it did not run), the failures and
    /// the notes.
    pub fn json(&self, opts: &Options) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"cpus\":{},\"idle_seconds\":{},\"connections\":{},\
             \"ttfb_connections\":{},\"rate_connections\":{},\"scale_connections\":{},\
             \"async_connections\":{}",
            opts.mtu,
            opts.seconds,
            cpus(),
            opts.idle_seconds,
            opts.connections,
            opts.ttfb_connections,
            opts.rate_connections,
            opts.scale_connections,
            opts.async_connections
        );
        let names: Vec<String> = opts.sections().map(|s| json_str(s.name())).collect();
        let _ = write!(out, ",\"sections\":[{}]", names.join(","));
        for section in Section::ALL {
            let part = self.part(section);
            match (json_key(section), part) {
                (None, Some(part)) => part.json(opts, &mut out),
                (None, None) => out.push_str(NO_THROUGHPUT),
                (Some(key), part) => {
                    let _ = write!(out, ",{}:", json_str(key));
                    match part {
                        Some(part) => part.json(opts, &mut out),
                        None => out.push_str("null"),
                    }
                }
            }
        }
        let failed: Vec<String> = self.failed.iter().map(|s| json_str(s.name())).collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let _ = write!(
            out,
            ",\"failed\":[{}],\"notes\":[{}]}}",
            failed.join(","),
            notes.join(",")
        );
        out
    }
}

pub fn cpus() -> usize {
    thread::available_parallelism().map_or(0, |n| n.get())
}

pub fn json_str(s: &str) -> String {
    common::json_string(s.as_bytes())
}

/// A table's header and the rule under it: `columns` with their widths, the first aligned left,
/// the others right, then `last` as wide as it is.
pub fn header(out: &mut String, columns: &[(&str, usize)], last: &str) {
    let mut titles = String::new();
    let mut rule = String::new();
    for (i, &(title, width)) in columns.iter().enumerate() {
        if i == 0 {
            let _ = write!(titles, "{title:<width$} | ");
        } else {
            let _ = write!(titles, "{title:>width$} | ");
        }
        let _ = write!(rule, "{:-<width$}-+-", "");
    }
    let _ = writeln!(out, "{titles}{last}");
    let _ = writeln!(out, "{rule}{:-<1$}", "", last.len());
}

/// A table cell: `v` with `decimals` decimals, or `-`.
pub fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// A JSON number: `v` with `decimals` decimals, or `null`.
pub fn json_num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "null".to_owned(), |v| format!("{v:.decimals$}"))
}

/// `values` with `decimals` decimals each, joined by `sep`.
pub fn joined(values: impl IntoIterator<Item = f64>, decimals: usize, sep: &str) -> String {
    values
        .into_iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The median of `values` (0 for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
