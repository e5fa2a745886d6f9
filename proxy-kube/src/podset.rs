//! The pods a target selects, followed as they change: a list, then a watch from the
//! list's `resourceVersion`, applied to a [`PodSet`]; a watch that ends is started
//! again from the last version seen, one that fails (or a `410 Gone`) makes a new list.
//! A server that does not watch (`405`) is listed again every few seconds instead.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::resolve::{Resolved, is_ready, pod_name};

/// The first pause after a failed list or watch; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a server that does not watch is listed again.
const RELIST: Duration = Duration::from_secs(2);

/// A set of pods by name, as a list and watch events leave it.
///
/// # Examples
///
/// ```
/// use kube::api::WatchEvent;
/// use proxy_kube::{PodSet, pod_from_json};
///
/// let pod = |name: &str, phase: &str| pod_from_json(serde_json::json!({
///     "metadata": { "name": name }, "status": { "phase": phase },
/// })).unwrap();
/// let mut set = PodSet::default();
/// assert!(set.apply(WatchEvent::Added(pod("web-1", "Pending"))).is_some());
/// assert!(set.ready_names().is_empty());
/// set.apply(WatchEvent::Modified(pod("web-1", "Running")));
/// assert_eq!(set.ready_names(), ["web-1"]);
/// set.apply(WatchEvent::Deleted(pod("web-1", "Running")));
/// assert!(set.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct PodSet {
    pods: BTreeMap<String, Pod>,
}

// ===== impl PodSet =====

impl PodSet {
    /// The set of `pods`.
    pub fn from_pods(pods: impl IntoIterator<Item = Pod>) -> Self {
        PodSet {
            pods: (pods.into_iter())
                .map(|p| (pod_name(&p).to_owned(), p))
                .collect(),
        }
    }

    /// Applies one watch event: `Added` and `Modified` put the pod in, `Deleted` takes it
    /// out. Returns the event's `resourceVersion` (a bookmark's too) for the next watch,
    /// or `None` for an `Error` event, after which the caller lists again.
    pub fn apply(&mut self, event: WatchEvent<Pod>) -> Option<String> {
        match event {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                let version = pod.metadata.resource_version.clone().unwrap_or_default();
                self.pods.insert(pod_name(&pod).to_owned(), pod);
                Some(version)
            }
            WatchEvent::Deleted(pod) => {
                self.pods.remove(pod_name(&pod));
                Some(pod.metadata.resource_version.unwrap_or_default())
            }
            WatchEvent::Bookmark(b) => Some(b.metadata.resource_version),
            WatchEvent::Error(_) => None,
        }
    }

    /// Every pod, by name.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The ready pods (see [`is_ready`](crate::is_ready)), by name.
    pub fn ready(&self) -> Vec<&Pod> {
        self.pods.values().filter(|p| is_ready(p)).collect()
    }

    /// The names of the ready pods, sorted.
    pub fn ready_names(&self) -> Vec<&str> {
        self.ready().into_iter().map(pod_name).collect()
    }

    /// The pod `name`.
    pub fn get(&self, name: &str) -> Option<&Pod> {
        self.pods.get(name)
    }

    /// The number of pods, ready or not.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether there is no pod at all.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// The pods of a target, followed in the background; the task stops when this is
/// dropped.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), proxy_kube::Error> {
/// let client = proxy_kube::Client::builder().build().await?;
/// let resolved = client.resolve(&"deploy/web".parse().unwrap()).await?;
/// let mut pods = client.watch_pods(&resolved);
/// while let Some(set) = pods.changed().await {
///     println!("ready: {:?}", set.ready_names());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PodWatch {
    rx: watch::Receiver<PodSet>,
    task: JoinHandle<()>,
}

impl PodWatch {
    /// The pods as last seen.
    pub fn current(&self) -> PodSet {
        self.rx.borrow().clone()
    }

    /// A receiver of the set, for tasks of their own: it sees a change when the ready pods
    /// change, and always holds the latest set (a replaced pod's new uid too).
    pub fn subscribe(&self) -> watch::Receiver<PodSet> {
        self.rx.clone()
    }

    /// Waits until the set of ready pods changes (or, first, the first list arrives), and
    /// returns the new set; `None` when the background task has ended.
    pub async fn changed(&mut self) -> Option<PodSet> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ===== impl Client =====

impl Client {
    /// Follows the pods of `resolved` (its selector, or its one pod by name) in a
    /// background task: see [`PodWatch`]. Failures are logged and retried with backoff;
    /// the set keeps its last value meanwhile.
    pub fn watch_pods(&self, resolved: &Resolved) -> PodWatch {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), &resolved.namespace);
        let (labels, only) = match &resolved.selector {
            Some(selector) => (selector.clone(), None),
            None => (String::new(), Some(resolved.target.name.clone())),
        };
        let (tx, rx) = watch::channel(PodSet::default());
        let task = tokio::spawn(follow(api, labels, only, tx));
        PodWatch { rx, task }
    }
}

/// Publishes `set` when its ready pods differ from what was published.
fn publish(tx: &watch::Sender<PodSet>, set: &PodSet, first: &mut bool) {
    tx.send_if_modified(|published| {
        let changed = *first || published.ready_names() != set.ready_names();
        *published = set.clone();
        *first = false;
        changed
    });
}

/// List, watch, apply, publish; forever.
///
/// With `only`, one pod by name: asked with a field selector, and checked here too, for
/// a server that ignores field selectors.
async fn follow(api: Api<Pod>, labels: String, only: Option<String>, tx: watch::Sender<PodSet>) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    let fields = (only.as_ref()).map_or_else(String::new, |n| format!("metadata.name={n}"));
    let wanted = |pod: &Pod| only.as_deref().is_none_or(|n| pod_name(pod) == n);
    let list_params = ListParams::default().labels(&labels).fields(&fields);
    loop {
        let list = match api.list(&list_params).await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "listing pods failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let mut version = list.metadata.resource_version.unwrap_or_default();
        let mut set = PodSet::from_pods(list.items.into_iter().filter(|p| wanted(p)));
        publish(&tx, &set, &mut first);
        // Watch from `version` until the watch fails; then list again.
        loop {
            let params = WatchParams::default()
                .labels(&labels)
                .fields(&fields)
                .timeout(290);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.code == 405 => {
                    tracing::debug!("the API server does not watch: listing again");
                    tokio::time::sleep(RELIST).await;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "watching pods failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            };
            backoff = MIN_BACKOFF;
            let mut stream = std::pin::pin!(stream);
            let mut failed = false;
            while let Some(event) = stream.next().await {
                let applied = match event {
                    Ok(
                        WatchEvent::Added(pod)
                        | WatchEvent::Modified(pod)
                        | WatchEvent::Deleted(pod),
                    ) if !wanted(&pod) => pod.metadata.resource_version,
                    Ok(event) => set.apply(event),
                    Err(error) => {
                        tracing::debug!(%error, "pod watch failed");
                        None
                    }
                };
                match applied {
                    Some(v) => {
                        if !v.is_empty() {
                            version = v;
                        }
                        publish(&tx, &set, &mut first);
                    }
                    None => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::WatchEvent;
    use serde_json::json;

    use super::*;
    use crate::pod_from_json;

    fn pod(name: &str, version: &str, phase: &str, ready: Option<bool>) -> Pod {
        let mut value = json!({
            "metadata": { "name": name, "resourceVersion": version },
            "status": { "phase": phase },
        });
        if let Some(ready) = ready {
            value["status"]["conditions"] =
                json!([{ "type": "Ready", "status": if ready { "True" } else { "False" } }]);
        }
        pod_from_json(value).unwrap()
    }

    #[test]
    fn a_sequence_of_events_leaves_the_ready_set() {
        let mut set = PodSet::from_pods([pod("a", "1", "Running", None)]);
        assert_eq!(set.ready_names(), ["a"]);
        let events = [
            (WatchEvent::Added(pod("b", "2", "Pending", None)), vec!["a"]),
            (
                WatchEvent::Modified(pod("b", "3", "Running", Some(false))),
                vec!["a"],
            ),
            (
                WatchEvent::Modified(pod("b", "4", "Running", Some(true))),
                vec!["a", "b"],
            ),
            (
                WatchEvent::Deleted(pod("a", "5", "Running", None)),
                vec!["b"],
            ),
            (
                WatchEvent::Modified(pod("b", "6", "Failed", Some(false))),
                vec![],
            ),
        ];
        for (i, (event, ready)) in events.into_iter().enumerate() {
            let version = set.apply(event);
            assert_eq!(version, Some((i + 2).to_string()));
            assert_eq!(set.ready_names(), ready, "after event {i}");
        }
        assert_eq!(set.len(), 1);
        assert!(set.get("b").is_some());
        let bookmark: WatchEvent<Pod> = serde_json::from_value(json!({
            "type": "BOOKMARK",
            "object": { "kind": "Pod", "apiVersion": "v1", "metadata": { "resourceVersion": "9" } },
        }))
        .unwrap();
        assert_eq!(set.apply(bookmark), Some("9".to_owned()));
        let gone: WatchEvent<Pod> = serde_json::from_value(json!({
            "type": "ERROR",
            "object": { "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": "too old resource version", "reason": "Expired", "code": 410 },
        }))
        .unwrap();
        assert_eq!(set.apply(gone), None);
        assert_eq!(set.len(), 1);
    }

    #[tokio::test]
    async fn publishing_wakes_only_on_a_change_of_the_ready_set() {
        let (tx, mut rx) = watch::channel(PodSet::default());
        let mut first = true;
        let mut set = PodSet::default();
        publish(&tx, &set, &mut first);
        assert!(
            rx.has_changed().unwrap(),
            "the first list is news even when empty"
        );
        rx.borrow_and_update();
        set.apply(WatchEvent::Added(pod("a", "1", "Pending", None)));
        publish(&tx, &set, &mut first);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(rx.borrow().len(), 1, "the value is kept current");
        set.apply(WatchEvent::Modified(pod("a", "2", "Running", None)));
        publish(&tx, &set, &mut first);
        assert!(rx.has_changed().unwrap());
    }
}
