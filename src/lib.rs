#![forbid(unsafe_code)]
//! Stepgate: a reverse-proxy authentication gateway.
//!
//! Data flows one way: [`server`] accepts connections, [`http`] dispatches each request to the
//! [`portal`] (the gateway's own pages) or through the access decision to [`proxy`], and
//! [`error`] turns every failure into a response in one place.

pub mod admin;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod decision;
pub mod demo;
pub mod error;
pub mod http;
pub mod logging;
pub mod notify;
pub mod policy;
pub mod portal;
pub mod proxy;
pub mod server;
pub mod store;
