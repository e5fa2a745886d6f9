//! `TYPE/NAME` as `kubectl port-forward` reads it: the resource names, singular names,
//! short names and group-qualified names kubectl's discovery gives for the kinds it can
//! forward to (`polymorphichelpers.AttachablePodForObjectFn`), and a bare `NAME` meaning
//! a pod.

use std::fmt;
use std::str::FromStr;

/// A kind of object `proxy forward` (like `kubectl port-forward`) reaches pods through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `pod`, `pods`, `po`.
    Pod,
    /// `service`, `services`, `svc`: its `spec.selector`, and its ports mapped to
    /// `targetPort`s.
    Service,
    /// `deployment`, `deployments`, `deploy` (group `apps`).
    Deployment,
    /// `replicaset`, `replicasets`, `rs` (group `apps`).
    ReplicaSet,
    /// `statefulset`, `statefulsets`, `sts` (group `apps`).
    StatefulSet,
    /// `daemonset`, `daemonsets`, `ds` (group `apps`).
    DaemonSet,
    /// `job`, `jobs` (group `batch`).
    Job,
    /// `replicationcontroller`, `replicationcontrollers`, `rc`.
    ReplicationController,
}

/// Every kind, in the order errors list them.
const KINDS: [Kind; 8] = [
    Kind::Pod,
    Kind::Service,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::StatefulSet,
    Kind::DaemonSet,
    Kind::Job,
    Kind::ReplicationController,
];

// ===== impl Kind =====

impl Kind {
    /// The resource (plural) name: `pods`, `deployments`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::Job => "jobs",
            Kind::ReplicationController => "replicationcontrollers",
        }
    }

    /// The singular name: `pod`, `deployment`.
    pub fn singular(self) -> &'static str {
        let plural = self.plural();
        &plural[..plural.len() - 1]
    }

    /// The short names discovery gives (`po`, `svc`, `deploy`, ...); jobs have none.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::Deployment => &["deploy"],
            Kind::ReplicaSet => &["rs"],
            Kind::StatefulSet => &["sts"],
            Kind::DaemonSet => &["ds"],
            Kind::Job => &[],
            Kind::ReplicationController => &["rc"],
        }
    }

    /// The API group: `""` for the core group, `apps`, `batch`.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Service | Kind::ReplicationController => "",
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::DaemonSet => "apps",
            Kind::Job => "batch",
        }
    }

    /// The resource as the API server names it in a `NotFound` message: `pods`,
    /// `deployments.apps`.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The kind named by `token` (case-insensitive, as kubectl's REST mapper): the plural,
    /// singular or a short name, optionally qualified by the group (`deployment.apps`) or
    /// version and group (`deployments.v1.apps`, `pods.v1.`... only with a group).
    pub fn from_name(token: &str) -> Option<Kind> {
        let token = token.to_ascii_lowercase();
        KINDS
            .into_iter()
            .find(|kind| kind.names().any(|n| n == token))
    }

    /// Every spelling [`from_name`](Kind::from_name) takes for this kind.
    fn names(self) -> impl Iterator<Item = String> {
        let bare: Vec<&str> = [self.plural(), self.singular()]
            .into_iter()
            .chain(self.short_names().iter().copied())
            .collect();
        let group = self.group();
        let mut names: Vec<String> = bare.iter().map(|n| (*n).to_owned()).collect();
        if !group.is_empty() {
            for n in [self.plural(), self.singular()] {
                names.push(format!("{n}.{group}"));
                names.push(format!("{n}.v1.{group}"));
            }
        }
        names.into_iter()
    }
}

impl fmt::Display for Kind {
    /// The singular name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.singular())
    }
}

/// What `proxy forward` forwards to: a kind and a name.
///
/// # Examples
///
/// ```
/// use proxy_kube::{Kind, Target};
///
/// let target: Target = "deploy/web".parse()?;
/// assert_eq!((target.kind, target.name.as_str()), (Kind::Deployment, "web"));
/// assert_eq!("web-1".parse::<Target>()?.kind, Kind::Pod);
/// assert!("bogus/web".parse::<Target>().unwrap_err().to_string().contains("`bogus`"));
/// # Ok::<(), proxy_kube::TargetError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The kind of object.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// A `TYPE/NAME` that cannot be read; the message names the bad token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError(String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

// ===== impl Target =====

impl Target {
    /// A target of `kind` named `name`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Target {
            kind,
            name: name.into(),
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// `TYPE/NAME`, or a bare `NAME` for a pod. The name is checked as the API server
    /// checks object names (a DNS subdomain: lower-case letters, digits, `-` and `.`).
    fn from_str(s: &str) -> Result<Self, TargetError> {
        let (kind, name) = match s.split_once('/') {
            None => (Kind::Pod, s),
            Some((kind, name)) => {
                let kind = Kind::from_name(kind).ok_or_else(|| {
                    TargetError(format!(
                        "`{kind}` in `{s}` is not a resource type port-forward takes: use \
                         pod (po), service (svc), deployment (deploy), replicaset (rs), \
                         statefulset (sts), daemonset (ds), job or \
                         replicationcontroller (rc)"
                    ))
                })?;
                (kind, name)
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(TargetError(format!(
                "`{s}`: write TYPE/NAME or NAME, one resource and one name (such as \
                 pod/web or svc/web)"
            )));
        }
        check_name(name).map_err(|why| TargetError(format!("`{name}` in `{s}` {why}")))?;
        Ok(Target::new(kind, name))
    }
}

impl fmt::Display for Target {
    /// `TYPE/NAME` with the singular type: `deployment/web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// An object name as the API server takes it: a DNS subdomain (RFC 1123).
fn check_name(name: &str) -> Result<(), &'static str> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "is not a valid object name: lower-case letters, digits, '-' and '.', starting \
             and ending with a letter or digit, at most 253 characters",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_kubectl_takes_maps_to_its_kind() {
        let cases = [
            (Kind::Pod, &["pod", "pods", "po", "Pod", "PODS"][..]),
            (Kind::Service, &["svc", "service", "services"]),
            (
                Kind::Deployment,
                &[
                    "deploy",
                    "deployment",
                    "deployments",
                    "deployment.apps",
                    "deployments.apps",
                    "deployments.v1.apps",
                ],
            ),
            (Kind::ReplicaSet, &["rs", "replicaset", "replicasets.apps"]),
            (Kind::StatefulSet, &["sts", "statefulset", "statefulsets"]),
            (Kind::DaemonSet, &["ds", "daemonset", "daemonsets.apps"]),
            (Kind::Job, &["job", "jobs", "jobs.batch", "job.v1.batch"]),
            (
                Kind::ReplicationController,
                &["rc", "replicationcontroller", "replicationcontrollers"],
            ),
        ];
        for (kind, names) in cases {
            for name in names {
                let t: Target = format!("{name}/web").parse().unwrap();
                assert_eq!(t, Target::new(kind, "web"), "{name}");
            }
        }
        assert_eq!(
            "web-1.a".parse::<Target>().unwrap(),
            Target::new(Kind::Pod, "web-1.a")
        );
        assert_eq!(Kind::Deployment.qualified(), "deployments.apps");
        assert_eq!(Kind::Pod.qualified(), "pods");
        assert_eq!(Target::new(Kind::Service, "w").to_string(), "service/w");
    }

    #[test]
    fn errors_name_the_bad_token() {
        for (bad, token) in [
            ("bogus/web", "`bogus`"),
            ("svcs/web", "`svcs`"),
            ("apps/deploy/web", "`apps`"),
            ("pod/", "`pod/`"),
            ("deploy/a/b", "`deploy/a/b`"),
            ("", "``"),
            ("pod/Web", "`Web`"),
            ("svc/-web", "`-web`"),
            ("pods.apps/web", "`pods.apps`"),
            ("configmap/web", "`configmap`"),
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.starts_with(token), "{bad:?}: {e}");
        }
    }
}
