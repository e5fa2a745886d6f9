//! Idle upstream connections kept for the next request, per upstream address: bounded in
//! number and age, newest first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::body::Body;

/// How a request is sent on one upstream connection.
pub(crate) type Sender = SendRequest<Body>;

/// The most idle connections kept per upstream address.
pub(crate) const MAX_IDLE_PER_ADDR: usize = 256;

/// How long an idle connection is kept: under the keep-alive timeouts servers commonly
/// have (nginx 75 s, Node.js 5 s is the odd one: its closes are retried).
pub(crate) const MAX_IDLE_FOR: Duration = Duration::from_secs(55);

/// Idle connections by upstream address.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
}

impl Pool {
    /// The newest idle connection to `addr` that is still open, if any; older ones
    /// past [`MAX_IDLE_FOR`] are dropped on the way.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        list.retain(|(sender, since)| !sender.is_closed() && now - *since < MAX_IDLE_FOR);
        let taken = list.pop().map(|(sender, _)| sender);
        if list.is_empty() {
            idle.remove(&addr);
        }
        taken
    }

    /// Keeps `sender` for the next request to `addr`, unless it is closed or the pool
    /// for `addr` is full.
    pub(crate) fn put(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_ADDR {
            // The oldest goes: it is the likeliest to be closed by the server.
            list.remove(0);
        }
        list.push((sender, Instant::now()));
    }
}
