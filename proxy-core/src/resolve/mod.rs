//! Name resolution: the [`Resolve`] trait, three resolvers, and the cache in front of them.
//!
//! A forwarder resolves its upstream name through a [`Resolve`] implementation and keeps the
//! answer in a cache: the answer is reused until its TTL (or, when the resolver gives none,
//! [`CachePolicy::fallback_ttl`]) runs out, refreshed in the background, and kept when a
//! refresh fails, so a DNS outage does not stop new connections to known addresses.
//! IP literal targets never touch the resolver.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Instant;

use crate::{Host, Target};

mod cache;
mod fixed;
mod hickory;
mod system;

pub use cache::CachePolicy;
pub(crate) use cache::ResolveCache;
pub use fixed::StaticResolver;
pub use hickory::HickoryResolver;
pub use system::SystemResolver;

/// The future returned by [`Resolve::resolve`].
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Resolution>> + Send>>;

/// Resolves a host name to IP addresses.
///
/// Object-safe, so a forwarder holds an `Arc<dyn Resolve>`; implement it to plug in service
/// discovery of your own.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use proxy_core::TcpForwarder;
/// use proxy_core::resolve::{Resolution, Resolve, Resolving};
///
/// /// Resolves every name to localhost.
/// struct Localhost;
///
/// impl Resolve for Localhost {
///     fn resolve(&self, _name: &str) -> Resolving {
///         Box::pin(async { Ok(Resolution::new(vec![IpAddr::from([127, 0, 0, 1])], None)) })
///     }
/// }
///
/// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "anything:8080".parse()?)
///     .resolver(Localhost)
///     .build()?;
/// assert_eq!(forwarder.target().unwrap().to_string(), "anything:8080");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Resolve: Send + Sync + 'static {
    /// Looks `name` up. An answer with no addresses is treated as a failure.
    fn resolve(&self, name: &str) -> Resolving;

    /// Looks up the SRV records of `name` (for `srv:` targets). The default answers that
    /// this resolver cannot; [`HickoryResolver`] can.
    fn resolve_srv(&self, name: &str) -> ResolvingSrv {
        let name = name.to_owned();
        Box::pin(async move {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{name}: this resolver cannot look up SRV records; use hickory"),
            ))
        })
    }
}

/// The future returned by [`Resolve::resolve_srv`].
pub type ResolvingSrv = Pin<Box<dyn Future<Output = io::Result<SrvResolution>> + Send>>;

/// One SRV record: a host and port, with its priority (lower first) and weight (a share
/// among records of the same priority).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SrvRecord {
    /// The host to connect to, resolved with [`Resolve::resolve`].
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// Lower is preferred: only the lowest priority that resolves is used.
    pub priority: u16,
    /// The record's share among those of its priority.
    pub weight: u16,
}

impl SrvRecord {
    /// A record.
    pub fn new(host: impl Into<String>, port: u16, priority: u16, weight: u16) -> Self {
        SrvRecord {
            host: host.into(),
            port,
            priority,
            weight,
        }
    }
}

/// An SRV answer: records and how long they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvResolution {
    /// The records, in the answer's order.
    pub records: Vec<SrvRecord>,
    /// When the answer expires, if the source said.
    pub valid_until: Option<Instant>,
}

/// A resolver's answer: addresses and how long they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    addrs: Vec<IpAddr>,
    valid_until: Option<Instant>,
}

// ===== impl Resolution =====

impl Resolution {
    /// An answer; `valid_until` is `None` when the source gives no TTL.
    pub fn new(addrs: Vec<IpAddr>, valid_until: Option<Instant>) -> Self {
        Resolution { addrs, valid_until }
    }

    /// The addresses, in the resolver's order, without duplicates.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// When the answer expires, if the source said.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }
}

/// A built-in resolver, as the front ends let users choose one (`--resolver`, and
/// `PROXY_RESOLVER_*` in C); [`ResolverKind::for_target`] says which one a target gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolverKind {
    /// [`SystemResolver`]: the C library's `getaddrinfo`.
    #[default]
    System,
    /// [`HickoryResolver`].
    Hickory,
}

// ===== impl ResolverKind =====

impl ResolverKind {
    /// The resolver that looks `target` up when `self` was chosen: hickory for an SRV
    /// target whatever the choice (the C library has no SRV lookup), the choice for a host
    /// name, and the system resolver for an IP address (never looked up, so no DNS
    /// configuration is read for it).
    ///
    /// # Examples
    ///
    /// ```
    /// use proxy_core::Target;
    /// use proxy_core::resolve::ResolverKind;
    ///
    /// let srv: Target = "srv:_dns._udp.kube-dns.kube-system".parse()?;
    /// assert_eq!(ResolverKind::System.for_target(&srv), ResolverKind::Hickory);
    /// let name: Target = "web.default:80".parse()?;
    /// assert_eq!(ResolverKind::System.for_target(&name), ResolverKind::System);
    /// # Ok::<(), proxy_core::TargetError>(())
    /// ```
    pub fn for_target(self, target: &Target) -> ResolverKind {
        match target.host() {
            Host::Srv(_) => ResolverKind::Hickory,
            Host::Name(_) => self,
            Host::Ip(_) => ResolverKind::System,
        }
    }
}

/// Removes repeated addresses, keeping the first of each.
fn dedup(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}
