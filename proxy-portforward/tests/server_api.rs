//! The server's HTTP side, asked by curl: discovery, objects, `Status` bodies, the token,
//! and refused upgrades.

use std::net::SocketAddr;
use std::process::Command;

use proxy_portforward::objects::{Cluster, Pod, Service};
use proxy_portforward::server::{Listening, Server};
use proxy_portforward::status::Status;
use proxy_testkit::process::require_program;
use serde_json::Value;

fn cluster() -> Cluster {
    let mut cluster = Cluster::default();
    cluster
        .add_pod("web=127.0.0.1".parse::<Pod>().unwrap())
        .unwrap();
    cluster
        .add_pod("shop/db=127.0.0.1".parse::<Pod>().unwrap())
        .unwrap();
    cluster
        .add_service("web:80,443=web".parse::<Service>().unwrap())
        .unwrap();
    cluster
}

async fn start(server: &Server) -> Listening {
    server
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap()
}

/// `curl` the path; (status, body).
async fn curl(addr: SocketAddr, path: &str, extra: &[&str]) -> (u16, String) {
    let curl = require_program("curl", &[], "curl", "asks the server");
    let url = format!("http://{addr}{path}");
    let mut args = vec!["-sS", "-m", "10", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || Command::new(curl).args(args).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

#[tokio::test]
async fn discovery_and_objects_as_kubectl_reads_them() {
    let server = Server::builder(cluster()).build();
    let listening = start(&server).await;
    let addr = listening.local_addr();

    let (code, body) = curl(addr, "/api/v1", &[]).await;
    assert_eq!(code, 200);
    let v1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v1["kind"], "APIResourceList");

    let (code, body) = curl(addr, "/api/v1/namespaces/default/pods/web", &[]).await;
    assert_eq!(code, 200);
    let pod: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pod["metadata"]["name"], "web");
    assert_eq!(pod["status"]["phase"], "Running");

    let (code, body) = curl(
        addr,
        "/api/v1/namespaces/default/pods?labelSelector=proxy.service%2Fweb%3Dtrue",
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "web");

    let (code, body) = curl(addr, "/api/v1/namespaces/shop/pods/web", &[]).await;
    assert_eq!(code, 404);
    assert_eq!(
        Status::from_json(&body).unwrap().message,
        "pods \"web\" not found"
    );
    let (code, body) = curl(
        addr,
        "/apis/apps/v1/namespaces/default/deployments/web",
        &[],
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        Status::from_json(&body).unwrap().message,
        "deployments.apps \"web\" not found"
    );
    let (code, body) = curl(addr, "/api/v1/namespaces/default/secrets/x", &[]).await;
    assert_eq!(
        (code, Status::from_json(&body).unwrap().reason.as_str()),
        (404, "NotFound")
    );
    let (code, _) = curl(
        addr,
        "/api/v1/namespaces/default/pods/web",
        &["-X", "DELETE"],
    )
    .await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn a_token_is_asked_of_every_request() {
    let server = Server::builder(cluster()).token("s3cret").build();
    let listening = start(&server).await;
    let addr = listening.local_addr();
    for extra in [&[][..], &["-H", "Authorization: Bearer wrong"][..]] {
        let (code, body) = curl(addr, "/api", extra).await;
        assert_eq!(code, 401, "{extra:?}");
        assert_eq!(Status::from_json(&body).unwrap(), Status::unauthorized());
    }
    let (code, _) = curl(addr, "/api", &["-H", "Authorization: Bearer s3cret"]).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn upgrades_are_refused_with_a_status() {
    let mut objects = cluster();
    let mut pending: Pod = "idle=127.0.0.1".parse().unwrap();
    pending.running = false;
    objects.add_pod(pending).unwrap();
    let server = Server::builder(objects).build();
    let listening = start(&server).await;
    let addr = listening.local_addr();
    let spdy = [
        "-X",
        "POST",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: SPDY/3.1",
        "-H",
        "X-Stream-Protocol-Version: portforward.k8s.io",
    ];
    // No upgrade asked.
    let (code, body) = curl(
        addr,
        "/api/v1/namespaces/default/pods/web/portforward",
        &["-X", "POST"],
    )
    .await;
    assert_eq!(code, 400, "{body}");
    // An unknown pod, and one not running.
    let (code, body) = curl(
        addr,
        "/api/v1/namespaces/default/pods/nope/portforward",
        &spdy,
    )
    .await;
    assert_eq!(
        (code, Status::from_json(&body).unwrap().message.as_str()),
        (404, "pods \"nope\" not found")
    );
    let (code, body) = curl(
        addr,
        "/api/v1/namespaces/default/pods/idle/portforward",
        &spdy,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not running"), "{body}");
    // WebSocket channels with a bad port.
    let ws = [
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Sec-WebSocket-Protocol: v4.channel.k8s.io",
    ];
    let (code, body) = curl(
        addr,
        "/api/v1/namespaces/default/pods/web/portforward?ports=x",
        &ws,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(Status::from_json(&body).unwrap().reason, "BadRequest");
    assert_eq!(
        server
            .stats()
            .wire(proxy_portforward::forward::Wire::Spdy)
            .sessions_total,
        0
    );
}

/// Reads from `stream` into `seen` until it holds `needle` (10 s at most).
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, needle: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle} in 10 s: {seen}"))
            .unwrap();
        assert!(n > 0, "closed before {needle}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn a_pod_watch_sends_the_changes_set_cluster_makes() {
    use tokio::io::AsyncWriteExt;
    let server = Server::builder(cluster()).build();
    let listening = start(&server).await;
    let (code, body) = curl(
        listening.local_addr(),
        "/api/v1/namespaces/default/pods",
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["metadata"]["resourceVersion"], "1");

    let mut stream = tokio::net::TcpStream::connect(listening.local_addr())
        .await
        .unwrap();
    let request = "GET /api/v1/namespaces/default/pods?watch=true&timeoutSeconds=30 HTTP/1.1\r\n\
                   Host: x\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, r#""type":"ADDED""#).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains(r#""name":"web""#), "{seen}");
    assert!(
        !seen.contains(r#""name":"db""#),
        "another namespace: {seen}"
    );

    // web goes, web-2 comes, and the version moves on.
    let mut next = Cluster::default();
    next.add_pod("web-2=127.0.0.1".parse::<Pod>().unwrap())
        .unwrap();
    server.set_cluster(next);
    read_until(&mut stream, &mut seen, r#""type":"DELETED""#).await;
    read_until(&mut stream, &mut seen, r#""name":"web-2""#).await;
    assert!(seen.contains(r#""resourceVersion":"2""#), "{seen}");

    // Watching from the current version sends nothing until something changes.
    let mut quiet = tokio::net::TcpStream::connect(listening.local_addr())
        .await
        .unwrap();
    let request = "GET /api/v1/namespaces/default/pods?watch=1&resourceVersion=2 HTTP/1.1\r\n\
                   Host: x\r\n\r\n";
    quiet.write_all(request.as_bytes()).await.unwrap();
    let mut heard = String::new();
    read_until(&mut quiet, &mut heard, "HTTP/1.1 200").await;
    server.set_cluster(Cluster::default());
    read_until(&mut quiet, &mut heard, r#""type":"DELETED""#).await;
    assert!(!heard.contains("ADDED"), "{heard}");
}
