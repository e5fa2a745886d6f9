//! Errors: one opaque [`Error`] for running forwarders and [`BuildError`] for settings.

use std::fmt;
use std::io;

/// An error from a running forwarder: binding, resolving, connecting or relaying.
///
/// The error is opaque; ask it what went wrong with [`kind`](Error::kind), on which side
/// with [`side`](Error::side), and read the underlying [`io::Error`] through
/// [`source`](std::error::Error::source).
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    side: Side,
    context: Option<String>,
    source: Option<io::Error>,
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A listen address could not be bound (in use, not available, no permission).
    Bind,
    /// The upstream name could not be resolved, or resolved to no address.
    Resolve,
    /// The upstream refused the connection (a TCP RST to the SYN).
    ConnectRefused,
    /// The upstream network or host is unreachable.
    ConnectUnreachable,
    /// Any other connect failure.
    Connect,
    /// A timer fired.
    Timeout(TimeoutKind),
    /// The peer reset the connection.
    Reset,
    /// Any other I/O error while relaying.
    Io,
    /// New settings cannot be applied to a running forwarder (another protocol).
    Reload,
    /// Every upstream address is ejected for failing (see [`Ejection`](crate::Ejection))
    /// or marked down by health checks, so the connection was not attempted.
    Unavailable,
}

/// Which timer fired, for [`ErrorKind::Timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// One connect attempt took longer than [`Timeouts::connect`](crate::Timeouts::connect).
    Connect,
    /// All connect attempts together took longer than
    /// [`Timeouts::connect_total`](crate::Timeouts::connect_total).
    ConnectTotal,
    /// No traffic in either direction for [`Timeouts::idle`](crate::Timeouts::idle).
    Idle,
    /// One direction ended and the other then moved no byte for
    /// [`Timeouts::half_close`](crate::Timeouts::half_close).
    HalfClose,
    /// The connection reached [`Timeouts::max_lifetime`](crate::Timeouts::max_lifetime).
    MaxLifetime,
}

/// Which side of the proxy an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client, which connected to the proxy.
    Downstream,
    /// The upstream the proxy connects to, or its name resolution.
    Upstream,
    /// The proxy itself: listeners, resources, timers.
    Internal,
}

// ===== impl Error =====

impl Error {
    pub(crate) fn new(kind: ErrorKind, side: Side) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                side,
                context: None,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Self {
        self.inner.source = Some(source);
        self
    }

    pub(crate) fn with_context(mut self, context: impl Into<String>) -> Self {
        self.inner.context = Some(context.into());
        self
    }

    /// Classifies a connect error on the upstream side.
    pub(crate) fn connect(source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ErrorKind::ConnectUnreachable
            }
            io::ErrorKind::TimedOut => ErrorKind::Timeout(TimeoutKind::Connect),
            _ => ErrorKind::Connect,
        };
        Error::new(kind, Side::Upstream).with_source(source)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// On which side it went wrong.
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// Whether a timer fired.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout(_))
    }

    /// Whether a connection attempt to the upstream failed (refused, unreachable, timed out).
    pub fn is_connect(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectUnreachable
                | ErrorKind::Connect
                | ErrorKind::Timeout(TimeoutKind::Connect | TimeoutKind::ConnectTotal)
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("side", &self.inner.side);
        if let Some(context) = &self.inner.context {
            d.field("context", context);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.inner.kind {
            ErrorKind::Bind => "failed to bind listen address",
            ErrorKind::Resolve => "failed to resolve upstream",
            ErrorKind::ConnectRefused => "upstream refused the connection",
            ErrorKind::ConnectUnreachable => "upstream unreachable",
            ErrorKind::Connect => "failed to connect to upstream",
            ErrorKind::Timeout(TimeoutKind::Connect) => "connect attempt timed out",
            ErrorKind::Timeout(TimeoutKind::ConnectTotal) => "connect budget exhausted",
            ErrorKind::Timeout(TimeoutKind::Idle) => "idle timeout",
            ErrorKind::Timeout(TimeoutKind::HalfClose) => "half-close timeout",
            ErrorKind::Timeout(TimeoutKind::MaxLifetime) => "maximum lifetime reached",
            ErrorKind::Reset => "connection reset",
            ErrorKind::Io => "i/o error",
            ErrorKind::Reload => "cannot reload",
            ErrorKind::Unavailable => {
                "every upstream address is ejected after failing or down by health checks"
            }
        };
        f.write_str(what)?;
        if let Some(context) = &self.inner.context {
            write!(f, " ({context})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A forwarder's settings are invalid; returned by `build()`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No listen address was given.
    NoListenAddress,
    /// The same listen address was given twice.
    DuplicateListenAddress(std::net::SocketAddr),
    /// A timeout is zero where zero makes no sense; the field is named.
    ZeroTimeout(&'static str),
    /// The per-attempt connect timeout is longer than the total connect budget.
    ConnectTimeoutExceedsTotal,
    /// The pipe size is outside 4 KiB ..= 1 GiB.
    PipeSize(usize),
    /// The relay buffer size is outside 1 KiB ..= 16 MiB.
    BufferSize(usize),
    /// The listen backlog is zero.
    Backlog,
    /// The UDP session limit is zero.
    MaxSessions,
    /// The UDP batch size is outside 1..=64.
    BatchSize(usize),
    /// Client-IP affinity with a zero timeout.
    AffinityTimeout,
    /// Ejection after zero failures, or for no time.
    Ejection,
    /// PROXY protocol version 1 on a UDP forwarder (it has no UDP form).
    ProxyProtocolV1Udp,
    /// Health checks with a zero interval, timeout, rise or fall.
    HealthCheck,
    /// A limit of zero, which would refuse every client; the limit is named.
    ZeroLimit(&'static str),
    /// A duration longer than [`MAX_DURATION`](crate::MAX_DURATION) (10 years); the
    /// setting is named. Deadlines counted from it could pass the end of the clock.
    TooLong(&'static str),
    /// A setting every forward needs is not set; the key is named.
    Missing(&'static str),
    /// A setting that needs another one, which is not set as it needs.
    Requires {
        /// The setting given.
        key: &'static str,
        /// What it needs, as `key = value` or a key.
        requires: &'static str,
    },
    /// The resolver cannot be set up (hickory cannot read the system DNS configuration).
    Resolver(String),
    /// A value out of its range, or wrong with the others; the key is named, and why.
    Invalid {
        /// The setting at fault.
        key: &'static str,
        /// What is wrong, naming the bad value.
        why: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoListenAddress => f.write_str("no listen address given"),
            BuildError::DuplicateListenAddress(a) => write!(f, "listen address {a} given twice"),
            BuildError::ZeroTimeout(name) => write!(f, "timeout `{name}` must not be zero"),
            BuildError::ConnectTimeoutExceedsTotal => {
                f.write_str("connect timeout is longer than the total connect budget")
            }
            BuildError::PipeSize(n) => write!(f, "pipe size {n} is outside 4096..=1073741824"),
            BuildError::BufferSize(n) => write!(f, "buffer size {n} is outside 1024..=16777216"),
            BuildError::Backlog => f.write_str("listen backlog must be at least 1"),
            BuildError::MaxSessions => f.write_str("the UDP session limit must be at least 1"),
            BuildError::BatchSize(n) => write!(f, "UDP batch size {n} is outside 1..=64"),
            BuildError::AffinityTimeout => f.write_str("the affinity timeout must not be zero"),
            BuildError::ZeroLimit(name) => write!(f, "the limit `{name}` must be at least 1"),
            BuildError::TooLong(name) => write!(
                f,
                "`{name}` is longer than the maximum of 10 years ({} s)",
                crate::MAX_DURATION.as_secs()
            ),
            BuildError::Missing(key) => write!(f, "`{key}` is not set"),
            BuildError::Requires { key, requires } => write!(f, "`{key}` needs `{requires}`"),
            BuildError::Resolver(e) => {
                write!(
                    f,
                    "the resolver cannot read the system DNS configuration: {e}"
                )
            }
            BuildError::HealthCheck => {
                f.write_str("health checks need an interval, a timeout, a rise and a fall above 0")
            }
            BuildError::ProxyProtocolV1Udp => {
                f.write_str("PROXY protocol version 1 has no UDP form; use version 2")
            }
            BuildError::Ejection => {
                f.write_str("ejection needs at least 1 failure and a back-off longer than 0")
            }
            BuildError::Invalid { why, .. } => f.write_str(why),
        }
    }
}

impl BuildError {
    /// The setting at fault, by the name the config file, the flags (with `-` for `_`) and
    /// the C keys give it, so a front end can point at where the user wrote it.
    ///
    /// ```
    /// use proxy_core::UdpForwarder;
    ///
    /// let e = UdpForwarder::builder(["127.0.0.1:0".parse()?], "127.0.0.1:53".parse()?)
    ///     .max_sessions(0)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(e.key(), "max_sessions");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> &'static str {
        match self {
            BuildError::NoListenAddress | BuildError::DuplicateListenAddress(_) => "listen",
            BuildError::ZeroTimeout(name) | BuildError::TooLong(name) => timeout_key(name),
            BuildError::ConnectTimeoutExceedsTotal => "connect_timeout",
            BuildError::PipeSize(_) => "pipe_size",
            BuildError::BufferSize(_) => "buffer_size",
            BuildError::Backlog => "backlog",
            BuildError::MaxSessions => "max_sessions",
            BuildError::BatchSize(_) => "batch_size",
            BuildError::AffinityTimeout => "affinity_timeout",
            BuildError::Ejection => "eject_after",
            BuildError::ProxyProtocolV1Udp => "proxy_protocol",
            BuildError::HealthCheck => "health_check_interval",
            BuildError::ZeroLimit(name) | BuildError::Missing(name) => name,
            BuildError::Requires { key, .. } | BuildError::Invalid { key, .. } => key,
            BuildError::Resolver(_) => "resolver",
        }
    }
}

/// The setting's name for a [`Timeouts`](crate::Timeouts) field (other names are
/// settings' names already).
fn timeout_key(field: &'static str) -> &'static str {
    match field {
        "connect" => "connect_timeout",
        "connect_total" => "connect_total_timeout",
        "idle" => "idle_timeout",
        "half_close" => "half_close_timeout",
        "udp_session_idle" => "udp_idle_timeout",
        other => other,
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_classified() {
        let refused = Error::connect(io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refused.kind(), ErrorKind::ConnectRefused);
        assert_eq!(refused.side(), Side::Upstream);
        assert!(refused.is_connect());
        assert!(!refused.is_timeout());
        let timed_out = Error::connect(io::ErrorKind::TimedOut.into());
        assert!(timed_out.is_timeout());
        assert!(std::error::Error::source(&timed_out).is_some());
    }

    #[test]
    fn display_prints_only_this_level() {
        let e = Error::new(ErrorKind::Bind, Side::Internal)
            .with_context("127.0.0.1:80")
            .with_source(io::ErrorKind::AddrInUse.into());
        assert_eq!(
            e.to_string(),
            "failed to bind listen address (127.0.0.1:80)"
        );
    }
}
