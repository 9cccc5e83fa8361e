//! Who is behind a request: the session cookie, resolved through the in-memory session and user
//! views. Anything wrong with the cookie (malformed, tampered, expired, unknown) is simply "not
//! logged in"; a store failure is an error, so the caller fails closed.

use http::HeaderMap;

use crate::app::App;
use crate::decision::Identity;
use crate::error::Error;
use crate::http::cookies;

pub fn identify(app: &App, headers: &HeaderMap, tls: bool) -> Result<Option<Identity>, Error> {
    for value in cookies::read(headers, app.session_cookies.get(tls)) {
        let Some(session) = app
            .sessions
            .lookup(value)
            .map_err(|e| Error::Internal(format!("session lookup: {e}")))?
        else {
            continue;
        };
        let user = app
            .users
            .get(&session.username)
            .map_err(|e| Error::Internal(format!("user lookup: {e}")))?;
        match user {
            Some(user) if !user.disabled => return Ok(Some(Identity { user, session })),
            _ => {
                // The account is gone or disabled: the session must not outlive it. Not
                // flushed here: this runs on a worker thread, whose other connections would
                // wait for the disk; the deletion is immediate for every lookup, reaches disk
                // with the store's periodic flush, and is done again by this same check if a
                // crash in between brought the session back.
                let _ = app.sessions.revoke_unflushed(&session.key);
            }
        }
    }
    Ok(None)
}
