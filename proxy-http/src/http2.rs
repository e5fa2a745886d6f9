//! HTTP/2 for clients that chose `h2` by ALPN in the TLS handshake: hyper's HTTP/2
//! server on the client connection, every request answered as the hyper path answers an
//! HTTP/1.1 one ([`Shared::handle`]: routed by host (`:authority`) and longest path
//! prefix, or the service proxy's URL) and forwarded over HTTP/1.1 on the backend's
//! pooled hyper client connections; bodies stream both ways.
//!
//! What is its own: the limits HTTP/2 has instead of HTTP/1.1's (streams per connection,
//! the header list's size), the `Cookie` crumbs of HTTP/2 joined into the one header
//! HTTP/1.1 upstreams expect, no connection-specific headers in responses, request
//! bodies answered early read on for a moment ([`Lingering`]), and the drain by GOAWAY.
//!
//! Not offered: extended CONNECT (WebSocket over HTTP/2, RFC 8441; clients that want a
//! WebSocket use HTTP/1.1), CONNECT tunnels, h2c (HTTP/2 without TLS), server push.
//! Upstreams are always spoken to in HTTP/1.1 (so gRPC servers, HTTP/2 only, are not).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use proxy_core::Admitted;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::Body;
use crate::error::ProxyError;
use crate::exchange::{ClientTls, Exchange};
use crate::idle::{LastActive, Watched};
use crate::server::{Shared, Stop};

/// The most streams (requests) a client may have open at once on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// How much more of a request body answered before its end is read, and for how long, so
/// that the client can finish sending it (see [`Lingering`]).
const LINGER_BYTES: u64 = 1 << 20;
const LINGER_FOR: Duration = Duration::from_secs(2);

/// What each header field adds to a header list's size besides its name and value
/// (RFC 9113 §6.5.2).
const FIELD_OVERHEAD: usize = 32;

/// Serves the HTTP/2 client connection `stream` from `peer` (TLS terminated, `tls` what
/// its handshake agreed on) until it closes, idles out, or the forwarder drains.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admitted: Admitted,
    tls: ClientTls,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (max_header_size, header_timeout, idle_timeout) = {
        let current = shared.current();
        let spec = &current.spec;
        (spec.max_header_size, spec.header_timeout, spec.idle_timeout)
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // A header list up to twice `max_header_size` is read and answered 431 with the
        // proxy's reason (and logged); past that, HTTP/2 itself refuses it.
        .max_header_list_size(u32::try_from(max_header_size * 2).unwrap_or(u32::MAX));
    // Set once a request came: the first must come within the `header_timeout`.
    let asked = Arc::new(AtomicBool::new(false));
    let service = {
        let (shared, asked) = (shared.clone(), asked.clone());
        service_fn(move |request: Request<Incoming>| {
            asked.store(true, Ordering::Relaxed);
            let shared = shared.clone();
            let tls = tls.clone();
            async move {
                let response = answer(&shared, request, peer, tls, max_header_size).await;
                Ok::<_, Infallible>(response)
            }
        })
    };
    let last = LastActive::new();
    let connection =
        builder.serve_connection(TokioIo::new(Watched::new(stream, last.clone())), service);
    let mut connection = pin!(connection);
    // No byte moved for the idle timeout (no request, or only stalled ones).
    let idle = || async {
        match idle_timeout {
            Some(limit) => last.idle_for(limit).await,
            None => std::future::pending().await,
        }
    };
    // No request within the header timeout of the handshake.
    let silent = async {
        if let Some(limit) = header_timeout {
            tokio::time::sleep(limit).await;
            if !asked.load(Ordering::Relaxed) {
                return;
            }
        }
        std::future::pending().await
    };
    let stop = tokio::select! {
        r = connection.as_mut() => Ok(r),
        () = given(&shared.draining) => Err(Stopped::Drain),
        () = idle() => Err(Stopped::Idle),
        () = silent => Err(Stopped::Silent),
    };
    let ended = match stop {
        Ok(r) => Some(r),
        // Nothing was asked: nothing to finish (nor, maybe, a client that would answer
        // the GOAWAY's PING).
        Err(Stopped::Silent) => None,
        Err(stopped) => {
            // GOAWAY: no new streams; those open finish, then the connection closes
            // (once the client has answered a PING). Idle, it gets another idle timeout
            // for that; draining, until the drain ends.
            connection.as_mut().graceful_shutdown();
            let idle_again = async {
                match (stopped, idle_timeout) {
                    (Stopped::Idle, Some(limit)) => {
                        // From now: the last byte moved an idle timeout ago.
                        tokio::time::sleep(limit).await;
                        idle().await;
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = connection => Some(r),
                () = given(&shared.closing) => None,
                () = idle_again => None,
            }
        }
    };
    if let Some(Err(e)) = ended {
        tracing::debug!(client = %peer, error = %e, "HTTP/2 client connection ended");
    }
    drop(admitted);
}

/// Why a connection is being closed by the proxy.
#[derive(Clone, Copy)]
enum Stopped {
    /// The forwarder drains.
    Drain,
    /// No byte moved for the idle timeout.
    Idle,
    /// No request came within the header timeout.
    Silent,
}

/// Answers one request of an HTTP/2 connection.
async fn answer(
    shared: &Shared,
    request: Request<Incoming>,
    peer: SocketAddr,
    tls: ClientTls,
    max_header_size: usize,
) -> Response<Body> {
    let mut request = request.map(|body| Lingering(Some(body)));
    request.extensions_mut().insert(tls);
    let refused = if header_list_size(&request) > max_header_size {
        Some(ProxyError::HeadTooLarge)
    } else if request.method() == Method::CONNECT {
        // A tunnel (or, with `:protocol`, RFC 8441's WebSocket): not offered.
        Some(ProxyError::Malformed("CONNECT is not supported".to_owned()))
    } else {
        None
    };
    if let Some(why) = refused {
        return Exchange::new(&request, peer).refuse(&shared.unrouted, &why);
    }
    join_cookies(request.headers_mut());
    let mut response = shared.handle(request, peer).await;
    connection_specific_out(response.headers_mut());
    response
}

/// The size of `request`'s header list as HTTP/2 counts it (RFC 9113 §6.5.2): each
/// field's name and value and 32 more, pseudo-header fields included.
fn header_list_size<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let pseudo = [
        (":method".len(), Some(request.method().as_str().len())),
        (":scheme".len(), uri.scheme_str().map(str::len)),
        (
            ":authority".len(),
            uri.authority().map(|a| a.as_str().len()),
        ),
        (
            ":path".len(),
            uri.path_and_query().map(|p| p.as_str().len()),
        ),
    ];
    let pseudo: usize = (pseudo.iter())
        .filter_map(|&(name, value)| Some(name + value? + FIELD_OVERHEAD))
        .sum();
    let fields: usize = (request.headers().iter())
        .map(|(name, value)| name.as_str().len() + value.len() + FIELD_OVERHEAD)
        .sum();
    pseudo + fields
}

/// Joins the `Cookie` fields HTTP/2 clients may split a cookie list into (RFC 9113
/// §8.2.3) into the one field an HTTP/1.1 upstream expects (RFC 6265 §5.4).
fn join_cookies(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = BytesMut::new();
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes what HTTP/2 forbids in a response (RFC 9113 §8.2.2): the hop-by-hop headers
/// (the upstream's were removed already; these are the proxy's own answers') and `TE`.
fn connection_specific_out(headers: &mut HeaderMap) {
    crate::headers::remove_hop_by_hop(headers, None);
    headers.remove(header::TE);
}

/// A request body that, dropped before its end (the proxy answered without it, or the
/// upstream answered early), is read on by a task of its own for up to [`LINGER_BYTES`]
/// and [`LINGER_FOR`]: the client finishes sending, and the stream ends as HTTP/2
/// streams usually do, not with the RST_STREAM(NO_ERROR) that RFC 9113 §8.1 allows
/// after an early response but some clients (curl 7.88) take for an error, losing the
/// response they were given.
struct Lingering(Option<Incoming>);

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.0 {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let read_on = async {
                let mut read = 0;
                while read <= LINGER_BYTES
                    && let Some(Ok(frame)) = body.frame().await
                {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
            };
            let _ = tokio::time::timeout(LINGER_FOR, read_on).await;
        });
    }
}

/// Waits for `stop`. Its token's future is polled (taking a lock every connection
/// shares) to register the task, and again only once the flag says the signal came:
/// an HTTP/2 connection's task wakes for every frame.
async fn given(stop: &Stop) {
    let mut wait = pin!(stop.token.cancelled());
    let mut registered = false;
    poll_fn(|cx| {
        if registered && !stop.is_given() {
            return Poll::Pending;
        }
        registered = true;
        wait.as_mut().poll(cx)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_crumbs_are_joined_and_a_single_cookie_stays() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1");
        h.append(header::COOKIE, HeaderValue::from_static("SERVERID=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; SERVERID=abc; b=2"]);
    }

    #[test]
    fn the_header_list_size_counts_pseudo_fields_and_32_per_field() {
        let request = Request::builder()
            .uri("https://shop.example/a?b")
            .header("x-y", "z")
            .body(())
            .unwrap();
        let pseudo = (7 + 3 + 32) + (7 + 5 + 32) + (10 + 12 + 32) + (5 + 4 + 32);
        assert_eq!(header_list_size(&request), pseudo + (3 + 1 + 32));
    }

    #[test]
    fn responses_lose_connection_specific_headers() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("content-type", "text/plain"),
        ] {
            h.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        connection_specific_out(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }
}
