//! The `[access]` configuration section: raw serde types and their validation into an
//! [`AccessPolicy`].
//!
//! ```toml
//! [access]
//! default_policy = "one_factor"                # bypass | one_factor | two_factor | deny
//! allowed_redirect_domains = ["example.com"]   # for `rd` validation after login
//!
//! [[access.rules]]
//! host = "app.example.com"                     # string or list; `*.example.com` allowed
//! path = "^/admin"                             # regex or list of regexes (canonical path)
//! methods = ["GET", "POST"]
//! networks = ["10.0.0.0/8", "::1"]             # CIDR or single IP
//! subjects = ["user:alice", "group:admins"]
//! policy = "two_factor"                        # required
//! step_up = "5m"
//! allow_basic = false                          # forward-auth: accept Authorization: Basic
//!                                              # (one_factor rules only)
//! ```
//!
//! Every criterion accepts a single string or a list. An explicitly empty list is refused: it
//! would silently mean "anyone", which is rarely what `subjects = []` was meant to say.

use std::net::IpAddr;
use std::time::Duration;

use super::rules::PathPattern;
use http::Method;
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use super::host::HostPattern;
use super::rules::{AccessPolicy, Policy, Rule, Subject};
use crate::config::{ConfigErrors, parse_duration};

/// The `[access]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAccess {
    pub default_policy: Option<String>,
    /// Step-up window for every authenticated request whose rule sets none.
    pub default_step_up: Option<String>,
    pub allowed_redirect_domains: Vec<String>,
    pub rules: Vec<RawRule>,
}

/// One `[[access.rules]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRule {
    pub host: Option<OneOrMany>,
    pub path: Option<OneOrMany>,
    pub methods: Option<OneOrMany>,
    pub networks: Option<OneOrMany>,
    pub subjects: Option<OneOrMany>,
    /// Required; kept optional here so that a missing policy is reported with its key path
    /// together with every other problem.
    pub policy: Option<String>,
    pub step_up: Option<String>,
    /// `"password"`: a user without a second factor satisfies step-up with the password.
    pub step_up_fallback: Option<String>,
    /// Accept `Authorization: Basic` on the forward-auth endpoints (one_factor rules only).
    pub allow_basic: Option<bool>,
}

/// A single string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The validated `[access]` section.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    pub policy: AccessPolicy,
    /// Lower-case ASCII (punycode) domain names, for [`super::redirect::safe_redirect`].
    pub allowed_redirect_domains: Vec<String>,
}

const KEY: &str = "access";

/// Validates `[access]`, recording every problem in `errors` with its key path
/// (`access.rules[2].path[1]: invalid regex: ...`).
///
/// The returned value is only meaningful when no problem was recorded: invalid entries are
/// left out of it, which may make a rule broader than written.
pub fn validate(raw: &RawAccess, errors: &mut ConfigErrors) -> AccessConfig {
    let default_policy = match &raw.default_policy {
        None => Policy::OneFactor,
        Some(s) => {
            parse_policy(s, &format!("{KEY}.default_policy"), errors).unwrap_or(Policy::OneFactor)
        }
    };

    let mut allowed_redirect_domains = Vec::with_capacity(raw.allowed_redirect_domains.len());
    for (i, d) in raw.allowed_redirect_domains.iter().enumerate() {
        let key = format!("{KEY}.allowed_redirect_domains[{i}]");
        match redirect_domain(d) {
            Ok(d) => allowed_redirect_domains.push(d),
            Err(reason) => errors.push(key, reason),
        }
    }

    let problems_before = errors.problems().len();
    let rules: Vec<Rule> = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(r, &format!("{KEY}.rules[{i}]"), errors))
        .collect();
    // The first matching rule decides: one that matches every request leaves the rules after it
    // dead, which an operator never means. (Only asked of rules that are valid otherwise: a
    // condition refused above leaves its rule looking unconditional.)
    if errors.problems().len() == problems_before
        && let Some(i) = rules.iter().position(matches_everything)
        && i + 1 < rules.len()
    {
        errors.push(
            format!("{KEY}.rules[{}]", i + 1),
            format!(
                "can never apply: rules[{i}] has no host, path, methods, networks or subjects, so it \
                 decides every request first (move it last, or use default_policy)"
            ),
        );
    }

    AccessConfig {
        policy: AccessPolicy {
            default_policy,
            rules,
            default_step_up: raw
                .default_step_up
                .as_deref()
                .and_then(|s| step_up_window(s, &format!("{KEY}.default_step_up"), errors)),
        },
        allowed_redirect_domains,
    }
}

/// A rule without any condition: it matches every request.
fn matches_everything(rule: &Rule) -> bool {
    rule.hosts.is_empty()
        && rule.paths.is_empty()
        && rule.methods.is_empty()
        && rule.networks.is_empty()
        && rule.subjects.is_empty()
}

/// A step-up window: how recent the second factor must be. Zero could never be met (every
/// factor is at least a moment old), and would send users to the verification page for ever.
fn step_up_window(value: &str, key: &str, errors: &mut ConfigErrors) -> Option<Duration> {
    let window = parse_duration(value, key, errors)?;
    if window < Duration::from_secs(1) {
        errors.push(key, "must be at least one second");
        return None;
    }
    Some(window)
}

/// The first percent-escape (`%3A`) in a path pattern. A pattern written for an escape would
/// miss the same character sent raw (`:`); written with the character, it judges both.
fn percent_escape_in(pattern: &str) -> Option<&str> {
    let bytes = pattern.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        (bytes[i] == b'%' && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
            .then(|| &pattern[i..i + 3])
    })
}

fn validate_rule(raw: &RawRule, key: &str, errors: &mut ConfigErrors) -> Rule {
    let hosts = each(&raw.host, key, "host", errors, HostPattern::parse);
    let paths = each(&raw.path, key, "path", errors, |s| {
        if let Some(escape) = percent_escape_in(s) {
            return Err(format!(
                "{escape:?}: write the character itself, not its percent-escape (rules judge a \
                 request's path as written and with its escapes decoded)"
            ));
        }
        PathPattern::new(s).map_err(|e| format!("invalid regex: {}", one_line(&e.to_string())))
    });
    let methods = each(&raw.methods, key, "methods", errors, parse_method);
    let networks = each(&raw.networks, key, "networks", errors, parse_network);
    let subjects = each(&raw.subjects, key, "subjects", errors, parse_subject);

    let policy_key = format!("{key}.policy");
    let policy = match &raw.policy {
        Some(s) => parse_policy(s, &policy_key, errors),
        None => {
            errors.push(
                policy_key,
                format!("missing; expected one of {}", expected_policies()),
            );
            None
        }
    };

    let step_up_key = format!("{key}.step_up");
    let step_up = raw
        .step_up
        .as_deref()
        .and_then(|s| step_up_window(s, &step_up_key, errors));
    if step_up.is_some() && matches!(policy, Some(Policy::Bypass | Policy::Deny)) {
        errors.push(
            step_up_key,
            "step_up only applies to rules with policy one_factor or two_factor",
        );
    }

    let allow_basic = raw.allow_basic.unwrap_or(false);
    if allow_basic && policy.is_some_and(|p| p != Policy::OneFactor) {
        errors.push(
            format!("{key}.allow_basic"),
            "only rules with policy one_factor accept Basic credentials; a second factor cannot be sent in a header",
        );
    }

    Rule {
        hosts,
        paths,
        methods,
        networks,
        subjects,
        // Only reached with a recorded problem when `None`; deny is the safe stand-in.
        policy: policy.unwrap_or(Policy::Deny),
        step_up,
        step_up_password_fallback: match raw.step_up_fallback.as_deref() {
            None => false,
            Some("password") => true,
            Some(other) => {
                errors.push(
                    format!("{key}.step_up_fallback"),
                    format!("{other:?} is not a fallback (the only one is \"password\")"),
                );
                false
            }
        },
        allow_basic,
    }
}

/// Parses every entry of an optional string-or-list criterion. Problems are recorded under
/// `key.name` for a single string and `key.name[i]` for a list.
fn each<T>(
    value: &Option<OneOrMany>,
    key: &str,
    name: &str,
    errors: &mut ConfigErrors,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    match value {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => match parse(s) {
            Ok(v) => vec![v],
            Err(reason) => {
                errors.push(format!("{key}.{name}"), reason);
                Vec::new()
            }
        },
        Some(OneOrMany::Many(list)) if list.is_empty() => {
            errors.push(
                format!("{key}.{name}"),
                format!("empty list; leave \"{name}\" out to match any value"),
            );
            Vec::new()
        }
        Some(OneOrMany::Many(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                match parse(s) {
                    Ok(v) => out.push(v),
                    Err(reason) => errors.push(format!("{key}.{name}[{i}]"), reason),
                }
            }
            out
        }
    }
}

fn parse_policy(s: &str, key: &str, errors: &mut ConfigErrors) -> Option<Policy> {
    let policy = Policy::parse(s.trim());
    if policy.is_none() {
        errors.push(
            key,
            format!("unknown policy {s:?} (expected {})", expected_policies()),
        );
    }
    policy
}

fn expected_policies() -> String {
    Policy::ALL.map(Policy::as_str).join(", ")
}

/// Methods a rule may name: those of RFC 9110 and PATCH, plus the WebDAV ones. Names are
/// accepted in any case and stored upper-case, as methods are sent.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "MKCALENDAR",
];

fn parse_method(s: &str) -> Result<Method, String> {
    let upper = s.trim().to_ascii_uppercase();
    if !KNOWN_METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "unknown method {s:?} (expected one of {})",
            KNOWN_METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| format!("invalid method {s:?}: {e}"))
}

/// `10.0.0.0/8`, `fd00::/8` or a single address. IPv4-mapped IPv6 networks are stored as IPv4
/// ones, since clients are matched as IPv4 when mapped.
fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "invalid network {s:?}: expected a CIDR such as \"10.0.0.0/8\" or a single IP address"
                ));
            }
        },
    };
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map(IpNet::V4)
            .map_err(|e| format!("invalid network {s:?}: {e}"));
    }
    Ok(net)
}

fn parse_subject(s: &str) -> Result<Subject, String> {
    let s = s.trim();
    let (subject, name) = if let Some(name) = s.strip_prefix("user:") {
        (Subject::User(name.trim().to_lowercase()), name)
    } else if let Some(name) = s.strip_prefix("group:") {
        (Subject::Group(name.trim().to_string()), name)
    } else {
        return Err(format!(
            "invalid subject {s:?}: expected \"user:NAME\" or \"group:NAME\""
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("invalid subject {s:?}: the name is empty"));
    }
    // A name no account or group can have would never match: say so now.
    match &subject {
        Subject::User(_) => {
            if let Err(reason) = crate::auth::user::Username::parse(name) {
                return Err(format!("invalid subject {s:?}: {reason}"));
            }
        }
        Subject::Group(_) => {
            if let Some(reason) = crate::auth::user::group_name_problem(name) {
                return Err(format!("invalid subject {s:?}: {reason}"));
            }
        }
    }
    Ok(subject)
}

/// Normalises an allowed redirect domain to its lower-case ASCII (punycode) form.
fn redirect_domain(d: &str) -> Result<String, String> {
    let trimmed = d.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err("empty domain".into());
    }
    if trimmed.starts_with('.') || trimmed.starts_with("*.") {
        return Err(format!(
            "{d:?}: write the bare domain; \"example.com\" already allows its subdomains"
        ));
    }
    match url::Host::parse(trimmed) {
        Ok(url::Host::Domain(name)) if !name.contains(['/', ':', '@', '%']) => Ok(name),
        Ok(url::Host::Domain(_)) | Err(_) => Err(format!("{d:?} is not a valid domain name")),
        Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Err(format!(
            "{d:?} is an IP address; only domain names can be allowed redirect targets"
        )),
    }
}

/// Regex errors span several lines (a caret diagram); configuration problems are one line each.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::RequestFacts;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn raw(toml: &str) -> RawAccess {
        Figment::from(Toml::string(toml))
            .extract_inner::<RawAccess>("access")
            .unwrap()
    }

    fn check(toml: &str) -> (AccessConfig, ConfigErrors) {
        let mut errors = ConfigErrors::default();
        let cfg = validate(&raw(toml), &mut errors);
        (cfg, errors)
    }

    fn problems(toml: &str) -> Vec<String> {
        check(toml)
            .1
            .problems()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const FULL: &str = r#"
        [access]
        default_policy = "deny"
        allowed_redirect_domains = ["Example.com", "bücher.example"]

        [[access.rules]]
        path = "^/health$"
        policy = "bypass"

        [[access.rules]]
        host = ["app.example.com", "*.internal.example.com"]
        path = ["^/admin", "^/settings"]
        methods = ["GET", "post"]
        networks = ["10.0.0.0/8", "::1", "192.168.1.7"]
        subjects = ["user:Alice", "group:admins"]
        policy = "two_factor"
        step_up = "5m"

        [[access.rules]]
        host = "*.example.com"
        policy = "one_factor"
    "#;

    #[test]
    fn full_section_validates() {
        let (cfg, errors) = check(FULL);
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(cfg.policy.default_policy, Policy::Deny);
        assert_eq!(
            cfg.allowed_redirect_domains,
            vec![
                "example.com".to_string(),
                "xn--bcher-kva.example".to_string()
            ]
        );
        let rules = &cfg.policy.rules;
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].policy, Policy::Bypass);
        assert_eq!(rules[0].paths.len(), 1);
        let r = &rules[1];
        assert_eq!(r.hosts.len(), 2);
        assert_eq!(r.paths.len(), 2);
        assert_eq!(r.methods, vec![Method::GET, Method::POST]);
        assert_eq!(
            r.networks,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap(),
                "192.168.1.7/32".parse().unwrap()
            ]
        );
        assert_eq!(
            r.subjects,
            vec![
                Subject::User("alice".into()),
                Subject::Group("admins".into())
            ]
        );
        assert_eq!(r.policy, Policy::TwoFactor);
        assert_eq!(r.step_up, Some(Duration::from_secs(300)));
        assert_eq!(
            rules[2].hosts,
            vec![HostPattern::parse("*.example.com").unwrap()]
        );
        assert_eq!(rules[2].step_up, None);
    }

    #[test]
    fn validated_rules_drive_evaluation() {
        let (cfg, errors) = check(FULL);
        assert!(errors.is_empty(), "{errors}");
        let get = Method::GET;
        let facts = RequestFacts {
            host: "app.example.com",
            path: "/admin/x",
            method: &get,
            method_overrides: &[],
            client_ip: "10.2.3.4".parse().unwrap(),
        };
        let m = cfg.policy.evaluate(&facts, None);
        assert_eq!((m.rule, m.needs_identity), (Some(1), true));
        let facts = RequestFacts {
            path: "/health",
            ..facts
        };
        assert_eq!(cfg.policy.evaluate(&facts, None).policy, Policy::Bypass);
    }

    #[test]
    fn empty_section_defaults_to_one_factor() {
        let (cfg, errors) = check("[access]\n");
        assert!(errors.is_empty());
        assert_eq!(cfg.policy.default_policy, Policy::OneFactor);
        assert!(cfg.policy.rules.is_empty());
        assert!(cfg.allowed_redirect_domains.is_empty());
        assert_eq!(RawAccess::default().rules.len(), 0);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Figment::from(Toml::string("[access]\ndefault = \"deny\"\n"))
            .extract_inner::<RawAccess>("access")
            .unwrap_err();
        assert!(err.to_string().contains("default"), "{err}");
        let err = Figment::from(Toml::string(
            "[[access.rules]]\npolicy = \"deny\"\npaths = \"^/x\"\n",
        ))
        .extract_inner::<RawAccess>("access")
        .unwrap_err();
        assert!(err.to_string().contains("paths"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_key_path() {
        let found = problems(
            r#"
            [access]
            default_policy = "allow_all"
            allowed_redirect_domains = ["", "*.example.com", "10.0.0.1", "exa mple.com"]

            [[access.rules]]
            policy = "allow"

            [[access.rules]]
            host = ["ok.example.com", "a.*.example.com"]
            policy = "deny"

            [[access.rules]]
            path = ["^/ok", "^/admin(", "[z-a]"]
            methods = ["GET", "FETCH"]
            networks = ["10.0.0.0/33", "not-an-ip", "10.0.0.0/8"]
            subjects = ["alice", "user:", "group:ops"]
            policy = "two_factor"
            step_up = "soon"

            [[access.rules]]
            path = "("
            "#,
        );
        let keys: Vec<&str> = found
            .iter()
            .map(|p| p.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            vec![
                "access.default_policy",
                "access.allowed_redirect_domains[0]",
                "access.allowed_redirect_domains[1]",
                "access.allowed_redirect_domains[2]",
                "access.allowed_redirect_domains[3]",
                "access.rules[0].policy",
                "access.rules[1].host[1]",
                "access.rules[2].path[1]",
                "access.rules[2].path[2]",
                "access.rules[2].methods[1]",
                "access.rules[2].networks[0]",
                "access.rules[2].networks[1]",
                "access.rules[2].subjects[0]",
                "access.rules[2].subjects[1]",
                "access.rules[2].step_up",
                "access.rules[3].path",
                "access.rules[3].policy",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn unknown_policy_names_the_choices() {
        let found = problems("[[access.rules]]\npolicy = \"allow\"\n");
        assert_eq!(
            found,
            vec![
                "access.rules[0].policy: unknown policy \"allow\" (expected bypass, one_factor, two_factor, deny)"
            ]
        );
    }

    #[test]
    fn a_percent_escape_in_a_path_pattern_is_refused() {
        let found = problems(
            "[[access.rules]]\npath = [\"^/wiki/Special%3A\", \"^/100%\"]\npolicy = \"deny\"\n",
        );
        assert_eq!(
            found,
            vec![
                "access.rules[0].path[0]: \"%3A\": write the character itself, not its \
                 percent-escape (rules judge a request's path as written and with its escapes \
                 decoded)"
            ]
        );
    }

    #[test]
    fn missing_policy_is_reported() {
        let found = problems("[[access.rules]]\npath = \"^/x\"\n");
        assert_eq!(
            found,
            vec![
                "access.rules[0].policy: missing; expected one of bypass, one_factor, two_factor, deny"
            ]
        );
    }

    #[test]
    fn invalid_regex_is_one_line_with_reason() {
        let found = problems("[[access.rules]]\npath = \"^/admin(\"\npolicy = \"deny\"\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("access.rules[0].path: invalid regex: "),
            "{}",
            found[0]
        );
        assert!(!found[0].contains('\n'));
    }

    #[test]
    fn subject_without_prefix_is_refused() {
        let found =
            problems("[[access.rules]]\nsubjects = [\"admins\"]\npolicy = \"one_factor\"\n");
        assert_eq!(
            found,
            vec![
                "access.rules[0].subjects[0]: invalid subject \"admins\": expected \"user:NAME\" or \"group:NAME\""
            ]
        );
    }

    #[test]
    fn empty_criterion_list_is_refused() {
        let found = problems("[[access.rules]]\nsubjects = []\npolicy = \"bypass\"\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("access.rules[0].subjects: empty list"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn step_up_needs_an_authenticating_policy() {
        let found = problems("[[access.rules]]\npolicy = \"bypass\"\nstep_up = \"5m\"\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("access.rules[0].step_up: "),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_step_up_window_under_a_second_could_never_be_met() {
        for window in ["0s", "500ms"] {
            let found = problems(&format!(
                "[access]\ndefault_step_up = \"{window}\"\n[[access.rules]]\npolicy = \"two_factor\"\nstep_up = \"{window}\"\n"
            ));
            assert_eq!(found.len(), 2, "{window}: {found:?}");
            assert!(
                found
                    .iter()
                    .all(|p| p.ends_with("must be at least one second")),
                "{found:?}"
            );
        }
        assert!(
            problems("[[access.rules]]\npolicy = \"two_factor\"\nstep_up = \"1s\"\n").is_empty()
        );
    }

    #[test]
    fn a_rule_matching_everything_must_be_last() {
        let found = problems(
            "[[access.rules]]\npolicy = \"bypass\"\n[[access.rules]]\npath = \"^/admin\"\npolicy = \"deny\"\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("access.rules[1]: can never apply"),
            "{}",
            found[0]
        );
        // Last, it is a default of sorts: accepted.
        assert!(
            problems("[[access.rules]]\npath = \"^/admin\"\npolicy = \"deny\"\n[[access.rules]]\npolicy = \"bypass\"\n")
                .is_empty()
        );
    }

    #[test]
    fn subjects_no_account_or_group_can_have_are_refused() {
        for subject in [
            "user:bob smith",
            "user:Bob/admin",
            "group:red team",
            "group:a,b",
        ] {
            let found = problems(&format!(
                "[[access.rules]]\nsubjects = [\"{subject}\"]\npolicy = \"two_factor\"\n"
            ));
            assert_eq!(found.len(), 1, "{subject}: {found:?}");
            assert!(found[0].contains("invalid subject"), "{}", found[0]);
        }
        assert!(
            problems("[[access.rules]]\nsubjects = [\"user:Bob\", \"group:ops-team\"]\npolicy = \"two_factor\"\n")
                .is_empty()
        );
    }

    #[test]
    fn methods_are_case_insensitive_and_stored_upper_case() {
        let (cfg, errors) = check("[[access.rules]]\nmethods = \"delete\"\npolicy = \"deny\"\n");
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(cfg.policy.rules[0].methods, vec![Method::DELETE]);
        let found = problems("[[access.rules]]\nmethods = \"G ET\"\npolicy = \"deny\"\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("access.rules[0].methods: unknown method"));
    }

    #[test]
    fn ipv4_mapped_network_is_stored_as_ipv4() {
        let (cfg, errors) = check(
            "[[access.rules]]\nnetworks = [\"::ffff:10.0.0.0/104\", \"10.1.2.3/8\"]\npolicy = \"deny\"\n",
        );
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(
            cfg.policy.rules[0].networks,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_host_pattern_is_reported() {
        let found = problems("[[access.rules]]\nhost = \"*\"\npolicy = \"deny\"\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("access.rules[0].host: "),
            "{}",
            found[0]
        );
    }

    #[test]
    // The closure's error type is figment's own; its size is not ours to change.
    #[allow(clippy::result_large_err)]
    fn jail_reads_the_section_from_a_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "stepgate.toml",
                "[access]\ndefault_policy = \"two_factor\"\n[[access.rules]]\npath = \"^/pub\"\npolicy = \"bypass\"\n",
            )?;
            jail.set_env("STEPGATE_ACCESS__DEFAULT_POLICY", "deny");
            let raw: RawAccess = Figment::from(Toml::file("stepgate.toml"))
                .merge(figment::providers::Env::prefixed("STEPGATE_").split("__"))
                .extract_inner("access")?;
            let mut errors = ConfigErrors::default();
            let cfg = validate(&raw, &mut errors);
            assert!(errors.is_empty(), "{errors}");
            assert_eq!(cfg.policy.default_policy, Policy::Deny);
            assert_eq!(cfg.policy.rules.len(), 1);
            Ok(())
        });
    }
}
