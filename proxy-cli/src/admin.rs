//! `--admin ADDR`: a small HTTP/1.1 server with `/metrics`, `/healthz` and `/readyz`.
//!
//! It answers `GET` (and `HEAD`) and nothing else (405), one request per connection
//! (`Connection: close`). A request head larger than [`MAX_HEAD`] gets 431; a client that
//! has not sent its whole head within [`REQUEST_TIMEOUT`] gets 408. At most
//! [`MAX_CONNECTIONS`] connections are open at once, but a new one is always accepted:
//! it takes the place of the oldest connection that has not sent its request head yet
//! (or, when every one has, of the oldest), so idle or slow clients can never keep a
//! liveness probe waiting. The server stops when its [`Admin`] drops.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | 200, the Prometheus text format ([`crate::metrics`]) |
//! | `/healthz` | 200 `ok` while the process runs |
//! | `/readyz` | 200 `ready` once every listener is bound; 503 before, and once the shutdown has started |

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinError, JoinHandle, JoinSet};

use crate::metrics;
use crate::registry::Forwards;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing a response (and waiting for the client to close) may take.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections open at once; a newcomer past it closes the oldest idle one.
pub const MAX_CONNECTIONS: usize = 64;

/// A running admin server; dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Admin {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `addr` (port 0 lets the kernel choose), logs `admin listening on ADDR` and
    /// serves `forwards`.
    ///
    /// # Errors
    ///
    /// Binding failed; the message names `addr`.
    pub async fn start(addr: SocketAddr, forwards: Forwards) -> anyhow::Result<Admin> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--admin {addr}: cannot listen"))?;
        let local_addr = listener
            .local_addr()
            .with_context(|| format!("--admin {addr}: cannot listen"))?;
        tracing::info!(
            address = %local_addr,
            "admin listening on {local_addr} (/metrics, /healthz, /readyz)"
        );
        let task = tokio::spawn(serve(listener, forwards));
        Ok(Admin { local_addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // Aborting the accept loop drops its `JoinSet`, which aborts the connections.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, forwards: Forwards) {
    let mut connections = Connections::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.make_room();
                    connections.spawn(stream, forwards.clone());
                }
                Err(e) => {
                    // EMFILE and the like: give connections in progress time to end.
                    tracing::warn!(error = %e, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.tasks.join_next() => connections.finished(done),
        }
    }
}

/// The open connections, oldest first.
///
/// Accepting always and closing the oldest idle connection when full, rather than
/// leaving newcomers in the listen backlog until a slot frees, is what keeps `/healthz`
/// prompt: a probe sends its request at once, while a client holding sockets open sends
/// nothing, so the probe is never the one closed.
#[derive(Default)]
struct Connections {
    /// Each connection's task; it returns the connection's number when done.
    tasks: JoinSet<u64>,
    /// The connections by number, which grows with each accept.
    open: BTreeMap<u64, Open>,
    next: u64,
}

/// What the accept loop keeps of an open connection.
struct Open {
    abort: AbortHandle,
    /// Set once the whole request head has arrived.
    asked: Arc<AtomicBool>,
}

// ===== impl Connections =====

impl Connections {
    /// At [`MAX_CONNECTIONS`], closes the oldest connection whose request head has not
    /// arrived, or else the oldest one.
    fn make_room(&mut self) {
        if self.open.len() < MAX_CONNECTIONS {
            return;
        }
        let idle = self
            .open
            .iter()
            .find(|(_, c)| !c.asked.load(Ordering::Relaxed))
            .map(|(&n, _)| n);
        let Some(n) = idle.or_else(|| self.open.keys().next().copied()) else {
            return;
        };
        if let Some(closed) = self.open.remove(&n) {
            // Aborting drops the stream, which closes the connection.
            closed.abort.abort();
        }
    }

    fn spawn(&mut self, stream: TcpStream, forwards: Forwards) {
        let n = self.next;
        self.next += 1;
        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        let abort = self.tasks.spawn(async move {
            connection(stream, &forwards, &flag).await;
            n
        });
        self.open.insert(n, Open { abort, asked });
    }

    /// Forgets a connection that ended; one closed by [`make_room`](Self::make_room)
    /// was forgotten then.
    fn finished(&mut self, done: Result<u64, JoinError>) {
        if let Ok(n) = done {
            self.open.remove(&n);
        }
    }
}

/// An HTTP response with a text body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }

    /// The bytes on the wire; no body for `HEAD`.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed before sending anything: nothing to answer.
    Closed,
    /// The head is not HTTP/1.x.
    Malformed,
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
}

/// The request line's method and path (without the query).
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// Serves one request on `stream`; sets `asked` once its head has arrived.
async fn connection(mut stream: TcpStream, forwards: &Forwards, asked: &AtomicBool) {
    let mut head_only = false;
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    if matches!(head, Ok(Ok(_))) {
        asked.store(true, Ordering::Relaxed);
    }
    let response = match head {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(_)) => return, // reset: nobody to answer
        Ok(Ok(head)) => match parse(&head) {
            Ok(request) => {
                head_only = request.method == "HEAD";
                respond(&request, forwards)
            }
            Err(HeadError::Closed) => return,
            Err(HeadError::Malformed) => Response::text(400, "bad request\n"),
            Err(HeadError::TooLarge) => Response::text(431, "request head too large\n"),
        },
    };
    let bytes = response.encode(head_only);
    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        // Read what the client still sends (a body we did not want) until it closes, so
        // closing does not reset the connection before the client has read the answer.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// Reads up to the end of the request head (an empty line), at most [`MAX_HEAD`] bytes.
/// Returns what was read; [`parse`] tells whether it is a complete head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&buf[..n]);
        if head_end(&head).is_some() || head.len() > MAX_HEAD {
            return Ok(head);
        }
    }
}

/// Where the head ends: after `\r\n\r\n` (or a bare `\n\n`).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request head read by [`read_head`].
fn parse(bytes: &[u8]) -> Result<Request, HeadError> {
    if bytes.is_empty() {
        return Err(HeadError::Closed);
    }
    let Some(end) = head_end(bytes) else {
        return Err(if bytes.len() > MAX_HEAD {
            HeadError::TooLarge
        } else {
            HeadError::Malformed // the client closed half-way through
        });
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| HeadError::Malformed)?;
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

fn respond(request: &Request, forwards: &Forwards) -> Response {
    let known = matches!(request.path.as_str(), "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found; try /metrics, /healthz or /readyz\n");
    }
    if request.method != "GET" && request.method != "HEAD" {
        let mut r = Response::text(405, "method not allowed; use GET\n");
        r.allow = true;
        return r;
    }
    match request.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" if forwards.is_ready() => Response::text(200, "ready\n"),
        "/readyz" if forwards.is_draining() => Response::text(503, "draining\n"),
        "/readyz" => Response::text(503, "starting\n"),
        _ => Response {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render_with(
                &forwards.metrics(),
                forwards.is_ready(),
                forwards.port_forward_stats().as_ref(),
                &forwards.http_metrics(),
            ),
            allow: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_request_lines() {
        let r = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r, req("GET", "/metrics"));
        let r = parse(b"HEAD /readyz HTTP/1.0\n\n").unwrap();
        assert_eq!(r, req("HEAD", "/readyz"));
        assert_eq!(parse(b""), Err(HeadError::Closed));
        for bad in [
            &b"GET /metrics HTTP/1.1\r\n"[..], // no end of head
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /m\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(HeadError::Malformed), "{bad:?}");
        }
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&long), Err(HeadError::TooLarge));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&long), Err(HeadError::TooLarge));
    }

    #[test]
    fn routes() {
        let forwards = Forwards::new();
        assert_eq!(respond(&req("GET", "/healthz"), &forwards).status, 200);
        let r = respond(&req("GET", "/readyz"), &forwards);
        assert_eq!((r.status, r.body.as_str()), (503, "starting\n"));
        forwards.set_ready();
        assert_eq!(respond(&req("GET", "/readyz"), &forwards).status, 200);
        assert_eq!(respond(&req("HEAD", "/readyz"), &forwards).status, 200);
        forwards.set_draining();
        let r = respond(&req("GET", "/readyz"), &forwards);
        assert_eq!((r.status, r.body.as_str()), (503, "draining\n"));
        assert_eq!(respond(&req("GET", "/healthz"), &forwards).status, 200);
        let r = respond(&req("GET", "/metrics"), &forwards);
        assert_eq!(r.content_type, metrics::CONTENT_TYPE);
        assert!(r.body.contains("proxy_ready 0\n"));
        assert_eq!(respond(&req("GET", "/"), &forwards).status, 404);
        assert_eq!(respond(&req("GET", "/metricsx"), &forwards).status, 404);
        let r = respond(&req("POST", "/metrics"), &forwards);
        assert!(r.status == 405 && r.allow);
        assert!(
            String::from_utf8(r.encode(false))
                .unwrap()
                .contains("\r\nAllow: GET, HEAD\r\n")
        );
    }

    #[test]
    fn encodes_responses() {
        let r = Response::text(200, "ok\n");
        let wire = String::from_utf8(r.encode(false)).unwrap();
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(wire.contains("\r\nContent-Length: 3\r\n"), "{wire}");
        assert!(wire.contains("\r\nConnection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nok\n"), "{wire}");
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 3"));
    }

    /// A whole exchange over loopback, readiness flipping as the registry says.
    #[tokio::test]
    async fn serves_over_tcp() {
        let forwards = Forwards::new();
        let admin = Admin::start("127.0.0.1:0".parse().unwrap(), forwards.clone())
            .await
            .unwrap();
        let addr = admin.local_addr();
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut back = String::new();
            s.read_to_string(&mut back).await.unwrap();
            back
        };
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503 "));
        forwards.set_ready();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200 "));
        assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));

        // A client that sends half a head and then nothing is answered 408, after the
        // request timeout (paused time makes it immediate).
        tokio::time::pause();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metr").await.unwrap();
        let mut back = String::new();
        slow.read_to_string(&mut back).await.unwrap();
        assert!(back.starts_with("HTTP/1.1 408 "), "{back}");
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = Admin::start(addr, Forwards::new()).await.unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("--admin {addr}")),
            "{e:#}"
        );
    }
}
