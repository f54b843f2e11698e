//! Paging through a segment's members while new runs of it commit: a client pins the run the
//! first page names (`run_id`), and every page it then reads is of that run, or 410 naming
//! the latest run once that run's members are gone; no read answers 500.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{ADMIN, Api, Backend, Server, TestStore, datagen, key_text, setup_tenant, watch};

const TENANT: &str = "m";
const SEGMENT: &str = "lapsed_buyers";
/// Runs committed while the reader pages.
const RUNS: usize = 12;
const PAGE: usize = 97;

/// One pinned listing of a run's members, page by page: `Ok((run, total, keys))`, or
/// `Err(latest)` when a page answered 410 (naming the latest run). Panics on any other answer.
async fn pinned_listing(api: &Api, answers: &mut Vec<u16>) -> Result<(String, usize, Vec<String>), String> {
    let path = format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/members");
    let first = api.get(&format!("{path}?limit={PAGE}")).await;
    answers.push(first.status);
    assert_eq!(first.status, 200, "the first page: {:?}", first.body);
    let run = first.body["run_id"].as_str().expect("the first page names its run").to_string();
    let total = first.body["total"].as_u64().expect("total") as usize;
    let mut keys: Vec<String> = first.body["items"].as_array().expect("items").iter().map(key_text).collect();
    while keys.len() < total {
        let page = api.get(&format!("{path}?run_id={run}&offset={}&limit={PAGE}", keys.len())).await;
        answers.push(page.status);
        match page.status {
            200 => {
                assert_eq!(page.body["run_id"], run.as_str(), "a pinned page of another run: {:?}", page.body);
                assert_eq!(page.body["total"].as_u64(), Some(total as u64), "a pinned page with another total: {:?}", page.body);
                assert_eq!(page.body["offset"].as_u64(), Some(keys.len() as u64), "{:?}", page.body);
                let items = page.body["items"].as_array().expect("items");
                assert_eq!(items.len(), PAGE.min(total - keys.len()), "{:?}", page.body);
                keys.extend(items.iter().map(key_text));
            }
            410 => {
                assert_eq!(page.body["error"]["code"], "run_gone", "{:?}", page.body);
                let latest = page.body["error"]["details"]["latest_run_id"].as_str().expect("410 names the latest run");
                assert_ne!(latest, run, "410 names the pinned run as the latest: {:?}", page.body);
                return Err(latest.to_string());
            }
            other => panic!("a pinned page answered {other}: {:?}", page.body),
        }
    }
    Ok((run, total, keys))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_pages_of_a_pinned_run_stay_consistent_while_runs_commit_and_never_answer_500() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(TENANT);
    datagen("retail", 5000, 17, &root);
    let store = TestStore::new(&Backend::Sqlite, dir.path()).await;
    let server = Server::start(&dir.path().join("serve"), &store.url, 2);
    let admin = Api::new(&server.base, ADMIN);
    let api = setup_tenant(&admin, TENANT, "us-east", &root, &[SEGMENT]).await;
    let runs_path = format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/runs");
    let first = api.post(&runs_path, &json!({"as_of": "2026-11-01T00:00:00Z"})).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let done = |v: &Value| v["status"] == "succeeded" || v["status"] == "failed";
    assert_eq!(watch(&api, TENANT, first.body["id"].as_str().expect("id"), done).await["status"], "succeeded");

    // Runs of other as-ofs (other members) commit one after another while the reader pages.
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..RUNS {
                let as_of = format!("2026-{:02}-01T00:00:00Z", [9, 7, 5, 3, 1, 11][i % 6]);
                let run = api.post(&runs_path, &json!({"as_of": as_of})).await;
                assert_eq!(run.status, 202, "{:?}", run.body);
                let id = run.body["id"].as_str().expect("id").to_string();
                let view = watch(&api, TENANT, &id, |v| v["status"] == "succeeded" || v["status"] == "failed").await;
                assert_eq!(view["status"], "succeeded", "{view}");
                ids.push(id);
            }
            ids
        })
    };
    let mut answers = Vec::new();
    let (mut complete, mut gone) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the runs never all committed");
        match pinned_listing(&api, &mut answers).await {
            Ok(listing) => complete.push(listing),
            Err(_) => gone += 1,
        }
    }
    let ids = writer.await.expect("writer");
    complete.push(pinned_listing(&api, &mut answers).await.expect("no commit races the last listing"));
    assert!(answers.iter().all(|s| *s == 200 || *s == 410), "answers other than 200 and 410: {answers:?}");

    // Each complete listing is its run's members, whole: sorted, no key twice, as many as the
    // total; and, while the run's members are there, what one page of all of them holds.
    let mut runs_seen = BTreeSet::new();
    for (run, total, keys) in &complete {
        assert_eq!(keys.len(), *total, "{run}");
        let unique: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{run}: a key twice across pages");
        runs_seen.insert(run.clone());
        let whole = api.get(&format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/members?run_id={run}&limit=10000")).await;
        match whole.status {
            200 => assert_eq!(&whole.body["items"].as_array().expect("items").iter().map(key_text).collect::<Vec<_>>(), keys, "{run}"),
            410 => assert_eq!(whole.body["error"]["details"]["latest_run_id"], ids.last().map(String::as_str).unwrap_or_default()),
            other => panic!("{run}: {other} {:?}", whole.body),
        }
    }
    let last = complete.last().expect("a last listing");
    assert_eq!(Some(&last.0), ids.last(), "the last listing is of the latest run");
    // A run the segment never had, or of another segment, is not found.
    let unknown = api.get(&format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/members?run_id=run_none")).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    println!(
        "members: {} pinned listings complete over {} runs, {gone} ended by 410, {} pages read while {RUNS} runs committed",
        complete.len(),
        runs_seen.len(),
        answers.len()
    );
    drop(server);
}
