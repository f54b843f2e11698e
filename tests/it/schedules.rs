//! Schedules against real `cohort serve` processes: a due run that passes while the service is
//! down runs once after the restart (within the catch-up window; older ones are skipped and
//! counted), and two processes on one PostgreSQL never enqueue a due run twice.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Value, json};

use crate::server::{ADMIN, Api, Backend, Server, TestStore, datagen, postgres, setup_tenant};

/// A cron expression due once: at `t` (whole seconds, UTC).
fn once_at(t: DateTime<Utc>) -> String {
    format!("{} {} {} {} {} * {}", t.second(), t.minute(), t.hour(), t.day(), t.month(), t.year())
}

fn whole_second_after(t: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() + 1 + seconds, 0).expect("a time")
}

async fn sleep_until(t: DateTime<Utc>) {
    let left = (t - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left).await;
}

async fn schedule(api: &Api, tenant: &str, segment: &str, definition: &Value, cron: Option<&str>, overlap: &str) {
    let put = api.put(&format!("/v1/tenants/{tenant}/segments/{segment}"), &json!({"definition": definition, "schedule": cron, "overlap": overlap})).await;
    assert!(put.status == 200 || put.status == 201, "{:?}", put.body);
}

async fn runs(api: &Api, tenant: &str, segment: &str) -> Vec<Value> {
    let page = api.get(&format!("/v1/tenants/{tenant}/segments/{segment}/runs?limit=1000")).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body["items"].as_array().expect("items").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_due_while_the_service_is_down_runs_once_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("t");
    datagen("retail", 300, 21, &root);
    let mut definition: Value = serde_json::from_str(&std::fs::read_to_string(root.join("segments/lapsed_buyers.json")).expect("segment")).expect("json");
    definition.as_object_mut().expect("object").remove("name");
    let data = dir.path().join("data");
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let env = [("COHORT_CATCH_UP_SECONDS", "3")];
    let mut server = Server::start_with(&data, &url, 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let api = setup_tenant(&admin, "t", "us-east", &root, &[]).await;
    // "stale" falls due 2 s from now, "fresh" 4 s later; the service is down for both. (Set
    // while both are still ahead: on a machine slow enough to pass "stale" meanwhile, again
    // with later times.)
    let (_, fresh) = loop {
        let stale = whole_second_after(Utc::now(), 2);
        let fresh = whole_second_after(stale, 3);
        schedule(&api, "t", "stale", &definition, Some(&once_at(stale)), "skip").await;
        schedule(&api, "t", "fresh", &definition, Some(&once_at(fresh)), "skip").await;
        let view = api.get("/v1/tenants/t/segments/stale").await.body;
        if view["next_due_at"].is_string() && Utc::now() < stale {
            break (stale, fresh);
        }
    };
    assert!(server.terminate().success());

    // Back half a second after "fresh" was due: it is within the 3 s of catch-up, "stale"
    // (4.5 s late) is not.
    sleep_until(fresh + chrono::Duration::milliseconds(500)).await;
    let mut server = Server::start_with(&data, &url, 2, &env);
    let api = Api::new(&server.base, &api.token);
    let fresh_runs = runs(&api, "t", "fresh").await;
    assert_eq!(fresh_runs.len(), 1, "{fresh_runs:?}");
    assert_eq!(fresh_runs[0]["trigger"], "schedule");
    let due = fresh.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!((fresh_runs[0]["due_at"].as_str(), fresh_runs[0]["as_of"].as_str()), (Some(due.as_str()), Some(due.as_str())));
    assert!(runs(&api, "t", "stale").await.is_empty());
    let stale_view = api.get("/v1/tenants/t/segments/stale").await.body;
    assert_eq!((stale_view["missed_runs"].as_i64(), &stale_view["next_due_at"]), (Some(1), &Value::Null), "{stale_view:?}");
    let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("cohort_schedule_runs_missed_total 1\n"), "{metrics}");
    let id = fresh_runs[0]["id"].as_str().expect("id").to_string();
    let done = api.get(&format!("/v1/tenants/t/runs/{id}?wait_seconds=60")).await.body;
    assert_eq!(done["status"], "succeeded", "{done:?}");

    // Another restart enqueues nothing again.
    assert!(server.terminate().success());
    let server = Server::start_with(&data, &url, 2, &env);
    let api = Api::new(&server.base, &api.token);
    assert_eq!(runs(&api, "t", "fresh").await.len(), 1);
    assert!(runs(&api, "t", "stale").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_enqueue_each_due_run_once() {
    let Some(pg) = postgres() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("t");
    datagen("retail", 300, 22, &root);
    let mut definition: Value = serde_json::from_str(&std::fs::read_to_string(root.join("segments/lapsed_buyers.json")).expect("segment")).expect("json");
    definition.as_object_mut().expect("object").remove("name");
    let store = TestStore::new(&Backend::Postgres(pg), dir.path()).await;
    // Both processes share the store and the membership folder, as replicas would.
    let data = dir.path().join("data");
    let mut a = Server::start(&data, &store.url, 2);
    let mut b = Server::start(&data, &store.url, 2);
    let admin = Api::new(&a.base, ADMIN);
    let api = setup_tenant(&admin, "t", "us-east", &root, &[]).await;
    let segments: Vec<String> = (0..4).map(|k| format!("every_second_{k}")).collect();
    for s in &segments {
        schedule(&api, "t", s, &definition, Some("* * * * * *"), "allow").await;
    }
    // Both processes tick through due times until each segment has had three, then the
    // schedules stop (through the other process).
    let api_b = Api::new(&b.base, &api.token);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for s in &segments {
        loop {
            let due: std::collections::BTreeSet<String> = runs(&api_b, "t", s).await.iter().filter_map(|j| j["due_at"].as_str().map(String::from)).collect();
            if due.len() >= 3 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{s}: {} due runs enqueued in two minutes", due.len());
            // The next due time is at most a second away; its enqueueing has no event to wait on.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for s in &segments {
        schedule(&api_b, "t", s, &definition, None, "allow").await;
    }
    for s in &segments {
        let jobs = runs(&api_b, "t", s).await;
        let mut per_due: BTreeMap<String, usize> = BTreeMap::new();
        for job in &jobs {
            assert_eq!(job["trigger"], "schedule");
            *per_due.entry(job["due_at"].as_str().expect("due_at").to_string()).or_default() += 1;
        }
        println!("{s}: {} due runs, each enqueued once", per_due.len());
        assert!(per_due.len() >= 3, "{s}: {} due runs", per_due.len());
        assert!(per_due.values().all(|n| *n == 1), "{s}: a due run enqueued twice: {per_due:?}");
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    store.drop_database().await;
}
