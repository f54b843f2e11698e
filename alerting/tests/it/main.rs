//! The alert rule against the worked cases and against a naive recount of the window; the
//! notification pipeline against its worked cases.

use std::path::Path;

use cohort_alerting::replay::{format_time, parse_events, parse_time, replay};
use cohort_alerting::rule::{Evaluator, FailureRule, Scope, Transition, recount};
use proptest::prelude::*;
use serde_json::Value;

fn as_lines(transitions: &[Transition]) -> Vec<(String, String, String, String, u64)> {
    transitions.iter().map(|t| (format_time(t.at), t.scope.as_str().to_string(), t.key.clone(), t.state.as_str().to_string(), u64::from(t.failures))).collect()
}

#[test]
fn the_worked_cases_replay_to_their_expected_transitions() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&cases).expect("cases").filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "the cases are copied from shared/examples/alerts");
    for dir in dirs {
        let events = parse_events(&std::fs::read_to_string(dir.join("events.jsonl")).expect("events")).expect("parse");
        let got = as_lines(&replay(FailureRule::default(), events));
        let want: Vec<(String, String, String, String, u64)> = std::fs::read_to_string(dir.join("expected.jsonl"))
            .expect("expected")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                let s = |k: &str| v[k].as_str().expect("text").to_string();
                (s("at"), s("scope"), s("key"), s("state"), v["failures"].as_u64().expect("count"))
            })
            .collect();
        assert_eq!(got, want, "{}", dir.display());
    }
}

#[test]
fn bad_lines_are_named_by_number() {
    let text = "{\"at\": \"2026-01-01T00:00:00.000Z\", \"tenant\": \"a\", \"region\": \"r\", \"outcome\": \"failed\"}\n\nnot json\n";
    let err = parse_events(text).expect_err("line 3 is not json").to_string();
    assert!(err.starts_with("line 3:"), "{err}");
    let text = "{\"at\": \"yesterday\", \"tenant\": \"a\", \"region\": \"r\", \"outcome\": \"failed\"}";
    assert!(parse_events(text).expect_err("bad time").to_string().contains("RFC 3339"));
    let text = "{\"at\": \"2026-01-01T00:00:00Z\", \"tenant\": \"a\", \"region\": \"r\", \"outcome\": \"maybe\"}";
    assert!(parse_events(text).expect_err("bad outcome").to_string().contains("succeeded"));
    assert_eq!(parse_time("2026-01-01T00:00:00.123456+01:00"), Ok(1_767_222_000_123));
}

/// Failures on a coarse grid so that arrivals coincide with each other and with expiries.
fn failures() -> impl Strategy<Value = (FailureRule, Vec<(i64, String, String)>)> {
    let rule = (1i64..6, 1u32..5, 1i64..6, 1u32..5, 1i64..6, 1u32..5).prop_map(|(gw, gt, rw, rt, tw, tt)| FailureRule {
        global: cohort_alerting::rule::Window { window_ms: gw * 10, threshold: gt },
        region: cohort_alerting::rule::Window { window_ms: rw * 10, threshold: rt },
        tenant: cohort_alerting::rule::Window { window_ms: tw * 10, threshold: tt },
    });
    let event = (0i64..40, 0u8..4, 0u8..2).prop_map(|(slot, tenant, region)| (1_000 + slot * 5, format!("t{tenant}"), format!("r{}", (tenant + region) % 3)));
    (rule, proptest::collection::vec(event, 0..60))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_incremental_evaluator_agrees_with_a_recount(input in failures()) {
        let (rule, mut events) = input;
        let mut want = recount(rule, &events);
        want.sort_by(|a, b| (a.at, a.scope, &a.key).cmp(&(b.at, b.scope, &b.key)));
        events.sort_by_key(|e| e.0);
        let mut evaluator = Evaluator::new(rule);
        let mut got = Vec::new();
        for (at, tenant, region) in &events {
            evaluator.fail(*at, tenant, region, &mut got);
        }
        evaluator.finish(&mut got);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(evaluator.held(), 0);
        prop_assert!(evaluator.firing().is_empty());
    }

    #[test]
    fn advancing_in_steps_changes_nothing(input in failures(), step in 1i64..30) {
        let (rule, mut events) = input;
        events.sort_by_key(|e| e.0);
        let mut whole = Evaluator::new(rule);
        let mut want = Vec::new();
        for (at, tenant, region) in &events {
            whole.fail(*at, tenant, region, &mut want);
        }
        whole.finish(&mut want);
        // The live service advances the clock between failures; the transitions are the same.
        let mut live = Evaluator::new(rule);
        let mut got = Vec::new();
        let mut clock = 0;
        for (at, tenant, region) in &events {
            while clock + step <= *at {
                clock += step;
                live.advance(clock, &mut got);
            }
            live.fail(*at, tenant, region, &mut got);
        }
        live.finish(&mut got);
        prop_assert_eq!(got, want);
    }
}

/// The cases of `tests/notifications/`: each directory's events (and silences) replayed with its
/// settings give its expected notifications, line for line.
#[test]
fn the_notification_cases_replay_to_their_expected_notifications() {
    use cohort_alerting::AlertRules;
    use cohort_alerting::config::parse_duration_ms;
    use cohort_alerting::dispatch::Timing;
    use cohort_alerting::pipeline::{Settings, failure_changes, notifications};
    use cohort_alerting::replay::{parse_silences, regions, write_notifications};

    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notifications");
    let mut dirs: Vec<_> = std::fs::read_dir(&cases).expect("cases").filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "{} cases", dirs.len());
    for dir in dirs {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()));
        let settings: Value = serde_json::from_str(&read("settings.json")).expect("settings");
        let rules: AlertRules = serde_json::from_value(settings["alerts"].clone()).expect("[alerts] rules");
        let interval = |name: &str| {
            let ms = parse_duration_ms(settings[name].as_str().expect("an interval")).expect("a duration");
            std::time::Duration::from_millis(ms.unsigned_abs())
        };
        let timing = Timing::new(interval("group_interval"), interval("repeat_interval"));
        let silences = if dir.join("silences.jsonl").exists() { parse_silences(&read("silences.jsonl")).expect("silences") } else { Vec::new() };
        let events = parse_events(&read("events.jsonl")).expect("events");
        let tenants = regions(&events);
        let transitions = replay(rules.failure_rule(), events);
        let sent = notifications(Settings { inhibit: rules.inhibit, timing }, silences, failure_changes(&transitions, &tenants));
        let mut out = Vec::new();
        write_notifications(&mut out, &sent).expect("write");
        let got: Vec<Value> = String::from_utf8_lossy(&out).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let want: Vec<Value> = read("expected.jsonl").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(got, want, "{}", dir.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Without inhibition and silences, and with repeats further apart than the replay lasts,
    /// every transition is notified once, at its instant, and nothing else is.
    #[test]
    fn without_inhibition_or_silences_each_transition_is_notified_once(input in failures()) {
        use cohort_alerting::dispatch::{Kind, Timing};
        use cohort_alerting::pipeline::{Settings, failure_changes, notifications};
        let (rule, events) = input;
        let outcomes: Vec<_> = events
            .iter()
            .map(|(at, tenant, region)| cohort_alerting::replay::Outcome { at: *at, tenant: tenant.as_str().into(), region: region.as_str().into(), failed: true })
            .collect();
        let tenants = cohort_alerting::replay::regions(&outcomes);
        let transitions = replay(rule, outcomes);
        let settings = Settings { inhibit: false, timing: Timing::new(std::time::Duration::ZERO, std::time::Duration::from_secs(86_400)) };
        let sent = notifications(settings, Vec::new(), failure_changes(&transitions, &tenants));
        let want: Vec<(i64, Scope, String, &str)> = transitions.iter().map(|t| (t.at * 1000, t.scope, t.key.clone(), t.state.as_str())).collect();
        let got: Vec<(i64, Scope, String, &str)> = sent.iter().map(|n| (n.at, n.scope, n.key.clone(), n.state.as_str())).collect();
        prop_assert_eq!(got, want);
        for n in &sent {
            prop_assert_eq!(n.kind, if n.state.as_str() == "firing" { Kind::Firing } else { Kind::Resolved });
        }
    }
}

#[test]
fn memory_is_bounded_by_the_failures_inside_the_window() {
    let mut evaluator = Evaluator::new(FailureRule::uniform(1_000, 5));
    let mut out = Vec::new();
    for i in 0..100_000i64 {
        evaluator.fail(i * 10, &format!("t{}", i % 7), "r", &mut out);
    }
    // 100 failures a second, a one-second window, three scopes.
    assert!(evaluator.held() <= 3 * 101, "{}", evaluator.held());
    assert_eq!(evaluator.firing().iter().filter(|f| f.0 == Scope::Tenant).count(), 7);
}

proptest! {
    /// The fast path for common RFC 3339 shapes agrees with chrono, and rejects what it rejects.
    #[test]
    fn times_parse_as_chrono_parses_them(
        year in 0i32..=9999, month in 0u32..=13, day in 0u32..=32, hour in 0u32..=24, minute in 0u32..=60, second in 0u32..=60,
        fraction in proptest::option::of("[0-9]{1,9}"),
        separator in prop::sample::select(vec!["T", "t", " ", "_"]),
        zone in prop::sample::select(vec!["Z".to_string(), "z".into(), "+00:00".into(), "-05:30".into(), "+14:00".into(), "+24:00".into(), "+02:60".into(), "".into(), "+0200".into()]),
    ) {
        let text = format!(
            "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{}{zone}",
            fraction.map(|f| format!(".{f}")).unwrap_or_default()
        );
        let chrono = chrono::DateTime::parse_from_rfc3339(&text).map(|t| t.timestamp_millis()).ok();
        prop_assert_eq!(parse_time(&text).ok(), chrono, "{}", text);
    }
}

/// The normalization cases of `tests/triage/signatures.txt`: every message of a block has the
/// block's signature (and category); `apart` blocks differ from every other block.
#[test]
fn failure_messages_normalize_to_their_signatures() {
    use cohort_alerting::triage::{classify, signature};
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/triage/signatures.txt")).expect("cases");
    struct Block {
        messages: Vec<(String, String)>,
        expected: String,
        category: Option<String>,
        apart: bool,
    }
    let mut blocks = Vec::new();
    for chunk in text.split("\n\n") {
        let mut block = Block { messages: Vec::new(), expected: String::new(), category: None, apart: false };
        for line in chunk.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            if let Some(sig) = line.strip_prefix("= ") {
                block.expected = sig.to_string();
            } else if let Some(cat) = line.strip_prefix("~ ") {
                block.category = Some(cat.to_string());
            } else if line.trim() == "apart" {
                block.apart = true;
            } else {
                let (class, message) = line.split_once(" | ").unwrap_or_else(|| panic!("not `class | message`: {line}"));
                block.messages.push((class.to_string(), message.to_string()));
            }
        }
        if !block.messages.is_empty() {
            blocks.push(block);
        }
    }
    assert!(blocks.len() >= 12, "{} blocks", blocks.len());
    for b in &blocks {
        for (class, message) in &b.messages {
            assert_eq!(signature(class, message), b.expected, "{class} | {message}");
            if let Some(category) = &b.category {
                let got = serde_json::to_value(classify(class, message)).expect("json");
                assert_eq!(got.as_str(), Some(category.as_str()), "{class} | {message}");
            }
        }
    }
    for (i, b) in blocks.iter().enumerate().filter(|(_, b)| b.apart) {
        for (j, other) in blocks.iter().enumerate() {
            assert!(i == j || other.expected != b.expected, "{:?} should stay apart from block {j}", b.expected);
        }
    }
}

#[test]
fn a_report_puts_new_signatures_first_with_their_reach() {
    use cohort_alerting::triage::{Category, Failure, FiredAlert, report};
    let f = |at: i64, tenant: &str, class: &str, message: &str, recovered: bool| Failure {
        at,
        tenant: tenant.into(),
        region: format!("r-{}", &tenant[..1]),
        segment: "s".into(),
        job: format!("job-{at}"),
        attempt: 1,
        class: class.into(),
        message: message.into(),
        recovered,
        job_failed: !recovered,
        grant: Some(1 << 20),
        data: Vec::new(),
    };
    let hour = 3_600_000;
    let failures = vec![
        // Seen in the window before: old, and its trend is known.
        f(hour / 2, "a1", "timeout", "ran past its deadline of 30.000 s and was stopped", false),
        f(hour + 10, "a1", "timeout", "ran past its deadline of 31.000 s and was stopped", false),
        f(hour + 20, "b1", "timeout", "ran past its deadline of 2.5 s and was stopped", true),
        f(hour + 30, "a2", "timeout", "ran past its deadline of 9 s and was stopped", false),
        // New in this window.
        f(hour + 40, "c1", "source_unavailable", "source \"orders\" unreadable: cannot read /x/1.parquet: No such file or directory (os error 2)", false),
        // Outside both windows.
        f(-5 * hour, "z", "internal", "internal error (a bug in Cohort): boom", false),
        f(2 * hour, "z", "internal", "internal error (a bug in Cohort): boom", false),
    ];
    let alerts = [
        // Fed by a1's final failures (at hour + 10, within its window before it started).
        FiredAlert { id: "al-a1".into(), scope: "tenant".into(), key: "a1".into(), started: hour + 15, resolved: Some(hour + 600_000) },
        // Fed by every final failure of region r-a.
        FiredAlert { id: "al-ra".into(), scope: "region".into(), key: "r-a".into(), started: hour + 35, resolved: None },
        // Resolved before anything of this window failed: fed by nothing here.
        FiredAlert { id: "al-old".into(), scope: "global".into(), key: "global".into(), started: -hour, resolved: Some(0) },
    ];
    let r = report(&failures, hour, 2 * hour, 1, &alerts, 600_000, None);
    assert_eq!(r.failures, 4);
    assert_eq!(r.signatures.len(), 2);
    let new = &r.signatures[0];
    assert!(new.new && new.count == 1 && new.category == Category::SourceUnavailable, "{new:?}");
    let old = &r.signatures[1];
    assert!(!old.new, "{old:?}");
    assert_eq!((old.count, old.previous_count, old.recovered, old.unrecovered), (3, 1, 1, 2));
    assert_eq!(old.tenants, ["a1", "a2", "b1"]);
    assert_eq!(old.regions, ["r-a", "r-b"]);
    assert_eq!((old.first_seen, old.last_seen), (hour + 10, hour + 30));
    assert_eq!(old.alerts, ["al-a1", "al-ra"]);
    assert_eq!(new.alerts, Vec::<String>::new(), "c1 is in region r-c: no alert of its own");
    let md = cohort_alerting::triage::markdown(&r);
    assert!(md.contains("## NEW source_unavailable"), "{md}");
    assert!(r.signatures.iter().all(|s| !s.alerts_pending), "nothing said of the evaluator: nothing pending");

    // Made while the evaluator has taken in failures up to hour + 35 only: c1's final failure
    // (hour + 40) may still raise alerts; a2's (hour + 30) has been evaluated.
    let r = report(&failures, hour, 2 * hour, 1, &alerts, 600_000, Some(hour + 35));
    assert_eq!(r.alerts_evaluated_until, Some(hour + 35));
    assert!(r.signatures[0].alerts_pending, "{:?}", r.signatures[0]);
    assert!(!r.signatures[1].alerts_pending, "{:?}", r.signatures[1]);
    assert!(cohort_alerting::triage::markdown(&r).contains("still being evaluated"));
}

/// The same out-of-memory error over data with duplicate keys is a data-quality signature,
/// apart from the one over clean data; the finding is in the report.
#[test]
fn data_findings_make_a_signature_of_their_own() {
    use cohort_alerting::triage::{Category, DataFinding, Failure, report};
    let oom = |job: &str, data: Vec<DataFinding>| Failure {
        at: 10,
        tenant: job.into(),
        region: "eu".into(),
        segment: "s".into(),
        job: job.into(),
        attempt: 1,
        class: "resources_exhausted".into(),
        message: format!("memory limit of {} bytes was not enough: Failed to allocate additional 2.0 MB for {job}", job.len() * 1000),
        recovered: false,
        job_failed: true,
        grant: Some(job.len() as u64 * 1000),
        data,
    };
    let dup = DataFinding { kind: "duplicate_keys".into(), object: "order".into(), field: "order_id".into(), share: 0.9, sampled: 50_000 };
    let failures = vec![
        oom("HashJoinInput[0]", vec![]),
        oom("GroupedHashAggregateStream[3]", vec![]),
        oom("HashJoinInput[1]", vec![dup.clone()]),
        oom("ExternalSorter[0]", vec![dup]),
    ];
    let r = report(&failures, 0, 100, 1, &[], 600_000, None);
    assert_eq!(r.signatures.len(), 2, "{:#?}", r.signatures);
    let by = |c: Category| r.signatures.iter().find(|s| s.category == c).unwrap_or_else(|| panic!("no {c:?}"));
    let data = by(Category::DataQuality);
    assert_eq!(data.count, 2);
    assert!(data.signature.ends_with("[data: duplicate_keys]"), "{}", data.signature);
    assert_eq!(data.data_quality, ["order.order_id: 90% of 50000 sampled rows repeat a primary key"]);
    assert_eq!(data.max_grant_bytes, Some(17_000), "the larger grant of the two");
    assert_eq!(by(Category::ResourcesExhausted).count, 2);
}
