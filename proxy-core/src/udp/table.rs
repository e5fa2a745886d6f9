//! [`Table`]: the session table of one listener, bounded, least recently used first out.
//! What a session does is [`session`](super::session)'s.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use tokio_util::sync::CancellationToken;

use super::session::{Ending, Session, SessionKey};

/// The session table of one listener: bounded, least recently used first out.
pub(super) struct Table {
    sessions: LruCache<SessionKey, Arc<Session>>,
    next_id: u64,
}

impl Table {
    pub(super) fn new(max: NonZeroUsize) -> Self {
        Table {
            sessions: LruCache::new(max),
            next_id: 0,
        }
    }

    /// The live session for `key`, marked as most recently used.
    pub(super) fn get(&mut self, key: &SessionKey) -> Option<Arc<Session>> {
        match self.sessions.get(key) {
            Some(s) if !s.is_done() => Some(s.clone()),
            Some(_) => {
                self.sessions.pop(key);
                None
            }
            None => None,
        }
    }

    /// Adds a new session for `key`; returns the session evicted to make room, if any.
    pub(super) fn insert(
        &mut self,
        key: SessionKey,
        header: Option<Box<[u8]>>,
        closing: &CancellationToken,
    ) -> (Arc<Session>, Option<Arc<Session>>) {
        self.next_id += 1;
        let session = Arc::new(Session::new(self.next_id, key, header, closing));
        let evicted = self
            .sessions
            .push(key, session.clone())
            .filter(|(k, _)| *k != key)
            .map(|(_, s)| s);
        (session, evicted)
    }

    /// Ends every session in the table, for `why`.
    pub(super) fn end_all(&self, why: Ending) {
        for (_, session) in &self.sessions {
            session.end(why);
        }
    }

    /// Changes the most sessions kept, evicting the least recently used beyond it.
    pub(super) fn resize(&mut self, max: NonZeroUsize) {
        while self.sessions.len() > max.get() {
            if let Some((_, s)) = self.sessions.pop_lru() {
                s.evict();
            }
        }
        self.sessions.resize(max);
    }

    /// Forgets a session whose task has ended, unless a newer one took its key.
    pub(super) fn ended(&mut self, key: &SessionKey, id: u64) {
        if self.sessions.peek(key).is_some_and(|s| s.id() == id) {
            self.sessions.pop(key);
        }
    }
}
