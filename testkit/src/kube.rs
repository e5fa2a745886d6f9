//! Real Kubernetes clients against a port-forward server: released `kubectl` binaries
//! found by version, a kubeconfig of their own in a temp dir (so runs never read or write
//! `~/.kube`), `kubectl port-forward` processes whose `Forwarding from` lines tell the local
//! ports, `kubectl proxy` processes whose `Starting to serve on` line tells their address,
//! a CA and server certificate made with the `openssl` CLI, and a Python venv with the
//! `kubernetes` package from PyPI.
//!
//! What the clients do, learnt by running kubectl 1.27, 1.30 and 1.33 and the Python client
//! 37.0 against servers that log every request:
//! - kubectl prints `Forwarding from 127.0.0.1:PORT -> N` (and `[::1]:PORT` with the
//!   default `--address localhost`) and `Handling connection for PORT` on **stdout**;
//!   errors (`error: ...`, klog `E1207 ...` lines) go to stderr.
//! - Discovery, once per `--cache-dir`: `GET /api`, `/apis` (Accept: aggregated discovery
//!   first, `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,`
//!   `...;v=v2beta1;...,application/json`; 1.27 only v2beta1), then `/api/v1` and
//!   `/apis/apps/v1` (`application/json, */*`), all with `?timeout=32s`. Plain JSON
//!   answers do.
//! - Then `GET .../pods/NAME` twice (1.33 asks the second time with
//!   `Accept: application/vnd.kubernetes.protobuf,application/json`: JSON must do); for
//!   `svc/` and `deploy/`, the object, then `GET .../pods?labelSelector=app%3Dweb`. With no
//!   pod selected kubectl watches (`&resourceVersion=RV&watch=true`) until
//!   `--pod-running-timeout` (60 s): `error: timed out waiting for the condition`.
//! - It checks the phase itself: `error: unable to forward port because pod is not
//!   running. Current status=Pending`. A NotFound Status prints as
//!   `Error from server (NotFound): pods "nope" not found`.
//! - No credentials go over plain `http://` (kubernetes/kubectl#744); over https a wrong
//!   token's 401 prints `error: You must be logged in to the server (the server has asked
//!   for the client to provide credentials)` after four klog lines, whatever the Status's
//!   message. The Python client sends its token over http too.
//! - `KUBECTL_PORT_FORWARD_WEBSOCKETS`: 1.27 ignores it; 1.30 tries the SPDY-over-WebSocket
//!   tunnel only when it is `true`; 1.31 and later unless it is `false`. The tunnel is
//!   `GET .../pods/NAME/portforward` (no query) with `Upgrade: websocket`,
//!   `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`.
//!   Any answer but a 101 (400, 404), or a 101 with a subprotocol it did not offer, makes
//!   kubectl fall back to SPDY on a new connection: `POST .../portforward` (no query),
//!   `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`. A connection
//!   closed without an answer does not: `error: error upgrading connection: unexpected
//!   EOF`. When SPDY fails too, kubectl prints `error: error upgrading connection: MESSAGE`
//!   with the Status's message.
//! - After an error on a connection's error stream all three print it
//!   (`an error occurred forwarding L -> R: error forwarding port R to pod ...`) and close
//!   the whole session: kubectl exits 1 with `error: lost connection to pod`.
//! - When the pod's side ends first (a FIN on the data stream), kubectl before 1.32 closes
//!   the local connection only once the error stream has ended too; 1.32 and later reset
//!   the data stream first (kubernetes/kubernetes#128681). The kubelet closes both streams
//!   as soon as either direction is done.
//! - The Python client asks `GET .../portforward?ports=A,B` with
//!   `sec-websocket-protocol: v5.channel.k8s.io,v4.channel.k8s.io`; it wants first a
//!   3-byte frame (channel, port little-endian) on each channel, takes an error channel's
//!   text as the port's error (`PortForward.error(port)`) and closes that port's socket,
//!   and never half-closes: a local EOF closes the port.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process::{KillOnDrop, Lines};
use crate::wait::PROMPT;

/// Where Debian's `kubectl` package (google-cloud-cli) keeps its releases, when `dpkg`
/// cannot say.
const GOOGLE_CLOUD_SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

// ===== kubectl =====

/// One released kubectl binary, e.g. `kubectl.1.27`.
#[derive(Clone, Debug)]
pub struct Kubectl {
    path: PathBuf,
    version: String,
}

/// How `kubectl port-forward` is asked to connect, through `KUBECTL_PORT_FORWARD_WEBSOCKETS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The variable unset: SPDY up to 1.30, the WebSocket tunnel from 1.31.
    Default,
    /// `false`: SPDY.
    Spdy,
    /// `true`: the WebSocket tunnel, falling back to SPDY when the upgrade fails.
    WebSocket,
}

impl Transport {
    /// The value of `KUBECTL_PORT_FORWARD_WEBSOCKETS`, if it is set.
    pub fn env(self) -> Option<&'static str> {
        match self {
            Transport::Default => None,
            Transport::Spdy => Some("false"),
            Transport::WebSocket => Some("true"),
        }
    }
}

impl Kubectl {
    /// kubectl `version` (`"1.27"`): `kubectl.1.27` (or `kubectl-1.27`) in the directories
    /// `dpkg -L kubectl` lists, on `PATH`, or in google-cloud-sdk's `bin`.
    pub fn find(version: &str) -> Option<Kubectl> {
        let names = [format!("kubectl.{version}"), format!("kubectl-{version}")];
        search_dirs().iter().find_map(|dir| {
            names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .map(|path| Kubectl {
                    path,
                    version: version.to_owned(),
                })
        })
    }

    /// Like [`find`](Kubectl::find), printing `skipping: kubectl VERSION not found` (so a
    /// test that returns early never passes silently) when it is missing.
    pub fn find_or_skip(version: &str) -> Option<Kubectl> {
        let found = Kubectl::find(version);
        if found.is_none() {
            println!(
                "skipping: kubectl {version} not found (looked for kubectl.{version} in {})",
                search_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        found
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version asked for (`"1.27"`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `kubectl` with `KUBECONFIG` and `--cache-dir` from `config`, the environment
    /// variables that would change its behaviour removed, and `args`.
    pub fn command(&self, config: &Kubeconfig, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.env("KUBECONFIG", config.path())
            .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
            .env_remove("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env("HOME", config.dir())
            .arg("--cache-dir")
            .arg(config.cache_dir())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl ARGS` to completion, for at most `limit`: exit status (`None` when it
    /// was killed at the limit), stdout, stderr.
    pub fn run(
        &self,
        config: &Kubeconfig,
        args: &[&str],
        limit: Duration,
    ) -> (Option<ExitStatus>, String, String) {
        let mut cmd = self.command(config, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = KillOnDrop::spawn(&mut cmd)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.path.display()));
        let (out, err) = child.take_output();
        let status = child.wait_timeout(limit);
        out.wait_closed(PROMPT);
        err.wait_closed(PROMPT);
        (status, out.text(), err.text())
    }

    /// Starts `kubectl port-forward RESOURCE SPECS...` (with `--address ADDRESS` when
    /// given) over `transport`. See [`PortForward::wait_ready`] for its local ports.
    pub fn port_forward(
        &self,
        config: &Kubeconfig,
        transport: Transport,
        resource: &str,
        specs: &[&str],
        address: Option<&str>,
    ) -> PortForward {
        let mut args = vec!["port-forward", resource];
        args.extend_from_slice(specs);
        if let Some(address) = address {
            args.extend(["--address", address]);
        }
        let mut cmd = self.command(config, &args);
        if let Some(value) = transport.env() {
            cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", value);
        }
        let what = format!(
            "kubectl {} {} ({transport:?})",
            self.version,
            args.join(" ")
        );
        PortForward::spawn(cmd, what, specs.len())
    }
}

/// The directories searched for `kubectl.VERSION`, found once: those of `dpkg -L kubectl`
/// that hold a `kubectl.*`, `PATH`, and google-cloud-sdk's `bin`.
fn search_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let listed = Command::new("dpkg")
            .args(["-L", "kubectl"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = listed {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let p = Path::new(line.trim());
                let versioned = (p.file_name())
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("kubectl."));
                if let (true, Some(dir)) = (versioned, p.parent()) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.push(PathBuf::from(GOOGLE_CLOUD_SDK_BIN));
        let mut seen = Vec::new();
        dirs.retain(|d| {
            let new = !seen.contains(d);
            seen.push(d.clone());
            new
        });
        dirs
    })
}

// ===== kubectl port-forward =====

/// A running `kubectl port-forward`; killed on drop, printing its output when the test is
/// failing.
pub struct PortForward {
    child: KillOnDrop,
    stdout: Lines,
    stderr: Lines,
    what: String,
    specs: usize,
}

/// One `Forwarding from ADDR -> REMOTE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// Where kubectl listens: `127.0.0.1:PORT` or `[::1]:PORT`.
    pub local: SocketAddr,
    /// The pod's port it forwards to.
    pub remote: u16,
}

/// Parses `Forwarding from 127.0.0.1:PORT -> N` or `Forwarding from [::1]:PORT -> N`.
pub fn forwarding_line(line: &str) -> Option<Forwarding> {
    let rest = line.trim().strip_prefix("Forwarding from ")?;
    let (local, remote) = rest.split_once(" -> ")?;
    Some(Forwarding {
        local: local.parse().ok()?,
        remote: remote.trim().parse().ok()?,
    })
}

impl PortForward {
    /// Runs `cmd`, a port-forward that prints kubectl's lines (kubectl itself, or another
    /// that claims to print the same), with `specs` ports; `what` names it in messages.
    pub fn spawn(mut cmd: Command, what: String, specs: usize) -> PortForward {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = KillOnDrop::spawn(&mut cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (stdout, stderr) = child.take_output();
        PortForward {
            child,
            stdout,
            stderr,
            what,
            specs,
        }
    }

    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All `Forwarding from` lines once there is one per spec and listen address, within
    /// [`PROMPT`]: one per spec for IPv4 (kubectl's default `--address localhost` adds
    /// `[::1]` lines when the host has IPv6). Fails the test with kubectl's output when
    /// they do not come, or kubectl exits first.
    pub fn wait_ready(&self) -> Vec<Forwarding> {
        self.try_wait_ready(PROMPT).unwrap_or_else(|| {
            panic!(
                "{}: no `Forwarding from` line per port within {PROMPT:?}\n{}",
                self.what,
                self.output()
            )
        })
    }

    /// [`wait_ready`](PortForward::wait_ready) that returns `None` instead of failing.
    pub fn try_wait_ready(&self, timeout: Duration) -> Option<Vec<Forwarding>> {
        let want = self.specs;
        self.stdout.wait(timeout, |lines| {
            let all: Vec<Forwarding> = lines.iter().filter_map(|l| forwarding_line(l)).collect();
            let v4 = all.iter().filter(|f| f.local.is_ipv4()).count();
            (v4 >= want).then_some(all)
        })
    }

    /// The IPv4 local address of the `n`th spec (from 0), once ready.
    pub fn local(&self, n: usize) -> SocketAddr {
        let v4: Vec<Forwarding> = (self.wait_ready().into_iter())
            .filter(|f| f.local.is_ipv4())
            .collect();
        v4.get(n)
            .unwrap_or_else(|| panic!("{}: no port {n}: {v4:?}", self.what))
            .local
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Both, labelled, for failure messages.
    pub fn output(&self) -> String {
        crate::process::labelled_output(&self.what, &self.stdout, &self.stderr)
    }

    /// The first stderr line containing `needle`, waiting up to `timeout`.
    pub fn find_stderr(&self, timeout: Duration, needle: &str) -> Option<String> {
        self.stderr.find(timeout, needle)
    }

    /// The first stdout line containing `needle`, waiting up to `timeout`.
    pub fn find_stdout(&self, timeout: Duration, needle: &str) -> Option<String> {
        self.stdout.find(timeout, needle)
    }

    /// Waits up to `limit` for kubectl to exit (killing it when it does not) and for its
    /// output to end; its exit status, `None` when it was killed.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = self.child.wait_timeout(limit);
        self.stdout.wait_closed(PROMPT);
        self.stderr.wait_closed(PROMPT);
        status
    }

    /// Whether kubectl has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// What it runs, for messages: version, arguments, transport.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

// ===== kubectl proxy =====

/// A running `kubectl proxy --port=0`: a Go reverse proxy (client-go's upgrade-aware
/// handler) on `127.0.0.1`, sending every request on to the kubeconfig's API server with
/// the kubeconfig's credentials and TLS. Killed on drop, printing its output when the test
/// is failing.
///
/// What it does, learnt by running 1.27 and 1.33: it prints `Starting to serve on
/// 127.0.0.1:PORT` on stdout; it answers a request whose `Host` is not `localhost`,
/// `127.0.0.1` or `[::1]` (any port) with `403 Forbidden`; and it refuses `exec` and
/// `attach` paths, not `portforward`.
pub struct KubectlProxy {
    child: KillOnDrop,
    stdout: Lines,
    stderr: Lines,
    what: String,
    addr: SocketAddr,
}

/// Parses `Starting to serve on 127.0.0.1:PORT`.
pub fn serving_line(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("Starting to serve on ")?
        .parse()
        .ok()
}

impl Kubectl {
    /// Starts `kubectl proxy --port=0` for `config` and waits (at most [`PROMPT`]) for the
    /// address it serves on. Fails the test with kubectl's output when no `Starting to
    /// serve on` line comes, or kubectl exits first.
    pub fn proxy(&self, config: &Kubeconfig) -> KubectlProxy {
        let mut cmd = self.command(config, &["proxy", "--port=0", "--address=127.0.0.1"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = KillOnDrop::spawn(&mut cmd)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.path.display()));
        let (stdout, stderr) = child.take_output();
        let what = format!("kubectl {} proxy", self.version);
        let found = stdout.wait(PROMPT, |lines| lines.iter().find_map(|l| serving_line(l)));
        let Some(addr) = found else {
            child.kill();
            stdout.wait_closed(PROMPT);
            stderr.wait_closed(PROMPT);
            panic!(
                "{what}: no `Starting to serve on` line within {PROMPT:?}\n\
                 ---- stdout ----\n{}\n---- stderr ----\n{}\n----",
                stdout.text(),
                stderr.text()
            );
        };
        KubectlProxy {
            child,
            stdout,
            stderr,
            what,
            addr,
        }
    }
}

impl KubectlProxy {
    /// Where it serves: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for a kubeconfig of its own.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether kubectl has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Its stdout and stderr so far, labelled, for failure messages.
    pub fn output(&self) -> String {
        crate::process::labelled_output(&self.what, &self.stdout, &self.stderr)
    }

    /// What it runs (`kubectl 1.33 proxy`), for messages.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

// ===== kubeconfig =====

/// A kubeconfig file in a temp dir of its own, with a `--cache-dir` (discovery cache) and
/// `HOME` next to it; all removed on drop.
#[derive(Debug)]
pub struct Kubeconfig {
    dir: tempfile::TempDir,
    path: PathBuf,
    cache_dir: PathBuf,
}

/// What a [`Kubeconfig`] says: built with bare-noun setters, written by
/// [`write`](KubeconfigBuilder::write).
#[derive(Clone, Debug, Default)]
pub struct KubeconfigBuilder {
    server: String,
    ca_pem: Option<String>,
    token: Option<String>,
    namespace: Option<String>,
}

impl Kubeconfig {
    /// A kubeconfig for the API server at `server` (`http://127.0.0.1:PORT` or
    /// `https://...`).
    pub fn builder(server: impl Into<String>) -> KubeconfigBuilder {
        KubeconfigBuilder {
            server: server.into(),
            ..KubeconfigBuilder::default()
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp dir holding it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// kubectl's `--cache-dir`.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }
}

impl KubeconfigBuilder {
    /// The CA certificate (PEM) to trust, written as `certificate-authority-data`. Default:
    /// none, the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The bearer token. Default: none. kubectl sends it only over https.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The context's namespace. Default: none (kubectl uses `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Writes the file (JSON, which kubectl and the Python client read as YAML) into a new
    /// temp dir.
    pub fn write(self) -> Kubeconfig {
        let dir = tempfile::Builder::new()
            .prefix("proxy-testkit-kube-")
            .tempdir()
            .expect("create a temp dir for the kubeconfig");
        let mut cluster = serde_json::json!({ "server": self.server });
        if let Some(pem) = &self.ca_pem {
            cluster["certificate-authority-data"] = base64(pem.as_bytes()).into();
        }
        let mut user = serde_json::json!({});
        if let Some(token) = &self.token {
            user["token"] = token.clone().into();
        }
        let mut context = serde_json::json!({ "cluster": "test", "user": "test" });
        if let Some(ns) = &self.namespace {
            context["namespace"] = ns.clone().into();
        }
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "test", "cluster": cluster }],
            "users": [{ "name": "test", "user": user }],
            "contexts": [{ "name": "test", "context": context }],
            "current-context": "test",
            "preferences": {},
        });
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let cache_dir = dir.path().join("cache");
        Kubeconfig {
            dir,
            path,
            cache_dir,
        }
    }
}

/// Standard base64 with padding, for `certificate-authority-data`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ===== certificates =====

/// A CA and a server certificate it signed for `127.0.0.1` and `localhost`, made with the
/// `openssl` CLI in a temp dir (removed on drop).
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes them (P-256 keys, valid for two days). Fails the test, naming the package,
    /// when `openssl` is not installed.
    pub fn generate() -> TestCerts {
        let openssl = crate::process::require_program(
            "openssl",
            &["/usr/bin/openssl"],
            "openssl",
            "a CA and a server certificate",
        );
        let dir = tempfile::Builder::new()
            .prefix("proxy-testkit-certs-")
            .tempdir()
            .expect("create a temp dir for certificates");
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "`openssl {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=proxy-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&csr);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TestCerts { dir }
    }

    /// The CA certificate (PEM file).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate's PEM text.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_cert()).expect("read ca.pem")
    }

    /// The server certificate (PEM file), for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PKCS#8 PEM file).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

// ===== the Python client =====

/// The Python of a venv that has the `kubernetes` package (the official Python client),
/// made once under the target dir (`target/py-kubernetes-venv`) with `python3 -m venv` and
/// `pip install kubernetes`, and reused while it can import the package. Fails the test
/// with pip's output when the venv cannot be made (Debian/Ubuntu: the `python3-venv`
/// package) or pip cannot install.
pub fn python_kubernetes() -> PathBuf {
    static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = &*made {
        return python.clone();
    }
    let venv = target_dir().join("py-kubernetes-venv");
    let python = venv.join("bin").join("python");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", "import kubernetes.stream"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !imports(&python) {
        let python3 = crate::process::require_program(
            "python3",
            &["/usr/bin/python3"],
            "python3-venv",
            "the Python kubernetes client in a venv",
        );
        let mut log = String::new();
        let mut step = |program: &Path, args: &[&str], limit: Duration| {
            let (status, out, err) = run_logged(program, args, limit);
            let _ = writeln!(
                log,
                "$ {} {}\n{out}{err}",
                program.display(),
                args.join(" ")
            );
            assert!(
                status.is_some_and(|s| s.success()),
                "making the venv {} failed ({status:?}); on Debian/Ubuntu `python3 -m venv` \
                 needs the python3-venv package, and pip needs PyPI:\n{log}",
                venv.display(),
            );
        };
        let v = venv.to_string_lossy().into_owned();
        step(
            &python3,
            &["-m", "venv", "--clear", &v],
            Duration::from_secs(120),
        );
        step(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "kubernetes",
            ],
            Duration::from_secs(600),
        );
        assert!(
            imports(&python),
            "pip installed kubernetes, yet it does not import:\n{log}"
        );
    }
    *made = Some(python.clone());
    python
}

/// Runs a program with a deadline: exit status (`None` when killed), stdout, stderr.
fn run_logged(
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> (Option<ExitStatus>, String, String) {
    let mut child = KillOnDrop::spawn(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let (out, err) = child.take_output();
    let status = child.wait_timeout(limit);
    out.wait_closed(PROMPT);
    err.wait_closed(PROMPT);
    (status, out.text(), err.text())
}

/// The cargo target dir: `CARGO_TARGET_DIR`, or the one holding this test binary
/// (`target/debug/deps/NAME`), or `target` in the current directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target[/TRIPLE]/PROFILE/deps/NAME
    (exe.ancestors())
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Runs a Python `script` with the venv's Python and `args`, for at most `limit`: exit
/// status (`None` when killed), stdout, stderr.
pub fn run_python(
    script: &str,
    args: &[&str],
    limit: Duration,
) -> (Option<ExitStatus>, String, String) {
    let python = python_kubernetes();
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    let started = Instant::now();
    let result = run_logged(&python, &all, limit);
    if result.0.is_none() {
        eprintln!("python killed after {:?}", started.elapsed());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn serving_lines() {
        assert_eq!(
            serving_line("Starting to serve on 127.0.0.1:38679\n"),
            Some("127.0.0.1:38679".parse().unwrap())
        );
        assert_eq!(
            serving_line("Starting to serve on [::]:8001").map(|a| a.port()),
            Some(8001)
        );
        assert_eq!(serving_line("error: unknown flag: --port"), None);
    }

    #[test]
    fn forwarding_lines_of_both_families() {
        assert_eq!(
            forwarding_line("Forwarding from 127.0.0.1:40123 -> 8080"),
            Some(Forwarding {
                local: "127.0.0.1:40123".parse().unwrap(),
                remote: 8080
            })
        );
        assert_eq!(
            forwarding_line("Forwarding from [::1]:40123 -> 80").map(|f| f.local.is_ipv6()),
            Some(true)
        );
        assert_eq!(forwarding_line("Handling connection for 40123"), None);
    }
}
