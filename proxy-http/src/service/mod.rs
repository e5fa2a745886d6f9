//! The API server's service proxy: its URL grammar, kubectl proxy's request filter, and the
//! rewriting of what upstreams answer into the proxy's prefix.
//!
//! These are the pure parts, with no I/O: [`ServiceUrl`] parses
//! `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH`, [`Filter`] decides
//! which requests kubectl proxy lets through.

mod filter;
mod url;

pub use filter::{
    DEFAULT_ACCEPT_HOSTS, DEFAULT_ACCEPT_PATHS, DEFAULT_REJECT_METHODS, DEFAULT_REJECT_PATHS,
    Filter, FilterError, forbidden,
};
pub use url::{PortRef, Scheme, ServiceUrl, UrlError};
