//! [`Supervisor`]: a set of named [`ForwardSpec`]s kept running, and changed in place
//! when a new set is applied (a configuration file reloaded).
//!
//! A new set is built whole first ([`build`]): a set with an invalid spec changes
//! nothing. Applying it matches forwards by name and transport: new ones start (all of
//! them, or none if one cannot bind), removed ones drain in the background, and the others
//! take their new settings through [`ForwarderHandle::reload`]: established connections
//! and sessions are never dropped (but UDP sessions on a listen address the reload removes
//! end, since they reply from its socket). A forward renamed on an address a removed one of
//! the same transport is bound to is the same forward under a new name: the running one is
//! renamed and reloaded in place, since a new one could not bind the address the old one
//! holds.
//!
//! What the supervisor keeps per running forward is the caller's ([`Hold`]): a bare
//! [`ForwarderHandle`], or an entry of the caller's registry that owns it.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use proxy_core::ForwardSpec;
//! use proxy_core::supervise::{Supervisor, build};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut dns = ForwardSpec::default();
//! dns.set("protocol", "tcp,udp")?;
//! dns.set("listen", "127.0.0.1:0")?;
//! dns.set("target", "127.0.0.1:53")?;
//! let mut running = Supervisor::new();
//! running
//!     .apply(build([("dns".to_owned(), dns.clone())])?, Duration::from_secs(5), |_, _, h| h)
//!     .await?;
//! assert_eq!(running.len(), 2);
//!
//! // Later: new settings, in place.
//! dns.set("udp_idle_timeout", "1s")?;
//! running
//!     .apply(build([("dns".to_owned(), dns)])?, Duration::from_secs(5), |_, _, h| h)
//!     .await?;
//! assert!(running.shutdown(Duration::from_secs(5)).await);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::resolve::Resolve;
use crate::spec::{ForwardSpec, StartError, Transport};
use crate::{BuildError, Forwarder, ForwarderHandle};

/// One transport ([`Transport::Tcp`] or [`Transport::Udp`]) of one named spec: what a
/// supervisor starts, reloads and drains.
pub type Slot = (String, Transport);

/// What a [`Supervisor`] keeps for a running forward: its handle, or something that owns
/// it (an entry of the caller's registry).
pub trait Hold: Send + 'static {
    /// The forward's handle.
    fn handle(&self) -> &ForwarderHandle;

    /// The forward's handle, to reload it.
    fn handle_mut(&mut self) -> &mut ForwarderHandle;

    /// A reload gave the forward a new name; its listener and connections carry on.
    fn rename(&mut self, _name: &str) {}

    /// The forward took new settings, `spec` (for its one transport).
    fn reloaded(&mut self, _spec: &ForwardSpec) {}

    /// Stops accepting and lets open connections and sessions finish for up to `drain`;
    /// `true` when all finished in time.
    fn shutdown(self, drain: Duration) -> impl Future<Output = bool> + Send;
}

impl Hold for ForwarderHandle {
    fn handle(&self) -> &ForwarderHandle {
        self
    }

    fn handle_mut(&mut self) -> &mut ForwarderHandle {
        self
    }

    fn shutdown(self, drain: Duration) -> impl Future<Output = bool> + Send {
        ForwarderHandle::shutdown(self, drain)
    }
}

/// Why a set of specs was not applied, or not all of it.
#[derive(Debug)]
pub enum ApplyError {
    /// A spec is invalid; nothing changed.
    Invalid {
        /// The forward's name.
        name: String,
        /// Its first invalid setting.
        error: BuildError,
    },
    /// A spec's resolver cannot be set up (hickory cannot read the system DNS
    /// configuration); nothing changed.
    Resolver {
        /// The forward's name.
        name: String,
        /// Why.
        error: io::Error,
    },
    /// A new forward could not start; nothing changed.
    Start {
        /// The forward's name.
        name: String,
        /// Why.
        error: StartError,
    },
    /// These forwards could not take their new settings and kept their old ones; the rest
    /// of the set applied.
    Kept(Vec<String>),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Invalid { name, error } => {
                write!(f, "forward `{name}`: invalid settings: {error}")
            }
            ApplyError::Resolver { name, .. } => write!(
                f,
                "forward `{name}`: resolver: cannot read the system DNS configuration"
            ),
            ApplyError::Start { name, .. } => write!(f, "forward `{name}`"),
            ApplyError::Kept(names) => {
                write!(f, "forwards kept their old settings: {}", names.join(", "))
            }
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Invalid { error, .. } => Some(error),
            ApplyError::Resolver { error, .. } => Some(error),
            ApplyError::Start { error, .. } => Some(error),
            ApplyError::Kept(_) => None,
        }
    }
}

/// One transport of a spec, built.
struct Part {
    /// The spec, for this transport alone.
    spec: ForwardSpec,
    resolver: Arc<dyn Resolve>,
    /// The forwarder to reload a running one with.
    forwarder: Forwarder,
}

/// A set of named specs, checked and built (nothing bound, nothing resolved): what
/// [`Supervisor::apply`] runs.
pub struct Built {
    parts: BTreeMap<Slot, Part>,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.parts.keys()).finish()
    }
}

impl Built {
    /// The transports of the named specs.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.parts.keys()
    }
}

/// Builds every transport of every spec of `specs` (name and spec; names are unique),
/// with one resolver per spec ([`ForwardSpec::make_resolver`]).
///
/// # Errors
///
/// [`ApplyError::Invalid`] or [`ApplyError::Resolver`] for the first spec that cannot be
/// built.
pub fn build(specs: impl IntoIterator<Item = (String, ForwardSpec)>) -> Result<Built, ApplyError> {
    let mut parts = BTreeMap::new();
    for (name, spec) in specs {
        let resolver = spec.make_resolver().map_err(|error| ApplyError::Resolver {
            name: name.clone(),
            error,
        })?;
        let serves = [
            (Transport::Tcp, spec.protocol.tcp()),
            (Transport::Udp, spec.protocol.udp()),
        ];
        for (transport, _) in serves.into_iter().filter(|(_, on)| *on) {
            let mut one = spec.clone();
            one.protocol = transport;
            let forwarder: Forwarder = match transport {
                Transport::Udp => one.udp_forwarder(resolver.clone()).map(Into::into),
                _ => one.tcp_forwarder(resolver.clone()).map(Into::into),
            }
            .map_err(|error| ApplyError::Invalid {
                name: name.clone(),
                error,
            })?;
            let part = Part {
                spec: one,
                resolver: resolver.clone(),
                forwarder,
            };
            parts.insert((name.clone(), transport), part);
        }
    }
    Ok(Built { parts })
}

/// Named specs kept running; see the [module docs](self).
#[derive(Debug)]
pub struct Supervisor<H> {
    running: BTreeMap<Slot, H>,
    /// Forwards removed by an apply, draining.
    removed: JoinSet<bool>,
    /// Whether a set was applied before (the first one's forwards are not "added").
    applied: bool,
}

impl<H: Hold> Default for Supervisor<H> {
    fn default() -> Self {
        Supervisor {
            running: BTreeMap::new(),
            removed: JoinSet::new(),
            applied: false,
        }
    }
}

impl<H: Hold> Supervisor<H> {
    /// A supervisor running nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts every forward of `built`, all or none (`hold` keeps each handle); see
    /// [`apply`](Supervisor::apply) for what later sets do. Must be called on a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Start`] when a forward could not start; nothing runs then.
    pub fn start(
        built: Built,
        mut hold: impl FnMut(&Slot, &ForwardSpec, ForwarderHandle) -> H,
    ) -> Result<Self, ApplyError> {
        let mut supervisor = Self::new();
        for (slot, handle) in start_new(&built.parts, |_| true)? {
            let held = hold(&slot, &built.parts[&slot].spec, handle);
            supervisor.running.insert(slot, held);
        }
        supervisor.applied = true;
        Ok(supervisor)
    }

    /// How many forwards run (a `tcp,udp` spec counts twice).
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether nothing runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The running forward of `slot`.
    pub fn get(&self, slot: &Slot) -> Option<&H> {
        self.running.get(slot)
    }

    /// Makes `built` what runs: starts what is new (all or none; `hold` keeps each new
    /// handle), renames what took a new name on its address, drains what is gone for up to
    /// `drain` in the background, and reloads the rest with their new settings. Must be
    /// called on a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Start`] when a new forward could not start (nothing changed then), or
    /// [`ApplyError::Kept`] naming the forwards that kept their old settings (the rest
    /// applied).
    pub async fn apply(
        &mut self,
        built: Built,
        drain: Duration,
        mut hold: impl FnMut(&Slot, &ForwardSpec, ForwarderHandle) -> H,
    ) -> Result<(), ApplyError> {
        let mut wanted = built.parts;
        let renamed = self.renamed(&wanted);

        // Start what is new, all or none.
        let started = start_new(&wanted, |slot| {
            !self.running.contains_key(slot) && !renamed.iter().any(|(_, new)| new == slot)
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
                forward.rename(&new.0);
                self.running.insert(new, forward);
            }
        }

        // Drain what is gone.
        let gone: Vec<Slot> = (self.running.keys())
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for slot in gone {
            if let Some(forward) = self.running.remove(&slot) {
                tracing::info!(forward = %slot.0, protocol = %slot.1, "removed; draining");
                self.removed.spawn(forward.shutdown(drain));
            }
        }

        // Change what stays.
        let mut kept = Vec::new();
        for (slot, forward) in &mut self.running {
            let Some(part) = wanted.remove(slot) else {
                continue;
            };
            let forwarder =
                on_addresses_in_use(&part, forward.handle().local_addrs()).map_err(|error| {
                    ApplyError::Invalid {
                        name: slot.0.clone(),
                        error,
                    }
                })?;
            match forward.handle_mut().reload(forwarder).await {
                Ok(()) => forward.reloaded(&part.spec),
                Err(e) => {
                    tracing::error!(
                        forward = %slot.0,
                        protocol = %slot.1,
                        error = %e,
                        cause = %std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default(),
                        "cannot apply the new settings; keeping the old ones"
                    );
                    kept.push(slot.0.clone());
                }
            }
        }
        for (slot, handle) in started {
            if self.applied {
                tracing::info!(forward = %slot.0, protocol = %slot.1, "added");
            }
            let spec = &wanted[&slot].spec;
            let held = hold(&slot, spec, handle);
            self.running.insert(slot, held);
        }
        self.applied = true;
        if kept.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Kept(kept))
        }
    }

    /// The renames `wanted` makes: pairs of a running forward that `wanted` no longer has
    /// and a new one of the same transport that listens on an address the running one is
    /// bound to (a port of its own, not 0). Each running forward is renamed at most once.
    fn renamed(&self, wanted: &BTreeMap<Slot, Part>) -> Vec<(Slot, Slot)> {
        let mut pairs: Vec<(Slot, Slot)> = Vec::new();
        for (new, part) in wanted {
            if self.running.contains_key(new) {
                continue;
            }
            let old = self.running.iter().find(|(old, forward)| {
                old.1 == new.1
                    && !wanted.contains_key(*old)
                    && !pairs.iter().any(|(taken, _)| taken == *old)
                    && shares_an_address(part, forward.handle().local_addrs())
            });
            if let Some((old, _)) = old {
                pairs.push((old.clone(), new.clone()));
            }
        }
        pairs
    }

    /// Drains every forward (running and removed) for up to `drain`; `true` when all
    /// finished in time.
    pub async fn shutdown(mut self, drain: Duration) -> bool {
        let mut all = JoinSet::new();
        for (_, forward) in std::mem::take(&mut self.running) {
            all.spawn(forward.shutdown(drain));
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

/// Starts the parts of `wanted` that `new` picks, all or none (on an error, those started
/// are dropped, which closes them at once), with [`ForwardSpec::start_with`]: both
/// transports of a spec start together on one port, also one the kernel chooses.
fn start_new(
    wanted: &BTreeMap<Slot, Part>,
    new: impl Fn(&Slot) -> bool,
) -> Result<Vec<(Slot, ForwarderHandle)>, ApplyError> {
    let mut started = Vec::new();
    for (slot, part) in wanted.iter().filter(|(slot, _)| new(slot)) {
        let other = match slot.1 {
            Transport::Udp => Transport::Tcp,
            _ => Transport::Udp,
        };
        let pair = (slot.0.clone(), other);
        let together = new(&pair) && wanted.contains_key(&pair);
        if together && slot.1 == Transport::Udp {
            // Started with its TCP half.
            continue;
        }
        let mut spec = part.spec.clone();
        if together {
            spec.protocol = Transport::Both;
        }
        let running =
            spec.start_with(part.resolver.clone())
                .map_err(|error| ApplyError::Start {
                    name: slot.0.clone(),
                    error,
                })?;
        let handles = [(Transport::Tcp, running.tcp), (Transport::Udp, running.udp)];
        for (transport, handle) in handles {
            if let Some(handle) = handle {
                started.push(((slot.0.clone(), transport), handle));
            }
        }
    }
    Ok(started)
}

/// Whether `part` listens on one of `bound` (on IPv4 too when it listens on every
/// address, which falls back to IPv4 on a host without IPv6); port 0 never matches.
fn shares_an_address(part: &Part, bound: &[SocketAddr]) -> bool {
    let fallback = part.spec.listen.ipv4_fallback().unwrap_or_default();
    (part.spec.listen.addrs().iter())
        .chain(&fallback)
        .any(|a| a.port() != 0 && bound.contains(a))
}

/// The forwarder to reload a running one with: when it listens on every address and the
/// running one fell back to IPv4, on the running one's addresses.
fn on_addresses_in_use(part: &Part, running: &[SocketAddr]) -> Result<Forwarder, BuildError> {
    match part.spec.listen.reload_fallback(running) {
        Some(v4) => Ok(match &part.forwarder {
            Forwarder::Tcp(f) => f.with_listen(v4)?.into(),
            Forwarder::Udp(f) => f.with_listen(v4)?.into(),
        }),
        None => Ok(part.forwarder.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: &str, listen: &str, target: &str) -> ForwardSpec {
        let mut spec = ForwardSpec::default();
        for (key, value) in [
            ("protocol", protocol),
            ("listen", listen),
            ("target", target),
        ] {
            spec.set(key, value).unwrap();
        }
        spec
    }

    fn built(specs: &[(&str, &ForwardSpec)]) -> Built {
        build(specs.iter().map(|(n, s)| ((*n).to_owned(), (*s).clone()))).unwrap()
    }

    fn slot(name: &str, transport: Transport) -> Slot {
        (name.to_owned(), transport)
    }

    const DRAIN: Duration = Duration::ZERO;

    #[tokio::test]
    async fn apply_adds_renames_reloads_and_removes() {
        let a = spec("tcp", "127.0.0.1:0", "127.0.0.1:9");
        let mut running: Supervisor<ForwarderHandle> =
            Supervisor::start(built(&[("a", &a)]), |_, _, h| h).unwrap();
        let bound = running
            .get(&slot("a", Transport::Tcp))
            .unwrap()
            .local_addrs()[0];

        // `a` under a new name on its own address, and a new `tcp,udp` forward.
        let renamed = spec("tcp", &bound.to_string(), "127.0.0.1:10");
        let both = spec("tcp,udp", "127.0.0.1:0", "127.0.0.1:9");
        let set = built(&[("b", &renamed), ("c", &both)]);
        running.apply(set, DRAIN, |_, _, h| h).await.unwrap();
        assert!(running.get(&slot("a", Transport::Tcp)).is_none());
        let b = running.get(&slot("b", Transport::Tcp)).expect("renamed");
        assert_eq!(b.local_addrs(), [bound], "the same listener");
        let tcp = running
            .get(&slot("c", Transport::Tcp))
            .unwrap()
            .local_addrs();
        let udp = running
            .get(&slot("c", Transport::Udp))
            .unwrap()
            .local_addrs();
        assert_eq!(tcp, udp, "one port for both");
        assert_eq!(running.len(), 3);

        // An invalid set changes nothing.
        let mut bad = both.clone();
        bad.max_sessions = 0;
        let e = build([("c".to_owned(), bad)]).unwrap_err();
        assert!(
            matches!(e, ApplyError::Invalid { ref name, .. } if name == "c"),
            "{e}"
        );

        // `c` goes, `b` stays.
        running
            .apply(built(&[("b", &renamed)]), DRAIN, |_, _, h| h)
            .await
            .unwrap();
        assert_eq!(running.len(), 1);
        assert!(running.shutdown(DRAIN).await);
    }

    #[tokio::test]
    async fn a_new_forward_that_cannot_bind_starts_nothing() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let free = spec("tcp", "127.0.0.1:0", "127.0.0.1:9");
        let clash = spec("tcp", &addr, "127.0.0.1:9");
        let e = Supervisor::<ForwarderHandle>::start(
            built(&[("a", &free), ("b", &clash)]),
            |_, _, h| h,
        )
        .unwrap_err();
        assert!(
            matches!(e, ApplyError::Start { ref name, .. } if name == "b"),
            "{e}"
        );
        let mut running: Supervisor<ForwarderHandle> = Supervisor::new();
        let e = running
            .apply(built(&[("a", &free), ("b", &clash)]), DRAIN, |_, _, h| h)
            .await
            .unwrap_err();
        assert!(matches!(e, ApplyError::Start { .. }), "{e}");
        assert!(running.is_empty(), "all or none");
    }
}
