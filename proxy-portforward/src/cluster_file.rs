//! The objects a port-forward server serves, from a TOML file: what the command line's
//! `--pod` and `--service` say, plus what they cannot (labels, named container ports,
//! services with their own selectors and named `targetPort`s, deployments, pods that are
//! not running). Errors name the file, the line and the key.
//!
//! ```toml
//! [[pod]]
//! name = "web-1"
//! namespace = "default"            # optional
//! target = "10.0.0.5"              # a host, or "netns:/run/netns/web-1"
//! labels = { app = "web" }         # optional; default app = NAME
//! ports = { http = 8080 }          # named container ports, optional
//!
//! [[service]]
//! name = "web"
//! selector = { app = "web" }
//! ports = [{ name = "http", port = 80, target_port = "http" }, { port = 443 }]
//!
//! [[deployment]]
//! name = "web"
//! selector = { app = "web" }
//! ```
//!
//! # Examples
//!
//! ```
//! let cluster = proxy_portforward::cluster_file::parse(
//!     "[[pod]]\nname = \"web\"\ntarget = \"10.0.0.5\"\nports = { http = 8080 }\n",
//!     "pods.toml",
//! )?;
//! assert_eq!(cluster.pod("default", "web").unwrap().resolve_port("http"), Some(8080));
//! # Ok::<(), proxy_portforward::objects::ObjectError>(())
//! ```

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::objects::{
    Cluster, ContainerPort, DEFAULT_NAMESPACE, Deployment, ObjectError, Pod, PodTarget, Service,
    ServicePort, TargetPort, check_name,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pod: Vec<Spanned<RawPod>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
    #[serde(default)]
    deployment: Vec<Spanned<RawDeployment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    target: Spanned<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ports: BTreeMap<String, Spanned<u16>>,
    running: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    selector: BTreeMap<String, String>,
    ports: Vec<Spanned<RawServicePort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServicePort {
    name: Option<String>,
    port: u16,
    target_port: Option<RawTargetPort>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTargetPort {
    Number(u16),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    selector: BTreeMap<String, String>,
}

/// The text being read, to turn byte offsets into lines.
struct Context<'a> {
    text: &'a str,
    file: &'a str,
}

impl Context<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl std::fmt::Display) -> ObjectError {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ObjectError::new(format!("{}:{line}: {key}: {message}", self.file))
    }

    /// A name and namespace, checked as the API server checks them.
    fn names(
        &self,
        at: &str,
        what: &str,
        name: &Spanned<String>,
        namespace: Option<&Spanned<String>>,
    ) -> Result<(String, String), ObjectError> {
        let (max, dots) = if what == "pod" {
            (253, true)
        } else {
            (63, false)
        };
        check_name(what, name.get_ref(), max, dots)
            .map_err(|e| self.error(name.span(), &format!("{at}.name"), e))?;
        let namespace = match namespace {
            Some(ns) => {
                check_name("namespace", ns.get_ref(), 63, false)
                    .map_err(|e| self.error(ns.span(), &format!("{at}.namespace"), e))?;
                ns.get_ref().clone()
            }
            None => DEFAULT_NAMESPACE.to_owned(),
        };
        Ok((namespace, name.get_ref().clone()))
    }
}

/// The objects of the TOML `text`, naming it `file` in errors.
///
/// # Errors
///
/// An [`ObjectError`] naming the file, line and key: a value of the wrong shape, an
/// unknown key, a bad name or target, a port of 0, or an object given twice.
pub fn parse(text: &str, file: &str) -> Result<Cluster, ObjectError> {
    let cx = Context { text, file };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end().to_owned();
        cx.error(span, "file", message)
    })?;
    let mut cluster = Cluster::default();
    for (i, entry) in raw.pod.iter().enumerate() {
        let (span, p) = (entry.span(), entry.get_ref());
        let at = format!("pod[{i}]");
        let (namespace, name) = cx.names(&at, "pod", &p.name, p.namespace.as_ref())?;
        let target: PodTarget = (p.target.get_ref().parse())
            .map_err(|e| cx.error(p.target.span(), &format!("{at}.target"), e))?;
        let mut ports = Vec::new();
        for (port_name, port) in &p.ports {
            if *port.get_ref() == 0 {
                let key = format!("{at}.ports.{port_name}");
                return Err(cx.error(port.span(), &key, "a port is 1 to 65535"));
            }
            ports.push(ContainerPort {
                name: Some(port_name.clone()),
                port: *port.get_ref(),
            });
        }
        let labels = (p.labels.clone())
            .unwrap_or_else(|| BTreeMap::from([("app".to_owned(), name.clone())]));
        let pod = Pod {
            namespace,
            name,
            target,
            labels,
            ports,
            running: p.running.unwrap_or(true),
        };
        cluster
            .add_pod(pod)
            .map_err(|e| cx.error(span.clone(), &at, e))?;
    }
    for (i, entry) in raw.service.iter().enumerate() {
        let (span, s) = (entry.span(), entry.get_ref());
        let at = format!("service[{i}]");
        let (namespace, name) = cx.names(&at, "service", &s.name, s.namespace.as_ref())?;
        let mut ports: Vec<ServicePort> = Vec::new();
        for (j, port) in s.ports.iter().enumerate() {
            let (port_span, p) = (port.span(), port.get_ref());
            let key = format!("{at}.ports[{j}]");
            if p.port == 0 || ports.iter().any(|q| q.port == p.port) {
                let why = if p.port == 0 {
                    "a port is 1 to 65535"
                } else {
                    "the port is listed twice"
                };
                return Err(cx.error(port_span, &key, why));
            }
            let target_port = match &p.target_port {
                None => TargetPort::Number(p.port),
                Some(RawTargetPort::Number(0)) => {
                    return Err(cx.error(
                        port_span,
                        &format!("{key}.target_port"),
                        "a port is 1 to 65535",
                    ));
                }
                Some(RawTargetPort::Number(n)) => TargetPort::Number(*n),
                Some(RawTargetPort::Name(n)) => TargetPort::Name(n.clone()),
            };
            ports.push(ServicePort {
                name: p.name.clone(),
                port: p.port,
                target_port,
            });
        }
        let service = Service {
            namespace,
            name,
            selector: s.selector.clone(),
            ports,
            pods: Vec::new(),
        };
        cluster
            .add_service(service)
            .map_err(|e| cx.error(span.clone(), &at, e))?;
    }
    for (i, entry) in raw.deployment.iter().enumerate() {
        let (span, d) = (entry.span(), entry.get_ref());
        let at = format!("deployment[{i}]");
        let (namespace, name) = cx.names(&at, "deployment", &d.name, d.namespace.as_ref())?;
        let deployment = Deployment {
            namespace,
            name,
            selector: d.selector.clone(),
        };
        cluster
            .add_deployment(deployment)
            .map_err(|e| cx.error(span.clone(), &at, e))?;
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[pod]]
name = "web-1"
target = "10.0.0.5"
labels = { app = "web", tier = "front" }
ports = { http = 8080, metrics = 9090 }

[[pod]]
name = "db"
namespace = "data"
target = "netns:/run/netns/db"
running = false

[[service]]
name = "web"
selector = { app = "web" }
ports = [{ name = "http", port = 80, target_port = "http" }, { port = 443, target_port = 8443 }, { port = 9090 }]

[[deployment]]
name = "web"
selector = { tier = "front" }
"#;

    #[test]
    fn a_file_gives_pods_services_and_deployments() {
        let c = parse(FILE, "objects.toml").unwrap();
        let web = c.pod("default", "web-1").unwrap();
        assert_eq!(web.resolve_port("metrics"), Some(9090));
        assert_eq!(web.labels["tier"], "front");
        let db = c.pod("data", "db").unwrap();
        assert!(!db.running);
        assert_eq!(db.target, PodTarget::Netns("/run/netns/db".into()));
        assert_eq!(db.labels["app"], "db");
        let svc = c.service("default", "web").unwrap();
        assert_eq!(svc.target_port("http", web), Some(8080));
        assert_eq!(svc.target_port("443", web), Some(8443));
        assert_eq!(svc.target_port("9090", web), Some(9090));
        assert_eq!(c.pods_selected("default", &svc.selector).len(), 1);
        let d = c.deployment("default", "web").unwrap();
        assert_eq!(c.pods_selected("default", &d.selector)[0].name, "web-1");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[[pod]]\nname = \"web\"\ntarget = \"bad host\"\n",
                "f.toml:3: pod[0].target: `bad host`",
            ),
            (
                "[[pod]]\nname = \"Web\"\ntarget = \"1.2.3.4\"\n",
                "f.toml:2: pod[0].name: `Web`",
            ),
            (
                "[[pod]]\nname = \"web\"\ntarget = \"1.2.3.4\"\nports = { http = 0 }\n",
                "f.toml:4: pod[0].ports.http: a port is 1 to 65535",
            ),
            (
                "[[pod]]\nname = \"web\"\ntarget = \"1.2.3.4\"\ncolour = 1\n",
                "f.toml:4: file: unknown field `colour`",
            ),
            (
                "[[pod]]\nname = \"web\"\n",
                "f.toml:1: file: missing field `target`",
            ),
            (
                "[[service]]\nname = \"web\"\nselector = {}\nports = [{ port = 80 }, { port = 80 }]\n",
                "f.toml:4: service[0].ports[1]: the port is listed twice",
            ),
            (
                "[[pod]]\nname = \"a\"\ntarget = \"1.2.3.4\"\n[[pod]]\nname = \"a\"\ntarget = \"1.2.3.5\"\n",
                "f.toml:4: pod[1]: pod default/a is given twice",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, "f.toml").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}:\n{e}\nwants {want}");
        }
    }
}
