//! [`HttpForwarder`] in process, on loopback: what the handle offers that the command
//! line does not show directly (per-route snapshots, reload's refusals, shutdown's
//! verdict).

use std::net::SocketAddr;
use std::time::Duration;

use proxy_core::ForwardSpec;
use proxy_http::{HttpForwarder, HttpHandle};
use proxy_testkit::http::{Backend, Response, blocking, http_get};
use proxy_testkit::wait::within;

fn spec(routes: &str) -> ForwardSpec {
    let mut spec = ForwardSpec::default();
    spec.set("protocol", "http").unwrap();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("route", routes).unwrap();
    spec
}

async fn get(addr: SocketAddr, host: &'static str, path: &'static str) -> Response {
    blocking(move || http_get(addr, host, path)).await
}

fn snapshot(handle: &HttpHandle, route: &str) -> proxy_http::RouteSnapshot {
    (handle.routes().into_iter())
        .find(|r| r.route == route)
        .unwrap_or_else(|| panic!("no route {route} in {:?}", handle.routes()))
}

#[tokio::test]
async fn routes_count_their_requests_and_unrouted_ones_count_under_dash() {
    let backend = Backend::start("b");
    let route = format!("shop.example/={}", backend.addr());
    let handle = HttpForwarder::new(spec(&route)).unwrap().start().unwrap();
    let addr = handle.local_addrs()[0];
    for _ in 0..3 {
        assert_eq!(get(addr, "shop.example", "/x").await.status, 200);
    }
    assert_eq!(get(addr, "shop.example", "/status/500").await.status, 500);
    assert_eq!(get(addr, "elsewhere", "/").await.status, 404);

    let served = snapshot(&handle, &route);
    assert_eq!(served.by_class, [0, 3, 0, 0, 1]);
    assert_eq!(served.latency_buckets.last(), Some(&4));
    assert!(served.bytes_out > 0);
    assert_eq!(snapshot(&handle, "-").by_class, [0, 0, 0, 1, 0]);
    assert!(
        within(
            Duration::from_secs(10),
            "shutdown",
            handle.shutdown(Duration::from_secs(5))
        )
        .await
    );
}

#[tokio::test]
async fn a_reload_that_moves_the_listener_or_is_invalid_changes_nothing() {
    let [a, b] = ["a", "b"].map(Backend::start);
    let handle = HttpForwarder::new(spec(&format!("/={}", a.addr())))
        .unwrap()
        .start()
        .unwrap();
    let addr = handle.local_addrs()[0];
    assert_eq!(get(addr, "h", "/").await.seen().backend, "a");

    let mut moved = spec(&format!("/={}", b.addr()));
    moved.set("listen", "127.0.0.1:1").unwrap();
    let e = handle.reload(&moved).unwrap_err();
    assert!(e.to_string().contains("restart"), "{e}");
    let mut tcp = spec(&format!("/={}", b.addr()));
    tcp.set("protocol", "tcp").unwrap();
    assert!(handle.reload(&tcp).is_err());
    assert_eq!(get(addr, "h", "/").await.seen().backend, "a");

    handle.reload(&spec(&format!("/={}", b.addr()))).unwrap();
    assert_eq!(get(addr, "h", "/").await.seen().backend, "b");
    assert!(handle.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn shutdown_says_when_a_request_outlived_the_grace() {
    let backend = Backend::start("never");
    let handle = HttpForwarder::new(spec(&format!("/={}", backend.addr())))
        .unwrap()
        .start()
        .unwrap();
    let addr = handle.local_addrs()[0];
    let stuck = tokio::spawn(get(addr, "h", "/never"));
    within(Duration::from_secs(10), "the request upstream", async {
        while backend.requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let finished = within(
        Duration::from_secs(10),
        "shutdown",
        handle.shutdown(Duration::from_millis(300)),
    )
    .await;
    assert!(!finished, "the /never request cannot finish");
    // Its connection was closed: the client's read ends (no whole response).
    let ended = within(Duration::from_secs(10), "the stuck client", stuck).await;
    assert!(
        ended.is_err(),
        "http_get panics on a connection closed without an answer"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_every_connection_at_once_gets_502() {
    // Accepts and closes: the request fails on a new connection, which is not retried
    // (it may have been seen), and no new connections are opened for it in a loop.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(stream);
        }
    });
    let handle = HttpForwarder::new(spec(&format!("/={upstream}")))
        .unwrap()
        .start()
        .unwrap();
    let addr = handle.local_addrs()[0];
    let response = within(Duration::from_secs(10), "the 502", get(addr, "x", "/")).await;
    assert_eq!(response.status, 502, "{}", response.text());
    let tries = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=8).contains(&tries),
        "{tries} connections for one request"
    );
    handle.shutdown(Duration::from_secs(1)).await;
}
