//! Connecting to the upstream: the balancer's order of the resolved addresses, raced
//! Happy Eyeballs style (RFC 8305), with a timeout per attempt and a budget for all.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::forwarder::Shared;
use crate::stats::Stats;
use crate::timeout::after;
use crate::{Error, ErrorKind, Side, TimeoutKind};

/// How long an attempt has before the next address is tried alongside it (RFC 8305's
/// recommended Connection Attempt Delay).
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

type Attempt = Pin<Box<dyn Future<Output = (SocketAddr, Result<TcpStream, Error>)> + Send>>;

/// Connects to the first address that accepts. The balancer's pick goes first; if it has
/// neither connected nor failed after [`ATTEMPT_DELAY`], the next address (of the other
/// family, when there is one: IPv6 and IPv4 interleave) is tried alongside it, and so on;
/// a failure starts the next at once. The first connection wins and the others are
/// dropped. Each attempt has the connect timeout; the total budget bounds the lookup
/// (when no answer is cached yet) and all the attempts.
pub(super) async fn connect(
    shared: &Shared,
    client: IpAddr,
) -> Result<(TcpStream, SocketAddr), Error> {
    let timeouts = &shared.config.common.timeouts;
    let stats = &shared.stats;
    // The budget covers a lookup too, when there is no cached answer yet.
    let deadline = after(Instant::now(), timeouts.connect_total);
    let addrs = shared.cache.addrs_by(deadline).await?;
    let Some(order) = shared.balancer.order(&addrs, Some(client)) else {
        Stats::inc(&stats.all_ejected);
        return Err(Error::new(ErrorKind::Unavailable, Side::Upstream));
    };
    let mut next = interleave(order).into_iter();
    let per_attempt = timeouts.connect;
    let start = |addr: SocketAddr| -> Attempt {
        Box::pin(async move {
            let result = match tokio::time::timeout(per_attempt, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(Error::connect(e)),
                Err(_elapsed) => Err(Error::new(
                    ErrorKind::Timeout(TimeoutKind::Connect),
                    Side::Upstream,
                )),
            };
            (addr, result)
        })
    };
    let mut racing: Vec<Attempt> = next.next().map(start).into_iter().collect();
    let mut last_error = None;
    let budget = tokio::time::sleep_until(deadline);
    let delay = tokio::time::sleep(ATTEMPT_DELAY);
    tokio::pin!(budget, delay);
    while !racing.is_empty() {
        let more = next.len() > 0;
        tokio::select! {
            (i, (addr, result)) = first_done(&mut racing) => {
                drop(racing.swap_remove(i));
                match result {
                    Ok(stream) => {
                        shared.balancer.record(stats, addr, true);
                        shared.balancer.stick(client, addr);
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY failed");
                        }
                        return Ok((stream, addr));
                    }
                    Err(error) => {
                        shared.balancer.record(stats, addr, false);
                        Stats::inc(match error.kind() {
                            ErrorKind::ConnectRefused => &stats.connect_refused,
                            ErrorKind::ConnectUnreachable => &stats.connect_unreachable,
                            ErrorKind::Timeout(_) => &stats.connect_timeout,
                            _ => &stats.connect_other,
                        });
                        tracing::debug!(upstream = %addr, error = %error, "connect attempt failed");
                        last_error = Some(error.with_context(addr.to_string()));
                        // A failure starts the next attempt at once.
                        if let Some(addr) = next.next() {
                            racing.push(start(addr));
                            delay.as_mut().reset(after(Instant::now(), ATTEMPT_DELAY));
                        }
                    }
                }
            }
            () = &mut delay, if more => {
                if let Some(addr) = next.next() {
                    racing.push(start(addr));
                }
                delay.as_mut().reset(after(Instant::now(), ATTEMPT_DELAY));
            }
            () = &mut budget => {
                Stats::add(&stats.connect_timeout, racing.len() as u64);
                last_error = Some(Error::new(
                    ErrorKind::Timeout(TimeoutKind::ConnectTotal),
                    Side::Upstream,
                ));
                break;
            }
        }
    }
    // Every address failed: the answer may be stale, look the name up again soon.
    shared.cache.nudge();
    Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream)))
}

/// Resolves with the index and output of the first attempt to finish.
fn first_done(
    racing: &mut [Attempt],
) -> impl Future<Output = (usize, (SocketAddr, Result<TcpStream, Error>))> + '_ {
    std::future::poll_fn(move |cx| {
        for (i, attempt) in racing.iter_mut().enumerate() {
            if let Poll::Ready(out) = attempt.as_mut().poll(cx) {
                return Poll::Ready((i, out));
            }
        }
        Poll::Pending
    })
}

/// The order to try addresses in: the first as given (the balancer's pick), then the
/// rest alternating between the families, starting with the other one (RFC 8305 §4).
fn interleave(order: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(&first) = order.first() else {
        return order;
    };
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) = order[1..]
        .iter()
        .partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(order.len());
    out.push(first);
    loop {
        match (other.pop(), same.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_after_the_first_pick() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let order = vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("[::3]:1"),
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
        ];
        assert_eq!(
            interleave(order),
            [
                a("[::1]:1"),
                a("10.0.0.1:1"),
                a("[::2]:1"),
                a("10.0.0.2:1"),
                a("[::3]:1")
            ]
        );
        let v4 = vec![a("10.0.0.1:1"), a("10.0.0.2:1"), a("10.0.0.3:1")];
        assert_eq!(interleave(v4.clone()), v4, "one family keeps its order");
        assert_eq!(interleave(vec![]), []);
    }
}
