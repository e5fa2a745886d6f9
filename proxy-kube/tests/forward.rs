//! `proxy_kube::forward::PodForwarder`, the library behind `proxy forward TYPE/NAME`,
//! against the workspace's own port-forward server run in-process: balancing over two
//! pods (each greets with its name, then echoes, on a port number of its own for the same
//! port name), failover and waiting as the cluster changes, each protocol, serving a
//! local listener with its counters and shutdown, port names, and UDP.
//!
//! Everything is on 127.0.0.1 with kernel-chosen ports; every wait has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use proxy_core::Balance;
use proxy_kube::forward::{Connected, PodForwarder, PodStream, Protocol};
use proxy_kube::{Client, ErrorKind};
use proxy_portforward::client::UDP_NOT_NEGOTIATED;
use proxy_portforward::forward::Wire;
use proxy_portforward::server::{Listening, Server};
use proxy_testkit::client::{End, read_all, wait_end};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{self, echo_stream, listener};
use proxy_testkit::kube::Kubeconfig;
use proxy_testkit::net::RefusingPort;
use proxy_testkit::udp::UdpServer;
use proxy_testkit::wait::{PROMPT, eventually, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const ONE_MIB: usize = 1 << 20;

/// Whether a pod is in the cluster, and running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Pending,
    Gone,
}

/// What the pods' ports lead to: `web-1` and `web-2` each greet with their name on their
/// own `http` port; both have `closed` (refused) and `dns` (a UDP echo).
struct Pods {
    web1: echo::Server,
    web2: echo::Server,
    refused: RefusingPort,
    udp: UdpServer,
}

impl Pods {
    async fn start() -> Pods {
        Pods {
            web1: greeter("web-1").await,
            web2: greeter("web-2").await,
            refused: RefusingPort::bind(),
            udp: UdpServer::echo_on("127.0.0.1:0".parse().unwrap()),
        }
    }

    /// The `http` port of pod `name`.
    fn http(&self, name: &str) -> u16 {
        match name {
            "web-1" => self.web1.addr().port(),
            "web-2" => self.web2.addr().port(),
            other => panic!("no pod {other}"),
        }
    }

    /// The cluster file: both pods as `states` say, behind `svc/web` (port 80 `http`,
    /// `targetPort: http`) and `deploy/web`.
    fn objects(&self, states: [State; 2]) -> String {
        let mut text = String::new();
        for (name, state) in ["web-1", "web-2"].into_iter().zip(states) {
            if state == State::Gone {
                continue;
            }
            text.push_str(&format!(
                "[[pod]]\nname = \"{name}\"\ntarget = \"127.0.0.1\"\nlabels = {{ app = \"web\" }}\n\
                 ports = {{ http = {}, closed = {}, dns = {} }}\nrunning = {}\n\n",
                self.http(name),
                self.refused.port(),
                self.udp.addr().port(),
                state == State::Ready,
            ));
        }
        text.push_str(
            "[[service]]\nname = \"web\"\nselector = { app = \"web\" }\n\
             ports = [{ name = \"http\", port = 80, target_port = \"http\" }]\n\n\
             [[deployment]]\nname = \"web\"\nselector = { app = \"web\" }\n",
        );
        text
    }
}

/// A server on 127.0.0.1 that writes `NAME\n` on each connection, then echoes it.
async fn greeter(name: &str) -> echo::Server {
    let greeting = format!("{name}\n");
    echo::Server::spawn(listener().await, move |mut stream| {
        let greeting = greeting.clone();
        async move {
            if stream.write_all(greeting.as_bytes()).await.is_ok() {
                echo_stream(stream).await;
            }
        }
    })
}

/// The pods, our port-forward server serving them over plain HTTP, and a kubeconfig for it.
struct Cluster {
    pods: Pods,
    server: Server,
    _listening: Listening,
    kubeconfig: Kubeconfig,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(|b| b).await
    }

    async fn start_with(
        configure: impl FnOnce(
            proxy_portforward::server::ServerBuilder,
        ) -> proxy_portforward::server::ServerBuilder,
    ) -> Cluster {
        let pods = Pods::start().await;
        let text = pods.objects([State::Ready, State::Ready]);
        let cluster = proxy_portforward::cluster_file::parse(&text, "cluster.toml").unwrap();
        let server = configure(Server::builder(cluster)).build();
        let listening = server
            .bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let kubeconfig = Kubeconfig::builder(format!("http://{}", listening.local_addr())).write();
        Cluster {
            pods,
            server,
            _listening: listening,
            kubeconfig,
        }
    }

    /// Serves the pods as `states` say from now on.
    fn set(&self, states: [State; 2]) {
        let text = self.pods.objects(states);
        let cluster = proxy_portforward::cluster_file::parse(&text, "cluster.toml").unwrap();
        self.server.set_cluster(cluster);
    }

    /// Returns once `forwarder`'s pod watch is live. Our server sends a watch that starts
    /// from an older version than the current one the pods of now as `ADDED`, and no
    /// `DELETED` for pods gone meanwhile: a pod removed before the watch is up would
    /// stay in the forwarder's set. A change seen through the watch proves it is up.
    async fn watched(&self, forwarder: &PodForwarder) {
        self.set([State::Ready, State::Pending]);
        eventually("the forwarder sees web-2 pending", PROMPT, || {
            forwarder.pods().ready_names() == ["web-1"]
        })
        .await;
        self.set([State::Ready, State::Ready]);
        eventually("the forwarder sees web-2 ready", PROMPT, || {
            forwarder.pods().ready_names().len() == 2
        })
        .await;
    }

    async fn client(&self) -> Client {
        Client::builder()
            .kubeconfig(self.kubeconfig.path())
            .build()
            .await
            .unwrap()
    }

    /// A forwarder of `target` with the builder's settings changed by `configure`, and a
    /// wait of 10 s unless it sets one.
    async fn forwarder_with(
        &self,
        target: &str,
        configure: impl FnOnce(
            proxy_kube::forward::PodForwarderBuilder,
        ) -> proxy_kube::forward::PodForwarderBuilder,
    ) -> PodForwarder {
        let builder = PodForwarder::builder(self.client().await, target.parse().unwrap())
            .wait(Duration::from_secs(10));
        within(PROMPT, "build the forwarder", configure(builder).build())
            .await
            .unwrap_or_else(|e| panic!("build a forwarder of {target}: {e}"))
    }

    async fn forwarder(&self, target: &str) -> PodForwarder {
        self.forwarder_with(target, |b| b).await
    }
}

/// Reads the greeting line of a pod (or of a local connection forwarded to one).
async fn greeting(stream: &mut (impl AsyncRead + Unpin)) -> String {
    within(PROMPT, "read the greeting", async {
        let mut line = Vec::new();
        loop {
            let byte = stream.read_u8().await.expect("read the greeting");
            if byte == b'\n' {
                return String::from_utf8(line).expect("a UTF-8 greeting");
            }
            line.push(byte);
        }
    })
    .await
}

/// Connects to `remote` and checks the connection: the pod that greets is the one
/// `Connected.pod` names, on that pod's own `http` port, and it echoes.
async fn connect_checked(
    forwarder: &PodForwarder,
    pods: &Pods,
    remote: &str,
) -> Connected<PodStream> {
    let mut connected = within(PROMPT, "connect", forwarder.connect(remote, None))
        .await
        .unwrap_or_else(|e| panic!("connect to {remote}: {e}"));
    let who = greeting(&mut connected.stream).await;
    assert_eq!(who, &*connected.pod, "the pod that answered");
    assert_eq!(connected.port, pods.http(&who), "{who}'s own http port");
    echo_round_trip(&mut connected.stream, who.as_bytes()).await;
    connected
}

/// Writes `data` and reads as much back at the same time, checking it is the same.
async fn echo_round_trip(stream: &mut PodStream, data: &[u8]) {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut got = vec![0; data.len()];
    let (wrote, read) = within(PROMPT, "an echo", async {
        tokio::join!(w.write_all(data), r.read_exact(&mut got))
    })
    .await;
    wrote.expect("write to the pod");
    read.expect("read the echo");
    assert_bytes("echo", &got, data);
}

/// Connects a local client to `addr` and reads which pod answered.
async fn local_client(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = within(PROMPT, "connect", TcpStream::connect(addr))
        .await
        .expect("connect to the forwarded listener");
    let who = greeting(&mut stream).await;
    (stream, who)
}

/// Ends a local client: a FIN, then everything until the pod's FIN.
async fn finish(mut stream: TcpStream) {
    stream.shutdown().await.expect("shutdown");
    let (rest, end) = within(PROMPT, "the pod's FIN", read_all(&mut stream)).await;
    end.expect("a clean end");
    assert!(rest.is_empty(), "{} bytes after the FIN", rest.len());
}

// ===== balancing =====

#[tokio::test]
async fn round_robin_spreads_over_both_pods_each_on_its_own_port() {
    let cluster = Cluster::start().await;
    for (target, remote) in [
        ("svc/web", "80"),
        ("svc/web", "http"),
        ("deploy/web", "http"),
    ] {
        let forwarder = cluster.forwarder(target).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            // Dropped at once: round robin does not look at open connections.
            let connected = connect_checked(&forwarder, &cluster.pods, remote).await;
            seen.push(connected.pod.to_string());
        }
        for pair in seen.windows(2) {
            assert_ne!(
                pair[0], pair[1],
                "{target} {remote}: turns alternate: {seen:?}"
            );
        }
        let web1 = seen.iter().filter(|p| *p == "web-1").count();
        assert_eq!(web1, 3, "{target} {remote}: {seen:?}");
    }
}

#[tokio::test]
async fn least_connections_prefers_the_pod_with_fewer_open_connections() {
    let cluster = Cluster::start().await;
    let forwarder = cluster
        .forwarder_with("svc/web", |b| b.balance(Balance::LeastConnections))
        .await;
    let busy = connect_checked(&forwarder, &cluster.pods, "http").await;
    let other = if &*busy.pod == "web-1" {
        "web-2"
    } else {
        "web-1"
    };
    // While `busy` is open, each new connection (closed before the next) goes to the
    // other pod.
    for _ in 0..5 {
        let connected = connect_checked(&forwarder, &cluster.pods, "http").await;
        assert_eq!(&*connected.pod, other);
    }
    // Held open: one on each pod, then a tie (either), then the less loaded again.
    let a = connect_checked(&forwarder, &cluster.pods, "http").await;
    assert_eq!(&*a.pod, other);
    let b = connect_checked(&forwarder, &cluster.pods, "http").await;
    let c = connect_checked(&forwarder, &cluster.pods, "http").await;
    assert_ne!(c.pod, b.pod, "two open on {}, one on the other", b.pod);
    drop((a, b, c));
    // Dropping `busy` evens the count: both pods get connections again.
    drop(busy);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(connect_checked(&forwarder, &cluster.pods, "http").await.pod);
    }
    assert!(seen.iter().any(|p| &**p == "web-1"), "{seen:?}");
    assert!(seen.iter().any(|p| &**p == "web-2"), "{seen:?}");
}

// ===== the cluster changing =====

#[tokio::test]
async fn a_pod_that_goes_gets_no_new_connections_and_its_open_ones_go_on() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("deploy/web").await;
    cluster.watched(&forwarder).await;
    let mut on_web1 = loop {
        let connected = connect_checked(&forwarder, &cluster.pods, "http").await;
        if &*connected.pod == "web-1" {
            break connected;
        }
    };
    cluster.set([State::Gone, State::Ready]);
    eventually("the forwarder sees web-1 go", PROMPT, || {
        forwarder.pods().ready_names() == ["web-2"]
    })
    .await;
    for _ in 0..4 {
        let connected = connect_checked(&forwarder, &cluster.pods, "http").await;
        assert_eq!(&*connected.pod, "web-2");
    }
    // The connection opened before still reaches web-1.
    echo_round_trip(&mut on_web1.stream, b"still there").await;

    // web-1 back: both again.
    cluster.set([State::Ready, State::Ready]);
    eventually("the forwarder sees web-1 back", PROMPT, || {
        forwarder.pods().ready_names().len() == 2
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(connect_checked(&forwarder, &cluster.pods, "http").await.pod);
    }
    assert!(seen.iter().any(|p| &**p == "web-1"), "{seen:?}");
}

#[tokio::test]
async fn a_connection_waits_for_a_pod_to_become_ready() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    cluster.set([State::Pending, State::Pending]);
    eventually("the forwarder sees no ready pod", PROMPT, || {
        forwarder.pods().ready_names().is_empty()
    })
    .await;
    let waiting = tokio::spawn({
        let forwarder = forwarder.clone();
        async move { forwarder.connect("http", None).await }
    });
    // Still waiting a moment later (the wait is 10 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "connect did not wait for a ready pod"
    );
    cluster.set([State::Ready, State::Pending]);
    let mut connected = within(PROMPT, "the waiting connect", waiting)
        .await
        .unwrap()
        .expect("a connection once web-1 is ready");
    assert_eq!(&*connected.pod, "web-1");
    assert_eq!(greeting(&mut connected.stream).await, "web-1");
}

#[tokio::test]
async fn with_no_ready_pod_connect_fails_when_the_wait_ends() {
    let cluster = Cluster::start().await;
    let wait = Duration::from_millis(500);
    let forwarder = cluster.forwarder_with("deploy/web", |b| b.wait(wait)).await;
    cluster.set([State::Pending, State::Pending]);
    eventually("the forwarder sees no ready pod", PROMPT, || {
        forwarder.pods().ready_names().is_empty()
    })
    .await;
    let started = Instant::now();
    let e = within(PROMPT, "connect", forwarder.connect("http", None))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= wait, "gave up after {took:?}, before the wait");
    assert!(took < wait + Duration::from_secs(3), "took {took:?}");
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    assert_eq!(
        e.to_string(),
        "no ready pod for deployment/web (waited 500ms)"
    );

    // Building one with no running pod fails the same way kubectl does.
    let e = within(
        PROMPT,
        "build",
        PodForwarder::builder(cluster.client().await, "deploy/web".parse().unwrap())
            .wait(wait)
            .build(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotRunning);
    assert_eq!(
        e.to_string(),
        "unable to forward port because pod is not running. Current status=Pending"
    );
}

// ===== protocols =====

#[tokio::test]
async fn auto_settles_on_spdy_over_websocket_with_our_server() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    assert_eq!(
        forwarder.protocol(),
        Protocol::Auto,
        "before any connection"
    );
    let _connected = connect_checked(&forwarder, &cluster.pods, "http").await;
    assert_eq!(forwarder.protocol(), Protocol::SpdyOverWebSocket);
    let stats = cluster.server.stats();
    assert_eq!(stats.wire(Wire::SpdyOverWebSocket).streams_total, 1);
    assert_eq!(stats.wire(Wire::Spdy).sessions_total, 0);
    assert_eq!(stats.wire(Wire::WebSocket).sessions_total, 0);
}

#[tokio::test]
async fn each_protocol_carries_one_mib_byte_exact() {
    let cluster = Cluster::start().await;
    let data = payload(7, ONE_MIB);
    for (protocol, wire) in [
        (Protocol::Spdy, Wire::Spdy),
        (Protocol::SpdyOverWebSocket, Wire::SpdyOverWebSocket),
        (Protocol::WebSocket, Wire::WebSocket),
    ] {
        let forwarder = cluster
            .forwarder_with("svc/web", |b| b.protocol(protocol))
            .await;
        let before = cluster.server.stats().wire(wire).bytes_to_pod;
        let mut connected = connect_checked(&forwarder, &cluster.pods, "http").await;
        assert_eq!(forwarder.protocol(), protocol);
        echo_round_trip(&mut connected.stream, &data).await;
        drop(connected);
        // The server's counters (added up when a stream ends) show which protocol
        // carried it.
        eventually(
            &format!("{protocol}: 1 MiB to the pod over {wire:?}"),
            PROMPT,
            || cluster.server.stats().wire(wire).bytes_to_pod - before >= ONE_MIB as u64,
        )
        .await;
    }
}

// ===== serving a listener =====

#[tokio::test]
async fn serve_forwards_counts_and_calls_back_once_per_connection() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let serving = forwarder.serve_with(listener().await, "http", {
        let calls = calls.clone();
        move |accepted| {
            assert!(accepted.peer.ip().is_loopback());
            calls.fetch_add(1, SeqCst);
        }
    });
    let addr = serving.local_addr();
    let mut seen = Vec::new();
    for i in 0..4 {
        let (mut stream, who) = local_client(addr).await;
        assert_eq!(serving.open_connections(), 1, "connection {i}");
        stream.write_all(b"ping").await.unwrap();
        let mut back = [0; 4];
        within(PROMPT, "echo", stream.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"ping");
        finish(stream).await;
        seen.push(who);
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin: {seen:?}");
    }
    eventually("no connection open", PROMPT, || {
        serving.open_connections() == 0
    })
    .await;
    assert_eq!(calls.load(SeqCst), 4);
    assert_eq!(serving.total_connections(), 4);
    assert_eq!(serving.failed_connections(), 0);
    assert!(within(PROMPT, "shutdown", serving.shutdown(PROMPT)).await);

    // A port the pods refuse (a container port name: not one of the Service's): the
    // local connection fails, and is counted as failed.
    let forwarder = cluster.forwarder("deploy/web").await;
    let serving = forwarder.serve(listener().await, "closed");
    let mut stream = TcpStream::connect(serving.local_addr()).await.unwrap();
    let end = wait_end(&mut stream, PROMPT).await;
    assert_eq!(end, End::Reset, "a failed connection is reset");
    eventually("the failure counted", PROMPT, || {
        serving.failed_connections() == 1
    })
    .await;
    assert_eq!(serving.total_connections(), 1);
    assert_eq!(serving.open_connections(), 0);
}

#[tokio::test]
async fn shutdown_lets_open_connections_finish_within_the_drain() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    let serving = forwarder.serve(listener().await, "http");
    let addr = serving.local_addr();
    let (stream, _) = local_client(addr).await;
    let shutdown = tokio::spawn(serving.clone().shutdown(PROMPT));
    // No new connections: the listener is closed.
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after shutdown");
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the open connection"
    );
    assert_eq!(serving.open_connections(), 1);
    finish(stream).await;
    let drained = within(PROMPT, "shutdown", shutdown).await.unwrap();
    assert!(drained, "the open connection finished within the drain");
    assert_eq!(serving.open_connections(), 0);
    assert_eq!(serving.total_connections(), 1);
}

#[tokio::test]
async fn stop_accepting_closes_the_listener_and_open_connections_go_on() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    let serving = forwarder.serve(listener().await, "http");
    let addr = serving.local_addr();
    let (mut stream, _) = local_client(addr).await;
    serving.stop_accepting();
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after stop_accepting");
    stream.write_all(b"more").await.unwrap();
    let mut back = [0; 4];
    within(PROMPT, "echo", stream.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"more");
    finish(stream).await;
    assert!(within(PROMPT, "shutdown", serving.shutdown(PROMPT)).await);
}

#[tokio::test]
async fn shutdown_closes_a_connection_still_open_after_a_tiny_drain() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("svc/web").await;
    let serving = forwarder.serve(listener().await, "http");
    let (mut stream, _) = local_client(serving.local_addr()).await;
    let started = Instant::now();
    let drained = within(
        PROMPT,
        "shutdown",
        serving.clone().shutdown(Duration::from_millis(50)),
    )
    .await;
    assert!(!drained, "a connection was still open");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The local connection is closed.
    wait_end(&mut stream, PROMPT).await;
    assert_eq!(serving.open_connections(), 0);

    // close_now: at once, without waiting.
    let serving = forwarder.serve(listener().await, "http");
    let (mut stream, _) = local_client(serving.local_addr()).await;
    serving.close_now();
    wait_end(&mut stream, PROMPT).await;
    eventually("no connection open", PROMPT, || {
        serving.open_connections() == 0
    })
    .await;
}

// ===== ports =====

#[tokio::test]
async fn remote_port_translates_names_and_words_errors_as_kubectl() {
    let cluster = Cluster::start().await;
    let web1 = cluster.pods.http("web-1");
    let svc = cluster.forwarder("svc/web").await;
    assert_eq!(svc.remote_port("http").unwrap(), web1);
    assert_eq!(svc.remote_port("80").unwrap(), web1);
    let e = svc.remote_port("https").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Port);
    assert_eq!(
        e.to_string(),
        "Service 'web' does not have a named port 'https'"
    );
    let e = svc.remote_port("8080").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service web does not have a service port 8080"
    );
    // A port no ready pod has fails at once, not when the wait (60 s here) ends.
    let started = std::time::Instant::now();
    let e = within(PROMPT, "connect", svc.connect("https", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let deploy = cluster
        .forwarder_with("deploy/web", |b| b.wait(Duration::from_millis(500)))
        .await;
    assert_eq!(deploy.remote_port("http").unwrap(), web1);
    assert_eq!(deploy.remote_port("9000").unwrap(), 9000);
    let e = deploy.remote_port("grpc").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Port);
    assert_eq!(
        e.to_string(),
        "Pod 'web-1' does not have a named port 'grpc'"
    );
    // connect says the same.
    let e = within(PROMPT, "connect", deploy.connect("grpc", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("does not have a named port 'grpc'"),
        "{e}"
    );
}

// ===== UDP =====

#[tokio::test]
async fn udp_datagrams_reach_the_pods_udp_port() {
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder_with("pod/web-2", |b| b.udp(true)).await;
    within(PROMPT, "check_udp", forwarder.check_udp())
        .await
        .expect("our server carries UDP");
    let connected = within(PROMPT, "connect_udp", forwarder.connect_udp("dns", None))
        .await
        .expect("connect_udp");
    assert_eq!(&*connected.pod, "web-2");
    assert_eq!(connected.port, cluster.pods.udp.addr().port());
    for (i, len) in [0, 1, 512, 1400, 9000].into_iter().enumerate() {
        let datagram = payload(i as u64, len);
        connected.stream.send(&datagram).await.unwrap();
        let back = within(PROMPT, "the echo", connected.stream.recv())
            .await
            .unwrap()
            .expect("a datagram, not the end");
        assert_bytes("UDP echo", &back, &datagram);
    }
    assert_eq!(cluster.pods.udp.count(), 5);
}

#[tokio::test]
async fn check_udp_is_unsupported_without_udp_on_either_side() {
    // A server that carries TCP only.
    let cluster = Cluster::start_with(|b| b.udp(false)).await;
    let forwarder = cluster.forwarder_with("pod/web-1", |b| b.udp(true)).await;
    let e = within(PROMPT, "check_udp", forwarder.check_udp())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    assert_eq!(e.to_string(), UDP_NOT_NEGOTIATED);
    // connect_udp fails at once, not at the end of the 10 s wait.
    let started = Instant::now();
    let e = within(PROMPT, "connect_udp", forwarder.connect_udp("dns", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // TCP is fine.
    connect_checked(&forwarder, &cluster.pods, "http").await;

    // A forwarder that does not offer UDP, to a server that would carry it.
    let cluster = Cluster::start().await;
    let forwarder = cluster.forwarder("pod/web-1").await;
    let e = within(PROMPT, "check_udp", forwarder.check_udp())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
}

// ===== an API server that does not answer =====

/// A TCP relay to the API server that can turn into a black hole: new connections are
/// then accepted and read, and never answered (connections relayed already go on).
struct Relay {
    addr: SocketAddr,
    hole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        let hole = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let hole = hole.clone();
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let hole = hole.load(SeqCst);
                    tokio::spawn(async move {
                        if hole {
                            let _ = read_all(&mut stream).await;
                        } else if let Ok(mut server) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut stream, &mut server).await;
                        }
                    });
                }
            }
        });
        Relay { addr, hole, task }
    }

    fn black_hole(&self, on: bool) {
        self.hole.store(on, SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fix: opening a session was not bounded by the wait, so `connect` (and `check_udp`)
/// hung for ever on an API server that accepts and never answers.
#[tokio::test]
async fn a_session_that_never_opens_fails_when_the_wait_ends() {
    let cluster = Cluster::start().await;
    let relay = Relay::start(cluster._listening.local_addr()).await;
    let kubeconfig = Kubeconfig::builder(format!("http://{}", relay.addr)).write();
    let client = Client::builder()
        .kubeconfig(kubeconfig.path())
        .build()
        .await
        .unwrap();
    let wait = Duration::from_millis(500);
    let forwarder = within(
        PROMPT,
        "build",
        PodForwarder::builder(client, "deploy/web".parse().unwrap())
            .wait(wait)
            .udp(true)
            .build(),
    )
    .await
    .unwrap();
    relay.black_hole(true);
    for _ in 0..2 {
        let started = Instant::now();
        let e = within(PROMPT, "connect", forwarder.connect("http", None))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(
            e.to_string().starts_with("no answer from the API server"),
            "{e}"
        );
        // The wait, or the least time an open is given (1 s), and a margin.
        assert!(started.elapsed() < Duration::from_secs(3), "{e}");
        let e = within(PROMPT, "check_udp", forwarder.check_udp())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }
    // Nothing is left locked by the attempts given up.
    relay.black_hole(false);
    connect_checked(&forwarder, &cluster.pods, "http").await;
    within(PROMPT, "check_udp", forwarder.check_udp())
        .await
        .unwrap();
}
