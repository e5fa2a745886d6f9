//! Stopping: the signals that start a drain, and draining every forward at once.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::registry::Registered;

/// The open TCP connections and UDP sessions of every forward in `running`.
pub(crate) fn open_counts(running: &[Registered]) -> (u64, u64) {
    running.iter().fold((0, 0), |(open, sessions), r| {
        let stats = r.handle().stats();
        (
            open + stats.connections_open,
            sessions + stats.udp.sessions_open,
        )
    })
}

/// Shuts every forward in `running` down at the same time: each stops accepting (TCP) or
/// starting new sessions (UDP) and lets open connections and sessions finish for up to
/// `drain`. The future says whether all of them finished in time.
///
/// Each shutdown starts at once, in a task of its own, so they drain concurrently.
/// Dropping the future (when a second signal comes) aborts the tasks, which drops the
/// handles and closes everything.
pub(crate) fn shut_down_all(
    running: Vec<Registered>,
    drain: Duration,
) -> impl Future<Output = bool> {
    let mut shutdowns = JoinSet::new();
    for forward in running {
        shutdowns.spawn(forward.shutdown(drain));
    }
    async move {
        let mut all = true;
        while let Some(drained) = shutdowns.join_next().await {
            // A shutdown task that panicked has closed what it had.
            all &= drained.unwrap_or(false);
        }
        all
    }
}

/// Waits for a drain that has begun: `drained` says whether everything finished within
/// the drain time, and the log says so (`all {finished} finished`, or `remaining {closed}
/// were closed`). Another signal meanwhile drops `drained`, which closes what is still
/// open, and fails naming the signal.
pub(crate) async fn finish_drain(
    drained: impl Future<Output = bool>,
    signals: &mut Signals,
    finished: &str,
    closed: &str,
) -> anyhow::Result<()> {
    tokio::select! {
        drained = drained => {
            if drained {
                tracing::info!("all {finished} finished; exiting");
            } else {
                tracing::info!("drain time over; remaining {closed} were closed; exiting");
            }
            Ok(())
        }
        name = signals.recv() => {
            anyhow::bail!("received {name} while draining; closed the open {closed}")
        }
    }
}

/// SIGINT and SIGTERM.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The name of the next signal received.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            // Without a handler, Ctrl-C ends the process; waiting forever is the fallback.
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
