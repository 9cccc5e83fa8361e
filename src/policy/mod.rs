//! Access policy: host patterns, path canonicalisation, redirect-target validation and rules.

pub mod config;
pub mod host;
pub mod path;
pub mod redirect;
pub mod rules;

pub use config::{AccessConfig, RawAccess, RawRule, validate};
pub use host::HostPattern;
pub use path::{PathError, canonicalize};
pub use redirect::safe_redirect;
pub use rules::{
    AccessPolicy, PathPattern, Policy, RequestFacts, Rule, RuleMatch, Subject, UserFacts,
    method_overrides,
};
