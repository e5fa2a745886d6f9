//! HTTP/1.1 upstreams and clients for the HTTP reverse proxy's tests (`proxy http`,
//! `proxy service-proxy`), all on loopback:
//! - [`Backend`]: an in-process hyper server on a thread of its own, answering every
//!   request with JSON that says what it received ([`Seen`]), plus routes that misbehave on
//!   purpose (a status, a delay, no answer, a reset, an echo, a large body, a redirect, a
//!   cookie) and counters of connections and requests;
//! - [`python_backend`]: the same JSON from Python's `http.server` in a process of its own;
//! - [`nginx_backend`]: nginx answering with what it received, and [`Nginx`] for any other
//!   configuration;
//! - [`websocket_echo`] and [`websocket_client`]: the Python `websockets` package in a venv
//!   (skipped when PyPI is out of reach);
//! - [`http_get`] and [`raw_exchange`]: blocking clients over a plain `TcpStream`, for
//!   exact control of the bytes sent, and [`Response`] to read what came back.
//!
//! Every wait is bounded (by [`PROMPT`] unless a limit is given), and every server stops
//! when dropped.

use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::client::End;
use crate::data::Rng;
use crate::process::{KillOnDrop, Lines, python_venv, require_program};
use crate::wait::PROMPT;

/// The seed of [`pattern`], the body of `/bytes/N`.
const PATTERN_SEED: u64 = 0x6874_7470; // "http"

/// The `websockets` release the WebSocket helpers install: 15.0 added the `proxy` argument
/// that [`websocket_client`] uses to ignore `HTTP_PROXY`.
pub const WEBSOCKETS_REQUIREMENT: &str = "websockets==15.0.1";

/// The Python HTTP/1.1 server of [`python_backend`].
pub const PYTHON_BACKEND_SCRIPT: &str = include_str!("../py/backend.py");

/// The WebSocket echo server of [`websocket_echo`].
pub const WEBSOCKET_ECHO_SCRIPT: &str = include_str!("../py/ws_echo.py");

/// The WebSocket client of [`websocket_client`]: `python ws_client.py URL MESSAGES
/// [HOST:PORT]`.
pub const WEBSOCKET_CLIENT_SCRIPT: &str = include_str!("../py/ws_client.py");

// ===== Seen =====

/// What an upstream received, as it answered: the JSON of [`Backend`] and
/// [`python_backend`], or the `key: value` lines of [`nginx_backend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The upstream's name.
    pub backend: String,
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request target as received: the path and query, e.g. `/a/b?c=d`.
    pub uri: String,
    /// The protocol version, e.g. `HTTP/1.1`.
    pub version: String,
    /// The request's headers. [`Backend`]: names in lower case, in the order of their first
    /// appearance, each name's values in order. Python: as received. nginx: a fixed set
    /// (see [`nginx_backend`]), those that were absent or empty left out.
    pub headers: Vec<(String, String)>,
    /// The length of the request body, all of it read (nginx: its `Content-Length`).
    pub body_bytes: u64,
    /// Which of the upstream's connections carried the request, from 1 (nginx: its
    /// connection serial number): equal numbers are one kept-alive connection.
    pub connection: u64,
    /// The address the request came from: the proxy's side of the upstream connection.
    pub peer: String,
}

// ===== impl Seen =====

impl Seen {
    /// Parses an upstream's answer body.
    ///
    /// # Errors
    ///
    /// When the body is neither of the two forms, with the body in the message.
    pub fn parse(body: &[u8]) -> Result<Seen, String> {
        let text = String::from_utf8_lossy(body);
        let parsed = if text.trim_start().starts_with('{') {
            Seen::from_json(&text)
        } else {
            Seen::from_lines(&text)
        };
        parsed.map_err(|e| format!("not an upstream's answer ({e}): {text:?}"))
    }

    fn from_json(text: &str) -> Result<Seen, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let string = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no string `{key}`"))
        };
        let number = |key: &str| {
            (v.get(key).and_then(Value::as_u64)).ok_or_else(|| format!("no number `{key}`"))
        };
        let headers = (v.get("headers").and_then(Value::as_array))
            .ok_or("no list `headers`")?
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(name), Value::String(value)]) => {
                    Ok((name.clone(), value.clone()))
                }
                _ => Err(format!("a header is not [name, value]: {pair}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Seen {
            backend: string("backend")?,
            method: string("method")?,
            uri: string("uri")?,
            version: string("version")?,
            headers,
            body_bytes: number("body_bytes")?,
            connection: number("connection")?,
            peer: string("peer")?,
        })
    }

    fn from_lines(text: &str) -> Result<Seen, String> {
        let mut seen = Seen {
            backend: String::new(),
            method: String::new(),
            uri: String::new(),
            version: String::new(),
            headers: Vec::new(),
            body_bytes: 0,
            connection: 0,
            peer: String::new(),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or((line.trim_end_matches(':'), ""));
            let number = || value.parse::<u64>().map_err(|e| format!("{key}: {e}"));
            match key {
                "backend" => seen.backend = value.to_owned(),
                "method" => seen.method = value.to_owned(),
                "uri" => seen.uri = value.to_owned(),
                "version" => seen.version = value.to_owned(),
                "peer" => seen.peer = value.to_owned(),
                "connection" => seen.connection = number()?,
                "body_bytes" if value.is_empty() => {}
                "body_bytes" => seen.body_bytes = number()?,
                "header" => {
                    let (name, value) = value.split_once(": ").unwrap_or((value, ""));
                    if !value.is_empty() {
                        seen.headers.push((name.to_owned(), value.to_owned()));
                    }
                }
                _ => return Err(format!("unknown line {line:?}")),
            }
        }
        if seen.backend.is_empty() {
            return Err("no `backend` line".to_owned());
        }
        Ok(seen)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        values_named(&self.headers, name)
    }
}

/// The values of the headers called `name` (any case) among `headers`, in order.
fn values_named<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    (headers.iter())
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

// ===== Backend =====

/// An HTTP/1.1 upstream in this process: hyper on a current-thread tokio runtime on a
/// thread of its own, so that it serves the same from `#[test]` and `#[tokio::test]` (also
/// under `tokio::time::pause`, which it does not see). Dropping it stops it, closing every
/// connection.
///
/// It answers by path:
/// - any path not below: 200, `Content-Type: application/json`, the [`Seen`] JSON of the
///   request (whose body it reads to the end to count it);
/// - `/status/NNN`: status NNN (200 to 999) with a short text body, or no body where the
///   status has none;
/// - `/slow/MS`: the JSON after MS milliseconds (counted once the request body is read);
/// - `/never`: no answer, the connection held open until the backend stops;
/// - `/reset`: no answer, the connection closed with a RST (`SO_LINGER` 0);
/// - `/echo`: the request body back as it arrives (chunked), with the request's
///   `Content-Type`;
/// - `/bytes/N`: N bytes of [`pattern`], with `Content-Length`;
/// - `/redirect?to=X`: 302 with `Location: X` (X percent-decoded);
/// - `/cookie`: the JSON, with `Set-Cookie: backend=NAME; Path=/` of its own.
///
/// The JSON's `connection` numbers the backend's connections from 1, so two requests with
/// the same number came on one kept-alive connection.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    connections: AtomicU64,
    requests: AtomicU64,
}

/// One accepted connection, as its requests see it.
struct Conn {
    shared: Arc<Shared>,
    number: u64,
    peer: SocketAddr,
    /// Notified by `/reset`: the connection is to end with a RST.
    reset: Notify,
}

type Body = BoxBody<Bytes, hyper::Error>;

// ===== impl Backend =====

impl Backend {
    /// A backend named `name` on `127.0.0.1` and a port the kernel chose.
    pub fn start(name: &str) -> Backend {
        Backend::start_on(name, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("backend {name}: bind 127.0.0.1:0: {e}"))
    }

    /// A backend named `name` listening on `addr`, e.g. `127.0.0.2:PORT` (any `127/8`
    /// address works on Linux without configuration).
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<Backend> {
        let listener = std::net::TcpListener::bind(addr)?;
        Ok(Backend::serve(name, listener))
    }

    /// One backend per `(name, ip)`, all on the same port (chosen by the kernel for the
    /// first, tried on the others, up to 20 times): several A records of one name and
    /// one port, say.
    pub fn start_same_port(backends: &[(&str, IpAddr)]) -> Vec<Backend> {
        let Some(((first, first_ip), rest)) = backends.split_first() else {
            return Vec::new();
        };
        for _ in 0..20 {
            let one = Backend::start_on(first, SocketAddr::new(*first_ip, 0))
                .unwrap_or_else(|e| panic!("backend {first}: bind {first_ip}:0: {e}"));
            let port = one.addr.port();
            let others: io::Result<Vec<Backend>> = (rest.iter())
                .map(|(name, ip)| Backend::start_on(name, SocketAddr::new(*ip, port)))
                .collect();
            if let Ok(others) = others {
                return std::iter::once(one).chain(others).collect();
            }
        }
        panic!("no port was free on all of {backends:?} in 20 tries");
    }

    fn serve(name: &str, listener: std::net::TcpListener) -> Backend {
        let addr = listener.local_addr().expect("local_addr");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the backend");
        let thread = thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn({
                let shared = shared.clone();
                move || runtime.block_on(accept(listener, shared, stopped))
            })
            .expect("spawn the backend's thread");
        Backend {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its name, the JSON's `backend`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The connections it has accepted.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The requests whose headers it has read (answered or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The runtime, and with it every connection, is dropped on the backend's thread.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts until `stopped`; returning drops every connection's task.
async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let number = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let conn = Arc::new(Conn {
                        shared: shared.clone(),
                        number,
                        peer,
                        reset: Notify::new(),
                    });
                    conns.spawn(serve_connection(stream, conn));
                }
                // A connection that failed before it was accepted, or out of descriptors.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, conn: Arc<Conn>) {
    // A second descriptor of the socket, for `/reset` to set SO_LINGER 0 on while hyper
    // owns the first; the socket closes when both are gone.
    let Ok(keep) = stream.into_std() else { return };
    let Ok(stream) = keep.try_clone().and_then(tokio::net::TcpStream::from_std) else {
        return;
    };
    let service = service_fn({
        let conn = conn.clone();
        move |req| respond(req, conn.clone())
    });
    // A client may send its request then a FIN (half_close): answered, as nginx does.
    let connection = http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = conn.reset.notified() => {
            let _ = socket2::SockRef::from(&keep).set_linger(Some(Duration::ZERO));
        }
    }
    drop(keep);
}

async fn respond(
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<http::Response<Body>, Infallible> {
    conn.shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let name = conn.shared.name.as_str();
    let response = match path.as_str() {
        "/never" => std::future::pending().await,
        "/reset" => {
            conn.reset.notify_one();
            std::future::pending().await
        }
        "/echo" => {
            let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
            // A stream hides the request's length, so the answer is chunked.
            let body = StreamBody::new(BodyStream::new(req.into_body())).boxed();
            let mut response = http::Response::new(body);
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        "/redirect" => {
            let to = (req.uri().query().unwrap_or_default().split('&'))
                .find_map(|kv| kv.strip_prefix("to="))
                .map(percent_decode)
                .unwrap_or_default();
            drain(req.into_body()).await;
            match HeaderValue::from_str(&to) {
                Ok(location) => text(StatusCode::FOUND, format!("{name}: redirect to {to}\n"))
                    .with_header(header::LOCATION, location),
                Err(_) => text(StatusCode::BAD_REQUEST, format!("{name}: bad ?to=\n")),
            }
        }
        "/cookie" => seen_json(req, &conn).await.with_header(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!("backend={name}; Path=/"))
                .unwrap_or(HeaderValue::from_static("backend=-; Path=/")),
        ),
        _ => {
            if let Some(code) = path.strip_prefix("/status/") {
                drain(req.into_body()).await;
                match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                    Some(status) if status.as_u16() >= 200 => status_answer(status, name),
                    _ => text(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: no status {code:?}\n"),
                    ),
                }
            } else if let Some(ms) = path.strip_prefix("/slow/") {
                match ms.parse() {
                    Ok(ms) => {
                        let (parts, body) = req.into_parts();
                        let body_bytes = drain(body).await;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        seen_response(&parts, body_bytes, &conn)
                    }
                    Err(_) => text(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: no delay {ms:?}\n"),
                    ),
                }
            } else if let Some(n) = path.strip_prefix("/bytes/") {
                drain(req.into_body()).await;
                match n.parse() {
                    Ok(len) => http::Response::new(PatternBody::new(len).boxed()),
                    Err(_) => text(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: no length {n:?}\n"),
                    ),
                }
            } else {
                seen_json(req, &conn).await
            }
        }
    };
    Ok(response)
}

/// `with_header` on a response, to chain.
trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: HeaderValue) -> Self;
}

impl WithHeader for http::Response<Body> {
    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers_mut().append(name, value);
        self
    }
}

/// Reads a body to its end; how many bytes it had (as many as came before an error).
async fn drain(mut body: Incoming) -> u64 {
    let mut n = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
        }
    }
    n
}

async fn seen_json(req: Request<Incoming>, conn: &Conn) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let body_bytes = drain(body).await;
    seen_response(&parts, body_bytes, conn)
}

fn seen_response(
    parts: &http::request::Parts,
    body_bytes: u64,
    conn: &Conn,
) -> http::Response<Body> {
    let headers: Vec<Value> = (parts.headers.iter())
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let seen = json!({
        "backend": conn.shared.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map_or("", |p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
        "connection": conn.number,
        "peer": conn.peer.to_string(),
    });
    let mut response = http::Response::new(full(seen.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status_answer(status: StatusCode, name: &str) -> http::Response<Body> {
    // Statuses without a body (RFC 9110 §6.4.1).
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = http::Response::new(full(""));
        *response.status_mut() = status;
        return response;
    }
    text(status, format!("{name}: status {}\n", status.as_u16()))
}

fn text(status: StatusCode, body: String) -> http::Response<Body> {
    let mut response = http::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `%XX` decoded (and `+` left alone); a malformed escape stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ===== the /bytes/N pattern =====

/// The first `len` bytes of the body of `/bytes/N` (any N ≥ `len`: every body is a prefix
/// of the same stream).
pub fn pattern(len: usize) -> Vec<u8> {
    crate::data::payload(PATTERN_SEED, len)
}

/// [`pattern`] made as it is sent, 64 KiB at a time, with its exact length.
struct PatternBody {
    rng: Rng,
    left: u64,
}

impl PatternBody {
    fn new(len: u64) -> Self {
        PatternBody {
            rng: Rng::new(PATTERN_SEED),
            left: len,
        }
    }
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        // A multiple of 8, so each chunk goes on where the last ended.
        let n = self.left.min(64 << 10) as usize;
        let mut chunk = vec![0; n];
        self.rng.fill(&mut chunk);
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

// ===== python_backend =====

/// A child process serving HTTP (or WebSocket) on loopback: killed on drop, printing its
/// output when the test is failing.
#[derive(Debug)]
pub struct ChildServer {
    child: KillOnDrop,
    stdout: Lines,
    stderr: Lines,
    addr: SocketAddr,
    what: String,
}

// ===== impl ChildServer =====

impl ChildServer {
    /// Runs `cmd`, which prints its port alone on the first line of stdout once it listens
    /// on `127.0.0.1`; waits for that line at most `limit`.
    ///
    /// # Errors
    ///
    /// The child's output when it does not print its port in time or exits first.
    pub fn spawn(mut cmd: Command, what: &str, limit: Duration) -> Result<ChildServer, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env("PYTHONUNBUFFERED", "1");
        let mut child = KillOnDrop::spawn(&mut cmd).map_err(|e| format!("spawn {what}: {e}"))?;
        let (stdout, stderr) = child.take_output();
        let port = stdout.wait(limit, |lines| lines.first()?.trim().parse::<u16>().ok());
        let Some(port) = port else {
            child.kill();
            stdout.wait_closed(PROMPT);
            stderr.wait_closed(PROMPT);
            return Err(format!(
                "{what} did not print its port within {limit:?}\n---- stdout ----\n{}\n\
                 ---- stderr ----\n{}",
                stdout.text(),
                stderr.text()
            ));
        };
        Ok(ChildServer {
            child,
            stdout,
            stderr,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            what: what.to_owned(),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its stdout so far, the port line first.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// The first stdout line containing `needle`, waiting up to `timeout`.
    pub fn find_stdout(&self, timeout: Duration, needle: &str) -> Option<String> {
        self.stdout.find(timeout, needle)
    }

    /// Its output so far, labelled, for failure messages.
    pub fn output(&self) -> String {
        crate::process::labelled_output(&self.what, &self.stdout, &self.stderr)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.child.kill();
        if thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// A real HTTP/1.1 server in a process of its own: Python's
/// `http.server.ThreadingHTTPServer` ([`PYTHON_BACKEND_SCRIPT`], standard library only)
/// named `name`, with keep-alive, on `127.0.0.1` and a port the kernel chose. Any path
/// gets the [`Seen`] JSON (headers as received: names in their case, in order);
/// `/status/NNN` gets NNN. Fails the test when `python3` is missing or the server does not
/// start within [`PROMPT`].
pub fn python_backend(name: &str) -> (ChildServer, SocketAddr) {
    let python3 = require_program(
        "python3",
        &["/usr/bin/python3"],
        "python3",
        "a Python HTTP server",
    );
    let mut cmd = Command::new(python3);
    cmd.args(["-c", PYTHON_BACKEND_SCRIPT, name]);
    let server = ChildServer::spawn(cmd, &format!("python backend {name}"), PROMPT)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr();
    (server, addr)
}

// ===== nginx =====

/// nginx in the foreground with a prefix directory of its own, on `127.0.0.1` and a free
/// port; stopped on drop, printing its error log when the test is failing. It runs as one
/// process (`master_process off`): killing it, even when the test process dies, leaves no
/// orphaned worker behind.
#[derive(Debug)]
pub struct Nginx {
    child: KillOnDrop,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

// ===== impl Nginx =====

impl Nginx {
    /// Starts nginx with the `server { ... }` blocks (and anything else that goes in `http`)
    /// that `servers(port)` returns: they must listen on `127.0.0.1:port`. The port is one
    /// the kernel had free; when nginx finds it taken meanwhile, another is tried, up to 10
    /// times. Fails the test when nginx is not installed (the `nginx-light` package) or
    /// does not start.
    pub fn start(servers: impl Fn(u16) -> String) -> Nginx {
        let nginx = require_program("nginx", &["/usr/sbin/nginx"], "nginx-light", "nginx");
        let mut errors = String::new();
        for _ in 0..10 {
            let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = tempfile::Builder::new()
                .prefix("proxy-testkit-nginx-")
                .tempdir()
                .expect("a temp dir for nginx");
            let d = dir.path().display();
            let conf = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  \
                 fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n{}\n}}\n",
                servers(port)
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut child = KillOnDrop::spawn(
                Command::new(&nginx)
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&conf_path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap_or_else(|e| panic!("spawn {}: {e}", nginx.display()));
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let deadline = Instant::now() + PROMPT;
            while Instant::now() < deadline {
                if child.try_wait().is_some() {
                    break; // the port was taken meanwhile, or the configuration is wrong
                }
                if TcpStream::connect(addr).is_ok() {
                    return Nginx { child, dir, addr };
                }
                thread::sleep(Duration::from_millis(10));
            }
            child.kill();
            errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start in 10 tries; the last error log:\n{errors}");
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child.kill();
        if thread::panicking() {
            eprintln!("---- nginx error log ----\n{}\n----", self.error_log());
        }
    }
}

/// The headers [`nginx_backend`] reports.
pub const NGINX_BACKEND_HEADERS: &[&str] = &[
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "via",
    "connection",
    "cookie",
    "user-agent",
];

/// nginx as an upstream named `name` (letters, digits, `-`, `_`, `.`): every request gets
/// 200 with `key: value` lines that [`Seen::parse`] reads: `backend`, `method`,
/// `uri` (`$request_uri`), `version`, `connection`, `peer`, `body_bytes` (from
/// `Content-Length`), and `header: NAME: VALUE` for each of [`NGINX_BACKEND_HEADERS`]
/// that is present and not empty (`x-forwarded-for`, `x-forwarded-host`,
/// `x-forwarded-proto` among them).
pub fn nginx_backend(name: &str) -> Nginx {
    let lines = nginx_lines(name);
    Nginx::start(|port| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 100000;\n    \
             location / {{\n      default_type text/plain;\n      return 200 \"{lines}\";\n    }}\n  }}"
        )
    })
}

/// [`nginx_backend`] over TLS: nginx presenting `cert` with `key` (PEM files, an
/// [`Issued`](crate::tls::Issued) certificate, say), offering HTTP/1.1 by ALPN, and
/// closing connections idle for `keepalive_timeout` (nginx's syntax: `75s`). It answers
/// [`nginx_backend`]'s lines, and three more as headers that it did not receive but that
/// tell of the TLS connection: `x-tls-protocol` (`TLSv1.3`), `x-tls-server-name` (what the
/// client asked for by SNI) and `x-tls-alpn` (the protocol agreed by ALPN).
pub fn nginx_tls_backend(name: &str, cert: &Path, key: &Path, keepalive_timeout: &str) -> Nginx {
    let mut lines = nginx_lines(name);
    for (header, variable) in [
        ("x-tls-protocol", "ssl_protocol"),
        ("x-tls-server-name", "ssl_server_name"),
        ("x-tls-alpn", "ssl_alpn_protocol"),
    ] {
        lines.push_str(&format!("header: {header}: ${variable}\\n"));
    }
    let (cert, key) = (cert.display(), key.display());
    Nginx::start(|port| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    \
             keepalive_requests 100000;\n    \
             keepalive_timeout {keepalive_timeout};\n    \
             location / {{\n      default_type text/plain;\n      return 200 \"{lines}\";\n    }}\n  }}"
        )
    })
}

/// The body of [`nginx_backend`]'s answers, as an nginx string.
fn nginx_lines(name: &str) -> String {
    assert!(
        !name.is_empty()
            && (name.chars()).all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "nginx_backend: {name:?} must be letters, digits, `-`, `_` or `.`"
    );
    let mut lines = format!(
        "backend: {name}\\nmethod: $request_method\\nuri: $request_uri\\nversion: $server_protocol\\n\
         connection: $connection\\npeer: $remote_addr:$remote_port\\nbody_bytes: $content_length\\n"
    );
    for h in NGINX_BACKEND_HEADERS {
        lines.push_str(&format!("header: {h}: $http_{}\\n", h.replace('-', "_")));
    }
    lines
}

// ===== WebSocket =====

/// The Python of a venv (`target/py-websockets-venv`) with [`WEBSOCKETS_REQUIREMENT`].
///
/// # Errors
///
/// Why the venv cannot be made, e.g. PyPI out of reach; tests print `skipping: ERROR`.
pub fn websockets_python() -> Result<PathBuf, String> {
    python_venv(
        "py-websockets-venv",
        &[WEBSOCKETS_REQUIREMENT],
        "import websockets.asyncio.server, websockets.asyncio.client",
    )
}

/// A WebSocket echo server ([`WEBSOCKET_ECHO_SCRIPT`], the `websockets` package) on
/// `127.0.0.1` and a port the kernel chose: every message, text or binary, comes back as
/// it was. It prints `open PATH HOST` on stdout for each connection (see
/// [`websocket_opened`]).
///
/// # Errors
///
/// When the venv cannot be made ([`websockets_python`]: tests skip), or the server does not
/// start within [`PROMPT`].
pub fn websocket_echo() -> Result<ChildServer, String> {
    let python = websockets_python()?;
    let mut cmd = Command::new(python);
    cmd.args(["-c", WEBSOCKET_ECHO_SCRIPT]);
    ChildServer::spawn(cmd, "websocket echo", PROMPT)
}

/// The `(path, host)` of each connection a [`websocket_echo`] server has opened so far.
pub fn websocket_opened(server: &ChildServer) -> Vec<(String, String)> {
    (server.stdout().lines())
        .filter_map(|l| {
            let mut words = l.strip_prefix("open ")?.split(' ');
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Runs the Python `websockets` client ([`WEBSOCKET_CLIENT_SCRIPT`]) against `url`
/// (`ws://HOST[:PORT]/PATH`), connecting to `connect_to` instead of the URL's host when
/// given (the URL's host is still the `Host`); it sends `messages` messages, text and
/// binary in turn, and checks each comes back the same. Killed after `limit`.
///
/// # Errors
///
/// Its output when it fails, including when the venv cannot be made (a message starting
/// with `venv: `).
pub fn websocket_client(
    url: &str,
    connect_to: Option<SocketAddr>,
    messages: usize,
    limit: Duration,
) -> Result<String, String> {
    let python = websockets_python().map_err(|e| format!("venv: {e}"))?;
    let mut cmd = Command::new(python);
    cmd.args(["-c", WEBSOCKET_CLIENT_SCRIPT, url, &messages.to_string()]);
    if let Some(to) = connect_to {
        cmd.arg(to.to_string());
    }
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let (status, out, err) = crate::process::run_limited(&mut cmd, limit);
    let output = format!("{out}{err}");
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!("websocket client {url}: {s}\n{output}")),
        None => Err(format!(
            "websocket client {url}: killed after {limit:?}\n{output}"
        )),
    }
}

// ===== blocking clients =====

/// An HTTP/1.x response read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase, e.g. `OK`.
    pub reason: String,
    /// The headers as received: names in their case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
}

// ===== impl Response =====

impl Response {
    /// Parses a whole response: the status line, the headers, and the body framed by
    /// `Transfer-Encoding: chunked`, `Content-Length`, or the end of `raw` (bytes after
    /// the body are ignored; a body of a 1xx, 204 or 304 is empty).
    ///
    /// # Errors
    ///
    /// What is malformed or missing, e.g. a body shorter than its `Content-Length`.
    pub fn parse(raw: &[u8]) -> Result<Response, String> {
        Response::parse_prefix(raw).map(|(response, _)| response)
    }

    /// Parses every response in `raw`, one after the other (pipelined, or kept alive); the
    /// last one's body may run to the end of `raw`.
    ///
    /// # Errors
    ///
    /// What is malformed or missing, with how many responses were read before.
    pub fn parse_many(mut raw: &[u8]) -> Result<Vec<Response>, String> {
        let mut all = Vec::new();
        while !raw.is_empty() {
            let (response, used) = Response::parse_prefix(raw)
                .map_err(|e| format!("after {} responses: {e}", all.len()))?;
            all.push(response);
            raw = &raw[used..];
        }
        Ok(all)
    }

    /// One response from the start of `raw`, and how many bytes it took.
    fn parse_prefix(raw: &[u8]) -> Result<(Response, usize), String> {
        let end = (raw.windows(4))
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.splitn(3, ' ');
        let (version, status) = (words.next().unwrap_or_default(), words.next());
        let status = status
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let reason = words.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .ok_or_else(|| format!("not a header: {l:?}"))?;
                Ok((n.to_owned(), v.trim().to_owned()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        let start = end + 4;
        let rest = &raw[start..];
        if status < 200 || status == 204 || status == 304 {
            return Ok((response, start));
        }
        let chunked = (response.header("transfer-encoding"))
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let used = if chunked {
            let (body, used) = dechunk(rest)?;
            response.body = body;
            used
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("Content-Length {len:?}"))?;
            let body = (rest.get(..len))
                .ok_or_else(|| format!("a body of {} bytes, not {len}", rest.len()))?;
            response.body = body.to_vec();
            len
        } else {
            response.body = rest.to_vec();
            rest.len()
        };
        Ok((response, start + used))
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        values_named(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as an upstream's [`Seen`]; fails the test when it is not one.
    #[track_caller]
    pub fn seen(&self) -> Seen {
        Seen::parse(&self.body).unwrap_or_else(|e| panic!("status {}: {e}", self.status))
    }
}

/// A chunked body's data (trailers skipped), and how many bytes it took.
fn dechunk(raw: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let line_end = |at: usize| {
        (raw.get(at..).unwrap_or_default().windows(2))
            .position(|w| w == b"\r\n")
            .map(|p| at + p)
            .ok_or("a chunked body cut short")
    };
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let eol = line_end(at)?;
        let line = String::from_utf8_lossy(&raw[at..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {line:?}"))?;
        at = eol + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let eol = line_end(at)?;
                let empty = eol == at;
                at = eol + 2;
                if empty {
                    return Ok((body, at));
                }
            }
        }
        let data = raw.get(at..at + size).ok_or("a chunk cut short")?;
        body.extend_from_slice(data);
        at += size;
        if raw.get(at..at + 2) != Some(b"\r\n") {
            return Err("a chunk without its CRLF".to_owned());
        }
        at += 2;
    }
}

/// `GET PATH HTTP/1.1` to `addr` with `Host: HOST` and `Connection: close`, over a plain
/// `TcpStream`, read to the end within [`PROMPT`]. Blocking: from an async test whose
/// runtime also runs the proxy, call it in `tokio::task::spawn_blocking`. Fails the test
/// when the connection fails or the answer is not a whole response.
#[track_caller]
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> Response {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: proxy-testkit\r\nConnection: close\r\n\r\n"
    );
    let (raw, end) = raw_exchange_end(addr, request.as_bytes(), PROMPT);
    Response::parse(&raw).unwrap_or_else(|e| {
        panic!("GET http://{host}{path} via {addr} (connection ended: {end:?}): {e}")
    })
}

/// Writes `request` as it is to `addr`, then reads until the connection ends or `timeout`
/// has passed since it connected; what was read. Blocking, like [`http_get`].
#[track_caller]
pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange_end(addr, request, timeout).0
}

/// [`raw_exchange`] that also says how the connection ended: [`End::Eof`], [`End::Reset`],
/// or `None` when `timeout` passed first. A write the peer refused (a reset before all of
/// `request` was sent) is a reset too. Fails the test when it cannot connect.
#[track_caller]
pub fn raw_exchange_end(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> (Vec<u8>, Option<End>) {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let is_reset = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        )
    };
    stream
        .set_write_timeout(Some(timeout))
        .expect("SO_SNDTIMEO");
    match stream.write_all(request) {
        Ok(()) => {}
        Err(e) if is_reset(&e) => return (Vec::new(), Some(End::Reset)),
        Err(e) if is_timeout(&e) => return (Vec::new(), None),
        Err(e) => panic!("write to {addr}: {e}"),
    }
    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, None);
        }
        stream.set_read_timeout(Some(left)).expect("SO_RCVTIMEO");
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(End::Eof)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_reset(&e) => return (got, Some(End::Reset)),
            Err(e) if is_timeout(&e) => return (got, None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read from {addr}: {e}"),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs a blocking helper such as [`http_get`] on tokio's blocking pool, so an async test
/// whose runtime also runs the proxy does not stall it; a panic in `f` is raised again here.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking task: {e}"),
    }
}

#[cfg(test)]
mod tests;
