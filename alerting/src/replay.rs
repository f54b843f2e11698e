//! `cohort alerts replay`: job outcomes in (JSON lines, any order), every transition out.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;

use crate::rule::{Evaluator, FailureRule, Transition};
use crate::{Error, Result};

/// One job outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub tenant: String,
    pub region: String,
    pub failed: bool,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    at: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
}

/// Parses the events file. Blank lines are skipped; any other line that is not an outcome
/// is an error naming its (1-based) line number.
pub fn parse_events(text: &str) -> Result<Vec<Outcome>> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Input { line: i + 1, message: why };
        let parsed: Line<'_> = serde_json::from_str(line).map_err(|e| bad(format!("not a job outcome: {e}")))?;
        let at = parse_time(&parsed.at).map_err(|e| bad(e))?;
        let failed = match parsed.outcome.as_ref() {
            "failed" => true,
            "succeeded" => false,
            other => return Err(bad(format!("outcome must be \"succeeded\" or \"failed\", not {other:?}"))),
        };
        events.push(Outcome { at, tenant: parsed.tenant.into_owned(), region: parsed.region.into_owned(), failed });
    }
    Ok(events)
}

/// RFC 3339 to milliseconds since the epoch (sub-millisecond digits are dropped).
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`at` is not an RFC 3339 time ({text:?}: {e})"))
}

/// Milliseconds since the epoch as RFC 3339, UTC, milliseconds, `Z`.
pub fn format_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Every transition the rule gives for these outcomes, in output order.
pub fn replay(rule: FailureRule, mut events: Vec<Outcome>) -> Vec<Transition> {
    events.sort_by_key(|e| e.at);
    let mut evaluator = Evaluator::new(rule);
    let mut out = Vec::new();
    for e in &events {
        if e.failed {
            evaluator.fail(e.at, &e.tenant, &e.region, &mut out);
        }
    }
    evaluator.finish(&mut out);
    out
}

/// Writes transitions as JSON lines.
pub fn write_transitions(out: &mut impl Write, transitions: &[Transition]) -> std::io::Result<()> {
    for t in transitions {
        let line = serde_json::json!({
            "at": format_time(t.at),
            "scope": t.scope.as_str(),
            "key": t.key,
            "state": t.state.as_str(),
            "failures": t.failures,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
