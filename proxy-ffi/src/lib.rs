//! C ABI for `proxy-core` and `proxy-http`: start, inspect, reload and stop TCP, UDP and
//! HTTP forwarders from C.
//!
//! The crate builds a `cdylib` and a `staticlib`; the C declarations are in
//! `include/proxy.h`, generated from this crate by cbindgen (`proxy-ffi/gen-header.sh`)
//! and checked in. The conventions are rustls-ffi's:
//!
//! - Objects are opaque pointers with a constructor and a `_free`; `_free(NULL)` does
//!   nothing. A `const` pointer argument is only read.
//! - Every fallible function returns a [`proxy_status`]; results come back through
//!   out-parameters, written only on success. NULL pointers and strings that are not
//!   UTF-8 are reported, never dereferenced. [`proxy_status_message`] gives each code's
//!   text and [`proxy_last_error`] the calling thread's last failure in detail.
//! - No panic crosses the boundary: each function catches it and returns
//!   `PROXY_STATUS_PANIC`.
//! - Callbacks take `userdata` first and document the thread they run on.
//!
//! Each forwarder owns a tokio runtime (2 worker threads by default): nothing is global but
//! the per-thread last error, so forwarders in one process do not affect each other.
//!
//! Settings are proxy-core's [`ForwardSpec`](proxy_core::ForwardSpec): every key of its
//! table ([`proxy_core::spec::KEYS`]) can be set as text with `proxy_config_set`, read
//! with `proxy_config_get` and listed with `proxy_key_name`, so C has every setting the
//! CLI and the config file have, parsed the same way; the typed setters write the same
//! fields.
//!
//! The modules: `status` (codes, last error), `panic` (the boundary), `handle` (every
//! pointer cast), `config` (the config and its typed setters), `keys` (settings by key),
//! `forwarder`, `resolve` (the resolver callback), `version`.
#![allow(non_camel_case_types)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod forwarder;
mod handle;
mod keys;
mod panic;
mod resolve;
mod stats;
mod status;
mod version;

pub use config::{
    proxy_config, proxy_config_add_listen, proxy_config_add_name_server, proxy_config_clear_listen,
    proxy_config_clear_name_servers, proxy_config_free, proxy_config_new, proxy_config_set_limit,
    proxy_config_set_resolver, proxy_config_set_resolver_callback, proxy_config_set_target,
    proxy_config_set_timeout, proxy_config_set_transport, proxy_config_set_worker_threads,
    proxy_limit, proxy_resolver, proxy_timeout, proxy_transport,
};
pub use forwarder::{
    PROXY_ADDRESS_BUFFER_SIZE, proxy_forwarder, proxy_forwarder_address,
    proxy_forwarder_address_count, proxy_forwarder_endpoint, proxy_forwarder_endpoint_count,
    proxy_forwarder_free, proxy_forwarder_port, proxy_forwarder_reload, proxy_forwarder_route,
    proxy_forwarder_route_count, proxy_forwarder_shutdown, proxy_forwarder_start,
    proxy_forwarder_stats,
};
pub use keys::{
    proxy_config_get, proxy_config_set, proxy_key_count, proxy_key_example, proxy_key_help,
    proxy_key_name,
};
pub use resolve::{
    proxy_resolution, proxy_resolution_add, proxy_resolution_set_ttl, proxy_resolve_callback,
};
pub use stats::{PROXY_LATENCY_BUCKETS, proxy_endpoint_stats, proxy_route_stats, proxy_stats};
pub use status::{proxy_last_error, proxy_status, proxy_status_message};
pub use version::proxy_version;
