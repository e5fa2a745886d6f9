//! The API server's service proxy: its URL grammar, kubectl proxy's request filter, and the
//! rewriting of what upstreams answer into the proxy's prefix.
