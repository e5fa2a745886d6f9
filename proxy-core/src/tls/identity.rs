//! Who a client certificate names: its subject's common name, read from the DER with a
//! small reader of our own (webpki checks certificates but does not expose subjects),
//! for the access log and the PROXY protocol's TLS fields.

/// The subject common name (OID 2.5.4.3) of the DER certificate `der`, when it has a
/// UTF-8 or printable one.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate, ... }
    let (_, cert, _) = element(der)?;
    let (_, mut tbs, _) = element(cert)?;
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serial, signature, issuer,
    //                               validity, subject, ... }
    let mut fields = Vec::with_capacity(6);
    while fields.len() < 6 && !tbs.is_empty() {
        let (tag, value, rest) = element(tbs)?;
        if !(fields.is_empty() && tag == 0xa0) {
            fields.push(value);
        }
        tbs = rest;
    }
    let mut subject = *fields.get(4)?;
    // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
    let mut found = None;
    while !subject.is_empty() {
        let (_, mut set, rest) = element(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = element(set)?;
            set = rest;
            let (oid_tag, oid, value) = element(attribute)?;
            const CN: [u8; 3] = [0x55, 0x04, 0x03];
            if oid_tag == 0x06 && oid == CN {
                let (tag, text, _) = element(value)?;
                // UTF8String, PrintableString, IA5String.
                if matches!(tag, 0x0c | 0x13 | 0x16) {
                    found = std::str::from_utf8(text).ok().map(str::to_owned);
                }
            }
        }
    }
    found
}

/// The DER element at the start of `bytes`: its tag, its contents, and what follows.
fn element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = (rest[..n].iter()).fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths_and_truncation() {
        assert_eq!(
            element(&[0x04, 2, 1, 2, 9]),
            Some((4, &[1, 2][..], &[9][..]))
        );
        let mut long = vec![0x04, 0x81, 200];
        long.extend([7; 200]);
        assert_eq!(element(&long).map(|(_, v, _)| v.len()), Some(200));
        assert_eq!(element(&[0x04, 3, 1]), None);
        assert_eq!(element(&[0x04, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(common_name(&[0x30, 0x80]), None);
        assert_eq!(common_name(&[]), None);
    }
}
