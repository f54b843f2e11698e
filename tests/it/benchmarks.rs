//! The benchmarks' headlines are the case users have. The service benchmark's first rows run
//! every job at its own `as_of`, so every job executes; the rows where jobs share executions
//! come after, labelled, with the executions that ran; and the summary judges the target on
//! the headline rows only.

use std::path::Path;

use serde_json::{Value, json};

use crate::server::cannot_run;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `run_one` calls of `bench/service.sh`, in order: (label, the rest of the line).
fn service_runs() -> Vec<(String, String)> {
    let script = std::fs::read_to_string(root().join("bench/service.sh")).expect("bench/service.sh");
    script
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("run_one "))
        .map(|rest| {
            let (label, args) = rest.split_once(' ').unwrap_or((rest, ""));
            (label.to_string(), args.to_string())
        })
        .collect()
}

/// A row of `service.json` as the benchmark writes it.
fn row(store: &str, jobs_per_second: f64, executions: f64) -> Value {
    json!({
        "store": store, "jobs": 10000.0, "tenants": 4.0, "seconds": 10000.0 / jobs_per_second,
        "jobs_per_second": jobs_per_second, "submit_p50_ms": 10.0, "submit_p99_ms": 40.0,
        "submitting_seconds": 4.0, "succeeded": 10000.0, "failed": 0.0, "executions": executions,
    })
}

/// The summary's rows that `bench/summary.py` writes for `service` over these stores.
fn summary_rows(stores: Value) -> Option<Vec<Vec<String>>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = json!({"jobs": 10000, "concurrency": 32, "workers": 2, "stores": stores});
    std::fs::write(dir.path().join("service.json"), results.to_string()).expect("write service.json");
    std::fs::write(dir.path().join("status.tsv"), "service\t0\t100.0\tbench/service.sh\tservice.log\n").expect("write status.tsv");
    let out = match std::process::Command::new("python3").arg(root().join("bench/summary.py")).arg("--results").arg(dir.path()).output() {
        Ok(out) => out,
        Err(e) => {
            cannot_run(&format!("python3 cannot be started ({e}): bench/summary.py is not checked"));
            return None;
        }
    };
    let text = std::fs::read_to_string(dir.path().join("summary.md"))
        .unwrap_or_else(|e| panic!("summary.py wrote no summary.md ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    Some(text.lines().filter(|l| l.starts_with("| Service")).map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect()).collect())
}

#[test]
fn the_service_benchmark_headline_is_every_job_executing_and_the_target_is_judged_on_it() {
    // The script: the headline runs come first and ask for distinct instants; the shared
    // runs come after and say so in their label.
    let runs = service_runs();
    let labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["sqlite", "postgres", "sqlite-shared", "postgres-shared"], "bench/service.sh runs: {runs:?}");
    for (label, args) in &runs {
        let distinct = args.contains("--as-of distinct");
        assert_eq!(distinct, !label.ends_with("-shared"), "{label}: {args}");
    }

    // The committed results: in the headline rows every job executed; the shared rows
    // count the executions that ran.
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("bench/results/service.json")).expect("service.json")).expect("service.json is JSON");
    for store in ["sqlite", "postgres", "sqlite-shared", "postgres-shared"] {
        let r = &committed["stores"][store];
        let (jobs, succeeded, executions) = (r["jobs"].as_f64(), r["succeeded"].as_f64(), r["executions"].as_f64());
        assert!(jobs.is_some() && executions.is_some(), "bench/results/service.json has no {store} row with executions: {r}");
        if store.ends_with("-shared") {
            assert!(executions <= jobs, "{store}: more executions than jobs: {r}");
        } else {
            assert!(jobs == succeeded && executions >= jobs, "{store}: a headline row where not every job executed: {r}");
        }
    }
    let md = std::fs::read_to_string(root().join("bench/results/service.md")).expect("service.md");
    assert!(md.contains("judged on the headline rows") && md.contains("500 jobs/s"), "service.md states another target:\n{md}");

    // The summary: a headline below the target fails it, however fast shared executions are.
    let Some(slow) = summary_rows(json!({
        "sqlite": row("sqlite", 84.0, 10000.0), "postgres": row("postgres", 70.0, 10000.0),
        "sqlite-shared": row("sqlite-shared", 2200.0, 400.0), "postgres-shared": row("postgres-shared", 1300.0, 500.0),
    })) else {
        return;
    };
    let headline = &slow[0];
    assert!(headline[0].contains("every job executes") && headline[1] == "84.0 jobs/s", "first service row: {headline:?}");
    assert_eq!(headline[4], "≥ 500 jobs/s", "{headline:?}");
    assert!(headline[5].starts_with("**no**"), "a headline of 84 jobs/s holds the target: {headline:?}");
    let shared: Vec<&Vec<String>> = slow.iter().filter(|r| r[0].contains("share executions")).collect();
    assert_eq!(shared.len(), 2, "{slow:?}");
    for r in shared {
        assert!(r[0].contains("executions for 10,000 jobs"), "a shared row without its executions: {r:?}");
        assert_eq!((r[4].as_str(), r[5].as_str()), ("—", "—"), "a shared row is judged: {r:?}");
    }

    // And one at the target holds it.
    let Some(fast) = summary_rows(json!({"sqlite": row("sqlite", 600.0, 10000.0)})) else {
        return;
    };
    assert!(fast[0][5].starts_with("yes"), "a headline of 600 jobs/s fails the target: {:?}", fast[0]);
}
