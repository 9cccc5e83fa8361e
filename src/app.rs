//! The shared state every request handler reads: validated config, upstream clients, clock.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::proxy::upstream::{UpstreamSetupError, Upstreams};

pub struct App {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
    pub clock: SharedClock,
    /// Folded names of every identity header, stripped from all client requests.
    pub protected_headers: Vec<String>,
}

impl App {
    pub fn new(config: Config, clock: SharedClock) -> Result<Arc<App>, AppError> {
        let upstreams = Upstreams::build(&config.upstreams)?;
        let protected_headers = config.identity_headers.protected();
        Ok(Arc::new(App {
            protected_headers,
            config: Arc::new(config),
            upstreams,
            clock,
        }))
    }

    /// Makes everything durable; called once the last request has drained.
    pub fn flush(&self) -> Result<(), AppError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
}
