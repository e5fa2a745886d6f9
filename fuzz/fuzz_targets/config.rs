//! Fuzzes the `proxy run --config` file parser on any UTF-8 text: never panics; an error
//! names the file and, when it gives a line, a line of the text (`fuzz.toml:LINE: ...`);
//! an accepted file has 1 to 1024 threads if any, and forwards with distinct, non-empty
//! names that each serve TCP, UDP or both, with settings the library accepts.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use proxy_cli::config::parse;

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, FILE) {
        Err(e) => {
            let message = e.to_string();
            let rest = message
                .strip_prefix(FILE)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or_else(|| panic!("{message:?} does not start with `{FILE}:`"));
            if let Some((line, _)) = rest.split_once(':')
                && !line.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
            {
                let line: usize = line.parse().expect("a line number");
                let lines = text.matches('\n').count() + 1;
                assert!((1..=lines).contains(&line), "{message:?}: {lines} lines");
            }
        }
        Ok(config) => {
            if let Some(threads) = config.threads {
                assert!((1..=1024).contains(&threads));
            }
            let mut names = HashSet::new();
            for forward in &config.forwards {
                assert!(!forward.name.is_empty());
                assert!(names.insert(&forward.name), "{:?} twice", forward.name);
                assert!(
                    forward.spec.protocol.tcp() || forward.spec.protocol.udp(),
                    "{}",
                    forward.name
                );
                forward.spec.validate().expect("a checked forward is valid");
            }
        }
    }
});
