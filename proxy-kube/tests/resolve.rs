//! `proxy_kube` against the workspace's own port-forward server, which answers discovery,
//! pods, services, deployments and pod lists by label selector as an API server does.

use std::time::Duration;

use proxy_kube::{Client, ErrorKind, Target, check_running};
use proxy_portforward::server::{Listening, Server, tls_config};
use proxy_testkit::kube::{Kubeconfig, TestCerts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OBJECTS: &str = r#"
[[pod]]
name = "web-1"
target = "127.0.0.1"
labels = { app = "web" }
ports = { http = 8080 }

[[pod]]
name = "web-2"
target = "127.0.0.1"
labels = { app = "web" }
ports = { http = 8081 }

[[pod]]
name = "pending"
target = "127.0.0.1"
labels = { app = "later" }
running = false

[[pod]]
name = "db"
namespace = "data"
target = "127.0.0.1"
ports = { pg = 5432 }

[[service]]
name = "web"
selector = { app = "web" }
ports = [{ name = "http", port = 80, target_port = "http" }, { port = 443, target_port = 8443 }]

[[deployment]]
name = "web"
selector = { app = "web" }
"#;

/// A server of `OBJECTS` over plain HTTP, and a client of a kubeconfig naming it.
struct Plain {
    server: Server,
    _listening: Listening,
    kubeconfig: Kubeconfig,
}

async fn plain(namespace: Option<&str>) -> Plain {
    let cluster = proxy_portforward::cluster_file::parse(OBJECTS, "objects.toml").unwrap();
    let server = Server::builder(cluster).build();
    let listening = server
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let mut builder = Kubeconfig::builder(format!("http://{}", listening.local_addr()));
    if let Some(ns) = namespace {
        builder = builder.namespace(ns);
    }
    Plain {
        server,
        _listening: listening,
        kubeconfig: builder.write(),
    }
}

impl Plain {
    async fn client(&self) -> Client {
        Client::builder()
            .kubeconfig(self.kubeconfig.path())
            .build()
            .await
            .unwrap()
    }
}

fn names(pods: &[proxy_kube::k8s_openapi::api::core::v1::Pod]) -> Vec<&str> {
    pods.iter()
        .map(|p| p.metadata.name.as_deref().unwrap())
        .collect()
}

#[tokio::test]
async fn each_type_resolves_to_its_pods() {
    let api = plain(None).await;
    let client = api.client().await;
    assert_eq!(client.namespace(), "default");
    for (target, want) in [
        ("web-1", &["web-1"][..]),
        ("pod/web-1", &["web-1"]),
        ("po/web-2", &["web-2"]),
        ("svc/web", &["web-1", "web-2"]),
        ("services/web", &["web-1", "web-2"]),
        ("deploy/web", &["web-1", "web-2"]),
        ("deployments.apps/web", &["web-1", "web-2"]),
    ] {
        let resolved = client.resolve(&target.parse().unwrap()).await.unwrap();
        assert_eq!(names(&resolved.pods), want, "{target}");
        assert_eq!(resolved.ready_pods().len(), want.len(), "{target}");
        assert_eq!(
            resolved.first_pod().unwrap().metadata.name.as_deref(),
            Some(want[0])
        );
    }
    let svc = client.resolve(&"svc/web".parse().unwrap()).await.unwrap();
    assert_eq!(svc.selector.as_deref(), Some("app=web"));
    assert!(svc.service.is_some());
}

#[tokio::test]
async fn named_ports_go_through_target_port_and_container_port_names() {
    let api = plain(None).await;
    let client = api.client().await;
    let svc = client.resolve(&"svc/web".parse().unwrap()).await.unwrap();
    let (web1, web2) = (&svc.pods[0], &svc.pods[1]);
    assert_eq!(svc.remote_port(web1, "http").unwrap(), 8080);
    assert_eq!(svc.remote_port(web2, "http").unwrap(), 8081);
    assert_eq!(svc.remote_port(web2, "80").unwrap(), 8081);
    assert_eq!(svc.remote_port(web1, "443").unwrap(), 8443);
    let e = svc.remote_port(web1, "8080").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service web does not have a service port 8080"
    );
    let e = svc.remote_port(web1, "https").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service 'web' does not have a named port 'https'"
    );

    let deploy = client
        .resolve(&"deploy/web".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(deploy.remote_port(&deploy.pods[1], "http").unwrap(), 8081);
    assert_eq!(deploy.remote_port(&deploy.pods[1], "9000").unwrap(), 9000);
    let e = deploy.remote_port(&deploy.pods[0], "grpc").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Port);
    assert_eq!(
        e.to_string(),
        "Pod 'web-1' does not have a named port 'grpc'"
    );
}

#[tokio::test]
async fn not_found_and_not_running_read_as_kubectl() {
    let api = plain(None).await;
    let client = api.client().await;
    for (target, want) in [
        (
            "pod/nope",
            r#"Error from server (NotFound): pods "nope" not found"#,
        ),
        (
            "svc/nope",
            r#"Error from server (NotFound): services "nope" not found"#,
        ),
        (
            "deploy/nope",
            r#"Error from server (NotFound): deployments.apps "nope" not found"#,
        ),
        (
            "rs/web",
            r#"Error from server (NotFound): replicasets.apps "web" not found"#,
        ),
        ("db", r#"Error from server (NotFound): pods "db" not found"#),
    ] {
        let e = client.resolve(&target.parse().unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{target}");
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), want, "{target}");
    }
    let pending = client
        .resolve(&"pod/pending".parse().unwrap())
        .await
        .unwrap();
    assert!(pending.ready_pods().is_empty());
    let e = check_running(pending.first_pod().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotRunning);
    assert_eq!(
        e.to_string(),
        "unable to forward port because pod is not running. Current status=Pending"
    );
}

#[tokio::test]
async fn context_and_namespace_come_from_the_kubeconfig() {
    let api = plain(Some("data")).await;
    let client = api.client().await;
    assert_eq!(client.namespace(), "data");
    let db = client.resolve(&"db".parse().unwrap()).await.unwrap();
    assert_eq!(db.namespace, "data");
    assert_eq!(db.remote_port(&db.pods[0], "pg").unwrap(), 5432);
    // `-n` wins over the context's namespace.
    let client = Client::builder()
        .kubeconfig(api.kubeconfig.path())
        .namespace("default")
        .build()
        .await
        .unwrap();
    assert!(client.resolve(&"web-1".parse().unwrap()).await.is_ok());

    // Two contexts: `--context` picks one, its namespace (none: `default`) with it.
    let file = api.kubeconfig.dir().join("two-contexts");
    let url = api._listening.local_addr();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            { "name": "real", "cluster": { "server": format!("http://{url}") } },
            { "name": "dead", "cluster": { "server": "http://127.0.0.1:1" } },
        ],
        "users": [{ "name": "u", "user": {} }],
        "contexts": [
            { "name": "data", "context": { "cluster": "real", "user": "u", "namespace": "data" } },
            { "name": "plain", "context": { "cluster": "real", "user": "u" } },
            { "name": "dead", "context": { "cluster": "dead", "user": "u" } },
        ],
        "current-context": "dead",
    });
    std::fs::write(&file, config.to_string()).unwrap();
    let with = |context: Option<&str>| {
        let mut b = Client::builder().kubeconfig(&file);
        if let Some(c) = context {
            b = b.context(c);
        }
        b.build()
    };
    let data = with(Some("data")).await.unwrap();
    assert_eq!(data.namespace(), "data");
    assert!(data.resolve(&"db".parse().unwrap()).await.is_ok());
    let plain_ctx = with(Some("plain")).await.unwrap();
    assert_eq!(plain_ctx.namespace(), "default");
    assert!(plain_ctx.resolve(&"svc/web".parse().unwrap()).await.is_ok());
    let dead = with(None).await.unwrap();
    let e = dead.resolve(&"web-1".parse().unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let e = with(Some("nope")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("nope"), "{e}");
}

#[tokio::test]
async fn tls_with_a_ca_and_a_bearer_token() {
    let certs = TestCerts::generate();
    let cluster = proxy_portforward::cluster_file::parse(OBJECTS, "objects.toml").unwrap();
    let server = Server::builder(cluster).token("s3cret").build();
    let tls = tls_config(&certs.server_cert(), &certs.server_key()).unwrap();
    let listening = server
        .bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let url = format!("https://{}", listening.local_addr());
    let good = Kubeconfig::builder(url.clone())
        .ca_pem(certs.ca_pem())
        .token("s3cret")
        .write();
    let client = Client::builder()
        .kubeconfig(good.path())
        .build()
        .await
        .unwrap();
    let svc = client.resolve(&"svc/web".parse().unwrap()).await.unwrap();
    assert_eq!(names(&svc.pods), ["web-1", "web-2"]);

    // Our own connection, as the port-forward client opens it.
    let endpoint = client.api_endpoint().await.unwrap();
    assert_eq!(endpoint.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(endpoint.server_name, "127.0.0.1");
    assert!(endpoint.tls.is_some());
    let answer = get(&endpoint, "/api/v1/namespaces/default/pods/web-1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""name":"web-1""#), "{answer}");

    let wrong = Kubeconfig::builder(url)
        .ca_pem(certs.ca_pem())
        .token("wrong")
        .write();
    let client = Client::builder()
        .kubeconfig(wrong.path())
        .build()
        .await
        .unwrap();
    let e = client
        .resolve(&"svc/web".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(e.to_string().contains("Unauthorized"), "{e}");
    let endpoint = client.api_endpoint().await.unwrap();
    let answer = get(&endpoint, "/api").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// `GET path` over a connection of the endpoint's, with its `Authorization`; the whole
/// answer.
async fn get(endpoint: &proxy_kube::ApiEndpoint, path: &str) -> String {
    let mut stream = endpoint.connect().await.unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        endpoint.server_name
    );
    if let Some(auth) = &endpoint.authorization {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the answer within 10 s")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_pod_set_follows_the_cluster() {
    let api = plain(None).await;
    let client = api.client().await;
    let target: Target = "deploy/web".parse().unwrap();
    let resolved = client.resolve(&target).await.unwrap();
    let mut watch = client.watch_pods(&resolved);
    let wait = Duration::from_secs(15);
    let first = tokio::time::timeout(wait, watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.ready_names(), ["web-1", "web-2"]);

    // web-2 stops running, then goes; web-3 comes.
    let replaced = OBJECTS.replace(
        "ports = { http = 8081 }",
        "ports = { http = 8081 }\nrunning = false",
    );
    api.server
        .set_cluster(proxy_portforward::cluster_file::parse(&replaced, "x.toml").unwrap());
    let next = tokio::time::timeout(wait, watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.ready_names(), ["web-1"]);
    assert_eq!(next.len(), 2);
    let replaced = OBJECTS.replace("name = \"web-2\"", "name = \"web-3\"");
    api.server
        .set_cluster(proxy_portforward::cluster_file::parse(&replaced, "x.toml").unwrap());
    let next = tokio::time::timeout(wait, watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.ready_names(), ["web-1", "web-3"]);
    assert_eq!(watch.current().ready_names(), ["web-1", "web-3"]);
}

#[tokio::test]
async fn a_pod_target_follows_that_pod_only() {
    let api = plain(None).await;
    let client = api.client().await;
    let resolved = client.resolve(&"pod/web-2".parse().unwrap()).await.unwrap();
    let mut watch = client.watch_pods(&resolved);
    let wait = Duration::from_secs(15);
    let first = tokio::time::timeout(wait, watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.ready_names(), ["web-2"]);
    assert_eq!(first.len(), 1, "only the pod named");

    // web-1 going changes nothing for web-2's watch; web-2 stopping does.
    let without_web1 = OBJECTS.replace("name = \"web-1\"", "name = \"web-9\"");
    api.server
        .set_cluster(proxy_portforward::cluster_file::parse(&without_web1, "x.toml").unwrap());
    let stopped = without_web1.replace(
        "ports = { http = 8081 }",
        "ports = { http = 8081 }\nrunning = false",
    );
    api.server
        .set_cluster(proxy_portforward::cluster_file::parse(&stopped, "x.toml").unwrap());
    let next = tokio::time::timeout(wait, watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(next.ready_names().is_empty());
    assert_eq!(next.len(), 1);
    assert!(next.get("web-2").is_some());
}
