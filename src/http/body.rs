//! The one body type the gateway passes around: streamed, boxed, never buffered by default.

use std::net::IpAddr;
use std::time::Duration;

use super::network_shares::{NetworkKey, NetworkShares};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Incoming};
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
///
/// One client network may hold at most a sixty-fourth of it (at least one form's worth): the
/// network's own slow forms are refused, not everyone's, until 64 networks join in. Networks
/// are /32 for IPv4 and /48 for IPv6. A form reserves what its `Content-Length` declares, the
/// whole limit when it declares none.
pub struct FormMemory {
    total: Semaphore,
    /// KiB held by each network reading forms now.
    held: NetworkShares,
    /// The most one network may hold, in KiB.
    share: u32,
}

/// Memory is counted in KiB (a semaphore counts in `u32`).
const KIB: usize = 1024;

/// The part of the budget one network may hold.
const SHARES: usize = 64;

/// The room a form being read holds, given back when it is dropped.
pub struct FormRoom<'a> {
    memory: &'a FormMemory,
    network: NetworkKey,
    kib: u32,
    _permit: SemaphorePermit<'a>,
}

impl FormMemory {
    /// A budget of `bytes`, of which one network may hold `max(bytes / 64, one_form)`.
    pub fn new(bytes: usize, one_form: usize) -> FormMemory {
        let share = (bytes / SHARES).max(one_form).div_ceil(KIB);
        FormMemory {
            total: Semaphore::new(bytes / KIB),
            held: NetworkShares::default(),
            share: u32::try_from(share).unwrap_or(u32::MAX),
        }
    }

    /// Room for a body of up to `bytes`, read for `client`; 429 at once when its network
    /// holds its share already or the budget has no room left (waiting would only hold the
    /// connection longer).
    fn reserve(&self, bytes: usize, client: IpAddr) -> Result<FormRoom<'_>, Error> {
        let busy = || Error::TooManyRequests {
            retry_after: Duration::from_secs(1),
        };
        let kib = u32::try_from(bytes.div_ceil(KIB).max(1)).unwrap_or(u32::MAX);
        let network = self.held.take(client, kib, self.share).ok_or_else(busy)?;
        let Ok(permit) = self.total.try_acquire_many(kib) else {
            self.held.give_back(network, kib);
            return Err(busy());
        };
        Ok(FormRoom {
            memory: self,
            network,
            kib,
            _permit: permit,
        })
    }

    /// Room left, in bytes (for tests and metrics).
    pub fn available(&self) -> usize {
        self.total.available_permits() * KIB
    }
}

impl Drop for FormRoom<'_> {
    fn drop(&mut self) {
        self.memory.held.give_back(self.network, self.kib);
    }
}

/// At most `limit` bytes of `body`, all arrived within `within`, in room reserved from `memory`
/// for `client` for the time of the read: 413 above the limit (at once when the body declares
/// more), 400 for a body that breaks off or does not arrive in time, 429 when `memory` has no
/// room for it.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    within: Duration,
    memory: &FormMemory,
    client: IpAddr,
) -> Result<Bytes, Error> {
    // hyper ends a body at its declared length, and fails one that would go past it.
    let declared = body.size_hint().exact();
    let expected = match declared {
        Some(n) if n > limit as u64 => return Err(Error::PayloadTooLarge),
        Some(n) => n as usize,
        None => limit,
    };
    let _room = memory.reserve(expected, client)?;
    let collected = tokio::time::timeout(within, Limited::new(body, expected).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: usize = 64 * KIB;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(result: Result<FormRoom<'_>, Error>) -> bool {
        matches!(result, Err(Error::TooManyRequests { .. }))
    }

    #[test]
    fn one_network_holds_at_most_its_share_and_others_still_get_room() {
        // 16 forms in all, one per network (a sixty-fourth is less than one).
        let memory = FormMemory::new(16 * FORM, FORM);
        let first = memory.reserve(FORM, ip("192.0.2.1")).unwrap();
        assert!(
            refused(memory.reserve(1, ip("192.0.2.1"))),
            "its share is taken"
        );
        let other = memory.reserve(FORM, ip("192.0.2.2")).unwrap();
        assert_eq!(memory.available(), 14 * FORM);
        drop(first);
        assert_eq!(memory.available(), 15 * FORM);
        let again = memory.reserve(FORM, ip("192.0.2.1")).unwrap();
        drop((again, other));
        assert_eq!(memory.available(), 16 * FORM);
        assert!(memory.held.is_empty(), "nothing left behind");
    }

    #[test]
    fn small_forms_reserve_what_they_need_within_the_share() {
        let memory = FormMemory::new(16 * FORM, FORM);
        let rooms: Vec<_> = (0..64)
            .map(|_| memory.reserve(1000, ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(memory.available(), 16 * FORM - 64 * KIB);
        assert!(refused(memory.reserve(1000, ip("192.0.2.1"))));
        drop(rooms);
        assert_eq!(memory.available(), 16 * FORM);
    }

    #[test]
    fn the_whole_budget_can_still_run_out_across_networks() {
        // A budget of 256 forms gives each network four.
        let memory = FormMemory::new(256 * FORM, FORM);
        let four: Vec<_> = (0..4)
            .map(|_| memory.reserve(FORM, ip("192.0.2.1")).unwrap())
            .collect();
        assert!(refused(memory.reserve(FORM, ip("192.0.2.1"))), "a fifth");
        drop(four);
        let rooms: Vec<_> = (0..256)
            .map(|i| {
                let client = ip(&format!("198.51.100.{}", i / 4));
                memory.reserve(FORM, client).unwrap()
            })
            .collect();
        assert_eq!(memory.available(), 0);
        assert!(refused(memory.reserve(1, ip("203.0.113.9"))));
        drop(rooms);
        assert!(memory.reserve(FORM, ip("203.0.113.9")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_site_and_mapped_ipv4_as_ipv4() {
        let memory = FormMemory::new(16 * FORM, FORM);
        let _site = memory.reserve(FORM, ip("2001:db8:1:2::1")).unwrap();
        assert!(
            refused(memory.reserve(1, ip("2001:db8:1:ffff::9"))),
            "same /48"
        );
        assert!(
            memory.reserve(FORM, ip("2001:db8:2::1")).is_ok(),
            "another /48"
        );
        let _v4 = memory.reserve(FORM, ip("192.0.2.7")).unwrap();
        assert!(refused(memory.reserve(1, ip("::ffff:192.0.2.7"))));
    }

    #[test]
    fn a_small_budget_still_gives_a_network_one_form() {
        let memory = FormMemory::new(FORM, FORM);
        let room = memory.reserve(FORM, ip("192.0.2.1")).unwrap();
        assert!(
            refused(memory.reserve(1, ip("192.0.2.2"))),
            "the budget is spent"
        );
        drop(room);
        assert!(memory.reserve(FORM, ip("192.0.2.2")).is_ok());
    }
}
