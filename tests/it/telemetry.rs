//! Telemetry end to end: the Grafana dashboards read only metrics the service exports, a
//! two-phase job's trace reaches a real OTLP/HTTP receiver with the documented span tree, and
//! the built-in dashboard works in a real (headless) Chromium.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::server::{ADMIN, AS_OF, Api, Server, datagen, setup_tenant, watch};

/// The metric families a scrape announces (`# TYPE name kind`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Every PromQL expression of a Grafana dashboard (panels' targets and query variables).
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

/// The `cohort_…` metric names an expression reads (a histogram's series named by family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("cohort_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':');
        let end = start + expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
        if boundary {
            let name = &expr[start..end];
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.push(family.to_string());
        }
        i = end;
    }
    names
}

/// The series a scrape has samples of, by family (a histogram's `_bucket`, `_sum` and
/// `_count` lines count for its family), each with the label sets seen.
fn sampled(scrape: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let labels = line[end..].split(' ').next().unwrap_or("").to_string();
        out.entry(name.to_string()).or_default().push(labels.clone());
        if let Some(family) = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)) {
            out.entry(family.to_string()).or_default().push(labels);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_a_dashboard_or_rule_reads_has_a_sample_before_any_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let root = dir.path().join("acme");
    std::fs::create_dir_all(&root).expect("root");
    // A tenant made before the process that is scraped started: known from the store.
    {
        let server = Server::start(&dir.path().join("data"), &db, 1);
        let admin = Api::new(&server.base, ADMIN);
        let root = root.canonicalize().expect("root");
        let created = admin.post("/v1/tenants", &json!({"id": "acme", "region": "eu-west", "data_root": root})).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    let server = Server::start(&dir.path().join("data"), &db, 1);
    let scrape = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    let samples = sampled(&scrape);
    let mut read = BTreeSet::new();
    for folder in ["dashboards/grafana", "dashboards/prometheus"] {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        for entry in std::fs::read_dir(&folder).expect("dashboards") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // The rules' unit tests feed series of their own.
            if name.ends_with(".test.yml") || !(name.ends_with(".json") || name.ends_with(".yml")) {
                continue;
            }
            read.extend(metric_names(&std::fs::read_to_string(&path).expect("read")));
        }
    }
    assert!(read.len() > 15, "only {} metric names found in dashboards/: {read:?}", read.len());
    let mut missing = Vec::new();
    for name in &read {
        match samples.get(name) {
            None => missing.push(format!("{name}: no series")),
            // Series labelled by tenant show the known tenant, at 0.
            Some(series) if series.iter().any(|l| l.contains("tenant=")) && !series.iter().any(|l| l.contains("tenant=\"acme\"")) => {
                missing.push(format!("{name}: no series for tenant acme"))
            }
            Some(series) if series.iter().any(|l| l.contains("region=")) && !series.iter().any(|l| l.contains("region=\"eu-west\"")) => {
                missing.push(format!("{name}: no series for region eu-west"))
            }
            Some(_) => {}
        }
    }
    assert!(missing.is_empty(), "series a dashboard or rule reads are absent from a fresh service's /metrics:\n{}", missing.join("\n"));
    // The failure rules' `increase()` sees a tenant's first failures: the series is there at 0.
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("cohort_jobs_finished_total{") && l.contains("tenant=\"acme\"") && l.contains("outcome=\"failed\"") && l.ends_with(" 0")),
        "no failed-jobs series at 0 for acme"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_metric_the_service_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let server = Server::start(&dir.path().join("data"), &db, 1);
    let scrape = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    let exported = exported(&scrape);
    for required in [
        "cohort_jobs_finished_total",
        "cohort_job_duration_seconds",
        "cohort_job_queue_wait_seconds",
        "cohort_queue_depth",
        "cohort_job_memory_granted_bytes_total",
        "cohort_job_memory_peak_bytes_total",
        "cohort_admission_rejections_total",
        "cohort_job_retries_total",
        "cohort_estimator_relative_slack_ratio",
        "cohort_alerts_firing",
        "cohort_webhook_deliveries_total",
        "cohort_schedule_runs_missed_total",
    ] {
        assert!(exported.contains(required), "{required} is not exported: {exported:?}");
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana");
    let mut checked = 0;
    for entry in std::fs::read_dir(&folder).expect("dashboards/grafana") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("dashboard JSON");
        assert!(dashboard["uid"].is_string() && dashboard["title"].is_string(), "{}: uid and title", path.display());
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{}: no panels", path.display());
        let mut exprs = Vec::new();
        expressions(&dashboard, &mut exprs);
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{}: {expr:?} reads no cohort metric", path.display());
            for name in names {
                assert!(exported.contains(&name), "{}: {expr:?} reads {name}, which the service does not export", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} metric references checked");
    // The per-tenant dashboard has its tenant variable.
    let tenant: Value = serde_json::from_str(&std::fs::read_to_string(folder.join("cohort-tenant.json")).expect("read")).expect("json");
    assert!(tenant["templating"]["list"].as_array().expect("list").iter().any(|v| v["name"] == "tenant"));
}

// ---- traces

/// Spans an OTLP/HTTP (JSON) receiver got, by span id.
#[derive(Debug, Default)]
struct Received {
    spans: Mutex<Vec<Value>>,
    arrived: Notify,
}

async fn otlp_receiver(listener: tokio::net::TcpListener) -> Arc<Received> {
    let received = Arc::new(Received::default());
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
                    return StatusCode::UNSUPPORTED_MEDIA_TYPE;
                }
                let Ok(request) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
                let mut spans = sink.spans.lock().expect("lock");
                for rs in request["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                    }
                }
                drop(spans);
                sink.arrived.notify_waiters();
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    received
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

fn string_attribute(span: &Value, key: &str) -> String {
    attribute(span, key).and_then(|v| v["stringValue"].as_str()).unwrap_or("").to_string()
}

/// A segment with two top-level branches and ten related predicates: planned in two phases.
fn two_phase_segment() -> Value {
    let orders: Vec<Value> = (1..=5).map(|i| json!({"related": "order", "where": {"field": "amount", "op": "gt", "value": i * 5}})).collect();
    let emails: Vec<Value> = (1..=5)
        .map(|i| json!({"related": "email_event", "where": {"field": "kind", "op": "eq", "value": "open"}, "having": {"agg": "count", "op": "ge", "value": i}}))
        .collect();
    json!({"name": "two_phase", "root": "individual", "filter": {"or": [{"and": orders}, {"and": emails}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_job_has_one_trace_with_the_documented_span_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let received = otlp_receiver(listener).await;
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let server = Server::start_with(&dir.path().join("data"), &db, 1, &[("COHORT_OTLP_ENDPOINT", &endpoint), ("COHORT_OTLP_BATCH_DELAY_MS", "100")]);
    let admin = Api::new(&server.base, ADMIN);
    let root = dir.path().join("acme");
    datagen("retail", 300, 5, &root);
    let acme = setup_tenant(&admin, "acme", "eu-west", &root, &[]).await;
    let put = acme.put("/v1/tenants/acme/segments/two_phase", &json!({"definition": two_phase_segment()})).await;
    assert_eq!(put.status, 201, "{:?}", put.body);

    // The caller's own trace: the API request's span continues it.
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let run = acme
        .try_send(
            reqwest::Method::POST,
            "/v1/tenants/acme/segments/two_phase/runs",
            Some(&json!({"as_of": AS_OF})),
            &[("traceparent", &format!("00-{caller_trace}-{caller_span}-01"))],
        )
        .await
        .expect("enqueue");
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["id"].as_str().expect("id").to_string();
    let view = watch(&acme, "acme", &id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");

    // The job's root span is recorded last; wait for it.
    let spans = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let arrived = received.arrived.notified();
            {
                let spans = received.spans.lock().expect("lock");
                if spans.iter().any(|s| s["name"] == "job" && string_attribute(s, "cohort.job") == id) {
                    return spans.clone();
                }
            }
            arrived.await;
        }
    })
    .await
    .expect("the job's spans within a minute");

    let request = spans.iter().find(|s| s["name"] == "POST /v1/tenants/{tenant}/segments/{segment}/runs").expect("the API request's span");
    assert_eq!(request["traceId"], caller_trace, "the request continues the caller's trace");
    assert_eq!(request["parentSpanId"], caller_span);

    let root = spans.iter().find(|s| s["name"] == "job" && string_attribute(s, "cohort.job") == id).expect("root");
    let trace = root["traceId"].as_str().expect("trace id").to_string();
    assert!(root["parentSpanId"].as_str().unwrap_or("").is_empty(), "the job span is the trace's root: {root}");
    let link = &root["links"][0];
    assert_eq!((link["traceId"].as_str(), link["spanId"].as_str()), (request["traceId"].as_str(), request["spanId"].as_str()), "linked to the request");

    let in_trace: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace.as_str()).collect();
    let by_id: HashMap<&str, &Value> = in_trace.iter().map(|s| (s["spanId"].as_str().unwrap_or(""), *s)).collect();
    let parent_name = |s: &Value| by_id.get(s["parentSpanId"].as_str().unwrap_or("")).and_then(|p| p["name"].as_str()).unwrap_or("").to_string();
    let named = |name: &str| in_trace.iter().filter(|s| s["name"] == name).copied().collect::<Vec<_>>();
    for (name, parent) in [("admission wait", "job"), ("attempt", "job"), ("planning", "attempt"), ("execution", "attempt"), ("membership commit", "attempt")] {
        let found = named(name);
        assert_eq!(found.len(), 1, "one {name:?} span: {in_trace:?}");
        assert_eq!(parent_name(found[0]), parent, "{name:?} is a child of {parent:?}");
    }
    for phase in ["phase 1", "phase 2"] {
        let found = named(phase);
        assert_eq!(found.len(), 1, "one {phase:?} span: {in_trace:?}");
        assert_eq!(parent_name(found[0]), "planning");
    }
    assert!(named("phase 3").is_empty());
    assert_eq!(string_attribute(named("attempt")[0], "cohort.plan_mode"), "phased");
    for span in &in_trace {
        assert_eq!(string_attribute(span, "cohort.tenant"), "acme", "{span}");
        assert_eq!(string_attribute(span, "cohort.region"), "eu-west", "{span}");
        assert_eq!(string_attribute(span, "cohort.segment"), "two_phase", "{span}");
        assert_eq!(string_attribute(span, "cohort.job"), id, "{span}");
        let (start, end) = (span["startTimeUnixNano"].as_str().unwrap_or("0"), span["endTimeUnixNano"].as_str().unwrap_or("0"));
        let (start, end): (u128, u128) = (start.parse().unwrap_or(0), end.parse().unwrap_or(0));
        assert!(start > 0 && end >= start, "{span}");
    }
    // The dashboard names the same trace.
    assert_eq!(in_trace.len(), 8, "{in_trace:?}");
}

// ---- the built-in dashboard in a browser

/// The program `name` as `PATH` finds it.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// A WebDriver session on a chromedriver of our own.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, found on `PATH`; None (skipped outside
    /// CI, failed under it) where either is missing.
    async fn start() -> Option<Browser> {
        let chromium = ["chromium", "chromium-browser"].into_iter().find_map(on_path);
        let driver = on_path("chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            crate::server::cannot_run(
                "the browser test needs Chromium and ChromeDriver on PATH (Debian's chromium and chromium-driver; .ci/run installs them)",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let mut child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // It says when it listens.
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let ok = lines.by_ref().any(|l| l.is_ok_and(|l| l.contains("started successfully")));
            std::thread::spawn(move || for _ in lines {});
            ok
        })
        .await
        .expect("join");
        assert!(ready, "chromedriver did not start");
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"]
        }}}});
        let created: Value = client.post(format!("{base}/session")).json(&capabilities).send().await.expect("session").json().await.expect("json");
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_string();
        Some(Browser { driver: child, base, session, client })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.client.request(method, url);
        let request = match body {
            Some(b) => request.json(&b),
            None => request,
        };
        let answer: Value = request.send().await.expect("webdriver").json().await.expect("json");
        assert!(answer["value"]["error"].is_null(), "{path}: {answer}");
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or("").to_string()
    }

    async fn find(&self, css: &str) -> String {
        let found = self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap_or_else(|| panic!("no element {css}")).to_string()
    }

    async fn count(&self, css: &str) -> usize {
        let found = self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found.as_array().map_or(0, Vec::len)
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or("")).expect("PNG in base64");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(name), bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_jobs_charts_and_alerts_in_a_browser() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // A failure at tenant level fires at once here, so the overview has an alert to show.
    let config = dir.path().join("cohort.toml");
    std::fs::write(&config, "[alerts.failures.tenant]\nthreshold = 1\n").expect("config");
    let db = format!("sqlite://{}", dir.path().join("cohort.db").display());
    let config_text = config.display().to_string();
    let server = Server::start_args(
        &dir.path().join("data"),
        &db,
        2,
        &[("COHORT_CONFIG", &config_text), ("COHORT_RETRY_ATTEMPTS", "1")],
        &["--demo", "--demo-tenants", "3"],
    );
    let admin = Api::new(&server.base, ADMIN);

    // A webhook receiver tells when the alert fires.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let (tx, mut hooks) = mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let created = admin.post("/v1/receivers", &json!({"id": "oncall", "url": hook_url})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    // A tenant whose segment no longer fits its model: its run fails.
    let root = dir.path().join("broken");
    datagen("retail", 150, 3, &root);
    let api = setup_tenant(&admin, "broken", "us-east", &root, &["lapsed_buyers"]).await;
    let mut model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).expect("model")).expect("json");
    model["objects"][0]["fields"].as_array_mut().expect("fields").retain(|f| f["name"] != "email_opt_in");
    assert_eq!(api.put("/v1/tenants/broken/model", &model).await.status, 200);
    let run = api.post("/v1/tenants/broken/segments/lapsed_buyers/runs", &json!({"as_of": AS_OF})).await;
    let id = run.body["id"].as_str().expect("id").to_string();
    let failed = watch(&api, "broken", &id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(failed["status"], "failed");
    let firing = tokio::time::timeout(Duration::from_secs(60), hooks.recv()).await.expect("the alert within a minute").expect("hook");
    assert_eq!(firing["status"], "firing", "{firing}");

    // Signed in through the form (a session cookie), the overview shows jobs, charts and the alert.
    browser.open(&server.url("/ui/login")).await;
    assert!(browser.source().await.contains("admin token"), "the login form");
    let input = browser.find("input[name='token']").await;
    browser.call(reqwest::Method::POST, &format!("/element/{input}/value"), Some(json!({"text": ADMIN}))).await;
    let button = browser.find("form button[type='submit']").await;
    browser.call(reqwest::Method::POST, &format!("/element/{button}/click"), Some(json!({}))).await;
    browser.open(&server.url("/")).await;
    let page = browser.source().await;
    assert!(page.contains("<h1>Overview</h1>"), "{page}");
    assert!(browser.count("svg.chart").await >= 4, "charts: {page}");
    assert!(browser.count("table#jobs a.job").await >= 1, "jobs: {page}");
    assert!(browser.count("table#alerts tr.firing").await >= 1, "a firing alert: {page}");
    assert!(page.contains("CohortJobFailures"), "{page}");
    browser.screenshot("overview.png").await;

    // Following the failed job's link opens its timeline.
    let link = browser.find(&format!("table#failures a.job[href='/ui/jobs/{id}']")).await;
    browser.call(reqwest::Method::POST, &format!("/element/{link}/click"), Some(json!({}))).await;
    let url = browser.call(reqwest::Method::GET, "/url", None).await;
    assert!(url.as_str().unwrap_or("").ends_with(&format!("/ui/jobs/{id}")), "{url}");
    let page = browser.source().await;
    assert!(browser.count("svg#timeline").await == 1, "{page}");
    assert!(browser.count("table#attempts tr").await >= 2, "{page}");
    assert!(page.contains("schema_mismatch") || page.contains("invalid"), "the error class: {page}");
    browser.screenshot("job-timeline.png").await;

    // The tenant list finds a tenant by part of its id.
    browser.open(&server.url("/ui/tenants?q=brok")).await;
    assert!(browser.count("table#tenants a[href='/ui/tenants/broken']").await == 1);
    browser.screenshot("tenants.png").await;
    browser.call(reqwest::Method::DELETE, "", None).await;
}
