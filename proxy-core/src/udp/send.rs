//! The UDP send path: [`send_all`] sends datagrams in order without waiting, segmented
//! (one send of equal-sized datagrams, [`segment_run`]) where the kernel can and batched
//! otherwise, counting what went and what was dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use tokio::net::UdpSocket;

use super::forwarder::Shared;
use crate::stats::Stats;
use crate::sys::udp::{self as io_udp, MAX_BATCH, Outgoing};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
}

/// What one [`send_all`] delivered, and whether it met an ICMP error.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sent {
    pub(super) datagrams: u64,
    pub(super) bytes: u64,
    pub(super) refused: bool,
}

/// Sends `datagrams` in order without waiting: what the socket cannot take now is dropped
/// and counted, as a router would. A pending ICMP error (ECONNREFUSED) is counted and the
/// send tried once more. Runs of equal-sized datagrams go out as one segmented send
/// where the kernel can; the rest in batches.
pub(super) fn send_all(
    socket: &UdpSocket,
    datagrams: &[&[u8]],
    to: Option<SocketAddr>,
    src_ip: Option<IpAddr>,
    dir: Direction,
    shared: &Shared,
) -> Sent {
    let stats = &shared.stats;
    let mut total = Sent::default();
    let mut count = |sent: &[&[u8]]| {
        let bytes: usize = sent.iter().map(|d| d.len()).sum();
        let (datagrams, bytes_counter) = match dir {
            Direction::Up => (&stats.udp_datagrams_to_upstream, &stats.bytes_to_upstream),
            Direction::Down => (
                &stats.udp_datagrams_to_downstream,
                &stats.bytes_to_downstream,
            ),
        };
        Stats::add(datagrams, sent.len() as u64);
        Stats::add(bytes_counter, bytes as u64);
        total.datagrams += sent.len() as u64;
        total.bytes += bytes as u64;
    };
    let mut refused = false;
    let mut rest = datagrams;
    while !rest.is_empty() {
        let segmenting = shared.segmentation.load(Relaxed);
        let run = if segmenting { segment_run(rest) } else { 1 };
        let (now, result) = if run >= 2 {
            let now = &rest[..run];
            let r = io_udp::send_segments(socket, now, to, src_ip).map(|()| run);
            (now, r)
        } else {
            // Up to the next run, at most one batch.
            let mut n = 1;
            while n < rest.len() && n < MAX_BATCH && !(segmenting && segment_run(&rest[n..]) >= 2) {
                n += 1;
            }
            let mut msgs = [Outgoing {
                data: &[],
                to,
                src_ip,
            }; MAX_BATCH];
            for (msg, data) in msgs.iter_mut().zip(&rest[..n]) {
                msg.data = data;
            }
            (&rest[..n], io_udp::send(socket, &msgs[..n]))
        };
        match result {
            Ok(n) => {
                count(&now[..n]);
                rest = &rest[n..];
                refused = false;
            }
            Err(e) if run >= 2 && io_udp::segmentation_unsupported(&e) => {
                tracing::debug!(error = %e, "UDP segmentation offload unavailable; sending in batches");
                shared.segmentation.store(false, Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !refused => {
                Stats::inc(&stats.udp_upstream_refused);
                total.refused = true;
                refused = true;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, ?dir, "UDP send failed; dropping");
                }
                Stats::add(&stats.udp_dropped, now.len() as u64);
                rest = &rest[now.len()..];
            }
        }
    }
    total
}

/// How many of the leading datagrams one segmented send can carry: those as long as the
/// first (which is not empty), and one shorter at the end, within the kernel's limits.
fn segment_run(datagrams: &[&[u8]]) -> usize {
    let Some(size) = datagrams.first().map(|d| d.len()).filter(|&n| n > 0) else {
        return 0;
    };
    let mut n = 0;
    let mut bytes = 0;
    for d in datagrams.iter().take(io_udp::MAX_SEGMENTS) {
        if d.len() > size || bytes + d.len() > io_udp::MAX_SEGMENTED_BYTES || d.is_empty() {
            break;
        }
        n += 1;
        bytes += d.len();
        if d.len() < size {
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_runs_follow_the_kernels_rules() {
        let d = |n: usize| vec![7u8; n];
        let run = |sizes: &[usize]| {
            let owned: Vec<Vec<u8>> = sizes.iter().map(|&n| d(n)).collect();
            let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            segment_run(&refs)
        };
        assert_eq!(run(&[]), 0);
        assert_eq!(run(&[0, 0]), 0, "empty datagrams cannot be segments");
        assert_eq!(run(&[100]), 1);
        assert_eq!(run(&[100, 100, 100]), 3);
        assert_eq!(run(&[100, 100, 40, 100]), 3, "a shorter one ends the run");
        assert_eq!(run(&[100, 200]), 1, "a longer one is not in it");
        assert_eq!(run(&[100, 100, 0]), 2);
        assert_eq!(run(&[10; 100]), io_udp::MAX_SEGMENTS);
        // 46 datagrams of 1400 B fit in 65,507 bytes; the 47th does not.
        assert_eq!(run(&[1400; 60]), 46);
        assert_eq!(run(&[65_507, 65_507]), 1);
    }
}
