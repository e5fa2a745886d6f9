//! `proxy forward`'s command line: kubectl port-forward's grammar of SPEC
//! ([`parse_spec`]), TARGET ([`parse_target`]) and `--address` ([`parse_address`]), and
//! the checks across them ([`ForwardArgs::plan`]). Running it is [`crate::forward`]'s.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use std::time::Duration;

use clap::Args;
use proxy_core::{ForwardSpec, Host, Listen, Target, Transport};

use super::keys::{BOTH, KeyFlags};
use super::{UsageError, invalid, parse_duration};
use crate::protocol::Protocol;

/// `proxy forward --help`, above the options.
pub const LONG_ABOUT: &str = "\
Forward local ports to TARGET, like `kubectl port-forward`.

TARGET is a Kubernetes object as kubectl names it, TYPE/NAME (`pod/web`, `svc/web`,
`deploy/web`; also rs/, sts/, ds/, job/, rc/ and the long names), reached through the API
server's port-forward like kubectl; or a host name or an IP address without a port
(`db.internal`, `10.0.0.5`, `::1`), reached directly. Each SPEC maps local ports to
TARGET's ports, in kubectl's grammar:

  8080:80               local port 8080 to port 80
  5000                  local port 5000 to port 5000
  :5000 or 0:5000       a free local port chosen by the kernel to port 5000
  8000-8010:9000-9010   a range: 8000 to 9000, 8001 to 9001, ... (same length both sides)
  8000-8010             the same ports both sides
  5353:53/udp           UDP (`/tcp`, the default, may be written too); for TYPE/NAME,
                        only where the far end is `proxy port-forward-server`
  8080:http, http       a port name (TYPE/NAME only): the service's or the container's,
                        translated per pod as kubectl does; `http` alone listens on the
                        port number the name stands for

Every SPEC listens on every --address. The default, `localhost`, is 127.0.0.1 and ::1; ::1
is skipped quietly where IPv6 is off. A kernel-chosen port is the same on every address.

For each bound socket, in SPEC order and then address order, stdout gets the line kubectl
prints, `Forwarding from 127.0.0.1:8888 -> 5000` or `Forwarding from [::1]:8888 -> 5000`;
a UDP socket's line ends in `/udp` (`Forwarding from 127.0.0.1:5353 -> 53/udp`). Logs go
to stderr. --ports-file writes the same as JSON before the lines are printed.

With `-- CMD ARGS...`, CMD runs once every port is bound, with the environment variables
PROXY_FORWARD_PORT (the first SPEC's local port) and PROXY_FORWARD_PORTS (every mapping,
`LOCAL:REMOTE[/udp]`, separated by spaces). When CMD exits, the forwards drain and proxy
exits with CMD's status (128+N when a signal N ended it; 127 when CMD cannot be found).

Unlike kubectl, a connection that fails or is reset never ends the forward. For TYPE/NAME,
kubectl's flags apply (-n, --context, --kubeconfig or KUBECONFIG, --pod-running-timeout),
and where kubectl gives up, proxy holds: each new connection goes to a ready pod of the
target (--balance, --eject-after), and to another when one is gone; the pods are followed
through the API, so a rollout or a replaced pod does not end the forward; the connection to
the API server is kept alive with PINGs and opened again when it drops, while new
connections wait (up to --pod-running-timeout). Each connection prints `Handling connection
for PORT` on stdout, and a failure `an error occurred forwarding PORT -> PORT: ...` on
stderr.

Signals: without CMD, SIGINT and SIGTERM drain (see --drain) and exit 0. With CMD, proxy
forwards until CMD exits: SIGTERM is passed on to CMD, and so is SIGINT unless it came from
the terminal, which sends Ctrl-C to CMD itself.

Exit codes: 0 after a clean shutdown, 1 when a port cannot be bound, 2 for bad arguments;
with CMD, CMD's.";

/// `proxy forward --help`, below the options.
pub const EXAMPLES: &str = "\
Examples:
  proxy forward svc/web 8080:80                   localhost:8080 to the ready pods of svc/web
  proxy forward -n shop deploy/api :http          a free local port to api's port `http`
  proxy forward pod/db 5432 -- psql -h 127.0.0.1  run psql while forwarding
  proxy forward db.internal 5432                  localhost:5432 to db.internal:5432
  proxy forward 10.0.0.5 8080:80 8443:443         two ports
  proxy forward db.internal :5432                 a free local port (printed on stdout)
  proxy forward dns.internal 5353:53/udp 5353:53  DNS over UDP and TCP
  proxy forward --address 0.0.0.0 web 8000-8010   eleven ports, on every IPv4 address
  proxy forward --ports-file ports.json db :5432 :6379
  proxy forward db.internal :5432 -- sh -c 'psql -h 127.0.0.1 -p \"$PROXY_FORWARD_PORT\"'";

/// `--idle-timeout` as `proxy forward` describes it.
pub const IDLE_FLAG_HELP: &str = "Close a TCP connection or end a UDP session after this long \
without traffic in either direction. 0 means no idle timeout. [default: none for TCP, 30s \
for UDP]";

/// `proxy forward [--address ADDR[,ADDR...]] TARGET SPEC... [-- CMD ARGS...]` and its flags.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Listen on these addresses: IP addresses, or `localhost` for 127.0.0.1 and ::1 (::1
    /// skipped where IPv6 is off). Comma-separated or repeated.
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        value_parser = parse_address,
        default_value = "localhost"
    )]
    pub address: Vec<AddressArg>,

    /// Once every port is bound, write them to FILE as JSON (written to a temporary file,
    /// then renamed; removed when proxy exits). See the README for the schema.
    #[arg(long, value_name = "FILE")]
    pub ports_file: Option<PathBuf>,

    /// Where to forward: a host name or an IP address without a port, or a Kubernetes
    /// object as kubectl names it (`pod/web`, `svc/web`, `deploy/web`, ...).
    #[arg(value_name = "TARGET", value_parser = parse_forward_target)]
    pub target: ForwardTarget,

    /// `[LOCAL:]REMOTE[/udp]`: `8080:80`, `5000`, `:5000`, `8000-8010:9000-9010`,
    /// `5353:53/udp`.
    #[arg(value_name = "SPEC", required = true, value_parser = parse_spec)]
    pub specs: Vec<PortSpec>,

    /// A command to run while forwarding (after `--`); proxy exits with its status.
    #[arg(value_name = "CMD", last = true)]
    pub command: Vec<OsString>,

    /// Not for `proxy forward` (the local ports come from SPEC, the addresses from
    /// --address): taken only to say so.
    #[arg(long, value_name = "ADDR", hide = true)]
    pub listen: Vec<String>,

    /// On SIGINT or SIGTERM, stop accepting and let open connections (and UDP sessions)
    /// finish for this long before closing them. A second signal closes them at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", allow_hyphen_values = true, help_heading = "Forwarding options")]
    pub drain: Duration,

    /// The settings flags, one per key; TCP's apply to TCP SPECs, UDP's to UDP SPECs.
    #[command(flatten)]
    pub keys: KeyFlags<BOTH>,

    /// The flags of a `TYPE/NAME` target.
    #[command(flatten)]
    pub kube: KubeFlags,
}

/// kubectl's flags, for a `TYPE/NAME` target.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Kubernetes (TYPE/NAME targets)")]
pub struct KubeFlags {
    /// The namespace of TARGET [default: the context's namespace, else `default`].
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// The kubeconfig context to use [default: the current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// How long to wait for a running pod at start, and how long a new connection waits
    /// for a ready pod while there is none (during a rollout, say) [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pod_running_timeout: Option<Duration>,

    /// The port-forward protocol: `auto` (SPDY over WebSocket, else SPDY, else WebSocket
    /// channels), `spdy-websocket`, `spdy` or `websocket` [default: auto].
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<proxy_kube::forward::Protocol>,
}

impl KubeFlags {
    /// The first of these flags given, as written on the command line.
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.namespace.is_some(), "--namespace"),
            (self.context.is_some(), "--context"),
            (self.kubeconfig.is_some(), "--kubeconfig"),
            (self.pod_running_timeout.is_some(), "--pod-running-timeout"),
            (self.protocol.is_some(), "--protocol"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

/// TARGET: a host, or a Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardTarget {
    /// A host name or an IP address.
    Host(Host),
    /// `TYPE/NAME`, as kubectl port-forward takes it.
    Kube(proxy_kube::Target),
}

impl std::fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardTarget::Host(h) => h.fmt(f),
            ForwardTarget::Kube(t) => t.fmt(f),
        }
    }
}

/// One parsed SPEC: a protocol and one or more local-to-remote port pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    token: String,
    protocol: Protocol,
    /// The first local port; 0 when the kernel chooses each local port.
    local: u16,
    remote: u16,
    /// How many ports: 1, or the length of the range.
    count: u16,
    /// A remote port given by name (`8080:http`), translated by the pod or service of a
    /// `TYPE/NAME` target; `remote` is 0 then.
    remote_name: Option<String>,
    /// No LOCAL was written and the remote port is a name: the local port is the number
    /// the name stands for, as kubectl does.
    local_from_remote: bool,
}

/// One local port forwarded to one remote port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The transport.
    pub protocol: Protocol,
    /// The local port; 0 for a port chosen by the kernel.
    pub local: u16,
    /// TARGET's port.
    pub remote: u16,
}

/// A parsed `--address` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressArg {
    /// `localhost`: 127.0.0.1 and ::1, each skipped when its family is not available.
    Localhost,
    /// An IP address, which must be bound.
    Ip(IpAddr),
}

/// A listen address of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddr {
    /// The IP address.
    pub ip: IpAddr,
    /// Whether it came from `localhost` only, so it is skipped when this host does not
    /// have its address family.
    pub optional: bool,
}

/// The checked settings of `proxy forward`.
#[derive(Clone, Debug)]
pub struct ForwardPlan {
    /// TARGET.
    pub host: Host,
    /// Each SPEC with its mappings, in command-line order.
    pub specs: Vec<PortSpec>,
    /// The addresses every mapping listens on, in order, without duplicates.
    pub addresses: Vec<BindAddr>,
    /// The settings of every forwarder; the protocol, target port and listen address are
    /// set per mapping.
    pub settings: ForwardSpec,
    /// `--drain`.
    pub drain: Duration,
    /// `--ports-file`.
    pub ports_file: Option<PathBuf>,
    /// CMD and ARGS; empty when there is none.
    pub command: Vec<OsString>,
}

// ===== impl PortSpec =====

impl PortSpec {
    /// The SPEC as written.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The transport.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The remote port's name, for a SPEC that names it (`8080:http`, `http`).
    pub fn remote_name(&self) -> Option<&str> {
        self.remote_name.as_deref()
    }

    /// Whether the local port is the number the remote port's name stands for (`http`,
    /// with no LOCAL).
    pub fn local_from_remote(&self) -> bool {
        self.local_from_remote
    }

    /// The local-to-remote port pairs, in order.
    pub fn mappings(&self) -> impl Iterator<Item = Mapping> + '_ {
        (0..self.count).map(move |i| Mapping {
            protocol: self.protocol,
            local: if self.local == 0 { 0 } else { self.local + i },
            remote: self.remote + i,
        })
    }
}

// ===== impl ForwardArgs =====

impl ForwardArgs {
    /// Checks the arguments together and converts them into a [`ForwardPlan`].
    ///
    /// # Errors
    ///
    /// A [`UsageError`] naming the tokens: a local port used by two SPECs for the same
    /// protocol, `--listen` (which `proxy forward` replaces with `--address`), or a
    /// setting the library rejects.
    pub fn plan(&self) -> Result<ForwardPlan, UsageError> {
        let host = match &self.target {
            ForwardTarget::Host(host) => host.clone(),
            ForwardTarget::Kube(target) => {
                return Err(UsageError(format!(
                    "TARGET `{target}` is a Kubernetes object, not a host"
                )));
            }
        };
        if let Some(flag) = self.kube.given() {
            return Err(UsageError(format!(
                "{flag} applies to TYPE/NAME targets (pod/web, svc/web, deploy/web); TARGET \
                 `{host}` is a host"
            )));
        }
        if let Some(named) = self.specs.iter().find(|s| s.remote_name.is_some()) {
            return Err(UsageError(format!(
                "SPEC '{}' names its remote port; port names need a TYPE/NAME target \
                 (pod/web 8080:http), a host has port numbers only",
                named.token
            )));
        }
        self.plan_for(host)
    }

    /// The checks and settings of [`plan`](Self::plan) that do not depend on what TARGET
    /// is; `host` is the plan's host (for a `TYPE/NAME` target, a placeholder the plan's
    /// settings need).
    ///
    /// # Errors
    ///
    /// As [`plan`](Self::plan).
    pub fn plan_for(&self, host: Host) -> Result<ForwardPlan, UsageError> {
        if let Some(listen) = self.listen.first() {
            return Err(UsageError(format!(
                "`--listen {listen}` does not apply to `proxy forward`: the local ports come \
                 from SPEC; use --address IP to choose the addresses"
            )));
        }
        check_local_ports(&self.specs)?;
        let probe = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut settings = ForwardSpec::new(
            Transport::Both,
            Listen::Addrs(vec![probe]),
            Target::new(host.clone(), 1),
        );
        self.keys.apply(&mut settings)?;
        settings.validate().map_err(invalid)?;
        Ok(ForwardPlan {
            host,
            specs: self.specs.clone(),
            addresses: bind_addrs(&self.address),
            settings,
            drain: self.drain,
            ports_file: self.ports_file.clone(),
            command: self.command.clone(),
        })
    }
}

/// Rejects a local port that two mappings of the same protocol would both listen on.
fn check_local_ports(specs: &[PortSpec]) -> Result<(), UsageError> {
    let mut seen: HashMap<(Protocol, u16), &str> = HashMap::new();
    for spec in specs {
        for m in spec.mappings().filter(|m| m.local != 0) {
            if let Some(first) = seen.insert((m.protocol, m.local), &spec.token) {
                let both = if first == spec.token {
                    format!("twice in '{first}'")
                } else {
                    format!("by both '{first}' and '{}'", spec.token)
                };
                return Err(UsageError(format!(
                    "local port {}/{} is used {both}; each local port can forward to one \
                     remote port per protocol",
                    m.local, m.protocol
                )));
            }
        }
    }
    Ok(())
}

/// The `--address` values as listen addresses: `localhost` is 127.0.0.1 and ::1, both
/// optional; an IP given on its own is required, also when `localhost` named it too.
fn bind_addrs(args: &[AddressArg]) -> Vec<BindAddr> {
    let mut out: Vec<BindAddr> = Vec::new();
    let mut add = |ip: IpAddr, optional: bool| match out.iter_mut().find(|b| b.ip == ip) {
        Some(existing) => existing.optional &= optional,
        None => out.push(BindAddr { ip, optional }),
    };
    for arg in args {
        match *arg {
            AddressArg::Localhost => {
                add(Ipv4Addr::LOCALHOST.into(), true);
                add(Ipv6Addr::LOCALHOST.into(), true);
            }
            AddressArg::Ip(ip) => add(ip, false),
        }
    }
    out
}

// ===== value parsers =====

/// Parses a SPEC: `[LOCAL:]REMOTE[/tcp|/udp]`, where LOCAL and REMOTE are a port or a
/// range `FIRST-LAST` of the same length, and LOCAL may be empty or 0 for ports chosen
/// by the kernel.
///
/// # Errors
///
/// A message naming the token and what is wrong with it: remote port 0, a port above
/// 65535, a reversed range, a range starting at 0, ranges of different lengths, an
/// unknown protocol, anything that is not a number.
pub fn parse_spec(s: &str) -> Result<PortSpec, String> {
    const GRAMMAR: &str = "write [LOCAL:]REMOTE[/udp], e.g. 8080:80, 5000, :5000, \
                           8000-8010:9000-9010, 5353:53/udp";
    // Clap names the token (`invalid value '8080:0' for '<SPEC>...'`); the message says
    // what is wrong with it.
    let bad = |why: String| why;
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => {
            return Err(bad(format!(
                "unknown protocol `{other}`; use /tcp (the default) or /udp"
            )));
        }
        None => (s, Protocol::Tcp),
    };
    if ports.is_empty() {
        return Err(bad(format!("no port; {GRAMMAR}")));
    }
    let (local, remote) = match ports.split_once(':') {
        Some((local, remote)) => (Some(local), remote),
        None => (None, ports),
    };
    if is_port_name(remote) {
        if protocol == Protocol::Udp {
            return Err(bad(format!(
                "a named remote port (`{remote}`) is TCP; write the UDP port's number"
            )));
        }
        let local = match local {
            None => None,
            Some("") | Some("0") => Some(0),
            Some(local) => Some(parse_port(local).map_err(|why| bad(format!("{why}; {GRAMMAR}")))?),
        };
        return Ok(PortSpec {
            token: s.to_owned(),
            protocol,
            local: local.unwrap_or(0),
            remote: 0,
            count: 1,
            remote_name: Some(remote.to_owned()),
            local_from_remote: local.is_none(),
        });
    }
    let remote = parse_range(remote).map_err(|why| bad(format!("{why}; {GRAMMAR}")))?;
    if remote.0 == 0 {
        let what = if remote.1 == 0 {
            "remote port 0"
        } else {
            "a range starting at 0"
        };
        return Err(bad(format!(
            "{what} is not allowed: TARGET needs a port (0 means a kernel-chosen port, \
             which only the local side can have)"
        )));
    }
    let count = remote.1 - remote.0 + 1;
    let local = match local {
        None => remote.0,
        Some("") | Some("0") => 0,
        Some(local) => {
            let local = parse_range(local).map_err(|why| bad(format!("{why}; {GRAMMAR}")))?;
            if local.0 == 0 {
                return Err(bad(
                    "a local range cannot start at 0; write `:REMOTE-RANGE` for kernel-chosen \
                     local ports"
                        .into(),
                ));
            }
            let local_count = local.1 - local.0 + 1;
            if local_count != count {
                return Err(bad(format!(
                    "the local side has {local_count} port{} and the remote side {count}; \
                     ranges must have the same length",
                    if local_count == 1 { "" } else { "s" }
                )));
            }
            local.0
        }
    };
    Ok(PortSpec {
        token: s.to_owned(),
        protocol,
        local,
        remote: remote.0,
        count,
        remote_name: None,
        local_from_remote: false,
    })
}

/// Whether `s` is a port name as Kubernetes has them (an IANA service name): 1 to 15
/// lowercase letters, digits and inner single hyphens, with at least one letter.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Parses `PORT` or `FIRST-LAST` into an inclusive range.
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (first, last) = match s.split_once('-') {
        Some((first, last)) => (parse_port(first)?, parse_port(last)?),
        None => {
            let port = parse_port(s)?;
            (port, port)
        }
    };
    if first > last {
        return Err(format!(
            "`{s}` is a reversed range (the first port is the larger)"
        ));
    }
    Ok((first, last))
}

fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("a port is missing".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a port number"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("`{s}` is larger than 65535"))
}

/// Parses TARGET: a host name or an IP address (`::1` or `[::1]`), without a port.
///
/// # Errors
///
/// A message naming the token when it is not a valid host, or has a port.
pub fn parse_target(s: &str) -> Result<Host, String> {
    if let Ok(with_port) = s.parse::<Target>() {
        return Err(format!(
            "`{s}` has a port ({}); TARGET is a host name or IP address only, the ports \
             come from SPEC (`proxy forward {} {}`)",
            with_port.port(),
            with_port.host(),
            with_port.port()
        ));
    }
    // The port is a placeholder: only whether `s` parses without one matters here.
    Target::parse_with_default_port(s, 1)
        .map(|t| t.host().clone())
        .map_err(|e| e.to_string())
}

/// Parses TARGET: `TYPE/NAME` (kubectl's resource names and short names: `pod/web`,
/// `svc/web`, `deploy/web`) for a Kubernetes object, else a host as [`parse_target`].
///
/// # Errors
///
/// A message naming the token: an unknown resource type, an empty name, or a bad host.
pub fn parse_forward_target(s: &str) -> Result<ForwardTarget, String> {
    if s.contains('/') {
        return s
            .parse::<proxy_kube::Target>()
            .map(ForwardTarget::Kube)
            .map_err(|e| e.to_string());
    }
    parse_target(s).map(ForwardTarget::Host)
}

/// Parses an `--address` value: `localhost` or an IP address (`::1` or `[::1]`).
///
/// # Errors
///
/// A message naming the token when it is neither.
pub fn parse_address(s: &str) -> Result<AddressArg, String> {
    if s.is_empty() {
        return Err("an empty address; write an IP address or `localhost`".into());
    }
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(AddressArg::Localhost);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(AddressArg::Ip)
        .map_err(|_| format!("`{s}` is not an IP address (127.0.0.1, ::1, [::1]) or `localhost`"))
}
