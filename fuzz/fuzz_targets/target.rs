//! Fuzzes `Target` parsing: never panics, and whatever parses prints back to a string that
//! parses to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<Target>();
    let defaulted = Target::parse_with_default_port(s, 53);
    for t in [parsed, defaulted].into_iter().flatten() {
        let again: Target = t.to_string().parse().expect("a printed target parses");
        assert_eq!(again, t);
    }
});
