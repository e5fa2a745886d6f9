//! One request's trip through the proxy: the request made ready for the upstream (its
//! URI in origin form, hop-by-hop headers out, forwarded headers in, the body limit), the
//! backend's answer made ready for the client (the sticky cookie, an upgrade turned into
//! a byte relay), and one access-log line and the route's counters when it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as HttpBody;
use hyper_util::rt::TokioIo;
use proxy_core::tls::TlsInfo;
use tokio::time::Instant;

use crate::backend::{Backend, Sent};
use crate::body::{self, Body, BoxError, Ended, Limited, Progress, Tracked};
use crate::error::ProxyError;
use crate::headers::{self, Origin, X_FORWARDED_URI};
use crate::pool::Driven;
use crate::stats::RouteStats;

/// What the TLS handshake of a request's connection agreed on: in the request's
/// extensions when the proxy terminated TLS (the hyper path).
#[derive(Clone, Debug)]
pub(crate) struct ClientTls(pub(crate) Arc<TlsInfo>);

impl ClientTls {
    /// `https` when `request` came over TLS, else `http`.
    pub(crate) fn proto<B>(request: &Request<B>) -> &'static str {
        match request.extensions().get::<ClientTls>() {
            Some(_) => "https",
            None => "http",
        }
    }
}

/// A request body as a client sends it: hyper's `Incoming`, or the HTTP/2 path's wrapper
/// of it.
pub(crate) trait ClientBody:
    HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

impl<B: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static> ClientBody for B {}

/// What the access log says of a request, taken as it arrives.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub(crate) start: Instant,
    pub(crate) client: SocketAddr,
    pub(crate) method: http::Method,
    /// The `Host` header or the URI's authority; cheap to clone (shared bytes).
    host: Option<HeaderValue>,
    /// The request's URI, for its path; cheap to clone.
    uri: Uri,
    pub(crate) route: Arc<str>,
    /// Its connection's TLS, when the proxy terminated it.
    tls: Option<Arc<TlsInfo>>,
}

impl Exchange {
    /// The request as it arrived from `client`.
    pub(crate) fn new<B>(request: &Request<B>, client: SocketAddr) -> Exchange {
        Exchange {
            start: Instant::now(),
            client,
            method: request.method().clone(),
            host: (request.headers().get(header::HOST).cloned()).or_else(|| {
                (request.uri().authority()).and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            }),
            uri: request.uri().clone(),
            route: Arc::from("-"),
            tls: (request.extensions().get::<ClientTls>()).map(|t| t.0.clone()),
        }
    }

    /// Writes the access-log line and counts the request in `stats`.
    pub(crate) fn end(
        &self,
        stats: &RouteStats,
        status: StatusCode,
        bytes: (u64, u64),
        upstream: &dyn std::fmt::Display,
        ended: Ended,
    ) {
        let elapsed = self.start.elapsed();
        stats.bytes(bytes.0, bytes.1);
        let tls = self.tls.as_deref();
        tracing::info!(
            target: "proxy_http::access",
            client = %self.client,
            method = %self.method,
            host = self.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
            path = self.uri.path(),
            status = status.as_u16(),
            bytes_in = bytes.0,
            bytes_out = bytes.1,
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            route = %self.route,
            upstream = %upstream,
            complete = ended == Ended::Complete,
            tls = tls.map(|t| t.version),
            sni = tls.and_then(|t| t.server_name.as_deref()),
            client_cn = tls.and_then(|t| t.client_cn.as_deref()),
        );
    }

    /// Answers the request with `error`, counted and logged.
    pub(crate) fn refuse(&self, stats: &RouteStats, error: &ProxyError) -> Response<Body> {
        let response = error.response();
        stats.answered(response.status().as_u16(), self.start.elapsed());
        tracing::debug!(client = %self.client, path = self.uri.path(), error = %error, "answered by the proxy");
        self.end(stats, response.status(), (0, 0), &"-", Ended::Complete);
        response
    }
}

/// The host a request is for: the `Host` header, or the authority of an absolute URI.
pub(crate) fn host_of<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

/// How one request goes upstream.
pub(crate) struct Forward<'a> {
    pub(crate) backend: &'a Arc<Backend>,
    pub(crate) stats: &'a Arc<RouteStats>,
    /// The path and query sent upstream.
    pub(crate) uri: Uri,
    /// `http` or `https`, as the client spoke to the proxy.
    pub(crate) proto: &'static str,
    /// Also set `X-Forwarded-Uri` to the URI the client asked for (as the API server does).
    pub(crate) forwarded_uri: bool,
    /// Of the forwarded headers, only append to `X-Forwarded-For` (as `kubectl proxy`
    /// does on its way to the API server).
    pub(crate) forwarded_for_only: bool,
    /// Headers set on the request after the forwarded ones (`Host`, `Authorization`).
    pub(crate) set_headers: Option<&'a http::HeaderMap>,
}

impl Forward<'_> {
    /// Sends `request` upstream and answers with the upstream's response, or with the
    /// status the failure calls for.
    pub(crate) async fn run(
        self,
        mut request: Request<impl ClientBody>,
        exchange: Exchange,
    ) -> Response<Body> {
        let stats = self.stats;
        let backend = self.backend;
        let upgrade = headers::upgrade(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        if let (Some(limit), Some(length)) = (backend.max_request_body, content_length(&request))
            && length > limit
        {
            return exchange.refuse(stats, &ProxyError::TooLarge(limit));
        }
        let sticky = backend
            .sticky_cookie
            .as_deref()
            .and_then(|name| cookie(request.headers(), name));
        let (mut parts, incoming) = request.into_parts();
        let origin = Origin {
            client: exchange.client.ip(),
            host: parts.headers.get(header::HOST).cloned(),
            proto: self.proto,
        };
        headers::remove_hop_by_hop(&mut parts.headers, upgrade.clone());
        if self.forwarded_uri
            && let Ok(v) = HeaderValue::from_str(&parts.uri.to_string())
        {
            parts.headers.insert(X_FORWARDED_URI, v);
        }
        if self.forwarded_for_only {
            origin.forwarded_for(&mut parts.headers);
        } else {
            origin.apply(&mut parts.headers);
        }
        for (name, value) in self.set_headers.into_iter().flatten() {
            parts.headers.insert(name, value.clone());
        }
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        parts.uri = self.uri;
        parts.version = Version::HTTP_11;
        let sending = Arc::new(Progress::default());
        let progress = sending.clone();
        let counting = Tracked::new(incoming, move |n, ended| progress.record(n, ended));
        let body = match backend.max_request_body {
            Some(limit) => body::boxed(Limited::new(counting, limit)),
            None => body::boxed(counting),
        };
        let request = Request::from_parts(parts, body);
        let sent = match backend
            .send(request, exchange.client.ip(), sticky.as_deref())
            .await
        {
            Ok(sent) => sent,
            Err(e) => {
                let e = match e {
                    ProxyError::Upstream(why) => {
                        tracing::warn!(client = %exchange.client, upstream = %backend.name(), error = %why, "upstream failed");
                        ProxyError::Upstream(why)
                    }
                    e => e,
                };
                return exchange.refuse(stats, &e);
            }
        };
        let Sent {
            response,
            addr,
            conn,
            open,
            set_cookie,
        } = sent;
        let (mut head, incoming) = response.into_parts();
        stats.answered(head.status.as_u16(), exchange.start.elapsed());
        let upgraded = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let response_upgrade = upgraded.then(|| headers::upgrade(&head.headers)).flatten();
        headers::remove_hop_by_hop(&mut head.headers, response_upgrade);
        if let (Some(name), Some(value)) = (&backend.sticky_cookie, set_cookie)
            && let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly"))
        {
            head.headers.append(header::SET_COOKIE, v);
        }
        // Formatted only when the access-log line is written.
        let upstream = UpstreamName {
            addr,
            backend: backend.clone(),
        };
        let status = head.status;
        if upgraded {
            let mut response = Response::from_parts(head, incoming);
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (head, _) = response.into_parts();
            let stats = stats.clone();
            tokio::spawn(async move {
                let _open = open;
                let relayed = async {
                    match client_upgrade {
                        Some(client) => relay(client, upstream_upgrade).await,
                        None => ((0, 0), Ended::Cut),
                    }
                };
                // The connection hands its I/O over to the relay when its driver ends.
                let ((), (bytes, ended)) = tokio::join!(conn.finish(), relayed);
                exchange.end(&stats, status, bytes, &upstream, ended);
            });
            return Response::from_parts(head, body::empty());
        }
        let stats = stats.clone();
        let driven = Driven::new(incoming, conn, backend.pool().clone(), sending.clone());
        let body = Tracked::new(driven, move |bytes, ended| {
            drop(open);
            exchange.end(&stats, status, (sending.bytes(), bytes), &upstream, ended);
        });
        Response::from_parts(head, body::boxed(body))
    }
}

/// The upstream as the access log names it: the address, or a connector's name.
struct UpstreamName {
    addr: SocketAddr,
    backend: Arc<Backend>,
}

impl std::fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr.port() {
            0 => f.write_str(&self.backend.name()),
            _ => self.addr.fmt(f),
        }
    }
}

/// Relays bytes both ways between an upgraded client and upstream connection until both
/// are done; the byte counts (client to upstream, upstream to client).
async fn relay(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) -> ((u64, u64), Ended) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return ((0, 0), Ended::Cut);
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok(bytes) => (bytes, Ended::Complete),
        Err(e) => {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
            ((0, 0), Ended::Cut)
        }
    }
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    (headers.get_all(header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_several() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SERVERID=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie(&h, "SERVERID").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "SERVER"), None);
    }
}
