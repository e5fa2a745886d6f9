//! hickory-resolver, TTL-aware.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::{Resolution, Resolve, Resolving, ResolvingSrv, SrvRecord, SrvResolution, dedup};

/// Resolves names with [hickory-resolver], asking A and AAAA, and reports each answer's TTL,
/// so the cache refreshes exactly when the records expire.
///
/// [`HickoryResolver::from_system_conf`] reads `/etc/resolv.conf` (name servers, `search`,
/// `ndots`); [`HickoryResolver::with_name_servers`] asks given servers directly.
///
/// [hickory-resolver]: https://docs.rs/hickory-resolver
#[derive(Clone)]
pub struct HickoryResolver {
    inner: Arc<TokioResolver>,
}

impl HickoryResolver {
    /// A resolver configured from `/etc/resolv.conf`.
    ///
    /// # Errors
    ///
    /// When the system configuration cannot be read.
    pub fn from_system_conf() -> io::Result<Self> {
        let mut builder = TokioResolver::builder_tokio().map_err(io::Error::other)?;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Self::finish(builder)
    }

    /// A resolver that asks the given name servers (UDP, then TCP for truncated answers),
    /// with no search domains: names are looked up as they are written.
    ///
    /// # Errors
    ///
    /// When `servers` is empty, or the resolver cannot be built.
    pub fn with_name_servers(servers: &[SocketAddr]) -> io::Result<Self> {
        if servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no name servers given",
            ));
        }
        let servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.ndots = 0;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        Self::finish(builder)
    }

    fn finish(
        builder: hickory_resolver::ResolverBuilder<TokioRuntimeProvider>,
    ) -> io::Result<Self> {
        let inner = builder.build().map_err(io::Error::other)?;
        Ok(HickoryResolver {
            inner: Arc::new(inner),
        })
    }
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

/// A failed lookup of `name`, as an I/O error: `NotFound` when the name has no records.
fn lookup_error(name: &str, e: &hickory_resolver::net::NetError) -> io::Error {
    let kind = if e.is_no_records_found() {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("{name}: {e}"))
}

impl Resolve for HickoryResolver {
    fn resolve(&self, name: &str) -> Resolving {
        let inner = self.inner.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let lookup = inner
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| lookup_error(&name, &e))?;
            let valid_until = lookup.valid_until();
            Ok(Resolution::new(dedup(lookup.iter()), Some(valid_until)))
        })
    }

    fn resolve_srv(&self, name: &str) -> ResolvingSrv {
        let inner = self.inner.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let lookup = inner
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| lookup_error(&name, &e))?;
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some(SrvRecord::new(
                        srv.target.to_utf8().trim_end_matches('.'),
                        srv.port,
                        srv.priority,
                        srv.weight,
                    )),
                    _ => None,
                })
                .collect();
            Ok(SrvResolution {
                records,
                valid_until: Some(lookup.valid_until()),
            })
        })
    }
}
