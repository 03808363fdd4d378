//! Integration tests: the real `heal` binary, real agents, loopback only.

mod support;

mod agent;
mod alertmanager;
mod api;
mod cli;
mod crash;
mod dashboard;
mod faults;
mod front;
mod intake;
mod lifecycle;
mod manual;
mod metrics;
mod notify;
mod ops;
mod reload;
mod schema;
mod security;
mod systemd;
mod tls;
mod watch;
