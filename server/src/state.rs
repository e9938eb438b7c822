//! Shared server state handed to every HTTP and websocket handler.

use std::sync::Arc;

use crate::auth::TokenService;
use crate::docs::DocManager;
use crate::rooms::RoomManager;

/// Limits and settings the handlers need at run time.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub public_url: String,
    pub max_frame_bytes: usize,
    pub rate_limit: f64,
    pub rate_burst: f64,
    pub doc_max_frame_bytes: usize,
    pub doc_rate_limit: f64,
    pub doc_rate_burst: f64,
    pub default_invite_ttl: std::time::Duration,
}

/// Cheap to clone: everything is behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub rooms: RoomManager,
    pub docs: DocManager,
    pub tokens: Arc<TokenService>,
    pub admin_token: Arc<str>,
    pub config: Arc<RuntimeConfig>,
}
