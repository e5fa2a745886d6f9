//! Test support shared by the workspace's tests, benches and examples (`publish = false`):
//! one copy of each echo server, of the dnsmasq harness, of the payload generators and of
//! the bounded waits, instead of one per test crate.
//!
//! Async (tokio) flavour:
//! - [`echo`]: TCP upstreams, a [`Server`](echo::Server) running a handler per connection,
//!   echo, recording and greeting servers;
//! - [`client`]: TCP clients, reads to the end, and how a connection ended;
//! - [`udp`]: UDP echo servers that record who sent what, and a flow-controlled client;
//! - [`wait`]: bounded waits, and a forwarder's stats once they settle.
//!
//! Blocking flavour, [`blocking`]: threaded TCP and UDP echo servers and clients with
//! deadlines, for tests that drive the `proxy` binary.
//!
//! Either flavour:
//! - [`data`]: seeded payloads, tagged datagrams, and a byte comparison that says where;
//! - [`net`]: loopback addresses on kernel-chosen ports, and a test run again alone in a
//!   network namespace of its own (`unshare --net`), and named namespaces (`ip netns`);
//! - [`process`]: finding programs (failing with the package to install, never skipping),
//!   [`KillOnDrop`](process::KillOnDrop) children, unique [`TempPath`](process::TempPath)s,
//!   a test of this binary run again in a process of its own, output read line by line;
//! - [`dns`]: a real DNS server, [`Dnsmasq`](dns::Dnsmasq);
//! - [`http`]: HTTP/1.1 upstreams for the HTTP reverse proxy: an in-process hyper
//!   [`Backend`](http::Backend) that answers with what it received, a Python and an nginx
//!   upstream, a Python WebSocket echo server and client, and blocking raw HTTP clients;
//! - [`tls`]: real TLS peers from `openssl`: self-signed certificates, `s_server`, and
//!   the name on the certificate `s_client` was shown;
//! - [`kube`]: real Kubernetes clients for a port-forward server: released `kubectl`s by
//!   version with kubeconfigs of their own, `kubectl port-forward` processes, test
//!   certificates from `openssl`, and a venv with the Python `kubernetes` client.
//!
//! Nothing here sleeps to synchronise: waits either await an event or poll a condition
//! with a deadline, and every one is bounded.

pub mod blocking;
pub mod client;
pub mod data;
pub mod dns;
pub mod echo;
pub mod http;
pub mod kube;
pub mod net;
pub mod process;
pub mod tls;
pub mod udp;
pub mod wait;
