//! Where webhooks may go: link-local and metadata addresses never, loopback and private
//! ranges only when configured, the address checked when connecting (not only when the
//! receiver is saved), and redirects not followed. A real service, real failing jobs, real
//! HTTP listeners that count what reaches them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alerts::{SECRET, config, fail_once, failing_tenant, receiver_view};
use crate::server::{ADMIN, Api, Server};

/// A listener that answers every request with `answer` and counts the connections it took.
async fn counting_listener(answer: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (address, count)
}

/// The receiver's view once its pending notification has failed with an error containing `what`.
async fn failed_with(admin: &Api, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = receiver_view(admin).await;
        if view["last_error"].as_str().is_some_and(|e| e.contains(what)) {
            return view;
        }
        assert!(Instant::now() < deadline, "no delivery failed with {what:?}: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refused(admin: &Api, url: &str, why: &str) {
    let created = admin.post("/v1/receivers", &json!({"id": "nope", "url": url, "secret": SECRET})).await;
    assert_eq!(created.status, 400, "{url}: {:?}", created.body);
    assert_eq!(created.body["error"]["code"], "invalid_receiver", "{url}: {:?}", created.body);
    let message = created.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{url}: {message:?} should say {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_reach_link_local_or_unallowed_loopback_addresses_even_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = config(dir.path(), "[alerts.failures.tenant]\nthreshold = 1\n");
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let server = Server::start_with(
        &dir.path().join("data"),
        &db,
        2,
        &[("COHORT_CONFIG", &rules), ("COHORT_WEBHOOK_ALLOW_LOOPBACK", "false"), ("COHORT_WEBHOOK_RETRY_MS", "100")],
    );
    let admin = Api::new(&server.base, ADMIN);

    // Address literals are refused when the receiver is saved.
    refused(&admin, "http://169.254.169.254/latest/meta-data/", "link-local").await;
    refused(&admin, "http://[fe80::1]/hook", "link-local").await;
    refused(&admin, "http://[::ffff:169.254.169.254]/hook", "link-local").await;
    refused(&admin, "http://127.0.0.1:9/hook", "loopback").await;
    refused(&admin, "http://10.0.0.1/hook", "private").await;

    // A name is saved (what it resolves to may change), and checked when connecting: `localhost`
    // resolves to loopback, which this service may not reach, so nothing arrives.
    let (address, connections) = counting_listener("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let port = address.rsplit(':').next().expect("port");
    let created = admin.post("/v1/receivers", &json!({"id": "oncall", "url": format!("http://localhost:{port}/hook"), "secret": SECRET})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let tenant = failing_tenant(&admin, dir.path(), "acme", "eu").await;
    fail_once(&tenant, "acme").await;
    let view = failed_with(&admin, "refused").await;
    assert!(view["last_error"].as_str().unwrap_or("").contains("loopback"), "{view:?}");
    assert_eq!(view["delivered"], 0, "{view:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the refused address was connected to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirects_are_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = config(dir.path(), "[alerts.failures.tenant]\nthreshold = 1\n");
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let server = Server::start_with(&dir.path().join("data"), &db, 2, &[("COHORT_CONFIG", &rules), ("COHORT_WEBHOOK_RETRY_MS", "100")]);
    let admin = Api::new(&server.base, ADMIN);

    // The target a redirect names, and the receiver that answers with it.
    let (target, reached) = counting_listener("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let redirect: &'static str =
        Box::leak(format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target}/hook\r\ncontent-length: 0\r\n\r\n").into_boxed_str());
    let (address, asked) = counting_listener(redirect).await;
    let created = admin.post("/v1/receivers", &json!({"id": "oncall", "url": format!("http://{address}/hook"), "secret": SECRET})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let tenant = failing_tenant(&admin, dir.path(), "acme", "eu").await;
    fail_once(&tenant, "acme").await;
    let view = failed_with(&admin, "redirects are not followed").await;
    assert_eq!(view["delivered"], 0, "{view:?}");
    assert!(asked.load(Ordering::SeqCst) >= 1, "the receiver was never asked");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the redirect was followed");
}
