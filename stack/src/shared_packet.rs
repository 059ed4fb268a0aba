//! Packets held in two places at once: on their way to the device, and in the loss recovery
//! layer's record of what is in flight until the peer acknowledges them.
//!
//! The layer has to keep the payload of every segment it sends (smoltcp cannot read its send
//! buffer back, and the layer resends lost segments itself). Linux keeps the very buffers it
//! sent (its retransmission queue holds the `sk_buff`, the device a clone); so does this stack:
//! the buffer smoltcp wrote a segment in is shared, read-only from then on, by the queue that
//! writes it to the device ([`PacketIo::send_shared`]) and by the layer's scoreboard, and the
//! stack's [`PacketPool`] writes in it again once both let go. This is done for a 64 KB
//! super-packet (segmentation offload: copying those was four fifths of the instructions the
//! layer added) and for a segment that fills most of its buffer (a wire-sized one without
//! offload); a small segment in a large buffer is copied instead.
//!
//! [`PacketIo::send_shared`]: crate::PacketIo::send_shared

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Most bytes of buffers a pool keeps track of, held or free (a 1 MB flight with room to spare,
/// of 1,500-byte buffers or of 64 KB ones); more are handed out untracked, and freed when their
/// holders let go. So a pool keeps at most this much memory of its own.
const MAX_TRACKED_BYTES: usize = 2 << 20;

/// A sent packet's buffer, shared and read-only: the packet is its first bytes (whoever holds
/// one knows its length). Cloning it is cheap; once the last clone outside the pool is
/// dropped, the pool writes in it again.
#[derive(Clone)]
pub struct SharedPacket(Arc<Vec<u8>>);

impl Deref for SharedPacket {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPacket")
            .field("capacity", &self.0.len())
            .field("holders", &Arc::strong_count(&self.0))
            .finish()
    }
}

/// Where a stack's shared packet buffers come from and go back to: every buffer it handed out,
/// oldest first, each with the pool's own reference. A buffer is free again when that
/// reference is the only one left: the device's queue has written it and the peer has
/// acknowledged it, which happens in about the order they were handed out, so the oldest is
/// the one to look at. No lock and no allocation per packet: the buffer and its count are
/// reused together.
#[derive(Debug, Default)]
pub(crate) struct PacketPool {
    ring: VecDeque<Arc<Vec<u8>>>,
    /// The bytes of the buffers in `ring`.
    tracked: usize,
}

impl PacketPool {
    /// Share what `buf` holds, and give `buf` a buffer of the same length to write the next
    /// packet in: a free one from the pool, or a new one.
    pub(crate) fn share(&mut self, buf: &mut Vec<u8>) -> SharedPacket {
        let len = buf.len();
        // The oldest, or the one after it: one still held (a segment waiting to be sent
        // again) or of another length (another device's) goes to the back, to be looked at
        // again later.
        for _ in 0..2 {
            let Some(mut oldest) = self.ring.pop_front() else {
                break;
            };
            match Arc::get_mut(&mut oldest) {
                Some(free) if free.len() == len => {
                    std::mem::swap(free, buf);
                    self.ring.push_back(Arc::clone(&oldest));
                    return SharedPacket(oldest);
                }
                _ => self.ring.push_back(oldest),
            }
        }
        let packet = Arc::new(std::mem::replace(buf, vec![0; len]));
        if self.tracked + len <= MAX_TRACKED_BYTES {
            self.tracked += len;
            self.ring.push_back(Arc::clone(&packet));
        }
        SharedPacket(packet)
    }

    /// Buffers waiting to be reused.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.ring
            .iter()
            .filter(|b| Arc::strong_count(b) == 1)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_is_written_in_again_once_its_last_holder_lets_go() {
        let mut pool = PacketPool::default();
        let mut buf = vec![7u8; 100];
        let p = pool.share(&mut buf);
        assert_eq!(&p[..3], &[7, 7, 7], "the packet is what the buffer held");
        assert_eq!(
            buf,
            vec![0; 100],
            "the writer gets a buffer as long as before"
        );
        let q = p.clone();
        drop(p);
        assert_eq!(pool.pooled(), 0, "a holder is left");
        drop(q);
        assert_eq!(pool.pooled(), 1);
        buf[0] = 9;
        let r = pool.share(&mut buf);
        assert_eq!(r[0], 9, "the packet is the one just written");
        assert_eq!(
            buf[0], 7,
            "the writer got the free buffer back, not a new one"
        );
        assert_eq!(pool.pooled(), 0, "the pooled buffer is held again");
    }

    #[test]
    fn a_buffer_still_held_does_not_hold_up_the_next() {
        let mut pool = PacketPool::default();
        let first = pool.share(&mut vec![1u8; 100]);
        drop(pool.share(&mut vec![2u8; 100]));
        let mut buf = vec![3u8; 100];
        let _third = pool.share(&mut buf);
        assert_eq!(
            buf[0], 2,
            "the second buffer is reused, past the first still held"
        );
        assert_eq!(first[0], 1, "the held one is untouched");
    }

    #[test]
    fn buffers_of_two_lengths_are_each_reused_for_their_own() {
        let mut pool = PacketPool::default();
        drop(pool.share(&mut vec![1u8; 100]));
        let mut other = vec![2u8; 50];
        drop(pool.share(&mut other));
        assert_eq!(other, vec![0; 50], "a new buffer of its own length");
        assert_eq!(pool.pooled(), 2, "both kept");
        let mut buf = vec![3u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 1, "the free buffer of this length came back");
        let mut buf = vec![4u8; 50];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 2);
        assert_eq!(pool.tracked, 150);
    }

    #[test]
    fn the_pool_keeps_track_of_a_bounded_amount() {
        let mut pool = PacketPool::default();
        let size = 64 << 10;
        let held: Vec<SharedPacket> = (0..(2 * MAX_TRACKED_BYTES / size))
            .map(|_| pool.share(&mut vec![0u8; size]))
            .collect();
        assert_eq!(pool.tracked, MAX_TRACKED_BYTES, "the rest went untracked");
        drop(held);
        assert_eq!(
            pool.pooled() * size,
            MAX_TRACKED_BYTES,
            "the untracked ones were freed"
        );
    }
}
