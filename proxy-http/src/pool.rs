//! Upstream connections: [`Conn`], one HTTP/1.1 connection that the request using it
//! drives from its own task (no task per connection, no wake-up across tasks per
//! message), [`Wire`], one of the proxy's own path over a plain or TLS [`Stream`], and
//! the [`Pool`] of idle ones kept for the next request, per upstream address: bounded in
//! number and age, newest first.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::body::{Body, Progress};

/// The most idle connections kept per upstream address.
pub(crate) const MAX_IDLE_PER_ADDR: usize = 256;

/// How long an idle connection is kept: under the keep-alive timeouts servers commonly
/// have (nginx 75 s, Node.js 5 s is the odd one: its closes are retried).
pub(crate) const MAX_IDLE_FOR: Duration = Duration::from_secs(55);

/// hyper's side of one connection: reads and writes its bytes when polled, and ends when
/// the connection closes or is upgraded (handing the upgraded I/O over).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One upstream connection: where requests are sent, and the future that moves its
/// bytes, polled by whoever uses the connection ([`Conn::drive`]).
pub(crate) struct Conn {
    sender: SendRequest<Body>,
    driver: Option<Driver>,
    addr: SocketAddr,
}

impl Conn {
    /// A connection to `addr`, from hyper's handshake.
    pub(crate) fn new(
        sender: SendRequest<Body>,
        driver: impl Future<Output = hyper::Result<()>> + Send + 'static,
        addr: SocketAddr,
    ) -> Conn {
        Conn {
            sender,
            driver: Some(Box::pin(driver)),
            addr,
        }
    }

    /// Moves what bytes can move (request out, response in); false once the connection
    /// has ended.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return false;
        };
        let Poll::Ready(result) = driver.as_mut().poll(cx) else {
            return true;
        };
        if let Err(e) = result {
            tracing::debug!(upstream = %self.addr, error = %e, "upstream connection ended");
        }
        self.driver = None;
        false
    }

    /// Waits until a request can be sent: the last response has been read. Fails when
    /// the connection has closed meanwhile.
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Runs `work` (a response on its way, say) while driving the connection.
    pub(crate) async fn alongside<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            self.drive(cx);
            work.as_mut().poll(cx)
        })
        .await
    }

    /// Whether a request can be sent now, as far as hyper knew when last driven.
    pub(crate) fn is_ready(&self) -> bool {
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Where requests go.
    pub(crate) fn sender(&mut self) -> &mut SendRequest<Body> {
        &mut self.sender
    }

    /// Drives the connection until it ends: to finish an upgrade, whose I/O hyper hands
    /// over when its driver ends.
    pub(crate) async fn finish(mut self) {
        poll_fn(|cx| match self.drive(cx) {
            true => Poll::Pending,
            false => Poll::Ready(()),
        })
        .await;
    }
}

/// A connection a [`Pool`] keeps.
pub(crate) trait Pooled {
    /// The upstream address it is to.
    fn addr(&self) -> SocketAddr;
    /// Whether it can take another request (as far as is known without waiting).
    fn is_open(&mut self) -> bool;
    /// The worker thread whose runtime its socket is registered with (0 without
    /// workers), whose requests alone should use it.
    fn worker(&self) -> usize {
        0
    }
}

impl Pooled for Conn {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn is_open(&mut self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// The bytes of an upstream connection of the proxy's own path: the socket, or TLS over
/// it (`upstream_tls`). Each read and write is a match and a direct call: no allocation
/// and no dynamic dispatch, so the plain path pays a branch for TLS and nothing more.
pub(crate) enum Stream {
    Plain(TcpStream),
    /// Boxed: rustls's state is large, and most pooled connections are plain ones.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// Whether an idle connection is still open: no end of stream (nor stray bytes) that
    /// the reactor has seen. Costs no system call while the socket is not readable.
    fn is_idle_open(&mut self) -> bool {
        match self {
            Stream::Plain(s) => matches!(
                s.try_read(&mut [0_u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
            // What came meanwhile is read through TLS, not off the socket (which would
            // take bytes from the TLS records): a session ticket is taken in and the
            // connection stays, a `close_notify`, a FIN or data close it. The reactor
            // keeps the no-op waker only until the connection is next read.
            Stream::Tls(s) => {
                let mut byte = [0_u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(Waker::noop());
                Pin::new(&mut **s).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

/// An upstream connection of the proxy's own HTTP/1.1 path: the stream, and the bytes
/// read from it past the last response (none, between requests).
pub(crate) struct Wire {
    pub(crate) stream: Stream,
    pub(crate) buf: BytesMut,
    pub(crate) addr: SocketAddr,
    /// The worker it was opened on.
    worker: usize,
}

impl Wire {
    /// A new connection to `addr`, opened on `worker`.
    pub(crate) fn new(stream: Stream, addr: SocketAddr, worker: usize) -> Wire {
        Wire {
            stream,
            buf: BytesMut::with_capacity(8 << 10),
            addr,
            worker,
        }
    }
}

impl Pooled for Wire {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn worker(&self) -> usize {
        self.worker
    }

    /// Idle and still open: nothing unread, and no end of stream (or stray bytes) that
    /// the reactor has seen. Costs no system call while the socket is not readable.
    fn is_open(&mut self) -> bool {
        self.buf.is_empty() && self.stream.is_idle_open()
    }
}

/// Idle connections by upstream address, in one shard per worker thread: a worker takes
/// only connections its own runtime drives, from a lock no other thread takes.
pub(crate) struct Pool<C> {
    /// Oldest first. foldhash: the keys are the upstream's addresses, not a client's.
    shards: Box<[Mutex<Idle<C>>]>,
}

type Idle<C> = foldhash::HashMap<SocketAddr, VecDeque<(C, Instant)>>;

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool::new(1)
    }
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl<C> Pool<C> {
    /// A pool for `workers` worker threads (at least one shard).
    pub(crate) fn new(workers: usize) -> Pool<C> {
        Pool {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, worker: usize) -> std::sync::MutexGuard<'_, Idle<C>> {
        self.shards[worker % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Pooled> Pool<C> {
    /// The newest idle connection to `addr` of `worker`'s that is still open, if any;
    /// those past [`MAX_IDLE_FOR`] are dropped on the way.
    pub(crate) fn take(&self, worker: usize, addr: SocketAddr) -> Option<C> {
        let mut idle = self.shard(worker);
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        expire(list, now);
        let taken = loop {
            match list.pop_back() {
                Some((mut conn, _)) => {
                    if conn.is_open() {
                        break Some(conn);
                    }
                }
                None => break None,
            }
        };
        if list.is_empty() {
            idle.remove(&addr);
        }
        taken
    }

    /// Keeps `conn` for the next request to its address, unless it is closed; the
    /// oldest goes when the address has [`MAX_IDLE_PER_ADDR`].
    pub(crate) fn put(&self, mut conn: C) {
        if !conn.is_open() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.shard(conn.worker());
        let list = idle.entry(conn.addr()).or_default();
        expire(list, now);
        if list.len() >= MAX_IDLE_PER_ADDR {
            // The oldest is the likeliest to be closed by the server.
            list.pop_front();
        }
        list.push_back((conn, now));
    }
}

/// Drops the connections idle for [`MAX_IDLE_FOR`] or more (they are oldest first).
fn expire<C>(list: &mut VecDeque<(C, Instant)>, now: Instant) {
    while list
        .front()
        .is_some_and(|(_, since)| now - *since >= MAX_IDLE_FOR)
    {
        list.pop_front();
    }
}

pin_project! {
    /// A response body read from `conn`: it drives the connection as it is read, and
    /// gives the connection back to the pool once the response has ended, if the request
    /// went out whole (else the connection is closed with it).
    pub(crate) struct Driven<B: HttpBody> {
        #[pin]
        inner: B,
        conn: Option<Conn>,
        pool: Arc<Pool<Conn>>,
        request: Arc<Progress>,
    }

    impl<B: HttpBody> PinnedDrop for Driven<B> {
        fn drop(this: Pin<&mut Self>) {
            // Not read to its end: fine when there was nothing to read (the answer to
            // HEAD, a 204, a 304), which servers do not read.
            let this = this.project();
            if let Some(conn) = this.conn.take()
                && this.inner.is_end_stream()
                && this.request.is_complete()
            {
                this.pool.put(conn);
            }
        }
    }
}

impl<B: HttpBody> Driven<B> {
    /// `inner`, the body of a response on `conn`, whose request body reports to `request`.
    pub(crate) fn new(inner: B, conn: Conn, pool: Arc<Pool<Conn>>, request: Arc<Progress>) -> Self {
        Driven {
            inner,
            conn: Some(conn),
            pool,
            request,
        }
    }
}

impl<B: HttpBody> Driven<B> {
    /// The response has ended: the connection goes back, if the request did too.
    fn ended(conn: &mut Option<Conn>, pool: &Pool<Conn>, request: &Progress) {
        if let Some(conn) = conn.take()
            && request.is_complete()
        {
            pool.put(conn);
        }
    }
}

impl<B: HttpBody> HttpBody for Driven<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        if let Some(conn) = this.conn.as_mut() {
            conn.drive(cx);
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            // A body of known length ends with its last byte; its reader may never ask
            // for more.
            Some(Ok(_)) if this.inner.is_end_stream() => {
                Self::ended(this.conn, this.pool, this.request);
            }
            None => Self::ended(this.conn, this.pool, this.request),
            // Cut short: the connection goes with the body.
            Some(Err(_)) => drop(this.conn.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
