//! Which protocol an upgrade request asks for, read from its headers with no I/O, and the
//! `101 Switching Protocols` answers.

use http::header::{CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Method, Response, StatusCode};

use crate::channel::{self, Protocol};
use crate::status::Status;
use crate::udp;

/// The `Upgrade` token of SPDY/3.1.
pub(crate) const SPDY: &str = "SPDY/3.1";
/// The header naming the stream protocols a SPDY client speaks.
pub(crate) const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The one stream protocol of port-forward.
pub(crate) const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled over WebSocket (Kubernetes 1.30+).
pub(crate) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// What an upgrade request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// SPDY/3.1 on this connection (`udp`: with UDP streams, [`udp::SPDY_PROTOCOL`]).
    Spdy { udp: bool },
    /// SPDY/3.1 in a WebSocket's binary messages (`udp`: [`udp::TUNNEL_PROTOCOL`]).
    Tunnel { key: String, udp: bool },
    /// The channel protocol for these ports.
    Channels {
        key: String,
        protocol: Protocol,
        ports: Vec<u16>,
    },
}

/// Why an upgrade is refused: the HTTP status and its `Status` body (boxed: the refusal is
/// the rare path).
pub(crate) type Refusal = Box<Status>;

/// Reads the upgrade `method`, `headers` and `query` ask for, as the kubelet and the API
/// server do; `protocols` are the channel protocols offered; `udp`: UDP streams are
/// served (selected when the client offers them, [`udp`]).
pub(crate) fn read(
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    protocols: &[Protocol],
    udp: bool,
) -> Result<Upgrade, Refusal> {
    let upgrade = header_tokens(headers, UPGRADE.as_str());
    let connection_upgrade =
        header_tokens(headers, CONNECTION.as_str()).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let upgrade: Vec<&str> = upgrade.collect();
    if !connection_upgrade || upgrade.is_empty() {
        return Err(Box::new(Status::bad_request(
            "Upgrade request required: port-forward needs a connection upgraded to \
             SPDY/3.1 or a WebSocket",
        )));
    }
    if upgrade.iter().any(|t| t.eq_ignore_ascii_case("websocket")) {
        if method != Method::GET {
            return Err(Box::new(Status::bad_request(format!(
                "a WebSocket upgrade is a GET, not a {method}"
            ))));
        }
        let key = websocket_key(headers)?;
        let offered: Vec<&str> = header_values(headers, "sec-websocket-protocol").collect();
        let offers = |name: &str| {
            offered
                .iter()
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == name)
        };
        if udp && offers(udp::TUNNEL_PROTOCOL) {
            return Ok(Upgrade::Tunnel { key, udp: true });
        }
        if offers(TUNNEL_PROTOCOL) {
            return Ok(Upgrade::Tunnel { key, udp: false });
        }
        let ports = channel::parse_query(query).map_err(|e| Box::new(e.status()))?;
        let protocol = channel::negotiate(offered, protocols)
            .map_err(|e| Box::new(Status::forbidden(e.to_string())))?;
        return Ok(Upgrade::Channels {
            key,
            protocol,
            ports,
        });
    }
    if upgrade.iter().any(|t| t.eq_ignore_ascii_case(SPDY)) {
        let offered: Vec<&str> = header_values(headers, STREAM_PROTOCOL_HEADER)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if udp && offered.contains(&udp::SPDY_PROTOCOL) {
            return Ok(Upgrade::Spdy { udp: true });
        }
        if !offered.is_empty() && !offered.contains(&PORT_FORWARD_PROTOCOL) {
            let accepts = if udp {
                format!("[\"{}\" \"{PORT_FORWARD_PROTOCOL}\"]", udp::SPDY_PROTOCOL)
            } else {
                format!("[\"{PORT_FORWARD_PROTOCOL}\"]")
            };
            return Err(Box::new(Status::forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {accepts}"
            ))));
        }
        return Ok(Upgrade::Spdy { udp: false });
    }
    Err(Box::new(Status::bad_request(format!(
        "unable to upgrade: {:?} is not SPDY/3.1 or websocket",
        upgrade.join(", ")
    ))))
}

/// The `101` that accepts `upgrade`.
pub(crate) fn switching<B: Default>(upgrade: &Upgrade) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::Spdy { udp } => {
            headers.insert(UPGRADE, HeaderValue::from_static(SPDY));
            let protocol = if *udp {
                udp::SPDY_PROTOCOL
            } else {
                PORT_FORWARD_PROTOCOL
            };
            headers.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
        Upgrade::Tunnel { key, .. } | Upgrade::Channels { key, .. } => {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            let accept = crate::forward::accept_key(key);
            headers.insert(
                "sec-websocket-accept",
                HeaderValue::from_str(&accept).expect("base64 is a header value"),
            );
            let protocol = match upgrade {
                Upgrade::Tunnel { udp: true, .. } => Some(udp::TUNNEL_PROTOCOL),
                Upgrade::Tunnel { udp: false, .. } => Some(TUNNEL_PROTOCOL),
                Upgrade::Channels { protocol, .. } => protocol.name(),
                Upgrade::Spdy { .. } => None,
            };
            if let Some(protocol) = protocol {
                headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            }
        }
    }
    response
}

/// `Sec-WebSocket-Key`, with `Sec-WebSocket-Version: 13` checked.
fn websocket_key(headers: &HeaderMap) -> Result<String, Refusal> {
    let version_ok = header_values(headers, "sec-websocket-version").any(|v| v.trim() == "13");
    if !version_ok {
        return Err(Box::new(Status::bad_request(
            "a WebSocket upgrade needs Sec-WebSocket-Version: 13",
        )));
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Box::new(Status::bad_request(
                "a WebSocket upgrade needs Sec-WebSocket-Key",
            ))
        })
}

/// Every value of header `name` that is text.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

/// The comma-separated tokens of header `name`, trimmed.
fn header_tokens<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const KUBECTL_SPDY: &[(&str, &str)] = &[
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "portforward.k8s.io"),
    ];

    #[test]
    fn spdy_as_kubectl_asks() {
        let h = headers(KUBECTL_SPDY);
        let up = read(&Method::POST, &h, "", channel::KUBELET_PROTOCOLS, true).unwrap();
        assert_eq!(up, Upgrade::Spdy { udp: false });
        let r: Response<()> = switching(&up);
        assert_eq!(r.status(), 101);
        assert_eq!(r.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(
            r.headers()["x-stream-protocol-version"],
            "portforward.k8s.io"
        );
    }

    #[test]
    fn spdy_for_another_stream_protocol_is_forbidden() {
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ]);
        let refused = read(&Method::POST, &h, "", channel::KUBELET_PROTOCOLS, true).unwrap_err();
        assert_eq!(refused.code, 403);
        assert!(
            refused.message.contains("unable to negotiate protocol"),
            "{refused:?}"
        );
    }

    #[test]
    fn websocket_channels_and_tunnel() {
        let base = [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let mut channels = base.to_vec();
        channels.push(("Sec-WebSocket-Protocol", "v4.channel.k8s.io"));
        let up = read(
            &Method::GET,
            &headers(&channels),
            "ports=80&ports=443",
            channel::KUBELET_PROTOCOLS,
            true,
        )
        .unwrap();
        assert_eq!(
            up,
            Upgrade::Channels {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
                protocol: Protocol::V4Binary,
                ports: vec![80, 443]
            }
        );
        let r: Response<()> = switching(&up);
        // RFC 6455's example key and answer.
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");

        let mut tunnel = base.to_vec();
        tunnel.push(("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io"));
        let up = read(&Method::GET, &headers(&tunnel), "", &[], true).unwrap();
        assert!(matches!(up, Upgrade::Tunnel { .. }));
        let r: Response<()> = switching(&up);
        assert_eq!(r.headers()["sec-websocket-protocol"], TUNNEL_PROTOCOL);

        // Channels without ports: the kubelet's 400.
        let refused = read(
            &Method::GET,
            &headers(&channels),
            "",
            channel::KUBELET_PROTOCOLS,
            true,
        )
        .unwrap_err();
        assert_eq!(refused.code, 400);
        // A POST WebSocket, and a missing version.
        assert_eq!(
            read(&Method::POST, &headers(&channels), "ports=1", &[], true)
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            read(&Method::GET, &headers(&channels[..3]), "ports=1", &[], true)
                .unwrap_err()
                .code,
            400
        );
    }

    /// Real kubectl offers `portforward.k8s.io` alone: the answer is that, UDP served or
    /// not, so kubectl (and any Kubernetes client) sees nothing new.
    #[test]
    fn kubectl_gets_portforward_whether_udp_is_served_or_not() {
        for serve_udp in [true, false] {
            let h = headers(KUBECTL_SPDY);
            let up = read(&Method::POST, &h, "", channel::KUBELET_PROTOCOLS, serve_udp).unwrap();
            assert_eq!(up, Upgrade::Spdy { udp: false });
            let r: Response<()> = switching(&up);
            assert_eq!(
                r.headers()["x-stream-protocol-version"],
                "portforward.k8s.io"
            );
        }
    }

    #[test]
    fn udp_is_selected_when_offered_and_served() {
        let mut offer = KUBECTL_SPDY[..2].to_vec();
        for p in udp::SPDY_OFFER {
            offer.push(("X-Stream-Protocol-Version", p));
        }
        let h = headers(&offer);
        let up = read(&Method::POST, &h, "", &[], true).unwrap();
        assert_eq!(up, Upgrade::Spdy { udp: true });
        let r: Response<()> = switching(&up);
        assert_eq!(
            r.headers()["x-stream-protocol-version"],
            "udp.portforward.proxy-rs.dev"
        );
        // Not served: the server answers as the kubelet does.
        let up = read(&Method::POST, &h, "", &[], false).unwrap();
        assert_eq!(up, Upgrade::Spdy { udp: false });
        let r: Response<()> = switching(&up);
        assert_eq!(
            r.headers()["x-stream-protocol-version"],
            "portforward.k8s.io"
        );
        // One comma-separated header line works too.
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            (
                "X-Stream-Protocol-Version",
                "udp.portforward.proxy-rs.dev, portforward.k8s.io",
            ),
        ]);
        assert_eq!(
            read(&Method::POST, &h, "", &[], true).unwrap(),
            Upgrade::Spdy { udp: true }
        );
        // UDP alone, not served: refused, never TCP instead.
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "udp.portforward.proxy-rs.dev"),
        ]);
        assert_eq!(
            read(&Method::POST, &h, "", &[], false).unwrap_err().code,
            403
        );
    }

    #[test]
    fn udp_tunnel_is_selected_when_offered_and_served() {
        let h = headers(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", &udp::TUNNEL_OFFER.join(", ")),
        ]);
        let up = read(&Method::GET, &h, "", &[], true).unwrap();
        assert!(matches!(up, Upgrade::Tunnel { udp: true, .. }));
        let r: Response<()> = switching(&up);
        assert_eq!(
            r.headers()["sec-websocket-protocol"],
            "SPDY/3.1+udp.portforward.proxy-rs.dev"
        );
        let up = read(&Method::GET, &h, "", &[], false).unwrap();
        assert!(matches!(up, Upgrade::Tunnel { udp: false, .. }));
        let r: Response<()> = switching(&up);
        assert_eq!(r.headers()["sec-websocket-protocol"], TUNNEL_PROTOCOL);
    }

    #[test]
    fn no_upgrade_is_a_bad_request() {
        let refused = read(&Method::POST, &HeaderMap::new(), "", &[], true).unwrap_err();
        assert_eq!(refused.code, 400);
        assert!(refused.message.contains("Upgrade request required"));
    }
}
