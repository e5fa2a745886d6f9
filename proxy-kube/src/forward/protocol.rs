//! Which port-forward protocol reaches the pods, and opening one forwarded connection
//! with it: a stream of a SPDY session kept per pod, or a WebSocket of its own.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use proxy_portforward::channel::Protocol as Channels;
use proxy_portforward::client::{ChannelStream, ForwardedStream, Upgraded};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The protocol a [`PodForwarder`](super::PodForwarder) speaks to the API server.
///
/// # Examples
///
/// ```
/// use proxy_kube::forward::Protocol;
///
/// assert_eq!("spdy-websocket".parse::<Protocol>()?, Protocol::SpdyOverWebSocket);
/// assert_eq!(Protocol::default(), Protocol::Auto);
/// assert!("http2".parse::<Protocol>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// SPDY over WebSocket first (what kubectl 1.31+ asks for), then SPDY/3.1 when the
    /// server refuses it, then the WebSocket channel protocol when it refuses SPDY too;
    /// the first that works is kept for the forward. The default.
    #[default]
    Auto,
    /// SPDY/3.1 in a WebSocket's binary messages (`SPDY/3.1+portforward.k8s.io`, API
    /// servers 1.30+): one connection per pod, many forwarded connections on it.
    SpdyOverWebSocket,
    /// SPDY/3.1 on the upgraded connection (every API server): one connection per pod,
    /// many forwarded connections on it.
    Spdy,
    /// The WebSocket channel protocol (`v4.channel.k8s.io`, `?ports=PORT`): one WebSocket
    /// per forwarded connection. It has no half-close: a client's FIN is not passed on
    /// (the pod's answer is still read to its end).
    WebSocket,
}

impl Protocol {
    /// The name flags and logs use: `auto`, `spdy-websocket`, `spdy`, `websocket`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::SpdyOverWebSocket => "spdy-websocket",
            Protocol::Spdy => "spdy",
            Protocol::WebSocket => "websocket",
        }
    }

    /// The protocols to try in order.
    pub(super) fn candidates(self) -> &'static [Protocol] {
        match self {
            Protocol::Auto => &[
                Protocol::SpdyOverWebSocket,
                Protocol::Spdy,
                Protocol::WebSocket,
            ],
            Protocol::SpdyOverWebSocket => &[Protocol::SpdyOverWebSocket],
            Protocol::Spdy => &[Protocol::Spdy],
            Protocol::WebSocket => &[Protocol::WebSocket],
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Protocol::Auto,
            Protocol::SpdyOverWebSocket,
            Protocol::Spdy,
            Protocol::WebSocket,
        ]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| {
            format!("unknown protocol `{s}`; use auto, spdy-websocket, spdy or websocket")
        })
    }
}

/// The WebSocket channel protocols offered, best first.
pub(super) const CHANNEL_PROTOCOLS: [Channels; 2] = [Channels::V4Binary, Channels::V4Base64];

/// One forwarded connection to a pod's port, whichever protocol carries it: read and
/// write it as a TCP stream. Reads fail with the node's error text when it could not
/// reach the port; dropping it resets the connection on the pod's side.
pub struct PodStream {
    inner: Inner,
}

enum Inner {
    Spdy(ForwardedStream),
    /// With whether the protocol can half-close (v5); v4 cannot, and closing the
    /// WebSocket would lose the pod's answer.
    Channel(Box<ChannelStream<Upgraded>>, bool),
}

impl fmt::Debug for PodStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Spdy(s) => s.fmt(f),
            Inner::Channel(s, _) => s.fmt(f),
        }
    }
}

impl PodStream {
    pub(super) fn spdy(stream: ForwardedStream) -> Self {
        PodStream {
            inner: Inner::Spdy(stream),
        }
    }

    pub(super) fn channel(stream: ChannelStream<Upgraded>, protocol: Channels) -> Self {
        let half_close = protocol == Channels::V5Binary;
        PodStream {
            inner: Inner::Channel(Box::new(stream), half_close),
        }
    }
}

impl AsyncRead for PodStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Spdy(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Channel(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Spdy(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Channel(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Spdy(s) => Pin::new(s).poll_flush(cx),
            Inner::Channel(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Spdy(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Channel(s, true) => Pin::new(s.as_mut()).poll_shutdown(cx),
            // No half-close in v4: the client's FIN is not passed on, and the pod's answer
            // is read to its end.
            Inner::Channel(s, false) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
}
