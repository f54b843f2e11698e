//! Commit fencing on PostgreSQL: a replica frozen (SIGSTOP) past its lease while it runs a job
//! loses the job to another replica, which runs and commits it; when the first one goes on
//! (SIGCONT) and finishes its attempt, it commits nothing and changes none of the committed
//! run's files.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Backend, Server, TestStore, datagen, key_text, postgres, setup_tenant};

/// Large enough that the job runs for a second or more (debug build), so the replica is
/// frozen mid-run; the test checks that it was.
const SCALE: u64 = 200_000;
const SEGMENT: &str = "multi_category_shoppers";
const TENANT: &str = "f";

/// Settings of both replicas: a lease of one second (renewed every third), no deadline that
/// could end the frozen attempt before it commits, a grant the job fits in at once.
fn settings(instance: &str) -> Vec<(&str, &str)> {
    vec![
        ("COHORT_INSTANCE", instance),
        ("COHORT_LEASE_SECONDS", "1"),
        ("COHORT_POLL_MS", "100"),
        ("COHORT_DEADLINE_FLOOR_SECONDS", "600"),
        ("COHORT_DEADLINE_CEILING_SECONDS", "600"),
        ("COHORT_ESTIMATOR", "false"),
        ("COHORT_MIN_GRANT", "2GiB"),
    ]
}

/// Every page of `path` (which takes `offset` and `limit`), concatenated: the items under
/// `field`, and the last page's body.
async fn all_pages(api: &Api, path: &str, field: &str) -> (Vec<Value>, Value) {
    let mut items = Vec::new();
    loop {
        let page = api.get(&format!("{path}?offset={}&limit=10000", items.len())).await;
        assert_eq!(page.status, 200, "{path}: {:?}", page.body);
        let got = page.body[field].as_array().expect("items").clone();
        let total = page.body["total"].as_u64().expect("total") as usize;
        items.extend(got.iter().cloned());
        if got.is_empty() || items.len() >= total {
            return (items, page.body);
        }
    }
}

/// The committed run's record and its changes, as the API answers them.
async fn committed_run(api: &Api, id: &str) -> (Value, Vec<(String, String)>) {
    let path = format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/history/{id}");
    let (changes, last) = all_pages(api, &path, "changes").await;
    let changes = changes.iter().map(|c| (key_text(&c["key"]), c["change"].as_str().unwrap_or_default().to_string())).collect();
    (last["run"].clone(), changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_its_lease_commits_nothing_and_leaves_the_committed_run_s_files_alone() {
    let Some(url) = postgres() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(TENANT);
    datagen("retail", SCALE, 11, &root);
    let store = TestStore::new(&Backend::Postgres(url), dir.path()).await;
    let data_dir = dir.path().join("shared");

    // Replica A alone admits the job, and is frozen once the job runs.
    let first = Server::start_with(&data_dir, &store.url, 1, &settings("replica-a"));
    let admin = Api::new(&first.base, ADMIN);
    let on_first = setup_tenant(&admin, TENANT, "us-east", &root, &[SEGMENT]).await;
    let submitted = on_first.post(&format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/runs"), &json!({"as_of": AS_OF})).await;
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    let id = submitted.body["id"].as_str().expect("id").to_string();
    let view = crate::server::watch(&on_first, TENANT, &id, |v| !["queued", "admitted"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "running", "{view}");
    first.pause();
    let frozen_at = Instant::now();

    // Replica B queues it again once A's lease ran out, runs it and commits it.
    let second = Server::start_with(&data_dir, &store.url, 1, &settings("replica-b"));
    let on_second = Api::new(&second.base, &on_first.token);
    let view = on_second.get(&format!("/v1/tenants/{TENANT}/runs/{id}")).await.body;
    assert!(
        view["status"] == "running" || view["transitions"].as_array().is_some_and(|t| t.iter().any(|t| t["from"] == "running" && t["to"] == "queued")),
        "the job ended before replica-a was frozen (make SCALE larger): {view}"
    );
    let view = crate::server::watch(&on_second, TENANT, &id, |v| v["status"] == "succeeded" || v["status"] == "failed").await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let transitions = view["transitions"].as_array().expect("transitions");
    assert!(
        transitions.iter().any(|t| t["detail"].as_str().unwrap_or_default().contains("the lease of process replica-a ran out")),
        "replica-b did not take the job over from replica-a: {view}"
    );
    let attempts = view["attempt_history"].as_array().expect("attempts");
    assert!(attempts.len() >= 2, "{view}");
    let frozen_attempt = attempts[0]["attempt"].as_i64().expect("attempt");
    assert!(attempts[0]["finished_at"].is_null(), "replica-a's attempt finished while it was frozen: {view}");
    let (record, changes) = committed_run(&on_second, &id).await;
    let (members, _) = all_pages(&on_second, &format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/members"), "items").await;
    let members: BTreeSet<String> = members.iter().map(key_text).collect();
    println!("replica-a frozen for {:.1} s; replica-b committed {id} with {} members", frozen_at.elapsed().as_secs_f64(), members.len());

    // A goes on: its attempt ends without a second commit.
    first.resume();
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let view = on_second.get(&format!("/v1/tenants/{TENANT}/runs/{id}")).await.body;
        let attempt = view["attempt_history"].as_array().and_then(|a| a.iter().find(|a| a["attempt"] == frozen_attempt).cloned());
        if attempt.is_some_and(|a| !a["finished_at"].is_null()) {
            break view;
        }
        assert!(Instant::now() < deadline, "replica-a's attempt never ended after SIGCONT: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let succeeded = view["transitions"].as_array().expect("transitions").iter().filter(|t| t["to"] == "succeeded").count();
    assert_eq!(succeeded, 1, "the job was committed {succeeded} times: {view}");
    assert_eq!(view["status"], "succeeded", "{view}");

    // One history record, and the files behind it are the committed run's, exactly.
    let history = crate::server::history(&on_second, TENANT, SEGMENT).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["run_id"], id.as_str());
    let (record_after, changes_after) = committed_run(&on_second, &id).await;
    assert_eq!(record_after, record, "the history record changed");
    let added: BTreeSet<String> = changes_after.iter().filter(|c| c.1 == "added").map(|c| c.0.clone()).collect();
    let removed = changes_after.iter().filter(|c| c.1 == "removed").count();
    assert_eq!(
        (added.len() as i64, removed as i64),
        (record["added"].as_i64().expect("added"), record["removed"].as_i64().expect("removed")),
        "the run's changes file does not match its record {record}"
    );
    assert_eq!(changes_after, changes, "the committed run's changes file was rewritten after its commit");
    assert_eq!(added, members, "the first run added exactly its members");
    let (members_after, page) = all_pages(&on_second, &format!("/v1/tenants/{TENANT}/segments/{SEGMENT}/members"), "items").await;
    assert_eq!(page["run_id"], id.as_str());
    assert_eq!(members_after.iter().map(key_text).collect::<BTreeSet<_>>(), members, "the members file changed after the commit");
    assert_eq!(members.len() as i64, record["members"].as_i64().expect("members"));
    drop((first, second));
    store.drop_database().await;
}
