//! `dig`, the real DNS client of the end-to-end tests, and what the tests read from its
//! output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proxy_testkit::process::require_program;

/// The dig binary; fails the test (never skips it) when dig is not installed.
pub(crate) fn dig_program() -> PathBuf {
    require_program("dig", &["/usr/bin/dig"], "dnsutils", "a real DNS client")
}

/// What `dig` printed for one query, and the parts the tests compare.
#[derive(Debug)]
pub(crate) struct DigAnswer {
    /// dig's whole output.
    pub(crate) output: String,
}

impl DigAnswer {
    /// The header flags (`qr aa rd ra`, with `tc` when the answer was truncated).
    pub(crate) fn flags(&self) -> Vec<String> {
        self.output
            .lines()
            .find_map(|l| l.strip_prefix(";; flags: "))
            .and_then(|l| l.split(';').next())
            .map(|f| f.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    /// The status (`NOERROR`, `NXDOMAIN`, ...).
    pub(crate) fn status(&self) -> Option<String> {
        let line = self.output.lines().find(|l| l.contains("status: "))?;
        let at = line.find("status: ")? + "status: ".len();
        Some(line[at..].split(',').next()?.trim().to_owned())
    }

    /// The size of the received message, from `;; MSG SIZE  rcvd: N`.
    pub(crate) fn msg_size(&self) -> Option<usize> {
        self.output
            .lines()
            .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The answer section's records, sorted (dnsmasq may order them differently).
    pub(crate) fn answers(&self) -> Vec<String> {
        let mut records: Vec<String> = self
            .output
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        records.sort();
        records
    }
}

/// Runs `dig @SERVER -p PORT ARGS` with one try of at most 5 s, so a lost datagram fails
/// the test instead of hiding behind a retry. Fails the test when dig does not succeed.
pub(crate) fn dig(server: SocketAddr, args: &[&str]) -> DigAnswer {
    let program = dig_program();
    let mut cmd = Command::new(&program);
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+tries=1", "+time=5"])
        .args(args)
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`dig @{server} {}` failed ({}):\n{output}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    DigAnswer { output }
}
