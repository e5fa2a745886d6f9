//! End-to-end tests of `proxy forward`: the real binary, real sockets, loopback only.
//!
//! Rules as in `cli.rs`: ports come from the kernel (SPECs with a kernel-chosen local
//! port, or a port the test just bound and released); nothing waits by sleeping, only on
//! output lines, connections, datagrams and exits, each with a deadline; every child is
//! killed when its guard drops.

mod support;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proxy_testkit::blocking::{Echo, UdpEcho};
use proxy_testkit::process::TempPath;
use support::http::admin_addr;
use support::proxy::{PROMPT, Proxy, run};

// ===== helpers =====

fn has_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Sends `msg` through `addr`, half-closes, and returns everything that comes back.
fn roundtrip(addr: SocketAddr, msg: &str) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, PROMPT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.set_read_timeout(Some(PROMPT)).unwrap();
    conn.write_all(msg.as_bytes()).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    conn.read_to_string(&mut back)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    back
}

/// Sends a datagram to `addr` from a new socket and returns the reply; resends a few
/// times, in case one is lost.
fn udp_roundtrip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let local: SocketAddr = if addr.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    for _ in 0..5 {
        socket.send_to(msg, addr).unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, addr, "the reply comes from the address asked");
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP reply from {addr}");
}

/// The listen address and the rest (`5000`, `53/udp`) of a "Forwarding from" line.
fn parse_line(line: &str) -> (SocketAddr, &str) {
    let rest = line
        .strip_prefix("Forwarding from ")
        .unwrap_or_else(|| panic!("not a Forwarding line: {line:?}"));
    let (addr, remote) = rest.split_once(" -> ").expect("an arrow");
    (addr.parse().expect("a socket address"), remote)
}

/// `n` listeners on consecutive ports of `ip`, the first one's port chosen by the kernel
/// (bounded search).
fn consecutive_listeners(ip: &str, n: u16) -> Vec<TcpListener> {
    for _ in 0..100 {
        let first = TcpListener::bind((ip, 0)).unwrap();
        let base = first.local_addr().unwrap().port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Result<Vec<_>, _> = (1..n).map(|i| TcpListener::bind((ip, base + i))).collect();
        if let Ok(rest) = rest {
            let mut all = vec![first];
            all.extend(rest);
            return all;
        }
    }
    panic!("no {n} consecutive free ports on {ip}");
}

/// The first of `n` consecutive ports that were free on `ip` a moment ago.
fn free_ports(ip: &str, n: u16) -> u16 {
    consecutive_listeners(ip, n)[0].local_addr().unwrap().port()
}

/// `n` listeners on consecutive ports of `ip` below the kernel's ephemeral range, so a
/// port released to the proxy cannot be taken meanwhile by a socket another test binds
/// to port 0 or connects from (bounded search from a start of this process's own).
fn quiet_listeners(ip: &str, n: u16) -> Vec<TcpListener> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, span) = (10_000u16, ephemeral.saturating_sub(10_000 + n).max(1));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = (std::process::id() ^ nanos) as u16;
    for attempt in 0..500u16 {
        let base = low + seed.wrapping_add(attempt.wrapping_mul(7_919)) % span;
        let all: Result<Vec<_>, _> = (0..n).map(|i| TcpListener::bind((ip, base + i))).collect();
        if let Ok(all) = all {
            return all;
        }
    }
    panic!("no {n} consecutive free ports below {ephemeral} on {ip}");
}

fn start(args: &[&str]) -> Proxy {
    let mut all = vec!["forward"];
    all.extend_from_slice(args);
    Proxy::start(&all)
}

// ===== output and ports =====

/// `0:P` on the default addresses: one line per family, kubectl's, with the same
/// kernel-chosen port on 127.0.0.1 and ::1, and both forward.
#[test]
fn kernel_chosen_port_is_the_same_on_both_families() {
    let echo = Echo::start("127.0.0.1");
    let p = echo.port();
    let six = has_ipv6();
    for spec in [format!("0:{p}"), format!(":{p}")] {
        let proxy = start(&["127.0.0.1", &spec]);
        let lines = proxy.stdout_lines(if six { 2 } else { 1 });
        let (v4, _) = parse_line(&lines[0]);
        let port = v4.port();
        assert_ne!(port, 0);
        assert_eq!(lines[0], format!("Forwarding from 127.0.0.1:{port} -> {p}"));
        if six {
            assert_eq!(lines[1], format!("Forwarding from [::1]:{port} -> {p}"));
        } else {
            eprintln!("no IPv6 loopback: checked 127.0.0.1 only");
        }
        for line in &lines {
            let (addr, _) = parse_line(line);
            assert_eq!(roundtrip(addr, "hello"), "hello", "via {addr}");
        }
        assert_eq!(proxy.stdout(), lines.join("\n"), "nothing else on stdout");
    }
}

/// `--address 127.0.0.1` with the three single-port forms: lines in SPEC order, each
/// reaching its own upstream.
#[test]
fn several_specs_on_one_address() {
    // On 127.0.0.2, so `P` (the same port both sides) can listen on 127.0.0.1:P.
    let servers: Vec<Echo> = (0..3)
        .map(|i| Echo::serve_greeting(TcpListener::bind("127.0.0.2:0").unwrap(), &format!("e{i} ")))
        .collect();
    let [e0, e1, e2] = [0, 1, 2].map(|i| servers[i].port());
    let q = free_ports("127.0.0.1", 1);
    let specs = [format!(":{e0}"), format!("{q}:{e1}"), format!("{e2}/tcp")];
    let proxy = start(&[
        "--address",
        "127.0.0.1",
        "127.0.0.2",
        &specs[0],
        &specs[1],
        &specs[2],
    ]);
    let lines = proxy.stdout_lines(3);
    let (first, _) = parse_line(&lines[0]);
    assert_eq!(
        lines,
        [
            format!("Forwarding from 127.0.0.1:{} -> {e0}", first.port()),
            format!("Forwarding from 127.0.0.1:{q} -> {e1}"),
            format!("Forwarding from 127.0.0.1:{e2} -> {e2}"),
        ]
    );
    for (i, line) in lines.iter().enumerate() {
        let (addr, _) = parse_line(line);
        assert_eq!(roundtrip(addr, "hi"), format!("e{i} hi"), "via {addr}");
    }
}

/// `L-L+2:R-R+2` relays each local port to its own remote port; `R-R+2` alone keeps the
/// numbers.
#[test]
fn port_range_relays_to_each_port() {
    // Below the ephemeral range: the second SPEC listens on these numbers on 127.0.0.1,
    // and the first on ports released just before.
    let listeners = quiet_listeners("127.0.0.2", 3);
    let r = listeners[0].local_addr().unwrap().port();
    let _servers: Vec<Echo> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| Echo::serve_greeting(l, &format!("r{i} ")))
        .collect();
    let l = quiet_listeners("127.0.0.1", 3)[0]
        .local_addr()
        .unwrap()
        .port();
    let ranges = [
        (format!("{l}-{}:{r}-{}", l + 2, r + 2), l),
        (format!("{r}-{}", r + 2), r),
    ];
    for (spec, local) in ranges {
        let proxy = start(&["--address", "127.0.0.1", "127.0.0.2", &spec]);
        let lines = proxy.stdout_lines(3);
        for i in 0..3u16 {
            assert_eq!(
                lines[usize::from(i)],
                format!("Forwarding from 127.0.0.1:{} -> {}", local + i, r + i),
                "{spec}"
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], local + i));
            assert_eq!(roundtrip(addr, "x"), format!("r{i} x"), "{spec} via {addr}");
        }
    }
}

/// `:P/udp` relays datagrams; its line ends in `/udp`. A TCP spec for the same port
/// number beside it is no conflict.
#[test]
fn udp_spec_relays_datagrams() {
    let udp = UdpEcho::start("127.0.0.1");
    let tcp = Echo::start("127.0.0.1");
    let u = udp.port();
    let six = has_ipv6();
    let proxy = start(&[
        "127.0.0.1",
        &format!(":{u}/udp"),
        &format!(":{}", tcp.port()),
    ]);
    let per_spec = if six { 2 } else { 1 };
    let lines = proxy.stdout_lines(2 * per_spec);
    let (first, _) = parse_line(&lines[0]);
    assert_eq!(
        lines[0],
        format!("Forwarding from 127.0.0.1:{} -> {u}/udp", first.port())
    );
    if six {
        assert_eq!(
            lines[1],
            format!("Forwarding from [::1]:{} -> {u}/udp", first.port())
        );
    }
    for line in &lines[..per_spec] {
        let (addr, _) = parse_line(line);
        for size in [0, 1, 1200, 65_000] {
            let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            assert_eq!(udp_roundtrip(addr, &msg), msg, "{size} bytes via {addr}");
        }
    }
    let (tcp_addr, remote) = parse_line(&lines[per_spec]);
    assert_eq!(remote, tcp.port().to_string());
    assert_eq!(roundtrip(tcp_addr, "tcp too"), "tcp too");
}

/// `--ports-file`: JSON with one object per bound socket, in stdout's order, written
/// before the lines; the ports it lists forward; removed after SIGTERM, which exits 0.
#[test]
fn ports_file_lists_the_bound_ports() {
    let tcp = Echo::start("127.0.0.1");
    let udp = UdpEcho::start("127.0.0.1");
    let file = TempPath::new("ports.json");
    let path = file.path().to_str().unwrap().to_owned();
    let specs = [format!(":{}", tcp.port()), format!("0:{}/udp", udp.port())];
    let per_spec = if has_ipv6() { 2 } else { 1 };
    let mut proxy = start(&["--ports-file", &path, "127.0.0.1", &specs[0], &specs[1]]);
    let lines = proxy.stdout_lines(2 * per_spec);

    let text =
        std::fs::read_to_string(&path).expect("the ports file exists once stdout has the lines");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["version"], 1, "{text}");
    assert_eq!(json["target"], "127.0.0.1", "{text}");
    let forwards = json["forwards"].as_array().expect("a forwards array");
    assert_eq!(forwards.len(), lines.len(), "{text}");
    for (entry, line) in forwards.iter().zip(&lines) {
        let (addr, remote) = parse_line(line);
        let ip: IpAddr = entry["address"].as_str().unwrap().parse().unwrap();
        let port = u16::try_from(entry["local_port"].as_u64().unwrap()).unwrap();
        let listen = SocketAddr::new(ip, port);
        assert_eq!(listen, addr, "{text}");
        let remote_port = entry["remote_port"].as_u64().unwrap();
        match entry["protocol"].as_str().unwrap() {
            "tcp" => {
                assert_eq!(remote, remote_port.to_string());
                assert_eq!(entry["spec"], specs[0].as_str());
                assert_eq!(roundtrip(listen, "from the file"), "from the file");
            }
            "udp" => {
                assert_eq!(remote, format!("{remote_port}/udp"));
                assert_eq!(entry["spec"], specs[1].as_str());
                assert_eq!(udp_roundtrip(listen, b"dgram"), b"dgram");
            }
            other => panic!("protocol {other:?} in {text}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(file.path().parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("ports.json."))
            .count(),
        0,
        "no temporary file left beside it"
    );

    proxy.signal("TERM");
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(!file.path().exists(), "the ports file is removed at exit");
}

/// `--ports-file` never writes through a symlink planted at the temporary name the file
/// is written under first (`.NAME.PID.tmp` in the same directory, which anyone who can
/// write there could guess): the symlink's target stays as it was, and the ports file is
/// a regular file of its own.
#[cfg(unix)]
#[test]
fn ports_file_does_not_follow_a_planted_symlink() {
    let tcp = Echo::start("127.0.0.1");
    let dir = TempPath::new("ports-dir");
    std::fs::create_dir(dir.path()).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let file = dir.path().join("ports.json");
    let path = file.to_str().unwrap().to_owned();
    let spec = format!(":{}", tcp.port());
    let proxy = start(&["--ports-file", &path, "127.0.0.1", &spec]);
    // Planted right after the start, before proxy has bound anything or written the file.
    let planted = dir.path().join(format!(".ports.json.{}.tmp", proxy.pid()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    proxy.stdout_lines(1);

    let after = std::fs::read_to_string(&victim).unwrap();
    let meta = std::fs::symlink_metadata(&file).expect("the ports file exists");
    let text = std::fs::read_to_string(&file).unwrap();
    // The mode any file created here gets (0644 under the usual umask).
    let usual = dir.path().join("usual");
    std::fs::write(&usual, "").unwrap();
    let usual = std::fs::metadata(&usual).unwrap();
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir.path());
    assert_eq!(after, "precious\n", "the symlink's target was overwritten");
    assert!(meta.file_type().is_file(), "{meta:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode(), usual.permissions().mode());
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["forwards"][0]["protocol"], "tcp", "{text}");
}

// ===== -- CMD =====

/// `-- CMD` exits with CMD's status: its code, 128+N for a signal, 127 when not found.
#[test]
fn command_exit_status_is_proxys() {
    let cases: [(&[&str], i32); 4] = [
        (&["sh", "-c", "exit 7"], 7),
        (&["sh", "-c", "exit 0"], 0),
        (&["sh", "-c", "kill -KILL $$"], 128 + 9),
        (&["/nonexistent/proxy-forward-test-command"], 127),
    ];
    for (command, want) in cases {
        let mut args = vec!["forward", "--address", "127.0.0.1", "127.0.0.1", ":9", "--"];
        args.extend_from_slice(command);
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, want, "{command:?}\n{stderr}");
        let (_, remote) = parse_line(stdout.lines().next().expect("a Forwarding line"));
        assert_eq!(remote, "9");
        if want == 127 {
            assert!(stderr.contains("cannot run"), "{stderr}");
        } else {
            assert!(
                !stderr.contains("error:"),
                "CMD's status is no error of proxy's: {stderr}"
            );
        }
    }
}

/// CMD runs once the ports are bound, learns them from PROXY_FORWARD_PORT(S), connects
/// through the forward, and its output follows the Forwarding lines on stdout.
#[test]
fn command_connects_through_the_forward() {
    let tcp = Echo::start("127.0.0.1");
    let udp = UdpEcho::start("127.0.0.1");
    let script = r#"exec 3<>"/dev/tcp/127.0.0.1/$PROXY_FORWARD_PORT" || exit 10
printf 'ping\n' >&3
IFS= read -r line <&3
echo "reply=$line ports=$PROXY_FORWARD_PORTS"
[ "$line" = ping ]"#;
    let (code, stdout, stderr) = run(&[
        "forward",
        "--address",
        "127.0.0.1",
        "127.0.0.1",
        &format!(":{}", tcp.port()),
        &format!(":{}/udp", udp.port()),
        "--",
        "bash",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let (t, _) = parse_line(lines[0]);
    let (u, _) = parse_line(lines[1]);
    assert_eq!(
        lines[2],
        format!(
            "reply=ping ports={}:{} {}:{}/udp",
            t.port(),
            tcp.port(),
            u.port(),
            udp.port()
        )
    );
}

/// SIGTERM, and SIGINT that did not come from a terminal, reach CMD; proxy exits when CMD
/// does, with its status.
#[test]
fn signals_are_passed_on_to_the_command() {
    for (signal, code) in [("TERM", 5), ("INT", 6)] {
        let script = format!(
            "trap 'kill $! 2>/dev/null; exit {code}' {signal}; sleep 60 >/dev/null 2>&1 & echo ready; wait"
        );
        let mut proxy = start(&[
            "--address",
            "127.0.0.1",
            "127.0.0.1",
            ":9",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        let lines = proxy.stdout_lines(2);
        assert_eq!(lines[1], "ready");
        proxy.signal(signal);
        let status = proxy.wait_exit(PROMPT);
        assert_eq!(status.code(), Some(code), "SIG{signal}: {}", proxy.stderr());
    }
}

/// Without CMD, SIGINT drains and exits 0.
#[test]
fn sigint_without_command_exits_0() {
    let mut proxy = start(&["--address", "127.0.0.1", "127.0.0.1", ":9"]);
    proxy.stdout_lines(1);
    proxy.signal("INT");
    let status = proxy.wait_exit(PROMPT);
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
}

// ===== errors =====

/// Bad SPECs, TARGETs and addresses exit 2 with a message naming the token.
#[test]
fn bad_arguments_exit_2_naming_the_token() {
    let cases: &[(&[&str], &str)] = &[
        (&["db", "8080:0"], "'8080:0'"),
        (&["db", "0"], "'0'"),
        (&["db", "9010-9000"], "'9010-9000'"),
        (&["db", "8000-8002:9000-9003"], "'8000-8002:9000-9003'"),
        (&["db", "0-2:9000-9002"], "'0-2:9000-9002'"),
        (&["db", "65536"], "'65536'"),
        (&["db", "80:70000"], "'80:70000'"),
        (&["db", "http"], "'http'"),
        (&["db", "80/sctp"], "'80/sctp'"),
        (&["db", "80:"], "'80:'"),
        (&["db", "1:2:3"], "'1:2:3'"),
        (&["db:5432", "5432"], "'db:5432'"),
        (&["db", "80", "--address", "localhost,nowhere"], "'nowhere'"),
        (&["db", "8080:80", "8080:81"], "'8080:80' and '8080:81'"),
        (
            &["db", "8000-8010:9000-9010", "8005:80"],
            "'8000-8010:9000-9010' and '8005:80'",
        ),
        (&["db", "80", "--listen", "127.0.0.1"], "--listen 127.0.0.1"),
    ];
    for (args, token) in cases {
        let mut all = vec!["forward"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(token), "{args:?}: {stderr} lacks {token}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    // The same local port for TCP and UDP is fine: checked by parsing alone (no binding).
    let (code, _, stderr) = run(&["forward", "db", "53/udp", "53", "--drain", "bad"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("'bad'"), "{stderr}");
}

/// A local port that is taken: exit 1 naming the address and the SPEC; nothing printed.
#[test]
fn taken_port_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, stdout, stderr) = run(&[
        "forward",
        "--address",
        "127.0.0.1",
        "127.0.0.1",
        ":9",
        &format!("{port}:9"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("SPEC '{port}:9'"))
            && stderr.contains(&format!("127.0.0.1:{port}")),
        "{stderr}"
    );
}

// ===== robustness =====

/// Unlike kubectl, a connection the upstream resets, or one to an upstream that is down,
/// does not end the forward: the next connections work.
#[test]
fn reset_connections_do_not_end_the_forward() {
    // Connections 0 and 2 are reset, the others echo.
    let upstream = Echo::serve_with(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        String::new(),
        |n| n == 0 || n == 2,
    );
    let down = free_ports("127.0.0.1", 1);
    let mut proxy = start(&[
        "--address",
        "127.0.0.1",
        "127.0.0.1",
        &format!(":{}", upstream.port()),
        &format!(":{down}"),
    ]);
    let lines = proxy.stdout_lines(2);
    let (addr, _) = parse_line(&lines[0]);
    let (down_addr, _) = parse_line(&lines[1]);

    let resets = Arc::new(AtomicUsize::new(0));
    let reset_once = |addr: SocketAddr| {
        let mut conn = TcpStream::connect_timeout(&addr, PROMPT).unwrap();
        conn.set_read_timeout(Some(PROMPT)).unwrap();
        // The proxy may close first (the upstream that is down): then writing fails.
        let _ = conn.write_all(b"doomed");
        match conn.read(&mut [0u8; 64]) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                resets.fetch_add(1, Ordering::SeqCst);
            }
            other => panic!("expected a reset or an end, got {other:?}"),
        }
    };
    reset_once(addr); // connection 0
    assert_eq!(roundtrip(addr, "one"), "one"); // 1
    reset_once(addr); // 2
    reset_once(down_addr); // nothing listens upstream
    assert_eq!(roundtrip(addr, "three"), "three"); // 3
    assert!(
        resets.load(Ordering::SeqCst) >= 1,
        "no connection was reset"
    );
    assert!(proxy.running(), "{}", proxy.stderr());
    // The forward to the port that was down works once something listens there.
    let Ok(listener) = TcpListener::bind(("127.0.0.1", down)) else {
        return; // taken by someone else meanwhile
    };
    let _late = Echo::serve(listener);
    assert_eq!(roundtrip(down_addr, "late"), "late");
}

// ===== --admin =====

/// `GET path` from the admin server: the status code and the body (the server closes).
fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = support::http::get(admin, path);
    (r.status, r.body)
}

/// With --admin, every bound socket is a forward of its own in /metrics, named by
/// protocol and address, and /readyz answers 200 once the lines are out.
#[test]
fn admin_lists_each_bound_socket() {
    let echo = Echo::start("127.0.0.1");
    let udp = UdpEcho::start("127.0.0.1");
    let proxy = start(&[
        "--admin",
        "127.0.0.1:0",
        "--address",
        "127.0.0.1",
        "127.0.0.1",
        &format!(":{}", echo.port()),
        &format!(":{}/udp", udp.port()),
    ]);
    let admin = admin_addr(&proxy);
    let lines = proxy.stdout_lines(2);
    let (tcp, _) = parse_line(&lines[0]);
    let (dgram, _) = parse_line(&lines[1]);
    assert_eq!(http_get(admin, "/readyz").0, 200);
    assert_eq!(roundtrip(tcp, "counted"), "counted");
    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let tcp_name = format!(
        "forward=\"tcp:{tcp}\",protocol=\"tcp\",target=\"127.0.0.1:{}\"",
        echo.port()
    );
    let udp_name = format!(
        "forward=\"udp:{dgram}\",protocol=\"udp\",target=\"127.0.0.1:{}\"",
        udp.port()
    );
    assert!(
        metrics.contains(&format!("proxy_connections_total{{{tcp_name}}} 1")),
        "{tcp_name} in\n{metrics}"
    );
    assert!(metrics.contains(&udp_name), "{udp_name} in\n{metrics}");
}

// ===== in a network namespace: the port search, and a host without IPv6 =====

/// Set in the environment of [`netns_child_forward`] when it runs in a network namespace
/// of its own.
const NETNS_CHILD_ENV: &str = "PROXY_FORWARD_TEST_NETNS_CHILD";
const NETNS_CHILD_TEST: &str = "netns_child_forward";

/// A kernel-chosen port taken on ::1 makes `proxy forward` try another one, up to a
/// bound; without IPv6, `localhost` is 127.0.0.1 alone, quietly. Runs
/// [`netns_child_forward`] in a network namespace of its own (where it can shrink the
/// ephemeral port range and turn IPv6 off) with `unshare --net`; needs root or
/// CAP_SYS_ADMIN, util-linux and iproute2, and fails, never skips, without them.
#[cfg(target_os = "linux")]
#[test]
fn port_search_and_no_ipv6_in_a_namespace() {
    proxy_testkit::net::run_in_namespace(NETNS_CHILD_ENV, NETNS_CHILD_TEST);
}

/// Runs only inside the namespace of [`port_search_and_no_ipv6_in_a_namespace`].
#[cfg(target_os = "linux")]
#[test]
fn netns_child_forward() {
    if !proxy_testkit::net::in_namespace(NETNS_CHILD_ENV) {
        return;
    }
    assert!(has_ipv6(), "the namespace's loopback has ::1");
    // Two ephemeral ports. The port the kernel hands out first for bind(0) (Linux prefers
    // one parity); a listener without connections leaves nothing behind when closed.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001")
        .expect("set the namespace's ephemeral port range");
    let first = free_ports("127.0.0.1", 1);
    let second = if first == 40000 { 40001 } else { 40000 };
    let passed_over = |l: &str| l.contains(" WARN ") && l.contains("trying another port");

    // The first port is taken on ::1: the 127.0.0.1 forward on it is passed over, and
    // both addresses get the second.
    let v6_first = TcpListener::bind(("::1", first)).unwrap();
    let mut proxy = start(&["127.0.0.1", ":9"]);
    let lines = proxy.stdout_lines(2);
    assert_eq!(
        lines,
        [
            format!("Forwarding from 127.0.0.1:{second} -> 9"),
            format!("Forwarding from [::1]:{second} -> 9"),
        ],
        "{}",
        proxy.stderr()
    );
    // Logged before the stdout lines, but stderr is read by another thread: wait for it.
    let once = proxy.wait_stderr(PROMPT, |lines| {
        (lines.iter().filter(|l| passed_over(l)).count() == 1).then_some(())
    });
    assert!(once.is_some(), "{}", proxy.stderr());
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));

    // The second port is taken on 127.0.0.1 too: after passing over the first, there is
    // none left; exit 1.
    let v4_second = TcpListener::bind(("127.0.0.1", second)).unwrap();
    let (code, stdout, stderr) = run(&["forward", "127.0.0.1", ":9"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.lines().filter(|l| passed_over(l)).count(),
        1,
        "{stderr}"
    );
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.contains("SPEC ':9'") && error.contains("Address already in use"),
        "{error}"
    );
    drop((v6_first, v4_second));
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "32768 60999").unwrap();

    // No IPv6: `localhost` is 127.0.0.1 alone, without a warning; ::1 named on its own
    // must be bound, so that fails.
    std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1").expect("turn IPv6 off");
    assert!(!has_ipv6());
    let echo = Echo::start("127.0.0.1");
    let p = echo.port();
    let mut proxy = start(&["127.0.0.1", &format!(":{p}"), &format!(":{p}/udp")]);
    let lines = proxy.stdout_lines(2);
    let (tcp, _) = parse_line(&lines[0]);
    let (udp, _) = parse_line(&lines[1]);
    assert_eq!(
        lines[0],
        format!("Forwarding from 127.0.0.1:{} -> {p}", tcp.port())
    );
    assert_eq!(
        lines[1],
        format!("Forwarding from 127.0.0.1:{} -> {p}/udp", udp.port())
    );
    assert_eq!(roundtrip(tcp, "v4 only"), "v4 only");
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(PROMPT).code(), Some(0));
    assert_eq!(proxy.stdout(), lines.join("\n"));
    let stderr = proxy.stderr();
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains(" WARN ") || l.contains(" ERROR ")),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["forward", "--address", "localhost,::1", "127.0.0.1", ":9"]);
    assert_eq!(code, 1, "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(error.contains("[::1]:"), "{error}");
}
