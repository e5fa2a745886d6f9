//! End-to-end tests of `proxy port-forward-server` with unmodified clients: released
//! kubectl binaries (1.27 and 1.30 speak SPDY; 1.30 with `KUBECTL_PORT_FORWARD_WEBSOCKETS=true`
//! and 1.33 by default try the SPDY-over-WebSocket tunnel first, and fall back to SPDY when
//! the upgrade fails), and the official Python client (`kubernetes.stream.portforward`,
//! WebSocket channels).
//!
//! One test per (kubectl version, transport) group, each with one server of its own and
//! its cases run in turn, to keep the file's run time modest on two cores. A kubectl that
//! is not installed makes its tests print `skipping: kubectl VERSION not found`.
//!
//! Rules as in `cli.rs`: the server and the upstreams listen on kernel-chosen ports, and so
//! does kubectl (`0:PORT`); nothing waits by sleeping, only on output lines, connections
//! and exits, each with a deadline; every child is killed when its guard drops.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proxy_testkit::blocking::{Echo, connect, echo_through, expect_closed, ping};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::kube::{Kubeconfig, Kubectl, PortForward, TestCerts, Transport, run_python};
use proxy_testkit::net::RefusingPort;
use proxy_testkit::process::TempPath;
use support::port_forward::{PortForwardServer, closes_first, protocol_field, reply_after_eof};
use support::proxy::PROMPT;

/// How long a kubectl run that should fail at once may take.
const KUBECTL_LIMIT: Duration = Duration::from_secs(30);

// ===== the cluster under test =====

/// The upstreams behind pod `web` (target `127.0.0.1`), and a server that knows:
/// - from `--config`: pod `web` (labels `app=web`, named ports `http` = the echo server's
///   and `eof` = the reply-after-EOF server's), pod `pending` (not running), service `web`
///   (port 80 named `http` with `targetPort: http`, and the echo port by number) and
///   deployment `web` (selector `app=web`);
/// - from the command line: pod `cli` (`--pod cli=127.0.0.1`, so label `app=cli`) and
///   service `cli` with the echo port, selecting it.
struct Cluster {
    echo: Echo,
    eof: SocketAddr,
    closes: SocketAddr,
    refused: RefusingPort,
    server: PortForwardServer,
    _config: TempPath,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let echo = Echo::start("127.0.0.1");
        let eof = reply_after_eof();
        let closes = closes_first();
        let refused = RefusingPort::bind();
        let config = TempPath::with_contents(
            "cluster.toml",
            &format!(
                r#"
[[pod]]
name = "web"
target = "127.0.0.1"
labels = {{ app = "web" }}
ports = {{ http = {echo}, eof = {eof} }}

[[pod]]
name = "pending"
target = "127.0.0.1"
running = false

[[service]]
name = "web"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}, {{ name = "plain", port = {echo} }}]

[[deployment]]
name = "web"
selector = {{ app = "web" }}
"#,
                echo = echo.port(),
                eof = eof.port(),
            ),
        );
        let service = format!("cli:{}=cli", echo.port());
        let config_path = config.path().to_str().unwrap().to_owned();
        let mut args = vec![
            "--config",
            &config_path,
            "--pod",
            "cli=127.0.0.1",
            "--service",
            &service,
        ];
        args.extend_from_slice(extra);
        let server = PortForwardServer::start(&args);
        Cluster {
            echo,
            eof,
            closes,
            refused,
            server,
            _config: config,
        }
    }

    fn kubeconfig(&self) -> Kubeconfig {
        Kubeconfig::builder(self.server.http_url())
            .namespace("default")
            .write()
    }
}

/// One request and its echo through `addr`.
fn ping_through(addr: SocketAddr, what: &str) {
    let mut conn = connect(addr);
    conn.write_all(what.as_bytes()).expect("write");
    let mut back = vec![0; what.len()];
    conn.read_exact(&mut back)
        .unwrap_or_else(|e| panic!("{what}: no echo through {addr}: {e}"));
    assert_eq!(back, what.as_bytes(), "{what}");
}

/// kubectl's `Forwarding from` lines say it forwards to `remote`.
fn assert_remote(pf: &PortForward, remote: u16) {
    let ready = pf.wait_ready();
    assert!(
        ready.iter().all(|f| f.remote == remote),
        "{}: forwards to {ready:?}, want -> {remote}",
        pf.what()
    );
}

// ===== the version matrix =====

macro_rules! kubectl_matrix {
    ($($name:ident: $version:literal, $transport:ident;)*) => {$(
        #[test]
        fn $name() {
            forwarding_cases($version, Transport::$transport);
        }
    )*};
}

kubectl_matrix! {
    kubectl_1_27_spdy: "1.27", Default;
    kubectl_1_30_spdy: "1.30", Default;
    kubectl_1_30_websocket: "1.30", WebSocket;
    kubectl_1_33_tunnel: "1.33", Default;
    kubectl_1_33_spdy: "1.33", Spdy;
}

macro_rules! kubectl_errors {
    ($($name:ident: $version:literal;)*) => {$(
        #[test]
        fn $name() {
            error_cases($version);
        }
    )*};
}

kubectl_errors! {
    kubectl_1_27_errors: "1.27";
    kubectl_1_30_errors: "1.30";
    kubectl_1_33_errors: "1.33";
}

/// Everything that forwards bytes, through one server and kubectl `version` over
/// `transport`.
fn forwarding_cases(version: &str, transport: Transport) {
    let Some(kubectl) = Kubectl::find_or_skip(version) else {
        return;
    };
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();
    let echo = cluster.echo.port();

    // pod/NAME, three ports through one kubectl, local ports chosen by kubectl (0:PORT).
    let specs = [
        format!("0:{echo}"),
        format!("0:{}", cluster.eof.port()),
        format!("0:{}", cluster.closes.port()),
    ];
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let pf = kubectl.port_forward(&config, transport, "pod/web", &specs, None);
    let ready = pf.wait_ready();
    let remotes: Vec<u16> = (ready.iter())
        .filter(|f| f.local.is_ipv4())
        .map(|f| f.remote)
        .collect();
    assert_eq!(
        remotes,
        [echo, cluster.eof.port(), cluster.closes.port()],
        "{}",
        pf.output()
    );
    assert!(
        ready.iter().all(|f| f.local.port() != 0),
        "kubectl picks the local ports: {ready:?}"
    );
    let (echo_local, eof_local, closes_local) = (pf.local(0), pf.local(1), pf.local(2));
    ping_through(echo_local, "pod/web");
    // Which transport kubectl settled on: 1.30 tunnels only when asked, 1.33 unless told
    // not to; a failed tunnel upgrade would make them fall back to SPDY unseen.
    let tunnels = match (version, transport) {
        ("1.30", Transport::WebSocket) => true,
        ("1.27" | "1.30", _) => false,
        (_, transport) => transport != Transport::Spdy,
    };
    let wire = cluster.server.first_stream_protocol();
    assert_eq!(
        wire,
        if tunnels { "spdy-websocket" } else { "spdy" },
        "kubectl {version} {transport:?}\n{}",
        pf.output()
    );
    assert!(
        pf.find_stdout(
            PROMPT,
            &format!("Handling connection for {}", echo_local.port())
        )
        .is_some(),
        "{}",
        pf.output()
    );

    // 64 MiB each way through one connection, byte for byte.
    let started = Instant::now();
    let big = payload(0x6b75_6265, 64 << 20);
    let back = echo_through(connect(echo_local), &big);
    assert_bytes("64 MiB echoed through kubectl", &back, &big);
    println!(
        "{version} {transport:?}: 64 MiB each way in {:?}",
        started.elapsed()
    );

    // 200 connections at once through the one kubectl, in bounded time.
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..200).map(|_| connect(echo_local)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("connection {i:03}").as_bytes())
            .expect("write");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut back = [0u8; 14];
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("connection {i}: no echo: {e}\n{}", pf.output()));
        assert_eq!(back, format!("connection {i:03}").as_bytes());
    }
    drop(conns);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "200 connections took {took:?}"
    );
    println!("{version} {transport:?}: 200 connections in {took:?}");

    // Half-close, client first: shutdown(Write), and the answer still comes back.
    let mut conn = connect(eof_local);
    conn.write_all(b"half").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("no answer after the client's FIN: {e}\n{}", pf.output()));
    assert_eq!(answer, "got 4 bytes");

    // Half-close, server first: its bytes, then the end. kubectl before 1.32 closes the
    // local connection only once the error stream ends, which it waits for after the pod's
    // FIN (1.32 resets the data stream first: kubernetes/kubernetes#128681); the kubelet
    // closes both streams as soon as either direction is done.
    let mut conn = connect(closes_local);
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap_or_else(|e| {
        panic!(
            "the pod closed first, and the client saw no end ({e}): kubectl {version} waits \
             for the error stream to end once the data stream's FIN came; the server must \
             close it when the pod's side is done\n{}",
            pf.output()
        )
    });
    assert_eq!(got, b"bye");

    // The first kubectl still works after all that.
    ping_through(echo_local, "still there");

    // svc/NAME (the command line's service), deploy/NAME, named ports of the pod and of
    // the service (`targetPort: http`).
    let svc = format!("0:{echo}");
    for (resource, spec, what) in [
        ("svc/cli", svc.as_str(), "svc/cli by number"),
        ("service/web", "0:80", "svc/web port 80 -> targetPort http"),
        ("svc/web", "0:http", "svc/web port named http"),
        ("deploy/web", svc.as_str(), "deploy/web"),
        ("deployment.apps/web", svc.as_str(), "deployment.apps/web"),
        ("pod/web", "0:http", "pod/web port named http"),
        ("web", svc.as_str(), "a bare pod name"),
    ] {
        let other = kubectl.port_forward(&config, transport, resource, &[spec], None);
        assert_remote(&other, echo);
        ping_through(other.local(0), what);
    }

    // --address: only where asked.
    let only_v4 = kubectl.port_forward(&config, transport, "pod/cli", &[&svc], Some("127.0.0.1"));
    let ready = only_v4.wait_ready();
    assert!(ready.iter().all(|f| f.local.is_ipv4()), "{ready:?}");
    ping_through(only_v4.local(0), "--address 127.0.0.1");

    // A port nothing listens on: the connection ends, kubectl prints the server's error,
    // and the server goes on serving other kubectls.
    refused_port(&kubectl, &cluster, &config, transport);
    let again = kubectl.port_forward(&config, transport, "pod/web", &[&svc], None);
    ping_through(again.local(0), "a new kubectl after the refused port");
    ping_through(echo_local, "the first kubectl after the refused port");
}

/// A connection to a pod port that refuses: the client's connection ends, and kubectl's
/// stderr has the server's `error forwarding port N to pod NAME, uid ...`.
fn refused_port(kubectl: &Kubectl, cluster: &Cluster, config: &Kubeconfig, transport: Transport) {
    let port = cluster.refused.port();
    let spec = format!("0:{port}");
    let mut pf = kubectl.port_forward(config, transport, "pod/web", &[&spec], None);
    let mut conn = connect(pf.local(0));
    let _ = conn.write_all(b"anyone?");
    expect_closed(&mut conn, PROMPT);
    let want = format!("error forwarding port {port} to pod web, uid");
    let line = pf
        .find_stderr(PROMPT, &want)
        .unwrap_or_else(|| panic!("kubectl does not print `{want}`\n{}", pf.output()));
    println!("{} {transport:?}: refused port: {line}", kubectl.version());
    // Newer kubectls close the whole connection after an error on a stream ("lost
    // connection to pod"); older ones keep forwarding. Either is kubectl's business.
    match pf.wait_exit(Duration::from_secs(3)) {
        Some(status) => println!(
            "{} {transport:?}: kubectl exited after the error ({status}): {}",
            kubectl.version(),
            pf.stderr().lines().last().unwrap_or("")
        ),
        None => println!(
            "{} {transport:?}: kubectl kept running after the error",
            kubectl.version()
        ),
    }
}

/// What kubectl says when the server says no, before any forwarding.
fn error_cases(version: &str) {
    let Some(kubectl) = Kubectl::find_or_skip(version) else {
        return;
    };
    let cluster = Cluster::start(&[]);
    let config = cluster.kubeconfig();

    // kubectl's own check of the pod's phase (kubectl/pkg/cmd/portforward).
    let (status, _, stderr) = kubectl.run(
        &config,
        &["port-forward", "pod/pending", "8080"],
        KUBECTL_LIMIT,
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{stderr}");
    assert!(
        stderr.contains(
            "error: unable to forward port because pod is not running. Current status=Pending"
        ),
        "{stderr}"
    );

    // A NotFound Status from the server, printed as kubectl prints any Status.
    let (status, _, stderr) = kubectl.run(
        &config,
        &["port-forward", "pod/nope", "8080"],
        KUBECTL_LIMIT,
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{stderr}");
    assert!(
        stderr.contains(r#"Error from server (NotFound): pods "nope" not found"#),
        "{stderr}"
    );

    // An unknown service and deployment.
    for (resource, want) in [
        (
            "svc/nope",
            r#"Error from server (NotFound): services "nope" not found"#,
        ),
        (
            "deploy/nope",
            r#"Error from server (NotFound): deployments.apps "nope" not found"#,
        ),
    ] {
        let (status, _, stderr) =
            kubectl.run(&config, &["port-forward", resource, "8080"], KUBECTL_LIMIT);
        assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{stderr}");
        assert!(stderr.contains(want), "{resource}: {stderr}");
    }

    // A named port the pod does not have: kubectl's own lookup fails.
    let (status, _, stderr) = kubectl.run(
        &config,
        &["port-forward", "pod/web", "0:nope"],
        KUBECTL_LIMIT,
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("does not have a named port 'nope'"),
        "{stderr}"
    );
}

// ===== TLS and tokens =====

#[test]
fn kubectl_over_tls_with_a_token() {
    let kubectls: Vec<Kubectl> = ["1.27", "1.33"]
        .into_iter()
        .filter_map(Kubectl::find_or_skip)
        .collect();
    if kubectls.is_empty() {
        return;
    }
    let certs = TestCerts::generate();
    let token = TempPath::with_contents("token", "s3cret-token\n");
    let cert = certs.server_cert();
    let key = certs.server_key();
    let cluster = Cluster::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--token-file",
        token.path().to_str().unwrap(),
    ]);
    let good = Kubeconfig::builder(cluster.server.https_url())
        .ca_pem(certs.ca_pem())
        .token("s3cret-token")
        .write();
    let wrong = Kubeconfig::builder(cluster.server.https_url())
        .ca_pem(certs.ca_pem())
        .token("not-the-token")
        .write();
    let echo = format!("0:{}", cluster.echo.port());
    for kubectl in &kubectls {
        // 1.27 knows only SPDY; 1.33 tunnels by default (wss://, the WebSocket dialer's
        // own TLS set-up) and speaks SPDY when asked.
        let transports: &[Transport] = if kubectl.version() == "1.27" {
            &[Transport::Default]
        } else {
            &[Transport::Default, Transport::Spdy]
        };
        for &transport in transports {
            let pf = kubectl.port_forward(&good, transport, "pod/web", &[&echo], None);
            let back = echo_through(connect(pf.local(0)), &payload(7, 1 << 20));
            assert_bytes("1 MiB over TLS", &back, &payload(7, 1 << 20));
        }
        // A wrong token: 401 to discovery and to the pod. kubectl 1.27 to 1.33 print the
        // message client-go makes up for a 401 whose body it does not decode ("the server
        // has asked for the client to provide credentials"), not the Status's
        // ("Unauthorized"); either is fine.
        let (status, _, stderr) =
            kubectl.run(&wrong, &["port-forward", "pod/web", &echo], KUBECTL_LIMIT);
        assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{stderr}");
        assert!(
            stderr.contains("error: You must be logged in to the server ("),
            "kubectl {}: {stderr}",
            kubectl.version()
        );
        println!(
            "kubectl {} with a wrong token: {}",
            kubectl.version(),
            stderr.lines().last().unwrap_or("")
        );
    }

    // The Python client from the same kubeconfig: wss://, the CA, the token.
    let kubeconfig = format!("kubeconfig:{}", good.path().display());
    let echo = cluster.echo.port().to_string();
    let refused = cluster.refused.port().to_string();
    let (status, stdout, stderr) = run_python(
        PYTHON_PORT_FORWARD,
        &[&kubeconfig, "web", &echo, &refused],
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("ECHO ok"),
        "{status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // And with the wrong token: the handshake fails with a 401.
    let kubeconfig = format!("kubeconfig:{}", wrong.path().display());
    let (status, stdout, stderr) = run_python(
        PYTHON_PORT_FORWARD,
        &[&kubeconfig, "web", &echo, &refused],
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| !s.success()) && stderr.contains("401"),
        "{status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

// ===== a pod in a network namespace =====

#[cfg(target_os = "linux")]
#[test]
fn kubectl_to_a_pod_in_a_network_namespace() {
    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let netns = match proxy_testkit::net::NamedNetns::create("pf-e2e") {
        Ok(n) => n,
        Err(why) => {
            println!("skipping: no network namespace: {why}");
            return;
        }
    };
    // The echo server listens on the namespace's own loopback: only a dial made inside the
    // namespace reaches it.
    let echo = Echo::serve(netns.listen("127.0.0.1:0".parse().unwrap()));
    let pod = format!("inns=netns:{}", netns.path().display());
    let server = PortForwardServer::start(&["--pod", &pod]);
    let config = Kubeconfig::builder(server.http_url()).write();
    let spec = format!("0:{}", echo.port());
    for transport in [Transport::Default, Transport::Spdy] {
        let pf = kubectl.port_forward(&config, transport, "pod/inns", &[&spec], None);
        let mut conn = connect(pf.local(0));
        ping(&mut conn, b"inside the namespace");
        let back = echo_through(connect(pf.local(0)), &payload(9, 1 << 20));
        assert_bytes("1 MiB into the namespace", &back, &payload(9, 1 << 20));
    }
    assert!(
        echo.accepted() >= 4,
        "the namespace's echo server served them"
    );
}

// ===== the Python client =====

/// Sends bytes through the pod's echo port with `kubernetes.stream.portforward`, then
/// tries a port that refuses and prints what the client reports for it. The first argument
/// is the server's URL, or `kubeconfig:PATH`.
const PYTHON_PORT_FORWARD: &str = r#"
import sys, threading, time
from kubernetes import client, config
from kubernetes.stream import portforward

where, pod, echo, refused = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if where.startswith("kubeconfig:"):
    conf = client.Configuration()
    config.load_kube_config(config_file=where[len("kubeconfig:"):], client_configuration=conf)
else:
    conf = client.Configuration(host=where)
api = client.CoreV1Api(client.ApiClient(conf))
pf = portforward(api.connect_get_namespaced_pod_portforward, pod, "default",
                 ports=f"{echo},{refused}")

s = pf.socket(echo)
s.settimeout(20)
data = bytes(range(256)) * 4096
sender = threading.Thread(target=s.sendall, args=(data,))
sender.start()
got = b""
while len(got) < len(data):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
sender.join()
print("ECHO", "ok" if got == data else f"differs: {len(got)} bytes back", flush=True)
s.close()

r = pf.socket(refused)
r.settimeout(20)
try:
    r.sendall(b"anyone?")
    while r.recv(65536):
        pass
except OSError as e:
    print("SOCKET", e, flush=True)
error = None
deadline = time.time() + 10
while error is None and time.time() < deadline:
    error = pf.error(refused)
    time.sleep(0.05)
print("ERROR", error, flush=True)
pf.close()
"#;

#[test]
fn python_client_port_forward() {
    let cluster = Cluster::start(&[]);
    let echo = cluster.echo.port().to_string();
    let refused = cluster.refused.port().to_string();
    let (status, stdout, stderr) = run_python(
        PYTHON_PORT_FORWARD,
        &[&cluster.server.http_url(), "web", &echo, &refused],
        Duration::from_secs(60),
    );
    let output = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{output}");
    assert!(stdout.contains("ECHO ok"), "{output}");
    let want = format!("error forwarding port {refused} to pod web, uid");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ERROR ") && l.contains(&want)),
        "the client reports the server's error for the refused port:\n{output}"
    );
}

#[test]
fn python_client_unknown_pod() {
    let cluster = Cluster::start(&[]);
    let script = r#"
import sys
from kubernetes import client
from kubernetes.stream import portforward
conf = client.Configuration(host=sys.argv[1])
api = client.CoreV1Api(client.ApiClient(conf))
try:
    portforward(api.connect_get_namespaced_pod_portforward, "nope", "default", ports="80")
    print("CONNECTED")
except Exception as e:
    print("RAISED", type(e).__name__, str(e).replace("\n", " "))
"#;
    let (status, stdout, stderr) = run_python(
        script,
        &[&cluster.server.http_url()],
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| s.success()), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("RAISED") && stdout.contains("404"),
        "the handshake fails with the server's 404:\n{stdout}\n{stderr}"
    );
}

// ===== helpers' own tests =====

/// The access log's `protocol` field, in the server's text and JSON formats.
#[test]
fn protocol_fields() {
    for (line, want) in [
        (
            r#"INFO proxy_portforward::access: stream protocol="spdy-websocket" pod=web"#,
            "spdy-websocket",
        ),
        ("INFO stream protocol=spdy client=-", "spdy"),
        (
            r#"{"fields":{"protocol":"websocket","pod":"web"}}"#,
            "websocket",
        ),
    ] {
        assert_eq!(protocol_field(line).as_deref(), Some(want), "{line}");
    }
}

/// The objects of a `--config` file: running pods on 127.0.0.1, each labelled `app=NAME`.
fn pods_file(names: &[&str]) -> String {
    (names.iter())
        .map(|n| format!("[[pod]]\nname = \"{n}\"\ntarget = \"127.0.0.1\"\n\n"))
        .collect()
}

/// SIGHUP reads `--config` again: the connection open through a pod that is removed
/// carries on, a new one to it gets kubectl's error, a pod added is served; `/metrics`
/// counts the streams and the error by protocol.
#[test]
fn sighup_reloads_the_objects_and_metrics_count_streams() {
    let Some(kubectl) = Kubectl::find_or_skip("1.33") else {
        return;
    };
    let echo = Echo::start("127.0.0.1");
    let config = TempPath::with_contents("cluster.toml", &pods_file(&["old"]));
    let path = config.path().to_str().unwrap().to_owned();
    let server = PortForwardServer::start(&["--config", &path, "--admin", "127.0.0.1:0"]);
    let admin = support::http::admin_addr(&server.proxy);
    let kubeconfig = Kubeconfig::builder(server.http_url()).write();
    let spec = format!("0:{}", echo.port());

    let mut pf = kubectl.port_forward(&kubeconfig, Transport::Default, "pod/old", &[&spec], None);
    let mut open = connect(pf.local(0));
    ping(&mut open, b"before");

    config.write(&pods_file(&["new"]));
    server.proxy.signal("HUP");
    server
        .proxy
        .expect_line("the reload", |l| l.contains("reloaded the objects"));
    ping(&mut open, b"after the reload");

    // A new connection through the same kubectl, to the pod removed.
    let mut late = connect(pf.local(0));
    let _ = late.write_all(b"anyone?");
    expect_closed(&mut late, PROMPT);
    let want = "error forwarding port";
    let line = pf
        .find_stderr(PROMPT, want)
        .unwrap_or_else(|| panic!("kubectl does not print `{want}`\n{}", pf.output()));
    assert!(line.contains("pod not found"), "{line}");
    drop(open);
    let _ = pf.wait_exit(Duration::from_secs(5));

    let added = kubectl.port_forward(&kubeconfig, Transport::Default, "pod/new", &[&spec], None);
    ping_through(added.local(0), "the pod added");
    let gone = kubectl
        .command(&kubeconfig, &["get", "pod", "old"])
        .output()
        .expect("kubectl get");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("pods \"old\" not found"),
        "{gone:?}"
    );

    let metrics = support::http::get(admin, "/metrics").body;
    let value = |series: &str| -> u64 {
        (metrics.lines())
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    let tunnel = "{protocol=\"spdy-websocket\"}";
    assert_eq!(
        value(&format!("proxy_portforward_streams_total{tunnel}")),
        3
    );
    // The refused stream, and the open one if kubectl's exit after the error cut it
    // before its close reached the pod.
    let errors = value(&format!("proxy_portforward_stream_errors_total{tunnel}"));
    assert!((1..=2).contains(&errors), "{errors} errors");
    server
        .proxy
        .expect_line("the refused stream's access-log line", |l| {
            l.contains("proxy_portforward::access")
                && l.contains("pod=old")
                && l.contains("pod not found")
        });
    // Counted as streams end: at least the first connection's two pings.
    let to_pod = value(&format!("proxy_portforward_bytes_to_pod_total{tunnel}"));
    assert!(
        to_pod >= (b"before".len() + b"after the reload".len()) as u64,
        "{to_pod}"
    );
    assert_eq!(
        value("proxy_portforward_streams_total{protocol=\"spdy\"}"),
        0
    );
    assert_eq!(
        value(&format!("proxy_portforward_sessions_total{tunnel}")),
        2
    );
}
