//! Rewriting what an upstream answers into the proxy's prefix, as the API server's proxy
//! does (`k8s.io/apimachinery/pkg/util/proxy`: `UpgradeAwareHandler` and `transport.go`).
//!
//! - [`rewrite_location`]: a `Location` (or `Content-Location`) that points at the upstream
//!   is moved under the prefix, so that the client's next request comes back through the
//!   proxy.
//! - [`redirect_to_slash`]: `GET .../proxy` (an empty path) is answered with a redirect to
//!   `.../proxy/`, so that the page's relative links resolve under the prefix.
//! - [`HtmlRewriter`]: links in HTML pages, rewritten while the body streams. The API server
//!   does this to every `text/html` answer, which breaks single-page apps that build their
//!   own URLs (kubernetes#17032, #48503); here it is opt-in.
//!
//! Which URLs move, and where we differ from Go's `rewriteURL`, is documented on
//! [`rewrite_location`].

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::url::ServiceUrl;

/// How long a tag may grow before [`HtmlRewriter`] stops holding it back and passes it
/// through unmodified.
pub const MAX_TAG_LEN: usize = 8 * 1024;

/// The tags and attributes whose values are URLs: Go's `atomsToAttrs` table.
const URL_ATTRS: &[(&str, &[&str])] = &[
    ("a", &["href"]),
    ("applet", &["codebase"]),
    ("area", &["href"]),
    ("audio", &["src"]),
    ("base", &["href"]),
    ("blockquote", &["cite"]),
    ("body", &["background"]),
    ("button", &["formaction"]),
    ("command", &["icon"]),
    ("del", &["cite"]),
    ("embed", &["src"]),
    ("form", &["action"]),
    ("frame", &["longdesc", "src"]),
    ("head", &["profile"]),
    ("html", &["manifest"]),
    ("iframe", &["longdesc", "src"]),
    ("img", &["longdesc", "src", "usemap"]),
    ("input", &["src", "usemap", "formaction"]),
    ("ins", &["cite"]),
    ("link", &["href"]),
    ("object", &["classid", "codebase", "data", "usemap"]),
    ("q", &["cite"]),
    ("script", &["src"]),
    ("source", &["src"]),
    ("video", &["poster", "src"]),
];

/// Elements whose content is text up to their end tag, never tags (as Go's tokenizer has
/// them; `plaintext` never ends).
const RAW_TEXT: &[&str] = &[
    "iframe", "noembed", "noframes", "noscript", "script", "style", "textarea", "title", "xmp",
];

/// Rewrites a `Location` or `Content-Location` header value that points at the upstream
/// into `prefix`. `None` when it stays as it is: a relative reference, another host,
/// another scheme, or a path already under the prefix.
///
/// `upstream_authority` is what the proxy sent as `Host` (`web.default.svc:80`, or without
/// the port when it is the scheme's default).
///
/// Which URLs move: a path-absolute reference (`/x`), and an absolute or protocol-relative
/// URL (`http://h/x`, `//h/x`) whose authority is the upstream's. Relative references
/// (`x`, `../x`, `?q`, `#f`), other hosts and other schemes are left alone, and so is a
/// path that is already under the prefix. As in Go's `rewriteURL`, a moved absolute URL
/// becomes a path (`PREFIX/x`), relative to whatever host the client reached the proxy on.
///
/// Where we differ from Go's `rewriteURL`:
///
/// - Authorities compare with default ports filled in (`http://web/x` is the upstream
///   `web:80`) and hosts case-insensitively; Go compares the strings.
/// - An upstream URL with an empty path (`http://web:80`, `http://web:80?q`) becomes
///   `PREFIX/` (`PREFIX/?q`); Go leaves it alone, sending the client to an address it
///   usually cannot reach.
/// - "Already under the prefix" means the path is the prefix or continues it with `/`,
///   `?` or `#`; Go's plain string-prefix test also takes `PREFIXfoo` as prefixed.
/// - Paths are not cleaned (Go's `path.Join` removes `.` and `..` segments and doubled
///   slashes); the client resolves dot segments itself, and the text we do not change is
///   kept byte for byte, percent-encoding and HTML entities included.
///
/// # Examples
///
/// ```
/// use proxy_http::service::rewrite_location;
///
/// let prefix = "/api/v1/namespaces/default/services/web:80/proxy";
/// let up = "web.default.svc:80";
/// assert_eq!(rewrite_location("/login", prefix, up).unwrap(), format!("{prefix}/login"));
/// assert_eq!(
///     rewrite_location("http://web.default.svc/a?b", prefix, up).unwrap(),
///     format!("{prefix}/a?b")
/// );
/// assert_eq!(rewrite_location("https://example.com/", prefix, up), None);
/// assert_eq!(rewrite_location("next", prefix, up), None);
/// ```
pub fn rewrite_location(location: &str, prefix: &str, upstream_authority: &str) -> Option<String> {
    let prefix = prefix.trim_end_matches('/');
    let edit = plan(location, prefix, upstream_authority)?;
    let mut out = String::with_capacity(prefix.len() + location.len() + 1);
    edit.apply(location, prefix, &mut out);
    Some(out)
}

/// Whether the API server would answer the request with [`redirect_to_slash`]: a `GET` or
/// `HEAD` with an empty path (`.../proxy`). Upgrade requests (WebSocket) are proxied
/// without this check, as in Go, so test for an upgrade first.
pub fn needs_slash_redirect(method: &Method, url: &ServiceUrl) -> bool {
    url.path.is_empty() && (method == Method::GET || method == Method::HEAD)
}

/// The `Location` of [`redirect_to_slash`]: the request's path with `/` appended, then
/// `?query` when there is a non-empty one.
pub fn slash_redirect_location(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}/?{q}"),
        _ => format!("{path}/"),
    }
}

/// The API server's answer to `GET .../proxy`: `301 Moved Permanently` to `.../proxy/`
/// (keeping the query), with an empty body and no `Content-Type`, as Go's handler writes
/// it (`w.Header().Set("Location", ...)` then `WriteHeader(301)`). `path` is the request's
/// URI path as received; bytes a URI cannot carry (controls, space, non-ASCII) are
/// percent-encoded.
pub fn redirect_to_slash<B: From<Bytes>>(path: &str, query: Option<&str>) -> Response<B> {
    let location = slash_redirect_location(path, query);
    let value = HeaderValue::from_str(&encode_header_unsafe(&location))
        .expect("percent-encoded text is a valid header value");
    let mut response = Response::new(B::from(Bytes::new()));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// Whether [`HtmlRewriter`] may rewrite a response with these headers: its
/// `Content-Type` is `text/html` (any parameters, any case) and it has no
/// `Content-Encoding` other than `identity`. Compressed bodies (`gzip`, `br`, ...) are left
/// alone: rewriting them would mean decompressing and compressing again, which the API
/// server does for gzip and deflate and we do not.
///
/// When the body is rewritten its length changes: drop `Content-Length` (and any digest of
/// the body) from the response.
pub fn is_rewritable_html(headers: &HeaderMap) -> bool {
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("text/html"));
    let identity = headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        })
    });
    html && identity
}

/// Percent-encodes the bytes a header value cannot hold (controls, space, non-ASCII).
fn encode_header_unsafe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a URL moves under the prefix: the text from `keep_from` on is kept, preceded by the
/// prefix when `prefix` is set and by `/` when `slash` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Edit {
    keep_from: usize,
    prefix: bool,
    slash: bool,
}

impl Edit {
    fn apply(&self, url: &str, prefix: &str, out: &mut String) {
        if self.prefix {
            out.push_str(prefix);
        }
        if self.slash {
            out.push('/');
        }
        out.push_str(&url[self.keep_from..]);
    }
}

/// Decides whether and how `url` moves under `prefix` (which has no trailing `/`).
fn plan(url: &str, prefix: &str, upstream: &str) -> Option<Edit> {
    let rest_at = if let Some(after) = url.strip_prefix("//") {
        let authority_len = after.find(['/', '?', '#']).unwrap_or(after.len());
        if !same_authority(None, &after[..authority_len], upstream) {
            return None;
        }
        2 + authority_len
    } else if url.starts_with('/') {
        0
    } else {
        let (scheme, after) = split_scheme(url)?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let after = after.strip_prefix("//")?;
        let authority_len = after.find(['/', '?', '#']).unwrap_or(after.len());
        if !same_authority(Some(scheme), &after[..authority_len], upstream) {
            return None;
        }
        url.len() - after.len() + authority_len
    };
    let rest = &url[rest_at..];
    if !rest.starts_with('/') {
        // `http://web` or `http://web?q`: the upstream's root.
        return Some(Edit {
            keep_from: rest_at,
            prefix: true,
            slash: true,
        });
    }
    let prefixed = rest
        .strip_prefix(prefix)
        .is_some_and(|after| after.is_empty() || after.starts_with(['/', '?', '#']));
    if prefixed && rest_at == 0 {
        return None;
    }
    Some(Edit {
        keep_from: rest_at,
        prefix: !prefixed,
        slash: false,
    })
}

/// `scheme:rest` when `url` starts with a URI scheme (`ALPHA *(ALPHA / DIGIT / + - .)`).
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then(|| (scheme, &url[colon + 1..]))
}

/// Whether a URL's authority names the upstream: same host (ASCII case-insensitive) and
/// same port, a missing port being the default of the URL's scheme. Userinfo is ignored.
fn same_authority(scheme: Option<&str>, authority: &str, upstream: &str) -> bool {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = split_authority(authority);
    let (up_host, up_port) = split_authority(upstream);
    if host.is_empty() || !host.eq_ignore_ascii_case(up_host) {
        return false;
    }
    let default = match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    };
    let number = |p: Option<&str>| match p {
        None | Some("") => Ok(default),
        Some(p) => p.parse::<u16>().map(Some),
    };
    match (number(port), number(up_port)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `host[:port]` or `[v6][:port]`; the host keeps its brackets.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// Escapes text for an HTML attribute value, whichever its quoting.
fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '=' => out.push_str("&#61;"),
            '`' => out.push_str("&#96;"),
            c if c.is_ascii_whitespace() => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
}

/// A streaming rewriter of the links in an HTML body (which links move is as in
/// [`rewrite_location`]).
///
/// Feed it the body chunk by chunk with [`push`](Self::push), then call
/// [`finish`](Self::finish); each returns what is ready to send. Text passes through as it
/// comes; only a tag cut by a chunk boundary (or the start of an end tag inside `<script>`
/// and the like) is held back until it is complete, and at most [`MAX_TAG_LEN`] bytes of
/// it: a longer tag is passed through unmodified. So memory stays bounded whatever the
/// body.
///
/// Only the values of the URL attributes of start tags change (Go's `atomsToAttrs`
/// table: `a href`, `img src`, `form action`, `script src`, ...); every other byte is
/// kept, so the output is the input wherever nothing moved. Comments, `<!DOCTYPE>`, and
/// the content of `<script>`, `<style>`, `<textarea>`, `<title>` and the other raw-text
/// elements are not looked into. Values written with character references
/// (`&#47;x`) are not recognised as paths, and bytes are taken as UTF-8 (or any
/// ASCII-compatible encoding).
///
/// Use it only on bodies [`is_rewritable_html`] accepts, and drop `Content-Length`.
///
/// # Examples
///
/// ```
/// use proxy_http::service::HtmlRewriter;
///
/// let mut rw = HtmlRewriter::new("/api/v1/namespaces/ns/services/web/proxy", "web.ns.svc");
/// let mut out = rw.push(b"<a href=\"/doc\">doc</a><img src='/log").to_vec();
/// out.extend_from_slice(&rw.push(b"o.png'>"));
/// out.extend_from_slice(&rw.finish());
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     "<a href=\"/api/v1/namespaces/ns/services/web/proxy/doc\">doc</a>\
///      <img src='/api/v1/namespaces/ns/services/web/proxy/logo.png'>"
/// );
/// ```
#[derive(Clone, Debug)]
pub struct HtmlRewriter {
    prefix: String,
    upstream: String,
    state: State,
    /// The held-back bytes of the current tag (or of a possible raw-text end tag).
    pending: Vec<u8>,
    /// The current tag outgrew [`MAX_TAG_LEN`]: its bytes pass straight through.
    overflowed: bool,
    /// The raw-text element the current start tag opens, found once its name is read.
    raw: Option<RawKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawKind {
    Until(&'static str),
    Plaintext,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Text,
    /// After `<`.
    TagOpen,
    /// After `</`.
    EndTagOpen,
    /// After `<!` and `dashes` dashes (0 or 1).
    MarkupDecl {
        dashes: u8,
    },
    /// In a comment, after `dashes` dashes (2 at most); `-->` ends it.
    Comment {
        dashes: u8,
    },
    /// `<?...>`, `<!DOCTYPE ...>` and other bogus comments: up to the next `>`.
    Bogus,
    /// In a start (or end) tag.
    Tag {
        end: bool,
        phase: Phase,
    },
    /// The text of a raw-text element; `matched` bytes of `</name` are held back.
    RawText {
        name: &'static str,
        matched: usize,
    },
    /// After `<plaintext>`: text to the end.
    Plaintext,
}

/// Where a tag's lexer is, as the HTML tokenizer's states (only what finding the tag's end
/// and its attribute values needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    TagName,
    BeforeAttrName,
    AttrName,
    AfterAttrName,
    BeforeValue,
    Unquoted,
    Quoted(u8),
}

/// The phase after byte `b`; `None` when `b` is the `>` that ends the tag.
fn next_phase(phase: Phase, b: u8) -> Option<Phase> {
    let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r');
    Some(match phase {
        Phase::TagName | Phase::BeforeAttrName | Phase::AttrName | Phase::AfterAttrName
            if b == b'>' =>
        {
            return None;
        }
        Phase::TagName if ws || b == b'/' => Phase::BeforeAttrName,
        Phase::TagName => Phase::TagName,
        Phase::BeforeAttrName if ws || b == b'/' => Phase::BeforeAttrName,
        Phase::BeforeAttrName => Phase::AttrName,
        Phase::AttrName if ws => Phase::AfterAttrName,
        Phase::AttrName if b == b'/' => Phase::BeforeAttrName,
        Phase::AttrName if b == b'=' => Phase::BeforeValue,
        Phase::AttrName => Phase::AttrName,
        Phase::AfterAttrName if ws => Phase::AfterAttrName,
        Phase::AfterAttrName if b == b'/' => Phase::BeforeAttrName,
        Phase::AfterAttrName if b == b'=' => Phase::BeforeValue,
        Phase::AfterAttrName => Phase::AttrName,
        Phase::BeforeValue if ws => Phase::BeforeValue,
        Phase::BeforeValue if b == b'"' || b == b'\'' => Phase::Quoted(b),
        Phase::BeforeValue if b == b'>' => return None,
        Phase::BeforeValue => Phase::Unquoted,
        Phase::Unquoted if ws => Phase::BeforeAttrName,
        Phase::Unquoted if b == b'>' => return None,
        Phase::Unquoted => Phase::Unquoted,
        Phase::Quoted(q) if b == q => Phase::BeforeAttrName,
        Phase::Quoted(q) => Phase::Quoted(q),
    })
}

/// One attribute of a complete tag: byte ranges of its name and value.
struct Attr {
    name: std::ops::Range<usize>,
    value: Option<std::ops::Range<usize>>,
}

/// The tag name's range and the attributes of a complete start tag (`<` to `>`).
fn lex_tag(tag: &[u8]) -> (std::ops::Range<usize>, Vec<Attr>) {
    let mut phase = Phase::TagName;
    let mut name_end = tag.len();
    let mut attrs: Vec<Attr> = Vec::new();
    let mut value_start = 0;
    for (i, &b) in tag.iter().enumerate().skip(2) {
        let next = next_phase(phase, b);
        if phase == Phase::TagName && next != Some(Phase::TagName) {
            name_end = i;
        }
        if next == Some(Phase::AttrName) && phase != Phase::AttrName {
            attrs.push(Attr {
                name: i..i + 1,
                value: None,
            });
        }
        if phase == Phase::AttrName
            && let Some(a) = attrs.last_mut()
        {
            a.name.end = i;
        }
        match (phase, next) {
            (Phase::BeforeValue, Some(Phase::Quoted(_))) => value_start = i + 1,
            (Phase::BeforeValue, Some(Phase::Unquoted)) => value_start = i,
            (Phase::Quoted(_) | Phase::Unquoted, n) if n != Some(phase) => {
                if let Some(a) = attrs.last_mut() {
                    a.value = Some(value_start..i);
                }
            }
            _ => {}
        }
        match next {
            Some(n) => phase = n,
            None => break,
        }
    }
    (1..name_end, attrs)
}

/// The URL attributes of a tag, by its lowercase name.
fn url_attrs(tag_name: &[u8]) -> &'static [&'static str] {
    URL_ATTRS
        .iter()
        .find(|(name, _)| tag_name.eq_ignore_ascii_case(name.as_bytes()))
        .map_or(&[], |(_, attrs)| attrs)
}

fn raw_kind(tag_name: &[u8]) -> Option<RawKind> {
    if tag_name.eq_ignore_ascii_case(b"plaintext") {
        return Some(RawKind::Plaintext);
    }
    RAW_TEXT
        .iter()
        .find(|name| tag_name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|name| RawKind::Until(name))
}

// ===== impl HtmlRewriter =====

impl HtmlRewriter {
    /// A rewriter moving links into `prefix` (the [`ServiceUrl::prefix`]; a trailing `/` is
    /// ignored). `upstream_authority` is what the proxy sent as `Host`: absolute links to
    /// it move too.
    pub fn new(prefix: &str, upstream_authority: &str) -> Self {
        HtmlRewriter {
            prefix: prefix.trim_end_matches('/').to_owned(),
            upstream: upstream_authority.to_owned(),
            state: State::Text,
            pending: Vec::new(),
            overflowed: false,
            raw: None,
        }
    }

    /// Takes the next chunk of the body; returns the output ready now (possibly empty: a
    /// tag may be held back until its end arrives).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(chunk.len() + self.pending.len() + 64);
        let mut i = 0;
        while i < chunk.len() {
            if matches!(self.state, State::Text | State::Plaintext) {
                let text = &chunk[i..];
                let lt = match self.state {
                    State::Text => text.iter().position(|&b| b == b'<'),
                    _ => None,
                };
                match lt {
                    Some(p) => {
                        out.extend_from_slice(&text[..p]);
                        i += p;
                    }
                    None => {
                        out.extend_from_slice(text);
                        break;
                    }
                }
            }
            self.step(chunk[i], &mut out);
            i += 1;
        }
        Bytes::from(out)
    }

    /// Ends the body: returns what was held back (an unfinished tag, unmodified).
    pub fn finish(&mut self) -> Bytes {
        let out = Bytes::from(std::mem::take(&mut self.pending));
        self.state = State::Text;
        self.overflowed = false;
        self.raw = None;
        out
    }

    /// Holds back a byte of the current tag, or passes it on once the tag is too long.
    fn hold(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.overflowed {
            out.push(b);
            return;
        }
        self.pending.push(b);
        if self.pending.len() > MAX_TAG_LEN {
            out.append(&mut self.pending);
            self.overflowed = true;
        }
    }

    /// Passes the held-back bytes on unmodified.
    fn release(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        self.overflowed = false;
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => {
                if b == b'<' {
                    self.hold(b, out);
                    self.state = State::TagOpen;
                } else {
                    out.push(b);
                }
            }
            State::Plaintext => out.push(b),
            State::TagOpen => match b {
                b if b.is_ascii_alphabetic() => {
                    self.hold(b, out);
                    self.raw = None;
                    self.state = State::Tag {
                        end: false,
                        phase: Phase::TagName,
                    };
                }
                b'/' => {
                    self.hold(b, out);
                    self.state = State::EndTagOpen;
                }
                b'!' => {
                    self.hold(b, out);
                    self.state = State::MarkupDecl { dashes: 0 };
                }
                b'?' => {
                    self.release(out);
                    out.push(b);
                    self.state = State::Bogus;
                }
                _ => {
                    self.release(out);
                    self.state = State::Text;
                    self.step(b, out);
                }
            },
            State::EndTagOpen => {
                if b.is_ascii_alphabetic() {
                    self.hold(b, out);
                    self.state = State::Tag {
                        end: true,
                        phase: Phase::TagName,
                    };
                } else {
                    self.release(out);
                    out.push(b);
                    self.state = if b == b'>' { State::Text } else { State::Bogus };
                }
            }
            State::MarkupDecl { dashes } => {
                if b == b'-' && dashes == 0 {
                    self.hold(b, out);
                    self.state = State::MarkupDecl { dashes: 1 };
                } else if b == b'-' {
                    self.release(out);
                    out.push(b);
                    // `<!-->` and `<!--->` are whole comments, as in the HTML tokenizer.
                    self.state = State::Comment { dashes: 2 };
                } else {
                    self.release(out);
                    out.push(b);
                    self.state = if b == b'>' { State::Text } else { State::Bogus };
                }
            }
            State::Comment { dashes } => {
                out.push(b);
                self.state = match b {
                    b'>' if dashes >= 2 => State::Text,
                    b'-' => State::Comment {
                        dashes: (dashes + 1).min(2),
                    },
                    _ => State::Comment { dashes: 0 },
                };
            }
            State::Bogus => {
                out.push(b);
                if b == b'>' {
                    self.state = State::Text;
                }
            }
            State::Tag { end, phase } => {
                self.hold(b, out);
                let next = next_phase(phase, b);
                if phase == Phase::TagName && next != Some(Phase::TagName) && !end {
                    // The name is complete: it is all that is held back (unless it alone
                    // outgrew MAX_TAG_LEN, and then it names no raw-text element).
                    self.raw = if self.overflowed {
                        None
                    } else {
                        raw_kind(&self.pending[1..self.pending.len() - 1])
                    };
                }
                match next {
                    Some(phase) => self.state = State::Tag { end, phase },
                    None => self.end_tag(end, out),
                }
            }
            State::RawText { name, matched } => {
                let want = match matched {
                    0 => b'<',
                    1 => b'/',
                    n if n - 2 < name.len() => name.as_bytes()[n - 2],
                    _ => 0,
                };
                if want != 0 && b.to_ascii_lowercase() == want {
                    self.hold(b, out);
                    self.state = State::RawText {
                        name,
                        matched: matched + 1,
                    };
                } else if want == 0
                    && matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r' | b'/' | b'>')
                {
                    // `</script` then a delimiter: the end tag.
                    self.state = State::Tag {
                        end: true,
                        phase: Phase::TagName,
                    };
                    self.step(b, out);
                } else {
                    self.release(out);
                    self.state = State::RawText { name, matched: 0 };
                    if matched == 0 {
                        out.push(b);
                    } else {
                        self.step(b, out);
                    }
                }
            }
        }
    }

    /// The `>` of a tag has been held back: rewrite the tag if it is a start tag, pass it
    /// on, and enter the raw text it opens.
    fn end_tag(&mut self, end: bool, out: &mut Vec<u8>) {
        if self.overflowed {
            self.overflowed = false;
        } else if end {
            out.append(&mut self.pending);
        } else {
            self.rewrite_tag(out);
            self.pending.clear();
        }
        self.state = match (end, self.raw.take()) {
            (false, Some(RawKind::Until(name))) => State::RawText { name, matched: 0 },
            (false, Some(RawKind::Plaintext)) => State::Plaintext,
            _ => State::Text,
        };
    }

    /// Writes the complete start tag in `pending` to `out`, its URL attributes moved.
    fn rewrite_tag(&self, out: &mut Vec<u8>) {
        let tag = &self.pending[..];
        let (name, attrs) = lex_tag(tag);
        let wanted = url_attrs(&tag[name]);
        let mut copied = 0;
        for attr in attrs {
            let Some(value) = attr.value else { continue };
            let attr_name = &tag[attr.name];
            if !wanted
                .iter()
                .any(|w| attr_name.eq_ignore_ascii_case(w.as_bytes()))
            {
                continue;
            }
            let Ok(url) = std::str::from_utf8(&tag[value.clone()]) else {
                continue;
            };
            let Some(edit) = plan(url, &self.prefix, &self.upstream) else {
                continue;
            };
            let mut new = String::with_capacity(self.prefix.len() + url.len() + 8);
            if edit.prefix {
                escape_attr(&self.prefix, &mut new);
            }
            if edit.slash {
                new.push('/');
            }
            new.push_str(&url[edit.keep_from..]);
            out.extend_from_slice(&tag[copied..value.start]);
            out.extend_from_slice(new.as_bytes());
            copied = value.end;
        }
        out.extend_from_slice(&tag[copied..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/api/v1/namespaces/default/services/web:80/proxy";
    const UP: &str = "upstream:80";

    fn loc(url: &str) -> Option<String> {
        rewrite_location(url, P, UP)
    }

    #[test]
    fn location_paths_move_under_the_prefix() {
        assert_eq!(loc("/login").unwrap(), format!("{P}/login"));
        assert_eq!(loc("/").unwrap(), format!("{P}/"));
        assert_eq!(loc("/a/?next=/b#f").unwrap(), format!("{P}/a/?next=/b#f"));
        assert_eq!(loc("/a%20b").unwrap(), format!("{P}/a%20b"));
        // A trailing slash on the prefix is not doubled.
        assert_eq!(
            rewrite_location("/x", &format!("{P}/"), UP).unwrap(),
            format!("{P}/x")
        );
    }

    #[test]
    fn location_absolute_urls_of_the_upstream_move() {
        assert_eq!(
            loc("http://upstream:80/a?b#c").unwrap(),
            format!("{P}/a?b#c")
        );
        assert_eq!(loc("http://upstream/a").unwrap(), format!("{P}/a"));
        assert_eq!(loc("HTTP://UpStream:80/a").unwrap(), format!("{P}/a"));
        assert_eq!(loc("http://user:pw@upstream/a").unwrap(), format!("{P}/a"));
        assert_eq!(loc("//upstream:80/a").unwrap(), format!("{P}/a"));
        assert_eq!(loc("http://upstream:80").unwrap(), format!("{P}/"));
        assert_eq!(loc("http://upstream:80?q=1").unwrap(), format!("{P}/?q=1"));
        assert_eq!(
            rewrite_location("https://web.ns.svc/x", P, "web.ns.svc:443").unwrap(),
            format!("{P}/x")
        );
        assert_eq!(
            rewrite_location("https://web.ns.svc/x", P, "web.ns.svc").unwrap(),
            format!("{P}/x")
        );
        assert_eq!(
            rewrite_location("http://[fd00::1]:8080/x", P, "[fd00::1]:8080").unwrap(),
            format!("{P}/x")
        );
    }

    #[test]
    fn location_others_stay() {
        for url in [
            "",
            "login",
            "../up",
            "?q=1",
            "#top",
            "http://other/a",
            "http://upstream:8080/a",
            "https://upstream/a",
            "http://upstream.evil/a",
            "http://evil/upstream:80/a",
            "//other.host/x",
            "//upstream/x",
            "ftp://upstream:80/a",
            "mailto:a@upstream",
            "javascript:alert(1)",
            "http:/a",
            "http://:80/a",
            "http://upstream:80x/a",
        ] {
            assert_eq!(loc(url), None, "{url}");
        }
        assert_eq!(rewrite_location("http://web/x", P, "web:8080"), None);
        assert_eq!(rewrite_location("http://[fd00::1]/x", P, "[fd00::2]"), None);
    }

    #[test]
    fn location_already_prefixed_is_not_doubled() {
        assert_eq!(loc(&format!("{P}/x")), None);
        assert_eq!(loc(P), None);
        assert_eq!(loc(&format!("{P}?q")), None);
        assert_eq!(
            loc(&format!("http://upstream:80{P}/x")).unwrap(),
            format!("{P}/x")
        );
        // A path that merely starts with the prefix's text is not under it.
        assert_eq!(loc(&format!("{P}x/y")).unwrap(), format!("{P}{P}x/y"));
    }

    #[test]
    fn slash_redirect() {
        let r: Response<Bytes> = redirect_to_slash(P, Some("a=1"));
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], format!("{P}/?a=1"));
        assert_eq!(r.headers().len(), 1);
        assert!(r.body().is_empty());
        let r: Response<Bytes> = redirect_to_slash(P, Some(""));
        assert_eq!(r.headers()[header::LOCATION], format!("{P}/"));
        let r: Response<Bytes> = redirect_to_slash(P, None);
        assert_eq!(r.headers()[header::LOCATION], format!("{P}/"));
        let r: Response<Bytes> = redirect_to_slash("/a b\u{e9}", None);
        assert_eq!(r.headers()[header::LOCATION], "/a%20b%C3%A9/");

        let url = ServiceUrl::parse(P).unwrap().unwrap();
        assert!(needs_slash_redirect(&Method::GET, &url));
        assert!(needs_slash_redirect(&Method::HEAD, &url));
        assert!(!needs_slash_redirect(&Method::POST, &url));
        let url = ServiceUrl::parse(&format!("{P}/")).unwrap().unwrap();
        assert!(!needs_slash_redirect(&Method::GET, &url));
    }

    #[test]
    fn rewritable_html_headers() {
        let mut h = HeaderMap::new();
        assert!(!is_rewritable_html(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        assert!(is_rewritable_html(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Text/HTML"));
        assert!(is_rewritable_html(&h));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(is_rewritable_html(&h));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!is_rewritable_html(&h));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity, br"),
        );
        assert!(!is_rewritable_html(&h));
        h.remove(header::CONTENT_ENCODING);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xhtml+xml"),
        );
        assert!(!is_rewritable_html(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_rewritable_html(&h));
    }

    fn rewrite_chunks(chunks: &[&[u8]]) -> String {
        let mut rw = HtmlRewriter::new(P, UP);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&rw.push(c));
            assert!(rw.pending.len() <= MAX_TAG_LEN, "carry is bounded");
        }
        out.extend_from_slice(&rw.finish());
        String::from_utf8(out).unwrap()
    }

    fn rewrite(html: &str) -> String {
        rewrite_chunks(&[html.as_bytes()])
    }

    const DOC: &str = r#"<!DOCTYPE html><html manifest="/app.appcache"><head><link rel=stylesheet href="/style.css"><script src='/app.js'></script>
<script>var s = "<a href=\"/x\">"; if (a</b) {} // </scriptx> </script ></head>
<body background=/bg.png><!-- <a href="/comment"> --><A HREF="/upper">u</A><!---->
<a href="//other.host/x">p</a><a href="http://upstream:80/y?q=1#f">abs</a><a href="https://elsewhere/z">e</a>
<a href="rel/ative">r</a><img src = "/i.png" alt="/not-an-url-attr"><form action=/post method=post></form>
<a title='x>y' href='/quoted-gt'>q</a><textarea><a href="/in-textarea"></TEXTAREA><a href=/after>a</a>
<style>a[href="/css"]{}</style><a data-x="1" href="/api/v1/namespaces/default/services/web:80/proxy/already">d</a>
<p>1 < 2 and 3 <> 4 <?php echo '<a href="/php">'; ?> <a/href="/slash">s</a><a href>empty</a></body></html>"#;

    fn expected() -> String {
        let p = P;
        format!(
            r#"<!DOCTYPE html><html manifest="{p}/app.appcache"><head><link rel=stylesheet href="{p}/style.css"><script src='{p}/app.js'></script>
<script>var s = "<a href=\"/x\">"; if (a</b) {{}} // </scriptx> </script ></head>
<body background={p}/bg.png><!-- <a href="/comment"> --><A HREF="{p}/upper">u</A><!---->
<a href="//other.host/x">p</a><a href="{p}/y?q=1#f">abs</a><a href="https://elsewhere/z">e</a>
<a href="rel/ative">r</a><img src = "{p}/i.png" alt="/not-an-url-attr"><form action={p}/post method=post></form>
<a title='x>y' href='{p}/quoted-gt'>q</a><textarea><a href="/in-textarea"></TEXTAREA><a href={p}/after>a</a>
<style>a[href="/css"]{{}}</style><a data-x="1" href="/api/v1/namespaces/default/services/web:80/proxy/already">d</a>
<p>1 < 2 and 3 <> 4 <?php echo '<a href="/php">'; ?> <a/href="{p}/slash">s</a><a href>empty</a></body></html>"#
        )
    }

    #[test]
    fn html_document_in_one_chunk() {
        assert_eq!(rewrite(DOC), expected());
    }

    #[test]
    fn html_split_at_every_offset() {
        let want = expected();
        let doc = DOC.as_bytes();
        for i in 0..=doc.len() {
            assert_eq!(
                rewrite_chunks(&[&doc[..i], &doc[i..]]),
                want,
                "split at {i}"
            );
        }
        // And one byte at a time, and in 3- and 7-byte pieces.
        for size in [1, 3, 7] {
            let chunks: Vec<&[u8]> = doc.chunks(size).collect();
            assert_eq!(rewrite_chunks(&chunks), want, "chunks of {size}");
        }
    }

    #[test]
    fn html_quoting_styles_and_case() {
        let p = P;
        assert_eq!(rewrite(r#"<a href="/d">"#), format!(r#"<a href="{p}/d">"#));
        assert_eq!(rewrite("<a href='/s'>"), format!("<a href='{p}/s'>"));
        assert_eq!(rewrite("<a href=/u>"), format!("<a href={p}/u>"));
        assert_eq!(rewrite("<a href=/u/>"), format!("<a href={p}/u/>"));
        assert_eq!(
            rewrite("<a href = \n '/w' >"),
            format!("<a href = \n '{p}/w' >")
        );
        assert_eq!(
            rewrite(r#"<IMG SrC="/i">"#),
            format!(r#"<IMG SrC="{p}/i">"#)
        );
        assert_eq!(
            rewrite(r#"<img/src="/i"/>"#),
            format!(r#"<img/src="{p}/i"/>"#)
        );
        assert_eq!(
            rewrite(r#"<video poster="/p.png" src="/v.mp4">"#),
            format!(r#"<video poster="{p}/p.png" src="{p}/v.mp4">"#)
        );
        assert_eq!(
            rewrite(r#"<input type=image src="/i" formaction="/f">"#),
            format!(r#"<input type=image src="{p}/i" formaction="{p}/f">"#)
        );
        // Attributes that are not URLs, and tags without URL attributes, are untouched.
        for same in [
            r#"<a title="/t" class='/c'>"#,
            r#"<div href="/d">"#,
            r#"<span src=/s>"#,
            r#"</a href="/end">"#,
            r#"<a href="">"#,
            r##"<a href="#top">"##,
            r#"<a href="mailto:x@y">"#,
            r#"<a href="&#47;entity">"#,
            "<a hrefx=\"/x\">",
        ] {
            assert_eq!(rewrite(same), same);
        }
    }

    #[test]
    fn html_hosts() {
        let p = P;
        assert_eq!(
            rewrite(r#"<a href="//other.host/x">"#),
            r#"<a href="//other.host/x">"#
        );
        assert_eq!(
            rewrite(r#"<a href="//upstream:80/x">"#),
            format!(r#"<a href="{p}/x">"#)
        );
        assert_eq!(
            rewrite(r#"<a href="http://upstream:80/x">"#),
            format!(r#"<a href="{p}/x">"#)
        );
        assert_eq!(
            rewrite(r#"<a href="http://upstream/x">"#),
            format!(r#"<a href="{p}/x">"#)
        );
        assert_eq!(
            rewrite(r#"<a href="http://other:80/x">"#),
            r#"<a href="http://other:80/x">"#
        );
        assert_eq!(
            rewrite(r#"<a href="http://upstream:80/x?a=1&amp;b=2">"#),
            format!(r#"<a href="{p}/x?a=1&amp;b=2">"#)
        );
    }

    #[test]
    fn html_script_text_is_not_touched() {
        let p = P;
        let html = r#"<script>document.write('<img src="/x">')</script><img src="/y">"#;
        assert_eq!(
            rewrite(html),
            format!(r#"<script>document.write('<img src="/x">')</script><img src="{p}/y">"#)
        );
        let html = "<SCRIPT type=module>x = '</scrip' + '<a href=/z>'</Script\t><a href=/w>";
        assert_eq!(
            rewrite(html),
            format!("<SCRIPT type=module>x = '</scrip' + '<a href=/z>'</Script\t><a href={p}/w>")
        );
        let html = "<title><a href=/t></title><plaintext><a href=/p></plaintext><a href=/q>";
        assert_eq!(rewrite(html), html);
    }

    #[test]
    fn html_prefix_is_escaped() {
        let mut rw = HtmlRewriter::new("/p\"x'<y>&z", "h");
        let out = rw.push(b"<a href=\"/a\">");
        assert_eq!(&out[..], b"<a href=\"/p&quot;x&#39;&lt;y&gt;&amp;z/a\">");
    }

    #[test]
    fn html_pathological_tag_passes_through_bounded() {
        let p = P;
        let long = "x".repeat(3 * MAX_TAG_LEN);
        // The long value holds a '>' and a fake tag: still one attribute value.
        let html = format!(
            r#"<a title="{long}>" data-x='<a href="/in">' href="/long">t</a><a href="/next">"#
        );
        let want = format!(
            r#"<a title="{long}>" data-x='<a href="/in">' href="/long">t</a><a href="{p}/next">"#
        );
        assert_eq!(rewrite(&html), want);
        let chunks: Vec<&[u8]> = html.as_bytes().chunks(1000).collect();
        assert_eq!(rewrite_chunks(&chunks), want);
        // The output never lags far behind the input.
        let mut rw = HtmlRewriter::new(P, UP);
        let (mut received, mut sent) = (0, 0);
        for c in html.as_bytes().chunks(512) {
            received += c.len();
            sent += rw.push(c).len();
            assert!(
                received.saturating_sub(sent) <= MAX_TAG_LEN,
                "{received} in, {sent} out"
            );
        }
    }

    #[test]
    fn html_unfinished_tag_is_flushed_by_finish() {
        let mut rw = HtmlRewriter::new(P, UP);
        assert_eq!(&rw.push(b"text<a href=\"/x")[..], b"text");
        assert_eq!(&rw.finish()[..], b"<a href=\"/x");
        // The rewriter is reusable after finish.
        assert_eq!(
            rw.push(b"<a href=/y>").as_ref(),
            format!("<a href={P}/y>").as_bytes()
        );
    }

    #[test]
    fn html_comments_and_declarations() {
        let p = P;
        // Not looked into: the tag-like text inside is no tag.
        for same in [
            "<!-- <a href=/x> -->",
            "<!-- 1 > 0 <a href=/x> -->",
            "<!-- -> <a href=/x> -->",
            "<!-- a -- b <a href=/x> --> ",
            "<!doctype html>",
            "<!x <a href=/x>",
            "</ <a href=/x>",
            "<? <a href=/x>",
            "</>",
        ] {
            assert_eq!(rewrite(same), same, "{same}");
        }
        // These end at once, so the tag that follows is real.
        for (html, want) in [
            ("<!--><a href=/x>", format!("<!--><a href={p}/x>")),
            ("<!---><a href=/x>", format!("<!---><a href={p}/x>")),
            ("<!----><a href=/x>", format!("<!----><a href={p}/x>")),
            ("<!--x--><a href=/x>", format!("<!--x--><a href={p}/x>")),
            ("</><a href=/x>", format!("</><a href={p}/x>")),
            (
                "<!doctype html><a href=/x>",
                format!("<!doctype html><a href={p}/x>"),
            ),
        ] {
            assert_eq!(rewrite(html), want, "{html}");
        }
    }

    #[test]
    fn html_random_documents_only_gain_the_prefix() {
        // With a prefix of characters the pieces lack, removing it from the output gives the
        // input back: nothing but prefixes is ever added, and cutting changes nothing.
        let pieces: &[&str] = &[
            "<",
            ">",
            "a",
            " ",
            "=",
            "\"",
            "'",
            "/",
            "!",
            "-",
            "?",
            "script",
            "x",
            "é",
            "\n",
            "<!--",
            "-->",
            "</",
            "href",
            "</script>",
            "<script>",
            "\u{0}",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let len = (next() % 40) as usize;
            let doc: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let run = |chunks: &[&[u8]]| {
                let mut rw = HtmlRewriter::new("/~P~", "nohost:1");
                let mut out = Vec::new();
                for c in chunks {
                    out.extend_from_slice(&rw.push(c));
                }
                out.extend_from_slice(&rw.finish());
                String::from_utf8(out).unwrap()
            };
            let bytes = doc.as_bytes();
            let one = run(&[bytes]);
            assert_eq!(one.replace("/~P~", ""), doc);
            let cut = (next() as usize) % (doc.len() + 1);
            assert_eq!(
                run(&[&bytes[..cut], &bytes[cut..]]),
                one,
                "{doc:?} cut at {cut}"
            );
        }
    }
}
