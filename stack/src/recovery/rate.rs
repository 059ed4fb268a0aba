//! Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation, Linux's `tcp_rate.c`):
//! how fast the network delivered this connection's data, measured over the round trip of the
//! segment an acknowledgement reports.
//!
//! Every transmission is stamped with the connection's delivery counters as they stood then
//! ([`TxStamp`]). When an acknowledgement reports segments delivered (cumulatively or by SACK),
//! the most recently sent of them gives the sample: the bytes delivered since it left, over the
//! longer of the time its flight took to send and the time its acknowledgements took to come
//! back. BBR ([`super::bbr`]) builds its model of the path from these samples; every
//! connection reports the last one as its delivery rate (Linux's `tcpi_delivery_rate`).

use smoltcp::time::{Duration, Instant};

use super::elapsed;

/// The connection's delivery counters when a segment left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxStamp {
    /// Bytes delivered so far (wrapping).
    pub(crate) delivered: u32,
    /// When the last of them was reported delivered.
    pub(crate) delivered_time: Instant,
    /// When the first segment of the flight this one belongs to left.
    pub(crate) first_sent: Instant,
    /// The application (not the network) bounded what was in flight.
    pub(crate) app_limited: bool,
}

impl Default for TxStamp {
    fn default() -> Self {
        TxStamp {
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent: Instant::ZERO,
            app_limited: false,
        }
    }
}

/// One measurement of the delivery rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// Bytes delivered over `interval`.
    pub(crate) delivered: u32,
    /// What the connection had delivered when the sample's segment left (round counting).
    pub(crate) prior_delivered: u32,
    /// Zero when the sample is not valid (its interval shorter than the least round trip:
    /// an acknowledgement compressed in time says nothing about the path's rate).
    pub(crate) interval: Duration,
    /// The sample's segment left while the application bounded the flight.
    pub(crate) app_limited: bool,
}

impl RateSample {
    /// Bytes per second; `None` if the sample is not valid.
    pub(crate) fn rate(&self) -> Option<u64> {
        let us = self.interval.total_micros();
        (us > 0 && self.delivered > 0).then(|| u64::from(self.delivered) * 1_000_000 / us)
    }
}

/// The connection's side of the estimation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Bytes delivered (acknowledged cumulatively or SACKed), wrapping.
    delivered: u32,
    delivered_time: Instant,
    first_sent: Instant,
    /// While not `None`: the application bounded the flight, until `delivered` passes this
    /// (what was delivered and in flight then).
    app_limited_until: Option<u32>,
    /// The last valid sample's rate, bytes per second.
    last_rate: u64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent: Instant::ZERO,
            // As Linux: the first flight, sent before anything was measured, counts as
            // application-limited (until the first acknowledgement).
            app_limited_until: Some(u32::MAX),
            last_rate: 0,
        }
    }
}

impl Rate {
    /// Bytes delivered so far (wrapping).
    pub(crate) fn delivered(&self) -> u32 {
        self.delivered
    }

    /// The last valid sample's rate, bytes per second (0 before one).
    pub(crate) fn last_rate(&self) -> u64 {
        self.last_rate
    }

    /// The stamp of a segment leaving at `now`; `idle`: nothing was outstanding before it.
    pub(crate) fn stamp(&mut self, now: Instant, idle: bool) -> TxStamp {
        if idle {
            // A flight starts: its send and acknowledgement intervals start now (the time
            // spent idle is nobody's rate).
            self.first_sent = now;
            self.delivered_time = now;
        }
        TxStamp {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent: self.first_sent,
            app_limited: self.app_limited_until.is_some(),
        }
    }

    /// The application, not the congestion window, bounds what is in flight (`pipe` bytes):
    /// samples taken until that flight is delivered measure the application.
    pub(crate) fn app_limited(&mut self, pipe: u32) {
        self.app_limited_until = Some(self.delivered.wrapping_add(pipe).max(1));
    }

    /// An acknowledgement at `now` reported `bytes` newly delivered, the most recently sent
    /// of them having left at `sent` with `stamp`. Returns the sample, if one was taken.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        bytes: u32,
        newest: Option<(Instant, TxStamp)>,
        min_rtt: Option<Duration>,
    ) -> Option<RateSample> {
        if bytes == 0 {
            return None;
        }
        self.delivered = self.delivered.wrapping_add(bytes);
        self.delivered_time = now;
        if let Some(until) = self.app_limited_until {
            if (self.delivered.wrapping_sub(until) as i32) > 0 {
                self.app_limited_until = None;
            }
        }
        let (sent, stamp) = newest?;
        // The next sample's send interval starts where this one's ended.
        self.first_sent = sent;
        let send_elapsed = elapsed(sent, stamp.first_sent);
        let ack_elapsed = elapsed(now, stamp.delivered_time);
        let mut interval = send_elapsed.max(ack_elapsed);
        // Shorter than the least round trip (or no round trip known yet, as Linux): not a
        // sample.
        if min_rtt.is_none_or(|m| interval < m) {
            interval = Duration::ZERO;
        }
        let sample = RateSample {
            delivered: self.delivered.wrapping_sub(stamp.delivered),
            prior_delivered: stamp.delivered,
            interval,
            app_limited: stamp.app_limited,
        };
        if let Some(rate) = sample.rate() {
            // An application-limited sample lower than the last says little about the path.
            if !sample.app_limited || rate >= self.last_rate {
                self.last_rate = rate;
            }
        }
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: i64) -> Instant {
        Instant::from_micros(us)
    }

    #[test]
    fn a_flight_acknowledged_over_a_round_trip_gives_its_rate() {
        let mut r = Rate::default();
        // Ten 1000-byte segments leave together at 0; each is acknowledged 100 µs after the
        // last, from 1 ms on (the bottleneck spaces them).
        let stamps: Vec<_> = (0..10).map(|i| r.stamp(t(0), i == 0)).collect();
        let mut last = None;
        for (i, s) in stamps.iter().enumerate() {
            let now = t(1000 + 100 * i as i64);
            last = r.on_ack(
                now,
                1000,
                Some((t(0), *s)),
                Some(Duration::from_micros(900)),
            );
        }
        let s = last.unwrap();
        assert_eq!(s.delivered, 10_000);
        assert_eq!(s.interval, Duration::from_micros(1900));
        assert_eq!(s.rate(), Some(10_000 * 1_000_000 / 1900));
        assert_eq!(r.delivered(), 10_000);
    }

    #[test]
    fn a_compressed_acknowledgement_is_not_a_sample() {
        let mut r = Rate::default();
        let s = r.stamp(t(0), true);
        let sample = r
            .on_ack(
                t(50),
                1000,
                Some((t(0), s)),
                Some(Duration::from_micros(100)),
            )
            .unwrap();
        assert_eq!(sample.rate(), None, "shorter than the least round trip");
    }

    #[test]
    fn samples_are_app_limited_until_the_limited_flight_is_delivered() {
        let mut r = Rate::default();
        r.on_ack(t(0), 1, None, None);
        r.app_limited(2000);
        let a = r.stamp(t(0), true);
        let b = r.stamp(t(0), false);
        assert!(a.app_limited && b.app_limited);
        let s = r.on_ack(t(1000), 1000, Some((t(0), a)), None).unwrap();
        assert!(s.app_limited);
        r.on_ack(t(1100), 1000, Some((t(0), b)), None);
        // Delivered 2001: the limited flight (1 + 2000) is not yet passed; 2002 passes it.
        assert!(r.stamp(t(1200), true).app_limited);
        r.on_ack(t(1300), 1, None, None);
        assert!(!r.stamp(t(1400), true).app_limited);
    }
}
