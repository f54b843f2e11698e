//! Failure alerts end to end: a real service, jobs that really fail, and a real HTTP receiver
//! on a loopback port that checks every signature.

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cohort_alerting::notify::verify;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::server::{ADMIN, AS_OF, Api, Server, backends, datagen, setup_tenant, setup_tenant_with, watch};

pub const SECRET: &str = "whsec_Y29ob3J0LXRlc3QtcmVjZWl2ZXItc2VjcmV0";

/// One webhook as the receiver got it, its signature checked.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub body: Value,
}

impl Webhook {
    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("")
    }

    pub fn label(&self, name: &str) -> &str {
        self.body["alerts"][0]["labels"][name].as_str().unwrap_or("")
    }

    pub fn annotation(&self, name: &str) -> &str {
        self.body["alerts"][0]["annotations"][name].as_str().unwrap_or("")
    }
}

/// An HTTP receiver on `listener`: every POST's signature is verified, and the webhook sent on.
pub async fn receive(listener: tokio::net::TcpListener) -> mpsc::UnboundedReceiver<Webhook> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
                let timestamp: i64 = timestamp.parse().unwrap_or(-1);
                if !verify(SECRET, &id, timestamp, &body, &signature) {
                    return StatusCode::UNAUTHORIZED;
                }
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send(Webhook { id, body });
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    rx
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Webhook>) -> Webhook {
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("a webhook within a minute").expect("receiver running")
}

/// A tenant whose segment no longer fits its model: every run fails at once, not retried.
pub async fn failing_tenant(admin: &Api, dir: &Path, id: &str, region: &str) -> Api {
    let root = dir.join(id);
    datagen("retail", 200, 11, &root);
    let api = setup_tenant(admin, id, region, &root, &["lapsed_buyers"]).await;
    let mut model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).expect("model")).expect("json");
    model["objects"][0]["fields"].as_array_mut().expect("fields").retain(|f| f["name"] != "email_opt_in");
    let put = api.put(&format!("/v1/tenants/{id}/model"), &model).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    api
}

pub async fn fail_once(api: &Api, tenant: &str) {
    let run = api.post(&format!("/v1/tenants/{tenant}/segments/lapsed_buyers/runs"), &json!({"as_of": AS_OF})).await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["id"].as_str().expect("id").to_string();
    let view = watch(api, tenant, &id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "failed", "{view:?}");
}

/// A tenant whose runs succeed, one at a time (`max_concurrent_jobs` 1): a run queued behind
/// its other runs is slow end to end.
pub async fn healthy_tenant(admin: &Api, dir: &Path, id: &str, region: &str) -> Api {
    let root = dir.join(id);
    datagen("retail", 200, 12, &root);
    let segments = ["lapsed_buyers"].into_iter().chain(BEHIND);
    setup_tenant_with(admin, id, region, &root, &segments.collect::<Vec<_>>(), json!({"max_concurrent_jobs": 1})).await
}

/// Queues a run of `segment` (its own as-of, so it rides on no other run); its id.
pub async fn submit(api: &Api, tenant: &str, segment: &str, as_of: &str) -> String {
    let run = api.post(&format!("/v1/tenants/{tenant}/segments/{segment}/runs"), &json!({"as_of": as_of})).await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    run.body["id"].as_str().expect("id").to_string()
}

/// Waits for a run to succeed; its view.
pub async fn succeeded(api: &Api, tenant: &str, id: &str) -> Value {
    let view = watch(api, tenant, id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    view
}

/// `n` runs of `lapsed_buyers`, one after the other (as of day `first` of October and the
/// days after): its runtime baseline.
pub async fn baseline(api: &Api, tenant: &str, first: usize, n: usize) -> Vec<Value> {
    let mut views = Vec::new();
    for i in first..first + n {
        let id = submit(api, tenant, "lapsed_buyers", &format!("2026-10-{i:02}T00:00:00Z")).await;
        views.push(succeeded(api, tenant, &id).await);
    }
    views
}

/// The segments a slow run waits behind: three runs of each at most, so none of them has
/// the baseline its own runtime alert needs.
const BEHIND: [&str; 6] =
    ["engaged_email_openers", "recent_electronics_buyers", "multi_category_shoppers", "browsed_not_bought", "new_signups_without_order", "bargain_hunters"];

/// A run of `lapsed_buyers` queued behind eighteen runs of other segments of its tenant (one
/// runs at a time): most of its end-to-end time is queue wait. Its view.
pub async fn slow_run(api: &Api, tenant: &str) -> Value {
    let mut ahead = Vec::new();
    for i in 0..3 * BEHIND.len() {
        ahead.push(submit(api, tenant, BEHIND[i % BEHIND.len()], &format!("2026-09-{:02}T00:00:00Z", i + 1)).await);
    }
    let slow = submit(api, tenant, "lapsed_buyers", "2026-08-01T00:00:00Z").await;
    for id in &ahead {
        succeeded(api, tenant, id).await;
    }
    succeeded(api, tenant, &slow).await
}

/// A run's end-to-end seconds, from submission to its end, as the runtime rule measures it.
pub fn end_to_end(view: &Value) -> f64 {
    seconds_between(view, "created_at", "finished_at")
}

/// The median of the last `n` of `runs` (the upper one of an even count), as the runtime
/// rule takes its baseline.
fn median_of_last(runs: &[f64], n: usize) -> f64 {
    let mut last = runs[runs.len().saturating_sub(n)..].to_vec();
    last.sort_by(f64::total_cmp);
    last.get(last.len() / 2).copied().unwrap_or(0.0)
}

/// Seconds between two RFC 3339 times of a run's view.
pub fn seconds_between(view: &Value, from: &str, to: &str) -> f64 {
    let at = |field: &str| {
        let text = view[field].as_str().unwrap_or_else(|| panic!("{field} in {view:?}"));
        chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?}: {e}")).timestamp_micros()
    };
    (at(to) - at(from)) as f64 / 1e6
}

/// The rules of a runtime test: only the runtime rule fires (3× a 3-run median, over 0.1 s:
/// a run of the test's data takes a few tens of milliseconds, one queued behind eighteen
/// others several times as long).
pub const RUNTIME_ONLY: &str = "[alerts.failures.tenant]\nthreshold = 1000\n[alerts.failures.region]\nthreshold = 1000\n\
     [alerts.failures.global]\nthreshold = 1000\n[alerts.burn_rate]\nenabled = false\n\
     [alerts.runtime]\nfactor = 3.0\nmin_seconds = 0.1\nbaseline_runs = 3\n";

pub fn config(dir: &Path, toml: &str) -> String {
    let path = dir.join("cohort.toml");
    std::fs::write(&path, toml).expect("config");
    path.display().to_string()
}

pub async fn add_receiver(admin: &Api, url: &str) {
    let created = admin.post("/v1/receivers", &json!({"id": "oncall", "url": url, "secret": SECRET})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["secret"], SECRET);
}

/// The receiver's view once nothing waits in its outbox (the webhook can arrive before the
/// service has recorded that it was taken).
pub async fn settled(admin: &Api) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = receiver_view(admin).await;
        if view["pending"] == 0 {
            return view;
        }
        assert!(std::time::Instant::now() < deadline, "the outbox never emptied: {view:?}");
    }
}

pub async fn receiver_view(admin: &Api) -> Value {
    let list = admin.get("/v1/receivers").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    list.body[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_of_a_tenant_page_once_and_resolve_once() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::server::TestStore::new(&backend, dir.path()).await;
        // Only the tenant rule can fire here, over a short window so it resolves soon.
        let rules = config(
            dir.path(),
            "[alerts.failures.tenant]\nwindow = \"4s\"\nthreshold = 5\n\
             [alerts.failures.region]\nthreshold = 1000\n[alerts.failures.global]\nthreshold = 1000\n",
        );
        let server = Server::start_with(&dir.path().join("data"), &store.url, 2, &[("COHORT_CONFIG", &rules)]);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        // Before its first job the tenant's failure counters are there, at 0, so that a
        // Prometheus scraping now sees its first failures as an increase.
        let before = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
        assert!(before.contains("cohort_job_failures_total{tenant=\"acme\",region=\"us-east\",error_class=\"source_unavailable\"} 0"), "{before}");
        for _ in 0..5 {
            fail_once(&acme, "acme").await;
        }

        let firing = next(&mut hooks).await;
        assert_eq!((firing.status(), firing.label("scope"), firing.label("tenant")), ("firing", "tenant", "acme"), "{:?}", firing.body);
        assert_eq!(firing.label("alertname"), "CohortJobFailures");
        assert_eq!(firing.body["version"], "4");
        assert_eq!(firing.body["alerts"][0]["status"], "firing");
        let alerts = admin.get("/v1/alerts").await;
        assert_eq!(alerts.body["items"].as_array().map(Vec::len), Some(1), "{:?}", alerts.body);
        assert_eq!(alerts.body["items"][0]["failures"], 5);
        // The series the Prometheus rules in dashboards/ read.
        let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
        let failed: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("cohort_jobs_finished_total{tenant=\"acme\",region=\"us-east\",outcome=\"failed\","))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(failed, 5, "{metrics}");
        assert!(metrics.contains("cohort_alerts_firing{rule=\"failures\",scope=\"tenant\"} 1"), "{metrics}");
        // The tenant sees its own alert.
        assert_eq!(acme.get("/v1/alerts").await.body["items"][0]["key"], "acme");

        // Four seconds after the first failure the window holds four: resolved, once.
        let resolved = next(&mut hooks).await;
        assert_eq!((resolved.status(), resolved.label("tenant")), ("resolved", "acme"), "{:?}", resolved.body);
        assert_eq!(resolved.body["alerts"][0]["fingerprint"], firing.body["alerts"][0]["fingerprint"]);
        assert_ne!(resolved.id, firing.id);
        let view = settled(&admin).await;
        assert_eq!((view["delivered"].as_i64(), view["dead"].as_i64()), (Some(2), Some(0)), "{view:?}");
        let history = admin.get("/v1/alerts?state=resolved").await;
        let id = history.body["items"][0]["id"].as_str().expect("id").to_string();
        let one = admin.get(&format!("/v1/alerts/{id}")).await;
        let kinds: Vec<&str> = one.body["history"].as_array().expect("history").iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds, ["fired", "notified", "resolved", "notified"], "{:?}", one.body);
        assert!(hooks.try_recv().is_err(), "no other webhook");
        drop(server);
        store.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_wide_failure_pages_once_for_the_region_listing_its_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = config(dir.path(), "[alerts.failures.global]\nthreshold = 1000\n");
    let server = Server::start_with(
        &dir.path().join("data"),
        &format!("sqlite://{}", dir.path().join("c.db").display()),
        2,
        &[("COHORT_CONFIG", &rules), ("COHORT_ALERT_GROUP_INTERVAL_SECONDS", "1")],
    );
    let admin = Api::new(&server.base, ADMIN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let mut hooks = receive(listener).await;
    add_receiver(&admin, &url).await;
    let tenants = ["north", "south", "west"];
    let mut apis = Vec::new();
    for t in tenants {
        apis.push(failing_tenant(&admin, dir.path(), t, "eu-west").await);
    }
    // Round robin: the region reaches five failures first, then each tenant does.
    for _ in 0..5 {
        for (api, t) in apis.iter().zip(tenants) {
            fail_once(api, t).await;
        }
    }
    let region_alert = loop {
        let hook = next(&mut hooks).await;
        assert_eq!((hook.label("scope"), hook.label("region"), hook.status()), ("region", "eu-west", "firing"), "one page, the region's: {:?}", hook.body);
        if hook.annotation("inhibited") == "tenant=north,tenant=south,tenant=west" {
            break hook;
        }
    };
    let alerts = admin.get("/v1/alerts").await;
    let items = alerts.body["items"].as_array().expect("items");
    let region = items.iter().find(|a| a["scope"] == "region").expect("the region fires");
    assert_eq!(region["fingerprint"], region_alert.body["alerts"][0]["fingerprint"]);
    let inhibited: Vec<&Value> = items.iter().filter(|a| a["scope"] == "tenant").collect();
    assert_eq!(inhibited.len(), 3, "{items:?}");
    assert!(inhibited.iter().all(|a| a["inhibited_by"] == region["id"]), "{items:?}");
    assert_eq!(region["inhibits"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_while_the_receiver_is_down_or_the_service_is_killed_arrive_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = config(dir.path(), "[alerts.failures.region]\nthreshold = 1000\n[alerts.failures.global]\nthreshold = 1000\n");
    let database = format!("sqlite://{}", dir.path().join("c.db").display());
    let env = [("COHORT_CONFIG", rules.as_str()), ("COHORT_WEBHOOK_RETRY_MS", "100"), ("COHORT_WEBHOOK_RETRY_MAX_SECONDS", "0.5")];
    let mut server = Server::start_with(&dir.path().join("data"), &database, 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    // A port nobody listens on: connections are refused.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address").port()
    };
    add_receiver(&admin, &format!("http://127.0.0.1:{port}/hook")).await;
    let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
    for _ in 0..5 {
        fail_once(&acme, "acme").await;
    }
    // The alert is raised and its delivery fails while the receiver is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = receiver_view(&admin).await;
        if view["pending"] == 1 && view["last_error"].is_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery was never tried: {view:?}");
        let _ = admin.get("/v1/alerts?state=firing&limit=1").await;
    }
    // Killed between raising and delivering; the receiver comes back; the service restarts.
    server.kill();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the receiver's port");
    let mut hooks = receive(listener).await;
    let server = Server::start_with(&dir.path().join("data"), &database, 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let hook = next(&mut hooks).await;
    assert_eq!((hook.status(), hook.label("tenant")), ("firing", "acme"), "{:?}", hook.body);
    let view = settled(&admin).await;
    assert_eq!((view["delivered"].as_i64(), view["dead"].as_i64()), (Some(1), Some(0)), "{view:?}");
    // Whatever arrived twice (none here) shares its webhook-id.
    while let Ok(again) = hooks.try_recv() {
        assert_eq!(again.id, hook.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_links_to_its_alert_and_a_slow_run_says_how_much_it_waited_and_executed() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::server::TestStore::new(&backend, dir.path()).await;
        let rules = config(dir.path(), RUNTIME_ONLY);
        let server = Server::start_with(&dir.path().join("data"), &store.url, 2, &[("COHORT_CONFIG", &rules)]);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let bee = healthy_tenant(&admin, dir.path(), "bee", "us-east").await;
        baseline(&bee, "bee", 1, 3).await;
        let slow = slow_run(&bee, "bee").await;

        let hook = next(&mut hooks).await;
        assert_eq!((hook.status(), hook.label("alertname"), hook.label("segment")), ("firing", "CohortSegmentRuntimeHigh", "lapsed_buyers"), "{:?}", hook.body);
        // Its generatorURL is the alert, as the API serves it.
        let link = hook.body["alerts"][0]["generatorURL"].as_str().expect("generatorURL").to_string();
        assert!(link.starts_with(&server.base), "{link}");
        let opened = admin.get(&link[server.base.len()..]).await;
        assert_eq!(opened.status, 200, "{link}: {:?}", opened.body);
        assert_eq!(opened.body["fingerprint"], hook.body["alerts"][0]["fingerprint"], "{:?}", opened.body);
        assert_eq!(opened.body["rule"], "runtime");
        // Measured end to end, from submission to the end, and split into queue wait and
        // execution, each as the run's own view tells it.
        assert_eq!(hook.annotation("run"), slow["id"].as_str().expect("id"), "{:?}", hook.body);
        let annotation = |name: &str| -> f64 { hook.annotation(name).parse().unwrap_or_else(|_| panic!("{name} in {:?}", hook.body)) };
        let (total, queued, executing) = (annotation("seconds"), annotation("queued_seconds"), annotation("executing_seconds"));
        assert!((total - seconds_between(&slow, "created_at", "finished_at")).abs() < 0.05, "{total} vs {slow:?}");
        assert!((queued - seconds_between(&slow, "created_at", "started_at")).abs() < 0.05, "{queued} vs {slow:?}");
        assert!((queued + executing - total).abs() < 0.002, "{queued} + {executing} != {total}");
        assert!(queued > executing, "it waited behind eighteen runs: {:?}", hook.body);
        let summary = hook.annotation("summary");
        assert!(summary.contains("queued") && summary.contains("executing"), "{summary}");

        drop(server);
        store.drop_database().await;
    }
}

/// Webhooks until one says `status`; every one before it must be about the same alert.
async fn until_status(hooks: &mut mpsc::UnboundedReceiver<Webhook>, alertname: &str, status: &str) -> Webhook {
    loop {
        let hook = tokio::time::timeout(Duration::from_secs(60), hooks.recv())
            .await
            .unwrap_or_else(|_| panic!("no {status} {alertname} webhook within a minute"))
            .expect("receiver running");
        assert_eq!(hook.label("alertname"), alertname, "{:?}", hook.body);
        if hook.status() == status {
            return hook;
        }
    }
}

/// The one alert of `rule` at `scope` once it is in `state`, with its history.
async fn alert_in(admin: &Api, rule: &str, scope: &str, state: &str) -> Value {
    let list = admin.get("/v1/alerts?state=all&limit=100").await;
    let items = list.body["items"].as_array().expect("items");
    let matching: Vec<&Value> = items.iter().filter(|a| a["rule"] == rule && a["scope"] == scope).collect();
    assert_eq!(matching.len(), 1, "one {rule} alert at {scope}: {items:?}");
    assert_eq!(matching[0]["state"], state, "{items:?}");
    let one = admin.get(&format!("/v1/alerts/{}", matching[0]["id"].as_str().expect("id"))).await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    one.body
}

fn kinds(alert: &Value) -> Vec<String> {
    alert["history"].as_array().expect("history").iter().filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
}

/// Every webhook still on its way once the outbox is empty: none may be a resolution.
async fn no_other_resolution(admin: &Api, hooks: &mut mpsc::UnboundedReceiver<Webhook>) {
    settled(admin).await;
    while let Ok(hook) = hooks.try_recv() {
        assert_ne!(hook.status(), "resolved", "resolved once only: {:?}", hook.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burn_rate_alert_firing_at_a_restart_resolves_once_when_the_rate_recovers() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::server::TestStore::new(&backend, dir.path()).await;
        // Only the burn rate fires: every run fails against a 50% objective, over windows of
        // a minute and 15 seconds (the short one empties 15 s after the last failure).
        let rules = config(
            dir.path(),
            "[alerts.failures.tenant]\nthreshold = 1000\n[alerts.failures.region]\nthreshold = 1000\n\
             [alerts.failures.global]\nthreshold = 1000\n[alerts.runtime]\nenabled = false\n\
             [alerts.burn_rate]\nslo = 0.5\nmin_outcomes = 3\nwindows = [{ long = \"60s\", short = \"15s\", factor = 1.5 }]\n",
        );
        let data = dir.path().join("data");
        let env = [("COHORT_CONFIG", rules.as_str())];
        let mut server = Server::start_with(&data, &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        for _ in 0..3 {
            fail_once(&acme, "acme").await;
        }
        // The global alert pages (the region's and the tenant's are inhibited under it).
        let firing = until_status(&mut hooks, "CohortSuccessRateBurn", "firing").await;
        assert_eq!(firing.label("scope"), "global", "{:?}", firing.body);

        // Restarted while it fires; it resolves once its short window has no failure left.
        settled(&admin).await;
        assert!(server.terminate().success());
        let server = Server::start_with(&data, &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let resolved = until_status(&mut hooks, "CohortSuccessRateBurn", "resolved").await;
        assert_eq!(resolved.label("scope"), "global", "{:?}", resolved.body);
        assert_eq!(resolved.body["alerts"][0]["fingerprint"], firing.body["alerts"][0]["fingerprint"]);
        no_other_resolution(&admin, &mut hooks).await;
        let global = alert_in(&admin, "burn_rate", "global", "resolved").await;
        assert_eq!(kinds(&global).iter().filter(|k| *k == "resolved").count(), 1, "{global:?}");
        for scope in ["region", "tenant"] {
            alert_in(&admin, "burn_rate", scope, "resolved").await;
        }
        drop(server);
        store.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_alert_firing_at_a_restart_resolves_once_at_the_next_normal_run() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::server::TestStore::new(&backend, dir.path()).await;
        let rules = config(dir.path(), RUNTIME_ONLY);
        let data = dir.path().join("data");
        let env = [("COHORT_CONFIG", rules.as_str())];
        let mut server = Server::start_with(&data, &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let bee = healthy_tenant(&admin, dir.path(), "bee", "us-east").await;
        let mut runs: Vec<f64> = baseline(&bee, "bee", 1, 3).await.iter().map(end_to_end).collect();
        runs.push(end_to_end(&slow_run(&bee, "bee").await));
        let firing = until_status(&mut hooks, "CohortSegmentRuntimeHigh", "firing").await;
        assert_eq!(firing.label("segment"), "lapsed_buyers", "{:?}", firing.body);

        // Restarted while it fires (its notification recorded); the first run after it back
        // under the rule's threshold resolves it, once. On a loaded machine the first runs of
        // a new process can be slow themselves (they keep it firing, as they should): the runs
        // go on, one at a time, until one is clearly normal by the rule's own arithmetic.
        settled(&admin).await;
        assert!(server.terminate().success());
        let server = Server::start_with(&data, &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let bee = Api::new(&server.base, &bee.token);
        for day in 10.. {
            assert!(day < 20, "ten runs after the restart and none normal: {runs:?}");
            let threshold = (3.0 * median_of_last(&runs, 3)).max(0.1);
            let seconds = end_to_end(&baseline(&bee, "bee", day, 1).await[0]);
            runs.push(seconds);
            if seconds < 0.9 * threshold {
                break;
            }
        }
        let resolved = until_status(&mut hooks, "CohortSegmentRuntimeHigh", "resolved").await;
        assert_eq!(resolved.body["alerts"][0]["fingerprint"], firing.body["alerts"][0]["fingerprint"]);
        no_other_resolution(&admin, &mut hooks).await;
        let alert = alert_in(&admin, "runtime", "tenant", "resolved").await;
        assert_eq!(kinds(&alert), ["fired", "notified", "resolved", "notified"], "{alert:?}");
        drop(server);
        store.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_region_failure_alert_inhibits_its_tenants_burn_rate_and_runtime_alerts() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::server::TestStore::new(&backend, dir.path()).await;
        // Two failures page the region; four outcomes all failed burn a tenant's 50% objective
        // (the region's and everywhere's stay under it: the other tenant's runs succeed); a run
        // 3× its segment's median is slow.
        let rules = config(
            dir.path(),
            "[alerts.failures.tenant]\nthreshold = 1000\n[alerts.failures.region]\nthreshold = 2\n\
             [alerts.failures.global]\nthreshold = 1000\n\
             [alerts.runtime]\nfactor = 3.0\nmin_seconds = 0.1\nbaseline_runs = 3\n\
             [alerts.burn_rate]\nslo = 0.5\nmin_outcomes = 4\nwindows = [{ long = \"10m\", short = \"10m\", factor = 1.5 }]\n",
        );
        let env = [("COHORT_CONFIG", rules.as_str()), ("COHORT_ALERT_GROUP_INTERVAL_SECONDS", "1")];
        let server = Server::start_with(&dir.path().join("data"), &store.url, 2, &env);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let bee = healthy_tenant(&admin, dir.path(), "bee", "us-east").await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        baseline(&bee, "bee", 1, 3).await;
        for _ in 0..4 {
            fail_once(&acme, "acme").await;
        }
        slow_run(&bee, "bee").await;

        // One page, the region's, listing acme's burn-rate alert and bee's runtime alert.
        let page = loop {
            let hook = next(&mut hooks).await;
            assert_eq!(
                (hook.label("alertname"), hook.label("scope"), hook.label("region"), hook.status()),
                ("CohortJobFailures", "region", "us-east", "firing"),
                "one page, the region's: {:?}",
                hook.body
            );
            if hook.annotation("inhibited") == "tenant=acme,tenant=bee/lapsed_buyers" {
                break hook;
            }
        };
        let region = alert_in(&admin, "failures", "region", "firing").await;
        assert_eq!(region["fingerprint"], page.body["alerts"][0]["fingerprint"]);
        for (rule, key) in [("burn_rate", "acme"), ("runtime", "bee/lapsed_buyers")] {
            let alert = alert_in(&admin, rule, "tenant", "firing").await;
            assert_eq!((alert["key"].as_str(), &alert["inhibited_by"]), (Some(key), &region["id"]), "{alert:?}");
            assert!(!kinds(&alert).contains(&"notified".to_string()), "not notified on its own: {alert:?}");
        }
        settled(&admin).await;
        while let Ok(hook) = hooks.try_recv() {
            assert_eq!((hook.label("alertname"), hook.label("scope")), ("CohortJobFailures", "region"), "{:?}", hook.body);
        }
        drop(server);
        store.drop_database().await;
    }
}
