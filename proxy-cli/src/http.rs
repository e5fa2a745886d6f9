//! `proxy http`: the library's HTTP forwarder, served until a signal drains it.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use proxy_core::Workers;
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
pub async fn run(
    args: &HttpArgs,
    forwards: &Forwards,
    workers: &HttpWorkers,
) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let mut forwarder = HttpForwarder::new(spec.clone()).map_err(crate::args::invalid)?;
    workers.serve(&mut forwarder)?;
    let handle = forwarder.start()?;
    let name = crate::registry::ports_name("http", handle.local_addrs());
    serve_until_signal(forwards, name, handle, signals, args.drain, &spec).await
}

/// Lists a started HTTP forward as `name`, marks the process ready, waits for SIGINT or
/// SIGTERM, then lets requests in flight finish for up to `drain` (a second signal closes
/// them at once). `proxy http` and `proxy service-proxy` end this way. When `spec`
/// terminates TLS, SIGHUP reads its certificate files again (new connections get them;
/// open ones keep theirs; a broken file keeps the running ones).
pub(crate) async fn serve_until_signal(
    forwards: &Forwards,
    name: String,
    handle: proxy_http::HttpHandle,
    mut signals: Signals,
    drain: std::time::Duration,
    spec: &proxy_core::ForwardSpec,
) -> anyhow::Result<()> {
    forwards.add_http(name.clone(), handle.clone());
    forwards.set_ready();
    let terminating = spec.tls_cert.is_some() || spec.tls_dir.is_some();
    let mut hangups = match terminating {
        true => Some(crate::run::Hangups::new().context("cannot install the SIGHUP handler")?),
        false => None,
    };
    let signal = loop {
        let Some(hangups) = hangups.as_mut() else {
            break signals.recv().await;
        };
        tokio::select! {
            () = hangups.recv() => match handle.reload(spec) {
                Ok(()) => tracing::info!(forward = name, "reloaded: TLS certificates read again"),
                Err(e) => tracing::error!(
                    forward = name,
                    "reload rejected: {e}; the running certificates stay"
                ),
            },
            signal = signals.recv() => break signal,
        }
    };
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

/// The worker threads HTTP forwards are served on (`threads`: one per CPU by default),
/// started with the first forward that needs them. With `threads = 1` there are none:
/// everything runs on the one runtime thread. Clones share the threads.
#[derive(Clone, Debug)]
pub struct HttpWorkers {
    threads: Option<u16>,
    started: Arc<Mutex<Option<Workers>>>,
}

impl HttpWorkers {
    /// Workers as the `threads` setting says; none are started yet.
    pub fn new(threads: Option<u16>) -> HttpWorkers {
        HttpWorkers {
            threads,
            started: Arc::default(),
        }
    }

    /// Sets `forwarder` to serve on the workers, starting them if they were not.
    ///
    /// # Errors
    ///
    /// A thread cannot be started.
    pub(crate) fn serve(&self, forwarder: &mut HttpForwarder) -> anyhow::Result<()> {
        let n = match self.threads.map(usize::from) {
            Some(1) => return Ok(()),
            Some(n) => NonZeroUsize::new(n),
            None => std::thread::available_parallelism().ok(),
        }
        .unwrap_or(NonZeroUsize::MIN);
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let workers = match &*started {
            Some(workers) => workers.clone(),
            None => {
                let workers = Workers::new(n).context("cannot start the worker threads")?;
                *started = Some(workers.clone());
                workers
            }
        };
        forwarder.workers(workers);
        Ok(())
    }
}
