//! Failure triage end to end: a labelled set of failures injected on purpose into `datagen`
//! tenants (missing file, renamed column, type change, duplicate keys, heavy skew, too little
//! memory, unreachable source, deadline) runs through a real service; the report classifies
//! them and groups each cause into one signature; the scheduled report reaches a real webhook
//! receiver; the API, the CLI and the dashboard show the same report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, cast, col, lit, when};
use serde_json::{Value, json};

use crate::alerts::{SECRET, receive};
use crate::server::{ADMIN, AS_OF, Api, Server, TestStore, backends, datagen, setup_tenant_with};

const SEGMENT: &str = "recent_big_spenders_not_unsubscribed";

/// The memory quota of the tenants whose jobs run out of memory.
const QUOTA: u64 = 64 << 10;

/// Each injected cause and the category triage must give it.
const CAUSES: [(&str, &str); 8] = [
    ("missing-file", "schema_drift"),
    ("renamed-column", "schema_drift"),
    ("type-change", "schema_drift"),
    ("duplicate-keys", "data_quality"),
    ("heavy-skew", "data_quality"),
    ("too-little-memory", "resources_exhausted"),
    ("unreachable-source", "source_unavailable"),
    ("deadline", "timeout"),
];

/// Rewrites the Parquet files of one object's folder through `edit`, as one file.
async fn rewrite(dir: &Path, edit: impl FnOnce(DataFrame) -> DataFrame) {
    let ctx = SessionContext::new();
    let frame = ctx.read_parquet(format!("{}/", dir.display()), ParquetReadOptions::default()).await.expect("read");
    let batches = edit(frame).collect().await.expect("edit");
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        std::fs::remove_file(entry.path()).expect("remove");
    }
    let schema = batches.first().expect("rows").schema();
    let file = std::fs::File::create(dir.join("part-0.parquet")).expect("file");
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    for b in &batches {
        writer.write(b).expect("write");
    }
    writer.close().expect("close");
}

/// Breaks a tenant's data (or leaves it for causes that are not in the data).
async fn inject(cause: &str, root: &Path) {
    let order = root.join("order");
    match cause {
        "missing-file" => {
            for entry in std::fs::read_dir(&order).expect("order").flatten() {
                std::fs::remove_file(entry.path()).expect("remove");
            }
        }
        "renamed-column" => rewrite(&order, |f| f.with_column_renamed("amount", "amount_usd").expect("rename")).await,
        "type-change" => rewrite(&order, |f| f.with_column("amount", cast(col("amount"), DataType::Utf8)).expect("cast")).await,
        "duplicate-keys" => {
            // Every person five times over.
            rewrite(&root.join("individual"), |f| (0..4).fold(f.clone(), |all, _| all.union(f.clone()).expect("union"))).await;
        }
        "heavy-skew" => {
            let ctx = SessionContext::new();
            let frame = ctx.read_parquet(format!("{}/", order.display()), ParquetReadOptions::default()).await.expect("read");
            let first = frame.select(vec![col("individual_id")]).expect("select").limit(0, Some(1)).expect("limit").collect().await.expect("first");
            let top = ScalarValue::try_from_array(first[0].column(0), 0).expect("a key");
            // Nine orders in ten belong to one person.
            rewrite(&order, move |f| {
                let rest = (col("order_id") % lit(10i64)).eq(lit(0i64));
                f.with_column("individual_id", when(rest, col("individual_id")).otherwise(lit(top)).expect("case")).expect("skew")
            })
            .await;
        }
        "unreachable-source" => {
            // Every file cut in half: the reader fails on each.
            for entry in std::fs::read_dir(&order).expect("order").flatten() {
                let bytes = std::fs::read(entry.path()).expect("read");
                std::fs::write(entry.path(), &bytes[..bytes.len() / 2]).expect("damage");
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_classified_and_grouped_by_cause() {
    for backend in backends() {
        println!("-- {}", backend.name());
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(&backend, dir.path()).await;
        labelled_failures(dir.path(), &store.url).await;
        store.drop_database().await;
    }
}

async fn labelled_failures(dir: &Path, database_url: &str) {
    let template = dir.join("template");
    datagen("retail", 3000, 21, &template);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("receiver port");
    let hook = format!("http://{}/hook", listener.local_addr().expect("address"));
    let mut webhooks = receive(listener).await;
    let data = dir.join("data");
    let server = Server::start_with(
        &data,
        database_url,
        2,
        &[("COHORT_RETRY_BACKOFF_MS", "20"), ("COHORT_TRIAGE_SCHEDULE", "*/2 * * * * *"), ("COHORT_TRIAGE_WINDOW_SECONDS", "3600")],
    );
    let admin = Api::new(&server.base, ADMIN);
    let created = admin.post("/v1/receivers", &json!({"id": "oncall", "url": hook, "secret": SECRET})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    // Two tenants per cause, in two regions; two runs each.
    let mut tenants: BTreeMap<String, (&str, Api)> = BTreeMap::new();
    for (cause, _) in CAUSES {
        for n in 1..=2 {
            let id = format!("{cause}-{n}");
            let root = dir.join(&id);
            copy_dir(&template, &root);
            let region = if n == 1 { "eu-west" } else { "us-east" };
            // A memory quota below what the segment needs here: retries cannot grow past it.
            let settings =
                if matches!(cause, "duplicate-keys" | "heavy-skew" | "too-little-memory") { json!({"memory_quota_bytes": QUOTA}) } else { json!({}) };
            let api = setup_tenant_with(&admin, &id, region, &root, &[SEGMENT], settings).await;
            inject(cause, &root).await;
            tenants.insert(id, (cause, api));
        }
    }
    let mut jobs = Vec::new();
    for (id, (cause, api)) in &tenants {
        for _ in 0..2 {
            let body = if *cause == "deadline" { json!({"as_of": AS_OF, "timeout_seconds": 0.001}) } else { json!({"as_of": AS_OF}) };
            let queued = api.post(&format!("/v1/tenants/{id}/segments/{SEGMENT}/runs"), &body).await;
            assert_eq!(queued.status, 202, "{:?}", queued.body);
            jobs.push((id.clone(), queued.body["id"].as_str().expect("id").to_string()));
        }
    }
    for (tenant, job) in &jobs {
        let api = &tenants[tenant].1;
        let view = api.get(&format!("/v1/tenants/{tenant}/runs/{job}?wait_seconds=120")).await.body;
        assert_eq!(view["status"], "failed", "{tenant}: every injected cause fails its job: {view:?}");
    }

    // Sixteen tenants failing in ten minutes raise the global failure alert. The report links
    // failures to alerts in the store, so it is read once the alert is there: its firing
    // notification has reached the receiver (on PostgreSQL the evaluator takes finished jobs
    // from the store some time after they end).
    loop {
        let hook = tokio::time::timeout(Duration::from_secs(60), webhooks.recv()).await.expect("the global failure alert within a minute").expect("receiver");
        let global_firing = hook.body["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| a["status"] == "firing" && a["labels"]["scope"] == "global" && a["labels"]["alertname"] != "TriageReport")
        });
        if global_firing {
            break;
        }
    }

    // The report: every failed attempt of the hour.
    let report = admin.get("/v1/triage?since=1h").await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    let report = report.body;
    let signatures = report["signatures"].as_array().expect("signatures");
    let mut by_cause: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let (mut correct, mut total) = (0, 0);
    for s in signatures {
        let causes: BTreeSet<&str> = s["tenants"].as_array().expect("tenants").iter().map(|t| tenants[t.as_str().expect("id")].0).collect();
        assert_eq!(causes.len(), 1, "a signature mixes causes {causes:?}: {s:#}");
        let cause = *causes.iter().next().expect("a cause");
        let expected = CAUSES.iter().find(|(c, _)| *c == cause).map(|(_, category)| *category).expect("known");
        let count = s["count"].as_u64().expect("count");
        total += count;
        if s["category"] == expected {
            correct += count;
        }
        println!("{cause}: {} × {} ({}) {}", count, s["signature"], s["category"], s["data_quality"]);
        by_cause.entry(cause).or_default().push(s);
    }
    assert_eq!(report["failures"].as_u64(), Some(total));
    println!("classified correctly: {correct} of {total} failed attempts");
    assert!(correct * 100 >= total * 95, "{correct} of {total} classified correctly");
    for (cause, _) in CAUSES {
        let sigs = by_cause.get(cause).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(sigs.len(), 1, "{cause}: one signature, got {sigs:#?}");
        let s = sigs[0];
        assert_eq!(s["tenants"], json!([format!("{cause}-1"), format!("{cause}-2")]), "{s:#}");
        assert_eq!(s["regions"], json!(["eu-west", "us-east"]));
        assert_eq!(s["unrecovered"], s["count"], "nothing recovered: {s:#}");
        assert_eq!(s["new"], true, "nothing failed before: {s:#}");
    }
    // The data findings name what is wrong.
    let finding = |cause: &str| by_cause[cause][0]["data_quality"][0].as_str().unwrap_or("").to_string();
    assert!(finding("duplicate-keys").starts_with("individual.individual_id: 80% of"), "{}", finding("duplicate-keys"));
    assert!(finding("heavy-skew").starts_with("order.individual_id: "), "{}", finding("heavy-skew"));
    // Sixteen tenants failing in ten minutes: region and global alerts fired, and the
    // signatures say which they fed.
    assert!(signatures.iter().any(|s| !s["alerts"].as_array().expect("alerts").is_empty()), "no signature fed an alert");

    // A tenant sees only its own failures; another tenant's are not there.
    let (_, own) = &tenants["deadline-1"];
    let mine = own.get("/v1/triage?since=1h").await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.body["signatures"][0]["tenants"], json!(["deadline-1"]));
    assert_eq!(own.get("/v1/triage?tenant=missing-file-1").await.status, 404);
    assert_eq!(own.get("/v1/triage/reports").await.status, 403);
    assert_eq!(admin.get("/v1/triage?since=yesterday").await.status, 400);
    assert_eq!(admin.get("/v1/triage?format=pdf").await.status, 400);

    // Markdown and HTML of the same report.
    let markdown = admin.client.get(server.url("/v1/triage?since=1h&format=markdown")).bearer_auth(ADMIN).send().await.expect("markdown");
    let markdown = markdown.text().await.expect("text");
    assert!(markdown.starts_with("# Failure triage") && markdown.contains("## NEW schema_mismatch"), "{markdown}");
    let html = admin.client.get(server.url("/v1/triage?since=1h&format=html")).bearer_auth(ADMIN).send().await.expect("html");
    let html = html.text().await.expect("text");
    assert_eq!(html.matches("<tr class=\"signature\"").count(), signatures.len(), "{html}");

    // The CLI reads the same store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(["triage", "--since", "1h", "--format", "json", "--database-url", database_url])
        .output()
        .expect("cohort triage");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cli["failures"], report["failures"]);
    assert_eq!(cli["signatures"].as_array().map(Vec::len), Some(signatures.len()));

    // The scheduled report (every two seconds here) reaches the receiver with everything.
    let expected = report["failures"].as_u64();
    let delivered = loop {
        let hook = tokio::time::timeout(Duration::from_secs(60), webhooks.recv()).await.expect("a webhook within a minute").expect("receiver");
        if hook.body["alerts"][0]["labels"]["alertname"] == "TriageReport" && hook.body["triage"]["failures"].as_u64() == expected {
            break hook;
        }
    };
    assert_eq!(delivered.body["triage"]["signatures"].as_array().map(Vec::len), Some(signatures.len()));
    assert!(delivered.body["alerts"][0]["annotations"]["description"].as_str().is_some_and(|d| d.starts_with("# Failure triage")));
    let stored = admin.get("/v1/triage/reports").await;
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    let items = stored.body["items"].as_array().expect("items");
    assert!(items.iter().any(|r| r["failures"].as_u64() == expected), "{items:?}");
    let id = items[0]["id"].as_str().expect("id");
    assert_eq!(admin.get(&format!("/v1/triage/reports/{id}")).await.status, 200);
    assert_eq!(admin.get("/v1/triage/reports/tr_0").await.status, 404);

    // The dashboard: the report, its JSON, a stored report (the admin's token or cookie).
    let page = |path: &str| admin.client.get(server.url(path)).bearer_auth(ADMIN).send();
    let ui = page("/ui/triage?since=1h").await.expect("ui");
    assert_eq!(ui.status(), 200);
    let ui = ui.text().await.expect("text");
    assert_eq!(ui.matches("<tr class=\"signature\"").count(), signatures.len());
    assert!(ui.contains(&format!("/ui/triage/reports/{id}")), "stored reports are listed");
    let as_json: Value = page("/ui/triage?since=1h&format=json").await.expect("json").json().await.expect("json body");
    assert_eq!(as_json["failures"], report["failures"]);
    let stored_page = page(&format!("/ui/triage/reports/{id}")).await.expect("stored");
    assert_eq!(stored_page.status(), 200);
    assert!(stored_page.text().await.expect("text").contains(&format!("Triage report {id}")));
    let overview = page("/").await.expect("overview").text().await.expect("text");
    assert!(overview.contains("<h2>Triage: the last 24 hours</h2>") && overview.contains("<tr class=\"signature\""), "{overview}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
