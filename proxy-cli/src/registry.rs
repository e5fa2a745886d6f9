//! The running forwards of this process, for the admin endpoint: their names, live
//! stats, and whether the process is ready.
//!
//! A runner starts a forwarder, hands its [`ForwarderHandle`] to [`Forwards::register`]
//! and keeps the [`Registered`] it gets back: the handle stays the runner's (through
//! [`Registered::handle`] and [`Registered::handle_mut`]), and the registry reads its live
//! stats through a [`StatsReader`]. [`Registered::shutdown`] drains it; `/metrics` lists it,
//! marked stopping, until the drain is over. Dropping a `Registered` stops the forwarder at
//! once and unlists it.
//!
//! Readiness is the process's: [`Forwards::set_ready`] once every forward the command
//! starts with is bound (a registered forwarder always is), [`Forwards::set_draining`]
//! when the shutdown starts. `/readyz` answers 200 only in between.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use proxy_cli::registry::{Forwards, Protocol, listen_name};
//! use proxy_core::TcpForwarder;
//!
//! let forwards = Forwards::new();
//! let handle = TcpForwarder::builder(["127.0.0.1:0".parse()?], "127.0.0.1:9".parse()?)
//!     .build()?
//!     .start()?;
//! let name = listen_name(Protocol::Tcp, handle.local_addrs());
//! let forward = forwards.register(name, Protocol::Tcp, "127.0.0.1:9", handle);
//! assert!(!forwards.is_ready());
//! forwards.set_ready();
//! assert!(forwards.is_ready());
//! assert_eq!(forwards.metrics()[0].stats.connections_total, 0);
//!
//! forwards.set_draining();
//! assert!(!forwards.is_ready());
//! forward.shutdown(Duration::ZERO).await;
//! assert!(forwards.metrics().is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use proxy_core::{ForwarderHandle, StatsReader};

use crate::metrics::{Endpoint, ForwardMetrics};
pub use crate::protocol::Protocol;

/// A name for a forward from its protocol and bound addresses: `tcp:8080`, or
/// `udp:53,5353` when the addresses have different ports.
pub fn listen_name(protocol: Protocol, addrs: &[SocketAddr]) -> String {
    ports_name(protocol.as_str(), addrs)
}

/// `PREFIX:PORT,...`: the distinct ports of `addrs` after `prefix`.
pub(crate) fn ports_name(prefix: &str, addrs: &[SocketAddr]) -> String {
    let mut ports: Vec<u16> = Vec::new();
    for addr in addrs {
        if !ports.contains(&addr.port()) {
            ports.push(addr.port());
        }
    }
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{prefix}:{}", ports.join(","))
}

/// The registry of running forwards; cheap to clone, every clone the same registry.
#[derive(Clone, Debug, Default)]
pub struct Forwards {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    entries: Vec<Entry>,
    ready: bool,
    draining: bool,
    port_forward: Option<proxy_portforward::server::Server>,
    http: Vec<(String, proxy_http::HttpHandle)>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    name: String,
    protocol: Protocol,
    target: String,
    stats: StatsReader,
    /// Draining after [`Registered::shutdown`].
    stopping: bool,
}

impl Forwards {
    /// An empty registry, not ready.
    pub fn new() -> Forwards {
        Forwards::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; were it poisoned, the data is still whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a started forwarder as `name` (see [`listen_name`]), forwarding `protocol` to
    /// `target`. When a running forward already has that name, this one gets `name#2`
    /// (`#3`, ...). The forwarder stays the caller's through the returned [`Registered`].
    pub fn register(
        &self,
        name: impl Into<String>,
        protocol: Protocol,
        target: impl fmt::Display,
        handle: ForwarderHandle,
    ) -> Registered {
        let name = name.into();
        let mut inner = self.lock();
        let taken = |n: &str| inner.entries.iter().any(|e| e.name == n && !e.stopping);
        let mut unique = name.clone();
        let mut n = 1;
        while taken(&unique) {
            n += 1;
            unique = format!("{name}#{n}");
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push(Entry {
            id,
            name: unique.clone(),
            protocol,
            target: target.to_string(),
            stats: handle.stats_reader(),
            stopping: false,
        });
        drop(inner);
        Registered {
            id,
            name: unique,
            protocol,
            handle: Some(handle),
            forwards: self.clone(),
        }
    }

    /// Every forward the command starts with is bound: `/readyz` answers 200 (until
    /// [`set_draining`](Forwards::set_draining)).
    pub fn set_ready(&self) {
        self.lock().ready = true;
    }

    /// The shutdown has started: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.lock().draining = true;
    }

    /// Lists the port-forward server whose stats `/metrics` shows.
    pub fn set_port_forward(&self, server: proxy_portforward::server::Server) {
        self.lock().port_forward = Some(server);
    }

    /// Lists a running HTTP forward under `name`, for `/metrics`.
    pub fn add_http(&self, name: String, handle: proxy_http::HttpHandle) {
        self.lock().http.push((name, handle));
    }

    /// Unlists the HTTP forward `name`.
    pub fn remove_http(&self, name: &str) {
        self.lock().http.retain(|(n, _)| n != name);
    }

    /// The HTTP forwards' metrics, by name.
    pub fn http_metrics(&self) -> Vec<crate::metrics::HttpMetrics> {
        let handles = self.lock().http.clone();
        (handles.into_iter())
            .map(|(name, h)| crate::metrics::HttpMetrics {
                name,
                routes: h.routes(),
                tls_handshakes_failed: h.tls_handshakes_failed(),
            })
            .collect()
    }

    /// The port-forward server's stats, if one is listed.
    pub fn port_forward_stats(&self) -> Option<proxy_portforward::forward::StatsSnapshot> {
        self.lock().port_forward.as_ref().map(|s| s.stats())
    }

    /// Whether the process is ready: started, and not shutting down.
    pub fn is_ready(&self) -> bool {
        let inner = self.lock();
        inner.ready && !inner.draining
    }

    /// Whether the shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// The live stats of every listed forward, in the order they were registered. A
    /// forward draining is marked stopping, and no longer shown once a running forward
    /// has taken its name (a replacement).
    pub fn metrics(&self) -> Vec<ForwardMetrics> {
        let inner = self.lock();
        let replaced = |e: &Entry| {
            e.stopping
                && inner
                    .entries
                    .iter()
                    .any(|other| other.name == e.name && !other.stopping)
        };
        inner
            .entries
            .iter()
            .filter(|e| !replaced(e))
            .map(|e| ForwardMetrics {
                name: e.name.clone(),
                protocol: e.protocol,
                target: e.target.clone(),
                stats: e.stats.stats(),
                endpoints: e.stats.endpoints().iter().map(Endpoint::from).collect(),
                stopping: e.stopping,
            })
            .collect()
    }

    fn set_stopping(&self, id: u64) {
        if let Some(entry) = self.lock().entries.iter_mut().find(|e| e.id == id) {
            entry.stopping = true;
        }
    }

    fn remove(&self, id: u64) {
        // Dropped after the lock is released: a handle's drop must not run under it.
        let removed = {
            let mut inner = self.lock();
            let at = inner.entries.iter().position(|e| e.id == id);
            at.map(|at| inner.entries.remove(at))
        };
        drop(removed);
    }
}

/// A forwarder listed in [`Forwards`]; owns the forwarder. Dropping it stops the
/// forwarder at once (as dropping a [`ForwarderHandle`] does) and unlists it.
#[derive(Debug)]
pub struct Registered {
    id: u64,
    name: String,
    protocol: Protocol,
    /// `None` only inside [`Registered::shutdown`].
    handle: Option<ForwarderHandle>,
    forwards: Forwards,
}

impl Registered {
    /// The forwarder.
    pub fn handle(&self) -> &ForwarderHandle {
        self.handle
            .as_ref()
            .expect("the handle is there until shutdown")
    }

    /// The forwarder, mutably, for [`ForwarderHandle::reload`].
    pub fn handle_mut(&mut self) -> &mut ForwarderHandle {
        self.handle
            .as_mut()
            .expect("the handle is there until shutdown")
    }

    /// Changes the `target` label, after a reload to another target.
    pub fn set_target(&self, target: impl fmt::Display) {
        let mut inner = self.forwards.lock();
        if let Some(entry) = inner.entries.iter_mut().find(|e| e.id == self.id) {
            entry.target = target.to_string();
        }
    }

    /// Lists it under `name` from now on: a reload renamed the forward and this one
    /// carries on under the new name. Like [`Forwards::register`], it becomes `name#2`
    /// when a running forward already has that name.
    pub fn rename(&mut self, name: impl Into<String>) {
        let name = name.into();
        let mut inner = self.forwards.lock();
        let id = self.id;
        let taken = |n: &str| {
            inner
                .entries
                .iter()
                .any(|e| e.name == n && !e.stopping && e.id != id)
        };
        let mut unique = name.clone();
        let mut n = 1;
        while taken(&unique) {
            n += 1;
            unique = format!("{name}#{n}");
        }
        if let Some(entry) = inner.entries.iter_mut().find(|e| e.id == id) {
            entry.name = unique.clone();
        }
        drop(inner);
        self.name = unique;
    }

    /// The name it is listed under (the `forward` label of its metrics).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// [`ForwarderHandle::shutdown`]: stops accepting, lets open connections and sessions
    /// finish for up to `grace`, closes the rest. The registry lists the forward, marked
    /// stopping and with live stats, until it returns, then unlists it.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.forwards.set_stopping(self.id);
        let handle = self.handle.take().expect("shutdown runs once");
        handle.shutdown(grace).await
        // `self` drops here and unlists the forward.
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.forwards.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> ForwarderHandle {
        proxy_core::TcpForwarder::builder(
            ["127.0.0.1:0".parse().unwrap()],
            "127.0.0.1:9".parse().unwrap(),
        )
        .build()
        .unwrap()
        .start()
        .unwrap()
    }

    #[test]
    fn names() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        let c: SocketAddr = "[::1]:9090".parse().unwrap();
        assert_eq!(listen_name(Protocol::Tcp, &[a]), "tcp:8080");
        assert_eq!(listen_name(Protocol::Udp, &[a, b]), "udp:8080");
        assert_eq!(listen_name(Protocol::Tcp, &[a, b, c]), "tcp:8080,9090");
    }

    #[tokio::test]
    async fn register_lists_until_dropped_or_shut_down() {
        let forwards = Forwards::new();
        let a = forwards.register("tcp:1", Protocol::Tcp, "web:80", start());
        let b = forwards.register("tcp:1", Protocol::Tcp, "web:80", start());
        let c = forwards.register("udp:1", Protocol::Udp, "dns:53", start());
        assert_eq!(b.name(), "tcp:1#2");
        let names =
            |f: &Forwards| -> Vec<String> { f.metrics().into_iter().map(|m| m.name).collect() };
        assert_eq!(names(&forwards), ["tcp:1", "tcp:1#2", "udp:1"]);
        let m = &forwards.metrics()[2];
        assert_eq!(
            (m.protocol, m.target.as_str(), m.stopping),
            (Protocol::Udp, "dns:53", false)
        );
        drop(b);
        assert_eq!(names(&forwards), ["tcp:1", "udp:1"]);
        assert!(a.shutdown(Duration::ZERO).await);
        assert_eq!(names(&forwards), ["udp:1"]);
        drop(c);
        assert!(forwards.metrics().is_empty());
    }

    #[tokio::test]
    async fn stopping_forward_is_listed_until_replaced() {
        let forwards = Forwards::new();
        let old = forwards.register("tcp:1", Protocol::Tcp, "web:80", start());
        forwards.set_stopping(old.id);
        let m = forwards.metrics();
        assert_eq!(m.len(), 1);
        assert!(m[0].stopping);
        // A replacement takes the name; the old one is no longer shown.
        let new = forwards.register("tcp:1", Protocol::Tcp, "web:8080", start());
        assert_eq!(new.name(), "tcp:1");
        let m = forwards.metrics();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].target.as_str(), m[0].stopping), ("web:8080", false));
        drop(old);
        assert_eq!(forwards.metrics().len(), 1);
    }

    #[tokio::test]
    async fn stats_are_live_through_a_reload() {
        let forwards = Forwards::new();
        let mut forward = forwards.register("tcp:1", Protocol::Tcp, "web:80", start());
        let addr = forward.handle().local_addrs()[0];
        let reloaded = proxy_core::TcpForwarder::builder([addr], "127.0.0.1:10".parse().unwrap())
            .build()
            .unwrap();
        forward.handle_mut().reload(reloaded).await.unwrap();
        forward.set_target("127.0.0.1:10");
        // A connection after the reload shows in the registry's stats at once.
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while forwards.metrics()[0].stats.connections_total == 0 {
            assert!(std::time::Instant::now() < deadline, "stats are not live");
            tokio::task::yield_now().await;
        }
        assert_eq!(forwards.metrics()[0].target, "127.0.0.1:10");
        forward.shutdown(Duration::ZERO).await;
        assert!(forwards.metrics().is_empty());
    }

    #[test]
    fn readiness() {
        let forwards = Forwards::new();
        assert!(!forwards.is_ready() && !forwards.is_draining());
        forwards.set_ready();
        assert!(forwards.is_ready());
        forwards.clone().set_draining();
        assert!(!forwards.is_ready() && forwards.is_draining());
    }
}
