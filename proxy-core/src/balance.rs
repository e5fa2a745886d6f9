//! Choosing an upstream address.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Round robin across connections: each connection starts at the next address and, on
/// failure, goes on through the others in order.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The order in which to try `n` addresses for one connection.
    pub(crate) fn order(&self, n: usize) -> impl Iterator<Item = usize> {
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        };
        (0..n).map(move |i| (start + i) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_start_and_visits_every_address() {
        let rr = RoundRobin::default();
        assert_eq!(rr.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rr.order(3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(rr.order(3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(rr.order(0).count(), 0);
    }
}
