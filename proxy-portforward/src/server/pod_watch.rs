//! `GET .../pods?watch=true`: a stream of watch events, one JSON object a line, as the
//! API server sends them (`{"type":"ADDED","object":{...}}`): the pods selected now as
//! `ADDED` (watched from no version), then the differences each
//! [`Server::set_cluster`](super::Server::set_cluster) makes, until the client goes or
//! `timeoutSeconds` pass. Watched from an older version than the current one, whose changes
//! are not kept, it is the API server's `410 Expired` in an `ERROR` event, so the client
//! lists again rather than miss a pod that went meanwhile.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{Body, Versioned};

/// How long a watch lasts when the client does not say (the API server picks 30 to 60
/// minutes).
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The events queued for a slow client before the watch waits for it.
const QUEUE: usize = 64;

/// The body of a pod watch of `namespace` by the equality `selector`. Watching from the
/// current `resourceVersion` (a list's) starts with no event; from none, with an `ADDED`
/// for each pod selected now; from another, with an `ERROR` event (410, `Expired`) and
/// nothing more.
pub(super) fn pods(
    mut served: watch::Receiver<Versioned>,
    namespace: String,
    selector: String,
    from_version: Option<u64>,
    timeout: Duration,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    // The objects of the moment of the request, whenever the task first runs.
    let mut now = served.borrow_and_update().clone();
    let mut previous = BTreeMap::new();
    match from_version {
        Some(version) if version == now.version => {
            previous = selected(&now, &namespace, &selector);
        }
        Some(version) => {
            let _ = tx.try_send(expired(version, now.version));
            drop(tx);
            return body(rx);
        }
        None => {}
    }
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let current = selected(&now, &namespace, &selector);
            for event in events(&previous, &current) {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            previous = current;
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                changed = served.changed() => if changed.is_err() { return },
            }
            now = served.borrow_and_update().clone();
        }
    });
    body(rx)
}

/// The response body: each line from `rx`, until its senders are gone.
fn body(rx: mpsc::Receiver<Bytes>) -> Body {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    StreamBody::new(frames).boxed()
}

/// The API server's answer to a watch from a version whose changes it no longer has.
fn expired(asked: u64, current: u64) -> Bytes {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {asked} ({current})"),
        "reason": "Expired",
        "code": 410,
    });
    let mut text = json!({ "type": "ERROR", "object": status }).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The selected pods by name, each with the version as its `resourceVersion`.
fn selected(served: &Versioned, namespace: &str, selector: &str) -> BTreeMap<String, Value> {
    let Ok(list) = served.cluster.pod_list_json(namespace, selector) else {
        return BTreeMap::new();
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    (items.into_iter())
        .map(|mut pod| {
            pod["metadata"]["resourceVersion"] = served.version.to_string().into();
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
            (name, pod)
        })
        .collect()
}

/// The lines that take a watcher from `previous` to `current`.
fn events(previous: &BTreeMap<String, Value>, current: &BTreeMap<String, Value>) -> Vec<Bytes> {
    let line = |kind: &str, object: &Value| {
        let mut text = json!({ "type": kind, "object": object }).to_string();
        text.push('\n');
        Bytes::from(text)
    };
    let mut out = Vec::new();
    for (name, pod) in current {
        match previous.get(name) {
            None => out.push(line("ADDED", pod)),
            Some(old) if without_version(old) != without_version(pod) => {
                out.push(line("MODIFIED", pod));
            }
            Some(_) => {}
        }
    }
    for (name, pod) in previous {
        if !current.contains_key(name) {
            out.push(line("DELETED", pod));
        }
    }
    out
}

/// `pod` with no `resourceVersion`, to compare what changed.
fn without_version(pod: &Value) -> Value {
    let mut pod = pod.clone();
    if let Some(metadata) = pod["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str) -> Value {
        json!({ "metadata": { "name": name, "resourceVersion": "2" }, "status": { "phase": phase } })
    }

    #[test]
    fn differences_become_events() {
        let before = BTreeMap::from([
            ("a".to_owned(), pod("a", "Running")),
            ("b".to_owned(), pod("b", "Running")),
        ]);
        let mut after = before.clone();
        after.remove("a");
        after.insert("b".to_owned(), pod("b", "Pending"));
        after.insert("c".to_owned(), pod("c", "Running"));
        let lines: Vec<Value> = (events(&before, &after).iter())
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        let summary: Vec<(&str, &str)> = (lines.iter())
            .map(|l| {
                (
                    l["type"].as_str().unwrap(),
                    l["object"]["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [("MODIFIED", "b"), ("ADDED", "c"), ("DELETED", "a")]
        );
        assert!(events(&after, &after).is_empty());
    }
}

#[cfg(test)]
mod expired_tests {
    use std::sync::Arc;

    use super::*;
    use crate::objects::Cluster;

    #[tokio::test]
    async fn a_watch_from_an_older_version_is_told_410_expired() {
        let (_tx, rx) = watch::channel(Versioned {
            version: 3,
            cluster: Arc::new(Cluster::default()),
        });
        let body = pods(
            rx,
            "default".into(),
            String::new(),
            Some(2),
            DEFAULT_TIMEOUT,
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(event["type"], "ERROR");
        assert_eq!(event["object"]["code"], 410);
        assert_eq!(event["object"]["reason"], "Expired");
        assert_eq!(
            event["object"]["message"],
            "too old resource version: 2 (3)"
        );
    }
}
