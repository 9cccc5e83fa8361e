//! The audit trail as written by the running gateway: which events a login, a failure, a logout
//! and a ban leave behind, and that no secret ever lands in one.

mod common;

use stepgate::auth::audit::{AuditEvent, AuditKind};

use common::auth::{Client, create_user, login, logout, post_login, username};
use common::{EchoUpstream, Gateway};

const PASSWORD: &str = "Correct-Horse-7781";
const WRONG: &str = "Wrong-Guess-5512";

fn events(gw: &Gateway) -> Vec<AuditEvent> {
    gw.app().store.recent_audit(50).expect("read audit trail")
}

fn has(events: &[AuditEvent], kind: AuditKind, user: &str) -> bool {
    events
        .iter()
        .any(|e| e.kind == kind && e.username.as_deref() == Some(user))
}

#[tokio::test]
async fn login_failure_logout_and_ban_are_audited_without_secrets() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&upstream.url())
        .extra_toml("[regulation]\nmax_retries = 3\n")
        .start()
        .await;
    create_user(&gw, "alice", PASSWORD, &[]).await;

    let cookie = login(&gw, "alice", PASSWORD).await;
    assert_eq!(logout(&gw, &cookie).await, 200);
    let fail = |user: &'static str| {
        let gw = &gw;
        async move {
            let resp = post_login(
                gw,
                &[("username", user), ("password", WRONG)],
                Client::Api,
                &[],
            )
            .await;
            resp.status().as_u16()
        }
    };
    assert_eq!(fail("alice").await, 401);
    assert_eq!(fail("bob").await, 401);
    // The third failure from this address starts a ban.
    assert_eq!(fail("bob").await, 401);
    // Refused while banned: audited too, once. Repeated while banned (no password work, so
    // as fast as the client can send): the ban's refusals are audited once, not once each.
    for _ in 0..11 {
        let resp = post_login(
            &gw,
            &[("username", "alice"), ("password", PASSWORD)],
            Client::Api,
            &[],
        )
        .await;
        assert_eq!(resp.status(), 429);
    }

    let trail = events(&gw);
    let named_bans = trail
        .iter()
        .filter(|e| e.kind == AuditKind::Banned && e.username.as_deref() == Some("alice"))
        .count();
    assert_eq!(named_bans, 1, "{trail:#?}");
    assert!(
        has(&trail, AuditKind::LoginSucceeded, "alice"),
        "{trail:#?}"
    );
    assert!(has(&trail, AuditKind::Logout, "alice"), "{trail:#?}");
    assert!(has(&trail, AuditKind::LoginFailed, "alice"), "{trail:#?}");
    assert!(has(&trail, AuditKind::Banned, "alice"), "{trail:#?}");
    // There is no account "bob": what was typed is not recorded (it may be a password), the
    // attempts and the ban they started are.
    let unnamed = |kind| {
        trail
            .iter()
            .filter(|e| e.kind == kind && e.username.is_none())
            .count()
    };
    assert_eq!(unnamed(AuditKind::LoginFailed), 2, "{trail:#?}");
    assert_eq!(unnamed(AuditKind::Banned), 1, "{trail:#?}");
    assert!(
        !trail.iter().any(|e| e.username.as_deref() == Some("bob")),
        "{trail:#?}"
    );
    let failed = trail
        .iter()
        .filter(|e| e.kind == AuditKind::LoginFailed)
        .count();
    assert_eq!(failed, 3, "{trail:#?}");
    // HTTP events name the client; the login form's need no detail.
    for e in trail.iter().filter(|e| e.kind != AuditKind::UserCreated) {
        assert_eq!(e.client_ip, Some("127.0.0.1".parse().expect("ip")), "{e:?}");
    }
    for e in trail.iter().filter(|e| {
        matches!(
            e.kind,
            AuditKind::LoginSucceeded | AuditKind::LoginFailed | AuditKind::Banned
        )
    }) {
        assert_eq!(e.detail, None, "{e:?}");
    }

    // No secret anywhere: not the password, not the wrong guess, not the session id.
    let session_id = cookie.split_once('=').expect("name=value").1.to_owned();
    let hash = gw
        .app()
        .users
        .get(&username("alice"))
        .expect("lookup")
        .expect("alice")
        .password_hash
        .as_str()
        .to_owned();
    for e in &trail {
        let shown = format!("{e:?}");
        for secret in [PASSWORD, WRONG, &session_id, &hash] {
            assert!(!shown.contains(secret), "secret in audit event: {shown}");
        }
        for field in [&e.username, &e.detail].into_iter().flatten() {
            for secret in [PASSWORD, WRONG, &session_id] {
                assert!(!field.contains(secret), "secret in audit field: {field}");
            }
        }
    }
}

#[tokio::test]
async fn password_typed_as_username_is_not_kept_verbatim() {
    // People sometimes type their password into the username field. What names no account is
    // kept out of the trail, whether or not it could be a username.
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    for typed in ["My Secret Pass!", "Tr0ub4dor3"] {
        let resp = post_login(
            &gw,
            &[("username", typed), ("password", "x")],
            Client::Api,
            &[],
        )
        .await;
        assert_eq!(resp.status(), 401);
    }
    let trail = events(&gw);
    assert_eq!(
        trail
            .iter()
            .filter(|e| e.kind == AuditKind::LoginFailed)
            .count(),
        2,
        "{trail:#?}"
    );
    for e in &trail {
        let shown = format!("{e:?}").to_lowercase();
        for typed in ["my secret pass!", "tr0ub4dor3"] {
            assert!(!shown.contains(typed), "typed text kept: {shown}");
        }
    }
}

#[tokio::test]
async fn account_changes_are_audited() {
    let upstream = EchoUpstream::start().await;
    let gw = Gateway::builder().upstream(&upstream.url()).start().await;
    create_user(&gw, "alice", PASSWORD, &[]).await;
    let alice = username("alice");
    gw.app().users.set_disabled(&alice, true).expect("disable");
    gw.app().users.set_disabled(&alice, false).expect("enable");
    gw.app().users.delete(&alice).expect("delete");
    let trail = events(&gw);
    for kind in [
        AuditKind::UserCreated,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::UserDeleted,
    ] {
        assert!(has(&trail, kind, "alice"), "{kind}: {trail:#?}");
    }
}
