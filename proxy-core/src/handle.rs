//! What a running forwarder gives back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::Stats;
use crate::{EndpointStats, StatsSnapshot};

/// A running forwarder: its bound addresses, live stats, and graceful shutdown.
///
/// Dropping the handle stops the forwarder at once: listeners close and open connections
/// are reset. Call [`shutdown`](ForwarderHandle::shutdown) to let them finish first.
#[derive(Debug)]
pub struct ForwarderHandle {
    local_addrs: Vec<SocketAddr>,
    stats: Arc<Stats>,
    accepting: CancellationToken,
    closing: CancellationToken,
    connections: TaskTracker,
    /// The accept loops, one per listener.
    listeners: Vec<JoinHandle<()>>,
    /// Tasks that live as long as the forwarder, such as the DNS refresher.
    background: Vec<JoinHandle<()>>,
}

impl ForwarderHandle {
    pub(crate) fn new(
        local_addrs: Vec<SocketAddr>,
        stats: Arc<Stats>,
        accepting: CancellationToken,
        closing: CancellationToken,
        connections: TaskTracker,
        listeners: Vec<JoinHandle<()>>,
        background: Vec<JoinHandle<()>>,
    ) -> Self {
        ForwarderHandle {
            local_addrs,
            stats,
            accepting,
            closing,
            connections,
            listeners,
            background,
        }
    }

    /// The bound listen addresses, in the order they were given, with the kernel's port
    /// where port 0 was asked for.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// How each upstream address has fared, ordered by address.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.stats.endpoints()
    }

    /// Stops accepting new connections, lets open ones finish for up to `grace`, then
    /// resets those still open. Returns once every listener and connection is closed:
    /// `true` when all connections finished within the grace period.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.accepting.cancel();
        // The accept loops end at once; when they have, no listener is bound and no new
        // connection can join the ones being drained.
        for task in self.listeners.drain(..) {
            // A task that panicked has nothing left to clean up.
            let _ = task.await;
        }
        self.connections.close();
        let drained = tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_ok();
        if !drained {
            tracing::info!(
                open = self.stats.snapshot().connections_open,
                "grace period over; closing the remaining connections"
            );
        }
        self.closing.cancel();
        self.connections.wait().await;
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        drained
    }
}

impl Drop for ForwarderHandle {
    fn drop(&mut self) {
        self.accepting.cancel();
        self.closing.cancel();
    }
}
