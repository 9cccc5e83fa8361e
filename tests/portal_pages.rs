//! The portal's pages as a browser fetches them: language choice, branding, cached assets.

mod common;

use common::{EchoUpstream, Gateway, http_client, toml_string};

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

async fn gateway(extra: &str) -> (Gateway, EchoUpstream) {
    let echo = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&echo.url())
        .extra_toml(extra)
        .start()
        .await;
    (gw, echo)
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn page(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Page {
    let mut req = http_client().get(gw.url_for(path)).header("accept", HTML);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("response");
    Page {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

/// The first quoted attribute value of `text` starting with `prefix` and ending with `suffix`.
fn link<'a>(text: &'a str, prefix: &str, suffix: &str) -> &'a str {
    text.split('"')
        .find(|s| s.starts_with(prefix) && s.ends_with(suffix))
        .unwrap_or_else(|| panic!("no link {prefix}*{suffix} in {text}"))
}

#[tokio::test]
async fn login_page_follows_accept_language() {
    let (gw, _echo) = gateway("").await;
    let fr = page(
        &gw,
        "/.stepgate/login",
        &[("accept-language", "fr-CA,fr;q=0.9,en;q=0.5")],
    )
    .await
    .text;
    assert!(fr.contains("<html lang=\"fr\""), "{fr}");
    assert!(fr.contains("Mot de passe"), "{fr}");
    let en = page(
        &gw,
        "/.stepgate/login",
        &[("accept-language", "de, en;q=0.5")],
    )
    .await
    .text;
    assert!(en.contains("<html lang=\"en\""), "{en}");
    assert!(en.contains("autocomplete=\"current-password\""), "{en}");
}

#[tokio::test]
async fn lang_parameter_overrides_and_is_remembered() {
    let (gw, _echo) = gateway("").await;
    let resp = page(
        &gw,
        "/.stepgate/login?lang=fr&rd=%2Fapp",
        &[("accept-language", "en")],
    )
    .await;
    let text = &resp.text;
    assert!(text.contains("<html lang=\"fr\""), "{text}");
    // The switcher keeps the return target.
    assert!(text.contains("href=\"?rd=%2Fapp&#38;lang=en\""), "{text}");
    let cookie = resp.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cookie.starts_with("stepgate_lang=fr"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax") && cookie.contains("Max-Age=31536000"));

    // The cookie wins over Accept-Language, also on error pages.
    let remembered = [("accept-language", "en"), ("cookie", "stepgate_lang=fr")];
    let text = page(&gw, "/.stepgate/login", &remembered).await.text;
    assert!(text.contains("<html lang=\"fr\""), "{text}");
    let resp = page(&gw, "/.stepgate/nowhere", &remembered).await;
    assert_eq!(resp.status, 404);
    assert!(resp.text.contains("Page introuvable"), "{}", resp.text);
}

/// A form's redirect is checked against `form-action`: over plain HTTP a login may lead to an
/// `http://` application on another allowed host, over HTTPS only to `https://` ones.
#[tokio::test]
async fn forms_may_lead_to_http_applications_only_over_plain_http() {
    let (gw, _echo) = gateway("").await;
    let resp = page(&gw, "/.stepgate/login", &[]).await;
    let csp = resp.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("form-action 'self' https: http:;"), "{csp}");

    let ca = common::TestCa::new();
    let echo = EchoUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(&echo.url())
        .tls(&ca)
        .start()
        .await;
    let resp = ca
        .reqwest_client()
        .get(gw.https_url_for("/.stepgate/login"))
        .header("accept", HTML)
        .send()
        .await
        .expect("https login page");
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("form-action 'self' https:;"), "{csp}");
    assert!(!csp.contains("http:"), "{csp}");
}

#[tokio::test]
async fn pages_carry_security_headers_and_hashed_assets() {
    let (gw, _echo) = gateway("").await;
    let resp = page(&gw, "/.stepgate/login", &[]).await;
    let (h, text) = (&resp.headers, &resp.text);
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("script-src 'self'")
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(!text.contains("<script>"), "no inline script: {text}");
    assert!(!text.contains("style="), "no inline style: {text}");
    for (ext, kind) in [(".css", "text/css"), (".js", "text/javascript")] {
        let url = link(text, "/.stepgate/static/stepgate.", ext);
        let resp = http_client()
            .get(gw.url_for(url))
            .send()
            .await
            .expect("asset");
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(
            resp.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(kind)
        );
    }
}

#[tokio::test]
async fn branding_comes_from_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logo = dir.path().join("logo.svg");
    std::fs::write(
        &logo,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"/>",
    )
    .expect("logo");
    let extra = format!(
        "[portal]\ntitle = \"Acme Console\"\naccent = \"#0a7\"\nlogo = {}\n",
        toml_string(&logo.display().to_string())
    );
    let (gw, _echo) = gateway(&extra).await;
    let text = page(&gw, "/.stepgate/login", &[]).await.text;
    assert!(text.contains("Acme Console"), "{text}");
    let theme = link(&text, "/.stepgate/static/theme.", ".css");
    let css = http_client()
        .get(gw.url_for(theme))
        .send()
        .await
        .expect("theme")
        .text()
        .await
        .expect("css");
    assert!(css.contains("--accent: #00aa77;"), "{css}");
    let logo_url = link(&text, "/.stepgate/static/logo.", "");
    let resp = http_client()
        .get(gw.url_for(logo_url))
        .send()
        .await
        .expect("logo");
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("sandbox")
    );
}

#[tokio::test]
async fn a_signed_out_browser_comes_back_to_settings_after_signing_in() {
    let (gw, _echo) = gateway("").await;
    let settings = page(&gw, "/.stepgate/settings?x=1", &[]).await;
    assert_eq!(settings.status, 303);
    assert_eq!(
        settings.headers["location"],
        "/.stepgate/login?rd=%2F.stepgate%2Fsettings%3Fx%3D1"
    );
    // The login page itself has nothing to come back to.
    let login = page(&gw, "/.stepgate/login", &[]).await;
    assert_eq!(login.status, 200);
    assert!(login.text.contains("rel=\"icon\""), "{}", login.text);
    let icon = link(&login.text, "/.stepgate/static/favicon.", ".svg");
    let resp = http_client()
        .get(gw.url_for(icon))
        .send()
        .await
        .expect("icon");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
}
