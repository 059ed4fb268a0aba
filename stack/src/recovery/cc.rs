//! Congestion control of the recovery layer: the congestion window and how it grows (slow
//! start, then CUBIC (RFC 9438) or Reno (RFC 5681)), how it shrinks on loss, and how much may
//! be sent during recovery (Proportional Rate Reduction, RFC 6937 as Linux runs it); or BBR
//! ([`super::bbr`]), which sets the window from its model of the path instead.
//!
//! With the layer on, smoltcp's own congestion control is off: the layer tells smoltcp how far
//! it may send by the window it lets smoltcp see (see the module above).

use smoltcp::time::{Duration, Instant};

use super::bbr::{self, Bbr};
use crate::config::CongestionControl;

/// RFC 9438's multiplicative decrease.
const BETA_CUBIC: f64 = 0.7;
/// RFC 9438's `C`.
const C_CUBIC: f64 = 0.4;
/// Initial window, in segments (RFC 6928, Linux).
pub(crate) const INITIAL_SEGMENTS: u32 = 10;

/// Where the connection is in RFC 6675 / RFC 8985 terms (Linux's `ca_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing known lost.
    Open,
    /// Fast recovery until `SND.UNA` reaches `point` (losses found by SACK or duplicate
    /// ACKs), sending under PRR.
    Recovery { point: u32 },
    /// After a retransmission timeout until `SND.UNA` reaches `point`: slow start from one
    /// segment, the lost segments first.
    Loss { point: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Cubic {
    /// Window before the last reduction, in segments.
    w_max: f64,
    /// Start of the current congestion avoidance epoch.
    epoch: Option<Instant>,
    k: f64,
    /// The Reno-friendly estimate, in segments.
    w_est: f64,
    /// The window when the epoch began, in segments.
    cwnd_epoch: f64,
}

/// The window before a reduction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    cwnd: f64,
    ssthresh: u32,
    cubic: Cubic,
}

/// PRR's state during one recovery (RFC 6937 §3).
#[derive(Debug, Clone, Copy, Default)]
struct Prr {
    delivered: u64,
    out: u64,
    recover_fs: u64,
    /// What the last acknowledgement allows, less what left since.
    sndcnt: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    algorithm: CongestionControl,
    mss: u32,
    /// In bytes, with fractions (the algorithms grow it by fractions of a segment).
    cwnd: f64,
    ssthresh: u32,
    phase: Phase,
    prr: Prr,
    cubic: Cubic,
    /// BBR's model, with [`CongestionControl::Bbr`].
    bbr: Option<Box<Bbr>>,
}

impl Congestion {
    pub(crate) fn new(algorithm: CongestionControl, mss: u32, now: Instant) -> Congestion {
        let mss = mss.max(64);
        Congestion {
            algorithm,
            mss,
            cwnd: f64::from(INITIAL_SEGMENTS * mss),
            ssthresh: u32::MAX,
            phase: Phase::Open,
            prr: Prr::default(),
            cubic: Cubic::default(),
            bbr: (algorithm == CongestionControl::Bbr).then(|| Box::new(Bbr::new(now, 0, None))),
        }
    }

    /// Run `algorithm` from now on: the window, the threshold and the recovery under way carry
    /// over; the new algorithm's own state starts afresh (as Linux's `TCP_CONGESTION` on a
    /// connected socket).
    /// `delivered` and `min_rtt`: what the connection has delivered and measured so far.
    pub(crate) fn switch_to(
        &mut self,
        algorithm: CongestionControl,
        now: Instant,
        delivered: u32,
        min_rtt: Option<Duration>,
    ) {
        if algorithm == self.algorithm {
            return;
        }
        self.algorithm = algorithm;
        self.cubic = Cubic::default();
        self.bbr = (algorithm == CongestionControl::Bbr)
            .then(|| Box::new(Bbr::new(now, delivered, min_rtt)));
        if matches!(self.phase, Phase::Recovery { .. }) && self.uses_prr() {
            // PRR starts from what is in flight now: let the next acknowledgement size it.
            self.prr = Prr {
                recover_fs: u64::from(self.cwnd().max(self.mss)),
                ..Prr::default()
            };
            self.ssthresh = self.ssthresh.min(self.cwnd());
        }
    }

    /// BBR's model, if that is the algorithm.
    pub(crate) fn bbr(&self) -> Option<&Bbr> {
        self.bbr.as_deref()
    }

    /// An acknowledgement, for BBR (the other algorithms take theirs through
    /// [`Congestion::on_ack`] and PRR). Returns whether the samples to come are to be marked
    /// application-limited (BBR holds its own window down).
    pub(crate) fn on_model_ack(&mut self, a: &bbr::Ack, srtt: Option<Duration>) -> bool {
        let Some(b) = self.bbr.as_deref_mut() else {
            return false;
        };
        let mut cwnd = self.cwnd.min(f64::from(u32::MAX)) as u32;
        let hold_down = b.on_ack(a, &mut cwnd, self.mss, srtt);
        self.cwnd = f64::from(cwnd);
        if let Some(t) = b.ssthresh() {
            self.ssthresh = t;
        }
        hold_down
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn in_recovery(&self) -> bool {
        !matches!(self.phase, Phase::Open)
    }

    /// The congestion window in bytes (`u32::MAX` without congestion control).
    pub(crate) fn cwnd(&self) -> u32 {
        match self.algorithm {
            CongestionControl::None => u32::MAX,
            _ => self.cwnd.min(f64::from(u32::MAX)) as u32,
        }
    }

    pub(crate) fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// Bytes that may leave now with `pipe` in flight (retransmissions and new data alike).
    pub(crate) fn allowance(&self, pipe: u32) -> u32 {
        match self.phase {
            Phase::Recovery { .. } if self.uses_prr() => {
                self.prr.sndcnt.min(u64::from(u32::MAX)) as u32
            }
            _ => self.cwnd().saturating_sub(pipe),
        }
    }

    /// Recovery sends under PRR (BBR sets the window itself).
    fn uses_prr(&self) -> bool {
        matches!(
            self.algorithm,
            CongestionControl::Reno | CongestionControl::Cubic
        )
    }

    /// `bytes` left (PRR counts them during recovery).
    pub(crate) fn on_sent(&mut self, bytes: u32) {
        if matches!(self.phase, Phase::Recovery { .. }) {
            self.prr.out += u64::from(bytes);
            self.prr.sndcnt = self.prr.sndcnt.saturating_sub(u64::from(bytes));
        }
    }

    /// An acknowledgement outside recovery that acknowledged `acked` new bytes; `limited`: the
    /// window, not the application, bounded what was in flight (RFC 7661: an application-limited
    /// flow does not grow its window).
    pub(crate) fn on_ack(&mut self, now: Instant, acked: u32, limited: bool, srtt: Duration) {
        if acked == 0 || !limited || !self.uses_prr() {
            return;
        }
        let mss = f64::from(self.mss);
        let mut acked = f64::from(acked);
        if self.cwnd < f64::from(self.ssthresh) {
            // Slow start (RFC 5681 §3.1; Linux counts every byte acknowledged).
            let room = f64::from(self.ssthresh) - self.cwnd;
            let grow = acked.min(room);
            self.cwnd += grow;
            acked -= grow;
            if acked <= 0.0 {
                return;
            }
        }
        match self.algorithm {
            CongestionControl::Reno => {
                self.cwnd += mss * acked / self.cwnd.max(mss);
            }
            CongestionControl::Cubic => self.cubic_grow(now, acked, srtt),
            _ => {}
        }
    }

    /// RFC 9438 §4.2–4.3, per acknowledgement, in segments.
    fn cubic_grow(&mut self, now: Instant, acked: f64, srtt: Duration) {
        let mss = f64::from(self.mss);
        let cwnd = self.cwnd / mss;
        let c = &mut self.cubic;
        let epoch = match c.epoch {
            Some(e) => e,
            None => {
                c.epoch = Some(now);
                c.cwnd_epoch = cwnd;
                c.w_est = cwnd;
                if c.w_max < cwnd {
                    // No reduction before (or the window grew past it): start on the plateau.
                    c.w_max = cwnd;
                    c.k = 0.0;
                } else {
                    c.k = ((c.w_max - cwnd) / C_CUBIC).cbrt();
                }
                now
            }
        };
        let t = if now > epoch {
            (now - epoch).total_micros() as f64 / 1e6
        } else {
            0.0
        };
        let rtt = srtt.total_micros() as f64 / 1e6;
        let target = C_CUBIC * (t + rtt - c.k).powi(3) + c.w_max;
        let target = target.clamp(cwnd, 1.5 * cwnd);
        // The Reno-friendly region (§4.3): α = 3(1-β)/(1+β) until the window regains its
        // size before the reduction, then 1.
        let alpha = if c.w_est >= c.w_max {
            1.0
        } else {
            3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC)
        };
        let segs = acked / mss;
        c.w_est += alpha * segs / cwnd;
        let next = if C_CUBIC * (t - c.k).powi(3) + c.w_max < c.w_est {
            c.w_est
        } else {
            cwnd + (target - cwnd) * segs / cwnd
        };
        self.cwnd = next.max(cwnd) * mss;
    }

    /// The window `ssthresh` after a loss with `pipe` bytes in flight.
    fn reduced(&mut self) -> u32 {
        let mss = f64::from(self.mss);
        let cwnd = self.cwnd;
        let next = match self.algorithm {
            CongestionControl::Cubic => {
                let segs = cwnd / mss;
                // Fast convergence (§4.7).
                self.cubic.w_max = if segs < self.cubic.w_max {
                    segs * (1.0 + BETA_CUBIC) / 2.0
                } else {
                    segs
                };
                self.cubic.epoch = None;
                cwnd * BETA_CUBIC
            }
            _ => cwnd / 2.0,
        };
        next.max(2.0 * mss) as u32
    }

    /// Losses were found (RFC 6675 / RFC 8985): enter fast recovery until `SND.UNA` passes
    /// `point`, with `pipe` in flight. Returns false when already recovering.
    pub(crate) fn enter_recovery(&mut self, point: u32, pipe: u32) -> bool {
        if self.in_recovery() {
            return false;
        }
        if let Some(b) = self.bbr.as_deref_mut() {
            // No reduction: BBR sends what is delivered for a round, then puts the window back.
            b.on_recovery(self.cwnd as u32);
            self.phase = Phase::Recovery { point };
            return true;
        }
        self.ssthresh = self.reduced();
        self.prr = Prr {
            recover_fs: u64::from(pipe.max(self.mss)),
            ..Prr::default()
        };
        self.phase = Phase::Recovery { point };
        true
    }

    /// One acknowledgement during fast recovery: `delivered` bytes got through, `pipe` are in
    /// flight after it. Sets what may leave until the next (RFC 6937 §3, PRR-SSRB).
    pub(crate) fn prr_ack(&mut self, delivered: u32, pipe: u32) {
        if !matches!(self.phase, Phase::Recovery { .. }) || !self.uses_prr() {
            return;
        }
        let p = &mut self.prr;
        p.delivered += u64::from(delivered);
        let ssthresh = u64::from(self.ssthresh);
        let pipe = u64::from(pipe);
        let sndcnt = if pipe > ssthresh {
            (p.delivered * ssthresh)
                .div_ceil(p.recover_fs.max(1))
                .saturating_sub(p.out)
        } else {
            let limit =
                p.delivered.saturating_sub(p.out).max(u64::from(delivered)) + u64::from(self.mss);
            (ssthresh - pipe).min(limit)
        };
        p.sndcnt = sndcnt;
        self.cwnd = (pipe + sndcnt) as f64;
    }

    /// Let at least `bytes` leave now during fast recovery (the first retransmission on
    /// entering it, RFC 6675 §5 step 4.3).
    pub(crate) fn grant(&mut self, bytes: u32) {
        if matches!(self.phase, Phase::Recovery { .. }) {
            self.prr.sndcnt = self.prr.sndcnt.max(u64::from(bytes));
        }
    }

    /// `SND.UNA` reached the recovery point: recovery is over (RFC 6937: the window is
    /// `ssthresh`).
    pub(crate) fn exit_recovery(&mut self) {
        match self.phase {
            // BBR puts its window back on the next acknowledgement.
            Phase::Recovery { .. } if self.uses_prr() => {
                self.cwnd = f64::from(self.ssthresh);
            }
            Phase::Recovery { .. } => {}
            Phase::Loss { .. } | Phase::Open => {}
        }
        self.phase = Phase::Open;
    }

    /// A retransmission timeout (RFC 5681 §3.1): `ssthresh` from the window (unless this
    /// follows another timeout without progress), one segment of window, slow start.
    pub(crate) fn on_timeout(&mut self, point: u32, repeated: bool) {
        if let Some(b) = self.bbr.as_deref_mut() {
            let phase = Phase::Loss { point };
            b.on_timeout(self.cwnd as u32, phase);
            self.cwnd = f64::from(self.mss);
            self.phase = phase;
            return;
        }
        if !repeated {
            self.ssthresh = match self.phase {
                // The window was already cut for this episode.
                Phase::Recovery { .. } => self.ssthresh,
                _ => self.reduced(),
            };
        }
        self.cwnd = f64::from(self.mss);
        self.cubic.epoch = None;
        self.phase = Phase::Loss { point };
    }

    /// What the window was before a reduction, to put back if the losses turn out spurious.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            cubic: self.cubic,
        }
    }

    /// Every retransmission of the episode arrived twice (D-SACKs): nothing was lost, the
    /// network delayed or reordered. Put the window back as it was and leave recovery (Linux's
    /// undo, RFC 3708's idea).
    pub(crate) fn undo(&mut self, s: Snapshot) {
        self.cwnd = self.cwnd.max(s.cwnd);
        self.ssthresh = self.ssthresh.max(s.ssthresh);
        self.cubic = s.cubic;
        if let Some(b) = self.bbr.as_deref_mut() {
            b.on_undo();
        }
        // Growth starts again from the window put back.
        self.cubic.epoch = None;
        self.phase = Phase::Open;
    }

    /// A loss repaired by a tail loss probe alone (RFC 8985 §7.4.2): the window is reduced as
    /// for a fast recovery, at once.
    pub(crate) fn on_probe_repaired(&mut self) {
        // BBR does not cut its window for a loss (Linux leaves it to the model too).
        if self.in_recovery() || !self.uses_prr() {
            return;
        }
        self.ssthresh = self.reduced();
        self.cwnd = f64::from(self.ssthresh);
    }

    /// Data leaves with nothing in flight (the application was the limit); `long`: silent
    /// for longer than a retransmission timeout.
    pub(crate) fn on_send_after_idle(&mut self, now: Instant, long: bool) {
        if let Some(b) = self.bbr.as_deref_mut() {
            let mut cwnd = self.cwnd.min(f64::from(u32::MAX)) as u32;
            b.on_idle_restart(now, &mut cwnd);
            self.cwnd = f64::from(cwnd);
        } else if long {
            self.restart_after_idle();
        }
    }

    /// Whether an idle period would restart the window (CUBIC and Reno, above the initial
    /// window; BBR keeps its model).
    pub(crate) fn restarts_after_idle(&self) -> bool {
        self.uses_prr() && self.cwnd > f64::from(INITIAL_SEGMENTS * self.mss)
    }

    /// The connection was idle longer than a retransmission timeout: the window restarts from
    /// at most the initial one (RFC 5681 §4.1, Linux's `tcp_slow_start_after_idle`).
    pub(crate) fn restart_after_idle(&mut self) {
        if self.bbr.is_some() {
            // BBR keeps its model across the silence (Linux paces at the estimate instead).
            return;
        }
        let iw = f64::from(INITIAL_SEGMENTS * self.mss);
        if self.cwnd > iw {
            self.ssthresh = self.ssthresh.max((self.cwnd * 0.75) as u32);
            self.cwnd = iw;
            self.cubic.epoch = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    #[test]
    fn slow_start_then_cubic_reduction_by_beta() {
        let mut cc = Congestion::new(CongestionControl::Cubic, MSS, Instant::ZERO);
        let now = Instant::from_millis(0);
        assert_eq!(cc.cwnd(), 10_000);
        cc.on_ack(now, 10_000, true, Duration::from_millis(10));
        assert_eq!(cc.cwnd(), 20_000, "slow start doubles per round");
        cc.on_ack(now, 10_000, false, Duration::from_millis(10));
        assert_eq!(
            cc.cwnd(),
            20_000,
            "an application-limited flow does not grow"
        );
        assert!(cc.enter_recovery(5, 20_000));
        assert!(!cc.enter_recovery(5, 20_000), "one reduction per episode");
        assert_eq!(cc.ssthresh(), 14_000);
        cc.exit_recovery();
        assert_eq!(cc.cwnd(), 14_000);
    }

    #[test]
    fn prr_spreads_the_reduction_over_the_acks_of_the_round() {
        let mut cc = Congestion::new(CongestionControl::Reno, MSS, Instant::ZERO);
        cc.on_ack(Instant::ZERO, 10_000, true, Duration::from_millis(10));
        // 20 segments in flight, one lost: ssthresh 10 segments.
        cc.enter_recovery(1, 19_000);
        let mut pipe = 19_000u32;
        let mut sent = 0u32;
        for _ in 0..19 {
            pipe -= MSS;
            cc.prr_ack(MSS, pipe);
            let n = cc.allowance(pipe);
            cc.on_sent(n);
            pipe += n;
            sent += n;
        }
        // About half of what was delivered went out again, never in one burst.
        assert!((9_000..=11_000).contains(&sent), "sent {sent}");
        assert!(pipe <= cc.ssthresh() + MSS);
    }

    #[test]
    fn timeout_restarts_from_one_segment() {
        let mut cc = Congestion::new(CongestionControl::Cubic, MSS, Instant::ZERO);
        cc.on_timeout(9, false);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 7_000);
        cc.on_timeout(9, true);
        assert_eq!(cc.ssthresh(), 7_000, "no second cut without progress");
        assert_eq!(cc.allowance(0), MSS);
    }

    #[test]
    fn cubic_grows_back_to_its_plateau() {
        let mut cc = Congestion::new(CongestionControl::Cubic, MSS, Instant::ZERO);
        cc.on_ack(Instant::ZERO, 90_000, true, Duration::from_millis(10));
        assert_eq!(cc.cwnd(), 100_000);
        cc.enter_recovery(1, 100_000);
        cc.exit_recovery();
        assert_eq!(cc.cwnd(), 70_000);
        let mut now = Instant::ZERO;
        for _ in 0..2000 {
            now += Duration::from_millis(10);
            let w = cc.cwnd();
            cc.on_ack(now, w, true, Duration::from_millis(10));
        }
        assert!(cc.cwnd() > 100_000, "cwnd {}", cc.cwnd());
    }
}
