//! Jobs routed to an Apache DataFusion Ballista cluster by their estimate. A cluster of one
//! scheduler and two executors runs as its own process (`cohort ballista local`) on loopback
//! ports; the service is pointed at it (`COHORT_BALLISTA`). A tenant whose quota is below its
//! jobs' estimates has them run on the cluster, the other tenant's stay in the service's pool;
//! the choice is on the job. A cluster job reports its attempt's measurements like an
//! embedded one, finds the same members, and its failures are classified and retried the same
//! way.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Server, datagen, executor_members, key_text, setup_tenant, setup_tenant_with, watch};

/// A `cohort ballista local` process, killed when dropped.
struct Cluster {
    child: Child,
    url: String,
}

impl Cluster {
    fn start(executors: usize) -> Cluster {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["ballista", "local", "--executors", &executors.to_string(), "--task-slots", "2"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cohort ballista local starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = match lines.next() {
            Some(Ok(line)) if line.starts_with("df://") => line.trim().to_string(),
            other => {
                let _ = child.kill();
                panic!("cohort ballista local printed no URL: {other:?}");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Cluster { child, url }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn enqueue(api: &Api, tenant: &str, segment: &str) -> String {
    let queued = api.post(&format!("/v1/tenants/{tenant}/segments/{segment}/runs"), &json!({"as_of": AS_OF})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    queued.body["id"].as_str().expect("id").to_string()
}

fn is_final(view: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or(""))
}

async fn members(api: &Api, tenant: &str, segment: &str) -> Vec<String> {
    let page = api.get(&format!("/v1/tenants/{tenant}/segments/{segment}/members?limit=10000")).await;
    let mut got: Vec<String> = page.body["items"].as_array().expect("items").iter().map(key_text).collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_estimated_above_the_pool_run_on_ballista_and_report_and_retry_like_embedded_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (big_root, small_root) = (dir.path().join("big"), dir.path().join("small"));
    datagen("retail", 400, 71, &big_root);
    datagen("retail", 400, 72, &small_root);
    let cluster = Cluster::start(2);
    let server = Server::start_with(
        &dir.path().join("data"),
        &format!("sqlite://{}", dir.path().join("c.db").display()),
        2,
        &[("COHORT_BALLISTA", cluster.url.as_str()), ("COHORT_RETRY_BACKOFF_MS", "200")],
    );
    let admin = Api::new(&server.base, ADMIN);
    let segment = "lapsed_buyers";
    // Every estimate is at least the smallest grant (64 KiB) plus the sources': above this
    // tenant's quota, so its jobs cannot run in the pool.
    let big = setup_tenant_with(&admin, "big", "us-east", &big_root, &[segment], json!({"memory_quota_bytes": 65536})).await;
    let small = setup_tenant(&admin, "small", "us-east", &small_root, &[segment]).await;

    let (big_id, small_id) = (enqueue(&big, "big", segment).await, enqueue(&small, "small", segment).await);
    let big_view = watch(&big, "big", &big_id, is_final).await;
    let small_view = watch(&small, "small", &small_id, is_final).await;
    assert_eq!(big_view["status"], "succeeded", "{big_view:?}");
    assert_eq!(small_view["status"], "succeeded", "{small_view:?}");
    assert_eq!(big_view["backend"], "ballista", "{big_view:?}");
    assert_eq!(small_view["backend"], "embedded", "{small_view:?}");
    let admitted = big_view["transitions"].as_array().expect("transitions").iter().find(|t| t["to"] == "admitted").expect("admitted");
    assert!(admitted["detail"].as_str().is_some_and(|d| d.contains(&cluster.url)), "{admitted:?}");

    // The same measurements as an embedded job.
    for (name, view) in [("ballista", &big_view), ("embedded", &small_view)] {
        let attempt = &view["attempt_history"][0];
        println!(
            "{name}: {} members, {} rows scanned, peak {} bytes, {} s",
            view["members"], attempt["rows_scanned"], attempt["peak_memory_bytes"], attempt["elapsed_seconds"]
        );
        assert!(attempt["rows_scanned"].as_i64().is_some_and(|r| r > 0), "{name}: {attempt:?}");
        assert!(attempt["bytes_scanned"].as_i64().is_some_and(|r| r > 0), "{name}: {attempt:?}");
        assert!(attempt["elapsed_seconds"].as_f64().is_some_and(|s| s > 0.0), "{name}: {attempt:?}");
        assert!(attempt["peak_memory_bytes"].as_i64().is_some_and(|m| m > 0), "{name}: {attempt:?}");
        assert_eq!(attempt["outcome"], "succeeded");
    }
    // The members are those the embedded executor finds.
    let expected = executor_members(&big_root.join("model.json"), &big_root.join(format!("segments/{segment}.json")), AS_OF);
    assert_eq!(members(&big, "big", segment).await, expected);
    assert_eq!(big_view["members"].as_i64(), Some(expected.len() as i64));

    // A source that fails twice then recovers: the same classes and retries as embedded.
    let (orders, hidden) = (big_root.join("order"), big_root.join("order.away"));
    std::fs::rename(&orders, &hidden).expect("hide the orders");
    let id = enqueue(&big, "big", segment).await;
    let second = watch(&big, "big", &id, |v| v["status"] == "retrying" && v["attempts"] == 2).await;
    assert_eq!(second["error_class"], "source_unavailable", "{second:?}");
    std::fs::rename(&hidden, &orders).expect("bring the orders back");
    let view = watch(&big, "big", &id, is_final).await;
    assert_eq!((view["status"].as_str(), view["backend"].as_str()), (Some("succeeded"), Some("ballista")), "{view:?}");
    let classes: Vec<Option<&str>> = view["attempt_history"].as_array().expect("attempts").iter().map(|a| a["error_class"].as_str()).collect();
    assert_eq!(classes, vec![Some("source_unavailable"), Some("source_unavailable"), None]);

    // With the cluster gone, a job routed to it fails as an execution failure, retried like
    // one until its attempts are spent.
    drop(cluster);
    let id = enqueue(&big, "big", segment).await;
    let view = watch(&big, "big", &id, is_final).await;
    assert_eq!((view["status"].as_str(), view["error_class"].as_str()), (Some("failed"), Some("execution")), "{view:?}");
    assert_eq!(view["attempts"], 3, "{view:?}");
    assert!(view["error_message"].as_str().is_some_and(|m| m.contains("Ballista")), "{view:?}");
}
