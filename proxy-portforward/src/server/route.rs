//! Which API path a request names: the few the server answers, read with no I/O.

/// A kind of namespaced object the server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Pods,
    Services,
    Deployments,
    /// A workload kubectl may name (`rs/`, `sts/`, `ds/`) that this server never has.
    Absent(&'static str),
}

impl Resource {
    /// The name in a `NotFound` message: `pods`, `deployments.apps`.
    pub(crate) fn qualified(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Services => "services",
            Resource::Deployments => "deployments.apps",
            Resource::Absent(name) => name,
        }
    }
}

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps`, `/apis/apps/v1`.
    Discovery(&'a str),
    /// `GET .../namespaces/NS/RESOURCE/NAME`.
    Get {
        resource: Resource,
        namespace: &'a str,
        name: &'a str,
    },
    /// `GET /api/v1/namespaces/NS/pods`.
    ListPods { namespace: &'a str },
    /// `/api/v1/namespaces/NS/pods/NAME/portforward`.
    PortForward { namespace: &'a str, name: &'a str },
    /// Anything else.
    Unknown,
}

/// Reads `path` (no query).
pub(crate) fn route(path: &str) -> Route<'_> {
    if crate::discovery::document(path).is_some() {
        return Route::Discovery(path);
    }
    let path = path.trim_end_matches('/');
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/apps/v1/") {
        ("apps", rest)
    } else {
        return Route::Unknown;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Route::Unknown;
    }
    match (group, parts.as_slice()) {
        ("", ["namespaces", ns, "pods"]) => Route::ListPods { namespace: ns },
        ("", ["namespaces", ns, "pods", name, "portforward"]) => Route::PortForward {
            namespace: ns,
            name,
        },
        (group, ["namespaces", ns, resource, name]) => {
            let resource = match (group, *resource) {
                ("", "pods") => Resource::Pods,
                ("", "services") => Resource::Services,
                ("apps", "deployments") => Resource::Deployments,
                ("apps", "replicasets") => Resource::Absent("replicasets.apps"),
                ("apps", "statefulsets") => Resource::Absent("statefulsets.apps"),
                ("apps", "daemonsets") => Resource::Absent("daemonsets.apps"),
                _ => return Route::Unknown,
            };
            Route::Get {
                resource,
                namespace: ns,
                name,
            }
        }
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_paths_kubectl_asks_for() {
        assert_eq!(route("/api"), Route::Discovery("/api"));
        assert_eq!(route("/apis/apps/v1"), Route::Discovery("/apis/apps/v1"));
        assert_eq!(
            route("/api/v1/namespaces/default/pods/web"),
            Route::Get {
                resource: Resource::Pods,
                namespace: "default",
                name: "web"
            }
        );
        assert_eq!(
            route("/apis/apps/v1/namespaces/ns/deployments/d"),
            Route::Get {
                resource: Resource::Deployments,
                namespace: "ns",
                name: "d"
            }
        );
        assert_eq!(
            route("/apis/apps/v1/namespaces/ns/statefulsets/s"),
            Route::Get {
                resource: Resource::Absent("statefulsets.apps"),
                namespace: "ns",
                name: "s"
            }
        );
        assert_eq!(
            route("/api/v1/namespaces/default/pods"),
            Route::ListPods {
                namespace: "default"
            }
        );
        assert_eq!(
            route("/api/v1/namespaces/a/pods/b/portforward"),
            Route::PortForward {
                namespace: "a",
                name: "b"
            }
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        for path in [
            "/",
            "/api/v2",
            "/api/v1/namespaces//pods/x",
            "/api/v1/namespaces/a/pods/b/exec",
            "/api/v1/namespaces/a/deployments/b",
            "/apis/apps/v1/namespaces/a/pods/b",
            "/api/v1/namespaces/a/configmaps/b",
        ] {
            assert_eq!(route(path), Route::Unknown, "{path}");
        }
    }
}
