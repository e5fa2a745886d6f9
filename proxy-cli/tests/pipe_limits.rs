//! Splicing when the user's pipe allowance is spent: past `fs.pipe-user-pages-soft`, the
//! kernel gives an unprivileged user's new pipes 2 pages and refuses to enlarge them
//! (F_SETPIPE_SZ fails with EPERM). The relay must still move every byte, in order, both
//! ways, through those small pipes.
//!
//! The proxy runs as root in a user namespace of its own (`unshare --user
//! --map-root-user`): the same user to the kernel's pipe accounting, without the
//! CAP_SYS_RESOURCE and CAP_SYS_ADMIN of the initial namespace that lift the limit. The
//! test itself (root, privileged) spends the allowance by holding large pipes. Needs
//! root and `unshare` (util-linux); without them the test says why and checks nothing.
#![cfg(target_os = "linux")]

mod support;

use std::os::fd::OwnedFd;
use std::process::Command;
use std::thread;

use proxy_testkit::blocking::{Echo, connect, echo_through};
use proxy_testkit::data::payload;
use proxy_testkit::process::find_program;
use support::http::{admin_addr, get};
use support::proxy::{PROXY, Proxy};

/// Pages held by a 1 MiB pipe.
const BIG_PIPE: usize = 1 << 20;

/// Pipes of 1 MiB, held until dropped, taking the current user past the soft limit of
/// pipe pages (a privileged process may go past it).
fn spend_pipe_allowance() -> Vec<(OwnedFd, OwnedFd)> {
    let soft: usize = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
        .expect("reading fs.pipe-user-pages-soft")
        .trim()
        .parse()
        .unwrap();
    assert!(
        soft > 0,
        "fs.pipe-user-pages-soft is 0 (no limit): nothing to test"
    );
    let pages_each = BIG_PIPE / 4096;
    (0..soft / pages_each + 4)
        .map(|_| {
            let (r, w) = rustix::pipe::pipe().expect("pipe");
            rustix::pipe::fcntl_setpipe_size(&w, BIG_PIPE).expect("a 1 MiB pipe (as root)");
            (r, w)
        })
        .collect()
}

/// The sum of metric `name`'s samples whose labels contain `label` (`""`: all).
fn metric(body: &str, name: &str, label: &str) -> u64 {
    let samples: Vec<u64> = body
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(label))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .collect();
    assert!(!samples.is_empty(), "no {name} {label} in\n{body}");
    samples.iter().sum()
}

#[test]
fn splice_moves_every_byte_through_the_small_pipes_of_a_spent_allowance() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: not root, so the pipe allowance cannot be spent on purpose");
        return;
    }
    let unshare = find_program("unshare", &["/usr/bin/unshare", "/bin/unshare"])
        .expect("`unshare` not found: install util-linux");
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let held = spend_pipe_allowance();
    let mut cmd = Command::new(unshare);
    cmd.args(["--user", "--map-root-user", "--"])
        .arg(PROXY)
        .args(["tcp", "0", &target, "--listen", "127.0.0.1"])
        .args(["--admin", "127.0.0.1:0", "--log-level", "debug"]);
    let proxy = Proxy::spawn(cmd);
    let addr = proxy.listen_addr(&target);
    let admin = admin_addr(&proxy);
    // Four connections at once, 8 MiB each way, every byte checked.
    let sent: u64 = thread::scope(|s| {
        let runs: Vec<_> = (0..4u64)
            .map(|i| {
                s.spawn(move || {
                    let data = payload(i + 1, 8 << 20);
                    let got = echo_through(connect(addr), &data);
                    assert!(got == data, "connection {i}: bytes differ or are missing");
                    data.len() as u64
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    });
    drop(held);
    // The pipes were the kernel's smallest: enlarging them was refused.
    let refused = proxy.expect_line("'could not resize pipe'", |l| {
        l.contains("could not resize pipe")
    });
    assert!(refused.contains("kept=8192"), "{refused}");
    let metrics = get(admin, "/metrics").body;
    let spliced = metric(&metrics, "proxy_bytes_spliced_total", "");
    let relayed = metric(&metrics, "proxy_bytes_total", "direction=");
    println!("figures: {sent} B each way; {spliced} of {relayed} B relayed were spliced");
    assert_eq!(relayed, 2 * sent, "{metrics}");
    assert!(
        spliced > sent,
        "splice carried little: {spliced} of {relayed}"
    );
}
