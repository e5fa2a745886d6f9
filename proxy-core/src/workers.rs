//! [`Workers`]: threads that each run a single-threaded tokio runtime, so a forward can
//! keep every connection on the thread that accepted it, as nginx's worker processes do:
//! no work stealing, no wake-ups from one thread to another while a connection is served,
//! and state kept per thread (idle upstream connections, say) used without contention.

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A set of threads, each running a single-threaded tokio runtime. Cheap to clone; the
/// threads stop (cancelling what still runs on them) when the last clone is dropped.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
///
/// use proxy_core::Workers;
///
/// # fn main() -> std::io::Result<()> {
/// let workers = Workers::new(NonZeroUsize::new(2).unwrap())?;
/// assert_eq!(workers.len(), 2);
/// let (tx, rx) = std::sync::mpsc::channel();
/// for (i, handle) in workers.handles().iter().enumerate() {
///     let tx = tx.clone();
///     handle.spawn(async move { tx.send(i).unwrap() });
/// }
/// let mut ran: Vec<usize> = (0..2).map(|_| rx.recv().unwrap()).collect();
/// ran.sort();
/// assert_eq!(ran, [0, 1]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Box<[Handle]>,
    /// Dropped with the last clone: each thread's runtime then shuts down.
    _stop: Box<[oneshot::Sender<()>]>,
}

/// How long a stopping worker waits for blocking tasks (a name lookup) to finish.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

impl Workers {
    /// Starts `n` threads, named `proxy-worker-0` and on, each running a single-threaded
    /// runtime with I/O and time enabled.
    ///
    /// # Errors
    ///
    /// A runtime or a thread cannot be made; the threads started so far stop then.
    pub fn new(n: NonZeroUsize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(n.get());
        let mut stops = Vec::with_capacity(n.get());
        for i in 0..n.get() {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(BLOCKING_GRACE);
                })?;
            stops.push(stop);
        }
        Ok(Workers {
            inner: Arc::new(Inner {
                handles: handles.into(),
                _stop: stops.into(),
            }),
        })
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.inner.handles.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Each thread's runtime, to spawn on; a task's index in this slice is its
    /// thread's.
    pub fn handles(&self) -> &[Handle] {
        &self.inner.handles
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_runs_on_its_own_thread_and_threads_stop_with_the_last_clone() {
        let workers = Workers::new(NonZeroUsize::new(3).unwrap()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, handle) in workers.handles().iter().enumerate() {
            let tx = tx.clone();
            handle.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((i, name)).unwrap();
            });
        }
        let mut ran: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        ran.sort();
        let expected: Vec<_> = (0..3)
            .map(|i| (i, Some(format!("proxy-worker-{i}"))))
            .collect();
        assert_eq!(ran, expected);

        // A task that never ends is cancelled (its state dropped) when the workers go.
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        let clone = workers.clone();
        workers.handles()[1].spawn(async move {
            let _guard = dropped_tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert!(
            dropped_rx
                .recv_timeout(Duration::from_millis(200))
                .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout),
            "a clone still holds the threads"
        );
        drop(clone);
        assert_eq!(
            dropped_rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
