//! The TCP relay: splice(2) through pooled pipes against the user-space copy, over
//! transfer sizes from 1 KiB to 64 MiB, and splice over pipe sizes, on loopback.
//!
//! Each iteration opens a connection through a running `TcpForwarder`, sends `size` bytes,
//! half-closes, and waits for the sink's 8-byte count, so the figure is the throughput of
//! one connection including its setup.
//!
//! - `tcp_relay/{splice,copy}/SIZE`: compare the two lines per size. Splice should win on
//!   large transfers; at 1 KiB the connection setup dominates and both should be alike
//!   (a burst is copied until one read fills 16 KiB, so small transfers never splice).
//! - `tcp_relay_pipe/splice/PIPE`: a 16 MiB transfer through pipes of 64 KiB, 256 KiB and
//!   1 MiB. Larger pipes mean fewer splice calls per byte, but a pipe holds no more than
//!   the socket buffers deliver per call, so expect little gain past 64 KiB on loopback
//!   with default buffers (2-core VM: within 5%). Sizes above `/proc/sys/fs/pipe-max-size`
//!   fall back to the kernel's default size without `CAP_SYS_RESOURCE`.
//!
//! After each forwarder, the share of bytes that were spliced is printed to stderr.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use proxy_core::{ForwarderHandle, RelayMode, TcpForwarder};
use proxy_testkit::echo::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Reads everything a client sends and answers with the byte count.
async fn sink(mut s: TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let _ = s.write_all(&total.to_be_bytes()).await;
}

async fn transfer(addr: SocketAddr, payload: &[u8]) -> u64 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(payload).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.expect("count");
    u64::from_be_bytes(count)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts the counting sink, which stops when dropped.
fn start_sink(rt: &Runtime) -> Server {
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        Server::spawn(l, sink)
    })
}

/// Sets the sample count so that large transfers finish in the measurement time: the
/// usual linear sampling for small sizes, ten flat samples from 16 MiB up.
fn size_samples(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    if size >= 16 * MIB {
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    } else if size >= MIB {
        group.sampling_mode(SamplingMode::Auto).sample_size(20);
    } else {
        group.sampling_mode(SamplingMode::Auto).sample_size(50);
    }
}

/// Benchmarks `size`-byte transfers through the forwarder at `addr`.
fn bench_transfer(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    addr: SocketAddr,
    id: BenchmarkId,
    size: usize,
) {
    let payload = vec![0x5au8; size];
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_with_input(id, &payload, |b, payload| {
        b.iter(|| {
            let n = rt.block_on(transfer(addr, payload));
            assert_eq!(n, payload.len() as u64);
            black_box(n)
        });
    });
}

/// Shuts `handle` down and prints how much of what it relayed was spliced.
fn finish(rt: &Runtime, handle: ForwarderHandle, label: &str) {
    let stats = handle.stats();
    let total = stats.bytes_to_upstream + stats.bytes_to_downstream;
    eprintln!(
        "{label}: {} of {total} relayed bytes spliced ({} fallbacks)",
        stats.bytes_spliced, stats.splice_fallbacks
    );
    rt.block_on(handle.shutdown(Duration::from_secs(1)));
}

fn relay(c: &mut Criterion) {
    let rt = runtime();
    let upstream = start_sink(&rt);
    let mut group = c.benchmark_group("tcp_relay");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, mode) in [("splice", RelayMode::Auto), ("copy", RelayMode::Copy)] {
        let forwarder =
            TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.addr().into())
                .relay(mode)
                .build()
                .expect("build");
        let handle = rt.block_on(async { forwarder.start() }).expect("start");
        let addr = handle.local_addrs()[0];
        for size in [KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB] {
            size_samples(&mut group, size);
            bench_transfer(&mut group, &rt, addr, BenchmarkId::new(name, size), size);
        }
        finish(&rt, handle, &format!("tcp_relay/{name}"));
    }
    group.finish();
}

fn pipe_sizes(c: &mut Criterion) {
    const SIZE: usize = 16 * MIB;
    let rt = runtime();
    let upstream = start_sink(&rt);
    let mut group = c.benchmark_group("tcp_relay_pipe");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    size_samples(&mut group, SIZE);
    for pipe in [64 * KIB, 256 * KIB, MIB] {
        let forwarder =
            TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.addr().into())
                .relay(RelayMode::Auto)
                .pipe_size(pipe)
                .build()
                .expect("build");
        let handle = rt.block_on(async { forwarder.start() }).expect("start");
        let addr = handle.local_addrs()[0];
        bench_transfer(
            &mut group,
            &rt,
            addr,
            BenchmarkId::new("splice", pipe),
            SIZE,
        );
        finish(&rt, handle, &format!("tcp_relay_pipe/splice/{pipe}"));
    }
    group.finish();
}

criterion_group!(benches, relay, pipe_sizes);
criterion_main!(benches);
