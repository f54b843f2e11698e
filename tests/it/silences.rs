//! Silences end to end: created, matched against alerts' labels, expired by time or deleted,
//! through a real service, jobs that really fail, and a real webhook receiver.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::alerts::{Webhook, add_receiver, config, fail_once, failing_tenant, receive};
use crate::server::{ADMIN, Api, Server, TestStore, backends};

/// Two failures of a tenant page (10 minutes: it keeps firing); nothing else fires.
const TENANT_RULE: &str = "[alerts.failures.tenant]\nthreshold = 2\n[alerts.failures.region]\nthreshold = 1000\n\
     [alerts.failures.global]\nthreshold = 1000\n[alerts.burn_rate]\nenabled = false\n[alerts.runtime]\nenabled = false\n";

/// The next webhook about `tenant`'s alert (others are skipped), within a minute.
async fn next_for(hooks: &mut mpsc::UnboundedReceiver<Webhook>, tenant: &str) -> Webhook {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let hook =
            tokio::time::timeout(left, hooks.recv()).await.unwrap_or_else(|_| panic!("no webhook about {tenant} within a minute")).expect("receiver running");
        if hook.label("tenant") == tenant {
            return hook;
        }
    }
}

/// Notifications held back by a silence so far (this process's counter).
async fn silenced(server: &Server) -> u64 {
    let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
    metrics
        .lines()
        .find(|l| l.starts_with("cohort_webhook_deliveries_total{result=\"silenced\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// Waits until at least `n` notifications were held back.
async fn until_silenced(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while silenced(server).await < n {
        assert!(Instant::now() < deadline, "no notification was silenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn listed<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array().expect("silences").iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("{id} listed: {list:?}"))
}

async fn start(store: &TestStore, dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, Api, mpsc::UnboundedReceiver<Webhook>) {
    let rules = config(dir, TENANT_RULE);
    let mut all = vec![("COHORT_CONFIG", rules.as_str())];
    all.extend_from_slice(env);
    let server = Server::start_with(&dir.join("data"), &store.url, 2, &all);
    let admin = Api::new(&server.base, ADMIN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let hooks = receive(listener).await;
    add_receiver(&admin, &url).await;
    (server, admin, hooks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_back_only_what_it_matches_and_once_deleted_the_alert_notifies_and_repeats() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(&backend, dir.path()).await;
        let (server, admin, mut hooks) = start(&store, dir.path(), &[("COHORT_ALERT_REPEAT_INTERVAL_SECONDS", "2")]).await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        let zed = failing_tenant(&admin, dir.path(), "zed", "us-east").await;

        // Created: listed, active. Bad ones are refused, and only the admin makes them.
        let created = admin.post("/v1/silences", &json!({"matchers": ["tenant=acme"], "duration_seconds": 3600, "comment": "maintenance"})).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        assert_eq!((created.body["active"].as_bool(), created.body["matchers"][0].as_str()), (Some(true), Some("tenant=acme")), "{:?}", created.body);
        let id = created.body["id"].as_str().expect("id").to_string();
        let list = admin.get("/v1/silences").await;
        assert_eq!((listed(&list.body, &id)["active"].as_bool(), listed(&list.body, &id)["comment"].as_str()), (Some(true), Some("maintenance")));
        for bad in [
            json!({"matchers": [], "duration_seconds": 60}),
            json!({"matchers": ["tenant"], "duration_seconds": 60}),
            json!({"matchers": ["tenant=acme"], "duration_seconds": 0}),
        ] {
            let refused = admin.post("/v1/silences", &bad).await;
            assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (400, Some("invalid_silence")), "{bad}: {:?}", refused.body);
        }
        assert_eq!(acme.post("/v1/silences", &json!({"matchers": ["tenant=acme"], "duration_seconds": 60})).await.status, 403);
        assert_eq!(admin.send(reqwest::Method::DELETE, "/v1/silences/sil_none", None).await.status, 404);

        // Matched: acme's alert is held back, zed's (not matched) pages.
        for _ in 0..2 {
            fail_once(&acme, "acme").await;
        }
        until_silenced(&server, 1).await;
        for _ in 0..2 {
            fail_once(&zed, "zed").await;
        }
        let first = hooks.recv().await.expect("receiver running");
        assert_eq!((first.status(), first.label("tenant")), ("firing", "zed"), "acme's page is silenced: {:?}", first.body);
        let firing = admin.get("/v1/alerts?state=firing").await;
        assert_eq!(firing.body["items"].as_array().map(Vec::len), Some(2), "both fire: {:?}", firing.body);

        // Deleted: inactive from now on; acme's alert, still firing, notifies now and repeats.
        assert_eq!(admin.send(reqwest::Method::DELETE, &format!("/v1/silences/{id}"), None).await.status, 204);
        let list = admin.get("/v1/silences").await;
        assert_eq!(listed(&list.body, &id)["active"], false, "{:?}", list.body);
        let notified = next_for(&mut hooks, "acme").await;
        assert_eq!(notified.status(), "firing", "{:?}", notified.body);
        let repeated = next_for(&mut hooks, "acme").await;
        assert_eq!(repeated.status(), "firing", "{:?}", repeated.body);
        assert_ne!(repeated.id, notified.id, "a repeat is a notification of its own");
        assert_eq!(repeated.body["alerts"][0]["fingerprint"], notified.body["alerts"][0]["fingerprint"]);
        drop(server);
        store.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_silenced_at_first_notifies_when_its_silence_expires() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(&backend, dir.path()).await;
        let (server, admin, mut hooks) = start(&store, dir.path(), &[]).await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        let created = admin.post("/v1/silences", &json!({"matchers": ["tenant=acme", "scope=tenant"], "duration_seconds": 4})).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["id"].as_str().expect("id").to_string();
        let ends: chrono::DateTime<chrono::Utc> = created.body["ends_at"].as_str().expect("ends_at").parse().expect("RFC 3339");
        for _ in 0..2 {
            fail_once(&acme, "acme").await;
        }
        until_silenced(&server, 1).await;
        assert!(chrono::Utc::now() < ends, "the alert fired after the silence ended; the test proves nothing");
        let hook = next_for(&mut hooks, "acme").await;
        assert!(chrono::Utc::now() >= ends, "notified before its silence ended: {:?}", hook.body);
        assert_eq!(hook.status(), "firing", "{:?}", hook.body);
        let list = admin.get("/v1/silences").await;
        assert_eq!(listed(&list.body, &id)["active"], false, "expired: {:?}", list.body);
        drop(server);
        store.drop_database().await;
    }
}
