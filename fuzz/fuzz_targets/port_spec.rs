//! Fuzzes the `proxy forward` SPEC parser (`8080:80`, `:5000`, `8000-8010:9000-9010`,
//! `5353:53/udp`, `8080:http`): never panics, a named remote port is one TCP mapping, and a SPEC it accepts keeps its token, has 1 to 65535
//! mappings of one protocol whose remote ports are consecutive and never 0 and whose local
//! ports are all 0 (kernel-chosen) or consecutive too, and written back in the long form
//! (`LOCAL-LAST:REMOTE-LAST/PROTOCOL`, `0:REMOTE-LAST/PROTOCOL`) parses to the same
//! mappings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_cli::forward::{Mapping, Protocol, parse_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse_spec(s) else {
        return;
    };
    assert_eq!(spec.token(), s);
    // A named remote port (`8080:http`, for TYPE/NAME targets): one TCP mapping whose
    // remote port is the name's, 0 until a pod translates it.
    if let Some(name) = spec.remote_name() {
        assert!((1..=15).contains(&name.len()), "{s:?}");
        assert!(
            (name.bytes()).all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{s:?}"
        );
        assert!(name.bytes().any(|b| b.is_ascii_lowercase()), "{s:?}");
        assert_eq!(spec.protocol(), Protocol::Tcp, "{s:?}");
        let mappings: Vec<Mapping> = spec.mappings().collect();
        assert_eq!(mappings.len(), 1, "{s:?}");
        assert_eq!(mappings[0].remote, 0, "{s:?}");
        return;
    }
    let want = if s.ends_with("/udp") {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    assert_eq!(spec.protocol(), want, "{s:?}");
    let mappings: Vec<Mapping> = spec.mappings().collect();
    let (first, last) = match (mappings.first(), mappings.last()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => panic!("{s:?} has no mapping"),
    };
    for (i, m) in mappings.iter().enumerate() {
        assert_eq!(m.protocol, spec.protocol(), "{s:?}");
        assert_ne!(m.remote, 0, "{s:?}");
        assert_eq!(
            usize::from(m.remote - first.remote),
            i,
            "{s:?}: remote ports"
        );
        if first.local == 0 {
            assert_eq!(m.local, 0, "{s:?}: all kernel-chosen or none");
        } else {
            assert_eq!(usize::from(m.local - first.local), i, "{s:?}: local ports");
        }
    }
    let long = format!(
        "{}:{}-{}/{}",
        if first.local == 0 {
            "0".to_owned()
        } else {
            format!("{}-{}", first.local, last.local)
        },
        first.remote,
        last.remote,
        spec.protocol()
    );
    let again = parse_spec(&long).unwrap_or_else(|e| panic!("{s:?} as {long:?}: {e}"));
    assert!(
        again.mappings().eq(mappings.iter().copied()),
        "{s:?} as {long:?}"
    );
});
