//! Sources in an S3-compatible object store: a real server (moto's, its own process on a
//! loopback port, a bucket made at start) holding the conformance cases' files, read
//! through `s3://` data roots, must give the members the same files give from local disk.
//! Faults: the server stopped before a run, and a persistent 503, are `source_unavailable`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cohort_executor::storage::{ObjectStores, S3Settings};
use cohort_executor::{Catalog, ErrorClass, Model, PlanChoice, RunOptions, Segment};
use datafusion::object_store::ObjectStoreExt;
use datafusion::object_store::path::Path as ObjectPath;

/// An S3-compatible server of its own: `moto_server` on a free loopback port.
pub struct S3Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    /// Starts one, or `None` (saying why) when `moto_server` is not installed outside CI; with
    /// `CI=true` a missing server fails the test.
    pub fn start() -> Option<S3Server> {
        match std::env::var("COHORT_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Some(S3Server { child: None, endpoint }),
            _ => S3Server::start_own(),
        }
    }

    /// A server of this test's own, to stop.
    pub fn start_own() -> Option<S3Server> {
        let spawned = Command::new("moto_server").args(["-H", "127.0.0.1", "-p", "0"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("moto_server (pip install \"moto[server]\") is needed with CI=true: {e}")
            }
            Err(e) => {
                eprintln!("skipped: no S3-compatible server (moto_server: {e}); pip install \"moto[server]\"");
                return None;
            }
        };
        // It says where it listens once it does.
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = loop {
            let line = lines.next().unwrap_or_else(|| panic!("moto_server ended before listening")).expect("moto_server output");
            if let Some(at) = line.find("Running on http://") {
                break line[at + "Running on ".len()..].trim().to_string();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(S3Server { child: Some(child), endpoint })
    }

    /// Settings that reach it (it checks no signature; the keys are dummies), retrying as
    /// `retries` says.
    pub fn settings(&self, retries: usize) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            path_style: true,
            allow_http: true,
            credentials: Some(cohort_executor::storage::S3Credentials {
                access_key_id: "cohort-test".into(),
                secret_access_key: "cohort-test-secret".into(),
                session_token: None,
            }),
            request_timeout: Duration::from_secs(5),
            max_retries: retries,
            retry_timeout: Duration::from_secs(3),
        }
    }

    /// Makes a bucket.
    pub async fn bucket(&self, name: &str) {
        let response = reqwest::Client::new().put(format!("{}/{name}", self.endpoint)).send().await.expect("create the bucket");
        // A shared server may have it from an earlier run: 409 is fine too.
        assert!(response.status().is_success() || response.status() == 409, "create bucket {name}: {}", response.status());
    }

    /// Copies every file under `dir` to `s3://bucket/prefix/...`, keys as relative paths.
    pub async fn upload(&self, bucket: &str, prefix: &str, dir: &Path) {
        let store = self.settings(3).build(bucket).expect("client");
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
                let bytes = std::fs::read(&path).expect("read");
                store.put(&key, bytes.into()).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            }
        }
    }

    /// Stops it.
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

/// A case's model and segment read from `root` (a folder or an `s3://` prefix) and run.
async fn run_at(root: &str, stores: Arc<ObjectStores>, case: &Path, plan: PlanChoice) -> cohort_executor::Result<Vec<String>> {
    run_on(root, stores, case, plan, None).await
}

/// [`run_at`], on a Ballista cluster when `ballista` names one.
async fn run_on(
    root: &str,
    stores: Arc<ObjectStores>,
    case: &Path,
    plan: PlanChoice,
    ballista: Option<&cohort_executor::BallistaUrl>,
) -> cohort_executor::Result<Vec<String>> {
    let text = std::fs::read_to_string(case.join("model.json")).expect("model.json");
    let model = Model::from_json(&text, case)?.with_stores(stores).confined_to_root(root)?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    let segment = Segment::from_file(&case.join("segment.json"), &catalog)?;
    let as_of = std::fs::read_to_string(case.join("as_of.txt")).expect("as_of.txt");
    let mut options = RunOptions::new(cohort_executor::parse_timestamp(as_of.trim()).expect("as_of"));
    options.plan = plan;
    options.ballista = ballista.cloned();
    Ok(cohort_executor::run_segment(&catalog, &segment, &options).await?.members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_cases_give_the_same_members_from_an_s3_server_as_from_local_disk() {
    let Some(server) = S3Server::start() else { return };
    server.bucket("cohort-cases").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments");
    let cases = crate::case_dirs_under(&root);
    assert!(cases.len() >= 32, "the worked cases: {}", cases.len());
    let stores = Arc::new(ObjectStores::s3(server.settings(3)));
    let mut compared = 0;
    for case in &cases {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        server.upload("cohort-cases", &format!("cases/{name}/"), case).await;
        let s3_root = format!("s3://cohort-cases/cases/{name}/");
        for plan in crate::MODES {
            let local = run_at(&case.canonicalize().expect("case").display().to_string(), Arc::new(ObjectStores::default()), case, plan).await;
            let remote = run_at(&s3_root, Arc::clone(&stores), case, plan).await;
            match (&local, &remote) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{name} {plan:?}: members differ between local disk and S3"),
                (Err(a), Err(b)) => assert_eq!(a.class(), b.class(), "{name} {plan:?}: {a} vs {b}"),
                _ => panic!("{name} {plan:?}: local {local:?} but S3 {remote:?}"),
            }
            compared += 1;
        }
    }
    assert!(compared >= 64, "{compared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_prefix_or_a_missing_bucket_is_refused_clearly() {
    let Some(server) = S3Server::start() else { return };
    server.bucket("cohort-confined").await;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write_parquet(
        &dir.path().join("person"),
        vec![("person_id", Arc::new(datafusion::arrow::array::Int64Array::from(vec![1, 2])) as datafusion::arrow::array::ArrayRef)],
    );
    server.upload("cohort-confined", "acme/", dir.path()).await;
    server.upload("cohort-confined", "acme-other/", dir.path()).await;
    let stores = Arc::new(ObjectStores::s3(server.settings(0)));
    let model = |path: &str| {
        serde_json::json!({"objects": [{"name": "person", "primary_key": "person_id", "source": {"format": "parquet", "path": path}}]}).to_string()
    };
    // In the prefix: found, whether the folder has a trailing slash or not.
    for path in ["person/", "person", "./person/part-0.parquet", "person/*.parquet"] {
        let m = Model::from_json(&model(path), dir.path()).and_then(|m| m.with_stores(Arc::clone(&stores)).confined_to_root("s3://cohort-confined/acme"));
        let catalog = Catalog::load(m.expect("confined"), &Default::default()).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(catalog.objects[0].rows, Some(2), "{path}");
    }
    // Out of it: refused before anything is listed.
    for path in ["../acme-other/person/", "s3://cohort-confined/acme-other/person/", "/person/"] {
        let e = Model::from_json(&model(path), dir.path()).and_then(|m| m.with_stores(Arc::clone(&stores)).confined_to_root("s3://cohort-confined/acme/"));
        let e = e.expect_err(path);
        assert!(e.to_string().contains("leaves the tenant's data root"), "{path}: {e}");
    }
    // A sibling prefix sharing the name's start is not inside.
    let m = Model::from_json(&model("person/"), dir.path()).and_then(|m| m.with_stores(Arc::clone(&stores)).confined_to_root("s3://cohort-confined/acm"));
    let e = Catalog::load(m.expect("model"), &Default::default()).await.expect_err("nothing under acm/");
    assert!(e.to_string().contains("no parquet files"), "{e}");
    // A bucket that does not exist: a source error naming the path.
    let m = Model::from_json(&model("person/"), dir.path()).and_then(|m| m.with_stores(Arc::clone(&stores)).confined_to_root("s3://no-such-bucket/acme/"));
    let e = Catalog::load(m.expect("model"), &Default::default()).await.expect_err("no bucket");
    assert_eq!(e.class(), ErrorClass::SourceUnavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_fails_the_run_as_source_unavailable() {
    let Some(mut server) = S3Server::start_own() else { return };
    server.bucket("cohort-faults").await;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write_parquet(
        &dir.path().join("person"),
        vec![("person_id", Arc::new(datafusion::arrow::array::Int64Array::from(vec![1, 2, 3])) as datafusion::arrow::array::ArrayRef)],
    );
    server.upload("cohort-faults", "acme/", dir.path()).await;
    let text = serde_json::json!({"objects": [{"name": "person", "primary_key": "person_id", "source": {"format": "parquet", "path": "person/"}}]}).to_string();
    let stores = Arc::new(ObjectStores::s3(server.settings(2)));
    let model = Model::from_json(&text, dir.path()).and_then(|m| m.with_stores(stores).confined_to_root("s3://cohort-faults/acme/")).expect("model");
    let catalog = Catalog::load(model, &Default::default()).await.expect("catalog while the store answers");
    let segment =
        Segment::from_json(r#"{"name": "all", "root": "person", "filter": {"field": "person_id", "op": "ge", "value": 1}}"#, &catalog).expect("segment");
    let options = RunOptions::new(0);
    assert_eq!(cohort_executor::run_segment(&catalog, &segment, &options).await.expect("run").members.len(), 3);
    // Stopped between the catalog and the next run: retried, then source_unavailable.
    server.stop();
    let e = cohort_executor::run_segment(&catalog, &segment, &options).await.expect_err("the store is gone");
    assert_eq!(e.class(), ErrorClass::SourceUnavailable, "{e}");
}

/// A server that answers every request with `503 SlowDown` (`slow: false`), or accepts and
/// never answers (`slow: true`): what moto cannot be made to do. Its address.
async fn faulty_server(slow: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if slow => {}
                        Ok(_) => {
                            let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                            let reply =
                                format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                            if socket.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_503_or_too_slowly_is_retried_then_source_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = serde_json::json!({"objects": [{"name": "person", "primary_key": "person_id", "source": {"format": "parquet", "path": "person/"}}]}).to_string();
    for slow in [false, true] {
        let endpoint = faulty_server(slow).await;
        let settings = S3Settings {
            endpoint: Some(endpoint),
            path_style: true,
            allow_http: true,
            request_timeout: Duration::from_millis(500),
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
            ..S3Settings::default()
        };
        let model = Model::from_json(&text, dir.path())
            .and_then(|m| m.with_stores(Arc::new(ObjectStores::s3(settings))).confined_to_root("s3://cohort-faults/acme/"))
            .expect("model");
        let started = std::time::Instant::now();
        let e = Catalog::load(model, &Default::default()).await.expect_err("the store never answers well");
        assert_eq!(e.class(), ErrorClass::SourceUnavailable, "slow={slow}: {e}");
        // Retried (two retries with backoff), not failed at the first answer; bounded by the
        // retry timeout.
        let message = e.to_string();
        assert!(message.contains("after 2 retries"), "slow={slow}: {message}");
        assert!(started.elapsed() < Duration::from_secs(30), "slow={slow}: {:?}", started.elapsed());
    }
}

/// A case's objects written as Parquet (one folder per object, the rows as the executor reads
/// the CSV files) in `out`, with a `model.json` naming them and the case's segment and as-of.
async fn as_parquet(case: &Path, out: &Path) {
    use datafusion::dataframe::DataFrameWriteOptions;
    let model = Model::from_file(&case.join("model.json")).expect("model");
    let catalog = match Catalog::load(model, &Default::default()).await {
        Ok(c) => c,
        // A case whose data is refused is refused from either place; nothing to convert.
        Err(_) => return,
    };
    let ctx = datafusion::prelude::SessionContext::new();
    let mut definition: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("model.json")).expect("model.json")).expect("json");
    for (i, object) in catalog.objects.iter().enumerate() {
        let frame = ctx.read_table(object.table().expect("table")).expect("read");
        let file = out.join(&object.name).join("part-0.parquet");
        std::fs::create_dir_all(file.parent().expect("folder")).expect("mkdir");
        frame.write_parquet(&file.display().to_string(), DataFrameWriteOptions::new().with_single_file_output(true), None).await.expect("write parquet");
        definition["objects"][i]["source"] = serde_json::json!({"format": "parquet", "path": format!("{}/", object.name)});
    }
    std::fs::write(out.join("model.json"), definition.to_string()).expect("model.json");
    for name in ["segment.json", "as_of.txt"] {
        std::fs::copy(case.join(name), out.join(name)).expect("copy");
    }
    for name in ["expected.txt", "expect_exit.txt"] {
        if case.join(name).exists() {
            std::fs::copy(case.join(name), out.join(name)).expect("copy");
        }
    }
}

/// Runs tests/lakehouse/write_tables.py (PyIceberg, deltalake); `false`, having said why,
/// when Python or the package is missing outside CI.
fn write_tables(engine: &str, pairs: &[(std::path::PathBuf, std::path::PathBuf)], s3: Option<(&str, &str, &str)>) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lakehouse/write_tables.py");
    let mut command = Command::new("python3");
    command.arg(&script).arg(engine);
    for (from, to) in pairs {
        command.arg(from).arg(to);
    }
    if let Some((endpoint, bucket, prefix)) = s3 {
        command.args(["--s3-endpoint", endpoint, "--bucket", bucket, "--prefix", prefix]);
    }
    let done = command.output().expect("python3 runs");
    if done.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&done.stderr);
    if stderr.contains("ModuleNotFoundError") && !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        eprintln!("skipped: {engine} tables need pip install \"pyiceberg[sql-sqlite,pyarrow]\" deltalake: {stderr}");
        return false;
    }
    panic!("write_tables.py {engine}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_cases_give_the_same_members_from_parquet_and_iceberg_tables_on_disk_and_on_s3() {
    let Some(server) = S3Server::start() else { return };
    server.bucket("cohort-parquet").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments");
    let work = tempfile::tempdir().expect("tempdir");
    let stores = Arc::new(ObjectStores::s3(server.settings(3)));
    let mut compared = 0;
    let mut pairs = Vec::new();
    for case in crate::case_dirs_under(&root) {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        let parquet = work.path().join(&name);
        std::fs::create_dir_all(&parquet).expect("mkdir");
        as_parquet(&case, &parquet).await;
        if !parquet.join("model.json").exists() || !parquet.join("expected.txt").exists() {
            continue;
        }
        server.upload("cohort-parquet", &format!("{name}/"), &parquet).await;
        let expected: Vec<String> = std::fs::read_to_string(parquet.join("expected.txt")).expect("expected").lines().map(str::to_string).collect();
        let local = run_at(&parquet.display().to_string(), Arc::new(ObjectStores::default()), &parquet, PlanChoice::Single).await.expect("local Parquet");
        let remote = run_at(&format!("s3://cohort-parquet/{name}/"), Arc::clone(&stores), &parquet, PlanChoice::Single).await.expect("Parquet on S3");
        assert_eq!(local, expected, "{name}: local Parquet");
        assert_eq!(remote, expected, "{name}: Parquet on S3");
        pairs.push((parquet.clone(), work.path().join(format!("{name}-iceberg"))));
        compared += 1;
    }
    // The same rows as Iceberg tables PyIceberg wrote (two appends each), on local disk.
    if !write_tables("iceberg", &pairs, None) {
        return;
    }
    for (parquet, iceberg) in &pairs {
        let expected: Vec<String> = std::fs::read_to_string(parquet.join("expected.txt")).expect("expected").lines().map(str::to_string).collect();
        for plan in crate::MODES {
            let members = run_at(&iceberg.canonicalize().expect("dir").display().to_string(), Arc::new(ObjectStores::default()), iceberg, plan)
                .await
                .unwrap_or_else(|e| panic!("{} {plan:?} from Iceberg: {e}", iceberg.display()));
            assert_eq!(members, expected, "{} {plan:?}: Iceberg tables", iceberg.display());
        }
    }
    // And on the S3 server, PyIceberg writing through its own S3 client.
    let on_s3: Vec<_> = pairs.iter().map(|(parquet, iceberg)| (parquet.clone(), iceberg.with_extension("s3"))).collect();
    assert!(write_tables("iceberg", &on_s3, Some((&server.endpoint, "cohort-parquet", "tables/"))), "PyIceberg was there a moment ago");
    for (parquet, iceberg) in &on_s3 {
        let expected: Vec<String> = std::fs::read_to_string(parquet.join("expected.txt")).expect("expected").lines().map(str::to_string).collect();
        let name = iceberg.file_name().expect("name").to_string_lossy().into_owned();
        let members = run_at(&format!("s3://cohort-parquet/tables/{name}/"), Arc::clone(&stores), iceberg, PlanChoice::Single)
            .await
            .unwrap_or_else(|e| panic!("{name} from Iceberg on S3: {e}"));
        assert_eq!(members, expected, "{name}: Iceberg tables on S3");
    }
    assert!(compared >= 24, "cases compared: {compared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ballista_cluster_given_the_stores_settings_reads_the_same_s3_sources_and_members() {
    let Some(server) = S3Server::start() else { return };
    server.bucket("cohort-ballista").await;
    let settings = server.settings(3);
    // The scheduler and executors get the store's settings, as `cohort ballista` processes
    // get them from their environment.
    let cluster = cohort_executor::LocalCluster::start_with(2, 2, &ObjectStores::s3(settings.clone())).await.expect("cluster");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/segments");
    let work = tempfile::tempdir().expect("tempdir");
    let stores = Arc::new(ObjectStores::s3(settings));
    let mut compared = 0;
    for case in crate::case_dirs_under(&root) {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        let parquet = work.path().join(&name);
        std::fs::create_dir_all(&parquet).expect("mkdir");
        as_parquet(&case, &parquet).await;
        if !parquet.join("expected.txt").exists() || !parquet.join("model.json").exists() {
            continue;
        }
        server.upload("cohort-ballista", &format!("{name}/"), &parquet).await;
        let expected: Vec<String> = std::fs::read_to_string(parquet.join("expected.txt")).expect("expected").lines().map(str::to_string).collect();
        for plan in crate::MODES {
            let members = run_on(&format!("s3://cohort-ballista/{name}/"), Arc::clone(&stores), &parquet, plan, Some(&cluster.url))
                .await
                .unwrap_or_else(|e| panic!("{name} {plan:?} on Ballista from S3: {e}"));
            assert_eq!(members, expected, "{name} {plan:?}: Ballista over S3");
            compared += 1;
        }
    }
    assert!(compared >= 48, "{compared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_snapshots_are_read_as_pinned_and_a_renamed_column_is_refused_not_misread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("dir");
    // PyIceberg: two appends (two snapshots), then a column renamed.
    let script = r#"
import json, sys
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
root = sys.argv[1]
catalog = SqlCatalog("t", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
catalog.create_namespace("shop")
rows = lambda a, b: pa.table({"person_id": pa.array(range(a, b), pa.int64()), "name": pa.array([f"p{i}" for i in range(a, b)], pa.string())})
table = catalog.create_table("shop.person", schema=rows(0, 1).schema)
table.append(rows(0, 10))
first = table.current_snapshot().snapshot_id
table.append(rows(10, 25))
second = table.current_snapshot().snapshot_id
location = table.metadata.location
with table.update_schema() as update:
    update.rename_column("name", "full_name")
print(json.dumps({"location": location, "first": first, "second": second}))
"#;
    let out = Command::new("python3").args(["-c", script]).arg(&root).output().expect("python3");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("ModuleNotFoundError") && !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            eprintln!("skipped: PyIceberg is not installed: {stderr}");
            return;
        }
        panic!("PyIceberg: {stderr}");
    }
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let location = made["location"].as_str().expect("location").trim_start_matches("file://").to_string();
    let path = std::path::Path::new(&location).strip_prefix(&root).expect("inside").display().to_string();
    let model = |source: serde_json::Value| serde_json::json!({"objects": [{"name": "person", "primary_key": "person_id", "source": source}]}).to_string();
    // Renamed: refused, naming the column, rather than reading old files' column as null.
    let m =
        Model::from_json(&model(serde_json::json!({"format": "iceberg", "path": path})), &root).and_then(|m| m.confined_to_root(&root.display().to_string()));
    let e = Catalog::load(m.expect("model"), &Default::default()).await.expect_err("renamed column");
    assert!(e.to_string().contains("renamed") && e.to_string().contains("full_name"), "{e}");
    // The metadata file before the rename, pinned at each snapshot: the rows of that snapshot.
    let metadata = std::fs::read_dir(root.join(&path).join("metadata"))
        .expect("metadata")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("00002-") && n.ends_with(".metadata.json"))
        .expect("the metadata of the second append");
    for (snapshot, rows) in [(&made["first"], 10u64), (&made["second"], 25)] {
        let source = serde_json::json!({"format": "iceberg", "path": format!("{path}/metadata/{metadata}"), "snapshot_id": snapshot});
        let m = Model::from_json(&model(source), &root).and_then(|m| m.confined_to_root(&root.display().to_string())).expect("model");
        let catalog = Catalog::load(m, &Default::default()).await.expect("catalog");
        assert_eq!(catalog.objects[0].rows, Some(rows));
        assert_eq!(catalog.snapshots()[0].1.id, snapshot.as_i64().expect("id"));
        let segment =
            Segment::from_json(r#"{"name": "all", "root": "person", "filter": {"field": "person_id", "op": "ge", "value": 0}}"#, &catalog).expect("segment");
        let report = cohort_executor::run_segment(&catalog, &segment, &RunOptions::new(0)).await.expect("run");
        assert_eq!(report.members.len() as u64, rows);
        assert_eq!(report.snapshots[0].1.id, snapshot.as_i64().expect("id"));
    }
    // A snapshot the table never had.
    let source = serde_json::json!({"format": "iceberg", "path": format!("{path}/metadata/{metadata}"), "snapshot_id": 7});
    let m = Model::from_json(&model(source), &root).and_then(|m| m.confined_to_root(&root.display().to_string())).expect("model");
    let e = Catalog::load(m, &Default::default()).await.expect_err("no such snapshot");
    assert!(e.to_string().contains("no snapshot 7"), "{e}");
}
