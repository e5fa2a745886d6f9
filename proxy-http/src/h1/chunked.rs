//! The framing of a chunked body (RFC 9112 §7.1), read as its bytes go by: fed the bytes
//! of a body in any pieces, [`Chunked`] says how many of them belong to it and where it
//! ends, without decoding or copying it, so the body passes on as the bytes it arrived as.
//!
//! The framing is read strictly, to the letter of the grammar: whatever two readers of the
//! same bytes might disagree on is refused (a bare LF, a CR without LF, data not followed
//! by CRLF, a size of more than 16 significant hex digits, whitespace where the grammar
//! has none, an obs-fold in the trailers, and so on). Chunk data is skipped by count;
//! every other byte is looked at once, and nothing is allocated.

use std::fmt;

/// Reads the framing of a chunked body as its bytes go by.
///
/// Each [`feed`](Chunked::feed) takes the bytes that follow those fed before, in pieces
/// of any size (one byte at a time gives the same answers as all at once), and answers
/// whether the body goes on past them or where in them it ends.
///
/// ```
/// use proxy_http::h1::chunked::{Chunked, Step};
///
/// let mut body = Chunked::new(1024);
/// assert_eq!(body.feed(b"5\r\nhel"), Ok(Step::More(6)));
/// assert_eq!(body.feed(b"lo\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), Ok(Step::Done(9)));
/// assert_eq!(body.data_len(), 5);
/// assert!(body.is_done());
/// ```
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// The longest chunk-size line and the longest trailer section taken.
    max_line: usize,
    /// Bytes of the chunk-size line (before its CRLF), or of the trailer section (its
    /// field lines with their CRLFs), read so far.
    line: usize,
    /// The chunk-size being read, then the data bytes of the chunk still to come.
    size: u64,
    /// Significant (after leading zeros) hex digits of the chunk-size read so far.
    digits: u8,
    /// Data bytes seen so far.
    data_len: u64,
}

/// What [`Chunked::feed`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All `n` bytes given belong to the body, which goes on (`n == input.len()`).
    More(usize),
    /// The body ends after the first `n` bytes given (last chunk, trailer section and its
    /// final CRLF included); the rest is the next message's.
    Done(usize),
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkedError {
    /// A chunk-size that is not one or more hex digits (nothing before the line's end, or
    /// leading whitespace, a sign, `0x`, or another byte where a hex digit must be).
    InvalidSize,
    /// A chunk-size of more than 16 significant hex digits (beyond a `u64`).
    SizeOverflow,
    /// A chunk-size line (size and extensions) longer than the limit.
    SizeLineTooLong,
    /// A malformed chunk extension (`;name[=value]`, the value a token or quoted-string,
    /// whitespace only around `;` and `=`).
    InvalidExtension,
    /// A control character other than HTAB in a chunk-size line or a trailer line.
    ControlChar,
    /// A LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    CrWithoutLf,
    /// Chunk data not followed by CRLF.
    MissingDataCrlf,
    /// A trailer section longer than the limit.
    TrailersTooLong,
    /// A trailer line that starts with whitespace (obs-fold, a line folded into the one
    /// before).
    ObsFold,
    /// Whitespace between a trailer field's name and its colon.
    SpaceBeforeColon,
    /// A malformed trailer field line (a name that is not a token, no colon, or a byte not
    /// allowed in a field value).
    InvalidTrailer,
    /// Bytes fed after the body ended (a logic error of the caller).
    AfterDone,
}

/// Where in the body the next byte is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The first byte of a chunk-size line: a hex digit.
    SizeStart,
    /// In the chunk-size's hex digits.
    Size,
    /// In whitespace after the size or an extension, before a `;`.
    ExtBws,
    /// After a `;` (and whitespace): an extension's name.
    ExtNameStart,
    /// In an extension's name.
    ExtName,
    /// In whitespace after an extension's name: `=` or `;`.
    ExtAfterName,
    /// After `=` (and whitespace): an extension's value.
    ExtValueStart,
    /// In an extension's token value.
    ExtToken,
    /// In an extension's quoted-string value.
    ExtQuoted,
    /// After a `\` in a quoted-string.
    ExtQuotedPair,
    /// After a quoted-string's closing quote.
    ExtAfterQuoted,
    /// After the CR ending a chunk-size line.
    SizeLf,
    /// In chunk data (`size` bytes to go).
    Data,
    /// After chunk data: its CR.
    DataCr,
    /// After chunk data and its CR: the LF.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer field's name.
    TrailerName,
    /// In a trailer field's value (after the colon).
    TrailerValue,
    /// After the CR ending a trailer field line.
    TrailerLf,
    /// After the CR of the final CRLF.
    FinalLf,
    /// The body ended.
    Done,
    /// The body was refused, for this reason.
    Failed(ChunkedError),
}

// ===== impl Chunked =====

impl Chunked {
    /// A reader for a chunked body that starts with the next byte fed.
    ///
    /// `max_line`: the longest chunk-size line (with extensions) and the longest trailer
    /// section taken, in bytes. A chunk-size line is counted without its CRLF; a trailer
    /// section is counted as its field lines with their CRLFs, without the final CRLF (so
    /// an empty trailer section is 0 bytes).
    pub fn new(max_line: usize) -> Chunked {
        Chunked {
            state: State::SizeStart,
            max_line,
            line: 0,
            size: 0,
            digits: 0,
            data_len: 0,
        }
    }

    /// Feeds the next bytes of the body (those after the ones fed before).
    ///
    /// Once it returned an error, it returns that error again whatever it is fed; once it
    /// returned [`Step::Done`], it returns [`ChunkedError::AfterDone`].
    pub fn feed(&mut self, input: &[u8]) -> Result<Step, ChunkedError> {
        match &self.state {
            State::Done => return Err(ChunkedError::AfterDone),
            State::Failed(e) => return Err(e.clone()),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let rest = input.len() - i;
                let take = usize::try_from(self.size).map_or(rest, |size| size.min(rest));
                i += take;
                // `take` is at most `size`, a u64.
                let taken = take as u64;
                self.size -= taken;
                self.data_len += taken;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[i];
            i += 1;
            match self.byte(byte) {
                Ok(()) if self.state == State::Done => return Ok(Step::Done(i)),
                Ok(()) => {}
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(Step::More(input.len()))
    }

    /// The data bytes (chunk contents, not framing) seen so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Whether the body has ended (a [`Step::Done`] was returned).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads one byte of framing (anywhere but in chunk data).
    fn byte(&mut self, b: u8) -> Result<(), ChunkedError> {
        use ChunkedError as E;
        use State as S;

        if self.in_size_line() && b != b'\r' {
            self.line += 1;
            if self.line > self.max_line {
                return Err(E::SizeLineTooLong);
            }
        }
        if self.in_trailers() && !(self.state == State::TrailerStart && b == b'\r') {
            self.line += 1;
            if self.line > self.max_line {
                return Err(E::TrailersTooLong);
            }
        }

        self.state = match self.state {
            S::SizeStart => match hex(b) {
                Some(d) => self.digit(d)?,
                None => return Err(refuse(b, E::InvalidSize)),
            },
            S::Size => match (hex(b), b) {
                (Some(d), _) => self.digit(d)?,
                (None, b';') => S::ExtNameStart,
                (None, b' ' | b'\t') => S::ExtBws,
                (None, b'\r') => S::SizeLf,
                (None, _) => return Err(refuse(b, E::InvalidSize)),
            },
            S::ExtBws => match b {
                b' ' | b'\t' => S::ExtBws,
                b';' => S::ExtNameStart,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtNameStart => match b {
                b' ' | b'\t' => S::ExtNameStart,
                _ if is_tchar(b) => S::ExtName,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtName => match b {
                _ if is_tchar(b) => S::ExtName,
                b' ' | b'\t' => S::ExtAfterName,
                b'=' => S::ExtValueStart,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtAfterName => match b {
                b' ' | b'\t' => S::ExtAfterName,
                b'=' => S::ExtValueStart,
                b';' => S::ExtNameStart,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtValueStart => match b {
                b' ' | b'\t' => S::ExtValueStart,
                b'"' => S::ExtQuoted,
                _ if is_tchar(b) => S::ExtToken,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtToken => match b {
                _ if is_tchar(b) => S::ExtToken,
                b' ' | b'\t' => S::ExtBws,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtQuoted => match b {
                b'"' => S::ExtAfterQuoted,
                b'\\' => S::ExtQuotedPair,
                // qdtext: HTAB, SP, VCHAR but `"` and `\`, obs-text.
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => S::ExtQuoted,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtQuotedPair => match b {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => S::ExtQuoted,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::ExtAfterQuoted => match b {
                b' ' | b'\t' => S::ExtBws,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(refuse(b, E::InvalidExtension)),
            },
            S::SizeLf => match b {
                b'\n' if self.size == 0 => {
                    self.line = 0;
                    S::TrailerStart
                }
                b'\n' => S::Data,
                _ => return Err(E::CrWithoutLf),
            },
            S::DataCr => match b {
                b'\r' => S::DataLf,
                b'\n' => return Err(E::BareLf),
                _ => return Err(E::MissingDataCrlf),
            },
            S::DataLf => match b {
                b'\n' => {
                    self.line = 0;
                    self.digits = 0;
                    S::SizeStart
                }
                _ => return Err(E::MissingDataCrlf),
            },
            S::TrailerStart => match b {
                b'\r' => S::FinalLf,
                b' ' | b'\t' => return Err(E::ObsFold),
                _ if is_tchar(b) => S::TrailerName,
                _ => return Err(refuse(b, E::InvalidTrailer)),
            },
            S::TrailerName => match b {
                _ if is_tchar(b) => S::TrailerName,
                b':' => S::TrailerValue,
                b' ' | b'\t' => return Err(E::SpaceBeforeColon),
                _ => return Err(refuse(b, E::InvalidTrailer)),
            },
            S::TrailerValue => match b {
                b'\r' => S::TrailerLf,
                // field-content: VCHAR, obs-text, SP and HTAB.
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => S::TrailerValue,
                _ => return Err(refuse(b, E::InvalidTrailer)),
            },
            S::TrailerLf => match b {
                b'\n' => S::TrailerStart,
                _ => return Err(E::CrWithoutLf),
            },
            S::FinalLf => match b {
                b'\n' => S::Done,
                _ => return Err(E::CrWithoutLf),
            },
            // Data is skipped by count in `feed`, which never calls this once done or failed.
            S::Data | S::Done | S::Failed(_) => unreachable!("no framing byte in {:?}", self.state),
        };
        Ok(())
    }

    /// Takes a hex digit of the chunk-size: the state after it.
    fn digit(&mut self, d: u8) -> Result<State, ChunkedError> {
        if self.size != 0 || d != 0 {
            self.digits += 1;
            if self.digits > 16 {
                return Err(ChunkedError::SizeOverflow);
            }
            self.size = self.size << 4 | u64::from(d);
        }
        Ok(State::Size)
    }

    /// Whether the next byte is in a chunk-size line (before its CRLF).
    fn in_size_line(&self) -> bool {
        use State as S;
        matches!(
            self.state,
            S::SizeStart
                | S::Size
                | S::ExtBws
                | S::ExtNameStart
                | S::ExtName
                | S::ExtAfterName
                | S::ExtValueStart
                | S::ExtToken
                | S::ExtQuoted
                | S::ExtQuotedPair
                | S::ExtAfterQuoted
        )
    }

    /// Whether the next byte is in a trailer field line (not the final CRLF).
    fn in_trailers(&self) -> bool {
        use State as S;
        matches!(
            self.state,
            S::TrailerStart | S::TrailerName | S::TrailerValue | S::TrailerLf
        )
    }
}

/// The error for a byte a line has no place for: a LF is a bare LF, another control
/// character but CR and HTAB a control character, anything else `otherwise`.
fn refuse(b: u8, otherwise: ChunkedError) -> ChunkedError {
    match b {
        b'\n' => ChunkedError::BareLf,
        b'\r' | b'\t' => otherwise,
        0x00..=0x1f | 0x7f => ChunkedError::ControlChar,
        _ => otherwise,
    }
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `b` is a tchar (RFC 9110 §5.6.2), of which tokens are made.
fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

// ===== impl ChunkedError =====

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::InvalidSize => "chunked body: a chunk-size is not hex digits",
            ChunkedError::SizeOverflow => {
                "chunked body: a chunk-size has more than 16 significant hex digits"
            }
            ChunkedError::SizeLineTooLong => "chunked body: a chunk-size line is too long",
            ChunkedError::InvalidExtension => "chunked body: a malformed chunk extension",
            ChunkedError::ControlChar => "chunked body: a control character in a line",
            ChunkedError::BareLf => "chunked body: a LF without CR",
            ChunkedError::CrWithoutLf => "chunked body: a CR without LF",
            ChunkedError::MissingDataCrlf => "chunked body: chunk data not followed by CRLF",
            ChunkedError::TrailersTooLong => "chunked body: the trailer section is too long",
            ChunkedError::ObsFold => "chunked body: a folded trailer line (obs-fold)",
            ChunkedError::SpaceBeforeColon => {
                "chunked body: whitespace between a trailer field's name and colon"
            }
            ChunkedError::InvalidTrailer => "chunked body: a malformed trailer field line",
            ChunkedError::AfterDone => "chunked body: bytes fed after the body ended",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 128;

    /// Feeds `input` in pieces of the sizes `piece` gives (0 included, an empty feed):
    /// where the body ended in `input` (None if it goes on) and its data length.
    fn run(
        max: usize,
        input: &[u8],
        mut piece: impl FnMut() -> usize,
    ) -> Result<(Option<usize>, u64), ChunkedError> {
        let mut body = Chunked::new(max);
        let mut at = 0;
        loop {
            let end = (at + piece()).min(input.len());
            match body.feed(&input[at..end])? {
                Step::Done(n) => {
                    assert!(n <= end - at, "Done({n}) of {} bytes", end - at);
                    assert!(body.is_done());
                    return Ok((Some(at + n), body.data_len()));
                }
                Step::More(n) => {
                    assert_eq!(n, end - at);
                    assert!(!body.is_done());
                    at = end;
                }
            }
            if at == input.len() {
                return Ok((None, body.data_len()));
            }
        }
    }

    fn whole(max: usize, input: &[u8]) -> Result<(Option<usize>, u64), ChunkedError> {
        run(max, input, || input.len())
    }

    fn bytewise(max: usize, input: &[u8]) -> Result<(Option<usize>, u64), ChunkedError> {
        run(max, input, || 1)
    }

    /// Pieces of 0 to `most` bytes, from a xorshift seeded with `seed`.
    fn random(
        max: usize,
        input: &[u8],
        seed: u64,
        most: u64,
    ) -> Result<(Option<usize>, u64), ChunkedError> {
        let mut x = seed | 1;
        run(max, input, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (most + 1)) as usize
        })
    }

    /// Asserts `input` (fed whole, a byte at a time and in random pieces) is refused with `e`.
    #[track_caller]
    fn refused(max: usize, input: &[u8], e: ChunkedError) {
        let shown = String::from_utf8_lossy(input);
        assert_eq!(whole(max, input), Err(e.clone()), "{shown:?}");
        assert_eq!(
            bytewise(max, input),
            Err(e.clone()),
            "{shown:?} a byte at a time"
        );
        for seed in 1..20 {
            assert_eq!(
                random(max, input, seed, 5),
                Err(e.clone()),
                "{shown:?} seed {seed}"
            );
        }
    }

    /// Well-formed bodies and their data lengths.
    fn bodies() -> Vec<(Vec<u8>, u64)> {
        let thirty_one = "x".repeat(31);
        vec![
            (b"5\r\nhello\r\n0\r\n\r\n".to_vec(), 5),
            (b"0\r\n\r\n".to_vec(), 0),
            (b"000\r\n\r\n".to_vec(), 0),
            (b"0005\r\nhello\r\n0000\r\n\r\n".to_vec(), 5),
            (
                b"4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n".to_vec(),
                24,
            ),
            // Uppercase and lowercase hex.
            (
                format!(
                    "a\r\n0123456789\r\nA\r\n0123456789\r\n1f\r\n{thirty_one}\r\n\
                     1F\r\n{thirty_one}\r\n0\r\n\r\n"
                )
                .into_bytes(),
                82,
            ),
            // Extensions, with whitespace around `;` and `=`, tokens and quoted-strings.
            (
                b"5;name=value\r\nhello\r\n3 ; a ; b = \"q \\\" s\\\\\"\t;c=d;e\r\nabc\r\n\
                  2;x=\"\"\r\nhi\r\n0;last;ext=\"\xe9\"\r\n\r\n"
                    .to_vec(),
                10,
            ),
            // Trailers.
            (
                b"3\r\nabc\r\n0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\
                  X-Checksum:abc\r\nEmpty:\r\nTabs:\t v \t\r\n\r\n"
                    .to_vec(),
                3,
            ),
            // Data that looks like framing.
            (b"6\r\n0\r\n\r\nx\r\n0\r\n\r\n".to_vec(), 6),
            // Data that is framing bytes, NUL and LF.
            (b"3\r\n\n\0\r\r\n0\r\n\r\n".to_vec(), 3),
        ]
    }

    #[test]
    fn well_formed_bodies_end_where_they_end() {
        for (body, data) in bodies() {
            let shown = String::from_utf8_lossy(&body);
            assert_eq!(whole(MAX, &body), Ok((Some(body.len()), data)), "{shown:?}");
        }
    }

    #[test]
    fn one_byte_at_a_time_agrees() {
        for (body, data) in bodies() {
            let shown = String::from_utf8_lossy(&body);
            assert_eq!(
                bytewise(MAX, &body),
                Ok((Some(body.len()), data)),
                "{shown:?}"
            );
        }
    }

    #[test]
    fn random_splits_agree() {
        for (body, data) in bodies() {
            let shown = String::from_utf8_lossy(&body);
            for seed in 1..50 {
                for most in [2, 5, 17] {
                    assert_eq!(
                        random(MAX, &body, seed, most),
                        Ok((Some(body.len()), data)),
                        "{shown:?} seed {seed} pieces up to {most}"
                    );
                }
            }
            // Every split in two.
            for at in 0..=body.len() {
                let mut pieces = [at, body.len()].into_iter();
                let split = run(MAX, &body, || pieces.next().unwrap_or(1));
                assert_eq!(
                    split,
                    Ok((Some(body.len()), data)),
                    "{shown:?} split at {at}"
                );
            }
        }
    }

    #[test]
    fn mutated_bodies_agree_whatever_the_split() {
        const BYTES: &[u8] = b"\r\n;=\" \t\\0fF:x\0\x7f\xff";
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (body, _) in bodies() {
            for _ in 0..300 {
                let mut body = body.clone();
                for _ in 0..=next() % 3 {
                    let at = (next() % body.len() as u64) as usize;
                    let byte = BYTES[(next() % BYTES.len() as u64) as usize];
                    match next() % 3 {
                        0 => body[at] = byte,
                        1 => body.insert(at, byte),
                        _ => drop(body.remove(at)),
                    }
                    if body.is_empty() {
                        body.push(byte);
                    }
                }
                let max = [3, 9, 20, MAX][(next() % 4) as usize];
                let seed = next();
                let shown = String::from_utf8_lossy(&body);
                let whole = whole(max, &body);
                assert_eq!(bytewise(max, &body), whole, "{shown:?} max {max}");
                assert_eq!(random(max, &body, seed, 6), whole, "{shown:?} max {max}");
            }
        }
    }

    #[test]
    fn pipelined_bytes_are_left_out() {
        let next = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for (body, data) in bodies() {
            let mut both = body.clone();
            both.extend_from_slice(next);
            let shown = String::from_utf8_lossy(&both);
            assert_eq!(whole(MAX, &both), Ok((Some(body.len()), data)), "{shown:?}");
            assert_eq!(
                bytewise(MAX, &both),
                Ok((Some(body.len()), data)),
                "{shown:?}"
            );
            for seed in 1..20 {
                assert_eq!(random(MAX, &both, seed, 9), Ok((Some(body.len()), data)));
            }
        }
        // Another chunked body right after: the same Done.
        let mut body = Chunked::new(MAX);
        assert_eq!(
            body.feed(b"1\r\na\r\n0\r\n\r\n1\r\nb\r\n0\r\n\r\n"),
            Ok(Step::Done(11))
        );
    }

    #[test]
    fn more_until_the_end() {
        let mut body = Chunked::new(MAX);
        assert_eq!(body.feed(b""), Ok(Step::More(0)));
        assert_eq!(body.feed(b"1"), Ok(Step::More(1)));
        assert_eq!(body.feed(b"0\r"), Ok(Step::More(2)));
        assert_eq!(body.feed(b"\n"), Ok(Step::More(1)));
        assert_eq!(body.feed(&[b'z'; 16]), Ok(Step::More(16)));
        assert_eq!(body.data_len(), 16);
        assert_eq!(body.feed(b"\r\n0\r\n"), Ok(Step::More(5)));
        assert_eq!(body.feed(b"\r"), Ok(Step::More(1)));
        assert!(!body.is_done());
        assert_eq!(body.feed(b""), Ok(Step::More(0)));
        assert_eq!(body.feed(b"\nnext"), Ok(Step::Done(1)));
        assert!(body.is_done());
        assert_eq!(body.data_len(), 16);
    }

    #[test]
    fn data_len_counts_chunk_contents_only() {
        let mut body = Chunked::new(MAX);
        assert_eq!(body.data_len(), 0);
        assert_eq!(body.feed(b"a;x=y\r\n0123"), Ok(Step::More(11)));
        assert_eq!(body.data_len(), 4);
        assert_eq!(body.feed(b"456789\r\n"), Ok(Step::More(8)));
        assert_eq!(body.data_len(), 10);
        assert_eq!(body.feed(b"2\r\n"), Ok(Step::More(3)));
        assert_eq!(body.data_len(), 10);
        assert_eq!(body.feed(b"ab\r\n0\r\nT: v\r\n\r\n"), Ok(Step::Done(15)));
        assert_eq!(body.data_len(), 12);
    }

    #[test]
    fn a_size_of_16_digits_is_taken() {
        let mut body = Chunked::new(MAX);
        assert_eq!(body.feed(b"ffffffffffffffff\r\nabc"), Ok(Step::More(21)));
        assert_eq!(body.data_len(), 3);
        let mut body = Chunked::new(MAX);
        assert_eq!(
            body.feed(b"0000FFFFFFFFFFFFFFFF;a=b\r\n"),
            Ok(Step::More(26))
        );
        assert!(!body.is_done());
    }

    #[test]
    fn leading_zeros_are_not_significant_but_are_counted_in_the_line() {
        let size = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(40));
        assert_eq!(whole(MAX, size.as_bytes()), Ok((Some(size.len()), 1)));
        let size = format!("{}1\r\n", "0".repeat(MAX));
        refused(MAX, size.as_bytes(), ChunkedError::SizeLineTooLong);
    }

    #[test]
    fn size_line_up_to_the_limit_is_taken() {
        // 10 bytes before the CRLF.
        let line = b"5;abc=defg\r\nhello\r\n0\r\n\r\n";
        assert_eq!(whole(10, line), Ok((Some(line.len()), 5)));
        assert_eq!(bytewise(10, line), Ok((Some(line.len()), 5)));
        refused(9, line, ChunkedError::SizeLineTooLong);
    }

    #[test]
    fn size_line_too_long_is_refused() {
        let line = format!("5;a={}\r\nhello\r\n0\r\n\r\n", "b".repeat(MAX));
        refused(MAX, line.as_bytes(), ChunkedError::SizeLineTooLong);
        // A line that never ends is refused once past the limit.
        let mut body = Chunked::new(8);
        assert_eq!(body.feed(b"1;aaaaaa"), Ok(Step::More(8)));
        assert_eq!(body.feed(b"a"), Err(ChunkedError::SizeLineTooLong));
    }

    #[test]
    fn trailers_up_to_the_limit_are_taken() {
        // 10 bytes of field lines, CRLFs included.
        let body = b"0\r\nA: 1\r\nB:\r\n\r\n";
        assert_eq!(whole(10, body), Ok((Some(body.len()), 0)));
        assert_eq!(bytewise(10, body), Ok((Some(body.len()), 0)));
        refused(9, body, ChunkedError::TrailersTooLong);
        // An empty trailer section takes nothing (the last-chunk line is 1 byte).
        assert_eq!(whole(1, b"0\r\n\r\n"), Ok((Some(5), 0)));
    }

    #[test]
    fn trailers_too_long_are_refused() {
        let body = format!("0\r\nX-Long: {}\r\n\r\n", "v".repeat(MAX));
        refused(MAX, body.as_bytes(), ChunkedError::TrailersTooLong);
        // Many short lines add up.
        let body = format!("0\r\n{}\r\n", "A: 1\r\n".repeat(MAX / 6 + 1));
        refused(MAX, body.as_bytes(), ChunkedError::TrailersTooLong);
    }

    #[test]
    fn bare_lf_is_refused() {
        refused(MAX, b"5\nhello\r\n0\r\n\r\n", ChunkedError::BareLf);
        refused(MAX, b"5;a=b\n", ChunkedError::BareLf);
        refused(MAX, b"5;a\n", ChunkedError::BareLf);
        refused(MAX, b"5;a=\"b\n", ChunkedError::BareLf);
        refused(MAX, b"5\r\nhello\n0\r\n\r\n", ChunkedError::BareLf);
        refused(MAX, b"0\r\nA: b\n\r\n", ChunkedError::BareLf);
        refused(MAX, b"0\r\n\n", ChunkedError::BareLf);
        refused(MAX, b"\n", ChunkedError::BareLf);
    }

    #[test]
    fn cr_without_lf_is_refused() {
        refused(MAX, b"5\r\rhello", ChunkedError::CrWithoutLf);
        refused(MAX, b"5;a=b\rx", ChunkedError::CrWithoutLf);
        refused(MAX, b"0\r\nA: b\rB: c\r\n\r\n", ChunkedError::CrWithoutLf);
        refused(MAX, b"0\r\n\r\r\n", ChunkedError::CrWithoutLf);
        refused(MAX, b"0\r\n\rX", ChunkedError::CrWithoutLf);
    }

    #[test]
    fn missing_crlf_after_data_is_refused() {
        refused(MAX, b"5\r\nhello0\r\n\r\n", ChunkedError::MissingDataCrlf);
        refused(
            MAX,
            b"5\r\nhello!\r\n0\r\n\r\n",
            ChunkedError::MissingDataCrlf,
        );
        refused(MAX, b"5\r\nhello\r0\r\n\r\n", ChunkedError::MissingDataCrlf);
        refused(MAX, b"5\r\nhello\r\r\n", ChunkedError::MissingDataCrlf);
    }

    #[test]
    fn non_hex_size_is_refused() {
        for line in [
            &b"\r\n"[..],
            b" 5\r\n",
            b"\t5\r\n",
            b"+5\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"0X5\r\n",
            b"g\r\n",
            b"5g\r\n",
            b";a\r\n",
            b"5.0\r\n",
        ] {
            refused(MAX, line, ChunkedError::InvalidSize);
        }
        // After a chunk too.
        refused(MAX, b"1\r\na\r\n x\r\n", ChunkedError::InvalidSize);
    }

    #[test]
    fn size_overflow_is_refused() {
        refused(MAX, b"10000000000000000\r\n", ChunkedError::SizeOverflow);
        refused(MAX, b"fffffffffffffffff\r\n", ChunkedError::SizeOverflow);
        refused(MAX, b"ffffffffffffffffff\r\n", ChunkedError::SizeOverflow);
        refused(
            MAX,
            b"00001000000000000000a\r\n",
            ChunkedError::SizeOverflow,
        );
    }

    #[test]
    fn malformed_extensions_are_refused() {
        for line in [
            &b"5 \r\n"[..],
            b"5\t\r\n",
            b"5;\r\n",
            b"5; \r\n",
            b"5;=x\r\n",
            b"5;a=\r\n",
            b"5;a= \r\n",
            b"5;a \r\n",
            b"5;a=b \r\n",
            b"5;a=b c\r\n",
            b"5;a b\r\n",
            b"5;a=\"b\"c\r\n",
            b"5;a=\"b\" \r\n",
            b"5;a=\"b\r\n",
            b"5;a=\"b\\\r\n",
            b"5;a=b=c\r\n",
            b"5;a@=b\r\n",
            b"5;a=b,c\r\n",
            b"5 x\r\n",
            b"5;;a\r\n",
        ] {
            refused(MAX, line, ChunkedError::InvalidExtension);
        }
    }

    #[test]
    fn control_characters_are_refused() {
        refused(MAX, b"5\0\r\n", ChunkedError::ControlChar);
        refused(MAX, b"5;a\x01\r\n", ChunkedError::ControlChar);
        refused(MAX, b"5;a=\"\x1b\"\r\n", ChunkedError::ControlChar);
        refused(MAX, b"5;a=\"\\\x7f\"\r\n", ChunkedError::ControlChar);
        refused(MAX, b"5;a=b\x0b\r\n", ChunkedError::ControlChar);
        refused(MAX, b"0\r\nA: b\0c\r\n\r\n", ChunkedError::ControlChar);
        refused(MAX, b"0\r\nA: \x7f\r\n\r\n", ChunkedError::ControlChar);
        refused(MAX, b"0\r\nA\x0c: b\r\n\r\n", ChunkedError::ControlChar);
    }

    #[test]
    fn obs_fold_in_trailers_is_refused() {
        refused(MAX, b"0\r\nA: b\r\n c\r\n\r\n", ChunkedError::ObsFold);
        refused(MAX, b"0\r\nA: b\r\n\tc\r\n\r\n", ChunkedError::ObsFold);
        refused(MAX, b"0\r\n A: b\r\n\r\n", ChunkedError::ObsFold);
    }

    #[test]
    fn space_before_colon_in_trailers_is_refused() {
        refused(MAX, b"0\r\nA : b\r\n\r\n", ChunkedError::SpaceBeforeColon);
        refused(MAX, b"0\r\nA\t: b\r\n\r\n", ChunkedError::SpaceBeforeColon);
        refused(MAX, b"0\r\nA b: c\r\n\r\n", ChunkedError::SpaceBeforeColon);
    }

    #[test]
    fn malformed_trailers_are_refused() {
        refused(MAX, b"0\r\nA\r\n\r\n", ChunkedError::InvalidTrailer);
        refused(MAX, b"0\r\n: b\r\n\r\n", ChunkedError::InvalidTrailer);
        refused(MAX, b"0\r\nA(: b\r\n\r\n", ChunkedError::InvalidTrailer);
        refused(
            MAX,
            b"0\r\n\xc3\xa9: b\r\n\r\n",
            ChunkedError::InvalidTrailer,
        );
        refused(MAX, b"0\r\nA:b\r\nB\r\n\r\n", ChunkedError::InvalidTrailer);
    }

    #[test]
    fn feeding_after_done_is_an_error() {
        let mut body = Chunked::new(MAX);
        assert_eq!(body.feed(b"0\r\n\r\n"), Ok(Step::Done(5)));
        assert!(body.is_done());
        assert_eq!(body.feed(b"x"), Err(ChunkedError::AfterDone));
        assert_eq!(body.feed(b""), Err(ChunkedError::AfterDone));
        assert!(body.is_done());
        assert_eq!(body.data_len(), 0);
    }

    #[test]
    fn errors_stay() {
        let mut body = Chunked::new(MAX);
        assert_eq!(body.feed(b"5\r\nhe"), Ok(Step::More(5)));
        assert_eq!(body.feed(b"llo\n"), Err(ChunkedError::BareLf));
        assert_eq!(body.feed(b"0\r\n\r\n"), Err(ChunkedError::BareLf));
        assert_eq!(body.feed(b""), Err(ChunkedError::BareLf));
        assert!(!body.is_done());
        assert_eq!(body.data_len(), 5);
    }

    #[test]
    fn errors_read_as_text() {
        let e: Box<dyn std::error::Error> = Box::new(ChunkedError::ObsFold);
        assert_eq!(
            e.to_string(),
            "chunked body: a folded trailer line (obs-fold)"
        );
    }
}
