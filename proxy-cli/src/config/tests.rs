//! The configuration file's tests: the keys, defaults and overrides, and errors that
//! name the file, the line and the key.

use super::*;
use proxy_core::spec::KEYS;
use proxy_core::{
    Balance, Cidr, Ejection, HealthCheck, Limits, Listen, ProxyProtocol, Rate, Transport,
};

fn err(text: &str) -> String {
    match parse(text, "proxy.toml") {
        Ok(c) => panic!("{text:?} parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_forwards_with_defaults_and_overrides() {
    let c = parse(
        r#"
admin = "127.0.0.1:9090"
log_format = "json"

[defaults]
connect_timeout = "2s"
idle_timeout = 600
drain = "3s"

[[forward]]
name = "dns"
protocol = "tcp,udp"
listen = 53
target = "kube-dns.kube-system:53"
udp_idle_timeout = "1s"

[[forward]]
protocol = "tcp"
listen = ["127.0.0.1:8080", "[::1]:8080"]
target = "web.default:80"
idle_timeout = 0
"#,
        "proxy.toml",
    )
    .unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(matches!(c.log_format, Some(LogFormat::Json)));
    assert_eq!(c.drain, Duration::from_secs(3));
    assert_eq!(c.forwards.len(), 2);
    let dns = &c.forwards[0];
    assert_eq!(dns.name, "dns");
    let dns = &dns.spec;
    assert_eq!(dns.protocol, Transport::Both);
    assert_eq!(dns.listen, Listen::Any(53));
    assert_eq!(dns.connect_timeout, Duration::from_secs(2));
    assert_eq!(dns.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(dns.udp_idle_timeout, Some(Duration::from_secs(1)));
    let web = &c.forwards[1];
    assert_eq!(web.name, "tcp 127.0.0.1:8080,[::1]:8080");
    assert_eq!(web.spec.protocol, Transport::Tcp);
    assert_eq!(web.spec.idle_timeout, None, "0 turns it off");
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"web\"\n",
            "proxy.toml:4: forward[0].target: invalid target `web`",
        ),
        (
            "[[forward]]\nprotocol = \"sctp\"\n",
            "proxy.toml:2: forward[0].protocol: `sctp` is not one of tcp, udp, tcp,udp",
        ),
        (
            "[[forward]]\nprotocol = \"tcp\"\ntarget = \"a:1\"\n",
            "forward[0].listen: is missing",
        ),
        (
            "[defaults]\nidle_timeout = \"5x\"\n",
            "proxy.toml:2: defaults.idle_timeout: `5x` is not a duration: unknown unit `x`",
        ),
        (
            "[defaults]\ntagret = 1\n",
            "proxy.toml:2: defaults.tagret: is not a setting; did you mean `target`?",
        ),
        (
            "[defaults]\nbacklog = \"many\"\n",
            "proxy.toml:2: defaults.backlog: `many` is not a whole number of 0 or more",
        ),
        (
            "[[forward]]\nprotocol = \"tcp\"\nlisten = \"localhost\"\ntarget = \"a:1\"\n",
            "proxy.toml:3: forward[0].listen: `localhost` is not a listen address",
        ),
        ("admin = \"nope\"\n", "proxy.toml:1: admin:"),
        ("threads = 0\n", "proxy.toml:1: threads: must be 1 to 1024"),
        (
            "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\naccept_proxy_from = [\"10.0.0.0/33\"]\n",
            "proxy.toml:5: forward[0].accept_proxy_from: invalid CIDR `10.0.0.0/33`",
        ),
        (
            "[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\nproxy_header_timeout = \"1s\"\n",
            "proxy.toml:5: forward[0].proxy_header_timeout: `proxy_header_timeout` needs `accept_proxy_from`",
        ),
        (
            "[defaults]\nhealth_check_rise = 0\n",
            "proxy.toml:2: defaults.health_check_rise: `0` is zero; it must be at least 1",
        ),
        (
            "[defaults]\nproxy_protocol = \"v3\"\n",
            "proxy.toml:2: defaults.proxy_protocol: `v3` is not one of v1, v2",
        ),
        (
            "[defaults]\nresolver = \"bind\"\nrelay = \"auto\"\n",
            "proxy.toml:2: defaults.resolver: `bind` is not one of system, hickory",
        ),
        (
            "[defaults]\nrelay = \"Copy\"\n",
            "proxy.toml:2: defaults.relay: `Copy` is not one of auto, copy",
        ),
        (
            "[defaults]\nbalance = \"fastest\"\n",
            "proxy.toml:2: defaults.balance: `fastest` is not one of round-robin, least-connections",
        ),
        (
            "[defaults]\naffinity_timeout = \"1h\"\n[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\n",
            "proxy.toml:2: defaults.affinity_timeout: `affinity_timeout` needs `balance = client-ip`",
        ),
        (
            "[defaults]\ntarget = \"a:1\"\n",
            "proxy.toml:2: defaults.target: belongs in a [[forward]]",
        ),
        (
            "[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = 1\ntarget = \"a:1\"\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 1\ntarget = \"a:1\"\n",
            "proxy.toml:7: forward[1].name: `a` is used twice",
        ),
        (
            "[defaults]\nconnect_timeout = 0\n",
            "proxy.toml:2: defaults.connect_timeout: `0` is zero; it must be longer than 0",
        ),
        ("[[forward]\n", "proxy.toml:1:"),
        // The library's checks, at the line of the key at fault.
        (
            "[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 53\ntarget = \"a:53\"\nmax_sessions = 0\n",
            "proxy.toml:6: forward[0].max_sessions: the UDP session limit must be at least 1",
        ),
        (
            "[defaults]\nbatch_size = 100\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 53\ntarget = \"a:53\"\n",
            "proxy.toml:2: defaults.batch_size: UDP batch size 100 is outside 1..=64",
        ),
        (
            "[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = 53\ntarget = \"a:53\"\npipe_size = \"1K\"\n",
            "proxy.toml:6: forward[0].pipe_size: pipe size 1024 is outside",
        ),
        // Values of the wrong shape, in the file's terms.
        (
            "[[forward]]\nname = \"a\"\nprotocol = \"udp\"\nlisten = 70000\ntarget = \"a:53\"\n",
            "proxy.toml:4: forward[0].listen: `70000` is not a listen address: use a port (0-65535)",
        ),
        (
            "threads = \"2\"\n",
            "proxy.toml:1: threads: `\"2\"` is not a whole number",
        ),
        (
            "[defaults]\nmax_connections = -1\n",
            "proxy.toml:2: defaults.max_connections: `-1` is not a whole number of 0 or more",
        ),
        (
            "[defaults]\nidle_timeout = true\n",
            "proxy.toml:2: defaults.idle_timeout: `true` is not a duration",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "{text:?}:\n{got}\nlacks {want:?}");
    }
}

#[test]
fn balance_and_ejection_keys() {
    let text = "[defaults]\nbalance = \"client-ip\"\naffinity_timeout = \"10m\"\neject_after = 2\n\
            health_check_interval = \"3s\"\nhealth_check_fall = 4\n\
            [[forward]]\nname = \"a\"\nprotocol = \"tcp,udp\"\nlisten = 80\ntarget = \"a:1\"\neject_for = \"30s\"\n\
            [[forward]]\nname = \"b\"\nprotocol = \"tcp\"\nlisten = 81\ntarget = \"b:1\"\nbalance = \"least-connections\"\neject_after = 0\nproxy_protocol = \"v1\"\n\
            accept_proxy_from = [\"10.0.0.0/8\", \"::1\"]\nproxy_header_timeout = \"2s\"\ndeny = [\"192.0.2.0/24\", \"::ffff:198.51.100.7\"]\n";
    let c = parse(text, "proxy.toml").unwrap();
    let a = &c.forwards[0].spec;
    assert_eq!(a.protocol, Transport::Both);
    assert_eq!(
        a.balance(),
        Balance::ClientIp {
            timeout: Duration::from_secs(600)
        }
    );
    assert_eq!(
        a.ejection(),
        Some(Ejection::new(2, Duration::from_secs(30)))
    );
    let b = &c.forwards[1].spec;
    assert_eq!(b.proxy_protocol, Some(ProxyProtocol::V1));
    let accept = b.accept_proxy().expect("accept_proxy_from");
    assert_eq!(
        accept.trusted,
        [
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(accept.timeout, Duration::from_secs(2));
    assert_eq!(a.accept_proxy(), None);
    let want = HealthCheck::every(Duration::from_secs(3)).with(Duration::from_secs(1), 2, 4);
    assert_eq!(a.health_check(), Some(want));
    assert_eq!(b.health_check(), Some(want), "from [defaults]");
    assert_eq!(
        b.deny,
        [
            "192.0.2.0/24".parse::<Cidr>().unwrap(),
            "198.51.100.7/32".parse().unwrap()
        ],
        "an IPv4-mapped address is its IPv4 address"
    );
    assert!(a.deny.is_empty());
    assert_eq!(a.proxy_protocol, None);
    assert_eq!(
        b.balance(),
        Balance::LeastConnections,
        "the default affinity_timeout waits for client-ip forwards"
    );
    assert_eq!(b.ejection(), None, "eject_after = 0 turns the default off");
}

#[test]
fn limit_keys() {
    let text = "[defaults]\nmax_per_source = 10\naccept_rate = 100\n\
            [[forward]]\nname = \"a\"\nprotocol = \"tcp,udp\"\nlisten = 80\ntarget = \"a:1\"\n\
            max_connections = 500\naccept_burst = 300\n\
            [[forward]]\nname = \"b\"\nprotocol = \"tcp\"\nlisten = 81\ntarget = \"b:1\"\n\
            max_per_source = 0\naccept_rate = 0\n";
    let c = parse(text, "proxy.toml").unwrap();
    let a = &c.forwards[0].spec;
    let mut want = Limits::default();
    want.max_connections = Some(500);
    want.max_per_source = Some(10);
    want.accept_rate = Some(Rate::per_second(100).burst(300));
    assert_eq!(
        a.limits(),
        want,
        "max_connections counts UDP sessions, as on the command line and in C"
    );
    let b = &c.forwards[1].spec;
    assert_eq!(
        b.limits(),
        Limits::default(),
        "0 lifts the defaults' limits"
    );
    let e =
        err("[[forward]]\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"a:1\"\naccept_burst = 5\n");
    assert_eq!(
        e,
        "proxy.toml:5: forward[0].accept_burst: `accept_burst` needs `accept_rate`"
    );
    let e = err("[defaults]\naccept_rate = 5\naccept_burst = 0\n");
    assert_eq!(
        e,
        "proxy.toml:3: defaults.accept_burst: the limit `accept_burst` must be at least 1"
    );
    let e = err("[defaults]\nmax_connections = -1\n");
    assert!(e.starts_with("proxy.toml:2"), "{e}");
}

#[test]
fn the_example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proxy.toml");
    let c = load(&path).unwrap();
    assert!(!c.forwards.is_empty());
    let dns = c.forwards.iter().find(|f| f.name == "dns").expect("dns");
    assert_eq!(dns.spec.socket_buffer, Some(8 << 20));
}

/// Sizes and durations read as on the command line: one parser each, whatever the
/// front end (`socket_buffer = "8M"` used to fail here while `--socket-buffer 8M`
/// worked).
#[test]
fn sizes_and_durations_read_as_the_flags_do() {
    let c = parse(
        "[[forward]]\nname = \"dns\"\nprotocol = \"tcp,udp\"\nlisten = 53\ntarget = \"a:53\"\n\
             socket_buffer = \"8M\"\npipe_size = \"1M\"\nidle_timeout = \"1h30m\"\n\
             connect_timeout = \"1.5s\"\n",
        "proxy.toml",
    )
    .unwrap();
    let f = &c.forwards[0].spec;
    assert_eq!(f.socket_buffer, Some(8 << 20));
    assert_eq!(f.pipe_size, 1 << 20);
    assert_eq!(f.idle_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(f.udp_idle_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(f.connect_timeout, Duration::from_millis(1500));
    // Plain numbers still mean bytes and seconds.
    let c = parse(
        "[defaults]\nsocket_buffer = 65536\nidle_timeout = 90\n[[forward]]\nname = \"a\"\n\
             protocol = \"udp\"\nlisten = 1\ntarget = \"a:1\"\n",
        "proxy.toml",
    )
    .unwrap();
    let udp = &c.forwards[0].spec;
    assert_eq!(udp.socket_buffer, Some(65_536));
    assert_eq!(
        udp.udp_idle_timeout,
        Some(Duration::from_secs(90)),
        "idle_timeout is UDP's too, as --idle-timeout is"
    );
    // A forward's own key wins over [defaults], whichever of the two it is.
    let c = parse(
        "[defaults]\nudp_idle_timeout = 1\n[[forward]]\nname = \"a\"\nprotocol = \"udp\"\n\
             listen = 1\ntarget = \"a:1\"\nidle_timeout = \"10m\"\n",
        "proxy.toml",
    )
    .unwrap();
    let udp = &c.forwards[0].spec;
    assert_eq!(
        udp.udp_idle_timeout,
        Some(Duration::from_secs(600)),
        "a forward's idle_timeout overrides a default udp_idle_timeout"
    );
    let e = err("[defaults]\nsocket_buffer = \"8T\"\n");
    assert!(
        e.starts_with("proxy.toml:2: defaults.socket_buffer: `8T` is not a size"),
        "{e}"
    );
    let e = err("[defaults]\npipe_size = \"lots\"\n");
    assert!(
        e.starts_with("proxy.toml:2: defaults.pipe_size: `lots`"),
        "{e}"
    );
}

/// The keys a key's example needs beside it, so the forward is valid.
fn companions(key: &str) -> &'static [(&'static str, &'static str)] {
    match key {
        "affinity_timeout" => &[("balance", "client-ip")],
        "accept_burst" => &[("accept_rate", "100")],
        "proxy_header_timeout" => &[("accept_proxy_from", "10.0.0.0/8")],
        "tls_cert" => &[("tls_key", "/etc/proxy/tls/site.key")],
        "tls_key" => &[("tls_cert", "/etc/proxy/tls/site.crt")],
        "tls_client_ca" => &[("tls_dir", "/etc/proxy/tls")],
        "upstream_ca" | "upstream_server_name" | "upstream_insecure" => &[("upstream_tls", "true")],
        _ => &[],
    }
}

/// The keys every forward here sets.
const BASE: [(&str, &str); 3] = [
    ("protocol", "tcp,udp"),
    ("listen", "127.0.0.1:0"),
    ("target", "127.0.0.1:9"),
];

/// `key = "value"` lines.
fn lines<'a>(keys: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> String {
    keys.into_iter()
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect()
}

/// A `tcp,udp` forward with `extra` lines, after `defaults` lines in [defaults].
fn file_with(defaults: &str, extra: &str) -> String {
    format!(
        "[defaults]\n{defaults}[[forward]]\nname = \"f\"\n{}{extra}",
        lines(&BASE)
    )
}

/// Every key of the table, with its example, in a [[forward]] and in [defaults] (but the
/// three a forward must set itself): a key the file cannot take fails here.
#[test]
fn every_key_takes_its_example_in_a_forward_and_in_defaults() {
    for key in KEYS {
        let example = (key.name, key.example);
        let keys = lines(companions(key.name).iter().chain([&example]));
        let text = if REQUIRED.contains(&key.name) {
            let base = BASE.iter().filter(|(k, _)| *k != key.name);
            format!("[[forward]]\n{}{keys}", lines(base))
        } else {
            file_with("", &keys)
        };
        let c = parse(&text, "proxy.toml").unwrap_or_else(|e| panic!("{text}\n{e}"));
        assert_eq!(key.get(&c.forwards[0].spec), key.example, "{text}");
        let text = file_with(&keys, "");
        if REQUIRED.contains(&key.name) {
            assert!(err(&text).contains("belongs in a [[forward]]"), "{text}");
            continue;
        }
        let c = parse(&text, "proxy.toml").unwrap_or_else(|e| panic!("{text}\n{e}"));
        assert_eq!(key.get(&c.forwards[0].spec), key.example, "{text}");
    }
}

/// Values in TOML's own types: integers, booleans and lists, as today's files write them.
#[test]
fn toml_types_become_the_keys_text() {
    let c = parse(
        &file_with(
            "reuse_port = true\nbacklog = 4096\nallow = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n",
            "socket_buffer = \"8M\"\npipe_size = 1048576\nidle_timeout = 90\n\
             name_servers = [\"10.96.0.10\", \"[fd00::10]:53\"]\n",
        ),
        "proxy.toml",
    )
    .unwrap();
    let f = &c.forwards[0].spec;
    assert!(f.reuse_port);
    assert_eq!(f.backlog, 4096);
    assert_eq!(
        f.allow,
        [
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "192.168.0.0/16".parse().unwrap()
        ]
    );
    assert_eq!(f.socket_buffer, Some(8 << 20), "socket_buffer = \"8M\"");
    assert_eq!(f.pipe_size, 1 << 20);
    assert_eq!(f.udp_idle_timeout, Some(Duration::from_secs(90)));
    assert_eq!(f.name_servers.len(), 2);
    for (listen, want) in [
        ("53", Listen::Any(53)),
        (
            "\"127.0.0.1:53\"",
            Listen::Addrs(vec!["127.0.0.1:53".parse().unwrap()]),
        ),
        (
            "[\"127.0.0.1:53\", \"[::1]:53\"]",
            Listen::Addrs(vec![
                "127.0.0.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ]),
        ),
    ] {
        let text =
            format!("[[forward]]\nprotocol = \"udp\"\nlisten = {listen}\ntarget = \"a:1\"\n");
        assert_eq!(
            parse(&text, "proxy.toml").unwrap().forwards[0].spec.listen,
            want
        );
    }
    let e = err(&file_with("", "allow = [[\"10.0.0.0/8\"]]\n"));
    assert_eq!(
        e,
        "proxy.toml:7: forward[0].allow: takes text, a number, true or false, or a list of \
         them; not a list of lists, a table or a date"
    );
}

/// The three bad files of the brief: each message names the file, the line and the key.
#[test]
fn bad_values_name_file_line_and_key() {
    let cases = [
        (
            file_with("", "max_sessions = 0\n"),
            "proxy.toml:7: forward[0].max_sessions: the UDP session limit must be at least 1",
        ),
        (
            "[[forward]]\nprotocol = \"udp\"\nlisten = 70000\ntarget = \"a:53\"\n".to_owned(),
            "proxy.toml:3: forward[0].listen: `70000` is not a listen address: use a port \
             (0-65535), or IP:PORT (127.0.0.1:53, [::1]:53), several separated by commas",
        ),
        (
            "threads = \"2\"\n".to_owned(),
            "proxy.toml:1: threads: `\"2\"` is not a whole number",
        ),
        (
            file_with("max_sessions = 0\n", ""),
            "proxy.toml:2: defaults.max_sessions: the UDP session limit must be at least 1",
        ),
        (
            file_with("", "idle_timout = 1\n"),
            "proxy.toml:7: forward[0].idle_timout: is not a setting; did you mean `idle_timeout`?",
        ),
        (
            file_with("", "drain = 1\n"),
            "proxy.toml:7: forward[0].drain: is global: set it in [defaults]",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&text), want, "{text}");
    }
}

/// What files said before they were read through the key table still reads the same:
/// 0 lifts a limit or turns ejection and health checks off, `proxy_protocol = "off"`,
/// `protocol = "tcp+udp"`.
#[test]
fn earlier_spellings_still_read() {
    let defaults = "max_connections = 10\neject_after = 3\nhealth_check_interval = \"5s\"\n\
                    proxy_protocol = \"v2\"\n";
    let forward = "max_connections = 0\neject_after = 0\nhealth_check_interval = 0\n\
                   proxy_protocol = \"off\"\n";
    let text = file_with(defaults, forward).replace("\"tcp,udp\"", "\"tcp+udp\"");
    let c = parse(&text, "proxy.toml").unwrap();
    let f = &c.forwards[0].spec;
    assert_eq!(f.protocol, Transport::Both);
    assert_eq!(f.max_connections, None);
    assert_eq!(f.ejection(), None);
    assert_eq!(f.health_check(), None);
    assert_eq!(f.proxy_protocol, None);
}

#[test]
fn the_summary_shows_each_forwards_target_and_an_http_forwards_routes() {
    let text = "[[forward]]\nname = \"dns\"\nprotocol = \"udp\"\nlisten = \"53\"\ntarget = \"10.0.0.10:53\"\n\n\
                [[forward]]\nname = \"web\"\nprotocol = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
                route = [\"/=web:80\", \"api.local/v1=api:8080\"]\n";
    let config = parse(text, "proxy.toml").unwrap();
    assert_eq!(
        summary(&config),
        [
            "forward `dns`: udp 53 -> 10.0.0.10:53",
            "forward `web`: http 127.0.0.1:8080 -> /=web:80, api.local/v1=api:8080",
        ]
    );
}
