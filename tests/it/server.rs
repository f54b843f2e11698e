//! A real `cohort serve` process on a loopback port, and what the service tests share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const AS_OF: &str = "2026-11-01T00:00:00Z";

/// Where a test's store lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// Whether the tests run in CI (`CI=true`), where a test that cannot run fails.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// What a test that cannot run here does: under CI it fails, saying why; elsewhere it
/// prints why it skipped.
pub fn cannot_run(why: &str) {
    assert!(!under_ci(), "{why} (with CI=true a test that cannot run fails instead of passing)");
    println!("SKIPPED: {why}");
}

/// Whether `python3` has these modules; when not, the test cannot run here (skipped, or
/// failed under CI) and this says why.
pub fn python_has(modules: &[&str]) -> bool {
    let probe = format!("import {}", modules.join(", "));
    let ok = Command::new("python3").args(["-c", &probe]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        cannot_run(&format!("python3 lacks {} (pip install \"pyiceberg[sql-sqlite,pyarrow]\" s3fs deltalake)", modules.join(", ")));
    }
    ok
}

/// SQLite always; PostgreSQL when `COHORT_TEST_DATABASE_URL` names a server (CI sets it).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("COHORT_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => out.push(Backend::Postgres(url)),
        _ => cannot_run("the PostgreSQL half of this test needs COHORT_TEST_DATABASE_URL (.ci/run sets it)"),
    }
    out
}

/// The PostgreSQL server of `COHORT_TEST_DATABASE_URL`, for tests that need one; `None`
/// (skipped outside CI, failed under it) without.
pub fn postgres() -> Option<String> {
    backends().into_iter().find_map(|b| match b {
        Backend::Postgres(url) => Some(url),
        Backend::Sqlite => None,
    })
}

/// A fresh store for one test: a SQLite file in `dir`, or a new PostgreSQL database (dropped
/// with the value).
#[derive(Debug)]
pub struct TestStore {
    pub url: String,
    admin_url: Option<(String, String)>,
}

impl TestStore {
    pub async fn new(backend: &Backend, dir: &Path) -> TestStore {
        match backend {
            Backend::Sqlite => TestStore { url: format!("sqlite://{}", dir.join("cohort.db").display()), admin_url: None },
            Backend::Postgres(url) => {
                use sqlx::Connection;
                sqlx::any::install_default_drivers();
                let name = format!("cohort_test_{:016x}", rand_u64());
                let mut conn =
                    sqlx::AnyConnection::connect(url).await.unwrap_or_else(|e| panic!("PostgreSQL at COHORT_TEST_DATABASE_URL={url} does not answer: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create a test database");
                let _ = conn.close().await;
                let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).expect("the URL names a database");
                TestStore { url: format!("{base}/{name}"), admin_url: Some((url.clone(), name)) }
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Some((url, name)) = &self.admin_url {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::AnyConnection::connect(url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                let _ = conn.close().await;
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// A running `cohort serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts the binary and waits for the line that says where it listens.
    pub fn start(data_dir: &Path, database_url: &str, workers: usize) -> Server {
        Server::start_with(data_dir, database_url, workers, &[])
    }

    /// Starts the binary with extra `COHORT_*` settings.
    pub fn start_with(data_dir: &Path, database_url: &str, workers: usize, env: &[(&str, &str)]) -> Server {
        Server::start_args(data_dir, database_url, workers, env, &[])
    }

    /// Starts the binary with extra settings and extra `serve` arguments.
    pub fn start_args(data_dir: &Path, database_url: &str, workers: usize, env: &[(&str, &str)], args: &[&str]) -> Server {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.join(format!("serve-{}.log", rand_u64()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--database-url", database_url, "--workers", &workers.to_string(), "--memory-budget", "4GiB"])
            .args(args)
            .env("COHORT_ADMIN_TOKEN", ADMIN)
            .env("COHORT_LOG", "warn")
            // No daily triage report in the middle of a test that counts webhooks, unless it asks.
            .env("COHORT_TRIAGE_SCHEDULE", "")
            // The tests' webhook receivers listen on loopback.
            .env("COHORT_WEBHOOK_ALLOW_LOOPBACK", "true")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("cohort serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("cohort listening on ") {
                        break address.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.wait();
                    panic!("cohort serve stopped before listening: {}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base, log }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("wait")
    }

    /// SIGSTOP: the process stays, frozen, until [`Server::resume`].
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client speaking for one token.
#[derive(Debug, Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// A status and a JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api { client: reqwest::Client::new(), base: base.to_string(), token: token.to_string() }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        self.try_send(method, path, body, &[]).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn try_send(&self, method: reqwest::Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> reqwest::Result<Answer> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "not_json": text }));
        Ok(Answer { status, body })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// `cohort datagen` into `out` (skipped when already there).
pub fn datagen(profile: &str, scale: u64, seed: u64, out: &Path) {
    if out.join("model.json").exists() {
        return;
    }
    let status = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["datagen", "--profile", profile, "--scale", &scale.to_string(), "--seed", &seed.to_string(), "--out"])
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .expect("datagen runs");
    assert!(status.success(), "datagen failed");
}

/// The executor's own answer, through `cohort segment run`: sorted member keys.
pub fn executor_members(model: &Path, segment: &Path, as_of: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["segment", "run", "--model"])
        .arg(model)
        .arg("--segment")
        .arg(segment)
        .args(["--as-of", as_of])
        .output()
        .expect("segment run");
    assert!(out.status.success(), "segment run failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Creates a tenant over `root` with its model and the named segments of its `segments/`.
pub async fn setup_tenant(admin: &Api, id: &str, region: &str, root: &Path, segments: &[&str]) -> Api {
    setup_tenant_with(admin, id, region, root, segments, json!({})).await
}

/// As [`setup_tenant`], with more of the tenant's settings (`memory_quota_bytes`, …).
pub async fn setup_tenant_with(admin: &Api, id: &str, region: &str, root: &Path, segments: &[&str], settings: Value) -> Api {
    let root = root.canonicalize().expect("root");
    // Rate limits high enough that no test waits on them unless it means to.
    let mut tenant = json!({"id": id, "region": region, "data_root": root, "jobs_per_minute": 600000});
    if let (Some(t), Some(extra)) = (tenant.as_object_mut(), settings.as_object()) {
        t.extend(extra.clone());
    }
    let created = admin.post("/v1/tenants", &tenant).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let token = created.body["token"].as_str().expect("token").to_string();
    let api = Api::new(&admin.base, &token);
    let model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).expect("model")).expect("json");
    let put = api.put(&format!("/v1/tenants/{id}/model"), &model).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    for segment in segments {
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("segments").join(format!("{segment}.json"))).expect("segment")).expect("json");
        let put = api.put(&format!("/v1/tenants/{id}/segments/{segment}"), &json!({"definition": definition})).await;
        assert_eq!(put.status, 201, "{segment}: {:?}", put.body);
    }
    api
}

/// Every key of a value that is a string or a number, as text.
pub fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A segment's whole history, newest first, through pages of 1,000.
pub async fn history(api: &Api, tenant: &str, segment: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut before = String::new();
    loop {
        let page = api.get(&format!("/v1/tenants/{tenant}/segments/{segment}/history?limit=1000&before={before}")).await;
        records.extend(page.body["items"].as_array().expect("items").iter().cloned());
        match page.body["next"].as_str() {
            Some(next) => before = next.to_string(),
            None => return records,
        }
    }
}

/// Watches a job through long polls until `done` holds of its view (or a minute passes).
pub async fn watch(api: &Api, tenant: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}")).await.body;
    while !done(&view) {
        assert!(std::time::Instant::now() < deadline, "gave up watching {id}: {view:?}");
        let status = view["status"].as_str().expect("status").to_string();
        view = api.get(&format!("/v1/tenants/{tenant}/runs/{id}?wait_seconds=30&while_status={status}")).await.body;
    }
    view
}
