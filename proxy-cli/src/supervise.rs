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
use std::time::Duration;

use proxy_core::{Forwarder, ForwarderHandle};
use tokio::task::JoinSet;

use crate::args::{Listen, UsageError};
use crate::config::{self, ConfigFile};
use crate::registry::{Forwards, Protocol, Registered};
use crate::start::{build_tcp, build_udp, ipv6_unavailable, resolver, source_of, start_both};

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

/// A forward built from the file, with the listen setting it came from (to retry on IPv4
/// when the host has no IPv6).
pub(crate) struct Built {
    forwarder: Forwarder,
    listen: Listen,
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
                    cause = %source_of(&e),
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

/// Builds every protocol of every forward of `config`.
pub(crate) fn build_all(config: &ConfigFile) -> anyhow::Result<BTreeMap<Key, Built>> {
    let mut all = BTreeMap::new();
    for forward in &config.forwards {
        if let Some(plan) = &forward.tcp {
            let resolver = resolver(&plan.common.target, plan.common.resolver)?;
            let forwarder = build_tcp(plan, plan.common.listen.addrs(), resolver)
                .map_err(|e| UsageError(format!("forward `{}`: {}", forward.name, e.0)))?;
            all.insert(
                (forward.name.clone(), Protocol::Tcp),
                Built {
                    forwarder: forwarder.into(),
                    listen: plan.common.listen.clone(),
                    target: plan.common.target.to_string(),
                },
            );
        }
        if let Some(plan) = &forward.udp {
            let resolver = resolver(&plan.common.target, plan.common.resolver)?;
            let forwarder = build_udp(plan, plan.common.listen.addrs(), resolver)
                .map_err(|e| UsageError(format!("forward `{}`: {}", forward.name, e.0)))?;
            all.insert(
                (forward.name.clone(), Protocol::Udp),
                Built {
                    forwarder: forwarder.into(),
                    listen: plan.common.listen.clone(),
                    target: plan.common.target.to_string(),
                },
            );
        }
    }
    Ok(all)
}

/// Starts the forwards of `wanted` that `new` picks, all or none (on an error, those
/// started are dropped, which closes them at once). The two protocols of a `tcp,udp`
/// forward start together on one port, also one the kernel chooses.
fn start_new(
    wanted: &BTreeMap<Key, Built>,
    new: impl Fn(&Key) -> bool,
) -> anyhow::Result<Vec<(Key, ForwarderHandle, String)>> {
    let mut started = Vec::new();
    for (key, built) in wanted.iter().filter(|(key, _)| new(key)) {
        let named = |e: anyhow::Error| e.context(format!("forward `{}`", key.0));
        let udp_key = (key.0.clone(), Protocol::Udp);
        let pair = (key.1 == Protocol::Tcp && new(&udp_key))
            .then(|| wanted.get(&udp_key))
            .flatten();
        match (&built.forwarder, pair.map(|udp| &udp.forwarder)) {
            (Forwarder::Tcp(tcp), Some(Forwarder::Udp(udp))) => {
                let (tcp, udp) = start_both(tcp, udp, &built.listen).map_err(named)?;
                started.push((key.clone(), tcp, built.target.clone()));
                started.push((udp_key, udp, built.target.clone()));
            }
            // Started with its TCP half.
            _ if key.1 == Protocol::Udp
                && new(&(key.0.clone(), Protocol::Tcp))
                && wanted.contains_key(&(key.0.clone(), Protocol::Tcp)) => {}
            _ => started.push((
                key.clone(),
                start(built).map_err(named)?,
                built.target.clone(),
            )),
        }
    }
    Ok(started)
}

/// Starts `built`; where it listens on every address and the host has no IPv6, on IPv4.
fn start(built: &Built) -> anyhow::Result<ForwarderHandle> {
    match built.forwarder.start() {
        Ok(handle) => Ok(handle),
        Err(e) => match built.listen.ipv4_fallback() {
            Some(v4) if ipv6_unavailable(&e) => {
                tracing::warn!(error = %e, "IPv6 is not available; listening on IPv4 only");
                Ok(with_listen(&built.forwarder, v4)?.start()?)
            }
            _ => Err(e.into()),
        },
    }
}

/// Whether `built` listens on one of `bound` (on IPv4 too when it listens on every
/// address, which falls back to IPv4 on a host without IPv6); port 0 never matches.
fn shares_an_address(built: &Built, bound: &[SocketAddr]) -> bool {
    let fallback = built.listen.ipv4_fallback().unwrap_or_default();
    built
        .forwarder
        .listen_addrs()
        .iter()
        .chain(&fallback)
        .any(|a| a.port() != 0 && bound.contains(a))
}

/// The forwarder to reload a running one with: when it listens on every address and the
/// running one fell back to IPv4, on the running one's addresses.
fn on_addresses_in_use(built: Built, running: &[SocketAddr]) -> anyhow::Result<Forwarder> {
    match built.listen.ipv4_fallback() {
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
