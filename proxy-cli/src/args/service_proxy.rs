//! `proxy service-proxy [--port 8001] [--address 127.0.0.1] [--kubeconfig F] [--context C]`:
//! `kubectl proxy`'s grammar and defaults, as one HTTP [`ForwardSpec`] with
//! `service_proxy` on.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use proxy_core::{ForwardSpec, Listen, Transport};

use super::keys::{HTTP, KeyFlags};
use super::seed::{invalid, parse_listen_port};
use super::{UsageError, parse_duration};

/// The help of `proxy service-proxy`.
pub const LONG_ABOUT: &str = "\
Serve the API server's service proxy URL, as `kubectl proxy` does, on --address:--port
(127.0.0.1:8001 unless given; port 0 picks a free one). It prints `Starting to serve on
ADDR:PORT` on stdout once listening, as kubectl does.

Two ways to reach the Services:

  DNS mode (the default): no API server. A request for
  /api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH goes to
  NAME.NS.svc.CLUSTER_DOMAIN (--cluster-domain, cluster.local) at PORT: a port name is looked up as the
  SRV record _PORT._tcp.NAME.NS.svc.CLUSTER_DOMAIN that cluster DNS publishes, and without
  a port, port 80 (the API server would take the Service's only port, which DNS does not
  tell). Every address of the Service is balanced over, with failover; --resolver and
  --name-servers say how names are looked up. Other paths get 404.

  https:NAME:PORT Services are spoken to over TLS (HTTP/1.1, connections kept alive),
  their certificates verified against the system's CAs (or --upstream-ca) for the name
  NAME.NS.svc (or --upstream-server-name); a certificate that does not verify gets 502,
  and a log line saying why. --upstream-insecure verifies nothing, for self-signed
  in-cluster Services (it warns at every start).

  API server mode (--kubeconfig FILE or --context NAME): every request goes to the
  kubeconfig's API server with its credentials, as kubectl proxy does; exec, attach and
  port-forward upgrades pass through (exec and attach are refused by the default
  --reject-paths, as in kubectl). KUBECONFIG alone does not switch modes: give --context
  to use it with its current context.

As in kubectl proxy, the API server's behaviour is kept: GET .../proxy is redirected (301)
to .../proxy/, X-Forwarded-For, -Host, -Proto and -Uri are sent upstream, Location and
Content-Location answers are moved into the service URL, and with --rewrite-html links in
HTML answers are too. kubectl proxy's filter comes first: a Host not matching
--accept-hosts, a path matching --reject-paths or not --accept-paths, or a method matching
--reject-methods gets 403 Forbidden.

SIGINT and SIGTERM stop accepting and let requests in flight finish for the --drain time.";

/// The examples of `proxy service-proxy`.
pub const EXAMPLES: &str = "\
Examples:
  proxy service-proxy                              cluster DNS, on 127.0.0.1:8001
  proxy service-proxy --port 0 --name-servers 10.96.0.10
  proxy service-proxy --kubeconfig ~/.kube/config  through the API server, like kubectl proxy
  proxy service-proxy --address 0.0.0.0 --accept-hosts '.*' --reject-methods '^POST$'
  proxy service-proxy --upstream-ca /etc/kubernetes/pki/ca.crt   https: Services too
  curl localhost:8001/api/v1/namespaces/default/services/web:http/proxy/";

/// `proxy service-proxy` and its flags.
#[derive(Debug, Args)]
pub struct ServiceProxyArgs {
    /// The port to serve on; 0 picks a free port (printed on stdout).
    #[arg(long, short = 'p', value_name = "PORT", default_value = "8001", value_parser = parse_listen_port)]
    pub port: u16,

    /// The IP address to serve on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub address: IpAddr,

    /// Send every request to this kubeconfig's API server with its credentials (API
    /// server mode) instead of answering service URLs from cluster DNS.
    #[arg(long, value_name = "FILE", help_heading = "API server mode")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context for API server mode [default: the current context]; given
    /// alone, selects API server mode with $KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "NAME", help_heading = "API server mode")]
    pub context: Option<String>,

    /// On SIGINT or SIGTERM, stop accepting and let requests in flight finish for this
    /// long before closing their connections.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", allow_hyphen_values = true)]
    pub drain: Duration,

    /// The settings flags, one per key.
    #[command(flatten)]
    pub keys: KeyFlags<HTTP>,
}

impl ServiceProxyArgs {
    /// Whether requests go to an API server (`--kubeconfig` or `--context`).
    pub fn api_mode(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }

    /// The arguments as one checked [`ForwardSpec`]: an HTTP forward on ADDRESS:PORT with
    /// `service_proxy` on.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] naming the flag: a setting the library rejects, or a filter
    /// pattern that does not compile.
    pub fn spec(&self) -> Result<ForwardSpec, UsageError> {
        let mut spec = ForwardSpec::default();
        spec.protocol = Transport::Http;
        spec.listen = Listen::Addrs(vec![SocketAddr::new(self.address, self.port)]);
        spec.service_proxy = true;
        self.keys.apply(&mut spec)?;
        if !spec.service_proxy {
            return Err(UsageError(
                "--service-proxy=false: `proxy service-proxy` always serves the service proxy \
                 URL; use `proxy http` for routes alone"
                    .to_owned(),
            ));
        }
        spec.validate().map_err(invalid)?;
        proxy_http::HttpForwarder::new(spec.clone()).map_err(invalid)?;
        Ok(spec)
    }
}
