//! `proxy tcp PORT [TARGET] --sni NAME=TARGET...` and `sni = [...]` in a config file:
//! real `openssl s_client`s reach the `openssl s_server` their server name picks (each
//! presents a certificate of its own name), the access log names the server asked for,
//! the counters show what was refused, and bad routes are usage errors naming the token.

mod support;

use std::net::SocketAddr;

use proxy_testkit::process::TempPath;
use proxy_testkit::tls::{OpensslServer, presented_name};
use support::proxy::{Proxy, run};

/// The listen address of the "Forwarding from ADDR -> DESTINATION" line.
fn listening(proxy: &Proxy, destination: &str) -> SocketAddr {
    let line = proxy.expect_line("the Forwarding line", |l| {
        l.contains("Forwarding from") && l.contains(&format!(" -> {destination}"))
    });
    let from = line.split("Forwarding from ").nth(1).unwrap();
    from.split(" -> ").next().unwrap().parse().unwrap()
}

#[test]
fn tls_clients_reach_the_server_their_name_picks_and_the_access_log_names_it() {
    let [a, b, default] = ["a.example", "x.b.example", "default.example"].map(OpensslServer::start);
    let (route_a, route_b) = (
        format!("a.example={}", a.addr),
        format!("*.b.example={}", b.addr),
    );
    let target = default.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--sni",
        &route_a,
        "--sni",
        &route_b,
    ]);
    let addr = listening(&proxy, &format!("{target}, by SNI {route_a}, {route_b}"));
    for (asked, reached) in [
        (Some("a.example"), "a.example"),
        (Some("other.B.example"), "x.b.example"),
        (Some("b.example"), "default.example"),
        (None, "default.example"),
    ] {
        assert_eq!(
            presented_name(addr, asked).as_deref(),
            Ok(reached),
            "{asked:?}"
        );
    }
    proxy.expect_line("an access line naming the server", |l| {
        l.contains("proxy_core::access")
            && l.contains("sni=\"other.b.example\"")
            && l.contains(&format!("upstream={}", b.addr))
    });
}

#[test]
fn a_config_file_forward_with_sni_routes_alone_resets_the_rest_and_counts_them() {
    let a = OpensslServer::start("a.example");
    let file = TempPath::with_contents(
        "sni.toml",
        &format!(
            "[[forward]]\nname = \"tls\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:0\"\n\
             sni = [\"a.example={}\"]\nsni_timeout = \"2s\"\n",
            a.addr
        ),
    );
    let path = file.path().to_str().unwrap();

    let (code, out, err) = run(&["run", "--config", path, "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        (out.clone() + &err).contains(&format!("-> SNI a.example={}", a.addr)),
        "{out}{err}"
    );

    let proxy = Proxy::start(&["run", "--config", path, "--admin", "127.0.0.1:0"]);
    let admin = proxy.expect_line("the admin address", |l| l.contains("admin listening on "));
    let admin_addr: SocketAddr = (admin.split("admin listening on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {admin}"));
    let addr = listening(
        &proxy,
        &format!("by SNI a.example={} (others reset)", a.addr),
    );
    assert_eq!(
        presented_name(addr, Some("a.example")).as_deref(),
        Ok("a.example")
    );
    let refused = presented_name(addr, Some("b.example")).unwrap_err();
    assert!(refused.contains("errno=104"), "not reset: {refused}");
    let metrics = proxy_testkit::http::http_get(admin_addr, "localhost", "/metrics");
    let line = (metrics.text().lines())
        .find(|l| l.starts_with("proxy_sni_no_route_total{"))
        .map(str::to_owned);
    assert!(
        line.as_deref().is_some_and(|l| l.ends_with(" 1")),
        "{line:?}"
    );
}

#[test]
fn bad_sni_flags_are_usage_errors_naming_the_token() {
    for (args, says) in [
        (&["tcp", "443"][..], "no TARGET"),
        (
            &["tcp", "443", "--sni", "a.example"],
            "`a.example`: an SNI route is NAME=TARGET",
        ),
        (
            &["tcp", "443", "--sni", "a.example=web:https"],
            "`a.example=web:https`",
        ),
        (
            &["tcp", "443", "--sni", "a.example=a:1,a.example=b:1"],
            "`a.example=b:1`: a second route for the same name",
        ),
        (
            &["tcp", "443", "--sni", "a.example=a:1;sticky_cookie=S"],
            "`sticky_cookie` is not a setting a route takes",
        ),
        (
            &["tcp", "443", "web:443", "--sni-timeout", "0"],
            "`0` is zero",
        ),
    ] {
        let mut args = args.to_vec();
        args.push("--check");
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // UDP has no server name to route by.
    let (code, _, err) = run(&["udp", "53", "dns:53", "--sni", "a=b:1", "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sni"), "{err}");
}
