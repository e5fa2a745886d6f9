//! `proxy port-forward-server` under test, and the pods' upstreams: an echo server, one
//! that answers only after the client's FIN, and one that speaks and closes first.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::Command;
use std::thread;

use super::proxy::{PROMPT, PROXY, Proxy};

/// A running `proxy port-forward-server`; killed on drop (printing its stderr when the
/// test is failing).
pub(crate) struct PortForwardServer {
    pub(crate) proxy: Proxy,
    /// Where it serves, from its `Starting to serve on ADDR` line.
    pub(crate) addr: SocketAddr,
}

impl PortForwardServer {
    /// Starts `proxy port-forward-server --listen 127.0.0.1:0 ARGS` with `RUST_LOG=info`
    /// (for the access log: one line per stream, naming the protocol) and waits (within
    /// [`PROMPT`]) for its `Starting to serve on ADDR` line on stdout.
    pub(crate) fn start(args: &[&str]) -> PortForwardServer {
        Self::start_on("127.0.0.1:0", args)
    }

    /// [`start`](Self::start) on `listen` (such as the address of a server stopped before).
    pub(crate) fn start_on(listen: &str, args: &[&str]) -> PortForwardServer {
        let mut all = vec!["port-forward-server", "--listen", listen];
        all.extend_from_slice(args);
        let mut cmd = Command::new(PROXY);
        cmd.args(&all).env("RUST_LOG", "info");
        let proxy = Proxy::spawn(cmd);
        let line = proxy
            .wait_stdout(PROMPT, |lines| {
                lines
                    .iter()
                    .find(|l| l.contains("Starting to serve on "))
                    .cloned()
            })
            .unwrap_or_else(|| {
                panic!(
                    "`proxy {}`: no `Starting to serve on` line within {PROMPT:?}\n\
                     stdout:\n{}\nstderr:\n{}",
                    all.join(" "),
                    proxy.stdout(),
                    proxy.stderr()
                )
            });
        let addr = line
            .rsplit("Starting to serve on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        PortForwardServer { proxy, addr }
    }

    /// The protocol of the first stream in the access log (`proxy_portforward::access`,
    /// field `protocol`): `spdy`, `spdy-websocket` or `websocket`; waits up to [`PROMPT`]
    /// for a stream to end. It tells which of its transports kubectl settled on, which
    /// kubectl itself does not print.
    pub(crate) fn first_stream_protocol(&self) -> String {
        let line = self
            .proxy
            .find_line(PROMPT, |l| {
                l.contains("proxy_portforward::access") || l.contains("request_id")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no access-log line (`proxy_portforward::access`) within {PROMPT:?}:\n{}",
                    self.proxy.stderr()
                )
            });
        protocol_field(&line).unwrap_or_else(|| panic!("no `protocol` field in {line:?}"))
    }

    /// `http://ADDR`.
    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://ADDR`.
    pub(crate) fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// A server on 127.0.0.1 that reads each connection to its end (the client's FIN), then
/// answers `got N bytes` and closes: the client's half-close must reach it, and its answer
/// must still come back. Runs for the rest of the test.
pub(crate) fn reply_after_eof() -> SocketAddr {
    serve(|mut conn| {
        let mut got = Vec::new();
        if conn.read_to_end(&mut got).is_ok() {
            let _ = conn.write_all(format!("got {} bytes", got.len()).as_bytes());
        }
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// A server on 127.0.0.1 that says `bye` and closes each connection before the client
/// sends anything. Runs for the rest of the test.
pub(crate) fn closes_first() -> SocketAddr {
    serve(|mut conn| {
        let _ = conn.write_all(b"bye");
        let _ = conn.shutdown(Shutdown::Both);
    })
}

fn serve(handle: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            conn.set_read_timeout(Some(PROMPT)).unwrap();
            thread::spawn(move || handle(conn));
        }
    });
    addr
}

/// The `protocol` field of a log line: `protocol="spdy"`, `protocol=spdy` (text) or
/// `"protocol":"spdy"` (JSON).
pub(crate) fn protocol_field(line: &str) -> Option<String> {
    let at = line.find("protocol")? + "protocol".len();
    let rest = line[at..].trim_start_matches('"');
    let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?;
    let value: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!value.is_empty()).then_some(value)
}
