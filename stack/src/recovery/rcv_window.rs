//! Receive window moderation: the window we advertise follows what the application reads, as
//! Linux sizes its receive buffer by it ("dynamic right-sizing", `tcp_rcv_space_adjust`), so
//! that a peer keeps in flight what the application takes, not all of smoltcp's buffer.
//!
//! smoltcp advertises all the free space of its receive buffer (1 MiB by default). A sender
//! that loss does not hold back (Linux's BBR, or any sender on a clean path) then keeps that
//! much in flight however slowly the application reads, and it waits in the device's queue
//! towards the stack, in front of the acknowledgements of what the stack itself sends. In the
//! bench's echo under 1% loss (`bench --only loss`, row 3: the echo reads only as fast as it
//! can send back) the stack's sending side then saw round trips of 0.2–0.5 ms against 0.02 ms
//! idle; the echo moved 33 MB/s (median of 12 runs, 28–46). With the window moderated it moves
//! 48 MB/s (median of 12, 29–64), and kernel -> stack at 1% 134 MB/s instead of 74–87.
//!
//! The rule. The window starts at [`INITIAL`] (about Linux's first window with its default
//! `tcp_rmem`). At most once a measurement — the path's least round trip, but at least
//! [`MIN_INTERVAL`], as applications read in bursts of their buffer's size — the application's
//! reads give a rate; the window becomes at least twice what that rate moves in the least
//! round trip, plus [`SLACK_SEGMENTS`] segments. A window-limited sender on a path whose round
//! trip stays near its least sees its window double each round trip, as slow start would;
//! a fast bulk reader over TUN grows it to what the device can take. Linux measures with the
//! receiver's smoothed round trip and never lowers its buffer either; the least round trip
//! keeps our window from feeding on the queue it makes. Without a round trip measured (a
//! handshake sent twice, nothing sent since) there is nothing to size by: the whole buffer
//! is advertised, as without the layer.
//!
//! The window is clamped in the field of each of our segments on the way out; smoltcp's own
//! view is untouched. The right edge we advertise never moves back: the clamp never shrinks,
//! and our acknowledgement only advances.

use smoltcp::time::{Duration, Instant};

/// The window of a connection until its application reads and a round trip is known.
pub(crate) const INITIAL: u32 = 64 << 10;
/// The shortest measurement of the application's reads.
const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// Added to twice what the application reads in a round trip, in segments (Linux's slack).
const SLACK_SEGMENTS: u64 = 16;

/// One connection's moderation, from the application's first read on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RcvWindow {
    /// The application's read count (wrapping) when the current measurement began.
    mark: u32,
    /// When it began.
    since: Instant,
    /// The most we advertise, in bytes.
    cap: u32,
}

impl RcvWindow {
    /// Moderation starting `now`, with the application's read count at `read`.
    pub(crate) fn new(read: u32, now: Instant) -> RcvWindow {
        RcvWindow {
            mark: read,
            since: now,
            cap: INITIAL,
        }
    }

    /// The most we advertise now.
    pub(crate) fn cap(&self) -> u32 {
        self.cap
    }

    /// A segment is about to leave at `now`; the application's read count is `read`, the
    /// path's least round trip `min_rtt`, our segments' payload `mss`.
    pub(crate) fn on_send(&mut self, read: u32, now: Instant, min_rtt: Option<Duration>, mss: u32) {
        let min_rtt = min_rtt.filter(|r| *r > Duration::ZERO);
        let interval = min_rtt.map_or(MIN_INTERVAL, |r| r.max(MIN_INTERVAL));
        if now < self.since + interval {
            return;
        }
        let Some(min_rtt) = min_rtt else {
            self.cap = u32::MAX;
            return;
        };
        let copied = u64::from(read.wrapping_sub(self.mark));
        let elapsed = (now - self.since).total_micros().max(1);
        let per_rtt = copied * min_rtt.total_micros() / elapsed;
        let window = 2 * per_rtt + SLACK_SEGMENTS * u64::from(mss);
        self.cap = self.cap.max(window.min(u64::from(u32::MAX)) as u32);
        self.mark = read;
        self.since = now;
    }
}

/// The window field (scaled by `scale`) that advertises at most `cap` bytes, if `field` says
/// more. Never 0: the clamp does not close a window (smoltcp closes it when its buffer is
/// full).
pub(crate) fn clamped(field: u16, scale: u8, cap: u32) -> Option<u16> {
    let scale = u32::from(scale.min(14));
    let most = (cap >> scale).clamp(1, u32::from(u16::MAX)) as u16;
    (field > most).then_some(most)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1460;

    /// `rounds` measurements `every` apart, the application reading `per_round(cap)` bytes in
    /// each; the window after each.
    fn run(
        rtt: Duration,
        every: Duration,
        rounds: usize,
        per_round: impl Fn(u32) -> u32,
    ) -> Vec<u32> {
        let mut w = RcvWindow::new(0, Instant::ZERO);
        let (mut read, mut now) = (0u32, Instant::ZERO);
        (0..rounds)
            .map(|_| {
                now += every;
                read = read.wrapping_add(per_round(w.cap()));
                w.on_send(read, now, Some(rtt), MSS);
                w.cap()
            })
            .collect()
    }

    #[test]
    fn a_window_limited_reader_doubles_the_window_each_round_trip() {
        // 50 ms path, the sender sends the whole window each round trip, the reader keeps up.
        let rtt = Duration::from_millis(50);
        let caps = run(rtt, rtt, 8, |cap| cap);
        let mut before = INITIAL;
        for cap in caps {
            assert!(cap >= 2 * before, "{cap} after {before}");
            before = cap;
        }
    }

    #[test]
    fn a_reader_slower_than_the_window_keeps_it() {
        // An echo: 60 MB/s read on a 20 µs path, in 64 KiB bursts every ~1.1 ms.
        let caps = run(
            Duration::from_micros(20),
            Duration::from_micros(1100),
            1000,
            |_| 64 << 10,
        );
        assert!(caps.iter().all(|&c| c == INITIAL), "{:?}", &caps[..5]);
    }

    #[test]
    fn nothing_changes_within_a_measurement_nor_shrinks() {
        let rtt = Duration::from_millis(5);
        let mut w = RcvWindow::new(0, Instant::ZERO);
        w.on_send(1 << 20, Instant::ZERO + rtt / 2, Some(rtt), MSS);
        assert_eq!(w.cap(), INITIAL, "half a round trip is no measurement");
        w.on_send(1 << 20, Instant::ZERO + rtt, Some(rtt), MSS);
        let wide = w.cap();
        assert!(wide > 2 << 20, "{wide}");
        w.on_send(1 << 20, Instant::ZERO + rtt * 5, Some(rtt), MSS);
        assert_eq!(
            w.cap(),
            wide,
            "an application that stops reading keeps its window"
        );
    }

    #[test]
    fn a_short_path_measures_over_a_millisecond() {
        let rtt = Duration::from_micros(20);
        let mut w = RcvWindow::new(0, Instant::ZERO);
        // One 64 KiB read 100 µs in: no measurement yet (it would say 650 MB/s).
        w.on_send(
            64 << 10,
            Instant::ZERO + Duration::from_micros(100),
            Some(rtt),
            MSS,
        );
        assert_eq!(w.cap(), INITIAL);
    }

    #[test]
    fn without_a_round_trip_the_whole_buffer_is_advertised() {
        let mut w = RcvWindow::new(0, Instant::ZERO);
        w.on_send(0, Instant::ZERO + Duration::from_millis(1), None, MSS);
        assert_eq!(w.cap(), u32::MAX);
        assert_eq!(clamped(u16::MAX, 14, w.cap()), None);
    }

    #[test]
    fn the_field_is_clamped_in_the_window_scale() {
        assert_eq!(clamped(100, 0, INITIAL), None);
        assert_eq!(clamped(u16::MAX, 0, INITIAL), None);
        assert_eq!(clamped(u16::MAX, 0, 1000), Some(1000));
        assert_eq!(clamped(1024, 10, INITIAL), Some(64));
        assert_eq!(clamped(64, 10, INITIAL), None);
        assert_eq!(clamped(2, 14, 1000), Some(1), "never closed by the clamp");
        assert_eq!(clamped(1, 14, 1000), None);
        assert_eq!(clamped(0, 14, 1000), None, "a closed window stays closed");
    }
}
