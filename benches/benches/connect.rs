//! The connect path: the time from a client's `connect` to the first byte echoed back,
//! through a running `TcpForwarder` and straight to the server, on loopback.
//!
//! Each iteration connects, writes one byte and reads the echo; only that is timed. The
//! server closes after echoing, and the client reads to the end before it drops the
//! connection, outside the timing, so no iteration leaves a client port in TIME_WAIT.
//!
//! - `connect/direct`: straight to the echo server, the floor.
//! - `connect/ip_literal`: through a forwarder whose target is `127.0.0.1:PORT`, which
//!   never touches a resolver.
//! - `connect/name_cached`: through a forwarder whose target is `backend:PORT`, answered
//!   by a `StaticResolver`; the name is resolved once before timing, so every timed
//!   connect is a resolve-cache hit (the lookup count is printed to stderr).
//!
//! Expect each forwarded line to cost about twice the direct one (an accept plus a second
//! connect and one more hop each way), and `name_cached` to match `ip_literal`: a cache
//! hit is a read lock and a clone of an `Arc`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use proxy_core::resolve::StaticResolver;
use proxy_core::{ForwarderHandle, Host, Target, TcpForwarder};
use proxy_testkit::echo::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// How long the client waits for the server's close after the echo.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Echoes one byte of a connection, then closes it.
async fn echo_byte(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut byte = [0u8; 1];
    if s.read_exact(&mut byte).await.is_ok() {
        let _ = s.write_all(&byte).await;
    }
}

/// One timed connection to `addr`: connect, write a byte, read it back. Returns the time
/// that took; the close after it is not timed.
async fn first_byte(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&[0x5a]).await.expect("write");
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).await.expect("echo");
    let elapsed = start.elapsed();
    assert_eq!(byte, [0x5a]);
    // Wait for the server's FIN so the client side is not the first to close.
    let mut rest = [0u8; 16];
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.read(&mut rest)).await;
    elapsed
}

fn start(rt: &Runtime, forwarder: &TcpForwarder) -> ForwarderHandle {
    let handle = rt.block_on(async { forwarder.start() }).expect("start");
    // Resolves the name, when there is one, and checks the path works.
    rt.block_on(first_byte(handle.local_addrs()[0]));
    handle
}

fn connect(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        Server::spawn(l, echo_byte)
    });
    let upstream = server.addr();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let by_ip = TcpForwarder::builder([listen], upstream.into())
        .build()
        .expect("build");
    let by_name = TcpForwarder::builder(
        [listen],
        Target::new(Host::Name("backend".into()), upstream.port()),
    )
    .resolver(StaticResolver::new([IpAddr::from([127, 0, 0, 1])]))
    .build()
    .expect("build");

    let mut group = c.benchmark_group("connect");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let cases = [
        ("direct", None),
        ("ip_literal", Some(start(&rt, &by_ip))),
        ("name_cached", Some(start(&rt, &by_name))),
    ];
    for (name, handle) in &cases {
        let addr = handle.as_ref().map_or(upstream, |h| h.local_addrs()[0]);
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += first_byte(addr).await;
                    }
                    total
                })
            });
        });
    }
    group.finish();
    for (name, handle) in cases {
        if let Some(handle) = handle {
            let stats = handle.stats();
            eprintln!(
                "connect/{name}: {} connections, {} lookups, {} failed connects",
                stats.connections_total, stats.resolve_refreshes, stats.upstream_unavailable
            );
            rt.block_on(handle.shutdown(Duration::from_secs(1)));
        }
    }
}

criterion_group!(benches, connect);
criterion_main!(benches);
