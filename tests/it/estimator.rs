//! The estimator in the service, on SQLite and PostgreSQL: runs are recorded with their
//! features, a refit learns from them, the next job is granted the model's bound, the status
//! and metrics report accuracy, and `cohort estimator trace | eval` read the store.

use std::process::Command;

use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Server, TestStore, backends, datagen, setup_tenant};

const SEGMENTS: [&str; 4] = ["multi_category_shoppers", "recent_big_spenders_not_unsubscribed", "engaged_email_openers", "lapsed_buyers"];

/// Queues a run of `segment` as of `AS_OF` plus `second` seconds. Queued runs of one segment
/// at one instant would share an execution; each round here asks for its own.
async fn run_and_wait(api: &Api, segment: &str, second: u32) -> String {
    let as_of = AS_OF.replace(":00Z", &format!(":{second:02}Z"));
    let queued = api.post(&format!("/v1/tenants/acme/segments/{segment}/runs"), &json!({"as_of": as_of})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    queued.body["id"].as_str().expect("id").to_string()
}

async fn finished(api: &Api, id: &str) -> Value {
    let mut view = api.get(&format!("/v1/tenants/acme/runs/{id}?wait_seconds=60")).await.body;
    while !["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or("")) {
        let status = view["status"].as_str().expect("status").to_string();
        view = api.get(&format!("/v1/tenants/acme/runs/{id}?wait_seconds=60&while_status={status}")).await.body;
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimator_learns_from_runs_grants_its_bound_and_reports_its_accuracy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("acme");
    datagen("retail", 400, 21, &root);
    let segments: Vec<String> = std::fs::read_dir(root.join("segments"))
        .expect("segments")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(String::from))
        .collect();
    for s in SEGMENTS {
        assert!(segments.iter().any(|n| n == s), "datagen makes {s}: {segments:?}");
    }
    for backend in backends() {
        let data_dir = dir.path().join(format!("serve-{}", backend.name()));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let store = TestStore::new(&backend, &data_dir).await;
        // Refits wait for the call below, not for a count of runs.
        let env = [("COHORT_MIN_GRANT", "1MiB"), ("COHORT_ESTIMATOR_REFIT_RUNS", "100000")];
        let mut server = Server::start_with(&data_dir, &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let api = setup_tenant(&admin, "acme", "us-east", &root, &SEGMENTS).await;

        // Nothing to learn from yet: rules answer, and a refit keeps them.
        let status = admin.post("/v1/estimator/refit", &json!({})).await;
        assert_eq!(status.status, 200, "{:?}", status.body);
        assert_eq!(status.body["model_version"], 0, "{:?}", status.body);
        assert_eq!(api.get("/v1/estimator").await.status, 403, "a tenant token does not see the estimator");

        let mut ids = Vec::new();
        for round in 0..20 {
            for segment in SEGMENTS {
                ids.push(run_and_wait(&api, segment, round).await);
            }
            if round == 0 {
                // The first runs were sized by the rule, from what the segment reads.
                let view = finished(&api, &ids[0]).await;
                assert_eq!(view["estimate"]["basis"], "cold_rule", "{view:?}");
                assert!(view["estimate"]["features"]["source_rows"].as_u64().is_some_and(|r| r > 0), "{view:?}");
                assert_eq!(view["estimate"]["features"]["partitions"], 1, "{view:?}");
            }
        }
        let mut succeeded = 0;
        for id in &ids {
            let view = finished(&api, id).await;
            succeeded += usize::from(view["status"] == "succeeded");
        }
        assert_eq!(succeeded, ids.len());

        let status = admin.post("/v1/estimator/refit", &json!({})).await;
        assert_eq!(status.status, 200, "{:?}", status.body);
        println!("{}: {}", backend.name(), status.body);
        let version = status.body["model_version"].as_i64().expect("version");
        assert!(version >= 1, "{:?}", status.body);
        assert_eq!(status.body["trained_on"], 80, "{:?}", status.body);
        let regimes: Vec<&str> = status.body["regimes"].as_array().expect("regimes").iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(regimes, ["warm", "cold"], "{:?}", status.body);
        assert_eq!(status.body["recent"]["runs"], 80, "{:?}", status.body);
        assert!(status.body["recent"]["relative_slack"].as_f64().is_some_and(|s| (0.0..1.0).contains(&s)), "{:?}", status.body);

        // The next run is granted the fitted model's bound, learned from the segment's history.
        let next = finished(&api, &run_and_wait(&api, SEGMENTS[0], 59).await).await;
        assert_eq!(next["status"], "succeeded", "{next:?}");
        assert_eq!(next["estimate"]["basis"], "warm", "{next:?}");
        assert_eq!(next["estimate"]["model_version"].as_i64(), Some(version), "{next:?}");
        let bound = next["estimate"]["bound_bytes"].as_i64().expect("bound");
        let memory = next["estimate"]["memory_bytes"].as_i64().expect("point");
        assert!(bound >= memory && memory > 0, "{next:?}");
        assert_eq!(next["attempt_history"][0]["grant_bytes"].as_i64(), Some(bound), "{next:?}");

        let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
        assert!(metrics.contains(&format!("cohort_estimator_model_version {version}\n")), "{metrics}");
        assert!(metrics.contains("cohort_estimator_recent_runs 81\n"), "{metrics}");
        assert!(metrics.contains("cohort_estimator_under_grant_ratio "), "{metrics}");

        // The store's runs as a trace, and a replay of it.
        server.terminate();
        let trace = data_dir.join("runs.jsonl");
        let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["estimator", "trace", "--data-dir"])
            .arg(&data_dir)
            .args(["--database-url", &store.url, "--out"])
            .arg(&trace)
            .output()
            .expect("cohort estimator trace runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&trace).expect("trace");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 81);
        assert!(lines.windows(2).all(|w| w[0]["at"].as_i64() <= w[1]["at"].as_i64()), "oldest first");
        assert!(lines.iter().all(|l| l["peak_bytes"].as_u64().is_some_and(|p| p > 0) && l["features"]["objects"].as_u64() >= Some(1)));
        let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["estimator", "eval", "--trace"])
            .arg(&trace)
            .args(["--min-grant", "1MiB", "--first-fit-after", "40", "--refit-every", "20"])
            .output()
            .expect("cohort estimator eval runs");
        let report = String::from_utf8_lossy(&out.stdout);
        println!("{report}");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(report.starts_with("81 runs (81 scored) over 4 segments; 3 fits"), "{report}");
        for policy in ["| cohort estimator |", "| autopilot (decayed max +15%) |", "| static 1.0 GiB |"] {
            assert!(report.contains(policy), "{policy} in {report}");
        }
        store.drop_database().await;
    }
}

#[test]
fn eval_names_what_is_wrong_with_its_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_cohort")).args(args).output().expect("runs");
    let missing = run(&["estimator", "eval", "--trace", "/nonexistent/runs.jsonl"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading the trace /nonexistent/runs.jsonl"));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"at\": 1, \"tenant\": \"t\", \"segment\": \"s\", \"features\": {}}\nnot json\n").expect("write");
    let out = run(&["estimator", "eval", "--trace", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trace line 2"), "{err}");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").expect("write");
    let out = run(&["estimator", "eval", "--trace", empty.to_str().expect("utf-8")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no runs"));
    let out = run(&["estimator", "eval", "--trace", bad.to_str().expect("utf-8"), "--coverage", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("coverage must be between 0 and 1"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["estimator", "trace", "--data-dir", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"), "{}", String::from_utf8_lossy(&out.stderr));
}
