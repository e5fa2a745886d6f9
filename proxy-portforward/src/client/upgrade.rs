//! The HTTP/1.1 client side of the port-forward upgrades, on a connection already made.

use std::fmt;
use std::io;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::forward::{accept_key, server_config};
use crate::status::Status;

/// An upgraded connection: what [`upgrade_spdy`] returns, and what a WebSocket of
/// [`upgrade_websocket`] runs on.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The most of a refusal's body read for its `Status`.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Why an upgrade failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The server answered with something other than `101 Switching Protocols`.
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The `message` of its `Status` body, else the body as text (may be empty).
        message: String,
    },
    /// A `101` that does not complete the handshake (a wrong `Sec-WebSocket-Accept`, a
    /// protocol not offered).
    Handshake(String),
    /// The request could not be sent or the answer read.
    Io(io::Error),
}

impl UpgradeError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpgradeError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Refused { status, message } if message.is_empty() => {
                write!(f, "upgrade refused: {status}")
            }
            UpgradeError::Refused { status, message } => {
                write!(f, "upgrade refused: {status}: {message}")
            }
            UpgradeError::Handshake(why) => write!(f, "bad upgrade answer: {why}"),
            UpgradeError::Io(_) => f.write_str("upgrade request failed"),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<UpgradeError> for io::Error {
    fn from(e: UpgradeError) -> io::Error {
        match e {
            UpgradeError::Io(e) => e,
            UpgradeError::Refused { status, .. } if status == StatusCode::NOT_FOUND => {
                io::Error::new(io::ErrorKind::NotFound, e.to_string())
            }
            UpgradeError::Refused { status, .. }
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
            {
                io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
            }
            e => io::Error::other(e.to_string()),
        }
    }
}

fn hyper_error(e: hyper::Error) -> UpgradeError {
    UpgradeError::Io(io::Error::other(e))
}

/// Sends `request` on `io` and returns the `101` answer, the connection's task driving
/// it until the upgrade.
async fn send<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
) -> Result<Response<Incoming>, UpgradeError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(hyper_error)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "upgrade connection ended with an error");
        }
    });
    let response = sender.send_request(request).await.map_err(hyper_error)?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = match serde_json::from_slice::<Status>(&body) {
        Ok(s) => s.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
    };
    Err(UpgradeError::Refused { status, message })
}

fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::request::Builder, UpgradeError> {
    let mut builder = Request::builder().method(method).uri(path);
    let mut host = false;
    for (name, value) in headers {
        let name = HeaderName::try_from(*name)
            .map_err(|e| UpgradeError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let value = HeaderValue::try_from(*value)
            .map_err(|e| UpgradeError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        host |= name == HOST;
        builder = builder.header(name, value);
    }
    if !host {
        builder = builder.header(HOST, "localhost");
    }
    Ok(builder.header(CONNECTION, "Upgrade"))
}

fn finish(builder: http::request::Builder) -> Result<Request<Empty<Bytes>>, UpgradeError> {
    builder
        .body(Empty::new())
        .map_err(|e| UpgradeError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))
}

/// Upgrades `io` to SPDY/3.1 for port-forward, as kubectl does: `POST path` with
/// `Connection: Upgrade`, `Upgrade: SPDY/3.1` and `X-Stream-Protocol-Version:
/// portforward.k8s.io`, plus `headers` (such as `authorization`; `host` is `localhost`
/// unless given). Start a [`SpdySession`](super::SpdySession) on what it returns.
///
/// # Errors
///
/// [`UpgradeError::Refused`] for an answer other than `101` (`404` with `pods "nope" not
/// found`, `401`, ...), [`UpgradeError::Io`] when the connection fails.
pub async fn upgrade_spdy<IO>(
    io: IO,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Upgraded, UpgradeError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let builder = request(Method::POST, path, headers)?
        .header(UPGRADE, "SPDY/3.1")
        .header("x-stream-protocol-version", "portforward.k8s.io");
    let response = send(io, finish(builder)?).await?;
    let upgraded = hyper::upgrade::on(response).await.map_err(hyper_error)?;
    Ok(TokioIo::new(upgraded))
}

/// Upgrades `io` to SPDY/3.1 as [`upgrade_spdy`], offering `protocols` in
/// `X-Stream-Protocol-Version` (one header line each, in order; Go's servers do not split
/// commas), and returns the one the server selected (empty when it named none). Offer
/// [`udp::SPDY_OFFER`](crate::udp::SPDY_OFFER) for UDP streams, and give what this returns
/// to [`SpdySessionBuilder::protocol`](super::SpdySessionBuilder::protocol).
///
/// # Errors
///
/// As [`upgrade_spdy`]; [`UpgradeError::Handshake`] when the server selected a protocol
/// not offered.
pub async fn upgrade_spdy_with<IO>(
    io: IO,
    path: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> Result<(Upgraded, String), UpgradeError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut builder = request(Method::POST, path, headers)?.header(UPGRADE, "SPDY/3.1");
    for protocol in protocols {
        builder = builder.header("x-stream-protocol-version", *protocol);
    }
    let response = send(io, finish(builder)?).await?;
    let selected = response
        .headers()
        .get("x-stream-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !selected.is_empty() && !protocols.contains(&selected.as_str()) {
        return Err(UpgradeError::Handshake(format!(
            "the server selected stream protocol {selected:?}, not one offered"
        )));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(hyper_error)?;
    Ok((TokioIo::new(upgraded), selected))
}

/// Upgrades `io` to a WebSocket, offering `protocols` (`v4.channel.k8s.io`, or
/// `SPDY/3.1+portforward.k8s.io` for the tunnel): `GET path_with_query` (the channel
/// protocol needs `?ports=PORT`) with `headers` as [`upgrade_spdy`]. Returns the
/// WebSocket and the protocol the server chose.
///
/// # Errors
///
/// As [`upgrade_spdy`]; [`UpgradeError::Handshake`] when the `101` has a wrong
/// `Sec-WebSocket-Accept` or a protocol not offered.
pub async fn upgrade_websocket<IO>(
    io: IO,
    path_with_query: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<Upgraded>, String), UpgradeError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let key = generate_key();
    let mut builder = request(Method::GET, path_with_query, headers)?
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .header(SEC_WEBSOCKET_KEY, key.as_str());
    if !protocols.is_empty() {
        builder = builder.header(SEC_WEBSOCKET_PROTOCOL, protocols.join(", "));
    }
    let response = send(io, finish(builder)?).await?;
    let accept = response
        .headers()
        .get(SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.trim() != accept_key(&key) {
        return Err(UpgradeError::Handshake(format!(
            "Sec-WebSocket-Accept {accept:?} does not answer our key"
        )));
    }
    let protocol = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !protocols.is_empty() && !protocols.contains(&protocol.as_str()) {
        return Err(UpgradeError::Handshake(format!(
            "the server chose protocol {protocol:?}, not one offered"
        )));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(hyper_error)?;
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        Some(server_config()),
    )
    .await;
    Ok((ws, protocol))
}
