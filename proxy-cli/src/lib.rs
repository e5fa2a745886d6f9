//! The `proxy` command as a library: argument parsing ([`args`]) and running ([`run`]).
//!
//! The binary in `main.rs` only glues these together; keeping them in a library lets
//! unit tests and fuzz targets reach the parsers, such as [`args::parse_duration`].
//!
//! # Examples
//!
//! ```
//! use clap::Parser;
//! use proxy_cli::args::{Cli, Command};
//!
//! // Kubernetes' proxy-to-service:v2 arguments.
//! let cli = Cli::try_parse_from(["proxy", "tcp", "53", "kube-dns.default"])?;
//! let Command::Tcp(tcp) = cli.command else { unreachable!() };
//! let spec = tcp.spec()?;
//! assert_eq!(spec.target.unwrap().to_string(), "kube-dns.default:53");
//!
//! // TCP and UDP from one process, sessions ending after 1 s without traffic.
//! let cli = Cli::try_parse_from(["proxy", "tcp,udp", "53", "kube-dns.default", "1"])?;
//! let Command::TcpUdp(both) = cli.command else { unreachable!() };
//! let spec = both.spec()?;
//! assert_eq!(spec.udp_idle_timeout, Some(std::time::Duration::from_secs(1)));
//! assert_eq!(spec.protocol, proxy_core::Transport::Both);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod admin;
pub mod args;
pub mod config;
pub mod forward;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod port_forward_server;
pub mod protocol;
pub mod registry;
pub mod run;
pub mod service_proxy;
pub mod shutdown;
pub mod supervise;
pub mod systemd;
