//! Fuzzes the CLI's duration parser (`500ms`, `30s`, `5m`, `1h`, bare seconds): never
//! panics, and an accepted duration printed in milliseconds parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_cli::args::parse_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(s) {
        let again = parse_duration(&format!("{}ms", d.as_millis()));
        if let Ok(again) = again {
            assert_eq!(again, d, "{s:?}");
        }
    }
});
