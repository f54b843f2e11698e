//! Three `cohort serve` processes share one PostgreSQL store and one data folder while 2,000
//! jobs flow through them; one is killed with SIGKILL mid-run. Each job ends in a final state
//! exactly once, and the jobs the killed process held are queued again once its leases run
//! out and finish on the others.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Backend, Server, TestStore, backends, datagen, setup_tenant};

const JOBS: usize = 2000;
const TENANTS: [&str; 2] = ["r0", "r1"];
const SEGMENTS: [&str; 2] = ["recent_big_spenders_not_unsubscribed", "lapsed_buyers"];

/// Job `i`: its tenant, segment, as-of (one of 40 instants, so executions are shared only in
/// part) and idempotency key.
fn job_of(i: usize) -> (&'static str, &'static str, String, String) {
    let as_of = AS_OF.replace("00:00:00Z", &format!("00:00:{:02}Z", i % 40));
    (TENANTS[i % 2], SEGMENTS[(i / 2) % 2], as_of, format!("job-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_a_killed_one_loses_nothing() {
    let Some(url) = backends().into_iter().find_map(|b| match b {
        Backend::Postgres(url) => Some(url),
        Backend::Sqlite => None,
    }) else {
        println!("skipping the replicas test: it needs PostgreSQL (COHORT_TEST_DATABASE_URL)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, t) in TENANTS.iter().enumerate() {
        datagen("retail", 150, 60 + i as u64, &dir.path().join(t));
    }
    let store = TestStore::new(&Backend::Postgres(url), dir.path()).await;
    let data_dir = dir.path().join("shared");
    let names = ["replica-0", "replica-1", "replica-2"];
    let mut servers: Vec<Server> = names
        .iter()
        .map(|name| Server::start_with(&data_dir, &store.url, 1, &[("COHORT_INSTANCE", name), ("COHORT_LEASE_SECONDS", "1"), ("COHORT_POLL_MS", "100")]))
        .collect();
    let admin = Api::new(&servers[0].base, ADMIN);
    let mut tokens = BTreeMap::new();
    for t in TENANTS {
        tokens.insert(t, setup_tenant(&admin, t, "us-east", &dir.path().join(t), &SEGMENTS).await.token);
    }
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();

    // Submissions spread over the three; replica 1 is killed once a third were answered,
    // and what it did not answer goes to the others (the same idempotency keys).
    let mut ids: BTreeMap<usize, String> = BTreeMap::new();
    let mut pending: Vec<usize> = (0..JOBS).collect();
    let mut killed = false;
    while !pending.is_empty() {
        let alive: Vec<usize> = if killed { vec![0, 2] } else { vec![0, 1, 2] };
        let batch: Vec<usize> = pending.drain(..pending.len().min(100)).collect();
        let answers: Vec<(usize, Option<String>)> = futures::stream::iter(batch)
            .map(|i| {
                let (tenant, segment, as_of, key) = job_of(i);
                let api = Api::new(&bases[alive[i % alive.len()]], &tokens[tenant]);
                async move {
                    let path = format!("/v1/tenants/{tenant}/segments/{segment}/runs");
                    let answer = api.try_send(reqwest::Method::POST, &path, Some(&json!({"as_of": as_of})), &[("Idempotency-Key", &key)]).await;
                    (i, answer.ok().filter(|a| a.status == 202 || a.status == 200).and_then(|a| a.body["id"].as_str().map(String::from)))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (i, id) in answers {
            match id {
                Some(id) => {
                    ids.insert(i, id);
                }
                None => pending.push(i),
            }
        }
        if !killed && ids.len() >= JOBS / 3 {
            servers[1].kill();
            killed = true;
        }
    }
    assert!(killed);

    // Every job ends, exactly once, read through a live replica.
    let mut finals: BTreeMap<usize, Value> = BTreeMap::new();
    for (i, id) in &ids {
        let (tenant, ..) = job_of(*i);
        let api = Api::new(&bases[0], &tokens[tenant]);
        let mut view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=60")).await.body;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or("")) {
            assert!(std::time::Instant::now() < deadline, "job {i} never ended: {view}");
            let status = view["status"].as_str().expect("status").to_string();
            view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=30&while_status={status}")).await.body;
        }
        finals.insert(*i, view);
    }
    let mut recovered = BTreeSet::new();
    let mut admitted_by = BTreeMap::new();
    for (i, job) in &finals {
        assert_eq!(job["status"], "succeeded", "job {i}: {job}");
        let transitions = job["transitions"].as_array().expect("transitions");
        let succeeded = transitions.iter().filter(|t| t["to"] == "succeeded").count();
        assert_eq!(succeeded, 1, "job {i} succeeded {succeeded} times: {job}");
        for t in transitions {
            let detail = t["detail"].as_str().unwrap_or_default();
            if detail.contains("the lease of process replica-1 ran out") {
                recovered.insert(*i);
            }
            for name in names {
                if t["to"] == "admitted" && detail.ends_with(&format!("(process {name})")) {
                    *admitted_by.entry(name).or_insert(0) += 1;
                }
            }
        }
        // A job recovered from replica 1 was admitted by it first, then by a live one.
        if recovered.contains(i) {
            let last_admission = transitions.iter().rev().find(|t| t["to"] == "admitted").and_then(|t| t["detail"].as_str()).unwrap_or_default();
            assert!(!last_admission.contains("replica-1"), "job {i}: {job}");
        }
    }
    // One history record per succeeded job in every segment, one chain.
    for t in TENANTS {
        let api = Api::new(&bases[0], &tokens[t]);
        for s in SEGMENTS {
            let records = crate::server::history(&api, t, s).await;
            let runs: BTreeSet<&str> = records.iter().filter_map(|r| r["run_id"].as_str()).collect();
            let expected: BTreeSet<&str> = ids.iter().filter(|(i, _)| job_of(**i).0 == t && job_of(**i).1 == s).map(|(_, id)| id.as_str()).collect();
            assert_eq!(runs, expected, "{t}/{s}: history records are not one per succeeded job");
            let previous: BTreeSet<&str> = records.iter().map(|r| r["previous_run_id"].as_str().unwrap_or("")).collect();
            assert_eq!(previous.len(), records.len(), "{t}/{s}: two runs replaced the same run");
        }
    }
    println!("replicas: {JOBS} jobs, admitted by {admitted_by:?}; {} recovered from the killed replica's leases", recovered.len());
    assert!(admitted_by.len() >= 2, "more than one replica admitted jobs: {admitted_by:?}");
    drop(servers);
    store.drop_database().await;
}
