//! Connecting to an upstream: the balancer's order of the resolved addresses, raced
//! Happy Eyeballs style (RFC 8305), with a timeout per attempt and a budget for all. The
//! TCP forwarder and [`Upstream`](crate::Upstream) connect through it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::Balancer;
use crate::resolve::ResolveCache;
use crate::stats::Stats;
use crate::timeout::after;
use crate::{Error, ErrorKind, Side, TimeoutKind, Timeouts};

/// How long an attempt has before the next address is tried alongside it (RFC 8305's
/// recommended Connection Attempt Delay).
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

type Attempt = Pin<Box<dyn Future<Output = (SocketAddr, Result<TcpStream, Error>)> + Send>>;

/// What connecting to one target uses: its addresses, its balancer, its counters and
/// its timers.
#[derive(Clone, Copy)]
pub(crate) struct Dial<'a> {
    pub(crate) cache: &'a Arc<ResolveCache>,
    pub(crate) balancer: &'a Balancer,
    pub(crate) stats: &'a Stats,
    pub(crate) timeouts: &'a Timeouts,
}

impl Dial<'_> {
    /// The deadline of one connection's lookup and attempts: the connect budget from now.
    pub(crate) fn deadline(&self) -> Instant {
        after(Instant::now(), self.timeouts.connect_total)
    }

    /// The addresses to try for one connection from `client`, the balancer's pick first;
    /// looks the target up first when no answer is cached, giving up at `deadline`.
    pub(crate) async fn order(
        &self,
        client: Option<IpAddr>,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, Error> {
        let addrs = self.cache.addrs_by(deadline).await?;
        self.balancer.order(&addrs, client).ok_or_else(|| {
            Stats::inc(&self.stats.all_ejected);
            Error::new(ErrorKind::Unavailable, Side::Upstream)
        })
    }

    /// Connects to the target for `client`: [`order`](Self::order), then
    /// [`race`](Self::race), within the connect budget.
    pub(crate) async fn connect(&self, client: IpAddr) -> Result<(TcpStream, SocketAddr), Error> {
        let deadline = self.deadline();
        let order = self.order(Some(client), deadline).await?;
        self.race(order, Some(client), deadline).await
    }

    /// Connects to the first address of `order` that accepts. The first goes first; if
    /// it has neither connected nor failed after [`ATTEMPT_DELAY`], the next address (of
    /// the other family, when there is one: IPv6 and IPv4 interleave) is tried alongside
    /// it, and so on; a failure starts the next at once. The first connection wins and the
    /// others are dropped. Each attempt has the connect timeout; `deadline` bounds them
    /// all. Outcomes are reported to the balancer; a success sticks `client` to its
    /// address (for client-IP affinity).
    pub(crate) async fn race(
        &self,
        order: Vec<SocketAddr>,
        client: Option<IpAddr>,
        deadline: Instant,
    ) -> Result<(TcpStream, SocketAddr), Error> {
        let Dial {
            cache,
            balancer,
            stats,
            timeouts,
        } = *self;
        let mut next = interleave(order).into_iter();
        let per_attempt = timeouts.connect;
        let start = |addr: SocketAddr| -> Attempt {
            Box::pin(async move {
                let result = match tokio::time::timeout(per_attempt, TcpStream::connect(addr)).await
                {
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
                            balancer.record(stats, addr, true);
                            if let Some(client) = client {
                                balancer.stick(client, addr);
                            }
                            if let Err(e) = stream.set_nodelay(true) {
                                tracing::debug!(error = %e, "TCP_NODELAY failed");
                            }
                            return Ok((stream, addr));
                        }
                        Err(error) => {
                            balancer.record(stats, addr, false);
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
        cache.nudge();
        Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Resolve, Side::Upstream)))
    }
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
