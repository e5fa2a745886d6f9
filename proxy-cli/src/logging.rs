//! Log lines to stderr without ever blocking the code that logs.
//!
//! Writing to stderr blocks when nobody reads it (a stuck log collector, a pipe left
//! unread): a relay task that logged would then wait, and with it the whole runtime
//! worker. So the tasks only queue their lines; a thread of its own writes them. When
//! the queue is full the line is dropped and counted ([`lines_dropped`], exported as
//! `proxy_log_lines_dropped_total`) rather than waited for. [`LogFlush`] writes out what
//! is queued when the process ends, so a run whose stderr is read loses nothing.
//!
//! The counter is process-wide, as the `tracing` subscriber that feeds it is.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines queued at most. At about 200 bytes a line this is some 200 KiB, three pipe
/// buffers' worth: a reader that falls that far behind is not keeping up anyway.
pub const QUEUE_LINES: usize = 1024;

/// How long [`LogFlush`] waits for the queued lines to be written at exit: stderr may
/// be a pipe nobody reads, and the exit must not hang on it.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Log lines dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because stderr did not keep up.
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// What the writer thread is asked to do.
enum Message {
    /// Write one log line (one event, as the formatter wrote it).
    Line(Vec<u8>),
    /// Everything before this has been written; say so.
    Flushed(SyncSender<()>),
}

/// The `tracing_subscriber` writer: each event's text goes to the queue.
#[derive(Clone, Debug)]
pub struct QueuedStderr {
    queue: SyncSender<Message>,
}

/// Writes what is still queued when dropped (waiting at most [`FLUSH_TIMEOUT`]).
#[derive(Debug)]
pub struct LogFlush {
    queue: SyncSender<Message>,
}

/// Starts the writer thread; log through the [`QueuedStderr`], and keep the [`LogFlush`]
/// until the last line has been logged.
///
/// # Errors
///
/// The thread could not be started.
pub fn stderr_writer() -> io::Result<(QueuedStderr, LogFlush)> {
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(&lines))?;
    Ok((
        QueuedStderr {
            queue: queue.clone(),
        },
        LogFlush { queue },
    ))
}

/// The writer thread: writes the lines as they come, those that are waiting together.
fn write_lines(lines: &Receiver<Message>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(first) = lines.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flushed(ack) => acks.push(ack),
            }
            next = (batch.len() < 64 * 1024)
                .then(|| lines.try_recv().ok())
                .flatten();
        }
        // Nowhere to report a failure to write stderr.
        let mut stderr = io::stderr().lock();
        let _ = stderr.write_all(&batch);
        let _ = stderr.flush();
        batch.clear();
        for ack in acks {
            let _ = ack.try_send(());
        }
    }
}

// ===== impl QueuedStderr =====

impl Write for QueuedStderr {
    /// Queues `buf` (the formatter writes each event at once), or drops and counts it
    /// when the queue is full; never waits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.queue.try_send(Message::Line(buf.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// ===== impl LogFlush =====

impl LogFlush {
    /// Waits until every line queued so far is written, for at most [`FLUSH_TIMEOUT`].
    pub fn flush(&self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let (ack, acked) = mpsc::sync_channel(1);
        let mut marker = Message::Flushed(ack);
        // Bounded: at most FLUSH_TIMEOUT / 5 ms tries while the queue is full.
        loop {
            match self.queue.try_send(marker) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    marker = back;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = acked.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written before a flush are out of the queue after it; a full queue drops
    /// and counts instead of waiting.
    #[test]
    fn queues_flushes_and_drops_when_full() {
        let (queue, lines) = mpsc::sync_channel(2);
        let mut writer = QueuedStderr { queue };
        let before = lines_dropped();
        for _ in 0..3 {
            assert_eq!(writer.write(b"line\n").unwrap(), 5);
        }
        assert!(lines_dropped() > before);
        assert!(matches!(lines.try_recv(), Ok(Message::Line(l)) if l == b"line\n"));
    }
}
