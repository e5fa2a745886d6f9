//! The text forms of setting values, one parser per type, shared by every front end (the
//! command line, the config file and the C API), so a value that works in one works in
//! all of them.
//!
//! | type | accepted | examples |
//! |---|---|---|
//! | duration | numbers with units `h`, `m`, `s`, `ms`, summed; a bare number is seconds; fractions to the millisecond; at most [`MAX_DURATION`] | `500ms`, `1.5s`, `1h30m`, `90`, `0.25` |
//! | size | bytes, or a number with `K`, `M`, `G` (powers of 1024; also `k`, `KiB`, ...) | `65536`, `64K`, `8M`, `1G` |
//!
//! CIDRs parse with [`Cidr`](crate::Cidr)'s `FromStr`, targets with
//! [`Target`](crate::Target)'s.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use proxy_core::value;
//!
//! assert_eq!(value::duration("1h30m")?, Duration::from_secs(5400));
//! assert_eq!(value::duration("1.5s")?, Duration::from_millis(1500));
//! assert_eq!(value::duration("90")?, Duration::from_secs(90));
//! assert_eq!(value::size("8M")?, 8 << 20);
//! let e = value::duration("5 minutes").unwrap_err();
//! assert!(e.to_string().contains("`5 minutes`"));
//! # Ok::<(), value::ValueError>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::MAX_DURATION;

/// A value that does not parse; the message names the text and says what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError(String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

const DURATION_FORMS: &str =
    "use h, m, s or ms, e.g. 500ms, 1.5s, 30s, 1h30m; a bare number means seconds";

/// Parses a duration: numbers with units (`h`, `m`, `s`, `ms`) written one after another
/// and summed (`1h30m`, `2m30s`), each number whole or with a fraction (`1.5s`,
/// `0.25h`); a bare number is seconds (`90`, `1.5`). The result counts whole
/// milliseconds and is at most [`MAX_DURATION`] (10 years).
///
/// # Errors
///
/// A [`ValueError`] naming `text`: empty, negative, an unknown unit, a part finer than a
/// millisecond, or longer than the maximum.
pub fn duration(text: &str) -> Result<Duration, ValueError> {
    let bad = |why: &str| ValueError(format!("`{text}` is not a duration: {why}"));
    if text.is_empty() {
        return Err(ValueError(format!("empty duration; {DURATION_FORMS}")));
    }
    if text.starts_with('-') {
        return Err(ValueError(format!(
            "`{text}` is negative; durations must be 0 or more"
        )));
    }
    let too_long = || {
        ValueError(format!(
            "`{text}` is longer than the maximum of 10 years ({}s)",
            MAX_DURATION.as_secs()
        ))
    };
    let mut total_ms: u128 = 0;
    let mut rest = text;
    let mut last_unit_ms = u128::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(bad(&format!(
                "`{unit}` has no number before it; {DURATION_FORMS}"
            )));
        }
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "" if rest.len() == text.len() => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(bad(&format!("`{number}` has no unit; {DURATION_FORMS}"))),
            _ => return Err(bad(&format!("unknown unit `{unit}`; {DURATION_FORMS}"))),
        };
        if unit_ms >= last_unit_ms {
            return Err(bad(
                "write the units from the largest down, each once (as in 1h30m)",
            ));
        }
        last_unit_ms = unit_ms;
        total_ms = total_ms
            .checked_add(
                millis(number, unit_ms)
                    .map_err(|why| bad(&why))?
                    .ok_or_else(too_long)?,
            )
            .ok_or_else(too_long)?;
        rest = next;
    }
    let ms = u64::try_from(total_ms).map_err(|_| too_long())?;
    let d = Duration::from_millis(ms);
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// `number` (digits, at most one `.`) times `unit_ms`, in whole milliseconds; `Ok(None)`
/// when it overflows.
fn millis(number: &str, unit_ms: u128) -> Result<Option<u128>, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("`{number}` is not a number"));
    }
    let whole: u128 = match whole {
        "" => 0,
        // Only digits are here: what does not fit in a u128 is far too long.
        digits => match digits.parse() {
            Ok(n) => n,
            Err(_) => return Ok(None),
        },
    };
    let Some(ms) = whole.checked_mul(unit_ms) else {
        return Ok(None);
    };
    // A unit is at most 3,600,000 ms (2^7 3^2 5^5), so a fraction with more than 7
    // significant digits never comes to whole milliseconds.
    let fraction = fraction.trim_end_matches('0');
    let finer =
        || format!("`{number}` is finer than a millisecond (durations count whole milliseconds)");
    if fraction.len() > 7 {
        return Err(finer());
    }
    if fraction.is_empty() {
        return Ok(Some(ms));
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let digits: u128 = fraction
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let part = digits * unit_ms;
    if !part.is_multiple_of(scale) {
        return Err(finer());
    }
    Ok(ms.checked_add(part / scale))
}

/// Parses a size in bytes: a number, or a number with `K`, `M` or `G` (powers of 1024;
/// `k`, `m`, `g`, `KiB`, `MiB`, `GiB` too).
///
/// # Errors
///
/// A [`ValueError`] naming `text`: no number, an unknown suffix, or too large.
pub fn size(text: &str) -> Result<usize, ValueError> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let bad = || {
        ValueError(format!(
            "`{text}` is not a size; write bytes, or a number with K, M or G (8M)"
        ))
    };
    if number.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => return Err(bad()),
    };
    let too_large = || ValueError(format!("`{text}` is too large"));
    let n: usize = number.parse().map_err(|_| too_large())?;
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

/// A duration as [`duration`] reads it back: in the largest unit that holds it whole
/// (`3h`, `90s`, `1500ms`).
///
/// ```
/// use std::time::Duration;
/// use proxy_core::value::show_duration;
///
/// assert_eq!(show_duration(Duration::from_secs(10_800)), "3h");
/// assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
/// assert_eq!(show_duration(Duration::ZERO), "0");
/// ```
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A size as [`size`] reads it back: in the largest suffix that holds it whole (`8M`).
///
/// ```
/// use proxy_core::value::show_size;
///
/// assert_eq!(show_size(4 << 20), "4M");
/// assert_eq!(show_size(1500), "1500");
/// ```
pub fn show_size(bytes: usize) -> String {
    match bytes {
        0 => "0".to_owned(),
        _ if bytes.is_multiple_of(1 << 30) => format!("{}G", bytes >> 30),
        _ if bytes.is_multiple_of(1 << 20) => format!("{}M", bytes >> 20),
        _ if bytes.is_multiple_of(1 << 10) => format!("{}K", bytes >> 10),
        _ => bytes.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_form() {
        for (text, want) in [
            ("0", ms(0)),
            ("90", ms(90_000)),
            ("1.5", ms(1_500)),
            ("0.25", ms(250)),
            ("500ms", ms(500)),
            ("30s", ms(30_000)),
            ("1.5s", ms(1_500)),
            (".5s", ms(500)),
            ("5m", ms(300_000)),
            ("1h", ms(3_600_000)),
            ("0.25h", ms(900_000)),
            ("1h30m", ms(5_400_000)),
            ("2m30s", ms(150_000)),
            ("1h1m1s1ms", ms(3_661_001)),
            ("1.5m", ms(90_000)),
            ("87600h", MAX_DURATION),
        ] {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_named() {
        for (text, why) in [
            ("", "empty duration"),
            ("-1s", "negative"),
            ("5 minutes", "unknown unit ` minutes`"),
            ("5x", "unknown unit `x`"),
            ("s", "has no number"),
            ("1.2.3s", "is not a number"),
            ("0.0001s", "finer than a millisecond"),
            ("1.5ms", "finer than a millisecond"),
            ("30m1h", "from the largest down"),
            ("1s1s", "from the largest down"),
            ("1h30", "`30` has no unit"),
            ("87601h", "longer than the maximum"),
            ("18446744073709551615s", "longer than the maximum"),
            (
                "99999999999999999999999999999999999999999h",
                "longer than the maximum",
            ),
        ] {
            let e = duration(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            if !text.is_empty() {
                assert!(e.contains(&format!("`{text}`")), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("65536"), Ok(65_536));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("8M"), Ok(8 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        for bad in ["", "M", "8 M", "8T", "-1", "99999999999999999999999"] {
            let e = size(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{bad:?}: {e}");
        }
    }
}
