#![forbid(unsafe_code)]
//! Stepgate: a reverse-proxy authentication gateway.

pub mod auth;
pub mod clock;
pub mod config;
pub mod policy;
pub mod store;
