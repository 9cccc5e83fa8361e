//! Configuration: figment reads TOML plus `STEPGATE_SECTION__KEY` environment overrides into raw
//! serde types, which are then validated into [`Config`] with every problem reported by key path.

mod problem;

pub use problem::{ConfigErrors, ConfigProblem, key_join, parse_duration};
