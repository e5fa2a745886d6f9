//! Idle connections hold no relay resources: a pipe (or buffer) is taken from the
//! forwarder's pool only while bytes flow and goes back when the direction goes quiet.
//!
//! A test binary of its own, so no other test's pipes are counted.
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use proxy_core::{RelayMode, Timeouts};

use proxy_testkit::client::{connect, round_trip};
use proxy_testkit::data::payload;
use proxy_testkit::echo::echo_server;
use proxy_testkit::wait::within;
use support::{forwarder, proxy_addr};

/// The pipes this process holds, from the targets of `/proc/self/fd`.
fn open_pipes() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// 100 connections each move 256 KiB both ways, one after another, then stay open and
/// idle. Were pipes held per connection, 100 connections would hold 200 pipes (400 fds);
/// with the pool, the quiet connections hold none and the pool keeps the few that served
/// the transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_pipes() {
    const CONNECTIONS: usize = 100;
    let echo = echo_server().await;
    let handle = forwarder(echo.addr(), RelayMode::Auto, Timeouts::default());
    let before = open_pipes();
    let data = payload(7, 256 << 10);
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut client = connect(proxy_addr(&handle)).await;
        within(
            Duration::from_secs(30),
            "echo",
            round_trip(&mut client, &data),
        )
        .await;
        idle.push(client);
    }
    let stats = handle.stats();
    assert_eq!(stats.connections_open, CONNECTIONS as u64);
    // Each burst's first bytes are copied, the rest spliced.
    let moved = 2 * (CONNECTIONS * data.len()) as u64;
    assert!(
        stats.bytes_spliced > moved / 2,
        "{} of {moved} spliced",
        stats.bytes_spliced
    );
    let pipes = open_pipes() - before;
    // Each pipe is two descriptors; a handful of pipes serve sequential transfers.
    assert!(
        pipes <= 2 * 8,
        "{pipes} pipe descriptors for {CONNECTIONS} idle connections"
    );
    drop(idle);
    handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(open_pipes(), before, "shutdown closes the pooled pipes");
}
