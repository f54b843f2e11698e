//! Tenants whose data lives in object storage, through `cohort serve`: a real S3-compatible
//! server (moto's, its own process), a tenant whose `data_root` is an `s3://` prefix with
//! credentials named in the service's configuration (never stored, never shown), runs that
//! give the executor's members over the same files on local disk, and a store that stops
//! answering: the attempts fail `source_unavailable`, are retried, and nothing partial shows.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cohort_executor::storage::{S3Credentials, S3Settings};
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};

use crate::server::{ADMIN, AS_OF, Api, Server, cannot_run, datagen, executor_members};

const SEGMENTS: [&str; 3] = ["recent_big_spenders_not_unsubscribed", "multi_category_shoppers", "lapsed_buyers"];
const KEY: &str = "cohort-lake-key";
const SECRET: &str = "cohort-lake-secret-0123456789";

/// An S3-compatible server: `moto_server` of this test's own on a free loopback port.
pub struct S3Server {
    child: Option<Child>,
    pub endpoint: String,
}

impl S3Server {
    /// One of this test's own (`None`, having said why, when moto is not installed outside CI).
    pub fn start() -> Option<S3Server> {
        let mut child = match Command::new("moto_server").args(["-H", "127.0.0.1", "-p", "0"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn() {
            Ok(c) => c,
            Err(e) => {
                cannot_run(&format!("no S3-compatible server: moto_server: {e} (pip install \"moto[server]\")"));
                return None;
            }
        };
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let endpoint = loop {
            let line = lines.next().unwrap_or_else(|| panic!("moto_server ended before listening")).expect("moto_server output");
            if let Some(at) = line.find("Running on http://") {
                break line[at + "Running on ".len()..].trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Some(S3Server { child: Some(child), endpoint })
    }

    pub fn client(&self, bucket: &str) -> std::sync::Arc<dyn ObjectStore> {
        let settings = S3Settings {
            endpoint: Some(self.endpoint.clone()),
            path_style: true,
            allow_http: true,
            credentials: Some(S3Credentials { access_key_id: KEY.into(), secret_access_key: SECRET.into(), session_token: None }),
            ..S3Settings::default()
        };
        settings.build(bucket).expect("client")
    }

    pub async fn bucket(&self, name: &str) {
        let response = reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await.expect("create the bucket");
        assert!(response.status().is_success() || response.status() == 409, "create bucket {name}: {}", response.status());
    }

    /// Copies every file under `dir` to `s3://bucket/prefix...`.
    pub async fn upload(&self, bucket: &str, prefix: &str, dir: &Path) {
        let store = self.client(bucket);
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
                let key = ObjectPath::from(format!("{prefix}{relative}"));
                store.put(&key, std::fs::read(&path).expect("read").into()).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            }
        }
    }

    pub fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The service's configuration: the credentials `lake`, read from two variables, and the
/// Iceberg SQL catalog `shop` (PyIceberg's, `dir/catalog.db`).
fn config(dir: &Path) -> String {
    let path = dir.join("cohort.toml");
    let text = format!(
        "[storage.credentials.lake]\naccess_key_id_env = \"COHORT_LAKE_KEY\"\nsecret_access_key_env = \"COHORT_LAKE_SECRET\"\n\
         [storage.iceberg_catalogs.shop]\nuri = \"sqlite://{}?mode=ro\"\ncatalog_name = \"cohort_e2e\"\n",
        dir.join("catalog.db").display()
    );
    std::fs::write(&path, text).expect("config");
    path.display().to_string()
}

async fn run(api: &Api, tenant: &str, segment: &str, as_of: &str) -> Value {
    let queued = api.post(&format!("/v1/tenants/{tenant}/segments/{segment}/runs"), &json!({"as_of": as_of})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let id = queued.body["id"].as_str().expect("id").to_string();
    crate::server::watch(api, tenant, &id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await
}

async fn members(api: &Api, tenant: &str, segment: &str) -> Vec<String> {
    let answer = api.get(&format!("/v1/tenants/{tenant}/segments/{segment}/members?limit=10000")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["items"].as_array().expect("items").iter().map(crate::server::key_text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_in_object_storage_gets_the_members_of_its_files_and_never_sees_its_keys() {
    let Some(mut s3) = S3Server::start() else { return };
    s3.bucket("cohort-lake").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("retail");
    datagen("retail", 300, 5, &local);
    s3.upload("cohort-lake", "tenants/acme/", &local).await;

    let rules = config(dir.path());
    let env = [
        ("COHORT_CONFIG", rules.as_str()),
        ("COHORT_LAKE_KEY", KEY),
        ("COHORT_LAKE_SECRET", SECRET),
        ("COHORT_STORAGE_MAX_RETRIES", "2"),
        ("COHORT_STORAGE_RETRY_TIMEOUT_SECONDS", "2"),
        ("COHORT_STORAGE_REQUEST_TIMEOUT_SECONDS", "2"),
        ("COHORT_RETRY_ATTEMPTS", "2"),
        ("COHORT_RETRY_BACKOFF_MS", "100"),
    ];
    let server = Server::start_with(&dir.path().join("serve"), &format!("sqlite://{}", dir.path().join("c.db").display()), 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let storage = json!({"endpoint": s3.endpoint, "credentials": "lake"});

    // Refused clearly: credentials nobody configured, a bucket name S3 does not allow, a
    // prefix that climbs, and storage settings on a local folder.
    for (root, storage, code) in [
        ("s3://cohort-lake/tenants/acme/", json!({"endpoint": s3.endpoint, "credentials": "nobody"}), "invalid_data_root"),
        ("s3://Cohort_Lake/acme/", storage.clone(), "invalid_data_root"),
        ("s3://cohort-lake/tenants/../acme/", storage.clone(), "invalid_data_root"),
        ("s3://cohort-lake/acme/", json!({"endpoint": "ftp://x"}), "invalid_data_root"),
        (local.to_str().expect("utf-8"), storage.clone(), "invalid_body"),
    ] {
        let refused = admin.post("/v1/tenants", &json!({"id": "refused", "region": "us-east", "data_root": root, "storage": storage})).await;
        assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (400, Some(code)), "{root}: {:?}", refused.body);
    }

    let created = admin
        .post(
            "/v1/tenants",
            &json!({"id": "acme", "region": "us-east", "data_root": "s3://cohort-lake/tenants/acme/", "storage": storage, "jobs_per_minute": 600000}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(!created.body.to_string().contains(SECRET) && !created.body.to_string().contains(KEY), "{:?}", created.body);
    assert_eq!(created.body["tenant"]["storage"]["credentials"], "lake", "{:?}", created.body);
    let api = Api::new(&server.base, created.body["token"].as_str().expect("token"));
    let model: Value = serde_json::from_str(&std::fs::read_to_string(local.join("model.json")).expect("model")).expect("json");
    let put = api.put("/v1/tenants/acme/model", &model).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert!(put.body["source_bytes"].as_i64().unwrap_or(0) > 0, "{:?}", put.body);
    for segment in SEGMENTS {
        let definition: Value = serde_json::from_str(&std::fs::read_to_string(local.join(format!("segments/{segment}.json"))).expect("segment")).expect("json");
        let put = api.put(&format!("/v1/tenants/acme/segments/{segment}"), &json!({"definition": definition})).await;
        assert_eq!(put.status, 201, "{segment}: {:?}", put.body);
    }
    for segment in SEGMENTS {
        let done = run(&api, "acme", segment, AS_OF).await;
        assert_eq!(done["status"], "succeeded", "{segment}: {done:?}");
        let expected = executor_members(&local.join("model.json"), &local.join(format!("segments/{segment}.json")), AS_OF);
        assert_eq!(members(&api, "acme", segment).await, expected, "{segment}");
    }
    let seen = admin.get("/v1/tenants/acme").await;
    assert!(!seen.body.to_string().contains(SECRET), "{:?}", seen.body);

    // The store stops answering: each attempt fails `source_unavailable` after its retries,
    // the run is retried as configured, and the segment keeps the members it had.
    let before = members(&api, "acme", SEGMENTS[0]).await;
    s3.stop();
    let failed = run(&api, "acme", SEGMENTS[0], "2026-11-02T00:00:00Z").await;
    assert_eq!((failed["status"].as_str(), failed["error_class"].as_str()), (Some("failed"), Some("source_unavailable")), "{failed:?}");
    assert_eq!(failed["attempts"], 2, "{failed:?}");
    let now = admin.get("/v1/tenants/acme").await;
    assert_eq!(now.status, 200);
    let kept = api.get(&format!("/v1/tenants/acme/segments/{}/members?limit=10000", SEGMENTS[0])).await;
    assert_eq!(kept.body["items"].as_array().expect("items").iter().map(crate::server::key_text).collect::<Vec<_>>(), before);
}

/// tests/lakehouse/iceberg_e2e.py: PyIceberg writing `shop.person` on the S3 server. Its
/// answer: location, snapshot, data files, and the segment's members at that snapshot.
fn iceberg(args: &[&str], db: &Path, s3: &S3Server) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lakehouse/iceberg_e2e.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg("--db")
        .arg(db)
        .args(["--endpoint", &s3.endpoint, "--bucket", "cohort-iceberg", "--prefix", "acme/"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "iceberg_e2e.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(crate::server::key_text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_table_in_s3_is_read_at_a_recorded_snapshot_and_a_retry_reads_the_same_one() {
    if !crate::server::python_has(&["pyiceberg", "s3fs"]) {
        return;
    }
    let Some(s3) = S3Server::start() else { return };
    s3.bucket("cohort-iceberg").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("catalog.db");
    // Two appends, a column added, then a delete committed after the data.
    let first = iceberg(&["create"], &db, &s3);
    let location = first["location"].as_str().expect("location");
    assert!(location.starts_with("s3://cohort-iceberg/acme/"), "{location}");

    let rules = config(dir.path());
    let env = [
        ("COHORT_CONFIG", rules.as_str()),
        ("COHORT_LAKE_KEY", KEY),
        ("COHORT_LAKE_SECRET", SECRET),
        ("COHORT_STORAGE_MAX_RETRIES", "1"),
        ("COHORT_STORAGE_RETRY_TIMEOUT_SECONDS", "2"),
        ("COHORT_RETRY_ATTEMPTS", "8"),
        ("COHORT_RETRY_BACKOFF_MS", "3000"),
        ("COHORT_RETRY_BACKOFF_MAX_SECONDS", "6"),
    ];
    let server = Server::start_with(&dir.path().join("serve"), &format!("sqlite://{}", dir.path().join("c.db").display()), 2, &env);
    let admin = Api::new(&server.base, ADMIN);
    let created = admin
        .post(
            "/v1/tenants",
            &json!({"id": "acme", "region": "us-east", "data_root": "s3://cohort-iceberg/acme/",
                    "storage": {"endpoint": s3.endpoint, "credentials": "lake"}, "jobs_per_minute": 600000}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let api = Api::new(&server.base, created.body["token"].as_str().expect("token"));
    // Named in the catalog PyIceberg wrote; a table it does not have is refused.
    let missing =
        json!({"objects": [{"name": "person", "primary_key": "person_id", "source": {"format": "iceberg", "catalog": "shop", "table": "shop.nobody"}}]});
    let refused = api.put("/v1/tenants/acme/model", &missing).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (422, Some("invalid_model")), "{:?}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap_or("").contains("shop.nobody"), "{:?}", refused.body);
    let model =
        json!({"objects": [{"name": "person", "primary_key": "person_id", "source": {"format": "iceberg", "catalog": "shop", "table": "shop.person"}}]});
    let put = api.put("/v1/tenants/acme/model", &model).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let segment = json!({"root": "person", "filter": {"and": [{"field": "country", "op": "eq", "value": "US"}, {"field": "spend", "op": "gt", "value": 50}]}});
    assert_eq!(api.put("/v1/tenants/acme/segments/us_big", &json!({"definition": segment})).await.status, 201);

    // The first run: the members PyIceberg's own scan finds, and the snapshot it read.
    let one = run(&api, "acme", "us_big", AS_OF).await;
    assert_eq!(one["status"], "succeeded", "{one:?}");
    assert_eq!(members(&api, "acme", "us_big").await, strings(&first["members"]));
    assert_eq!(
        one["snapshots"],
        json!([{"object": "person", "format": "iceberg", "id": first["snapshot"], "metadata": one["snapshots"][0]["metadata"]}]),
        "{one:?}"
    );

    // A second commit, a second run: its snapshot, and the history says what changed.
    let second = iceberg(&["append", "--first", "81", "--last", "100"], &db, &s3);
    assert_ne!(second["snapshot"], first["snapshot"]);
    let two = run(&api, "acme", "us_big", "2026-11-02T00:00:00Z").await;
    assert_eq!(two["status"], "succeeded", "{two:?}");
    assert_eq!(two["snapshots"][0]["id"], second["snapshot"], "{two:?}");
    let now = strings(&second["members"]);
    assert_eq!(members(&api, "acme", "us_big").await, now);
    let before = strings(&first["members"]);
    let history = crate::server::history(&api, "acme", "us_big").await;
    assert_eq!(history[0]["run_id"], two["id"]);
    assert_eq!(history[0]["added"].as_u64(), Some(now.iter().filter(|m| !before.contains(m)).count() as u64), "{history:?}");
    assert_eq!(history[0]["removed"].as_u64(), Some(before.iter().filter(|m| !now.contains(m)).count() as u64), "{history:?}");

    // A run whose first attempt fails after it recorded its snapshot (a data file of that
    // snapshot is gone). The table moves on while the file is gone; only once it is back can
    // an attempt succeed, so the one that does began after the third commit. It reads the
    // snapshot the run started with, not the newest.
    let store = s3.client("cohort-iceberg");
    let hidden = ObjectPath::from(second["files"][0].as_str().expect("file").strip_prefix("s3://cohort-iceberg/").expect("in the bucket"));
    let bytes = store.get(&hidden).await.expect("the data file").bytes().await.expect("bytes");
    store.delete(&hidden).await.expect("hide it");
    let queued = api.post("/v1/tenants/acme/segments/us_big/runs", &json!({"as_of": "2026-11-03T00:00:00Z"})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let id = queued.body["id"].as_str().expect("id").to_string();
    let finished = |v: &Value| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""));
    let failed_once = crate::server::watch(&api, "acme", &id, |v| v["error_class"] == "source_unavailable" || finished(v)).await;
    assert!(!finished(&failed_once) && failed_once["error_class"] == "source_unavailable", "{failed_once:?}");
    assert_eq!(failed_once["snapshots"][0]["id"], second["snapshot"], "{failed_once:?}");
    let third = iceberg(&["append", "--first", "101", "--last", "130", "--quick"], &db, &s3);
    store.put(&hidden, bytes.into()).await.expect("bring it back");
    let retried = crate::server::watch(&api, "acme", &id, |v| ["succeeded", "failed"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(retried["status"], "succeeded", "{retried:?}");
    assert!(retried["attempts"].as_i64().unwrap_or(0) >= 2, "{retried:?}");
    assert_eq!(retried["snapshots"][0]["id"], second["snapshot"], "{retried:?}");
    assert_eq!(members(&api, "acme", "us_big").await, now, "the retry read the second snapshot, not the third");
    let third_state = iceberg(&["state"], &db, &s3);
    assert_eq!(third_state["snapshot"], third["snapshot"]);
    assert_ne!(strings(&third_state["members"]), now, "the third commit changed the members");
}
