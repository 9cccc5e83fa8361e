//! The password step that the login form and Basic credentials on the forward-auth endpoint
//! share: the ban check, the account lookup, verification at the same cost for an unknown user,
//! and for a failure its record (towards a ban) and its audit events.

use std::sync::Arc;

use super::Ctx;
use crate::auth::audit::{self, AuditEvent, AuditKind};
use crate::auth::password::Password;
use crate::auth::user::{User, Username};
use crate::error::Error;

/// Where a password attempt came from, as its audit events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The portal's login form.
    LoginForm,
    /// An `Authorization: Basic` header on the forward-auth endpoint.
    BasicForwardAuth,
}

impl Source {
    fn detail(self) -> Option<&'static str> {
        match self {
            Source::LoginForm => None,
            Source::BasicForwardAuth => Some("basic credentials (forward-auth)"),
        }
    }
}

/// Checks `password` for the account named `attempted` (as typed, trimmed).
///
/// `Ok(Some(user))`: the password is right and the account enabled. `Ok(None)`: unknown user,
/// wrong password or disabled account, told apart to no one; the failure is recorded for
/// regulation and audited. A client or name under a ban gets [`Error::TooManyRequests`]
/// (audited) before any password work. The attempt is admitted by the regulator first (it may
/// wait there for other attempts on the same account or network to end) and counts as in
/// flight until its failure is recorded.
pub async fn check(
    ctx: &Ctx<'_>,
    source: Source,
    attempted: &str,
    password: Password,
) -> Result<Option<Arc<User>>, Error> {
    let app = ctx.app;
    let attempt = match app.regulator.begin(attempted, ctx.client_ip).await {
        Ok(attempt) => attempt,
        Err(banned) => {
            if app.regulator.first_refusal(attempted, ctx.client_ip) {
                let account = existing_account(ctx, attempted);
                audit_attempt(ctx, source, AuditKind::Banned, account.as_ref());
            }
            return Err(Error::TooManyRequests {
                retry_after: banned.retry_after,
            });
        }
    };
    let user = match Username::parse(attempted) {
        Ok(name) => app
            .users
            .get(&name)
            .map_err(|e| Error::Internal(format!("user lookup: {e}")))?,
        Err(_) => None,
    };
    // A hash made with other parameters than the configured ones is replaced once the password
    // is proven: the password is kept for that. (Otherwise, after the operator changes the
    // parameters, such a hash would take another time to check than the dummy hash checked for
    // unknown users, which is made with the configured ones: the time would tell names apart.)
    let params = app.hasher.params();
    let again = user
        .as_ref()
        .filter(|u| u.password_hash.needs_rehash(params))
        .map(|_| password.clone());
    // An unknown user is verified against a dummy hash: the same cost as a wrong password.
    let verified = app
        .hasher
        .verify(password, user.as_ref().map(|u| &u.password_hash))
        .await;
    match user {
        Some(user) if verified && !user.disabled => match again {
            Some(password) => Ok(Some(upgrade_hash(ctx, user, password).await)),
            None => Ok(Some(user)),
        },
        _ => {
            let regulator = app.regulator.clone();
            let ip = ctx.client_ip;
            let name = attempted.to_owned();
            // The attempt ends once its failure is stored, even if this request is dropped
            // while the record is being written.
            let banned = tokio::task::spawn_blocking(move || {
                let banned = regulator.record_failure(&name, ip);
                drop(attempt);
                banned
            })
            .await
            .map_err(|e| Error::Internal(format!("regulation task: {e}")))?
            .map_err(|e| Error::Internal(format!("regulation: {e}")))?;
            let account = user.as_ref().map(|u| &u.username);
            audit_attempt(ctx, source, AuditKind::LoginFailed, account);
            if banned.is_some() {
                audit_attempt(ctx, source, AuditKind::Banned, account);
            }
            Ok(None)
        }
    }
}

/// Stores a hash of `password` (just proven for `user`) made with the configured parameters,
/// and returns the account as it is then stored. Whatever goes wrong only leaves the old hash in
/// place (logged): the login goes on with `user` as it was.
async fn upgrade_hash(ctx: &Ctx<'_>, user: Arc<User>, password: Password) -> Arc<User> {
    let new = match ctx.app.hasher.hash(password).await {
        Ok(hash) => hash,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rehash a password with the configured parameters");
            return user;
        }
    };
    let (name, old) = (user.username.clone(), user.password_hash.clone());
    let upgraded = tokio::task::spawn_blocking({
        let app = ctx.arc.clone();
        move || app.users.upgrade_password_hash(&name, &old, new)
    })
    .await;
    match upgraded {
        Ok(Ok(Some(now))) => {
            tracing::info!(user = %now.username, "password hash upgraded to the configured parameters");
            Arc::new(now)
        }
        // Changed meanwhile (a new password, a disabling): the login is judged as it stands.
        Ok(Ok(None)) => user,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot store a rehashed password");
            user
        }
        Err(e) => {
            tracing::warn!(error = %e, "rehashing task failed");
            user
        }
    }
}

/// Records `kind` for an attempt, naming `account` if there is one. What was typed as a
/// username is never recorded for an account that does not exist: people type their password
/// into the username field, and the audit trail and the logs would keep it.
pub fn audit_attempt(ctx: &Ctx<'_>, source: Source, kind: AuditKind, account: Option<&Username>) {
    let mut event = AuditEvent::new(ctx.app.clock.now(), kind).with_client_ip(ctx.client_ip);
    if let Some(detail) = source.detail() {
        event = event.with_detail(detail);
    }
    if let Some(name) = account {
        event = event.with_username(name.as_str());
    }
    audit::record(&ctx.app.store, event);
}

/// The account `attempted` names, if it exists (a store error reads as none: this only decides
/// what an audit event names). Read from the store, not through the user view: a banned client
/// is not slowed down by any password work, and names it makes up must not fill the view.
fn existing_account(ctx: &Ctx<'_>, attempted: &str) -> Option<Username> {
    let name = Username::parse(attempted).ok()?;
    ctx.app.store.get_user(&name).ok().flatten().map(|_| name)
}
