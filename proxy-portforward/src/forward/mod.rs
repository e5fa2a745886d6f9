//! The node's side of port-forward with I/O: each forwarded connection a client opens over
//! an upgraded connection becomes a connection to the pod's port, and the bytes are copied
//! both ways, half-closes included.
//!
//! One function per protocol, each given the upgraded connection and a [`PodForward`]
//! (the pod, how to reach it, and who is told about each session and stream, [`Observe`]).
//!
//! Failures to reach the pod go to the client in the kubelet's words
//! ([`channel::kubelet_error_message`](crate::channel::kubelet_error_message)) on the
//! stream's error stream or channel; the session carries on with the others.

mod observe;
mod spdy;
mod websocket;

pub use observe::{
    Observe, Stats, StatsSnapshot, StreamEnd, StreamInfo, Transport, Wire, WireStats,
};
pub use spdy::{OUT_HIGH, SESSION_WINDOW, STREAM_CREATION_TIMEOUT, STREAM_WINDOW, serve_spdy};
pub(crate) use websocket::io_error;
pub use websocket::{
    MAX_DATA_PER_MESSAGE, MAX_MESSAGE_SIZE, WebSocketBytes, accept_key, serve_channels,
    serve_spdy_tunnel, server_config, server_stream,
};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dial::Dial;
use crate::objects::Pod;

/// What one upgraded port-forward connection forwards to: the pod, the way into it, and
/// who hears about each stream.
#[derive(Clone)]
pub struct PodForward {
    /// The pod (its name, namespace and UID appear in error messages and logs).
    pub pod: Arc<Pod>,
    /// Connects a stream to the pod's port.
    pub dialer: Arc<dyn Dial>,
    /// Told when each stream opens and ends (metrics, the access log).
    pub observer: Arc<dyn Observe>,
    /// The client's address, for the access log (`None` when not known).
    pub client: Option<SocketAddr>,
    /// UDP streams (this crate's extension, [`crate::udp`]): `Some` when the client
    /// negotiated them at the upgrade; `None` refuses every UDP stream with error text.
    pub udp: Option<UdpForward>,
}

/// How UDP streams are relayed, on a session that negotiated them ([`crate::udp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpForward {
    /// A stream with no datagram either way for this long ends (default
    /// [`DEFAULT_UDP_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
}

/// How long a UDP stream may go without a datagram by default: 60 s.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for UdpForward {
    fn default() -> Self {
        UdpForward {
            idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
        }
    }
}

impl fmt::Debug for PodForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodForward")
            .field("namespace", &self.pod.namespace)
            .field("pod", &self.pod.name)
            .field("client", &self.client)
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

impl PodForward {
    /// What [`Observe`] is told about a TCP stream to `port` of this pod.
    pub fn stream_info(&self, wire: Wire, port: u16, request_id: impl Into<String>) -> StreamInfo {
        StreamInfo {
            wire,
            namespace: self.pod.namespace.clone(),
            pod: self.pod.name.clone(),
            port,
            request_id: request_id.into(),
            client: self.client,
            transport: Transport::Tcp,
        }
    }
}
