//! Access rules: the first rule whose criteria all match decides the policy; when none matches,
//! the default policy applies.
//!
//! Each criterion of a rule is optional (empty matches anything). Within a criterion any entry
//! may match; across criteria all must match. [`AccessPolicy::evaluate`] runs on every request,
//! so it allocates nothing for a path without `;` parameters or percent-escapes (nearly every
//! path).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use super::host::HostPattern;
use super::path::{decoded, without_parameters};

/// What a request needs before it is forwarded. Ordered from least to most demanding:
/// `Bypass < OneFactor < TwoFactor < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// Forwarded without authentication (and without identity headers).
    Bypass,
    /// A password login is enough.
    OneFactor,
    /// A password login plus a second factor.
    TwoFactor,
    /// Never forwarded.
    Deny,
}

impl Policy {
    /// Every policy, in the order written in configuration errors.
    pub const ALL: [Policy; 4] = [
        Policy::Bypass,
        Policy::OneFactor,
        Policy::TwoFactor,
        Policy::Deny,
    ];

    /// The configuration spelling: `bypass`, `one_factor`, `two_factor`, `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Bypass => "bypass",
            Policy::OneFactor => "one_factor",
            Policy::TwoFactor => "two_factor",
            Policy::Deny => "deny",
        }
    }

    /// Parses the configuration spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a rule is about. User names are stored lower-cased and compared case-insensitively;
/// group names are compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    /// Does this subject designate `user`?
    pub fn matches(&self, user: &UserFacts<'_>) -> bool {
        match self {
            Subject::User(name) => user.username.eq_ignore_ascii_case(name),
            Subject::Group(group) => user.groups.iter().any(|g| g == group),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(name) => write!(f, "user:{name}"),
            Subject::Group(group) => write!(f, "group:{group}"),
        }
    }
}

/// A rule's path regex, kept twice: as written, and blind to case.
///
/// Applications disagree on whether `/Admin` is `/admin`: IIS, ASP.NET and Express route both
/// to one handler, most others do not. A request is judged by what its path's rules say read
/// both ways, and gets the stricter of the two (see [`AccessPolicy::evaluate`]): `/ADMIN` meets
/// the rule written for `/admin`, and `/PUBLIC/x` is not let through by a bypass written for
/// `/public/` unless the rules would let `/PUBLIC/x` through anyway.
#[derive(Debug, Clone)]
pub struct PathPattern {
    exact: Regex,
    any_case: Regex,
}

impl PathPattern {
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(PathPattern {
            exact: Regex::new(pattern)?,
            any_case: RegexBuilder::new(pattern).case_insensitive(true).build()?,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        self.exact.as_str()
    }

    /// Does the pattern match `path` as written (letter case included)?
    pub fn is_match(&self, path: &str) -> bool {
        self.exact.is_match(path)
    }

    fn matches(&self, path: &str, case: Case) -> bool {
        match case {
            Case::Exact => self.exact.is_match(path),
            Case::Any => self.any_case.is_match(path),
        }
    }
}

/// A rule that decides for a request, as [`AccessPolicy::first_matches`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    index: usize,
    /// Anonymous request, rule naming users or groups.
    needs_identity: bool,
}

/// How path patterns are read for one pass over the rules (see [`PathPattern`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Exact,
    Any,
}

/// One access rule. Empty criteria match anything.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Host patterns, compared with the request's host (port ignored).
    pub hosts: Vec<HostPattern>,
    /// Regexes searched in the canonical path (query excluded). Anchor them (`^/admin`) to
    /// match a prefix only.
    pub paths: Vec<PathPattern>,
    pub methods: Vec<Method>,
    /// Client networks; IPv4-mapped IPv6 clients (`::ffff:10.0.0.1`) are matched as IPv4.
    pub networks: Vec<IpNet>,
    pub subjects: Vec<Subject>,
    pub policy: Policy,
    /// How recently the second factor must have been proven for this rule (used by step-up).
    pub step_up: Option<Duration>,
    /// A user with no second factor may satisfy this rule's step-up by entering the password
    /// again (`step_up_fallback = "password"`).
    pub step_up_password_fallback: bool,
    /// API clients may present `Authorization: Basic` credentials on the forward-auth
    /// endpoints (only ever set on `one_factor` rules).
    pub allow_basic: bool,
}

impl Rule {
    /// A rule with no criteria: it matches every request.
    pub fn new(policy: Policy) -> Self {
        Rule {
            hosts: Vec::new(),
            paths: Vec::new(),
            methods: Vec::new(),
            networks: Vec::new(),
            subjects: Vec::new(),
            policy,
            step_up: None,
            step_up_password_fallback: false,
            allow_basic: false,
        }
    }

    /// Do the host, path (read without segment parameters, see [`without_parameters`]),
    /// method and network criteria match? Methods compare exactly: a method in another case
    /// never reaches a rule (see [`method_is_unambiguous`]).
    fn matches_request_but_path(&self, req: &RequestFacts<'_>, ip: IpAddr) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(req.host)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && (self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip)))
    }

    fn matches_path(&self, path: &str, case: Case) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path, case))
    }

    /// Does the subject criterion match this user?
    fn matches_user(&self, user: &UserFacts<'_>) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|s| s.matches(user))
    }
}

/// The ordered rules and the policy for requests no rule matches.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub default_policy: Policy,
    pub rules: Vec<Rule>,
    /// Step-up window for every authenticated request whose rule sets none
    /// (`access.default_step_up`).
    pub default_step_up: Option<Duration>,
}

/// What a request needs beyond its policy: a second factor proven within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUp {
    pub window: Duration,
    pub password_fallback: bool,
}

impl AccessPolicy {
    /// The step-up requirement of the rule that matched (`None`: the default policy applied).
    pub fn step_up_for(&self, rule: Option<usize>) -> Option<StepUp> {
        let rule = rule.and_then(|i| self.rules.get(i));
        let window = rule.and_then(|r| r.step_up).or(self.default_step_up)?;
        Some(StepUp {
            window,
            password_fallback: rule.is_some_and(|r| r.step_up_password_fallback),
        })
    }

    /// Every distinct step-up window configured, shortest first.
    pub fn step_up_windows(&self) -> Vec<Duration> {
        let mut windows: Vec<Duration> = self
            .rules
            .iter()
            .filter_map(|r| r.step_up)
            .chain(self.default_step_up)
            .collect();
        windows.sort();
        windows.dedup();
        windows
    }
}

impl Default for AccessPolicy {
    /// No rules; every request needs a password login.
    fn default() -> Self {
        AccessPolicy {
            default_policy: Policy::OneFactor,
            rules: Vec::new(),
            default_step_up: None,
        }
    }
}

/// What is known about a request before anyone is identified.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Host header (or URI authority) value; a port and a trailing dot are ignored.
    pub host: &'a str,
    /// The canonical path from [`super::path::canonicalize`], without the query.
    pub path: &'a str,
    pub method: &'a Method,
    /// Methods the client asks the application to run instead (`X-HTTP-Method-Override` and
    /// its kin, see [`method_overrides`]); judged as well, and the stricter answer wins.
    pub method_overrides: &'a [Method],
    pub client_ip: IpAddr,
}

/// Headers with which a client asks an application to run another method than the request's
/// (a `POST` that Express's method-override, ASP.NET or Symfony run as `DELETE`).
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The methods `headers` ask an application to run instead of the request's own, read as the
/// frameworks read them: the header in any spelling a server may hand on as the same variable
/// (`X_HTTP_Method_Override` reaches PHP as `HTTP_X_HTTP_METHOD_OVERRIDE`), the value up to
/// its first comma, upper-cased. Values that are no method are left out (no framework runs
/// them). Empty, without allocating, for nearly every request.
pub fn method_overrides(headers: &http::HeaderMap) -> Vec<Method> {
    use crate::proxy::headers::folds_to;
    let mut methods = Vec::new();
    // One pass over the few fields a request has, rather than a lookup (a hash) per name.
    for (name, value) in headers {
        if !METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|h| folds_to(name.as_str(), h))
        {
            continue;
        }
        let first = value
            .as_bytes()
            .split(|b| *b == b',')
            .next()
            .unwrap_or_default();
        let upper = first.trim_ascii().to_ascii_uppercase();
        if let Ok(method) = Method::from_bytes(&upper)
            && !methods.contains(&method)
        {
            methods.push(method);
        }
    }
    methods
}

/// The identified user, when there is one.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

/// The outcome of [`AccessPolicy::evaluate`]: what the request needs, joined over every way an
/// application may read it (letter case, methods; see [`RuleMatch::join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch {
    /// Index of the deciding rule in [`AccessPolicy::rules`]; `None` when the default applied.
    pub rule: Option<usize>,
    pub policy: Policy,
    /// `true` when the request is anonymous and the deciding rule depends on who the user is.
    /// The caller must not forward: it asks the user to log in, then evaluates again with the
    /// user. `policy` is then the rule's policy raised to at least [`Policy::OneFactor`].
    pub needs_identity: bool,
    /// A second factor proven this recently (the rule's `step_up`, or `default_step_up`).
    pub step_up: Option<StepUp>,
    /// `Authorization: Basic` may stand in for a session (`allow_basic`).
    pub allow_basic: bool,
    /// The decision depends on who the user is: the user must be known as surely as a
    /// `one_factor` rule asks, even where the rule lets requests through.
    pub names_subjects: bool,
}

/// Whether `method` can be judged by the rules: no lower-case letter in it. Methods are
/// case-sensitive, so `delete` is an extension method that a rule naming `DELETE` does not
/// cover, yet applications that upper-case the method run it as `DELETE`; and a rule letting
/// `GET` through cannot tell what an application does with `get`. Such requests are refused
/// (400) before any rule is consulted, as nginx refuses them.
pub fn method_is_unambiguous(method: &Method) -> bool {
    !method.as_str().bytes().any(|b| b.is_ascii_lowercase())
}

impl AccessPolicy {
    /// Finds the policy for a request: the first rule whose criteria all match, else the default.
    ///
    /// With `user == None`, the first rule whose request criteria match but which names subjects
    /// cannot be decided; it is returned with `needs_identity = true` (later rules are not
    /// consulted, since the user might turn out to be one of those subjects).
    ///
    /// A request is judged for every method an application might run for it, and gets the
    /// stricter answer: its own, `GET` for a `HEAD` (applications answer `HEAD` with their
    /// `GET` handler), and any method it asks to run instead ([`RequestFacts::method_overrides`]).
    pub fn evaluate(&self, req: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> RuleMatch {
        let mut verdict = self.evaluate_as(req, user);
        if !self.judges_methods() {
            return verdict;
        }
        let head_as_get = (*req.method == Method::HEAD).then_some(&Method::GET);
        for method in head_as_get.into_iter().chain(req.method_overrides) {
            let facts = RequestFacts { method, ..*req };
            verdict = verdict.join(self.evaluate_as(&facts, user));
        }
        verdict
    }

    /// Does any rule name methods? Without one, a request's method (or one it asks to run
    /// instead) changes nothing, and [`method_overrides`] need not be read.
    pub fn judges_methods(&self) -> bool {
        self.rules.iter().any(|r| !r.methods.is_empty())
    }

    /// The methods `headers` ask an application to run instead ([`method_overrides`]), for
    /// [`RequestFacts::method_overrides`]; none are read where no rule names methods.
    pub fn method_overrides_to_judge(&self, headers: &http::HeaderMap) -> Vec<Method> {
        if self.judges_methods() {
            method_overrides(headers)
        } else {
            Vec::new()
        }
    }

    /// [`AccessPolicy::evaluate`] for the request's own method: paths read as written, then
    /// in any case. The two readings are independent (a case-blind `[^v]` is `[^vV]`, so a
    /// path may match as written and not in any case), and both run over every rule. A path
    /// that keeps escapes is read both ways again with them decoded ([`decoded`]).
    #[inline]
    fn evaluate_as(&self, req: &RequestFacts<'_>, user: Option<&UserFacts<'_>>) -> RuleMatch {
        let ip = match req.client_ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(req.client_ip, IpAddr::V4),
            v4 => v4,
        };
        // Path rules judge the path as a servlet container would route it.
        let path = without_parameters(req.path);
        let (exact, any_case) = self.first_matches(req, &path, ip, user);
        let mut verdict = if exact == any_case {
            self.match_found(exact)
        } else {
            self.match_found(exact).join(self.match_found(any_case))
        };
        // And as the application reads it, escapes decoded: a rule written for `:` judges
        // `%3A` too. Only paths with an escape left pay for this second pass.
        if path.contains('%') {
            verdict = self.judge_decoded(verdict, req, &path, ip, user);
        }
        verdict
    }

    /// `verdict` joined with the rules' answer for `path` with its escapes decoded (see
    /// [`decoded`]). Kept out of line: most paths have no escape.
    #[cold]
    #[inline(never)]
    fn judge_decoded(
        &self,
        verdict: RuleMatch,
        req: &RequestFacts<'_>,
        path: &str,
        ip: IpAddr,
        user: Option<&UserFacts<'_>>,
    ) -> RuleMatch {
        let Some(decoded) = decoded(path) else {
            return verdict;
        };
        let (exact, any_case) = self.first_matches(req, &decoded, ip, user);
        verdict
            .join(self.match_found(exact))
            .join(self.match_found(any_case))
    }

    /// The first rule that decides for this request and user with paths read as written, and
    /// the first with paths read in any case (see [`AccessPolicy::evaluate`]). One pass: the
    /// host, method and network criteria are checked once per rule.
    #[inline]
    fn first_matches(
        &self,
        req: &RequestFacts<'_>,
        path: &str,
        ip: IpAddr,
        user: Option<&UserFacts<'_>>,
    ) -> (Option<Found>, Option<Found>) {
        let mut exact = None;
        let mut any_case = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if exact.is_some() && any_case.is_some() {
                break;
            }
            if !rule.matches_request_but_path(req, ip) {
                continue;
            }
            let as_written = exact.is_none() && rule.matches_path(path, Case::Exact);
            let in_any_case = any_case.is_none() && rule.matches_path(path, Case::Any);
            if !as_written && !in_any_case {
                continue;
            }
            let needs_identity = match user {
                Some(user) if rule.matches_user(user) => false,
                Some(_) => continue,
                None => !rule.subjects.is_empty(),
            };
            let found = Some(Found {
                index,
                needs_identity,
            });
            if as_written {
                exact = found;
            }
            if in_any_case {
                any_case = found;
            }
        }
        (exact, any_case)
    }

    /// What a rule found by [`AccessPolicy::first_matches`] (`None`: the default policy) asks.
    fn match_found(&self, found: Option<Found>) -> RuleMatch {
        let mut m = self.match_of(found.map(|f| f.index));
        if let Some(f) = found
            && f.needs_identity
        {
            // Anonymous, and the rule depends on who the user is: at least a login.
            m.policy = m.policy.max(Policy::OneFactor);
            m.needs_identity = true;
        }
        m
    }

    /// What rule `rule` (`None`: the default policy) asks of a request that it decides.
    fn match_of(&self, rule: Option<usize>) -> RuleMatch {
        let found = rule.and_then(|i| self.rules.get(i));
        RuleMatch {
            rule,
            policy: found.map_or(self.default_policy, |r| r.policy),
            needs_identity: false,
            step_up: self.step_up_for(rule),
            allow_basic: found.is_some_and(|r| r.allow_basic),
            names_subjects: found.is_some_and(|r| !r.subjects.is_empty()),
        }
    }
}

impl RuleMatch {
    /// Everything both matches ask of a request: the higher policy, the shorter step-up, Basic
    /// credentials only where both accept them, the user known where either names users. The
    /// rule shown is the one with the higher policy (the first on a tie).
    pub fn join(self, other: RuleMatch) -> RuleMatch {
        let rank = |m: &RuleMatch| (m.policy, m.needs_identity);
        let (top, below) = if rank(&other) > rank(&self) {
            (other, self)
        } else {
            (self, other)
        };
        RuleMatch {
            rule: top.rule,
            policy: top.policy,
            // Only a match of the higher policy decides whether a login comes first: a denial
            // for everyone is not turned into a login page by a lesser rule naming users.
            needs_identity: top.needs_identity
                || (below.needs_identity && below.policy == top.policy),
            step_up: stricter_step_up(top.step_up, below.step_up),
            allow_basic: top.allow_basic && below.allow_basic,
            names_subjects: top.names_subjects || below.names_subjects,
        }
    }
}

/// The more demanding of two step-up requirements: any over none, then the shorter window, a
/// password fallback only where both allow it.
fn stricter_step_up(a: Option<StepUp>, b: Option<StepUp>) -> Option<StepUp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(StepUp {
            window: a.window.min(b.window),
            password_fallback: a.password_fallback && b.password_fallback,
        }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(p: &str) -> HostPattern {
        HostPattern::parse(p).unwrap()
    }

    fn re(p: &str) -> PathPattern {
        PathPattern::new(p).unwrap()
    }

    fn net(n: &str) -> IpNet {
        n.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn req<'a>(host: &'a str, path: &'a str, method: &'a Method, client: &str) -> RequestFacts<'a> {
        RequestFacts {
            host,
            path,
            method,
            method_overrides: &[],
            client_ip: ip(client),
        }
    }

    fn rule(policy: Policy) -> Rule {
        Rule::new(policy)
    }

    /// Path rules only, tried in order; `default` when none matches.
    fn path_rules(default: Policy, rules: &[(&str, Policy)]) -> AccessPolicy {
        AccessPolicy {
            default_policy: default,
            rules: rules
                .iter()
                .map(|&(path, policy)| Rule {
                    paths: vec![re(path)],
                    ..rule(policy)
                })
                .collect(),
            default_step_up: None,
        }
    }

    fn sample() -> AccessPolicy {
        AccessPolicy {
            default_policy: Policy::Deny,
            rules: vec![
                // 0: health checks are public
                Rule {
                    paths: vec![re("^/health$")],
                    ..rule(Policy::Bypass)
                },
                // 1: the admin area needs two factors for admins
                Rule {
                    hosts: vec![host("app.example.com")],
                    paths: vec![re("^/admin(/|$)")],
                    subjects: vec![Subject::Group("admins".into())],
                    ..rule(Policy::TwoFactor)
                },
                // 2: nobody else reaches the admin area
                Rule {
                    paths: vec![re("^/admin(/|$)")],
                    ..rule(Policy::Deny)
                },
                // 3: the internal network gets one factor on any subdomain
                Rule {
                    hosts: vec![host("*.example.com")],
                    networks: vec![net("10.0.0.0/8"), net("fd00::/8")],
                    ..rule(Policy::OneFactor)
                },
                // 4: writes from outside need two factors
                Rule {
                    hosts: vec![host("*.example.com")],
                    methods: vec![Method::POST, Method::PUT, Method::DELETE],
                    ..rule(Policy::TwoFactor)
                },
                // 5: reads from outside need one factor
                Rule {
                    hosts: vec![host("*.example.com")],
                    ..rule(Policy::OneFactor)
                },
            ],
            default_step_up: None,
        }
    }

    /// An escape the canonical path keeps (`%3A`, `%C3%A9`) is decoded by the application
    /// before it routes: a rule written with the character judges the escaped spelling too, and
    /// the stricter answer wins.
    #[test]
    fn a_rule_judges_a_path_as_written_and_decoded() {
        let policy = path_rules(
            Policy::OneFactor,
            &[
                ("^/public/", Policy::Bypass),
                ("^/wiki/Special:", Policy::TwoFactor),
                ("^/café/", Policy::Deny),
            ],
        );
        let get = Method::GET;
        let judge = |path: &str| {
            policy
                .evaluate(&req("app.example.com", path, &get, "192.0.2.1"), None)
                .policy
        };
        for (path, expected) in [
            ("/wiki/Special:UserRights", Policy::TwoFactor),
            ("/wiki/Special%3AUserRights", Policy::TwoFactor),
            ("/wiki/special%3auserrights", Policy::TwoFactor),
            ("/caf\u{e9}/menu", Policy::Deny),
            ("/caf%C3%A9/menu", Policy::Deny),
            ("/CAF%C3%89/menu", Policy::Deny),
            // Both readings bypass: still a bypass.
            ("/public/a%3Ab", Policy::Bypass),
            // `%25` is a percent sign to the application: `%3A` after one decoding, not `:`.
            ("/wiki/Special%253AUserRights", Policy::OneFactor),
            ("/wiki/Main", Policy::OneFactor),
        ] {
            assert_eq!(judge(path), expected, "{path}");
        }
    }

    /// Letter case never loosens a rule: a path is judged by its rules read as written and read
    /// in any case, and gets the stricter answer (an application may or may not tell `/ADMIN`
    /// from `/admin`).
    /// The two readings of a path are independent: a case-blind `[^v]` is `[^vV]`, so `/api/V2`
    /// matches the rule below only as written, and must still be denied.
    #[test]
    fn a_rule_matching_only_as_written_still_applies() {
        let policy = path_rules(
            Policy::OneFactor,
            &[
                ("^/api/[^v]", Policy::Deny),
                ("^/[^a-z]", Policy::Deny),
                ("^/api/", Policy::OneFactor),
            ],
        );
        let get = Method::GET;
        let judge =
            |path: &str| policy.evaluate(&req("a.example.com", path, &get, "192.0.2.1"), None);
        assert_eq!(judge("/api/V2/x").policy, Policy::Deny);
        assert_eq!(judge("/Admin").policy, Policy::Deny);
        assert_eq!(judge("/api/v2/x").policy, Policy::OneFactor);
    }

    /// Joining two readings keeps everything each asks: a `one_factor` rule with a step-up read
    /// in one case, the `two_factor` default in the other, make a `two_factor` request with the
    /// step-up; Basic credentials only where both readings accept them.
    #[test]
    fn joined_readings_keep_every_requirement() {
        let five_minutes = Duration::from_secs(300);
        let policy = AccessPolicy {
            default_policy: Policy::TwoFactor,
            rules: vec![Rule {
                paths: vec![re("^/settings")],
                step_up: Some(five_minutes),
                allow_basic: true,
                ..rule(Policy::OneFactor)
            }],
            default_step_up: None,
        };
        let get = Method::GET;
        let m = policy.evaluate(&req("a.example.com", "/Settings", &get, "192.0.2.1"), None);
        assert_eq!(m.policy, Policy::TwoFactor);
        assert_eq!(
            m.step_up,
            Some(StepUp {
                window: five_minutes,
                password_fallback: false
            })
        );
        assert!(!m.allow_basic);
        let m = policy.evaluate(&req("a.example.com", "/settings", &get, "192.0.2.1"), None);
        assert_eq!((m.policy, m.allow_basic), (Policy::OneFactor, true));
        // A denial for everyone is not turned into a login by a lesser rule naming users.
        let joined = RuleMatch {
            policy: Policy::Deny,
            ..policy.match_of(None)
        }
        .join(RuleMatch {
            policy: Policy::OneFactor,
            needs_identity: true,
            names_subjects: true,
            ..policy.match_of(Some(0))
        });
        assert_eq!(
            (joined.policy, joined.needs_identity),
            (Policy::Deny, false)
        );
        assert!(joined.names_subjects);
    }

    #[test]
    fn letter_case_never_loosens_a_rule() {
        let policy = AccessPolicy {
            default_policy: Policy::OneFactor,
            rules: vec![
                Rule {
                    paths: vec![re("^/public/")],
                    ..rule(Policy::Bypass)
                },
                Rule {
                    paths: vec![re("^/admin(/|$)")],
                    ..rule(Policy::Deny)
                },
                Rule {
                    paths: vec![re("^/reports")],
                    step_up: Some(Duration::from_secs(300)),
                    ..rule(Policy::OneFactor)
                },
                Rule {
                    paths: vec![re("^/Docs/")],
                    ..rule(Policy::Bypass)
                },
            ],
            default_step_up: None,
        };
        let get = Method::GET;
        let judge =
            |path: &str| policy.evaluate(&req("a.example.com", path, &get, "192.0.2.1"), None);
        for path in ["/admin", "/ADMIN", "/Admin/users", "/aDmIn/"] {
            assert_eq!(judge(path).policy, Policy::Deny, "{path}");
        }
        assert_eq!(judge("/public/x").policy, Policy::Bypass);
        for path in ["/PUBLIC/x", "/Public/x"] {
            let m = judge(path);
            assert_eq!((m.rule, m.policy), (None, Policy::OneFactor), "{path}");
        }
        // Same policy both ways: the step-up of the rule read in any case is kept.
        let step_up = Some(StepUp {
            window: Duration::from_secs(300),
            password_fallback: false,
        });
        assert_eq!(judge("/REPORTS/q").step_up, step_up);
        assert_eq!(judge("/reports/q").rule, Some(2));
        assert_eq!(judge("/reports/q").step_up, step_up);
        // A rule written with capitals reads the same way.
        assert_eq!(judge("/Docs/a").policy, Policy::Bypass);
        assert_eq!(judge("/docs/a").rule, None);
        // Each case-blind match is checked with the same criteria as an exact one.
        let mut admins_only = policy.clone();
        admins_only.rules[1].subjects = vec![Subject::Group("admins".into())];
        let bob = UserFacts {
            username: "bob",
            groups: &[],
        };
        let as_bob = admins_only.evaluate(
            &req("a.example.com", "/ADMIN", &get, "192.0.2.1"),
            Some(&bob),
        );
        assert_eq!((as_bob.rule, as_bob.policy), (None, Policy::OneFactor));
        let anonymous =
            admins_only.evaluate(&req("a.example.com", "/ADMIN", &get, "192.0.2.1"), None);
        assert!(anonymous.needs_identity);
    }

    #[test]
    fn first_match_wins() {
        let p = sample();
        let get = Method::GET;
        let m = p.evaluate(
            &req("app.example.com", "/health", &get, "203.0.113.9"),
            None,
        );
        assert_eq!((m.rule, m.policy), (Some(0), Policy::Bypass));
        let m = p.evaluate(&req("app.example.com", "/", &get, "10.1.2.3"), None);
        assert_eq!((m.rule, m.policy), (Some(3), Policy::OneFactor));
        let m = p.evaluate(&req("app.example.com", "/", &get, "203.0.113.9"), None);
        assert_eq!((m.rule, m.policy), (Some(5), Policy::OneFactor));
    }

    #[test]
    fn default_policy_when_nothing_matches() {
        let p = sample();
        let get = Method::GET;
        let m = p.evaluate(&req("other.net", "/", &get, "10.1.2.3"), None);
        assert_eq!(
            m,
            RuleMatch {
                rule: None,
                policy: Policy::Deny,
                needs_identity: false,
                step_up: None,
                allow_basic: false,
                names_subjects: false,
            }
        );
        let empty = AccessPolicy::default();
        let m = empty.evaluate(&req("x", "/", &get, "10.1.2.3"), None);
        assert_eq!((m.rule, m.policy), (None, Policy::OneFactor));
    }

    #[test]
    fn methods_are_ored_and_anded_with_hosts() {
        let p = sample();
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let m = p.evaluate(&req("app.example.com", "/x", &method, "203.0.113.9"), None);
            assert_eq!((m.rule, m.policy), (Some(4), Policy::TwoFactor), "{method}");
        }
        let patch = Method::PATCH;
        let m = p.evaluate(&req("app.example.com", "/x", &patch, "203.0.113.9"), None);
        assert_eq!(m.rule, Some(5));
        // Right method, wrong host: the rule does not match.
        let post = Method::POST;
        let m = p.evaluate(&req("example.org", "/x", &post, "203.0.113.9"), None);
        assert_eq!(m.rule, None);
    }

    #[test]
    fn a_method_with_a_lower_case_letter_is_ambiguous() {
        for name in ["GET", "DELETE", "PROPFIND", "M-SEARCH", "X_CUSTOM1"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert!(method_is_unambiguous(&method), "{name}");
        }
        for name in ["get", "Delete", "pOST", "propfind"] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert!(!method_is_unambiguous(&method), "{name}");
        }
    }

    #[test]
    fn networks_match_ipv4_and_ipv6() {
        let p = sample();
        let get = Method::GET;
        assert_eq!(
            p.evaluate(&req("a.example.com", "/", &get, "fd12::1"), None)
                .rule,
            Some(3)
        );
        assert_eq!(
            p.evaluate(&req("a.example.com", "/", &get, "11.0.0.1"), None)
                .rule,
            Some(5)
        );
        assert_eq!(
            p.evaluate(&req("a.example.com", "/", &get, "fe80::1"), None)
                .rule,
            Some(5)
        );
    }

    #[test]
    fn ipv4_mapped_client_matches_ipv4_network() {
        let deny_outside = AccessPolicy {
            default_policy: Policy::Deny,
            rules: vec![Rule {
                networks: vec![net("10.0.0.0/8")],
                ..rule(Policy::Bypass)
            }],
            default_step_up: None,
        };
        let get = Method::GET;
        let m = deny_outside.evaluate(&req("h", "/", &get, "::ffff:10.1.2.3"), None);
        assert_eq!(m.policy, Policy::Bypass);
        let block_bad = AccessPolicy {
            default_policy: Policy::OneFactor,
            rules: vec![Rule {
                networks: vec![net("198.51.100.0/24")],
                ..rule(Policy::Deny)
            }],
            default_step_up: None,
        };
        // A blocked IPv4 client arriving on a dual-stack socket is still blocked.
        let m = block_bad.evaluate(&req("h", "/", &get, "::ffff:198.51.100.7"), None);
        assert_eq!(m.policy, Policy::Deny);
    }

    #[test]
    fn host_port_and_case_do_not_escape_rule() {
        let p = sample();
        let get = Method::GET;
        for h in [
            "APP.Example.COM",
            "app.example.com:8443",
            "app.example.com.",
            "app.example.com.:443",
        ] {
            let m = p.evaluate(&req(h, "/admin", &get, "203.0.113.9"), None);
            assert_eq!(m.rule, Some(1), "{h}");
        }
    }

    #[test]
    fn paths_are_regexes_on_the_canonical_path() {
        let p = sample();
        let get = Method::GET;
        let anon = |path: &str| p.evaluate(&req("example.org", path, &get, "203.0.113.9"), None);
        assert_eq!(anon("/admin").policy, Policy::Deny);
        assert_eq!(anon("/admin/users").policy, Policy::Deny);
        assert_eq!(anon("/administrator").rule, None);
        assert_eq!(anon("/health").policy, Policy::Bypass);
        assert_eq!(anon("/health/x").rule, None);
    }

    #[test]
    fn anonymous_request_on_subject_rule_needs_identity() {
        let p = sample();
        let get = Method::GET;
        let m = p.evaluate(&req("app.example.com", "/admin", &get, "10.1.2.3"), None);
        assert_eq!(
            m,
            RuleMatch {
                rule: Some(1),
                policy: Policy::TwoFactor,
                needs_identity: true,
                step_up: None,
                allow_basic: false,
                names_subjects: true,
            }
        );
    }

    #[test]
    fn anonymous_never_bypasses_a_subject_rule() {
        let p = AccessPolicy {
            default_policy: Policy::Bypass,
            rules: vec![Rule {
                subjects: vec![Subject::User("alice".into())],
                ..rule(Policy::Bypass)
            }],
            default_step_up: None,
        };
        let get = Method::GET;
        let m = p.evaluate(&req("h", "/", &get, "10.0.0.1"), None);
        assert_eq!(m.rule, Some(0));
        assert!(m.needs_identity);
        assert_eq!(m.policy, Policy::OneFactor);
        // A deny rule about some users still asks who the user is, and stays deny.
        let p = AccessPolicy {
            default_policy: Policy::Bypass,
            rules: vec![Rule {
                subjects: vec![Subject::Group("contractors".into())],
                ..rule(Policy::Deny)
            }],
            default_step_up: None,
        };
        let m = p.evaluate(&req("h", "/", &get, "10.0.0.1"), None);
        assert!(m.needs_identity);
        assert_eq!(m.policy, Policy::Deny);
    }

    #[test]
    fn anonymous_stops_at_the_first_undecidable_rule() {
        // Rule 1 would bypass, but rule 0 might apply to this user once known.
        let p = AccessPolicy {
            default_policy: Policy::Deny,
            rules: vec![
                Rule {
                    subjects: vec![Subject::Group("blocked".into())],
                    ..rule(Policy::Deny)
                },
                rule(Policy::Bypass),
            ],
            default_step_up: None,
        };
        let get = Method::GET;
        let m = p.evaluate(&req("h", "/", &get, "10.0.0.1"), None);
        assert_eq!(m.rule, Some(0));
        assert!(m.needs_identity);
    }

    #[test]
    fn subjects_match_users_and_groups() {
        let p = sample();
        let get = Method::GET;
        let admins = vec!["staff".to_string(), "admins".to_string()];
        let staff = vec!["staff".to_string()];
        let admin = UserFacts {
            username: "bob",
            groups: &admins,
        };
        let other = UserFacts {
            username: "carol",
            groups: &staff,
        };
        let r = req("app.example.com", "/admin/x", &get, "10.1.2.3");
        let m = p.evaluate(&r, Some(&admin));
        assert_eq!(
            (m.rule, m.policy, m.needs_identity),
            (Some(1), Policy::TwoFactor, false)
        );
        let m = p.evaluate(&r, Some(&other));
        assert_eq!(
            (m.rule, m.policy, m.needs_identity),
            (Some(2), Policy::Deny, false)
        );
    }

    #[test]
    fn user_subjects_ignore_case_and_groups_do_not() {
        let p = AccessPolicy {
            default_policy: Policy::Deny,
            rules: vec![Rule {
                subjects: vec![Subject::User("alice".into()), Subject::Group("Ops".into())],
                ..rule(Policy::OneFactor)
            }],
            default_step_up: None,
        };
        let get = Method::GET;
        let r = req("h", "/", &get, "10.0.0.1");
        let none: Vec<String> = Vec::new();
        let ops = vec!["Ops".to_string()];
        let lower_ops = vec!["ops".to_string()];
        let alice = UserFacts {
            username: "Alice",
            groups: &none,
        };
        let in_ops = UserFacts {
            username: "dave",
            groups: &ops,
        };
        let in_lower_ops = UserFacts {
            username: "dave",
            groups: &lower_ops,
        };
        assert_eq!(p.evaluate(&r, Some(&alice)).rule, Some(0));
        assert_eq!(p.evaluate(&r, Some(&in_ops)).rule, Some(0));
        assert_eq!(p.evaluate(&r, Some(&in_lower_ops)).rule, None);
    }

    #[test]
    fn empty_rule_matches_everything() {
        let p = AccessPolicy {
            default_policy: Policy::Deny,
            rules: vec![rule(Policy::TwoFactor)],
            default_step_up: None,
        };
        let delete = Method::DELETE;
        let m = p.evaluate(&req("anything", "/x/y", &delete, "::1"), None);
        assert_eq!((m.rule, m.policy), (Some(0), Policy::TwoFactor));
    }

    #[test]
    fn policy_order_and_spelling() {
        assert!(Policy::Bypass < Policy::OneFactor);
        assert!(Policy::OneFactor < Policy::TwoFactor);
        assert!(Policy::TwoFactor < Policy::Deny);
        for p in Policy::ALL {
            assert_eq!(Policy::parse(&p.to_string()), Some(p));
        }
        assert_eq!(Policy::OneFactor.to_string(), "one_factor");
        assert_eq!(Policy::parse("allow"), None);
        assert_eq!(Policy::parse("Deny"), None);
        assert_eq!(Subject::User("alice".into()).to_string(), "user:alice");
        assert_eq!(Subject::Group("admins".into()).to_string(), "group:admins");
    }

    #[test]
    fn evaluates_a_hundred_rules() {
        // The last of 100 rules matches; the first 99 differ only by path.
        let mut rules: Vec<Rule> = (0..99)
            .map(|i| Rule {
                hosts: vec![host("*.example.com")],
                paths: vec![re(&format!("^/area{i}(/|$)"))],
                ..rule(Policy::TwoFactor)
            })
            .collect();
        rules.push(Rule {
            hosts: vec![host("*.example.com")],
            ..rule(Policy::OneFactor)
        });
        let p = AccessPolicy {
            default_policy: Policy::Deny,
            rules,
            default_step_up: None,
        };
        let get = Method::GET;
        let m = p.evaluate(
            &req("app.example.com", "/elsewhere", &get, "10.0.0.1"),
            None,
        );
        assert_eq!((m.rule, m.policy), (Some(99), Policy::OneFactor));
        let m = p.evaluate(&req("app.example.com", "/area42/x", &get, "10.0.0.1"), None);
        assert_eq!((m.rule, m.policy), (Some(42), Policy::TwoFactor));
    }
}
