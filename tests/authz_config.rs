//! Configuration of forward-auth: `portal.url`, cookie domains with their portals,
//! `allow_basic`, and the shipped Traefik examples (Traefik cannot run here: their syntax and
//! the contract they set up are checked instead).

use figment::Figment;
use figment::providers::{Format, Toml};

const BASE: &str = r#"
[storage]
path = "/tmp/stepgate-authz-config-test"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#;

fn problems(extra: &str) -> Vec<String> {
    let figment = Figment::from(Toml::string(BASE)).admerge(Toml::string(extra));
    match stepgate::config::from_figment(&figment) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.problems().iter().map(|p| p.to_string()).collect(),
    }
}

fn config(extra: &str) -> stepgate::config::Config {
    let figment = Figment::from(Toml::string(BASE)).admerge(Toml::string(extra));
    stepgate::config::from_figment(&figment).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn single_cookie_domain_takes_portal_url() {
    let c = config(
        "[portal]\nurl = \"https://Auth.Example.com/\"\n[session]\ncookie_domain = \"example.com\"\n",
    );
    assert_eq!(c.portal.url.as_deref(), Some("https://auth.example.com"));
    let d = c.session.domain_for("app1.example.com").expect("covered");
    assert_eq!(d.portal_url.as_deref(), Some("https://auth.example.com"));
    assert!(c.session.domain_for("example.com.evil.test").is_none());
}

#[test]
fn several_cookie_domains_each_with_a_portal() {
    let c = config(
        r#"
[[session.domains]]
domain = "example.com"
portal_url = "https://auth.example.com"
[[session.domains]]
domain = "example.org"
portal_url = "https://login.example.org:8443"
"#,
    );
    let org = c.session.domain_for("APP.example.org").expect("covered");
    assert_eq!(
        org.portal_url.as_deref(),
        Some("https://login.example.org:8443")
    );
    let com = c.session.domain_for("example.com").expect("covered");
    assert_eq!(com.portal_url.as_deref(), Some("https://auth.example.com"));
}

#[test]
fn rejects_portal_outside_its_cookie_domain() {
    let p = problems(
        "[portal]\nurl = \"https://auth.evil.test\"\n[session]\ncookie_domain = \"example.com\"\n",
    );
    assert!(p.iter().any(|p| p.starts_with("portal.url:")), "{p:?}");
    let p = problems(
        "[[session.domains]]\ndomain = \"example.org\"\nportal_url = \"https://auth.example.com\"\n",
    );
    assert!(
        p.iter()
            .any(|p| p.starts_with("session.domains[0].portal_url:")),
        "{p:?}"
    );
}

#[test]
fn rejects_bad_portal_urls() {
    for url in [
        "auth.example.com",
        "ftp://auth.example.com",
        "https://user@auth.example.com",
        "https://auth.example.com/login",
        "https://auth.example.com/?x=1",
    ] {
        let p = problems(&format!("[portal]\nurl = {url:?}\n"));
        assert!(
            p.iter().any(|p| p.starts_with("portal.url:")),
            "{url}: {p:?}"
        );
    }
}

#[test]
fn rejects_cookie_domain_together_with_domains_list() {
    let p = problems(
        "[session]\ncookie_domain = \"example.com\"\n[[session.domains]]\ndomain = \"example.org\"\n",
    );
    assert!(p.iter().any(|p| p.starts_with("session.domains:")), "{p:?}");
    let p = problems("[[session.domains]]\nportal_url = \"https://a.example.org\"\n");
    assert!(
        p.iter()
            .any(|p| p.starts_with("session.domains[0].domain:")),
        "{p:?}"
    );
}

#[test]
fn rejects_allow_basic_on_two_factor_rule() {
    let p = problems(
        "[[access.rules]]\npath = \"^/api\"\npolicy = \"two_factor\"\nallow_basic = true\n",
    );
    assert_eq!(
        p.iter()
            .filter(|p| p.starts_with("access.rules[0].allow_basic:"))
            .count(),
        1,
        "{p:?}"
    );
    assert!(
        problems(
            "[[access.rules]]\npath = \"^/api\"\npolicy = \"one_factor\"\nallow_basic = true\n"
        )
        .is_empty()
    );
}

#[test]
fn shipped_stepgate_sides_of_the_examples_validate() {
    for file in [
        "config/nginx/stepgate.toml",
        "config/caddy/stepgate.toml",
        "config/traefik/stepgate.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let figment = Figment::from(Toml::file_exact(&path)).admerge(Toml::string(
            "[storage]\npath = \"/tmp/stepgate-authz-config-test\"\n",
        ));
        let c = stepgate::config::from_figment(&figment).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!c.server.trusted_proxies.is_empty(), "{file}");
        assert!(c.session.domain_for("app1.example.com").is_some(), "{file}");
    }
}

fn repo_text(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(path).expect("read example")
}

#[test]
fn traefik_file_provider_example_sets_up_forward_auth() {
    let dynamic: serde_json::Value =
        Figment::from(Toml::string(&repo_text("config/traefik/dynamic.toml")))
            .extract()
            .expect("dynamic.toml is valid TOML");
    let fa = &dynamic["http"]["middlewares"]["stepgate"]["forwardAuth"];
    assert!(
        fa["address"]
            .as_str()
            .unwrap()
            .ends_with("/.stepgate/authz/forward-auth")
    );
    assert_eq!(fa["trustForwardHeader"], false);
    let copied: Vec<&str> = fa["authResponseHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        copied,
        [
            "Remote-User",
            "Remote-Groups",
            "Remote-Name",
            "Remote-Email",
            "Remote-Auth-Time"
        ]
    );
    let app = &dynamic["http"]["routers"]["app"];
    assert_eq!(app["middlewares"][0], "stepgate");
    let _: serde_json::Value =
        Figment::from(Toml::string(&repo_text("config/traefik/traefik.toml")))
            .extract()
            .expect("traefik.toml is valid TOML");
}

#[test]
fn traefik_docker_labels_example_sets_up_forward_auth() {
    let compose = repo_text("config/traefik/docker-compose.yml");
    assert!(
        !compose.contains('\t'),
        "YAML must not be indented with tabs"
    );
    for label in [
        "traefik.http.middlewares.stepgate.forwardauth.address=http://stepgate:9091/.stepgate/authz/forward-auth",
        "traefik.http.middlewares.stepgate.forwardauth.trustForwardHeader=false",
        "traefik.http.middlewares.stepgate.forwardauth.authResponseHeaders=Remote-User,Remote-Groups,Remote-Name,Remote-Email,Remote-Auth-Time",
        "traefik.http.routers.app.middlewares=stepgate@docker",
    ] {
        assert!(
            compose.lines().any(|l| l.trim() == format!("- {label}")),
            "missing label {label}"
        );
    }
}
