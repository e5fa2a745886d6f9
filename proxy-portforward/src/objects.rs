//! The few Kubernetes objects a port-forward server serves so that `kubectl port-forward
//! pod/NAME`, `svc/NAME` and `deploy/NAME` work against it: pods (where their streams go,
//! their labels and named container ports), services (a selector and ports with a
//! `targetPort`) and deployments (a selector), as the API server renders them (the fields
//! kubectl reads), and the command line's grammar for them:
//!
//! - `--pod [NS/]NAME=TARGET`: a running pod labelled `app=NAME` whose streams go to
//!   TARGET, a host (`10.0.0.5`, `db.internal`, `[::1]`; the stream's port is used) or a
//!   network namespace (`netns:/run/netns/NAME`, `netns:/proc/PID/ns/net`).
//! - `--service [NS/]NAME:PORT[,PORT...]=POD[,POD...]`: a service with those ports (each
//!   `targetPort` the same number) selecting exactly those pods.
//!
//! # Examples
//!
//! ```
//! use proxy_portforward::objects::{Cluster, PodTarget};
//!
//! let mut cluster = Cluster::default();
//! cluster.add_pod("web=10.0.0.5".parse()?)?;
//! cluster.add_service("default/web:80,443=web".parse()?)?;
//! let pod = cluster.pod("default", "web").unwrap();
//! assert_eq!(pod.target, PodTarget::Host("10.0.0.5".into()));
//! assert_eq!(cluster.pods_selected("default", &cluster.service("default", "web").unwrap().selector).len(), 1);
//! assert_eq!(pod.to_json()["status"]["phase"], "Running");
//! # Ok::<(), proxy_portforward::objects::ObjectError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{Value, json};

/// The namespace of an object given without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a pod's streams go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodTarget {
    /// A host name or an IP address; each stream connects to its own port there.
    Host(String),
    /// A network namespace, entered only to create each stream's socket, which then
    /// connects to the stream's port on the namespace's loopback.
    Netns(PathBuf),
}

/// A container port, by which a pod's port can be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    /// The port's name (`http`), if it has one.
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
}

/// A pod: where its streams go, its labels, its named ports and whether it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where its streams go.
    pub target: PodTarget,
    /// Its labels; `--pod` gives `app=NAME`.
    pub labels: BTreeMap<String, String>,
    /// Its container ports; a SPEC may name one.
    pub ports: Vec<ContainerPort>,
    /// Whether it runs (`status.phase` `Running`); kubectl refuses to forward to a pod
    /// that does not.
    pub running: bool,
}

/// A service port: the port clients use and the pod port it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name, if it has one.
    pub name: Option<String>,
    /// The service's port.
    pub port: u16,
    /// The pods' port: a number, or the name of a container port.
    pub target_port: TargetPort,
}

/// A service port's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port's name.
    Name(String),
}

/// A service: which pods it selects, and its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The labels a pod needs, all of them, to be selected.
    pub selector: BTreeMap<String, String>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// The pods a `--service` lists: [`Cluster::add_service`] labels them so that the
    /// selector picks exactly them. Empty for a service with a selector of its own.
    pub pods: Vec<String>,
}

/// A deployment: which pods are its.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The labels a pod needs, all of them, to be the deployment's.
    pub selector: BTreeMap<String, String>,
}

/// Every object a server serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    pods: BTreeMap<(String, String), Pod>,
    services: BTreeMap<(String, String), Service>,
    deployments: BTreeMap<(String, String), Deployment>,
}

/// A bad `--pod` or `--service` value, or an object that clashes with another; the
/// message names the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectError(String);

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ObjectError {}

impl ObjectError {
    pub(crate) fn new(message: String) -> Self {
        ObjectError(message)
    }
}

// ===== names =====

/// Checks a name or namespace as the API server does for pods and services: an RFC 1123
/// label for namespaces and services (at most 63), a subdomain for pods (at most 253).
pub(crate) fn check_name(
    what: &str,
    name: &str,
    max: usize,
    dots: bool,
) -> Result<(), ObjectError> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > max
        || !name.chars().all(ok_char)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err(ObjectError(format!(
            "`{name}` is not a valid {what} name: lower-case letters, digits and '-'{}, \
             starting and ending with a letter or digit, at most {max} characters",
            if dots { " and '.'" } else { "" }
        )));
    }
    Ok(())
}

/// `[NS/]NAME` as (namespace, name).
fn namespaced(
    token: &str,
    what: &str,
    max: usize,
    dots: bool,
) -> Result<(String, String), ObjectError> {
    let (namespace, name) = match token.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (DEFAULT_NAMESPACE, token),
    };
    check_name("namespace", namespace, 63, false)?;
    check_name(what, name, max, dots)?;
    Ok((namespace.to_owned(), name.to_owned()))
}

// ===== impl PodTarget =====

impl FromStr for PodTarget {
    type Err = ObjectError;

    /// `netns:PATH`, or a host: a name, an IPv4 address, or an IPv6 address with or
    /// without brackets.
    fn from_str(s: &str) -> Result<Self, ObjectError> {
        if let Some(path) = s.strip_prefix("netns:") {
            if !path.starts_with('/') {
                return Err(ObjectError(format!(
                    "`{s}`: a network namespace is an absolute path, such as \
                     netns:/run/netns/NAME or netns:/proc/PID/ns/net"
                )));
            }
            return Ok(PodTarget::Netns(path.into()));
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(s);
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Ok(PodTarget::Host(bare.to_owned()));
        }
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.is_empty() || s.len() > 253 || !s.trim_end_matches('.').split('.').all(label) {
            return Err(ObjectError(format!(
                "`{s}` is not a pod target: use a host name, an IP address, or \
                 netns:/run/netns/NAME (the stream's port is used)"
            )));
        }
        Ok(PodTarget::Host(s.to_owned()))
    }
}

impl fmt::Display for PodTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodTarget::Host(h) if h.contains(':') => write!(f, "[{h}]"),
            PodTarget::Host(h) => f.write_str(h),
            PodTarget::Netns(p) => write!(f, "netns:{}", p.display()),
        }
    }
}

// ===== impl Pod =====

impl FromStr for Pod {
    type Err = ObjectError;

    /// `[NS/]NAME=TARGET`: a running pod labelled `app=NAME`, without named ports.
    fn from_str(s: &str) -> Result<Self, ObjectError> {
        let (name, target) = s.split_once('=').ok_or_else(|| {
            ObjectError(format!(
                "`{s}` is not a pod: write [NAMESPACE/]NAME=TARGET, such as web=10.0.0.5"
            ))
        })?;
        let (namespace, name) = namespaced(name, "pod", 253, true)?;
        let target = target.parse()?;
        Ok(Pod {
            labels: BTreeMap::from([("app".to_owned(), name.clone())]),
            namespace,
            name,
            target,
            ports: Vec::new(),
            running: true,
        })
    }
}

impl Pod {
    /// A stable UID for the pod, derived from its namespace and name, in the API
    /// server's form (it appears in the kubelet's error messages).
    pub fn uid(&self) -> String {
        uid(&["pod", &self.namespace, &self.name])
    }

    /// The port a SPEC's remote port means: a number, or a container port's name.
    pub fn resolve_port(&self, port: &str) -> Option<u16> {
        match port.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            Ok(_) => None,
            Err(_) => (self.ports.iter())
                .find(|p| p.name.as_deref() == Some(port))
                .map(|p| p.port),
        }
    }

    /// Whether every label of `selector` is the pod's.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// The pod as `GET /api/v1/namespaces/NS/pods/NAME` returns it: the fields kubectl
    /// reads (metadata, the containers' ports, `status.phase`).
    pub fn to_json(&self) -> Value {
        let ports: Vec<Value> = (self.ports.iter())
            .map(|p| {
                let mut port = json!({ "containerPort": p.port, "protocol": "TCP" });
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        let phase = if self.running { "Running" } else { "Pending" };
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata("pod", &self.namespace, &self.name, &self.labels),
            "spec": { "containers": [{ "name": self.name, "ports": ports }] },
            "status": { "phase": phase },
        })
    }
}

// ===== impl Service =====

impl FromStr for Service {
    type Err = ObjectError;

    /// `[NS/]NAME:PORT[,PORT...]=POD[,POD...]`: the ports, each `targetPort` the same
    /// number, selecting exactly the pods listed (by the label `proxy.service/NAME`,
    /// which [`Cluster::add_service`] gives them).
    fn from_str(s: &str) -> Result<Self, ObjectError> {
        let grammar = || {
            ObjectError(format!(
                "`{s}` is not a service: write [NAMESPACE/]NAME:PORT[,PORT...]=POD[,POD...], \
                 such as web:80,443=web-1,web-2"
            ))
        };
        let (head, pods) = s.split_once('=').ok_or_else(grammar)?;
        let (name, ports) = head.split_once(':').ok_or_else(grammar)?;
        let (namespace, name) = namespaced(name, "service", 63, false)?;
        let mut service_ports = Vec::new();
        for port in ports.split(',') {
            let n = match port.parse::<u16>() {
                Ok(n) if n > 0 && !port.starts_with('+') => n,
                _ => {
                    return Err(ObjectError(format!(
                        "`{port}` in `{s}` is not a port number (1-65535)"
                    )));
                }
            };
            if service_ports.iter().any(|p: &ServicePort| p.port == n) {
                return Err(ObjectError(format!("port {n} is listed twice in `{s}`")));
            }
            service_ports.push(ServicePort {
                name: None,
                port: n,
                target_port: TargetPort::Number(n),
            });
        }
        let mut listed = Vec::new();
        for pod in pods.split(',') {
            check_name("pod", pod, 253, true)?;
            listed.push(pod.to_owned());
        }
        Ok(Service {
            selector: BTreeMap::from([(member_label(&name), "true".to_owned())]),
            namespace,
            name,
            ports: service_ports,
            pods: listed,
        })
    }
}

/// The label by which a `--service` selects the pods it lists.
pub(crate) fn member_label(service: &str) -> String {
    format!("proxy.service/{service}")
}

impl Service {
    /// The service as `GET /api/v1/namespaces/NS/services/NAME` returns it.
    pub fn to_json(&self) -> Value {
        let ports: Vec<Value> = (self.ports.iter())
            .map(|p| {
                let target = match &p.target_port {
                    TargetPort::Number(n) => json!(n),
                    TargetPort::Name(name) => json!(name),
                };
                let mut port = json!({ "port": p.port, "targetPort": target, "protocol": "TCP" });
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": metadata("service", &self.namespace, &self.name, &BTreeMap::new()),
            "spec": { "selector": self.selector, "ports": ports, "type": "ClusterIP" },
        })
    }

    /// The pod port a service port given by number or name maps to, for `pod`.
    pub fn target_port(&self, port: &str, pod: &Pod) -> Option<u16> {
        let service_port = match port.parse::<u16>() {
            Ok(n) => self.ports.iter().find(|p| p.port == n)?,
            Err(_) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(port))?,
        };
        match &service_port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => pod.resolve_port(name),
        }
    }
}

// ===== impl Deployment =====

impl Deployment {
    /// The deployment as `GET /apis/apps/v1/namespaces/NS/deployments/NAME` returns it.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": metadata("deployment", &self.namespace, &self.name, &BTreeMap::new()),
            "spec": {
                "selector": { "matchLabels": self.selector },
                "template": { "metadata": { "labels": self.selector } },
            },
        })
    }
}

// ===== impl Cluster =====

impl Cluster {
    /// Adds `pod`.
    ///
    /// # Errors
    ///
    /// A pod of that namespace and name exists.
    pub fn add_pod(&mut self, pod: Pod) -> Result<(), ObjectError> {
        let key = (pod.namespace.clone(), pod.name.clone());
        if self.pods.contains_key(&key) {
            return Err(ObjectError(format!(
                "pod {}/{} is given twice",
                key.0, key.1
            )));
        }
        self.pods.insert(key, pod);
        Ok(())
    }

    /// Adds `service`, labelling the pods it lists so that its selector picks them.
    ///
    /// # Errors
    ///
    /// A service of that namespace and name exists, or it lists a pod not added (in its
    /// namespace); nothing changes then.
    pub fn add_service(&mut self, service: Service) -> Result<(), ObjectError> {
        let key = (service.namespace.clone(), service.name.clone());
        if self.services.contains_key(&key) {
            return Err(ObjectError(format!(
                "service {}/{} is given twice",
                key.0, key.1
            )));
        }
        let ns = &service.namespace;
        if let Some(missing) = (service.pods.iter()).find(|p| self.pod(ns, p).is_none()) {
            let prefix = if ns == DEFAULT_NAMESPACE {
                String::new()
            } else {
                format!("{ns}/")
            };
            return Err(ObjectError(format!(
                "service {ns}/{} lists pod `{missing}`, which is not given \
                 (--pod {prefix}{missing}=TARGET)",
                service.name
            )));
        }
        for pod in &service.pods {
            if let Some(p) = self.pods.get_mut(&(ns.clone(), pod.clone())) {
                p.labels
                    .insert(member_label(&service.name), "true".to_owned());
            }
        }
        self.services.insert(key, service);
        Ok(())
    }

    /// Adds `deployment`.
    ///
    /// # Errors
    ///
    /// A deployment of that namespace and name exists.
    pub fn add_deployment(&mut self, deployment: Deployment) -> Result<(), ObjectError> {
        let key = (deployment.namespace.clone(), deployment.name.clone());
        if self.deployments.contains_key(&key) {
            return Err(ObjectError(format!(
                "deployment {}/{} is given twice",
                key.0, key.1
            )));
        }
        self.deployments.insert(key, deployment);
        Ok(())
    }

    /// The pod `name` in `namespace`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The service `name` in `namespace`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The deployment `name` in `namespace`.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<&Deployment> {
        self.deployments
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The pods of `namespace` that `selector` selects, by name.
    pub fn pods_selected(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<&Pod> {
        (self.pods.values())
            .filter(|p| p.namespace == namespace && p.matches(selector))
            .collect()
    }

    /// `GET /api/v1/namespaces/NS/pods?labelSelector=...` for equality selectors
    /// (`a=b,c=d`, or `a==b`), as kubectl sends them.
    ///
    /// # Errors
    ///
    /// A selector other than equalities, named.
    pub fn pod_list_json(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Value, ObjectError> {
        let selector = parse_selector(label_selector)?;
        let items: Vec<Value> = (self.pods_selected(namespace, &selector).into_iter())
            .map(Pod::to_json)
            .collect();
        Ok(json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": "1" },
            "items": items,
        }))
    }
}

/// An equality label selector: `a=b,c==d`; empty selects everything.
fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, ObjectError> {
    let mut out = BTreeMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))
            .ok_or_else(|| {
                ObjectError(format!(
                    "unable to parse requirement: `{term}`: only equality selectors \
                     (key=value) are served"
                ))
            })?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// An object's `metadata` as the API server renders the fields kubectl reads.
fn metadata(kind: &str, namespace: &str, name: &str, labels: &BTreeMap<String, String>) -> Value {
    let mut m = json!({
        "name": name,
        "namespace": namespace,
        "uid": uid(&[kind, namespace, name]),
        "resourceVersion": "1",
    });
    if !labels.is_empty() {
        m["labels"] = json!(labels);
    }
    m
}

/// A UID in the API server's form (8-4-4-4-12 hex), the same for the same `parts`.
fn uid(parts: &[&str]) -> String {
    // Two FNV-1a passes with different offsets make 128 stable bits.
    let fnv = |offset: u64| {
        let mut h = offset;
        for part in parts {
            for b in part.bytes().chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    let hex = format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_parse_with_namespace_target_and_label() {
        let pod: Pod = "web=10.0.0.5".parse().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("default", "web")
        );
        assert_eq!(pod.target, PodTarget::Host("10.0.0.5".into()));
        assert_eq!(pod.labels["app"], "web");
        let pod: Pod = "kube-system/dns-1=[::1]".parse().unwrap();
        assert_eq!(pod.namespace, "kube-system");
        assert_eq!(pod.target, PodTarget::Host("::1".into()));
        assert_eq!(pod.target.to_string(), "[::1]");
        let pod: Pod = "db=netns:/run/netns/db".parse().unwrap();
        assert_eq!(pod.target, PodTarget::Netns("/run/netns/db".into()));
        let pod: Pod = "a.b=db.internal".parse().unwrap();
        assert_eq!(pod.target, PodTarget::Host("db.internal".into()));
    }

    #[test]
    fn bad_pods_and_services_name_the_token() {
        for (bad, token) in [
            ("web", "`web`"),
            ("Web=1.2.3.4", "`Web`"),
            ("ns/=1.2.3.4", "``"),
            ("-web=1.2.3.4", "`-web`"),
            ("web=netns:run/x", "netns:run/x"),
            ("web=bad host", "`bad host`"),
            ("NS/web=1.2.3.4", "`NS`"),
        ] {
            let e = bad.parse::<Pod>().unwrap_err().to_string();
            assert!(e.contains(token), "{bad}: {e}");
        }
        for (bad, token) in [
            ("web=web", "`web=web`"),
            ("web:80", "`web:80`"),
            ("web:0=web", "`0`"),
            ("web:http=web", "`http`"),
            ("web:80,80=web", "port 80 is listed twice"),
            ("web.x:80=web", "`web.x`"),
            ("web:80=Web", "`Web`"),
        ] {
            let e = bad.parse::<Service>().unwrap_err().to_string();
            assert!(e.contains(token), "{bad}: {e}");
        }
    }

    #[test]
    fn services_select_exactly_their_pods() {
        let mut c = Cluster::default();
        for pod in [
            "web-1=10.0.0.1",
            "web-2=10.0.0.2",
            "other=10.0.0.3",
            "prod/web-1=10.0.1.1",
        ] {
            c.add_pod(pod.parse().unwrap()).unwrap();
        }
        c.add_service("web:80,443=web-1,web-2".parse().unwrap())
            .unwrap();
        let svc = c.service("default", "web").unwrap();
        let names: Vec<&str> = c
            .pods_selected("default", &svc.selector)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["web-1", "web-2"]);
        let pod = c.pod("default", "web-1").unwrap();
        assert_eq!(svc.target_port("443", pod), Some(443));
        assert_eq!(svc.target_port("8080", pod), None);
        assert!(c.add_pod("web-1=10.9.9.9".parse().unwrap()).is_err());
        assert!(c.add_service("web:81=web-1".parse().unwrap()).is_err());
        // The label selector kubectl sends for the service.
        let list = c
            .pod_list_json("default", "proxy.service/web=true")
            .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert_eq!(list["items"][1]["metadata"]["name"], "web-2");
        let e = c
            .add_service("api:80=web-1,nope".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("pod `nope`"), "{e}");
        assert!(c.service("default", "api").is_none());
        let list = c.pod_list_json("default", "app==other").unwrap();
        assert_eq!(list["items"][0]["metadata"]["name"], "other");
        let e = c.pod_list_json("default", "app!=web").unwrap_err();
        assert!(e.to_string().contains("`app!=web`"), "{e}");
    }

    #[test]
    fn named_ports_resolve_through_containers_and_target_ports() {
        let mut pod: Pod = "web=10.0.0.1".parse().unwrap();
        pod.ports.push(ContainerPort {
            name: Some("http".into()),
            port: 8080,
        });
        assert_eq!(pod.resolve_port("http"), Some(8080));
        assert_eq!(pod.resolve_port("80"), Some(80));
        assert_eq!(pod.resolve_port("grpc"), None);
        assert_eq!(pod.resolve_port("0"), None);
        let svc = Service {
            namespace: "default".into(),
            name: "web".into(),
            selector: BTreeMap::from([("app".into(), "web".into())]),
            ports: vec![ServicePort {
                name: Some("web".into()),
                port: 80,
                target_port: TargetPort::Name("http".into()),
            }],
            pods: Vec::new(),
        };
        assert_eq!(svc.target_port("80", &pod), Some(8080));
        assert_eq!(svc.target_port("web", &pod), Some(8080));
        let json = svc.to_json();
        assert_eq!(json["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(json["spec"]["ports"][0]["name"], "web");
        let json = pod.to_json();
        assert_eq!(json["spec"]["containers"][0]["ports"][0]["name"], "http");
        assert_eq!(
            json["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }

    #[test]
    fn objects_render_as_the_api_server_does() {
        let mut pod: Pod = "kube-system/dns=10.0.0.10".parse().unwrap();
        let json = pod.to_json();
        assert_eq!(json["kind"], "Pod");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["metadata"]["namespace"], "kube-system");
        assert_eq!(json["metadata"]["labels"]["app"], "dns");
        assert_eq!(json["status"]["phase"], "Running");
        pod.running = false;
        assert_eq!(pod.to_json()["status"]["phase"], "Pending");
        let uid = pod.uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        assert_eq!(json["metadata"]["uid"], uid, "stable");
        let other: Pod = "dns=10.0.0.10".parse().unwrap();
        assert_ne!(other.uid(), uid, "namespaced");
        let d = Deployment {
            namespace: "default".into(),
            name: "web".into(),
            selector: BTreeMap::from([("app".into(), "web".into())]),
        };
        let json = d.to_json();
        assert_eq!(json["apiVersion"], "apps/v1");
        assert_eq!(json["spec"]["selector"]["matchLabels"]["app"], "web");
    }
}
