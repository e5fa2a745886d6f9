//! DNS end to end, against a real DNS server (dnsmasq) on loopback:
//!
//! - the forwarder follows the records' TTL and reaches the new address after a change;
//! - it keeps the last good answer while DNS is down;
//! - a name with no answer closes client connections cleanly and the forwarder goes on;
//! - `SystemResolver` (libc) and `HickoryResolver::from_system_conf` honour resolv.conf
//!   `search` and `ndots` like a pod's libc, inside a private mount + network namespace.
//!
//! Needs dnsmasq (`dnsmasq-base`) and, for the namespace test, util-linux `unshare`,
//! `mount`, iproute2 `ip` and root (CAP_SYS_ADMIN). A missing tool fails the test with a
//! message saying what to install; nothing is skipped.

mod dns_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dns_support::{ask, expect_clean_close};
use proxy_core::resolve::{
    CachePolicy, HickoryResolver, Resolution, Resolve, Resolving, SystemResolver,
};
use proxy_core::{ForwarderHandle, TcpForwarder};
use proxy_testkit::dns::{Dnsmasq, DnsmasqConfig, dnsmasq_program, hosts_config};
use proxy_testkit::echo::IdentityServers;
use proxy_testkit::net::lo;
use proxy_testkit::process::{KillOnDrop, TempPath, find_program, run};

/// The longest wait for a DNS change to show in new connections: TTL (1 s) + refresh
/// (clamped to min_ttl) + a generous margin for a loaded CI machine.
const SWITCH_LIMIT: Duration = Duration::from_secs(10);
/// How often new connections are made while waiting for a change.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The longest wait for a refresh against a dead DNS server to fail.
const OUTAGE_LIMIT: Duration = Duration::from_secs(25);

fn policy_200ms() -> CachePolicy {
    let mut policy = CachePolicy::default();
    policy.min_ttl = Duration::from_millis(200);
    policy
}

fn start_forwarder(target: String, resolver: impl Resolve) -> ForwarderHandle {
    TcpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        target.parse().expect("target"),
    )
    .resolver(resolver)
    .cache(policy_200ms())
    .connect_timeout(Duration::from_secs(2))
    .build()
    .expect("build")
    .start()
    .expect("start")
}

/// Polls with new connections until one reaches `want`; every other answer must be `was`.
async fn wait_until_reaching(proxy: SocketAddr, was: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let got = ask(proxy)
            .await
            .unwrap_or_else(|e| panic!("connection through the forwarder failed: {e}"));
        if got == want {
            return started.elapsed();
        }
        assert_eq!(got, was, "reached an unexpected server");
        assert!(
            started.elapsed() < SWITCH_LIMIT,
            "new connections still reach {was} {SWITCH_LIMIT:?} after DNS said {want}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// 1 and 2: the cache follows dnsmasq's 1 s TTL to a new address, then keeps that last good
/// answer once dnsmasq is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hickory_follows_ttl_then_keeps_last_good_answer() {
    let mut dns = Dnsmasq::start(&hosts_config("127.0.0.2 web.test\n", &["test"]));
    let servers = IdentityServers::start(&[lo(2), lo(3)]).await;
    let handle = start_forwarder(
        format!("web.test:{}", servers.port()),
        HickoryResolver::with_name_servers(&[dns.addr()]).unwrap(),
    );
    let proxy = handle.local_addrs()[0];

    for _ in 0..3 {
        assert_eq!(ask(proxy).await.unwrap(), "127.0.0.2");
    }
    let before = handle.stats();
    assert!(before.resolve_refreshes >= 1, "{before:?}");
    assert_eq!(before.resolve_failures, 0, "{before:?}");

    // The record changes; dnsmasq reads its hosts file again on SIGHUP.
    dns.set_hosts("127.0.0.3 web.test\n");
    let took = wait_until_reaching(proxy, "127.0.0.2", "127.0.0.3").await;
    eprintln!("new connections reached 127.0.0.3 {took:?} after the change");
    for _ in 0..3 {
        assert_eq!(ask(proxy).await.unwrap(), "127.0.0.3");
    }
    let after = handle.stats();
    assert!(
        after.resolve_refreshes > before.resolve_refreshes,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.resolve_failures, 0, "{after:?}");
    assert_eq!(after.upstream_unavailable, 0, "{after:?}");

    // DNS goes away: the last good answer keeps serving for several refresh periods.
    dns.kill();
    let outage = Instant::now();
    let mut served = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        let got = ask(proxy)
            .await
            .unwrap_or_else(|e| panic!("connection during the DNS outage failed: {e}"));
        assert_eq!(got, "127.0.0.3", "during the DNS outage");
        served += 1;
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(served >= 10, "only {served} connections in 3 s");
    // A refresh against the dead server fails once hickory gives up: its defaults are a
    // 5 s timeout and 2 retries, so about 15 s after the first refresh due after the kill.
    while handle.stats().resolve_failures == 0 {
        let got = ask(proxy)
            .await
            .unwrap_or_else(|e| panic!("connection during the DNS outage failed: {e}"));
        assert_eq!(got, "127.0.0.3", "during the DNS outage");
        assert!(
            outage.elapsed() < OUTAGE_LIMIT,
            "no failed refresh counted in {OUTAGE_LIMIT:?} of DNS outage: {:?}",
            handle.stats()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    eprintln!(
        "first failed refresh counted {:?} into the outage",
        outage.elapsed()
    );
    let down = handle.stats();
    assert_eq!(down.upstream_unavailable, 0, "{down:?}");
    assert!(handle.shutdown(Duration::from_secs(2)).await);
}

/// Per-address stats follow the answer: as the name moves through four addresses, those
/// it left are pruned after a few refreshes, unless a connection to them is still open
/// (then once it closes); the table does not grow for the life of the forwarder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_stats_of_addresses_gone_from_the_answer_are_pruned() {
    use tokio::io::AsyncBufReadExt as _;
    let dns = Dnsmasq::start(&hosts_config("127.0.0.2 web.test\n", &["test"]));
    let servers = IdentityServers::start(&[lo(2), lo(3), lo(4), lo(5)]).await;
    let handle = start_forwarder(
        format!("web.test:{}", servers.port()),
        HickoryResolver::with_name_servers(&[dns.addr()]).unwrap(),
    );
    let proxy = handle.local_addrs()[0];
    // A connection to the first address stays open throughout.
    let mut open = tokio::io::BufReader::new(tokio::net::TcpStream::connect(proxy).await.unwrap());
    let mut greeting = String::new();
    open.read_line(&mut greeting).await.unwrap();
    assert_eq!(greeting.trim(), "127.0.0.2");
    for (was, now) in [(2, 3), (3, 4), (4, 5)] {
        dns.set_hosts(&format!("127.0.0.{now} web.test\n"));
        wait_until_reaching(proxy, &format!("127.0.0.{was}"), &format!("127.0.0.{now}")).await;
    }
    let port = servers.port();
    let seen = |handle: &ForwarderHandle| -> Vec<String> {
        handle
            .endpoints()
            .iter()
            .map(|e| e.addr.ip().to_string())
            .collect()
    };
    let wait_for = |want: Vec<&'static str>| {
        let handle = &handle;
        async move {
            let started = Instant::now();
            while seen(handle) != want {
                assert!(
                    started.elapsed() < Duration::from_secs(8),
                    "endpoints {:?}, want {want:?}",
                    seen(handle)
                );
                tokio::time::sleep(POLL_EVERY).await;
            }
            started.elapsed()
        }
    };
    let took = wait_for(vec!["127.0.0.2", "127.0.0.5"]).await;
    eprintln!("3 and 4 pruned {took:?} after the answer settled on 5");
    assert_eq!(handle.endpoints()[1].addr, SocketAddr::new(lo(5), port));
    assert!(handle.endpoints()[1].connects >= 1);
    drop(open);
    let took = wait_for(vec!["127.0.0.5"]).await;
    eprintln!("2 pruned {took:?} after its connection closed");
    assert!(handle.shutdown(Duration::from_secs(2)).await);
}

/// 3: a name dnsmasq has no answer for (NXDOMAIN): every client connection is closed
/// cleanly, counted as `upstream_unavailable`; once the name appears, the same forwarder
/// serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_name_closes_clients_cleanly_and_forwarder_keeps_serving() {
    let dns = Dnsmasq::start(&hosts_config("127.0.0.4 other.test\n", &["test"]));
    let servers = IdentityServers::start(&[lo(4)]).await;
    let handle = start_forwarder(
        format!("missing.test:{}", servers.port()),
        HickoryResolver::with_name_servers(&[dns.addr()]).unwrap(),
    );
    let proxy = handle.local_addrs()[0];

    for _ in 0..3 {
        expect_clean_close(proxy).await;
    }
    // The client sees the close a moment before the connection's task has ended.
    proxy_testkit::wait::eventually("the connections ended", Duration::from_secs(10), || {
        handle.stats().connections_open == 0
    })
    .await;
    let stats = handle.stats();
    assert_eq!(stats.upstream_unavailable, 3, "{stats:?}");
    assert!(stats.resolve_failures >= 3, "{stats:?}");
    assert_eq!(stats.resolve_refreshes, 0, "{stats:?}");
    assert_eq!(stats.connections_total, 3, "{stats:?}");
    assert_eq!(stats.connections_open, 0, "{stats:?}");
    assert_eq!(stats.connect_failures.total(), 0, "{stats:?}");

    // The listener is still there, and the name is looked up again for new connections.
    dns.set_hosts("127.0.0.4 other.test\n127.0.0.4 missing.test\n");
    let started = Instant::now();
    loop {
        match ask(proxy).await {
            Ok(id) => {
                assert_eq!(id, "127.0.0.4");
                break;
            }
            Err(e) => assert!(
                started.elapsed() < SWITCH_LIMIT,
                "the name exists now, but connections still fail after {SWITCH_LIMIT:?}: {e}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let stats = handle.stats();
    assert!(stats.resolve_refreshes >= 1, "{stats:?}");
    assert!(handle.shutdown(Duration::from_secs(2)).await);
}

/// A resolver that takes 100 ms per lookup and says its answer is valid for 400 ms after
/// it returns, recording (lookup start, valid until).
#[derive(Clone, Default)]
struct SlowTtlResolver(Arc<Mutex<Vec<(std::time::Instant, std::time::Instant)>>>);

impl Resolve for SlowTtlResolver {
    fn resolve(&self, _name: &str) -> Resolving {
        let calls = self.0.clone();
        Box::pin(async move {
            let start = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let until = std::time::Instant::now() + Duration::from_millis(400);
            calls.lock().unwrap().push((start, until));
            Ok(Resolution::new(vec![lo(1)], Some(until)))
        })
    }
}

/// Regression test for the cache scheduling that `hickory_follows_ttl_...` exposed: the
/// next lookup must not start before the previous answer's TTL has run out (it used to
/// start early by the lookup's duration, and hickory then answered from its own cache).
/// Not a DNS test: it drives the cache through the public `Resolve` plug-in point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_starts_when_the_ttl_ends_not_before() {
    let resolver = SlowTtlResolver::default();
    let handle = start_forwarder("slow.test:9".into(), resolver.clone());
    let started = Instant::now();
    while resolver.0.lock().unwrap().len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "too few lookups"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = resolver.0.lock().unwrap().clone();
    for pair in calls.windows(2) {
        let ((_, until), (next_start, _)) = (pair[0], pair[1]);
        assert!(
            next_start >= until,
            "a lookup started {:?} before the previous answer expired",
            until - next_start
        );
    }
    drop(handle);
}

// ===== resolv.conf search and ndots, inside namespaces =====

/// Set, to the test it runs, in the environment of the re-executed test binary that runs
/// inside the namespaces.
const NS_CHILD_ENV: &str = "PROXY_DNS_NS_CHILD";
/// The test that does the work inside the namespaces.
const NS_CHILD_TEST: &str = "namespace_child_search_and_ndots";
/// Printed by the child when every check passed.
const NS_CHILD_OK: &str = "NS-CHILD-OK: search and ndots honoured";

/// What the namespace's dnsmasq serves. Decoys catch a wrong search order: with
/// `ndots:5`, `kube-dns.default` (1 dot) must be tried with the search list first, and
/// `db.prod.eu.west.example.internal` (5 dots) as written first.
const NS_HOSTS: &str = "\
127.0.0.5 kube-dns.default.svc.cluster.local
127.0.0.7 kube-dns.kube-system.svc.cluster.local
127.0.0.9 kube-dns.default
127.0.0.6 db.prod.eu.west.example.internal
127.0.0.10 db.prod.eu.west.example.internal.default.svc.cluster.local
";

const NS_RESOLV_CONF: &str = "\
nameserver 127.0.0.1
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
";

/// 4: re-runs this binary's [`NS_CHILD_TEST`] inside private namespaces and checks it
/// passed.
#[test]
fn system_resolver_honours_search_and_ndots_in_namespace() {
    in_namespaces(NS_CHILD_TEST, NS_CHILD_OK);
}

/// Re-runs this binary's test `child` under `unshare --mount --net --propagation private
/// --kill-child` (with [`NS_CHILD_ENV`] naming it) and checks it printed `ok`.
fn in_namespaces(child: &str, ok: &str) {
    if std::env::var_os(NS_CHILD_ENV).is_some() {
        return; // inside the namespace only the child test runs
    }
    dnsmasq_program(); // fails with an install hint before anything else
    let unshare = find_program("unshare", &["/usr/bin/unshare", "/bin/unshare"])
        .expect("`unshare` not found: install util-linux");
    let ns_args = [
        "--mount",
        "--net",
        "--propagation",
        "private",
        "--kill-child",
    ];

    let probe = Command::new(&unshare)
        .args(ns_args)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .expect("running unshare");
    assert!(
        probe.status.success(),
        "`unshare --mount --net` is not permitted here ({}): {}\nThis test needs root or \
         CAP_SYS_ADMIN (in a container: --privileged or --cap-add SYS_ADMIN); it is not skipped.",
        probe.status,
        String::from_utf8_lossy(&probe.stderr).trim(),
    );

    let output = TempPath::new("ns-child.out");
    let out = std::fs::File::create(output.path()).unwrap();
    let err = out.try_clone().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop::spawn(
        Command::new(&unshare)
            .args(ns_args)
            .arg("--")
            .arg(&exe)
            .args(["--exact", child, "--nocapture", "--test-threads=1"])
            .env(NS_CHILD_ENV, child)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    )
    .expect("spawning unshare");
    let status = child.wait_timeout(Duration::from_secs(30));
    let text = output.read();
    let status = status.unwrap_or_else(|| panic!("namespace child ran over 30 s:\n{text}"));
    assert!(
        status.success(),
        "namespace child failed ({status}):\n{text}"
    );
    assert!(
        text.contains(ok) && text.contains("1 passed"),
        "the namespace child did not run its checks:\n{text}"
    );
    for line in text
        .lines()
        .filter_map(|l| l.find("figures:").map(|i| &l[i..]))
    {
        println!("{line}");
    }
}

/// Whether this process is the namespace child made to run `child`.
fn is_namespace_child(child: &str) -> bool {
    std::env::var_os(NS_CHILD_ENV).is_some_and(|v| v == child)
}

/// Inside the namespaces: brings `lo` up and gives this process a pod's view of /etc:
/// `resolv_conf`, a hosts file without the test names, and nsswitch `hosts: files dns`
/// (no mDNS module swallowing `*.local` names). Keep the files until done.
fn pod_etc(resolv_conf: &str) -> Vec<TempPath> {
    // A fresh network namespace has only `lo`, and it is down.
    run("ip", &["link", "set", "lo", "up"]);
    let resolv = TempPath::with_contents("resolv.conf", resolv_conf);
    bind_over(&resolv, "/etc/resolv.conf");
    let hosts = TempPath::with_contents("etc-hosts", "127.0.0.1 localhost\n::1 localhost\n");
    bind_over(&hosts, "/etc/hosts");
    let mut files = vec![resolv, hosts];
    if let Ok(conf) = std::fs::read_to_string("/etc/nsswitch.conf") {
        let conf: String = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with("hosts:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = TempPath::with_contents("nsswitch.conf", &format!("{conf}hosts: files dns\n"));
        bind_over(&file, "/etc/nsswitch.conf");
        files.push(file);
    }
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        resolv_conf
    );
    files
}

/// Bind-mounts `file` over `target` (visible only in this mount namespace).
fn bind_over(file: &TempPath, target: &str) {
    run("mount", &["--bind", file.path().to_str().unwrap(), target]);
}

async fn system_lookup(name: &str) -> Vec<std::net::IpAddr> {
    SystemResolver::new()
        .resolve(name)
        .await
        .unwrap_or_else(|e| panic!("SystemResolver: {name}: {e}"))
        .addrs()
        .to_vec()
}

/// Runs only inside the namespaces made by the test above (with [`NS_CHILD_ENV`] set); a
/// no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_child_search_and_ndots() {
    if !is_namespace_child(NS_CHILD_TEST) {
        return;
    }
    let etc = pod_etc(NS_RESOLV_CONF);

    let dns = Dnsmasq::start_on(
        53,
        &hosts_config(NS_HOSTS, &["cluster.local", "internal", "default"]),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // libc getaddrinfo: search list first for names under ndots...
    assert_eq!(system_lookup("kube-dns.default").await, [lo(5)]);
    assert!(
        dns.log()
            .contains("query[A] kube-dns.default.default.svc.cluster.local"),
        "libc did not walk the search list:\n{}",
        dns.log()
    );
    assert_eq!(system_lookup("kube-dns.kube-system").await, [lo(7)]);
    // ... the name as written first at ndots dots or more, and absolute names as written.
    assert_eq!(
        system_lookup("db.prod.eu.west.example.internal").await,
        [lo(6)]
    );
    assert_eq!(
        system_lookup("kube-dns.default.svc.cluster.local.").await,
        [lo(5)]
    );
    let missing = SystemResolver::new().resolve("no-such-svc.default").await;
    assert!(missing.is_err(), "{missing:?}");

    // hickory, configured from the same resolv.conf, agrees.
    let hickory = HickoryResolver::from_system_conf().expect("hickory from resolv.conf");
    for (name, want) in [
        ("kube-dns.default", lo(5)),
        ("kube-dns.kube-system", lo(7)),
        ("db.prod.eu.west.example.internal", lo(6)),
    ] {
        let got = hickory
            .resolve(name)
            .await
            .unwrap_or_else(|e| panic!("HickoryResolver::from_system_conf: {name}: {e}"));
        assert_eq!(got.addrs(), [want], "hickory: {name}");
    }

    // End to end: `proxy tcp PORT kube-dns.default` with the default (system) resolver.
    let servers = IdentityServers::start(&[lo(5)]).await;
    let handle = start_forwarder(
        format!("kube-dns.default:{}", servers.port()),
        SystemResolver::new(),
    );
    let proxy = handle.local_addrs()[0];
    for _ in 0..2 {
        assert_eq!(ask(proxy).await.unwrap(), "127.0.0.5");
    }
    let stats = handle.stats();
    assert!(stats.resolve_refreshes >= 1, "{stats:?}");
    assert_eq!(stats.upstream_unavailable, 0, "{stats:?}");
    assert!(handle.shutdown(Duration::from_secs(2)).await);

    drop(dns);
    drop(etc);
    println!("{NS_CHILD_OK}");
}

/// SRV targets: dnsmasq serves `_web._tcp.srv.test` with weights 1 (a, 127.0.0.3) and 3
/// (b, 127.0.0.4) at priority 0, and c (127.0.0.5) at priority 1. 200 connections land a
/// quarter on a and three quarters on b (within 5 points), none on c. When the priority 0
/// hosts have no addresses, priority 1 serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_and_priorities_are_honoured() {
    let servers = IdentityServers::start(&[lo(3), lo(4), lo(5)]).await;
    let port = servers.port();
    let srv = |records: &[(&str, u16, u16)], hosts: &[(&str, u8)]| DnsmasqConfig {
        hosts: None,
        local_domains: vec!["test".to_owned()],
        args: records
            .iter()
            .map(|(host, priority, weight)| {
                format!("--srv-host=_web._tcp.srv.test,{host}.srv.test,{port},{priority},{weight}")
            })
            .chain(
                hosts
                    .iter()
                    .map(|(host, last)| format!("--host-record={host}.srv.test,127.0.0.{last}")),
            )
            .chain(["--local-ttl=1".to_owned()])
            .collect(),
    };
    let records = [("a", 0, 1), ("b", 0, 3), ("c", 1, 5)];
    let dns = Dnsmasq::start(&srv(&records, &[("a", 3), ("b", 4), ("c", 5)]));
    let handle = start_forwarder(
        "srv:_web._tcp.srv.test".to_owned(),
        HickoryResolver::with_name_servers(&[dns.addr()]).unwrap(),
    );
    let proxy = handle.local_addrs()[0];
    let mut served = std::collections::HashMap::new();
    for _ in 0..200 {
        *served.entry(ask(proxy).await.unwrap()).or_insert(0u32) += 1;
    }
    let share = |ip: &str| served.get(ip).copied().unwrap_or(0);
    assert_eq!(share("127.0.0.5"), 0, "priority 1 unused: {served:?}");
    assert!(
        (40..=60).contains(&share("127.0.0.3")),
        "weight 1 of 4: {served:?}"
    );
    assert!(
        (140..=160).contains(&share("127.0.0.4")),
        "weight 3 of 4: {served:?}"
    );
    drop(handle);

    // Priority 0's hosts do not resolve: priority 1 takes over.
    let dns = Dnsmasq::start(&srv(&records, &[("c", 5)]));
    let handle = start_forwarder(
        "srv:_web._tcp.srv.test".to_owned(),
        HickoryResolver::with_name_servers(&[dns.addr()]).unwrap(),
    );
    let proxy = handle.local_addrs()[0];
    for _ in 0..5 {
        assert_eq!(ask(proxy).await.unwrap(), "127.0.0.5");
    }
}

// ===== lookups while DNS is silent, inside namespaces =====

/// The test that does the work inside the namespaces, and what it prints when it passed.
const SILENT_CHILD_TEST: &str = "namespace_child_silent_dns";
const SILENT_CHILD_OK: &str = "NS-CHILD-OK: one lookup in flight";

/// A name server that never answers, and libc waiting 3 s for it.
const SILENT_RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n";

/// 5: while DNS does not answer, connections that give up waiting for a name do not
/// leave a blocking `getaddrinfo` each behind: one lookup is in flight, whatever the
/// number of connections (it used to take a thread per connection budget: 148
/// connections, 4 to 129 threads).
#[test]
fn system_lookups_do_not_pile_up_while_dns_is_silent() {
    in_namespaces(SILENT_CHILD_TEST, SILENT_CHILD_OK);
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_child_silent_dns() {
    if !is_namespace_child(SILENT_CHILD_TEST) {
        return;
    }
    let etc = pod_etc(SILENT_RESOLV_CONF);
    // The silent server counts the queries it swallows.
    let silent = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
    let queries = Arc::new(Mutex::new(0usize));
    {
        let queries = queries.clone();
        silent
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            loop {
                match silent.recv_from(&mut buf) {
                    Ok(_) => *queries.lock().unwrap() += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
    let mut timeouts = proxy_core::Timeouts::default();
    timeouts.connect = Duration::from_millis(50);
    timeouts.connect_total = Duration::from_millis(50);
    let handle = TcpForwarder::builder(
        ["127.0.0.1:0".parse().unwrap()],
        "silent.example:80".parse().unwrap(),
    )
    .resolver(SystemResolver::new())
    .timeouts(timeouts)
    .build()
    .unwrap()
    .start()
    .unwrap();
    let proxy = handle.local_addrs()[0];
    let before = threads();
    let mut peak = before;
    // 100 connections, 20 ms apart: each is closed when its 50 ms budget runs out.
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..100 {
        clients.spawn(expect_clean_close(proxy));
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(threads());
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    peak = peak.max(threads());
    let stats = handle.stats();
    assert_eq!(stats.upstream_unavailable, 100, "{stats:?}");
    let queries = *queries.lock().unwrap();
    println!("figures: threads {before} before, {peak} at most; {queries} queries");
    // One blocking thread for the lookup in flight (the runtime may keep one more).
    assert!(peak <= before + 2, "threads went from {before} to {peak}");
    // One getaddrinfo asks A and AAAA, and has gone on to its second by now.
    assert!(queries <= 8, "{queries} queries reached the silent server");
    drop(handle);
    drop(etc);
    println!("{SILENT_CHILD_OK}");
}
