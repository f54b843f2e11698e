//! `cohort alerts replay`: job outcomes in (JSON lines, any order), every transition out, or
//! every notification ([`crate::pipeline`]) with the silences of a silences file.
//!
//! [`parse_events`] names the (1-based) line of anything that is not an outcome; the flat shape
//! every producer writes is scanned directly and anything else goes to serde_json, so both
//! paths accept exactly the same lines. Times are RFC 3339 in ([`parse_time`]) and out
//! ([`format_time`]: UTC, milliseconds, `Z`), milliseconds inside. [`replay`] sorts the
//! outcomes by time and runs them through the service's own [`Evaluator`];
//! [`write_transitions`] writes JSON lines.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use serde::Deserialize;

use crate::pipeline::Notification;
use crate::rule::{Evaluator, FailureRule, Transition};
use crate::silence::Silence;
use crate::{Error, Result};

/// One job outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// Its tenant (shared by all of the tenant's outcomes).
    pub tenant: Arc<str>,
    /// Its region.
    pub region: Arc<str>,
    /// Failed (else succeeded).
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
    let mut events = Vec::with_capacity(text.len() / 64);
    // Tenants and regions repeat: one allocation each, not one per line.
    let mut names: HashMap<Box<str>, Arc<str>> = HashMap::new();
    let mut intern = |name: &str| -> Arc<str> {
        match names.get(name) {
            Some(n) => Arc::clone(n),
            None => {
                let n: Arc<str> = Arc::from(name);
                names.insert(Box::from(name), Arc::clone(&n));
                n
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Input { line: i + 1, message: why };
        let parsed = parse_line(line).map_err(|e| bad(format!("not a job outcome: {e}")))?;
        let at = parse_time(&parsed.at).map_err(&bad)?;
        let failed = match parsed.outcome.as_ref() {
            "failed" => true,
            "succeeded" => false,
            other => return Err(bad(format!("outcome must be \"succeeded\" or \"failed\", not {other:?}"))),
        };
        events.push(Outcome { at, tenant: intern(&parsed.tenant), region: intern(&parsed.region), failed });
    }
    Ok(events)
}

/// One line's fields: the flat shape every producer writes is scanned directly; anything else
/// (escapes, numbers, nesting, missing or repeated fields, junk) goes to serde_json, which
/// accepts or rejects it, so both paths accept exactly the same lines.
fn parse_line(line: &str) -> std::result::Result<Line<'_>, serde_json::Error> {
    match scan_flat(line) {
        Some(parsed) => Ok(parsed),
        None => serde_json::from_str(line),
    }
}

/// A JSON object whose values are all strings without escapes or control characters, with
/// the four fields once each; `None` for anything else.
fn scan_flat(line: &str) -> Option<Line<'_>> {
    let b = line.as_bytes();
    let ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    // A plain string starting at `i` (its opening quote): its text and the index after it.
    let string = |i: usize| -> Option<(&str, usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() {
            match b[j] {
                b'"' => return Some((line.get(start..j)?, j + 1)),
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => j += 1,
            }
        }
        None
    };
    let mut fields: [Option<&str>; 4] = [None; 4];
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    loop {
        let (key, next) = string(i)?;
        i = ws(next);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let (value, next) = string(ws(i + 1))?;
        let slot = match key {
            "at" => Some(0),
            "tenant" => Some(1),
            "region" => Some(2),
            "outcome" => Some(3),
            _ => None,
        };
        if let Some(k) = slot {
            if fields[k].is_some() {
                return None;
            }
            fields[k] = Some(value);
        }
        i = ws(next);
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    if ws(i + 1) != b.len() {
        return None;
    }
    let [Some(at), Some(tenant), Some(region), Some(outcome)] = fields else { return None };
    Some(Line { at: Cow::Borrowed(at), tenant: Cow::Borrowed(tenant), region: Cow::Borrowed(region), outcome: Cow::Borrowed(outcome) })
}

/// RFC 3339 to milliseconds since the epoch (sub-millisecond digits are dropped).
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    if let Some(ms) = parse_time_fast(text.as_bytes()) {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| format!("`at` is not an RFC 3339 time ({text:?}: {e})"))
}

/// The common shapes, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, without chrono (replays
/// read millions of them). Anything else, leap seconds included, is left to chrono: `None`.
fn parse_time_fast(b: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = digits(i + 1..i + 3)?;
            let m = digits(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' { h * 60 + m } else { -(h * 60 + m) }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60) * 1_000) + millis)
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

/// Each tenant's region, as the outcomes name it (the first outcome of a tenant decides): the
/// `region` label of its alerts.
pub fn regions(events: &[Outcome]) -> HashMap<String, String> {
    let mut regions = HashMap::new();
    for e in events {
        regions.entry(e.tenant.to_string()).or_insert_with(|| e.region.to_string());
    }
    regions
}

/// One line of a silences file: a silence as `POST /v1/silences` takes it, with when it starts
/// (`GET /v1/silences` lists them so; other fields are ignored).
#[derive(Deserialize)]
struct SilenceLine {
    matchers: Vec<String>,
    starts_at: String,
    ends_at: Option<String>,
    duration_seconds: Option<f64>,
}

/// Parses a silences file: one JSON object per line, `{"matchers": ["tenant=acme"],
/// "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T01:00:00Z"}` (or
/// `"duration_seconds": 3600` for `ends_at`). Blank lines are skipped; any other line that is
/// not a silence is an error naming its (1-based) line number.
pub fn parse_silences(text: &str) -> Result<Vec<Silence>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::Input { line: i + 1, message: why };
        let parsed: SilenceLine = serde_json::from_str(line).map_err(|e| bad(format!("not a silence: {e}")))?;
        let starts_at = parse_time_micros(&parsed.starts_at).map_err(|e| bad(format!("starts_at: {e}")))?;
        let ends_at = match (&parsed.ends_at, parsed.duration_seconds) {
            (Some(end), None) => parse_time_micros(end).map_err(|e| bad(format!("ends_at: {e}")))?,
            (None, Some(seconds)) if seconds.is_finite() && seconds > 0.0 && seconds <= 366.0 * 86_400.0 => starts_at.saturating_add((seconds * 1e6) as i64),
            (None, Some(_)) => return Err(bad("duration_seconds must be more than 0 and at most a year".into())),
            _ => return Err(bad("a silence needs ends_at or duration_seconds (one of them)".into())),
        };
        out.push(Silence::parse(&parsed.matchers, starts_at, ends_at).map_err(bad)?);
    }
    Ok(out)
}

/// RFC 3339 to microseconds since the epoch (a silence's instants keep their microseconds, as
/// the service stores them).
fn parse_time_micros(text: &str) -> std::result::Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_micros()).map_err(|e| format!("not an RFC 3339 time ({text:?}: {e})"))
}

/// Writes notifications as JSON lines: when (RFC 3339, milliseconds), the alert (`alertname`,
/// `scope`, `key`), what its payload says (`state`), why it was sent (`kind`) and the alerts it
/// lists as inhibited under it.
pub fn write_notifications(out: &mut impl Write, notifications: &[Notification]) -> std::io::Result<()> {
    for n in notifications {
        let line = serde_json::json!({
            "at": format_time(n.at.div_euclid(1000)),
            "alertname": n.rule.alertname(),
            "scope": n.scope.as_str(),
            "key": n.key,
            "state": n.state.as_str(),
            "kind": n.kind.as_str(),
            "inhibited": n.inhibited,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fields(l: &Line<'_>) -> [String; 4] {
        [l.at.to_string(), l.tenant.to_string(), l.region.to_string(), l.outcome.to_string()]
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""at": "2026-03-01T00:00:00.000Z""#.to_string()),
            Just(r#""tenant": "t1""#.to_string()),
            Just(r#""tenant":"t\u0031""#.to_string()),
            Just(r#""region": "r1""#.to_string()),
            Just(r#""outcome": "failed""#.to_string()),
            Just(r#""outcome": "succeeded""#.to_string()),
            Just(r#""job": "j1""#.to_string()),
            Just(r#""job": 17"#.to_string()),
            Just(r#""job": {"a": 1}"#.to_string()),
            Just(r#""x": "a\"b""#.to_string()),
            Just(r#""ü": "é""#.to_string()),
            Just(r#""bad": "#.to_string()),
            Just(r#"junk"#.to_string()),
            // Text from all of Unicode, as a value, as a key and bare.
            any::<String>().prop_map(|s| format!("\"tenant\": \"{}\"", s.replace(['"', '\\'], ""))),
            any::<String>().prop_map(|s| format!("\"{}\": \"x\"", s.replace(['"', '\\'], ""))),
            any::<String>(),
        ]
    }

    proptest! {
        /// The scanner and serde_json agree on every line, the scanner answering only for
        /// lines serde_json accepts, with the same fields.
        #[test]
        fn the_scanner_agrees_with_serde_json(
            pieces in proptest::collection::vec(piece(), 0..7),
            spaces in prop::sample::select(vec!["", " ", "  ", "\t"]),
            close in prop::sample::select(vec!["}", "}  ", "", "} x", "},"]),
        ) {
            let mut pieces = pieces;
            // Most lines carry the four fields, in a random order among the others.
            if pieces.len() % 2 == 0 {
                pieces.extend([r#""at": "2026-03-01T00:00:00Z""#, r#""tenant": "t""#, r#""region": "r""#, r#""outcome": "failed""#].map(String::from));
                pieces.reverse();
            }
            let line = format!("{spaces}{{{spaces}{}{spaces}{close}", pieces.join(&format!(",{spaces}")));
            let serde: std::result::Result<Line<'_>, _> = serde_json::from_str(&line);
            if let Some(scanned) = scan_flat(&line) {
                prop_assert_eq!(serde.map(|l| fields(&l)).ok(), Some(fields(&scanned)), "{}", line);
            }
            prop_assert_eq!(parse_line(&line).map(|l| fields(&l)).ok(), serde_json::from_str::<Line<'_>>(&line).map(|l| fields(&l)).ok(), "{}", line);
        }
    }

    #[test]
    fn the_common_shape_is_scanned() {
        let line = r#"{"at": "2026-03-01T00:00:00.123Z", "tenant": "t7", "region": "r1", "job": "j1", "outcome": "failed"}"#;
        let l = scan_flat(line).expect("scanned");
        assert_eq!(fields(&l), ["2026-03-01T00:00:00.123Z", "t7", "r1", "failed"].map(String::from));
    }
}
