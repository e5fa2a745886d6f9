//! Fuzzes the HTTP/1.1 head parsers: the input as a request head and as a response head
//! (to a HEAD request when the first byte is odd). Neither ever panics; a request that
//! parses, written back with no edits, parses again to the same method, path, framing and
//! host, with no more headers (but the `Host` an absolute-form target adds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_http::h1::head::{
    Edits, MAX_HEADERS, RequestHead, ResponseHead, write_request, write_response,
};

const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let to_head = data.first().is_some_and(|b| b & 1 == 1);
    let mut response = ResponseHead::default();
    if let Ok(true) = response.parse(data, MAX, to_head) {
        assert!(response.len <= data.len());
        let mut out = Vec::new();
        write_response(&mut out, &response, data, &Edits::default());
        let mut again = ResponseHead::default();
        assert_eq!(
            again.parse(&out, out.len() + 1, to_head),
            Ok(true),
            "{out:?}"
        );
        assert_eq!(again.status, response.status);
        assert_eq!(again.body, response.body);
    }

    let mut request = RequestHead::default();
    let Ok(true) = request.parse(data, MAX) else {
        return;
    };
    assert!(request.len <= data.len());
    let mut path = Vec::new();
    if request.path_needs_slash {
        path.push(b'/');
    }
    path.extend_from_slice(request.path.get(data));
    let added = usize::from(request.absolute_form && request.host_count(data) == 0);
    if request.headers.len() + added > MAX_HEADERS {
        return; // The written head has one header too many to be parsed again.
    }
    let mut out = Vec::new();
    write_request(
        &mut out,
        &request,
        data,
        request.path.get(data),
        &Edits::default(),
    );
    let mut again = RequestHead::default();
    match again.parse(&out, out.len() + 1) {
        Ok(true) => {}
        other => panic!("{data:?} written as {out:?}: {other:?}"),
    }
    assert_eq!(again.len, out.len());
    assert_eq!(again.method.get(&out), request.method.get(data));
    assert_eq!(again.path.get(&out), &path[..]);
    assert!(!again.path_needs_slash && !again.absolute_form);
    assert_eq!(again.body, request.body);
    assert_eq!(
        again.host.map(|h| h.get(&out)),
        request.host.map(|h| h.get(data)),
        "{data:?} written as {out:?}"
    );
    assert!(again.headers.len() <= request.headers.len() + added);
});
