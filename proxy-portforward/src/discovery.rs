//! The API discovery a port-forward server answers, so that kubectl maps `pod/`, `po/`,
//! `svc/`, `deploy/` and the other workload names to resources before it asks for the
//! object: `/version`, `/api`, `/apis`, `/api/v1` and `/apis/apps/v1`, with the fields
//! kubectl's REST mapper reads (names, kinds, short names, verbs, whether namespaced).
//!
//! kubectl first asks for aggregated discovery and falls back to these documents when the
//! server answers with them instead; so does the `kubectl` dispatcher of google-cloud-cli,
//! which picks a kubectl release by `/version`.
//!
//! # Examples
//!
//! ```
//! use proxy_portforward::discovery;
//!
//! let v1 = discovery::document("/api/v1").unwrap();
//! let pods = v1["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
//! assert_eq!(pods["shortNames"][0], "po");
//! assert!(discovery::document("/apis/batch/v1").is_none());
//! ```

use serde_json::{Value, json};

/// The Kubernetes version the server says it is (`/version`): the newest whose
/// port-forward protocols it speaks.
pub const KUBERNETES_VERSION: (u32, u32) = (1, 33);

/// The discovery document at `path` (without a query), or `None` when there is none.
pub fn document(path: &str) -> Option<Value> {
    match path.trim_end_matches('/') {
        "/version" => Some(version()),
        "/api" => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "" }],
        })),
        "/apis" => Some(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{
                "name": "apps",
                "versions": [{ "groupVersion": "apps/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" },
            }],
        })),
        "/api/v1" => Some(resource_list("v1", CORE)),
        "/apis/apps" => Some(json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": "apps",
            "versions": [{ "groupVersion": "apps/v1", "version": "v1" }],
            "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" },
        })),
        "/apis/apps/v1" => Some(resource_list("apps/v1", APPS)),
        _ => None,
    }
}

/// `/version`.
fn version() -> Value {
    let (major, minor) = KUBERNETES_VERSION;
    json!({
        "major": major.to_string(),
        "minor": minor.to_string(),
        "gitVersion": format!("v{major}.{minor}.0"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}

/// A resource as discovery lists it: name, singular name, kind, short names, verbs.
struct Resource {
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    verbs: &'static [&'static str],
}

/// What `/api/v1` lists: pods (with the `portforward` and `proxy` subresources) and
/// services (with `proxy`).
const CORE: &[Resource] = &[
    Resource {
        name: "pods",
        singular: "pod",
        kind: "Pod",
        short: &["po"],
        verbs: &["get", "list", "watch"],
    },
    Resource {
        name: "pods/portforward",
        singular: "",
        kind: "PodPortForwardOptions",
        short: &[],
        verbs: &["create", "get"],
    },
    Resource {
        name: "services",
        singular: "service",
        kind: "Service",
        short: &["svc"],
        verbs: &["get", "list", "watch"],
    },
    Resource {
        name: "services/proxy",
        singular: "",
        kind: "ServiceProxyOptions",
        short: &[],
        verbs: &["create", "delete", "get", "patch", "update"],
    },
];

/// What `/apis/apps/v1` lists: the workloads `kubectl port-forward` takes by name.
const APPS: &[Resource] = &[
    Resource {
        name: "deployments",
        singular: "deployment",
        kind: "Deployment",
        short: &["deploy"],
        verbs: &["get", "list", "watch"],
    },
    Resource {
        name: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        short: &["rs"],
        verbs: &["get", "list", "watch"],
    },
    Resource {
        name: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        short: &["sts"],
        verbs: &["get", "list", "watch"],
    },
    Resource {
        name: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        short: &["ds"],
        verbs: &["get", "list", "watch"],
    },
];

fn resource_list(group_version: &str, resources: &[Resource]) -> Value {
    let resources: Vec<Value> = (resources.iter())
        .map(|r| {
            let mut v = json!({
                "name": r.name,
                "singularName": r.singular,
                "namespaced": true,
                "kind": r.kind,
                "verbs": r.verbs,
            });
            if !r.short.is_empty() {
                v["shortNames"] = json!(r.short);
                v["categories"] = json!(["all"]);
            }
            v
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource<'a>(doc: &'a Value, name: &str) -> &'a Value {
        (doc["resources"].as_array().unwrap().iter())
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn the_workloads_kubectl_names_are_listed_with_their_short_names() {
        let core = document("/api/v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        assert_eq!(resource(&core, "pods")["kind"], "Pod");
        assert_eq!(resource(&core, "services")["shortNames"][0], "svc");
        assert_eq!(resource(&core, "pods/portforward")["verbs"][0], "create");
        let apps = document("/apis/apps/v1/").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        for (name, short) in [
            ("deployments", "deploy"),
            ("replicasets", "rs"),
            ("statefulsets", "sts"),
            ("daemonsets", "ds"),
        ] {
            let r = resource(&apps, name);
            assert_eq!(r["shortNames"][0], short);
            assert_eq!(r["namespaced"], true);
        }
    }

    #[test]
    fn groups_versions_and_unknown_paths() {
        assert_eq!(document("/api").unwrap()["versions"][0], "v1");
        let groups = document("/apis").unwrap();
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert_eq!(document("/apis/apps").unwrap()["name"], "apps");
        let v = document("/version").unwrap();
        assert_eq!(
            (v["major"].as_str(), v["minor"].as_str()),
            (Some("1"), Some("33"))
        );
        assert_eq!(v["gitVersion"], "v1.33.0");
        for unknown in ["/apis/batch/v1", "/api/v2", "/", "/apis/apps/v2"] {
            assert!(document(unknown).is_none(), "{unknown}");
        }
    }
}
