//! End-to-end tests of the `proxy` binary: real processes, real sockets, loopback only.
//!
//! Rules: ports come from the kernel (the proxy is started with PORT 0 or a port the test
//! just bound, and its "Forwarding from" log line says where it listens); nothing waits by
//! sleeping, only on log lines, connections, datagrams and exits, each with a deadline;
//! every child is killed when its guard drops, so a failing test leaves no process behind.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use proxy_testkit::blocking::{
    Echo, UdpEcho, connect, echo_through, expect_closed, open_connection, ping, try_echo_through,
    udp_client, udp_echo,
};
use proxy_testkit::data::payload;
use support::proxy::{PROMPT, PROXY, Proto, Proxy, run};

/// `proxy tcp 0 TARGET EXTRA... --listen 127.0.0.1` in front of `echo`: the proxy, its
/// TARGET (the echo server's address) and the address it listens on.
fn start_tcp(echo: &Echo, extra: &[&str]) -> (Proxy, String, SocketAddr) {
    let target = echo.addr.to_string();
    let mut args = vec!["tcp", "0", &target];
    args.extend_from_slice(extra);
    args.extend(["--listen", "127.0.0.1"]);
    let proxy = Proxy::start(&args);
    let addr = proxy.listen_addr(&target);
    (proxy, target, addr)
}

/// Waits for the "shutting down" line of a SIGTERM, with `open` (`open=1`, `sessions=1`)
/// among its fields.
fn expect_sigterm_drain(proxy: &Proxy, open: &str) {
    proxy.expect_line("'shutting down'", |l| {
        l.contains("shutting down") && l.contains("SIGTERM") && l.contains(open)
    });
}

/// Runs `proxy ARGS` for each case: exit code 2, nothing on stdout, and an error on
/// stderr with every one of the case's wanted strings in it.
fn expect_usage_errors(cases: &[(&[&str], &[&str])]) {
    for &(args, wants) in cases {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
        }
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Runs `proxy ARGS` (`--help` among them): exit code 0, and every one of `wants` on
/// stdout, which it returns.
fn expect_help(args: &[&str], wants: &[&str]) -> String {
    let (code, stdout, _) = run(args);
    assert_eq!(code, 0);
    let command = args.join(" ");
    for want in wants {
        assert!(
            stdout.contains(want),
            "proxy {command} lacks {want:?}:\n{stdout}"
        );
    }
    stdout
}

// ===== tests =====

#[test]
fn relays_bytes_exactly_both_ways() {
    let echo = Echo::start("127.0.0.1");
    let (proxy, target, addr) = start_tcp(&echo, &["--log-level", "debug"]);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    // The message is exactly kubectl's, after tracing's timestamp, level and target, and
    // before tracing's fields (`protocol="tcp"`), if any.
    let want = format!(": Forwarding from {addr} -> {target}");
    let line = proxy.expect_line("Forwarding from", |l| {
        l.split_once(&want)
            .is_some_and(|(_, fields)| fields.is_empty() || fields.starts_with(' '))
    });
    assert!(line.contains(" INFO "), "{line}");
    assert!(!line.contains('\x1b'), "ANSI colours on a pipe: {line:?}");

    // Several connections at once, large enough to need many reads, each checked byte
    // for byte after a FIN in each direction.
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let data = payload(i, 512 * 1024 + i as usize * 7919);
                let back = echo_through(connect(addr), &data);
                assert!(back == data, "connection {i}: {} bytes back", back.len());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // And some small ones in a row, one byte and empty included.
    for (i, len) in [1usize, 0, 3, 1500].into_iter().enumerate() {
        let data = payload(100 + i as u64, len);
        assert_eq!(echo_through(connect(addr), &data), data);
    }
    // Connection lines are logged at debug.
    proxy.expect_line("'connected' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("connected") && l.contains("client=127.0.0.1:")
    });
    // And an access log line per connection at info: bytes each way, duration, reason.
    proxy.expect_line("an access log line at INFO", |l| {
        l.contains(" INFO ")
            && l.contains("proxy_core::access")
            && l.contains("protocol=\"tcp\"")
            && l.contains("bytes_up=1500 bytes_down=1500")
            && l.contains("duration_ms=")
            && l.contains("close=\"closed\"")
    });
}

#[test]
fn listens_on_several_addresses_including_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "[::1]",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addrs = proxy.try_listen_addrs(2, &target).expect("two listeners");
    assert!(
        addrs.iter().any(|a| a.ip().to_string() == "::1"),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().any(|a| a.ip().to_string() == "127.0.0.1"),
        "{addrs:?}"
    );
    for (i, addr) in addrs.into_iter().enumerate() {
        let data = payload(i as u64, 70_000);
        assert_eq!(echo_through(connect(addr), &data), data, "via {addr}");
    }
}

/// `proxy tcp P 127.0.0.2`: the seed's form, TARGET without a port uses PORT.
#[test]
fn target_without_port_uses_listen_port() {
    // The echo server's port, chosen by the kernel on 127.0.0.2, may be taken on
    // 127.0.0.1; then try another, a bounded number of times.
    for attempt in 0..5 {
        let echo = Echo::start("127.0.0.2");
        let port = echo.port().to_string();
        let mut proxy = Proxy::start(&["tcp", &port, "127.0.0.2", "--listen", "127.0.0.1"]);
        let target = format!("127.0.0.2:{port}");
        let Some(addrs) = proxy.try_listen_addrs(1, &target) else {
            let status = proxy.wait_exit(PROMPT);
            assert_eq!(status.code(), Some(1), "attempt {attempt}");
            assert!(proxy.stderr().contains("in use"), "{}", proxy.stderr());
            continue;
        };
        assert_eq!(addrs[0], format!("127.0.0.1:{port}").parse().unwrap());
        let conn = connect(addrs[0]);
        // Reaching the echo server on 127.0.0.2:P is the only way to get this back.
        let data = payload(3, 100_000);
        assert_eq!(echo_through(conn, &data), data);
        return;
    }
    panic!("no free port on 127.0.0.1 matching one on 127.0.0.2 in 5 attempts");
}

/// `localhost` without a port, resolved by the system resolver (/etc/hosts).
#[test]
fn localhost_target_resolves_through_system_resolver() {
    for attempt in 0..5 {
        let echo = Echo::start("127.0.0.1");
        let port = echo.port().to_string();
        let mut proxy = Proxy::start(&[
            "tcp",
            &port,
            "localhost",
            "--listen",
            "127.0.0.2",
            "--resolver",
            "system",
        ]);
        let target = format!("localhost:{port}");
        let Some(addrs) = proxy.try_listen_addrs(1, &target) else {
            let status = proxy.wait_exit(PROMPT);
            assert_eq!(status.code(), Some(1), "attempt {attempt}");
            continue;
        };
        let data = payload(7, 100_000);
        assert_eq!(echo_through(connect(addrs[0]), &data), data);
        return;
    }
    panic!("no free port on 127.0.0.2 matching one on 127.0.0.1 in 5 attempts");
}

#[test]
fn positional_idle_timeout_closes_idle_connections() {
    let echo = Echo::start("127.0.0.1");
    for (arg, min, max) in [
        ("1", Duration::from_millis(900), Duration::from_secs(4)),
        ("500ms", Duration::from_millis(400), Duration::from_secs(3)),
    ] {
        let (_proxy, _, addr) = start_tcp(&echo, &[arg]);
        let mut conn = open_connection(addr, b"before idling");
        let idle_since = Instant::now();
        let closed = expect_closed(&mut conn, max + Duration::from_secs(2));
        let idle = closed - idle_since;
        assert!(
            (min..=max).contains(&idle),
            "idle timeout {arg}: closed after {idle:?}"
        );
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_token() {
    let cases: [(&[&str], &[&str]); 7] = [
        (&["tcp", "abc", "x"], &["'abc'", "<PORT>"]),
        (
            &["tcp", "80", "web:http"],
            &["'web:http'", "[TARGET]", "`http` is not a port"],
        ),
        (
            &["tcp", "80", "web", "5x"],
            &["invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]'", "`x`"],
        ),
        (
            &["tcp", "80", "web", "--connect-timeout", "-1"],
            &["'-1'", "--connect-timeout", "negative"],
        ),
        (&["nosuch"], &["'nosuch'"]),
        (&["tcp", "0", "web"], &["'web'", "PORT is 0"]),
        (
            &["tcp", "80", "web", "--pipe-size", "1K"],
            &["pipe size 1024"],
        ),
    ];
    expect_usage_errors(&cases);
}

/// Durations past 10 years, on the command line or in a config file, exit 2 naming the
/// bad token. (They used to be accepted, and then every connection's task panicked
/// computing its deadline, `Instant + Duration` overflowing: the client got nothing.)
#[test]
fn durations_past_10_years_exit_2_naming_the_token() {
    use proxy_testkit::process::TempPath;
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let udp_echo = UdpEcho::start("127.0.0.1");
    let udp_target = udp_echo.addr.to_string();
    let tcp = |flags: &[&str]| -> Vec<String> {
        let mut args = vec!["tcp", "0", &target, "--listen", "127.0.0.1"];
        args.extend_from_slice(flags);
        args.into_iter().map(String::from).collect()
    };
    let config = |line: &str| {
        let file = TempPath::with_contents(
            "huge.toml",
            &format!(
                "[defaults]\n{line}\n[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\n"
            ),
        );
        let args = ["run", "--config", file.path().to_str().unwrap()].map(String::from);
        (args.to_vec(), Some(file))
    };
    let huge = "18446744073709551615s";
    let mut cases: Vec<(Vec<String>, Option<TempPath>, &str)> = vec![
        (tcp(&["--idle-timeout", huge]), None, huge),
        (
            tcp(&["--max-lifetime", "18446744073709551615"]),
            None,
            "18446744073709551615",
        ),
        (
            tcp(&["--half-close-timeout", "5124095576030431h"]),
            None,
            "5124095576030431h",
        ),
        (
            tcp(&["--connect-total-timeout", "315360001s"]),
            None,
            "315360001s",
        ),
        (
            tcp(&["--eject-after", "3", "--eject-for", huge]),
            None,
            huge,
        ),
        (
            [
                "udp",
                "0",
                &udp_target,
                "18446744073709551615",
                "--listen",
                "127.0.0.1",
            ]
            .map(String::from)
            .to_vec(),
            None,
            "18446744073709551615",
        ),
    ];
    for (line, token) in [
        (
            "idle_timeout = 9223372036854775807",
            "`9223372036854775807`",
        ),
        ("max_lifetime = \"87601h\"", "`87601h`"),
    ] {
        let (args, file) = config(line);
        cases.push((args, file, token));
    }
    // At once, so a proxy that wrongly runs costs 3 s in all.
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(args, file, token)| {
            let target = target.clone();
            thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut proxy = Proxy::start(&args);
                let deadline = Instant::now() + Duration::from_secs(3);
                while proxy.running() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                let outcome = if proxy.running() {
                    // Still running: what does a connection get?
                    let listening = proxy.try_listen_addrs(1, &target).map(|a| a[0]);
                    let echoed = listening.filter(|_| args[0] != "udp").map(|addr| {
                        let mut conn = connect(addr);
                        served(&mut conn, b"ping", Duration::from_secs(2))
                    });
                    thread::sleep(Duration::from_millis(100));
                    let panics = proxy.count_lines(|l| l.contains("panicked"));
                    Err(format!(
                        "still running; a connection echoed: {echoed:?}; {panics} panic lines: {:?}",
                        proxy.stderr().lines().find(|l| l.contains("panicked"))
                    ))
                } else {
                    Ok((proxy.wait_exit(PROMPT).code(), proxy.stderr()))
                };
                drop(file);
                (args.join(" "), token, outcome)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (args, token, outcome) = run.join().unwrap();
        match outcome {
            Ok((Some(2), stderr))
                if stderr.contains(token)
                    && stderr.contains("10 years")
                    && !stderr.contains("panicked") => {}
            other => failures.push(format!("proxy {args}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn port_in_use_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, _, stderr) = run(&[
        "tcp",
        &addr.port().to_string(),
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1",
    ]);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("error: failed to bind listen address ({addr}): Address already in use");
    assert!(stderr.contains(&want), "{stderr:?} lacks {want:?}");
}

#[test]
fn sigterm_drains_open_connections_then_exits_0() {
    let echo = Echo::start("127.0.0.1");
    let (mut proxy, _, addr) = start_tcp(&echo, &["--drain", "20s"]);
    let mut open = open_connection(addr, b"established");

    proxy.signal("TERM");
    expect_sigterm_drain(&proxy, "open=1");
    // The listener closes: connects are refused (bounded poll; a connect that still got in
    // before the listener closed is simply dropped).
    let deadline = Instant::now() + PROMPT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(Instant::now() < deadline, "still accepting: {other:?}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // The open connection still works within the drain time, and keeps the proxy alive.
    ping(&mut open, b"request during drain");
    assert!(proxy.running(), "exited with a connection still open");
    let closed = Instant::now();
    drop(open);
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    // It exited because the connection finished, not because the 20 s drain ran out.
    assert!(
        closed.elapsed() < Duration::from_secs(8),
        "{:?}",
        closed.elapsed()
    );
    assert!(proxy.stderr().contains("all connections finished"));
}

#[test]
fn drain_time_bounds_shutdown_and_sigint_works() {
    let echo = Echo::start("127.0.0.1");
    let (mut proxy, _, addr) = start_tcp(&echo, &["--drain", "500ms"]);
    let mut open = open_connection(addr, b"never finishes");
    let signalled = Instant::now();
    proxy.signal("INT");
    // The idle client is cut off when the drain time is over, and the proxy exits 0.
    let closed = expect_closed(&mut open, PROMPT);
    assert!(
        closed - signalled >= Duration::from_millis(400),
        "{:?}",
        closed - signalled
    );
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(proxy.stderr().contains("SIGINT"), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("drain time over"),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn rust_log_overrides_log_level() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let mut cmd = Command::new(PROXY);
    cmd.args([
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--log-level",
        "error",
    ])
    .env("RUST_LOG", "debug");
    let mut proxy = Proxy::spawn(cmd);
    // INFO and DEBUG lines although --log-level says error.
    let addr = proxy.listen_addr(&target);
    let conn = open_connection(addr, b"x");
    proxy.expect_line("'connected' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("connected")
    });
    drop(conn);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));
}

#[test]
fn help_documents_the_command() {
    expect_help(
        &["--help"],
        &[
            "proxy-to-service",
            "tcp",
            "PORT TARGET [IDLE_TIMEOUT_SECONDS]",
            "--log-level",
            "SIGTERM",
            "Exit codes",
        ],
    );
    expect_help(
        &["tcp", "--help"],
        &[
            "proxy-to-service",
            "<PORT>",
            "[TARGET]",
            "--sni",
            "[IDLE_TIMEOUT_SECONDS]",
            "0 or absent means no idle timeout",
            "--listen",
            "--connect-timeout",
            "--connect-total-timeout",
            "--idle-timeout",
            "--half-close-timeout",
            "--max-lifetime",
            "--resolver",
            "hickory",
            "--dns-refresh",
            "--reuse-port",
            "--backlog",
            "--pipe-size",
            "--relay",
            "--log-level",
            "--drain",
            "500ms, 30s, 5m, 1h",
            "proxy tcp 53 kube-dns.default",
        ],
    );
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("proxy "), "{stdout}");
}

/// The CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    utime + stime
}

fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// One request on a connection that may not be served: `true` when the echo came back
/// within `timeout`.
fn served(stream: &mut TcpStream, msg: &[u8], timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut back = vec![0; msg.len()];
    stream.write_all(msg).is_ok() && stream.read_exact(&mut back).is_ok() && back == msg
}

/// Out of file descriptors (EMFILE), the proxy warns, backs off instead of spinning, and
/// serves again once descriptors are free.
#[cfg(target_os = "linux")]
/// `--threads 1` runs everything on the main thread; `--threads 3` starts three workers.
/// Both serve.
#[test]
fn threads_sets_the_worker_threads() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    for (threads, workers) in [("1", 0), ("3", 3)] {
        let proxy = Proxy::start(&[
            "--threads",
            threads,
            "tcp",
            "0",
            &target,
            "--listen",
            "127.0.0.1",
        ]);
        let addr = proxy.listen_addr(&target);
        let mut conn = TcpStream::connect(addr).unwrap();
        assert!(
            served(&mut conn, b"ping", Duration::from_secs(5)),
            "--threads {threads}"
        );
        assert_eq!(
            proxy.settled_worker_threads(workers),
            workers,
            "--threads {threads}"
        );
    }
}

/// Through a `proxy tcp` to `upstream` with `flags`: sends `sent` as a client and returns
/// the first two lines the upstream reads, CRLF and LF kept, and the proxy.
fn first_two_lines(
    upstream: &std::net::TcpListener,
    flags: &[&str],
    sent: &[u8],
) -> (String, String, SocketAddr, SocketAddr, Proxy) {
    use std::io::{BufRead, BufReader, Write};
    let target = upstream.local_addr().unwrap().to_string();
    let mut args = vec!["tcp", "0", &target, "--listen", "127.0.0.1"];
    args.extend_from_slice(flags);
    let proxy = Proxy::start(&args);
    let addr = proxy.listen_addr(&target);
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(sent).unwrap();
    let (conn, _) = upstream.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(conn);
    let (mut first, mut second) = (String::new(), String::new());
    reader.read_line(&mut first).unwrap();
    reader.read_line(&mut second).unwrap();
    (first, second, client.local_addr().unwrap(), addr, proxy)
}

/// `--proxy-protocol v1`: the upstream reads the PROXY line naming the client and the
/// proxy's listen address before the client's bytes; with `--accept-proxy-from`, a trusted
/// peer's header names the client instead, upstream and in the access log. `proxy udp
/// --proxy-protocol v1` exits 2 (version 1 has no UDP form).
#[test]
fn proxy_protocol_header_reaches_the_upstream() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (header, rest, from, addr, _proxy) =
        first_two_lines(&upstream, &["--proxy-protocol", "v1"], b"hello\n");
    let (ip, port) = (from.ip(), from.port());
    let want = format!("PROXY TCP4 {ip} {} {port} {}\r\n", addr.ip(), addr.port());
    assert_eq!((header, rest.as_str()), (want, "hello\n"));

    let flags = [
        "--proxy-protocol",
        "v1",
        "--accept-proxy-from",
        "127.0.0.0/8",
    ];
    let sent = b"PROXY TCP4 203.0.113.9 198.51.100.2 5555 80\r\nhello\n";
    let (header, rest, _, _, proxy) = first_two_lines(&upstream, &flags, sent);
    assert_eq!(header, "PROXY TCP4 203.0.113.9 198.51.100.2 5555 80\r\n");
    assert_eq!(rest, "hello\n");
    proxy.expect_line("the access line with the header's client", |l| {
        l.contains("proxy_core::access") && l.contains("client=203.0.113.9:5555")
    });

    let out = Command::new(PROXY)
        .args(["udp", "0", "127.0.0.1:53", "--proxy-protocol", "v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 1 has no UDP form"));
}

/// `--accept-proxy-from` on one thread: trusted peers that send part of a PROXY header and
/// then their FIN (a port scanner's bare `\r\n\r\n`, say) are closed at once, and the
/// proxy stays idle, serves the next client and stops on SIGTERM. (They used to take the
/// only thread at 100 % for good: the header timeout never fired, nothing else was served,
/// and SIGTERM was not handled.)
#[test]
fn incomplete_proxy_headers_then_fin_leave_the_proxy_idle() {
    use std::net::Shutdown;
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let args = [
        "--threads",
        "1",
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
    ];
    let mut proxy = Proxy::start(&[&args[..], &["--accept-proxy-from", "127.0.0.1"]].concat());
    let addr = proxy.listen_addr(&target);
    let pid = proxy.pid();
    let mut scanners = Vec::new();
    for part in [&b"PROXY TCP4 1.2.3.4"[..], b"\r\n\r\n"] {
        let mut scanner = TcpStream::connect(addr).unwrap();
        scanner.write_all(part).unwrap();
        scanner.shutdown(Shutdown::Write).unwrap();
        scanners.push(scanner);
    }

    // Measured first, asserted together at the end, so a failure shows every figure.
    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let window = Instant::now();
    thread::sleep(Duration::from_secs(2)); // a measuring window, not a synchronisation
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / hz as f64 / window.elapsed().as_secs_f64();
    // Well before the 5 s header timeout.
    let closed = scanners.iter_mut().all(|scanner| {
        scanner
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        match scanner.read(&mut [0u8; 16]) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    });
    let mut client = TcpStream::connect(addr).unwrap();
    let header = b"PROXY TCP4 203.0.113.9 198.51.100.2 5555 80\r\n";
    client.write_all(header).unwrap();
    let served = served(&mut client, b"after the scanners", Duration::from_secs(2));
    drop(client); // nothing left to drain
    proxy.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    while proxy.running() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let exited = !proxy.running();
    assert!(
        share < 0.25 && closed && served && exited,
        "over 2 s: {used} ticks ({share:.2} of a core); scanners closed: {closed}; \
         next client served: {served}; exited within 3 s of SIGTERM: {exited}"
    );
    assert_eq!(
        proxy.wait_exit(PROMPT).code(),
        Some(0),
        "{}",
        proxy.stderr()
    );
}

/// `proxy tcp 0 TARGET` on 127.0.0.1 under `prlimit NOFILE` (`--nofile=SOFT:HARD`):
/// prlimit sets the limit on itself and execs the proxy, which keeps the pid.
fn tcp_under_prlimit(nofile: &str, target: &str) -> Proxy {
    let mut cmd = Command::new("prlimit");
    cmd.args([nofile, PROXY, "tcp", "0", target, "--listen", "127.0.0.1"])
        .env_remove("RUST_LOG");
    Proxy::spawn(cmd)
}

/// The proxy raises its soft limit on open files to the hard limit at start: with
/// `prlimit --nofile=1024:4096` it runs with 4,096.
#[test]
fn raises_the_open_files_limit_to_the_hard_limit() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = tcp_under_prlimit("--nofile=1024:4096", &target);
    let addr = proxy.listen_addr(&target);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3..5], ["4096", "4096"], "{line}");
    // And it serves.
    let mut conn = TcpStream::connect(addr).unwrap();
    assert!(served(&mut conn, b"ping", Duration::from_secs(5)));
}

#[test]
fn out_of_file_descriptors_backs_off_and_recovers() {
    let echo = Echo::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = tcp_under_prlimit("--nofile=64:64", &target);
    let addr = proxy.listen_addr(&target);
    let pid = proxy.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "proxy");

    // Open connections, each checked with a request, until one is not served; then open
    // more without waiting, so several queue while the proxy is at its limit and accept(2)
    // itself fails. Bounded: 200 connections, 60 s.
    let accept_failed = |l: &str| l.contains(" WARN ") && l.contains("accept failed");
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut at_limit = false;
    for attempt in 0..200u32 {
        assert!(started.elapsed() < Duration::from_secs(60), "took too long");
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            at_limit = true;
            continue;
        };
        if !at_limit {
            let msg = format!("request {attempt}");
            at_limit = !served(&mut conn, msg.as_bytes(), Duration::from_millis(500));
        } else if attempt % 4 == 0
            && proxy
                .find_line(Duration::from_millis(300), accept_failed)
                .is_some()
        {
            clients.push(conn);
            break;
        }
        clients.push(conn);
    }
    let warn = proxy.expect_line("warning that accept failed", accept_failed);
    assert!(warn.contains("Too many open files"), "{warn}");
    let served_before = clients.len();

    // Stuck at the limit, it must not spin: under a quarter of one core over ~1 s.
    let hz = clock_ticks_per_second();
    let before = cpu_ticks(pid);
    let window = Instant::now();
    thread::sleep(Duration::from_secs(1)); // a measuring window, not a synchronisation
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / hz as f64 / window.elapsed().as_secs_f64();
    assert!(
        share < 0.25,
        "busy at the fd limit: {used} ticks ({share:.2} of a core)"
    );

    // Freed descriptors: a new connection is relayed byte for byte again. A connection
    // may still meet the limit while the old ones wind down, so try a bounded few.
    drop(clients);
    let data = payload(42, 200_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    loop {
        tries += 1;
        let conn = connect(addr);
        match try_echo_through(conn, &data) {
            Ok(back) if back == data => break,
            Ok(back) if !back.is_empty() => {
                panic!(
                    "corrupted relay: {} bytes back of {}",
                    back.len(),
                    data.len()
                )
            }
            other => assert!(
                tries < 20 && Instant::now() < deadline,
                "not served again after {tries} tries: {other:?}"
            ),
        }
    }
    proxy.expect_line("'accepting again'", |l| l.contains("accepting again"));
    eprintln!("limit reached after {served_before} connections; recovered in {tries} tries");
}

// ===== UDP and TCP+UDP =====

#[test]
fn udp_relays_datagrams_exactly() {
    let echo = UdpEcho::start("127.0.0.1");
    let target = echo.addr.to_string();
    let proxy = Proxy::start(&[
        "udp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--log-level",
        "debug",
    ]);
    let addr = proxy.proto_listen_addr(Proto::Udp, &target);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let line = proxy.expect_line("Forwarding from", |l| l.contains("Forwarding from"));
    assert!(line.contains(" INFO "), "{line}");

    // Every size, the empty datagram and the largest IPv4 UDP payload included, byte for
    // byte; one datagram in flight at a time, so nothing can be lost on loopback.
    let client = udp_client(addr);
    for (i, len) in [0usize, 1, 512, 1472, 1473, 9000, 65_507, 0, 3]
        .into_iter()
        .enumerate()
    {
        let data = payload(200 + i as u64, len);
        let back = udp_echo(&client, &data);
        assert!(
            back == data,
            "{len}-byte datagram came back as {} bytes",
            back.len()
        );
    }
    // Several clients at once: each gets its own replies only.
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            thread::spawn(move || {
                let socket = udp_client(addr);
                for i in 0..25u64 {
                    let data = payload(c * 1000 + i, 100 + (i * 997 + c * 31) as usize % 4000);
                    assert!(udp_echo(&socket, &data) == data, "client {c}, datagram {i}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Sessions are logged at debug.
    let me = client.local_addr().unwrap();
    proxy.expect_line("'session started' at DEBUG", |l| {
        l.contains(" DEBUG ") && l.contains("session started") && l.contains(&format!("{me}"))
    });
}

/// The `rb` (receive buffer) of the UDP socket bound to `addr`, from `ss -m`.
fn udp_receive_buffer(addr: SocketAddr) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-uanmH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .split(|c: char| c == ',' || c == '(' || c.is_whitespace())
        .find_map(|field| field.strip_prefix("rb"))
        .unwrap_or_else(|| panic!("no rb in ss output: {text}"));
    rb.parse().unwrap_or_else(|_| panic!("rb{rb} in {text}"))
}

fn is_root() -> bool {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `--socket-buffer` sizes the listening socket's buffers (the kernel reports twice the
/// size asked, for its bookkeeping): 4 MiB by default, past `net.core.rmem_max` as root;
/// 0 keeps the system's default.
#[test]
fn udp_socket_buffer_sizes_the_listener() {
    let echo = UdpEcho::start("127.0.0.1");
    let target = echo.addr.to_string();
    let rmem_default: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .expect("rmem_default")
        .trim()
        .parse()
        .expect("a number");
    let root = is_root();
    for (flag, want) in [
        (None, if root { Some(8 << 20) } else { None }),
        (Some("1M"), if root { Some(2 << 20) } else { None }),
        (Some("0"), Some(rmem_default)),
    ] {
        let mut args = vec!["udp", "0", &target, "--listen", "127.0.0.1"];
        if let Some(size) = flag {
            args.extend(["--socket-buffer", size]);
        }
        let proxy = Proxy::start(&args);
        let addr = proxy.proto_listen_addr(Proto::Udp, &target);
        let rb = udp_receive_buffer(addr);
        match want {
            Some(want) => assert_eq!(rb, want, "--socket-buffer {flag:?}"),
            // Without privileges the size is capped at net.core.rmem_max.
            None => assert!(rb >= rmem_default, "--socket-buffer {flag:?}: rb {rb}"),
        }
        // Still a working forward.
        let client = udp_client(addr);
        assert!(udp_echo(&client, b"sized") == b"sized");
    }
}

/// `proxy udp P 127.0.0.2 1`: the seed's form. TARGET without a port uses PORT, and the
/// session ends after 1 s without traffic: a later datagram from the same client starts a
/// new session, with a new upstream socket (the echo server sees a new source port).
#[test]
fn udp_seed_form_and_idle_timeout() {
    // The echo server's port, chosen by the kernel on 127.0.0.2, may be taken on
    // 127.0.0.1; then try another, a bounded number of times.
    for attempt in 0..5 {
        let echo = UdpEcho::start("127.0.0.2");
        let port = echo.port().to_string();
        let mut proxy = Proxy::start(&[
            "udp",
            &port,
            "127.0.0.2",
            "1",
            "--listen",
            "127.0.0.1",
            "--log-level",
            "debug",
        ]);
        let target = format!("127.0.0.2:{port}");
        let Some(addrs) = proxy.try_proto_listen_addrs(Proto::Udp, 1, &target) else {
            let status = proxy.wait_exit(PROMPT);
            assert_eq!(status.code(), Some(1), "attempt {attempt}");
            assert!(proxy.stderr().contains("in use"), "{}", proxy.stderr());
            continue;
        };
        assert_eq!(addrs[0], format!("127.0.0.1:{port}").parse().unwrap());
        let client = udp_client(addrs[0]);
        let me = client.local_addr().unwrap();
        let ended = |l: &str| {
            l.contains("proxy_core::access")
                && l.contains(&format!("client={me}"))
                && l.contains("close=\"idle\"")
        };
        let started = |l: &str| l.contains("session started") && l.contains(&format!("{me}"));

        // Reaching the echo server on 127.0.0.2:P is the only way to get this back.
        assert_eq!(udp_echo(&client, b"first"), b"first");
        let idle_since = Instant::now();
        let first_upstream = echo.last_peer();
        proxy
            .find_line(Duration::from_secs(6), ended)
            .expect("the session did not end within 6 s of idling");
        let idle = idle_since.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(5)).contains(&idle),
            "1 s idle timeout: the session ended after {idle:?}"
        );

        assert_eq!(udp_echo(&client, b"second"), b"second");
        let second_upstream = echo.last_peer();
        assert_ne!(
            first_upstream, second_upstream,
            "the second datagram reused the ended session's upstream socket"
        );
        // The log line may trail the echo by a moment: wait for it, bounded.
        let two = proxy.wait_stderr(PROMPT, |lines| {
            (lines.iter().filter(|l| started(l)).count() == 2).then_some(())
        });
        assert!(two.is_some(), "{}", proxy.stderr());
        return;
    }
    panic!("no free UDP port on 127.0.0.1 matching one on 127.0.0.2 in 5 attempts");
}

/// TCP and UDP echo servers on one port of 127.0.0.1, as a DNS server would be.
fn tcp_and_udp_echo() -> (Echo, UdpEcho) {
    for _ in 0..10 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
        let addr = tcp.local_addr().unwrap();
        if let Ok(udp) = UdpSocket::bind(addr) {
            return (Echo::serve(tcp), UdpEcho::serve(udp));
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 in 10 attempts");
}

/// `proxy tcp,udp 0 ...` (and `udp,tcp`): one process, both protocols on the same
/// kernel-chosen port; SIGTERM drains both and exits 0.
#[test]
fn tcp_udp_serves_both_protocols_on_one_port() {
    let (echo, udp_echo_server) = tcp_and_udp_echo();
    let target = echo.addr.to_string();
    assert_eq!(udp_echo_server.addr, echo.addr);
    for proto in ["tcp,udp", "udp,tcp"] {
        let mut proxy = Proxy::start(&[
            proto,
            "0",
            &target,
            "1",
            "--listen",
            "127.0.0.1",
            "--drain",
            "20s",
        ]);
        // UDP binds after TCP got its port, so the UDP line is the final word.
        let udp = proxy.proto_listen_addr(Proto::Udp, &target);
        let tcp = proxy
            .try_proto_listen_addrs(Proto::Tcp, 1, &target)
            .expect("a TCP 'Forwarding from' line");
        assert!(tcp.contains(&udp), "{proto}: TCP on {tcp:?}, UDP on {udp}");
        let addr = udp;

        let client = udp_client(addr);
        for len in [0, 1000, 65_507] {
            let data = payload(len as u64, len);
            assert!(
                udp_echo(&client, &data) == data,
                "{proto}: {len} B over UDP"
            );
        }
        let data = payload(9, 300_000);
        assert_eq!(echo_through(connect(addr), &data), data, "{proto}: TCP");

        // SIGTERM with a TCP connection open: both stop taking new work, the connection
        // goes on, and the process exits 0 once it is closed.
        let mut open = open_connection(addr, b"established");
        proxy.signal("TERM");
        expect_sigterm_drain(&proxy, "open=1");
        ping(&mut open, b"request during drain");
        drop(open);
        let status = proxy.wait_exit(PROMPT);
        assert_eq!(status.code(), Some(0), "{proto}: {}", proxy.stderr());
    }
}

/// A taken UDP port fails `proxy udp` and `proxy tcp,udp` with exit code 1, naming the
/// address; the TCP side of `tcp,udp` does not stay behind.
///
/// The UDP port is taken on purpose; the TCP port of the same number may be in use by an
/// unrelated socket (ephemeral ports are shared), so the address is on 127.0.0.99, which
/// no other test uses, and a port whose TCP side is busy is traded for another.
#[test]
fn udp_port_in_use_exits_1_naming_the_address() {
    for _ in 0..5 {
        let taken = UdpSocket::bind("127.0.0.99:0").unwrap();
        let addr = taken.local_addr().unwrap();
        if TcpListener::bind(addr).is_err() {
            continue;
        }
        let port = addr.port().to_string();
        for proto in ["udp", "tcp,udp"] {
            let (code, _, stderr) = run(&[proto, &port, "127.0.0.1:9", "--listen", "127.0.0.99"]);
            assert_eq!(code, 1, "{proto}: {stderr}");
            // `tcp,udp` bound TCP (and logged it) before UDP failed.
            let error = stderr
                .lines()
                .find(|l| l.starts_with("error: "))
                .unwrap_or_else(|| panic!("{proto}: no error line in {stderr:?}"));
            let prefix = if proto == "udp" { "" } else { "UDP: " };
            let want = format!(
                "error: {prefix}failed to bind listen address ({addr}): Address already in use"
            );
            assert!(
                error.starts_with(&want),
                "{proto}: {error:?} is not {want:?}"
            );
        }
        // The TCP port was released when UDP failed (the process exited anyway, but the
        // listener must not have been leaked to a child either).
        drop(TcpListener::bind(addr).expect("TCP port released"));
        return;
    }
    panic!("no port on 127.0.0.99 with its TCP side free in 5 tries");
}

#[test]
fn udp_help_documents_the_commands() {
    expect_help(&["--help"], &["udp", "tcp,udp", "udp,tcp"]);
    let stdout = expect_help(
        &["udp", "--help"],
        &[
            "proxy-to-service",
            "<PORT>",
            "<TARGET>",
            "[IDLE_TIMEOUT_SECONDS]",
            "Absent means 30 s; 0 means no idle timeout",
            "--idle-timeout",
            "[default: 30s]",
            "--max-sessions",
            "[default: 16384]",
            "--batch-size",
            "1 to 64",
            "--listen",
            "--resolver",
            "--dns-refresh",
            "--reuse-port",
            "--drain",
            "--log-level",
            "65,507",
            "proxy udp 53 kube-dns.default 1",
        ],
    );
    for unwanted in ["--pipe-size", "--connect-timeout", "--relay"] {
        assert!(
            !stdout.contains(unwanted),
            "proxy udp --help has {unwanted:?}"
        );
    }
    expect_help(
        &["tcp,udp", "--help"],
        &[
            "udp,tcp",
            "[IDLE_TIMEOUT_SECONDS]",
            "none for TCP and 30 s for UDP",
            "TCP options",
            "--connect-timeout",
            "--pipe-size",
            "UDP options",
            "--max-sessions",
            "--batch-size",
            "proxy tcp,udp 53 kube-dns.default 1",
        ],
    );
}

#[test]
fn udp_bad_arguments_exit_2_naming_the_token() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["udp", "53", "web", "5x"],
            &["invalid value '5x' for '[IDLE_TIMEOUT_SECONDS]'", "`x`"],
        ),
        (&["tcp,udp", "abc", "web"], &["'abc'", "<PORT>"]),
        (&["sctp", "53", "web"], &["unrecognized subcommand 'sctp'"]),
        (
            &["udp", "53", "web", "--batch-size", "0"],
            &["'0'", "--batch-size"],
        ),
        (
            &["udp", "53", "web", "--max-sessions", "-1"],
            &["'-1'", "--max-sessions"],
        ),
        (&["udp,tcp", "0", "web"], &["'web'", "PORT is 0"]),
    ];
    expect_usage_errors(&cases);
}

/// SIGTERM on `proxy udp`: no new datagrams are taken, but a reply already on its way
/// still reaches the client; the session ends once quiet, and the proxy exits 0.
#[test]
fn udp_sigterm_delivers_in_flight_replies_then_exits_0() {
    // The test is the upstream, so it decides when the reply leaves.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.set_read_timeout(Some(PROMPT)).unwrap();
    let target = upstream.local_addr().unwrap().to_string();
    let mut proxy = Proxy::start(&["udp", "0", &target, "--listen", "127.0.0.1"]);
    let addr = proxy.proto_listen_addr(Proto::Udp, &target);
    let client = udp_client(addr);

    client.send(b"question").unwrap();
    let mut buf = [0u8; 64];
    let (n, session) = upstream
        .recv_from(&mut buf)
        .expect("the datagram reached upstream");
    assert_eq!(&buf[..n], b"question");

    proxy.signal("TERM");
    expect_sigterm_drain(&proxy, "sessions=1");
    upstream.send_to(b"answer", session).unwrap();
    let n = client
        .recv(&mut buf)
        .expect("the in-flight reply during the drain");
    assert_eq!(&buf[..n], b"answer");

    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("all sessions finished"),
        "{}",
        proxy.stderr()
    );
}

/// Set in the environment of [`netns_child_tcp_udp_port_search`] when it runs in a
/// network namespace of its own.
const NETNS_CHILD_ENV: &str = "PROXY_CLI_TEST_NETNS_CHILD";
const NETNS_CHILD_TEST: &str = "netns_child_tcp_udp_port_search";

/// `proxy tcp,udp 0` when the UDP side of the port TCP got is taken: it tries another
/// port, and gives up with exit code 1 when there is none. Runs
/// [`netns_child_tcp_udp_port_search`] in a network namespace of its own (where it can
/// shrink the ephemeral port range) with `unshare --net`; needs root or CAP_SYS_ADMIN,
/// util-linux and iproute2, and fails, never skips, without them.
#[cfg(target_os = "linux")]
#[test]
fn tcp_udp_port_0_tries_another_port_when_udp_is_taken() {
    proxy_testkit::net::run_in_namespace(NETNS_CHILD_ENV, NETNS_CHILD_TEST);
}

/// Runs only inside the namespace of [`tcp_udp_port_0_tries_another_port_when_udp_is_taken`]:
/// the kernel has two ephemeral ports, 40000 and 40001.
#[cfg(target_os = "linux")]
#[test]
fn netns_child_tcp_udp_port_search() {
    if !proxy_testkit::net::in_namespace(NETNS_CHILD_ENV) {
        return;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001")
        .expect("set the namespace's ephemeral port range");
    let target = "127.0.0.1:9";
    let args = ["tcp,udp", "0", target, "--listen", "127.0.0.1"];
    let passed_over = |l: &str| l.contains(" WARN ") && l.contains("trying another port");

    // The port the kernel hands out first (Linux prefers one parity for bind(0)); a
    // listener without connections leaves nothing behind when closed.
    let first = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let second = if first == 40000 { 40001 } else { 40000 };

    // UDP is taken on that port: TCP gets it, UDP fails there, and TCP, still holding the
    // first port, gets the second, where both protocols then listen.
    let udp_first = UdpSocket::bind(("127.0.0.1", first)).unwrap();
    let proxy = Proxy::start(&args);
    let udp = proxy.proto_listen_addr(Proto::Udp, target);
    assert_eq!(udp.port(), second, "{}", proxy.stderr());
    let tcp = proxy
        .try_proto_listen_addrs(Proto::Tcp, 2, target)
        .expect("two TCP lines");
    assert_eq!(
        tcp.iter().map(SocketAddr::port).collect::<Vec<_>>(),
        [first, second],
        "{}",
        proxy.stderr()
    );
    assert_eq!(proxy.count_lines(passed_over), 1, "{}", proxy.stderr());
    // The TCP forwarder passed over lets go of the first port (bounded poll).
    let deadline = Instant::now() + PROMPT;
    while TcpListener::bind(("127.0.0.1", first)).is_err() {
        assert!(Instant::now() < deadline, "TCP port {first} still bound");
        thread::sleep(Duration::from_millis(10));
    }
    drop(proxy);

    // Both ports are taken for UDP: TCP passes over both, then finds no port; exit 1.
    let udp_second = UdpSocket::bind(("127.0.0.1", second)).unwrap();
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| passed_over(l)).count(),
        2,
        "{stderr}"
    );
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.starts_with("error: TCP: failed to bind listen address (127.0.0.1:0)")
            && error.contains("Address already in use"),
        "{error}"
    );
    drop((udp_first, udp_second));

    // The search is bounded: with 12 ports, every one taken for UDP, it passes over 9
    // and gives up on the 10th with UDP's error, holding no port afterwards.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40011")
        .expect("widen the namespace's ephemeral port range");
    let taken: Vec<UdpSocket> = (40000..=40011)
        .map(|port| UdpSocket::bind(("127.0.0.1", port)).unwrap())
        .collect();
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| passed_over(l)).count(),
        9,
        "{stderr}"
    );
    assert!(stderr.contains("(attempt 10 of 10)"), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.starts_with("error: UDP: failed to bind listen address (127.0.0.1:4")
            && error.contains("Address already in use"),
        "{error}"
    );
    for port in 40000..=40011 {
        TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("TCP port {port} still held after the exit: {e}"));
    }
    drop(taken);
}
