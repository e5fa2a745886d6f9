//! From `TYPE/NAME` to pods and pod ports, as `kubectl port-forward` does it
//! (`AttachablePodForObjectFn`, `SelectorsForObject`, `translateServicePortToTargetPort`):
//! a pod is itself; a service selects pods by `spec.selector`; a workload by
//! `spec.selector`. A remote port is a number or a name: through a service, the service
//! port's `targetPort` (a number, or a container port's name looked up in each pod);
//! otherwise a container port's name.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::target::{Kind, Target};

/// What a [`Target`] resolved to: its pods (most ready first) and, for a service, the
/// service (whose ports map to the pods' ports).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// What was resolved.
    pub target: Target,
    /// The namespace it is in.
    pub namespace: String,
    /// The label selector of its pods (`app=web,tier=front`); `None` for a pod.
    pub selector: Option<String>,
    /// The service, for a service target.
    pub service: Option<Service>,
    /// The pods: ready ones first, then running, then the rest, each group by name.
    pub pods: Vec<Pod>,
}

// ===== impl Client =====

impl Client {
    /// Looks `target` up in the client's namespace: the object, then the pods it
    /// selects.
    ///
    /// # Errors
    ///
    /// The API server's error as kubectl prints it (`Error from server (NotFound): pods
    /// "nope" not found`, [`ErrorKind::NotFound`]; [`ErrorKind::Unauthorized`] for a
    /// 401), or [`ErrorKind::Object`] for a service without a selector.
    pub async fn resolve(&self, target: &Target) -> Result<Resolved, Error> {
        let name = target.name.as_str();
        let mut service = None;
        let selector = match target.kind {
            Kind::Pod => {
                let pod: Pod = self.get(name).await?;
                return Ok(Resolved {
                    target: target.clone(),
                    namespace: self.namespace().to_owned(),
                    selector: None,
                    service: None,
                    pods: vec![pod],
                });
            }
            Kind::Service => {
                let svc: Service = self.get(name).await?;
                let map = (svc.spec.as_ref()).and_then(|s| s.selector.clone());
                let selector = match map {
                    Some(map) if !map.is_empty() => selector_from_map(&map),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Object,
                            format!(
                                "invalid service '{name}': Service is defined without a selector"
                            ),
                        ));
                    }
                };
                service = Some(svc);
                selector
            }
            Kind::Deployment => {
                let d: Deployment = self.get(name).await?;
                workload_selector(target, d.spec.map(|s| s.selector))?
            }
            Kind::ReplicaSet => {
                let o: ReplicaSet = self.get(name).await?;
                workload_selector(target, o.spec.map(|s| s.selector))?
            }
            Kind::StatefulSet => {
                let o: StatefulSet = self.get(name).await?;
                workload_selector(target, o.spec.map(|s| s.selector))?
            }
            Kind::DaemonSet => {
                let o: DaemonSet = self.get(name).await?;
                workload_selector(target, o.spec.map(|s| s.selector))?
            }
            Kind::Job => {
                let o: Job = self.get(name).await?;
                workload_selector(target, o.spec.and_then(|s| s.selector))?
            }
            Kind::ReplicationController => {
                let o: ReplicationController = self.get(name).await?;
                let map = o.spec.and_then(|s| s.selector).unwrap_or_default();
                selector_from_map(&map)
            }
        };
        let pods = self.pods_selected(&selector).await?;
        Ok(Resolved {
            target: target.clone(),
            namespace: self.namespace().to_owned(),
            selector: Some(selector),
            service,
            pods,
        })
    }

    /// The pods of the client's namespace that `label_selector` selects, most ready
    /// first.
    ///
    /// # Errors
    ///
    /// The API server's error.
    pub async fn pods_selected(&self, label_selector: &str) -> Result<Vec<Pod>, Error> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), self.namespace());
        let list = (api
            .list(&ListParams::default().labels(label_selector))
            .await)
            .map_err(Error::from_kube)?;
        let mut pods = list.items;
        sort_pods(&mut pods);
        Ok(pods)
    }

    async fn get<K>(&self, name: &str) -> Result<K, Error>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.kube.clone(), self.namespace());
        api.get(name).await.map_err(Error::from_kube)
    }
}

// ===== impl Resolved =====

impl Resolved {
    /// The pods ready to take connections (see [`is_ready`]).
    pub fn ready_pods(&self) -> Vec<&Pod> {
        ready_pods(&self.pods)
    }

    /// The pod `kubectl port-forward` would pick: the first of [`pods`](Resolved::pods).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoPods`] when the target selects none.
    pub fn first_pod(&self) -> Result<&Pod, Error> {
        self.pods.first().ok_or_else(|| {
            Error::new(
                ErrorKind::NoPods,
                format!(
                    "no pods found for {} (selector {})",
                    self.target,
                    self.selector.as_deref().unwrap_or("")
                ),
            )
        })
    }

    /// The port of `pod` that the remote port `port` (a number or a name) means, as
    /// kubectl translates it: through the service's ports for a service target, else
    /// the pod's named container ports.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Port`] with kubectl's message: `Pod 'web-1' does not have a named port
    /// 'x'`, `Service 'web' does not have a named port 'x'`, `Service web does not have a
    /// service port 81`, `UDP protocol is not supported for 53`, or a port of 0 or more
    /// than 65535.
    pub fn remote_port(&self, pod: &Pod, port: &str) -> Result<u16, Error> {
        match &self.service {
            Some(service) => service_target_port(service, pod, port),
            None => pod_port(pod, port),
        }
    }
}

/// Whether `pod` takes connections: `Running`, not being deleted, and its `Ready`
/// condition `True` (a pod that reports no conditions at all counts as ready).
pub fn is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() || phase(pod) != "Running" {
        return false;
    }
    let conditions = (pod.status.as_ref()).and_then(|s| s.conditions.as_deref());
    match conditions {
        None | Some([]) => true,
        Some(conditions) => (conditions.iter()).any(|c| c.type_ == "Ready" && c.status == "True"),
    }
}

/// The pods of `pods` that are ready (see [`is_ready`]).
pub fn ready_pods(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter().filter(|p| is_ready(p)).collect()
}

/// `Ok` when `pod` runs; else kubectl's error: `unable to forward port because pod is not
/// running. Current status=Pending`.
///
/// # Errors
///
/// [`ErrorKind::NotRunning`].
pub fn check_running(pod: &Pod) -> Result<(), Error> {
    match phase(pod) {
        "Running" => Ok(()),
        other => Err(Error::new(
            ErrorKind::NotRunning,
            format!("unable to forward port because pod is not running. Current status={other}"),
        )),
    }
}

/// `status.phase`, or `""`.
pub(crate) fn phase(pod: &Pod) -> &str {
    (pod.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's name.
pub(crate) fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// Ready pods first, then running, then the rest; by name within each.
fn sort_pods(pods: &mut [Pod]) {
    pods.sort_by_cached_key(|p| (!is_ready(p), phase(p) != "Running", pod_name(p).to_owned()));
}

/// `a=b,c=d`, keys in order.
fn selector_from_map(map: &BTreeMap<String, String>) -> String {
    (map.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A workload's `spec.selector` as a label selector string: `matchLabels`, then
/// `matchExpressions` (`k in (a,b)`, `k notin (a)`, `k`, `!k`).
fn workload_selector(target: &Target, selector: Option<LabelSelector>) -> Result<String, Error> {
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::Object,
            format!("{target}: invalid label selector: {why}"),
        )
    };
    let selector = selector.ok_or_else(|| invalid("none"))?;
    let mut terms = Vec::new();
    if let Some(labels) = &selector.match_labels
        && !labels.is_empty()
    {
        terms.push(selector_from_map(labels));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => {
                return Err(invalid(&format!(
                    "{other:?} is not a valid label selector operator"
                )));
            }
        });
    }
    if terms.is_empty() {
        return Err(invalid("it selects everything"));
    }
    Ok(terms.join(","))
}

// ===== ports =====

/// A port number of a SPEC, or `None` for a name.
fn port_number(port: &str) -> Result<Option<u16>, Error> {
    if port.is_empty() {
        return Err(Error::new(ErrorKind::Port, "remote port cannot be empty"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(Error::new(
            ErrorKind::Port,
            format!("`{port}` is not a valid port number: 1 to 65535"),
        )),
    }
}

/// The container ports of every container of `pod`: (name, number, protocol).
fn container_ports(pod: &Pod) -> impl Iterator<Item = (Option<&str>, i32, &str)> {
    (pod.spec.iter())
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            (
                p.name.as_deref(),
                p.container_port,
                p.protocol.as_deref().unwrap_or("TCP"),
            )
        })
}

/// kubectl's `checkUDPPorts`: a port that is UDP and not also TCP cannot be forwarded.
fn refuse_udp_only(
    udp: HashSet<i32>,
    tcp: &HashSet<i32>,
    number: i32,
    given: &str,
) -> Result<(), Error> {
    if udp.contains(&number) && !tcp.contains(&number) {
        return Err(Error::new(
            ErrorKind::Port,
            format!("UDP protocol is not supported for {given}"),
        ));
    }
    Ok(())
}

fn to_u16(n: i32, given: &str) -> Result<u16, Error> {
    u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::new(
            ErrorKind::Port,
            format!("port {n} (for `{given}`) is not a valid port number"),
        )
    })
}

/// kubectl's `convertPodNamedPortToNumber` with `checkUDPPortInPod`.
fn pod_port(pod: &Pod, port: &str) -> Result<u16, Error> {
    let number = match port_number(port)? {
        Some(n) => i32::from(n),
        None => container_port_by_name(pod, port)?,
    };
    let (mut udp, mut tcp) = (HashSet::new(), HashSet::new());
    for (_, n, protocol) in container_ports(pod) {
        match protocol {
            "UDP" => udp.insert(n),
            "TCP" => tcp.insert(n),
            _ => false,
        };
    }
    refuse_udp_only(udp, &tcp, number, port)?;
    to_u16(number, port)
}

/// kubectl's `LookupContainerPortNumberByName`.
fn container_port_by_name(pod: &Pod, name: &str) -> Result<i32, Error> {
    (container_ports(pod).find(|(n, _, _)| *n == Some(name)))
        .map(|(_, number, _)| number)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Port,
                format!(
                    "Pod '{}' does not have a named port '{name}'",
                    pod_name(pod)
                ),
            )
        })
}

/// kubectl's `checkUDPPortInService` and `translateServicePortToTargetPort`.
fn service_target_port(service: &Service, pod: &Pod, port: &str) -> Result<u16, Error> {
    let name = service.metadata.name.as_deref().unwrap_or("");
    let ports = (service.spec.as_ref())
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[]);
    let number = match port_number(port)? {
        Some(n) => i32::from(n),
        None => (ports.iter())
            .find(|p| p.name.as_deref() == Some(port))
            .map(|p| p.port)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Port,
                    format!("Service '{name}' does not have a named port '{port}'"),
                )
            })?,
    };
    let (mut udp, mut tcp) = (HashSet::new(), HashSet::new());
    for p in ports {
        match p.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => udp.insert(p.port),
            "TCP" => tcp.insert(p.port),
            _ => false,
        };
    }
    refuse_udp_only(udp, &tcp, number, port)?;
    let service_port = ports.iter().find(|p| p.port == number).ok_or_else(|| {
        Error::new(
            ErrorKind::Port,
            format!("Service {name} does not have a service port {number}"),
        )
    })?;
    let target = match &service_port.target_port {
        None | Some(IntOrString::Int(0)) => number,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(target)) => match target.parse::<i32>() {
            Ok(n) if n > 0 => n,
            _ => container_port_by_name(pod, target)?,
        },
    };
    to_u16(target, port)
}

/// A pod from its JSON, for tests and fake event sources.
///
/// # Errors
///
/// The JSON is not a pod.
pub fn pod_from_json(value: Value) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(value)
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
