//! The one body type the gateway passes around: streamed, boxed, never buffered by default.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// The memory that form bodies being read may take, all requests together
/// (`limits.max_form_memory_bytes`). Without it, a client could hold up to `limit` bytes on
/// every stream of every connection for the whole of `within`: thousands of slow forms, many
/// gigabytes.
pub struct FormMemory(Semaphore);

/// Memory is counted in KiB (a semaphore counts in `u32`).
const KIB: usize = 1024;

impl FormMemory {
    pub fn new(bytes: usize) -> FormMemory {
        FormMemory(Semaphore::new(bytes / KIB))
    }

    /// Room for a body of up to `limit` bytes, given back when the permit is dropped; 429 at
    /// once when there is none (waiting would only hold the connection longer).
    fn reserve(&self, limit: usize) -> Result<SemaphorePermit<'_>, Error> {
        let kib = u32::try_from(limit.div_ceil(KIB)).unwrap_or(u32::MAX);
        self.0
            .try_acquire_many(kib)
            .map_err(|_| Error::TooManyRequests {
                retry_after: Duration::from_secs(1),
            })
    }

    /// Room left, in bytes (for tests and metrics).
    pub fn available(&self) -> usize {
        self.0.available_permits() * KIB
    }
}

/// At most `limit` bytes of `body`, all arrived within `within`, in room reserved from `memory`
/// for the time of the read: 413 above the limit, 400 for a body that breaks off or does not
/// arrive in time, 429 when `memory` has no room for it.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    within: Duration,
    memory: &FormMemory,
) -> Result<Bytes, Error> {
    let _room = memory.reserve(limit)?;
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
