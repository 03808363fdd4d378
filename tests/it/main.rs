//! Integration tests: the real `heal` binary, real agents, loopback only.

mod support;

mod agent;
mod alertmanager;
mod api;
mod cli;
mod dashboard;
mod intake;
mod lifecycle;
mod manual;
mod notify;
mod ops;
mod reload;
mod security;
mod systemd;
mod tls;
mod watch;
