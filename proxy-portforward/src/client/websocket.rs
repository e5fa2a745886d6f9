//! Port-forward over a WebSocket: [`ChannelStream`] (the channel protocol, one port per
//! WebSocket) and [`SpdySession::tunnel`] (SPDY/3.1 in the WebSocket's binary messages).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{SpdySession, SpdySessionBuilder};
use crate::channel::{ClientEvent, ClientMux, Protocol, Stream as Channel};
use crate::forward::{MAX_DATA_PER_MESSAGE, WebSocketBytes, io_error};

// ===== impl SpdySession =====

impl SpdySession {
    /// Starts a session with the defaults on a WebSocket whose server chose
    /// `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+'s tunnel): SPDY/3.1 in its binary
    /// messages, through [`WebSocketBytes`].
    pub fn tunnel<S>(ws: WebSocketStream<S>) -> SpdySession
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        SpdySession::new(WebSocketBytes::new(ws))
    }
}

// ===== impl SpdySessionBuilder =====

impl SpdySessionBuilder {
    /// Starts the session on a WebSocket whose server chose a tunnel protocol
    /// (`SPDY/3.1+portforward.k8s.io`, or [`udp::TUNNEL_PROTOCOL`](crate::udp::TUNNEL_PROTOCOL)
    /// given to [`protocol`](Self::protocol)), as [`SpdySession::tunnel`].
    pub fn tunnel<S>(self, ws: WebSocketStream<S>) -> SpdySession
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.start(WebSocketBytes::new(ws))
    }
}

/// One forwarded connection over a WebSocket speaking the channel protocol for a single
/// port (`?ports=PORT`): channel 0 carries the data both ways, channel 1 the node's error
/// text.
///
/// - Reads return the pod's bytes, then EOF when the WebSocket closes (or, with
///   `v5.channel.k8s.io`, when the node closes the data channel). Error text from the node
///   makes reads fail with an error of kind `Other` carrying it.
/// - Writes send one message per write (at most [`MAX_DATA_PER_MESSAGE`] bytes).
/// - [`AsyncWrite::poll_shutdown`] half-closes with `v5.channel.k8s.io` (the close signal
///   for channel 0; reading goes on); the v4 protocols have no half-close, so it closes
///   the WebSocket, which ends reading too.
///
/// # Examples
///
/// ```no_run
/// use proxy_portforward::channel::Protocol;
/// use proxy_portforward::client::{ChannelStream, upgrade_websocket};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8001").await?;
/// let path = "/api/v1/namespaces/default/pods/web/portforward?ports=80";
/// let (ws, chosen) = upgrade_websocket(tcp, path, &["v4.channel.k8s.io"], &[]).await?;
/// let protocol = Protocol::from_name(&chosen).ok_or("an unknown protocol")?;
/// let mut stream = ChannelStream::connect(ws, protocol, 80).await?;
/// stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
/// # Ok(())
/// # }
/// ```
pub struct ChannelStream<S> {
    ws: WebSocketStream<S>,
    mux: ClientMux,
    protocol: Protocol,
    unread: Bytes,
    error: Option<String>,
    eof: bool,
    shut: bool,
    /// The task of a write that is waiting for the socket. The WebSocket keeps one waker
    /// for its writing side: when a read (on another task, after `tokio::io::split`)
    /// flushes, its waker replaces this one, so the read wakes the writer once the
    /// flush is done.
    writer: Option<Waker>,
}

impl<S> fmt::Debug for ChannelStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelStream")
            .field("protocol", &self.protocol)
            .field("eof", &self.eof)
            .field("shut", &self.shut)
            .finish_non_exhaustive()
    }
}

fn protocol_error(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

// ===== impl ChannelStream =====

impl<S> ChannelStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Takes a WebSocket upgraded with `protocol` (the name the server chose:
    /// [`Protocol::from_name`]) for `?ports=port`, and waits for the node's port prefixes
    /// on both channels.
    ///
    /// # Errors
    ///
    /// The WebSocket fails or closes first, or the node sends a wrong prefix or error
    /// text.
    pub async fn connect(
        ws: WebSocketStream<S>,
        protocol: Protocol,
        port: u16,
    ) -> io::Result<Self> {
        let mux = ClientMux::new(vec![port], protocol).map_err(protocol_error)?;
        let mut stream = ChannelStream {
            ws,
            mux,
            protocol,
            unread: Bytes::new(),
            error: None,
            eof: false,
            shut: false,
            writer: None,
        };
        let (mut data, mut error) = (false, false);
        while !(data && error) {
            let bytes = match stream.ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) => Bytes::from(t),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the WebSocket closed before the port prefixes",
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(io_error(e)),
            };
            match stream.mux.receive(&bytes).map_err(protocol_error)? {
                ClientEvent::Ready {
                    stream: Channel::Data,
                    ..
                } => data = true,
                ClientEvent::Ready {
                    stream: Channel::Error,
                    ..
                } => error = true,
                ClientEvent::Error { message, .. } => return Err(io::Error::other(message)),
                ClientEvent::Data { payload, .. } => {
                    let mut unread = std::mem::take(&mut stream.unread).to_vec();
                    unread.extend_from_slice(&payload);
                    stream.unread = Bytes::from(unread);
                }
                ClientEvent::Closed {
                    stream: Channel::Data,
                    ..
                } => stream.eof = true,
                ClientEvent::Closed { .. } => {}
            }
        }
        Ok(stream)
    }

    /// The WebSocket (anything received and not yet read is lost).
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }
}

impl<S> AsyncRead for ChannelStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(message) = &this.error {
                return Poll::Ready(Err(io::Error::other(message.clone())));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // A message written and not yet taken by the socket goes on now: a writer
            // that waits for an answer without flushing (write_all, then read) would
            // otherwise wait for ever. Failures show on the next write or flush.
            if Pin::new(&mut this.ws).poll_flush(cx).is_ready()
                && let Some(writer) = this.writer.take()
            {
                writer.wake();
            }
            let bytes = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) => Bytes::from(t),
                Some(Ok(Message::Close(_))) | None => {
                    this.eof = true;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            match this.mux.receive(&bytes).map_err(protocol_error)? {
                ClientEvent::Data { payload, .. } => this.unread = Bytes::from(payload),
                ClientEvent::Error { message, .. } => this.error = Some(message),
                ClientEvent::Closed {
                    stream: Channel::Data,
                    ..
                } => this.eof = true,
                ClientEvent::Closed { .. } | ClientEvent::Ready { .. } => {}
            }
        }
    }
}

impl<S> ChannelStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Remembers the writing task when `outcome` says it waits.
    fn waiting<T>(&mut self, cx: &Context<'_>, outcome: &Poll<T>) {
        if outcome.is_pending() {
            self.writer = Some(cx.waker().clone());
        }
    }

    fn send(&mut self, cx: &mut Context<'_>, message: Vec<u8>) -> Poll<io::Result<()>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        let message = if self.protocol.is_text() {
            let text = String::from_utf8(message).map_err(protocol_error)?;
            Message::Text(text.into())
        } else {
            Message::Binary(Bytes::from(message))
        };
        ws.as_mut().start_send(message).map_err(io_error)?;
        // Sent on when it can be; poll_flush waits for it.
        if let Poll::Ready(Err(e)) = ws.poll_flush(cx) {
            return Poll::Ready(Err(io_error(e)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncWrite for ChannelStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(message) = &self.error {
            return Poll::Ready(Err(io::Error::other(message.clone())));
        }
        if self.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream is shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_DATA_PER_MESSAGE);
        let message = self.mux.data(0, &buf[..n]).map_err(protocol_error)?;
        let sent = self.send(cx, message);
        self.waiting(cx, &sent);
        ready!(sent)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error);
        self.waiting(cx, &flushed);
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.protocol.supports_close() {
            if !self.shut {
                let message = self.mux.close(0).map_err(protocol_error)?;
                ready!(self.send(cx, message))?;
                self.shut = true;
            }
            return self.poll_flush(cx);
        }
        self.shut = true;
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}
