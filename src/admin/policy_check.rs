//! `stepgate check-policy`: which access rule a request would meet, and what it decides.
//!
//! The URL is parsed as the gateway parses a request target (`http::Uri`, nothing normalised),
//! then its path goes through [`canonicalize`] exactly as a live request's does, so an ambiguous
//! path gets the same 400 the gateway would answer.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{Method, Uri};

use super::client::printable;
use super::protocol::UserView;
use crate::config::Config;
use crate::policy::path::decoded;
use crate::policy::{Policy, RequestFacts, Rule, UserFacts, canonicalize};

/// One request to evaluate.
#[derive(Debug, Clone)]
pub struct PolicyQuery<'a> {
    pub method: &'a str,
    /// Absolute: `https://app.example.com/admin?x=1`.
    pub url: &'a str,
    pub client_ip: IpAddr,
    /// The account the request is made as; `None`: anonymous.
    pub user: Option<&'a UserView>,
}

/// The outcome, in a form tests can inspect; [`PolicyReport::render`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReport {
    /// The path is ambiguous: the gateway answers 400 and evaluates nothing.
    Rejected { reason: String },
    Decided {
        summary: String,
        /// Index in `access.rules` of the deciding rule; `None`: the default policy.
        rule: Option<usize>,
        /// The rule's criteria, readable.
        criteria: Option<String>,
        decision: Decision,
        notes: Vec<String>,
    },
}

/// What happens to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Policy(Policy),
    /// Anonymous request, and the deciding rule names subjects: the gateway asks for a login,
    /// then decides with the user; `at_least` is what the login must reach.
    LoginRequired {
        at_least: Policy,
    },
}

/// Evaluates `query` against `config`'s access rules. An `Err` is a usage problem (bad method
/// or URL), not a policy outcome.
pub fn check(config: &Config, query: &PolicyQuery<'_>) -> Result<PolicyReport, String> {
    let method = parse_method(query.method)?;
    let uri: Uri = query
        .url
        .parse()
        .map_err(|e| format!("invalid URL {:?}: {e}", query.url))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "invalid URL {:?}: give an absolute http:// or https:// URL",
                query.url
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("invalid URL {:?}: no host", query.url))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "invalid URL {:?}: user information before the host is not part of a request",
            query.url
        ));
    }
    let host = authority.host();
    let raw_path = match uri.path() {
        "" => "/",
        p => p,
    };
    let path = match canonicalize(raw_path) {
        Ok(p) => p,
        Err(e) => {
            return Ok(PolicyReport::Rejected {
                reason: e.to_string(),
            });
        }
    };

    let facts = RequestFacts {
        host,
        path: &path,
        method: &method,
        method_overrides: &[],
        client_ip: query.client_ip,
    };
    let user_facts = query.user.map(|u| UserFacts {
        username: &u.username,
        groups: &u.groups,
    });
    let policy = &config.access.policy;
    let found = policy.evaluate(&facts, user_facts.as_ref());

    let mut summary = format!("{method} {host}{path} from {}", query.client_ip);
    match query.user {
        Some(u) if u.groups.is_empty() => {
            let _ = write!(summary, " as {} (no groups)", printable(&u.username));
        }
        Some(u) => {
            let _ = write!(
                summary,
                " as {} (groups: {})",
                printable(&u.username),
                printable(&u.groups.join(", "))
            );
        }
        None => summary.push_str(" anonymously"),
    }

    let mut notes = Vec::new();
    if path != raw_path {
        notes.push(format!(
            "the path is canonicalised to {path} before rules are matched"
        ));
    }
    if let Some(read) = decoded(&path) {
        notes.push(format!(
            "rules also judged the path as the application reads it, escapes decoded ({}); the stricter answer applies",
            printable(&read)
        ));
    }
    let prefix = &config.portal.prefix;
    if path == *prefix || path.starts_with(&format!("{prefix}/")) {
        notes.push(format!(
            "{prefix} is the portal prefix: the gateway serves these pages itself and forwards nothing"
        ));
    }
    if let Some(u) = query.user
        && u.disabled
    {
        notes.push(format!(
            "{} is disabled: the gateway refuses its logins whatever the rules say",
            printable(&u.username)
        ));
    }

    let decision = if found.needs_identity {
        Decision::LoginRequired {
            at_least: found.policy,
        }
    } else {
        Decision::Policy(found.policy)
    };
    Ok(PolicyReport::Decided {
        summary,
        rule: found.rule,
        criteria: found.rule.and_then(|i| policy.rules.get(i)).map(describe),
        decision,
        notes,
    })
}

/// Methods are matched exactly as sent, upper-case in practice; accept `get` for `GET`.
fn parse_method(s: &str) -> Result<Method, String> {
    let upper = s.trim().to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid method {s:?}"))
}

/// `host=app.example.com path=^/admin subjects=group:admins policy=two_factor step_up=5m`
pub fn describe(rule: &Rule) -> String {
    fn list<T: ToString>(items: &[T]) -> String {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
    let mut parts = Vec::new();
    if !rule.hosts.is_empty() {
        parts.push(format!("host={}", list(&rule.hosts)));
    }
    if !rule.paths.is_empty() {
        let paths: Vec<&str> = rule.paths.iter().map(|r| r.as_str()).collect();
        parts.push(format!("path={}", paths.join(",")));
    }
    if !rule.methods.is_empty() {
        parts.push(format!("methods={}", list(&rule.methods)));
    }
    if !rule.networks.is_empty() {
        parts.push(format!("networks={}", list(&rule.networks)));
    }
    if !rule.subjects.is_empty() {
        parts.push(format!("subjects={}", list(&rule.subjects)));
    }
    if parts.is_empty() {
        parts.push("(any request)".to_string());
    }
    parts.push(format!("policy={}", rule.policy));
    if let Some(step_up) = rule.step_up {
        parts.push(format!("step_up={}", humantime::format_duration(step_up)));
    }
    printable(&parts.join(" "))
}

impl PolicyReport {
    /// The text `check-policy` prints.
    pub fn render(&self) -> String {
        match self {
            PolicyReport::Rejected { reason } => {
                format!("400: {reason} (the gateway refuses the request before any rule)\n")
            }
            PolicyReport::Decided {
                summary,
                rule,
                criteria,
                decision,
                notes,
            } => {
                let mut out = format!("request:  {summary}\n");
                match (rule, criteria) {
                    (Some(i), Some(c)) => {
                        let _ = writeln!(out, "rule:     access.rules[{i}]: {c}");
                    }
                    _ => out.push_str("rule:     none matched; access.default_policy applies\n"),
                }
                match decision {
                    Decision::Policy(p) => {
                        let _ = writeln!(out, "decision: {p}");
                    }
                    Decision::LoginRequired { at_least } => {
                        let _ = writeln!(
                            out,
                            "decision: login required to decide (the rule names subjects; at least {at_least}; try --user)"
                        );
                    }
                }
                for note in notes {
                    let _ = writeln!(out, "note:     {note}");
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;
    use crate::clock::Timestamp;

    const CONFIG: &str = r#"
        [[upstreams]]
        url = "http://127.0.0.1:3000"

        [access]
        default_policy = "deny"

        [[access.rules]]
        path = "^/health$"
        policy = "bypass"

        [[access.rules]]
        host = "app.example.com"
        path = "^/admin(/|$)"
        subjects = "group:admins"
        policy = "two_factor"
        step_up = "5m"

        [[access.rules]]
        path = "^/admin(/|$)"
        policy = "deny"

        [[access.rules]]
        host = "*.example.com"
        methods = ["POST", "DELETE"]
        policy = "two_factor"

        [[access.rules]]
        host = "*.example.com"
        networks = "10.0.0.0/8"
        policy = "one_factor"
    "#;

    fn config() -> Config {
        crate::config::from_figment(&Figment::from(Toml::string(CONFIG))).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> UserView {
        UserView {
            username: name.into(),
            display_name: name.into(),
            email: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            disabled: false,
            created_at: Timestamp(0),
            two_factor_state: "not_enabled".into(),
            two_factor_methods: vec![],
        }
    }

    fn run(method: &str, url: &str, ip: &str, who: Option<&UserView>) -> PolicyReport {
        check(
            &config(),
            &PolicyQuery {
                method,
                url,
                client_ip: ip.parse().unwrap(),
                user: who,
            },
        )
        .unwrap()
    }

    fn outcome(r: &PolicyReport) -> (Option<usize>, Decision) {
        match r {
            PolicyReport::Decided { rule, decision, .. } => (*rule, *decision),
            PolicyReport::Rejected { reason } => panic!("rejected: {reason}"),
        }
    }

    /// The shipped example keeps the console's admin area to admins with a second factor, and
    /// its user administration behind a step-up, as its comments say.
    #[test]
    // The `Jail` closure's error type is figment's own; its size is not ours to change.
    #[allow(clippy::result_large_err)]
    fn the_example_configuration_keeps_the_admin_area_to_admins() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stepgate.example.toml");
        // Inside a `Jail`, whose lock keeps out the other tests' `STEPGATE_*` variables (the
        // file is read with environment overrides).
        let mut loaded = None;
        figment::Jail::expect_with(|_jail| {
            loaded = Some(crate::config::load(&example));
            Ok(())
        });
        let config = loaded.expect("loaded").unwrap();
        let admin = user("root", &["admins"]);
        let bob = user("bob", &["dev"]);
        let report = |url: &str, who: &UserView| {
            check(
                &config,
                &PolicyQuery {
                    method: "GET",
                    url,
                    client_ip: "192.0.2.7".parse().unwrap(),
                    user: Some(who),
                },
            )
            .unwrap()
        };
        for path in ["/admin", "/admin/settings", "/admin/users/1"] {
            let url = format!("https://console.example.com{path}");
            let r = report(&url, &bob);
            assert_eq!(
                outcome(&r).1,
                Decision::Policy(Policy::Deny),
                "{path}: {r:?}"
            );
            let r = report(&url, &admin);
            assert_eq!(
                outcome(&r).1,
                Decision::Policy(Policy::TwoFactor),
                "{path}: {r:?}"
            );
            let step_up = config.access.policy.step_up_for(outcome(&r).0);
            assert_eq!(
                step_up.map(|s| s.window),
                path.starts_with("/admin/users")
                    .then_some(std::time::Duration::from_secs(300)),
                "{path}: {}",
                r.render()
            );
        }
    }

    /// Method, URL, client IP, user, expected rule, expected decision.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a UserView>,
        Option<usize>,
        Decision,
    );

    #[test]
    fn reports_rule_and_decision() {
        let admin = user("alice", &["admins"]);
        let bob = user("bob", &[]);
        let cases: Vec<Case<'_>> = vec![
            (
                "GET",
                "https://app.example.com/health",
                "203.0.113.1",
                None,
                Some(0),
                Decision::Policy(Policy::Bypass),
            ),
            (
                "GET",
                "https://app.example.com/admin?x=1",
                "203.0.113.1",
                None,
                Some(1),
                Decision::LoginRequired {
                    at_least: Policy::TwoFactor,
                },
            ),
            (
                "GET",
                "https://app.example.com/admin/users",
                "203.0.113.1",
                Some(&admin),
                Some(1),
                Decision::Policy(Policy::TwoFactor),
            ),
            (
                "GET",
                "https://app.example.com/admin",
                "203.0.113.1",
                Some(&bob),
                Some(2),
                Decision::Policy(Policy::Deny),
            ),
            (
                "post",
                "https://wiki.example.com/page",
                "10.1.2.3",
                Some(&bob),
                Some(3),
                Decision::Policy(Policy::TwoFactor),
            ),
            (
                "GET",
                "https://wiki.example.com:8443/page",
                "10.1.2.3",
                None,
                Some(4),
                Decision::Policy(Policy::OneFactor),
            ),
            (
                "GET",
                "https://wiki.example.com/page",
                "203.0.113.1",
                None,
                None,
                Decision::Policy(Policy::Deny),
            ),
        ];
        for (method, url, ip, who, rule, decision) in cases {
            assert_eq!(
                outcome(&run(method, url, ip, who)),
                (rule, decision),
                "{method} {url} {ip}"
            );
        }
    }

    #[test]
    fn rejects_encoded_slash_bypass() {
        let r = run("GET", "https://app.example.com/%2Fadmin", "127.0.0.1", None);
        assert_eq!(
            r,
            PolicyReport::Rejected {
                reason: "encoded slash in path".into()
            }
        );
        assert!(r.render().starts_with("400: encoded slash in path"));
    }

    #[test]
    fn rejects_dot_segment_bypass_by_canonicalising_first() {
        // `/public/../admin` must be judged as `/admin`, not as something under `/public`.
        let r = run(
            "GET",
            "https://app.example.com/x/../admin",
            "127.0.0.1",
            None,
        );
        assert_eq!(outcome(&r).0, Some(1));
        assert!(
            r.render().contains("canonicalised to /admin"),
            "{}",
            r.render()
        );
    }

    #[test]
    fn render_names_rule_criteria_and_decision() {
        let text = run(
            "GET",
            "https://app.example.com/admin",
            "127.0.0.1",
            Some(&user("alice", &["admins"])),
        )
        .render();
        assert!(text.contains("rule:     access.rules[1]: host=app.example.com path=^/admin(/|$) subjects=group:admins policy=two_factor step_up=5m"), "{text}");
        assert!(text.contains("decision: two_factor\n"), "{text}");
        let text = run("GET", "https://other.net/", "127.0.0.1", None).render();
        assert!(text.contains("none matched"), "{text}");
        assert!(text.contains("decision: deny\n"), "{text}");
    }

    /// A path that keeps an escape after canonicalisation (`%3A`; `%2D` is decoded there) is
    /// judged as written and decoded, and the report says so; a path without one says nothing.
    #[test]
    fn render_says_when_rules_also_judged_the_decoded_path() {
        let report = run(
            "GET",
            "https://app.example.com/admin%2Dx%3Aedit",
            "127.0.0.1",
            None,
        );
        let text = report.render();
        assert!(
            text.contains("note:     rules also judged the path as the application reads it, escapes decoded (/admin-x:edit)"),
            "{text}"
        );
        let plain = run("GET", "https://app.example.com/admin-x", "127.0.0.1", None).render();
        assert!(!plain.contains("escapes decoded"), "{plain}");
    }

    #[test]
    fn bad_urls_and_methods_are_usage_errors() {
        let cfg = config();
        for (method, url) in [
            ("GET", "/relative/only"),
            ("GET", "ftp://app.example.com/"),
            ("GET", "https://user@app.example.com/"),
            ("G E T", "https://app.example.com/"),
        ] {
            let q = PolicyQuery {
                method,
                url,
                client_ip: "127.0.0.1".parse().unwrap(),
                user: None,
            };
            assert!(check(&cfg, &q).is_err(), "{method} {url}");
        }
    }
}
