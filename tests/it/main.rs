//! Integration tests: the real `heal` binary, real agents, loopback only.

mod support;

mod agent;
mod alertmanager;
mod api;
mod cli;
mod crash;
mod intake;
mod lifecycle;
mod metrics;
mod notify;
mod ops;
mod reload;
mod schema;
mod security;
mod systemd;
mod tls;
mod watch;
