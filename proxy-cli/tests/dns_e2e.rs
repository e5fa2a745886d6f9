//! The seed scenario end to end: `proxy tcp,udp` in front of a real DNS server (dnsmasq),
//! queried with a real DNS client (dig) over UDP and TCP, loopback only.
//!
//! Needs dnsmasq (package `dnsmasq-base`) and dig (package `dnsutils`); the tests fail with
//! a message naming the package when one is missing (scripts/test.sh installs both).

mod support;

use std::net::SocketAddr;

use proxy_testkit::dns::{Dnsmasq, DnsmasqConfig, dnsmasq_program};
use support::dig::{DigAnswer, dig, dig_program};
use support::proxy::{Proto, Proxy};

/// The address dnsmasq gives `web.test`.
const WEB_IP: &str = "192.0.2.10";

/// How many TXT records `big.test` has, each with two strings of [`TXT_LEN`] bytes.
const TXT_RECORDS: usize = 6;
const TXT_LEN: usize = 200;

/// The strings of record `i` of `big.test`, each distinct and exactly [`TXT_LEN`] bytes.
fn txt_strings(i: usize) -> [String; 2] {
    [0, 1].map(|j| {
        let head = format!("rec{i}-part{j}-");
        let fill: String = (0..TXT_LEN - head.len())
            .map(|k| char::from(b'a' + ((i * 7 + j * 3 + k) % 26) as u8))
            .collect();
        head + &fill
    })
}

/// What dnsmasq serves: only `web.test A`, and `big.test TXT` whose answer is about 2.6 KB,
/// well over a 1,500-byte Ethernet MTU; every other name under `.test` gets NXDOMAIN.
fn dnsmasq_config() -> DnsmasqConfig {
    let mut args = vec![
        // Answers up to 4 KiB over UDP when the client's EDNS buffer allows it.
        "--edns-packet-max=4096".to_owned(),
        format!("--host-record=web.test,{WEB_IP}"),
    ];
    for i in 0..TXT_RECORDS {
        let [a, b] = txt_strings(i);
        args.push(format!("--txt-record=big.test,{a},{b}"));
    }
    DnsmasqConfig {
        hosts: None,
        local_domains: vec!["test".to_owned()],
        args,
    }
}

/// dnsmasq, and `proxy tcp,udp 0 DNSMASQ --listen 127.0.0.1` in front of it; returns the
/// port both protocols listen on.
fn start() -> (Dnsmasq, Proxy, SocketAddr) {
    // Fail with the install hint before starting anything.
    dnsmasq_program();
    dig_program();
    let dns = Dnsmasq::start(&dnsmasq_config());
    let target = dns.addr().to_string();
    let proxy = Proxy::start(&["tcp,udp", "0", &target, "--listen", "127.0.0.1"]);
    // UDP binds after TCP got its port, so the UDP line is the final word.
    let udp = proxy.proto_listen_addr(Proto::Udp, &target);
    let tcp = proxy
        .try_proto_listen_addrs(Proto::Tcp, 1, &target)
        .expect("a TCP 'Forwarding from' line");
    assert!(
        tcp.contains(&udp),
        "TCP listens on {tcp:?}, UDP on {udp}: not the same port"
    );
    assert!(udp.ip().is_loopback() && udp.port() != 0, "{udp}");
    (dns, proxy, udp)
}

#[test]
fn dig_over_udp_and_tcp_through_the_proxy() {
    let (_dns, _proxy, addr) = start();
    for transport in [&[][..], &["+tcp"][..]] {
        let mut args = vec!["web.test", "A", "+short"];
        args.extend_from_slice(transport);
        let answer = dig(addr, &args);
        assert_eq!(answer.output.trim(), WEB_IP, "dig {args:?}");

        let mut args = vec!["nosuch.test", "A"];
        args.extend_from_slice(transport);
        let answer = dig(addr, &args);
        assert_eq!(
            answer.status().as_deref(),
            Some("NXDOMAIN"),
            "dig {args:?}:\n{}",
            answer.output
        );
    }
}

/// A large EDNS answer (over 1,500 bytes) passes intact over UDP: not truncated (no `tc`
/// flag), every TXT string present, the same message size and records as straight from
/// dnsmasq; and over TCP too.
#[test]
fn large_edns_answer_passes_intact() {
    let (dns, _proxy, addr) = start();
    let query = ["big.test", "TXT", "+bufsize=4096", "+ignore"];
    let direct = dig(dns.addr(), &query);
    let size = direct.msg_size().expect("MSG SIZE in dig's output");
    assert!(
        size > 1500,
        "dnsmasq's answer is only {size} B:\n{}",
        direct.output
    );
    check_big(&direct, "direct from dnsmasq");

    let via_udp = dig(addr, &query);
    check_big(&via_udp, "through the proxy over UDP");
    assert_eq!(via_udp.msg_size(), Some(size), "{}", via_udp.output);
    assert_eq!(via_udp.answers(), direct.answers());

    let mut tcp_query = query.to_vec();
    tcp_query.push("+tcp");
    let via_tcp = dig(addr, &tcp_query);
    check_big(&via_tcp, "through the proxy over TCP");
    assert_eq!(via_tcp.msg_size(), Some(size), "{}", via_tcp.output);
    assert_eq!(via_tcp.answers(), direct.answers());
}

/// The `big.test` answer is complete: NOERROR, not truncated, every record and string.
fn check_big(answer: &DigAnswer, how: &str) {
    let out = &answer.output;
    assert_eq!(answer.status().as_deref(), Some("NOERROR"), "{how}:\n{out}");
    let flags = answer.flags();
    assert!(
        flags.iter().any(|f| f == "qr"),
        "{how}: flags {flags:?}:\n{out}"
    );
    assert!(
        !flags.iter().any(|f| f == "tc"),
        "{how}: truncated (tc):\n{out}"
    );
    let records = answer.answers();
    assert_eq!(records.len(), TXT_RECORDS, "{how}:\n{out}");
    for i in 0..TXT_RECORDS {
        for s in txt_strings(i) {
            assert!(
                out.contains(&format!("\"{s}\"")),
                "{how}: TXT string {s} missing:\n{out}"
            );
        }
    }
}
