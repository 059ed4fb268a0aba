//! The small shared types every module of the core names: ids, address tuples, families, and the
//! generational slab that hands out ids. A leaf module: it depends on no other module of the
//! crate, so the modules that use it never form import cycles.

use std::net::{IpAddr, SocketAddr};

/// An interface of a [`Stack`](crate::Stack), by position; stable for the stack's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceId(pub usize);

/// A socket of a [`Stack`](crate::Stack). Ids are not reused while the stack lives (a
/// generation counter tells a stale id from a new socket in the same slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub(crate) Key);

/// One smoltcp socket in a `SocketSet` of its own (a TCP connection, or one interface's part of
/// a datagram socket); see the `shard` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ShardId(pub(crate) Key);

/// A connection's addresses as this stack sees them: (local, remote).
pub(crate) type Tuple = (SocketAddr, SocketAddr);

/// Transport protocol of a port binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// Address family of a socket: `AF_INET` or `AF_INET6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Whether an address of this family can be used by a socket of this family.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    /// The unspecified address of the family.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u8; 16]),
        }
    }

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A slot index and the generation it had when the id was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

/// A slab with generational keys: insert, get and remove in O(1); a removed key never finds a
/// later value in the same slot. Slots come in chunks of [`CHUNK`], so growing never copies the
/// values and never holds more than one chunk of unused room (a doubling vector would hold a
/// third of its memory unused on average, with thousands of connections).
#[derive(Debug)]
pub(crate) struct Slab<T> {
    chunks: Vec<Box<[Slot<T>]>>,
    /// Slots handed out so far (all below are in some chunk).
    used: u32,
    free: Vec<u32>,
    len: usize,
}

/// Slots per chunk.
const CHUNK: usize = 64;

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            used: 0,
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        let i = index as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<T>> {
        let i = index as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    pub(crate) fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.used;
                self.used = index.checked_add(1).expect("fewer than 2^32 entries");
                if index as usize / CHUNK >= self.chunks.len() {
                    self.chunks.push(
                        (0..CHUNK)
                            .map(|_| Slot {
                                generation: 0,
                                value: None,
                            })
                            .collect(),
                    );
                }
                index
            }
        };
        let slot = self.slot_mut(index).expect("a slot below `used`");
        slot.value = Some(value);
        Key {
            index,
            generation: slot.generation,
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        self.slot(key.index)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slot_mut(key.index)
            .filter(|s| s.generation == key.generation)
            .and_then(|s| s.value.as_mut())
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self
            .slot_mut(key.index)
            .filter(|s| s.generation == key.generation)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every key and value (a scan: for rare whole-table work, never on a packet's path).
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        (0..self.used).filter_map(|index| {
            let s = self.slot(index)?;
            let key = Key {
                index,
                generation: s.generation,
            };
            s.value.as_ref().map(|v| (key, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(
            s.get(a),
            None,
            "a's slot now holds b, under another generation"
        );
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().count(), 1);
    }

    #[test]
    fn many_values_across_chunks() {
        let mut s = Slab::default();
        let keys: Vec<Key> = (0..1000).map(|n| s.insert(n)).collect();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(s.get(*k), Some(&n));
        }
        for k in keys.iter().step_by(2) {
            s.remove(*k);
        }
        assert_eq!(s.len(), 500);
        let again: Vec<Key> = (0..500).map(|n| s.insert(n + 5000)).collect();
        assert_eq!(s.len(), 1000);
        assert!(
            again.iter().all(|k| k.index < 1000),
            "freed slots are reused"
        );
        assert_eq!(s.get(keys[0]), None);
        assert_eq!(s.get(keys[1]), Some(&1));
    }
}
