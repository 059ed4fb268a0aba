//! Repairs on the receiving side, where smoltcp's acceptability test throws away what a segment
//! says besides its data.
//!
//! smoltcp judges an arriving segment by its payload alone, and drops an unacceptable one
//! whole, acknowledgement included. Two cases cost a sender dearly:
//!
//! - **A FIN after old data.** A sender repairing a tail loss sends the last segment again, FIN
//!   and all. Its data is all old, so smoltcp drops it and the FIN with it; the peer waits for
//!   its retransmission timeout to send the FIN alone. RFC 9293 §3.10.7.4 counts the FIN in the
//!   segment's length, which makes the segment acceptable: [`fin_after_old_data`] cuts the old
//!   payload off, leaving the FIN at the next expected sequence number.
//! - **An acknowledgement outside our window.** smoltcp shrinks its advertised window as its
//!   buffer fills (rounding down to the window scale; RFC 7323 asks receivers not to), so a
//!   peer may have sent past the window's new right edge; every segment it sends afterwards
//!   starts there, is unacceptable, and its acknowledgement is lost with it. With our window at
//!   zero and our application blocked sending (waiting for exactly that acknowledgement to free
//!   its buffer) the connection deadlocks. RFC 9293 §3.10.7.4: "special allowance should be made
//!   to accept valid ACKs". [`ack_outside_window`] gives smoltcp the acknowledgement alone, at
//!   the sequence number it expects, before the segment itself.
//!
//! - **A FIN beyond a hole.** The last segment of a transfer carries the FIN; when a segment
//!   before it was lost, smoltcp keeps the last one's data for later but forgets its FIN (it
//!   acts on a FIN only at the next expected number). The retransmission that fills the hole
//!   carries no FIN, so the peer has to time out to send it again (a kernel sender in fast
//!   recovery sends no tail loss probe). [`fin_beyond_hole`] notes where such a FIN lies, and
//!   once our acknowledgement reaches it, [`bare_fin`] builds the FIN for smoltcp to take, as
//!   Linux keeps a FIN in its out-of-order queue.
//!
//! - **The end of a segment cut off at the window's edge.** The same rounding moves the right
//!   edge smoltcp accepts data up to back by as much as one unit of the window scale as data
//!   comes in (its window is its free buffer rounded down, from a sequence number that moves
//!   by whole segments). A sender that filled the window it was offered has the last bytes of
//!   its last segment dropped: a hole, a SACK recovery (a kernel sender counts it as a
//!   loss). [`edge_margin`] advertises one unit less, so every right edge we offer lies within
//!   what smoltcp takes later.
//!
//! All act only on segments whose checksum is good, and only in numbers our acknowledgements
//! already told the peer.

use super::scoreboard::{before, before_eq};
use crate::shard::WireSeq;
use crate::wire::{self, Tcp, ACK, FIN, RST, SYN};

/// A segment with a FIN whose payload we already acknowledged, in `buf[..len]`: rewritten to
/// the bare FIN. `rcv_nxt` is what our acknowledgements said. Returns the segment's new length
/// when it was rewritten.
pub(crate) fn fin_after_old_data(
    t: &Tcp,
    buf: &mut [u8],
    len: usize,
    rcv_nxt: Option<u32>,
    scratch: &mut Vec<u8>,
) -> Option<usize> {
    let rcv_nxt = rcv_nxt?;
    let payload_len = t.payload_len() as u32;
    let data_end = t.seq.wrapping_add(payload_len);
    if !t.has(FIN) || t.has(SYN) || t.has(RST) || payload_len == 0 || before(rcv_nxt, data_end) {
        return None;
    }
    let pkt = buf.get(..len)?;
    if !wire::tcp_checksum_ok(pkt, t) {
        return None;
    }
    scratch.resize(buf.len(), 0);
    let n = wire::rebuild(pkt, t, t.options(pkt), &[], scratch)?;
    let bare = wire::parse(&scratch[..n])?;
    wire::set_seq_ack(&mut scratch[..n], &bare, data_end, bare.ack, 0);
    buf.get_mut(..n)?.copy_from_slice(&scratch[..n]);
    Some(n)
}

/// An acknowledgement smoltcp would drop with its segment: the segment starts outside the
/// window we advertised (or carries data or a FIN into a zero window). Returns a bare ACK with
/// its acknowledgement, window and options, at the sequence number our last acknowledgement
/// asked for, to hand to smoltcp first. `our_scale` scales the window we advertise.
pub(crate) fn ack_outside_window(
    t: &Tcp,
    pkt: &[u8],
    wire_seq: &WireSeq,
    our_scale: u8,
) -> Option<Vec<u8>> {
    let (rcv_nxt, window) = wire_seq.last_ack?;
    if !t.has(ACK) || t.has(SYN) || t.has(RST) {
        return None;
    }
    let window = u32::from(window) << our_scale;
    let right = rcv_nxt.wrapping_add(window);
    let occupies = t.seq_len() > 0;
    let acceptable = if window == 0 {
        t.seq == rcv_nxt && !occupies
    } else {
        let end = t.seq.wrapping_add(t.seq_len().max(1)).wrapping_sub(1);
        let inside = |s: u32| before_eq(rcv_nxt, s) && before(s, right);
        inside(t.seq) || (occupies && inside(end))
    };
    if acceptable || !wire::tcp_checksum_ok(pkt, t) {
        return None;
    }
    bare_ack(pkt, t, rcv_nxt)
}

/// The segment `t` (in `pkt`) as a bare ACK at sequence number `seq`: its acknowledgement,
/// window and options, without its data, FIN, PSH or URG.
pub(crate) fn bare_ack(pkt: &[u8], t: &Tcp, seq: u32) -> Option<Vec<u8>> {
    let mut plain = pkt.get(..t.total)?.to_vec();
    *plain.get_mut(t.ip_len + 13)? = ACK;
    let mut out = vec![0u8; plain.len()];
    let n = wire::rebuild(&plain, t, t.options(pkt), &[], &mut out)?;
    out.truncate(n);
    let bare = wire::parse(&out)?;
    wire::set_seq_ack(&mut out, &bare, seq, bare.ack, 0);
    Some(out)
}

/// A sound segment with a FIN past a hole, inside the window we advertised: the sequence
/// number of its FIN (wire numbers), for smoltcp to take once the hole is filled.
pub(crate) fn fin_beyond_hole(
    t: &Tcp,
    pkt: &[u8],
    wire_seq: &WireSeq,
    our_scale: u8,
) -> Option<u32> {
    let (rcv_nxt, window) = wire_seq.last_ack?;
    if !t.has(FIN) || !t.has(ACK) || t.has(SYN) || t.has(RST) || !before(rcv_nxt, t.seq) {
        return None;
    }
    let fin = t.seq.wrapping_add(t.payload_len() as u32);
    let right = rcv_nxt.wrapping_add(u32::from(window) << our_scale);
    if !before(fin, right) || !wire::tcp_checksum_ok(pkt, t) {
        return None;
    }
    Some(fin)
}

/// The bare FIN at `fin` (in `filler`'s numbers) that a segment of the peer's, `filler`,
/// would have been followed by: its acknowledgement, window and options, no payload.
pub(crate) fn bare_fin(filler: &[u8], fin: u32) -> Option<Vec<u8>> {
    let t = wire::parse(filler)?;
    let mut plain = filler.get(..t.total)?.to_vec();
    *plain.get_mut(t.ip_len + 13)? = ACK | FIN;
    let mut out = vec![0u8; plain.len()];
    let n = wire::rebuild(&plain, &t, t.options(filler), &[], &mut out)?;
    out.truncate(n);
    let bare = wire::parse(&out)?;
    wire::set_seq_ack(&mut out, &bare, fin, bare.ack, 0);
    Some(out)
}

/// The window field to advertise for smoltcp's `field` at window scale `scale`: one unit less,
/// so that smoltcp's rounding cannot later put its right edge behind the one we offered (see
/// the module). Not below one unit: the margin does not close a window.
pub(crate) fn edge_margin(field: u16, scale: u8) -> u16 {
    if scale > 0 && field >= 2 {
        field - 1
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// smoltcp's edge, free buffer rounded down to the scale from a number that moves by whole
    /// segments, never falls behind an edge offered with the margin.
    #[test]
    fn the_margin_keeps_every_offered_edge_within_smoltcps() {
        let (scale, mss, buffer) = (5u8, 1448u32, 1u32 << 20);
        let smoltcp_edge = |rcv_nxt: u32, free: u32| rcv_nxt + (free >> scale << scale);
        let mut offered = 0u32;
        for n in 0..700u32 {
            // Data arrives, nobody reads.
            let (rcv_nxt, free) = (n * mss, buffer - n * mss);
            let field = (free >> scale) as u16;
            let margin = edge_margin(field, scale);
            assert!(smoltcp_edge(rcv_nxt, free) >= offered, "segment {n}");
            offered = offered.max(rcv_nxt + (u32::from(margin) << scale));
        }
        assert_eq!(edge_margin(0, 5), 0, "a closed window stays closed");
        assert_eq!(edge_margin(1, 5), 1, "and an open one open");
        assert_eq!(edge_margin(100, 0), 100, "no scale, no rounding, no margin");
    }

    fn seg(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let n = wire::build(
            "192.0.2.1:7".parse().unwrap(),
            "192.0.2.2:40000".parse().unwrap(),
            seq,
            5000,
            flags,
            100,
            payload,
            &mut b,
        )
        .unwrap();
        b.truncate(n);
        b
    }

    fn told(ack: u32, window: u16) -> WireSeq {
        WireSeq {
            last_ack: Some((ack, window)),
            ..WireSeq::default()
        }
    }

    #[test]
    fn a_fin_after_old_data_becomes_a_bare_fin() {
        let mut p = seg(900, ACK | FIN, &[7; 100]);
        let t = wire::parse(&p).unwrap();
        let len = p.len();
        let mut scratch = Vec::new();
        // New data in it: untouched.
        assert_eq!(
            fin_after_old_data(&t, &mut p, len, Some(950), &mut scratch),
            None
        );
        let n = fin_after_old_data(&t, &mut p, len, Some(1000), &mut scratch).unwrap();
        let bare = wire::parse(&p[..n]).unwrap();
        assert_eq!(
            (bare.seq, bare.payload_len(), bare.has(FIN)),
            (1000, 0, true)
        );
        assert!(wire::tcp_checksum_ok(&p[..n], &bare));
        // A corrupt one: untouched.
        let mut bad = seg(900, ACK | FIN, &[7; 100]);
        bad[60] ^= 1;
        let t = wire::parse(&bad).unwrap();
        let len = bad.len();
        assert_eq!(
            fin_after_old_data(&t, &mut bad, len, Some(1000), &mut scratch),
            None
        );
    }

    #[test]
    fn a_fin_beyond_a_hole_is_noted_and_rebuilt_bare() {
        // We acknowledged 1000 with a window of 100 << 5; the last segment, 1100..1200 + FIN.
        let p = seg(1100, ACK | FIN, &[3; 100]);
        let t = wire::parse(&p).unwrap();
        assert_eq!(fin_beyond_hole(&t, &p, &told(1000, 100), 5), Some(1200));
        // In order (smoltcp takes it), without FIN, outside the window, or corrupt: nothing.
        assert_eq!(fin_beyond_hole(&t, &p, &told(1100, 100), 5), None);
        let q = seg(1100, ACK, &[3; 100]);
        assert_eq!(
            fin_beyond_hole(&wire::parse(&q).unwrap(), &q, &told(1000, 100), 5),
            None
        );
        assert_eq!(fin_beyond_hole(&t, &p, &told(1000, 100), 0), None);
        let mut bad = p.clone();
        bad[60] ^= 1;
        assert_eq!(fin_beyond_hole(&t, &bad, &told(1000, 100), 5), None);
        // The segment that fills the hole, 1000..1100, then the FIN built from it.
        let filler = seg(1000, ACK | wire::PSH, &[4; 100]);
        let fin = bare_fin(&filler, 1200).unwrap();
        let b = wire::parse(&fin).unwrap();
        assert_eq!(
            (b.seq, b.ack, b.flags, b.payload_len()),
            (1200, 5000, ACK | FIN, 0)
        );
        assert!(wire::tcp_checksum_ok(&fin, &b));
    }

    #[test]
    fn the_ack_of_a_segment_outside_the_window_is_salvaged() {
        // Our window is shut at 2000; the peer's data starts at 2004 (it sent past a window
        // that shrank).
        let p = seg(2004, ACK | FIN, &[1; 4]);
        let t = wire::parse(&p).unwrap();
        let bare = ack_outside_window(&t, &p, &told(2000, 0), 5).unwrap();
        let b = wire::parse(&bare).unwrap();
        assert_eq!(
            (b.seq, b.ack, b.flags, b.payload_len()),
            (2000, 5000, ACK, 0)
        );
        assert!(wire::tcp_checksum_ok(&bare, &b));
        // Data into a zero window at exactly the expected number: the ACK is salvaged too.
        let p = seg(2000, ACK, &[1; 4]);
        let t = wire::parse(&p).unwrap();
        assert!(ack_outside_window(&t, &p, &told(2000, 0), 5).is_some());
        // Inside an open window, or a bare ACK at the expected number: smoltcp takes it.
        let p = seg(2100, ACK, &[1; 4]);
        let t = wire::parse(&p).unwrap();
        assert!(ack_outside_window(&t, &p, &told(2000, 10), 5).is_none());
        let p = seg(2000, ACK, &[]);
        let t = wire::parse(&p).unwrap();
        assert!(ack_outside_window(&t, &p, &told(2000, 0), 5).is_none());
        // Past the right edge of an open window (10 << 5 = 320 bytes).
        let p = seg(2400, ACK, &[1; 4]);
        let t = wire::parse(&p).unwrap();
        assert!(ack_outside_window(&t, &p, &told(2000, 10), 5).is_some());
    }
}
