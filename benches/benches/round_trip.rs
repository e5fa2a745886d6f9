//! Request/response latency on loopback: a 1-byte ping-pong on one kept connection,
//! direct and through a `TcpForwarder` (splice and copy relays, and TLS terminated by the
//! forwarder), and new TLS connections per second through a terminating forwarder.
//!
//! - `round_trip/{direct,splice,copy,tls}`: one iteration is one 1-byte write and the
//!   1-byte echo read back; the relay's cost per transaction is the difference from
//!   `direct` (two more system-call pairs and two wake-ups per transaction through the
//!   proxy; TLS adds a record seal and open each way).
//! - `tls_handshake/{ecdsa}`: one iteration is a TCP connect, a full TLS 1.3 handshake
//!   with the forwarder (no resumption), a 1-byte echo and the close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use proxy_core::{ForwardSpec, ForwarderHandle, RelayMode, TcpForwarder};
use proxy_testkit::echo::{Server, echo};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn start_echo(rt: &Runtime) -> Server {
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        echo(l)
    })
}

fn forwarder(rt: &Runtime, spec: &ForwardSpec) -> ForwarderHandle {
    let forwarder = spec
        .tcp_forwarder(spec.make_resolver().expect("resolver"))
        .expect("build");
    rt.block_on(async { forwarder.start() }).expect("start")
}

fn spec(upstream: SocketAddr, settings: &[(&str, &str)]) -> ForwardSpec {
    let mut spec = ForwardSpec::default();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("target", &upstream.to_string()).unwrap();
    for (k, v) in settings {
        spec.set(k, v).unwrap();
    }
    spec
}

/// One ping-pong on `stream`.
async fn ping<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S) {
    let mut byte = [0u8; 1];
    stream.write_all(b"x").await.expect("write");
    stream.flush().await.expect("flush");
    stream.read_exact(&mut byte).await.expect("read");
}

/// A rustls client trusting the CA certificate `cert`, resuming no sessions.
fn connector(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every handshake a full one: no session resumption.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A certificate for `bench.example` usable as a leaf (not a CA), and its key.
fn leaf_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = proxy_testkit::tls::Ca::new("bench-ca");
    let issued = ca.server(&["bench.example"]);
    let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
    std::fs::copy(&issued.cert, &cert).unwrap();
    std::fs::copy(&issued.key, &key).unwrap();
    std::fs::copy(&ca.cert, dir.join("ca.crt")).unwrap();
    (cert, key)
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let upstream = start_echo(&rt);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf_cert(dir.path());
    let mut group = c.benchmark_group("round_trip");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut direct = rt.block_on(TcpStream::connect(upstream.addr())).unwrap();
    direct.set_nodelay(true).unwrap();
    group.bench_function("direct", |b| b.iter(|| rt.block_on(ping(&mut direct))));

    for (name, mode) in [("splice", RelayMode::Auto), ("copy", RelayMode::Copy)] {
        let forwarder =
            TcpForwarder::builder(["127.0.0.1:0".parse().unwrap()], upstream.addr().into())
                .relay(mode)
                .build()
                .expect("build");
        let handle = rt.block_on(async { forwarder.start() }).expect("start");
        let mut stream = rt
            .block_on(TcpStream::connect(handle.local_addrs()[0]))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        group.bench_function(name, |b| b.iter(|| rt.block_on(ping(&mut stream))));
        drop(stream);
        rt.block_on(handle.shutdown(Duration::from_secs(1)));
    }

    let settings = [
        ("tls_cert", cert.to_str().unwrap()),
        ("tls_key", key.to_str().unwrap()),
    ];
    let handle = forwarder(&rt, &spec(upstream.addr(), &settings));
    let connector = connector(&dir.path().join("ca.crt"));
    let proxy = handle.local_addrs()[0];
    let mut tls = rt.block_on(async {
        let tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from("bench.example").unwrap();
        connector.connect(name, tcp).await.unwrap()
    });
    group.bench_function("tls", |b| b.iter(|| rt.block_on(ping(&mut tls))));
    group.finish();

    let mut group = c.benchmark_group("tls_handshake");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("ecdsa", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tcp = TcpStream::connect(proxy).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("bench.example").unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                ping(&mut tls).await;
                let _ = tls.shutdown().await;
            })
        })
    });
    group.finish();
    drop(tls);
    rt.block_on(handle.shutdown(Duration::from_secs(1)));
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
