//! [`SharedLookups`]: one lookup of TARGET's name for every forwarder of a
//! `proxy forward`.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_core::resolve::{Resolution, Resolve, Resolving};
use tokio::sync::watch;

/// How long a name lookup's answer is shared with the other forwarders of the same name.
const SHARED_ANSWER: Duration = Duration::from_secs(1);

/// A resolver in front of another that shares each answer among the forwarders of one
/// `proxy forward`: every mapping has a forwarder with a cache of its own, all for the same
/// name, so a range of ports would otherwise look the name up once per port and address,
/// at start and at every refresh. Concurrent lookups of a name wait for one, and an
/// answer is reused for [`SHARED_ANSWER`].
pub(super) struct SharedLookups {
    inner: Arc<dyn Resolve>,
    names: Arc<Mutex<HashMap<String, Lookup>>>,
}

type Answer = Result<Resolution, (io::ErrorKind, String)>;

#[derive(Clone)]
enum Lookup {
    Running(watch::Receiver<Option<Answer>>),
    Done(Instant, Answer),
}

impl SharedLookups {
    pub(super) fn new(inner: Arc<dyn Resolve>) -> Self {
        SharedLookups {
            inner,
            names: Arc::default(),
        }
    }
}

impl Resolve for SharedLookups {
    fn resolve(&self, name: &str) -> Resolving {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting = match names.get(name) {
            Some(Lookup::Done(at, answer)) if at.elapsed() < SHARED_ANSWER => {
                let answer = answer.clone();
                return Box::pin(async move { answer.map_err(|(k, m)| io::Error::new(k, m)) });
            }
            Some(Lookup::Running(rx)) => rx.clone(),
            _ => {
                let (tx, rx) = watch::channel(None);
                names.insert(name.to_owned(), Lookup::Running(rx.clone()));
                // In a task of its own, so the lookup finishes for the others when the
                // forwarder that started it stops waiting.
                let lookup = self.inner.resolve(name);
                let (all, key) = (self.names.clone(), name.to_owned());
                tokio::spawn(async move {
                    let answer = lookup.await.map_err(|e| (e.kind(), e.to_string()));
                    all.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, Lookup::Done(Instant::now(), answer.clone()));
                    let _ = tx.send(Some(answer));
                });
                rx
            }
        };
        drop(names);
        Box::pin(async move {
            let answer = waiting
                .wait_for(Option::is_some)
                .await
                .map_err(|_| io::Error::other("the shared lookup ended without an answer"))?
                .clone();
            answer
                .unwrap_or_else(|| Err((io::ErrorKind::Other, "no answer".into())))
                .map_err(|(k, m)| io::Error::new(k, m))
        })
    }
}
