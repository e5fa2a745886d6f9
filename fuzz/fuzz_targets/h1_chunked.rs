//! Fuzzes the chunked-body framing reader: never panics, and the same bytes fed in one go
//! and in pieces (sizes from a small PRNG seeded with the input's first byte) give the
//! same answer: refused with the same error, or ended at the same byte with the same data
//! length, or going on past all of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_http::h1::chunked::{Chunked, ChunkedError, Step};

/// Where the body ended in `input` (None if it goes on) and its data length.
type Outcome = Result<(Option<usize>, u64), ChunkedError>;

fn feed(max_line: usize, input: &[u8], mut piece: impl FnMut() -> usize) -> Outcome {
    let mut body = Chunked::new(max_line);
    let mut at = 0;
    loop {
        let end = (at + piece()).min(input.len());
        match body.feed(&input[at..end]) {
            Ok(Step::Done(n)) => {
                assert!(n <= end - at, "Done({n}) of {} bytes", end - at);
                assert!(body.is_done());
                assert_eq!(body.feed(b""), Err(ChunkedError::AfterDone));
                return Ok((Some(at + n), body.data_len()));
            }
            Ok(Step::More(n)) => {
                assert_eq!(n, end - at);
                assert!(!body.is_done());
                at = end;
            }
            Err(e) => {
                assert!(!body.is_done());
                assert_eq!(body.feed(b"0\r\n\r\n"), Err(e.clone()), "errors stay");
                return Err(e);
            }
        }
        if at == input.len() {
            return Ok((None, body.data_len()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    // Small limits too, to reach them; the same for both readers.
    let max_line = 1 + usize::from(seed >> 2);
    let whole = feed(max_line, input, || input.len());
    // Pieces of 0 to 7 bytes (0: an empty feed), from a xorshift seeded with the byte.
    let mut x = u32::from(seed) | 0x100;
    let split = feed(max_line, input, || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 8) as usize
    });
    assert_eq!(whole, split, "{:?}", String::from_utf8_lossy(input));
    if let Ok((None, len)) = whole {
        assert!(len <= input.len() as u64);
    }
});
