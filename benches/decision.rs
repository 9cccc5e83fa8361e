//! Per-request decision path without I/O: path canonicalisation and rule matching with 100 rules.
//! Run with `cargo bench --bench decision`; `scripts/bench` runs it too.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use ipnet::IpNet;

use stepgate::policy::{
    AccessPolicy, HostPattern, PathPattern, Policy, RequestFacts, Rule, Subject, UserFacts,
};

/// 100 rules of the shapes operators write: a bypass for static assets, then per-application
/// rules with a host, anchored path regexes, sometimes methods, networks or subjects.
fn hundred_rules() -> AccessPolicy {
    let mut rules = Vec::with_capacity(100);
    let mut assets = Rule::new(Policy::Bypass);
    assets.paths = vec![
        PathPattern::new(r"^/static/").unwrap(),
        PathPattern::new(r"^/favicon\.ico$").unwrap(),
    ];
    rules.push(assets);
    for i in 1..100 {
        let mut rule = Rule::new(match i % 3 {
            0 => Policy::TwoFactor,
            1 => Policy::OneFactor,
            _ => Policy::Deny,
        });
        rule.hosts = vec![HostPattern::parse(&format!("app{i}.example.com")).unwrap()];
        rule.paths = vec![
            PathPattern::new(&format!(r"^/api/v{i}/(users|groups)/[0-9]+$")).unwrap(),
            PathPattern::new(&format!(r"^/section{i}(/|$)")).unwrap(),
        ];
        match i % 4 {
            0 => rule.methods = vec![Method::GET, Method::HEAD],
            1 => rule.networks = vec!["10.0.0.0/8".parse::<IpNet>().unwrap()],
            2 => rule.subjects = vec![Subject::Group(format!("team{i}"))],
            _ => {}
        }
        rules.push(rule);
    }
    AccessPolicy {
        default_step_up: None,
        default_policy: Policy::TwoFactor,
        rules,
    }
}

fn rule_matching(c: &mut Criterion) {
    let policy = hundred_rules();
    let get = Method::GET;
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let groups = vec!["team98".to_string(), "staff".to_string()];
    let user = UserFacts {
        username: "alice",
        groups: &groups,
    };
    let facts = |host: &'static str, path: &'static str| RequestFacts {
        host,
        path,
        method: &get,
        method_overrides: &[],
        client_ip: ip,
    };
    let mut group = c.benchmark_group("rules_100");
    // Every rule is tried and none matches: the default policy decides (the worst case).
    let none = facts("other.example.com", "/dashboard/overview");
    group.bench_function("no_match_default", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&none), Some(&user))))
    });
    // The host matches rule 99 only; its path regexes are searched.
    let last = facts("app99.example.com:443", "/section99/reports");
    group.bench_function("last_rule_matches", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&last), Some(&user))))
    });
    // The first rule (assets, any host) decides at once.
    let first = facts("app50.example.com", "/static/app.js");
    group.bench_function("first_rule_matches", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&first), Some(&user))))
    });
    // A path that keeps an escape is read a second time, decoded: every rule twice.
    let escaped = facts("other.example.com", "/dashboard/caf%C3%A9%3Amenu");
    group.bench_function("no_match_escaped_path", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&escaped), Some(&user))))
    });
    let anonymous = facts("app98.example.com", "/section98/");
    group.bench_function("anonymous_needs_identity", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&anonymous), None)))
    });
    group.finish();
}

fn canonicalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalize");
    for (name, path) in [
        ("short", "/"),
        ("typical", "/app/dashboard/settings/profile"),
        (
            "escapes_and_dots",
            "/a/./b/../c//d/%7Euser/%41%42/file%20name.txt",
        ),
        (
            "long_246_bytes",
            "/api/v1/organisations/acme/projects/stepgate/repositories/main/tree/src/policy/path.rs/lines/1-437/blame/history/commits/4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b/files/changed/diff/unified/context/3/whitespace/ignore/view/split/theme/dark/lang/en",
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(stepgate::policy::canonicalize(black_box(path))))
        });
    }
    group.finish();
}

criterion_group!(benches, rule_matching, canonicalisation);
criterion_main!(benches);
