//! BBR congestion control (version 1, as Linux's `tcp_bbr` runs it; draft-cardwell-iccrg-bbr-
//! congestion-control-00): a model of the path, not a reaction to loss.
//!
//! On every acknowledgement the model takes a delivery rate sample ([`super::rate`]) and a round
//! trip: the bottleneck bandwidth is the largest rate seen over the last ten round trips, the
//! propagation delay the least round trip over ten seconds. The congestion window is twice
//! their product, plus what the acknowledgements' bunching calls for (ACK aggregation), plus
//! Linux's allowance for segments held whole in the end hosts (its quantization budget).
//! Random loss does not shrink the model: after a recovery the window is put back. That is
//! what keeps a BBR sender near the path's rate at 1% loss, where CUBIC sends about
//! `1.2/sqrt(p)` segments a round trip.
//!
//! The modes: STARTUP doubles the window each round until the bandwidth stops growing by a
//! quarter for three rounds; DRAIN lets the queue STARTUP built go; PROBE_BW cycles its gain
//! (1.25 for a round to look for more bandwidth, 0.75 to drain what that queued, then 1);
//! PROBE_RTT, when no round trip matched the least one for ten seconds, holds four segments in
//! flight for 200 ms and a round so the propagation delay is measured again.
//!
//! One part of Linux's BBR is not here: pacing. The packet path sends what the window allows
//! at once, so a window's worth leaves in a burst, and the pacing gains change only when
//! PROBE_BW's phases end and Linux's quantization budget: the window is twice the BDP (plus
//! the allowances) in every phase, so up to about one BDP can stand queued at a bottleneck,
//! which the 0.75 phase does not drain. DRAIN, which has no window of its own in Linux, drains
//! here by the window (one BDP). Linux's long-term bandwidth estimate (for token-bucket
//! policers) is not here either.

use smoltcp::time::{Duration, Instant};

use super::cc::Phase;
use super::rate::RateSample;

/// `2/ln 2`: the smallest gain that doubles the sending rate each round (STARTUP).
const HIGH_GAIN: f64 = 2.885;
/// PROBE_BW's congestion window gain (tolerates delayed and stretched acknowledgements).
const CWND_GAIN: f64 = 2.0;
/// PROBE_BW's gain cycle.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Rounds the bandwidth filter spans.
const BW_ROUNDS: u32 = 10;
/// How long a least round trip stands before PROBE_RTT measures it again.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long PROBE_RTT holds the window at [`MIN_CWND_SEGMENTS`].
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// The least window, in segments (two pairs of segments acknowledged every other one).
const MIN_CWND_SEGMENTS: u32 = 4;
/// STARTUP ends when the bandwidth grew less than this over [`FULL_BW_ROUNDS`] rounds.
const FULL_BW_GROWTH: f64 = 1.25;
const FULL_BW_ROUNDS: u8 = 3;
/// ACK aggregation: the filter's half window, in rounds, and the most it may add, in time at
/// the estimated bandwidth.
const EXTRA_ACKED_ROUNDS: u8 = 5;
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);
/// Past this many bytes acknowledged in one aggregation epoch, it starts again (Linux: 2^20
/// segments).
const ACK_EPOCH_RESET: u32 = 1 << 30;
/// Linux paces 1% below the estimate.
const PACING_MARGIN: f64 = 0.99;
/// The largest packet Linux builds for segmentation offload, less its header room.
const GSO_MAX: u64 = 65_536 - 1 - 320;
/// Below this pacing rate (bytes per second) Linux sends single segments.
const MIN_TSO_RATE: u64 = 1_200_000 / 8;
/// The segments a window starts with (the initial window).
const INITIAL_SEGMENTS: u32 = super::cc::INITIAL_SEGMENTS;

/// BBR's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// What one acknowledgement tells the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    pub(crate) now: Instant,
    /// The delivery rate sample, if the acknowledgement reported anything delivered.
    pub(crate) sample: Option<RateSample>,
    /// The connection's delivered bytes after it (wrapping).
    pub(crate) delivered: u32,
    /// Bytes it reported delivered (cumulatively or by SACK).
    pub(crate) acked: u32,
    /// Bytes it showed lost.
    pub(crate) losses: u32,
    /// Bytes in flight before and after it.
    pub(crate) prior_pipe: u32,
    pub(crate) pipe: u32,
    /// A round trip it measured (a segment never sent again).
    pub(crate) rtt: Option<Duration>,
    /// Where the connection's recovery stands after it.
    pub(crate) phase: Phase,
}

/// Bandwidth samples per round, for the windowed maximum.
#[derive(Debug, Clone, Copy, Default)]
struct BwFilter {
    /// `(round, largest rate that round)`, at `round % BW_ROUNDS`.
    slots: [(u32, u64); BW_ROUNDS as usize],
    /// The round of the latest sample.
    latest: u32,
}

impl BwFilter {
    fn update(&mut self, round: u32, bw: u64) {
        self.latest = round;
        let slot = &mut self.slots[(round % BW_ROUNDS) as usize];
        if slot.0 != round {
            *slot = (round, bw);
        } else if bw > slot.1 {
            slot.1 = bw;
        }
    }

    /// The largest of the samples taken over the [`BW_ROUNDS`] rounds up to the latest. Rounds
    /// without a sample (all application-limited and lower) do not age the estimate: as in
    /// Linux, it ages only as new samples come.
    fn max(&self) -> u64 {
        self.slots
            .iter()
            .filter(|(r, _)| self.latest.wrapping_sub(*r) < BW_ROUNDS)
            .map(|&(_, bw)| bw)
            .max()
            .unwrap_or(0)
    }
}

/// One connection's BBR.
#[derive(Debug, Clone)]
pub(crate) struct Bbr {
    mode: Mode,
    bw: BwFilter,
    /// Rounds (a round ends when a segment sent after it began is delivered).
    round: u32,
    next_round_delivered: u32,
    round_start: bool,
    min_rtt: Option<Duration>,
    min_rtt_at: Instant,
    /// STARTUP's exit test.
    full_bw: u64,
    full_bw_rounds: u8,
    full_bw_reached: bool,
    /// PROBE_BW's place in its gain cycle, and when that phase began.
    cycle: usize,
    cycle_start: Instant,
    /// PROBE_RTT: when it may end (once the flight got down to the least window), and whether
    /// a round passed since.
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    /// The window to put back after a recovery or PROBE_RTT.
    prior_cwnd: u32,
    /// The first round of a recovery sends only what is delivered.
    packet_conservation: bool,
    prev_phase: Phase,
    /// Sending again after an idle period: no PROBE_RTT for it.
    idle_restart: bool,
    /// ACK aggregation: the largest excess of the last two windows of rounds, the rounds in
    /// the current window, which window, and the epoch the excess is measured over.
    extra_acked: [u32; 2],
    extra_acked_rounds: u8,
    extra_acked_slot: usize,
    ack_epoch_start: Instant,
    ack_epoch_acked: u32,
    pacing_gain: f64,
    cwnd_gain: f64,
    /// Bytes per second (what Linux would pace at: the quantization budget follows it).
    pacing_rate: u64,
    /// Set when DRAIN begins: the estimated path's capacity.
    ssthresh: Option<u32>,
}

impl Bbr {
    /// A connection's BBR from `now`, which has delivered `delivered` bytes so far (rounds
    /// count from there) and measured `min_rtt` (Linux's `bbr_init`, also when a connection
    /// switches to BBR).
    pub(crate) fn new(now: Instant, delivered: u32, min_rtt: Option<Duration>) -> Bbr {
        Bbr {
            mode: Mode::Startup,
            bw: BwFilter::default(),
            round: 0,
            next_round_delivered: delivered,
            round_start: false,
            min_rtt,
            min_rtt_at: now,
            full_bw: 0,
            full_bw_rounds: 0,
            full_bw_reached: false,
            cycle: 0,
            cycle_start: now,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: 0,
            packet_conservation: false,
            prev_phase: Phase::Open,
            idle_restart: false,
            extra_acked: [0; 2],
            extra_acked_rounds: 0,
            extra_acked_slot: 0,
            ack_epoch_start: now,
            ack_epoch_acked: 0,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            pacing_rate: 0,
            ssthresh: None,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The bottleneck bandwidth estimate, bytes per second.
    pub(crate) fn bw(&self) -> u64 {
        self.bw.max()
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    pub(crate) fn pacing_rate(&self) -> u64 {
        self.pacing_rate
    }

    pub(crate) fn ssthresh(&self) -> Option<u32> {
        self.ssthresh
    }

    /// Bytes the path holds at bandwidth `bw` over the least round trip, times `gain`.
    fn bdp(&self, bw: u64, gain: f64, mss: u32) -> u32 {
        let Some(rtt) = self.min_rtt else {
            // No round trip yet: the initial window.
            return INITIAL_SEGMENTS * mss;
        };
        let bytes = bw as f64 * rtt.total_micros() as f64 / 1e6 * gain;
        bytes.ceil().min(f64::from(u32::MAX)) as u32
    }

    /// Segments Linux puts in one packet at the pacing rate (about a millisecond's worth,
    /// within what segmentation offload takes).
    fn tso_segments(&self, mss: u32) -> u32 {
        let min = if self.pacing_rate < MIN_TSO_RATE {
            1
        } else {
            2
        };
        let bytes = (self.pacing_rate >> 10).min(GSO_MAX);
        ((bytes / u64::from(mss.max(1))) as u32).max(min).min(127)
    }

    /// Linux's quantization budget: room for three packets of [`Bbr::tso_segments`] in the
    /// end hosts (one queued, one in offload, one held by the receiver's coalescing and delayed
    /// acknowledgements), rounded up to an even number of segments; two more while probing.
    fn quantization_budget(&self, cwnd: u32, mss: u32) -> u32 {
        let mss = mss.max(1);
        let segs = cwnd
            .div_ceil(mss)
            .saturating_add(3 * self.tso_segments(mss));
        let mut segs = (segs + 1) & !1;
        if self.mode == Mode::ProbeBw && self.cycle == 0 {
            segs += 2;
        }
        segs.saturating_mul(mss)
    }

    /// What the path holds at `bw` and `gain`, plus the quantization budget.
    fn inflight(&self, bw: u64, gain: f64, mss: u32) -> u32 {
        self.quantization_budget(self.bdp(bw, gain, mss), mss)
    }

    /// Keep the window to put back after a recovery or PROBE_RTT.
    fn save_cwnd(&mut self, cwnd: u32) {
        self.prior_cwnd = if self.prev_phase == Phase::Open && self.mode != Mode::ProbeRtt {
            cwnd
        } else {
            // Already cut by a recovery or PROBE_RTT: keep the larger.
            self.prior_cwnd.max(cwnd)
        };
    }

    /// Fast recovery begins (the window it had is kept to be put back).
    pub(crate) fn on_recovery(&mut self, cwnd: u32) {
        self.save_cwnd(cwnd);
    }

    /// A retransmission timeout: the window is one segment (the caller sets it) and STARTUP's
    /// bandwidth test starts again; the window before it is put back once the loss is repaired.
    pub(crate) fn on_timeout(&mut self, cwnd: u32, phase: Phase) {
        self.save_cwnd(cwnd);
        self.prev_phase = phase;
        self.full_bw = 0;
        self.round_start = true;
    }

    /// The losses of a recovery turned out spurious.
    pub(crate) fn on_undo(&mut self) {
        self.full_bw = 0;
        self.full_bw_rounds = 0;
    }

    /// Data leaves with nothing in flight, the application having been the limit (Linux's
    /// `CA_EVENT_TX_START`): no PROBE_RTT for the silence, a new aggregation epoch, and a
    /// PROBE_RTT whose time is up ends.
    pub(crate) fn on_idle_restart(&mut self, now: Instant, cwnd: &mut u32) {
        self.idle_restart = true;
        self.ack_epoch_start = now;
        self.ack_epoch_acked = 0;
        match self.mode {
            Mode::ProbeBw => self.pacing_rate = pacing(self.bw(), 1.0),
            Mode::ProbeRtt => self.probe_rtt_done_check(now, cwnd),
            _ => {}
        }
    }

    /// PROBE_RTT has lasted its time: the window comes back, and the mode it interrupted.
    fn probe_rtt_done_check(&mut self, now: Instant, cwnd: &mut u32) {
        if self.probe_rtt_done.is_none_or(|done| now <= done) {
            return;
        }
        self.min_rtt_at = now;
        *cwnd = (*cwnd).max(self.prior_cwnd);
        if self.full_bw_reached {
            self.enter_probe_bw(now, self.next_round_delivered);
        } else {
            self.mode = Mode::Startup;
        }
    }

    /// An acknowledgement: update the model, then the window `cwnd` (bytes). Returns true when
    /// the samples to come measure BBR itself, not the path (PROBE_RTT holds the window down):
    /// the caller marks them application-limited.
    pub(crate) fn on_ack(
        &mut self,
        a: &Ack,
        cwnd: &mut u32,
        mss: u32,
        srtt: Option<Duration>,
    ) -> bool {
        let mss = mss.max(1);
        self.update_bw(a);
        self.update_ack_aggregation(a, *cwnd);
        self.update_cycle(a, mss);
        self.check_full_bw(a);
        self.check_drain(a, mss);
        let hold_down = self.update_min_rtt(a, cwnd, mss);
        self.update_gains();
        self.set_pacing_rate(*cwnd, srtt);
        self.set_cwnd(a, cwnd, mss);
        hold_down
    }

    fn update_bw(&mut self, a: &Ack) {
        self.round_start = false;
        let Some(s) = a.sample else { return };
        let Some(bw) = s.rate() else { return };
        if (s.prior_delivered.wrapping_sub(self.next_round_delivered) as i32) >= 0 {
            self.next_round_delivered = a.delivered;
            self.round = self.round.wrapping_add(1);
            self.round_start = true;
            self.packet_conservation = false;
        }
        // An application-limited sample counts only if it says the path is faster.
        if !s.app_limited || bw >= self.bw() {
            self.bw.update(self.round, bw);
        }
    }

    /// How much more the acknowledgements delivered than the bandwidth estimate explains,
    /// over the current epoch: the window needs that much more to keep sending while they
    /// bunch (Linux's `bbr_update_ack_aggregation`).
    fn update_ack_aggregation(&mut self, a: &Ack, cwnd: u32) {
        let Some(s) = a.sample.filter(|s| s.rate().is_some()) else {
            return;
        };
        if a.acked == 0 || s.delivered == 0 {
            return;
        }
        if self.round_start {
            self.extra_acked_rounds = self.extra_acked_rounds.saturating_add(1);
            if self.extra_acked_rounds >= EXTRA_ACKED_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_slot ^= 1;
                self.extra_acked[self.extra_acked_slot] = 0;
            }
        }
        let epoch = if a.now > self.ack_epoch_start {
            a.now - self.ack_epoch_start
        } else {
            Duration::ZERO
        };
        let mut expected = (self.bw() as u128 * epoch.total_micros() as u128 / 1_000_000)
            .min(u128::from(u32::MAX)) as u32;
        if self.ack_epoch_acked <= expected
            || self.ack_epoch_acked.saturating_add(a.acked) >= ACK_EPOCH_RESET
        {
            // Acknowledgements no faster than the estimate: a new epoch starts.
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = a.now;
            expected = 0;
        }
        self.ack_epoch_acked = self.ack_epoch_acked.saturating_add(a.acked);
        let extra = (self.ack_epoch_acked - expected).min(cwnd);
        let slot = &mut self.extra_acked[self.extra_acked_slot];
        *slot = (*slot).max(extra);
    }

    /// The window's allowance for ACK aggregation (once STARTUP is over).
    fn aggregation_cwnd(&self) -> u32 {
        if !self.full_bw_reached {
            return 0;
        }
        let most = (self.bw() as u128 * EXTRA_ACKED_MAX.total_micros() as u128 / 1_000_000)
            .min(u128::from(u32::MAX)) as u32;
        self.extra_acked[0].max(self.extra_acked[1]).min(most)
    }

    fn update_cycle(&mut self, a: &Ack, mss: u32) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let full_length = self
            .min_rtt
            .is_some_and(|m| a.now > self.cycle_start && a.now - self.cycle_start > m);
        let gain = CYCLE[self.cycle];
        let next = if gain > 1.0 {
            // Probing: until the flight reached gain × BDP (or losses say it will not fit).
            full_length && (a.losses > 0 || a.prior_pipe >= self.inflight(self.bw(), gain, mss))
        } else if gain < 1.0 {
            // Draining: until the flight is back at the BDP.
            full_length || a.prior_pipe <= self.inflight(self.bw(), 1.0, mss)
        } else {
            full_length
        };
        if next {
            self.cycle = (self.cycle + 1) % CYCLE.len();
            self.cycle_start = a.now;
        }
    }

    fn check_full_bw(&mut self, a: &Ack) {
        if self.full_bw_reached || !self.round_start || a.sample.is_none_or(|s| s.app_limited) {
            return;
        }
        let bw = self.bw();
        if bw as f64 >= self.full_bw as f64 * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        self.full_bw_reached = self.full_bw_rounds >= FULL_BW_ROUNDS;
    }

    fn check_drain(&mut self, a: &Ack, mss: u32) {
        if self.mode == Mode::Startup && self.full_bw_reached {
            self.mode = Mode::Drain;
            self.ssthresh = Some(self.inflight(self.bw(), 1.0, mss));
        }
        if self.mode == Mode::Drain && a.pipe <= self.inflight(self.bw(), 1.0, mss) {
            self.enter_probe_bw(a.now, a.delivered);
        }
    }

    /// PROBE_BW, at a phase of the cycle other than draining (Linux picks one at random; the
    /// delivered count serves as the draw).
    fn enter_probe_bw(&mut self, now: Instant, delivered: u32) {
        self.mode = Mode::ProbeBw;
        let draw = (delivered as usize / 1000) % 7;
        self.cycle = (CYCLE.len() - 1 - draw + 1) % CYCLE.len();
        self.cycle_start = now;
    }

    fn update_min_rtt(&mut self, a: &Ack, cwnd: &mut u32, mss: u32) -> bool {
        let expired = a.now > self.min_rtt_at + MIN_RTT_WINDOW;
        if let Some(rtt) = a.rtt {
            if self.min_rtt.is_none_or(|m| rtt <= m) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_at = a.now;
            }
        }
        if expired && !self.idle_restart && self.mode != Mode::ProbeRtt {
            // As Linux: the mode first, so the window kept is the larger of the two.
            self.mode = Mode::ProbeRtt;
            self.save_cwnd(*cwnd);
            self.probe_rtt_done = None;
        }
        let mut hold_down = false;
        if self.mode == Mode::ProbeRtt {
            hold_down = true;
            let least = MIN_CWND_SEGMENTS * mss;
            match self.probe_rtt_done {
                None if a.pipe <= least => {
                    self.probe_rtt_done = Some(a.now + PROBE_RTT_TIME);
                    self.probe_rtt_round_done = false;
                    self.next_round_delivered = a.delivered;
                }
                Some(done) => {
                    if self.round_start {
                        self.probe_rtt_round_done = true;
                    }
                    if self.probe_rtt_round_done && a.now > done {
                        self.probe_rtt_done_check(a.now, cwnd);
                    }
                }
                None => {}
            }
        }
        if a.acked > 0 {
            self.idle_restart = false;
        }
        hold_down
    }

    fn update_gains(&mut self) {
        (self.pacing_gain, self.cwnd_gain) = match self.mode {
            Mode::Startup => (HIGH_GAIN, HIGH_GAIN),
            // Linux keeps STARTUP's window and drains by pacing slower; without pacing, the
            // window drains the queue: one BDP (and the quantization budget).
            Mode::Drain => (1.0 / HIGH_GAIN, 1.0),
            Mode::ProbeBw => (CYCLE[self.cycle], CWND_GAIN),
            Mode::ProbeRtt => (1.0, 1.0),
        };
    }

    fn set_pacing_rate(&mut self, cwnd: u32, srtt: Option<Duration>) {
        let bw = self.bw();
        if bw == 0 {
            // No sample yet: the initial window per round trip, at STARTUP's gain.
            let rtt = srtt.map_or(1000, |r| r.total_micros().max(1));
            self.pacing_rate = pacing(u64::from(cwnd) * 1_000_000 / rtt, HIGH_GAIN);
            return;
        }
        let rate = pacing(bw, self.pacing_gain);
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    fn set_cwnd(&mut self, a: &Ack, cwnd: &mut u32, mss: u32) {
        let least = MIN_CWND_SEGMENTS * mss;
        if a.acked > 0 {
            *cwnd = self.recover_or_restore(a, *cwnd, mss);
            if !self.packet_conservation {
                let target = self
                    .bdp(self.bw(), self.cwnd_gain, mss)
                    .saturating_add(self.aggregation_cwnd());
                let target = self.quantization_budget(target, mss);
                if self.full_bw_reached {
                    *cwnd = cwnd.saturating_add(a.acked).min(target);
                } else if *cwnd < target || a.delivered < INITIAL_SEGMENTS * mss {
                    *cwnd = cwnd.saturating_add(a.acked);
                }
                *cwnd = (*cwnd).max(least);
            }
        }
        if self.mode == Mode::ProbeRtt {
            *cwnd = (*cwnd).min(least);
        }
    }

    /// Loss recovery's effect on the window (Linux's `bbr_set_cwnd_to_recover_or_restore`):
    /// what was lost comes off; the first round of a recovery sends only what is delivered;
    /// the end of one puts back the window from before it.
    fn recover_or_restore(&mut self, a: &Ack, cwnd: u32, mss: u32) -> u32 {
        let mut cwnd = if a.losses > 0 {
            cwnd.saturating_sub(a.losses).max(mss)
        } else {
            cwnd
        };
        let recovering = |p: Phase| !matches!(p, Phase::Open);
        match (self.prev_phase, a.phase) {
            (Phase::Open | Phase::Loss { .. }, Phase::Recovery { .. }) => {
                self.packet_conservation = true;
                self.next_round_delivered = a.delivered;
                cwnd = a.pipe.saturating_add(a.acked);
            }
            (prev, now) if recovering(prev) && !recovering(now) => {
                cwnd = cwnd.max(self.prior_cwnd);
                self.packet_conservation = false;
            }
            _ => {}
        }
        self.prev_phase = a.phase;
        if self.packet_conservation {
            cwnd = cwnd.max(a.pipe.saturating_add(a.acked));
        }
        cwnd
    }
}

/// The pacing rate at bandwidth `bw` and `gain`, with Linux's margin.
fn pacing(bw: u64, gain: f64) -> u64 {
    (bw as f64 * gain * PACING_MARGIN) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;
    const RTT: Duration = Duration::from_millis(10);
    /// The path's bottleneck: 10 MB/s, so 100 KB in a round trip.
    const PATH_BW: u64 = 10_000_000;

    /// A path with a fixed bottleneck, acknowledged once per round trip.
    struct Path {
        bbr: Bbr,
        cwnd: u32,
        now: Instant,
        delivered: u32,
        /// BBR asked that the samples to come count as application-limited (PROBE_RTT).
        hold_down: bool,
    }

    impl Path {
        fn new() -> Path {
            Path {
                bbr: Bbr::new(Instant::ZERO, 0, None),
                cwnd: INITIAL_SEGMENTS * MSS,
                now: Instant::ZERO,
                delivered: 0,
                hold_down: false,
            }
        }

        /// One round: a window's worth in flight, as much as the bottleneck lets through
        /// delivered a round trip later (a round trip of `rtt`), `lost` of it lost.
        fn round(&mut self, rtt: Duration, lost: u32, phase: Phase) {
            let path = (PATH_BW * rtt.total_micros() / 1_000_000) as u32;
            let sent = self.cwnd;
            let got = sent.min(path).saturating_sub(lost);
            let prior = self.delivered;
            self.now += rtt;
            self.delivered = self.delivered.wrapping_add(got);
            let ack = Ack {
                now: self.now,
                sample: Some(RateSample {
                    delivered: got,
                    prior_delivered: prior,
                    interval: rtt,
                    app_limited: self.hold_down,
                }),
                delivered: self.delivered,
                acked: got,
                losses: lost,
                prior_pipe: sent,
                pipe: sent - got - lost,
                rtt: Some(rtt),
                phase,
            };
            self.hold_down = self.bbr.on_ack(&ack, &mut self.cwnd, MSS, Some(rtt));
        }

        fn rounds(&mut self, n: usize) {
            for _ in 0..n {
                self.round(RTT, 0, Phase::Open);
            }
        }
    }

    #[test]
    fn startup_finds_the_bottleneck_then_drains_to_probe_bw() {
        let mut p = Path::new();
        p.round(RTT, 0, Phase::Open);
        let first = p.cwnd;
        p.round(RTT, 0, Phase::Open);
        assert!(
            p.cwnd >= 2 * first - MSS,
            "STARTUP doubles: {first} -> {}",
            p.cwnd
        );
        p.rounds(20);
        assert_eq!(p.bbr.mode(), Mode::ProbeBw);
        assert_eq!(p.bbr.bw(), PATH_BW);
        assert_eq!(p.bbr.min_rtt(), Some(RTT));
        // Twice the path's 100 KB; plus the ACK aggregation seen (this path acknowledges a
        // round trip's worth at once: 100 KB more); plus Linux's quantization budget at this
        // rate (three packets of 7 to 12 segments: about a millisecond at 0.75 to 1.25 times
        // 10 MB/s), two more segments while probing.
        let bdp = 100_000;
        assert!(
            (3 * bdp + 21 * MSS..=3 * bdp + 40 * MSS).contains(&p.cwnd),
            "cwnd {}",
            p.cwnd
        );
    }

    /// A connection that switches to BBR after 3 GB (past 2^31 of the wrapping byte count)
    /// counts its rounds from there, and finds the bottleneck as a new one would.
    #[test]
    fn a_switch_late_in_a_connection_counts_rounds_from_there() {
        let mut p = Path::new();
        p.delivered = 3_000_000_000;
        p.bbr = Bbr::new(Instant::ZERO, p.delivered, Some(RTT));
        p.rounds(22);
        assert_eq!(p.bbr.mode(), Mode::ProbeBw);
        assert_eq!(p.bbr.bw(), PATH_BW);
    }

    #[test]
    fn random_loss_does_not_shrink_the_model_and_the_window_comes_back() {
        let mut p = Path::new();
        p.rounds(30);
        let (cwnd, bw) = (p.cwnd, p.bbr.bw());
        p.bbr.on_recovery(p.cwnd);
        // The first round of the recovery sends only what is delivered.
        let recovery = Phase::Recovery { point: 1 };
        p.round(RTT, 2 * MSS, recovery);
        assert!(p.cwnd < cwnd, "packet conservation: {} of {cwnd}", p.cwnd);
        p.round(RTT, 0, recovery);
        p.round(RTT, 0, Phase::Open);
        assert!(p.cwnd >= cwnd, "put back: {} of {cwnd}", p.cwnd);
        assert_eq!(p.bbr.bw(), bw, "the estimate stands");
    }

    #[test]
    fn application_limited_samples_do_not_lower_the_estimate() {
        let mut p = Path::new();
        p.rounds(30);
        let bw = p.bbr.bw();
        for _ in 0..30 {
            p.now += RTT;
            let prior = p.delivered;
            p.delivered += 10 * MSS;
            let ack = Ack {
                now: p.now,
                sample: Some(RateSample {
                    delivered: 10 * MSS,
                    prior_delivered: prior,
                    interval: RTT,
                    app_limited: true,
                }),
                delivered: p.delivered,
                acked: 10 * MSS,
                losses: 0,
                prior_pipe: 10 * MSS,
                pipe: 0,
                rtt: Some(RTT),
                phase: Phase::Open,
            };
            p.bbr.on_ack(&ack, &mut p.cwnd, MSS, Some(RTT));
        }
        assert_eq!(
            p.bbr.bw(),
            bw,
            "a tenth of the rate, application-limited, is ignored"
        );
    }

    #[test]
    fn probe_rtt_after_ten_seconds_without_a_lower_round_trip() {
        let mut p = Path::new();
        p.rounds(30);
        let cwnd = p.cwnd;
        // A standing queue: every round trip from now on is 2 ms longer than the least.
        let queued = RTT + Duration::from_millis(2);
        let mut entered = None;
        for _ in 0..1000 {
            p.round(queued, 0, Phase::Open);
            if p.bbr.mode() == Mode::ProbeRtt {
                entered = Some(p.now);
                break;
            }
        }
        let entered = entered.expect("PROBE_RTT within 1000 rounds");
        assert!(
            entered > Instant::ZERO + MIN_RTT_WINDOW,
            "not before 10 s: {entered}"
        );
        assert!(p.cwnd <= MIN_CWND_SEGMENTS * MSS, "cwnd {}", p.cwnd);
        // Four segments in flight, the round trip back at the least: 200 ms and a round later
        // PROBE_RTT is over and the window is put back.
        while p.bbr.mode() == Mode::ProbeRtt {
            p.round(RTT, 0, Phase::Open);
            assert!(
                p.now < entered + Duration::from_millis(300),
                "PROBE_RTT too long"
            );
        }
        assert!(p.now >= entered + PROBE_RTT_TIME);
        assert_eq!(p.bbr.mode(), Mode::ProbeBw);
        assert_eq!(
            p.bbr.bw(),
            PATH_BW,
            "PROBE_RTT's samples did not lower the estimate"
        );
        // Back to the model's window: twice the 100 KB path and the quantization budget (the
        // ACK aggregation allowance of before aged out over PROBE_RTT's rounds).
        assert!(
            p.cwnd >= 200_000 + 21 * MSS && p.cwnd <= cwnd,
            "{} of {cwnd}",
            p.cwnd
        );
    }
}
