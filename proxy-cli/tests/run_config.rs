//! `proxy run --config FILE` with the real binary: forwards from a TOML file, and SIGHUP
//! reloads that add, remove and change forwards while a long transfer stays up, and a bad
//! file that is rejected while the running configuration stays.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use proxy_testkit::blocking::{Echo, UdpEcho, connect, ping};
use proxy_testkit::process::TempPath;
use support::http::{admin_addr, get};
use support::proxy::{PROMPT, Proxy};

/// One request and its echo on a new connection through the proxy.
fn round_trip(addr: SocketAddr, data: &[u8]) {
    ping(&mut connect(addr), data);
}

fn forward(name: &str, protocol: &str, target: SocketAddr) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{target}\"\n"
    )
}

fn reload(proxy: &Proxy, reloads_before: usize) {
    proxy.signal("HUP");
    let deadline = Instant::now() + PROMPT;
    while proxy.count_lines(|l| l.contains("reloaded") || l.contains("reload rejected"))
        <= reloads_before
    {
        assert!(
            Instant::now() < deadline,
            "no reload line:\n{}",
            proxy.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sighup_adds_removes_and_changes_forwards_without_dropping_connections() {
    let [old, new, removed, added] = [(); 4].map(|()| Echo::start("127.0.0.1"));
    let file = TempPath::new("run-config.toml");
    file.write(&format!(
        "[defaults]\ndrain = \"5s\"\n{}{}",
        forward("a", "tcp", old.addr),
        forward("c", "tcp", removed.addr)
    ));
    let proxy = Proxy::start(&["run", "--config", file.path().to_str().unwrap()]);
    let a = proxy.listen_addr(&old.addr.to_string());
    let c = proxy.listen_addr(&removed.addr.to_string());
    round_trip(c, b"c works");

    // A long transfer through `a`, paced so it spans the reloads; checked byte-exact.
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut long = TcpStream::connect(a).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = long.try_clone().unwrap();
    let expected = data.clone();
    let read = thread::spawn(move || {
        let mut got = vec![0; expected.len()];
        reader.read_exact(&mut got).map(|()| got == expected)
    });
    let (pace_tx, pace_rx) = std::sync::mpsc::channel::<()>();
    let write = thread::spawn(move || {
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            long.write_all(chunk).unwrap();
            // Half the data before the reloads, the rest after them.
            if i == 3 {
                pace_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            }
        }
        long
    });

    // Change `a`'s target, remove `c`, add `b`.
    file.write(&format!(
        "[defaults]\ndrain = \"5s\"\n{}{}",
        forward("a", "tcp", new.addr),
        forward("b", "tcp", added.addr)
    ));
    reload(&proxy, 0);
    assert!(proxy.stderr().contains("reloaded"), "{}", proxy.stderr());
    let b = proxy.listen_addr(&added.addr.to_string());
    round_trip(b, b"b is new");
    round_trip(a, b"a follows its new target");
    assert_eq!(
        new.accepted(),
        1,
        "new connections on `a` use the new target"
    );
    assert_eq!(added.accepted(), 1);
    let deadline = Instant::now() + PROMPT;
    while TcpStream::connect_timeout(&c, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "`c` still accepts after its removal"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // A file with an error is rejected and changes nothing.
    file.write("[[forward]]\nname = \"a\"\nprotocol = \"tcp\"\nlisten = 80\ntarget = \"nope\"\n");
    reload(&proxy, 1);
    let rejected = proxy.expect_line("a rejected reload", |l| l.contains("reload rejected"));
    let path = file.path().display().to_string();
    assert!(
        rejected.contains(&format!("{path}:5: forward[0].target")),
        "{rejected}"
    );
    round_trip(a, b"a still runs");
    round_trip(b, b"b still runs");

    // The long transfer went on through all of it, to the old target.
    pace_tx.send(()).unwrap();
    let long = write.join().unwrap();
    assert!(
        read.join().unwrap().unwrap(),
        "the long transfer arrived intact"
    );
    assert_eq!(
        old.accepted(),
        1,
        "only the long transfer used the old target"
    );
    drop(long);
}

#[test]
fn a_bad_file_at_start_exits_2_naming_file_line_and_key() {
    let file = TempPath::new("bad.toml");
    file.write("[defaults]\nidle_timeout = \"5x\"\n");
    let (code, _, stderr) =
        support::proxy::run(&["run", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let want = format!(
        "{}:2: defaults.idle_timeout: `5x` is not a duration: unknown unit `x`",
        file.path().display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    let (code, _, stderr) = support::proxy::run(&["run", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/proxy.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn udp_and_tcp_forwards_from_one_file() {
    let echo = Echo::start("127.0.0.1");
    let udp_echo = UdpEcho::start("127.0.0.1");
    let udp_addr = udp_echo.addr;
    let file = TempPath::new("both.toml");
    file.write(&format!(
        "{}{}",
        forward("web", "tcp", echo.addr),
        forward("dns", "udp", udp_addr)
    ));
    let proxy = Proxy::start(&["run", "--config", file.path().to_str().unwrap()]);
    let web = proxy.listen_addr(&echo.addr.to_string());
    round_trip(web, b"tcp");
    let dns = proxy
        .wait_stderr(PROMPT, |lines| {
            lines
                .iter()
                .filter_map(|l| support::proxy::forwarding_line(l, &udp_addr.to_string()))
                .map(|(_, a)| a)
                .next()
        })
        .expect("the UDP forward's line");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0; 64];
    let got = (0..5).find_map(|_| {
        client.send_to(b"udp", dns).unwrap();
        client.recv(&mut buf).ok()
    });
    assert_eq!(got.map(|n| &buf[..n]), Some(&b"udp"[..]));
}

/// `threads` in the file sets the worker threads, unless `--threads` says otherwise.
#[test]
fn threads_from_the_file_unless_the_command_line_sets_them() {
    let echo = Echo::start("127.0.0.1");
    let file = TempPath::new("threads.toml");
    file.write(&format!(
        "threads = 2\n{}",
        forward("web", "tcp", echo.addr)
    ));
    let path = file.path().to_str().unwrap();
    for (args, workers) in [
        (vec!["run", "--config", path], 2),
        (vec!["--threads", "1", "run", "--config", path], 0),
    ] {
        let proxy = Proxy::start(&args);
        round_trip(proxy.listen_addr(&echo.addr.to_string()), b"threads");
        assert_eq!(proxy.settled_worker_threads(workers), workers, "{args:?}");
    }
}

/// A reload that renames a forward and keeps its address: the listener carries on under
/// the new name (the new one does not try to bind the address the old one holds, which
/// made the whole reload fail), a connection open through it stays up, new connections
/// are accepted, and `/metrics` lists the forward under its new name only.
#[test]
fn sighup_renames_a_forward_on_the_same_port() {
    let echo = Echo::start("127.0.0.1");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let named = |name: &str| {
        format!(
            "admin = \"127.0.0.1:0\"\n[[forward]]\nname = \"{name}\"\nprotocol = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\ntarget = \"{}\"\n",
            echo.addr
        )
    };
    let file = TempPath::new("rename.toml");
    file.write(&named("old-name"));
    let proxy = Proxy::start(&["run", "--config", file.path().to_str().unwrap()]);
    let addr = proxy.listen_addr(&echo.addr.to_string());
    assert_eq!(addr.port(), port);
    let admin = admin_addr(&proxy);
    let mut open = connect(addr);
    ping(&mut open, b"before the rename");

    file.write(&named("new-name"));
    reload(&proxy, 0);
    assert!(
        !proxy.stderr().contains("reload rejected"),
        "{}",
        proxy.stderr()
    );
    ping(&mut open, b"through the rename");
    round_trip(addr, b"a new connection");
    let metrics = get(admin, "/metrics").body;
    let series = |name: &str| format!("proxy_connections_total{{forward=\"{name}\",");
    assert!(
        metrics.contains(&format!(
            "{}protocol=\"tcp\",target=\"{}\"}} 2",
            series("new-name"),
            echo.addr
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&series("old-name")), "{metrics}");
    assert_eq!(echo.accepted(), 2);
}

/// A `tcp,udp` forward on port 0 serves both protocols on one port the kernel chose, at
/// start and when a reload adds one (each protocol used to get a port of its own).
#[test]
fn tcp_udp_forwards_on_port_0_get_one_port_for_both() {
    let first: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let second: SocketAddr = "127.0.0.2:9".parse().unwrap();
    let file = TempPath::new("run-config-both.toml");
    file.write(&forward("both", "tcp,udp", first));
    let proxy = Proxy::start(&["run", "--config", file.path().to_str().unwrap()]);
    let same_port = |target: SocketAddr| {
        let target = target.to_string();
        let tcp = proxy.proto_listen_addr(support::proxy::Proto::Tcp, &target);
        let udp = proxy.proto_listen_addr(support::proxy::Proto::Udp, &target);
        assert_eq!(tcp, udp, "{}", proxy.stderr());
        // Both are really bound there.
        assert!(TcpStream::connect(tcp).is_ok(), "TCP {tcp}");
        assert!(UdpSocket::bind(udp).is_err(), "UDP {udp} is not bound");
    };
    same_port(first);
    file.write(&format!(
        "{}{}",
        forward("both", "tcp,udp", first),
        forward("more", "tcp,udp", second)
    ));
    reload(&proxy, 0);
    assert!(
        proxy.count_lines(|l| l.contains("reload rejected")) == 0,
        "{}",
        proxy.stderr()
    );
    same_port(second);
}
