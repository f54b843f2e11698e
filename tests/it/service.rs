//! `cohort serve` end to end, on SQLite and on PostgreSQL: tenants, models, segments, runs,
//! members and history checked against the executor's own answer; tenants isolated.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Server, TestStore, backends, datagen, executor_members, key_text, setup_tenant};

const SEGMENTS: [&str; 3] = ["recent_big_spenders_not_unsubscribed", "multi_category_shoppers", "lapsed_buyers"];

async fn run_and_wait(api: &Api, tenant: &str, segment: &str, as_of: &str) -> Value {
    let queued = api.post(&format!("/v1/tenants/{tenant}/segments/{segment}/runs"), &json!({"as_of": as_of})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let id = queued.body["id"].as_str().expect("id").to_string();
    let done = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=60")).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["status"], "succeeded", "{:?}", done.body);
    done.body
}

/// All members, through pages of `page` keys.
async fn members(api: &Api, tenant: &str, segment: &str, page: usize) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let answer = api.get(&format!("/v1/tenants/{tenant}/segments/{segment}/members?offset={}&limit={page}", out.len())).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let items = answer.body["items"].as_array().expect("items").clone();
        let total = answer.body["total"].as_u64().expect("total") as usize;
        out.extend(items.iter().map(key_text));
        if items.is_empty() || out.len() >= total {
            assert_eq!(out.len(), total);
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_models_segments_runs_and_members_on_each_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_root, b_root) = (dir.path().join("data-a"), dir.path().join("data-b"));
    datagen("retail", 400, 11, &a_root);
    datagen("retail", 300, 12, &b_root);
    for backend in backends() {
        let data_dir = dir.path().join(format!("serve-{}", backend.name()));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let store = TestStore::new(&backend, &data_dir).await;
        let server = Server::start(&data_dir, &store.url, 2);
        let admin = Api::new(&server.base, crate::server::ADMIN);
        let a = setup_tenant(&admin, "acme", "us-east", &a_root, &SEGMENTS).await;
        let b = setup_tenant(&admin, "bolt", "eu-west", &b_root, &SEGMENTS[..1]).await;

        // Each segment's members equal the executor's, read in pages.
        for segment in SEGMENTS {
            let job = run_and_wait(&a, "acme", segment, AS_OF).await;
            let expected = executor_members(&a_root.join("model.json"), &a_root.join(format!("segments/{segment}.json")), AS_OF);
            assert_eq!(job["members"].as_u64(), Some(expected.len() as u64), "{segment} on {}", backend.name());
            assert_eq!(members(&a, "acme", segment, 37).await, expected, "{segment} on {}", backend.name());
        }

        // The metrics answer on every store, with what just ran.
        let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics");
        assert_eq!(metrics.status(), 200, "/metrics on {}", backend.name());
        let text = metrics.text().await.expect("text");
        assert!(text.contains("cohort_jobs{status=\"succeeded\"} 3\n"), "{} metrics: {text}", backend.name());
        assert!(text.contains("cohort_schedule_runs_missed_total 0\n"), "{text}");

        // A second run at another instant: its history record holds exactly the difference.
        let segment = SEGMENTS[0];
        let later = "2026-11-20T00:00:00Z";
        let first: BTreeSet<String> = members(&a, "acme", segment, 1000).await.into_iter().collect();
        let second_job = run_and_wait(&a, "acme", segment, later).await;
        let expected: BTreeSet<String> =
            executor_members(&a_root.join("model.json"), &a_root.join(format!("segments/{segment}.json")), later).into_iter().collect();
        let now: BTreeSet<String> = members(&a, "acme", segment, 1000).await.into_iter().collect();
        assert_eq!(now, expected);
        let history = a.get(&format!("/v1/tenants/acme/segments/{segment}/history")).await;
        let records = history.body["items"].as_array().expect("items");
        assert_eq!(records.len(), 2, "{:?}", history.body);
        assert_eq!(records[0]["run_id"], second_job["id"]);
        assert_eq!(records[0]["previous_run_id"], records[1]["run_id"]);
        let detail = a.get(&format!("/v1/tenants/acme/segments/{segment}/history/{}?limit=10000", second_job["id"].as_str().expect("id"))).await;
        assert_eq!(detail.status, 200, "{:?}", detail.body);
        let change_set = |kind: &str| -> BTreeSet<String> {
            detail.body["changes"].as_array().expect("changes").iter().filter(|c| c["change"] == kind).map(|c| key_text(&c["key"])).collect()
        };
        assert_eq!(change_set("added"), now.difference(&first).cloned().collect::<BTreeSet<_>>());
        assert_eq!(change_set("removed"), first.difference(&now).cloned().collect::<BTreeSet<_>>());
        assert_eq!(records[0]["added"].as_u64(), Some(change_set("added").len() as u64));

        // Idempotency: the same key answers the first job.
        let path = format!("/v1/tenants/acme/segments/{segment}/runs");
        let first = a.try_send(Method::POST, &path, None, &[("Idempotency-Key", "nightly-1")]).await.expect("post");
        let again = a.try_send(Method::POST, &path, None, &[("Idempotency-Key", "nightly-1")]).await.expect("post");
        assert_eq!((first.status, again.status), (202, 200));
        assert_eq!(first.body["id"], again.body["id"]);

        // Tenant B's token sees nothing of tenant A: 404 everywhere, as for what does not exist.
        let run_id = second_job["id"].as_str().expect("id");
        let model: Value = serde_json::from_str(&std::fs::read_to_string(b_root.join("model.json")).expect("model")).expect("json");
        let probes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, "/v1/tenants/acme".into(), None),
            (Method::POST, "/v1/tenants/acme/tokens".into(), None),
            (Method::GET, "/v1/tenants/acme/model".into(), None),
            (Method::PUT, "/v1/tenants/acme/model".into(), Some(model)),
            (Method::GET, "/v1/tenants/acme/segments".into(), None),
            (Method::GET, format!("/v1/tenants/acme/segments/{segment}"), None),
            (
                Method::PUT,
                format!("/v1/tenants/acme/segments/{segment}"),
                Some(json!({"definition": {"root": "individual", "filter": {"field": "country", "op": "eq", "value": "US"}}})),
            ),
            (Method::DELETE, format!("/v1/tenants/acme/segments/{segment}"), None),
            (Method::POST, format!("/v1/tenants/acme/segments/{segment}/runs"), None),
            (Method::GET, format!("/v1/tenants/acme/segments/{segment}/runs"), None),
            (Method::GET, format!("/v1/tenants/acme/segments/{segment}/members"), None),
            (Method::GET, format!("/v1/tenants/acme/segments/{segment}/history"), None),
            (Method::GET, format!("/v1/tenants/acme/segments/{segment}/history/{run_id}"), None),
            (Method::GET, format!("/v1/tenants/acme/runs/{run_id}"), None),
            (Method::POST, format!("/v1/tenants/acme/runs/{run_id}/cancel"), None),
        ];
        for (method, path, body) in &probes {
            let answer = b.send(method.clone(), path, body.as_ref()).await;
            assert_eq!(answer.status, 404, "{method} {path} with tenant B's token: {:?}", answer.body);
            assert_eq!(answer.body["error"]["code"], "not_found");
            // The same path under B's own id works or is B's own 404, never A's data.
            let own = b.send(Method::GET, &path.replacen("/acme", "/bolt", 1), None).await;
            assert!(own.status != 500, "{path}: {:?}", own.body);
        }
        let listed = b.get("/v1/tenants").await;
        let ids: Vec<&str> = listed.body["items"].as_array().expect("items").iter().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(ids, vec!["bolt"]);
        let forbidden = b.post("/v1/tenants", &json!({"id": "x", "region": "r", "data_root": "/tmp"})).await;
        assert_eq!(forbidden.status, 403);

        // The OpenAPI document describes the API.
        let doc = Api::new(&server.base, "").get("/v1/openapi.json").await;
        assert_eq!(doc.status, 200);
        assert!(doc.body["paths"]["/v1/tenants/{tenant}/segments/{segment}/runs"]["post"].is_object(), "{}", doc.body);
        let ready = Api::new(&server.base, "").get("/readyz").await;
        assert_eq!(ready.body["store"], backend.name());
        drop(server);
        store.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_the_next_start_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    datagen("retail", 200, 3, &root);
    let data_dir = dir.path().join("serve");
    let url = format!("sqlite://{}", data_dir.join("cohort.db").display());
    let mut server = Server::start(&data_dir, &url, 1);
    let admin = Api::new(&server.base, crate::server::ADMIN);
    let api = setup_tenant(&admin, "acme", "us-east", &root, &SEGMENTS[..1]).await;
    let job = run_and_wait(&api, "acme", SEGMENTS[0], AS_OF).await;
    assert!(server.terminate().success(), "{}", std::fs::read_to_string(&server.log).unwrap_or_default());
    let server = Server::start(&data_dir, &url, 1);
    let api = Api::new(&server.base, &api.token);
    let again = api.get(&format!("/v1/tenants/acme/runs/{}", job["id"].as_str().expect("id"))).await;
    assert_eq!(again.body["status"], "succeeded");
    assert_eq!(again.body["members"], job["members"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_says_why_it_waits_and_can_be_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("slowpoke");
    datagen("retail", 200, 31, &root);
    let server = Server::start(&dir.path().join("data"), &format!("sqlite://{}", dir.path().join("c.db").display()), 2);
    let admin = Api::new(&server.base, ADMIN);
    // One job a minute.
    let root = root.canonicalize().expect("root");
    let created = admin.post("/v1/tenants", &json!({"id": "slowpoke", "region": "eu-west", "data_root": root, "jobs_per_minute": 1})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let api = Api::new(&server.base, created.body["token"].as_str().expect("token"));
    let model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).expect("model")).expect("json");
    assert_eq!(api.put("/v1/tenants/slowpoke/model", &model).await.status, 200);
    let mut definition: Value = serde_json::from_str(&std::fs::read_to_string(root.join("segments/lapsed_buyers.json")).expect("segment")).expect("json");
    definition.as_object_mut().expect("object").remove("name");
    assert_eq!(api.put("/v1/tenants/slowpoke/segments/lapsed", &json!({"definition": definition})).await.status, 201);
    // The schedules' own idempotency keys are not for callers.
    let taken =
        api.try_send(Method::POST, "/v1/tenants/slowpoke/segments/lapsed/runs", None, &[("Idempotency-Key", "schedule:lapsed:x")]).await.expect("answer");
    assert_eq!((taken.status, taken.body["error"]["code"].as_str()), (400, Some("invalid_idempotency_key")), "{:?}", taken.body);
    let first = run_and_wait(&api, "slowpoke", "lapsed", AS_OF).await;
    assert_eq!(first["waiting"], Value::Null);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let queued = api.post("/v1/tenants/slowpoke/segments/lapsed/runs", &json!({"as_of": AS_OF})).await;
        assert_eq!(queued.status, 202, "{:?}", queued.body);
        ids.push(queued.body["id"].as_str().expect("id").to_string());
    }
    let second = api.get(&format!("/v1/tenants/slowpoke/runs/{}", ids[0])).await.body;
    assert_eq!((second["status"].as_str(), second["waiting"]["reason"].as_str()), (Some("queued"), Some("rate_limit")), "{second:?}");
    let third = api.get(&format!("/v1/tenants/slowpoke/runs/{}", ids[1])).await.body;
    assert_eq!(third["waiting"]["reason"], "behind_own_jobs", "{third:?}");
    for id in &ids {
        let cancelled = api.post(&format!("/v1/tenants/slowpoke/runs/{id}/cancel"), &json!({})).await;
        assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (200, Some("cancelled")), "{:?}", cancelled.body);
        assert_eq!(cancelled.body["waiting"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_one_segment_and_as_of_ride_on_one_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("riders");
    datagen("retail", 300, 17, &root);
    let segment = SEGMENTS[0];
    for backend in backends() {
        let data_dir = dir.path().join(format!("serve-{}", backend.name()));
        let store = TestStore::new(&backend, &data_dir).await;
        let server = Server::start(&data_dir, &store.url, 2);
        let admin = Api::new(&server.base, ADMIN);
        // 12 jobs a minute: a bucket of 1.2 tokens, so after the first run the next token is
        // about 4 s away, and the jobs submitted meanwhile wait in the queue together.
        let api = crate::server::setup_tenant_with(&admin, "acme", "us-east", &root, &[segment], json!({"jobs_per_minute": 12})).await;
        let first = run_and_wait(&api, "acme", segment, AS_OF).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            let queued = api.post(&format!("/v1/tenants/acme/segments/{segment}/runs"), &json!({"as_of": AS_OF})).await;
            assert_eq!((queued.status, queued.body["status"].as_str()), (202, Some("queued")), "{:?}", queued.body);
            ids.push(queued.body["id"].as_str().expect("id").to_string());
        }
        // A job at another instant is not answered by the same execution.
        let other = api.post(&format!("/v1/tenants/acme/segments/{segment}/runs"), &json!({"as_of": "2026-11-20T00:00:00Z"})).await;
        assert_eq!(other.status, 202, "{:?}", other.body);
        let other_id = other.body["id"].as_str().expect("id").to_string();

        let mut views = Vec::new();
        for id in ids.iter().chain([&other_id]) {
            let view = crate::server::watch(&api, "acme", id, |v| v["status"] != "queued" && v["status"] != "admitted" && v["status"] != "running").await;
            assert_eq!(view["status"], "succeeded", "{view:?}");
            views.push(view);
        }
        // The first queued job ran; the four after it rode on its execution, in one slot.
        let leader = &ids[0];
        assert_eq!(views[0]["attempt_history"][0]["rode_on"], Value::Null, "{:?}", views[0]);
        assert!(views[0]["attempt_history"][0]["grant_bytes"].as_i64() > Some(0));
        for view in &views[1..5] {
            let attempt = &view["attempt_history"][0];
            assert_eq!(attempt["rode_on"].as_str(), Some(leader.as_str()), "{view:?}");
            assert_eq!((attempt["outcome"].as_str(), attempt["grant_bytes"].as_i64()), (Some("succeeded"), Some(0)));
            assert_eq!((view["members"].clone(), view["added"].as_i64(), view["removed"].as_i64()), (first["members"].clone(), Some(0), Some(0)));
            let to: Vec<&str> = view["transitions"].as_array().expect("transitions").iter().filter_map(|t| t["to"].as_str()).collect();
            assert_eq!(to, ["queued", "admitted", "running", "succeeded"], "{view:?}");
        }
        assert_eq!(views[5]["attempt_history"][0]["rode_on"], Value::Null, "another as-of runs on its own: {:?}", views[5]);

        // History: one record per job, one chain (first, leader, riders in order, the other
        // as-of), the riders adding and removing nothing; the members are still the executor's.
        let history = api.get(&format!("/v1/tenants/acme/segments/{segment}/history")).await;
        let records = history.body["items"].as_array().expect("items");
        let chain: Vec<&str> = records.iter().rev().map(|r| r["run_id"].as_str().expect("run")).collect();
        let mut expected: Vec<&str> = vec![first["id"].as_str().expect("id")];
        expected.extend(ids.iter().map(String::as_str));
        expected.push(&other_id);
        assert_eq!(chain, expected, "{:?}", history.body);
        for pair in records.windows(2) {
            assert_eq!(pair[0]["previous_run_id"], pair[1]["run_id"], "{:?}", history.body);
        }
        let rider = &ids[2];
        let detail = api.get(&format!("/v1/tenants/acme/segments/{segment}/history/{rider}")).await;
        assert_eq!((detail.status, detail.body["changes"].as_array().map(Vec::len)), (200, Some(0)), "{:?}", detail.body);
        let before_other = members_of_run(&api, segment, &ids[4]).await;
        let expected = executor_members(&root.join("model.json"), &root.join(format!("segments/{segment}.json")), AS_OF);
        assert_eq!(before_other, expected.len() as i64);
        let later = executor_members(&root.join("model.json"), &root.join(format!("segments/{segment}.json")), "2026-11-20T00:00:00Z");
        assert_eq!(members(&api, "acme", segment, 1000).await, later);
        drop(server);
        store.drop_database().await;
    }
}

/// The member count a history record gives its run.
async fn members_of_run(api: &Api, segment: &str, run: &str) -> i64 {
    let record = api.get(&format!("/v1/tenants/acme/segments/{segment}/history/{run}")).await;
    assert_eq!(record.status, 200, "{:?}", record.body);
    record.body["run"]["members"].as_i64().expect("members")
}
