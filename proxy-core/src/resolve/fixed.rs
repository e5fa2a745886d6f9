//! A fixed list of addresses.

use std::net::IpAddr;

use super::{Resolution, Resolve, Resolving, dedup};

/// Resolves every name to the same fixed list of addresses, which never expires.
///
/// Useful for tests, for upstreams known ahead of time, and for balancing over several
/// IPs without DNS.
///
/// ```
/// use proxy_core::{TcpForwarder, resolve::StaticResolver};
///
/// // `backend:80` goes to 10.0.0.1:80 and 10.0.0.2:80 in turn.
/// let backends = StaticResolver::new(["10.0.0.1".parse()?, "10.0.0.2".parse()?]);
/// let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse()?], "backend:80".parse()?)
///     .resolver(backends)
///     .build()?;
/// assert_eq!(forwarder.target().unwrap().to_string(), "backend:80");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct StaticResolver {
    addrs: Vec<IpAddr>,
}

impl StaticResolver {
    /// A resolver that answers `addrs`, in this order.
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        StaticResolver {
            addrs: dedup(addrs),
        }
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, name: &str) -> Resolving {
        let result = if self.addrs.is_empty() {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("static resolver has no addresses for {name}"),
            ))
        } else {
            Ok(Resolution::new(self.addrs.clone(), None))
        };
        Box::pin(std::future::ready(result))
    }
}
