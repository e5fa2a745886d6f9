//! Header blocks: the name/value list, its SPDY/3 serialisation and the zlib contexts that
//! compress it, one per direction for the whole session.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::{DecodeError, EncodeError};

/// The most bytes one header block may decompress to; more is refused
/// ([`DecodeError::HeaderBlockTooLarge`]) so that a small compressed block cannot make us
/// allocate much (a zip bomb). kubectl's blocks are under 100 bytes.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The words of the SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00,
/// 2.6.10.1), each written as a 32-bit big-endian length and its bytes...
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// ...then these bytes as they are.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
    "501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const DICTIONARY_LEN: usize = {
    let mut n = DICTIONARY_TAIL.len();
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        n += 4 + DICTIONARY_WORDS[i].len();
        i += 1;
    }
    n
};

/// The SPDY/3 header compression dictionary (1423 bytes), built from the words above.
pub(crate) static DICTIONARY: [u8; DICTIONARY_LEN] = {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut at = 0;
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        let w = DICTIONARY_WORDS[i].as_bytes();
        let len = (w.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < 4 {
            out[at + j] = len[j];
            j += 1;
        }
        at += 4;
        j = 0;
        while j < w.len() {
            out[at] = w[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = DICTIONARY_TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[at] = tail[j];
        at += 1;
        j += 1;
    }
    out
};

/// A header block: an ordered list of (name, value) pairs.
///
/// Names are lower case (SPDY/3 requires it: kubectl's `streamType` arrives as
/// `streamtype`, `requestID` as `requestid`) and unique within a block; a value may hold
/// several values separated by NUL bytes ([`Headers::values`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair (validated when the block is encoded).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.pairs.push((name.into(), value.into()));
        self
    }

    /// Appends a pair, builder style.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.push(name, value);
        self
    }

    /// The value of `name` (compared as given: names on the wire are lower case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `name` if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The NUL-separated values of `name` (none if it is absent).
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get(name)
            .into_iter()
            .flat_map(|v| v.split(|&b| b == 0))
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Serialises the block uncompressed: a 32-bit count, then for each pair a 32-bit
    /// length and the name, a 32-bit length and the value.
    pub(crate) fn serialize(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let count = u32::try_from(self.pairs.len()).map_err(|_| EncodeError::HeaderTooLong)?;
        out.extend_from_slice(&count.to_be_bytes());
        for (i, (name, value)) in self.pairs.iter().enumerate() {
            if !valid_name(name.as_bytes()) {
                return Err(EncodeError::BadHeaderName);
            }
            if self.pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(EncodeError::DuplicateHeader(name.clone()));
            }
            for s in [name.as_bytes(), value.as_slice()] {
                let len = u32::try_from(s.len()).map_err(|_| EncodeError::HeaderTooLong)?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s);
            }
        }
        Ok(())
    }

    /// Parses an uncompressed block, which must be used up exactly.
    pub(crate) fn parse(mut block: &[u8]) -> Result<Self, DecodeError> {
        let count = take_u32(&mut block)?;
        // Each pair takes at least 8 bytes, so the count bounds nothing the input does not.
        let mut pairs: Vec<(String, Vec<u8>)> =
            Vec::with_capacity((count as usize).min(block.len() / 8));
        for _ in 0..count {
            let name = take_string(&mut block)?;
            if !valid_name(name) {
                return Err(DecodeError::BadHeaderName);
            }
            // valid_name admits only ASCII.
            let name = String::from_utf8_lossy(name).into_owned();
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(DecodeError::DuplicateHeader(name));
            }
            let value = take_string(&mut block)?.to_vec();
            pairs.push((name, value));
        }
        if !block.is_empty() {
            return Err(DecodeError::TrailingHeaderBytes);
        }
        Ok(Self { pairs })
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            pairs: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// Non-empty, visible ASCII, no upper case.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| (b'!'..=b'~').contains(&b) && !b.is_ascii_uppercase())
}

fn take_u32(block: &mut &[u8]) -> Result<u32, DecodeError> {
    let (head, rest) = block
        .split_first_chunk::<4>()
        .ok_or(DecodeError::TruncatedHeaderBlock)?;
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string<'a>(block: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_u32(block)? as usize;
    if len > block.len() {
        return Err(DecodeError::TruncatedHeaderBlock);
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    Ok(s)
}

/// The compressing half of one direction's header context: every header block this side
/// sends goes through the same one, in order, each ended with a zlib SYNC_FLUSH so that the
/// peer can decompress it at once while the window carries over to the next block.
pub struct HeaderCompressor {
    z: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor")
            .field("total_out", &self.z.total_out())
            .finish()
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Setting a dictionary on a fresh deflate stream cannot fail.
        z.set_dictionary(&DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        Self { z }
    }

    /// Serialises and compresses `headers`, appending the compressed block to `out`.
    pub fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut plain = Vec::new();
        headers.serialize(&mut plain)?;
        self.compress_raw(&plain, out)
    }

    /// Compresses an already serialised block (tests use it to make malformed blocks).
    pub(crate) fn compress_raw(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        loop {
            out.reserve(64 + input.len() / 2);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| EncodeError::Compression(e.to_string()))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // The flush is complete once all input is taken and zlib left room unused.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// The decompressing half of one direction's header context (see [`HeaderCompressor`]):
/// the peer's header blocks must go through it in the order they arrive.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor")
            .field("total_in", &self.z.total_in())
            .finish()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; it takes the SPDY/3 dictionary when the stream asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompresses one block (all of `input`, which must end on a flush) and parses it.
    pub fn decompress(&mut self, input: &[u8]) -> Result<Headers, DecodeError> {
        let plain = self.inflate(input)?;
        Headers::parse(&plain)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let bad = |e: &dyn std::fmt::Display| DecodeError::BadCompression(e.to_string());
        let mut out = Vec::with_capacity(256.min(MAX_HEADER_BLOCK));
        loop {
            // Room for one byte past the bound, to tell "exactly full" from "over".
            let room = (MAX_HEADER_BLOCK + 1 - out.len()).min(out.len().max(1024));
            out.reserve(room);
            let before = self.z.total_in();
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            let ok = res.is_ok();
            match res {
                Ok(Status::StreamEnd) => {
                    // The peer ended its zlib stream: no later block could be decoded.
                    return Err(DecodeError::BadCompression("zlib stream ended".into()));
                }
                Ok(Status::Ok | Status::BufError) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == adler32(&DICTIONARY) => {
                        self.z.set_dictionary(&DICTIONARY).map_err(|e| bad(&e))?;
                    }
                    Some(id) => {
                        return Err(DecodeError::BadCompression(format!(
                            "unknown dictionary {id:#010x}"
                        )));
                    }
                    None => return Err(bad(&e)),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(DecodeError::HeaderBlockTooLarge {
                    max: MAX_HEADER_BLOCK,
                });
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && ok && out.len() < out.capacity() {
                // No progress with input left and room to write: cannot happen with zlib,
                // but never loop forever on it.
                return Err(DecodeError::BadCompression("no progress".into()));
            }
        }
    }
}

/// zlib's Adler-32, for the dictionary id.
pub(crate) fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}
