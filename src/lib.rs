//! heal: when an alert fires, run the right runbook on the right host, once.
//!
//! The library behind the `heal` binary (`src/main.rs` only parses the
//! command line and sets up logging); the fuzz targets use it too.
//!
//! Modules in reading order: the domain (alert → rules → event), the store,
//! the server, the agent and its step runner, and the CLI that ties them up.

pub mod alert;
pub mod config;
pub mod error;
pub mod event;
pub mod heartbeat;
pub mod host;
pub mod kinds;
pub mod notify;
pub mod pg;
pub mod probe;
pub mod redact;
pub mod rules;
pub mod schedule;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod trust;

pub mod server;

pub mod agent;
pub mod client;
pub mod exec;

pub mod cli;
