//! The client's side of port-forward, with I/O: what `kubectl port-forward` does once it
//! has a connection to the API server (or a node).
//!
//! - [`upgrade_spdy`] and [`upgrade_websocket`] send the HTTP/1.1 upgrade request on a
//!   connection already made (TCP or TLS) and return the upgraded connection, or an
//!   [`UpgradeError`] with the server's status and `Status` message.
//! - [`SpdySession`] speaks SPDY/3.1 on the upgraded connection (or, for
//!   `SPDY/3.1+portforward.k8s.io`, on [`WebSocketBytes`](crate::forward::WebSocketBytes)
//!   over the WebSocket: [`SpdySession::tunnel`]); each [`SpdySession::open`] is one
//!   forwarded connection, a [`ForwardedStream`] to read and write. The session keeps
//!   SPDY/3.1 flow control both ways, PINGs the node ([`SpdySessionBuilder::keepalive`])
//!   and reports its end ([`SpdySession::closed`]).
//! - [`ChannelStream`] is one forwarded connection over a WebSocket speaking the channel
//!   protocol (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`), for `ports=PORT`.
//! - UDP, with this crate's own server only ([`crate::udp`]): offer it at the upgrade
//!   ([`upgrade_spdy_with`] and [`udp::SPDY_OFFER`](crate::udp::SPDY_OFFER), or the
//!   tunnel's [`udp::TUNNEL_OFFER`](crate::udp::TUNNEL_OFFER)), tell the session what was
//!   selected ([`SpdySessionBuilder::protocol`]), then [`SpdySession::open_udp`] gives a
//!   [`DatagramStream`] if the server selected UDP ([`SpdySession::supports_udp`]), and
//!   fails at once otherwise. [`udp::serve_udp`] relays a local UDP socket's clients,
//!   one stream each.
//!
//! # Examples
//!
//! ```no_run
//! use proxy_portforward::client::{self, SpdySession};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8001").await?;
//! let path = "/api/v1/namespaces/default/pods/web/portforward";
//! let upgraded = client::upgrade_spdy(tcp, path, &[("authorization", "Bearer TOKEN")]).await?;
//! let session = SpdySession::new(upgraded);
//! let mut stream = session.open(80).await?;
//! stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! stream.shutdown().await?;
//! let mut answer = Vec::new();
//! stream.read_to_end(&mut answer).await?;
//! # Ok(())
//! # }
//! ```

mod spdy;
mod stream;
pub mod udp;
mod upgrade;
mod websocket;

pub use spdy::{
    DEFAULT_KEEPALIVE, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_SESSION_WINDOW, DEFAULT_STREAM_WINDOW,
    SpdySession, SpdySessionBuilder, UDP_NOT_NEGOTIATED,
};
pub use stream::ForwardedStream;
pub use udp::DatagramStream;
pub use upgrade::{UpgradeError, Upgraded, upgrade_spdy, upgrade_spdy_with, upgrade_websocket};
pub use websocket::ChannelStream;
