//! `cohort simulate` as an operator runs it: a small month, its JSON report, and bad flags.

use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("the cohort binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SMALL: [&str; 11] = ["simulate", "--days", "1", "--jobs-per-day", "2000", "--tenants", "100", "--slots", "32", "--memory", "256GiB"];

fn run_small(json: &std::path::Path) -> serde_json::Value {
    let mut args = SMALL.to_vec();
    let path = json.to_string_lossy();
    args.extend(["--json", &path]);
    let out = cohort(&args);
    assert!(out.status.success(), "exit {:?}\n{}", out.status.code(), text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in ["Success rate after retries", "Queue wait to first start", "Alerts fired", "Wall time of the simulation"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    serde_json::from_str(&std::fs::read_to_string(json).expect("the JSON report is written")).expect("the report is JSON")
}

#[test]
fn simulate_prints_a_report_and_writes_the_same_json_for_the_same_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = run_small(&dir.path().join("first.json"));
    let mut second = run_small(&dir.path().join("second.json"));
    assert_eq!(first["jobs"]["created"], 2000);
    assert!(first["success_rate"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)));
    assert_eq!(first["queue_wait"].as_array().map(Vec::len), Some(4));
    for report in [&mut first, &mut second] {
        let wall = report.as_object_mut().and_then(|o| o.remove("wall_seconds"));
        assert!(wall.and_then(|w| w.as_f64()).is_some_and(|w| w >= 0.0), "wall_seconds is kept apart");
    }
    assert_eq!(first, second, "same seed, different reports");
}

#[test]
fn simulate_refuses_bad_flags_with_exit_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--days", "0"], "--days"),
        (&["--jobs-per-day", "lots"], "--jobs-per-day"),
        (&["--memory", "plenty"], "--memory"),
        (&["--memory", "1MiB"], "--memory"),
        (&["--coverage", "1.5"], "--coverage"),
        (&["--fair-share", "maybe"], "--fair-share"),
        (&["--transient-failure-rate", "-0.1"], "--transient-failure-rate"),
        (&["--incident-minutes", "0"], "--incident-minutes"),
        (&["--refit-hours", "NaN"], "--refit-hours"),
        (&["--slots", "0"], "--slots"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["simulate", "--days", "1", "--jobs-per-day", "100", "--tenants", "10"];
        args.extend_from_slice(flags);
        let out = cohort(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(named), "{flags:?}: the message does not name {named}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}
