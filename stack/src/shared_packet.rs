//! Packets held in two places at once: a 64 KB segment (segmentation offload) on its way to the
//! device, and in the loss recovery layer's record of what is in flight until the peer
//! acknowledges it.
//!
//! The layer has to keep the payload of every segment it sends (smoltcp cannot read its send
//! buffer back, and the layer resends lost segments itself). With offload, copying it was four
//! fifths of the instructions the layer added (`layer_cost --offload`).
//! Linux keeps the very buffers it sent (its retransmission queue holds the `sk_buff`, the
//! device a clone); so does this stack: the buffer smoltcp wrote a large segment in is shared,
//! read-only from then on, by the queue that writes it to the device ([`PacketIo::send_shared`])
//! and by the layer's scoreboard, and it goes back to the stack's [`PacketPool`] when the last
//! of them lets go of it, to be written in again.
//!
//! [`PacketIo::send_shared`]: crate::PacketIo::send_shared

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

/// Most buffers a pool keeps for reuse (2 MB of 64 KB ones, a window's worth); more are freed.
const MAX_POOLED: usize = 32;

/// A sent packet's buffer, shared and read-only: the packet is its first bytes (whoever holds
/// one knows its length). Cloning it is cheap; the buffer goes back to its pool when the last
/// clone is dropped.
#[derive(Clone)]
pub struct SharedPacket(Arc<Held>);

struct Held {
    buf: Vec<u8>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_POOLED {
            pool.push(buf);
        }
    }
}

impl Deref for SharedPacket {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.buf
    }
}

impl fmt::Debug for SharedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPacket")
            .field("capacity", &self.0.buf.len())
            .field("holders", &Arc::strong_count(&self.0))
            .finish()
    }
}

/// Where a stack's shared packet buffers come from and go back to.
#[derive(Debug, Default, Clone)]
pub(crate) struct PacketPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl PacketPool {
    /// Share what `buf` holds, and give `buf` a buffer of the same length to write the next
    /// packet in: one from the pool, or a new one.
    pub(crate) fn share(&self, buf: &mut Vec<u8>) -> SharedPacket {
        let len = buf.len();
        let reused = {
            let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // The one back last: the likeliest to be in a cache still.
            pool.iter()
                .rposition(|b| b.len() == len)
                .map(|i| pool.swap_remove(i))
        };
        let next = reused.unwrap_or_else(|| vec![0; len]);
        SharedPacket(Arc::new(Held {
            buf: std::mem::replace(buf, next),
            pool: Arc::clone(&self.0),
        }))
    }

    /// Buffers waiting to be reused.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_comes_back_once_its_last_holder_lets_go() {
        let pool = PacketPool::default();
        let mut buf = vec![7u8; 100];
        let p = pool.share(&mut buf);
        assert_eq!(&p[..3], &[7, 7, 7], "the packet is what the buffer held");
        assert_eq!(buf.len(), 100, "the writer gets a buffer as long as before");
        let q = p.clone();
        drop(p);
        assert_eq!(pool.pooled(), 0, "a holder is left");
        drop(q);
        assert_eq!(pool.pooled(), 1);
        let r = pool.share(&mut buf);
        assert_eq!(pool.pooled(), 0, "the pooled buffer is written in again");
        assert_eq!(r.len(), 100);
    }

    #[test]
    fn buffers_of_another_length_are_not_reused() {
        let pool = PacketPool::default();
        drop(pool.share(&mut vec![0u8; 100]));
        let mut other = vec![1u8; 50];
        drop(pool.share(&mut other));
        assert_eq!(other.len(), 50);
        assert_eq!(pool.pooled(), 2);
    }
}
