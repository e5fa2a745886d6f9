//! Who hears about each session and stream: [`Observe`], and the built-in [`Stats`]
//! (counters by protocol and an access-log line per stream).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The protocol a session speaks on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// SPDY/3.1 on an upgraded HTTP/1.1 connection.
    Spdy,
    /// SPDY/3.1 in the binary messages of a WebSocket (`SPDY/3.1+portforward.k8s.io`).
    SpdyOverWebSocket,
    /// The WebSocket channel protocol (`v4.channel.k8s.io` and the rest).
    WebSocket,
}

impl Wire {
    /// Every protocol, in the order metrics list them.
    pub const ALL: [Wire; 3] = [Wire::Spdy, Wire::SpdyOverWebSocket, Wire::WebSocket];

    /// The name in metrics labels and the access log: `spdy`, `spdy-websocket`,
    /// `websocket`.
    pub const fn name(self) -> &'static str {
        match self {
            Wire::Spdy => "spdy",
            Wire::SpdyOverWebSocket => "spdy-websocket",
            Wire::WebSocket => "websocket",
        }
    }

    const fn index(self) -> usize {
        match self {
            Wire::Spdy => 0,
            Wire::SpdyOverWebSocket => 1,
            Wire::WebSocket => 2,
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a forwarded stream carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP connection (every protocol of Kubernetes).
    #[default]
    Tcp,
    /// UDP datagrams, this crate's extension ([`crate::udp`]).
    Udp,
}

impl Transport {
    /// `tcp` or `udp`, as the access log has it.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One forwarded stream (a connection the client forwards to the pod's port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The session's protocol.
    pub wire: Wire,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's port.
    pub port: u16,
    /// SPDY's `requestid`; for WebSocket channels, the port's index in `ports`.
    pub request_id: String,
    /// The client's address, if known.
    pub client: Option<SocketAddr>,
    /// TCP, or UDP on a session that negotiated it.
    pub transport: Transport,
}

/// How a stream ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEnd {
    /// Bytes the client sent that were written to the pod.
    pub bytes_to_pod: u64,
    /// Bytes the pod sent that were passed to the client.
    pub bytes_from_pod: u64,
    /// From the stream's start (both SPDY streams open, or the WebSocket upgraded) to its
    /// end.
    pub duration: Duration,
    /// What went wrong, if anything: the reason sent to the client on the error stream
    /// (`connection refused`), or why the stream was cut (`session closed`).
    pub error: Option<String>,
}

/// Told about sessions and streams as they come and go. Every method has a default that
/// does nothing.
pub trait Observe: Send + Sync + 'static {
    /// An upgraded connection began speaking `wire`.
    fn session_started(&self, wire: Wire) {
        let _ = wire;
    }

    /// That session ended.
    fn session_ended(&self, wire: Wire) {
        let _ = wire;
    }

    /// A stream is about to connect to the pod's port.
    fn stream_started(&self, stream: &StreamInfo) {
        let _ = stream;
    }

    /// The stream ended (each [`Observe::stream_started`] gets exactly one of these).
    fn stream_ended(&self, stream: &StreamInfo, end: &StreamEnd) {
        let _ = (stream, end);
    }
}

/// Counters of one protocol, as [`Stats::snapshot`] reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Sessions open now.
    pub sessions_open: u64,
    /// Sessions ever started.
    pub sessions_total: u64,
    /// Streams open now.
    pub streams_open: u64,
    /// Streams ever started.
    pub streams_total: u64,
    /// Streams that ended with an error.
    pub stream_errors: u64,
    /// Bytes written to pods.
    pub bytes_to_pod: u64,
    /// Bytes passed from pods to clients.
    pub bytes_from_pod: u64,
    /// Of the streams open now, those carrying UDP.
    pub udp_streams_open: u64,
    /// Of the streams ever started, those carrying UDP.
    pub udp_streams_total: u64,
}

/// Every protocol's counters, indexed as [`Wire::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot(pub [WireStats; 3]);

impl StatsSnapshot {
    /// The counters of `wire`.
    pub fn wire(&self, wire: Wire) -> &WireStats {
        &self.0[wire.index()]
    }
}

#[derive(Debug, Default)]
struct Counters {
    sessions_open: AtomicU64,
    sessions_total: AtomicU64,
    streams_open: AtomicU64,
    streams_total: AtomicU64,
    stream_errors: AtomicU64,
    bytes_to_pod: AtomicU64,
    bytes_from_pod: AtomicU64,
    udp_streams_open: AtomicU64,
    udp_streams_total: AtomicU64,
}

/// The built-in [`Observe`]: counters by protocol, and one access-log line per stream
/// (`tracing` target `proxy_portforward::access`, at info).
#[derive(Debug, Default)]
pub struct Stats {
    wires: [Counters; 3],
}

impl Stats {
    /// Counters at zero.
    pub fn new() -> Self {
        Stats::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot(std::array::from_fn(|i| {
            let c = &self.wires[i];
            WireStats {
                sessions_open: c.sessions_open.load(Relaxed),
                sessions_total: c.sessions_total.load(Relaxed),
                streams_open: c.streams_open.load(Relaxed),
                streams_total: c.streams_total.load(Relaxed),
                stream_errors: c.stream_errors.load(Relaxed),
                bytes_to_pod: c.bytes_to_pod.load(Relaxed),
                bytes_from_pod: c.bytes_from_pod.load(Relaxed),
                udp_streams_open: c.udp_streams_open.load(Relaxed),
                udp_streams_total: c.udp_streams_total.load(Relaxed),
            }
        }))
    }
}

impl Observe for Stats {
    fn session_started(&self, wire: Wire) {
        let c = &self.wires[wire.index()];
        c.sessions_open.fetch_add(1, Relaxed);
        c.sessions_total.fetch_add(1, Relaxed);
    }

    fn session_ended(&self, wire: Wire) {
        self.wires[wire.index()].sessions_open.fetch_sub(1, Relaxed);
    }

    fn stream_started(&self, stream: &StreamInfo) {
        let c = &self.wires[stream.wire.index()];
        c.streams_open.fetch_add(1, Relaxed);
        c.streams_total.fetch_add(1, Relaxed);
        if stream.transport == Transport::Udp {
            c.udp_streams_open.fetch_add(1, Relaxed);
            c.udp_streams_total.fetch_add(1, Relaxed);
        }
    }

    fn stream_ended(&self, stream: &StreamInfo, end: &StreamEnd) {
        let c = &self.wires[stream.wire.index()];
        c.streams_open.fetch_sub(1, Relaxed);
        if stream.transport == Transport::Udp {
            c.udp_streams_open.fetch_sub(1, Relaxed);
        }
        c.bytes_to_pod.fetch_add(end.bytes_to_pod, Relaxed);
        c.bytes_from_pod.fetch_add(end.bytes_from_pod, Relaxed);
        if end.error.is_some() {
            c.stream_errors.fetch_add(1, Relaxed);
        }
        tracing::info!(
            target: "proxy_portforward::access",
            protocol = stream.wire.name(),
            client = %stream.client.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            namespace = %stream.namespace,
            pod = %stream.pod,
            port = stream.port,
            request_id = %stream.request_id,
            bytes_up = end.bytes_to_pod,
            bytes_down = end.bytes_from_pod,
            duration_ms = end.duration.as_millis() as u64,
            error = end.error.as_deref().unwrap_or("-"),
            transport = stream.transport.name(),
            "stream"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol() {
        let stats = Stats::new();
        let info = StreamInfo {
            wire: Wire::WebSocket,
            namespace: "default".into(),
            pod: "web".into(),
            port: 80,
            request_id: "0".into(),
            client: None,
            transport: Transport::Tcp,
        };
        stats.session_started(Wire::WebSocket);
        stats.stream_started(&info);
        let open = stats.snapshot();
        assert_eq!(open.wire(Wire::WebSocket).streams_open, 1);
        assert_eq!(open.wire(Wire::Spdy), &WireStats::default());
        let end = StreamEnd {
            bytes_to_pod: 5,
            bytes_from_pod: 7,
            duration: Duration::from_millis(3),
            error: Some("connection refused".into()),
        };
        stats.stream_ended(&info, &end);
        stats.session_ended(Wire::WebSocket);
        let ws = *stats.snapshot().wire(Wire::WebSocket);
        assert_eq!(
            ws,
            WireStats {
                sessions_open: 0,
                sessions_total: 1,
                streams_open: 0,
                streams_total: 1,
                stream_errors: 1,
                bytes_to_pod: 5,
                bytes_from_pod: 7,
                udp_streams_open: 0,
                udp_streams_total: 0,
            }
        );
        let udp = StreamInfo {
            transport: Transport::Udp,
            ..info
        };
        stats.stream_started(&udp);
        assert_eq!(stats.snapshot().wire(Wire::WebSocket).udp_streams_open, 1);
        stats.stream_ended(&udp, &StreamEnd::default());
        let ws = *stats.snapshot().wire(Wire::WebSocket);
        assert_eq!((ws.udp_streams_open, ws.udp_streams_total), (0, 1));
        assert_eq!((ws.streams_open, ws.streams_total), (0, 2));
    }
}
