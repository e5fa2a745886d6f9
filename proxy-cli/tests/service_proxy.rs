//! `proxy service-proxy`: the API server's service proxy URL answered from cluster DNS
//! (dnsmasq serving `web.default.svc.cluster.local` and an SRV record for a named port),
//! `https:` Services among them (nginx over TLS), and, side by side with real `kubectl
//! proxy`, through an API server (our own `proxy port-forward-server`) with a kubeconfig.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proxy_testkit::dns::{Dnsmasq, hosts_config};
use proxy_testkit::http::{Backend, Nginx, Response, http_get, nginx_tls_backend, raw_exchange};
use proxy_testkit::tls::{Ca, Issued};
use proxy_testkit::wait::PROMPT;
use support::proxy::Proxy;

const PREFIX: &str = "/api/v1/namespaces/default/services";

/// Starts `proxy service-proxy --port 0 ARGS` and reads its `Starting to serve on` line.
fn service_proxy(args: &[&str]) -> (Proxy, SocketAddr) {
    let mut all = vec!["service-proxy", "--port", "0"];
    all.extend_from_slice(args);
    let proxy = Proxy::start(&all);
    let line = proxy
        .wait_stdout(PROMPT, |lines| lines.first().cloned())
        .unwrap_or_else(|| panic!("no stdout line within {PROMPT:?}:\n{}", proxy.stderr()));
    let addr = line
        .strip_prefix("Starting to serve on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not kubectl's line: {line:?}"));
    (proxy, addr)
}

/// `METHOD PATH` with `Host: HOST`, a small body for methods that take one.
fn request(addr: SocketAddr, method: &str, host: &str, path: &str) -> Response {
    let body = if matches!(method, "POST" | "PUT" | "PATCH") {
        "hello"
    } else {
        ""
    };
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{length}Connection: close\r\n\r\n{body}"
    );
    let mut answer = raw_exchange(addr, raw.as_bytes(), PROMPT);
    if method == "HEAD" {
        // No body follows, whatever Content-Length says: keep the head only.
        let text = String::from_utf8_lossy(&answer).into_owned();
        let head: String = text
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("content-length"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        answer = head.into_bytes();
    }
    Response::parse(&answer).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn dns_mode_answers_the_service_url_from_cluster_dns() {
    // Two addresses of `web` on one port; `web`'s port `admin` on another host and port.
    let backends = Backend::start_same_port(&[("a", lo(2)), ("b", lo(3))]);
    let port = backends[0].addr().port();
    let admin = Backend::start_on("admin", SocketAddr::new(lo(4), 0)).expect("bind 127.0.0.4");
    let hosts = "127.0.0.2 web.default.svc.cluster.local\n\
                 127.0.0.3 web.default.svc.cluster.local\n\
                 127.0.0.4 web-admin.default.svc.cluster.local\n";
    let mut config = hosts_config(hosts, &["cluster.local"]);
    config.args.push(format!(
        "--srv-host=_admin._tcp.web.default.svc.cluster.local,web-admin.default.svc.cluster.local,{}",
        admin.addr().port()
    ));
    let dns = Dnsmasq::start(&config);
    let (proxy, addr) = service_proxy(&["--name-servers", &dns.addr().to_string()]);
    let host = addr.to_string();
    let url = |rest: &str| format!("{PREFIX}/web:{port}/proxy{rest}");

    // Every address is used, and the backend sees what the API server would send.
    let mut seen_backends = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r = http_get(addr, &host, &url("/x/y?q=1"));
        assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.stderr());
        let seen = r.seen();
        assert_eq!(seen.uri, "/x/y?q=1");
        assert_eq!(
            seen.header("x-forwarded-uri"),
            Some(url("/x/y?q=1").as_str())
        );
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(
            seen.header("host"),
            Some(format!("web.default.svc.cluster.local:{port}").as_str())
        );
        seen_backends.insert(seen.backend);
    }
    assert_eq!(
        seen_backends.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "balanced over both addresses"
    );

    // Every method the API server proxies.
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = request(addr, method, &host, &url("/m"));
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_eq!(r.seen().method, method);
    }
    let head = request(addr, "HEAD", &host, &url("/m"));
    assert_eq!(head.status, 200);

    // An empty path on GET and HEAD is sent to `.../proxy/`, with the query.
    for method in ["GET", "HEAD"] {
        let r = request(addr, method, &host, &format!("{}?a=b", url("")));
        assert_eq!(r.status, 301, "{method}");
        assert_eq!(r.header("location"), Some(url("/?a=b").as_str()));
    }
    let post = request(addr, "POST", &host, &url(""));
    assert_eq!(post.status, 200, "POST .../proxy is proxied");
    assert_eq!(post.seen().uri, "/");

    // The upstream's redirects stay under the prefix.
    let r = http_get(addr, &host, &url("/redirect?to=/login"));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(url("/login").as_str()));
    let r = http_get(addr, &host, &url("/redirect?to=https://example.com/"));
    assert_eq!(r.header("location"), Some("https://example.com/"));

    // A named port, through its SRV record.
    let r = http_get(addr, &host, &format!("{PREFIX}/web:admin/proxy/a"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen().backend, "admin");
    assert_eq!(
        r.seen().header("x-forwarded-uri"),
        Some(format!("{PREFIX}/web:admin/proxy/a").as_str())
    );

    // kubectl proxy's filter: exec refused, foreign hosts refused, [::1] accepted.
    let r = http_get(addr, &host, "/api/v1/namespaces/default/pods/x/exec");
    assert_eq!((r.status, r.text().as_str()), (403, "Forbidden\n"));
    let r = http_get(addr, "example.com", &url("/"));
    assert_eq!(r.status, 403);
    let r = http_get(addr, &format!("[::1]:{}", addr.port()), &url("/"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http_get(addr, "localhost", &url("/"));
    assert_eq!(r.status, 200, "{}", r.text());

    // What DNS mode does not serve.
    let r = http_get(addr, &host, "/api/v1/namespaces/default/pods");
    assert_eq!(r.status, 404);
    // https: to a plain HTTP port: the TLS handshake fails.
    let r = http_get(addr, &host, &format!("{PREFIX}/https:web:{port}/proxy/"));
    assert_eq!(r.status, 502, "{}", r.text());
    proxy.expect_line("a failed handshake", |l| {
        l.contains("upstream TLS handshake failed")
    });
    let r = http_get(addr, &host, &format!("{PREFIX}/nope:{port}/proxy/"));
    assert_eq!(r.status, 503, "a name DNS does not know: {}", r.text());

    // One address gone: the other serves every request.
    let mut backends = backends;
    drop(backends.pop());
    for _ in 0..4 {
        let r = http_get(addr, &host, &url("/after"));
        assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.stderr());
        assert_eq!(r.seen().backend, "a");
    }
    drop(dns);
}

#[test]
fn https_services_are_reached_over_tls_verified_for_name_ns_svc() {
    let (ca, stranger_ca) = (Ca::new("cluster-ca"), Ca::new("stranger-ca"));
    let [web, long, stranger_cert] = [
        ca.server(&["web.default.svc"]),
        // Only the cluster domain's longer name.
        ca.server(&["web.default.svc.cluster.local"]),
        stranger_ca.server(&["web.default.svc"]),
    ];
    let nginx = |name, issued: &Issued| nginx_tls_backend(name, &issued.cert, &issued.key, "75s");
    let (web, long, stranger) = (
        nginx("web", &web),
        nginx("long", &long),
        nginx("stranger", &stranger_cert),
    );
    let dns = Dnsmasq::start(&hosts_config(
        "127.0.0.1 web.default.svc.cluster.local\n",
        &["cluster.local"],
    ));
    let dns = dns.addr().to_string();
    let ca_file = ca.cert.to_str().unwrap();
    let url = |upstream: &Nginx, rest: &str| {
        format!("{PREFIX}/https:web:{}/proxy{rest}", upstream.addr().port())
    };

    let (proxy, addr) = service_proxy(&["--name-servers", &dns, "--upstream-ca", ca_file]);
    let host = addr.to_string();
    let mut connections = Vec::new();
    for rest in ["/a?x=1", "/b"] {
        let r = http_get(addr, &host, &url(&web, rest));
        assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.stderr());
        let seen = r.seen();
        assert_eq!((seen.backend.as_str(), seen.uri.as_str()), ("web", rest));
        assert_eq!(seen.header("x-tls-server-name"), Some("web.default.svc"));
        assert_eq!(seen.header("x-tls-alpn"), Some("http/1.1"));
        let authority = format!("web.default.svc.cluster.local:{}", web.addr().port());
        assert_eq!(seen.header("host"), Some(authority.as_str()));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        connections.push(seen.connection);
    }
    assert_eq!(
        connections[0], connections[1],
        "one upstream TLS connection"
    );
    // The Host names the cluster domain, SNI does not: nginx serves it, as most servers.
    for (upstream, says) in [
        (&long, "not valid for name"),
        (&stranger, "not issued by a trusted CA"),
    ] {
        let r = http_get(addr, &host, &url(upstream, "/"));
        assert_eq!(r.status, 502, "{}", r.text());
        let port = format!(":{}", upstream.addr().port());
        let line = proxy.expect_line(says, |l| {
            l.contains("upstream TLS handshake failed") && l.contains(&port)
        });
        assert!(line.contains(says), "{line}");
    }
    assert!(
        !proxy.stderr().contains("NOT verified"),
        "{}",
        proxy.stderr()
    );

    // The name asked for instead.
    let (_proxy, addr) = service_proxy(&[
        "--name-servers",
        &dns,
        "--upstream-ca",
        ca_file,
        "--upstream-server-name",
        "web.default.svc.cluster.local",
    ]);
    let r = http_get(addr, &addr.to_string(), &url(&long, "/"));
    assert_eq!(r.status, 200, "{}", r.text());
    let sni = r.seen();
    assert_eq!(
        sni.header("x-tls-server-name"),
        Some("web.default.svc.cluster.local")
    );

    // kubectl users' way with self-signed Services: nothing verified, said at the start.
    let (proxy, addr) = service_proxy(&["--name-servers", &dns, "--upstream-insecure"]);
    proxy.expect_line("the warning", |l| {
        l.contains("WARN") && l.contains("upstream_insecure") && l.contains("NOT verified")
    });
    let r = http_get(addr, &addr.to_string(), &url(&stranger, "/"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen().backend, "stranger");
    let warnings = proxy.stderr().matches("NOT verified").count();
    assert_eq!(warnings, 1, "once per start: {}", proxy.stderr());

    // The system's CAs by default: the cluster's CA is not among them.
    let (proxy, addr) = service_proxy(&["--name-servers", &dns]);
    let r = http_get(addr, &addr.to_string(), &url(&web, "/"));
    assert_eq!(r.status, 502, "{}", r.text());
    let line = proxy.expect_line("why", |l| l.contains("WARN"));
    assert!(
        line.contains("not issued by a trusted CA") || line.contains("no system CA certificates"),
        "{line}"
    );
}

#[test]
fn the_service_proxy_takes_the_upstream_tls_flags() {
    let (code, stdout, stderr) = support::proxy::run(&["service-proxy", "--help"]);
    assert_eq!(code, 0, "{stderr}");
    for flag in [
        "--upstream-ca",
        "--upstream-server-name",
        "--upstream-insecure",
    ] {
        assert!(stdout.contains(flag), "no {flag} in {stdout}");
    }
    assert!(stdout.contains("NAME.NS.svc"), "{stdout}");
    let (code, _, stderr) = support::proxy::run(&[
        "service-proxy",
        "--port",
        "0",
        "--upstream-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/ca.pem") && stderr.contains("--upstream-ca"),
        "{stderr}"
    );
}

#[test]
fn filter_flags_and_cluster_domain() {
    let backend = Backend::start("web");
    let port = backend.addr().port();
    let hosts = "127.0.0.1 web.default.svc.example\n";
    let dns = Dnsmasq::start(&hosts_config(hosts, &["example"]));
    let (_proxy, addr) = service_proxy(&[
        "--name-servers",
        &dns.addr().to_string(),
        "--cluster-domain",
        "example",
        "--accept-hosts",
        "^proxy\\.test$",
        "--reject-methods",
        "^DELETE$",
        "--reject-paths",
        "^/api/v1/namespaces/secret/",
    ]);
    let url = format!("{PREFIX}/web:{port}/proxy/x");
    assert_eq!(http_get(addr, "proxy.test", &url).status, 200);
    assert_eq!(http_get(addr, "localhost", &url).status, 403);
    assert_eq!(request(addr, "DELETE", "proxy.test", &url).status, 403);
    assert_eq!(request(addr, "PUT", "proxy.test", &url).status, 200);
    let secret = format!("/api/v1/namespaces/secret/services/web:{port}/proxy/");
    assert_eq!(http_get(addr, "proxy.test", &secret).status, 403);
}

/// The node side's objects: pods `web-1` on 127.0.0.2 and `web-2` on 127.0.0.3, both with
/// port `http` at `port`, and Service `web` with port 80 (`http`) to them.
fn cluster_file(port: u16) -> String {
    let pod = |name: &str, ip: &str| {
        format!(
            "[[pod]]\nname = \"{name}\"\ntarget = \"{ip}\"\nlabels = {{ app = \"web\" }}\n\
             ports = {{ http = {port} }}\n\n"
        )
    };
    let mut text = pod("web-1", "127.0.0.2");
    text.push_str(&pod("web-2", "127.0.0.3"));
    text.push_str(
        "[[service]]\nname = \"web\"\nselector = { app = \"web\" }\n\
         ports = [{ name = \"http\", port = 80, target_port = \"http\" }]\n",
    );
    text
}

/// What a side-by-side comparison looks at in one answer: the status, the `Location`, and
/// what the backend saw (method, URI, and the forwarded headers), if it was reached.
fn summary(r: &Response) -> String {
    let mut s = format!("{} location={:?}", r.status, r.header("location"));
    if r.header("content-type") == Some("application/json")
        && let Ok(seen) = proxy_testkit::http::Seen::parse(&r.body)
    {
        s.push_str(&format!(
            " {} {} xff={:?} xfh={:?} xfp={:?} xfu={:?} forwarded={:?} host={:?}",
            seen.method,
            seen.uri,
            seen.header("x-forwarded-for"),
            seen.header("x-forwarded-host"),
            seen.header("x-forwarded-proto"),
            seen.header("x-forwarded-uri"),
            seen.headers_named("forwarded"),
            seen.header("host"),
        ));
    }
    s
}

/// Two backends on one port as the pods of `web`, and a port-forward server serving
/// them from a cluster file (kept while the server runs).
fn cluster() -> (
    Vec<Backend>,
    proxy_testkit::process::TempPath,
    support::port_forward::PortForwardServer,
) {
    let backends = Backend::start_same_port(&[("web-1", lo(2)), ("web-2", lo(3))]);
    let file = proxy_testkit::process::TempPath::with_contents(
        "cluster.toml",
        &cluster_file(backends[0].addr().port()),
    );
    let server = support::port_forward::PortForwardServer::start(&[
        "--config",
        file.path().to_str().unwrap(),
    ]);
    (backends, file, server)
}

fn side_by_side(version: &str) {
    let Some(kubectl) = proxy_testkit::kube::Kubectl::find_or_skip(version) else {
        return;
    };
    let (_backends, _file, server) = cluster();
    let config = proxy_testkit::kube::Kubeconfig::builder(server.http_url())
        .namespace("default")
        .write();
    let theirs = kubectl.proxy(&config);
    let (ours_proxy, ours) = service_proxy(&["--kubeconfig", config.path().to_str().unwrap()]);
    let svc = format!("{PREFIX}/web:80/proxy");
    let cases: Vec<(&str, String, &str)> = vec![
        ("GET", format!("{svc}/x/y?q=1"), "localhost"),
        ("POST", format!("{svc}/m"), "localhost"),
        ("PUT", format!("{PREFIX}/web:http/proxy/n"), "localhost"),
        ("DELETE", format!("{svc}/d"), "localhost"),
        ("GET", svc.clone(), "localhost"),
        ("GET", format!("{svc}/redirect?to=/login"), "localhost"),
        ("GET", format!("{PREFIX}/web/proxy/"), "localhost"),
        ("GET", format!("{PREFIX}/nope/proxy/"), "localhost"),
        ("GET", format!("{PREFIX}/web:81/proxy/"), "localhost"),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1/exec".to_owned(),
            "localhost",
        ),
        ("GET", format!("{svc}/"), "example.com"),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1".to_owned(),
            "localhost",
        ),
    ];
    for (method, path, host) in &cases {
        let a = request(theirs.addr(), method, host, path);
        let b = request(ours, method, host, path);
        let (a_sum, b_sum) = (summary(&a), summary(&b));
        eprintln!(
            "kubectl {version}: {method} {path} (Host {host})\n  theirs {a_sum}\n  ours   {b_sum}"
        );
        assert_eq!(
            a.status,
            b.status,
            "{method} {path}: kubectl {version} proxy and ours differ:\n{}\n{}",
            theirs.output(),
            ours_proxy.stderr()
        );
        assert_eq!(a_sum, b_sum, "{method} {path}");
    }
}

#[test]
fn api_server_mode_answers_as_kubectl_proxy_1_33() {
    side_by_side("1.33");
}

#[test]
fn api_server_mode_answers_as_kubectl_proxy_1_27() {
    side_by_side("1.27");
}

/// Upgrades pass through API server mode: real `kubectl port-forward` (SPDY, then the
/// WebSocket tunnel) with a kubeconfig whose server is `proxy service-proxy --kubeconfig`,
/// which forwards to the port-forward server.
#[test]
fn kubectl_port_forward_upgrades_pass_through_api_server_mode() {
    use proxy_testkit::kube::{Kubeconfig, Kubectl, Transport};
    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let (_backends, _file, server) = cluster();
    let upstream = Kubeconfig::builder(server.http_url())
        .namespace("default")
        .write();
    let (ours_proxy, ours) = service_proxy(&["--kubeconfig", upstream.path().to_str().unwrap()]);
    let through_ours = Kubeconfig::builder(format!("http://{ours}"))
        .namespace("default")
        .write();
    for transport in [Transport::Spdy, Transport::WebSocket] {
        let forward =
            kubectl.port_forward(&through_ours, transport, "pod/web-2", &["0:http"], None);
        forward.wait_ready();
        let local = forward.local(0);
        let r = http_get(local, "web", "/through");
        assert_eq!(
            r.status,
            200,
            "{transport:?}: {}\n{}",
            forward.output(),
            ours_proxy.stderr()
        );
        assert_eq!(r.seen().backend, "web-2", "{transport:?}");
        assert_eq!(r.seen().uri, "/through");
    }
    // Exec stays refused, as kubectl proxy refuses it.
    let r = http_get(
        ours,
        "localhost",
        "/api/v1/namespaces/default/pods/web-2/exec?command=sh",
    );
    assert_eq!(r.status, 403);
}

/// An upstream answering every request with a small HTML page holding absolute links,
/// and a `Location`, on `addr`; serves until the test process ends.
fn html_upstream(ip: IpAddr) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the HTML upstream");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(PROMPT)).ok();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let body = "<html><a href=\"/doc\">doc</a><img src='/logo.png'>\
                        <a href=\"https://example.com/\">out</a></html>";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Location: /page\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn html_links_are_rewritten_only_when_asked() {
    let upstream = html_upstream(lo(5));
    let hosts = "127.0.0.5 site.default.svc.cluster.local\n";
    let dns = Dnsmasq::start(&hosts_config(hosts, &["cluster.local"]));
    let ns = dns.addr().to_string();
    let prefix = format!("{PREFIX}/site:{}/proxy", upstream.port());
    let (_plain, plain) = service_proxy(&["--name-servers", &ns]);
    let r = http_get(plain, "localhost", &format!("{prefix}/"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("href=\"/doc\""), "{}", r.text());
    assert_eq!(
        r.header("content-location"),
        Some(format!("{prefix}/page").as_str())
    );
    let (_rewriting, rewriting) = service_proxy(&["--name-servers", &ns, "--rewrite-html"]);
    let r = http_get(rewriting, "localhost", &format!("{prefix}/"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!(
            "<html><a href=\"{prefix}/doc\">doc</a><img src='{prefix}/logo.png'>\
             <a href=\"https://example.com/\">out</a></html>"
        )
    );
}

/// A WebSocket through the service URL in DNS mode: the upgrade is relayed both ways, and
/// the upstream sees the path below the prefix. Skipped when the `websockets` venv cannot
/// be made (PyPI out of reach).
#[test]
fn websocket_through_the_service_url() {
    let echo = match proxy_testkit::http::websocket_echo() {
        Ok(echo) => echo,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let hosts = "127.0.0.1 ws.default.svc.cluster.local\n";
    let dns = Dnsmasq::start(&hosts_config(hosts, &["cluster.local"]));
    let (proxy, addr) = service_proxy(&["--name-servers", &dns.addr().to_string()]);
    let path = format!("{PREFIX}/ws:{}/proxy/chat", echo.addr().port());
    let url = format!("ws://localhost:{}{path}", addr.port());
    let out = proxy_testkit::http::websocket_client(&url, Some(addr), 20, PROMPT)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    let opened = proxy_testkit::http::websocket_opened(&echo);
    assert_eq!(opened.len(), 1, "{out}");
    assert_eq!(opened[0].0, "/chat");
}
