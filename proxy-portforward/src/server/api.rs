//! The answers: discovery, objects, and the port-forward upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::idle::IdleIo;
use super::route::{Resource, Route, route};
use super::upgrade::{self, Upgrade};
use super::{Body, Shared};
use crate::forward::{self, Wire};
use crate::status::{REASON_NOT_FOUND, Status};

impl Shared {
    /// The answer to one request.
    pub(super) fn respond(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        if !self.authorized(&request) {
            return status(&Status::unauthorized());
        }
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let route = route(&path);
        if let Route::PortForward { namespace, name } = route {
            return self.port_forward(&mut request, namespace, name, &query, client);
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return status(&method_not_allowed());
        }
        match route {
            Route::Discovery(path) => json(crate::discovery::document(path).unwrap_or_default()),
            Route::Get {
                resource,
                namespace,
                name,
            } => self.get(resource, namespace, name),
            Route::ListPods { namespace } => self.list_pods(namespace, &query),
            Route::PortForward { .. } | Route::Unknown => status(&unknown_path()),
        }
    }

    pub(super) fn authorized<B>(&self, request: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = (request.headers().get(AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    fn get(&self, resource: Resource, namespace: &str, name: &str) -> Response<Body> {
        let cluster = self.cluster();
        let object = match resource {
            Resource::Pods => cluster.pod(namespace, name).map(|p| p.to_json()),
            Resource::Services => cluster.service(namespace, name).map(|s| s.to_json()),
            Resource::Deployments => cluster.deployment(namespace, name).map(|d| d.to_json()),
            Resource::Absent(_) => None,
        };
        match object {
            Some(object) => json(object),
            None => status(&Status::not_found(resource.qualified(), name)),
        }
    }

    fn list_pods(&self, namespace: &str, query: &str) -> Response<Body> {
        let selector = crate::query::first(query, "labelSelector").unwrap_or_default();
        let served = self.cluster.borrow().clone();
        let mut list = match served.cluster.pod_list_json(namespace, &selector) {
            Ok(list) => list,
            Err(error) => return status(&Status::bad_request(error.to_string())),
        };
        if crate::query::first(query, "watch").is_some_and(|w| w == "true" || w == "1") {
            let timeout = (crate::query::first(query, "timeoutSeconds"))
                .and_then(|t| t.parse().ok())
                .map_or(super::pod_watch::DEFAULT_TIMEOUT, Duration::from_secs);
            let body = super::pod_watch::pods(
                self.cluster.subscribe(),
                namespace.to_owned(),
                selector,
                crate::query::first(query, "resourceVersion").and_then(|v| v.parse().ok()),
                timeout,
            );
            return respond_with(StatusCode::OK, body);
        }
        list["metadata"]["resourceVersion"] = served.version.to_string().into();
        json(list)
    }

    fn port_forward(
        self: &Arc<Self>,
        request: &mut Request<Incoming>,
        namespace: &str,
        name: &str,
        query: &str,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        let upgrade = match upgrade::read(
            request.method(),
            request.headers(),
            query,
            &self.protocols,
            self.udp.is_some(),
        ) {
            Ok(upgrade) => upgrade,
            Err(refused) => return status(&refused),
        };
        let cluster = self.cluster();
        let Some(pod) = cluster.pod(namespace, name) else {
            return status(&Status::not_found("pods", name));
        };
        if !pod.running {
            return status(&Status::bad_request(format!(
                "pod {name} is not running (phase Pending): nothing to forward to"
            )));
        }
        let udp = matches!(
            upgrade,
            Upgrade::Spdy { udp: true } | Upgrade::Tunnel { udp: true, .. }
        );
        let forward = self.pod_forward(pod, client, udp);
        let on_upgrade = hyper::upgrade::on(request);
        let response = upgrade::switching(&upgrade);
        let idle_timeout = self.idle_timeout;
        tokio::spawn(async move {
            let io = match on_upgrade.await {
                Ok(upgraded) => IdleIo::new(TokioIo::new(upgraded), idle_timeout),
                Err(error) => {
                    tracing::debug!(client = ?client, %error, "upgrade failed");
                    return;
                }
            };
            let served = match upgrade {
                Upgrade::Spdy { .. } => forward::serve_spdy(io, forward, Wire::Spdy).await,
                Upgrade::Tunnel { .. } => {
                    let ws = forward::server_stream(io).await;
                    forward::serve_spdy_tunnel(ws, forward).await
                }
                Upgrade::Channels {
                    protocol, ports, ..
                } => {
                    let ws = forward::server_stream(io).await;
                    forward::serve_channels(ws, ports, protocol, forward).await
                }
            };
            if let Err(error) = served {
                tracing::debug!(client = ?client, %error, "port-forward session ended with an error");
            }
        });
        response
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API server's answer to a path it does not serve.
fn unknown_path() -> Status {
    Status::failure(
        404,
        REASON_NOT_FOUND,
        "the server could not find the requested resource",
    )
}

/// The API server's answer to a method a path does not take.
fn method_not_allowed() -> Status {
    Status::failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

fn json(value: Value) -> Response<Body> {
    respond(StatusCode::OK, value.to_string())
}

fn status(status: &Status) -> Response<Body> {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(code, status.to_json())
}

fn respond(code: StatusCode, body: String) -> Response<Body> {
    respond_with(code, Full::new(Bytes::from(body)).boxed())
}

fn respond_with(code: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
