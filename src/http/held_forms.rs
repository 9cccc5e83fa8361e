//! Browser form POSTs held while the user proves a second factor for step-up.
//!
//! The form (urlencoded, at most 64 KiB) is kept in memory for the session that sent it. After
//! verification the user gets a page whose Continue button posts one marker field,
//! `__stepgate_held=<id>`, to the original URL; the gateway swaps in the held body, byte for
//! byte, and forwards it. A held form is used at most once, only by the session that sent it (the
//! session keeps it across the id rotation of a successful verification), only to the same
//! method and URL, and only within the step-up window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method};

use crate::auth::session::SessionKey;
use crate::auth::user::Username;
use crate::clock::Timestamp;

/// The marker field a Continue page posts.
pub const MARKER_FIELD: &str = "__stepgate_held";
/// Largest form held.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Held forms kept at once (one per session); past this the oldest goes.
const MAX_HELD: usize = 1024;
/// Held forms kept at once for one account, whatever its number of sessions; past this the
/// account's oldest goes. One account signing in again and again cannot fill the store and
/// push out everyone else's forms.
const MAX_HELD_PER_ACCOUNT: usize = 4;
/// Time to complete the verification before a held form is dropped.
const VERIFY_TIME: Duration = Duration::from_secs(10 * 60);

#[derive(Clone)]
pub struct HeldForm {
    pub id: String,
    /// The account whose session sent it.
    pub owner: Username,
    pub method: Method,
    /// Host and canonical path plus query, as the form was sent.
    pub host: String,
    pub path_and_query: String,
    pub content_type: HeaderValue,
    pub body: Bytes,
    pub window: Duration,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for HeldForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldForm")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a Continue post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefused {
    /// Unknown id, another session's form, or already used.
    Unknown,
    /// The step-up window (or the time to verify) has passed.
    Expired,
    /// Posted to another URL or with another method than the original.
    WrongTarget,
}

#[derive(Default)]
pub struct HeldForms {
    forms: Mutex<HashMap<SessionKey, HeldForm>>,
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl HeldForms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, HeldForm>> {
        match self.forms.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.clear();
                g
            }
        }
    }

    /// Holds a form for `session` of `owner`, replacing any form it held before. Returns the
    /// form's id.
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &self,
        session: SessionKey,
        owner: &Username,
        method: Method,
        host: String,
        path_and_query: String,
        content_type: HeaderValue,
        body: Bytes,
        window: Duration,
        now: Timestamp,
    ) -> String {
        let id = new_id();
        let mut forms = self.lock();
        forms.retain(|_, f| f.expires_at > now);
        forms.remove(&session);
        let of_owner = forms.values().filter(|f| &f.owner == owner).count();
        if of_owner >= MAX_HELD_PER_ACCOUNT
            && let Some(oldest) = forms
                .iter()
                .filter(|(_, f)| &f.owner == owner)
                .min_by_key(|(_, f)| f.expires_at)
                .map(|(k, _)| *k)
        {
            forms.remove(&oldest);
        }
        if forms.len() >= MAX_HELD
            && let Some(oldest) = forms
                .iter()
                .min_by_key(|(_, f)| f.expires_at)
                .map(|(k, _)| *k)
        {
            forms.remove(&oldest);
        }
        forms.insert(
            session,
            HeldForm {
                id: id.clone(),
                owner: owner.clone(),
                method,
                host,
                path_and_query,
                content_type,
                body,
                window,
                expires_at: now.plus(VERIFY_TIME),
            },
        );
        id
    }

    /// After a successful verification: the form follows the session to its new id and may
    /// be replayed within the step-up window from now. Returns it (for the Continue page).
    pub fn verified(&self, old: &SessionKey, new: SessionKey, now: Timestamp) -> Option<HeldForm> {
        let mut forms = self.lock();
        let mut form = forms.remove(old)?;
        if form.expires_at <= now {
            return None;
        }
        form.expires_at = now.plus(form.window);
        forms.insert(new, form.clone());
        Some(form)
    }

    /// Takes the held form for a Continue post: single use.
    pub fn take(
        &self,
        session: &SessionKey,
        id: &str,
        method: &Method,
        host: &str,
        path_and_query: &str,
        now: Timestamp,
    ) -> Result<HeldForm, ReplayRefused> {
        let mut forms = self.lock();
        let form = match forms.get(session) {
            Some(f) if constant_time_eq(f.id.as_bytes(), id.as_bytes()) => f,
            _ => return Err(ReplayRefused::Unknown),
        };
        if form.expires_at <= now {
            forms.remove(session);
            return Err(ReplayRefused::Expired);
        }
        if form.method != method
            || !form.host.eq_ignore_ascii_case(host)
            || form.path_and_query != path_and_query
        {
            return Err(ReplayRefused::WrongTarget);
        }
        forms.remove(session).ok_or(ReplayRefused::Unknown)
    }

    /// Drops the forms of a session (logout).
    pub fn forget(&self, session: &SessionKey) {
        self.lock().remove(session);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// If `body` is exactly a Continue post (`__stepgate_held=<32 hex>`), its id.
pub fn marker_id(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    let id = text.strip_prefix(MARKER_FIELD)?.strip_prefix('=')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::session::SessionId;

    const MIN: Duration = Duration::from_secs(60);

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    fn held(forms: &HeldForms, key: SessionKey, now: Timestamp) -> String {
        held_by(forms, key, &alice(), now)
    }

    fn held_by(forms: &HeldForms, key: SessionKey, owner: &Username, now: Timestamp) -> String {
        forms.hold(
            key,
            owner,
            Method::POST,
            "app.test".into(),
            "/settings?x=1".into(),
            HeaderValue::from_static("application/x-www-form-urlencoded"),
            Bytes::from_static(b"name=a%20b&x=%E2%82%AC"),
            5 * MIN,
            now,
        )
    }

    #[test]
    fn replayed_once_by_the_verified_session_with_its_body() {
        let forms = HeldForms::default();
        let (old, new) = (SessionId::generate().key(), SessionId::generate().key());
        let id = held(&forms, old, Timestamp(0));
        assert!(forms.verified(&old, new, Timestamp(1_000)).is_some());
        // The pre-rotation id no longer owns it.
        assert_eq!(
            forms
                .take(
                    &old,
                    &id,
                    &Method::POST,
                    "app.test",
                    "/settings?x=1",
                    Timestamp(2_000)
                )
                .unwrap_err(),
            ReplayRefused::Unknown
        );
        let form = forms
            .take(
                &new,
                &id,
                &Method::POST,
                "APP.test",
                "/settings?x=1",
                Timestamp(2_000),
            )
            .unwrap();
        assert_eq!(&form.body[..], b"name=a%20b&x=%E2%82%AC");
        assert_eq!(
            forms
                .take(
                    &new,
                    &id,
                    &Method::POST,
                    "app.test",
                    "/settings?x=1",
                    Timestamp(3_000)
                )
                .unwrap_err(),
            ReplayRefused::Unknown
        );
    }

    #[test]
    fn one_account_keeps_at_most_four_forms_and_pushes_out_only_its_own() {
        let forms = HeldForms::default();
        let bob = Username::parse("bob").unwrap();
        let bobs = SessionId::generate().key();
        held_by(&forms, bobs, &bob, Timestamp(0));
        let alices: Vec<SessionKey> = (0..6).map(|_| SessionId::generate().key()).collect();
        for (i, key) in alices.iter().enumerate() {
            held(&forms, *key, Timestamp(i as i64 * 1_000));
        }
        let kept = |key: &SessionKey| forms.lock().contains_key(key);
        assert!(kept(&bobs), "another account's form stays");
        let alice_kept: Vec<bool> = alices.iter().map(kept).collect();
        assert_eq!(alice_kept, [false, false, true, true, true, true]);
        // The same session holding again replaces its form, pushing out nothing else.
        held(&forms, alices[5], Timestamp(9_000));
        assert_eq!(alices.iter().filter(|k| kept(k)).count(), 4);
    }

    #[test]
    fn refuses_replay_after_the_window() {
        let forms = HeldForms::default();
        let (old, new) = (SessionId::generate().key(), SessionId::generate().key());
        let id = held(&forms, old, Timestamp(0));
        forms.verified(&old, new, Timestamp(0));
        let late = Timestamp(0).plus(5 * MIN);
        assert_eq!(
            forms
                .take(&new, &id, &Method::POST, "app.test", "/settings?x=1", late)
                .unwrap_err(),
            ReplayRefused::Expired
        );
    }

    #[test]
    fn refuses_replay_from_another_session_or_to_another_url() {
        let forms = HeldForms::default();
        let (mine, other) = (SessionId::generate().key(), SessionId::generate().key());
        let id = held(&forms, mine, Timestamp(0));
        assert_eq!(
            forms
                .take(
                    &other,
                    &id,
                    &Method::POST,
                    "app.test",
                    "/settings?x=1",
                    Timestamp(1)
                )
                .unwrap_err(),
            ReplayRefused::Unknown
        );
        assert_eq!(
            forms
                .take(
                    &mine,
                    &id,
                    &Method::POST,
                    "app.test",
                    "/admin",
                    Timestamp(1)
                )
                .unwrap_err(),
            ReplayRefused::WrongTarget
        );
    }

    #[test]
    fn recognises_only_an_exact_marker() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            marker_id(format!("__stepgate_held={id}").as_bytes()),
            Some(id)
        );
        assert_eq!(
            marker_id(format!("__stepgate_held={id}&x=1").as_bytes()),
            None
        );
        assert_eq!(marker_id(b"__stepgate_held=zz"), None);
        assert_eq!(marker_id(b"name=value"), None);
    }
}
