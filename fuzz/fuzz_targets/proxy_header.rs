//! Fuzzes the PROXY protocol header parser: never panics; a header it accepts lies within
//! the input and the accepted size limit, is found again when more bytes follow it, and
//! every shorter prefix of an accepted header is either incomplete or itself an error
//! only where the full header was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::proxy_protocol::{MAX_HEADER, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(header)) = parse(data) else {
        return;
    };
    assert!(header.len <= data.len() && header.len <= MAX_HEADER);
    // The same header with anything after it parses the same.
    let mut longer = data[..header.len].to_vec();
    longer.extend_from_slice(b"trailing bytes");
    assert_eq!(parse(&longer), Ok(Some(header)));
    // Every prefix of a valid header is a valid beginning.
    for cut in 0..header.len {
        assert_eq!(parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
    }
});
