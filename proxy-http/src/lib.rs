//! The HTTP layer of proxy, on hyper: a reverse proxy that routes requests by host and
//! longest path prefix to upstream targets (Ingress-style), and the Kubernetes API
//! server's service proxy URL (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`,
//! what `kubectl proxy` serves), answered from cluster DNS or through the API server.
//!
//! Upstreams are the core's [`Upstream`](proxy_core::Upstream)s: resolved and refreshed as
//! their TTLs say, balanced with the core's policies, ejected when they keep failing.
//! Bodies stream both ways and are never buffered whole; upgrades (WebSocket) become a
//! byte relay.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod backend;
pub mod body;
mod connection;
mod error;
mod exchange;
pub mod h1;
mod headers;
mod http2;
mod idle;
mod pool;
mod router;
mod server;
pub mod service;
mod stats;

pub use backend::{Connecting, Connector, Io};
pub use server::{HttpForwarder, HttpHandle};
pub use stats::{LATENCY_BUCKETS, RouteSnapshot};
