//! Configuration problems: every one names the key it is about and why it is wrong.

use std::fmt;

/// One thing wrong with the configuration, e.g. `upstreams[1].url: scheme must be http or https`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path in the TOML document: `server.listen`, `upstreams[1].url`, `access.rules[2].path`.
    pub key: String,
    pub reason: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// All the problems found in one configuration (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, reason));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// `Ok(value)` when no problem was recorded, the problems otherwise.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Joins a parent key and a child key: `key_join("upstreams[1]", "url") == "upstreams[1].url"`.
pub fn key_join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Parses a duration such as `"90s"`, `"5m"`, `"12h"`, `"180d"`, recording a problem under `key`.
/// The longest duration any setting accepts: ten years. Nothing the gateway times needs more,
/// and far longer ones overflow the clocks (a session ending after the year 9999, a timer past
/// what the system clock can hold).
pub const LONGEST_DURATION: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

pub fn parse_duration(
    value: &str,
    key: &str,
    errors: &mut ConfigErrors,
) -> Option<std::time::Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d > LONGEST_DURATION => {
            errors.push(
                key,
                format!("{value:?} is too long: at most 10 years (\"3650d\")"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(
                key,
                format!("invalid duration {value:?} ({e}); write e.g. \"90s\", \"5m\", \"12h\", \"180d\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_ten_years_are_refused() {
        let mut errs = ConfigErrors::default();
        assert_eq!(
            parse_duration("3650d", "k", &mut errs),
            Some(LONGEST_DURATION)
        );
        assert!(errs.is_empty());
        for too_long in ["3651d", "9999y", "300000000000y"] {
            assert_eq!(parse_duration(too_long, "k", &mut errs), None, "{too_long}");
        }
        let text = errs.to_string();
        assert!(text.contains("at most 10 years"), "{text}");
    }

    #[test]
    fn durations_in_the_documented_units() {
        let mut errs = ConfigErrors::default();
        assert_eq!(
            parse_duration("90s", "k", &mut errs).map(|d| d.as_secs()),
            Some(90)
        );
        assert_eq!(
            parse_duration("5m", "k", &mut errs).map(|d| d.as_secs()),
            Some(300)
        );
        assert_eq!(
            parse_duration("12h", "k", &mut errs).map(|d| d.as_secs()),
            Some(43_200)
        );
        assert_eq!(
            parse_duration("180d", "k", &mut errs).map(|d| d.as_secs()),
            Some(15_552_000)
        );
        assert!(errs.is_empty());
        assert_eq!(
            parse_duration("soon", "limits.idle_timeout", &mut errs),
            None
        );
        assert_eq!(errs.problems()[0].key, "limits.idle_timeout");
    }
}
