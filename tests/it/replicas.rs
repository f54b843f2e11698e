//! Three `cohort serve` processes share one PostgreSQL store and one data folder while 2,000
//! jobs flow through them, with bursts of failing jobs of one more tenant among them; the
//! process evaluating the alert rules is killed with SIGKILL mid-run. Each job ends in a final
//! state exactly once, the jobs the killed process held are queued again once its leases run
//! out and finish on the others, another process takes over the alert evaluator, and every
//! alert is raised and notified once (a notification received twice carries one `webhook-id`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::alerts::{add_receiver, config, failing_tenant, receive, settled};
use crate::server::{ADMIN, AS_OF, Api, Backend, Server, TestStore, datagen, postgres, setup_tenant};

const JOBS: usize = 2000;
const TENANTS: [&str; 2] = ["r0", "r1"];
const SEGMENTS: [&str; 2] = ["recent_big_spenders_not_unsubscribed", "lapsed_buyers"];
/// The tenant whose every run fails, in a region of its own.
const FAILING: &str = "rf";
/// Failing jobs come in bursts of this many, one burst before every 400 others.
const BURST: usize = 4;
const BURSTS: usize = 5;

/// Job `i`: its tenant, segment, as-of (one of 40 instants, so executions are shared only in
/// part) and idempotency key. Jobs from `JOBS` on are the failing tenant's.
fn job_of(i: usize) -> (&'static str, &'static str, String, String) {
    let as_of = AS_OF.replace("00:00:00Z", &format!("00:00:{:02}Z", i % 40));
    if i >= JOBS {
        return (FAILING, "lapsed_buyers", as_of, format!("fail-{i}"));
    }
    (TENANTS[i % 2], SEGMENTS[(i / 2) % 2], as_of, format!("job-{i}"))
}

/// The replicas among `alive` whose `/metrics` say they evaluate the alert rules.
async fn evaluating(bases: &[String], alive: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &i in alive {
        let text = reqwest::get(format!("{}/metrics", bases[i])).await.expect("metrics").text().await.expect("text");
        if text.lines().any(|l| l == "cohort_alert_evaluator_leader 1") {
            out.push(i);
        }
    }
    out
}

/// The one replica among `alive` that evaluates, once there is exactly one.
async fn the_evaluator(bases: &[String], alive: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = evaluating(bases, alive).await;
        if let [one] = now.as_slice() {
            return *one;
        }
        assert!(Instant::now() < deadline, "not one evaluating replica among {alive:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_a_killed_one_loses_nothing() {
    let Some(url) = postgres() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, t) in TENANTS.iter().enumerate() {
        datagen("retail", 150, 60 + i as u64, &dir.path().join(t));
    }
    let store = TestStore::new(&Backend::Postgres(url), dir.path()).await;
    let data_dir = dir.path().join("shared");
    // Failure alerts over a short window, so that they fire and resolve during the run; no
    // inhibition, so that every alert is notified on its own (and only once).
    let rules = config(
        dir.path(),
        "[alerts]\ninhibit = false\n\
         [alerts.failures.tenant]\nwindow = \"5s\"\nthreshold = 3\n\
         [alerts.failures.region]\nwindow = \"5s\"\nthreshold = 3\n\
         [alerts.failures.global]\nwindow = \"5s\"\nthreshold = 3\n",
    );
    let names = ["replica-0", "replica-1", "replica-2"];
    let mut servers: Vec<Server> = names
        .iter()
        .map(|name| {
            Server::start_with(
                &data_dir,
                &store.url,
                1,
                &[("COHORT_INSTANCE", name), ("COHORT_LEASE_SECONDS", "1"), ("COHORT_POLL_MS", "100"), ("COHORT_CONFIG", &rules)],
            )
        })
        .collect();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let admin = Api::new(&bases[0], ADMIN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let mut hooks = receive(listener).await;
    add_receiver(&admin, &hook_url).await;
    let mut tokens = BTreeMap::new();
    for t in TENANTS {
        tokens.insert(t, setup_tenant(&admin, t, "us-east", &dir.path().join(t), &SEGMENTS).await.token);
    }
    tokens.insert(FAILING, failing_tenant(&admin, dir.path(), FAILING, "eu-west").await.token);

    // Submissions spread over the three; the evaluating replica is killed once a third were
    // answered, and what it did not answer goes to the others (the same idempotency keys).
    let mut pending: Vec<usize> = Vec::new();
    for b in 0..JOBS / 100 {
        if b % 4 == 0 {
            let burst = JOBS + (b / 4) * BURST;
            pending.extend(burst..burst + BURST);
        }
        pending.extend(b * 100..(b + 1) * 100);
    }
    let total = JOBS + BURST * BURSTS;
    assert_eq!(pending.len(), total);
    let mut ids: BTreeMap<usize, String> = BTreeMap::new();
    let mut victim = None;
    while !pending.is_empty() {
        let alive: Vec<usize> = (0..names.len()).filter(|r| Some(*r) != victim).collect();
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
        if victim.is_none() && ids.len() >= total / 3 {
            let leader = the_evaluator(&bases, &alive).await;
            servers[leader].kill();
            victim = Some(leader);
        }
    }
    let victim = victim.expect("a replica was killed");
    let alive: Vec<usize> = (0..names.len()).filter(|r| *r != victim).collect();
    let reader = alive[0];

    // Every job ends, exactly once, read through a live replica.
    let mut finals: BTreeMap<usize, Value> = BTreeMap::new();
    for (i, id) in &ids {
        let (tenant, ..) = job_of(*i);
        let api = Api::new(&bases[reader], &tokens[tenant]);
        let mut view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=60")).await.body;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or("")) {
            assert!(Instant::now() < deadline, "job {i} never ended: {view}");
            let status = view["status"].as_str().expect("status").to_string();
            view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=30&while_status={status}")).await.body;
        }
        finals.insert(*i, view);
    }
    let mut recovered = BTreeSet::new();
    let mut admitted_by = BTreeMap::new();
    for (i, job) in &finals {
        let expected = if *i >= JOBS { "failed" } else { "succeeded" };
        assert_eq!(job["status"], expected, "job {i}: {job}");
        let transitions = job["transitions"].as_array().expect("transitions");
        let ended = transitions.iter().filter(|t| t["to"] == expected).count();
        assert_eq!(ended, 1, "job {i} {expected} {ended} times: {job}");
        for t in transitions {
            let detail = t["detail"].as_str().unwrap_or_default();
            if detail.contains(&format!("the lease of process {} ran out", names[victim])) {
                recovered.insert(*i);
            }
            for name in names {
                if t["to"] == "admitted" && detail.ends_with(&format!("(process {name})")) {
                    *admitted_by.entry(name).or_insert(0) += 1;
                }
            }
        }
        // A job recovered from the killed replica was admitted by it first, then by a live one.
        if recovered.contains(i) {
            let last_admission = transitions.iter().rev().find(|t| t["to"] == "admitted").and_then(|t| t["detail"].as_str()).unwrap_or_default();
            assert!(!last_admission.contains(names[victim]), "job {i}: {job}");
        }
    }
    // One history record per succeeded job in every segment, one chain.
    for t in TENANTS {
        let api = Api::new(&bases[reader], &tokens[t]);
        for s in SEGMENTS {
            let records = crate::server::history(&api, t, s).await;
            let runs: BTreeSet<&str> = records.iter().filter_map(|r| r["run_id"].as_str()).collect();
            let expected: BTreeSet<&str> = ids.iter().filter(|(i, _)| job_of(**i).0 == t && job_of(**i).1 == s).map(|(_, id)| id.as_str()).collect();
            assert_eq!(runs, expected, "{t}/{s}: history records are not one per succeeded job");
            let previous: BTreeSet<&str> = records.iter().map(|r| r["previous_run_id"].as_str().unwrap_or("")).collect();
            assert_eq!(previous.len(), records.len(), "{t}/{s}: two runs replaced the same run");
        }
    }
    println!(
        "replicas: {total} jobs ({} failing), admitted by {admitted_by:?}; {} recovered from the killed replica's leases",
        BURST * BURSTS,
        recovered.len()
    );
    assert!(admitted_by.len() >= 2, "more than one replica admitted jobs: {admitted_by:?}");

    // Another replica took over the alert evaluator.
    let successor = the_evaluator(&bases, &alive).await;
    // The failure alerts resolve once the last burst's failures leave the 5 s windows; then
    // the outbox empties (what the killed replica was sending is sent again by another).
    let admin = Api::new(&bases[reader], ADMIN);
    // Every webhook received, by (fingerprint, startsAt, status): its alert name and the
    // webhook-ids it came under.
    let mut received: BTreeMap<(String, String, String), (String, BTreeSet<String>)> = BTreeMap::new();
    let mut deliveries = 0;
    let mut record = |hook: crate::alerts::Webhook, received: &mut BTreeMap<(String, String, String), (String, BTreeSet<String>)>| {
        deliveries += 1;
        let alerts = hook.body["alerts"].as_array().expect("alerts");
        assert_eq!(alerts.len(), 1, "one alert per notification: {}", hook.body);
        let alert = &alerts[0];
        let key = (
            alert["fingerprint"].as_str().unwrap_or_default().to_string(),
            alert["startsAt"].as_str().unwrap_or_default().to_string(),
            alert["status"].as_str().unwrap_or_default().to_string(),
        );
        let name = alert["labels"]["alertname"].as_str().unwrap_or_default().to_string();
        received.entry(key).or_insert_with(|| (name, BTreeSet::new())).1.insert(hook.id);
    };
    // A failure alert that resolves is notified as resolved: the store is read again at each
    // webhook until none fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let firing = admin.get("/v1/alerts?state=firing&limit=1000").await.body;
        if !firing["items"].as_array().expect("items").iter().any(|a| a["rule"] == "failures") {
            break;
        }
        match tokio::time::timeout_at(deadline, hooks.recv()).await {
            Ok(Some(hook)) => record(hook, &mut received),
            _ => panic!("failure alerts still firing: {firing}"),
        }
    }
    let receiver = settled(&admin).await;
    assert_eq!(receiver["dead"], 0, "{receiver}");

    // No alert notified twice: one (fingerprint, startsAt, status) arrives under one
    // webhook-id, however often that one arrived (a retry).
    while let Ok(hook) = hooks.try_recv() {
        record(hook, &mut received);
    }
    for (key, (_, webhook_ids)) in &received {
        assert_eq!(webhook_ids.len(), 1, "alert {key:?} was notified {} times: {webhook_ids:?}", webhook_ids.len());
    }
    let notified: BTreeSet<(&str, &str)> = received.keys().filter(|k| k.2 == "firing").map(|k| (k.0.as_str(), k.1.as_str())).collect();
    assert!(!notified.is_empty(), "no alert was notified");
    let by_status = |status: &str| received.iter().filter(|(k, (name, _))| k.2 == status && name == "CohortJobFailures").count();
    // Raised once: every failure alert in the store was notified firing and resolved, once.
    let stored = admin.get("/v1/alerts?state=all&limit=1000").await.body;
    let stored_failures = stored["items"].as_array().expect("items").iter().filter(|a| a["rule"] == "failures").count();
    assert!(stored_failures >= 1, "no failure alert fired: {stored}");
    assert_eq!((by_status("firing"), by_status("resolved")), (stored_failures, stored_failures), "{stored}");
    println!(
        "replicas: {} alerts notified ({} failure alerts fired and resolved), {deliveries} deliveries received ({} distinct); \
         evaluator {} killed, {} took over; {:.1} s",
        notified.len(),
        stored_failures,
        received.len(),
        names[victim],
        names[successor],
        started.elapsed().as_secs_f64()
    );
    drop(servers);
    store.drop_database().await;
}
