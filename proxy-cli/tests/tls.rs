//! `proxy tcp PORT TARGET --tls-cert FILE --tls-key FILE`: TLS terminated in front of a
//! plain upstream, seen by real `openssl s_client`s; SIGHUP reads the files again, so a
//! rotated certificate reaches new clients while an open connection carries on; a broken
//! file at reload keeps the running certificate.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use proxy_testkit::blocking::Echo;
use proxy_testkit::tls::{openssl, presented_name, self_signed};
use support::proxy::Proxy;

/// An `openssl s_client -quiet` session: lines written to it go through TLS, lines read
/// are what came back.
struct Session {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Session {
    fn open(addr: SocketAddr, name: &str) -> Session {
        let mut child = Command::new(openssl())
            .args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .args(["-servername", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Session { child, lines }
    }

    fn echo(&mut self, line: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        self.lines.next().unwrap().unwrap()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_rotates_the_certificate_for_new_clients_while_open_ones_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_crt, old_key) = self_signed(d, "old.example");
    let (new_crt, new_key) = self_signed(d, "new.example");
    let (crt, key) = (d.join("site.crt"), d.join("site.key"));
    std::fs::copy(&old_crt, &crt).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = proxy.listen_addr(&target);
    assert_eq!(
        presented_name(addr, Some("x")).as_deref(),
        Ok("old.example")
    );
    let mut open = Session::open(addr, "x");
    assert_eq!(open.echo("before"), "before");

    // A broken file: the reload is refused and the running certificate stays.
    std::fs::write(&crt, "not a certificate").unwrap();
    proxy.signal("HUP");
    proxy.expect_line("the refused reload", |l| l.contains("reload rejected"));
    assert_eq!(
        presented_name(addr, Some("x")).as_deref(),
        Ok("old.example")
    );

    std::fs::copy(&new_crt, &crt).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    proxy.signal("HUP");
    proxy.expect_line("the reload", |l| l.contains("TLS certificates read again"));
    assert_eq!(
        presented_name(addr, Some("x")).as_deref(),
        Ok("new.example")
    );
    assert_eq!(open.echo("after"), "after");
    proxy.expect_line("an access line with TLS", |l| {
        l.contains("proxy_core::access") && l.contains("tls=\"TLSv1.3\"") && l.contains("sni=\"x\"")
    });
}

#[test]
fn a_missing_key_is_a_usage_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, _) = self_signed(dir.path(), "a.example");
    let (code, _, err) = support::proxy::run(&[
        "tcp",
        "443",
        "web:443",
        "--tls-cert",
        crt.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`tls_cert` needs `tls_key`"), "{err}");
    let (code, _, err) = support::proxy::run(&[
        "tcp",
        "443",
        "web:443",
        "--tls-cert",
        "/nonexistent/site.crt",
        "--tls-key",
        "/nonexistent/site.key",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/nonexistent/site.crt") && err.contains("--tls-cert"),
        "{err}"
    );
}

#[test]
fn upstream_tls_refuses_bad_certificates_saying_why() {
    use proxy_testkit::tls::{Ca, OpensslServer};
    let ca = Ca::new("test-ca");
    let good = ca.server(&["upstream.example"]);
    let expired = ca.expired_server("upstream.example");
    let good_server = OpensslServer::with_cert(&good.cert, &good.key);
    let expired_server = OpensslServer::with_cert(&expired.cert, &expired.key);
    let ca_file = ca.cert.to_str().unwrap();
    for (upstream, extra, says) in [
        (
            good_server.addr,
            vec![
                "--upstream-ca",
                ca_file,
                "--upstream-server-name",
                "other.example",
            ],
            "not valid for name",
        ),
        (
            expired_server.addr,
            vec![
                "--upstream-ca",
                ca_file,
                "--upstream-server-name",
                "upstream.example",
            ],
            "the upstream's certificate has expired",
        ),
        (
            good_server.addr,
            vec!["--upstream-server-name", "upstream.example"],
            "not issued by a trusted CA",
        ),
    ] {
        let target = upstream.to_string();
        let mut args = vec![
            "tcp",
            "0",
            &target,
            "--listen",
            "127.0.0.1",
            "--upstream-tls",
        ];
        args.extend(extra);
        let proxy = Proxy::start(&args);
        let addr = proxy.listen_addr(&target);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        proxy.expect_line(says, |l| {
            l.contains("upstream TLS handshake failed") && l.contains(says)
        });
    }
    // Verified: the answer comes through.
    let target = good_server.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--upstream-tls",
        "--upstream-ca",
        ca_file,
        "--upstream-server-name",
        "upstream.example",
    ]);
    let addr = proxy.listen_addr(&target);
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut client, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 ok"), "{answer}");
    // Insecure warns at every start.
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--upstream-tls",
        "--upstream-insecure",
    ]);
    proxy.expect_line("the warning", |l| {
        l.contains("WARN") && l.contains("NOT verified")
    });
}

#[test]
fn sighup_rotates_the_certificate_of_proxy_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_crt, old_key) = self_signed(d, "old.example");
    let (new_crt, new_key) = self_signed(d, "new.example");
    let (crt, key) = (d.join("site.crt"), d.join("site.key"));
    std::fs::copy(&old_crt, &crt).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "http",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--threads",
        "1",
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let line = proxy.expect_line("the listening line", |l| l.contains("Forwarding from "));
    let addr: SocketAddr = (line.split("Forwarding from ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"));
    assert_eq!(
        presented_name(addr, Some("x")).as_deref(),
        Ok("old.example")
    );
    std::fs::copy(&new_crt, &crt).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    proxy.signal("HUP");
    proxy.expect_line("the reload", |l| l.contains("TLS certificates read again"));
    assert_eq!(
        presented_name(addr, Some("x")).as_deref(),
        Ok("new.example")
    );
}
