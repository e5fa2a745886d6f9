//! Timeout policies.

use std::time::Duration;

use tokio::time::Instant;

/// The longest duration any setting may have: 10 years (315,360,000 s). Longer ones are
/// refused when a forwarder is built ([`BuildError::TooLong`](crate::BuildError::TooLong)),
/// the CLI and the config file refuse them too, and the C API takes no more. Past this a
/// timer means "never" anyway (0 or `None` turns one off), and deadlines counted from now
/// stay far from the end of the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `from + d`, saturating: when the sum would pass the end of the clock, an instant still
/// centuries past [`MAX_DURATION`] (where `Instant + Duration` panics). Deadlines are
/// computed through this, so none can panic whatever duration got past validation.
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    let mut d = d;
    // Halving finds one that fits within ~100 rounds (0 always fits).
    loop {
        if let Some(t) = from.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

/// The timers of a forwarded connection.
///
/// `None` disables a timer. Build one from [`Timeouts::default`] and change the fields:
///
/// ```
/// use std::time::Duration;
/// use proxy_core::Timeouts;
///
/// let mut t = Timeouts::default();
/// t.idle = Some(Duration::from_secs(600)); // `proxy tcp 8080 web:80 600`
/// t.max_lifetime = Some(Duration::from_secs(3600));
/// let forwarder = proxy_core::TcpForwarder::builder(["127.0.0.1:0".parse()?], "web:80".parse()?)
///     .timeouts(t)
///     .build()?;
/// assert_eq!(forwarder.timeouts().idle, Some(Duration::from_secs(600)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// One connect attempt to one upstream address. Default 5 s.
    pub connect: Duration,
    /// All connect attempts of one connection together, across the resolved addresses.
    /// Default 15 s.
    pub connect_total: Duration,
    /// No traffic in either direction for this long closes the connection.
    /// Default `None` (no idle timeout), as `proxy-to-service` and socat without `-T`.
    pub idle: Option<Duration>,
    /// Once one direction has ended (a FIN was forwarded), the connection is closed (with
    /// a reset) when the other direction has moved no byte for this long: an inactivity
    /// timer, as HAProxy's `client-fin`/`server-fin`, so a reply still streaming after
    /// the client's FIN is never cut. Default 60 s.
    pub half_close: Option<Duration>,
    /// A connection is closed when it is this old, busy or not. Default `None`.
    pub max_lifetime: Option<Duration>,
    /// A UDP session ends after this long without a datagram in either direction.
    /// Default 30 s. `None` keeps sessions until the session table is full and they are
    /// the least recently used.
    pub udp_session_idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            connect_total: Duration::from_secs(15),
            idle: None,
            half_close: Some(Duration::from_secs(60)),
            max_lifetime: None,
            udp_session_idle: Some(Duration::from_secs(30)),
        }
    }
}

impl Timeouts {
    pub(crate) fn validate(&self) -> Result<(), crate::BuildError> {
        use crate::BuildError::{ConnectTimeoutExceedsTotal, ZeroTimeout};
        let fields = [
            ("connect", Some(self.connect)),
            ("connect_total", Some(self.connect_total)),
            ("idle", self.idle),
            ("half_close", self.half_close),
            ("max_lifetime", self.max_lifetime),
            ("udp_session_idle", self.udp_session_idle),
        ];
        for (name, d) in fields {
            at_most_max(name, d)?;
        }
        if let Some((name, _)) = fields.iter().find(|(_, d)| *d == Some(Duration::ZERO)) {
            return Err(ZeroTimeout(name));
        }
        if self.connect > self.connect_total {
            return Err(ConnectTimeoutExceedsTotal);
        }
        Ok(())
    }
}

/// Refuses a duration longer than [`MAX_DURATION`], naming its setting.
pub(crate) fn at_most_max(
    name: &'static str,
    d: impl Into<Option<Duration>>,
) -> Result<(), crate::BuildError> {
    match d.into() {
        Some(d) if d > MAX_DURATION => Err(crate::BuildError::TooLong(name)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuildError;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Timeouts::default().validate(), Ok(()));
    }

    #[test]
    fn zero_and_inverted_timeouts_are_rejected() {
        let t = Timeouts {
            idle: Some(Duration::ZERO),
            ..Timeouts::default()
        };
        assert_eq!(t.validate(), Err(BuildError::ZeroTimeout("idle")));
        let t = Timeouts {
            connect: Duration::from_secs(20),
            ..Timeouts::default()
        };
        assert_eq!(t.validate(), Err(BuildError::ConnectTimeoutExceedsTotal));
    }

    #[test]
    fn deadlines_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = after(now, Duration::MAX);
        assert!(far >= now + MAX_DURATION * 10, "{far:?}");
        assert!(after(far, Duration::MAX) >= far);
    }
}
