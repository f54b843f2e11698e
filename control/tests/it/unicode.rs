//! The service's own textual inputs drawn from all of Unicode: configuration files and
//! `COHORT_*` variables, sizes, durations, ids, cron schedules and time zones, and the
//! triage normalizer over failure messages. Each is an answer or an error, never a panic.

use std::collections::BTreeMap;

use cohort_control::Config;
use cohort_control::config::parse_bytes;
use cohort_control::schedules::CronSchedule;
use proptest::prelude::*;

/// One character, from anywhere in Unicode, often one that byte-indexed code trips on.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec![
            'é', '\u{301}', 'ß', 'İ', '٣', '０', '７', '𝟙', '½', 'ｋ', 'Ｍ', 'ｉ', 'ｂ', '\0', '\u{200b}', '\u{202e}', '\u{feff}', '😀', '*',
            '/', ',', '-', '?', '#', 'L', 'W', '.', '=', '"', '\'', '[', ']', '\n', ' ', 'k', 'M', 'i', 'B', 'm', 's', 'h', 'd', '0', '5', '9',
        ]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(character(), 0..16).prop_map(|cs| cs.into_iter().collect())
}

/// Text spliced into `base` at character `at` (modulo its length).
fn splice(base: &str, at: usize, insert: &str) -> String {
    let n = base.chars().count();
    let i = base.char_indices().map(|(i, _)| i).nth(at % (n + 1)).unwrap_or(base.len());
    format!("{}{insert}{}", &base[..i], &base[i..])
}

/// The variables `Config::load` reads, with the example configuration's keys.
const VARIABLES: [&str; 24] = [
    "COHORT_LISTEN",
    "COHORT_WORKERS",
    "COHORT_MEMORY_BUDGET",
    "COHORT_MIN_GRANT",
    "COHORT_MAX_BODY",
    "COHORT_LEASE_SECONDS",
    "COHORT_POLL_MS",
    "COHORT_BALLISTA",
    "COHORT_LOG_FORMAT",
    "COHORT_RETRY_ATTEMPTS",
    "COHORT_DEADLINE_FACTOR",
    "COHORT_ESTIMATOR",
    "COHORT_ESTIMATOR_COVERAGE",
    "COHORT_ALERT_SETTLE_MS",
    "COHORT_EXTERNAL_URL",
    "COHORT_TRIAGE_SCHEDULE",
    "COHORT_TRIAGE_WINDOW_SECONDS",
    "COHORT_GRANT_PER_SOURCE_BYTE",
    "COHORT_INSTANCE",
    "COHORT_DATABASE_URL",
    "COHORT_WEBHOOK_TIMEOUT_SECONDS",
    "COHORT_METRICS_TOP_TENANTS",
    "COHORT_OTLP_ENDPOINT",
    "COHORT_CATCH_UP_SECONDS",
];

fn example_config() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cohort.example.toml")).expect("cohort.example.toml")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Sizes, durations and ids: any text is parsed or refused.
    #[test]
    fn sizes_durations_and_ids_from_all_of_unicode(t in text(), digits in 0u32..100_000) {
        let _ = parse_bytes(&t);
        let _ = parse_bytes(&format!("{digits}{t}"));
        let _ = cohort_alerting::config::parse_duration_ms(&t);
        let _ = cohort_alerting::config::parse_duration_ms(&format!("{digits}{t}"));
        let _ = cohort_control::valid_id(&t);
        prop_assert!(!cohort_control::valid_id(&t) || t.is_ascii(), "{:?} is not an id", t);
    }

    /// Configuration: every variable and any spot of the example file given arbitrary text.
    #[test]
    fn configuration_from_all_of_unicode(values in prop::collection::vec((0..VARIABLES.len(), text()), 1..4), at in any::<usize>(), insert in text()) {
        let env: BTreeMap<String, String> = values.into_iter().map(|(i, v)| (VARIABLES[i].to_string(), v)).collect();
        let _ = Config::load(None, env.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cohort.toml");
        std::fs::write(&file, splice(&example_config(), at, &insert)).expect("write");
        let _ = Config::load(Some(&file), env);
    }

    /// Cron schedules and time zones, whole or spliced into a valid one.
    #[test]
    fn schedules_from_all_of_unicode(t in text(), at in any::<usize>(), zone in text()) {
        let _ = CronSchedule::parse(&t, "UTC");
        let _ = CronSchedule::parse(&splice("0 */15 * * * *", at, &t), "UTC");
        let _ = CronSchedule::parse("0 0 * * * *", &zone);
        let _ = CronSchedule::parse("0 0 * * * *", &splice("Europe/Berlin", at, &zone));
    }

    /// Failure messages as triage normalizes and classifies them.
    #[test]
    fn failure_messages_from_all_of_unicode(t in text(), at in any::<usize>()) {
        let base = "source \"order\" unreadable: Parquet error: Corrupt footer at /data/t-1/order/part-0.parquet, 2026-01-01T00:00:00Z";
        for message in [t.clone(), splice(base, at, &t)] {
            let _ = cohort_alerting::triage::normalize(&message);
            let _ = cohort_alerting::triage::signature("source_unavailable", &message);
        }
    }
}
