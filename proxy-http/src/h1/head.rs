//! Message heads (RFC 9112 §2–§6): parsed with `httparse` into ranges of the bytes read,
//! and written for the other side with the proxy's edits.
//!
//! [`RequestHead`] and [`ResponseHead`] keep no text of their own: each name, value and
//! part of the start line is a [`Span`] of the buffer the head was parsed from, which the
//! caller passes back to read it. They are meant to be reused across the messages of a
//! connection: parsing clears them and refills their `Vec`s, which keep their capacity, so
//! a parse allocates nothing once they have grown.
//!
//! Parsing is strict where two readers of the same bytes could disagree on where a message
//! ends: `Content-Length` with `Transfer-Encoding`, differing `Content-Length`s, `chunked`
//! twice or not last, obsolete line folding and whitespace before a header's colon are all
//! refused.
//!
//! [`write_request`] and [`write_response`] write a head for the other side: HTTP/1.1 (a
//! request in the version it came in), the hop-by-hop headers dropped (RFC 9110 §7.6.1)
//! with those `Connection` names, exactly one framing header (from the parsed
//! [`BodyLength`]), then the proxy's [`Edits`].

use std::fmt;
use std::mem::MaybeUninit;

/// The most header lines a head may have; more is [`HeadError::TooLarge`].
pub const MAX_HEADERS: usize = 128;

/// A range of the head's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The bytes of `buf` in this range (the buffer the head was parsed from); empty if
    /// `buf` is too short for it.
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// Whether the range holds no byte.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// The range's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// The range of `part` in `buf`, which `part` must be a slice of (an empty span
    /// otherwise: `httparse` answers some empty parts with a `""` of its own).
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        if start > buf.len() || part.len() > buf.len() - start {
            return Span::default();
        }
        // `buf` is at most `u32::MAX` bytes long (see `limit`).
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// This range shrunk to `part`, a sub-slice of `self.get(buf)`.
    fn sub(self, buf: &[u8], part: &[u8]) -> Span {
        let inner = Span::of(self.get(buf), part);
        Span {
            start: self.start + inner.start,
            end: self.start + inner.end,
        }
    }
}

/// One header line: its name and value (value trimmed of surrounding whitespace).
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// The name, as it was sent (any case).
    pub name: Span,
    /// The value, without leading and trailing spaces and tabs.
    pub value: Span,
}

/// Where a message's body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BodyLength {
    /// No body, and no framing header: a request with neither `Content-Length` nor
    /// `Transfer-Encoding`, or a response that has none (1xx, 204, 304, an answer to HEAD).
    #[default]
    Empty,
    /// `Content-Length` bytes (`Length(0)` when it says 0: no body, but the header is
    /// written back).
    Length(u64),
    /// Chunked (RFC 9112 §7.1), through the last chunk and the trailers.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// What the `Connection` header says (tokens compared case-insensitively).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// `close`: the connection ends after this message.
    pub close: bool,
    /// `keep-alive`: an HTTP/1.0 message asks to keep the connection.
    pub keep_alive: bool,
    /// `upgrade`: the `Upgrade` header is meant for this hop.
    pub upgrade: bool,
}

/// Why a head is refused; each maps to the status the proxy answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than allowed, or has more than [`MAX_HEADERS`] lines (431 for a
    /// request; a response the proxy cannot read is a 502 whatever the reason).
    TooLarge,
    /// The head breaks the grammar or is ambiguous (400).
    Invalid(&'static str),
    /// A request's transfer coding other than `chunked` (501).
    NotImplemented(&'static str),
}

impl HeadError {
    /// The status the proxy answers a request whose head this refuses with: 431, 400 or 501.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Invalid(_) => 400,
            HeadError::NotImplemented(_) => 501,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("message head too large"),
            HeadError::Invalid(why) => write!(f, "invalid message head: {why}"),
            HeadError::NotImplemented(why) => write!(f, "not implemented: {why}"),
        }
    }
}

impl std::error::Error for HeadError {}

/// A request head: spans of the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// The method (a token).
    pub method: Span,
    /// The request target as sent.
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every header line, in order.
    pub headers: Vec<Header>,
    /// The body's framing: [`BodyLength::Empty`], [`Length`](BodyLength::Length) or
    /// [`Chunked`](BodyLength::Chunked).
    pub body: BodyLength,
    /// The host asked for: an absolute-form target's authority, else the first `Host`
    /// header's value; `None` when neither is there.
    pub host: Option<Span>,
    /// The path and query in origin form: the target itself for an origin-form target (or
    /// `*`), what follows the authority for an absolute-form one (see
    /// [`path_needs_slash`](Self::path_needs_slash)).
    pub path: Span,
    /// Whether `path` must be preceded by `/` to be in origin form: an absolute-form target
    /// with an empty path (`http://a` is `/`, `http://a?q` is `/?q`).
    pub path_needs_slash: bool,
    /// Whether the target was in absolute form (`http://authority/path`): `host` is then its
    /// authority, which [`write_request`] writes as the `Host` header (RFC 9112 §3.2.2).
    pub absolute_form: bool,
    /// What the `Connection` header says.
    pub connection: Connection,
    /// The `Upgrade` header's value, when `Connection` has `upgrade`.
    pub upgrade: Option<Span>,
    /// `Expect: 100-continue` (case-insensitive) in an HTTP/1.1 request: the client awaits a
    /// `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// Bytes of the head, through the empty line: the body (or the next request) starts
    /// there.
    pub len: usize,
    /// What is written back besides the headers.
    fields: Fields,
}

/// A response head: spans of the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct ResponseHead {
    /// The status code, 100 to 999.
    pub status: u16,
    /// The reason phrase (empty when there is none, or it has bytes other than ASCII).
    pub reason: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Every header line, in order.
    pub headers: Vec<Header>,
    /// The body's framing.
    pub body: BodyLength,
    /// What the `Connection` header says.
    pub connection: Connection,
    /// The `Upgrade` header's value, when `Connection` has `upgrade`.
    pub upgrade: Option<Span>,
    /// Bytes of the head, through the empty line.
    pub len: usize,
    /// What is written back besides the headers.
    fields: Fields,
}

/// Per-head facts for writing it back.
#[derive(Debug, Default)]
struct Fields {
    /// The `Connection` tokens other than options and hop-by-hop names: headers to drop.
    named: Vec<Span>,
    /// Exactly one `TE` header, saying `trailers`: it is kept.
    te_trailers: bool,
}

/// The headers the parser and the writers tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Other,
    Host,
    ContentLength,
    Expect,
    // The hop-by-hop ones (RFC 9110 §7.6.1), never written back as they came.
    Connection,
    ProxyConnection,
    KeepAlive,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
}

impl Known {
    /// Classifies a header name: its length first, then the bytes of one candidate or two.
    #[inline]
    fn of(name: &[u8]) -> Known {
        let (known, text): (Known, &[u8]) = match name.len() {
            2 => (Known::Te, b"te"),
            4 => (Known::Host, b"host"),
            6 => (Known::Expect, b"expect"),
            7 => match name[0] | 0x20 {
                b'u' => (Known::Upgrade, b"upgrade"),
                b't' => (Known::Trailer, b"trailer"),
                _ => return Known::Other,
            },
            10 => match name[0] | 0x20 {
                b'c' => (Known::Connection, b"connection"),
                b'k' => (Known::KeepAlive, b"keep-alive"),
                _ => return Known::Other,
            },
            14 => (Known::ContentLength, b"content-length"),
            16 => (Known::ProxyConnection, b"proxy-connection"),
            17 => (Known::TransferEncoding, b"transfer-encoding"),
            18 => (Known::ProxyAuthenticate, b"proxy-authenticate"),
            19 => (Known::ProxyAuthorization, b"proxy-authorization"),
            _ => return Known::Other,
        };
        if name.eq_ignore_ascii_case(text) {
            known
        } else {
            Known::Other
        }
    }

    fn is_hop_by_hop(self) -> bool {
        !matches!(
            self,
            Known::Other | Known::Host | Known::ContentLength | Known::Expect
        )
    }
}

/// What one pass over the headers found.
#[derive(Default)]
struct Scan {
    content_length: Option<u64>,
    /// A `Transfer-Encoding` header was there.
    te: bool,
    /// Codings seen, `chunked` among them.
    codings: u32,
    chunked: bool,
    last_chunked: bool,
    te_headers: u32,
    host: Option<Span>,
    upgrade: Option<Span>,
    expect_continue: bool,
}

/// The `httparse` configuration: strict, which its defaults are; said again here so that a
/// change of default cannot loosen it.
fn config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_requests(false)
        .ignore_invalid_headers_in_responses(false);
    config
}

/// The part of `buf` a head must end in, and whether a partial parse of it is final.
fn limit(buf: &[u8], max_size: usize) -> (&[u8], bool) {
    let max = max_size.min(u32::MAX as usize);
    if buf.len() >= max {
        (&buf[..max], true)
    } else {
        (buf, false)
    }
}

fn map_error(e: httparse::Error) -> HeadError {
    HeadError::Invalid(match e {
        httparse::Error::TooManyHeaders => return HeadError::TooLarge,
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid request line",
        httparse::Error::Version => "unsupported HTTP version",
    })
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// A `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// The bytes an authority (`host[:port]`, IP literals in brackets) may hold: unreserved,
/// sub-delims, `:`, `[`, `]` and `%`; no user info.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)
}

/// The elements of a comma-separated list, trimmed, empty ones included.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim)
}

impl Scan {
    /// Collects the headers of `parsed` into `headers`, and what the known ones say.
    fn run(
        buf: &[u8],
        parsed: &[httparse::Header<'_>],
        headers: &mut Vec<Header>,
        connection: &mut Connection,
        fields: &mut Fields,
    ) -> Result<Scan, HeadError> {
        let mut scan = Scan::default();
        headers.clear();
        fields.named.clear();
        let mut te_value = None;
        for h in parsed {
            let name = Span::of(buf, h.name.as_bytes());
            let value_bytes = trim(h.value);
            let value = Span::of(buf, value_bytes);
            headers.push(Header { name, value });
            match Known::of(h.name.as_bytes()) {
                Known::Other => {}
                Known::Host => {
                    if scan.host.is_none() {
                        scan.host = Some(value);
                    }
                }
                Known::ContentLength => scan.content_length(value_bytes)?,
                Known::TransferEncoding => scan.transfer_encoding(value_bytes)?,
                Known::Connection => {
                    for token in elements(value_bytes) {
                        scan_connection_token(buf, value, token, connection, fields);
                    }
                }
                Known::Upgrade => {
                    if scan.upgrade.is_none() {
                        scan.upgrade = Some(value);
                    }
                }
                Known::Expect => {
                    scan.expect_continue |= value_bytes.eq_ignore_ascii_case(b"100-continue");
                }
                Known::Te => {
                    scan.te_headers += 1;
                    te_value = Some(value_bytes);
                }
                Known::ProxyConnection
                | Known::KeepAlive
                | Known::ProxyAuthenticate
                | Known::ProxyAuthorization
                | Known::Trailer => {}
            }
        }
        fields.te_trailers =
            scan.te_headers == 1 && te_value.is_some_and(|v| v.eq_ignore_ascii_case(b"trailers"));
        if scan.te && scan.codings == 0 {
            return Err(HeadError::Invalid("empty transfer-encoding"));
        }
        if scan.te && scan.content_length.is_some() {
            return Err(HeadError::Invalid(
                "both content-length and transfer-encoding",
            ));
        }
        Ok(scan)
    }

    /// One `Content-Length` header: a list of 1+ digits, all the same as any before.
    fn content_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        for element in elements(value) {
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Invalid("invalid content-length"));
            }
            let mut n: u64 = 0;
            for &d in element {
                n = (n.checked_mul(10))
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or(HeadError::Invalid("content-length overflows"))?;
            }
            match self.content_length {
                Some(prior) if prior != n => {
                    return Err(HeadError::Invalid("differing content-lengths"));
                }
                _ => self.content_length = Some(n),
            }
        }
        Ok(())
    }

    /// One `Transfer-Encoding` header: codings (tokens, parameters allowed but on
    /// `chunked`), `chunked` at most once.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), HeadError> {
        self.te = true;
        for element in elements(value) {
            if element.is_empty() {
                continue;
            }
            let (name, params) = match element.iter().position(|&b| b == b';') {
                Some(i) => (trim(&element[..i]), true),
                None => (element, false),
            };
            if !is_token(name) {
                return Err(HeadError::Invalid("invalid transfer-encoding"));
            }
            self.codings += 1;
            if name.eq_ignore_ascii_case(b"chunked") {
                if params {
                    return Err(HeadError::Invalid("chunked with parameters"));
                }
                if self.chunked {
                    return Err(HeadError::Invalid("chunked twice"));
                }
                self.chunked = true;
                self.last_chunked = true;
            } else {
                self.last_chunked = false;
            }
        }
        Ok(())
    }
}

/// One `Connection` token: an option, or the name of a header to drop.
fn scan_connection_token(
    buf: &[u8],
    value: Span,
    token: &[u8],
    connection: &mut Connection,
    fields: &mut Fields,
) {
    if token.eq_ignore_ascii_case(b"close") {
        connection.close = true;
    } else if token.eq_ignore_ascii_case(b"keep-alive") {
        connection.keep_alive = true;
    } else if token.eq_ignore_ascii_case(b"upgrade") {
        connection.upgrade = true;
    } else if is_token(token) {
        // Hop-by-hop names are dropped anyway (and `te: trailers` kept); `Host` and
        // `Content-Length` are never dropped this way: one says where the request goes, the
        // other is written from the parsed framing.
        if matches!(Known::of(token), Known::Other | Known::Expect) {
            fields.named.push(value.sub(buf, token));
        }
    }
}

/// The stack array `httparse` fills.
fn header_array<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

impl RequestHead {
    /// Parses the request head at the start of `buf` (empty lines before it are skipped, as
    /// RFC 9112 §2.2 allows). `Ok(true)`: complete, `self` filled (`self.len` bytes).
    /// `Ok(false)`: needs more bytes. `Err(TooLarge)` once `buf.len() >= max_size` without a
    /// complete head in its first `max_size` bytes (no more are read). After an error `self`
    /// holds no meaningful head.
    pub fn parse(&mut self, buf: &[u8], max_size: usize) -> Result<bool, HeadError> {
        let (buf, at_limit) = limit(buf, max_size);
        let mut storage = header_array();
        let mut req = httparse::Request::new(&mut []);
        let len = match config().parse_request_with_uninit_headers(&mut req, buf, &mut storage) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if at_limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(e) => return Err(map_error(e)),
        };
        let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
        else {
            return Err(HeadError::Invalid("incomplete request line"));
        };
        self.method = Span::of(buf, method.as_bytes());
        self.target = Span::of(buf, target.as_bytes());
        self.minor_version = minor_version;
        self.len = len;
        self.connection = Connection::default();
        let scan = Scan::run(
            buf,
            req.headers,
            &mut self.headers,
            &mut self.connection,
            &mut self.fields,
        )?;
        self.target(buf, method.as_bytes(), target.as_bytes())?;
        if self.host.is_none() {
            self.host = scan.host;
        }
        if let Some(host) = scan.host
            && !host.get(buf).iter().all(|&b| is_authority_byte(b))
        {
            return Err(HeadError::Invalid("invalid host"));
        }
        self.body = if scan.te {
            if minor_version == 0 {
                return Err(HeadError::Invalid("transfer-encoding in HTTP/1.0"));
            }
            if scan.chunked && !scan.last_chunked {
                return Err(HeadError::Invalid("chunked is not the last coding"));
            }
            if !scan.last_chunked || scan.codings > 1 {
                return Err(HeadError::NotImplemented(
                    "transfer coding other than chunked",
                ));
            }
            BodyLength::Chunked
        } else {
            match scan.content_length {
                Some(n) => BodyLength::Length(n),
                None => BodyLength::Empty,
            }
        };
        self.upgrade = scan.upgrade.filter(|_| self.connection.upgrade);
        // An HTTP/1.0 client cannot await a 100 (RFC 9110 §10.1.1).
        self.expect_continue = scan.expect_continue && minor_version == 1;
        Ok(true)
    }

    /// Checks the request target and fills `path`, `host` (absolute form) and their flags.
    fn target(&mut self, buf: &[u8], method: &[u8], target: &[u8]) -> Result<(), HeadError> {
        self.host = None;
        self.path_needs_slash = false;
        self.absolute_form = false;
        if target.first() == Some(&b'/') {
            self.path = self.target;
            return Ok(());
        }
        if target == b"*" {
            if method != b"OPTIONS" {
                return Err(HeadError::Invalid(
                    "`*` target for a method other than OPTIONS",
                ));
            }
            self.path = self.target;
            return Ok(());
        }
        if method == b"CONNECT" {
            return Err(HeadError::Invalid("CONNECT is not supported"));
        }
        let rest = match target.iter().position(|&b| b == b':') {
            Some(4) if target[..4].eq_ignore_ascii_case(b"http") => &target[5..],
            Some(5) if target[..5].eq_ignore_ascii_case(b"https") => &target[6..],
            _ => return Err(HeadError::Invalid("invalid request target")),
        };
        let Some(rest) = rest.strip_prefix(b"//") else {
            return Err(HeadError::Invalid("invalid request target"));
        };
        let end = (rest.iter())
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || !authority.iter().all(|&b| is_authority_byte(b)) {
            return Err(HeadError::Invalid("invalid authority in request target"));
        }
        self.host = Some(self.target.sub(buf, authority));
        self.path = self.target.sub(buf, path);
        self.path_needs_slash = path.first() != Some(&b'/');
        self.absolute_form = true;
        Ok(())
    }

    /// Whether the connection may carry another request after this one: HTTP/1.1 without
    /// `close`, or HTTP/1.0 with `keep-alive` (and without `close`).
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.minor_version, self.connection)
    }

    /// The values of the headers named `name` (case-insensitive), in order.
    pub fn values<'a>(
        &'a self,
        buf: &'a [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        values(&self.headers, buf, name)
    }

    /// How many `Host` headers the request has (HTTP/1.1 needs exactly one; the engine
    /// refuses none for 1.1, and more than one).
    pub fn host_count(&self, buf: &[u8]) -> usize {
        (self.headers.iter())
            .filter(|h| Known::of(h.name.get(buf)) == Known::Host)
            .count()
    }
}

impl ResponseHead {
    /// Parses the response head at the start of `buf`, to a request whose method was HEAD
    /// when `to_head`. Framing: 1xx, 204, 304 and answers to HEAD have no body; else
    /// `Transfer-Encoding` ending in `chunked` is [`BodyLength::Chunked`], another one (or
    /// one in HTTP/1.0) [`UntilClose`](BodyLength::UntilClose), `Content-Length` is
    /// [`Length`](BodyLength::Length), neither is `UntilClose`. Returns as
    /// [`RequestHead::parse`] does; both `Content-Length` and `Transfer-Encoding`, or a bad
    /// `Content-Length`, are [`HeadError::Invalid`] (the proxy answers 502).
    pub fn parse(&mut self, buf: &[u8], max_size: usize, to_head: bool) -> Result<bool, HeadError> {
        let (buf, at_limit) = limit(buf, max_size);
        let mut storage = header_array();
        let mut res = httparse::Response::new(&mut []);
        let len = match config().parse_response_with_uninit_headers(&mut res, buf, &mut storage) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if at_limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(e) => return Err(map_error(e)),
        };
        let (Some(minor_version), Some(status)) = (res.version, res.code) else {
            return Err(HeadError::Invalid("incomplete status line"));
        };
        if status < 100 {
            return Err(HeadError::Invalid("status below 100"));
        }
        self.status = status;
        self.reason = res
            .reason
            .map(|r| Span::of(buf, r.as_bytes()))
            .unwrap_or_default();
        self.minor_version = minor_version;
        self.len = len;
        self.connection = Connection::default();
        let scan = Scan::run(
            buf,
            res.headers,
            &mut self.headers,
            &mut self.connection,
            &mut self.fields,
        )?;
        self.body = if status < 200 || status == 204 || status == 304 || to_head {
            BodyLength::Empty
        } else if scan.te {
            if minor_version == 1 && scan.last_chunked {
                BodyLength::Chunked
            } else {
                BodyLength::UntilClose
            }
        } else {
            match scan.content_length {
                Some(n) => BodyLength::Length(n),
                None => BodyLength::UntilClose,
            }
        };
        self.upgrade = scan.upgrade.filter(|_| self.connection.upgrade);
        Ok(true)
    }

    /// Whether the connection may carry another exchange after this one: as
    /// [`RequestHead::keep_alive`], and never when the body ends with the connection.
    pub fn keep_alive(&self) -> bool {
        self.body != BodyLength::UntilClose && keep_alive(self.minor_version, self.connection)
    }

    /// The values of the headers named `name` (case-insensitive), in order.
    pub fn values<'a>(
        &'a self,
        buf: &'a [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        values(&self.headers, buf, name)
    }
}

fn keep_alive(minor_version: u8, connection: Connection) -> bool {
    !connection.close && (minor_version >= 1 || connection.keep_alive)
}

fn values<'a>(
    headers: &'a [Header],
    buf: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    (headers.iter())
        .filter(move |h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
        .map(move |h| h.value.get(buf))
}

/// What the proxy changes when it writes a head for the other side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edits<'a> {
    /// Header names (lowercase) dropped besides the hop-by-hop ones.
    pub remove: &'a [&'a str],
    /// Headers written after the kept ones, in order.
    pub add: &'a [(&'a str, &'a [u8])],
    /// Keep an upgrade: write `connection: upgrade` and the Upgrade header (when the head
    /// has one).
    pub upgrade: bool,
    /// Write `connection: close`.
    pub close: bool,
}

/// Writes `METHOD PATH HTTP/1.1\r\n` (a `path` not starting with `/`, but `*`, gets one
/// first), the request's headers but the hop-by-hop ones (RFC 9110 §7.6.1: connection,
/// proxy-connection, keep-alive, proxy-authenticate, proxy-authorization, te (but
/// `te: trailers` alone is kept), trailer, transfer-encoding, upgrade) and those
/// `Connection` names and `edits.remove`, then the framing header for `head.body`
/// (`content-length: N` / `transfer-encoding: chunked`; the original ones are dropped, so
/// exactly one goes out), then `connection`/`upgrade` as `edits` say, then `edits.add`,
/// then the empty line.
///
/// For an absolute-form target the `Host` header is written with the target's authority
/// (RFC 9112 §3.2.2): in place of the first `Host` header, or first if there was none.
pub fn write_request(
    out: &mut Vec<u8>,
    head: &RequestHead,
    buf: &[u8],
    path: &[u8],
    edits: &Edits<'_>,
) {
    out.reserve(head.len + path.len() + 64);
    out.extend_from_slice(head.method.get(buf));
    out.push(b' ');
    if path.first() != Some(&b'/') && path != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    // An HTTP/1.0 request goes as one, so the answer is one an HTTP/1.0 client reads
    // (never chunked, RFC 9112 §7.1).
    out.extend_from_slice(match head.minor_version {
        0 => b" HTTP/1.0\r\n",
        _ => b" HTTP/1.1\r\n",
    });
    // The authority, when it replaces the Host headers.
    let mut authority = head
        .host
        .filter(|_| head.absolute_form && !removed(edits, b"host"))
        .map(|h| h.get(buf));
    if head.host_count(buf) == 0
        && let Some(host) = authority.take()
    {
        push_header(out, b"host", host);
    }
    for h in &head.headers {
        let name = h.name.get(buf);
        match Known::of(name) {
            Known::Host if head.absolute_form => {
                if let Some(host) = authority.take() {
                    push_header(out, name, host);
                }
                continue;
            }
            Known::ContentLength => continue,
            Known::Te if head.fields.te_trailers => {}
            known if known.is_hop_by_hop() => continue,
            _ => {}
        }
        if named(&head.fields, buf, name) || removed(edits, name) {
            continue;
        }
        push_header(out, name, h.value.get(buf));
    }
    push_framing(out, head.body);
    push_edits(out, head.upgrade.map(|u| u.get(buf)), edits);
}

/// Writes `HTTP/1.1 STATUS REASON\r\n` and the response's headers, with the rules of
/// [`write_request`]: the framing header from `head.body` (none for
/// [`UntilClose`](BodyLength::UntilClose); for [`Empty`](BodyLength::Empty), the
/// `Content-Length` of an answer to HEAD or of a 304 is kept as it came, and dropped from a
/// 1xx or 204).
pub fn write_response(out: &mut Vec<u8>, head: &ResponseHead, buf: &[u8], edits: &Edits<'_>) {
    out.reserve(head.len + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = head.status.min(999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let keep_length = head.body == BodyLength::Empty && head.status >= 200 && head.status != 204;
    for h in &head.headers {
        let name = h.name.get(buf);
        match Known::of(name) {
            Known::ContentLength if !keep_length => continue,
            Known::Te if head.fields.te_trailers => {}
            known if known.is_hop_by_hop() => continue,
            _ => {}
        }
        if named(&head.fields, buf, name) || removed(edits, name) {
            continue;
        }
        push_header(out, name, h.value.get(buf));
    }
    push_framing(out, head.body);
    push_edits(out, head.upgrade.map(|u| u.get(buf)), edits);
}

/// Whether a `Connection` token names `name`.
fn named(fields: &Fields, buf: &[u8], name: &[u8]) -> bool {
    (fields.named.iter()).any(|token| token.get(buf).eq_ignore_ascii_case(name))
}

fn removed(edits: &Edits<'_>, name: &[u8]) -> bool {
    (edits.remove.iter()).any(|r| r.as_bytes().eq_ignore_ascii_case(name))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_framing(out: &mut Vec<u8>, body: BodyLength) {
    match body {
        BodyLength::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyLength::Empty | BodyLength::UntilClose => {}
    }
}

/// `connection`/`upgrade` as `edits` say, `edits.add`, and the empty line.
fn push_edits(out: &mut Vec<u8>, upgrade: Option<&[u8]>, edits: &Edits<'_>) {
    let upgrade = upgrade.filter(|_| edits.upgrade);
    match (upgrade.is_some(), edits.close) {
        (true, true) => out.extend_from_slice(b"connection: upgrade, close\r\n"),
        (true, false) => out.extend_from_slice(b"connection: upgrade\r\n"),
        (false, true) => out.extend_from_slice(b"connection: close\r\n"),
        (false, false) => {}
    }
    if let Some(protocol) = upgrade {
        push_header(out, b"upgrade", protocol);
    }
    for (name, value) in edits.add {
        push_header(out, name.as_bytes(), value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn request(text: &str) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        match head.parse(text.as_bytes(), MAX)? {
            true => Ok(head),
            false => panic!("partial: {text:?}"),
        }
    }

    fn response(text: &str, to_head: bool) -> Result<ResponseHead, HeadError> {
        let mut head = ResponseHead::default();
        match head.parse(text.as_bytes(), MAX, to_head)? {
            true => Ok(head),
            false => panic!("partial: {text:?}"),
        }
    }

    fn written_request(text: &str, edits: &Edits<'_>) -> String {
        let head = request(text).unwrap();
        let buf = text.as_bytes();
        let mut out = Vec::new();
        write_request(&mut out, &head, buf, head.path.get(buf), edits);
        String::from_utf8(out).unwrap()
    }

    fn written_response(text: &str, to_head: bool, edits: &Edits<'_>) -> String {
        let head = response(text, to_head).unwrap();
        let mut out = Vec::new();
        write_response(&mut out, &head, text.as_bytes(), edits);
        String::from_utf8(out).unwrap()
    }

    fn refused(text: &str) -> u16 {
        match request(text) {
            Ok(head) => panic!("accepted {text:?}: {head:?}"),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn a_simple_get() {
        let text = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        let head = request(text).unwrap();
        let buf = text.as_bytes();
        assert_eq!(head.method.get(buf), b"GET");
        assert_eq!(head.target.get(buf), b"/a/b?c=d");
        assert_eq!(head.path.get(buf), b"/a/b?c=d");
        assert!(!head.path_needs_slash && !head.absolute_form);
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.host.unwrap().get(buf), b"example.com");
        assert_eq!(head.host_count(buf), 1);
        assert_eq!(head.body, BodyLength::Empty);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers[1].name.get(buf), b"Accept");
        assert_eq!(head.headers[1].value.get(buf), b"*/*");
        assert_eq!(head.len, text.len());
        assert!(head.keep_alive());
        assert!(!head.expect_continue);
        assert_eq!(head.upgrade, None);
        assert_eq!(head.values(buf, "ACCEPT").collect::<Vec<_>>(), [b"*/*"]);
    }

    #[test]
    fn values_are_trimmed() {
        let text = "GET / HTTP/1.1\r\nHost: \t a \t\r\nX-Spaced:  a b \t\r\nX-Empty:\r\nX-Blank:   \r\n\r\n";
        let head = request(text).unwrap();
        let buf = text.as_bytes();
        assert_eq!(head.values(buf, "host").collect::<Vec<_>>(), [b"a"]);
        assert_eq!(head.values(buf, "x-spaced").collect::<Vec<_>>(), [b"a b"]);
        assert_eq!(head.values(buf, "x-empty").next(), Some(&b""[..]));
        assert_eq!(head.values(buf, "x-blank").next(), Some(&b""[..]));
    }

    #[test]
    fn keep_alive_rules_for_1_0_and_1_1() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            ("GET / HTTP/1.0\r\nconnection: x, Keep-Alive\r\n\r\n", true),
        ];
        for (text, keep) in cases {
            assert_eq!(request(text).unwrap().keep_alive(), keep, "{text:?}");
        }
        let head = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert_eq!(head.minor_version, 0);
        assert!(head.connection.keep_alive && !head.connection.close);
    }

    #[test]
    fn an_absolute_form_target_overrides_host() {
        let text = "GET http://Shop.Example:8080/cart?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
        let head = request(text).unwrap();
        let buf = text.as_bytes();
        assert!(head.absolute_form);
        assert_eq!(head.host.unwrap().get(buf), b"Shop.Example:8080");
        assert_eq!(head.path.get(buf), b"/cart?x=1");
        assert!(!head.path_needs_slash);
        assert_eq!(head.host_count(buf), 1);
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET /cart?x=1 HTTP/1.1\r\nHost: Shop.Example:8080\r\n\r\n"
        );

        for (text, path) in [
            ("GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n", ""),
            ("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n", "?q"),
        ] {
            let head = request(text).unwrap();
            assert_eq!(head.path.get(text.as_bytes()), path.as_bytes());
            assert!(head.path_needs_slash);
        }
        assert_eq!(
            written_request(
                "GET http://a?q HTTP/1.0\r\nAccept: */*\r\n\r\n",
                &Edits::default()
            ),
            "GET /?q HTTP/1.0\r\nhost: a\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn host_headers_are_counted() {
        let text = "GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n";
        let head = request(text).unwrap();
        assert_eq!(head.host_count(text.as_bytes()), 2);
        assert_eq!(head.host.unwrap().get(text.as_bytes()), b"a");
        let text = "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n";
        let head = request(text).unwrap();
        assert_eq!(head.host_count(text.as_bytes()), 0);
        assert_eq!(head.host, None);
    }

    #[test]
    fn chunked_and_length_framing() {
        let head = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n").unwrap();
        assert_eq!(head.body, BodyLength::Length(42));
        let head = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(head.body, BodyLength::Length(0));
        let head = request(
            "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 7, 7\r\nContent-Length: 7\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.body, BodyLength::Length(7));
        let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(request(text).unwrap().body, BodyLength::Chunked);
        let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(request(text).unwrap().body, BodyLength::Chunked);
        let max = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", u64::MAX);
        assert_eq!(request(&max).unwrap().body, BodyLength::Length(u64::MAX));
    }

    #[test]
    fn smuggling_and_garbage_are_refused() {
        let bad = [
            // Framing.
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3,\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            // Header lines.
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            // Request lines.
            "G(T / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.2\r\n\r\n",
            "GET / HTTP/1.1 \r\n\r\n",
            "GET a/b HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET ftp://a/ HTTP/1.1\r\n\r\n",
            "GET http:/a/ HTTP/1.1\r\n\r\n",
            "GET http:///a HTTP/1.1\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ];
        for text in bad {
            assert_eq!(refused(text), 400, "{text:?}");
        }
        for text in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(refused(text), 501, "{text:?}");
        }
        assert!(request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn partial_heads_need_more_bytes() {
        let text = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let mut head = RequestHead::default();
        for n in 0..text.len() {
            assert_eq!(head.parse(&text[..n], MAX), Ok(false), "{n}");
        }
        assert_eq!(head.parse(text, MAX), Ok(true));
        assert_eq!(head.len, text.len());
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let mut head = ResponseHead::default();
        for n in 0..text.len() {
            assert_eq!(head.parse(&text[..n], MAX, false), Ok(false), "{n}");
        }
        assert_eq!(head.parse(text, MAX, false), Ok(true));
    }

    #[test]
    fn a_head_past_the_limit_is_too_large() {
        let mut head = RequestHead::default();
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(head.parse(long.as_bytes(), 64), Err(HeadError::TooLarge));
        assert_eq!(head.parse(&long.as_bytes()[..63], 64), Ok(false));
        assert_eq!(
            head.parse(&long.as_bytes()[..64], 64),
            Err(HeadError::TooLarge)
        );
        assert_eq!(head.parse(long.as_bytes(), long.len()), Ok(true));
        assert_eq!(HeadError::TooLarge.status(), 431);

        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            head.parse(many.as_bytes(), 1 << 20),
            Err(HeadError::TooLarge)
        );
        let mut response = ResponseHead::default();
        let many = many.replacen("GET / HTTP/1.1", "HTTP/1.1 200 OK", 1);
        assert_eq!(
            response.parse(many.as_bytes(), 1 << 20, false),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn pipelined_bytes_follow_the_head() {
        let first = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let second = "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
        let buf = format!("{first}{second}");
        let mut head = RequestHead::default();
        assert_eq!(head.parse(buf.as_bytes(), MAX), Ok(true));
        assert_eq!(head.len, first.len());
        assert_eq!(head.path.get(buf.as_bytes()), b"/1");
        // Reused: the next head at its offset.
        let rest = &buf.as_bytes()[head.len..];
        assert_eq!(head.parse(rest, MAX), Ok(true));
        assert_eq!(head.len, second.len());
        assert_eq!(head.path.get(rest), b"/2");
        assert_eq!(head.host.unwrap().get(rest), b"b");
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn reuse_resets_what_the_last_head_said() {
        let mut head = RequestHead::default();
        let first = "POST http://a/ HTTP/1.1\r\nConnection: close, x-a, Upgrade\r\nUpgrade: ws\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(head.parse(first.as_bytes(), MAX), Ok(true));
        assert!(head.expect_continue && head.absolute_form && head.upgrade.is_some());
        let second = "GET / HTTP/1.1\r\nHost: b\r\n\r\n";
        assert_eq!(head.parse(second.as_bytes(), MAX), Ok(true));
        assert!(!head.expect_continue && !head.absolute_form && head.upgrade.is_none());
        assert_eq!(head.connection, Connection::default());
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.fields.named.is_empty());
        assert_eq!(head.host.unwrap().get(second.as_bytes()), b"b");
    }

    #[test]
    fn connection_tokens_name_headers_that_are_dropped() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private, te, host\r\nKeep-Alive: timeout=5\r\nx-private: secret\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic x\r\nTrailer: x\r\nUpgrade: ws\r\nTE: gzip\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn te_trailers_alone_is_kept() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: TE\r\nTE: Trailers\r\n\r\n";
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET / HTTP/1.1\r\nHost: a\r\nTE: Trailers\r\n\r\n"
        );
        let text = "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTE: gzip\r\n\r\n";
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let text = "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers, gzip\r\n\r\n";
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        );
    }

    #[test]
    fn an_upgrade_is_kept_when_asked() {
        let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let head = request(text).unwrap();
        assert!(head.connection.upgrade);
        assert_eq!(head.upgrade.unwrap().get(text.as_bytes()), b"websocket");
        assert_eq!(
            written_request(
                text,
                &Edits {
                    upgrade: true,
                    ..Edits::default()
                }
            ),
            "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        assert_eq!(
            written_request(text, &Edits::default()),
            "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n\r\n"
        );
        // Without `upgrade` among the Connection tokens, Upgrade is not for this hop.
        let text = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(request(text).unwrap().upgrade, None);
        assert_eq!(
            written_request(
                text,
                &Edits {
                    upgrade: true,
                    ..Edits::default()
                }
            ),
            "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"
        );
    }

    #[test]
    fn write_request_byte_for_byte() {
        let text = "POST /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 5\r\nContent-Length: 5\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: c=1\r\n\r\nhello";
        let head = request(text).unwrap();
        let mut out = Vec::new();
        let edits = Edits {
            remove: &["x-forwarded-for"],
            add: &[
                ("x-forwarded-for", b"1.2.3.4, 10.0.0.1"),
                ("x-forwarded-proto", b"http"),
            ],
            upgrade: false,
            close: true,
        };
        write_request(&mut out, &head, text.as_bytes(), b"/new?q", &edits);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /new?q HTTP/1.0\r\nHost: a\r\nCookie: c=1\r\ncontent-length: 5\r\nconnection: close\r\nx-forwarded-for: 1.2.3.4, 10.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
        let text = "PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
        assert!(request(text).unwrap().expect_continue);
        let one_oh = "PUT /up HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n";
        assert!(!request(one_oh).unwrap().expect_continue);
        assert_eq!(
            written_request(text, &Edits::default()),
            "PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let text = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(written_request(text, &Edits::default()), text);
    }

    #[test]
    fn responses_without_a_body() {
        for (text, to_head) in [
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", false),
            (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true,
            ),
        ] {
            let head = response(text, to_head).unwrap();
            assert_eq!(head.body, BodyLength::Empty, "{text:?}");
            assert!(head.keep_alive(), "{text:?}");
        }
        let text =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = response(text, false).unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.upgrade.unwrap().get(text.as_bytes()), b"websocket");
        assert_eq!(
            written_response(
                text,
                false,
                &Edits {
                    upgrade: true,
                    ..Edits::default()
                }
            ),
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        // The length of what a GET would have had is kept for HEAD and 304; not for 204.
        assert_eq!(
            written_response(
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                true,
                &Edits::default()
            ),
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        );
        assert_eq!(
            written_response(
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                false,
                &Edits::default()
            ),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let head = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(head.body, BodyLength::Chunked);
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false).unwrap();
        assert_eq!(head.body, BodyLength::Length(12));
        assert!(head.keep_alive());
        for text in [
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let head = response(text, false).unwrap();
            assert_eq!(head.body, BodyLength::UntilClose, "{text:?}");
            assert!(!head.keep_alive(), "{text:?}");
        }
        let head = response(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(head.keep_alive());
        let head = response(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!head.keep_alive());
    }

    #[test]
    fn bad_responses_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            let mut head = ResponseHead::default();
            assert!(
                matches!(
                    head.parse(text.as_bytes(), MAX, false),
                    Err(HeadError::Invalid(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn write_response_byte_for_byte() {
        let text = "HTTP/1.0 200 Fine\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\nSet-Cookie: a=1\r\nProxy-Authenticate: Basic\r\n\r\n";
        assert_eq!(
            written_response(text, false, &Edits::default()),
            "HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\r\n"
        );
        let text = "HTTP/1.1 404 Not Found\r\nServer: x\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n";
        assert_eq!(
            written_response(
                text,
                false,
                &Edits {
                    remove: &["server"],
                    add: &[("via", b"1.1 proxy")],
                    upgrade: false,
                    close: true,
                }
            ),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\ntransfer-encoding: chunked\r\nconnection: close\r\nvia: 1.1 proxy\r\n\r\n"
        );
        let text = "HTTP/1.1 200 \r\ncontent-length: 007\r\n\r\n";
        assert_eq!(
            written_response(text, false, &Edits::default()),
            "HTTP/1.1 200 \r\ncontent-length: 7\r\n\r\n"
        );
        // No reason phrase at all.
        let text = "HTTP/1.1 500\r\n\r\n";
        assert_eq!(
            written_response(text, false, &Edits::default()),
            "HTTP/1.1 500 \r\n\r\n"
        );
    }

    #[test]
    fn known_names_are_classified() {
        for (name, known) in [
            ("te", Known::Te),
            ("HOST", Known::Host),
            ("Expect", Known::Expect),
            ("upgrade", Known::Upgrade),
            ("Trailer", Known::Trailer),
            ("Connection", Known::Connection),
            ("keep-alive", Known::KeepAlive),
            ("content-length", Known::ContentLength),
            ("Proxy-Connection", Known::ProxyConnection),
            ("transfer-encoding", Known::TransferEncoding),
            ("proxy-authenticate", Known::ProxyAuthenticate),
            ("proxy-authorization", Known::ProxyAuthorization),
            ("trailers", Known::Other),
            ("hosts", Known::Other),
            ("tf", Known::Other),
            ("x-forwarded", Known::Other),
        ] {
            assert_eq!(Known::of(name.as_bytes()), known, "{name}");
        }
    }

    /// What the fuzz target checks, on mutations of a few heads: a request that parses,
    /// written back, parses to the same method, path, framing and host.
    #[test]
    fn mutated_heads_round_trip() {
        const SEEDS: [&str; 6] = [
            "GET /a?b HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
            "POST http://h:1?q HTTP/1.0\r\nConnection: keep-alive, x\r\nx: 1\r\nContent-Length: 3\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: b\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nUpgrade: w\r\nConnection: upgrade\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: c\r\nExpect: 100-continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            "HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ];
        const BYTES: &[u8] = b" \t\r\n:,;/?*@0123456789hHtTpPcCaAeEdD-_\x00\x7f\xff";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut request, mut again, mut out) =
            (RequestHead::default(), RequestHead::default(), Vec::new());
        let mut response = ResponseHead::default();
        let mut parsed = 0;
        for _ in 0..50_000 {
            let mut data = SEEDS[next() as usize % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % (data.len() + 1);
                let byte = BYTES[next() as usize % BYTES.len()];
                match next() % 3 {
                    0 if at < data.len() => data[at] = byte,
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            let to_head = next() % 2 == 0;
            if response.parse(&data, MAX, to_head) == Ok(true) {
                out.clear();
                write_response(&mut out, &response, &data, &Edits::default());
                let mut written = ResponseHead::default();
                assert_eq!(
                    written.parse(&out, MAX, to_head),
                    Ok(true),
                    "{data:?} as {out:?}"
                );
                assert_eq!(
                    (written.status, written.body),
                    (response.status, response.body)
                );
            }
            if request.parse(&data, MAX) != Ok(true) {
                continue;
            }
            parsed += 1;
            out.clear();
            write_request(
                &mut out,
                &request,
                &data,
                request.path.get(&data),
                &Edits::default(),
            );
            assert_eq!(again.parse(&out, MAX), Ok(true), "{data:?} as {out:?}");
            let mut path = Vec::new();
            if request.path_needs_slash {
                path.push(b'/');
            }
            path.extend_from_slice(request.path.get(&data));
            assert_eq!(again.method.get(&out), request.method.get(&data));
            assert_eq!(again.path.get(&out), &path[..], "{data:?} as {out:?}");
            assert_eq!(again.body, request.body, "{data:?} as {out:?}");
            assert_eq!(
                again.host.map(|h| h.get(&out)),
                request.host.map(|h| h.get(&data)),
                "{data:?} as {out:?}"
            );
        }
        assert!(parsed > 5_000, "{parsed}");
    }

    #[test]
    fn u64_text() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
