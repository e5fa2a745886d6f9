//! The TCP relay: splice(2) through pooled pipes against the user-space copy, over
//! transfer sizes from 64 KiB to 16 MiB, on loopback.
//!
//! Each iteration opens a connection through a running `TcpForwarder`, sends `size` bytes,
//! half-closes, and waits for the sink's 8-byte count, so the figure is throughput of one
//! connection including its setup. Compare the `splice` and `copy` lines per size: splice
//! should win on large transfers, copy may win on small ones.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use proxy_core::{RelayMode, TcpForwarder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads everything a client sends and answers with the byte count.
async fn sink(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
        });
    }
}

async fn transfer(addr: std::net::SocketAddr, payload: &[u8]) -> u64 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(payload).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.expect("count");
    u64::from_be_bytes(count)
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = l.local_addr().expect("sink addr");
        tokio::spawn(sink(l));
        addr
    });
    let mut group = c.benchmark_group("tcp_relay");
    group.measurement_time(Duration::from_secs(5));
    for (name, mode) in [("splice", RelayMode::Auto), ("copy", RelayMode::Copy)] {
        let forwarder = TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.into())
            .relay(mode)
            .build()
            .expect("build");
        let handle = rt.block_on(async { forwarder.start() }).expect("start");
        let addr = handle.local_addrs()[0];
        for size in [64usize << 10, 1 << 20, 16 << 20] {
            let payload = vec![0x5au8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &payload, |b, payload| {
                b.iter(|| {
                    let n = rt.block_on(transfer(addr, payload));
                    assert_eq!(n, payload.len() as u64);
                    black_box(n)
                });
            });
        }
        rt.block_on(handle.shutdown(Duration::from_secs(1)));
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
