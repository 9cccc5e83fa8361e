//! The access decision: one function, shared by every front door (the built-in proxy now,
//! forward-auth endpoints later). Given the request facts and who the session says the user is,
//! it answers with a [`Decision`]; nothing here writes a response.

use std::sync::Arc;

use crate::auth::factors::MfaSettings;
use crate::auth::session::{AuthLevel, Session};
use crate::auth::step_up;
use crate::auth::user::User;
use crate::clock::Timestamp;
use crate::policy::rules::StepUp;
use crate::policy::{AccessPolicy, Policy, RequestFacts, UserFacts};

/// A logged-in user, as established from the session cookie.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Arc<User>,
    pub session: Session,
}

/// What happens to a request.
#[derive(Debug)]
pub enum Decision {
    /// The rule lets anyone through: forward without identity headers.
    Bypass,
    /// Forward, with the identity headers of this user.
    Forward(Identity),
    /// Nobody is logged in (or the rule depends on who the user is): ask for a login.
    Login,
    /// Logged in with a password only, but the rule needs a second factor.
    SecondFactor(Identity),
    /// Logged in, but the rule needs a second factor proven more recently than this.
    StepUp { identity: Identity, step_up: StepUp },
    /// Not allowed, whoever asks.
    Deny,
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Bypass => "bypass",
            Decision::Forward(_) => "forward",
            Decision::Login => "login",
            Decision::SecondFactor(_) => "second_factor",
            Decision::StepUp { .. } => "step_up",
            Decision::Deny => "deny",
        }
    }
}

/// Applies the access rules to a request and the identity behind it (if any).
pub fn decide(
    access: &AccessPolicy,
    facts: &RequestFacts<'_>,
    identity: Option<Identity>,
    mfa: &MfaSettings,
    now: Timestamp,
) -> Decision {
    let verdict = match &identity {
        Some(id) => {
            let user = UserFacts {
                username: id.user.username.as_str(),
                groups: &id.user.groups,
            };
            access.evaluate(facts, Some(&user))
        }
        None => access.evaluate(facts, None),
    };
    // A rule naming users or groups lets a request through only once the user is known as
    // surely as a `one_factor` rule asks: a bypass for alice is not one for whoever has her
    // password while her second factor is still owed.
    let names_subjects = verdict.names_subjects;
    let decision = match (verdict.policy, identity) {
        (Policy::Deny, None) if verdict.needs_identity => Decision::Login,
        (Policy::Deny, _) => Decision::Deny,
        (Policy::Bypass, Some(id)) if names_subjects && owes_second_factor(&id, mfa) => {
            Decision::SecondFactor(id)
        }
        (Policy::Bypass, _) => Decision::Bypass,
        (Policy::OneFactor | Policy::TwoFactor, None) => Decision::Login,
        (Policy::OneFactor | Policy::TwoFactor, Some(id)) if owes_second_factor(&id, mfa) => {
            Decision::SecondFactor(id)
        }
        (Policy::OneFactor, Some(id)) => Decision::Forward(id),
        (Policy::TwoFactor, Some(id)) => {
            if id.session.auth_level >= AuthLevel::TwoFactor {
                Decision::Forward(id)
            } else {
                Decision::SecondFactor(id)
            }
        }
    };
    // Step-up: on top of the policy, a fresh second factor (or, where the rule allows it for
    // users without one, a fresh password).
    match (decision, verdict.step_up) {
        (Decision::Forward(identity), Some(step_up)) => {
            let session = &identity.session;
            let fresh = step_up::second_factor_fresh(session, step_up.window, now)
                || (step_up.password_fallback
                    && step_up::password_fresh(session, step_up.window, now));
            if fresh {
                Decision::Forward(identity)
            } else {
                Decision::StepUp { identity, step_up }
            }
        }
        (decision, _) => decision,
    }
}

/// The session's second factor is still owed: the password was given and the second factor
/// not yet proven, or `mfa.required` (or a required group) applies to a user who signed in
/// with the password alone and must enrol first. Nothing that needs the user known passes.
fn owes_second_factor(id: &Identity, mfa: &MfaSettings) -> bool {
    match id.session.auth_level {
        AuthLevel::AwaitSecondFactor => true,
        level => level < AuthLevel::TwoFactor && mfa.is_required_for(&id.user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::PasswordHash;
    use crate::auth::session::SessionId;
    use crate::auth::user::Username;
    use crate::policy::{Rule, Subject};
    use http::Method;

    fn identity(name: &str, groups: &[&str], level: AuthLevel) -> Identity {
        let username = Username::parse(name).unwrap();
        Identity {
            user: Arc::new(User {
                username: username.clone(),
                display_name: name.into(),
                email: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                disabled: false,
                password_hash: PasswordHash::new_unchecked("$argon2id$x".into()),
                created_at: Timestamp(0),
            }),
            session: Session {
                key: SessionId::generate().key(),
                username,
                created_at: Timestamp(0),
                last_seen: Timestamp(0),
                expires_at: Timestamp(1),
                remember_me: false,
                auth_level: level,
                second_factor_at: None,
                challenge_started_at: None,
                challenge_failures: 0,
                reauth_at: None,
            },
        }
    }

    fn facts<'a>(path: &'a str, method: &'a Method) -> RequestFacts<'a> {
        RequestFacts {
            host: "app.example.com",
            path,
            method,
            method_overrides: &[],
            client_ip: "192.0.2.1".parse().unwrap(),
        }
    }

    fn mfa() -> MfaSettings {
        MfaSettings::default()
    }

    fn policy() -> AccessPolicy {
        let mut public = Rule::new(Policy::Bypass);
        public.paths = vec![crate::policy::PathPattern::new("^/public/").unwrap()];
        let mut admin = Rule::new(Policy::TwoFactor);
        admin.paths = vec![crate::policy::PathPattern::new("^/admin").unwrap()];
        admin.subjects = vec![Subject::Group("admins".into())];
        let mut admin_others = Rule::new(Policy::Deny);
        admin_others.paths = vec![crate::policy::PathPattern::new("^/admin").unwrap()];
        AccessPolicy {
            default_policy: Policy::OneFactor,
            rules: vec![public, admin, admin_others],
            default_step_up: None,
        }
    }

    #[test]
    fn anonymous_requests() {
        let get = Method::GET;
        let p = policy();
        assert!(matches!(
            decide(&p, &facts("/public/x", &get), None, &mfa(), Timestamp(0)),
            Decision::Bypass
        ));
        assert!(matches!(
            decide(&p, &facts("/", &get), None, &mfa(), Timestamp(0)),
            Decision::Login
        ));
        assert!(matches!(
            decide(&p, &facts("/admin", &get), None, &mfa(), Timestamp(0)),
            Decision::Login
        ));
    }

    #[test]
    fn logged_in_requests() {
        let get = Method::GET;
        let p = policy();
        let alice = identity("alice", &["admins"], AuthLevel::OneFactor);
        assert!(matches!(
            decide(
                &p,
                &facts("/", &get),
                Some(alice.clone()),
                &mfa(),
                Timestamp(0)
            ),
            Decision::Forward(_)
        ));
        assert!(matches!(
            decide(
                &p,
                &facts("/admin", &get),
                Some(alice),
                &mfa(),
                Timestamp(0)
            ),
            Decision::SecondFactor(_)
        ));
        let alice2 = identity("alice", &["admins"], AuthLevel::TwoFactor);
        assert!(matches!(
            decide(
                &p,
                &facts("/admin", &get),
                Some(alice2),
                &mfa(),
                Timestamp(0)
            ),
            Decision::Forward(_)
        ));
        let pending = identity("alice", &["admins"], AuthLevel::AwaitSecondFactor);
        assert!(matches!(
            decide(&p, &facts("/", &get), Some(pending), &mfa(), Timestamp(0)),
            Decision::SecondFactor(_)
        ));
        let required = MfaSettings {
            required_groups: vec!["admins".into()],
            ..MfaSettings::default()
        };
        let alice = identity("alice", &["admins"], AuthLevel::OneFactor);
        assert!(matches!(
            decide(&p, &facts("/", &get), Some(alice), &required, Timestamp(0)),
            Decision::SecondFactor(_)
        ));
        let bob = identity("bob", &["staff"], AuthLevel::TwoFactor);
        assert!(matches!(
            decide(&p, &facts("/admin", &get), Some(bob), &mfa(), Timestamp(0)),
            Decision::Deny
        ));
    }

    /// A bypass rule for named users lets them through once they are known as surely as a
    /// `one_factor` rule asks, not while their second factor is owed.
    #[test]
    fn bypass_for_named_users_waits_for_the_second_factor() {
        let get = Method::GET;
        let mut reports = Rule::new(Policy::Bypass);
        reports.paths = vec![crate::policy::PathPattern::new("^/reports").unwrap()];
        reports.subjects = vec![Subject::User("alice".into())];
        let p = AccessPolicy {
            default_policy: Policy::TwoFactor,
            rules: vec![reports],
            default_step_up: None,
        };
        let decide_for = |level, mfa: &MfaSettings| {
            let alice = identity("alice", &["staff"], level);
            decide(&p, &facts("/reports", &get), Some(alice), mfa, Timestamp(0))
        };
        assert!(matches!(
            decide(&p, &facts("/reports", &get), None, &mfa(), Timestamp(0)),
            Decision::Login
        ));
        assert!(matches!(
            decide_for(AuthLevel::AwaitSecondFactor, &mfa()),
            Decision::SecondFactor(_)
        ));
        assert!(matches!(
            decide_for(AuthLevel::OneFactor, &mfa()),
            Decision::Bypass
        ));
        assert!(matches!(
            decide_for(AuthLevel::TwoFactor, &mfa()),
            Decision::Bypass
        ));
        let required = MfaSettings {
            required: true,
            ..MfaSettings::default()
        };
        assert!(matches!(
            decide_for(AuthLevel::OneFactor, &required),
            Decision::SecondFactor(_)
        ));
        assert!(matches!(
            decide_for(AuthLevel::TwoFactor, &required),
            Decision::Bypass
        ));
        // A bypass for everyone stays one: nobody needs to be known.
        let mut public = Rule::new(Policy::Bypass);
        public.paths = vec![crate::policy::PathPattern::new("^/public/").unwrap()];
        let p = AccessPolicy {
            default_policy: Policy::TwoFactor,
            rules: vec![public],
            default_step_up: None,
        };
        let pending = identity("alice", &["staff"], AuthLevel::AwaitSecondFactor);
        assert!(matches!(
            decide(
                &p,
                &facts("/public/x", &get),
                Some(pending),
                &mfa(),
                Timestamp(0)
            ),
            Decision::Bypass
        ));
    }
}
