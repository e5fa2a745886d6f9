//! `proxy run --config FILE`: the forwards of a configuration file, kept running and
//! changed in place when the file changes (SIGHUP).
//!
//! A reload reads and checks the whole file first; a file with an error is rejected with
//! a logged error and the running forwards stay as they are. Otherwise forwards are
//! matched by name and protocol: new ones start (all of them, or none if one cannot bind),
//! removed ones drain in the background for the drain time, and the others take their new
//! settings through [`ForwarderHandle::reload`](proxy_core::ForwarderHandle::reload):
//! established connections and sessions are never dropped (but UDP sessions on a listen
//! address the reload removes end, since they reply from its socket). A forward renamed
//! on an address a removed one of the same protocol is bound to is the same forward under
//! a new name: the running one is renamed and reloaded in place, since a new one could
//! not bind the address the old one holds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proxy_core::resolve::Resolve;
use proxy_core::spec::StartError;
use proxy_core::{ForwardSpec, Forwarder, ForwarderHandle, Transport};
use tokio::task::JoinSet;

use crate::args::UsageError;
use crate::config::{self, ConfigFile};
use crate::registry::{Forwards, Protocol, Registered};

/// One protocol of one `[[forward]]`: its name and protocol, and where it listens.
pub(crate) type Key = (String, Protocol);

/// The running forwards of a configuration file.
#[derive(Debug)]
pub struct Supervisor {
    path: PathBuf,
    forwards: Forwards,
    running: BTreeMap<Key, Registered>,
    drain: Duration,
    /// Forwards removed by a reload, draining.
    removed: JoinSet<bool>,
}

/// One protocol of a forward of the file, built: its settings (for that protocol alone),
/// its resolver, and the forwarder to reload a running one with.
pub(crate) struct Built {
    spec: ForwardSpec,
    resolver: Arc<dyn Resolve>,
    forwarder: Forwarder,
    target: String,
}

impl Supervisor {
    /// Starts every forward of `config` (read from `path`), registering them in
    /// `forwards`.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] for settings the library rejects, or the first bind error; nothing
    /// stays running then.
    pub fn start(path: &Path, config: &ConfigFile, forwards: &Forwards) -> anyhow::Result<Self> {
        let mut supervisor = Supervisor {
            path: path.to_owned(),
            forwards: forwards.clone(),
            running: BTreeMap::new(),
            drain: config.drain,
            removed: JoinSet::new(),
        };
        for (key, handle, target) in start_new(&build_all(config)?, |_| true)? {
            let registered = forwards.register(key.0.clone(), key.1, target, handle);
            supervisor.running.insert(key, registered);
        }
        Ok(supervisor)
    }

    /// How long connections may finish on shutdown.
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Re-reads the file and applies it.
    ///
    /// # Errors
    ///
    /// Why the file was rejected (then nothing changed), or which forwards could not take
    /// their new settings (those kept their old ones; the rest of the file applied).
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        let config = config::load(&self.path)?;
        let mut wanted = build_all(&config)?;
        let renamed = self.renamed(&wanted);

        // Start what is new, all or none.
        let started = start_new(&wanted, |key| {
            !self.running.contains_key(key) && !renamed.iter().any(|(_, new)| new == key)
        })?;

        // Rename what took a new name; it takes its new settings below.
        for (old, new) in renamed {
            if let Some(mut forward) = self.running.remove(&old) {
                tracing::info!(
                    forward = %new.0,
                    protocol = %new.1,
                    was = %old.0,
                    "renamed; its listener and connections carry on"
                );
                forward.rename(new.0.clone());
                self.running.insert(new, forward);
            }
        }

        // Drain what is gone.
        let gone: Vec<Key> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(forward) = self.running.remove(&key) {
                tracing::info!(forward = %key.0, protocol = %key.1, "removed; draining");
                self.removed.spawn(forward.shutdown(self.drain));
            }
        }

        // Change what stays.
        let mut failed = Vec::new();
        for (key, forward) in &mut self.running {
            let Some(built) = wanted.remove(key) else {
                continue;
            };
            let target = built.target.clone();
            let forwarder = on_addresses_in_use(built, forward.handle().local_addrs())?;
            if let Err(e) = forward.handle_mut().reload(forwarder).await {
                tracing::error!(
                    forward = %key.0,
                    protocol = %key.1,
                    error = %e,
                    cause = %cause(&e),
                    "cannot apply the new settings; keeping the old ones"
                );
                failed.push(key.0.clone());
            } else {
                forward.set_target(target);
            }
        }
        for (key, handle, target) in started {
            tracing::info!(forward = %key.0, protocol = %key.1, "added");
            let registered = self.forwards.register(key.0.clone(), key.1, target, handle);
            self.running.insert(key, registered);
        }
        self.drain = config.drain;
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("forwards kept their old settings: {}", failed.join(", "))
        }
    }

    /// The forwards `wanted` renames: pairs of a running forward that `wanted` no longer
    /// has and a new forward of the same protocol that listens on an address the running
    /// one is bound to (a port of its own, not 0). Each running forward is renamed at most
    /// once.
    fn renamed(&self, wanted: &BTreeMap<Key, Built>) -> Vec<(Key, Key)> {
        let mut pairs: Vec<(Key, Key)> = Vec::new();
        for (new, built) in wanted {
            if self.running.contains_key(new) {
                continue;
            }
            let old = self.running.iter().find(|(old, forward)| {
                old.1 == new.1
                    && !wanted.contains_key(*old)
                    && !pairs.iter().any(|(taken, _)| taken == *old)
                    && shares_an_address(built, forward.handle().local_addrs())
            });
            if let Some((old, _)) = old {
                pairs.push((old.clone(), new.clone()));
            }
        }
        pairs
    }

    /// Drains every forward (running and removed) for up to the drain time; `true` when
    /// all finished in time.
    pub async fn shutdown(mut self) -> bool {
        let mut all = JoinSet::new();
        for (_, forward) in std::mem::take(&mut self.running) {
            all.spawn(forward.shutdown(self.drain));
        }
        let mut drained = true;
        for set in [&mut all, &mut self.removed] {
            while let Some(done) = set.join_next().await {
                drained &= done.unwrap_or(false);
            }
        }
        drained
    }
}

/// Builds every protocol of every forward of `config`, with one resolver per forward
/// ([`ForwardSpec::make_resolver`]).
///
/// # Errors
///
/// A [`UsageError`] for settings the library rejects; an error when a resolver cannot be
/// set up (hickory cannot read the system DNS configuration).
pub(crate) fn build_all(config: &ConfigFile) -> anyhow::Result<BTreeMap<Key, Built>> {
    let mut all = BTreeMap::new();
    for forward in &config.forwards {
        let named = || format!("forward `{}`", forward.name);
        let resolver = forward.spec.make_resolver().with_context(|| {
            format!(
                "{}: resolver: cannot read the system DNS configuration",
                named()
            )
        })?;
        let target = forward
            .spec
            .target
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let serves = [
            (Protocol::Tcp, Transport::Tcp, forward.spec.protocol.tcp()),
            (Protocol::Udp, Transport::Udp, forward.spec.protocol.udp()),
        ];
        for (protocol, transport, _) in serves.into_iter().filter(|(_, _, on)| *on) {
            let mut spec = forward.spec.clone();
            spec.protocol = transport;
            let forwarder: Forwarder = match protocol {
                Protocol::Tcp => spec.tcp_forwarder(resolver.clone()).map(Into::into),
                Protocol::Udp => spec.udp_forwarder(resolver.clone()).map(Into::into),
            }
            .map_err(|e| UsageError(format!("{}: invalid settings: {e}", named())))?;
            all.insert(
                (forward.name.clone(), protocol),
                Built {
                    spec,
                    resolver: resolver.clone(),
                    forwarder,
                    target: target.clone(),
                },
            );
        }
    }
    Ok(all)
}

/// What caused `e`, or nothing.
fn cause(e: &dyn std::error::Error) -> String {
    e.source().map(ToString::to_string).unwrap_or_default()
}

/// The other protocol of a forward.
fn other(protocol: Protocol) -> Protocol {
    match protocol {
        Protocol::Tcp => Protocol::Udp,
        Protocol::Udp => Protocol::Tcp,
    }
}

/// Starts the forwards of `wanted` that `new` picks, all or none (on an error, those
/// started are dropped, which closes them at once), with [`ForwardSpec::start_with`]: the
/// two protocols of a `tcp,udp` forward start together on one port, also one the kernel
/// chooses, and a forward listening on every address of a host without IPv6 listens on
/// IPv4.
fn start_new(
    wanted: &BTreeMap<Key, Built>,
    new: impl Fn(&Key) -> bool,
) -> anyhow::Result<Vec<(Key, ForwarderHandle, String)>> {
    let mut started = Vec::new();
    for (key, built) in wanted.iter().filter(|(key, _)| new(key)) {
        let pair = (key.0.clone(), other(key.1));
        let together = new(&pair) && wanted.contains_key(&pair);
        if together && key.1 == Protocol::Udp {
            // Started with its TCP half.
            continue;
        }
        let mut spec = built.spec.clone();
        if together {
            spec.protocol = Transport::Both;
        }
        let running = spec
            .start_with(built.resolver.clone())
            .map_err(start_error)
            .with_context(|| format!("forward `{}`", key.0))?;
        for (protocol, handle) in [(Protocol::Tcp, running.tcp), (Protocol::Udp, running.udp)] {
            if let Some(handle) = handle {
                started.push(((key.0.clone(), protocol), handle, built.target.clone()));
            }
        }
    }
    Ok(started)
}

/// A start error as the command reports it: bad settings are a [`UsageError`], and a
/// transport that could not start names itself (`TCP: failed to bind ...`).
fn start_error(e: StartError) -> anyhow::Error {
    match e {
        StartError::Start { transport, error } => {
            anyhow::Error::from(error).context(transport.as_str().to_uppercase())
        }
        StartError::Invalid(e) => UsageError(format!("invalid settings: {e}")).into(),
        other => other.into(),
    }
}

/// Whether `built` listens on one of `bound` (on IPv4 too when it listens on every
/// address, which falls back to IPv4 on a host without IPv6); port 0 never matches.
fn shares_an_address(built: &Built, bound: &[SocketAddr]) -> bool {
    let fallback = built.spec.listen.ipv4_fallback().unwrap_or_default();
    built
        .spec
        .listen
        .addrs()
        .iter()
        .chain(&fallback)
        .any(|a| a.port() != 0 && bound.contains(a))
}

/// The forwarder to reload a running one with: when it listens on every address and the
/// running one fell back to IPv4, on the running one's addresses.
fn on_addresses_in_use(built: Built, running: &[SocketAddr]) -> anyhow::Result<Forwarder> {
    match built.spec.listen.ipv4_fallback() {
        Some(v4)
            if running
                .iter()
                .all(|a| a.is_ipv4() && a.ip().is_unspecified()) =>
        {
            with_listen(&built.forwarder, v4)
        }
        _ => Ok(built.forwarder),
    }
}

/// `forwarder` with other listen addresses.
fn with_listen(forwarder: &Forwarder, listen: Vec<SocketAddr>) -> anyhow::Result<Forwarder> {
    Ok(match forwarder {
        Forwarder::Tcp(f) => f.with_listen(listen)?.into(),
        Forwarder::Udp(f) => f.with_listen(listen)?.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpStream, UdpSocket};

    use super::*;

    /// A `tcp,udp` forward on `127.0.0.1:0`, from a file: both protocols are bound, on
    /// one port the kernel chose.
    #[tokio::test]
    async fn tcp_udp_on_port_0_listen_on_one_port() {
        let text = "[[forward]]\nname = \"dns\"\nprotocol = \"tcp,udp\"\n\
                    listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n";
        let config = config::parse(text, "proxy.toml").unwrap();
        let forwards = Forwards::new();
        let supervisor = Supervisor::start(Path::new("proxy.toml"), &config, &forwards).unwrap();
        let addrs = |protocol| {
            let key = ("dns".to_owned(), protocol);
            supervisor.running[&key].handle().local_addrs().to_vec()
        };
        let (tcp, udp) = (addrs(Protocol::Tcp), addrs(Protocol::Udp));
        assert_eq!(tcp, udp);
        assert_eq!(tcp.len(), 1);
        assert_ne!(tcp[0].port(), 0);
        assert!(TcpStream::connect(tcp[0]).is_ok(), "TCP {}", tcp[0]);
        assert!(
            UdpSocket::bind(udp[0]).is_err(),
            "UDP {} is not bound",
            udp[0]
        );
        assert_eq!(forwards.metrics().len(), 2);
        assert!(supervisor.shutdown().await);
    }
}
