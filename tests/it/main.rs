//! Integration tests: the real `heal` binary, real agents, loopback only.

mod support;

mod agent;
mod agents;
mod alert_files;
mod alertmanager;
mod api;
mod cli;
mod crash;
mod dashboard;
mod docs;
mod email;
mod examples;
mod faults;
mod filters;
mod front;
mod guard;
mod intake;
mod layers;
mod lifecycle;
mod manual;
mod metrics;
mod names;
mod notify;
mod ops;
mod pg_harness;
mod postgres;
mod reload;
mod schema;
mod secrets;
mod security;
mod servers;
mod store;
mod systemd;
mod tls;
mod watch;
