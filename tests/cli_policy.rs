//! `stepgate check-policy`: the matching rule and the decision for a request, as the gateway
//! would decide it.

mod common;

use common::cli::CliEnv;

const RULES: &str = r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/health$"
policy = "bypass"

[[access.rules]]
host = "app.example.com"
path = "^/admin(/|$)"
subjects = ["group:admins", "user:carol"]
policy = "two_factor"
step_up = "10m"

[[access.rules]]
path = "^/admin(/|$)"
policy = "deny"

[[access.rules]]
host = "*.example.com"
methods = ["POST", "PUT", "DELETE"]
policy = "two_factor"

[[access.rules]]
host = "*.example.com"
networks = "10.0.0.0/8"
policy = "one_factor"
"#;

const PW: &str = "correct horse battery\n";

fn env_with_users() -> CliEnv {
    let env = CliEnv::new(RULES);
    env.run(
        &[
            "user",
            "add",
            "alice",
            "--groups",
            "admins",
            "--password-stdin",
        ],
        Some(PW),
    )
    .ok();
    env.run(&["user", "add", "bob", "--password-stdin"], Some(PW))
        .ok();
    env.run(&["user", "add", "carol", "--password-stdin"], Some(PW))
        .ok();
    env
}

/// (rule line, decision line) of a check.
fn check(env: &CliEnv, args: &[&str]) -> (String, String) {
    let mut full = vec!["check-policy"];
    full.extend(args);
    let out = env.run(&full, None).ok();
    let line = |prefix: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {out:#?}"))
            .to_string()
    };
    (line("rule:"), line("decision:"))
}

#[test]
fn reports_the_deciding_rule_for_requests_users_and_methods() {
    let env = env_with_users();
    let cases: [(&[&str], &str, &str); 9] = [
        (
            &["GET", "https://app.example.com/health"],
            "access.rules[0]",
            "decision: bypass",
        ),
        (
            &["GET", "https://app.example.com/admin?x=1"],
            "access.rules[1]",
            "decision: login required to decide",
        ),
        (
            &[
                "--user",
                "alice",
                "GET",
                "https://app.example.com/admin/users",
            ],
            "access.rules[1]",
            "decision: two_factor",
        ),
        (
            &["--user", "Carol", "GET", "https://app.example.com/admin"],
            "access.rules[1]",
            "decision: two_factor",
        ),
        (
            &["--user", "bob", "GET", "https://app.example.com/admin"],
            "access.rules[2]",
            "decision: deny",
        ),
        (
            &["--user", "bob", "DELETE", "https://wiki.example.com/page"],
            "access.rules[3]",
            "decision: two_factor",
        ),
        (
            &["--ip", "10.9.8.7", "GET", "https://wiki.example.com/page"],
            "access.rules[4]",
            "decision: one_factor",
        ),
        (
            &[
                "--ip",
                "203.0.113.5",
                "GET",
                "https://wiki.example.com/page",
            ],
            "none matched",
            "decision: deny",
        ),
        (
            &["GET", "https://other.example.net/"],
            "none matched",
            "decision: deny",
        ),
    ];
    for (args, rule, decision) in cases {
        let (rule_line, decision_line) = check(&env, args);
        assert!(rule_line.contains(rule), "{args:?}: {rule_line}");
        assert!(
            decision_line.starts_with(decision),
            "{args:?}: {decision_line}"
        );
    }
}

#[test]
fn prints_the_rule_criteria() {
    let env = env_with_users();
    let (rule, _) = check(
        &env,
        &["--user", "alice", "GET", "https://app.example.com/admin"],
    );
    assert_eq!(
        rule,
        "rule:     access.rules[1]: host=app.example.com path=^/admin(/|$) subjects=group:admins,user:carol policy=two_factor step_up=10m"
    );
}

#[test]
fn rejects_encoded_slash_bypass() {
    let env = CliEnv::new(RULES);
    let out = env
        .run(
            &["check-policy", "GET", "https://app.example.com/%2Fadmin"],
            None,
        )
        .ok();
    assert!(
        out.stdout.starts_with("400: encoded slash in path"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("decision:"), "{out:#?}");
}

#[test]
fn rejects_dot_segment_bypass() {
    let env = CliEnv::new(RULES);
    // `/health/../admin` must be judged as `/admin`, never as the public health check.
    let (rule, decision) = check(&env, &["GET", "https://app.example.com/health/../admin"]);
    assert!(rule.contains("access.rules[1]"), "{rule}");
    assert!(
        decision.starts_with("decision: login required"),
        "{decision}"
    );
    let out = env
        .run(
            &["check-policy", "GET", "https://app.example.com/../admin"],
            None,
        )
        .ok();
    assert!(
        out.stdout.starts_with("400: path climbs above the root"),
        "{out:#?}"
    );
}

#[test]
fn unknown_user_is_an_error() {
    let env = CliEnv::new(RULES);
    drop(stepgate::store::Store::open(&env.storage).expect("an empty store"));
    let out = env.run(
        &[
            "check-policy",
            "--user",
            "ghost",
            "GET",
            "https://app.example.com/",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("no user named ghost"), "{out:#?}");
}

#[test]
fn bad_urls_are_errors() {
    let env = CliEnv::new(RULES);
    for url in ["/admin", "app.example.com/admin", "ftp://app.example.com/"] {
        let out = env.run(&["check-policy", "GET", url], None);
        assert_eq!(out.code, 1, "{url}: {out:#?}");
        assert!(out.stderr.contains("invalid URL"), "{out:#?}");
    }
}
