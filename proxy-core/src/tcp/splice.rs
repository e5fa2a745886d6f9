//! The zero-copy relay direction: socket to pipe to socket with `splice(2)`.

use std::io;

use tokio::io::Interest;
use tokio::task::coop::consume_budget;

use super::relay::{Burst, Half, HalfError};
use crate::stats::Stats;
use crate::sys::{Pipe, splice_unsupported};

impl Half<'_> {
    /// Relays with splice. A pipe is taken from the pool only while bytes flow and goes
    /// back empty, so an idle connection holds none. Falls back to copying when the kernel
    /// cannot splice these sockets, or no pipe can be made (out of descriptors).
    pub(super) async fn splice(&self) -> Result<(), HalfError> {
        loop {
            self.from.readable().await.map_err(|e| self.read_error(e))?;
            let pipe = match self.shared.pipes.take(|| Pipe::new(self.shared.pipe_size)) {
                Ok(pipe) => pipe,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe; copying instead");
                    Stats::inc(&self.shared.stats.splice_fallbacks);
                    return self.copy().await;
                }
            };
            match self.splice_burst(&pipe).await {
                Ok(SpliceBurst::Done(burst)) => {
                    self.shared.pipes.put(pipe);
                    if let Burst::Eof = burst {
                        return Ok(());
                    }
                }
                Ok(SpliceBurst::Unsupported) => {
                    self.shared.pipes.put(pipe);
                    Stats::inc(&self.shared.stats.splice_fallbacks);
                    return self.copy().await;
                }
                // The pipe may hold bytes: drop it rather than pool it.
                Err(e) => return Err(e),
            }
        }
    }

    async fn splice_burst(&self, pipe: &Pipe) -> Result<SpliceBurst, HalfError> {
        let mut first = true;
        loop {
            let filled = self.from.try_io(Interest::READABLE, || {
                pipe.fill_from(self.from, pipe.capacity())
            });
            let n = match filled {
                Ok(0) => return Ok(SpliceBurst::Done(Burst::Eof)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(SpliceBurst::Done(Burst::Drained));
                }
                Err(e) if first && splice_unsupported(&e) => return Ok(SpliceBurst::Unsupported),
                Err(e) => return Err(self.read_error(e)),
            };
            first = false;
            self.write_with(n, true, |left| {
                self.to
                    .try_io(Interest::WRITABLE, || pipe.drain_to(self.to, left))
            })
            .await?;
            consume_budget().await;
        }
    }
}

enum SpliceBurst {
    Done(Burst),
    Unsupported,
}
