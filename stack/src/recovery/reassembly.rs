//! Out-of-order data held for smoltcp.
//!
//! smoltcp's reassembler keeps a fixed number of holes, and every connection pays for all of
//! them, in use or not (16 bytes a hole, inside each socket). The layer keeps the out-of-order
//! segments itself instead, in a buffer made when the first one arrives and freed when the
//! hole fills: an idle connection pays nothing, and a loss-heavy one as many holes as its
//! window holds. smoltcp only ever sees data in order; the segments wait here, as they
//! arrived (whole packets, translations applied), until the data before them has gone to
//! smoltcp, and then go to it in order.
//!
//! Only segments that smoltcp's buffer will take once the data before them has come are held
//! (the engine checks), and at most [`MAX_SEGMENTS`] of them (so that tiny segments cannot
//! cost more than the data); anything else goes to smoltcp as before. The runs of held data
//! (the SACK blocks) are kept as segments come and go, so that no segment costs a walk over
//! the others.

use std::collections::VecDeque;

use super::scoreboard::{before, before_eq};

/// Most segments held at once.
pub(crate) const MAX_SEGMENTS: usize = 2048;

/// One held segment.
#[derive(Debug)]
struct Held {
    seq: u32,
    /// One past its last sequence number (a FIN counts).
    end: u32,
    packet: Vec<u8>,
}

/// The out-of-order segments of one connection, by sequence number.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    /// In sequence order; the first starts after the in-order point they wait for.
    segs: VecDeque<Held>,
    /// The runs of held data, `(left, right)`, in sequence order, apart from each other, from
    /// `released` on.
    runs: Vec<(u32, u32)>,
    /// The furthest end of a segment that left for smoltcp (or was dropped as covered).
    released: Option<u32>,
    /// The most recently held segment's range: the first SACK block is the run that holds it
    /// (RFC 2018 §4).
    recent: Option<(u32, u32)>,
    /// The acknowledgement last handed to smoltcp from a held segment (in a bare ACK), so that
    /// the same one is not handed over again with each segment of a run.
    pub(crate) ack_fed: Option<(u32, u16)>,
}

/// What [`Reassembly::hold`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Held: it is the layer's now.
    Held,
    /// Everything in it is held already (a duplicate): it is dropped.
    Duplicate,
    /// Not held (full): it goes to smoltcp, as before.
    Full,
}

impl Reassembly {
    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Hold the segment `seq..end` (`packet`, as smoltcp is to take it), which starts after the
    /// in-order point.
    pub(crate) fn hold(&mut self, seq: u32, end: u32, packet: &[u8]) -> Hold {
        if self
            .runs
            .iter()
            .any(|&(l, r)| before_eq(l, seq) && before_eq(end, r))
        {
            // The sender sent it again (it took it for lost): the first SACK block must show
            // it arrived, or the sender takes this one for lost too.
            self.recent = Some((seq, end));
            return Hold::Duplicate;
        }
        if self.segs.len() >= MAX_SEGMENTS {
            return Hold::Full;
        }
        // Where it goes: after every segment that starts before it (arrivals are mostly in
        // order, so the search starts at the end).
        let at = self
            .segs
            .iter()
            .rposition(|h| before_eq(h.seq, seq))
            .map_or(0, |i| i + 1);
        self.segs.insert(
            at,
            Held {
                seq,
                end,
                packet: packet.to_vec(),
            },
        );
        self.add_run(seq, end);
        self.recent = Some((seq, end));
        Hold::Held
    }

    /// Add `seq..end` to the runs, joining those it touches.
    fn add_run(&mut self, seq: u32, end: u32) {
        // The first run that ends at or after `seq` (it may touch), and the first after that
        // starts past `end` (it does not).
        let first = self.runs.partition_point(|&(_, r)| before(r, seq));
        let past = first
            + self.runs[first..]
                .iter()
                .take_while(|&&(l, _)| before_eq(l, end))
                .count();
        let (mut l, mut r) = (seq, end);
        if let (Some(&(fl, _)), Some(&(_, lr))) = (self.runs.get(first), self.runs[..past].last()) {
            if first < past {
                if before(fl, l) {
                    l = fl;
                }
                if before(r, lr) {
                    r = lr;
                }
            }
        }
        self.runs.splice(first..past, [(l, r)]);
    }

    /// The next held segment smoltcp can take once its data reaches `nxt`: one that starts at
    /// or before it and goes past it. Segments wholly before `nxt` are dropped on the way.
    pub(crate) fn release(&mut self, nxt: u32) -> Option<Vec<u8>> {
        while let Some(first) = self.segs.front() {
            if before(nxt, first.seq) {
                return None;
            }
            let h = self.segs.pop_front()?;
            self.forget_up_to(h.end);
            if before(nxt, h.end) {
                return Some(h.packet);
            }
        }
        None
    }

    /// A segment that ended at `end` left: the runs start at the furthest such end or later
    /// (what the segments still held cover past it is what the runs held before).
    fn forget_up_to(&mut self, end: u32) {
        let at = match self.released {
            Some(r) if before(end, r) => r,
            _ => end,
        };
        self.released = Some(at);
        let gone = self.runs.partition_point(|&(_, r)| before_eq(r, at));
        self.runs.drain(..gone);
        if let Some(first) = self.runs.first_mut() {
            if before(first.0, at) {
                first.0 = at;
            }
        }
        if self.segs.is_empty() {
            self.runs.clear();
        }
    }

    /// The runs of held data, in sequence order, as `(left, right)` SACK blocks.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> Vec<(u32, u32)> {
        self.runs.clone()
    }

    /// The run that holds the most recently held segment: the first SACK block.
    pub(crate) fn first_block(&self) -> Option<(u32, u32)> {
        let (seq, _) = self.recent?;
        self.runs
            .iter()
            .copied()
            .find(|&(l, r)| before_eq(l, seq) && before(seq, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs as a walk over the segments finds them (from `released` on).
    fn walked(r: &Reassembly) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for h in &r.segs {
            match runs.last_mut() {
                Some(last) if before_eq(h.seq, last.1) => {
                    if before(last.1, h.end) {
                        last.1 = h.end;
                    }
                }
                _ => runs.push((h.seq, h.end)),
            }
        }
        if let Some(at) = r.released {
            runs.retain(|&(_, r)| before(at, r));
            for run in &mut runs {
                if before(run.0, at) {
                    run.0 = at;
                }
            }
        }
        runs
    }

    #[test]
    fn segments_wait_for_the_data_before_them_and_leave_in_order() {
        let mut r = Reassembly::default();
        assert_eq!(r.hold(300, 400, b"c"), Hold::Held);
        assert_eq!(r.hold(500, 600, b"e"), Hold::Held);
        assert_eq!(r.hold(200, 300, b"b"), Hold::Held);
        assert_eq!(r.hold(300, 400, b"c"), Hold::Duplicate);
        assert_eq!(r.hold(520, 580, b"e"), Hold::Duplicate);
        assert_eq!(
            r.first_block(),
            Some((500, 600)),
            "the run of a duplicate too"
        );
        assert_eq!(r.hold(320, 380, b"c"), Hold::Duplicate);
        assert_eq!(r.runs(), vec![(200, 400), (500, 600)]);
        assert_eq!(r.first_block(), Some((200, 400)), "the run of the latest");
        // Nothing before 200 has come: nothing leaves.
        assert_eq!(r.release(100), None);
        assert_eq!(r.release(200), Some(b"b".to_vec()));
        assert_eq!(r.runs(), vec![(300, 400), (500, 600)]);
        assert_eq!(r.release(300), Some(b"c".to_vec()));
        // 400..500 missing.
        assert_eq!(r.release(400), None);
        assert_eq!(r.runs(), vec![(500, 600)]);
        // The hole filled past the start of what is held: it still goes (smoltcp trims).
        assert_eq!(r.release(550), Some(b"e".to_vec()));
        assert!(r.is_empty());
        assert_eq!(r.runs(), vec![]);
    }

    #[test]
    fn what_the_data_before_it_covered_is_dropped() {
        let mut r = Reassembly::default();
        r.hold(300, 400, b"c");
        r.hold(400, 500, b"d");
        assert_eq!(r.release(450), Some(b"d".to_vec()));
        assert!(r.is_empty());
    }

    #[test]
    fn a_segment_that_spans_a_hole_joins_the_runs_on_both_sides() {
        let mut r = Reassembly::default();
        r.hold(100, 200, b"a");
        r.hold(300, 400, b"c");
        r.hold(500, 600, b"e");
        assert_eq!(r.runs(), vec![(100, 200), (300, 400), (500, 600)]);
        // Overlapping two runs and the holes between them.
        assert_eq!(r.hold(150, 550, b"x"), Hold::Held);
        assert_eq!(r.runs(), vec![(100, 600)]);
        assert_eq!(r.runs(), walked(&r));
        assert_eq!(r.first_block(), Some((100, 600)));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reassembly::default();
        let base = u32::MAX - 150;
        r.hold(base.wrapping_add(200), base.wrapping_add(300), b"b");
        r.hold(base.wrapping_add(100), base.wrapping_add(200), b"a");
        assert_eq!(
            r.runs(),
            vec![(base.wrapping_add(100), base.wrapping_add(300))]
        );
        assert_eq!(r.release(base.wrapping_add(100)), Some(b"a".to_vec()));
        assert_eq!(r.release(base.wrapping_add(200)), Some(b"b".to_vec()));
    }

    #[test]
    fn it_holds_a_bounded_number() {
        let mut r = Reassembly::default();
        for i in 0..MAX_SEGMENTS as u32 {
            assert_eq!(r.hold(1000 + 2 * i, 1001 + 2 * i, b"x"), Hold::Held);
        }
        assert_eq!(r.hold(900, 901, b"x"), Hold::Full);
        assert_eq!(r.runs().len(), MAX_SEGMENTS);
    }

    #[test]
    fn the_runs_kept_are_the_runs_of_what_is_held() {
        // Pseudo-random segments and releases: the runs kept always match a walk.
        let mut x: u32 = 0x9e37_79b9;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let base = u32::MAX - 5_000;
        let mut nxt = base;
        let mut r = Reassembly::default();
        for _ in 0..5_000 {
            if next() % 8 == 0 {
                // Data in order came: what it reaches goes to smoltcp, which takes it.
                nxt = nxt.wrapping_add(next() % 300);
                while let Some(p) = r.release(nxt) {
                    nxt = u32::from_be_bytes(p.try_into().unwrap());
                }
            } else {
                let seq = nxt.wrapping_add(1 + next() % 4_000);
                let end = seq.wrapping_add(1 + next() % 200);
                r.hold(seq, end, &end.to_be_bytes());
            }
            // What release left behind lies past `nxt`; runs are trimmed to held segments.
            assert_eq!(r.runs(), walked(&r), "at {nxt}");
        }
    }
}
