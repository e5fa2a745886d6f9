//! What a proxy changes in headers: hop-by-hop headers removed both ways (RFC 9110
//! §7.6.1), upgrades kept, and the client told to the upstream with `X-Forwarded-*` and
//! `Forwarded` (RFC 7239).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (with those `Connection` names).
/// A `static`: a `const` array would be built (and dropped) at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host`.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Uri`, which the API server's proxy sets.
pub(crate) const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Marks an answer of the proxy's own as plain text, as Go's `http.Error` does:
/// `Content-Type: text/plain; charset=utf-8` and `X-Content-Type-Options: nosniff`.
pub(crate) fn plain_text(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The protocol a request asks to upgrade to (`websocket`), when it asks: `Upgrade` set
/// and `upgrade` among the `Connection` tokens.
pub(crate) fn upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = (headers.get_all(header::CONNECTION).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes the hop-by-hop headers, and those the `Connection` header names; an upgrade
/// (`Some(protocol)`) is kept as `Connection: upgrade` and `Upgrade: protocol`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // One pass over the names finds which are present (most messages have one or none:
    // `Connection`), so only those are looked up again to be removed.
    let mut present = 0_u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present != 0 {
        remove_present(headers, present);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// The index of `name` in [`HOP_BY_HOP`], if it is one: one `match` on the text, which
/// compares lengths before bytes (cheaper than nine `HeaderName` comparisons).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let i = match name.as_str() {
        "connection" => 0,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[i], name);
    Some(i)
}

/// Removes the hop-by-hop headers whose bits are set in `present`, and those named by
/// `Connection` (bit 0).
fn remove_present(headers: &mut HeaderMap, present: u16) {
    if present & 1 != 0 {
        // Names other than the hop-by-hop ones (`keep-alive` and `close` are the usual
        // tokens): collected first, as they are read from the map they are removed from.
        let named: Vec<HeaderName> = (headers.get_all(header::CONNECTION).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !is_usual_token(token))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name) && headers.contains_key(name))
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        // `TE: trailers` says the client takes trailers; it may pass (Go's proxy keeps it).
        if present & (1 << i) == 0 || (*name == header::TE && is_only_trailers(headers)) {
            continue;
        }
        headers.remove(name);
    }
}

/// `Connection` tokens that are options, or hop-by-hop names removed anyway: no header
/// name to parse.
fn is_usual_token(token: &str) -> bool {
    ["keep-alive", "close", "upgrade", "te"]
        .iter()
        .any(|usual| token.eq_ignore_ascii_case(usual))
}

fn is_only_trailers(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::TE).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// Who a request came from and how, for the forwarded headers.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// The client's address.
    pub(crate) client: IpAddr,
    /// The `Host` the client asked for, if it sent one.
    pub(crate) host: Option<HeaderValue>,
    /// `http` or `https`.
    pub(crate) proto: &'static str,
}

impl Origin {
    /// Tells the upstream of the client: appends its address to `X-Forwarded-For` and a
    /// `Forwarded` element (`for`, `host`, `proto`), and sets `X-Forwarded-Host` and
    /// `X-Forwarded-Proto`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        self.forwarded_for(headers);
        let ip = self.client.to_canonical();
        let mut text = String::with_capacity(64);
        text.push_str("for=");
        match ip {
            IpAddr::V4(_) => push_ip(&mut text, ip),
            IpAddr::V6(_) => {
                text.push_str("\"[");
                push_ip(&mut text, ip);
                text.push_str("]\"");
            }
        }
        if let Some(host) = self.host.as_ref().and_then(|h| h.to_str().ok()) {
            text.push_str(";host=");
            push_token_or_quoted(&mut text, host);
        }
        text.push_str(";proto=");
        text.push_str(self.proto);
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(header::FORWARDED, v);
        }
        match &self.host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
    }

    /// Only appends the client's address to `X-Forwarded-For`, as Go's `ReverseProxy`
    /// (and so `kubectl proxy`) does.
    pub(crate) fn forwarded_for(&self, headers: &mut HeaderMap) {
        let mut text = String::with_capacity(48);
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) if !prior.trim().is_empty() => {
                text.push_str(prior);
                text.push_str(", ");
            }
            _ => {}
        }
        push_ip(&mut text, self.client.to_canonical());
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
}

/// Appends `ip` as text; IPv4 without the formatting machinery (once per request).
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A `Forwarded` value: as a token when it is one, else quoted (RFC 7239 §4).
pub(crate) fn push_token_or_quoted(out: &mut String, value: &str) {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(value);
    } else {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn each_hop_by_hop_name_has_its_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::ACCEPT), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "*/*");
        let mut h = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h, None);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn an_upgrade_is_kept_as_upgrade_alone() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let up = upgrade(&h);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        remove_hop_by_hop(&mut h, up);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert_eq!(upgrade(&map(&[("upgrade", "websocket")])), None);
    }

    #[test]
    fn ipv4_text_is_displays() {
        for ip in ["0.0.0.0", "10.0.0.1", "100.99.9.255", "192.168.10.109"] {
            let mut out = String::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip);
        }
    }

    #[test]
    fn the_client_is_appended_and_the_host_and_proto_set() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let origin = Origin {
            client: "::ffff:10.0.0.1".parse().unwrap(),
            host: Some(HeaderValue::from_static("shop.example:8080")),
            proto: "http",
        };
        origin.apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "shop.example:8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        let fwd: Vec<_> = h.get_all("forwarded").iter().collect();
        assert_eq!(
            fwd,
            [
                "for=203.0.113.7",
                "for=10.0.0.1;host=\"shop.example:8080\";proto=http"
            ]
        );
        let mut h = HeaderMap::new();
        Origin {
            client: "::1".parse().unwrap(),
            host: Some(HeaderValue::from_static("web")),
            proto: "http",
        }
        .apply(&mut h);
        assert_eq!(h["forwarded"], "for=\"[::1]\";host=web;proto=http");
        assert_eq!(h["x-forwarded-for"], "::1");
    }
}
