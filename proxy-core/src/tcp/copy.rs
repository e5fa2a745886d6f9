//! The portable relay direction: copying through pooled user-space buffers.

use std::convert::Infallible;
use std::io;

use tokio::task::coop::consume_budget;

use super::relay::{Burst, Half, HalfError};

impl Half<'_> {
    /// Relays by copying. A buffer is taken from the pool only while bytes flow, so an
    /// idle connection holds none.
    pub(super) async fn copy(&self) -> Result<(), HalfError> {
        loop {
            self.from.readable().await.map_err(|e| self.read_error(e))?;
            let mut buf = self
                .shared
                .buffers
                .take(|| Ok::<_, Infallible>(vec![0; self.shared.buffer_size].into()))
                .unwrap_or_else(|never| match never {});
            let burst = self.copy_burst(&mut buf).await;
            self.shared.buffers.put(buf);
            if let Burst::Eof = burst? {
                return Ok(());
            }
        }
    }

    async fn copy_burst(&self, buf: &mut [u8]) -> Result<Burst, HalfError> {
        loop {
            let n = match self.from.try_read(buf) {
                Ok(0) => return Ok(Burst::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
                Err(e) => return Err(self.read_error(e)),
            };
            let data = &buf[..n];
            self.write_with(n, false, |left| self.to.try_write(&data[n - left..]))
                .await?;
            consume_budget().await;
        }
    }
}
