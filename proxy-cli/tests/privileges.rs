//! Port 53 as an unprivileged user: the real binary, run by `setpriv` as uid/gid 65534
//! (nobody) with CAP_NET_BIND_SERVICE as its only capability (ambient, as systemd's
//! `AmbientCapabilities=` and Kubernetes' `capabilities.add` give it; or as a file
//! capability, as `setcap` and deploy/Containerfile give it), serves real DNS queries
//! (dnsmasq behind it, dig in front) on 127.0.53.x:53 over UDP and TCP; without the
//! capability the same command exits 1 naming the address and the permission.
//! Likewise `--relay sockmap`: refused at start without CAP_BPF and CAP_NET_ADMIN,
//! naming the setting; started with exactly those two.
//!
//! Needs root (to change uid and capabilities) and `setpriv` (util-linux): without them
//! each test prints why and passes without checking anything. CI runs as root. Also needs
//! dnsmasq and dig, like tests/dns_e2e.rs (a missing one fails the test, naming the
//! package).
//!
//! The binary under target/ may sit in a directory nobody cannot enter, so each test runs
//! a copy in a temp directory of its own, both mode 0755. Each test takes its own range of
//! 127.0.53.x addresses and the first one whose port 53 is free for TCP and UDP, so tests
//! running at the same time never share one.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proxy_testkit::dns::{Dnsmasq, DnsmasqConfig, dnsmasq_program};
use proxy_testkit::process::find_program;
use support::dig::{dig, dig_program};
use support::proxy::{PROMPT, PROXY, Proto, Proxy};

/// The unprivileged user and group (nobody, nogroup).
const NOBODY: &str = "65534";

/// CAP_NET_BIND_SERVICE (10) alone, as `/proc/PID/status` shows capability sets.
const NET_BIND_SERVICE_ONLY: &str = "0000000000000400";
const NO_CAPABILITIES: &str = "0000000000000000";

/// The address dnsmasq gives `web.test`.
const WEB_IP: &str = "192.0.2.10";

/// `setpriv`'s path, or `None` (with the reason printed) when `test` cannot run here.
fn setpriv_or_skip(test: &str) -> Option<PathBuf> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping {test}: not running as root, so cannot change uid or capabilities");
        return None;
    }
    let Some(setpriv) = find_program("setpriv", &["/usr/bin/setpriv", "/bin/setpriv"]) else {
        eprintln!("skipping {test}: setpriv (util-linux) is not installed");
        return None;
    };
    Some(setpriv)
}

/// A copy of the `proxy` binary that nobody can run: `DIR/proxy`, both mode 0755, in a
/// temp directory removed on drop.
struct Installed {
    dir: PathBuf,
    bin: PathBuf,
}

impl Installed {
    fn new(test: &str) -> Installed {
        let dir = std::env::temp_dir().join(format!("proxy-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("proxy");
        // Copied by `install`, not by this process: a process forked by another test while
        // this one had the copy open for writing would keep it open until it execs, and
        // running the copy meanwhile fails with ETXTBSY ("Text file busy").
        let status = Command::new("install")
            .args(["-m", "0755", PROXY])
            .arg(&bin)
            .status()
            .expect("run install(1)");
        assert!(
            status.success(),
            "install {PROXY} {}: {status}",
            bin.display()
        );
        Installed { dir, bin }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `setpriv` switching to nobody (real, effective and saved uid and gid; no supplementary
/// groups) with `caps`, then running `bin ARGS`.
fn as_nobody(setpriv: &Path, caps: &[&str], bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(setpriv);
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ])
    .args(caps)
    .arg(bin)
    .args(args)
    .env_remove("RUST_LOG");
    cmd
}

/// Only CAP_NET_BIND_SERVICE, in the bounding, inheritable and ambient sets, and no way to
/// gain more (what systemd's `AmbientCapabilities=CAP_NET_BIND_SERVICE`,
/// `CapabilityBoundingSet=CAP_NET_BIND_SERVICE` and `NoNewPrivileges=yes` set up).
const WITH_NET_BIND_SERVICE: &[&str] = &[
    "--bounding-set=-all,+net_bind_service",
    "--inh-caps=-all,+net_bind_service",
    "--ambient-caps=+net_bind_service",
    "--no-new-privs",
];

/// The same bounding set, but the capability not passed on: the process has none.
const WITHOUT_CAPABILITIES: &[&str] = &[
    "--bounding-set=-all,+net_bind_service",
    "--inh-caps=-all",
    "--no-new-privs",
];

/// Checks that nobody can run `bin` at all, so a later failure is not a path problem.
fn check_runnable(setpriv: &Path, bin: &Path) {
    let out = as_nobody(setpriv, WITHOUT_CAPABILITIES, bin, &["--version"])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "user {NOBODY} cannot run {} ({}): {}; the temp directory {} must be reachable \
         by everyone and not mounted noexec",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        std::env::temp_dir().display()
    );
}

/// The first 127.0.53.`first`..`first + 9` whose port 53 is free for TCP and UDP (this
/// process is root, so it can tell by binding them).
fn free_port_53(first: u8) -> Ipv4Addr {
    (first..first + 10)
        .map(|last| Ipv4Addr::new(127, 0, 53, last))
        .find(|&ip| {
            let tcp = TcpListener::bind((ip, 53));
            let udp = UdpSocket::bind((ip, 53));
            tcp.is_ok() && udp.is_ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "port 53 is taken on every address from 127.0.53.{first} to .{}",
                first + 9
            )
        })
}

/// Whether unprivileged processes may bind port 53 anyway in this network namespace
/// (`net.ipv4.ip_unprivileged_port_start` at or below 53).
fn port_53_unprivileged() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|start| start <= 53)
}

/// The fields of `/proc/PID/status`.
fn status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read the proxy's /proc status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Checks that process `pid` runs as nobody (every uid and gid, no groups) with `effective`
/// as its effective and permitted capabilities, and no more in its bounding set than
/// CAP_NET_BIND_SERVICE.
fn assert_dropped(pid: u32, effective: &str, ambient: &str) {
    let s = status(pid);
    let all_nobody = [NOBODY; 4].join("\t");
    assert_eq!(s["Uid"], all_nobody, "Uid (real, effective, saved, fs)");
    assert_eq!(s["Gid"], all_nobody, "Gid (real, effective, saved, fs)");
    assert_eq!(s["Groups"], "", "supplementary groups");
    assert_eq!(s["CapEff"], effective, "CapEff");
    assert_eq!(s["CapPrm"], effective, "CapPrm");
    assert_eq!(s["CapAmb"], ambient, "CapAmb");
    assert_eq!(s["CapBnd"], NET_BIND_SERVICE_ONLY, "CapBnd");
    eprintln!(
        "proxy (pid {pid}): Uid {} Gid {} CapEff {} CapPrm {} CapInh {} CapAmb {} CapBnd {} \
         NoNewPrivs {}",
        s["Uid"],
        s["Gid"],
        s["CapEff"],
        s["CapPrm"],
        s["CapInh"],
        s["CapAmb"],
        s["CapBnd"],
        s["NoNewPrivs"]
    );
}

/// dnsmasq serving `web.test`, failing with the package to install before anything starts.
fn dns_server() -> Dnsmasq {
    dnsmasq_program();
    dig_program();
    Dnsmasq::start(&DnsmasqConfig {
        hosts: None,
        local_domains: vec!["test".to_owned()],
        args: vec![format!("--host-record=web.test,{WEB_IP}")],
    })
}

/// Asks the proxy at `addr` for `web.test`, over TCP when `tcp`.
fn query(addr: SocketAddr, tcp: bool) {
    let mut args = vec!["web.test", "A", "+short"];
    if tcp {
        args.push("+tcp");
    }
    let answer = dig(addr, &args);
    assert_eq!(
        answer.output.trim(),
        WEB_IP,
        "dig {args:?}:\n{}",
        answer.output
    );
}

/// `proxy PROTOCOL 53 DNSMASQ --listen IP` as nobody with CAP_NET_BIND_SERVICE: it binds
/// port 53, runs with exactly that capability, and answers real queries.
fn serves_port_53_with_the_capability(test: &str, protocol: &str, first: u8) {
    let Some(setpriv) = setpriv_or_skip(test) else {
        return;
    };
    if port_53_unprivileged() {
        eprintln!(
            "note: net.ipv4.ip_unprivileged_port_start <= 53 here, so binding port 53 proves \
             nothing about the capability; the capability sets are still checked"
        );
    }
    let installed = Installed::new(test);
    check_runnable(&setpriv, &installed.bin);
    let dns = dns_server();
    let target = dns.addr().to_string();
    let ip = free_port_53(first).to_string();
    let proxy = Proxy::spawn(as_nobody(
        &setpriv,
        WITH_NET_BIND_SERVICE,
        &installed.bin,
        &[protocol, "53", &target, "--listen", &ip],
    ));
    let proto = if protocol == "udp" {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let addr = proxy.proto_listen_addr(proto, &target);
    assert_eq!(addr, SocketAddr::new(ip.parse().unwrap(), 53));
    assert_dropped(proxy.pid(), NET_BIND_SERVICE_ONLY, NET_BIND_SERVICE_ONLY);
    query(addr, proto == Proto::Tcp);
    query(addr, proto == Proto::Tcp);
}

#[test]
fn udp_on_port_53_as_nobody_with_cap_net_bind_service() {
    serves_port_53_with_the_capability("udp_on_port_53", "udp", 10);
}

#[test]
fn tcp_on_port_53_as_nobody_with_cap_net_bind_service() {
    serves_port_53_with_the_capability("tcp_on_port_53", "tcp", 20);
}

/// Without the capability, `proxy udp 53` and `proxy tcp 53` exit 1 at once, with an error
/// naming the address and the permission.
#[test]
fn port_53_without_the_capability_fails_naming_address_and_permission() {
    let test = "port_53_refused";
    let Some(setpriv) = setpriv_or_skip(test) else {
        return;
    };
    if port_53_unprivileged() {
        eprintln!(
            "skipping {test}: net.ipv4.ip_unprivileged_port_start <= 53 here, so anyone may \
             bind port 53"
        );
        return;
    }
    let installed = Installed::new(test);
    check_runnable(&setpriv, &installed.bin);
    let ip = free_port_53(30).to_string();
    for protocol in ["udp", "tcp"] {
        let mut proxy = Proxy::spawn(as_nobody(
            &setpriv,
            WITHOUT_CAPABILITIES,
            &installed.bin,
            &[protocol, "53", "127.0.0.1:5353", "--listen", &ip],
        ));
        let code = proxy.wait_exit(PROMPT).code();
        let stderr = proxy.stderr();
        assert_eq!(code, Some(1), "proxy {protocol}: {stderr}");
        let want = format!("failed to bind listen address ({ip}:53): Permission denied");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error: ") && l.contains(&want)),
            "proxy {protocol}: no `error: ... {want}` line in:\n{stderr}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("hint: ") && l.contains("CAP_NET_BIND_SERVICE")),
            "proxy {protocol}: no hint naming the capability in:\n{stderr}"
        );
        assert!(!stderr.contains("Forwarding from"), "{stderr}");
        eprintln!("proxy {protocol} without the capability: exit 1, {stderr:?}");
    }
}

/// `setcap cap_net_bind_service=+ep` on the binary (what deploy/Containerfile does): nobody
/// runs it with no capability of its own and it binds port 53; under no_new_privs, started
/// by a process without the capability, it gets none; with the capability out of the
/// bounding set (a container's `drop: [ALL]` without `add: [NET_BIND_SERVICE]`, or systemd's
/// `CapabilityBoundingSet=` empty), the kernel refuses to run it at all.
#[test]
fn file_capability_binds_port_53_as_nobody() {
    let test = "file_capability";
    let Some(setpriv) = setpriv_or_skip(test) else {
        return;
    };
    let Some(setcap) = find_program("setcap", &["/usr/sbin/setcap", "/sbin/setcap"]) else {
        eprintln!("skipping {test}: setcap (libcap2-bin) is not installed");
        return;
    };
    let installed = Installed::new(test);
    let out = Command::new(&setcap)
        .args(["cap_net_bind_service=+ep"])
        .arg(&installed.bin)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipping {test}: setcap failed on {} (a file system without extended \
             attributes?): {}",
            installed.dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    check_runnable(&setpriv, &installed.bin);
    let dns = dns_server();
    let target = dns.addr().to_string();
    let ip = free_port_53(40).to_string();
    let no_ambient = ["--bounding-set=-all,+net_bind_service", "--inh-caps=-all"];
    let proxy = Proxy::spawn(as_nobody(
        &setpriv,
        &no_ambient,
        &installed.bin,
        &["udp", "53", &target, "--listen", &ip],
    ));
    let addr = proxy.proto_listen_addr(Proto::Udp, &target);
    assert_dropped(proxy.pid(), NET_BIND_SERVICE_ONLY, NO_CAPABILITIES);
    query(addr, false);
    drop(proxy);

    // With no_new_privs (systemd's NoNewPrivileges=yes), exec grants a file capability only
    // when the process had it already: run by a nobody process without capabilities (a
    // second setpriv, which nobody runs), the bind fails as if the binary had none.
    let bin = installed.bin.to_str().unwrap();
    let mut proxy = Proxy::spawn(as_nobody(
        &setpriv,
        &no_ambient,
        &setpriv,
        &["--no-new-privs", bin, "udp", "53", &target, "--listen", &ip],
    ));
    let code = proxy.wait_exit(PROMPT).code();
    let stderr = proxy.stderr();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("({ip}:53): Permission denied")),
        "{stderr}"
    );

    // Out of the bounding set, the file capability cannot be granted: exec fails.
    let out = as_nobody(
        &setpriv,
        &["--bounding-set=-all", "--inh-caps=-all"],
        &installed.bin,
        &["--version"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Operation not permitted"),
        "{}: {stderr}",
        out.status
    );
}

/// `--relay sockmap` needs CAP_BPF and CAP_NET_ADMIN: without them the forward is refused
/// at start, naming the setting and what it needs; with exactly those two (as nobody) it
/// starts.
#[test]
fn sockmap_relay_needs_cap_bpf_and_cap_net_admin() {
    let test = "sockmap_caps";
    let Some(setpriv) = setpriv_or_skip(test) else {
        return;
    };
    let installed = Installed::new(test);
    check_runnable(&setpriv, &installed.bin);
    let args = [
        "tcp",
        "0",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1",
        "--relay",
        "sockmap",
    ];
    let out = as_nobody(&setpriv, WITHOUT_CAPABILITIES, &installed.bin, &args)
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("relay = sockmap cannot be used")
            && stderr.contains("CAP_BPF with CAP_NET_ADMIN")
            && stderr.contains("(--relay)"),
        "{stderr}"
    );
    let caps = [
        "--bounding-set=-all,+bpf,+net_admin",
        "--inh-caps=-all,+bpf,+net_admin",
        "--ambient-caps=+bpf,+net_admin",
        "--no-new-privs",
    ];
    let mut child = as_nobody(&setpriv, &caps, &installed.bin, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run setpriv");
    // Refused, it would exit at once; started, it runs until stopped.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let out = child.wait_with_output().expect("collect the output");
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        running && said.contains("Forwarding from"),
        "with CAP_BPF and CAP_NET_ADMIN: {said}"
    );
}
