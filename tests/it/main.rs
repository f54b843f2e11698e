//! End-to-end tests of the `cohort` binary (one test binary for the root package).
//!
//! The command line, and `cohort serve` as a real process: `server.rs` starts it on a loopback
//! port and reads the address it prints. Service tests run on SQLite and on PostgreSQL (a
//! scratch database per test, dropped after it, when `COHORT_TEST_DATABASE_URL` names a server;
//! `.ci/run` sets it). Each module's `//!` says what it shows.

mod alerts;
mod bad_input;
mod ballista;
mod benchmarks;
mod cli;
mod crash;
mod docs;
mod estimator;
mod fencing;
mod lakehouse;
mod layout;
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
