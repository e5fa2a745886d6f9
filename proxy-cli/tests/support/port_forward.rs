//! `proxy port-forward-server` under test, and the pods' upstreams: an echo server, one
//! that answers only after the client's FIN, and one that speaks and closes first.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;

use super::proxy::{PROMPT, Proxy};

/// A running `proxy port-forward-server`; killed on drop (printing its stderr when the
/// test is failing).
pub(crate) struct PortForwardServer {
    pub(crate) proxy: Proxy,
    /// Where it serves, from its `Starting to serve on ADDR` line.
    pub(crate) addr: SocketAddr,
}

impl PortForwardServer {
    /// Starts `proxy port-forward-server --listen 127.0.0.1:0 ARGS` and waits (within
    /// [`PROMPT`]) for its `Starting to serve on ADDR` line on stdout.
    pub(crate) fn start(args: &[&str]) -> PortForwardServer {
        let mut all = vec!["port-forward-server", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let proxy = Proxy::start(&all);
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
