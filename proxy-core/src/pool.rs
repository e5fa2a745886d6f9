//! A small free list, so relay buffers and pipes are reused, not made per connection.

use std::sync::Mutex;

/// Holds up to `max_idle` idle values; values taken out are owned by the taker until put back.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<T>>,
    max_idle: usize,
}

impl<T> Pool<T> {
    pub(crate) fn new(max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// An idle value, or a new one from `make`.
    pub(crate) fn take<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(v) => Ok(v),
            None => make(),
        }
    }

    /// Returns a value for reuse; beyond `max_idle` it is dropped.
    pub(crate) fn put(&self, value: T) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(value);
        }
    }

    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds_idle_values() {
        let pool = Pool::new(1);
        let a: Result<u32, ()> = pool.take(|| Ok(1));
        pool.put(a.unwrap());
        pool.put(2);
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.take(|| Err::<u32, ()>(())), Ok(1));
        assert_eq!(pool.take(|| Ok::<u32, ()>(3)), Ok(3));
    }
}
