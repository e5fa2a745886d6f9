//! The proxy's own HTTP/1.1 path for routed forwards: one client connection served from
//! its own task, heads parsed in place ([`h1::head`](crate::h1::head)) and written for the
//! other side with the proxy's edits, bodies passed through as the bytes they arrived as
//! (lengths counted, chunked framing read by [`Chunked`]), upstream connections (plain
//! or TLS, a [`Stream`]) taken from and given back to the backend's pool. No header map,
//! no per-request task, one timer per connection re-armed only when it fires early.
//!
//! What it answers itself (404, 413, 431, 400, 502, 503, 504) and what it logs and
//! counts are the same as the hyper path's, which still serves the service proxy URL and
//! connectors of the embedder's.
//!
//! The client connection is any stream: a plain socket, or one with TLS terminated
//! (each its own monomorphised copy, so the plain one pays nothing for TLS).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use proxy_core::tls::TlsInfo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

use crate::backend::Backend;
use crate::error::ProxyError;
use crate::h1::chunked::{Chunked, Step};
use crate::h1::head::{
    BodyLength, Edits, RequestHead, ResponseHead, write_request, write_response,
};
use crate::headers::push_ip;
use crate::pool::{Stream, Wire};
use crate::server::{Shared, Stop};
use crate::stats::RouteStats;

/// Far enough to mean never.
const NEVER: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The largest response head taken from an upstream.
const RESPONSE_HEAD_MAX: usize = 64 << 10;

/// Reads go into buffers of at least this much room.
const READ_ROOM: usize = 8 << 10;

/// How long a TLS client connection's close waits for its `close_notify` to go out.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// One timer per connection: re-armed only when it fires before the deadline asked for
/// (activity moved it) or must fire sooner.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Timer {
    fn new() -> Timer {
        let at = Instant::now() + NEVER;
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            armed: at,
        }
    }

    /// Waits until `at` has passed.
    async fn passed(&mut self, at: Instant) {
        if at < self.armed {
            self.sleep.as_mut().reset(at);
            self.armed = at;
        }
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= at {
                return;
            }
            self.sleep.as_mut().reset(at);
            self.armed = at;
        }
    }
}

/// A [`Stop`] signal watched by one connection. Its cancellation future registers the
/// connection's waker once; after that it is polled again only when the flag says the
/// signal came (each poll of the future takes a lock shared by every connection).
struct Watch<'a> {
    stop: &'a Stop,
    wait: Pin<Box<WaitForCancellationFuture<'a>>>,
    registered: bool,
}

impl<'a> Watch<'a> {
    fn new(stop: &'a Stop) -> Watch<'a> {
        Watch {
            stop,
            wait: Box::pin(stop.token.cancelled()),
            registered: false,
        }
    }

    /// Waits for the signal.
    async fn given(&mut self) {
        std::future::poll_fn(|cx| {
            if self.registered && !self.stop.is_given() {
                return std::task::Poll::Pending;
            }
            self.registered = true;
            self.wait.as_mut().poll(cx)
        })
        .await;
    }
}

/// What follows one exchange on the client connection.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// How one exchange ended, for the log and the counters.
struct Outcome {
    status: u16,
    /// Request body bytes sent upstream, response body bytes sent to the client.
    bytes: (u64, u64),
    upstream: Option<SocketAddr>,
    complete: bool,
}

/// One client connection, over the stream `S`.
struct Client<S> {
    stream: S,
    peer: SocketAddr,
    /// What its TLS handshake agreed on, when the proxy terminated TLS.
    tls: Option<TlsInfo>,
    /// The worker thread it runs on: upstream connections are taken from its share.
    worker: usize,
    buf: BytesMut,
    /// Heads written for the other side.
    out: Vec<u8>,
    head: RequestHead,
    response: ResponseHead,
    timer: Timer,
    /// The last time bytes moved, for the idle timeout.
    last: Instant,
    /// The idle timeout (or never).
    idle: Duration,
    forwarding: Forwarding,
}

/// Serves the client connection `stream` from `peer` until it closes, idles out, or the
/// forwarder drains; `worker` is the thread it runs on (0 without workers), `tls` what
/// its TLS handshake agreed on when the proxy terminated TLS.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: proxy_core::Admitted,
    worker: usize,
    tls: Option<TlsInfo>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let https = tls.is_some();
    let mut client = Client {
        stream,
        peer,
        tls,
        worker,
        buf: BytesMut::with_capacity(READ_ROOM),
        out: Vec::with_capacity(4 << 10),
        head: RequestHead::default(),
        response: ResponseHead::default(),
        timer: Timer::new(),
        last: Instant::now(),
        idle: NEVER,
        forwarding: Forwarding::new(peer.ip(), https),
    };
    let mut closing = Watch::new(&shared.closing);
    let mut draining = Watch::new(&shared.draining);
    loop {
        let next = tokio::select! {
            biased;
            () = closing.given() => Next::Close,
            next = client.exchange(&shared, &mut draining) => next,
        };
        if matches!(next, Next::Close) || shared.draining.is_given() {
            break;
        }
    }
    if https && !shared.closing.is_given() {
        // TLS says it ends (`close_notify`), so that the client can tell the close from
        // a cut; a plain socket closes with a FIN when dropped, with no call of its own.
        let wait = Instant::now() + CLOSE_NOTIFY_WAIT;
        tokio::select! {
            _ = client.stream.shutdown() => {}
            () = client.timer.passed(wait) => {}
        }
    }
    drop(client);
    drop(admitted);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one request and answers it.
    async fn exchange(&mut self, shared: &Shared, draining: &mut Watch<'_>) -> Next {
        let (idle, header_timeout, max_size) = {
            let current = shared.current();
            if current.service.is_some() {
                // A reload made this forward a service proxy: the hyper path serves
                // it, on the client's next connection.
                return Next::Close;
            }
            let spec = &current.spec;
            (
                spec.idle_timeout,
                spec.header_timeout.unwrap_or(NEVER),
                spec.max_header_size,
            )
        };
        self.idle = idle.unwrap_or(NEVER);
        if !self
            .read_head(shared, draining, header_timeout, max_size)
            .await
        {
            return Next::Close;
        }
        // Settings as they are now: a reload while the connection idled applies.
        let generation = shared.current();
        let start = Instant::now();
        let raw = self.buf.split_to(self.head.len).freeze();
        let head = &self.head;
        if let Some(why) = bad_host(head, &raw) {
            let body = !matches!(head.body, BodyLength::Empty);
            self.answer(
                &ProxyError::BadRequest(why),
                &shared.unrouted,
                start,
                &raw,
                None,
                body,
            )
            .await;
            return Next::Close;
        }
        let host = head
            .host
            .map(|h| h.get(&raw))
            .and_then(|h| std::str::from_utf8(h).ok());
        let path = std::str::from_utf8(head.path.get(&raw)).unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        let Some(route) = generation.router.route(host, path) else {
            let close = !matches!(head.body, BodyLength::Empty) || !head.keep_alive();
            self.answer(
                &ProxyError::NoRoute,
                &shared.unrouted,
                start,
                &raw,
                None,
                close,
            )
            .await;
            return if close { Next::Close } else { Next::KeepAlive };
        };
        let (backend, stats) = (route.backend.clone(), route.stats.clone());
        let route_name = route.name.clone();
        drop(generation);
        let draining = shared.draining.is_given();
        let outcome = self.forward(&backend, &stats, start, &raw, draining).await;
        let (outcome, next) = match outcome {
            Ok(done) => done,
            Err((error, close)) => {
                let close = close || !self.head.keep_alive() || draining;
                let status = error.status().as_u16();
                if let ProxyError::Upstream(why) = &error {
                    tracing::warn!(client = %self.peer, upstream = %backend.name(), error = %why, "upstream failed");
                }
                stats.answered(status, start.elapsed());
                self.answer_only(&error, close).await;
                let outcome = Outcome {
                    status,
                    bytes: (0, 0),
                    upstream: None,
                    complete: true,
                };
                (outcome, if close { Next::Close } else { Next::KeepAlive })
            }
        };
        stats.bytes(outcome.bytes.0, outcome.bytes.1);
        let upstream = UpstreamOf(outcome.upstream, &backend);
        log_line(&self.logged(&raw), &route_name, &outcome, start, &upstream);
        next
    }

    /// Reads until a whole request head is in the buffer and parsed. False when the
    /// connection is to close: the client went away or idled out, the forwarder drains,
    /// the head took longer than `header_timeout`, or it was refused (and answered).
    async fn read_head(
        &mut self,
        shared: &Shared,
        draining: &mut Watch<'_>,
        header_timeout: Duration,
        max_size: usize,
    ) -> bool {
        let mut started: Option<Instant> = None;
        // Bytes looked at for the head's end: a head is parsed once it may be whole (or
        // too large), not again at every read of a slow client.
        let mut scanned = 0;
        loop {
            // Heads mostly come whole in one read: parsed at once.
            let may_be_whole =
                scanned == 0 || head_may_end(&self.buf, scanned) || self.buf.len() >= max_size;
            scanned = self.buf.len();
            if !self.buf.is_empty() && !may_be_whole {
                started.get_or_insert_with(Instant::now);
            } else if !self.buf.is_empty() {
                match self.head.parse(&self.buf, max_size) {
                    Ok(true) => return true,
                    Ok(false) => {
                        started.get_or_insert_with(Instant::now);
                    }
                    Err(e) => {
                        let error = match e.status() {
                            431 => ProxyError::HeadTooLarge,
                            501 => ProxyError::NotImplemented(e.to_string()),
                            _ => ProxyError::Malformed(e.to_string()),
                        };
                        shared
                            .unrouted
                            .answered(error.status().as_u16(), Duration::ZERO);
                        self.answer_only(&error, true).await;
                        return false;
                    }
                }
            }
            let deadline = match started {
                Some(at) => at + header_timeout,
                None => self.last + self.idle,
            };
            make_room(&mut self.buf);
            let read = tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => read,
                () = draining.given(), if started.is_none() => return false,
                () = self.timer.passed(deadline) => return false,
            };
            match read {
                Ok(0) | Err(_) => return false,
                Ok(_) => self.last = Instant::now(),
            }
        }
    }

    /// Sends the request upstream and its answer back.
    async fn forward(
        &mut self,
        backend: &Backend,
        stats: &RouteStats,
        start: Instant,
        raw: &[u8],
        draining: bool,
    ) -> Result<(Outcome, Next), (ProxyError, bool)> {
        let head = &self.head;
        let has_body = !matches!(head.body, BodyLength::Empty);
        if let (Some(limit), BodyLength::Length(n)) = (backend.max_request_body, head.body)
            && n > limit
        {
            return Err((ProxyError::TooLarge(limit), true));
        }
        let sticky = backend
            .sticky_cookie
            .as_deref()
            .and_then(|name| cookie(head, raw, name));
        let upgrade = head.connection.upgrade && head.upgrade.is_some();
        let is_head = head.method.get(raw) == b"HEAD";
        let idempotent = is_idempotent(head.method.get(raw));
        self.out.clear();
        self.forwarding
            .write_head(&mut self.out, head, raw, upgrade);
        let (mut wire, mut reused) = backend
            .wire(self.worker, self.peer.ip(), sticky.as_deref())
            .await
            .map_err(|e| (e, has_body))?;
        let addr = wire.addr;
        let open = backend.upstream().map(|u| u.open(addr));
        let mut retries = backend.retries;
        // The request goes out; a bodiless idempotent one on a kept-alive connection that
        // the upstream closed meanwhile is sent again on a new one.
        let mut upload;
        loop {
            let result = self
                .send_request(&mut wire, backend, has_body, is_head)
                .await;
            match result {
                Ok(sending) => {
                    upload = sending;
                    break;
                }
                Err(SendError::Closed) if reused && retries > 0 && !has_body && idempotent => {
                    retries -= 1;
                    tracing::debug!(upstream = %addr, "kept-alive upstream connection closed; sending again");
                    wire = backend
                        .fresh_wire(self.worker, self.peer.ip(), addr)
                        .await
                        .map_err(|e| (e, false))?;
                    reused = false;
                }
                Err(SendError::Closed) => {
                    report_failure(backend, addr, reused);
                    return Err((
                        ProxyError::Upstream("the connection closed before a response".to_owned()),
                        has_body,
                    ));
                }
                Err(SendError::Client) => {
                    return Err((
                        ProxyError::Upstream("the client's request body failed".to_owned()),
                        true,
                    ));
                }
                Err(SendError::Timeout) => return Err((ProxyError::Timeout, has_body)),
                Err(SendError::TooLarge(limit)) => return Err((ProxyError::TooLarge(limit), true)),
                Err(SendError::Bad(why)) => {
                    report_failure(backend, addr, false);
                    return Err((ProxyError::Upstream(why), has_body));
                }
            }
        }
        // The response head is in `self.response`, its bytes at the start of wire.buf.
        let status = self.response.status;
        stats.answered(status, start.elapsed());
        let set_cookie = backend.set_cookie(addr, sticky.as_deref());
        // HTTP/1.0 clients are answered once (keeping them alive would take a
        // `Connection: keep-alive` of the proxy's own).
        // The client's connection outlives the upstream's when the answer has a length
        // (an HTTP/1.0 upstream closes after each answer).
        let keep_alive = self.head.keep_alive()
            && !draining
            && self.head.minor_version == 1
            && self.response.body != BodyLength::UntilClose
            && status != 101;
        let cookie_line;
        let mut add: Vec<(&str, &[u8])> = Vec::new();
        if let (Some(name), Some(value)) = (&backend.sticky_cookie, &set_cookie) {
            cookie_line = format!("{name}={value}; Path=/; HttpOnly");
            add.push(("set-cookie", cookie_line.as_bytes()));
        }
        self.response_head(
            &mut wire.buf,
            &Edits {
                remove: &[],
                add: &add,
                upgrade: status == 101,
                close: !keep_alive,
            },
        );
        if status == 101 {
            let bytes = self.upgrade(wire).await;
            drop(open);
            let outcome = Outcome {
                status,
                bytes,
                upstream: Some(addr),
                complete: true,
            };
            return Ok((outcome, Next::Close));
        }
        let body = self.response.body;
        let (sent, complete) = self.relay_response(&mut wire, body, &mut upload).await;
        drop(open);
        let complete = complete && upload.done;
        let upstream_reusable = complete && self.response.keep_alive() && wire.buf.is_empty();
        if upstream_reusable {
            backend.wires().put(wire);
        }
        let outcome = Outcome {
            status,
            bytes: (upload.framing.data_len(), sent),
            upstream: Some(addr),
            complete,
        };
        let next = if keep_alive && complete {
            Next::KeepAlive
        } else {
            Next::Close
        };
        Ok((outcome, next))
    }

    /// Writes the request head (in `self.out`) and its body upstream, and reads until a
    /// final response head is parsed into `self.response` (1xx ones are passed to the
    /// client on the way). The request body's bytes, and whether all of it went out.
    async fn send_request(
        &mut self,
        wire: &mut Wire,
        backend: &Backend,
        has_body: bool,
        is_head: bool,
    ) -> Result<Upload, SendError> {
        let mut upload = Upload {
            framing: Framing::new(self.head.body),
            done: !has_body,
            dropped: false,
            limit: backend.max_request_body,
        };
        if has_body {
            // Bytes of the body read with the head go out with it, in one write.
            let (take, finished) = upload.framing.take(&self.buf).map_err(SendError::Bad)?;
            upload.check_limit()?;
            self.out.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            upload.done = finished;
        }
        if self.out_to(&mut wire.stream).await.is_err() {
            return Err(SendError::Closed);
        }
        let request_timeout = backend.request_timeout.unwrap_or(NEVER);
        let mut sent_at = Instant::now();
        // Whether the upstream sent anything: a close before that may be a kept-alive
        // connection's, and the request may go again.
        let mut heard = false;
        loop {
            // A response head may be in already.
            if !wire.buf.is_empty() {
                heard = true;
                match self.response.parse(&wire.buf, RESPONSE_HEAD_MAX, is_head) {
                    Ok(true) => {
                        let status = self.response.status;
                        if (100..200).contains(&status) && status != 101 {
                            // 100 Continue and friends: to the client, and read on.
                            self.response_head(&mut wire.buf, &Edits::default());
                            if self.out_to_client().await.is_err() {
                                return Err(SendError::Client);
                            }
                            continue;
                        }
                        return Ok(upload);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(SendError::Bad(format!("a malformed response head: {e}")));
                    }
                }
            }
            make_room(&mut wire.buf);
            make_room(&mut self.buf);
            let deadline = sent_at + request_timeout;
            tokio::select! {
                biased;
                read = wire.stream.read_buf(&mut wire.buf) => match read {
                    Ok(0) | Err(_) if !heard => return Err(SendError::Closed),
                    Ok(0) | Err(_) => return Err(SendError::Bad("the connection closed in the response head".to_owned())),
                    Ok(_) => {}
                },
                read = self.stream.read_buf(&mut self.buf), if !upload.done => {
                    match read {
                        Ok(0) | Err(_) => return Err(SendError::Client),
                        Ok(_) => self.last = Instant::now(),
                    }
                    upload.pass(&mut self.buf, &mut wire.stream, &mut self.timer, self.idle).await?;
                    // The response is waited for from the request's end.
                    sent_at = Instant::now();
                }
                () = self.timer.passed(deadline) => return Err(SendError::Timeout),
            }
        }
    }

    /// Passes the response body to the client: the head is in `self.out`, the body's
    /// first bytes may be in `wire.buf`. The bytes sent, and whether the body ended whole.
    async fn relay_response(
        &mut self,
        wire: &mut Wire,
        body: BodyLength,
        upload: &mut Upload,
    ) -> (u64, bool) {
        let mut framing = Framing::new(body);
        let (take, mut done) = match framing.take(&wire.buf) {
            Ok(t) => t,
            Err(_) => return (0, false),
        };
        // Head and the first bytes in one write.
        self.out.extend_from_slice(&wire.buf[..take]);
        wire.buf.advance(take);
        if self.out_to_client().await.is_err() {
            return (framing.data_len(), false);
        }
        self.last = Instant::now();
        while !done {
            make_room(&mut wire.buf);
            let deadline = self.last + self.idle;
            let read = tokio::select! {
                biased;
                read = wire.stream.read_buf(&mut wire.buf) => read,
                // The rest of the request body, for an upstream that answers as it
                // reads (an echo).
                read = self.stream.read_buf(&mut self.buf), if !upload.done && !upload.dropped => {
                    match read {
                        Ok(0) | Err(_) => return (framing.data_len(), false),
                        Ok(_) => self.last = Instant::now(),
                    }
                    // An upstream that answered (413, say) and stopped reading: the rest
                    // of the body goes nowhere, the answer still goes to the client, and
                    // both connections close after it.
                    if upload.pass(&mut self.buf, &mut wire.stream, &mut self.timer, self.idle).await.is_err() {
                        upload.dropped = true;
                    }
                    continue;
                }
                () = self.timer.passed(deadline) => return (framing.data_len(), false),
            };
            match read {
                Ok(0) if matches!(body, BodyLength::UntilClose) => {
                    return (framing.data_len(), true);
                }
                Ok(0) | Err(_) => return (framing.data_len(), false),
                Ok(_) => {}
            }
            let (take, finished) = match framing.take(&wire.buf) {
                Ok(t) => t,
                Err(_) => return (framing.data_len(), false),
            };
            if write_within(
                &mut self.stream,
                &wire.buf[..take],
                &mut self.timer,
                Instant::now() + self.idle,
            )
            .await
            .is_err()
            {
                return (framing.data_len(), false);
            }
            self.last = Instant::now();
            wire.buf.advance(take);
            done = finished;
        }
        (framing.data_len(), true)
    }

    /// Relays bytes both ways after a 101 (the head is in `self.out`) until both sides
    /// are done; the byte counts.
    async fn upgrade(&mut self, mut wire: Wire) -> (u64, u64) {
        self.out.extend_from_slice(&wire.buf);
        wire.buf.clear();
        if self.out_to_client().await.is_err() {
            return (0, 0);
        }
        if !self.buf.is_empty() {
            if write_within(
                &mut wire.stream,
                &self.buf,
                &mut self.timer,
                Instant::now() + self.idle,
            )
            .await
            .is_err()
            {
                return (0, 0);
            }
            self.buf.clear();
        }
        tokio::io::copy_bidirectional(&mut self.stream, &mut wire.stream)
            .await
            .unwrap_or((0, 0))
    }

    /// Answers the request with `error` (counted under `stats`, logged), closing after
    /// it when `close`.
    async fn answer(
        &mut self,
        error: &ProxyError,
        stats: &RouteStats,
        start: Instant,
        raw: &[u8],
        upstream: Option<SocketAddr>,
        close: bool,
    ) {
        // Counted before it is written: whoever reads the counters after the answer
        // finds it there.
        stats.answered(error.status().as_u16(), start.elapsed());
        self.answer_only(error, close).await;
        tracing::debug!(client = %self.peer, error = %error, "answered by the proxy");
        let outcome = Outcome {
            status: error.status().as_u16(),
            bytes: (0, 0),
            upstream,
            complete: true,
        };
        log_line(&self.logged(raw), "-", &outcome, start, &"-");
    }

    /// The request whose head is in `raw`, for the access log.
    fn logged<'a>(&'a self, raw: &'a [u8]) -> Logged<'a> {
        Logged {
            peer: self.peer,
            tls: self.tls.as_ref(),
            head: &self.head,
            raw,
        }
    }

    /// Writes the response head at the start of `buf` (parsed into `self.response`)
    /// into `self.out` with `edits`, and takes it off `buf`.
    fn response_head(&mut self, buf: &mut BytesMut, edits: &Edits<'_>) {
        let len = self.response.len;
        self.out.clear();
        write_response(&mut self.out, &self.response, &buf[..len], edits);
        buf.advance(len);
    }

    /// Writes `self.out` to the client.
    async fn out_to_client(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + self.idle;
        write_within(&mut self.stream, &self.out, &mut self.timer, deadline).await
    }

    /// Writes `self.out` to `upstream`.
    async fn out_to(&mut self, upstream: &mut Stream) -> std::io::Result<()> {
        let deadline = Instant::now() + self.idle;
        write_within(upstream, &self.out, &mut self.timer, deadline).await
    }

    /// Writes the answer to `error`.
    async fn answer_only(&mut self, error: &ProxyError, close: bool) {
        self.out.clear();
        error.write_to(&mut self.out, close);
        let _ = self.out_to_client().await;
    }
}

/// Makes room in `buf` for a read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM / 2 {
        buf.reserve(READ_ROOM);
    }
}

/// Writes all of `bytes` and flushes them, unless nothing moves until `deadline` (a peer
/// that stopped reading). The flush sends what TLS may hold back; a socket's does
/// nothing.
async fn write_within<W: AsyncWrite + Unpin>(
    stream: &mut W,
    bytes: &[u8],
    timer: &mut Timer,
    deadline: Instant,
) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    tokio::select! {
        biased;
        written = write => written,
        () = timer.passed(deadline) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// How sending a request failed.
enum SendError {
    /// The upstream closed (or reset) before a byte of a response: on a kept-alive
    /// connection, the request may be sent again.
    Closed,
    /// The client went away, or its body broke off.
    Client,
    /// No response head within `request_timeout`.
    Timeout,
    /// The request body grew past `max_request_body`.
    TooLarge(u64),
    /// Anything else the upstream did wrong.
    Bad(String),
}

/// A request body on its way upstream.
struct Upload {
    framing: Framing,
    /// All of it went.
    done: bool,
    /// The upstream stopped taking it (it answered already).
    dropped: bool,
    /// `max_request_body`.
    limit: Option<u64>,
}

impl Upload {
    fn check_limit(&self) -> Result<(), SendError> {
        match self.limit {
            Some(limit) if self.framing.data_len() > limit => Err(SendError::TooLarge(limit)),
            _ => Ok(()),
        }
    }

    /// Sends the body's bytes at the start of `buf` upstream (those of a next request
    /// stay).
    async fn pass(
        &mut self,
        buf: &mut BytesMut,
        upstream: &mut Stream,
        timer: &mut Timer,
        idle: Duration,
    ) -> Result<(), SendError> {
        let (take, finished) = self.framing.take(buf).map_err(SendError::Bad)?;
        self.check_limit()?;
        if take > 0
            && write_within(upstream, &buf[..take], timer, Instant::now() + idle)
                .await
                .is_err()
        {
            return Err(SendError::Bad(
                "the connection closed while the request body went out".to_owned(),
            ));
        }
        buf.advance(take);
        self.done = finished;
        Ok(())
    }
}

/// Where a body ends, as its bytes go by, and how many data bytes it carried (framing
/// not counted).
struct Framing {
    kind: Kind,
    data: u64,
}

enum Kind {
    Remaining(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Framing {
    fn new(body: BodyLength) -> Framing {
        let kind = match body {
            BodyLength::Empty => Kind::Remaining(0),
            BodyLength::Length(n) => Kind::Remaining(n),
            BodyLength::Chunked => Kind::Chunked(Chunked::new(16 << 10)),
            BodyLength::UntilClose => Kind::UntilClose,
        };
        Framing { kind, data: 0 }
    }

    /// Of `buf`, the bytes that belong to the body, and whether the body ends with them.
    fn take(&mut self, buf: &[u8]) -> Result<(usize, bool), String> {
        match &mut self.kind {
            Kind::Remaining(n) => {
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                self.data += take;
                Ok((take as usize, *n == 0))
            }
            Kind::Chunked(c) => {
                let step = c
                    .feed(buf)
                    .map_err(|e| format!("bad chunked framing: {e}"))?;
                self.data = c.data_len();
                match step {
                    Step::More(n) => Ok((n, false)),
                    Step::Done(n) => Ok((n, true)),
                }
            }
            Kind::UntilClose => {
                self.data += buf.len() as u64;
                Ok((buf.len(), false))
            }
        }
    }

    /// The body's data bytes so far.
    fn data_len(&self) -> u64 {
        self.data
    }
}

/// Whether a head's end (an empty line) may be in `buf`, looking from a little before
/// `from` (the bytes before were looked at already).
fn head_may_end(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    let tail = &buf[start.min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Why an HTTP/1.1 request's `Host` is refused, if it is (RFC 9112 §3.2): none, or several.
fn bad_host(head: &RequestHead, raw: &[u8]) -> Option<&'static str> {
    let hosts = head.host_count(raw);
    (hosts > 1 || (hosts == 0 && head.host.is_none() && head.minor_version == 1))
        .then_some("an HTTP/1.1 request needs one Host header")
}

/// Methods a request may be sent twice with (RFC 9110 §9.2.2).
fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

fn report_failure(backend: &Backend, addr: SocketAddr, reused: bool) {
    if !reused && let Some(u) = backend.upstream() {
        u.report(addr, false);
    }
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie(head: &RequestHead, raw: &[u8], name: &str) -> Option<String> {
    head.values(raw, "cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// The forwarded headers' text, in buffers kept for the connection's life.
struct Forwarding {
    /// The client's address as text (once per connection).
    ip: String,
    ipv6: bool,
    /// `http`, or `https` over TLS.
    proto: &'static [u8],
    xff: Vec<u8>,
    forwarded: Vec<u8>,
}

impl Forwarding {
    fn new(client: IpAddr, https: bool) -> Forwarding {
        let ip = client.to_canonical();
        let mut text = String::with_capacity(40);
        push_ip(&mut text, ip);
        Forwarding {
            ip: text,
            ipv6: ip.is_ipv6(),
            proto: if https { b"https" } else { b"http" },
            xff: Vec::with_capacity(64),
            forwarded: Vec::with_capacity(96),
        }
    }

    /// Writes the request head for the upstream: the client's, with the forwarded
    /// headers (`X-Forwarded-For` appended to, `Forwarded` added to, `X-Forwarded-Host`
    /// and `-Proto` set).
    fn write_head(&mut self, out: &mut Vec<u8>, head: &RequestHead, raw: &[u8], upgrade: bool) {
        self.xff.clear();
        for prior in head.values(raw, "x-forwarded-for") {
            let prior = prior.trim_ascii();
            if !prior.is_empty() {
                self.xff.extend_from_slice(prior);
                self.xff.extend_from_slice(b", ");
            }
        }
        self.xff.extend_from_slice(self.ip.as_bytes());
        let host = head.host.map(|h| h.get(raw));
        let f = &mut self.forwarded;
        f.clear();
        f.extend_from_slice(b"for=");
        if self.ipv6 {
            f.extend_from_slice(b"\"[");
            f.extend_from_slice(self.ip.as_bytes());
            f.extend_from_slice(b"]\"");
        } else {
            f.extend_from_slice(self.ip.as_bytes());
        }
        if let Some(host) = host {
            f.extend_from_slice(b";host=");
            push_token_or_quoted(f, host);
        }
        f.extend_from_slice(b";proto=");
        f.extend_from_slice(self.proto);
        let absolute = head.target.get(raw).first() != Some(&b'/');
        let mut add: [(&str, &[u8]); 5] = [("", b""); 5];
        add[0] = ("x-forwarded-for", &self.xff);
        add[1] = ("forwarded", &self.forwarded);
        add[2] = ("x-forwarded-proto", self.proto);
        let mut n = 3;
        if let Some(host) = host {
            add[n] = ("x-forwarded-host", host);
            n += 1;
            if absolute {
                add[n] = ("host", host);
                n += 1;
            }
        }
        let path = head.path.get(raw);
        let path: &[u8] = if path.is_empty() { b"/" } else { path };
        let remove: &[&str] = if absolute {
            &[
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "host",
            ]
        } else {
            &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]
        };
        let edits = Edits {
            remove,
            add: &add[..n],
            upgrade,
            close: false,
        };
        write_request(out, head, raw, path, &edits);
    }
}

/// A `Forwarded` value: as a token when it is one, else quoted (RFC 7239 §4).
fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !value.is_empty() && value.iter().all(is_token) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for part in value.split_inclusive(|&b| b == b'"' || b == b'\\') {
        match part.split_last() {
            Some((&last, rest)) if last == b'"' || last == b'\\' => {
                out.extend_from_slice(rest);
                out.push(b'\\');
                out.push(last);
            }
            _ => out.extend_from_slice(part),
        }
    }
    out.push(b'"');
}

/// The upstream as the access log names it: the address that answered, else the
/// backend's target.
struct UpstreamOf<'a>(Option<SocketAddr>, &'a Backend);

impl std::fmt::Display for UpstreamOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str(&self.1.name()),
        }
    }
}

/// What the access log says of a request and its client connection.
struct Logged<'a> {
    peer: SocketAddr,
    /// With TLS: its version, the server name asked for and the client certificate's CN.
    tls: Option<&'a TlsInfo>,
    head: &'a RequestHead,
    /// The head's bytes.
    raw: &'a [u8],
}

/// Writes the access-log line of one exchange.
fn log_line(
    request: &Logged<'_>,
    route: &str,
    outcome: &Outcome,
    start: Instant,
    upstream: &dyn std::fmt::Display,
) {
    let Logged {
        peer,
        tls,
        head,
        raw,
    } = *request;
    let text = |s: crate::h1::head::Span| std::str::from_utf8(s.get(raw)).unwrap_or("-");
    tracing::info!(
        target: "proxy_http::access",
        client = %peer,
        method = %text(head.method),
        host = head.host.map_or("-", text),
        path = text(head.path),
        status = outcome.status,
        bytes_in = outcome.bytes.0,
        bytes_out = outcome.bytes.1,
        duration_ms = start.elapsed().as_micros() as f64 / 1000.0,
        route = route,
        upstream = %upstream,
        complete = outcome.complete,
        tls = tls.map(|t| t.version),
        sni = tls.and_then(|t| t.server_name.as_deref()),
        client_cn = tls.and_then(|t| t.client_cn.as_deref()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_values_are_tokens_or_quoted_with_escapes() {
        let quoted = |v: &[u8]| {
            let mut out = Vec::new();
            push_token_or_quoted(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(quoted(b"shop.example"), "shop.example");
        assert_eq!(quoted(b"shop.example:8080"), "\"shop.example:8080\"");
        assert_eq!(quoted(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted(b""), "\"\"");
    }

    #[test]
    fn a_head_may_end_only_at_an_empty_line() {
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        assert!(head_may_end(b"GET / HTTP/1.1\n\n", 0));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        // The end straddles what was looked at before and what came since.
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 25));
    }
}
