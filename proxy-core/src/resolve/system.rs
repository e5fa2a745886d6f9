//! The C library's resolver.

use std::io;
use std::net::ToSocketAddrs;

use super::{Resolution, Resolve, Resolving, dedup};

/// Resolves names with the C library's `getaddrinfo`, on tokio's blocking thread pool.
///
/// This is exactly what a pod's libc does: `/etc/hosts`, `nsswitch.conf`, and
/// `/etc/resolv.conf` with its `search` list and `ndots` option, so `kube-dns.default`
/// becomes `kube-dns.default.svc.cluster.local` inside a Kubernetes pod. `getaddrinfo`
/// reports no TTL, so answers are cached for
/// [`CachePolicy::fallback_ttl`](crate::resolve::CachePolicy::fallback_ttl).
///
/// This is the default resolver.
#[derive(Clone, Debug, Default)]
pub struct SystemResolver {
    _priv: (),
}

impl SystemResolver {
    /// The system resolver.
    pub fn new() -> Self {
        SystemResolver { _priv: () }
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> Resolving {
        let name = name.to_owned();
        Box::pin(async move {
            let addrs = tokio::task::spawn_blocking(move || {
                (name.as_str(), 0)
                    .to_socket_addrs()
                    .map(|it| dedup(it.map(|a| a.ip())))
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Resolution::new(addrs, None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_localhost_from_hosts_file() {
        let r = SystemResolver::new().resolve("localhost").await.unwrap();
        assert!(r.addrs().iter().all(|a| a.is_loopback()), "{r:?}");
        assert!(!r.addrs().is_empty());
        assert_eq!(r.valid_until(), None);
    }

    #[tokio::test]
    async fn unknown_name_is_an_error() {
        let e = SystemResolver::new().resolve("no-such-host.invalid").await;
        assert!(e.is_err(), "{e:?}");
    }
}
