//! `proxy http`: the library's HTTP forwarder, served until a signal drains it.

use anyhow::Context;
use proxy_http::HttpForwarder;

use crate::args::http::HttpArgs;
use crate::registry::Forwards;
use crate::shutdown::{Signals, finish_drain};

/// Starts `args`' HTTP forward and serves it until SIGINT or SIGTERM, then drains it.
///
/// # Errors
///
/// Bad settings (a usage error), a listen address that cannot be bound, or a second
/// signal during the drain.
pub async fn run(args: &HttpArgs, forwards: &Forwards) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let forwarder = HttpForwarder::new(spec).map_err(crate::args::invalid)?;
    let handle = forwarder.start()?;
    let name = crate::registry::ports_name("http", handle.local_addrs());
    serve_until_signal(forwards, name, handle, signals, args.drain).await
}

/// Lists a started HTTP forward as `name`, marks the process ready, waits for SIGINT or
/// SIGTERM, then lets requests in flight finish for up to `drain` (a second signal closes
/// them at once). `proxy http` and `proxy service-proxy` end this way.
pub(crate) async fn serve_until_signal(
    forwards: &Forwards,
    name: String,
    handle: proxy_http::HttpHandle,
    mut signals: Signals,
    drain: std::time::Duration,
) -> anyhow::Result<()> {
    forwards.add_http(name, handle.clone());
    forwards.set_ready();
    let signal = signals.recv().await;
    forwards.set_draining();
    tracing::info!(
        signal,
        "shutting down: no longer accepting; letting requests in flight finish for up to {drain:?}"
    );
    finish_drain(
        handle.shutdown(drain),
        &mut signals,
        "requests",
        "connections",
    )
    .await
}
