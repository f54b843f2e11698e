//! Silences: label matchers and an active window.
//!
//! A notification is held back, not sent, when at the instant it would be sent an active
//! silence matches its alert's labels (every matcher holds). A silence is active over
//! `[starts_at, ends_at)`. A silence without matchers silences nothing (the API refuses
//! one). What a silence held back of an alert that still fires, is not inhibited and is no
//! longer silenced is notified then (see [`crate::dispatch`]).
//!
//! Matchers are also how a receiver chooses its alerts ([`all_match`]).
//!
//! Instants are microseconds since the Unix epoch, as the store keeps them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A label matcher: `name=value` or `name!=value`. A missing label reads as `""`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    /// The label's name.
    pub label: String,
    /// The value it is compared with.
    pub value: String,
    /// `true` for `!=`.
    #[serde(default)]
    pub negate: bool,
}

impl Matcher {
    /// Reads `name=value` or `name!=value`.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let (label, value, negate) = if let Some((l, v)) = text.split_once("!=") {
            (l, v, true)
        } else if let Some((l, v)) = text.split_once('=') {
            (l, v, false)
        } else {
            return Err(format!("matcher {text:?} is not label=value or label!=value"));
        };
        let label = label.trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("matcher {text:?}: label names are letters, digits and _"));
        }
        Ok(Matcher { label: label.to_string(), value: value.trim().trim_matches('"').to_string(), negate })
    }

    /// Whether it holds of `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        (value == self.value) != self.negate
    }
}

/// `name=value` or `name!=value`, as the API lists it.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.label, if self.negate { "!=" } else { "=" }, self.value)
    }
}

/// Whether every matcher holds (true for none: a receiver without matchers takes everything).
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// A silence: its matchers and when it is active (microseconds, `[starts_at, ends_at)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// All of them must hold.
    pub matchers: Vec<Matcher>,
    /// When it starts silencing.
    pub starts_at: i64,
    /// When it stops (not included).
    pub ends_at: i64,
}

impl Silence {
    /// A silence from matchers as the API takes them (`tenant=acme`); the message names what is
    /// wrong: no matcher, a matcher that does not read, or an end not after the start.
    pub fn parse(matchers: &[String], starts_at: i64, ends_at: i64) -> Result<Silence, String> {
        if matchers.is_empty() {
            return Err("a silence needs at least one matcher (label=value or label!=value)".into());
        }
        let matchers = matchers.iter().map(|m| Matcher::parse(m)).collect::<Result<Vec<_>, _>>()?;
        if ends_at <= starts_at {
            return Err("a silence must end after it starts".into());
        }
        Ok(Silence { matchers, starts_at, ends_at })
    }

    /// Whether it is active at `at`.
    pub fn active_at(&self, at: i64) -> bool {
        self.starts_at <= at && at < self.ends_at
    }

    /// Whether it silences an alert with `labels` at `at`: active, with matchers, all holding.
    pub fn silences(&self, labels: &BTreeMap<String, String>, at: i64) -> bool {
        self.active_at(at) && !self.matchers.is_empty() && all_match(&self.matchers, labels)
    }
}

/// Whether any of `silences` silences an alert with `labels` at `at`.
pub fn silenced(silences: &[Silence], labels: &BTreeMap<String, String>, at: i64) -> bool {
    silences.iter().any(|s| s.silences(labels, at))
}

/// When the next of `silences` to end after `after` ends, if one does: what it held back may
/// be notified then.
pub fn next_end(silences: &[Silence], after: i64) -> Option<i64> {
    silences.iter().map(|s| s.ends_at).filter(|&end| end > after).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matchers_select_labels() {
        let labels = labels(&[("scope", "tenant"), ("tenant", "acme")]);
        assert!(Matcher::parse("tenant=acme").is_ok_and(|m| m.matches(&labels)));
        assert!(Matcher::parse("region!=eu").is_ok_and(|m| m.matches(&labels)));
        assert!(Matcher::parse("scope!=tenant").is_ok_and(|m| !m.matches(&labels)));
        // A label that is missing reads as empty.
        assert!(Matcher::parse("region=").is_ok_and(|m| m.matches(&labels)));
        assert!(Matcher::parse("nothing").is_err());
        assert!(Matcher::parse("bad-name=x").is_err());
    }

    #[test]
    fn matchers_print_as_they_are_written() {
        for text in ["tenant=acme", "scope!=global", "region="] {
            assert_eq!(Matcher::parse(text).map(|m| m.to_string()), Ok(text.to_string()));
        }
        assert_eq!(Matcher::parse(" tenant = \"acme\" ").map(|m| m.to_string()), Ok("tenant=acme".to_string()));
    }

    #[test]
    fn a_silence_is_active_from_its_start_until_just_before_its_end() {
        let s = Silence::parse(&["tenant=acme".into()], 100, 200).expect("a silence");
        let acme = labels(&[("tenant", "acme")]);
        let zed = labels(&[("tenant", "zed")]);
        let at = |t: i64| (s.active_at(t), s.silences(&acme, t), s.silences(&zed, t));
        assert_eq!(at(99), (false, false, false));
        assert_eq!(at(100), (true, true, false));
        assert_eq!(at(199), (true, true, false));
        assert_eq!(at(200), (false, false, false));
    }

    #[test]
    fn every_matcher_must_hold_and_none_means_nothing_is_silenced() {
        let acme = labels(&[("tenant", "acme"), ("scope", "tenant")]);
        let both = Silence::parse(&["tenant=acme".into(), "scope=region".into()], 0, 10).expect("a silence");
        assert!(!both.silences(&acme, 5));
        let empty = Silence { matchers: Vec::new(), starts_at: 0, ends_at: 10 };
        assert!(!empty.silences(&acme, 5), "a silence without matchers silences nothing");
        let one = Silence::parse(&["scope=tenant".into()], 0, 10).expect("a silence");
        assert!(silenced(&[both, empty, one], &acme, 5));
    }

    #[test]
    fn bad_silences_say_what_is_wrong() {
        assert!(Silence::parse(&[], 0, 10).expect_err("no matcher").contains("at least one matcher"));
        assert!(Silence::parse(&["tenant".into()], 0, 10).expect_err("no value").contains("label=value"));
        assert!(Silence::parse(&["tenant=a".into()], 10, 10).expect_err("empty").contains("end after"));
    }

    #[test]
    fn the_next_end_is_the_earliest_after_now() {
        let s = |starts_at, ends_at| Silence { matchers: vec![Matcher { label: "a".into(), value: "b".into(), negate: false }], starts_at, ends_at };
        let all = [s(0, 50), s(0, 30), s(40, 90)];
        assert_eq!(next_end(&all, 10), Some(30));
        assert_eq!(next_end(&all, 30), Some(50));
        assert_eq!(next_end(&all, 90), None);
    }
}
