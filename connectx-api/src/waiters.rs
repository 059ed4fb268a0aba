//! Who waits on which socket, and waking exactly them.
//!
//! A call that has to wait (a blocking `recv`, `accept`, `connectx`, `poll`) registers a
//! [`Waiter`] on the sockets it waits for, under the state lock, right after finding them not
//! ready; then it parks. The stack reports which sockets packets, timers and calls touched
//! ([`stack::Stack::take_events`]); whoever drained those events (the runtime after a poll, or
//! a call that changed another thread's socket) takes the waiters of those sockets out of the
//! table under the lock and wakes them after releasing it. Nothing else is woken: a thousand
//! threads blocked on a thousand idle connections cost nothing when one connection is busy.
//!
//! Because registration and event delivery both happen under the state lock, a wake-up cannot
//! be lost between a waiter's last look and its park. A waiter that wakes looks again and
//! registers again if it still has to wait.
//!
//! One source, two kinds of waiter: a thread that parks, and an async task whose `Waker` is
//! woken ([`crate::tokio`]); an eventfd a C caller polls would be a third kind of the same
//! entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;
use std::time::Instant;

use stack::SocketId;

/// One waiting call: a parked thread, or an async task (its `Waker`).
#[derive(Debug)]
pub(crate) struct Waiter {
    kind: Kind,
    woken: AtomicBool,
}

#[derive(Debug)]
enum Kind {
    Thread(Thread),
    /// The wakers of the tasks waiting (a socket shared by several tasks, as a datagram socket
    /// or a listener may be, has one waiter per direction for all of them).
    Task(Mutex<Vec<std::task::Waker>>),
}

/// Most task wakers a waiter keeps: futures dropped while waiting leave theirs behind until
/// the socket's next event; past this many, all are woken at once (a spurious wake-up is
/// allowed, and a task still waiting registers again), so the list cannot grow without end.
const MAX_TASK_WAKERS: usize = 64;

impl Waiter {
    /// A waiter for the calling thread.
    pub(crate) fn current() -> Arc<Waiter> {
        Arc::new(Waiter {
            kind: Kind::Thread(std::thread::current()),
            woken: AtomicBool::new(false),
        })
    }

    /// A waiter for async tasks, without a waker until [`Waiter::set_waker`].
    pub(crate) fn task() -> Arc<Waiter> {
        Arc::new(Waiter {
            kind: Kind::Task(Mutex::new(Vec::new())),
            woken: AtomicBool::new(false),
        })
    }

    /// Wake this task's waker too at the next wake-up (a task waiter; a thread waiter ignores
    /// it). A task polled again (perhaps on another thread) replaces nothing: the same task's
    /// waker is kept once.
    pub(crate) fn set_waker(&self, waker: &std::task::Waker) {
        if let Kind::Task(slot) = &self.kind {
            let mut wakers = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if wakers.iter().any(|w| w.will_wake(waker)) {
                return;
            }
            let stale = if wakers.len() >= MAX_TASK_WAKERS {
                std::mem::take(&mut *wakers)
            } else {
                Vec::new()
            };
            wakers.push(waker.clone());
            drop(wakers);
            for w in stale {
                w.wake();
            }
        }
    }

    /// Wake it (outside the state lock).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        match &self.kind {
            Kind::Thread(thread) => thread.unpark(),
            Kind::Task(slot) => {
                let wakers =
                    std::mem::take(&mut *slot.lock().unwrap_or_else(PoisonError::into_inner));
                for w in wakers {
                    w.wake();
                }
            }
        }
    }

    /// Park until woken or until `deadline`. Returns false when the deadline passed first.
    /// (A thread waiter's.)
    pub(crate) fn park(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.woken.swap(false, Ordering::Acquire) {
                return true;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return self.woken.swap(false, Ordering::Acquire);
                    }
                    std::thread::park_timeout(left);
                }
            }
        }
    }
}

/// The waiters of each socket.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_socket: HashMap<SocketId, Vec<Arc<Waiter>>>,
}

impl Waiters {
    pub(crate) fn register(&mut self, id: SocketId, w: &Arc<Waiter>) {
        let list = self.by_socket.entry(id).or_default();
        if !list.iter().any(|x| Arc::ptr_eq(x, w)) {
            list.push(Arc::clone(w));
        }
    }

    /// Take a waiter off a socket (it woke for another reason, or timed out).
    pub(crate) fn unregister(&mut self, id: SocketId, w: &Arc<Waiter>) {
        if let Some(list) = self.by_socket.get_mut(&id) {
            list.retain(|x| !Arc::ptr_eq(x, w));
            if list.is_empty() {
                self.by_socket.remove(&id);
            }
        }
    }

    /// Take the waiters of `id`, to wake once the lock is released.
    pub(crate) fn take(&mut self, id: SocketId, into: &mut Vec<Arc<Waiter>>) {
        if let Some(list) = self.by_socket.remove(&id) {
            into.extend(list);
        }
    }

    /// Take every waiter (the stack stops).
    pub(crate) fn take_all(&mut self, into: &mut Vec<Arc<Waiter>>) {
        for (_, list) in self.by_socket.drain() {
            into.extend(list);
        }
    }

    /// How many sockets have waiters.
    pub(crate) fn sockets(&self) -> usize {
        self.by_socket.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_waiters_of_a_socket_are_taken() {
        let mut stack = stack::Stack::new(stack::StackConfig::default());
        let a = stack.socket(stack::Family::V4, stack::SocketType::Stream);
        let b = stack.socket(stack::Family::V4, stack::SocketType::Stream);
        let mut t = Waiters::default();
        let (w1, w2) = (Waiter::current(), Waiter::current());
        t.register(a, &w1);
        t.register(a, &w1);
        t.register(b, &w2);
        let mut out = Vec::new();
        t.take(a, &mut out);
        assert_eq!(out.len(), 1, "registered once, taken once");
        assert!(Arc::ptr_eq(&out[0], &w1));
        assert_eq!(t.sockets(), 1, "b's waiter stays");
        t.unregister(b, &w2);
        assert_eq!(t.sockets(), 0);
    }

    #[test]
    fn a_wake_before_the_park_is_not_lost() {
        let w = Waiter::current();
        w.wake();
        assert!(w.park(Some(Instant::now() + Duration::from_secs(5))));
        assert!(
            !w.park(Some(Instant::now() + Duration::from_millis(10))),
            "one wake, one return"
        );
    }
}
