//! Accepting connections under a cap, until shutdown: the loop that the gateway's listeners and
//! the control socket share.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The pause after a failed accept (out of file descriptors and the like) before the next.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Waits for a free permit, then for the next connection `accept` gives; the permit goes with
/// the connection and frees a place when dropped. `None` once `shutdown` changes (or the permits
/// are closed). A failed accept is logged with `listener` and retried after a short pause: the
/// listener keeps serving.
pub async fn next_connection<T, F, Fut>(
    listener: &str,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
    mut accept: F,
) -> Option<(OwnedSemaphorePermit, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    loop {
        // At the cap, stop accepting until a connection closes.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.ok()?,
            _ = shutdown.changed() => return None,
        };
        let accepted = tokio::select! {
            a = accept() => a,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok(connection) => return Some((permit, connection)),
            Err(e) => {
                tracing::warn!(listener, error = %e, "accept failed");
                drop(permit);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// An `accept` that hands out `results` in order, then waits forever.
    fn scripted(
        results: Vec<io::Result<u32>>,
    ) -> impl FnMut() -> futures_util::future::BoxFuture<'static, io::Result<u32>> {
        let mut queue = VecDeque::from(results);
        move || {
            let next = queue.pop_front();
            Box::pin(async move {
                match next {
                    Some(result) => result,
                    None => std::future::pending().await,
                }
            })
        }
    }

    #[tokio::test]
    async fn a_failed_accept_is_retried_and_the_permit_goes_with_the_connection() {
        let permits = Arc::new(Semaphore::new(1));
        let (_tx, mut shutdown) = watch::channel(false);
        let mut accept = scripted(vec![Err(io::Error::other("out of descriptors")), Ok(7)]);
        let (permit, conn) = next_connection("test", &permits, &mut shutdown, &mut accept)
            .await
            .expect("a connection after the failure");
        assert_eq!(conn, 7);
        assert_eq!(permits.available_permits(), 0, "held by the connection");
        drop(permit);
        assert_eq!(permits.available_permits(), 1, "freed with it");
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_for_a_place_and_for_a_connection() {
        // At the cap: no place until shutdown.
        let permits = Arc::new(Semaphore::new(0));
        let (tx, mut shutdown) = watch::channel(false);
        let waiting = next_connection("test", &permits, &mut shutdown, scripted(vec![Ok(1)]));
        tx.send(true).unwrap();
        assert!(waiting.await.is_none());

        // A place, but no client.
        let permits = Arc::new(Semaphore::new(1));
        let (tx, mut shutdown) = watch::channel(false);
        let waiting = next_connection("test", &permits, &mut shutdown, scripted(vec![]));
        tx.send(true).unwrap();
        assert!(waiting.await.is_none());
        assert_eq!(permits.available_permits(), 1, "the place is given back");
    }
}
