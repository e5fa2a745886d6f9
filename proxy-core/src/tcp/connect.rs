//! Connecting to the upstream: resolved addresses in round-robin order, a timeout per
//! attempt and a budget for all of them.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::forwarder::Shared;
use crate::stats::Stats;
use crate::{Error, ErrorKind, Side, TimeoutKind};

/// Connects to the first address that accepts, starting at the round-robin position and
/// going on to the next address when one refuses, is unreachable or times out. The
/// total budget bounds the lookup (when no answer is cached yet) and every attempt.
pub(super) async fn connect(
    shared: &Shared,
    client: IpAddr,
) -> Result<(TcpStream, SocketAddr), Error> {
    let timeouts = &shared.config.common.timeouts;
    let stats = &shared.stats;
    // The budget covers a lookup too, when there is no cached answer yet.
    let deadline = Instant::now() + timeouts.connect_total;
    let addrs = shared.cache.addrs_by(deadline).await?;
    let Some(order) = shared.balancer.order(&addrs, Some(client)) else {
        Stats::inc(&stats.all_ejected);
        return Err(Error::new(ErrorKind::Unavailable, Side::Upstream));
    };
    let mut last_error = None;
    for addr in order {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last_error = Some(Error::new(
                ErrorKind::Timeout(TimeoutKind::ConnectTotal),
                Side::Upstream,
            ));
            break;
        }
        let budget = timeouts.connect.min(left);
        let error = match tokio::time::timeout(budget, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                shared.balancer.record(stats, addr, true);
                shared.balancer.stick(client, addr);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY failed");
                }
                return Ok((stream, addr));
            }
            Ok(Err(e)) => Error::connect(e),
            Err(_elapsed) => {
                let which = if budget < timeouts.connect {
                    TimeoutKind::ConnectTotal
                } else {
                    TimeoutKind::Connect
                };
                Error::new(ErrorKind::Timeout(which), Side::Upstream)
            }
        };
        shared.balancer.record(stats, addr, false);
        Stats::inc(match error.kind() {
            ErrorKind::ConnectRefused => &stats.connect_refused,
            ErrorKind::ConnectUnreachable => &stats.connect_unreachable,
            ErrorKind::Timeout(_) => &stats.connect_timeout,
            _ => &stats.connect_other,
        });
        tracing::debug!(upstream = %addr, error = %error, "connect attempt failed");
        last_error = Some(error.with_context(addr.to_string()));
    }
    // Every address failed: the answer may be stale, look the name up again soon.
    shared.cache.nudge();
    Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream)))
}
