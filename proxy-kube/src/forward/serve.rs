//! Forwarding a local listener: accept, open a connection to a pod, relay both ways with
//! half-close; a failure resets that one local connection and is logged.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, copy_bidirectional_with_sizes};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PodForwarder;

/// The relay's buffer per direction.
const BUFFER: usize = 64 << 10;

/// A connection accepted by [`PodForwarder::serve_with`], as its callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
}

/// A listener being forwarded; see [`PodForwarder::serve`]. Clones control the same
/// listener.
#[derive(Clone, Debug)]
pub struct Serving {
    local: SocketAddr,
    accepting: CancellationToken,
    closing: CancellationToken,
    connections: TaskTracker,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: AtomicU64,
    total: AtomicU64,
    failed: AtomicU64,
}

// ===== impl PodForwarder =====

impl PodForwarder {
    /// Forwards every connection `listener` accepts to `remote` (a port number or name)
    /// on a ready pod, until [`Serving::shutdown`].
    pub fn serve(&self, listener: TcpListener, remote: impl Into<String>) -> Serving {
        self.serve_with(listener, remote, |_| {})
    }

    /// As [`serve`](Self::serve), calling `accepted` for each connection before it is
    /// forwarded (where kubectl prints `Handling connection for 8080`).
    pub fn serve_with(
        &self,
        listener: TcpListener,
        remote: impl Into<String>,
        accepted: impl Fn(Accepted) + Send + Sync + 'static,
    ) -> Serving {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let serving = Serving {
            local,
            accepting: CancellationToken::new(),
            closing: CancellationToken::new(),
            connections: TaskTracker::new(),
            counts: Arc::default(),
        };
        let remote: Arc<str> = Arc::from(remote.into());
        let forwarder = self.clone();
        let accepting = serving.accepting.clone();
        let closing = serving.closing.clone();
        let connections = serving.connections.clone();
        let counts = serving.counts.clone();
        serving.connections.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of descriptors, or a connection gone before it was
                            // accepted: the listener is fine.
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                accepted(Accepted { peer, local });
                let task = Connection {
                    forwarder: forwarder.clone(),
                    remote: remote.clone(),
                    counts: counts.clone(),
                    local,
                    peer,
                };
                let closing = closing.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = closing.cancelled() => {}
                        () = task.run(stream) => {}
                    }
                });
            }
        });
        serving
    }
}

/// One accepted connection's work.
struct Connection {
    forwarder: PodForwarder,
    remote: Arc<str>,
    counts: Arc<Counts>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, mut client: TcpStream) {
        let counts = &self.counts;
        counts.total.fetch_add(1, Relaxed);
        counts.open.fetch_add(1, Relaxed);
        let _open = scopeguard(|| {
            counts.open.fetch_sub(1, Relaxed);
        });
        let _ = client.set_nodelay(true);
        let started = tokio::time::Instant::now();
        let connected = self
            .forwarder
            .connect(&self.remote, Some(self.peer.ip()))
            .await;
        let mut upstream = match connected {
            Ok(connected) => connected,
            Err(e) => return self.failed(&client, None, &e),
        };
        let result =
            copy_bidirectional_with_sizes(&mut client, &mut upstream.stream, BUFFER, BUFFER).await;
        match result {
            Ok((up, down)) => {
                tracing::debug!(
                    client = %self.peer,
                    pod = %upstream.pod,
                    port = upstream.port,
                    bytes_up = up,
                    bytes_down = down,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "connection"
                );
                // Both sides are shut down already; this only flushes.
                let _ = client.shutdown().await;
            }
            Err(e) => self.failed(&client, Some(upstream.port), &e),
        }
    }

    /// Says why the connection failed, as kubectl does (`an error occurred forwarding
    /// 8080 -> 80: ...`), and resets the client's connection, so the client sees it failed
    /// rather than a clean end.
    fn failed(&self, client: &TcpStream, port: Option<u16>, e: &io::Error) {
        self.counts.failed.fetch_add(1, Relaxed);
        let remote = port.map_or_else(|| self.remote.to_string(), |p| p.to_string());
        tracing::error!(
            client = %self.peer,
            "an error occurred forwarding {} -> {remote}: {e}",
            self.local.port()
        );
        if let Err(e) = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(error = %e, "SO_LINGER failed");
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

// ===== impl Serving =====

impl Serving {
    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections being forwarded now.
    pub fn open_connections(&self) -> u64 {
        self.counts.open.load(Relaxed)
    }

    /// Connections accepted so far.
    pub fn total_connections(&self) -> u64 {
        self.counts.total.load(Relaxed)
    }

    /// Connections that failed: no pod reached, or the pod's port refused or reset.
    pub fn failed_connections(&self) -> u64 {
        self.counts.failed.load(Relaxed)
    }

    /// Stops accepting (the listener is closed) and lets open connections finish.
    pub fn stop_accepting(&self) {
        self.accepting.cancel();
    }

    /// Stops accepting, lets open connections finish for up to `drain`, then closes
    /// what is left. Returns whether all finished in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.accepting.cancel();
        self.connections.close();
        if tokio::time::timeout(drain, self.connections.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.closing.cancel();
        self.connections.wait().await;
        false
    }

    /// Closes every connection at once, without waiting.
    pub fn close_now(&self) {
        self.accepting.cancel();
        self.closing.cancel();
    }
}
