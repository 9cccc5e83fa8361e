#![forbid(unsafe_code)]
//! Stepgate: a reverse-proxy authentication gateway.

pub mod clock;
pub mod config;
pub mod demo;
pub mod policy;
