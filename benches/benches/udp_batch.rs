//! UDP batching: datagrams moved with `recvmmsg`/`sendmmsg` in batches of 8 and 32
//! against one datagram per system call (`batch_size(1)`), for 64-byte and 1400-byte
//! datagrams, on loopback.
//!
//! Each iteration sends a window of 64 datagrams from one client through a running
//! `UdpForwarder` to an echo server and waits for the 64 echoes, so the figure
//! (`Throughput::Elements`) is round trips per second with up to 64 in flight, and both
//! directions of the forwarder are measured. `udp_batch/direct/SIZE` is the same window
//! sent straight to the echo server: the floor the forwarder adds its cost to.
//!
//! Compare `batch_32` and `batch_8` with `batch_1` per size: batching should win, most
//! for small datagrams, where the per-call cost dominates. The client and the echo server
//! use one datagram per call in every case, so the ratio understates the forwarder's own
//! gain.
//!
//! A lost datagram never hangs the bench: the client waits at most 50 ms for the next
//! echo, then counts the rest of the window as lost and goes on. Losses, which also
//! inflate the time of their iteration, are printed to stderr.

use std::hint::black_box;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use proxy_core::UdpForwarder;
use proxy_testkit::blocking::UdpEcho;

/// Datagrams in flight per iteration.
const WINDOW: u32 = 64;
/// How long the client waits for the next echo before counting the window's rest as lost.
const ECHO_TIMEOUT: Duration = Duration::from_millis(50);
/// The header every datagram starts with: the iteration number and the index in the window.
const HEADER: usize = 12;

/// A client connected to one address, sending numbered windows of datagrams.
struct Client {
    socket: UdpSocket,
    out: Vec<u8>,
    buf: Vec<u8>,
    round: u64,
    lost: u64,
}

impl Client {
    fn new(to: SocketAddr, size: usize) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        socket.connect(to).expect("connect client");
        socket
            .set_read_timeout(Some(ECHO_TIMEOUT))
            .expect("client timeout");
        Client {
            socket,
            out: vec![0x5a; size.max(HEADER)],
            buf: vec![0u8; 65536],
            round: 0,
            lost: 0,
        }
    }

    /// Sends one window and waits for its echoes; returns how many came back. Echoes of
    /// earlier windows that arrive late are skipped.
    fn window(&mut self) -> u32 {
        self.round += 1;
        self.out[..8].copy_from_slice(&self.round.to_be_bytes());
        for i in 0..WINDOW {
            self.out[8..HEADER].copy_from_slice(&i.to_be_bytes());
            // A full send buffer drops the datagram; it then counts as lost below.
            let _ = self.socket.send(&self.out);
        }
        let mut received = 0;
        while received < WINDOW {
            match self.socket.recv(&mut self.buf) {
                Ok(n) if n >= HEADER && self.buf[..8] == self.round.to_be_bytes() => {
                    received += 1;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(e) => panic!("client receive: {e}"),
            }
        }
        self.lost += u64::from(WINDOW - received);
        received
    }
}

fn batch(c: &mut Criterion) {
    // One worker: the client (this thread) and the echo thread are busy too, and the
    // forwarder's listener and session tasks then take turns instead of waking each
    // other across threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let echo = UdpEcho::start("127.0.0.1");
    let mut group = c.benchmark_group("udp_batch");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .throughput(Throughput::Elements(WINDOW.into()));
    for batch in [None, Some(1), Some(8), Some(32)] {
        let (name, handle, addr) = match batch {
            None => ("direct".to_owned(), None, echo.addr),
            Some(n) => {
                let forwarder =
                    UdpForwarder::builder(["127.0.0.1:0".parse().unwrap()], echo.addr.into())
                        .batch_size(n)
                        .session_idle_timeout(None)
                        .build()
                        .expect("build");
                let handle = rt.block_on(async { forwarder.start() }).expect("start");
                let addr = handle.local_addrs()[0];
                (format!("batch_{n}"), Some(handle), addr)
            }
        };
        for size in [64usize, 1400] {
            let mut client = Client::new(addr, size);
            // Opens the session (its upstream socket connects on the first datagram).
            client.window();
            client.lost = 0;
            group.bench_function(BenchmarkId::new(&name, size), |b| {
                b.iter(|| black_box(client.window()));
            });
            if client.lost > 0 {
                eprintln!(
                    "udp_batch/{name}/{size}: {} of {} datagrams lost",
                    client.lost,
                    client.round.saturating_sub(1) * u64::from(WINDOW)
                );
            }
        }
        if let Some(handle) = handle {
            let dropped = handle.stats().udp.dropped;
            if dropped > 0 {
                eprintln!("udp_batch/{name}: the forwarder dropped {dropped} datagrams");
            }
            rt.block_on(handle.shutdown(Duration::from_secs(1)));
        }
    }
    group.finish();
    drop(echo);
}

criterion_group!(benches, batch);
criterion_main!(benches);
