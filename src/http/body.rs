//! The one body type the gateway passes around: streamed, boxed, never buffered by default.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;

use crate::error::Error;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body (request or response).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Wraps a streaming body (hyper's incoming body, an upstream's answer) without reading it.
pub fn stream<B>(incoming: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    incoming.map_err(Into::into).boxed_unsync()
}

/// At most `limit` bytes of `body`, all arrived within `within`: 413 above the limit, 400 for a
/// body that breaks off or does not arrive in time.
pub async fn read_limited(body: Incoming, limit: usize, within: Duration) -> Result<Bytes, Error> {
    let collected = tokio::time::timeout(within, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Error::BadRequest("the request body did not arrive in time"))?;
    collected.map(|c| c.to_bytes()).map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            Error::PayloadTooLarge
        } else {
            Error::BadRequest("the request body could not be read")
        }
    })
}
