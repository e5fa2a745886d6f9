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
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let forwarder = HttpForwarder::new(spec).map_err(crate::args::invalid)?;
    let handle = forwarder.start()?;
    let name = crate::registry::ports_name("http", handle.local_addrs());
    forwards.add_http(name, handle.clone());
    forwards.set_ready();
    let name = signals.recv().await;
    forwards.set_draining();
    tracing::info!(
        signal = name,
        "shutting down: no longer accepting; letting requests in flight finish for up to {:?}",
        args.drain
    );
    finish_drain(
        handle.shutdown(args.drain),
        &mut signals,
        "requests",
        "connections",
    )
    .await
}
