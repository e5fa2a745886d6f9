//! The help texts of the subcommands.

pub(super) const ABOUT: &str =
    "TCP/UDP forwarding proxy: a drop-in for Kubernetes' proxy-to-service";

pub(super) const LONG_ABOUT: &str = "\
TCP/UDP forwarding proxy: a drop-in for Kubernetes' proxy-to-service.

`proxy PROTO PORT TARGET [IDLE_TIMEOUT_SECONDS]`, with PROTO `tcp`, `udp` or `tcp,udp`,
takes the arguments of the old proxy-to-service:v2 image (PROTO PORT SERVICE
[IDLE_TIMEOUT_SECONDS]), so a Pod spec that ran `proxy-to-service udp 53 kube-dns.default 1`
runs `proxy udp 53 kube-dns.default 1`; `proxy tcp,udp 53 kube-dns.default 1` serves both
protocols from one process.

Logs go to stderr; set the level with --log-level or RUST_LOG. SIGINT and SIGTERM stop
accepting, let open connections and UDP sessions finish for the --drain time, and exit 0.

Under systemd socket activation (LISTEN_PID and LISTEN_FDS set for this process), `tcp`,
`udp` and `tcp,udp` forward from the sockets systemd passed instead of binding PORT and
--listen. With NOTIFY_SOCKET set (Type=notify), the proxy sends READY=1 once it listens
and STOPPING=1 when it starts draining. See deploy/systemd/.

Exit codes: 0 after a clean shutdown, 1 when the proxy cannot run (a listen address
cannot be bound, ...), 2 for bad arguments.";

pub(super) const TCP_LONG_ABOUT: &str = "\
Forward TCP connections from PORT to TARGET.

Compatible with the arguments of Kubernetes' proxy-to-service:v2 image: PORT, then
the service, then an optional idle timeout in seconds. Without --listen, the proxy
listens on all addresses: one dual-stack [::]:PORT socket, or 0.0.0.0:PORT where
IPv6 is not available.

--sni NAME=TARGET routes TLS connections by the server name of their ClientHello,
without decrypting them (SNI passthrough): NAME is a host name or *.DOMAIN; the rest
go to TARGET, which --sni makes optional (without it they are reset).

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

pub(super) const TCP_EXAMPLES: &str = "\
Examples:
  proxy tcp 53 kube-dns.default          forward port 53 to kube-dns.default:53
  proxy tcp 8080 web.default:80 600      close connections idle for 600 s
  proxy tcp 0 db:5432 --listen 127.0.0.1 a free port on 127.0.0.1 (logged at start)
  proxy tcp 8080 [::1]:80 --listen ::1 --listen 127.0.0.1:9090
  proxy tcp 443 web:443 --sni a.example=a:443 --sni '*.b.example=b:8443'";

pub(super) const UDP_LONG_ABOUT: &str = "\
Forward UDP datagrams from PORT to TARGET.

Compatible with the arguments of Kubernetes' proxy-to-service:v2 image: PORT, then
the service, then an optional idle timeout in seconds. Each client address gets a
session with its own upstream socket, so replies go back to the client that asked.
A session ends after IDLE_TIMEOUT_SECONDS without a datagram in either direction
(default 30 s; 0 means never, and sessions end only when --max-sessions evicts the
least recently used one). Datagrams of up to 65,507 bytes pass intact. On SIGINT or
SIGTERM, client datagrams are no longer read; replies already on their way still reach
their clients until a session has been quiet for 1 s, for up to the --drain time.

Without --listen, the proxy listens on all addresses: one dual-stack [::]:PORT socket,
or 0.0.0.0:PORT where IPv6 is not available.

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

pub(super) const UDP_EXAMPLES: &str = "\
Examples:
  proxy udp 53 kube-dns.default 1        forward port 53 to kube-dns.default:53; sessions end after 1 s idle
  proxy udp 53 kube-dns.default          the same with the default 30 s session idle timeout
  proxy udp 0 127.0.0.1:5353 --listen 127.0.0.1 --max-sessions 1000";

pub(super) const TCP_UDP_LONG_ABOUT: &str = "\
Forward TCP connections and UDP datagrams from PORT to TARGET, from one process.

`proxy tcp,udp 53 kube-dns.default 1` does what `proxy tcp 53 kube-dns.default 1` and
`proxy udp 53 kube-dns.default 1` do side by side: a DNS proxy for both transports.
`udp,tcp` is the same. The idle timeout applies to TCP connections and UDP sessions;
when absent, TCP connections have none and UDP sessions end after 30 s. The TCP options
apply to TCP only, the UDP options to UDP only.

Both protocols listen on the same addresses and port. With PORT 0, TCP binds first on a
port chosen by the kernel and UDP then binds that same port; if the UDP port is taken,
both try another port (up to 10 times).

Every duration takes a unit: 500ms, 30s, 5m, 1h; a bare number means seconds; at most
10 years (87600h).";

pub(super) const TCP_UDP_EXAMPLES: &str = "\
Examples:
  proxy tcp,udp 53 kube-dns.default 1    DNS on port 53, TCP and UDP; 1 s idle timeout
  proxy tcp,udp 53 kube-dns.default      no TCP idle timeout; UDP sessions end after 30 s idle
  proxy tcp,udp 0 127.0.0.1:53 --listen 127.0.0.1   a free port for both (logged at start)";

/// IDLE_TIMEOUT_SECONDS as `proxy tcp` describes it.
pub(super) const TCP_IDLE_HELP: &str = "Close a connection after this long without traffic in either \
direction (seconds, or a duration such as 500ms or 10m). 0 or absent means no idle timeout.";

/// IDLE_TIMEOUT_SECONDS as `proxy udp` describes it.
pub(super) const UDP_IDLE_HELP: &str = "End a session after this long without a datagram in either \
direction (seconds, or a duration such as 500ms or 10m). Absent means 30 s; 0 means no idle \
timeout (sessions then end only when --max-sessions evicts them).";

/// IDLE_TIMEOUT_SECONDS as `proxy tcp,udp` describes it.
pub(super) const TCP_UDP_IDLE_HELP: &str = "Close a TCP connection or end a UDP session after this long \
without traffic in either direction (seconds, or a duration such as 500ms or 10m). 0 means no \
idle timeout; absent means none for TCP and 30 s for UDP.";

/// `--idle-timeout` as `proxy udp` describes it.
pub(super) const UDP_IDLE_FLAG_HELP: &str = "End a UDP session after this long without a datagram in \
either direction; the same as IDLE_TIMEOUT_SECONDS. 0 means no idle timeout. [default: 30s]";

/// `--idle-timeout` as `proxy tcp,udp` describes it.
pub(super) const TCP_UDP_IDLE_FLAG_HELP: &str = "Close a TCP connection or end a UDP session after this \
long without traffic in either direction; the same as IDLE_TIMEOUT_SECONDS. 0 means no idle \
timeout. [default: none for TCP, 30s for UDP]";

/// `--idle-timeout` as `proxy tcp` describes it.
pub(super) const TCP_IDLE_FLAG_HELP: &str = "Close a connection after this long without traffic in \
either direction; the same as IDLE_TIMEOUT_SECONDS. 0 means no idle timeout (the default).";

/// `proxy run --help`.
pub(super) const RUN_LONG_ABOUT: &str = "\
Run every forward of a TOML configuration file (see examples/proxy.toml): global settings \
(admin address, log format), [defaults] for every forward, and any number of [[forward]] \
tables (name, protocol tcp|udp|tcp,udp, listen, target, and per-forward timeouts).

On SIGHUP the file is read again and applied: new forwards start, removed ones drain, \
changed ones take their new settings; established connections are never dropped (UDP \
sessions on a listen address that is removed end, as they reply from it). A file \
with an error is rejected with a logged error (naming the file, line and key) and the running \
configuration stays. --admin and --log-format on the command line win over the file; both \
apply at start only. SIGINT and SIGTERM drain every forward for the file's drain time.";
