//! The WebSocket side of the node: what runs on a connection once the HTTP server has
//! answered `101 Switching Protocols` to a WebSocket upgrade.
//!
//! - [`serve_channels`]: the channel protocol (`v4.channel.k8s.io`, its base64 variant,
//!   `v5.channel.k8s.io`), as the kubelet serves it to kube-rs, the Python and JavaScript
//!   clients: one WebSocket carries every port of the request.
//! - [`WebSocketBytes`]: a byte stream over the binary messages of a WebSocket, which is
//!   how kubectl 1.31 and later tunnel SPDY/3.1 (`SPDY/3.1+portforward.k8s.io`); the SPDY
//!   server runs on it unchanged.
//! - [`accept_key`], [`server_config`] and [`server_stream`]: what the HTTP server needs to
//!   answer the handshake and to turn the upgraded connection into a WebSocket, with the
//!   message and frame limits of this module ([`MAX_MESSAGE_SIZE`]).
//!
//! Every function is generic over the connection (`S: AsyncRead + AsyncWrite`): a hyper
//! upgrade (`hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>`), a TLS stream or a plain
//! `TcpStream` in tests.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use proxy_portforward::channel::{self, Protocol};
//! use proxy_portforward::dial::TargetDialer;
//! use proxy_portforward::forward::{self, PodForward, Stats};
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let (tcp, _) = listener.accept().await?;
//! // The HTTP server has read the request (`?ports=8080`, `Sec-WebSocket-Protocol:
//! // v4.channel.k8s.io`) and answered 101 with `forward::accept_key(KEY)`; `tcp` is the
//! // connection (or `hyper_util::rt::TokioIo::new(upgraded)`).
//! let ports = channel::parse_query("ports=8080").unwrap();
//! let ws = forward::server_stream(tcp).await;
//! let pod = PodForward {
//!     pod: Arc::new("web=127.0.0.1".parse().unwrap()),
//!     dialer: Arc::new(TargetDialer::new(Duration::from_secs(5))),
//!     observer: Arc::new(Stats::new()),
//!     client: None,
//!     udp: None,
//! };
//! forward::serve_channels(ws, ports, Protocol::V4Binary, pod).await
//! # }
//! ```

mod channels;
mod tunnel;

pub use channels::serve_channels;
pub use tunnel::WebSocketBytes;

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The largest WebSocket message (and frame) a client may send: 16 MiB and a little, so
/// that any SPDY frame (a 24-bit length and an 8-byte header) fits in one message. A larger
/// message ends the connection with an error; this bounds what one connection can make the
/// server hold.
pub const MAX_MESSAGE_SIZE: usize = (16 << 20) + 64;

/// The most bytes of a pod's data put in one message to the client.
pub const MAX_DATA_PER_MESSAGE: usize = 32 << 10;

/// The `Sec-WebSocket-Accept` answering a request's `Sec-WebSocket-Key` (RFC 6455: the
/// key and a fixed GUID, SHA-1, base64). Surrounding spaces are not part of the key.
///
/// ```
/// // The example of RFC 6455, section 1.3.
/// assert_eq!(
///     proxy_portforward::forward::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(sec_websocket_key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        sec_websocket_key.trim().as_bytes(),
    )
}

/// The WebSocket settings of the node's connections: messages and frames up to
/// [`MAX_MESSAGE_SIZE`], otherwise tungstenite's defaults.
pub fn server_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

/// The server's WebSocket on a connection whose handshake is done (the `101` response
/// written), such as `TokioIo::new(upgraded)`, with [`server_config`].
pub async fn server_stream<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(server_config())).await
}

/// A tungstenite error as an `io::Error`: the I/O error itself, `BrokenPipe` for a closed
/// connection, `UnexpectedEof` for a connection that ended with no Close frame,
/// `InvalidData` for what the peer got wrong.
pub(crate) fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended with no WebSocket Close",
        ),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        WsError::Protocol(p) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error: {p}"),
        ),
        WsError::Capacity(c) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket message too large: {c}"),
        ),
        WsError::Utf8(s) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket text message is not UTF-8: {s}"),
        ),
        e => io::Error::other(e),
    }
}

/// Serves SPDY/3.1 port-forward tunnelled in the binary messages of `ws`
/// (`SPDY/3.1+portforward.k8s.io`, what kubectl 1.31+ asks for first): [`serve_spdy`] on
/// [`WebSocketBytes`].
///
/// [`serve_spdy`]: super::serve_spdy
///
/// # Errors
///
/// As [`serve_spdy`](super::serve_spdy).
pub async fn serve_spdy_tunnel<S>(
    ws: WebSocketStream<S>,
    forward: super::PodForward,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    super::serve_spdy(
        WebSocketBytes::new(ws),
        forward,
        super::Wire::SpdyOverWebSocket,
    )
    .await
}
