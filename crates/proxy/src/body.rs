//! Body wrappers. Bodies stream unless a filter asked for them whole (`collect`,
//! `collect_response`, both bounded). `RequestBody` enforces the body size limit while streaming
//! and records downstream framing errors; `ResponseBody` is a small gateway-made (or buffered)
//! body, the upstream's stream, or a stream whose first bytes were read before it outgrew a buffer.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with a client's request body, if anything.
#[derive(Debug, Default)]
pub(crate) struct BodyOutcome(AtomicU8);

pub(crate) const BODY_TOO_LARGE: u8 = 1;
pub(crate) const BODY_BAD_FRAMING: u8 = 2;

impl BodyOutcome {
    pub(crate) fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the configured limit")]
pub(crate) struct TooLarge;

pin_project_lite::pin_project! {
    /// The body sent upstream: the client's body, counted against the limit.
    pub struct RequestBody {
        #[pin]
        inner: Option<Incoming>,
        // A body buffered for filters (validation), sent as one frame.
        full: Option<Bytes>,
        seen: u64,
        limit: u64,
        outcome: Option<Arc<BodyOutcome>>,
    }
}

impl RequestBody {
    pub(crate) fn empty() -> Self {
        RequestBody { inner: None, full: None, seen: 0, limit: 0, outcome: None }
    }

    pub(crate) fn buffered(b: Bytes) -> Self {
        RequestBody { inner: None, full: (!b.is_empty()).then_some(b), seen: 0, limit: 0, outcome: None }
    }

    pub(crate) fn limited(inner: Incoming, limit: u64, outcome: Arc<BodyOutcome>) -> Self {
        RequestBody { inner: Some(inner), full: None, seen: 0, limit, outcome: Some(outcome) }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(b) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_pin_mut() else { return Poll::Ready(None) };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        if let Some(o) = this.outcome {
                            o.set(BODY_TOO_LARGE);
                        }
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(o) = this.outcome {
                    o.set(BODY_BAD_FRAMING);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => other.map_err(|e| -> BoxError { Box::new(e) }),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.full {
            return SizeHint::with_exact(b.len() as u64);
        }
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Read a whole request body for the filters that asked for it, up to `limit` bytes.
pub(crate) async fn collect(body: Incoming, limit: u64) -> Result<Bytes, crate::error::ProxyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| crate::error::ProxyError::BadFraming)?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(crate::error::ProxyError::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Dropped when the response body is finished (or abandoned): releases the endpoint's
/// in-flight slot used by least-request balancing.
pub(crate) struct InFlight(pub(crate) Option<Arc<crate::upstream::Endpoint>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(ep) = self.0.take() {
            ep.release();
        }
    }
}

pin_project_lite::pin_project! {
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Full { #[pin] body: Full<Bytes> },
        Upstream { #[pin] body: crate::client::UpstreamBody, guard: InFlight },
        /// A body that outgrew a response-body buffer: the bytes already read, then the rest.
        Prefixed { prefix: Option<Bytes>, rest: Pin<Box<ResponseBody>> },
    }
}

/// What `collect_response` read.
pub(crate) enum Collected {
    Whole(Bytes),
    /// Larger than the limit: the same body, replayed from its start.
    TooLarge(ResponseBody),
}

/// Read a whole response body, up to `limit` bytes (trailers are dropped). A larger body is
/// handed back whole (the bytes read so far, then the rest of the stream).
pub(crate) async fn collect_response(body: ResponseBody, limit: u64) -> Result<Collected, BoxError> {
    use http_body_util::BodyExt;
    let mut body = Box::pin(body);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if (buf.len() as u64).saturating_add(data.len() as u64) > limit {
                buf.extend_from_slice(&data);
                return Ok(Collected::TooLarge(ResponseBody::Prefixed { prefix: Some(buf.freeze()), rest: body }));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Collected::Whole(buf.freeze()))
}

impl ResponseBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        ResponseBody::Full { body: Full::new(b.into()) }
    }
    pub(crate) fn empty() -> Self {
        ResponseBody::Full { body: Full::new(Bytes::new()) }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Full { body } => body.poll_frame(cx).map_err(|e| match e {}),
            ResponseBodyProj::Upstream { body, .. } => body.poll_frame(cx).map_err(|e| -> BoxError { Box::new(e) }),
            ResponseBodyProj::Prefixed { prefix, rest } => match prefix.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full { body } => body.is_end_stream(),
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full { body } => body.size_hint(),
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Prefixed { prefix, rest } => {
                let n = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower().saturating_add(n));
                if let Some(u) = r.upper() {
                    h.set_upper(u.saturating_add(n));
                }
                h
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn collect_response_buffers_up_to_the_limit_and_replays_a_larger_body() {
        let Ok(Collected::Whole(b)) = collect_response(ResponseBody::full("0123456789"), 10).await else {
            unreachable!("10 bytes fit a 10-byte limit")
        };
        assert_eq!(&b[..], b"0123456789");
        let Ok(Collected::TooLarge(body)) = collect_response(ResponseBody::full("0123456789"), 9).await else {
            unreachable!("10 bytes outgrow a 9-byte limit")
        };
        assert_eq!(body.size_hint().exact(), Some(10));
        let replayed = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        assert_eq!(&replayed[..], b"0123456789", "nothing is lost or repeated");
    }
}
