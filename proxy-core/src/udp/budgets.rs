//! [`Budgets`]: the bounds one UDP forward keeps across reloads, over all its sessions:
//! bytes queued for sessions not connected yet, and upstream sockets of ended sessions
//! left lingering.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes of client datagrams one forward queues, over all its sessions, while they wait
/// for their upstream socket (for the target's name to resolve, mostly): a burst of 64
/// full-size datagrams, or thousands of DNS queries. Without it, every session could
/// queue its `MAX_PENDING` (in [`session`](super::session)) datagrams of 64 KiB (59 GiB
/// at the default session cap); beyond it datagrams are dropped and counted, as a router
/// would.
pub(super) const QUEUE_BUDGET: usize = 4 << 20;

/// The most upstream sockets of ended sessions one forward keeps lingering: one
/// descriptor and a socket each. Beyond it (more than 1,600 sessions ending per second
/// for 10 s) a socket closes at once.
pub(super) const MAX_LINGERING: usize = 16_384;

/// Bounds one forward keeps across reloads: every generation's sessions share them.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    /// Bytes queued by sessions not connected yet, up to [`QUEUE_BUDGET`].
    queued: AtomicUsize,
    /// Upstream sockets of ended sessions still open, up to [`MAX_LINGERING`].
    lingering: AtomicUsize,
}

impl Budgets {
    /// Takes `bytes` of the queue budget; `false` (nothing taken) when they do not fit.
    pub(super) fn queue(&self, bytes: usize) -> bool {
        take(&self.queued, bytes, QUEUE_BUDGET)
    }

    /// Gives back queue budget taken by [`queue`](Self::queue).
    pub(super) fn unqueue(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Relaxed);
    }

    /// Takes a place for one lingering socket; `false` (nothing taken) when all are held.
    pub(super) fn linger(&self) -> bool {
        take(&self.lingering, 1, MAX_LINGERING)
    }

    /// Gives back a place taken by [`linger`](Self::linger).
    pub(super) fn unlinger(&self) {
        self.lingering.fetch_sub(1, Relaxed);
    }
}

/// Adds `n` to `counter` if the sum stays within `max`; whether it did.
fn take(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |held| {
            held.checked_add(n).filter(|&t| t <= max)
        })
        .is_ok()
}
