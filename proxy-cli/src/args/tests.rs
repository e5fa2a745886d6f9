use std::net::IpAddr;

use clap::CommandFactory;
use proxy_core::spec::{Applies, KEYS};
use proxy_core::{Balance, ForwardSpec, Listen, Transport};

use super::keys::{BOTH, HTTP, TCP, UDP, keys_for};
use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied()))
}

/// The spec of a `proxy tcp|udp|tcp,udp|forward ...` command line.
fn spec(args: &[&str]) -> Result<ForwardSpec, UsageError> {
    match parse(args)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .command
    {
        Command::Tcp(a) => a.spec(),
        Command::Udp(a) => a.spec(),
        Command::TcpUdp(a) => a.spec(),
        Command::Forward(a) => a.plan().map(|p| p.settings),
        Command::Http(a) => a.spec(),
        Command::ServiceProxy(a) => a.spec(),
        Command::Run(_) | Command::PortForwardServer(_) => panic!("no spec"),
    }
}

fn ok(args: &[&str]) -> ForwardSpec {
    spec(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Every key of the library's table is a flag of every subcommand whose transports use
/// it, taking the key's example to the spec; a key added to the table that the command
/// line cannot set fails here.
#[test]
fn every_key_is_a_flag_of_the_subcommands_that_use_it() {
    let commands: [(&[&str], u8); 5] = [
        (&["tcp", "80", "web:80"], TCP),
        (&["udp", "53", "dns:53"], UDP),
        (&["tcp,udp", "53", "dns:53"], BOTH),
        (&["forward", "web", "8080:80"], BOTH),
        (&["http", "80", "web:80"], HTTP),
    ];
    let mut covered = std::collections::HashSet::new();
    for (command, transports) in commands {
        for key in keys_for(transports) {
            covered.insert(key.name);
            let flag = key.flag();
            let with_value = format!("{flag}={}", key.example);
            let mut args = command.to_vec();
            // Keys that need another one set.
            match key.name {
                "affinity_timeout" => args.extend(["--balance", "client-ip"]),
                "accept_burst" => args.extend(["--accept-rate", "100"]),
                "tls_cert" => args.extend(["--tls-key", "/etc/proxy/tls/site.key"]),
                "tls_key" => args.extend(["--tls-cert", "/etc/proxy/tls/site.crt"]),
                "tls_client_ca" => args.extend(["--tls-dir", "/etc/proxy/tls"]),
                "upstream_ca" | "upstream_server_name" | "upstream_insecure" => {
                    args.push("--upstream-tls");
                }
                _ => {}
            }
            args.push(&with_value);
            let got = ok(&args);
            assert_eq!(key.get(&got), key.example, "{args:?}");
        }
        let grammar = ["protocol", "listen", "target"];
        let others = KEYS.iter().filter(|k| !grammar.contains(&k.name));
        for key in others.filter(|k| !keys_for(transports).any(|f| f.name == k.name)) {
            let flag = key.flag();
            let mut args = command.to_vec();
            args.extend([flag.as_str(), key.example]);
            let e = parse(&args).expect_err(&format!("{args:?} takes {flag}"));
            assert!(e.to_string().contains(&flag), "{args:?}: {e}");
        }
    }
    let grammar = ["protocol", "listen", "target"];
    for key in KEYS.iter().filter(|k| !grammar.contains(&k.name)) {
        assert!(covered.contains(key.name), "no flag for {}", key.name);
    }
}

#[test]
fn flags_of_one_transport_are_not_the_other_s() {
    for key in KEYS {
        let (command, other) = match key.applies {
            Applies::Tcp => ("udp", "--pipe-size"),
            Applies::Udp => ("tcp", "--max-sessions"),
            Applies::Http => ("tcp", "--max-sessions"),
            Applies::Both => continue,
        };
        let e = parse(&[command, "53", "web", &key.flag(), key.example]).unwrap_err();
        assert!(e.to_string().contains(&key.flag()), "{e}");
        assert!(parse(&[command, "53", "web", other, "1"]).is_err());
    }
}

#[test]
fn the_seed_form_is_one_spec() {
    let s = ok(&["udp", "53", "kube-dns.default", "1"]);
    assert_eq!(s.protocol, Transport::Udp);
    assert_eq!(s.listen, Listen::Any(53));
    assert_eq!(s.target.unwrap().to_string(), "kube-dns.default:53");
    assert_eq!(s.udp_idle_timeout, secs(1));

    let s = ok(&[
        "tcp",
        "8080",
        "web.default:80",
        "600",
        "--listen",
        "127.0.0.1",
    ]);
    assert_eq!(s.protocol, Transport::Tcp);
    assert_eq!(s.idle_timeout, secs(600));
    assert_eq!(
        s.listen,
        Listen::Addrs(vec!["127.0.0.1:8080".parse().unwrap()])
    );
    let s = ok(&[
        "tcp",
        "80",
        "[::1]",
        "--listen",
        "::1",
        "--listen",
        "127.0.0.1:9090",
    ]);
    assert_eq!(s.target.unwrap().to_string(), "[::1]:80");
    assert_eq!(
        s.listen,
        Listen::Addrs(vec![
            "[::1]:80".parse().unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        ])
    );
    assert_eq!(ok(&["udp,tcp", "53", "dns"]).protocol, Transport::Both);
    let s = ok(&["tcp", "8080", "srv:_http._tcp.web.default"]);
    assert_eq!(s.target.unwrap().to_string(), "srv:_http._tcp.web.default");
}

#[test]
fn the_idle_timeout_is_the_positional_or_the_flag_for_both_transports() {
    let s = ok(&["tcp", "80", "web"]);
    assert_eq!((s.idle_timeout, s.udp_idle_timeout), (None, secs(30)));
    let s = ok(&["tcp,udp", "53", "dns"]);
    assert_eq!((s.idle_timeout, s.udp_idle_timeout), (None, secs(30)));
    let s = ok(&["tcp,udp", "53", "dns", "1"]);
    assert_eq!((s.idle_timeout, s.udp_idle_timeout), (secs(1), secs(1)));
    let s = ok(&["udp", "53", "dns", "0"]);
    assert_eq!(s.udp_idle_timeout, None);
    let s = ok(&["udp", "53", "dns", "--idle-timeout", "500ms"]);
    assert_eq!(s.udp_idle_timeout, Some(Duration::from_millis(500)));
    // The table's order: `idle_timeout`, then `udp_idle_timeout` for UDP alone.
    let s = ok(&[
        "tcp,udp",
        "53",
        "dns",
        "--udp-idle-timeout",
        "1s",
        "--idle-timeout",
        "10m",
    ]);
    assert_eq!((s.idle_timeout, s.udp_idle_timeout), (secs(600), secs(1)));
    let e = parse(&["tcp", "80", "web", "5", "--idle-timeout", "6"]).unwrap_err();
    assert!(e.to_string().contains("cannot be used with"), "{e}");
}

#[test]
fn a_long_connect_attempt_raises_the_default_budget() {
    let s = ok(&["tcp", "80", "web", "--connect-timeout", "20s"]);
    assert_eq!(s.connect_total_timeout, Duration::from_secs(20));
    let e = spec(&[
        "tcp",
        "80",
        "web",
        "--connect-timeout",
        "20s",
        "--connect-total-timeout",
        "10s",
    ])
    .unwrap_err();
    assert!(e.0.contains("--connect-timeout"), "{e}");
}

#[test]
fn lists_repeat_and_take_commas_and_booleans_need_no_value() {
    let s = ok(&[
        "tcp",
        "80",
        "web",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "192.168.0.0/16,172.16.0.0/12",
        "--deny",
        "10.1.2.3",
        "--reuse-port",
        "--dual-stack=false",
    ]);
    assert_eq!(s.allow.len(), 3);
    assert_eq!(s.deny.len(), 1);
    assert!(s.reuse_port);
    assert!(!s.dual_stack);
    let s = ok(&[
        "tcp",
        "80",
        "web",
        "--balance",
        "client-ip",
        "--affinity-timeout",
        "10m",
    ]);
    assert_eq!(
        s.balance(),
        Balance::ClientIp {
            timeout: Duration::from_secs(600)
        }
    );
}

#[test]
fn bad_tokens_are_named_with_exit_code_2() {
    let cases: [&[&str]; 16] = [
        &["tcp", "abc", "x"],
        &["tcp", "80", "web:http"],
        &["tcp", "80", "web", "5x"],
        &["tcp", "80", "web", "-1"],
        &["tcp", "80", "web", "--connect-timeout", "-1"],
        &["tcp", "80", "web", "--listen", "nowhere"],
        &["tcp", "80", "web", "--pipe-size", "12T"],
        &["tcp", "80", "web", "--pipe-size", "1K"],
        &["tcp", "80", "web", "--drain", "soon"],
        &["tcp", "80", "web", "--balance", "random"],
        &["tcp", "80", "web", "--allow", "10.0.0.0/33"],
        &["tcp", "80", "web", "--max-connections", "0"],
        &["udp", "53", "web", "--socket-buffer", "4X"],
        &["udp", "53", "web", "--batch-size", "65"],
        &["udp", "53", "web", "--max-sessions", "0"],
        &["tcp,udp", "53", "web", "--proxy-protocol", "v1"],
    ];
    for args in cases {
        let e = parse(args).expect_err(&format!("{args:?}"));
        let bad = args.last().unwrap();
        let bad = if *bad == "x" { "abc" } else { bad };
        assert!(e.to_string().contains(&format!("'{bad}'")), "{args:?}: {e}");
        assert_eq!(e.exit_code(), 2);
    }
    let e = parse(&["tcp", "80", "web", "5x"]).unwrap_err().to_string();
    assert!(
        e.contains("invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]'"),
        "{e}"
    );
    // PROXY v1 is fine for TCP alone.
    ok(&["tcp", "80", "web", "--proxy-protocol", "v1"]);
}

#[test]
fn rules_between_flags_name_the_flag() {
    let cases: [(&[&str], &str); 3] = [
        (&["tcp", "0", "web"], "TARGET 'web' has no port"),
        (
            &["tcp", "80", "web", "--affinity-timeout", "1m"],
            "--affinity-timeout",
        ),
        (
            &["tcp", "80", "web", "--accept-burst", "5"],
            "--accept-burst",
        ),
    ];
    for (args, want) in cases {
        let e = spec(args).unwrap_err();
        assert!(e.0.contains(want), "{args:?}: {e}");
    }
    let e = spec(&["udp", "0", "[::1]"]).unwrap_err();
    assert!(e.0.contains("'[::1]:PORT'"), "{e}");
}

#[test]
fn listen_and_port_values() {
    let v4: IpAddr = "127.0.0.1".parse().unwrap();
    let s = ok(&[
        "tcp",
        "0",
        "web:80",
        "--listen",
        "[::1]",
        "--listen",
        "127.0.0.1",
    ]);
    assert_eq!(
        s.listen,
        Listen::Addrs(vec!["[::1]:0".parse().unwrap(), (v4, 0).into()])
    );
    for bad in ["localhost", "127.0.0.1:x", "[::1", "1.2.3"] {
        let e = parse(&["tcp", "80", "web", "--listen", bad]).unwrap_err();
        assert!(e.to_string().contains(&format!("`{bad}`")), "{bad:?}: {e}");
    }
    for bad in ["+80", "65536"] {
        let e = parse(&["tcp", bad, "web:80"]).unwrap_err();
        assert!(e.to_string().contains(&format!("`{bad}`")), "{bad:?}: {e}");
    }
}

#[test]
fn global_flags() {
    let cli = parse(&["tcp", "80", "web", "--log-level", "debug", "--threads", "2"]).unwrap();
    assert_eq!(cli.log_filter(), "debug");
    assert_eq!(cli.threads, Some(2));
    for bad in ["0", "1025"] {
        assert!(parse(&["--threads", bad, "tcp", "80", "web"]).is_err());
    }
    let cli = parse(&[
        "--admin",
        "127.0.0.1:9090",
        "--log-format",
        "json",
        "run",
        "-c",
        "f",
    ])
    .unwrap();
    assert_eq!(cli.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(cli.log_format, LogFormat::Json);
    let e = parse(&["--admin", "9090", "tcp", "80", "web"]).unwrap_err();
    assert!(e.to_string().contains("`9090`"), "{e}");
}

#[test]
fn service_proxy_takes_kubectl_proxys_grammar_and_defaults() {
    let spec = ok(&["service-proxy"]);
    assert!(spec.service_proxy);
    assert_eq!(spec.listen.to_string(), "127.0.0.1:8001");
    assert_eq!(spec.accept_hosts, proxy_core::spec::DEFAULT_ACCEPT_HOSTS);
    assert_eq!(spec.reject_paths, proxy_core::spec::DEFAULT_REJECT_PATHS);
    assert_eq!(spec.cluster_domain, "cluster.local");
    assert!(!spec.rewrite_html);
    let spec = ok(&[
        "service-proxy",
        "-p",
        "0",
        "--address",
        "::1",
        "--accept-hosts",
        "^a$",
        "--accept-hosts",
        "^b$",
        "--reject-methods=^POST$",
        "--cluster-domain",
        "Cluster.Example.",
        "--rewrite-html",
    ]);
    assert_eq!(spec.listen.to_string(), "[::1]:0");
    assert_eq!(spec.accept_hosts, "^a$,^b$");
    assert_eq!(spec.reject_methods, "^POST$");
    assert_eq!(spec.cluster_domain, "cluster.example");
    assert!(spec.rewrite_html);
}

#[test]
fn service_proxy_names_a_filter_pattern_that_does_not_compile() {
    // Balanced, so the key's light check passes; the regex crate refuses it.
    let e = spec(&["service-proxy", "--reject-paths", "^/a,x{2,1}"]).unwrap_err();
    assert!(e.0.contains("--reject-paths") && e.0.contains("x{2"), "{e}");
    assert!(parse(&["service-proxy", "--accept-paths", "^(a"]).is_err());
}

#[test]
fn http_takes_a_default_route_given_as_a_route() {
    let routed = ok(&[
        "http",
        "8080",
        "--route",
        "/=web:8080",
        "--route",
        "/api=api:80",
    ]);
    let routes: Vec<String> = routed
        .http_routes()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(routes, ["/=web:8080", "/api=api:80"]);
    // TARGET is the route `/`: given twice, the error says so.
    let twice = spec(&["http", "8080", "web:80", "--route", "/=web:8080"]).unwrap_err();
    let twice = twice.to_string();
    assert!(
        twice.contains("a second route for the same host and path"),
        "{twice}"
    );
}
