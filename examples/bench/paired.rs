//! A variant measured against its baseline, run after run: `fastopen` (layer active against
//! layer off) and `ttfb` (Fast Open against a plain handshake).

use crate::report::median;

/// The figures of a variant's runs and of its baseline's, and the bytes each of the variant's
/// SYNs carried.
#[derive(Debug, Default)]
pub struct Paired {
    /// The variant's figures: Gbit/s with the layer active; ms with Fast Open.
    pub variant: Vec<f64>,
    /// The baseline's figures: Gbit/s with the layer off; ms with a plain handshake.
    pub baseline: Vec<f64>,
    /// Bytes the SYN of each of the variant's runs carried.
    pub syn_data: Vec<usize>,
}

impl Paired {
    /// Add a run's figure; `syn_data` counts for the variant's runs only.
    pub fn push(&mut self, variant: bool, figure: f64, syn_data: usize) {
        if variant {
            self.variant.push(figure);
            self.syn_data.push(syn_data);
        } else {
            self.baseline.push(figure);
        }
    }

    pub fn variant_median(&self) -> f64 {
        median(self.variant.iter().copied())
    }

    pub fn baseline_median(&self) -> f64 {
        median(self.baseline.iter().copied())
    }

    /// The variant's median, if any run gave a figure (`variant_median` is 0 without one).
    pub fn measured_variant(&self) -> Option<f64> {
        (!self.variant.is_empty()).then(|| self.variant_median())
    }

    /// The baseline's median, if any run gave a figure.
    pub fn measured_baseline(&self) -> Option<f64> {
        (!self.baseline.is_empty()).then(|| self.baseline_median())
    }

    /// The variant's median over the baseline's.
    pub fn ratio(&self) -> Option<f64> {
        let baseline = self.baseline_median();
        (baseline > 0.0).then(|| self.variant_median() / baseline)
    }

    /// Each run's figure over the baseline's of the same round (the runs alternate, so a pair
    /// shares the machine's state of the moment): its median, and the lower and upper
    /// quartiles.
    pub fn paired_ratios(&self) -> Option<(f64, f64, f64)> {
        let mut r: Vec<f64> = self
            .variant
            .iter()
            .zip(&self.baseline)
            .filter(|(_, &b)| b > 0.0)
            .map(|(v, b)| v / b)
            .collect();
        if r.is_empty() {
            return None;
        }
        r.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = q * (r.len() - 1) as f64;
            let (lo, hi) = (i.floor() as usize, i.ceil() as usize);
            r[lo] + (r[hi] - r[lo]) * (i - lo as f64)
        };
        Some((at(0.5), at(0.25), at(0.75)))
    }

    /// The SYN data of the variant's runs: `n`, or `lo-hi` when they differ.
    pub fn syn_range(&self) -> String {
        let lo = self.syn_data.iter().min().copied().unwrap_or(0);
        let hi = self.syn_data.iter().max().copied().unwrap_or(0);
        if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}-{hi}")
        }
    }
}

/// The smallest and the largest of `figures`, if there are any.
pub fn min_max(figures: &[f64]) -> Option<(f64, f64)> {
    let first = *figures.first()?;
    Some(
        figures
            .iter()
            .fold((first, first), |(lo, hi), &f| (lo.min(f), hi.max(f))),
    )
}
