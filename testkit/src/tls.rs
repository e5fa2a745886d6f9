//! Real TLS peers from the `openssl` CLI: self-signed certificates for a name, an
//! `openssl s_server` presenting one, and `openssl s_client` telling which certificate a
//! server presented, so a test sees which upstream a TLS connection reached without any
//! TLS code of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{KillOnDrop, require_program, run_limited};

/// The `openssl` program; fails the test, naming the package, when it is missing.
pub fn openssl() -> PathBuf {
    require_program(
        "openssl",
        &["/usr/bin/openssl"],
        "openssl",
        "real TLS peers",
    )
}

/// A self-signed certificate (P-256, valid two days) for `name` (its CN and DNS SAN),
/// written as `NAME.crt` and `NAME.key` in `dir`; their paths.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let (status, _, err) = run_limited(
        Command::new(openssl())
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "openssl req for {name}: {err}"
    );
    (cert, key)
}

/// `openssl s_server -www` on a kernel-chosen loopback port, presenting a self-signed
/// certificate for its name; stopped on drop.
#[derive(Debug)]
pub struct OpensslServer {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl OpensslServer {
    /// Starts one for `name` (the CN of the certificate it presents).
    pub fn start(name: &str) -> OpensslServer {
        let dir = tempfile::Builder::new()
            .prefix("proxy-testkit-tls-")
            .tempdir()
            .expect("a temp dir for a certificate");
        let (cert, key) = self_signed(dir.path(), name);
        let mut child = KillOnDrop::spawn(
            Command::new(openssl())
                .args(["s_server", "-www", "-accept", "127.0.0.1:0", "-cert"])
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("start openssl s_server");
        let (stdout, stderr) = child.take_output();
        let addr = stdout
            .wait(Duration::from_secs(20), |lines| {
                (lines.iter()).find_map(|l| l.strip_prefix("ACCEPT ")?.trim().parse().ok())
            })
            .unwrap_or_else(|| {
                panic!(
                    "openssl s_server for {name} did not say where it listens: {}",
                    crate::process::labelled_output("s_server", &stdout, &stderr)
                )
            });
        OpensslServer {
            addr,
            _child: child,
            _dir: dir,
        }
    }
}

/// Connects `openssl s_client` to `addr`, asking for `server_name` (none: no SNI), and
/// returns the CN of the certificate the server presented; `Err` with what s_client said
/// when the handshake did not complete.
pub fn presented_name(addr: SocketAddr, server_name: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(openssl());
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match server_name {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let (status, out, err) = run_limited(cmd.stdin(Stdio::null()), Duration::from_secs(20));
    let subject = (out.lines().chain(err.lines()))
        .find_map(|l| l.trim().strip_prefix("subject=")?.split("CN = ").nth(1))
        .map(|cn| cn.split(',').next().unwrap_or(cn).trim().to_owned());
    match subject {
        Some(cn) if status.is_some_and(|s| s.success()) => Ok(cn),
        _ => Err(format!("s_client {status:?}: {out}{err}")),
    }
}
