//! Brute-force regulation against guesses sent all at once: however many arrive together, no
//! more are judged than it takes to reach the ban, for passwords at login, for second-factor
//! codes on one pending session, and for the current password asked by the settings page.

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use stepgate::auth::audit::AuditKind;

use common::mfa::{PASSWORD, Rig, wrong_code};

/// Guesses sent at once in each burst.
const BURST: usize = 30;
/// `regulation.max_retries` of every rig here (the default, stated).
const MAX_RETRIES: usize = 3;
const REGULATION: &str = "[regulation]\nmax_retries = 3\nfind_time = \"2m\"\nban_time = \"5m\"\n";
/// Wrong codes one second-factor challenge survives (`portal::verify::MAX_CHALLENGE_FAILURES`,
/// private to the crate): the last of them ends the session.
const MAX_CHALLENGE_FAILURES: usize = 5;
/// Safety net for the waits below; a passing test never reaches it.
const DEADLINE: Duration = Duration::from_secs(30);

/// How many audit events of `kind` the gateway has written.
fn audited(rig: &Rig, kind: AuditKind) -> usize {
    rig.gw
        .app()
        .store
        .recent_audit(10_000)
        .expect("read audit trail")
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// Waits until `ready` holds, checking again after each short pause. It waits for the gateway
/// to get somewhere, not for time to pass: nothing in the gateway depends on this clock.
async fn until(what: &str, ready: impl Fn() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

fn count(statuses: &[u16], wanted: u16) -> usize {
    statuses.iter().filter(|s| **s == wanted).count()
}

#[tokio::test]
async fn simultaneous_password_guesses_stop_at_the_ban() {
    let rig = Rig::start(REGULATION).await;
    rig.user("alice", None, &[]).await;
    let hashes_before = rig.gw.app().hasher.stats().started;

    let guesses = join_all((0..BURST).map(|i| {
        let rig = &rig;
        async move {
            let guess = format!("Wrong-Guess-{i}");
            rig.password_login("alice", &guess, &[]).await.0
        }
    }));
    // The right password, sent while the burst is being judged: once as many guesses as
    // would reach the ban are running, it must not be judged any more.
    let right = async {
        until("the first guesses are being verified", || {
            rig.gw.app().hasher.stats().started >= hashes_before + MAX_RETRIES
        })
        .await;
        rig.password_login("alice", PASSWORD, &[]).await
    };
    let (statuses, (right_status, right_cookie, right_body)) = tokio::join!(guesses, right);

    assert_eq!(count(&statuses, 401), MAX_RETRIES, "{statuses:?}");
    assert_eq!(count(&statuses, 429), BURST - MAX_RETRIES, "{statuses:?}");
    assert_eq!(audited(&rig, AuditKind::LoginFailed), MAX_RETRIES);
    assert_eq!(right_status, 429, "{right_body}");
    assert!(
        right_cookie.is_none(),
        "a session was opened during the ban"
    );
    assert_eq!(
        rig.gw.app().hasher.stats().started,
        hashes_before + MAX_RETRIES,
        "refused attempts ran argon2"
    );
}

#[tokio::test]
async fn simultaneous_code_guesses_on_one_challenge_stop_at_the_ban() {
    let rig = Rig::start(REGULATION).await;
    let totp = rig.user_with_totp("alice", None).await;
    let pending = rig.login_pending("alice").await;
    let code = rig.totp_now(&totp.secret);
    let wrong = wrong_code(&code);

    let guesses = join_all((0..BURST).map(|_| rig.verify(&pending, "totp", &wrong)));
    // The right code, sent once the guesses that reach the ban have been counted.
    let right = async {
        until("the ban is reached", || {
            audited(&rig, AuditKind::SecondFactorFailed) >= MAX_RETRIES
        })
        .await;
        rig.verify(&pending, "totp", &code).await
    };
    let (answers, (right_status, right_cookie, right_body)) = tokio::join!(guesses, right);
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();

    assert_eq!(count(&statuses, 401), MAX_RETRIES, "{answers:?}");
    assert_eq!(count(&statuses, 429), BURST - MAX_RETRIES, "{answers:?}");
    assert_eq!(audited(&rig, AuditKind::SecondFactorFailed), MAX_RETRIES);
    assert_eq!(right_status, 429, "{right_body}");
    assert!(
        right_cookie.is_none(),
        "the challenge was passed during the ban"
    );
}

#[tokio::test]
async fn simultaneous_code_guesses_never_exceed_the_challenge_limit() {
    // The account and the network could take more failures than one challenge survives: the
    // challenge's own limit still holds when every code arrives at once.
    let rig = Rig::start("[regulation]\nmax_retries = 100\n").await;
    let totp = rig.user_with_totp("alice", None).await;
    let pending = rig.login_pending("alice").await;
    let wrong = wrong_code(&rig.totp_now(&totp.secret));

    let answers = join_all((0..BURST).map(|_| rig.verify(&pending, "totp", &wrong))).await;

    let limit = MAX_CHALLENGE_FAILURES;
    let judged = answers
        .iter()
        .filter(|(_, _, body)| body["error"] == "invalid_code")
        .count();
    // Every wrong code but the last one judged is refused as such; the last ends the session.
    assert_eq!(judged, limit - 1, "{answers:?}");
    assert_eq!(audited(&rig, AuditKind::SecondFactorFailed), limit);
    assert!(
        answers
            .iter()
            .all(|(status, cookie, _)| *status == 401 && cookie.is_none())
    );
    let (status, _) = rig.session(&pending).await;
    assert_eq!(status, 401, "the challenge outlived its limit");
}

#[tokio::test]
async fn settings_password_guesses_are_banned_like_logins() {
    let rig = Rig::start(REGULATION).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;
    for i in 0..MAX_RETRIES {
        let (status, _, body) = rig
            .post_json(
                "/settings/password",
                Some(&cookie),
                json!({ "current_password": format!("Wrong-Guess-{i}"), "new_password": "x" }),
            )
            .await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    // The right current password now: refused before it is checked (a weak new password
    // would otherwise tell it was right with a 400).
    let hashes_before = rig.gw.app().hasher.stats().started;
    let (status, _, body) = rig
        .post_json(
            "/settings/password",
            Some(&cookie),
            json!({ "current_password": PASSWORD, "new_password": "x" }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_requests", "{body}");
    assert_eq!(rig.gw.app().hasher.stats().started, hashes_before);
    // The same ban covers the other places that ask for the current password.
    for path in ["/settings/totp/begin", "/settings/2fa/disable"] {
        let (status, _, body) = rig
            .post_json(path, Some(&cookie), json!({ "password": PASSWORD }))
            .await;
        assert_eq!(status, 429, "{path}: {body}");
    }
}

#[tokio::test]
async fn simultaneous_settings_password_guesses_stop_at_the_ban() {
    let rig = Rig::start(REGULATION).await;
    rig.user("alice", None, &[]).await;
    let cookie = rig.login_one_factor("alice").await;

    let statuses = join_all((0..BURST).map(|i| {
        let (rig, cookie) = (&rig, &cookie);
        async move {
            let body =
                json!({ "current_password": format!("Wrong-Guess-{i}"), "new_password": "x" });
            rig.post("/settings/password", Some(cookie), body)
                .await
                .status()
                .as_u16()
        }
    }))
    .await;

    assert_eq!(count(&statuses, 401), MAX_RETRIES, "{statuses:?}");
    assert_eq!(count(&statuses, 429), BURST - MAX_RETRIES, "{statuses:?}");
}
