//! Bounded waits: a future that must finish in time, a condition polled with a deadline,
//! a forwarder's stats once they settle, and tasks joined with their panics kept.
//!
//! Nothing here sleeps to synchronise: every wait awaits an event or polls a condition,
//! and gives up with a message at its deadline.

use std::future::Future;
use std::time::Duration;

use proxy_core::{ForwarderHandle, StatsSnapshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long anything that should happen promptly may take before a test fails.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Polls `cond` until it holds, for at most `limit` (and at most 10,000 polls).
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(cond(), "{what}: not true within {limit:?}");
}

/// Awaits every task of `set`, re-raising the first panic with its own message.
pub async fn join_all(mut set: JoinSet<()>) {
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("task failed: {e}");
        }
    }
}

/// Waits until the forwarder's stats satisfy `ready` (counters settle a moment after the
/// peers see the bytes), then returns them. Panics with the last snapshot after 10 s.
pub async fn settled_stats(
    handle: &ForwarderHandle,
    ready: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    settled_stats_within(handle, Duration::from_secs(10), ready).await
}

/// [`settled_stats`] with its own bound: panics with the last snapshot after `limit`.
pub async fn settled_stats_within(
    handle: &ForwarderHandle,
    limit: Duration,
    ready: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let deadline = Instant::now() + limit;
    for _ in 0..1_000_000 {
        let s = handle.stats();
        if ready(&s) {
            return s;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "stats did not settle within {limit:?}: {:#?}",
        handle.stats()
    );
}
