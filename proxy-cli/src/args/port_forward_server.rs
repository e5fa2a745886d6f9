//! `proxy port-forward-server`: the node side of `kubectl port-forward`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use proxy_portforward::objects::{Pod, Service};

/// The default `--listen`: `kubectl proxy`'s address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8001";

pub(crate) const LONG_ABOUT: &str = "\
Serve the port-forward API that unmodified `kubectl port-forward` and the Kubernetes client \
libraries speak (SPDY/3.1, WebSocket channels, SPDY over WebSocket), answering as an API \
server and a kubelet in one: discovery, the pods, services and deployments given here, and \
`pods/NAME/portforward`. Each forwarded connection goes to the pod's target: a host, or a port \
inside a network namespace (`netns:/run/netns/NAME`, `netns:/proc/PID/ns/net`).

Point a kubeconfig at it (`server: http://127.0.0.1:8001`) and run `kubectl port-forward \
pod/NAME 8080:80`, `svc/NAME ...` or `deploy/NAME ...` as against a cluster.

With --config the objects come from a TOML file ([[pod]], [[service]], [[deployment]]) as \
well as the flags; SIGHUP reads it again: sessions open stay, new connections go where the \
new objects say, and a pod removed gets none. Bound to an address beyond loopback it refuses \
to start without TLS and a token, unless told --insecure. SIGINT and SIGTERM stop it.";

pub(crate) const EXAMPLES: &str = "\
Examples:
  proxy port-forward-server --pod web=127.0.0.1 --service web:80=web
  proxy port-forward-server --listen 127.0.0.1:0 --pod shop/db=netns:/run/netns/db
  proxy port-forward-server --listen 0.0.0.0:6443 --config cluster.toml \\
      --tls-cert server.pem --tls-key server-key.pem --token-file token";

/// `proxy port-forward-server`.
#[derive(Debug, Args)]
pub struct PortForwardServerArgs {
    /// The address to serve on, IP:PORT (port 0: chosen by the kernel; the line
    /// `Starting to serve on ADDR` on stdout says which).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A running pod `[NS/]NAME=TARGET` labelled `app=NAME`; TARGET is a host (IP or name)
    /// or `netns:PATH`. Repeatable.
    #[arg(long = "pod", value_name = "[NS/]NAME=TARGET")]
    pub pods: Vec<Pod>,

    /// A Service `[NS/]NAME:PORT[,PORT...]=POD[,POD...]` with those ports (each
    /// targetPort the same number), selecting exactly the pods listed (given with --pod or
    /// in --config). Repeatable.
    #[arg(long = "service", value_name = "[NS/]NAME:PORTS=PODS")]
    pub services: Vec<Service>,

    /// A TOML file of `[[pod]]`, `[[service]]` and `[[deployment]]` tables, read again on
    /// SIGHUP.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require `Authorization: Bearer TOKEN` on every request, TOKEN being this file's
    /// content (surrounding whitespace removed).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve beyond loopback without TLS or without a token.
    #[arg(long)]
    pub insecure: bool,

    /// End a port-forward connection that has sent nothing (no data, no PING) for this
    /// long, as the kubelet's flag of the same name (4h there); 0 never. [default: 0]
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub streaming_connection_idle_timeout: Option<std::time::Duration>,

    /// Refuse the UDP extension (`proxy forward TYPE/NAME PORT/udp`), answering as a
    /// Kubernetes API server does: TCP only.
    #[arg(long)]
    pub no_udp: bool,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IP:PORT address (such as {DEFAULT_LISTEN})"))
}
