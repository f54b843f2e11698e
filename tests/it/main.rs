//! End-to-end tests of the `cohort` binary (one test binary for the root package).

mod cli;
