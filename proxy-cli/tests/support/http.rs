//! The `--admin` server of the `proxy` under test: where it listens, and plain HTTP/1.1
//! requests to it over one connection each.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;

use super::proxy::Proxy;
use proxy_testkit::blocking::connect;

/// The admin address from the `admin listening on ADDR` line.
pub(crate) fn admin_addr(proxy: &Proxy) -> SocketAddr {
    let line = proxy.expect_line("'admin listening on'", |l| {
        l.contains("admin listening on ")
    });
    let after = line.split("admin listening on ").nth(1).unwrap();
    let addr = after.split([' ', '"']).next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
}

/// An HTTP response: version, status, headers (lower-case names) and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) version: String,
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

/// Sends `request` as it is and reads the whole response (the server closes).
pub(crate) fn request(admin: SocketAddr, request: &str) -> Response {
    let mut s = connect(admin);
    s.write_all(request.as_bytes()).expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap().to_owned();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("header {l:?}"));
            (k.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    Response {
        version,
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `GET path`.
pub(crate) fn get(admin: SocketAddr, path: &str) -> Response {
    request(admin, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}
