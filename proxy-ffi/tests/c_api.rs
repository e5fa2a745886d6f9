//! Compiles the C tests in `tests/c/` and the example in `examples/` against the static
//! library and `include/proxy.h` with `-Wall -Wextra -Wpedantic -Werror`, and runs them;
//! each must exit 0. Every C test runs twice: as built, and with AddressSanitizer,
//! LeakSanitizer and UBSan. The start/stop loop also runs under valgrind's memcheck.
//!
//! `cargo test` builds `libproxy_ffi.a` into `target/<profile>/deps/` before running this.
//! `CC` picks the C compiler (default `cc`).
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use proxy_testkit::dns::{Dnsmasq, DnsmasqConfig};

/// AddressSanitizer (with LeakSanitizer) and UBSan on the C side; the Rust side's heap
/// goes through the same interposed `malloc`, so leaks and overflows of either show.
const SANITIZERS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

/// The static library this test run was built with.
///
/// `cargo test` writes it as `target/<profile>/deps/libproxy_ffi.a`, next to this test's
/// binary; `cargo build` writes `target/<profile>/libproxy_ffi.a`. Whichever is newer is
/// the current source's (cargo rebuilds the former before running this test).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe
        .parent()
        .expect("the test binary sits in target/<profile>/deps");
    let candidates = [
        deps.join("libproxy_ffi.a"),
        deps.parent().unwrap().join("libproxy_ffi.a"),
    ];
    candidates
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no libproxy_ffi.a in {} or its parent", deps.display()))
}

/// Compiles `source` (relative to the crate) once per test run, with `sanitized` or
/// not, and returns the executable's path.
fn compile(source: &str, sanitized: bool) -> PathBuf {
    type Slot = Arc<OnceLock<PathBuf>>;
    static BUILT: Mutex<BTreeMap<(String, bool), Slot>> = Mutex::new(BTreeMap::new());
    let slot = BUILT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((source.to_owned(), sanitized))
        .or_default()
        .clone();
    slot.get_or_init(|| compile_now(source, sanitized)).clone()
}

fn compile_now(source: &str, sanitized: bool) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = static_lib();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    let dir = Path::new(source).parent().unwrap().to_string_lossy();
    let suffix = if sanitized { "-sanitized" } else { "" };
    let exe = out_dir.join(format!("{}-{stem}{suffix}", dir.replace('/', "-")));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .args(["-g", "-O1"])
        .args(if sanitized { SANITIZERS } else { &[] })
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-I")
        .arg(crate_dir.join("tests/c"))
        .arg(crate_dir.join(source))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe);
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    check(&format!("compiling {source}"), &out);
    eprintln!("compiled {source}{suffix} in {:.1?}", started.elapsed());
    exe
}

/// Asserts that the process exited 0, showing its output when it did not.
fn check(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprint!("{stdout}");
    stdout
}

/// Runs `exe` with `args`, which must exit 0, and returns its standard output.
fn run(exe: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    let out = Command::new(exe).args(args).output().unwrap();
    let stdout = check(&exe.display().to_string(), &out);
    eprintln!("{} ran in {:.1?}", exe.display(), started.elapsed());
    stdout
}

/// Runs the C test `tests/c/<name>.c` as built and under the sanitizers.
fn run_c_test(name: &str, args: &[&str]) {
    let source = format!("tests/c/{name}.c");
    run(&compile(&source, false), args);
    run(&compile(&source, true), args);
}

/// TCP, UDP and both through started forwarders with content checks; stats (also per
/// upstream address), addresses, reload, graceful shutdown; two forwarders in one process.
#[test]
fn forward() {
    run_c_test("forward", &[]);
}

/// HTTP forwards: routing by host and path to two C upstreams that check
/// `X-Forwarded-For`, the per-route counters, reloads with changed routes (and refused
/// ones), invalid routes naming the key, graceful shutdown.
#[test]
fn http() {
    run_c_test("http", &[]);
}

/// The HTTP test under memcheck, as the start/stop loop: the forwarder's threads, pooled
/// upstream connections and route state are all freed.
#[test]
fn http_under_valgrind() {
    valgrind(&compile("tests/c/http.c", false), &[]);
}

/// TCP and UDP on one kernel-chosen port: the search when UDP's side is taken, its
/// bound, and no port held after a failed one. In a network namespace of its own.
#[test]
fn same_port() {
    for sanitized in [false, true] {
        let exe = compile("tests/c/same_port.c", sanitized);
        let started = Instant::now();
        let out = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\"",
            ])
            .arg(&exe)
            .env("PATH", path_with_sbin())
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare ({e}); install util-linux"));
        let stdout = check("same_port in a network namespace", &out);
        assert!(stdout.contains("same_port: ok"), "{stdout}");
        eprintln!("{} ran in {:.1?}", exe.display(), started.elapsed());
    }
}

/// `PATH` with the sbin directories, where `ip` lives.
fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

/// NULL for every pointer, bad addresses and targets, ports in use, small buffers, status
/// messages, the per-thread last error.
#[test]
fn errors() {
    run_c_test("errors", &[]);
}

/// Every key of the table through `proxy_config_set` and `proxy_config_get`, bad keys and
/// values, and forwarders configured by key only (deny, allow, max_connections, relay,
/// UDP, both on one port) checked with real sockets.
#[test]
fn keys() {
    run_c_test("keys", &[]);
}

/// The resolver callback, and the built-in resolvers.
#[test]
fn resolver() {
    run_c_test("resolver", &[]);
}

/// `proxy_version()` is the crate version and the git revision, as `proxy --version`
/// prints them.
#[test]
fn version() {
    let expected = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("PROXY_GIT_REVISION"),
        ")"
    );
    let stdout = run(&compile("tests/c/version.c", false), &[expected]);
    assert!(stdout.contains("version: ok"), "{stdout}");
    run(&compile("tests/c/version.c", true), &[expected]);
}

/// `srv:` targets with the default resolver choice, through hickory asking a real dnsmasq
/// named with `proxy_config_add_name_server`; its SRV records point at an echo server
/// here, so the C test checks content, stats and failures against real DNS.
#[test]
fn srv_targets() {
    let echo = echo_server();
    let dns = Dnsmasq::start(&DnsmasqConfig {
        hosts: None,
        local_domains: vec!["srv.test".to_owned()],
        args: vec![
            format!("--srv-host=_echo._tcp.srv.test,echo.srv.test,{echo},0,1"),
            format!("--srv-host=_echo._udp.srv.test,echo.srv.test,{echo},0,1"),
            "--host-record=echo.srv.test,127.0.0.1".to_owned(),
        ],
    });
    let stdout = run(
        &compile("tests/c/srv.c", false),
        &[&dns.addr().to_string(), &echo.to_string()],
    );
    assert!(stdout.contains("srv: ok"), "{stdout}");
    run(
        &compile("tests/c/srv.c", true),
        &[&dns.addr().to_string(), &echo.to_string()],
    );
}

/// Echoes TCP and UDP on one kernel-chosen port of 127.0.0.1, on threads that run until
/// the test process ends; returns the port.
fn echo_server() -> u16 {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut from = conn.try_clone().unwrap();
                    let mut to = conn;
                    let _ = std::io::copy(&mut from, &mut to);
                });
            }
        });
        std::thread::spawn(move || {
            let mut buf = vec![0; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        return port;
    }
    panic!("no port of 127.0.0.1 free for both TCP and UDP after 20 tries");
}

/// 200 starts and stops; no socket or thread left behind.
#[test]
fn lifecycle() {
    run_c_test("lifecycle", &["200"]);
}

/// The start/stop loop under memcheck: no invalid access, no use of uninitialised memory,
/// nothing definitely or possibly lost. (Still reachable at exit, and not counted: tokio's
/// process-wide signal state, made once by the first runtime.)
#[test]
fn lifecycle_under_valgrind() {
    valgrind(&compile("tests/c/lifecycle.c", false), &["200"]);
}

/// Runs `exe` with `args` under memcheck: no invalid access, no use of uninitialised
/// memory, nothing definitely or possibly lost.
fn valgrind(exe: &Path, args: &[&str]) {
    let started = Instant::now();
    let out = Command::new("valgrind")
        .args([
            "--quiet",
            "--error-exitcode=1",
            "--leak-check=full",
            "--show-leak-kinds=definite,possible",
            "--errors-for-leak-kinds=definite,possible",
        ])
        .arg(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run valgrind ({e}); install it (apt-get install valgrind)")
        });
    let what = format!("{} under valgrind", exe.display());
    check(&what, &out);
    eprintln!("{what} ran in {:.1?}", started.elapsed());
}

/// The example builds with the warnings as errors, starts both protocols and stops, and
/// starts an HTTP forward with a route and stops.
#[test]
fn example() {
    let exe = compile("examples/forward.c", false);
    let stdout = run(&exe, &["--both", "127.0.0.1:0", "127.0.0.1:9", "0"]);
    assert!(stdout.starts_with("Forwarding from 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("-> 127.0.0.1:9\n"), "{stdout}");
    assert!(stdout.contains("connections: 0"), "{stdout}");
    let stdout = run(
        &exe,
        &[
            "--http",
            "--route",
            "shop.example/=127.0.0.1:9",
            "127.0.0.1:0",
            "127.0.0.1:9",
            "0",
        ],
    );
    assert!(stdout.starts_with("Forwarding from 127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("route shop.example/=127.0.0.1:9: 0 requests"),
        "{stdout}"
    );
    assert!(stdout.contains("route -: 0 requests"), "{stdout}");
}
