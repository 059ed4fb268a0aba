//! Round-trip time: the smoothed estimate and the retransmission timeout (RFC 6298, with
//! Linux's 200 ms floor instead of the RFC's 1 s), and the minimum over a window (for RACK's
//! reordering window).

use smoltcp::time::{Duration, Instant};

/// Linux's `TCP_RTO_MIN`: the least the variance term of the timeout may be.
pub(crate) const MIN_RTO: Duration = Duration::from_millis(200);
/// Linux's `TCP_RTO_MAX`.
pub(crate) const MAX_RTO: Duration = Duration::from_secs(120);
/// Before any measurement (RFC 6298 §2.1).
pub(crate) const INITIAL_RTO: Duration = Duration::from_secs(1);
/// How long a minimum stands (Linux's `tcp_min_rtt_wlen`, 300 s).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The least sample in the window, and when it was taken.
    min: Option<(Duration, Instant)>,
    /// Timeouts in a row without a new measurement (each doubles the timeout).
    backoff: u32,
}

impl Rtt {
    /// A round trip measured at `now` (RFC 6298 §2.2–2.3).
    pub(crate) fn sample(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.max(Duration::from_micros(1));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = if srtt > rtt { srtt - rtt } else { rtt - srtt };
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.backoff = 0;
        self.sample_min(rtt, now);
    }

    /// A round trip that only bounds the minimum (RACK's samples from retransmissions that
    /// cannot be ambiguous are not fed to the smoothed estimate).
    pub(crate) fn sample_min(&mut self, rtt: Duration, now: Instant) {
        let replace = match self.min {
            None => true,
            Some((m, at)) => rtt <= m || now >= at + MIN_RTT_WINDOW,
        };
        if replace {
            self.min = Some((rtt, now));
        }
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min.map(|(m, _)| m)
    }

    /// The retransmission timeout, backed off: `SRTT + max(4 RTTVAR, 200 ms)`.
    pub(crate) fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => srtt + (self.rttvar * 4).max(MIN_RTO),
        };
        let mut rto = base.min(MAX_RTO);
        for _ in 0..self.backoff.min(16) {
            rto = (rto * 2).min(MAX_RTO);
        }
        rto
    }

    /// A retransmission timeout fired: the next waits twice as long (RFC 6298 §5.5).
    pub(crate) fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Timeouts in a row.
    pub(crate) fn backoff(&self) -> u32 {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_follows_rfc_6298_with_linux_floor() {
        let mut r = Rtt::default();
        assert_eq!(r.rto(), INITIAL_RTO);
        let now = Instant::from_secs(1);
        r.sample(Duration::from_millis(100), now);
        // SRTT 100 ms, RTTVAR 50 ms: 100 + max(200, 200).
        assert_eq!(r.rto(), Duration::from_millis(300));
        for _ in 0..50 {
            r.sample(Duration::from_millis(1), now);
        }
        assert!(r.rto() >= MIN_RTO && r.rto() < Duration::from_millis(210));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(1)));
        r.back_off();
        r.back_off();
        assert!(r.rto() >= MIN_RTO * 4);
        for _ in 0..40 {
            r.back_off();
        }
        assert_eq!(r.rto(), MAX_RTO);
    }

    #[test]
    fn minimum_expires() {
        let mut r = Rtt::default();
        r.sample(Duration::from_millis(5), Instant::from_secs(0));
        r.sample(Duration::from_millis(9), Instant::from_secs(10));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(5)));
        r.sample(Duration::from_millis(9), Instant::from_secs(301));
        assert_eq!(r.min_rtt(), Some(Duration::from_millis(9)));
    }
}
