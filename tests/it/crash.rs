//! A real `cohort serve` is killed with SIGKILL at random moments while 1,000 jobs flow
//! through it, and restarted, several times. Afterwards every job is in a final state, none is
//! lost, and no run's membership was committed twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::server::{ADMIN, AS_OF, Api, Backend, Server, TestStore, backends, datagen, setup_tenant};

const JOBS: usize = 1000;
const KILLS: usize = 5;
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const SEGMENTS: [&str; 2] = ["recent_big_spenders_not_unsubscribed", "lapsed_buyers"];

/// Which tenant and segment job `i` runs, and its idempotency key.
fn job_of(i: usize) -> (&'static str, &'static str, String) {
    (TENANTS[i % TENANTS.len()], SEGMENTS[(i / TENANTS.len()) % SEGMENTS.len()], format!("job-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_job_and_commits_none_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, t) in TENANTS.iter().enumerate() {
        datagen("retail", 150, 40 + i as u64, &dir.path().join(t));
    }
    for backend in backends() {
        crash_run(&backend, dir.path()).await;
    }
}

async fn crash_run(backend: &Backend, dir: &std::path::Path) {
    let seed: u64 = std::env::var("COHORT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("crash test on {}: seed {seed} (COHORT_CRASH_SEED={seed} repeats it)", backend.name());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data_dir = dir.join(format!("serve-{}", backend.name()));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let store = TestStore::new(backend, &data_dir).await;
    // A stable name: a restarted process queues again at once what its killed life held.
    let env = [("COHORT_INSTANCE", "crash-test")];
    let mut server = Server::start_with(&data_dir, &store.url, 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let mut tokens = HashMap::new();
    for t in TENANTS {
        let api = setup_tenant(&admin, t, "us-east", &dir.join(t), &SEGMENTS).await;
        tokens.insert(t, api.token);
    }

    // key -> job id, once a submission was answered.
    let mut submitted: BTreeMap<usize, String> = BTreeMap::new();
    let mut finals: BTreeMap<usize, Value> = BTreeMap::new();
    let mut kills = 0;
    while finals.len() < JOBS {
        // Kill after a random number of answers in this life, while kills remain.
        let kill_after = if kills < KILLS { rng.random_range(20..250) } else { usize::MAX };
        let base = server.base.clone();
        let mut answers = 0;
        let mut killed = false;
        if submitted.len() < JOBS {
            let pending: Vec<usize> = (0..JOBS).filter(|i| !submitted.contains_key(i)).collect();
            let mut stream = futures::stream::iter(pending)
                .map(|i| {
                    let (tenant, segment, key) = job_of(i);
                    let api = Api::new(&base, &tokens[tenant]);
                    async move {
                        let body = serde_json::json!({"as_of": AS_OF});
                        let path = format!("/v1/tenants/{tenant}/segments/{segment}/runs");
                        (i, api.try_send(reqwest::Method::POST, &path, Some(&body), &[("Idempotency-Key", &key)]).await)
                    }
                })
                .buffer_unordered(16);
            while let Some((i, answer)) = stream.next().await {
                if let Ok(answer) = answer {
                    assert!(matches!(answer.status, 200 | 202), "job {i}: {:?}", answer.body);
                    let id = answer.body["id"].as_str().expect("id").to_string();
                    if let Some(previous) = submitted.insert(i, id.clone()) {
                        assert_eq!(previous, id, "job {i}: its idempotency key answered two jobs");
                    }
                    answers += 1;
                }
                if answers >= kill_after && !killed {
                    server.kill();
                    killed = true;
                }
            }
        }
        if !killed {
            // Everything is submitted: wait for final states (long polls), killing midway.
            let waiting: Vec<(usize, String)> = submitted.iter().filter(|(i, _)| !finals.contains_key(i)).map(|(i, id)| (*i, id.clone())).collect();
            let mut stream = futures::stream::iter(waiting)
                .map(|(i, id)| {
                    let (tenant, _, _) = job_of(i);
                    let api = Api::new(&base, &tokens[tenant]);
                    async move { (i, api.try_send(reqwest::Method::GET, &format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=60"), None, &[]).await) }
                })
                .buffer_unordered(64);
            while let Some((i, answer)) = stream.next().await {
                if let Ok(answer) = answer {
                    assert_eq!(answer.status, 200, "{:?}", answer.body);
                    let status = answer.body["status"].as_str().unwrap_or_default().to_string();
                    assert!(matches!(status.as_str(), "succeeded" | "failed" | "cancelled"), "job {i} still {status} after a minute: {:?}", answer.body);
                    finals.insert(i, answer.body);
                    answers += 1;
                }
                if answers >= kill_after && !killed {
                    server.kill();
                    killed = true;
                }
            }
        }
        if killed {
            kills += 1;
            server = Server::start_with(&data_dir, &store.url, 2, &env);
        }
    }
    assert_eq!(kills, KILLS, "the server was killed {kills} times");

    // None lost: 1,000 distinct jobs, each final and succeeded (the data is sound).
    let ids: BTreeSet<&String> = submitted.values().collect();
    assert_eq!(ids.len(), JOBS);
    for (i, job) in &finals {
        assert_eq!(job["status"], "succeeded", "job {i}: {job}");
        let succeeded = job["transitions"].as_array().expect("transitions").iter().filter(|t| t["to"] == "succeeded").count();
        assert_eq!(succeeded, 1, "job {i} succeeded {succeeded} times: {job}");
    }
    // Each segment's jobs, as the API lists them: exactly the ones submitted.
    let mut recovered = 0;
    for t in TENANTS {
        let api = Api::new(&server.base, &tokens[t]);
        for s in SEGMENTS {
            let mut listed = BTreeSet::new();
            let mut before = String::new();
            loop {
                let page = api.get(&format!("/v1/tenants/{t}/segments/{s}/runs?limit=1000&before={before}")).await;
                for job in page.body["items"].as_array().expect("items") {
                    listed.insert(job["id"].as_str().expect("id").to_string());
                }
                match page.body["next"].as_str() {
                    Some(next) => before = next.to_string(),
                    None => break,
                }
            }
            let expected: BTreeSet<String> = submitted.iter().filter(|(i, _)| job_of(**i).0 == t && job_of(**i).1 == s).map(|(_, id)| id.clone()).collect();
            assert_eq!(listed, expected, "{t}/{s}: the jobs listed are not the jobs submitted");

            // Committed once each: one history record per succeeded run, chained, and the
            // chain's additions minus removals equal the latest members.
            let records = crate::server::history(&api, t, s).await;
            let run_ids: BTreeSet<String> = records.iter().map(|r| r["run_id"].as_str().expect("run").to_string()).collect();
            assert_eq!(run_ids.len(), records.len(), "{t}/{s}: a run has two history records");
            assert_eq!(run_ids, expected, "{t}/{s}: history records are not one per succeeded run");
            let by_previous: HashMap<String, &Value> = records.iter().map(|r| (r["previous_run_id"].as_str().unwrap_or_default().to_string(), r)).collect();
            assert_eq!(by_previous.len(), records.len(), "{t}/{s}: two runs replaced the same run");
            let (mut balance, mut at, mut walked) = (0i64, String::new(), 0);
            while let Some(r) = by_previous.get(&at) {
                balance += r["added"].as_i64().unwrap_or(0) - r["removed"].as_i64().unwrap_or(0);
                at = r["run_id"].as_str().unwrap_or_default().to_string();
                walked += 1;
            }
            assert_eq!(walked, records.len(), "{t}/{s}: the history is not one chain");
            let segment = api.get(&format!("/v1/tenants/{t}/segments/{s}")).await;
            assert_eq!(segment.body["members"].as_i64(), Some(balance), "{t}/{s}");
        }
    }
    for job in finals.values() {
        let runs = job["transitions"].as_array().expect("transitions");
        recovered += runs.iter().filter(|t| t["detail"].as_str().unwrap_or_default().starts_with("recovered")).count();
    }
    println!("crash test on {}: {JOBS} jobs, {kills} SIGKILLs, {recovered} recoveries of interrupted jobs, all final, none committed twice", backend.name());
    drop(server);
    store.drop_database().await;
}
