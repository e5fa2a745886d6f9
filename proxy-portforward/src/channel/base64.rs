//! Standard base64 (RFC 4648 §4, `+/`, `=` padding), strict: only canonical text decodes.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the base64 text of `data` to `out`.
pub(super) fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend([18, 12, 6, 0].map(|s| ALPHABET[(n >> s & 63) as usize]));
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend([
                ALPHABET[(n >> 18) as usize],
                ALPHABET[(n >> 12 & 63) as usize],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend([
                ALPHABET[(n >> 18) as usize],
                ALPHABET[(n >> 12 & 63) as usize],
                ALPHABET[(n >> 6 & 63) as usize],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Why a text is not canonical base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Base64Error {
    /// The length is not a multiple of 4.
    Length(usize),
    /// A byte outside the alphabet (or `=` before the end), at this offset.
    Byte(usize, u8),
    /// The last character before `=` has bits set that the padding drops.
    TrailingBits,
}

fn value(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes canonical base64 text.
pub(super) fn decode(text: &[u8]) -> Result<Vec<u8>, Base64Error> {
    if !text.len().is_multiple_of(4) {
        return Err(Base64Error::Length(text.len()));
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let last = text.len().saturating_sub(4);
    for (q, quad) in text.chunks_exact(4).enumerate() {
        let at = q * 4;
        let pad = if at == last {
            quad.iter().rev().take_while(|&&b| b == b'=').count().min(2)
        } else {
            0
        };
        let mut n = 0u32;
        for (i, &b) in quad[..4 - pad].iter().enumerate() {
            n = n << 6 | value(b).ok_or(Base64Error::Byte(at + i, b))?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match pad {
            0 => out.extend(bytes),
            1 if n & 0xff == 0 => out.extend(&bytes[..2]),
            2 if n & 0xffff == 0 => out.push(bytes[0]),
            _ => return Err(Base64Error::TrailingBits),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: &[u8]) -> String {
        let mut v = Vec::new();
        encode_into(d, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(enc(plain.as_bytes()), coded);
            assert_eq!(decode(coded.as_bytes()).unwrap(), plain.as_bytes());
        }
        assert_eq!(enc(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn rejects_what_is_not_canonical() {
        assert_eq!(decode(b"Zg="), Err(Base64Error::Length(3)));
        assert_eq!(decode(b"Zh=="), Err(Base64Error::TrailingBits));
        assert_eq!(decode(b"Zm9="), Err(Base64Error::TrailingBits));
        assert_eq!(decode(b"Zg==Zg=="), Err(Base64Error::Byte(2, b'=')));
        assert_eq!(decode(b"Z==="), Err(Base64Error::Byte(1, b'=')));
        assert_eq!(decode(b"Zm9v\nZm9v"), Err(Base64Error::Length(9)));
        assert_eq!(decode(b"Zm-v"), Err(Base64Error::Byte(2, b'-')));
    }
}
