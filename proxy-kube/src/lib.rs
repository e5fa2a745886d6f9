//! The Kubernetes API side of `proxy forward TYPE/NAME [LOCAL:]REMOTE...`, so that
//! `proxy-core` stays free of it. Through kube-rs (kubeconfig, contexts, TLS, tokens,
//! exec plugins):
//!
//! - [`Target`]: `TYPE/NAME` with kubectl's resource names and short names (`pod/`,
//!   `svc/`, `deploy/`, `rs/`, `sts/`, `ds/`, `job/`, `rc/`), a bare `NAME` being a pod;
//! - [`Client`]: `--kubeconfig`, `--context`, `-n` as kubectl takes them;
//! - [`Client::resolve`]: the object, its selector and its pods, and
//!   [`Resolved::remote_port`] for a remote port translated per pod as kubectl does
//!   (service port, `targetPort`, container port by name), with kubectl's errors;
//! - [`is_ready`], [`ready_pods`] and [`Client::watch_pods`]: the ready pod set as it
//!   changes ([`PodSet`]), for balancing and failover;
//! - [`ApiEndpoint`]: the API server's URL, TLS configuration and `Authorization` value,
//!   for a port-forward client that opens connections of its own.
//!
//! # Examples
//!
//! ```no_run
//! use proxy_kube::{Client, Target};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder().namespace("shop").build().await?;
//! let resolved = client.resolve(&"svc/web".parse::<Target>()?).await?;
//! let pod = resolved.first_pod()?;
//! proxy_kube::check_running(pod)?;
//! let port = resolved.remote_port(pod, "http")?;
//! println!("forwarding to {} port {port}", pod.metadata.name.as_deref().unwrap_or(""));
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod client;
mod endpoint;
mod error;
pub mod forward;
mod podset;
mod resolve;
mod target;

pub use client::{Client, ClientBuilder};
pub use endpoint::{ApiEndpoint, ApiStream};
pub use error::{Error, ErrorKind};
pub use podset::{PodSet, PodWatch};
pub use resolve::{Resolved, check_running, is_ready, pod_from_json, ready_pods};
pub use target::{Kind, Target, TargetError};

/// The kube-rs and k8s-openapi releases this crate is built on, for their types in its API
/// (`Pod`, `Service`, `kube::Config`, `WatchEvent`).
pub use {k8s_openapi, kube};
