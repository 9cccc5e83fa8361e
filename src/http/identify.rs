//! Who is behind a request: the session cookie, resolved through the in-memory session and user
//! views. Anything wrong with the cookie (malformed, tampered, expired, unknown) is simply "not
//! logged in"; a store failure is an error, so the caller fails closed.

use http::HeaderMap;

use crate::app::App;
use crate::decision::Identity;
use crate::error::Error;
use crate::http::cookies;

/// The request's identity. Several session cookies may arrive (a host-only one beside one for
/// the cookie domain, or one planted by a sibling application on the cookie domain with a longer
/// path, which browsers send first): if they are live sessions of different accounts, the
/// request is nobody's, not the first one's, so that a planted session never makes a user act
/// as its owner.
///
/// A browser sends one session cookie, or two or three with cookie domains (or a planted one).
/// More than [`cookies::MAX_SESSION_COOKIES`] make the request nobody's without looking any up:
/// each lookup of an unknown id may read the store, and reading only the first few would let
/// cookies planted ahead of the user's hide it. A repeated value is looked up once.
pub fn identify(app: &App, headers: &HeaderMap, tls: bool) -> Result<Option<Identity>, Error> {
    // At most MAX_SESSION_COOKIES values, read without allocating; more make the request
    // nobody's.
    let mut read = [""; cookies::MAX_SESSION_COOKIES];
    let mut count = 0;
    for value in cookies::values(headers, app.session_cookies.get(tls)) {
        let Some(slot) = read.get_mut(count) else {
            return Ok(None);
        };
        *slot = value;
        count += 1;
    }
    let values = &read[..count];
    let mut found: Option<Identity> = None;
    for (i, value) in values.iter().copied().enumerate() {
        if values[..i].contains(&value) {
            continue;
        }
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
            Some(user) if !user.disabled => match &found {
                None => found = Some(Identity { user, session }),
                Some(first) if first.user.username != user.username => return Ok(None),
                Some(_) => {}
            },
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
    Ok(found)
}
