//! testssl.sh scans `proxy tcp 0 UPSTREAM --listen 127.0.0.1 --tls-cert FILE --tls-key
//! FILE` (an ECDSA P-256 certificate for `localhost` from a test CA, in front of an HTTP
//! upstream): protocols, cipher categories, every cipher one by one, forward secrecy, the
//! server's preferences, the server defaults (certificate, session resumption, extensions)
//! and the vulnerabilities. No finding may be rated above LOW.
//!
//! Severities: OK, INFO and LOW pass; MEDIUM, HIGH and CRITICAL fail. WARN (and FATAL) is
//! testssl saying that it could not carry out a check (a local problem, a timeout, a scan
//! problem): it fails too, since a check that did not run hides its result. The only
//! exclusions are the findings in [`ARTEFACTS`], which come from the test's setup (its CA,
//! the scanner's own client) and not from the proxy's TLS configuration, each by id and
//! severity.
//!
//! testssl runs without `--fast`: that mode tests RC4 with the local OpenSSL, which has no
//! RC4 any more, and so turns the RC4 check into a WARN; the checks chosen take well under
//! a minute without it. `--add-ca` makes the test CA trusted for the chain check, and the
//! scan goes to `localhost` at 127.0.0.1 so that the certificate's name matches.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use proxy_testkit::http::Backend;
use proxy_testkit::process::{require_program, run_limited};
use proxy_testkit::tls::Ca;
use serde_json::Value;
use support::proxy::Proxy;

/// Findings that are artefacts of the test's setup, as (testssl id, severity): excused at
/// that severity only, each for the reason above it.
const ARTEFACTS: &[(&str, &str)] = &[
    // "Neither CRL nor OCSP URI provided": the test CA issues certificates without
    // revocation endpoints. What a certificate says about its revocation is the issuer's
    // business; the proxy presents the certificate it is given.
    ("cert_revocation", "HIGH"),
    // "check failed because of connect problem": testssl 3.0 tests ticket resumption with
    // `openssl s_client -sess_out FILE </dev/null`, which closes at the end of its input,
    // often before a TLS 1.3 NewSessionTicket (sent after the client's Finished) has come:
    // no session is saved, and the second connection, `-sess_in FILE`, fails. The race is
    // the scanner's: against nginx's stream module the first s_client saved no session in
    // 30 tries out of 30, against the proxy in about half. Whether the proxy offers tickets
    // is `TLS_session_ticket`, and resumption itself is not a security finding.
    ("sessionresumption_ticket", "WARN"),
];

/// Ids that must be in the report, one or more from each group of checks asked for, so a
/// scan that silently left a group out does not pass.
const EXPECTED_IDS: &[&str] = &[
    // --protocols
    "SSLv2",
    "SSLv3",
    "TLS1",
    "TLS1_1",
    "TLS1_2",
    "TLS1_3",
    // --std
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_STRONG",
    // --fs
    "PFS",
    // --server-preference
    "cipher_order",
    // --server-defaults
    "cert_chain_of_trust",
    "cert_trust",
    "cert_expirationStatus",
    "TLS_session_ticket",
    // --vulnerable
    "heartbleed",
    "CCS",
    "ticketbleed",
    "ROBOT",
    "secure_renego",
    "secure_client_renego",
    "CRIME_TLS",
    "POODLE_SSL",
    "fallback_SCSV",
    "SWEET32",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
];

/// How long the whole scan may take (it takes under a minute on a 2-core machine).
const SCAN_LIMIT: Duration = Duration::from_secs(180);

/// Rank of a testssl severity; `None` for one this test does not know.
fn rank(severity: &str) -> Option<u8> {
    Some(match severity {
        "OK" | "INFO" => 0,
        "LOW" => 1,
        "MEDIUM" => 2,
        "HIGH" => 3,
        "CRITICAL" => 4,
        // testssl could not carry out the check.
        "WARN" | "FATAL" => 5,
        _ => return None,
    })
}

#[test]
fn testssl_finds_nothing_above_low_in_a_tls_forward() {
    let testssl = require_program(
        "testssl",
        &["/usr/bin/testssl"],
        "testssl.sh",
        "a scanner of TLS configurations",
    );
    let ca = Ca::new("testssl test CA");
    let cert = ca.server(&["localhost"]);
    let upstream = Backend::start("upstream");
    let target = upstream.addr().to_string();
    let proxy = Proxy::start(&[
        "tcp",
        "0",
        &target,
        "--listen",
        "127.0.0.1",
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ]);
    let addr = proxy.listen_addr(&target);

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("testssl.json");
    let mut cmd = Command::new(&testssl);
    cmd.args(["--quiet", "--color", "0", "--warnings", "off"])
        // No DNS: the address is given, and nothing leaves the machine.
        .args(["--nodns", "none", "--ip", "127.0.0.1"])
        .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
        .arg("--add-ca")
        .arg(&ca.cert)
        .arg("--jsonfile")
        .arg(&json)
        .args(["--protocols", "--std", "--each-cipher", "--fs"])
        .args(["--server-preference", "--server-defaults", "--vulnerable"])
        .arg(format!("localhost:{}", addr.port()))
        // The test CA's certificates are valid for two days, which testssl rates as soon to
        // expire (HIGH under 30 days, MEDIUM under 60): warn only under one day, so an
        // expired or expiring certificate still fails.
        .env("DAYS2WARN1", "1")
        .env("DAYS2WARN2", "1")
        // Its temp files in the test's dir.
        .env("TMPDIR", dir.path());
    let (status, out, err) = run_limited(&mut cmd, SCAN_LIMIT);
    let report = std::fs::read_to_string(&json).unwrap_or_default();
    assert!(
        status.is_some(),
        "testssl did not finish within {SCAN_LIMIT:?}:\n{out}{err}"
    );
    let findings: Vec<Value> = serde_json::from_str(&report).unwrap_or_else(|e| {
        panic!("testssl ({status:?}) left no JSON report ({e}): {report}\n{out}{err}")
    });

    // TLS 1.0 and 1.1 offered would only be LOW (and INFO) to testssl: the proxy offers
    // 1.2 and 1.3 only.
    for old in ["TLS1", "TLS1_1"] {
        let finding = (findings.iter())
            .find(|f| f["id"] == old)
            .map(|f| f["finding"].as_str().unwrap_or_default());
        assert_eq!(finding, Some("not offered"), "{old}\n{out}");
    }

    let mut ids = BTreeMap::new();
    let mut above_low = Vec::new();
    for f in &findings {
        let field = |name: &str| f[name].as_str().unwrap_or_default().to_owned();
        let (id, severity, finding) = (field("id"), field("severity"), field("finding"));
        ids.insert(id.clone(), severity.clone());
        if ARTEFACTS.contains(&(id.as_str(), severity.as_str())) {
            continue;
        }
        if rank(&severity).is_none_or(|r| r > 1) {
            above_low.push(format!("{id} {severity}: {finding}"));
        }
    }
    let missing: Vec<&str> = (EXPECTED_IDS.iter().copied())
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "the report lacks {missing:?}: a group of checks did not run\n{out}{err}"
    );
    assert!(
        ids.keys().any(|id| id.starts_with("cipher_x")),
        "no cipher tested one by one (--each-cipher)\n{out}"
    );
    assert!(
        above_low.is_empty(),
        "testssl rates {} finding(s) above LOW:\n  {}\n\n{out}",
        above_low.len(),
        above_low.join("\n  ")
    );
}
