//! The server name real TLS clients send, read by `proxy_core::sni` from the bytes they
//! write first: `openssl s_client -servername`, and curl with `--resolve`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxy_core::sni::{HelloError, server_name};
use proxy_testkit::process::{KillOnDrop, require_program};

/// Accepts one connection on `listener` and reads until its first bytes answer
/// [`server_name`]; the answer.
fn first_hello(listener: &TcpListener) -> Result<Option<String>, HelloError> {
    let (mut stream, _): (TcpStream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match server_name(&bytes) {
            Err(HelloError::Incomplete) => {}
            answer => return answer,
        }
        assert!(Instant::now() < deadline, "no whole ClientHello: {bytes:?}");
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed after {} bytes", bytes.len());
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// `openssl s_client` connecting to `listener` with `args`.
fn s_client(listener: &TcpListener, args: &[&str]) -> KillOnDrop {
    let openssl = require_program("openssl", &[], "openssl", "a real TLS client");
    let addr = listener.local_addr().unwrap();
    KillOnDrop::spawn(
        Command::new(openssl)
            .args(["s_client", "-connect", &addr.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

#[test]
fn openssl_s_client_names_its_server_or_none() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = s_client(&listener, &["-servername", "Shop.Example", "-tls1_3"]);
    assert_eq!(first_hello(&listener), Ok(Some("shop.example".to_owned())));
    let _client = s_client(&listener, &["-servername", "old.example", "-tls1_2"]);
    assert_eq!(first_hello(&listener), Ok(Some("old.example".to_owned())));
    let _client = s_client(&listener, &["-noservername"]);
    assert_eq!(first_hello(&listener), Ok(None));
}

#[test]
fn curl_sends_the_url_host() {
    let curl = require_program("curl", &[], "curl", "a real TLS client");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = KillOnDrop::spawn(
        Command::new(curl)
            .args(["-sk", "--max-time", "10", "--resolve"])
            .arg(format!("api.example.test:{port}:127.0.0.1"))
            .arg(format!("https://api.example.test:{port}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    assert_eq!(
        first_hello(&listener),
        Ok(Some("api.example.test".to_owned()))
    );
}
