//! Our port-forward client through a real `kubectl proxy` (client-go's upgrade-aware
//! reverse proxy) in front of our own port-forward server: raw SPDY, SPDY over WebSocket
//! and WebSocket channels, and `proxy_kube::Client`'s GETs, each with kubectl 1.27 and
//! 1.33, to a server over plain HTTP and to one over HTTPS that wants a bearer token
//! (which kubectl proxy adds from its kubeconfig: our client sends none).
//!
//! The pod's port is a loopback echo server. Every test skips (printing why) only when no
//! kubectl of the matrix is installed; a missing version of two is skipped alone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_kube::Client;
use proxy_portforward::channel::{ALL_PROTOCOLS, Protocol};
use proxy_portforward::client::{
    ChannelStream, SpdySession, UpgradeError, upgrade_spdy, upgrade_websocket,
};
use proxy_portforward::server::{Listening, Server, tls_config};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{self, echo_server};
use proxy_testkit::kube::{Kubeconfig, Kubectl, KubectlProxy, TestCerts};
use proxy_testkit::wait::within;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The kubectl releases run, oldest and newest.
const VERSIONS: &[&str] = &["1.27", "1.33"];
const LIMIT: Duration = Duration::from_secs(60);
const PATH: &str = "/api/v1/namespaces/default/pods/web/portforward";
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const TOKEN: &str = "s3cret";
const FOUR_MIB: usize = 4 << 20;

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// How our server listens, and what kubectl proxy's kubeconfig says to reach it.
#[derive(Clone, Copy, Debug)]
enum Scheme {
    /// `http://`, no credentials.
    Http,
    /// `https://` with a CA of the test's and a bearer token the server requires.
    Https,
}

#[derive(Clone, Copy, Debug)]
enum Wire {
    Spdy,
    Tunnel,
    Channels,
}

/// Our server with pod `web` (and `svc/web` over it) whose port `echo` is `pod`'s, and a
/// `kubectl proxy` in front of it.
struct Setup {
    proxy: KubectlProxy,
    pod: echo::Server,
    listening: Listening,
    _kubeconfig: Kubeconfig,
    certs: Option<TestCerts>,
    scheme: Scheme,
    what: String,
}

async fn setup(kubectl: &Kubectl, scheme: Scheme) -> Setup {
    let pod = echo_server().await;
    let objects = format!(
        "[[pod]]\nname = \"web\"\ntarget = \"127.0.0.1\"\nlabels = {{ app = \"web\" }}\n\
         ports = {{ echo = {port} }}\n\n\
         [[service]]\nname = \"web\"\nselector = {{ app = \"web\" }}\n\
         ports = [{{ name = \"echo\", port = 80, target_port = \"echo\" }}]\n",
        port = pod.addr().port()
    );
    let cluster = proxy_portforward::cluster_file::parse(&objects, "objects.toml").unwrap();
    // v5 too, for the channels' half-close.
    let builder = Server::builder(cluster).channel_protocols(ALL_PROTOCOLS);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (listening, kubeconfig, certs) = match scheme {
        Scheme::Http => {
            let listening = builder.build().bind(any, None).await.unwrap();
            let url = format!("http://{}", listening.local_addr());
            (listening, Kubeconfig::builder(url).write(), None)
        }
        Scheme::Https => {
            let certs = TestCerts::generate();
            let tls = tls_config(&certs.server_cert(), &certs.server_key()).unwrap();
            let listening = builder
                .token(TOKEN)
                .build()
                .bind(any, Some(tls))
                .await
                .unwrap();
            let url = format!("https://{}", listening.local_addr());
            let kubeconfig = Kubeconfig::builder(url)
                .ca_pem(certs.ca_pem())
                .token(TOKEN)
                .write();
            (listening, kubeconfig, Some(certs))
        }
    };
    let proxy = kubectl.proxy(&kubeconfig);
    let what = format!("{} to {scheme:?}", proxy.what());
    Setup {
        proxy,
        pod,
        listening,
        _kubeconfig: kubeconfig,
        certs,
        scheme,
        what,
    }
}

/// Runs `case` against each installed kubectl of [`VERSIONS`] and each [`Scheme`];
/// prints why and passes when none is installed.
async fn matrix<F, Fut>(case: F)
where
    F: Fn(Setup) -> Fut,
    Fut: Future<Output = ()>,
{
    let found: Vec<Kubectl> = VERSIONS
        .iter()
        .filter_map(|v| Kubectl::find_or_skip(v))
        .collect();
    if found.is_empty() {
        println!("skipping: no kubectl of {VERSIONS:?} is installed");
        return;
    }
    for kubectl in &found {
        for scheme in [Scheme::Http, Scheme::Https] {
            let setup = setup(kubectl, scheme).await;
            let what = setup.what.clone();
            within(LIMIT, &what, case(setup)).await;
        }
    }
}

impl Setup {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.proxy.addr()).await.unwrap()
    }

    fn port(&self) -> u16 {
        self.pod.addr().port()
    }

    /// A SPDY session through kubectl proxy: raw, or in the WebSocket tunnel.
    async fn session(&self, wire: Wire) -> SpdySession {
        let tcp = self.connect().await;
        match wire {
            Wire::Spdy => {
                let upgraded = upgrade_spdy(tcp, PATH, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{}: SPDY upgrade: {e}", self.what));
                SpdySession::new(upgraded)
            }
            Wire::Tunnel => {
                let (ws, protocol) = upgrade_websocket(tcp, PATH, &[TUNNEL], &[])
                    .await
                    .unwrap_or_else(|e| panic!("{}: tunnel upgrade: {e}", self.what));
                assert_eq!(protocol, TUNNEL, "{}", self.what);
                SpdySession::tunnel(ws)
            }
            Wire::Channels => unreachable!("channels have no session"),
        }
    }

    /// A channel-protocol stream through kubectl proxy, offering v5 then v4: v5 must be
    /// chosen (it has the half-close).
    async fn channels(&self) -> io::Result<ChannelStream<proxy_portforward::client::Upgraded>> {
        let tcp = self.connect().await;
        let path = format!("{PATH}?ports={}", self.port());
        let offer = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
        let (ws, chosen) = upgrade_websocket(tcp, &path, &offer, &[])
            .await
            .unwrap_or_else(|e| panic!("{}: channel upgrade: {e}", self.what));
        assert_eq!(chosen, "v5.channel.k8s.io", "{}", self.what);
        let protocol = Protocol::from_name(&chosen).unwrap();
        ChannelStream::connect(ws, protocol, self.port()).await
    }

    /// One forwarded connection to the pod's port, and its session (kept alive with it).
    async fn forwarded(&self, wire: Wire) -> (Box<dyn Io>, Option<SpdySession>) {
        match wire {
            Wire::Channels => {
                let stream = self.channels().await;
                let stream = stream.unwrap_or_else(|e| panic!("{}: channels: {e}", self.what));
                (Box::new(stream), None)
            }
            _ => {
                let session = self.session(wire).await;
                let stream = session
                    .open(self.port())
                    .await
                    .unwrap_or_else(|e| panic!("{}: open: {e}", self.what));
                (Box::new(stream), Some(session))
            }
        }
    }
}

/// Sends `data` while reading it back (both ways at once), then shuts down and expects
/// the pod's FIN after the echo.
async fn echo_through(stream: Box<dyn Io>, data: Vec<u8>, what: &str) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let len = data.len();
    let sending = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        (wr, data)
    });
    let mut back = vec![0; len];
    rd.read_exact(&mut back).await.unwrap();
    let (mut wr, data) = sending.await.unwrap();
    assert_bytes(what, &back, &data);
    wr.shutdown().await.unwrap();
    let mut rest = Vec::new();
    rd.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "{what}: {} bytes after the echo",
        rest.len()
    );
}

async fn four_mib(wire: Wire) {
    matrix(|setup| async move {
        let (stream, _session) = setup.forwarded(wire).await;
        let what = format!("{}: 4 MiB over {wire:?}", setup.what);
        echo_through(stream, payload(4, FOUR_MIB), &what).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_byte_exact_both_ways_over_spdy() {
    four_mib(Wire::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_byte_exact_both_ways_over_the_tunnel() {
    four_mib(Wire::Tunnel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_byte_exact_both_ways_over_channels() {
    four_mib(Wire::Channels).await;
}

async fn two_streams(wire: Wire) {
    matrix(|setup| async move {
        let session = setup.session(wire).await;
        let a = session.open(setup.port()).await.unwrap();
        let b = session.open(setup.port()).await.unwrap();
        let what = format!("{}: two streams over {wire:?}", setup.what);
        let (wa, wb) = (format!("{what}, a"), format!("{what}, b"));
        tokio::join!(
            echo_through(Box::new(a), payload(10, FOUR_MIB), &wa),
            echo_through(Box::new(b), payload(11, FOUR_MIB), &wb),
        );
        assert!(!session.is_closed(), "{what}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_streams_on_one_spdy_session() {
    two_streams(Wire::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_streams_on_one_tunnelled_session() {
    two_streams(Wire::Tunnel).await;
}

/// Writes 1 MiB without reading, shuts down, then reads it all back: the pod's side
/// goes on after our FIN, and its FIN ends reading.
async fn half_close(wire: Wire) {
    matrix(|setup| async move {
        let (mut stream, _session) = setup.forwarded(wire).await;
        let what = format!("{}: half-close over {wire:?}", setup.what);
        let data = payload(12, 1 << 20);
        let (mut rd, mut wr) = tokio::io::split(&mut stream);
        let reading = async {
            let mut back = Vec::new();
            rd.read_to_end(&mut back).await.unwrap();
            back
        };
        let writing = async {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let (back, ()) = tokio::join!(reading, writing);
        assert_bytes(&what, &back, &data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_our_shutdown_the_rest_arrives_over_spdy() {
    half_close(Wire::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_our_shutdown_the_rest_arrives_over_the_tunnel() {
    half_close(Wire::Tunnel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_our_shutdown_the_rest_arrives_over_channels_v5() {
    half_close(Wire::Channels).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_client_resolves_pod_and_svc_through_kubectl_proxy() {
    matrix(|setup| async move {
        let config = Kubeconfig::builder(setup.proxy.url()).write();
        let client = Client::builder()
            .kubeconfig(config.path())
            .build()
            .await
            .unwrap();
        let pod = client.resolve(&"pod/web".parse().unwrap()).await;
        let pod = pod.unwrap_or_else(|e| panic!("{}: pod/web: {e}", setup.what));
        assert_eq!(pod.pods.len(), 1, "{}", setup.what);
        assert_eq!(pod.ready_pods().len(), 1, "{}", setup.what);
        let svc = client.resolve(&"svc/web".parse().unwrap()).await;
        let svc = svc.unwrap_or_else(|e| panic!("{}: svc/web: {e}", setup.what));
        assert_eq!(svc.selector.as_deref(), Some("app=web"), "{}", setup.what);
        let web = &svc.pods[0];
        assert_eq!(web.metadata.name.as_deref(), Some("web"));
        assert_eq!(svc.remote_port(web, "80").unwrap(), setup.port());

        // The endpoint our port-forward connections would use: kubectl proxy's, no
        // credentials of ours.
        let endpoint = client.api_endpoint().await.unwrap();
        assert_eq!(endpoint.authorization, None);
        assert!(endpoint.tls.is_none());
        let tcp = endpoint.connect().await.unwrap();
        let mut stream = SpdySession::new(upgrade_spdy(tcp, PATH, &[]).await.unwrap())
            .open(setup.port())
            .await
            .unwrap();
        stream.write_all(b"through the endpoint").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"through the endpoint", "{}", setup.what);

        // What kubectl proxy adds: straight to the server, with no token, the same
        // upgrade is refused.
        if let (Scheme::Https, Some(certs)) = (setup.scheme, &setup.certs) {
            let direct = Kubeconfig::builder(format!("https://{}", setup.listening.local_addr()))
                .ca_pem(certs.ca_pem())
                .write();
            let client = Client::builder()
                .kubeconfig(direct.path())
                .build()
                .await
                .unwrap();
            let tcp = client
                .api_endpoint()
                .await
                .unwrap()
                .connect()
                .await
                .unwrap();
            let e = upgrade_spdy(tcp, PATH, &[]).await.unwrap_err();
            assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_are_answered_through_kubectl_proxy() {
    matrix(|setup| async move {
        for wire in [Wire::Spdy, Wire::Tunnel] {
            let tcp = setup.connect().await;
            let builder = SpdySession::builder()
                .keepalive(Duration::from_millis(100))
                .keepalive_timeout(Duration::from_secs(1));
            let session = match wire {
                Wire::Spdy => builder.start(upgrade_spdy(tcp, PATH, &[]).await.unwrap()),
                _ => {
                    let (ws, _) = upgrade_websocket(tcp, PATH, &[TUNNEL], &[]).await.unwrap();
                    builder.start(proxy_portforward::forward::WebSocketBytes::new(ws))
                }
            };
            // Some fifteen PINGs, idle, longer than one may go unanswered.
            let idle = tokio::time::timeout(Duration::from_millis(1500), session.closed()).await;
            assert!(
                idle.is_err(),
                "{}: {wire:?} ended: {}",
                setup.what,
                idle.unwrap()
            );
            let mut stream = session.open(setup.port()).await.unwrap();
            stream.write_all(b"after the pings").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"after the pings", "{}: {wire:?}", setup.what);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_through_kubectl_proxy_with_their_status() {
    matrix(|setup| async move {
        // The node's 404 and its Status message, on every wire.
        let nope = "/api/v1/namespaces/default/pods/nope/portforward";
        let e = upgrade_spdy(setup.connect().await, nope, &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.status().map(|s| s.as_u16()),
            Some(404),
            "{}: {e}",
            setup.what
        );
        assert!(
            e.to_string().contains(r#"pods "nope" not found"#),
            "{}: {e}",
            setup.what
        );
        let tcp = setup.connect().await;
        let e = upgrade_websocket(tcp, nope, &[TUNNEL], &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.status().map(|s| s.as_u16()),
            Some(404),
            "{}: {e}",
            setup.what
        );
        let tcp = setup.connect().await;
        let with_port = format!("{nope}?ports={}", setup.port());
        let e = upgrade_websocket(tcp, &with_port, &["v4.channel.k8s.io"], &[])
            .await
            .unwrap_err();
        assert_eq!(
            e.status().map(|s| s.as_u16()),
            Some(404),
            "{}: {e}",
            setup.what
        );

        // kubectl proxy's own: a Host it does not accept.
        let tcp = setup.connect().await;
        let e = upgrade_spdy(tcp, PATH, &[("host", "api.example.com")]).await;
        match e {
            Err(UpgradeError::Refused { status, .. }) => {
                assert_eq!(status.as_u16(), 403, "{}", setup.what)
            }
            other => panic!("{}: Host api.example.com: {:?}", setup.what, other.err()),
        }
        // Nor exec or attach (`--reject-paths`); portforward it lets through.
        for verb in ["exec", "attach"] {
            let path = format!("/api/v1/namespaces/default/pods/web/{verb}");
            let e = upgrade_spdy(setup.connect().await, &path, &[])
                .await
                .unwrap_err();
            assert_eq!(
                e.status().map(|s| s.as_u16()),
                Some(403),
                "{}: {e}",
                setup.what
            );
        }
        // Its own address as Host is accepted.
        let host = setup.proxy.addr().to_string();
        let tcp = setup.connect().await;
        let upgraded = upgrade_spdy(tcp, PATH, &[("host", &host)]).await;
        let upgraded = upgraded.unwrap_or_else(|e| panic!("{}: Host {host}: {e}", setup.what));
        let mut stream = SpdySession::new(upgraded).open(setup.port()).await.unwrap();
        stream.write_all(b"host").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"host");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_protocol_is_negotiated_through_kubectl_proxy() {
    matrix(|setup| async move {
        // None offered (`Sec-WebSocket-Protocol` absent both ways), then each by name.
        for protocol in [
            Protocol::Unnamed,
            Protocol::V4Binary,
            Protocol::V4Base64,
            Protocol::V5Binary,
        ] {
            let tcp = setup.connect().await;
            let path = format!("{PATH}?ports={}", setup.port());
            let offer: Vec<&str> = protocol.name().into_iter().collect();
            let (ws, chosen) = upgrade_websocket(tcp, &path, &offer, &[])
                .await
                .unwrap_or_else(|e| panic!("{}: {protocol:?}: {e}", setup.what));
            assert_eq!(chosen, protocol.name().unwrap_or(""), "{}", setup.what);
            let stream = ChannelStream::connect(ws, protocol, setup.port()).await;
            let mut stream = stream.unwrap_or_else(|e| panic!("{}: {protocol:?}: {e}", setup.what));
            let data = payload(13, 100_000);
            stream.write_all(&data).await.unwrap();
            let mut back = vec![0; data.len()];
            stream.read_exact(&mut back).await.unwrap();
            assert_bytes(&format!("{}: {protocol:?}", setup.what), &back, &data);
        }
    })
    .await;
}
