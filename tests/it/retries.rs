//! Retries through the real service, by failure class: out of memory retries at once with a
//! doubled grant; a source that fails twice then recovers succeeds on the third attempt after
//! backoff; an invalid segment fails once, with no retry; a deadline stops a runaway job.

use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Server, datagen, executor_members, key_text, setup_tenant, watch};

fn classes(view: &Value) -> Vec<Option<String>> {
    view["attempt_history"].as_array().expect("attempts").iter().map(|a| a["error_class"].as_str().map(String::from)).collect()
}

fn grants(view: &Value) -> Vec<i64> {
    view["attempt_history"].as_array().expect("attempts").iter().map(|a| a["grant_bytes"].as_i64().expect("grant")).collect()
}

fn time(text: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(text.as_str().expect("a time")).expect("RFC 3339")
}

async fn enqueue(api: &Api, tenant: &str, segment: &str, body: Value) -> String {
    let queued = api.post(&format!("/v1/tenants/{tenant}/segments/{segment}/runs"), &body).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    queued.body["id"].as_str().expect("id").to_string()
}

async fn finished(api: &Api, tenant: &str, id: &str) -> Value {
    let view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=60")).await.body;
    assert!(["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or("")), "not finished: {view:?}");
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_exhausts_its_grant_succeeds_on_a_larger_one_and_the_next_estimate_goes_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("big");
    datagen("retail", 20_000, 5, &root);
    // Before any run the estimator's size rule asks for 2 × 1 MiB, whatever the sources; this
    // segment needs about 13 MiB.
    let env = [("COHORT_MIN_GRANT", "1MiB"), ("COHORT_GRANT_PER_SOURCE_BYTE", "0")];
    let server = Server::start_with(&dir.path().join("data"), &format!("sqlite://{}", dir.path().join("c.db").display()), 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let api = setup_tenant(&admin, "big", "us-east", &root, &["multi_category_shoppers"]).await;
    let id = enqueue(&api, "big", "multi_category_shoppers", json!({"as_of": AS_OF})).await;
    let view = finished(&api, "big", &id).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    let classes = classes(&view);
    let grants = grants(&view);
    println!("attempts: {classes:?} under grants {grants:?}; estimate {}", view["estimate"]);
    // The job was granted the estimator's bound.
    assert_eq!(view["estimate"]["basis"], "cold_rule", "{view:?}");
    assert_eq!(grants[0], view["estimate"]["bound_bytes"].as_i64().expect("bound"));
    assert_eq!(grants[0], 2 << 20);
    assert!(classes.len() >= 2, "the first grant was enough: {view:?}");
    assert!(classes[..classes.len() - 1].iter().all(|c| c.as_deref() == Some("resources_exhausted")), "{classes:?}");
    assert_eq!(classes.last(), Some(&None));
    assert!(grants.windows(2).all(|w| w[1] == 2 * w[0]), "each retry doubles the grant: {grants:?}");
    assert_eq!(view["grant_bytes"].as_i64(), grants.last().copied(), "the job keeps the grant that worked");
    // No wait between memory retries: nothing transient about them.
    let retries: Vec<&Value> = view["transitions"].as_array().expect("transitions").iter().filter(|t| t["to"] == "retrying").collect();
    assert_eq!(retries.len(), classes.len() - 1);
    assert!(retries.iter().all(|t| t["detail"].as_str().is_some_and(|d| d.contains("ran out of its"))), "{retries:?}");
    // The members are the executor's answer.
    let members = api.get("/v1/tenants/big/segments/multi_category_shoppers/members?limit=10000").await;
    let mut got: Vec<String> = members.body["items"].as_array().expect("items").iter().map(key_text).collect();
    got.sort();
    let expected = executor_members(&root.join("model.json"), &root.join("segments/multi_category_shoppers.json"), AS_OF);
    assert_eq!(got, expected);

    // The estimator learned: the next run of the segment asks for more than the peak it saw,
    // and runs at once under it.
    let peak = view["attempt_history"].as_array().and_then(|a| a.last()).and_then(|a| a["peak_memory_bytes"].as_i64()).expect("peak");
    let again = enqueue(&api, "big", "multi_category_shoppers", json!({"as_of": AS_OF})).await;
    let next = finished(&api, "big", &again).await;
    println!("next: grants {:?}; estimate {}", self::grants(&next), next["estimate"]);
    assert_eq!(next["status"], "succeeded", "{next:?}");
    assert_eq!(next["estimate"]["basis"], "warm_rule", "{next:?}");
    let bound = next["estimate"]["bound_bytes"].as_i64().expect("bound");
    assert!(bound > grants[0] && bound >= peak, "bound {bound} after a peak of {peak}: {next:?}");
    assert_eq!(self::grants(&next), vec![bound], "one attempt, under the estimator's bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_and_recover_and_invalid_ones_never_retry_and_deadlines_stop_runaways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky_root = dir.path().join("flaky");
    let broken_root = dir.path().join("broken");
    let slow_root = dir.path().join("slow");
    datagen("retail", 300, 6, &flaky_root);
    datagen("retail", 300, 7, &broken_root);
    datagen("retail", 20_000, 8, &slow_root);
    let server =
        Server::start_with(&dir.path().join("data"), &format!("sqlite://{}", dir.path().join("c.db").display()), 2, &[("COHORT_RETRY_BACKOFF_MS", "1000")]);
    let admin = Api::new(&server.base, ADMIN);

    // A source that fails twice, then recovers.
    let flaky = setup_tenant(&admin, "flaky", "us-east", &flaky_root, &["lapsed_buyers"]).await;
    let orders = flaky_root.join("order");
    let hidden = flaky_root.join("order.away");
    std::fs::rename(&orders, &hidden).expect("hide the orders");
    let id = enqueue(&flaky, "flaky", "lapsed_buyers", json!({"as_of": AS_OF})).await;
    let second_failure = watch(&flaky, "flaky", &id, |v| v["status"] == "retrying" && v["attempts"] == 2).await;
    assert_eq!(second_failure["error_class"], "source_unavailable", "{second_failure:?}");
    assert_eq!(second_failure["waiting"]["reason"], "retry_backoff");
    std::fs::rename(&hidden, &orders).expect("bring the orders back");
    let view = finished(&flaky, "flaky", &id).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    let expected: Vec<Option<String>> = vec![Some("source_unavailable".into()), Some("source_unavailable".into()), None];
    assert_eq!(classes(&view), expected);
    // Exponential backoff with jitter: the second wait is at least the base (2 × 1 s, half
    // of it jittered), the first at least half the base.
    let attempts = view["attempt_history"].as_array().expect("attempts");
    let gap = |i: usize| (time(&attempts[i + 1]["started_at"]) - time(&attempts[i]["finished_at"])).num_milliseconds();
    assert!(gap(0) >= 500 && gap(1) >= 1000, "waits {} ms and {} ms", gap(0), gap(1));
    let members = flaky.get("/v1/tenants/flaky/segments/lapsed_buyers/members?limit=10000").await;
    let mut got: Vec<String> = members.body["items"].as_array().expect("items").iter().map(key_text).collect();
    got.sort();
    assert_eq!(got, executor_members(&flaky_root.join("model.json"), &flaky_root.join("segments/lapsed_buyers.json"), AS_OF));

    // A segment the model no longer supports: invalid, failed once, never retried.
    let broken = setup_tenant(&admin, "broken", "us-east", &broken_root, &["lapsed_buyers"]).await;
    let mut model: Value = serde_json::from_str(&std::fs::read_to_string(broken_root.join("model.json")).expect("model")).expect("json");
    let fields = model["objects"][0]["fields"].as_array_mut().expect("fields");
    fields.retain(|f| f["name"] != "email_opt_in");
    let put = broken.put("/v1/tenants/broken/model", &model).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let id = enqueue(&broken, "broken", "lapsed_buyers", json!({"as_of": AS_OF})).await;
    let view = finished(&broken, "broken", &id).await;
    assert_eq!((view["status"].as_str(), view["error_class"].as_str(), view["attempts"].as_i64()), (Some("failed"), Some("invalid"), Some(1)), "{view:?}");
    assert!(view["error_message"].as_str().is_some_and(|m| m.contains("email_opt_in")), "{view:?}");
    assert!(view["transitions"].as_array().expect("transitions").iter().all(|t| t["to"] != "retrying"));

    // A deadline far below what the job needs: stopped, failed as timeout, not retried.
    let slow = setup_tenant(&admin, "slow", "us-east", &slow_root, &["multi_category_shoppers"]).await;
    let id = enqueue(&slow, "slow", "multi_category_shoppers", json!({"as_of": AS_OF, "timeout_seconds": 0.01})).await;
    let view = finished(&slow, "slow", &id).await;
    assert_eq!((view["status"].as_str(), view["error_class"].as_str(), view["attempts"].as_i64()), (Some("failed"), Some("timeout"), Some(1)), "{view:?}");
    assert!(view["error_message"].as_str().is_some_and(|m| m.contains("deadline")), "{view:?}");
    let stopped = view["attempt_history"][0]["elapsed_seconds"].as_f64().expect("elapsed");
    // The same job with the deadline from its estimate runs to the end, and takes longer
    // than the deadline that stopped it.
    let id = enqueue(&slow, "slow", "multi_category_shoppers", json!({"as_of": AS_OF})).await;
    let view = finished(&slow, "slow", &id).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    let whole = view["attempt_history"][0]["elapsed_seconds"].as_f64().expect("elapsed");
    assert!(whole > 0.01, "{view:?}");
    assert!(stopped < whole, "stopped at its deadline ({stopped} s), not when it was done ({whole} s)");
}
