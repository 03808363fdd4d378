//! This server among those sharing the store: its row in the store's
//! replica list (`store::replicas`), written each second as it renews its
//! part in leading, and the status `/api/v1/status`, `/-/ready`,
//! `/metrics`, `heal status` and the dashboard show of every server.

use serde_json::{json, Value};

use crate::error::Result;
use crate::store::replicas::{self, Beat, Replica};
use crate::store::sql::Db;

use super::State;

/// What this server says of itself beside its id.
pub struct Me {
    /// The host it runs on.
    pub host: String,
    /// The URL it serves on.
    pub address: String,
    /// When it started (ms).
    pub started_at: i64,
}

/// Writes this server's row (an unchanged row only every few seconds).
pub fn beat(state: &State) {
    let beat = Beat {
        id: state.leadership.id.clone(),
        host: state.me.host.clone(),
        address: state.me.address.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_hash: state.config().hash.clone(),
        started_at: state.me.started_at,
    };
    // The lease's renewal, a moment before, logs a failing store.
    if let Err(e) = state.writer.write(move |db| replicas::beat(db, &beat)) {
        log::debug!("replica list: {e}");
    }
}

/// Every server the store knows, which leads, whose config differs.
pub fn list(state: &State, db: Db<'_>) -> Result<Vec<Replica>> {
    let sole = (!state.leadership.is_shared()).then_some(state.leadership.id.as_str());
    replicas::list(db, sole)
}

/// This server and every other: the answer of `GET /api/v1/status`.
pub fn status(state: &State, db: Db<'_>) -> Result<Value> {
    let config = state.config();
    let replicas = list(state, db)?;
    let version = replicas
        .iter()
        .find(|r| r.id == state.leadership.id)
        .and_then(|r| r.config_version);
    Ok(json!({
        "server": {
            "id": state.leadership.id,
            "host": state.me.host,
            "address": state.me.address,
            "version": env!("CARGO_PKG_VERSION"),
            "store": if state.leadership.is_shared() { "postgresql" } else { "sqlite" },
            "leads": state.leadership.leads(),
            "config_sha256": config.hash,
            "config_version": version,
            "started_at": state.me.started_at,
        },
        "replicas": replicas,
    }))
}
