//! What a running forwarder gives back: addresses, stats, reload and shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::{self, Generation, Protocol};
use crate::resolve::ResolveCache;
use crate::stats::Stats;
use crate::{EndpointStats, Error, ErrorKind, Forwarder, Side, StatsSnapshot, tcp, udp};

/// A running forwarder: its bound addresses, live stats, reload and graceful shutdown.
///
/// Dropping the handle stops the forwarder at once: listeners close and open connections
/// are reset. Call [`shutdown`](ForwarderHandle::shutdown) to let them finish first.
#[derive(Debug)]
pub struct ForwarderHandle {
    base: Base,
    listeners: Vec<ListenerTask>,
    /// The bound addresses of `listeners`, in the same order.
    local_addrs: Vec<SocketAddr>,
    control: Control,
}

/// What lives as long as the forwarder, across reloads.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    pub(crate) stats: Arc<Stats>,
    /// Cancelled when the forwarder stops accepting (each listener has a child token).
    pub(crate) accepting: CancellationToken,
    /// Cancelled when every connection and session must close now.
    pub(crate) closing: CancellationToken,
    /// The connections (TCP) or sessions (UDP).
    pub(crate) tasks: TaskTracker,
    /// What the limits count: open connections or sessions, by client too.
    pub(crate) admission: Arc<crate::limit::Admission>,
}

impl Base {
    pub(crate) fn new() -> Self {
        Base {
            stats: Arc::new(Stats::default()),
            accepting: CancellationToken::new(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            admission: Arc::default(),
        }
    }
}

/// The settings-dependent state of a running forwarder, replaced as a whole by a reload:
/// connections and sessions keep the one they started with.
#[derive(Debug)]
pub(crate) struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub(crate) fn new(value: Arc<T>) -> Arc<Self> {
        Arc::new(Current(RwLock::new(value)))
    }

    pub(crate) fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, value: Arc<T>) -> Arc<T> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|e| e.into_inner()),
            value,
        )
    }
}

/// The background task keeping one generation's DNS answer fresh.
#[derive(Debug)]
pub(crate) struct Refresher {
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Refresher {
    /// Runs each of `caches`' refresh loop until the forwarder closes or
    /// [`stop`](Self::stop).
    pub(crate) fn spawn<'a>(
        caches: impl IntoIterator<Item = &'a Arc<ResolveCache>>,
        closing: &CancellationToken,
    ) -> Self {
        let stop = closing.child_token();
        let tasks = (caches.into_iter())
            .map(|cache| tokio::spawn(cache.clone().run(stop.clone())))
            .collect();
        Refresher {
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    /// A token cancelled when this generation's background work stops.
    pub(crate) fn token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Whether [`stop`](Self::stop) was called: a reload retired this generation.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            // A task that panicked has nothing left to clean up.
            let _ = task.await;
        }
    }
}

/// Reads a forwarder's live counters; see [`ForwarderHandle::stats_reader`].
#[derive(Clone, Debug)]
pub struct StatsReader(pub(crate) Arc<Stats>);

impl StatsReader {
    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.0.snapshot()
    }

    /// How each upstream address has fared, ordered by address.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.0.endpoints()
    }
}

/// One listening socket's loop.
#[derive(Debug)]
pub(crate) struct ListenerTask {
    /// The address as configured (port 0 stays 0), to match it on reload.
    pub(crate) configured: SocketAddr,
    pub(crate) bound: SocketAddr,
    pub(crate) stop: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

/// The protocol-specific side of a handle.
#[derive(Debug)]
pub(crate) enum Control {
    Tcp(Arc<Current<tcp::Shared>>),
    Udp(Arc<Current<udp::Shared>>),
}

impl Control {
    /// The current generation's refresher.
    fn refresher(&self) -> Arc<Refresher> {
        match self {
            Control::Tcp(current) => current.get().refresher(),
            Control::Udp(current) => current.get().refresher(),
        }
    }
}

/// The listeners a reload started, each as it started or failed to.
type Started = Vec<Result<ListenerTask, Error>>;

/// The reload of one protocol's side: binds `added` (first, so a failure leaves
/// everything as it was), makes `forwarder`'s settings current for new connections and
/// sessions, and starts serving the new sockets. Returns the retired generation's
/// refresher, and the new listeners in the order of `added`.
fn renew<P: Protocol>(
    base: &Base,
    current: &Arc<Current<P::Shared>>,
    forwarder: &P,
    added: &[SocketAddr],
) -> Result<(Arc<Refresher>, Started), Error> {
    let sockets = forward::bind(forwarder, added)?;
    let old = current.replace(forwarder.generation(base, Some(&current.get())));
    let started = sockets
        .into_iter()
        .map(|(configured, socket)| {
            let stop = base.accepting.child_token();
            forward::spawn_listener::<P>(current.clone(), socket, configured, stop)
        })
        .collect();
    Ok((old.refresher(), started))
}

impl ForwarderHandle {
    pub(crate) fn new(base: Base, control: Control) -> Self {
        ForwarderHandle {
            base,
            listeners: Vec::new(),
            local_addrs: Vec::new(),
            control,
        }
    }

    /// Adds a running listener (on start and reload).
    pub(crate) fn push_listener(&mut self, listener: ListenerTask) {
        self.local_addrs.push(listener.bound);
        self.listeners.push(listener);
    }

    /// The bound listen addresses, in the order they were given, with the kernel's port
    /// where port 0 was asked for.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.base.stats.snapshot()
    }

    /// How each upstream address has fared, ordered by address.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.base.stats.endpoints()
    }

    /// A cloneable reader of the live counters, for monitoring code that does not own the
    /// handle. It keeps reading through reloads and the drain of a shutdown.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.base.stats.clone())
    }

    /// Applies new settings to the running forwarder without dropping anything
    /// established on the addresses it keeps: listen addresses that are new are bound, ones no longer listed stop
    /// accepting (their open TCP connections go on; their UDP sessions, which reply from
    /// the listening socket, end, and the socket is closed by the time this returns, so
    /// the address can be bound again), ones in both keep their socket (an
    /// address matches a listener configured as it or bound to it, so both `0.0.0.0:0`
    /// and the port the kernel chose name that listener). New
    /// connections and sessions use the new target, resolver, timeouts and relay
    /// settings; established ones finish with the settings they started with. The
    /// counters carry on.
    ///
    /// Listener options (backlog, `SO_REUSEPORT`, dual stack) apply to newly bound
    /// addresses only.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Reload`](crate::ErrorKind::Reload) when `forwarder` is of the other protocol, or
    /// [`ErrorKind::Bind`](crate::ErrorKind::Bind) when a new address cannot be bound. Nothing changes then.
    pub async fn reload(&mut self, forwarder: impl Into<Forwarder>) -> Result<(), Error> {
        let forwarder = forwarder.into();
        let wanted = forwarder.listen_addrs().to_vec();
        // Each wanted address keeps the first unclaimed listener configured as it or bound
        // to it (so `127.0.0.1:0` and the port it got both name that listener).
        let mut claimed = vec![None; self.listeners.len()];
        let mut added = Vec::new();
        for (i, a) in wanted.iter().enumerate() {
            let free =
                self.listeners.iter().enumerate().position(|(j, l)| {
                    claimed[j].is_none() && (l.configured == *a || l.bound == *a)
                });
            match free {
                Some(j) => claimed[j] = Some(i),
                None => added.push(*a),
            }
        }
        let (old_refresher, started) = match (&self.control, &forwarder) {
            (Control::Tcp(current), Forwarder::Tcp(f)) => renew(&self.base, current, f, &added)?,
            (Control::Udp(current), Forwarder::Udp(f)) => renew(&self.base, current, f, &added)?,
            _ => {
                return Err(Error::new(ErrorKind::Reload, Side::Internal)
                    .with_context("a forwarder cannot change its protocol"));
            }
        };
        // Order: kept listeners at their new positions, new ones at theirs.
        let mut listeners: Vec<(usize, ListenerTask)> = Vec::new();
        for (l, position) in std::mem::take(&mut self.listeners).into_iter().zip(claimed) {
            match position {
                Some(i) => listeners.push((i, l)),
                None => {
                    l.stop.cancel();
                    let _ = l.task.await;
                }
            }
        }
        let taken: Vec<usize> = listeners.iter().map(|(i, _)| *i).collect();
        let mut positions = (0..wanted.len()).filter(|i| !taken.contains(i));
        for task in started {
            listeners.push((positions.next().unwrap_or(usize::MAX), task?));
        }
        listeners.sort_by_key(|(i, _)| *i);
        self.listeners = listeners.into_iter().map(|(_, l)| l).collect();
        self.local_addrs = self.listeners.iter().map(|l| l.bound).collect();
        old_refresher.stop().await;
        Ok(())
    }

    /// Stops accepting new connections, lets open ones finish for up to `grace`, then
    /// resets those still open. Returns once every listener and connection is closed:
    /// `true` when all connections finished within the grace period.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.base.accepting.cancel();
        // The accept loops end at once; when they have, no listener is bound and no new
        // connection can join the ones being drained.
        for l in self.listeners.drain(..) {
            // A task that panicked has nothing left to clean up.
            let _ = l.task.await;
        }
        self.local_addrs.clear();
        let tasks = &self.base.tasks;
        tasks.close();
        let drained = tokio::time::timeout(grace, tasks.wait()).await.is_ok();
        if !drained {
            tracing::info!(
                open = self.base.stats.snapshot().connections_open,
                "grace period over; closing the remaining connections"
            );
        }
        self.base.closing.cancel();
        tasks.wait().await;
        self.control.refresher().stop().await;
        drained
    }
}

impl Drop for ForwarderHandle {
    fn drop(&mut self) {
        self.base.accepting.cancel();
        self.base.closing.cancel();
    }
}
