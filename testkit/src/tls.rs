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

/// A certificate authority made with `openssl` in a temp dir (removed on drop), issuing
/// server and client certificates, for tests that verify chains.
#[derive(Debug)]
pub struct Ca {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM), to trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A certificate an [`Ca`] issued, with its key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate followed by its key, in one file.
    pub combined: PathBuf,
}

impl Ca {
    /// A new CA named `name` (P-256, valid two days).
    pub fn new(name: &str) -> Ca {
        let dir = tempfile::Builder::new()
            .prefix("proxy-testkit-ca-")
            .tempdir()
            .expect("a temp dir for a CA");
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        openssl_ok(
            Command::new(openssl())
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .arg("-subj")
                .arg(format!("/CN={name}"))
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        Ca { dir, cert, key }
    }

    /// A server certificate for the DNS names `names` (the first is its CN).
    pub fn server(&self, names: &[&str]) -> Issued {
        let san = (names.iter().map(|n| format!("DNS:{n}")))
            .collect::<Vec<_>>()
            .join(",");
        self.issue(
            names[0],
            &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth"),
        )
    }

    /// A client certificate whose CN is `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, "extendedKeyUsage=clientAuth")
    }

    fn issue(&self, cn: &str, extensions: &str) -> Issued {
        let d = self.dir.path();
        let stem = format!("{}-{}", cn.replace(['*', '/'], "_"), std::process::id());
        let (cert, key, csr, ext, combined) = (
            d.join(format!("{stem}.crt")),
            d.join(format!("{stem}.key")),
            d.join(format!("{stem}.csr")),
            d.join(format!("{stem}.ext")),
            d.join(format!("{stem}.pem")),
        );
        std::fs::write(&ext, extensions).unwrap();
        openssl_ok(
            Command::new(openssl())
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-subj"])
                .arg(format!("/CN={cn}"))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        let mut sign = Command::new(openssl());
        sign.args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert);
        openssl_ok(&mut sign);
        let both = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
        std::fs::write(&combined, both).unwrap();
        Issued {
            cert,
            key,
            combined,
        }
    }
}

/// Runs an openssl command, failing the test with its output unless it succeeds.
fn openssl_ok(cmd: &mut Command) {
    let what = format!("{cmd:?}");
    let (status, _, err) = run_limited(cmd, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{what}: {err}");
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
