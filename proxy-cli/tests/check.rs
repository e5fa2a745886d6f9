//! `proxy --check ...`: validates arguments and configuration files without binding or
//! resolving anything, for CI and Kubernetes manifests.

mod support;

use std::net::{TcpListener, UdpSocket};

use proxy_testkit::process::TempPath;
use support::proxy::run;

#[test]
fn valid_arguments_exit_0_without_binding() {
    // Ports held by the test: --check must not try to bind them.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tport, uport) = (
        tcp.local_addr().unwrap().port().to_string(),
        udp.local_addr().unwrap().port().to_string(),
    );
    let cases: [&[&str]; 5] = [
        &[
            "--check",
            "tcp",
            &tport,
            "kube-dns.kube-system",
            "--listen",
            "127.0.0.1",
        ],
        &[
            "--check",
            "udp",
            &uport,
            "kube-dns.kube-system",
            "1",
            "--listen",
            "127.0.0.1",
        ],
        // The seed Pod's arguments, and a name that does not resolve: nothing is looked up.
        &["udp", "53", "kube-dns.default", "1", "--check"],
        &["--check", "tcp,udp", "53", "no-such-name.invalid", "1"],
        &[
            "--check",
            "forward",
            "db.internal",
            "8080:80",
            "5353:53/udp",
        ],
    ];
    for args in cases {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.contains("ok: the arguments are valid"),
            "{args:?}: {stdout}"
        );
    }
}

#[test]
fn invalid_arguments_exit_2_naming_the_problem() {
    let cases: [(&[&str], &str); 3] = [
        (&["--check", "udp", "53", "web", "5x"], "`x`"),
        (
            &["--check", "tcp", "53", "web", "--pipe-size", "1K"],
            "pipe size",
        ),
        (&["--check", "forward", "db", "0:0"], "0:0"),
    ];
    for (args, want) in cases {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn config_files_are_checked_without_starting() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/proxy.toml");
    let (code, stdout, stderr) = run(&["--check", "run", "--config", example]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    // One line per forward: name, protocols, listen and target.
    assert!(
        stdout
            .lines()
            .any(|l| l == "forward `dns`: tcp,udp 53 -> kube-dns.kube-system:53"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l
            == "forward `web`: tcp 127.0.0.1:8080,[::1]:8080 -> web.default.svc.cluster.local:80"),
        "{stdout}"
    );

    let bad = TempPath::new("check.toml");
    bad.write("[[forward]]\nprotocol = \"udp\"\nlisten = 80\ntarget = \"a:1\"\nbatch_size = 999\n");
    let (code, _, stderr) = run(&["--check", "run", "--config", bad.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("batch size 999"), "{stderr}");
    // The file is at fault, not the command line: no pointer to --help.
    assert!(!stderr.contains("--help"), "{stderr}");
}

#[test]
fn version_names_the_release_and_the_git_revision() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let want = format!("proxy {} (", env!("CARGO_PKG_VERSION"));
    assert!(stdout.starts_with(&want), "{stdout}");
    let revision = stdout
        .trim()
        .strip_prefix(&want)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{stdout}"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // Built in this checkout: the revision is HEAD's (marked when files were modified).
        Some(head) => assert!(
            revision == head || revision == format!("{head}-modified"),
            "{revision} is not HEAD {head}"
        ),
        None => assert_eq!(revision, "unknown"),
    }
}

#[test]
fn the_port_forward_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/port-forward.toml");
    let (code, stdout, stderr) = run(&["--check", "port-forward-server", "--config", example]);
    assert_eq!(
        (code, stdout.trim()),
        (0, "ok: the arguments are valid"),
        "{stderr}"
    );
    // A service listing a pod that neither the file nor --pod gives is refused, named.
    let (code, _, stderr) = run(&[
        "--check",
        "port-forward-server",
        "--config",
        example,
        "--service",
        "api:80=api",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("lists pod `api`, which is not given"),
        "{stderr}"
    );
}
