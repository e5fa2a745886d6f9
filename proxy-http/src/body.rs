//! Bodies: the one body type the proxy answers with, a request body that stops at a size
//! limit, and a response body that tells when it ended and how many bytes it carried.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use pin_project_lite::pin_project;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of what the proxy answers and sends upstream: streamed, never buffered whole.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The error a [`Limited`] body ends with past its limit.
#[derive(Debug)]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body is larger than {} bytes", self.limit)
    }
}

impl std::error::Error for TooLarge {}

pin_project! {
    /// A body that ends with [`TooLarge`] once more than `limit` bytes came through.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
    }
}

impl<B> Limited<B> {
    /// `inner`, cut off past `limit` bytes.
    pub fn new(inner: B, limit: u64) -> Self {
        Limited {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl<B> HttpBody for Limited<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            *this.seen += data.len() as u64;
            if *this.seen > *this.limit {
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit: *this.limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a [`Tracked`] body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every byte went through.
    Complete,
    /// It failed, or was dropped before its end (the client went away).
    Cut,
}

/// How far a body has gone, shared with whoever waits on it: bytes, and whether it
/// went through whole (set once, when it ends).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    bytes: AtomicU64,
    complete: AtomicBool,
}

impl Progress {
    /// The body ended after `bytes`, as `ended` says.
    pub(crate) fn record(&self, bytes: u64, ended: Ended) {
        self.bytes.store(bytes, Relaxed);
        self.complete.store(ended == Ended::Complete, Relaxed);
    }

    /// The bytes the body carried, once it has ended (0 before).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Whether it ended, whole.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete.load(Relaxed)
    }
}

pin_project! {
    /// A body that counts its bytes and calls `done` once, when it ends or is dropped.
    pub struct Tracked<B, F: FnOnce(u64, Ended)> {
        #[pin]
        inner: B,
        bytes: u64,
        // Empty from the start (the answer to HEAD, a 204, a 304): complete even when
        // dropped unread, as servers do not read such bodies.
        empty: bool,
        done: Option<F>,
    }

    impl<B, F: FnOnce(u64, Ended)> PinnedDrop for Tracked<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                let ended = if *this.empty { Ended::Complete } else { Ended::Cut };
                done(*this.bytes, ended);
            }
        }
    }
}

impl<B: HttpBody, F: FnOnce(u64, Ended)> Tracked<B, F> {
    /// `inner`, calling `done` with its byte count when it ends.
    pub fn new(inner: B, done: F) -> Self {
        Tracked {
            empty: inner.is_end_stream(),
            inner,
            bytes: 0,
            done: Some(done),
        }
    }
}

impl<B, F> HttpBody for Tracked<B, F>
where
    B: HttpBody<Data = Bytes>,
    F: FnOnce(u64, Ended),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // A body of known length ends with its last byte; its reader may never
                // ask for more.
                if this.inner.is_end_stream()
                    && let Some(done) = this.done.take()
                {
                    done(*this.bytes, Ended::Complete);
                }
            }
            Some(Err(_)) => {
                if let Some(done) = this.done.take() {
                    done(*this.bytes, Ended::Cut);
                }
            }
            None => {
                if let Some(done) = this.done.take() {
                    done(*this.bytes, Ended::Complete);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn limited_passes_up_to_the_limit_and_fails_past_it() {
        let ok = Limited::new(Full::new(Bytes::from_static(b"12345")), 5);
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "12345");
        let over = Limited::new(Full::new(Bytes::from_static(b"123456")), 5);
        let e = over.collect().await.unwrap_err();
        assert_eq!(e.downcast_ref::<TooLarge>().unwrap().limit, 5);
    }

    #[tokio::test]
    async fn tracked_reports_bytes_once_at_the_end_or_when_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = Tracked::new(Full::new(Bytes::from_static(b"abc")), move |n, e| {
            s.lock().unwrap().push((n, e));
        });
        body.collect().await.unwrap();
        let s = seen.clone();
        drop(Tracked::new(
            Full::new(Bytes::from_static(b"abc")),
            move |n, e| {
                s.lock().unwrap().push((n, e));
            },
        ));
        assert_eq!(
            *seen.lock().unwrap(),
            [(3, Ended::Complete), (0, Ended::Cut)]
        );
    }

    #[test]
    fn tracked_empty_bodies_are_complete_even_unread() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        drop(Tracked::new(Empty::<Bytes>::new(), move |n, e| {
            s.lock().unwrap().push((n, e));
        }));
        assert_eq!(*seen.lock().unwrap(), [(0, Ended::Complete)]);
    }
}
