//! Packets held in two places at once: on their way to the device, and in the loss recovery
//! layer's record of what is in flight until the peer acknowledges them.
//!
//! The layer has to keep the payload of every segment it sends (smoltcp cannot read its send
//! buffer back, and the layer resends lost segments itself). Linux keeps the very buffers it
//! sent (its retransmission queue holds the `sk_buff`, the device a clone); so does this stack:
//! the buffer smoltcp wrote a segment in is shared, read-only from then on, by the queue that
//! writes it to the device ([`PacketIo::send_shared`]) and by the layer's scoreboard, which
//! gives it back to the stack's [`PacketPool`] once the segment is acknowledged; the pool
//! writes in it again once the queue has let go too. This is done for a 64 KB
//! super-packet (segmentation offload: copying those was four fifths of the instructions the
//! layer added) and for a segment that fills most of its buffer (a wire-sized one without
//! offload); a small segment in a large buffer is copied instead.
//!
//! [`PacketIo::send_shared`]: crate::PacketIo::send_shared

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Most bytes of free buffers a pool keeps (a 1 MB flight's worth twice, of 1,500-byte buffers
/// or of 64 KB ones); buffers given back beyond that are freed.
const MAX_FREE_BYTES: usize = 2 << 20;

/// How many of the most recently given back buffers [`PacketPool::share`] looks at for one of
/// the length it needs (a stack's devices may have frames of two lengths).
const LOOK_AT: usize = 2;

/// A sent packet's buffer, shared and read-only: the packet is its first bytes (whoever holds
/// one knows its length). Cloning it is cheap; the holder that keeps it longest (the layer's
/// scoreboard, until the peer acknowledges the segment) gives it back to the stack's pool of
/// buffers, which writes in it again once nobody else holds it.
#[derive(Clone)]
pub struct SharedPacket {
    buf: Arc<Vec<u8>>,
    /// `buf.len()`, kept here: giving a packet back reads no more than the handle (the buffer's
    /// count and length are on another cache line, last written by another thread).
    len: usize,
}

impl Deref for SharedPacket {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl fmt::Debug for SharedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPacket")
            .field("capacity", &self.len)
            .field("holders", &Arc::strong_count(&self.buf))
            .finish()
    }
}

/// The buffers of acknowledged packets, to write the next ones in: the last given back is
/// written in first (it left the cache least long ago). Buffers are written in on the thread
/// that sends, and given back, without being read, on the one that reads the acknowledgements:
/// so the buffer's reference count is touched by the sending thread only (and the device
/// queue's writer), not passed between the two for each packet. No lock, and no allocation per
/// packet once the pool holds a flight's worth.
#[derive(Debug, Default)]
pub(crate) struct PacketPool {
    /// Most recently given back last; buffers found still held, or of another length, at the
    /// front.
    free: VecDeque<SharedPacket>,
    /// Bytes of buffers in `free`.
    free_bytes: usize,
    /// New buffers made (for the simulator's tests: a pool that gets acknowledged buffers back
    /// makes about a flight's worth, not one per packet).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) made: u64,
}

impl PacketPool {
    /// Share `buf` (the packet smoltcp just wrote): it becomes the returned packet, and `buf`
    /// becomes a buffer of the same length to write the next packet in: the last one given
    /// back if it is free, else one set aside earlier if that is free by now, else a new one.
    ///
    /// A buffer given back can still be held: the acknowledgement of a segment can come (on
    /// another thread) while the device queue is still writing the rest of its batch, and lets
    /// go of all of them after the last. Such a buffer is set aside at the front of the list
    /// (buffers are given back at the other end), not dropped: dropping it made the pool
    /// allocate a new 64 KB buffer for up to one super-packet in fifteen over TUN.
    pub(crate) fn share(&mut self, buf: &mut Vec<u8>) -> SharedPacket {
        let len = buf.len();
        for _ in 0..LOOK_AT {
            let Some(packet) = self.free.pop_back() else {
                break;
            };
            match self.reuse(packet, buf) {
                Ok(packet) => return packet,
                // Still held, or another device's length: for later.
                Err(packet) => self.free.push_front(packet),
            }
        }
        // Set aside longest ago: its queue has most likely let go of it by now.
        if let Some(packet) = self.free.pop_front() {
            match self.reuse(packet, buf) {
                Ok(packet) => return packet,
                Err(packet) => self.free.push_front(packet),
            }
        }
        #[cfg(any(test, feature = "sim"))]
        {
            self.made += 1;
        }
        SharedPacket {
            buf: Arc::new(std::mem::replace(buf, vec![0; len])),
            len,
        }
    }

    /// `packet` with `buf`'s contents, `buf` given its buffer, if `packet` is free and as
    /// long as `buf`; else `packet` back.
    fn reuse(
        &mut self,
        mut packet: SharedPacket,
        buf: &mut Vec<u8>,
    ) -> Result<SharedPacket, SharedPacket> {
        if packet.len != buf.len() {
            return Err(packet);
        }
        let Some(free) = Arc::get_mut(&mut packet.buf) else {
            return Err(packet);
        };
        std::mem::swap(free, buf);
        self.free_bytes -= packet.len;
        Ok(packet)
    }

    /// A holder lets go of `packet` (the scoreboard, once the segment is acknowledged): the
    /// pool writes in it again once every other holder has let go too.
    pub(crate) fn give_back(&mut self, packet: SharedPacket) {
        if self.free_bytes + packet.len <= MAX_FREE_BYTES {
            self.free_bytes += packet.len;
            self.free.push_back(packet);
        }
    }

    /// Buffers kept that nobody else holds.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.free
            .iter()
            .filter(|p| Arc::strong_count(&p.buf) == 1)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_written_in_again_once_its_last_holder_lets_go() {
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
        pool.give_back(p);
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
        assert_eq!(pool.free.len(), 0, "the buffer is out again");
    }

    #[test]
    fn the_last_buffer_given_back_is_written_in_first() {
        let mut pool = PacketPool::default();
        let first = pool.share(&mut vec![1u8; 100]);
        let second = pool.share(&mut vec![2u8; 100]);
        pool.give_back(first);
        pool.give_back(second);
        let mut buf = vec![3u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 2, "the second, given back last");
        let mut buf = vec![4u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 1, "then the first");
    }

    #[test]
    fn a_buffer_still_held_is_set_aside_and_written_in_once_free() {
        let mut pool = PacketPool::default();
        let free = pool.share(&mut vec![1u8; 100]);
        let held = pool.share(&mut vec![2u8; 100]);
        pool.give_back(free);
        let queue = held.clone();
        pool.give_back(held);
        let mut buf = vec![3u8; 100];
        let _third = pool.share(&mut buf);
        assert_eq!(buf[0], 1, "the free one is reused, past the one still held");
        assert_eq!(queue[0], 2, "the held one is untouched");
        assert_eq!(pool.free.len(), 1, "and kept");
        let mut buf = vec![4u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf, vec![0; 100], "still held: a new buffer");
        drop(queue);
        let mut buf = vec![5u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 2, "once let go, it is written in again");
        assert_eq!((pool.free.len(), pool.free_bytes), (0, 0));
    }

    #[test]
    fn buffers_of_two_lengths_are_each_reused_for_their_own() {
        let mut pool = PacketPool::default();
        let long = pool.share(&mut vec![1u8; 100]);
        let mut short = vec![2u8; 50];
        let p = pool.share(&mut short);
        assert_eq!(short, vec![0; 50], "a new buffer of its own length");
        pool.give_back(long);
        pool.give_back(p);
        let mut buf = vec![3u8; 100];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 1, "the free buffer of this length came back");
        assert_eq!(pool.free.len(), 1, "the other length is kept");
        let mut buf = vec![4u8; 50];
        drop(pool.share(&mut buf));
        assert_eq!(buf[0], 2);
        assert_eq!(pool.free_bytes, 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_amount() {
        let mut pool = PacketPool::default();
        let size = 64 << 10;
        let sent: Vec<SharedPacket> = (0..(2 * MAX_FREE_BYTES / size))
            .map(|_| pool.share(&mut vec![0u8; size]))
            .collect();
        for p in sent {
            pool.give_back(p);
        }
        assert_eq!(pool.free_bytes, MAX_FREE_BYTES, "the rest was freed");
        assert_eq!(pool.pooled() * size, MAX_FREE_BYTES);
    }
}
