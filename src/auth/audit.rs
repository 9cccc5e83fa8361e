//! The audit trail: security-relevant events, logged (tracing target `audit`) and kept in the
//! store for later review.
//!
//! Never put a password, a one-time code, a session id or a key into an event. `username` is
//! the canonical account name where there is one; for a failed login with an invalid name,
//! prefer leaving it out (people sometimes type their password into the username field).

use std::fmt;
use std::net::IpAddr;

use crate::clock::Timestamp;
use crate::store::Store;

/// Longest `username` kept, in characters.
const MAX_USERNAME_CHARS: usize = 128;
/// Longest `detail` kept, in characters.
const MAX_DETAIL_CHARS: usize = 1024;

/// What happened. Stored by name ([`AuditKind::as_str`]); add new kinds at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    LoginSucceeded,
    LoginFailed,
    Logout,
    Banned,
    UserCreated,
    UserUpdated,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    PasswordChanged,
    SessionsRevoked,
    SecondFactorSucceeded,
    SecondFactorFailed,
    BackupCodeUsed,
    TwoFactorEnabled,
    TwoFactorDisabled,
    FactorChanged,
}

impl AuditKind {
    pub const ALL: &'static [AuditKind] = &[
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::Logout,
        AuditKind::Banned,
        AuditKind::UserCreated,
        AuditKind::UserUpdated,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::UserDeleted,
        AuditKind::PasswordChanged,
        AuditKind::SessionsRevoked,
        AuditKind::SecondFactorSucceeded,
        AuditKind::SecondFactorFailed,
        AuditKind::BackupCodeUsed,
        AuditKind::TwoFactorEnabled,
        AuditKind::TwoFactorDisabled,
        AuditKind::FactorChanged,
    ];

    /// Stable snake_case name, used in logs and on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::Logout => "logout",
            AuditKind::Banned => "banned",
            AuditKind::UserCreated => "user_created",
            AuditKind::UserUpdated => "user_updated",
            AuditKind::UserDisabled => "user_disabled",
            AuditKind::UserEnabled => "user_enabled",
            AuditKind::UserDeleted => "user_deleted",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::SessionsRevoked => "sessions_revoked",
            AuditKind::SecondFactorSucceeded => "second_factor_succeeded",
            AuditKind::SecondFactorFailed => "second_factor_failed",
            AuditKind::BackupCodeUsed => "backup_code_used",
            AuditKind::TwoFactorEnabled => "two_factor_enabled",
            AuditKind::TwoFactorDisabled => "two_factor_disabled",
            AuditKind::FactorChanged => "factor_changed",
        }
    }

    /// Inverse of [`AuditKind::as_str`].
    pub fn from_name(name: &str) -> Option<AuditKind> {
        AuditKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub kind: AuditKind,
    pub username: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event with only a time and a kind; fill in the rest with the `with_*` methods.
    pub fn new(at: Timestamp, kind: AuditKind) -> Self {
        AuditEvent {
            at,
            kind,
            username: None,
            client_ip: None,
            detail: None,
        }
    }

    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Bounds the free-text fields, so a hostile client cannot grow the trail without limit.
    fn bounded(mut self) -> Self {
        fn cut(s: &mut String, max: usize) {
            if let Some((i, _)) = s.char_indices().nth(max) {
                s.truncate(i);
            }
        }
        if let Some(u) = &mut self.username {
            cut(u, MAX_USERNAME_CHARS);
        }
        if let Some(d) = &mut self.detail {
            cut(d, MAX_DETAIL_CHARS);
        }
        self
    }
}

/// Records `event`: a structured `tracing` event (target `audit`) and an entry in the store.
///
/// A store failure is logged, not returned: the audit trail must never block a login or a
/// logout. Text fields are logged with `Debug` formatting, so control characters in them are
/// escaped and cannot forge log lines.
pub fn record(store: &Store, event: AuditEvent) {
    let event = event.bounded();
    tracing::info!(
        target: "audit",
        kind = event.kind.as_str(),
        at = %event.at.to_rfc3339(),
        username = ?event.username,
        client_ip = ?event.client_ip,
        detail = ?event.detail,
        "audit event"
    );
    if let Err(e) = store.append_audit(&event) {
        tracing::error!(
            target: "audit",
            error = %e,
            kind = event.kind.as_str(),
            "cannot store audit event"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in AuditKind::ALL {
            assert!(seen.insert(k.as_str()), "duplicate name {}", k.as_str());
            assert_eq!(AuditKind::from_name(k.as_str()), Some(*k));
        }
        assert_eq!(AuditKind::from_name("nonsense"), None);
    }

    #[test]
    fn record_stores_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ev = AuditEvent::new(Timestamp(10), AuditKind::LoginFailed)
            .with_username("alice")
            .with_client_ip("192.0.2.1".parse().unwrap())
            .with_detail("wrong password");
        record(&store, ev.clone());
        assert_eq!(store.recent_audit(10).unwrap(), [ev]);
    }

    #[test]
    fn oversized_fields_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ev = AuditEvent::new(Timestamp(10), AuditKind::LoginFailed)
            .with_username("é".repeat(10_000))
            .with_detail("x".repeat(1_000_000));
        record(&store, ev);
        let stored = &store.recent_audit(1).unwrap()[0];
        assert_eq!(
            stored.username.as_deref().map(|u| u.chars().count()),
            Some(MAX_USERNAME_CHARS)
        );
        assert_eq!(
            stored.detail.as_deref().map(str::len),
            Some(MAX_DETAIL_CHARS)
        );
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(true)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn logs_under_the_audit_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = logged(|| {
            record(
                &store,
                AuditEvent::new(Timestamp(0), AuditKind::UserDisabled).with_username("bob"),
            )
        });
        assert!(log.contains(" audit: "), "{log}");
        assert!(log.contains("user_disabled"), "{log}");
        assert!(log.contains("bob"), "{log}");
    }

    #[test]
    fn rejects_log_line_forging_through_the_username() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let forged = "mallory\nINFO audit: kind=\"login_succeeded\" username=\"admin\"";
        let log = logged(|| {
            record(
                &store,
                AuditEvent::new(Timestamp(0), AuditKind::LoginFailed).with_username(forged),
            )
        });
        assert_eq!(log.lines().count(), 1, "{log}");
    }
}
