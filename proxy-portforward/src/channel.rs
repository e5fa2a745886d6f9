//! The WebSocket channel protocol of port-forward, with no I/O: what a node (the kubelet)
//! speaks to `kubectl`-like clients that ask for
//! `GET /api/v1/namespaces/NS/pods/NAME/portforward?ports=80&ports=443` upgraded to a
//! WebSocket (kube-rs, the Python and JavaScript clients).
//!
//! - [`parse_query`] / [`parse_port_values`] read the `ports` parameters as the kubelet does,
//!   with its error messages ([`PortsError`], answered with HTTP 400 and, as the API server
//!   words it, a [`Status`](crate::status::Status) body).
//! - [`negotiate`] picks the subprotocol from `Sec-WebSocket-Protocol`
//!   ([`Protocol`]; refusal: [`NegotiateError`], HTTP 403).
//! - [`Codec`] turns a [`Message`] into the payload of one WebSocket message and back.
//! - [`Mux`] (the server's side) and [`ClientMux`] (the client's) know which channel is whose,
//!   what is sent first and what a received message means, so the I/O around them only moves
//!   bytes.
//!
//! # The wire format
//!
//! Every message starts with one channel byte. For the i-th port of `ports`, its data is on
//! channel `2i` (both ways) and its errors on channel `2i+1` (server to client only). The
//! first message the server sends on each channel is the port, a little-endian `u16`, and
//! nothing else. With the `base64` subprotocols each message is a text message: the channel
//! as an ASCII digit (`'0' + channel`) followed by the payload in standard base64. With
//! `v5.channel.k8s.io` the message `[255, c]` closes channel `c` (a half-close).
//!
//! When forwarding to a port fails, the kubelet writes one text on the port's error channel,
//! `error forwarding port 80 to pod NAME, uid UID: REASON` ([`kubelet_error_message`]), then
//! closes that port's channels, which sends nothing. Once every port is done it closes the
//! WebSocket (close code 1000). Data the client sends on an error channel is dropped.
//!
//! # Where this differs from the kubelet
//!
//! - Base64 payloads must be canonical (padding, no line breaks, no stray bits before the
//!   padding), which every client's encoder writes; Go's decoder is laxer. So a decoded
//!   message always encodes back to the same bytes.
//! - Errors are returned, not logged: the kubelet drops a message with an unknown channel,
//!   bad base64 or nothing in it, and a client's data on an error channel, and reads on.
//! - An empty item in `Sec-WebSocket-Protocol` (`"a, "`) is skipped; the kubelet's library
//!   would take it for "no protocol".
//! - v5 (and the first versions' names) are opt-in ([`ALL_PROTOCOLS`]); the kubelet's
//!   port-forward accepts only what [`KUBELET_PROTOCOLS`] lists.
//!
//! ```
//! use proxy_portforward::channel::{self, ClientEvent, ClientMux, Event, Mux, Protocol};
//!
//! // The request: ports, then the subprotocol.
//! let ports = channel::parse_query("ports=80&ports=443").unwrap();
//! let protocol = channel::negotiate(
//!     ["v5.channel.k8s.io,v4.channel.k8s.io"],
//!     channel::KUBELET_PROTOCOLS,
//! )
//! .unwrap();
//! assert_eq!(protocol, Protocol::V4Binary);
//! assert_eq!(protocol.name(), Some("v4.channel.k8s.io"));
//!
//! // The server sends the port prefixes first: [0, 80, 0], [1, 80, 0], [2, 187, 1], [3, 187, 1].
//! let server = Mux::new(ports.clone(), protocol).unwrap();
//! let first = server.initial_messages();
//! assert_eq!(first[2], [2, 187, 1]);
//!
//! // A client reads them, then sends "hi" to port 443.
//! let mut client = ClientMux::new(ports, protocol).unwrap();
//! for m in &first {
//!     assert!(matches!(client.receive(m).unwrap(), ClientEvent::Ready { .. }));
//! }
//! let sent = client.data(1, b"hi").unwrap();
//! assert_eq!(sent, [2, b'h', b'i']);
//! assert_eq!(server.receive(&sent).unwrap(), Event::Data { port: 1, payload: b"hi".to_vec() });
//!
//! // The pod's answer, then an error on port 80.
//! let answer = server.data(1, b"ok").unwrap();
//! assert_eq!(client.receive(&answer).unwrap(), ClientEvent::Data { port: 1, payload: b"ok".to_vec() });
//! let error = server.error(0, "connection refused").unwrap();
//! assert_eq!(
//!     client.receive(&error).unwrap(),
//!     ClientEvent::Error { port: 0, message: "connection refused".into() }
//! );
//! ```

mod base64;
mod ports;

use std::fmt;

pub use ports::{PORTS_PARAMETER, PortsError, parse_port_values, parse_query};

/// The channel byte of v5's close-channel signal (`[255, channel]`).
pub const CLOSE_CHANNEL: u8 = 255;

/// The largest number of ports a binary protocol can carry: channels 0-253 (255 is v5's
/// close signal, and a port needs two).
pub const MAX_PORTS_BINARY: usize = 127;
/// The largest number of ports a base64 protocol can carry: its channel characters `'0'`
/// and on must stay ASCII (`'0' + 79` is DEL).
pub const MAX_PORTS_BASE64: usize = 40;

/// A subprotocol of the channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// No `Sec-WebSocket-Protocol` at all: binary, as `v4.channel.k8s.io`, and the answer
    /// names no protocol. The kubelet accepts it.
    Unnamed,
    /// `v4.channel.k8s.io`: binary messages. The kubelet accepts it.
    V4Binary,
    /// `v4.base64.channel.k8s.io`: text messages, base64 payloads. The kubelet accepts it.
    V4Base64,
    /// `v5.channel.k8s.io`: as v4 binary, plus the close-channel signal. The kubelet accepts
    /// it for exec/attach, not for port-forward (it answers 403 to a client offering only it).
    V5Binary,
    /// `channel.k8s.io`, the first version: binary. The kubelet's port-forward refuses it.
    V1Binary,
    /// `base64.channel.k8s.io`, the first version: base64. The kubelet's port-forward
    /// refuses it.
    V1Base64,
}

/// What the kubelet's port-forward accepts, in no order of its own (the client's order
/// decides): no protocol, `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`.
pub const KUBELET_PROTOCOLS: &[Protocol] =
    &[Protocol::Unnamed, Protocol::V4Binary, Protocol::V4Base64];

/// [`KUBELET_PROTOCOLS`] and `v5.channel.k8s.io`, for a server that can half-close. A client
/// offering v5 then gets it: only send the close signal to a client that knows it (the
/// Python client's port-forward takes channel 255 for a protocol error).
pub const ALL_PROTOCOLS: &[Protocol] = &[
    Protocol::Unnamed,
    Protocol::V4Binary,
    Protocol::V4Base64,
    Protocol::V5Binary,
    Protocol::V1Binary,
    Protocol::V1Base64,
];

/// How a protocol's message payloads are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Binary messages: the channel byte, then the bytes.
    Binary,
    /// Text messages: `'0' + channel`, then the bytes in standard base64.
    Base64,
}

impl Protocol {
    /// The name in `Sec-WebSocket-Protocol`; `None` for [`Protocol::Unnamed`].
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Protocol::Unnamed => return None,
            Protocol::V4Binary => "v4.channel.k8s.io",
            Protocol::V4Base64 => "v4.base64.channel.k8s.io",
            Protocol::V5Binary => "v5.channel.k8s.io",
            Protocol::V1Binary => "channel.k8s.io",
            Protocol::V1Base64 => "base64.channel.k8s.io",
        })
    }

    /// The protocol of this name (exact, case-sensitive, as the kubelet compares).
    pub fn from_name(name: &str) -> Option<Protocol> {
        ALL_PROTOCOLS
            .iter()
            .copied()
            .find(|p| p.name() == Some(name))
    }

    /// Binary or base64.
    pub const fn encoding(self) -> Encoding {
        match self {
            Protocol::V4Base64 | Protocol::V1Base64 => Encoding::Base64,
            _ => Encoding::Binary,
        }
    }

    /// Whether messages are WebSocket text messages (base64) rather than binary ones.
    pub const fn is_text(self) -> bool {
        matches!(self.encoding(), Encoding::Base64)
    }

    /// Whether `[255, channel]` is the close-channel signal (v5 only).
    pub const fn supports_close(self) -> bool {
        matches!(self, Protocol::V5Binary)
    }

    /// The most ports this protocol can carry.
    pub const fn max_ports(self) -> usize {
        match self.encoding() {
            Encoding::Binary => MAX_PORTS_BINARY,
            Encoding::Base64 => MAX_PORTS_BASE64,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or(""))
    }
}

/// The client offered no protocol the server supports. The kubelet answers
/// `HTTP/1.1 403 Forbidden` with no body (its WebSocket library's handshake refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateError {
    /// What the client offered, in its order.
    pub offered: Vec<String>,
    /// What the server supports.
    pub supported: Vec<Protocol>,
}

impl NegotiateError {
    /// The HTTP status of the refusal: 403.
    pub const HTTP_STATUS: u16 = 403;
}

impl fmt::Display for NegotiateError {
    /// The kubelet's log line: `requested protocol(s) are not supported: [a b]; supports [...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let supported: Vec<&str> = self
            .supported
            .iter()
            .map(|p| p.name().unwrap_or(""))
            .collect();
        write!(
            f,
            "requested protocol(s) are not supported: [{}]; supports [{}]",
            self.offered.join(" "),
            supported.join(" ")
        )
    }
}

impl std::error::Error for NegotiateError {}

/// Picks the subprotocol for the values of the request's `Sec-WebSocket-Protocol` headers
/// (each a comma-separated list), as the kubelet does: the first protocol in the client's
/// order that the server supports. No protocol offered means [`Protocol::Unnamed`] (when
/// supported). Names are compared exactly after trimming spaces; empty list items are
/// skipped (the kubelet's library would take one for "no protocol").
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    supported: &[Protocol],
) -> Result<Protocol, NegotiateError> {
    let offered: Vec<String> = headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let found = if offered.is_empty() {
        supported
            .contains(&Protocol::Unnamed)
            .then_some(Protocol::Unnamed)
    } else {
        offered
            .iter()
            .filter_map(|name| Protocol::from_name(name))
            .find(|p| supported.contains(p))
    };
    found.ok_or_else(|| NegotiateError {
        offered,
        supported: supported.to_vec(),
    })
}

/// One message of the channel protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Bytes on a channel (possibly none).
    Data {
        /// The channel.
        channel: u8,
        /// The bytes, decoded from base64 for the base64 protocols.
        payload: Vec<u8>,
    },
    /// v5's close-channel signal: no more data on this channel from the sender.
    Close {
        /// The channel closed.
        channel: u8,
    },
}

/// What is wrong with a message. The kubelet drops a message it cannot use and reads on,
/// except for a bad close signal (wrong length, unknown channel), which ends the
/// connection: [`FrameError::is_fatal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A message with no bytes at all (not even the channel).
    Empty,
    /// A channel that no port of the request has.
    UnknownChannel {
        /// The channel.
        channel: u8,
        /// How many ports the request has (channels `0..2 * ports`).
        ports: usize,
    },
    /// A base64 message whose first byte is no channel character (`'0'` to DEL).
    BadChannelChar(u8),
    /// A base64 message whose payload is not canonical standard base64.
    BadBase64 {
        /// The channel.
        channel: u8,
        /// What is wrong, with the offset in the payload.
        reason: String,
    },
    /// A close signal that is not exactly `[255, channel]`.
    CloseLength(usize),
    /// A close signal for a channel that no port of the request has.
    CloseUnknownChannel {
        /// The channel.
        channel: u8,
        /// How many ports the request has.
        ports: usize,
    },
    /// A close signal to send or expect on a protocol without one (all but v5).
    CloseUnsupported(Protocol),
    /// A channel the protocol cannot write (base64: above 79; binary v5: 255).
    ChannelNotEncodable {
        /// The channel.
        channel: u8,
        /// The protocol.
        protocol: Protocol,
    },
    /// More ports than the protocol's channels can carry.
    TooManyPorts {
        /// How many were asked for.
        ports: usize,
        /// The protocol's limit.
        max: usize,
    },
    /// A channel's first message from the server is not 2 bytes.
    PortPrefixLength {
        /// The channel.
        channel: u8,
        /// The payload's length.
        len: usize,
    },
    /// A channel's first message from the server names another port.
    PortPrefixMismatch {
        /// The channel.
        channel: u8,
        /// The channel's port.
        expected: u16,
        /// The port in the message.
        got: u16,
    },
    /// A message on a channel already closed.
    AfterClose {
        /// The channel.
        channel: u8,
    },
    /// A message from the client on an error channel (the kubelet drops it).
    ClientOnErrorChannel {
        /// The channel.
        channel: u8,
    },
    /// A port index the request does not have.
    NoSuchPort {
        /// The index.
        port: usize,
        /// How many ports there are.
        ports: usize,
    },
}

impl FrameError {
    /// Whether the kubelet ends the connection over it (a bad close signal) rather than
    /// dropping the message.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::CloseLength(_) | FrameError::CloseUnknownChannel { .. }
        )
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("empty message: no channel byte"),
            FrameError::UnknownChannel { channel, ports } => match ports {
                0 => write!(f, "message on channel {channel}, but there are no ports"),
                _ => write!(
                    f,
                    "message on channel {channel}, but the {ports} port(s) of the request use channels 0-{}",
                    2 * ports - 1
                ),
            },
            FrameError::BadChannelChar(b) => {
                write!(
                    f,
                    "base64 message starts with byte {b:#04x}, not a channel character ('0' + channel)"
                )
            }
            FrameError::BadBase64 { channel, reason } => {
                write!(f, "bad base64 in a message on channel {channel}: {reason}")
            }
            FrameError::CloseLength(len) => write!(
                f,
                "close signal must be 2 bytes (255 and the channel to close), got {len} byte(s)"
            ),
            FrameError::CloseUnknownChannel { channel, ports } => {
                write!(
                    f,
                    "close signal for channel {channel}, but the request has {ports} port(s)"
                )
            }
            FrameError::CloseUnsupported(p) => {
                write!(
                    f,
                    "protocol {:?} has no close signal (only v5.channel.k8s.io)",
                    p.to_string()
                )
            }
            FrameError::ChannelNotEncodable { channel, protocol } => {
                write!(
                    f,
                    "channel {channel} cannot be written in protocol {:?}",
                    protocol.to_string()
                )
            }
            FrameError::TooManyPorts { ports, max } => {
                write!(f, "{ports} ports, but the protocol carries at most {max}")
            }
            FrameError::PortPrefixLength { channel, len } => write!(
                f,
                "first message on channel {channel} must be the port (2 bytes), got {len} byte(s)"
            ),
            FrameError::PortPrefixMismatch {
                channel,
                expected,
                got,
            } => write!(
                f,
                "first message on channel {channel} names port {got}, but the channel is port {expected}'s"
            ),
            FrameError::AfterClose { channel } => {
                write!(f, "message on channel {channel} after it was closed")
            }
            FrameError::ClientOnErrorChannel { channel } => {
                write!(
                    f,
                    "client sent data on error channel {channel}, which is the server's to write"
                )
            }
            FrameError::NoSuchPort { port, ports } => {
                write!(
                    f,
                    "no port at index {port}: the request has {ports} port(s)"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes and decodes the payload of one WebSocket message for a protocol. It knows no
/// ports: any channel the protocol can write is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    protocol: Protocol,
}

impl Codec {
    /// The codec of this protocol.
    pub const fn new(protocol: Protocol) -> Self {
        Codec { protocol }
    }

    /// The protocol.
    pub const fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Appends the payload of the WebSocket message carrying `message` to `out` (send it as
    /// a text message when [`Protocol::is_text`]).
    pub fn encode_into(&self, message: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match message {
            Message::Data { channel, payload } => self.encode_data_into(*channel, payload, out),
            Message::Close { channel } => {
                if !self.protocol.supports_close() {
                    return Err(FrameError::CloseUnsupported(self.protocol));
                }
                out.extend([CLOSE_CHANNEL, *channel]);
                Ok(())
            }
        }
    }

    /// [`Codec::encode_into`] a new vector.
    pub fn encode(&self, message: &Message) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.encode_into(message, &mut out)?;
        Ok(out)
    }

    /// Appends the message carrying `payload` on `channel` to `out`.
    pub fn encode_data_into(
        &self,
        channel: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        match self.protocol.encoding() {
            Encoding::Binary => {
                if channel == CLOSE_CHANNEL && self.protocol.supports_close() {
                    return Err(FrameError::ChannelNotEncodable {
                        channel,
                        protocol: self.protocol,
                    });
                }
                out.reserve(1 + payload.len());
                out.push(channel);
                out.extend_from_slice(payload);
            }
            Encoding::Base64 => {
                let c = channel.checked_add(b'0').filter(u8::is_ascii).ok_or(
                    FrameError::ChannelNotEncodable {
                        channel,
                        protocol: self.protocol,
                    },
                )?;
                out.push(c);
                base64::encode_into(payload, out);
            }
        }
        Ok(())
    }

    /// Decodes the payload of one WebSocket message (text or binary: the kubelet takes
    /// either). Strict: base64 must be canonical (no line breaks, no stray bits), so a
    /// decoded message encodes back to the same bytes.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, FrameError> {
        let (&first, rest) = bytes.split_first().ok_or(FrameError::Empty)?;
        if self.protocol.supports_close() && first == CLOSE_CHANNEL {
            return match *rest {
                [channel] => Ok(Message::Close { channel }),
                _ => Err(FrameError::CloseLength(bytes.len())),
            };
        }
        match self.protocol.encoding() {
            Encoding::Binary => Ok(Message::Data {
                channel: first,
                payload: rest.to_vec(),
            }),
            Encoding::Base64 => {
                if !(b'0'..0x80).contains(&first) {
                    return Err(FrameError::BadChannelChar(first));
                }
                let channel = first - b'0';
                let payload = base64::decode(rest).map_err(|e| FrameError::BadBase64 {
                    channel,
                    reason: match e {
                        base64::Base64Error::Length(n) => {
                            format!("length {n} is not a multiple of 4")
                        }
                        base64::Base64Error::Byte(at, b) => format!("byte {b:#04x} at offset {at}"),
                        base64::Base64Error::TrailingBits => {
                            "non-zero bits before the padding".to_owned()
                        }
                    },
                })?;
                Ok(Message::Data { channel, payload })
            }
        }
    }
}

/// Which of a port's two channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Channel `2i`: the bytes to and from the pod's port.
    Data,
    /// Channel `2i+1`: the server's error text for the port.
    Error,
}

/// The channel of port `port` (its index in `ports`) and `stream`.
pub const fn channel_of(port: usize, stream: Stream) -> u8 {
    (2 * port + matches!(stream, Stream::Error) as usize) as u8
}

/// What the kubelet writes on a port's error channel when forwarding fails.
pub fn kubelet_error_message(port: u16, pod: &str, uid: &str, reason: &str) -> String {
    format!("error forwarding port {port} to pod {pod}, uid {uid}: {reason}")
}

/// What a message from the client means, for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes for the pod's port (possibly none: nothing to write).
    Data {
        /// The port's index in `ports`.
        port: usize,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// The client will send no more on this port's stream (v5): half-close the write side
    /// toward the pod for [`Stream::Data`].
    Close {
        /// The port's index.
        port: usize,
        /// Which channel.
        stream: Stream,
    },
}

/// The server's side of a connection, after the handshake: the ports and the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mux {
    codec: Codec,
    ports: Vec<u16>,
}

impl Mux {
    /// A connection carrying these ports (from [`parse_query`]) in this protocol.
    pub fn new(ports: Vec<u16>, protocol: Protocol) -> Result<Self, FrameError> {
        if ports.len() > protocol.max_ports() {
            return Err(FrameError::TooManyPorts {
                ports: ports.len(),
                max: protocol.max_ports(),
            });
        }
        Ok(Mux {
            codec: Codec::new(protocol),
            ports,
        })
    }

    /// The ports, in channel order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.codec.protocol
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The port index and stream of a channel, if the request has it.
    pub fn channel(&self, channel: u8) -> Option<(usize, Stream)> {
        let port = usize::from(channel) / 2;
        let stream = if channel.is_multiple_of(2) {
            Stream::Data
        } else {
            Stream::Error
        };
        (port < self.ports.len()).then_some((port, stream))
    }

    fn check_port(&self, port: usize) -> Result<(), FrameError> {
        if port < self.ports.len() {
            Ok(())
        } else {
            Err(FrameError::NoSuchPort {
                port,
                ports: self.ports.len(),
            })
        }
    }

    fn known(&self, channel: u8) -> Result<(usize, Stream), FrameError> {
        self.channel(channel).ok_or(FrameError::UnknownChannel {
            channel,
            ports: self.ports.len(),
        })
    }

    /// What the server sends first, in the kubelet's order: for each port, its data channel
    /// then its error channel, each with the port as a little-endian `u16`.
    pub fn initial_messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(2 * self.ports.len());
        for (i, port) in self.ports.iter().enumerate() {
            for stream in [Stream::Data, Stream::Error] {
                let mut m = Vec::new();
                self.codec
                    .encode_data_into(channel_of(i, stream), &port.to_le_bytes(), &mut m)
                    .expect("Mux::new checked the channels");
                out.push(m);
            }
        }
        out
    }

    /// The message carrying bytes from the pod's port `port` (index) to the client.
    pub fn data(&self, port: usize, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.check_port(port)?;
        let mut m = Vec::with_capacity(payload.len() + 1);
        self.codec
            .encode_data_into(channel_of(port, Stream::Data), payload, &mut m)?;
        Ok(m)
    }

    /// The message carrying an error text for port `port` (see [`kubelet_error_message`]).
    pub fn error(&self, port: usize, message: &str) -> Result<Vec<u8>, FrameError> {
        self.check_port(port)?;
        let mut m = Vec::new();
        self.codec
            .encode_data_into(channel_of(port, Stream::Error), message.as_bytes(), &mut m)?;
        Ok(m)
    }

    /// v5's close signal for a port's channel (the pod closed its side); an error on other
    /// protocols, where the server has no way to say it but closing the WebSocket.
    pub fn close(&self, port: usize, stream: Stream) -> Result<Vec<u8>, FrameError> {
        self.check_port(port)?;
        self.codec.encode(&Message::Close {
            channel: channel_of(port, stream),
        })
    }

    /// What a message from the client means. Errors name what is wrong; the kubelet drops
    /// such a message and reads on unless [`FrameError::is_fatal`]. Data on an error channel
    /// is [`FrameError::ClientOnErrorChannel`] (the kubelet drops it silently).
    pub fn receive(&self, bytes: &[u8]) -> Result<Event, FrameError> {
        match self.codec.decode(bytes)? {
            Message::Data { channel, payload } => match self.known(channel)? {
                (port, Stream::Data) => Ok(Event::Data { port, payload }),
                (_, Stream::Error) => Err(FrameError::ClientOnErrorChannel { channel }),
            },
            Message::Close { channel } => {
                let (port, stream) =
                    self.channel(channel)
                        .ok_or(FrameError::CloseUnknownChannel {
                            channel,
                            ports: self.ports.len(),
                        })?;
                Ok(Event::Close { port, stream })
            }
        }
    }
}

/// What a message from the server means, for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The channel's first message: its port, checked.
    Ready {
        /// The port's index.
        port: usize,
        /// Which channel.
        stream: Stream,
    },
    /// Bytes from the pod's port.
    Data {
        /// The port's index.
        port: usize,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// The server's error text for the port (lossy UTF-8): the port is no longer usable.
    Error {
        /// The port's index.
        port: usize,
        /// The text.
        message: String,
    },
    /// v5: the server closed the channel.
    Closed {
        /// The port's index.
        port: usize,
        /// Which channel.
        stream: Stream,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChannelState {
    ready: bool,
    closed: bool,
}

/// The client's side: checks each channel's port prefix and sorts what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMux {
    mux: Mux,
    state: Vec<ChannelState>,
}

impl ClientMux {
    /// A client that asked for these ports and got this protocol.
    pub fn new(ports: Vec<u16>, protocol: Protocol) -> Result<Self, FrameError> {
        let n = ports.len();
        Ok(ClientMux {
            mux: Mux::new(ports, protocol)?,
            state: vec![ChannelState::default(); 2 * n],
        })
    }

    /// The message sending `payload` to port `port` (index): `[2i, payload...]`.
    pub fn data(&self, port: usize, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.mux.data(port, payload)
    }

    /// v5's close signal for port `port`'s data channel: no more data from the client.
    pub fn close(&self, port: usize) -> Result<Vec<u8>, FrameError> {
        self.mux.close(port, Stream::Data)
    }

    /// What a message from the server means.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<ClientEvent, FrameError> {
        let message = self.mux.codec.decode(bytes)?;
        let channel = match &message {
            Message::Data { channel, .. } | Message::Close { channel } => *channel,
        };
        let (port, stream) = self.mux.known(channel)?;
        let state = &mut self.state[usize::from(channel)];
        if state.closed {
            return Err(FrameError::AfterClose { channel });
        }
        match message {
            Message::Close { .. } => {
                state.closed = true;
                Ok(ClientEvent::Closed { port, stream })
            }
            Message::Data { payload, .. } if !state.ready => {
                let prefix: [u8; 2] =
                    payload
                        .as_slice()
                        .try_into()
                        .map_err(|_| FrameError::PortPrefixLength {
                            channel,
                            len: payload.len(),
                        })?;
                let got = u16::from_le_bytes(prefix);
                let expected = self.mux.ports[port];
                if got != expected {
                    return Err(FrameError::PortPrefixMismatch {
                        channel,
                        expected,
                        got,
                    });
                }
                state.ready = true;
                Ok(ClientEvent::Ready { port, stream })
            }
            Message::Data { payload, .. } => Ok(match stream {
                Stream::Data => ClientEvent::Data { port, payload },
                Stream::Error => ClientEvent::Error {
                    port,
                    message: String::from_utf8_lossy(&payload).into_owned(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests;
