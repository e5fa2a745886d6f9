//! Fuzzes the one duration parser every front end uses (`500ms`, `1.5s`, `1h30m`, bare
//! seconds): never panics, errors name the text, and an accepted duration printed in
//! milliseconds, or as seconds with a fraction, parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::value;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match value::duration(s) {
        Ok(d) => {
            let ms = d.as_millis();
            assert_eq!(value::duration(&format!("{ms}ms")), Ok(d), "{s:?}");
            let seconds = format!("{}.{:03}s", ms / 1000, ms % 1000);
            assert_eq!(value::duration(&seconds), Ok(d), "{s:?} as {seconds:?}");
        }
        Err(e) if !s.is_empty() => assert!(e.to_string().contains(&format!("`{s}`")), "{e}"),
        Err(_) => {}
    }
});
