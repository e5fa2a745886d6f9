//! The API server's service proxy: its URL grammar, kubectl proxy's request filter, and the
//! rewriting of what upstreams answer into the proxy's prefix.
//!
//! These are the pure parts, with no I/O: [`ServiceUrl`] parses
//! `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH`, [`Filter`] decides
//! which requests kubectl proxy lets through, and [`rewrite_location`],
//! [`redirect_to_slash`] and [`HtmlRewriter`] map what an upstream answers back into the
//! proxy's prefix.

mod filter;
mod proxy;
mod rewrite;
mod url;

pub use filter::{
    DEFAULT_ACCEPT_HOSTS, DEFAULT_ACCEPT_PATHS, DEFAULT_REJECT_METHODS, DEFAULT_REJECT_PATHS,
    Filter, FilterError, forbidden,
};
pub use proxy::{ApiServer, EndpointsError, MAX_SERVICE_BACKENDS, ServiceEndpoints, ServiceProxy};
pub use rewrite::{
    HtmlRewriter, MAX_TAG_LEN, is_rewritable_html, needs_slash_redirect, redirect_to_slash,
    rewrite_location, slash_redirect_location,
};
pub use url::{PortRef, Scheme, ServiceUrl, UrlError};
