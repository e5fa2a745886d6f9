//! TCP and UDP on the same port: [`start_same_port`].

use std::fmt;

use crate::spec::address_in_use;
use crate::{Error, ErrorKind, ForwarderHandle, TcpForwarder, UdpForwarder};

/// How many ports [`start_same_port`] tries when the kernel chooses them.
pub const SAME_PORT_TRIES: u32 = 10;

/// Which half of a TCP and UDP pair failed to start, and why.
#[derive(Debug)]
pub struct SamePortError {
    /// `true` when TCP failed, `false` when UDP did.
    pub tcp: bool,
    /// The failure.
    pub error: Error,
}

impl fmt::Display for SamePortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.tcp { "TCP" } else { "UDP" };
        write!(f, "{which}: {}", self.error)
    }
}

impl std::error::Error for SamePortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Starts `tcp`, then `udp` on the addresses TCP got, so both serve the same port, also
/// one the kernel chose (a listen port of 0): when UDP finds that port taken, TCP binds
/// again on another one, up to [`SAME_PORT_TRIES`] times (each try is logged as a
/// warning). The TCP listeners passed over stay bound until the search is over, so the
/// kernel cannot hand the same port out again; then they close.
///
/// `udp`'s own listen addresses are not used.
///
/// # Errors
///
/// A [`SamePortError`] saying which protocol failed: TCP's bind error, or UDP's on the
/// last try (at once when the ports were given, not chosen). Nothing stays bound then.
///
/// # Panics
///
/// When called outside a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use proxy_core::{TcpForwarder, UdpForwarder, start_same_port};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listen = ["127.0.0.1:0".parse()?];
/// let tcp = TcpForwarder::builder(listen, "10.0.0.10:53".parse()?).build()?;
/// let udp = UdpForwarder::builder(listen, "10.0.0.10:53".parse()?).build()?;
/// let (tcp, udp) = start_same_port(&tcp, &udp)?;
/// assert_eq!(tcp.local_addrs(), udp.local_addrs());
/// # Ok(())
/// # }
/// ```
pub fn start_same_port(
    tcp: &TcpForwarder,
    udp: &UdpForwarder,
) -> Result<(ForwarderHandle, ForwarderHandle), SamePortError> {
    let chosen = tcp.listen_addrs().iter().any(|a| a.port() == 0);
    // Dropped when this returns: a dropped handle closes its listeners at once.
    let mut passed_over = Vec::new();
    for attempt in 1..=SAME_PORT_TRIES {
        let tcp_handle = tcp
            .start()
            .map_err(|error| SamePortError { tcp: true, error })?;
        let listen = tcp_handle.local_addrs().to_vec();
        // TCP's bound addresses are as valid a listen list as the ones it was given.
        let udp = udp
            .with_listen(listen.iter().copied())
            .map_err(|e| SamePortError {
                tcp: false,
                error: Error::new(ErrorKind::Bind, crate::Side::Internal)
                    .with_context(e.to_string()),
            })?;
        match udp.start() {
            Ok(udp_handle) => return Ok((tcp_handle, udp_handle)),
            Err(e) if chosen && address_in_use(&e) && attempt < SAME_PORT_TRIES => {
                let shown: Vec<String> = listen.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    error = %e,
                    cause = ?std::error::Error::source(&e).map(ToString::to_string),
                    "UDP cannot bind the port TCP got ({}); trying another port (attempt {} \
                     of {SAME_PORT_TRIES})",
                    shown.join(", "),
                    attempt + 1,
                );
                passed_over.push(tcp_handle);
            }
            Err(error) => return Err(SamePortError { tcp: false, error }),
        }
    }
    unreachable!("the last try returns")
}
