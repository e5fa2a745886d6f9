//! [`WebSocketBytes`]: a byte stream in the binary messages of a WebSocket, as client-go's
//! `TunnelingConnection` carries SPDY (`SPDY/3.1+portforward.k8s.io`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{MAX_MESSAGE_SIZE, io_error};

/// A byte stream carried by the binary messages of a WebSocket: what kubectl 1.31 and later
/// speak when the server accepts `SPDY/3.1+portforward.k8s.io` (SPDY tunnelled over
/// WebSocket), the same mapping as client-go's `TunnelingConnection`:
///
/// - each write is sent as one binary message (at most [`MAX_MESSAGE_SIZE`] bytes of it;
///   an empty write sends nothing), and is flushed at once;
/// - reads return the payloads of the binary messages received, concatenated, whatever
///   their sizes;
/// - a Close frame from the peer is the end of the stream (EOF) when its code is 1000 or
///   it has none; another code is an error (`ConnectionAborted`, with the code and reason),
///   then EOF. A connection that ends with no Close is an `UnexpectedEof` error. A text
///   message is an error (`InvalidData`): the tunnel carries binary messages only;
/// - pings are answered (while the stream is read or written), pongs are ignored;
/// - [`AsyncWrite::poll_shutdown`] sends a Close frame with code 1000. Reading goes on
///   until the peer answers it with its own Close, so what the peer sent before it saw
///   the Close still arrives. A peer's Close, though, ends both directions: once it has
///   been read, writes fail with `BrokenPipe` (a WebSocket cannot send after answering a
///   Close). SPDY needs no more: its streams half-close with their own FIN flags.
///
/// It holds at most one received message not yet read, so a connection's memory is
/// bounded by [`MAX_MESSAGE_SIZE`] (see [`server_config`](super::server_config)).
///
/// # Examples
///
/// ```no_run
/// use proxy_portforward::forward::{self, WebSocketBytes};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let (tcp, _) = listener.accept().await?;
/// // After the 101 answering `Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`:
/// let mut io = WebSocketBytes::new(forward::server_stream(tcp).await);
/// io.write_all(b"SPDY frames, as bytes").await?;
/// io.shutdown().await // a Close frame, code 1000
/// # }
/// ```
pub struct WebSocketBytes<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    unread: Bytes,
    /// The peer's Close (or the connection's end) has been read.
    read_eof: bool,
    write: WriteState,
    /// An error met while flushing a write already reported as done, for the next call.
    write_error: Option<io::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    Open,
    /// Our Close frame is queued; flushing it.
    Closing,
    Closed,
}

impl<S> fmt::Debug for WebSocketBytes<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketBytes")
            .field("unread", &self.unread.len())
            .field("read_eof", &self.read_eof)
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

// ===== impl WebSocketBytes =====

impl<S> WebSocketBytes<S> {
    /// A byte stream over `ws`, whose handshake is done.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WebSocketBytes {
            ws,
            unread: Bytes::new(),
            read_eof: false,
            write: WriteState::Open,
            write_error: None,
        }
    }

    /// The WebSocket (anything received and not yet read is lost).
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }

    /// The WebSocket.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.ws
    }
}

fn closed_for_writing() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the WebSocket is closed for writing",
    )
}

impl<S> AsyncRead for WebSocketBytes<S>
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
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(payload))) => this.unread = payload,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message in a WebSocket carrying a byte stream (binary messages only)",
                    )));
                }
                Some(Ok(Message::Close(frame))) => {
                    this.read_eof = true;
                    // Send the answer tungstenite queued, if the connection takes it now.
                    if let Poll::Ready(Err(e)) = this.ws.poll_flush_unpin(cx) {
                        tracing::debug!("answering a WebSocket Close: {e}");
                    }
                    if let Some(CloseFrame { code, reason }) = frame
                        && code != CloseCode::Normal
                    {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!(
                                "the peer closed the WebSocket with code {}: {reason:?}",
                                u16::from(code)
                            ),
                        )));
                    }
                }
                // Pings are answered by tungstenite, pongs need nothing.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    this.read_eof = true;
                    return Poll::Ready(Err(io_error(e)));
                }
                None => this.read_eof = true,
            }
        }
    }
}

impl<S> AsyncWrite for WebSocketBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(e) = this.write_error.take() {
            return Poll::Ready(Err(e));
        }
        if this.write != WriteState::Open {
            return Poll::Ready(Err(closed_for_writing()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.ws.poll_ready_unpin(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_MESSAGE_SIZE);
        this.ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(io_error)?;
        // Send it now: a caller that never flushes still gets its bytes delivered. An
        // error is for the next call; these bytes were accepted.
        if let Poll::Ready(Err(e)) = this.ws.poll_flush_unpin(cx) {
            this.write_error = Some(io_error(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.write_error.take() {
            return Poll::Ready(Err(e));
        }
        this.ws.poll_flush_unpin(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write == WriteState::Open {
            if let Err(e) = ready!(this.ws.poll_ready_unpin(cx)) {
                this.write = WriteState::Closed;
                return Poll::Ready(Err(io_error(e)));
            }
            let close = Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }));
            this.write = WriteState::Closing;
            if let Err(e) = this.ws.start_send_unpin(close) {
                // Closed already (the peer's Close was answered): nothing more to say.
                tracing::debug!("sending a WebSocket Close: {e}");
                this.write = WriteState::Closed;
                return Poll::Ready(Ok(()));
            }
        }
        if this.write == WriteState::Closing {
            let flushed = ready!(this.ws.poll_flush_unpin(cx));
            this.write = WriteState::Closed;
            flushed.map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
