//! End-to-end tests of the `cohort` binary (one test binary for the root package).

mod alerts;
mod bad_input;
mod ballista;
mod benchmarks;
mod cli;
mod crash;
mod docs;
mod estimator;
mod fencing;
mod members;
mod notifications;
mod prometheus;
mod replicas;
mod retries;
mod schedules;
mod server;
mod service;
mod silences;
mod simulate;
mod snapshots;
mod telemetry;
mod tokens;
mod triage;
mod upgrade;
mod webhooks;
