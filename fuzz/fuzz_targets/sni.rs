//! Fuzzes the ClientHello reader of SNI routing: never panics; a name it finds is a lower
//! case DNS name, found again with bytes after the hello, and every shorter prefix of the
//! input is only ever incomplete or the same answer (a name never changes as bytes come).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::sni::{HelloError, server_name};

fuzz_target!(|data: &[u8]| {
    let answer = server_name(data);
    if let Ok(Some(name)) = &answer {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name.split('.').all(|l| (1..=63).contains(&l.len())), "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "{name:?}"
        );
    }
    if answer.is_ok() {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[23, 3, 3, 0, 2, 0, 0]);
        assert_eq!(server_name(&longer), answer);
    }
    for cut in (0..data.len()).step_by(data.len() / 64 + 1) {
        let prefix = server_name(&data[..cut]);
        assert!(
            prefix == Err(HelloError::Incomplete) || prefix == answer
                || matches!(prefix, Err(HelloError::NotTls)) && answer == Err(HelloError::NotTls),
            "prefix of {cut}: {prefix:?}, whole: {answer:?}"
        );
    }
});
