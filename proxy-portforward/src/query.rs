//! Query strings, read as Go's `url.ParseQuery` reads them (the API server's and the
//! kubelet's `req.URL.Query()`).

/// Every value of `key` in a raw query string (what follows `?`, without it), in order:
/// pairs split on `&`, `+` is a space, `%XX` escapes; a pair with a bad escape or a `;` is
/// skipped, as Go skips it.
pub(crate) fn values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k)? == key).then_some(())?;
            unescape(value)
        })
        .collect()
}

/// The first value of `key`, if any.
pub(crate) fn first(query: &str, key: &str) -> Option<String> {
    values(query, key).into_iter().next()
}

/// Form-decodes one key or value; `None` for a bad `%` escape.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?,
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    // Go keeps bytes that are not UTF-8 (and `%q` shows them as `\xNN`); here they become
    // U+FFFD, so such a value still fails as "unable to parse", only quoted differently.
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_as_go_does() {
        assert_eq!(
            values("labelSelector=app%3Dweb%2Cx%3D%3Dy&a=1", "labelSelector"),
            ["app=web,x==y"]
        );
        assert_eq!(values("a=1&a=2+3&a=%zz&a;b=4&a", "a"), ["1", "2 3", ""]);
        assert_eq!(first("b=1", "a"), None);
    }
}
