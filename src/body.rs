//! Streaming bodies with a stall timeout and a size limit.
//!
//! Bodies are never collected: [`GuardedBody`] wraps the client's request body on its way to
//! Notion and Notion's response body on its way back, frame by frame. It adds what tower-http's
//! timeouts cannot (they stop at response headers):
//!
//! * an idle timeout: if the inner body yields nothing for `idle`, the stream fails with
//!   [`BodyError::Stalled`]. The timer only runs while the body is being polled, i.e. while the
//!   other side is ready for more; a client that stops *reading* is caught by the socket write
//!   timeout in `server` instead.
//! * an optional byte limit for bodies without a trustworthy `Content-Length` (chunked uploads):
//!   [`BodyError::TooLarge`] as soon as the limit is crossed.
//!
//! Failure mode: a failing request body makes hyper abort the upstream request mid-stream, so
//! Notion never sees a complete request; a failing response body cuts the caller's response.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a guarded body stopped. Found again by [`find_body_error`] in the error chain hyper
/// returns, so the proxy can answer 408 or 413 instead of a generic 502.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body data for {0:?}")]
    Stalled(Duration),
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Inner(BoxError),
}

pin_project! {
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        // Allocated on the first pending poll and reset afterwards: one allocation per body.
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
        remaining: Option<u64>,
        limit: u64,
    }
}

impl<B> GuardedBody<B> {
    /// `limit`: maximum number of bytes, or `None` when the length is already bounded elsewhere.
    pub fn new(inner: B, idle: Duration, limit: Option<u64>) -> Self {
        Self {
            inner,
            idle,
            sleep: None,
            armed: false,
            remaining: limit,
            limit: limit.unwrap_or(0),
        }
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.armed = false;
                let frame = match frame {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Inner(e.into())))),
                    Some(Ok(f)) => f,
                };
                if let (Some(rem), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    let n = data.len() as u64;
                    if n > *rem {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(*this.limit))));
                    }
                    *rem -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if !*this.armed {
                    // The idle clock starts at the first pending poll after a frame.
                    let deadline = Instant::now() + *this.idle;
                    match this.sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    *this.armed = true;
                }
                match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Some(Err(BodyError::Stalled(*this.idle)))),
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body on its way upstream: either kept in memory, so the request can be sent again
/// (Notion answered 429: it did not process it), or streamed once.
///
/// Bodies with a declared length up to `retry.replay_limit` (every ordinary JSON call, and every
/// request without a body) are read before the request queues; larger or chunked ones (file
/// uploads) stream through and are not sent twice.
///
/// A streamed body reports when it has been read to its end ([`UploadDone`]), so the proxy can
/// tell a caller still uploading from an upstream that is slow to answer.
pub enum RequestBody {
    Replayable(Option<Bytes>),
    Streaming(Pin<Box<GuardedBody<hyper::body::Incoming>>>, UploadDone),
}

impl RequestBody {
    /// A streamed body, with its end reported through the returned body's [`UploadDone`].
    pub fn streaming(body: GuardedBody<hyper::body::Incoming>) -> Self {
        RequestBody::Streaming(Box::pin(body), UploadDone::new())
    }

    /// A copy for another attempt, if this body can be sent again.
    pub fn replay(&self) -> Option<Self> {
        match self {
            RequestBody::Replayable(b) => Some(RequestBody::Replayable(b.clone())),
            RequestBody::Streaming(..) => None,
        }
    }

    /// For a streamed body: a receiver that turns `true` once the caller's body has been read
    /// to its end. `None` for a body in memory (it is sent at once).
    pub fn upload_done(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self {
            RequestBody::Replayable(_) => None,
            RequestBody::Streaming(_, done) => Some(done.0.subscribe()),
        }
    }
}

/// Set when a streamed request body has been read to its end.
pub struct UploadDone(tokio::sync::watch::Sender<bool>);

impl UploadDone {
    fn new() -> Self {
        Self(tokio::sync::watch::Sender::new(false))
    }

    fn mark(&self) {
        if !*self.0.borrow() {
            self.0.send_replace(true);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Replayable(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Streaming(b, done) => {
                let polled = b.as_mut().poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => done.mark(),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => done.mark(),
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Replayable(b) => b.is_none(),
            RequestBody::Streaming(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Replayable(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Streaming(b, _) => b.size_hint(),
        }
    }
}

/// Finds a [`BodyError`] anywhere in an error's source chain.
pub fn find_body_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
    error_chain(err).find_map(|e| e.downcast_ref::<BodyError>())
}

/// An error and its causes. Unlike plain `source()` walking, this descends into the error an
/// `io::Error` wraps (`io::Error::source` skips it), which is where hyper-rustls and
/// tokio-rustls put TLS failures.
pub fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => match io.get_ref() {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => None,
        },
        None => e.source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn channel_body() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        StreamBody<tokio_stream_shim::Rx>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, StreamBody::new(tokio_stream_shim::Rx(rx)))
    }

    /// A minimal `Stream` over an mpsc receiver (avoids a tokio-stream dependency).
    mod tokio_stream_shim {
        use super::*;
        pub struct Rx(pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);
        impl futures_util::Stream for Rx {
            type Item = Result<Frame<Bytes>, std::io::Error>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.0.poll_recv(cx)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalls_after_idle_and_not_before() {
        let (tx, body) = channel_body();
        let mut body = GuardedBody::new(body, Duration::from_secs(10), None);
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
                .await
                .unwrap();
            // then nothing more, sender kept alive
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::Stalled(_)));
        // The idle clock restarted at the last frame.
        assert_eq!(start.elapsed(), Duration::from_secs(19));
    }

    #[tokio::test]
    async fn limit_is_enforced_across_frames() {
        let (tx, body) = channel_body();
        let mut body = GuardedBody::new(body, Duration::from_secs(10), Some(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::TooLarge(5)));
    }
}
