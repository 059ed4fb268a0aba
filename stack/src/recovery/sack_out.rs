//! The SACK blocks the stack reports as a receiver.
//!
//! smoltcp's acknowledgements carry one SACK block: the run of out-of-order data that holds the
//! segment that just arrived. A sender that loses that acknowledgement never hears of the run
//! again unless more data extends it. RFC 2018 §4 asks for more: the first block as smoltcp
//! gives it, then the most recently reported other blocks, as many as fit (four without
//! timestamps, as Linux sends). Every block comes from a run that is held: in the layer's
//! out-of-order buffer ([`super::reassembly`], which gives the first block while it holds
//! anything) or in smoltcp's reassembler (what the layer does not hold), neither of which
//! discards data before it is acknowledged; so the stack never claims data it does not hold.

use super::scoreboard::{before, before_eq};

/// Most blocks one acknowledgement carries (NOP, NOP, kind, length and four blocks: 36 of the
/// 40 option bytes; smoltcp's acknowledgements carry no timestamps).
pub(crate) const MAX_BLOCKS: usize = 4;

#[derive(Debug, Default, Clone)]
pub(crate) struct SackOut {
    /// Blocks reported, most recent first.
    blocks: [(u32, u32); MAX_BLOCKS],
    n: usize,
}

impl SackOut {
    /// smoltcp acknowledged up to `ack` with `first` as its SACK block (`None`: it sent no SACK
    /// option, so it holds no out-of-order data). Returns the blocks to send, most recent first.
    pub(crate) fn on_ack(&mut self, ack: u32, first: Option<(u32, u32)>) -> &[(u32, u32)] {
        // A block reports data past the acknowledgement, and not next to it: one that starts
        // at or below it (a run going to smoltcp while smoltcp wrote this acknowledgement) is
        // left out, as Linux discards it (`tcp_is_sackblock_valid`: a block must start after
        // `SND.UNA`, unless it is a D-SACK).
        let Some(first) = first.filter(|&(l, _)| before(ack, l)) else {
            self.n = 0;
            return &[];
        };
        let mut kept = [(0, 0); MAX_BLOCKS];
        let mut k = 0;
        kept[k] = first;
        k += 1;
        for &(l, r) in &self.blocks[..self.n] {
            // Acknowledged, or part of (or next to) the run smoltcp reported now: it says it
            // better.
            let acked = before_eq(l, ack);
            let touches = !before(r, first.0) && !before(first.1, l);
            if acked || touches || k == MAX_BLOCKS {
                continue;
            }
            kept[k] = (l, r);
            k += 1;
        }
        self.blocks = kept;
        self.n = k;
        &self.blocks[..self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_blocks_follow_the_first() {
        let mut s = SackOut::default();
        assert_eq!(s.on_ack(100, Some((200, 300))), &[(200, 300)]);
        assert_eq!(s.on_ack(100, Some((400, 500))), &[(400, 500), (200, 300)]);
        // The run 400..500 grew: it replaces its old report.
        assert_eq!(s.on_ack(100, Some((400, 600))), &[(400, 600), (200, 300)]);
        assert_eq!(
            s.on_ack(100, Some((700, 800))),
            &[(700, 800), (400, 600), (200, 300)]
        );
        assert_eq!(
            s.on_ack(100, Some((900, 950))),
            &[(900, 950), (700, 800), (400, 600), (200, 300)]
        );
        // At most four: the oldest goes.
        assert_eq!(
            s.on_ack(100, Some((1000, 1100))),
            &[(1000, 1100), (900, 950), (700, 800), (400, 600)]
        );
        // The hole before 400 filled: acknowledged blocks go.
        assert_eq!(
            s.on_ack(600, Some((700, 800))),
            &[(700, 800), (1000, 1100), (900, 950)]
        );
        // The acknowledgement reached into a run: it is not reported any more.
        assert_eq!(s.on_ack(920, Some((1000, 1100))), &[(1000, 1100)]);
        // No SACK option: nothing out of order any more.
        assert_eq!(s.on_ack(1100, None), &[] as &[(u32, u32)]);
        assert_eq!(s.on_ack(1100, Some((1200, 1300))), &[(1200, 1300)]);
    }
}
