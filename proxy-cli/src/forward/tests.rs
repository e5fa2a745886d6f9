use std::net::{IpAddr, Ipv6Addr};

use proxy_core::Host;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;

use std::path::Path;
use std::process::{ExitCode, ExitStatus};

use proxy_core::resolve::{Resolution, Resolving};
use tokio::sync::watch;

use super::ports::push_json_string;
use super::*;
use crate::args::{Cli, Command};

fn parse(args: &[&str]) -> Result<ForwardArgs, clap::Error> {
    let all = ["proxy", "forward"].into_iter().chain(args.iter().copied());
    match Cli::try_parse_from(all)?.command {
        Command::Forward(f) => Ok(f),
        other => panic!("{other:?}"),
    }
}

fn pairs(spec: &str) -> Vec<(u16, u16)> {
    parse_spec(spec)
        .unwrap()
        .mappings()
        .map(|m| (m.local, m.remote))
        .collect()
}

#[test]
fn spec_grammar() {
    assert_eq!(pairs("8080:80"), [(8080, 80)]);
    assert_eq!(pairs("5000"), [(5000, 5000)]);
    assert_eq!(pairs(":5000"), [(0, 5000)]);
    assert_eq!(pairs("0:5000"), [(0, 5000)]);
    assert_eq!(pairs("65535:1"), [(65535, 1)]);
    assert_eq!(
        pairs("8000-8002:9000-9002"),
        [(8000, 9000), (8001, 9001), (8002, 9002)]
    );
    assert_eq!(pairs("8000-8001"), [(8000, 8000), (8001, 8001)]);
    assert_eq!(pairs(":9000-9001"), [(0, 9000), (0, 9001)]);
    assert_eq!(pairs("7-7:9"), [(7, 9)]);
    assert_eq!(pairs("65534-65535"), [(65534, 65534), (65535, 65535)]);
    assert_eq!(pairs("080:0080"), [(80, 80)]);
    assert_eq!(parse_spec("53").unwrap().protocol(), Protocol::Tcp);
    assert_eq!(parse_spec("53/tcp").unwrap().protocol(), Protocol::Tcp);
    let udp = parse_spec("5353:53/udp").unwrap();
    assert_eq!(udp.protocol(), Protocol::Udp);
    assert_eq!(udp.token(), "5353:53/udp");
    assert_eq!(pairs("5353:53/udp"), [(5353, 53)]);
}

#[test]
fn bad_specs_say_why() {
    let bad = [
        ("", "no port"),
        ("/udp", "no port"),
        ("0", "remote port 0"),
        ("8080:0", "remote port 0"),
        (":0", "remote port 0"),
        ("0-5", "a range starting at 0"),
        ("1-5:0-4", "a range starting at 0"),
        ("0-4:1-5", "a local range cannot start at 0"),
        ("10-5", "`10-5` is a reversed range"),
        ("10-5:1-6", "`10-5` is a reversed range"),
        ("1-3:10-5", "`10-5` is a reversed range"),
        ("1-3:4", "the local side has 3 ports and the remote side 1"),
        ("1:4-6", "the local side has 1 port and the remote side 3"),
        ("65536", "`65536` is larger than 65535"),
        ("80:99999", "`99999` is larger than 65535"),
        ("HTTP", "`HTTP` is not a port number"),
        ("http-", "`http` is not a port number"),
        ("http/udp", "a named remote port (`http`) is TCP"),
        ("+80", "`+80` is not a port number"),
        ("-80", "a port is missing"),
        ("80-", "a port is missing"),
        ("80:", "a port is missing"),
        ("1:2:3", "`2:3` is not a port number"),
        ("1-2-3", "`2-3` is not a port number"),
        (" 80", "` 80` is not a port number"),
        ("80/sctp", "unknown protocol `sctp`"),
        ("80/UDP", "unknown protocol `UDP`"),
        ("80/udp/tcp", "`80/udp` is not a port number"),
    ];
    for (spec, want) in bad {
        let e = parse_spec(spec).unwrap_err();
        assert!(e.contains(want), "{spec:?}: {e:?} lacks {want:?}");
    }
}

#[test]
fn targets_and_addresses() {
    assert_eq!(
        parse_target("db.internal"),
        Ok(Host::Name("db.internal".into()))
    );
    let v6 = Host::Ip("::1".parse().unwrap());
    assert_eq!(parse_target("::1"), Ok(v6.clone()));
    assert_eq!(parse_target("[::1]"), Ok(v6));
    assert_eq!(
        parse_target("10.0.0.5"),
        Ok(Host::Ip("10.0.0.5".parse().unwrap()))
    );
    for (bad, want) in [
        ("db:5432", "`db:5432` has a port (5432)"),
        ("[::1]:80", "`[::1]:80` has a port (80)"),
        ("", "empty"),
        ("bad_name!", "bad_name!"),
    ] {
        let e = parse_target(bad).unwrap_err();
        assert!(e.contains(want), "{bad:?}: {e}");
    }
    assert_eq!(parse_address("localhost"), Ok(AddressArg::Localhost));
    assert_eq!(parse_address("LocalHost"), Ok(AddressArg::Localhost));
    let v6: IpAddr = "::1".parse().unwrap();
    assert_eq!(parse_address("[::1]"), Ok(AddressArg::Ip(v6)));
    assert_eq!(parse_address("::1"), Ok(AddressArg::Ip(v6)));
    for bad in ["", "example.com", "127.0.0.1:80", "[::1"] {
        assert!(parse_address(bad).is_err(), "{bad:?}");
    }
    assert!(parse_address("").unwrap_err().contains("an empty address"));
}

#[test]
fn addresses_default_dedupe_and_keep_order() {
    let v4 = BindAddr {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        optional: true,
    };
    let v6 = BindAddr {
        ip: Ipv6Addr::LOCALHOST.into(),
        optional: true,
    };
    let plan = |args: &[&str]| parse(args).unwrap().plan().unwrap();
    assert_eq!(plan(&["db", "80"]).addresses, [v4, v6]);
    // Comma-separated and repeated; a duplicate counts once; an IP named on its own
    // must be bound even when `localhost` names it too.
    let p = plan(&[
        "db",
        "80",
        "--address",
        "10.0.0.1,localhost",
        "--address",
        "::1,10.0.0.1",
    ]);
    assert_eq!(
        p.addresses,
        [
            BindAddr {
                ip: "10.0.0.1".parse().unwrap(),
                optional: false
            },
            v4,
            BindAddr {
                optional: false,
                ..v6
            },
        ]
    );
    assert_eq!(plan(&["db", "80", "--address", "[::]"]).addresses.len(), 1);
}

#[test]
fn plan_reads_the_command_line() {
    let args = parse(&[
        "db.internal",
        "8080:80",
        ":5000",
        "53/udp",
        "--ports-file",
        "p.json",
        "--idle-timeout",
        "5m",
        "--connect-timeout",
        "2s",
        "--max-sessions",
        "9",
        "--drain",
        "1s",
        "--resolver",
        "hickory",
        "--",
        "sh",
        "-c",
        "exit 3",
    ])
    .unwrap();
    let plan = args.plan().unwrap();
    assert_eq!(plan.host, Host::Name("db.internal".into()));
    assert_eq!(plan.specs.len(), 3);
    assert_eq!(plan.ports_file.as_deref(), Some(Path::new("p.json")));
    assert_eq!(plan.command, ["sh", "-c", "exit 3"]);
    let s = &plan.settings;
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(s.connect_timeout, Duration::from_secs(2));
    assert_eq!(s.udp_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(s.max_sessions, 9);
    assert_eq!(plan.drain, Duration::from_secs(1));
    assert_eq!(s.resolver, proxy_core::resolve::ResolverKind::Hickory);
    // Defaults: no TCP idle timeout, UDP sessions end after 30 s.
    let plan = parse(&["db", "80"]).unwrap().plan().unwrap();
    assert_eq!(plan.settings.idle_timeout, None);
    assert_eq!(
        plan.settings.udp_idle_timeout,
        Some(Duration::from_secs(30))
    );
    assert!(plan.command.is_empty() && plan.ports_file.is_none());
    // SPEC is required; `--` alone takes no SPEC.
    assert!(parse(&["db"]).is_err());
    assert!(parse(&["db", "--", "80"]).is_err());
}

#[test]
fn local_ports_are_checked_per_protocol() {
    let plan = |args: &[&str]| parse(args).unwrap().plan();
    assert!(plan(&["db", "53", "53/udp", ":80", ":80", "0:80/udp"]).is_ok());
    let e = plan(&["db", "8080:80", "8080:81"]).unwrap_err().0;
    assert!(
        e.contains("local port 8080/tcp is used by both '8080:80' and '8080:81'"),
        "{e}"
    );
    let e = plan(&["db", "5000-5002", "5002:80"]).unwrap_err().0;
    assert!(
        e.contains("5002/tcp") && e.contains("'5000-5002' and '5002:80'"),
        "{e}"
    );
    let e = plan(&["db", "53/udp", "53:54/udp"]).unwrap_err().0;
    assert!(e.contains("53/udp"), "{e}");
    let e = plan(&["db", "53", "53"]).unwrap_err().0;
    assert!(e.contains("used twice in '53'"), "{e}");
    let e = plan(&["db", "53", "--listen", "[::1]:53"]).unwrap_err().0;
    assert!(
        e.contains("`--listen [::1]:53`") && e.contains("--address"),
        "{e}"
    );
}

#[test]
fn json_strings_are_escaped() {
    let mut s = String::new();
    push_json_string(&mut s, "a\"b\\c\nd\u{1}é");
    assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    let back: String = serde_json::from_str(&s).unwrap();
    assert_eq!(back, "a\"b\\c\nd\u{1}é");
}

#[test]
fn atomic_write_replaces_and_leaves_no_temporary() {
    let dir = std::env::temp_dir().join(format!("proxy-forward-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ports.json");
    write_atomically(&file, "one").unwrap();
    write_atomically(&file, "two").unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "two");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    remove_file(&file).unwrap();
    remove_file(&file).unwrap(); // a missing file is fine
    std::fs::remove_dir(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn exit_codes_of_statuses() {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
    assert_eq!(exit_code_of(ExitStatus::from_raw(0)), 0);
    assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137); // SIGKILL
    assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143); // SIGTERM
    let e = anyhow::Error::from(CommandExit { code: 7 });
    assert_eq!(command_exit_code(&e), Some(ExitCode::from(7)));
    assert_eq!(command_exit_code(&anyhow::anyhow!("other")), None);
}

/// Counts lookups and answers after `gate` opens.
struct Counting {
    lookups: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
}

impl Resolve for Counting {
    fn resolve(&self, name: &str) -> Resolving {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let fail = name == "fails";
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            if fail {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such name"));
            }
            Ok(Resolution::new(vec![IpAddr::from([10, 0, 0, 1])], None))
        })
    }
}

#[tokio::test]
async fn shared_lookups_ask_once_per_name() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let shared = SharedLookups::new(Arc::new(Counting {
        lookups: lookups.clone(),
        gate,
    }));
    // Ten at once: one lookup, ten answers.
    let waiting: Vec<_> = (0..10).map(|_| shared.resolve("db")).collect();
    let other = shared.resolve("fails");
    open.send(true).unwrap();
    for answer in futures_join(waiting).await {
        assert_eq!(answer.unwrap().addrs(), [IpAddr::from([10, 0, 0, 1])]);
    }
    let e = other.await.unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string()),
        (io::ErrorKind::NotFound, "no such name".into())
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    // Just after: the same answer, no new lookup.
    assert!(shared.resolve("db").await.is_ok());
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
}

async fn futures_join(all: Vec<Resolving>) -> Vec<io::Result<Resolution>> {
    let mut out = Vec::new();
    for f in all {
        out.push(f.await);
    }
    out
}

#[test]
fn named_remote_ports_and_kubernetes_targets() {
    let spec = parse_spec("8080:http").unwrap();
    assert_eq!(spec.remote_name(), Some("http"));
    assert!(!spec.local_from_remote());
    assert_eq!(spec.mappings().next().unwrap().local, 8080);
    let spec = parse_spec("metrics-2").unwrap();
    assert_eq!(spec.remote_name(), Some("metrics-2"));
    assert!(
        spec.local_from_remote(),
        "no LOCAL: the number the name stands for"
    );
    assert!(
        !parse_spec(":http").unwrap().local_from_remote(),
        "a kernel-chosen port"
    );

    assert_eq!(
        parse_forward_target("svc/web").unwrap(),
        ForwardTarget::Kube("svc/web".parse().unwrap())
    );
    assert_eq!(
        parse_forward_target("web").unwrap(),
        ForwardTarget::Host(Host::Name("web".into()))
    );
    let e = parse_forward_target("pvc/data").unwrap_err();
    assert!(
        e.contains("`pvc` in `pvc/data` is not a resource type"),
        "{e}"
    );

    // A host takes neither port names nor kubectl's flags.
    let e = parse(&["db", "8080:http"]).unwrap().plan().unwrap_err();
    assert!(
        e.0.contains("SPEC '8080:http' names its remote port"),
        "{}",
        e.0
    );
    let e = parse(&["db", "80", "-n", "shop"])
        .unwrap()
        .plan()
        .unwrap_err();
    assert!(
        e.0.contains("--namespace applies to TYPE/NAME targets"),
        "{}",
        e.0
    );
    let args = parse(&[
        "deploy/web",
        "8080:http",
        "-n",
        "shop",
        "--protocol",
        "spdy",
    ])
    .unwrap();
    assert_eq!(args.kube.namespace.as_deref(), Some("shop"));
    assert_eq!(
        args.kube.protocol,
        Some(proxy_kube::forward::Protocol::Spdy)
    );
    assert!(parse(&["svc/web", "80", "--protocol", "h2"]).is_err());
}
