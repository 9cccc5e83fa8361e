//! The demo protects its console's settings page with step-up: the rule is in the demo's
//! configuration, and right after a login with the emailed code `/settings` is reachable.
//! (The demo runs on the system clock, so the window's end is tested elsewhere on a fixed one.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::auth::{BROWSER_ACCEPT, json, send, set_session_cookie, text};
use common::demo::{DemoProcess, emailed_code, post_demo_login, post_email_code};
use common::http_client;
use stepgate::policy::Policy;

#[test]
fn demo_config_has_a_step_up_rule_for_the_settings_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let console: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
    let config = stepgate::demo::demo_config(listen, console, dir.path()).expect("valid config");
    let policy = &config.access.policy;
    let rule = policy
        .rules
        .iter()
        .position(|r| r.paths.iter().any(|p| p.is_match("/settings")))
        .expect("a rule for /settings");
    let settings = &policy.rules[rule];
    assert_eq!(settings.step_up, Some(Duration::from_secs(5 * 60)));
    assert!(settings.policy == Policy::OneFactor || settings.policy == Policy::TwoFactor);
    assert!(settings.step_up_password_fallback);
    let step_up = policy
        .step_up_for(Some(rule))
        .expect("step-up for the rule");
    assert_eq!(step_up.window, Duration::from_secs(300));
    // It covers the page and below, not look-alikes.
    for path in ["/settings", "/settings/", "/settings/x"] {
        assert!(settings.paths.iter().any(|p| p.is_match(path)), "{path}");
    }
    assert!(!settings.paths.iter().any(|p| p.is_match("/settingsx")));
    // The rest of the demo has no step-up.
    assert_eq!(policy.default_step_up, None);
    assert_eq!(policy.step_up_windows(), vec![Duration::from_secs(300)]);
}

#[tokio::test]
async fn demo_settings_page_is_reachable_right_after_login_with_the_emailed_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("demo-data");
    let demo = DemoProcess::start(&data_dir).await;
    let base = demo.url.trim_end_matches('/').to_owned();

    let resp = post_demo_login(&base).await;
    assert_eq!(resp.status(), 200);
    let pending = set_session_cookie(resp.headers()).expect("session cookie");
    assert_eq!(json(resp).await["status"], "second_factor_required");
    let code = emailed_code(&data_dir.join("outbox"));
    let resp = post_email_code(&base, &pending, &code).await;
    assert_eq!(resp.status(), 200);
    let cookie = set_session_cookie(resp.headers()).expect("rotated cookie");

    // The second factor was just verified: the settings page opens, as a page and as a form.
    let resp = send(
        http_client()
            .get(format!("{base}/settings"))
            .header("accept", BROWSER_ACCEPT)
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let page = text(resp).await;
    assert!(page.contains("Sensitive settings"), "{page}");
    let resp = send(
        http_client()
            .post(format!("{base}/settings"))
            .header("accept", BROWSER_ACCEPT)
            .header("cookie", &cookie)
            .form(&[("value", "blue")]),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(text(resp).await.contains("Saved: <code>blue</code>"));

    // The session API reports the demo's window as satisfied.
    let resp = send(
        http_client()
            .get(format!("{base}/.stepgate/api/session"))
            .header("accept", "application/json")
            .header("cookie", &cookie),
    )
    .await;
    let info = json(resp).await;
    let entries = info["step_up"].as_array().expect("step_up entries");
    assert_eq!(entries.len(), 1, "{info}");
    assert_eq!(entries[0]["window_seconds"], 300, "{info}");
    assert!(entries[0]["satisfied_until"].is_string(), "{info}");

    demo.stop().await;
}
