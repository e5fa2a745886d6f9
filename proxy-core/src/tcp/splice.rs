//! The zero-copy part of a burst: socket to pipe to socket with `splice(2)`.

use std::io;

use tokio::io::Interest;
use tokio::task::coop::consume_budget;

use super::relay::{Burst, Half, HalfError};
use crate::sys::{Pipe, splice_unsupported};

/// How a spliced burst ended.
pub(super) enum Spliced {
    /// The source was drained, or sent its FIN.
    Done(Burst),
    /// These sockets cannot splice, or no pipe could be made: copy instead.
    Unsupported,
}

impl Half<'_> {
    /// Splices the rest of a bulk burst. A pipe is taken from the pool only for the
    /// burst and goes back empty, so an idle connection holds none.
    pub(super) async fn splice_burst(&self) -> Result<Spliced, HalfError> {
        let pipe = match self.shared.pipes.take(|| Pipe::new(self.shared.pipe_size)) {
            Ok(pipe) => pipe,
            Err(e) => {
                tracing::debug!(error = %e, "no pipe; copying instead");
                return Ok(Spliced::Unsupported);
            }
        };
        let spliced = self.splice_with(&pipe).await;
        // On an error the pipe may hold bytes: drop it rather than pool it.
        if spliced.is_ok() {
            self.shared.pipes.put(pipe);
        }
        spliced
    }

    async fn splice_with(&self, pipe: &Pipe) -> Result<Spliced, HalfError> {
        let mut first = true;
        loop {
            // A short splice does not show the socket drained (the pipe may have run out
            // of slots), so only `WouldBlock` ends the burst.
            let filled = self.from.try_io(Interest::READABLE, || {
                pipe.fill_from(self.from, pipe.capacity())
            });
            let n = match filled {
                Ok(0) => return Ok(Spliced::Done(Burst::Eof)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Spliced::Done(Burst::Drained));
                }
                Err(e) if first && splice_unsupported(&e) => return Ok(Spliced::Unsupported),
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
