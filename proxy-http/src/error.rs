//! Why the proxy answered a request itself, and with which status.

use std::fmt;

use http::{Response, StatusCode};

use crate::body::{self, Body};

/// Why a request was answered by the proxy rather than an upstream.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No route serves the request's host and path: 404.
    NoRoute,
    /// The upstream has no address to try (none resolved, all ejected or down): 503.
    NoEndpoints(String),
    /// Every connect attempt failed (refused, unreachable): 502.
    Connect(String),
    /// Connecting took longer than the connect budget: 504.
    ConnectTimeout(String),
    /// The upstream failed the request after it was sent (reset, closed, bad
    /// response): 502.
    Upstream(String),
    /// The upstream did not start its response within `request_timeout`: 504.
    Timeout,
    /// The request body is larger than `max_request_body`: 413.
    TooLarge(u64),
    /// A request the parser let through but HTTP forbids (RFC 9112 §3.2: an HTTP/1.1
    /// request without `Host`, or any with several): 400.
    BadRequest(&'static str),
    /// A request head that is not HTTP/1.1 (or one that smuggles a second message): 400.
    Malformed(String),
    /// A request head larger than `max_header_size`: 431.
    HeadTooLarge,
    /// A request framed with a transfer coding other than chunked: 501.
    NotImplemented(String),
}

impl ProxyError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) | ProxyError::Malformed(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The answer's text: the status and a one-line reason, which names no upstream
    /// address (the log line does).
    fn text(&self) -> String {
        let why = match self {
            ProxyError::NoRoute => "no route for this host and path".to_owned(),
            ProxyError::NoEndpoints(_) => "no endpoints available".to_owned(),
            ProxyError::Connect(_) => "the upstream could not be reached".to_owned(),
            ProxyError::ConnectTimeout(_) => "connecting to the upstream timed out".to_owned(),
            ProxyError::Upstream(_) => "the upstream failed to answer".to_owned(),
            ProxyError::Timeout => "the upstream did not answer in time".to_owned(),
            ProxyError::TooLarge(limit) => format!("the request body is larger than {limit} bytes"),
            ProxyError::BadRequest(why) => (*why).to_owned(),
            ProxyError::Malformed(why) => format!("a malformed request: {why}"),
            ProxyError::HeadTooLarge => "the request head is too large".to_owned(),
            ProxyError::NotImplemented(why) => why.clone(),
        };
        let status = self.status();
        format!(
            "{} {}: {why}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
    }

    /// The answer: the status and a one-line plain-text reason.
    pub(crate) fn response(&self) -> Response<Body> {
        let mut response = Response::new(body::full(self.text()));
        *response.status_mut() = self.status();
        crate::headers::plain_text(response.headers_mut());
        response
    }

    /// The answer as HTTP/1.1 bytes, with `connection: close` when `close`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>, close: bool) {
        use std::io::Write;
        let status = self.status();
        let text = self.text();
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             x-content-type-options: nosniff\r\ncontent-length: {}\r\n{}\r\n{text}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            text.len(),
            if close { "connection: close\r\n" } else { "" },
        );
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoRoute => f.write_str("no route"),
            ProxyError::NoEndpoints(why) => write!(f, "no endpoints: {why}"),
            ProxyError::Connect(why) => write!(f, "connect failed: {why}"),
            ProxyError::ConnectTimeout(why) => write!(f, "connect timed out: {why}"),
            ProxyError::Upstream(why) => write!(f, "upstream failed: {why}"),
            ProxyError::Timeout => f.write_str("no response within request_timeout"),
            ProxyError::TooLarge(limit) => write!(f, "request body over {limit} bytes"),
            ProxyError::BadRequest(why) => write!(f, "bad request: {why}"),
            ProxyError::Malformed(why) => write!(f, "malformed request: {why}"),
            ProxyError::HeadTooLarge => f.write_str("request head too large"),
            ProxyError::NotImplemented(why) => write!(f, "not implemented: {why}"),
        }
    }
}

impl From<proxy_core::Error> for ProxyError {
    fn from(e: proxy_core::Error) -> Self {
        use proxy_core::ErrorKind;
        let why = match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Resolve => ProxyError::NoEndpoints(why),
            ErrorKind::Timeout(_) => ProxyError::ConnectTimeout(why),
            _ => ProxyError::Connect(why),
        }
    }
}
