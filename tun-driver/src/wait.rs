//! Waiting for descriptors: [`wait_readable`] (`poll(2)`), a [`Waker`] (`eventfd(2)`) to
//! interrupt it from another thread, and an [`Alarm`] (`timerfd(2)`) that ends it at a time
//! any thread may move.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sys;

/// Wakes a thread blocked in [`wait_readable`] from another thread: include
/// [`as_raw_fd`](AsRawFd::as_raw_fd) among the descriptors waited for, call
/// [`wake`](Waker::wake) to make it readable and [`drain`](Waker::drain) once woken.
///
/// An `eventfd` (non-blocking, close-on-exec); share it between threads by reference or `Arc`.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new waker, not yet woken.
    ///
    /// # Errors
    /// If `eventfd(2)` fails, e.g. out of descriptors.
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            fd: sys::eventfd()?,
        })
    }

    /// Makes the waker readable until it is drained. Never blocks; waking an already woken
    /// waker is fine.
    pub fn wake(&self) {
        // The only possible failure is EAGAIN when the counter is about to overflow, which
        // means it is readable already.
        let _ = sys::retry_eintr(|| sys::write(self.fd.as_fd(), &1u64.to_ne_bytes()));
    }

    /// Resets the waker, so that it is no longer readable.
    pub fn drain(&self) {
        let mut buf = [0; 8];
        while sys::retry_eintr(|| sys::read(self.fd.as_fd(), &mut buf)).is_ok() {}
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A one-shot alarm for a thread blocked in [`wait_readable`]: it becomes readable when the time
/// it was [`set`](Alarm::set) to comes. Another thread may set it earlier without waking the
/// sleeper now (a `timerfd` on `CLOCK_MONOTONIC`, non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Alarm {
    fd: OwnedFd,
}

impl Alarm {
    /// A new alarm, not set.
    ///
    /// # Errors
    /// If `timerfd_create(2)` fails, e.g. out of descriptors.
    pub fn new() -> io::Result<Alarm> {
        Ok(Alarm {
            fd: sys::timerfd()?,
        })
    }

    /// Go off `after` from now (replacing any earlier setting), or never (`None`).
    pub fn set(&self, after: Option<Duration>) {
        // Only EINVAL (out-of-range values, excluded by construction) or EBADF can fail.
        let _ = sys::timerfd_set(self.fd.as_fd(), after);
    }

    /// Reset it after it went off, so that it is no longer readable.
    pub fn drain(&self) {
        let mut buf = [0; 8];
        while sys::retry_eintr(|| sys::read(self.fd.as_fd(), &mut buf)).is_ok() {}
    }
}

impl AsRawFd for Alarm {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until at least one of `fds` is readable, or `timeout` has passed.
///
/// Sets `ready[i]` to whether `fds[i]` is readable (or in an error or hang-up state, which a
/// read will report) and returns how many are. `timeout` is `None` to wait indefinitely;
/// otherwise it is rounded **up** to whole milliseconds, so that a deadline 300 µs away waits
/// 1 ms instead of spinning; `Some(Duration::ZERO)` only checks. A signal interrupting the wait
/// returns `Ok(0)` early. Negative descriptors are ignored.
///
/// # Errors
/// If `poll(2)` fails other than by `EINTR`, e.g. `EINVAL` for too many descriptors.
///
/// # Panics
/// If `ready` is shorter than `fds`.
pub fn wait_readable(
    fds: &[RawFd],
    ready: &mut [bool],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    assert!(
        ready.len() >= fds.len(),
        "wait_readable: `ready` is shorter than `fds`"
    );
    let mut poll_fds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    ready[..fds.len()].fill(false);

    match sys::poll(&mut poll_fds, timeout_ms(timeout)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
        Err(e) => return Err(e),
    }

    let readable = libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    let mut count = 0;
    for (slot, poll_fd) in ready.iter_mut().zip(&poll_fds) {
        *slot = poll_fd.revents & readable != 0;
        count += usize::from(*slot);
    }
    Ok(count)
}

/// The `poll(2)` timeout for `timeout`: -1 for none, otherwise whole milliseconds rounded up.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    let Some(timeout) = timeout else {
        return -1;
    };
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(300))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(2))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_micros(2001))), 3);
        assert_eq!(
            timeout_ms(Some(Duration::from_secs(u64::MAX))),
            libc::c_int::MAX
        );
    }

    #[test]
    fn an_alarm_goes_off_at_its_time_and_a_later_setting_replaces_it() {
        let alarm = Alarm::new().unwrap();
        let fds = [alarm.as_raw_fd()];
        let mut ready = [false];
        alarm.set(Some(Duration::from_secs(60)));
        alarm.set(Some(Duration::from_millis(20)));
        let start = std::time::Instant::now();
        assert_eq!(
            wait_readable(&fds, &mut ready, Some(Duration::from_secs(5))).unwrap(),
            1
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(15) && took < Duration::from_secs(2),
            "{took:?}"
        );
        alarm.drain();
        alarm.set(None);
        assert_eq!(
            wait_readable(&fds, &mut ready, Some(Duration::ZERO)).unwrap(),
            0
        );
    }

    #[test]
    fn a_drained_waker_is_not_readable() {
        let waker = Waker::new().unwrap();
        let mut ready = [true];
        let fds = [waker.as_raw_fd()];
        assert_eq!(
            wait_readable(&fds, &mut ready, Some(Duration::ZERO)).unwrap(),
            0
        );
        assert!(!ready[0]);
        waker.wake();
        waker.wake();
        assert_eq!(
            wait_readable(&fds, &mut ready, Some(Duration::ZERO)).unwrap(),
            1
        );
        assert!(ready[0]);
        waker.drain();
        assert_eq!(
            wait_readable(&fds, &mut ready, Some(Duration::ZERO)).unwrap(),
            0
        );
    }
}
