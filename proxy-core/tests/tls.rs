//! TLS termination on a TCP forward (`tls_cert`, `tls_key`, `tls_dir`, `tls_client_ca`):
//! real `openssl s_client`s see the certificate their server name picks and get TLS 1.3
//! and 1.2 only; a rustls client moves megabytes both ways intact, half-close included;
//! client certificates are required when asked for, and their CN reaches the upstream in
//! the PROXY v2 header; a reload swaps the certificate for new clients while an open
//! connection goes on; failed handshakes are counted; bad files are refused by key and
//! file.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use proxy_core::{ForwardSpec, ForwarderHandle, TcpForwarder};
use proxy_testkit::data::{assert_bytes, payload};
use proxy_testkit::echo::{echo_server, recorder};
use proxy_testkit::http::blocking;
use proxy_testkit::process::run_limited;
use proxy_testkit::tls::{Ca, openssl, presented_name, self_signed};
use proxy_testkit::wait::{PROMPT, eventually, within};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forward to `target` on a loopback port with these settings.
fn forwarder(target: SocketAddr, settings: &[(&str, &str)]) -> TcpForwarder {
    let mut spec = ForwardSpec::default();
    spec.set("listen", "127.0.0.1:0").unwrap();
    spec.set("target", &target.to_string()).unwrap();
    for (key, value) in settings {
        spec.set(key, value).unwrap_or_else(|e| panic!("{e}"));
    }
    spec.tcp_forwarder(spec.make_resolver().unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start(target: SocketAddr, settings: &[(&str, &str)]) -> ForwarderHandle {
    forwarder(target, settings).start().unwrap()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A rustls client trusting `ca` (PEM), optionally presenting `client` (cert, key).
fn connector(ca: &Path, client: Option<(&Path, &Path)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    proxy: SocketAddr,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(proxy).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_pass_both_ways_intact_and_a_half_close_ends_cleanly() {
    let ca = blocking(|| Ca::new("test-ca")).await;
    let site = blocking(move || (ca.server(&["shop.example"]), ca)).await;
    let (site, ca) = site;
    let echo = echo_server().await;
    let handle = start(
        echo.addr(),
        &[("tls_cert", text(&site.cert)), ("tls_key", text(&site.key))],
    );
    let proxy = handle.local_addrs()[0];
    let connector = connector(&ca.cert, None);
    let mut tls = tls_connect(&connector, proxy, "shop.example")
        .await
        .unwrap();
    let data = payload(7, 4 << 20);
    let (mut read, mut write) = tokio::io::split(&mut tls);
    let sent = data.clone();
    let writer = async move {
        write.write_all(&sent).await.unwrap();
        // close_notify and FIN: the echo server ends its side after echoing everything.
        write.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = within(PROMPT * 3, "the echo", async {
        tokio::join!(writer, reader)
    })
    .await;
    assert_bytes("echoed through TLS", &got, &data);
    eventually("the connection closed", PROMPT, || {
        handle.stats_reader().stats().connections_open == 0
    })
    .await;
    let stats = handle.stats_reader().stats();
    assert_eq!(stats.bytes_to_upstream, data.len() as u64);
    assert_eq!(stats.bytes_to_downstream, data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_follows_the_server_name_and_only_tls_1_2_and_1_3_are_spoken() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let files = blocking(move || {
        let default = self_signed(&d, "default.example");
        // NAME.pem with chain and key; NAME.crt with NAME.key; a Secret-like directory.
        let (a_crt, a_key) = self_signed(&d, "a.example");
        let pem = [
            std::fs::read(&a_crt).unwrap(),
            std::fs::read(&a_key).unwrap(),
        ]
        .concat();
        std::fs::create_dir(d.join("tls")).unwrap();
        std::fs::write(d.join("tls/a.pem"), pem).unwrap();
        let (b_crt, b_key) = self_signed(&d.join("tls"), "*.b.example");
        let secret = d.join("tls/c-secret");
        std::fs::create_dir(&secret).unwrap();
        let (c_crt, c_key) = self_signed(&secret, "c.example");
        std::fs::rename(c_crt, secret.join("tls.crt")).unwrap();
        std::fs::rename(c_key, secret.join("tls.key")).unwrap();
        let _ = (b_crt, b_key);
        default
    })
    .await;
    let echo = echo_server().await;
    let handle = start(
        echo.addr(),
        &[
            ("tls_cert", text(&files.0)),
            ("tls_key", text(&files.1)),
            ("tls_dir", text(&dir.path().join("tls"))),
        ],
    );
    let proxy = handle.local_addrs()[0];
    for (asked, shown) in [
        (Some("a.example"), "a.example"),
        (Some("x.b.example"), "*.b.example"),
        (Some("c.example"), "c.example"),
        (Some("other.example"), "default.example"),
        (None, "default.example"),
    ] {
        let got = blocking(move || presented_name(proxy, asked)).await;
        assert_eq!(got.as_deref(), Ok(shown), "{asked:?}");
    }
    for (flag, works) in [("-tls1_3", true), ("-tls1_2", true), ("-tls1_1", false)] {
        let (status, out, err) = blocking(move || {
            run_limited(
                Command::new(openssl())
                    .args(["s_client", "-connect", &proxy.to_string(), flag])
                    .args(["-servername", "a.example"])
                    .stdin(Stdio::null()),
                Duration::from_secs(20),
            )
        })
        .await;
        let ok = status.is_some_and(|s| s.success()) && out.contains("Cipher is");
        assert_eq!(ok, works, "{flag}: {out}{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_name_reaches_the_upstream() {
    let ca = blocking(|| Ca::new("test-ca")).await;
    let (site, alice, ca) =
        blocking(move || (ca.server(&["shop.example"]), ca.client("alice"), ca)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (_server, mut seen) = recorder(listener);
    let handle = start(
        upstream,
        &[
            ("tls_cert", text(&site.cert)),
            ("tls_key", text(&site.key)),
            ("tls_client_ca", text(&ca.cert)),
            ("proxy_protocol", "v2"),
        ],
    );
    let proxy = handle.local_addrs()[0];

    // Without a certificate: refused in the handshake (TLS 1.3 reports it on first read).
    let anonymous = connector(&ca.cert, None);
    let refused = match tls_connect(&anonymous, proxy, "shop.example").await {
        Err(e) => Err(e),
        Ok(mut tls) => {
            let _ = tls.write_all(b"x").await;
            let mut buf = [0; 1];
            tls.read(&mut buf).await.map(|_| ())
        }
    };
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let with_cert = connector(&ca.cert, Some((&alice.cert, &alice.key)));
    let mut tls = tls_connect(&with_cert, proxy, "shop.example")
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    tls.shutdown().await.unwrap();
    let got = within(PROMPT, "the upstream", seen.recv()).await.unwrap();
    let header = proxy_core::proxy_protocol::parse(&got.data)
        .unwrap()
        .unwrap();
    let tlvs = &got.data[16 + 12..header.len];
    let has = |needle: &[u8]| tlvs.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"alice"), "no CN in the TLVs: {tlvs:?}");
    assert!(has(b"shop.example"), "no authority: {tlvs:?}");
    assert!(has(b"TLSv1.3"), "no version: {tlvs:?}");
    assert_eq!(&got.data[header.len..], b"hello");
    eventually("the refused handshake counted", PROMPT, || {
        handle.stats_reader().stats().tls_handshakes_failed == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_for_new_clients_while_an_open_one_goes_on() {
    let (ca, old, new) = blocking(|| {
        let ca = Ca::new("test-ca");
        let (old, new) = (ca.server(&["old.example"]), ca.server(&["new.example"]));
        (ca, (old.cert, old.key), (new.cert, new.key))
    })
    .await;
    let echo = echo_server().await;
    let mut handle = start(
        echo.addr(),
        &[("tls_cert", text(&old.0)), ("tls_key", text(&old.1))],
    );
    let proxy = handle.local_addrs()[0];
    let open = connector(&ca.cert, None);
    let mut kept = tls_connect(&open, proxy, "old.example").await.unwrap();
    kept.write_all(b"before").await.unwrap();
    let mut buf = [0; 6];
    kept.read_exact(&mut buf).await.unwrap();

    let mut spec = ForwardSpec::default();
    spec.set("listen", &proxy.to_string()).unwrap();
    spec.set("target", &echo.addr().to_string()).unwrap();
    spec.set("tls_cert", text(&new.0)).unwrap();
    spec.set("tls_key", text(&new.1)).unwrap();
    handle
        .reload(spec.tcp_forwarder(spec.make_resolver().unwrap()).unwrap())
        .await
        .unwrap();
    let shown = blocking(move || presented_name(proxy, Some("new.example"))).await;
    assert_eq!(shown.as_deref(), Ok("new.example"));
    kept.write_all(b"after!").await.unwrap();
    kept.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_and_slow_clients_fail_their_handshake_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (cert, key) = blocking(move || self_signed(&d, "shop.example")).await;
    let echo = echo_server().await;
    let handle = start(
        echo.addr(),
        &[
            ("tls_cert", text(&cert)),
            ("tls_key", text(&key)),
            ("tls_handshake_timeout", "300ms"),
        ],
    );
    let proxy = handle.local_addrs()[0];
    let mut plain = TcpStream::connect(proxy).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = within(PROMPT, "the alert", plain.read(&mut buf))
        .await
        .unwrap_or(0);
    // An alert record (type 21) or nothing: never the echo of the request.
    assert!(n == 0 || buf[0] == 21, "{:?}", &buf[..n]);
    let mut silent = TcpStream::connect(proxy).await.unwrap();
    let started = std::time::Instant::now();
    let end = within(PROMPT, "the timeout", silent.read(&mut buf)).await;
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    eventually("two failed handshakes", PROMPT, || {
        handle.stats_reader().stats().tls_handshakes_failed == 2
    })
    .await;
    assert_eq!(handle.stats_reader().stats().bytes_to_upstream, 0);
}

#[test]
fn bad_files_are_refused_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a_crt, a_key) = self_signed(d, "a.example");
    let (_, b_key) = self_signed(d, "b.example");
    std::fs::write(d.join("empty.pem"), "").unwrap();
    let build = |settings: &[(&str, &Path)]| {
        let mut spec = ForwardSpec::default();
        spec.set("listen", "127.0.0.1:0").unwrap();
        spec.set("target", "127.0.0.1:1").unwrap();
        for (k, v) in settings {
            spec.set(k, text(v)).unwrap();
        }
        let resolver = spec.make_resolver().unwrap();
        let e = spec.tcp_forwarder(resolver).unwrap_err();
        format!("{}: {e}", e.key())
    };
    let missing = d.join("missing.crt");
    for (settings, says) in [
        (
            vec![
                ("tls_cert", missing.as_path()),
                ("tls_key", a_key.as_path()),
            ],
            "missing.crt",
        ),
        (
            vec![
                ("tls_cert", d.join("empty.pem").as_path()),
                ("tls_key", a_key.as_path()),
            ],
            "no PEM certificate",
        ),
        (
            vec![("tls_cert", a_crt.as_path()), ("tls_key", a_crt.as_path())],
            "no PEM private key",
        ),
        (
            vec![("tls_cert", a_crt.as_path()), ("tls_key", b_key.as_path())],
            "is not the one of the certificate",
        ),
        (vec![("tls_dir", missing.as_path())], "missing.crt"),
        (vec![("tls_dir", d.join("x").as_path())], "x"),
    ] {
        let e = build(&settings);
        assert!(e.contains(says), "{settings:?}: {e}");
        assert!(e.starts_with("tls_cert") || e.starts_with("tls_dir"), "{e}");
    }
}

/// What a plain client gets for `GET /` through a forward to an `openssl s_server -www`
/// with these settings: the answer, and how many connections found no upstream.
async fn through_upstream_tls(upstream: SocketAddr, settings: &[(&str, &str)]) -> (String, u64) {
    let mut all = vec![("upstream_tls", "true")];
    all.extend_from_slice(settings);
    let handle = start(upstream, &all);
    let mut client = TcpStream::connect(handle.local_addrs()[0]).await.unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = within(PROMPT, "the answer", client.read_to_end(&mut answer)).await;
    let unavailable = handle.stats_reader().stats().upstream_unavailable;
    (String::from_utf8_lossy(&answer).into_owned(), unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_upstream_and_refuses_bad_certificates() {
    use proxy_testkit::tls::OpensslServer;
    let (ca, good, expired) = blocking(|| {
        let ca = Ca::new("test-ca");
        let (good, expired) = (
            ca.server(&["upstream.example"]),
            ca.expired_server("upstream.example"),
        );
        (ca, good, expired)
    })
    .await;
    let servers = blocking(move || {
        (
            OpensslServer::with_cert(&good.cert, &good.key),
            OpensslServer::with_cert(&expired.cert, &expired.key),
            OpensslServer::start("upstream.example"),
        )
    })
    .await;
    let (good, expired, self_signed) = &servers;
    let ca_file = ca.cert.clone();
    let ca_path = text(&ca_file);
    let trusted = [
        ("upstream_ca", ca_path),
        ("upstream_server_name", "upstream.example"),
    ];
    let (answer, failed) = through_upstream_tls(good.addr, &trusted).await;
    assert!(answer.contains("200 ok"), "{answer}");
    assert_eq!(failed, 0);
    for (what, upstream, settings) in [
        (
            "a certificate for another name",
            good.addr,
            vec![
                ("upstream_ca", ca_path),
                ("upstream_server_name", "other.example"),
            ],
        ),
        ("an expired certificate", expired.addr, trusted.to_vec()),
        (
            "a self-signed certificate",
            self_signed.addr,
            trusted.to_vec(),
        ),
        // No upstream_ca: the system's CAs do not know the test CA.
        (
            "a private CA's certificate",
            good.addr,
            vec![("upstream_server_name", "upstream.example")],
        ),
    ] {
        let (answer, failed) = through_upstream_tls(upstream, &settings).await;
        assert_eq!((answer.as_str(), failed), ("", 1), "{what}");
    }
    let (answer, _) = through_upstream_tls(
        self_signed.addr,
        &[
            ("upstream_insecure", "true"),
            ("upstream_server_name", "whatever.example"),
        ],
    )
    .await;
    assert!(answer.contains("200 ok"), "insecure: {answer}");

    // TLS both ways: terminated from the client, originated to the upstream.
    let site = blocking(move || (ca.server(&["shop.example"]), ca)).await;
    let (site, ca) = site;
    let mut all: Vec<(&str, &str)> = vec![("upstream_tls", "true")];
    all.extend_from_slice(&trusted);
    all.extend([("tls_cert", text(&site.cert)), ("tls_key", text(&site.key))]);
    let handle = start(good.addr, &all);
    let connector = connector(&ca.cert, None);
    let mut tls = tls_connect(&connector, handle.local_addrs()[0], "shop.example")
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = within(PROMPT, "the answer", tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("200 ok"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_resumes_its_session_in_tls_1_3_and_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (cert, key) = blocking(move || self_signed(&d, "shop.example")).await;
    let echo = echo_server().await;
    let handle = start(
        echo.addr(),
        &[("tls_cert", text(&cert)), ("tls_key", text(&key))],
    );
    let proxy = handle.local_addrs()[0];
    for version in ["-tls1_3", "-tls1_2"] {
        let session = dir.path().join(format!("session{version}"));
        // A TLS 1.3 ticket comes after the handshake: s_client must stay a moment to
        // take it, so its input is a line (echoed back) and then a second's wait.
        let s_client = move |sess: &str, file: &Path| {
            let command = format!(
                "(echo ping; sleep 1) | '{}' s_client -connect {proxy} {version} \
                 -servername shop.example {sess} '{}'",
                openssl().display(),
                file.display()
            );
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &command]).stdin(Stdio::null());
            run_limited(&mut cmd, Duration::from_secs(20))
        };
        let session2 = session.clone();
        let (first, again) = blocking(move || {
            let first = s_client("-sess_out", &session2);
            (first, s_client("-sess_in", &session2))
        })
        .await;
        assert!(first.1.contains("New, TLSv1."), "{version}: {}", first.1);
        assert!(
            again.1.contains("Reused, TLSv1."),
            "{version} not resumed: {}",
            again.1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connection_idle_past_the_idle_timeout_is_closed() {
    let ca = blocking(|| Ca::new("test-ca")).await;
    let (site, ca) = blocking(move || (ca.server(&["shop.example"]), ca)).await;
    let echo = echo_server().await;
    let handle = start(
        echo.addr(),
        &[
            ("tls_cert", text(&site.cert)),
            ("tls_key", text(&site.key)),
            ("idle_timeout", "300ms"),
        ],
    );
    let connector = connector(&ca.cert, None);
    let mut tls = tls_connect(&connector, handle.local_addrs()[0], "shop.example")
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    tls.read_exact(&mut buf).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let end = within(PROMPT, "the idle close", tls.read_to_end(&mut rest)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(end.is_ok() || end.is_err(), "closed");
    assert!(rest.is_empty());
    eventually("the connection closed", PROMPT, || {
        handle.stats_reader().stats().connections_open == 0
    })
    .await;
}
