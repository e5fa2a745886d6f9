//! `proxy service-proxy`: an HTTP forward with `service_proxy` on, from cluster DNS or,
//! with `--kubeconfig`/`--context`, through the API server with the kubeconfig's
//! credentials ([`ApiConnector`]), served until a signal drains it.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use http::{HeaderValue, header};
use proxy_http::service::ApiServer;
use proxy_http::{Connecting, Connector, HttpForwarder, Io};
use proxy_kube::ApiEndpoint;

use crate::args::service_proxy::ServiceProxyArgs;
use crate::registry::Forwards;
use crate::shutdown::Signals;

/// Connects to the API server of an [`ApiEndpoint`] (TCP, then TLS for `https`).
pub struct ApiConnector(pub ApiEndpoint);

impl Connector for ApiConnector {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let stream = self.0.connect().await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }

    fn name(&self) -> String {
        self.0.url.to_string()
    }
}

/// The [`ApiServer`] of `endpoint`: its connector, its `Authorization` and `Host`, and
/// the path of its URL before every request's.
///
/// # Errors
///
/// The credentials or the server's authority cannot be a header value.
pub fn api_server(endpoint: ApiEndpoint) -> anyhow::Result<ApiServer> {
    let authority = (endpoint.url.authority())
        .map(|a| a.as_str().to_owned())
        .context("the kubeconfig's server URL has no host")?;
    let prefix = endpoint.url.path().to_owned();
    let authorization = endpoint.authorization.clone();
    let mut api = ApiServer::new(Arc::new(ApiConnector(endpoint)));
    api.header(header::HOST, HeaderValue::from_str(&authority)?)
        .path_prefix(&prefix);
    if let Some(value) = authorization {
        let mut value = HeaderValue::from_str(&value)
            .context("the kubeconfig's credentials are not a header")?;
        value.set_sensitive(true);
        api.header(header::AUTHORIZATION, value);
    }
    Ok(api)
}

/// Starts `args`' service proxy, prints `Starting to serve on ADDR` (as kubectl proxy
/// does), and serves until SIGINT or SIGTERM, then drains it.
///
/// # Errors
///
/// Bad settings (a usage error), a kubeconfig that cannot be used, an address that
/// cannot be bound, or a second signal during the drain.
pub async fn run(
    args: &ServiceProxyArgs,
    forwards: &Forwards,
    workers: &crate::http::HttpWorkers,
) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let signals = Signals::new().context("cannot install the signal handlers")?;
    let mut forwarder = HttpForwarder::new(spec.clone()).map_err(crate::args::invalid)?;
    workers.serve(&mut forwarder)?;
    if args.api_mode() {
        let mut builder = proxy_kube::Client::builder();
        if let Some(path) = &args.kubeconfig {
            builder = builder.kubeconfig(path);
        }
        if let Some(context) = &args.context {
            builder = builder.context(context);
        }
        let client = builder.build().await?;
        let endpoint = client.api_endpoint().await?;
        tracing::info!(server = %endpoint.url, "sending every request to the API server");
        forwarder.api_server(api_server(endpoint)?);
    }
    let handle = forwarder.start()?;
    if let Some(addr) = handle.local_addrs().first() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Starting to serve on {addr}")?;
        out.flush()?;
    }
    crate::http::serve_until_signal(
        forwards,
        "service-proxy".to_owned(),
        handle,
        signals,
        args.drain,
        &spec,
    )
    .await
}
