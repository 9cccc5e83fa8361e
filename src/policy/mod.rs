//! Access policy: host patterns, path canonicalisation, redirect-target validation and rules.

pub mod host;
