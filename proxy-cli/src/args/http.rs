//! `proxy http PORT [TARGET] [--route HOST/PATH=TARGET]...`: an HTTP reverse proxy routing
//! by host and path, as an Ingress controller does, turned into one [`ForwardSpec`] with
//! the settings flags.

use std::time::Duration;

use clap::Args;
use proxy_core::{ForwardSpec, Target, Transport};

use super::keys::{HTTP, KeyFlags};
use super::seed::{ListenArg, invalid, listen_of, parse_listen, parse_listen_port};
use super::{UsageError, parse_duration};

/// The help of `proxy http`.
pub const LONG_ABOUT: &str = "\
Serve HTTP/1.1 on PORT and route each request by its host and path to an upstream, as an
Ingress controller does. Over TLS (--tls-cert, --tls-dir), clients that ask for HTTP/2 by
ALPN get it; upstreams are spoken to in HTTP/1.1.

`--route HOST/PATH=TARGET` sends requests for HOST (a name, `*.DOMAIN` for any one more
label, or nothing for any host) whose path starts with PATH (by whole segments: /api is
/api, /api/ and /api/v1, not /apis) to TARGET, port 80 unless given. The most specific
host, then the longest path, wins; TARGET alone is the route `/=TARGET`, the default.
A route may set its own balancing, timeouts and sticky cookie after `;`:
`--route '/api=api:8080;balance=least-connections;request_timeout=5s'`.

Each upstream's addresses are looked up, refreshed as their TTLs say, balanced over and
failed over as `proxy tcp` does; connections to them are kept alive and reused. With
--upstream-tls (or a route's `;upstream_tls=true`) they are TLS connections, the
upstream's certificate verified against the system's CAs or --upstream-ca, for the
target's name or --upstream-server-name (sent as SNI; the Host header is the client's);
one that does not verify gets 502, and a log line saying why. Bodies
stream both ways; WebSocket and other upgrades are relayed. Clients get X-Forwarded-For,
-Host, -Proto and Forwarded headers sent upstream; hop-by-hop headers are removed. The
proxy answers 404 when no route matches, 413 past --max-request-body, 431 past
--max-header-size, 502 when the upstream refuses or resets, 503 when it has no address,
504 when it does not answer within --request-timeout. One access-log line per request
(method, host, path, status, bytes, duration, upstream) is logged at info.

SIGINT and SIGTERM stop accepting and let requests in flight finish for the --drain time.";

/// The examples of `proxy http`.
pub const EXAMPLES: &str = "\
Examples:
  proxy http 8080 web.default                     every request to web.default:80
  proxy http 8080 --route shop.example/=shop:80 --route shop.example/api=api:8080
  proxy http 8080 --route '*.apps.example/=router:80' --sticky-cookie SERVERID
  proxy http 80 --route '/=web;balance=least-connections;request_timeout=5s' --max-request-body 8M
  proxy http 8080 --route '/api=api.internal:443;upstream_tls=true;upstream_ca=/etc/ca.pem'";

/// `proxy http PORT [TARGET]` and its flags.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The port to listen on; 0 lets the kernel choose a free port (the "Forwarding from"
    /// log line shows it).
    #[arg(value_name = "PORT", value_parser = parse_listen_port)]
    pub port: u16,

    /// The default route's upstream, `HOST[:PORT]` (port 80 unless given), an IP
    /// address with a port, or `srv:NAME`: the same as `--route /=TARGET`.
    #[arg(value_name = "TARGET", value_parser = parse_http_target)]
    pub target: Option<Target>,

    /// Listen only on ADDR: an IP address on PORT, or a socket address. Repeat it for
    /// several addresses. Default: every address.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen, help_heading = "Forwarding options")]
    pub listen: Vec<ListenArg>,

    /// On SIGINT or SIGTERM, stop accepting and let requests in flight finish for this
    /// long before closing their connections. A second signal closes them at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", allow_hyphen_values = true, help_heading = "Forwarding options")]
    pub drain: Duration,

    /// The settings flags, one per key.
    #[command(flatten)]
    pub keys: KeyFlags<HTTP>,
}

impl HttpArgs {
    /// The arguments as one checked [`ForwardSpec`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] naming the flag: no TARGET and no `--route`, or a setting the
    /// library rejects.
    pub fn spec(&self) -> Result<ForwardSpec, UsageError> {
        let mut spec = ForwardSpec::default();
        spec.protocol = Transport::Http;
        spec.listen = listen_of(self.port, &self.listen);
        spec.target = self.target.clone();
        self.keys.apply(&mut spec)?;
        if spec.target.is_none() && spec.routes.is_empty() {
            return Err(UsageError(
                "nowhere to send requests: give a TARGET (the default route) or --route \
                 HOST/PATH=TARGET"
                    .to_owned(),
            ));
        }
        spec.validate().map_err(invalid)?;
        Ok(spec)
    }
}

/// Parses TARGET: a host with an optional port, 80 by default.
fn parse_http_target(s: &str) -> Result<Target, String> {
    Target::parse_with_default_port(s, 80).map_err(|e| e.to_string())
}
