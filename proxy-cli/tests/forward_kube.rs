//! End-to-end tests of `proxy forward TYPE/NAME`, the port-forward client, against `proxy
//! port-forward-server` (the node side: no Kubernetes API server can run here), and side
//! by side with released kubectl against the same server: the same lines; a refused
//! connection and a pod removed by a reload end kubectl's forward and not ours.
//!
//! Rules as in `port_forward_server.rs`: kernel-chosen ports everywhere, waits only on
//! lines, connections and exits, each with a deadline; children killed on drop.

mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use proxy_testkit::blocking::{Echo, UdpEcho, connect, echo_through, udp_client, udp_echo};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::kube::{Kubeconfig, Kubectl, PortForward, TestCerts, Transport};
use proxy_testkit::net::RefusingPort;
use proxy_testkit::process::TempPath;
use support::port_forward::{PortForwardServer, reply_after_eof};
use support::proxy::{PROMPT, PROXY};

/// How long a forward that should end may take to.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Two pods behind `deploy/web` and `svc/web` (port 80, `targetPort: http`), each an echo
/// server that first says its name (`web-1\n`), plus a refused port on `web-1`.
struct Cluster {
    web1: Echo,
    web2: Echo,
    eof: SocketAddr,
    refused: RefusingPort,
    server: PortForwardServer,
    config: TempPath,
}

/// The cluster file: both pods, or `web-2` only; `web-1` also has the ports `closed`
/// (refused) and `eof` (answers after the client's FIN).
fn cluster_file(
    web1: &Echo,
    web2: &Echo,
    refused: &RefusingPort,
    eof: SocketAddr,
    with_web1: bool,
) -> String {
    let pod = |name: &str, port: u16, extra: &str| {
        format!(
            "[[pod]]\nname = \"{name}\"\ntarget = \"127.0.0.1\"\nlabels = {{ app = \"web\" }}\n\
             ports = {{ http = {port}{extra} }}\n\n"
        )
    };
    let mut text = String::new();
    if with_web1 {
        let extra = format!(", closed = {}, eof = {}", refused.port(), eof.port());
        text.push_str(&pod("web-1", web1.port(), &extra));
    }
    text.push_str(&pod("web-2", web2.port(), ""));
    text.push_str(
        "[[service]]\nname = \"web\"\nselector = { app = \"web\" }\n\
         ports = [{ name = \"http\", port = 80, target_port = \"http\" }]\n\n\
         [[deployment]]\nname = \"web\"\nselector = { app = \"web\" }\n",
    );
    text
}

fn greeter(name: &str) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    Echo::serve_greeting(listener, &format!("{name}\n"))
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let web1 = greeter("web-1");
        let web2 = greeter("web-2");
        let eof = reply_after_eof();
        let refused = RefusingPort::bind();
        let text = cluster_file(&web1, &web2, &refused, eof, true);
        let config = TempPath::with_contents("cluster.toml", &text);
        let mut args = vec!["--config", config.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = PortForwardServer::start(&args);
        Cluster {
            web1,
            web2,
            eof,
            refused,
            server,
            config,
        }
    }

    /// Rewrites the cluster file and has the server reload it (SIGHUP).
    fn reload(&self, with_web1: bool) {
        let text = cluster_file(&self.web1, &self.web2, &self.refused, self.eof, with_web1);
        std::fs::write(self.config.path(), text).expect("write the cluster file");
        self.server.proxy.signal("HUP");
        self.server
            .proxy
            .find_line(PROMPT, |l| l.contains("reloaded the objects"))
            .unwrap_or_else(|| panic!("no reload line:\n{}", self.server.proxy.stderr()));
    }

    fn kubeconfig(&self) -> Kubeconfig {
        Kubeconfig::builder(self.server.http_url())
            .namespace("default")
            .write()
    }
}

/// `proxy forward TARGET SPECS... --kubeconfig CONFIG EXTRA...`, as a [`PortForward`].
fn forward(config: &Kubeconfig, target: &str, specs: &[&str], extra: &[&str]) -> PortForward {
    let mut cmd = Command::new(PROXY);
    cmd.arg("forward")
        .arg(target)
        .args(specs)
        .arg("--kubeconfig")
        .arg(config.path())
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("KUBECONFIG");
    let what = format!("proxy forward {target} {}", specs.join(" "));
    PortForward::spawn(cmd, what, specs.len())
}

/// Connects through `addr` and reads the pod's name, then checks an echo.
fn pod_behind(addr: SocketAddr) -> String {
    try_pod_behind(addr).unwrap_or_else(|e| panic!("through {addr}: {e}"))
}

/// [`pod_behind`] that returns a failed connection's error.
fn try_pod_behind(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = connect(addr);
    conn.set_read_timeout(Some(PROMPT))?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        conn.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        name.push(byte[0]);
    }
    conn.write_all(b"ping")?;
    let mut back = [0u8; 4];
    conn.read_exact(&mut back)?;
    assert_eq!(&back, b"ping");
    Ok(String::from_utf8(name).expect("a name"))
}

/// Whether a connection through `addr` ends without any byte from the pod.
fn fails(addr: SocketAddr) -> bool {
    let mut conn = connect(addr);
    conn.set_read_timeout(Some(PROMPT)).unwrap();
    let _ = conn.write_all(b"hello");
    let mut buf = [0u8; 16];
    matches!(conn.read(&mut buf), Ok(0) | Err(_))
}

// ===== lines and bytes, side by side with kubectl =====

#[test]
fn prints_kubectls_lines_and_forwards_like_it() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(&config, "svc/web", &["0:80"], &[]);
    let ready = ours.wait_ready();
    // The service port translated to the pod's, as kubectl prints it.
    assert!(
        ready
            .iter()
            .all(|f| f.remote == cluster.web1.port() || f.remote == cluster.web2.port()),
        "{ready:?}\n{}",
        ours.output()
    );
    let local = ours.local(0);
    assert!(pod_behind(local).starts_with("web-"));
    assert!(
        ours.find_stdout(PROMPT, &format!("Handling connection for {}", local.port()))
            .is_some(),
        "{}",
        ours.output()
    );

    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let theirs = kubectl.port_forward(&config, Transport::Default, "svc/web", &["0:80"], None);
    theirs.wait_ready();
    let word_shape = |text: String| -> Vec<String> {
        (text.lines())
            .filter(|l| l.starts_with("Forwarding from"))
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        if w.chars().any(|c| c.is_ascii_digit()) {
                            "N"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let their_local = theirs.local(0);
    assert!(pod_behind(their_local).starts_with("web-"));
    assert!(
        theirs
            .find_stdout(
                PROMPT,
                &format!("Handling connection for {}", their_local.port())
            )
            .is_some()
    );
    // kubectl serves 127.0.0.1 before it listens on [::1]: wait for its second line.
    if ours.stdout().contains("Forwarding from [::1]") {
        theirs.find_stdout(PROMPT, "Forwarding from [::1]");
    }
    assert_eq!(
        word_shape(ours.stdout()),
        word_shape(theirs.stdout()),
        "ours:\n{}\ntheirs:\n{}",
        ours.output(),
        theirs.output()
    );
}

#[test]
fn unknown_objects_fail_with_kubectls_words() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let mut ours = forward(&config, "pod/nope", &["0:80"], &[]);
    let status = ours.wait_exit(EXIT_LIMIT).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", ours.output());
    assert!(
        ours.stderr().contains(r#"pods "nope" not found"#),
        "{}",
        ours.output()
    );
    let mut named = forward(&config, "svc/web", &["0:nope"], &[]);
    named.wait_exit(EXIT_LIMIT).expect("exits");
    assert!(
        named
            .stderr()
            .contains("Service 'web' does not have a named port 'nope'"),
        "{}",
        named.output()
    );
}

// ===== where kubectl fails, we hold =====

#[test]
fn a_refused_connection_ends_kubectls_forward_and_not_ours() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(&config, "pod/web-1", &["0:closed", "0:http"], &[]);
    let (closed, http) = (ours.local(0), ours.local(1));
    assert!(fails(closed), "a refused port gives no bytes");
    assert!(
        ours.find_stderr(PROMPT, "an error occurred forwarding")
            .is_some(),
        "the failure is printed:\n{}",
        ours.output()
    );
    // The forward goes on: the other port, and the refused one again.
    assert_eq!(pod_behind(http), "web-1");
    assert!(fails(closed));
    assert_eq!(pod_behind(http), "web-1");

    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let refused = cluster.refused.port().to_string();
    let http_port = cluster.web1.port().to_string();
    let mut theirs = kubectl.port_forward(
        &config,
        Transport::Default,
        "pod/web-1",
        &[&format!("0:{refused}"), &format!("0:{http_port}")],
        None,
    );
    let closed = theirs.local(0);
    let _ = fails(closed);
    assert!(
        theirs.wait_exit(EXIT_LIMIT).is_some(),
        "kubectl's forward ends after a refused connection:\n{}",
        theirs.output()
    );
}

#[test]
fn balances_over_ready_pods_and_follows_a_reload_that_ends_kubectls_forward() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(&config, "deploy/web", &["0:http"], &[]);
    let local = ours.local(0);
    let seen: HashSet<String> = (0..8).map(|_| pod_behind(local)).collect();
    assert_eq!(
        seen,
        HashSet::from(["web-1".to_owned(), "web-2".to_owned()]),
        "round robin over both ready pods"
    );

    let kubectl = Kubectl::find_or_skip("1.33");
    let theirs = kubectl.as_ref().map(|k| {
        let pf = k.port_forward(&config, Transport::Default, "pod/web-1", &["0:http"], None);
        assert_eq!(pod_behind(pf.local(0)), "web-1");
        pf
    });

    // web-1 leaves: every new connection goes to web-2, at once.
    cluster.reload(false);
    let deadline = Instant::now() + PROMPT;
    let mut in_a_row = 0;
    while in_a_row < 6 {
        assert!(
            Instant::now() < deadline,
            "still reaching web-1:\n{}",
            ours.output()
        );
        // One that went to web-1 just before the watch told may fail: it fails alone.
        let web2 = try_pod_behind(local).is_ok_and(|name| name == "web-2");
        in_a_row = if web2 { in_a_row + 1 } else { 0 };
    }
    if let Some(mut theirs) = theirs {
        let _ = fails(theirs.local(0));
        assert!(
            theirs.wait_exit(EXIT_LIMIT).is_some(),
            "kubectl's forward ends when its pod is gone:\n{}",
            theirs.output()
        );
    }
}

#[test]
fn a_connection_waits_for_a_replaced_pod() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(
        &config,
        "pod/web-1",
        &["0:http"],
        &["--pod-running-timeout", "20s"],
    );
    let local = ours.local(0);
    assert_eq!(pod_behind(local), "web-1");
    cluster.reload(false);
    // Once the forward has seen web-1 go (a connection made before may still fail), a
    // connection waits; web-1 comes back (replaced) and the waiting connection is served.
    let deadline = Instant::now() + PROMPT;
    let mut waiting = loop {
        assert!(
            Instant::now() < deadline,
            "no connection waited:\n{}",
            ours.output()
        );
        let mut conn = connect(local);
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match conn.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break conn;
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    cluster.reload(true);
    waiting.set_read_timeout(Some(PROMPT)).unwrap();
    let mut name = [0u8; 6];
    waiting
        .read_exact(&mut name)
        .expect("the waiting connection is served");
    assert_eq!(&name, b"web-1\n");
}

// ===== bytes: protocols, TLS and a token, bulk, concurrency, half-close =====

#[test]
fn each_protocol_carries_bulk_and_half_close_over_tls_with_a_token() {
    let certs = TestCerts::generate();
    let token = TempPath::with_contents("token", "s3cret-token\n");
    let (cert, key) = (certs.server_cert(), certs.server_key());
    let cluster = Cluster::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--token-file",
        token.path().to_str().unwrap(),
    ]);
    let config = Kubeconfig::builder(cluster.server.https_url())
        .ca_pem(certs.ca_pem())
        .token("s3cret-token")
        .namespace("default")
        .write();
    for protocol in ["spdy", "spdy-websocket", "websocket"] {
        let ours = forward(
            &config,
            "pod/web-1",
            &["0:http", "0:eof"],
            &["--protocol", protocol],
        );
        let (http, eof) = (ours.local(0), ours.local(1));
        let size = if protocol == "spdy" {
            64 << 20
        } else {
            8 << 20
        };
        let data = payload(7, size);
        let mut conn = connect(http);
        let mut greeting = [0u8; 6];
        conn.read_exact(&mut greeting).expect("greeting");
        let back = if protocol == "websocket" {
            // No half-close: write while reading, then read exactly as much back.
            let mut writer = conn.try_clone().unwrap();
            let sent = data.clone();
            let t = std::thread::spawn(move || writer.write_all(&sent));
            let mut back = vec![0; data.len()];
            conn.read_exact(&mut back).expect("echo");
            t.join().unwrap().expect("write");
            back
        } else {
            echo_through(conn, &data)
        };
        assert_bytes(&format!("{protocol}: {size} bytes"), &back, &data);
        if protocol != "websocket" {
            // The channel protocol v4 has no half-close; the SPDY forms do.
            let mut conn = connect(eof);
            conn.write_all(&payload(3, 100_000)).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).unwrap();
            assert_eq!(answer, "got 100000 bytes", "{protocol}");
        }
        assert!(
            !ours.stderr().contains("an error occurred"),
            "{protocol}:\n{}",
            ours.output()
        );
    }
}

#[test]
fn two_hundred_concurrent_connections() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(&config, "svc/web", &["0:80"], &[]);
    let local = ours.local(0);
    let conns: Vec<TcpStream> = (0..200).map(|_| connect(local)).collect();
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(PROMPT)).unwrap();
                let mut name = [0u8; 6];
                conn.read_exact(&mut name).expect("greeting");
                let msg = payload(i as u64, 10_000);
                conn.write_all(&msg).unwrap();
                let mut back = vec![0; msg.len()];
                conn.read_exact(&mut back).expect("echo");
                assert_eq!(back, msg);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a connection failed");
    }
    assert!(
        !ours.stderr().contains("an error occurred"),
        "{}",
        ours.output()
    );
}

// ===== through a real `kubectl proxy`, and a session that drops =====

#[test]
fn through_a_real_kubectl_proxy_with_each_protocol() {
    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let cluster = Cluster::start(&[]);
    let kubectl_proxy = kubectl.proxy(&cluster.kubeconfig());
    let config = Kubeconfig::builder(kubectl_proxy.url())
        .namespace("default")
        .write();
    for protocol in ["auto", "spdy", "spdy-websocket", "websocket"] {
        let ours = forward(&config, "svc/web", &["0:80"], &["--protocol", protocol]);
        let local = ours.local(0);
        let mut conn = connect(local);
        let mut greeting = [0u8; 6];
        conn.read_exact(&mut greeting).expect("greeting");
        let data = payload(11, 1 << 20);
        let mut writer = conn.try_clone().unwrap();
        let sent = data.clone();
        let t = std::thread::spawn(move || writer.write_all(&sent));
        let mut back = vec![0; data.len()];
        conn.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{protocol}: {e}\n{}", ours.output()));
        t.join().unwrap().expect("write");
        assert_bytes(protocol, &back, &data);
    }
}

#[test]
fn a_session_that_drops_is_opened_again_and_connections_wait_for_it() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ours = forward(
        &config,
        "pod/web-1",
        &["0:http"],
        &["--pod-running-timeout", "30s"],
    );
    let local = ours.local(0);
    assert_eq!(pod_behind(local), "web-1");
    // The API server goes away (its connections with it) and comes back on the same
    // address a moment later; a connection made meanwhile waits for it.
    let Cluster {
        server,
        config: file,
        web1,
        web2,
        eof,
        refused,
    } = cluster;
    let addr = server.addr.to_string();
    drop(server);
    let waiting = std::thread::spawn(move || try_pod_behind(local));
    std::thread::sleep(Duration::from_millis(700));
    let server = PortForwardServer::start_on(&addr, &["--config", file.path().to_str().unwrap()]);
    let got = waiting.join().expect("the waiting connection");
    assert_eq!(got.ok().as_deref(), Some("web-1"), "{}", ours.output());
    assert_eq!(pod_behind(local), "web-1");
    drop((server, web1, web2, eof, refused));
}

#[test]
fn settings_a_pod_forward_cannot_honour_are_refused() {
    let (code, _, stderr) =
        support::proxy::run(&["forward", "svc/web", "80", "--proxy-protocol", "v2"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--proxy-protocol applies to host targets") && stderr.contains("--balance"),
        "{stderr}"
    );
}

#[test]
fn udp_through_our_server_and_a_clear_refusal_from_a_server_without_it() {
    let udp = UdpEcho::start("127.0.0.1");
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let spec = format!("0:{}/udp", udp.port());
    let ours = forward(&config, "pod/web-1", &["0:http", &spec], &[]);
    let line = (ours.find_stdout(PROMPT, "/udp"))
        .unwrap_or_else(|| panic!("no UDP line:\n{}", ours.output()));
    let local: SocketAddr = (line.strip_prefix("Forwarding from "))
        .and_then(|rest| rest.split(" -> ").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(line.ends_with(&format!("-> {}/udp", udp.port())), "{line}");
    let socket = udp_client(local);
    for size in [0, 1, 512, 1400, 9000] {
        let data = payload(size as u64, size);
        assert_eq!(udp_echo(&socket, &data), data, "{size} bytes");
    }

    // A server that carries TCP only, as Kubernetes API servers: refused at start.
    let tcp_only = Cluster::start(&["--no-udp"]);
    let tcp_only_config = tcp_only.kubeconfig();
    let mut refused = forward(&tcp_only_config, "pod/web-1", &[&spec], &[]);
    let status = refused.wait_exit(EXIT_LIMIT).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", refused.output());
    assert!(
        refused
            .stderr()
            .contains("the server does not support UDP port-forward"),
        "{}",
        refused.output()
    );
}

#[test]
fn an_idle_forward_still_works_after_the_servers_idle_timeout() {
    let cluster = Cluster::start(&["--streaming-connection-idle-timeout", "1s"]);
    let config = cluster.kubeconfig();
    let ours = forward(&config, "pod/web-1", &["0:http"], &[]);
    let local = ours.local(0);
    assert_eq!(pod_behind(local), "web-1");
    let kubectl = Kubectl::find_or_skip("1.33");
    let mut theirs = kubectl.as_ref().map(|k| {
        let pf = k.port_forward(&config, Transport::Default, "pod/web-1", &["0:http"], None);
        assert_eq!(pod_behind(pf.local(0)), "web-1");
        pf
    });
    // Idle for three times the server's limit: the server cuts both sessions.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pod_behind(local), "web-1", "{}", ours.output());
    assert_eq!(pod_behind(local), "web-1");
    if let Some(theirs) = theirs.as_mut() {
        assert!(
            theirs.wait_exit(EXIT_LIMIT).is_some(),
            "kubectl's forward ends when the server cuts its idle connection:\n{}",
            theirs.output()
        );
    }
}

#[test]
fn ports_file_and_a_command_work_as_for_hosts() {
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let ports = TempPath::with_contents("ports.json", "stale");
    let file = ports.path().to_str().unwrap().to_owned();
    // CMD reads the ports file, talks through the forward, and exits 7.
    let script = r#"cat "$0"; exec 3<>/dev/tcp/127.0.0.1/$PROXY_FORWARD_PORT; head -c 6 <&3; echo "[head $?]"; exit 7"#;
    let mut ours = forward(
        &config,
        "pod/web-1",
        &["0:http"],
        &["--ports-file", &file, "--", "bash", "-c", script, &file],
    );
    let status = ours.wait_exit(EXIT_LIMIT).expect("exits with CMD");
    assert_eq!(status.code(), Some(7), "{}", ours.output());
    let out = ours.stdout();
    assert!(out.contains(r#""target": "pod/web-1""#), "{out}");
    assert!(out.contains(r#""spec": "0:http""#), "{out}");
    assert!(
        out.contains("web-1\n"),
        "CMD reached the pod through the forward:\n{}",
        ours.output()
    );
    assert!(
        !ports.path().exists(),
        "the ports file is removed at the end"
    );
}

#[test]
fn kubeconfig_from_the_environment_with_context_and_namespace_flags() {
    let cluster = Cluster::start(&[]);
    // The current context points nowhere and at another namespace; `--context live -n
    // default` picks the server and the pods' namespace, from $KUBECONFIG.
    let config = TempPath::with_contents(
        "kubeconfig",
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                { "name": "dead", "cluster": { "server": "http://127.0.0.1:1" } },
                { "name": "live", "cluster": { "server": cluster.server.http_url() } },
            ],
            "users": [{ "name": "u", "user": {} }],
            "contexts": [
                { "name": "dead", "context": { "cluster": "dead", "user": "u" } },
                { "name": "live", "context": { "cluster": "live", "user": "u", "namespace": "elsewhere" } },
            ],
            "current-context": "dead",
        })
        .to_string(),
    );
    let mut cmd = Command::new(PROXY);
    cmd.args([
        "forward",
        "pod/web-1",
        "0:http",
        "--context",
        "live",
        "-n",
        "default",
    ])
    .env("KUBECONFIG", config.path())
    .env("RUST_LOG", "info");
    let ours = PortForward::spawn(cmd, "proxy forward --context live -n default".into(), 1);
    assert_eq!(pod_behind(ours.local(0)), "web-1");

    // Without -n, the context's namespace: kubectl's NotFound there.
    let mut cmd = Command::new(PROXY);
    cmd.args(["forward", "pod/web-1", "0:http", "--context", "live"])
        .env("KUBECONFIG", config.path());
    let mut elsewhere = PortForward::spawn(cmd, "proxy forward --context live".into(), 1);
    elsewhere.wait_exit(EXIT_LIMIT).expect("exits");
    assert!(
        elsewhere.stderr().contains(r#"pods "web-1" not found"#),
        "{}",
        elsewhere.output()
    );
}
