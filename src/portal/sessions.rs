//! The user's active sessions, as the settings page lists them, and "sign out other sessions"
//! (`POST {prefix}/settings/sessions/revoke-others`).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::verify::blocking;
use super::{Ctx, render};
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::session::{AuthLevel, Session, SessionKey};
use crate::auth::user::Username;
use crate::clock::Timestamp;
use crate::decision::Identity;
use crate::error::Error;
use crate::http::body::Body;
use crate::http::identify::identify;
use crate::http::negotiate::Format;

/// One line of the session list. Holds no session id: only what the user may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub current: bool,
    /// `2026-11-23 08:00 UTC`
    pub started: String,
    pub last_seen: String,
    pub remembered: bool,
}

/// `2026-11-23 08:00 UTC`: the minute is precise enough to recognise a session.
pub fn display_time(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    match (s.get(..10), s.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => s,
    }
}

/// The live sessions of `username`, this one first, then the most recently seen.
fn sessions_of(
    all: Vec<Session>,
    username: &Username,
    current: &SessionKey,
    is_live: impl Fn(&Session) -> bool,
) -> Vec<SessionRow> {
    let mut mine: Vec<Session> = all
        .into_iter()
        .filter(|s| &s.username == username && is_live(s))
        .collect();
    mine.sort_by_key(|s| {
        (
            &s.key != current,
            std::cmp::Reverse(s.last_seen.as_millis()),
        )
    });
    mine.iter()
        .map(|s| SessionRow {
            current: &s.key == current,
            started: display_time(s.created_at),
            last_seen: display_time(s.last_seen),
            remembered: s.remember_me,
        })
        .collect()
}

/// The sessions of the signed-in user, for the settings page.
pub async fn list(ctx: &Ctx<'_>, identity: &Identity) -> Result<Vec<SessionRow>, Error> {
    let username = identity.user.username.clone();
    let current = identity.session.key;
    let now = ctx.app.clock.now();
    blocking(ctx.arc, move |app| {
        let settings = *app.sessions.settings();
        app.store.sessions_of_user(&username).map(|all| {
            sessions_of(all, &username, &current, |s| {
                !s.is_expired(now, &settings) && s.auth_level >= AuthLevel::OneFactor
            })
        })
    })
    .await?
    .map_err(|e| Error::Internal(format!("session list: {e}")))
}

/// Ends every other session of `username`; returns how many.
fn revoke_others_of(
    app: &crate::app::App,
    username: &Username,
    current: &SessionKey,
) -> Result<usize, crate::store::StoreError> {
    let mut ended = 0;
    for s in app.store.sessions_of_user(username)? {
        if &s.username == username && &s.key != current && app.sessions.revoke(&s.key)? {
            app.held_forms.forget(&s.key);
            ended += 1;
        }
    }
    Ok(ended)
}

/// `POST {prefix}/settings/sessions/revoke-others`: this browser stays signed in, every other
/// session of the account ends. No re-verification: it only ever takes access away.
pub async fn revoke_others(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let identity = match identify(ctx.app, req.headers(), ctx.conn.tls)? {
        Some(id) if id.session.auth_level >= AuthLevel::OneFactor => id,
        Some(_) => return Err(Error::SecondFactorPending),
        None => return Err(Error::Unauthenticated),
    };
    let username = identity.user.username.clone();
    let current = identity.session.key;
    let ended = blocking(ctx.arc, move |app| {
        revoke_others_of(app, &username, &current)
    })
    .await?
    .map_err(|e| Error::Internal(format!("session revoke: {e}")))?;
    audit::record(
        &ctx.app.store,
        AuditEvent::new(ctx.app.clock.now(), AuditKind::SessionsRevoked)
            .with_username(identity.user.username.as_str())
            .with_client_ip(ctx.client_ip)
            .with_detail(format!("{ended} other sessions")),
    );
    match ctx.format {
        Format::Json => Ok(render::json(
            StatusCode::OK,
            serde_json::json!({ "status": "ok", "revoked": ended }),
        )),
        Format::Html => render::redirect(
            StatusCode::SEE_OTHER,
            &format!("{}/settings?notice=sessions_revoked", ctx.prefix()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::session::SessionManager;
    use crate::clock::{ManualClock, SharedClock};
    use crate::store::Store;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn times_are_shown_to_the_minute_in_utc() {
        assert_eq!(display_time(at(1_700_000_000_000)), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn the_list_shows_only_this_users_live_sessions_this_one_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock = Arc::new(ManualClock::new(at(1_700_000_000_000)));
        let shared: SharedClock = clock.clone();
        let sessions = SessionManager::new(store.clone(), shared, Default::default());
        let alice = Username::parse("alice").unwrap();
        let bob = Username::parse("bob").unwrap();
        let (_, first) = sessions
            .create(&alice, AuthLevel::OneFactor, false)
            .unwrap();
        clock.advance(std::time::Duration::from_secs(60));
        let (_, second) = sessions.create(&alice, AuthLevel::TwoFactor, true).unwrap();
        sessions.create(&bob, AuthLevel::OneFactor, false).unwrap();
        sessions
            .create(&alice, AuthLevel::AwaitSecondFactor, false)
            .unwrap();

        let all = store.list_sessions().unwrap().readable;
        let rows = sessions_of(all, &alice, &first.key, |s| {
            s.auth_level >= AuthLevel::OneFactor
        });
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].current && !rows[0].remembered);
        assert!(!rows[1].current && rows[1].remembered);
        assert_eq!(rows[1].started, display_time(second.created_at));
    }
}
