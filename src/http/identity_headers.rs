//! The identity headers an upstream receives for a logged-in user (`Remote-User`, `Remote-Name`,
//! `Remote-Email`, `Remote-Groups`, `Remote-Auth-Time`), for the proxy and for forward-auth
//! answers alike.
//!
//! They are built for every such request, but an account's values only change with the account:
//! each thread keeps the values of the accounts it saw last, and the auth time it wrote last.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use http::{HeaderName, HeaderValue};

use crate::auth::user::User;
use crate::clock::Timestamp;
use crate::config::IdentityHeaders;
use crate::decision::Identity;

/// When the session's last second factor was verified (RFC 3339), for the upstream's own
/// freshness checks.
pub const REMOTE_AUTH_TIME: HeaderName = HeaderName::from_static("remote-auth-time");

/// Accounts whose values a thread keeps. A worker serves many users; a miss costs only the
/// values' writing (a few hundred nanoseconds).
const ACCOUNTS_KEPT: usize = 64;

/// The identity headers for a user. Values that cannot be a header (control characters) are
/// left out rather than forwarded half-written.
pub(crate) fn identity_headers(
    names: &IdentityHeaders,
    id: &Identity,
) -> Vec<(HeaderName, HeaderValue)> {
    WRITTEN.with_borrow_mut(|written| {
        let account = written.account(&id.user);
        let mut out = Vec::with_capacity(5);
        let mut push = |name: &HeaderName, value: &Option<HeaderValue>| {
            if let Some(value) = value {
                out.push((name.clone(), value.clone()));
            }
        };
        push(&names.user, &account.user);
        push(&names.name, &account.name);
        push(&names.email, &account.email);
        push(&names.groups, &account.groups);
        if let Some(at) = id.session.second_factor_at {
            out.push((REMOTE_AUTH_TIME, written.auth_time(at)));
        }
        out
    })
}

thread_local! {
    static WRITTEN: RefCell<Written> = const {
        RefCell::new(Written { accounts: VecDeque::new(), auth_time: None })
    };
}

/// What one thread wrote lately.
struct Written {
    /// Keyed by the account's `Arc`, most recent last. The user view replaces an account's `Arc`
    /// whenever the account changes, and the weak reference held here keeps its address from
    /// being reused (without keeping the account's data, its password hash included): the same
    /// address is always the same version of the same account.
    accounts: VecDeque<(Weak<User>, AccountValues)>,
    auth_time: Option<(Timestamp, HeaderValue)>,
}

/// One account's header values; `None`: absent, or not a valid header value.
#[derive(Clone)]
struct AccountValues {
    user: Option<HeaderValue>,
    name: Option<HeaderValue>,
    email: Option<HeaderValue>,
    groups: Option<HeaderValue>,
}

impl AccountValues {
    fn of(user: &User) -> Self {
        let value = |text: &str| HeaderValue::from_bytes(text.as_bytes()).ok();
        AccountValues {
            user: value(user.username.as_str()),
            name: value(&user.display_name),
            email: user.email.as_deref().and_then(value),
            groups: value(&user.groups.join(",")),
        }
    }
}

impl Written {
    fn account(&mut self, user: &Arc<User>) -> &AccountValues {
        let index = match self
            .accounts
            .iter()
            .rposition(|(seen, _)| std::ptr::eq(seen.as_ptr(), Arc::as_ptr(user)))
        {
            Some(index) => index,
            None => {
                if self.accounts.len() == ACCOUNTS_KEPT {
                    self.accounts.pop_front();
                }
                self.accounts
                    .push_back((Arc::downgrade(user), AccountValues::of(user)));
                self.accounts.len() - 1
            }
        };
        &self.accounts[index].1
    }

    fn auth_time(&mut self, at: Timestamp) -> HeaderValue {
        match &self.auth_time {
            Some((seen, value)) if *seen == at => value.clone(),
            _ => {
                // Digits, dashes, colons, `T` and `Z`: always a valid value.
                let value = HeaderValue::try_from(at.to_rfc3339())
                    .unwrap_or(HeaderValue::from_static("1970-01-01T00:00:00Z"));
                self.auth_time = Some((at, value.clone()));
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::PasswordHash;
    use crate::auth::session::{AuthLevel, Session, SessionId};
    use crate::auth::user::Username;

    fn names() -> IdentityHeaders {
        IdentityHeaders {
            user: HeaderName::from_static("remote-user"),
            email: HeaderName::from_static("remote-email"),
            name: HeaderName::from_static("remote-name"),
            groups: HeaderName::from_static("remote-groups"),
        }
    }

    fn user(name: &str, display: &str, groups: &[&str]) -> Arc<User> {
        Arc::new(User {
            username: Username::parse(name).unwrap(),
            display_name: display.to_string(),
            email: Some(format!("{name}@example.com")),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            disabled: false,
            password_hash: PasswordHash::new_unchecked(String::new()),
            created_at: Timestamp(0),
        })
    }

    fn identity(user: &Arc<User>, second_factor_at: Option<Timestamp>) -> Identity {
        let session = Session {
            key: SessionId::generate().key(),
            username: user.username.clone(),
            created_at: Timestamp(0),
            last_seen: Timestamp(0),
            expires_at: Timestamp(1),
            remember_me: false,
            auth_level: AuthLevel::TwoFactor,
            second_factor_at,
            challenge_started_at: None,
            challenge_failures: 0,
            reauth_at: None,
        };
        Identity {
            user: Arc::clone(user),
            session,
        }
    }

    fn headers(id: &Identity) -> Vec<(String, String)> {
        identity_headers(&names(), id)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_identity_header_of_the_account_and_session() {
        let alice = user("alice", "Alice Liddell", &["admins", "dev"]);
        let id = identity(&alice, Some(Timestamp::from_millis(1_700_000_000_000)));
        let expected = pairs(&[
            ("remote-user", "alice"),
            ("remote-name", "Alice Liddell"),
            ("remote-email", "alice@example.com"),
            ("remote-groups", "admins,dev"),
            ("remote-auth-time", "2023-11-14T22:13:20Z"),
        ]);
        assert_eq!(headers(&id), expected);
        // Written once, the same again.
        assert_eq!(headers(&id), expected);
    }

    #[test]
    fn a_changed_account_gets_its_new_values() {
        let before = user("bob", "Bob", &["dev"]);
        assert_eq!(headers(&identity(&before, None))[3].1, "dev");
        // The view holds a new `Arc` for a changed (or deleted and re-created) account.
        let after = user("bob", "Robert", &["ops"]);
        let now = headers(&identity(&after, None));
        assert_eq!(now[1].1, "Robert");
        assert_eq!(now[3].1, "ops");
        // And the old version, still held somewhere, keeps its own.
        assert_eq!(headers(&identity(&before, None))[1].1, "Bob");
    }

    #[test]
    fn each_session_gets_its_own_auth_time() {
        let carol = user("carol", "Carol", &[]);
        let first = headers(&identity(&carol, Some(Timestamp::from_millis(0))));
        let second = headers(&identity(&carol, Some(Timestamp::from_millis(86_400_000))));
        assert_eq!(first.last().unwrap().1, "1970-01-01T00:00:00Z");
        assert_eq!(second.last().unwrap().1, "1970-01-02T00:00:00Z");
        // No second factor yet: no auth time at all.
        let none = headers(&identity(&carol, None));
        assert!(none.iter().all(|(n, _)| n != "remote-auth-time"));
    }

    #[test]
    fn values_that_cannot_be_headers_are_left_out() {
        let mallory = user("mallory", "Mallory\r\nRemote-User: admin", &["dev"]);
        let sent = headers(&identity(&mallory, None));
        assert!(sent.iter().all(|(n, _)| n != "remote-name"), "{sent:?}");
        assert_eq!(sent[0], ("remote-user".into(), "mallory".into()));
    }

    #[test]
    fn a_replaced_account_is_not_kept_alive_by_the_cache() {
        let old = user("dave", "Dave", &["dev"]);
        headers(&identity(&old, None));
        let weak = Arc::downgrade(&old);
        drop(old);
        // Its data (password hash included) is gone; only the address stays reserved.
        assert!(weak.upgrade().is_none());
        let new = user("dave", "David", &["dev"]);
        assert_eq!(headers(&identity(&new, None))[1].1, "David");
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_accounts() {
        let users: Vec<_> = (0..ACCOUNTS_KEPT + 10)
            .map(|i| user(&format!("user{i}"), "U", &[]))
            .collect();
        for u in &users {
            headers(&identity(u, None));
        }
        WRITTEN.with_borrow(|w| assert_eq!(w.accounts.len(), ACCOUNTS_KEPT));
        // The oldest were let go, and come back right when seen again.
        assert_eq!(headers(&identity(&users[0], None))[0].1, "user0");
    }
}
