//! `cohort-dashboards`: how Cohort shows itself.
//!
//! This crate renders the built-in web dashboard's pages: the HTML frame ([`html`]) and the
//! charts, drawn on the server as SVG ([`svg`]) — no script, nothing fetched from elsewhere.
//! The control plane gathers the data and serves the pages. Beside the code, as files:
//! `grafana/` (dashboards to provision) and `prometheus/` (alerting rules with `promtool`
//! tests), both checked by the root package's tests against what `/metrics` exports.
#![deny(missing_docs)]

pub mod html;
pub mod svg;
