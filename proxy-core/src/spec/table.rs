//! [`KEYS`], the table itself: each setting's name, help text, example, and the parser
//! and printer (from [`values`](super::values)) that tie its text to a
//! [`ForwardSpec`](super::ForwardSpec) field. What a [`Key`] is, and finding and setting
//! one, are [`keys`](super::keys)'.

use super::keys::{Applies, Key};
use super::values::{
    BALANCES, PROTOCOLS, PROXY_PROTOCOLS, RELAYS, RESOLVERS, at_least_one, boolean, choice,
    choice_name, cidrs, cookie_name, count, domain, duration, list, listen, name_server, optional,
    optional_count, optional_size, path, patterns, positive, server_name, show_list, show_optional,
    show_optional_count, show_path, show_timer, size, timer,
};
use crate::balance::Balance;
use crate::value::{show_duration, show_size};

/// Every setting of a forward, in the order front ends apply them.
pub static KEYS: &[Key] = &[
    Key {
        name: "protocol",
        value: "tcp|udp|tcp,udp",
        applies: Applies::Both,
        http: true,
        help: "The transports served: TCP connections, UDP datagrams, or both on the same \
               addresses and port.",
        example: "tcp,udp",
        set: |s, v| choice(v, PROTOCOLS).map(|x| s.protocol = x),
        get: |s| s.protocol.as_str().to_owned(),
    },
    Key {
        name: "listen",
        value: "PORT|IP:PORT,...",
        applies: Applies::Both,
        http: true,
        help: "Where to listen: a port on every address (one dual-stack [::] socket, or \
               0.0.0.0 without IPv6), or IP:PORT addresses. Port 0 takes a free port.",
        example: "127.0.0.1:8080",
        set: |s, v| listen(v).map(|x| s.listen = x),
        get: |s| s.listen.to_string(),
    },
    Key {
        name: "target",
        value: "HOST:PORT|srv:NAME",
        applies: Applies::Both,
        http: true,
        help: "Where to forward to: a host name, an IPv4 or [IPv6] address with a port, or \
               srv:NAME, whose SRV records give hosts, ports and weights.",
        example: "web.default:80",
        set: |s, v| {
            s.target = match v {
                "" => None,
                v => Some(v.parse().map_err(|e: crate::TargetError| e.to_string())?),
            };
            Ok(())
        },
        get: |s| {
            s.target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        },
    },
    Key {
        name: "resolver",
        value: "system|hickory",
        applies: Applies::Both,
        http: true,
        help: "How a host-name target is resolved: system uses the C library (/etc/hosts, \
               resolv.conf search and ndots), hickory asks the name servers itself and \
               follows record TTLs. srv: targets always use hickory.",
        example: "hickory",
        set: |s, v| choice(v, RESOLVERS).map(|x| s.resolver = x),
        get: |s| choice_name(&s.resolver, RESOLVERS),
    },
    Key {
        name: "name_servers",
        value: "IP[:PORT],...",
        applies: Applies::Both,
        http: true,
        help: "The DNS servers to ask (port 53 unless given), with hickory; empty: those \
               of /etc/resolv.conf.",
        example: "10.96.0.10:53,[fd00::10]:53",
        set: |s, v| list(v, name_server).map(|x| s.name_servers = x),
        get: |s| show_list(&s.name_servers),
    },
    Key {
        name: "dns_refresh",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "Look the target up again at this interval, whatever the TTL says; empty: \
               follow the TTL (the system resolver gives none: dns_fallback_ttl).",
        example: "10s",
        set: |s, v| optional(v).map(|x| s.dns_refresh = x),
        get: |s| show_optional(s.dns_refresh),
    },
    Key {
        name: "dns_fallback_ttl",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "How long an answer without a TTL is used.",
        example: "1m",
        set: |s, v| duration(v).map(|x| s.dns_fallback_ttl = x),
        get: |s| show_duration(s.dns_fallback_ttl),
    },
    Key {
        name: "dns_min_ttl",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "The shortest time an answer is used (a TTL of 0 is raised to it), and the \
               first retry delay after a failed lookup.",
        example: "5s",
        set: |s, v| duration(v).map(|x| s.dns_min_ttl = x),
        get: |s| show_duration(s.dns_min_ttl),
    },
    Key {
        name: "dns_max_ttl",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "The longest time an answer is used before it is looked up again.",
        example: "1m",
        set: |s, v| duration(v).map(|x| s.dns_max_ttl = x),
        get: |s| show_duration(s.dns_max_ttl),
    },
    Key {
        name: "connect_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: true,
        help: "Give up one connect attempt to one upstream address after this long; also \
               raises connect_total_timeout to at least this.",
        example: "2s",
        set: |s, v| {
            s.connect_timeout = positive(v)?;
            s.connect_total_timeout = s.connect_total_timeout.max(s.connect_timeout);
            Ok(())
        },
        get: |s| show_duration(s.connect_timeout),
    },
    Key {
        name: "connect_total_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: true,
        help: "Give up connecting (all attempts, across the target's addresses) after this \
               long.",
        example: "30s",
        set: |s, v| positive(v).map(|x| s.connect_total_timeout = x),
        get: |s| show_duration(s.connect_total_timeout),
    },
    Key {
        name: "idle_timeout",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "Close a TCP connection, or end a UDP session, after this long without \
               traffic in either direction; 0 turns it off. Sets udp_idle_timeout too \
               (default: none for TCP, 30s for UDP). HTTP: close a client connection \
               kept alive this long with no request (one in flight finishes first).",
        example: "10m",
        set: |s, v| {
            s.idle_timeout = timer(v)?;
            s.udp_idle_timeout = s.idle_timeout;
            Ok(())
        },
        get: |s| show_timer(s.idle_timeout),
    },
    Key {
        name: "udp_idle_timeout",
        value: "DURATION",
        applies: Applies::Udp,
        http: false,
        help: "End a UDP session after this long without a datagram in either direction; \
               0 keeps sessions until max_sessions evicts the least recently used.",
        example: "1s",
        set: |s, v| timer(v).map(|x| s.udp_idle_timeout = x),
        get: |s| show_timer(s.udp_idle_timeout),
    },
    Key {
        name: "half_close_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: false,
        help: "Once one direction has ended (a FIN was forwarded), close the connection \
               when the other has moved no byte for this long; 0 turns it off.",
        example: "5m",
        set: |s, v| timer(v).map(|x| s.half_close_timeout = x),
        get: |s| show_timer(s.half_close_timeout),
    },
    Key {
        name: "max_lifetime",
        value: "DURATION",
        applies: Applies::Tcp,
        http: false,
        help: "Close every connection at this age, busy or not; 0 turns it off.",
        example: "1h",
        set: |s, v| timer(v).map(|x| s.max_lifetime = x),
        get: |s| show_timer(s.max_lifetime),
    },
    Key {
        name: "reuse_port",
        value: "BOOL",
        applies: Applies::Both,
        http: true,
        help: "Set SO_REUSEPORT on the listeners, so several processes can share the port.",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.reuse_port = x),
        get: |s| s.reuse_port.to_string(),
    },
    Key {
        name: "dual_stack",
        value: "BOOL",
        applies: Applies::Both,
        http: true,
        help: "Whether a [::] listener takes IPv4 too; false binds IPv6 only, so 0.0.0.0 \
               can be bound beside it.",
        example: "false",
        set: |s, v| boolean(v).map(|x| s.dual_stack = x),
        get: |s| s.dual_stack.to_string(),
    },
    Key {
        name: "backlog",
        value: "N",
        applies: Applies::Tcp,
        http: true,
        help: "The listen backlog (the kernel caps it at net.core.somaxconn).",
        example: "4096",
        set: |s, v| count(v).map(|x| s.backlog = x),
        get: |s| s.backlog.to_string(),
    },
    Key {
        name: "balance",
        value: "POLICY",
        applies: Applies::Both,
        http: true,
        help: "How each new connection (or UDP session) picks one of the target's \
               addresses: round-robin (as kube-proxy), least-connections, two-choices (the \
               less loaded of two random ones), client-ip (sessionAffinity: ClientIP).",
        example: "least-connections",
        set: |s, v| choice(v, BALANCES).map(|x| s.balance = x),
        get: |s| {
            let kind = match s.balance {
                Balance::ClientIp { .. } => Balance::client_ip(),
                b => b,
            };
            choice_name(&kind, BALANCES)
        },
    },
    Key {
        name: "affinity_timeout",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "With balance = client-ip, how long a client keeps its address after its \
               last connection; empty: 3h, as kube-proxy.",
        example: "10m",
        set: |s, v| optional(v).map(|x| s.affinity_timeout = x),
        get: |s| show_optional(s.affinity_timeout),
    },
    Key {
        name: "eject_after",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "Skip an address after N failed connects in a row (UDP: ICMP \
               port-unreachable reports) for eject_for, then try it again; empty: off.",
        example: "3",
        set: |s, v| optional_count(v).map(|x| s.eject_after = x),
        get: |s| show_optional_count(s.eject_after),
    },
    Key {
        name: "eject_for",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "How long eject_after skips an address.",
        example: "30s",
        set: |s, v| positive(v).map(|x| s.eject_for = x),
        get: |s| show_duration(s.eject_for),
    },
    Key {
        name: "health_check_interval",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "Check every address of the target with a TCP connect at this interval (UDP \
               forwards check the same port over TCP); empty: off.",
        example: "5s",
        set: |s, v| optional(v).map(|x| s.health_check_interval = x),
        get: |s| show_optional(s.health_check_interval),
    },
    Key {
        name: "health_check_timeout",
        value: "DURATION",
        applies: Applies::Both,
        http: true,
        help: "How long one health check may take.",
        example: "500ms",
        set: |s, v| positive(v).map(|x| s.health_check_timeout = x),
        get: |s| show_duration(s.health_check_timeout),
    },
    Key {
        name: "health_check_rise",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "Passed checks in a row that bring a down address back.",
        example: "1",
        set: |s, v| at_least_one(v).map(|x| s.health_check_rise = x),
        get: |s| s.health_check_rise.to_string(),
    },
    Key {
        name: "health_check_fall",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "Failed checks in a row that mark an address down.",
        example: "2",
        set: |s, v| at_least_one(v).map(|x| s.health_check_fall = x),
        get: |s| s.health_check_fall.to_string(),
    },
    Key {
        name: "allow",
        value: "CIDR,...",
        applies: Applies::Both,
        http: true,
        help: "Serve only clients in these ranges (10.0.0.0/8, or one address); others \
               are reset (TCP) or their datagrams dropped (UDP), and counted. Empty: \
               every client.",
        example: "10.0.0.0/8,192.168.0.0/16",
        set: |s, v| cidrs(v).map(|x| s.allow = x),
        get: |s| show_list(&s.allow),
    },
    Key {
        name: "deny",
        value: "CIDR,...",
        applies: Applies::Both,
        http: true,
        help: "Never serve clients in these ranges, whatever allow says.",
        example: "10.1.0.0/16",
        set: |s, v| cidrs(v).map(|x| s.deny = x),
        get: |s| show_list(&s.deny),
    },
    Key {
        name: "max_connections",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "The most TCP connections (or UDP sessions) open at once, across the listen \
               addresses; past it new ones are refused and counted. Empty: no limit.",
        example: "1000",
        set: |s, v| optional_count(v).map(|x| s.max_connections = x),
        get: |s| show_optional_count(s.max_connections),
    },
    Key {
        name: "max_per_source",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "The most TCP connections (or UDP sessions) open at once from one client IP. \
               Empty: no limit.",
        example: "10",
        set: |s, v| optional_count(v).map(|x| s.max_per_source = x),
        get: |s| show_optional_count(s.max_per_source),
    },
    Key {
        name: "accept_rate",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "The most new TCP connections (or UDP sessions) admitted per second, on \
               average. Empty: no limit.",
        example: "100",
        set: |s, v| optional_count(v).map(|x| s.accept_rate = x),
        get: |s| show_optional_count(s.accept_rate),
    },
    Key {
        name: "accept_burst",
        value: "N",
        applies: Applies::Both,
        http: true,
        help: "How many accept_rate admits at once after a quiet spell; empty: the rate \
               (one second's worth).",
        example: "20",
        set: |s, v| optional_count(v).map(|x| s.accept_burst = x),
        get: |s| show_optional_count(s.accept_burst),
    },
    Key {
        name: "proxy_protocol",
        value: "v1|v2",
        applies: Applies::Both,
        http: false,
        help: "Send a PROXY protocol header (v1 text or v2 binary) to the upstream ahead of \
               each connection, carrying the client's address; UDP takes v2, one header \
               per datagram. Empty: none.",
        example: "v2",
        set: |s, v| choice(v, PROXY_PROTOCOLS).map(|x| s.proxy_protocol = x),
        get: |s| choice_name(&s.proxy_protocol, PROXY_PROTOCOLS),
    },
    Key {
        name: "accept_proxy_from",
        value: "CIDR,...",
        applies: Applies::Tcp,
        http: true,
        help: "Read a PROXY protocol header (v1 or v2) at the start of connections from \
               these peers (load balancers in front of this proxy); its client address \
               stands for the connection's. Their connections without one are closed.",
        example: "10.0.0.0/8",
        set: |s, v| cidrs(v).map(|x| s.accept_proxy_from = x),
        get: |s| show_list(&s.accept_proxy_from),
    },
    Key {
        name: "proxy_header_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: true,
        help: "How long an accept_proxy_from peer has to send its header.",
        example: "1s",
        set: |s, v| positive(v).map(|x| s.proxy_header_timeout = x),
        get: |s| show_duration(s.proxy_header_timeout),
    },
    Key {
        name: "sni",
        value: "NAME=TARGET[;KEY=VALUE],...",
        applies: Applies::Tcp,
        http: false,
        help: "TCP: route TLS connections by the server name their ClientHello asks for \
               (SNI), without decrypting: NAME (a host name, or *.DOMAIN for one more \
               label) goes to TARGET (port 443 unless given); an exact name wins over a \
               wildcard. No name, no match, or not TLS goes to `target`, or is reset when \
               there is none. A route may set its own dns_*, connect_*, balance, \
               affinity_timeout, eject_*, health_check_* and proxy_protocol after `;`.",
        example: "a.example=a.svc:8443,*.b.example=b.svc:443",
        set: |s, v| list(v, |r| r.parse::<super::SniRoute>()).map(|x| s.sni = x),
        get: |s| show_list(&s.sni),
    },
    Key {
        name: "sni_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: false,
        help: "With sni routes, how long a client has to send its whole ClientHello; one \
               that has not is closed.",
        example: "2s",
        set: |s, v| positive(v).map(|x| s.sni_timeout = x),
        get: |s| show_duration(s.sni_timeout),
    },
    Key {
        name: "tls_cert",
        value: "PATH",
        applies: Applies::Tcp,
        http: true,
        help: "Terminate TLS with this PEM certificate chain (leaf first), the default for \
               clients whose server name no tls_dir certificate serves; needs tls_key. \
               TLS 1.3 and 1.2 only. Read again on every reload.",
        example: "/etc/proxy/tls/site.crt",
        set: |s, v| path(v).map(|x| s.tls_cert = x),
        get: |s| show_path(&s.tls_cert),
    },
    Key {
        name: "tls_key",
        value: "PATH",
        applies: Applies::Tcp,
        http: true,
        help: "The PEM private key of tls_cert (PKCS#8, RSA or EC); may be the same file.",
        example: "/etc/proxy/tls/site.key",
        set: |s, v| path(v).map(|x| s.tls_key = x),
        get: |s| show_path(&s.tls_key),
    },
    Key {
        name: "tls_dir",
        value: "PATH",
        applies: Applies::Tcp,
        http: true,
        help: "Terminate TLS with the certificates of this directory, each chosen by the \
               server name a client asks for (its DNS subject alternative names, wildcards \
               too): NAME.pem holding a chain and its key, NAME.crt with NAME.key, or a \
               subdirectory with tls.crt and tls.key (a mounted Kubernetes TLS Secret).",
        example: "/etc/proxy/tls",
        set: |s, v| path(v).map(|x| s.tls_dir = x),
        get: |s| show_path(&s.tls_dir),
    },
    Key {
        name: "tls_client_ca",
        value: "PATH",
        applies: Applies::Tcp,
        http: true,
        help: "Require a client certificate signed by one of the CA certificates of this \
               PEM file; its common name goes to the access log and the PROXY v2 header.",
        example: "/etc/proxy/tls/clients-ca.crt",
        set: |s, v| path(v).map(|x| s.tls_client_ca = x),
        get: |s| show_path(&s.tls_client_ca),
    },
    Key {
        name: "tls_handshake_timeout",
        value: "DURATION",
        applies: Applies::Tcp,
        http: true,
        help: "How long a client has to complete its TLS handshake.",
        example: "3s",
        set: |s, v| positive(v).map(|x| s.tls_handshake_timeout = x),
        get: |s| show_duration(s.tls_handshake_timeout),
    },
    Key {
        name: "upstream_tls",
        value: "BOOL",
        applies: Applies::Tcp,
        http: true,
        help: "Connect to the upstream over TLS, verifying its certificate against the \
               system's CAs (or upstream_ca) and the target's name (or \
               upstream_server_name), which is also sent as SNI. HTTP forwards offer \
               HTTP/1.1 by ALPN and keep the connections alive; an HTTP route may set it \
               for itself. A service proxy's https:NAME:PORT URLs are reached over TLS \
               without it.",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.upstream_tls = x),
        get: |s| s.upstream_tls.to_string(),
    },
    Key {
        name: "upstream_ca",
        value: "PATH",
        applies: Applies::Tcp,
        http: true,
        help: "With upstream_tls (or for a service proxy's https: Services), trust only \
               the CA certificates of this PEM file.",
        example: "/etc/proxy/tls/upstream-ca.crt",
        set: |s, v| path(v).map(|x| s.upstream_ca = x),
        get: |s| show_path(&s.upstream_ca),
    },
    Key {
        name: "upstream_server_name",
        value: "NAME",
        applies: Applies::Tcp,
        http: true,
        help: "With upstream_tls, the name sent as SNI and checked in the upstream's \
               certificate, instead of the target's host (needed for IP targets whose \
               certificates name a host); a service proxy's https: Services are checked \
               against NAME.NAMESPACE.svc unless it is set.",
        example: "api.internal",
        set: |s, v| server_name(v).map(|x| s.upstream_server_name = x),
        get: |s| s.upstream_server_name.clone().unwrap_or_default(),
    },
    Key {
        name: "upstream_insecure",
        value: "BOOL",
        applies: Applies::Tcp,
        http: true,
        help: "With upstream_tls (or for a service proxy's https: Services, as kubectl \
               users do for self-signed in-cluster ones), do not verify the upstream's \
               certificate (a warning is logged at every start): anyone on the path can \
               impersonate the upstream.",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.upstream_insecure = x),
        get: |s| s.upstream_insecure.to_string(),
    },
    Key {
        name: "relay",
        value: "auto|copy|sockmap",
        applies: Applies::Tcp,
        http: false,
        help: "How bytes are relayed: auto uses splice(2) on Linux (no copy to user \
               space), copy always copies through user-space buffers, sockmap is auto \
               but moves a connection that keeps trading small messages into the kernel \
               (a BPF socket map: Linux 5.10+, CAP_BPF and CAP_NET_ADMIN; not with TLS), \
               where its bytes no longer wake the proxy.",
        example: "copy",
        set: |s, v| choice(v, RELAYS).map(|x| s.relay = x),
        get: |s| choice_name(&s.relay, RELAYS),
    },
    Key {
        name: "pipe_size",
        value: "SIZE",
        applies: Applies::Tcp,
        http: false,
        help: "The size of each splice pipe, 4K to 1G.",
        example: "1M",
        set: |s, v| size(v).map(|x| s.pipe_size = x),
        get: |s| show_size(s.pipe_size),
    },
    Key {
        name: "buffer_size",
        value: "SIZE",
        applies: Applies::Tcp,
        http: false,
        help: "The size of each copy buffer (relay = copy, or where splice cannot be \
               used), 1K to 16M.",
        example: "128K",
        set: |s, v| size(v).map(|x| s.buffer_size = x),
        get: |s| show_size(s.buffer_size),
    },
    Key {
        name: "max_sessions",
        value: "N",
        applies: Applies::Udp,
        http: false,
        help: "The most UDP sessions (client addresses) per listen address; a new client \
               beyond it evicts the least recently used session.",
        example: "1000",
        set: |s, v| count(v).map(|x| s.max_sessions = x),
        get: |s| s.max_sessions.to_string(),
    },
    Key {
        name: "batch_size",
        value: "N",
        applies: Applies::Udp,
        http: false,
        help: "UDP datagrams read or sent per system call (recvmmsg/sendmmsg), 1 to 64.",
        example: "8",
        set: |s, v| count(v).map(|x| s.batch_size = x),
        get: |s| s.batch_size.to_string(),
    },
    Key {
        name: "socket_buffer",
        value: "SIZE",
        applies: Applies::Udp,
        http: false,
        help: "The receive and send buffer of each UDP socket; 0 keeps the system's \
               default. Past net.core.rmem_max with CAP_NET_ADMIN, else capped at it.",
        example: "8M",
        set: |s, v| size(v).map(|n| s.socket_buffer = Some(n).filter(|n| *n > 0)),
        get: |s| show_size(s.socket_buffer.unwrap_or(0)),
    },
    Key {
        name: "route",
        value: "[HOST]/PATH=TARGET[;KEY=VALUE],...",
        applies: Applies::Http,
        http: true,
        help: "HTTP: requests for HOST (a name, or *.DOMAIN for one more label; none: any) \
               whose path starts with PATH (by whole segments) go to TARGET (port 80 unless \
               given); the most specific host, then the longest path, wins. A route may set \
               its own resolver, dns_*, connect_*, balance, affinity_timeout, eject_*, \
               health_check_*, sticky_cookie, request_timeout, max_request_body, retries \
               and upstream_* (TLS to its upstream) after `;`. `target` is the route \
               /=TARGET.",
        example: "shop.example/api=api.shop:8080;balance=least-connections",
        set: |s, v| list(v, |r| r.parse::<super::Route>()).map(|x| s.routes = x),
        get: |s| show_list(&s.routes),
    },
    Key {
        name: "sticky_cookie",
        value: "NAME",
        applies: Applies::Http,
        http: true,
        help: "HTTP: keep each client on one upstream address with a cookie of this name, \
               set on its first response; an address that is gone or ejected is replaced. \
               Empty: no cookie.",
        example: "SERVERID",
        set: |s, v| cookie_name(v).map(|x| s.sticky_cookie = x),
        get: |s| s.sticky_cookie.clone().unwrap_or_default(),
    },
    Key {
        name: "request_timeout",
        value: "DURATION",
        applies: Applies::Http,
        http: true,
        help: "HTTP: how long an upstream has to start its response once the request is \
               sent (504 Gateway Timeout after it); 0 turns it off.",
        example: "5s",
        set: |s, v| timer(v).map(|x| s.request_timeout = x),
        get: |s| show_timer(s.request_timeout),
    },
    Key {
        name: "header_timeout",
        value: "DURATION",
        applies: Applies::Http,
        http: true,
        help: "HTTP: how long a client has to send a request's head (request line and \
               headers) once it starts, against slow clients; the connection is closed \
               past it. 0 turns it off.",
        example: "10s",
        set: |s, v| timer(v).map(|x| s.header_timeout = x),
        get: |s| show_timer(s.header_timeout),
    },
    Key {
        name: "max_request_body",
        value: "SIZE",
        applies: Applies::Http,
        http: true,
        help: "HTTP: the largest request body passed on (413 Content Too Large past it, \
               from the Content-Length or as the body streams); empty: no limit.",
        example: "8M",
        set: |s, v| optional_size(v).map(|x| s.max_request_body = x),
        get: |s| s.max_request_body.map(show_size).unwrap_or_default(),
    },
    Key {
        name: "max_header_size",
        value: "SIZE",
        applies: Applies::Http,
        http: true,
        help: "HTTP: the largest request head (request line and headers) read from a \
               client, 1K to 1M (431 Request Header Fields Too Large past it).",
        example: "16K",
        set: |s, v| size(v).map(|x| s.max_header_size = x),
        get: |s| show_size(s.max_header_size),
    },
    Key {
        name: "retries",
        value: "N",
        applies: Applies::Http,
        http: true,
        help: "HTTP: how many more times an idempotent request (GET, HEAD, OPTIONS, PUT, \
               DELETE, TRACE) is tried, on another connection, when its connection failed \
               before any answer: refused, reset or closed (a kept-alive connection the \
               upstream closed). Never after an answer started or a timeout.",
        example: "3",
        set: |s, v| count(v).map(|x| s.retries = x),
        get: |s| s.retries.to_string(),
    },
    Key {
        name: "service_proxy",
        value: "BOOL",
        applies: Applies::Http,
        http: true,
        help: "HTTP: answer the API server's service proxy URL, \
               /api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH, from cluster \
               DNS, as kubectl proxy does through the API server: NAME.NS.svc.CLUSTER_DOMAIN \
               at PORT (a port name through its SRV record; no port: 80), every address \
               balanced with failover; https: Services get 502 (no TLS to upstreams yet). \
               Routes may coexist: the service URL wins for its paths, routes serve the \
               rest, and what no route serves gets 404. accept_hosts, accept_paths, \
               reject_paths and reject_methods (403) filter what the service proxy answers \
               (service URLs and that 404), not what routes serve (allow and deny do).",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.service_proxy = x),
        get: |s| s.service_proxy.to_string(),
    },
    Key {
        name: "cluster_domain",
        value: "DOMAIN",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: the cluster's DNS domain, of Service names \
               NAME.NS.svc.DOMAIN.",
        example: "cluster.example",
        set: |s, v| domain(v).map(|x| s.cluster_domain = x),
        get: |s| s.cluster_domain.clone(),
    },
    Key {
        name: "accept_hosts",
        value: "REGEX,...",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: serve only requests whose Host (without its port) \
               matches one of these regular expressions; 403 Forbidden otherwise. [::1] \
               keeps its brackets. kubectl proxy's --accept-hosts.",
        example: "^localhost$,^proxy[.]example$",
        set: |s, v| patterns(v).map(|x| s.accept_hosts = x),
        get: |s| s.accept_hosts.clone(),
    },
    Key {
        name: "accept_paths",
        value: "REGEX,...",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: serve only paths (percent-decoded) matching one of these \
               regular expressions; 403 otherwise. kubectl proxy's --accept-paths.",
        example: "^/api/v1/namespaces/default/",
        set: |s, v| patterns(v).map(|x| s.accept_paths = x),
        get: |s| s.accept_paths.clone(),
    },
    Key {
        name: "reject_paths",
        value: "REGEX,...",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: refuse (403) paths matching one of these regular \
               expressions, before accept_paths. kubectl proxy's --reject-paths.",
        example: "^/api/.*/pods/.*/exec,^/api/.*/secrets",
        set: |s, v| patterns(v).map(|x| s.reject_paths = x),
        get: |s| s.reject_paths.clone(),
    },
    Key {
        name: "reject_methods",
        value: "REGEX,...",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: refuse (403) methods matching one of these regular \
               expressions. An empty pattern matches everything, as in kubectl. kubectl \
               proxy's --reject-methods.",
        example: "^POST$,^DELETE$",
        set: |s, v| patterns(v).map(|x| s.reject_methods = x),
        get: |s| s.reject_methods.clone(),
    },
    Key {
        name: "rewrite_html",
        value: "BOOL",
        applies: Applies::Http,
        http: true,
        help: "HTTP, service_proxy: rewrite links (href, src, action, ...) in text/html \
               answers into the service proxy's prefix, as the API server does. Off by \
               default: it breaks single-page apps that build their own URLs.",
        example: "true",
        set: |s, v| boolean(v).map(|x| s.rewrite_html = x),
        get: |s| s.rewrite_html.to_string(),
    },
];
