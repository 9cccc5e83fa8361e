//! "A fresh second factor is required": one definition, used by step-up rules on proxied and
//! forward-auth requests and by the portal's own settings pages (`mfa.settings_reverify`).

use std::time::Duration;

use crate::auth::session::Session;
use crate::clock::Timestamp;

/// Was a second factor proven within `window` before `now`?
pub fn second_factor_fresh(session: &Session, window: Duration, now: Timestamp) -> bool {
    session
        .second_factor_at
        .is_some_and(|at| at <= now && now.since(at) < window)
}

/// Was the password re-entered (step-up fallback) within `window` before `now`?
pub fn password_fresh(session: &Session, window: Duration, now: Timestamp) -> bool {
    session
        .reauth_at
        .is_some_and(|at| at <= now && now.since(at) < window)
}

/// Until when a window is satisfied by the last second factor, if it still is.
pub fn satisfied_until(session: &Session, window: Duration, now: Timestamp) -> Option<Timestamp> {
    second_factor_fresh(session, window, now)
        .then(|| session.second_factor_at.map(|at| at.plus(window)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::session::{AuthLevel, SessionId};
    use crate::auth::user::Username;

    fn session(second_factor_at: Option<i64>) -> Session {
        Session {
            key: SessionId::generate().key(),
            username: Username::parse("alice").unwrap(),
            created_at: Timestamp(0),
            last_seen: Timestamp(0),
            expires_at: Timestamp(i64::MAX),
            remember_me: false,
            auth_level: AuthLevel::TwoFactor,
            second_factor_at: second_factor_at.map(Timestamp),
            challenge_started_at: None,
            challenge_failures: 0,
            reauth_at: None,
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn window_is_half_open() {
        let s = session(Some(1_000));
        assert!(second_factor_fresh(&s, FIVE_MIN, Timestamp(1_000)));
        assert!(second_factor_fresh(&s, FIVE_MIN, Timestamp(300_999)));
        assert!(!second_factor_fresh(&s, FIVE_MIN, Timestamp(301_000)));
        assert_eq!(
            satisfied_until(&s, FIVE_MIN, Timestamp(2_000)),
            Some(Timestamp(301_000))
        );
        assert_eq!(satisfied_until(&s, FIVE_MIN, Timestamp(301_000)), None);
    }

    #[test]
    fn never_verified_is_never_fresh() {
        assert!(!second_factor_fresh(&session(None), FIVE_MIN, Timestamp(0)));
    }

    #[test]
    fn a_clock_moved_back_does_not_extend_the_window() {
        let s = session(Some(10_000));
        assert!(!second_factor_fresh(&s, FIVE_MIN, Timestamp(5_000)));
    }
}
