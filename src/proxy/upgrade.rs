//! Protocol upgrades (WebSocket and others): once both sides agreed to switch, bytes are spliced.
//!
//! The splice is not a task of its own. A [`Tunnel`] travels in the extensions of the 101
//! response to the client connection that asked for it (`server::connection`), which runs it
//! once its HTTP session has handed the socket over. The tunnel so lives as that connection:
//! it keeps the connection's place under `limits.max_connections`, counts as an open
//! connection, is closed after `limits.tunnel_idle_timeout` without a byte in either direction,
//! and a graceful shutdown waits for it up to `limits.shutdown_timeout`, then closes it.
//!
//! A tunnel opened on a session lives no longer than the session: logout, a password change,
//! an account disabled or deleted, second factors reset, the session's expiry noticed (see
//! [`crate::auth::session_ends`]) close it at once, like any later request would be refused.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::auth::session_ends::SessionEndWatch;

/// Both sides of a switch of protocols that the upstream accepted: the client's connection and
/// the upstream's, each available once its HTTP session let go of the socket.
#[derive(Clone)]
pub struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    /// The end of the session the tunnel was opened on (none on a bypass rule).
    session_end: Option<SessionEndWatch>,
}

impl Tunnel {
    pub fn new(
        client: OnUpgrade,
        upstream: OnUpgrade,
        session_end: Option<SessionEndWatch>,
    ) -> Tunnel {
        Tunnel {
            client,
            upstream,
            session_end,
        }
    }

    /// Waits for both upgraded connections, then copies bytes both ways until either side
    /// closes, or until `idle_timeout` has passed since `last_activity` (the instant the
    /// client's connection last moved a byte, which every byte of the tunnel does: what comes
    /// from the client is read from it, what comes from the upstream is written to it). Both
    /// connections are closed when this returns, and when the tunnel's session ends.
    pub async fn run(self, last_activity: impl Fn() -> Instant, idle_timeout: Duration) {
        let Tunnel {
            client,
            upstream,
            session_end,
        } = self;
        let session_ended = async {
            match &session_end {
                Some(watch) => watch.ended().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(session_ended);
        let splice = async {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        };
        tokio::pin!(splice);
        let check = tokio::time::sleep_until(last_activity() + idle_timeout);
        tokio::pin!(check);
        loop {
            tokio::select! {
                biased;
                // First: once the session has ended, not one more byte goes through.
                () = &mut session_ended => {
                    tracing::debug!("closing upgraded connection: its session ended");
                    return;
                }
                () = &mut splice => return,
                () = &mut check => {
                    let idle_until = last_activity() + idle_timeout;
                    if idle_until <= Instant::now() {
                        tracing::debug!("closing idle upgraded connection");
                        return;
                    }
                    check.as_mut().reset(idle_until);
                }
            }
        }
    }
}
