//! Upgrades: a store and a data folder written by an earlier release (the fixture
//! tests/fixtures/upgrade-v10, made by tests/fixtures/make_upgrade_fixture.py with the
//! `cohort` binary of that release) start under this code with every tenant, model, segment,
//! run, history record and membership as that release served them, and keep working.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::server::{Api, Server, watch};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade-v10")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// `want` with the fixture's folder replaced by where it lies now.
fn moved(want: &Value, from: &str, to: &str) -> Value {
    match want {
        Value::String(s) => Value::String(s.replace(from, to)),
        Value::Array(items) => Value::Array(items.iter().map(|v| moved(v, from, to)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), moved(v, from, to))).collect()),
        other => other.clone(),
    }
}

/// Every field the earlier release answered is answered the same (new fields may be added).
fn holds(want: &Value, got: &Value, at: &str, wrong: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                match g.get(k) {
                    Some(x) => holds(v, x, &format!("{at}.{k}"), wrong),
                    None => wrong.push(format!("{at}.{k}: missing (was {v})")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (v, x)) in w.iter().zip(g).enumerate() {
                holds(v, x, &format!("{at}[{i}]"), wrong);
            }
        }
        _ if want == got => {}
        _ => wrong.push(format!("{at}: was {want}, now {got}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_and_data_folder_of_the_earlier_release_start_with_everything_intact() {
    let fixture = fixture();
    assert!(fixture.join("expected.json").is_file(), "the upgrade fixture is missing: {}", fixture.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("upgrade");
    copy_dir(&fixture, &root);
    let root = root.canonicalize().expect("root");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).expect("expected")).expect("json");
    let made_at = expected["data_root"].as_str().expect("data_root").to_string();
    let now_at = root.display().to_string();
    let expected = moved(&expected, &made_at, &now_at);

    // The tenants' data folders moved with the fixture: the store is told, as an operator
    // moving a deployment would.
    let db = format!("sqlite://{}", root.join("serve/cohort.db").display());
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&format!("{db}?mode=rw")).await.expect("the fixture's store");
        sqlx::query("UPDATE tenants SET data_root = replace(data_root, $1, $2)").bind(&made_at).bind(&now_at).execute(&mut conn).await.expect("move");
        conn.close().await.expect("close");
    }

    let server = Server::start_with(&root.join("serve"), &db, 2, &[("COHORT_ADMIN_TOKEN", expected["admin_token"].as_str().expect("admin"))]);
    let admin = Api::new(&server.base, expected["admin_token"].as_str().expect("admin"));
    let mut wrong = Vec::new();
    for (tenant, want) in expected["tenants"].as_object().expect("tenants") {
        let api = Api::new(&server.base, want["token"].as_str().expect("token"));
        let got = api.get(&format!("/v1/tenants/{tenant}")).await;
        assert_eq!(got.status, 200, "{tenant}: the earlier release's token no longer works: {:?}", got.body);
        holds(&want["tenant"], &got.body, &tenant.to_string(), &mut wrong);
        holds(&want["model"], &api.get(&format!("/v1/tenants/{tenant}/model")).await.body, &format!("{tenant}.model"), &mut wrong);
        for (segment, s) in want["segments"].as_object().expect("segments") {
            let base = format!("/v1/tenants/{tenant}/segments/{segment}");
            let at = format!("{tenant}/{segment}");
            // Whether a scheduled due time has passed depends on today's date, not on the
            // upgrade: once the fixture's next due time is behind the clock, the service counts
            // it missed and moves on. Those two fields are compared only while it is ahead.
            let mut view = s["view"].clone();
            let mut now = api.get(&base).await.body;
            let due_passed = view["next_due_at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).is_some_and(|t| t < chrono::Utc::now());
            if due_passed {
                for v in [&mut view, &mut now] {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("next_due_at");
                        o.remove("missed_runs");
                    }
                }
            }
            holds(&view, &now, &format!("{at}.view"), &mut wrong);
            holds(&s["runs"], &api.get(&format!("{base}/runs?limit=100")).await.body, &format!("{at}.runs"), &mut wrong);
            holds(&s["history"], &api.get(&format!("{base}/history")).await.body, &format!("{at}.history"), &mut wrong);
            let members = api.get(&format!("{base}/members?limit=10000")).await;
            assert_eq!(members.status, 200, "{at}: members: {:?}", members.body);
            holds(&s["members"]["items"], &members.body["items"], &format!("{at}.members"), &mut wrong);
            let runs = s["history"]["items"].as_array().expect("history");
            for (item, record) in runs.iter().zip(s["records"].as_array().expect("records")) {
                let run = item["run_id"].as_str().expect("run_id");
                holds(record, &api.get(&format!("{base}/history/{run}")).await.body, &format!("{at}.history/{run}"), &mut wrong);
            }
        }
    }
    holds(&expected["receivers"], &admin.get("/v1/receivers").await.body, "receivers", &mut wrong);
    // Whether a silence is active depends on today's date, not on the upgrade.
    let mut silences = expected["silences"].clone();
    silences.as_array_mut().expect("silences").iter_mut().for_each(|s| {
        s.as_object_mut().map(|o| o.remove("active"));
    });
    holds(&silences, &admin.get("/v1/silences").await.body, "silences", &mut wrong);
    assert!(wrong.is_empty(), "the upgraded service answers differently from the release that wrote its store:\n{}", wrong.join("\n"));

    // And it keeps working: a new run of an old segment chains onto its history.
    let acme = &expected["tenants"]["acme"];
    let api = Api::new(&server.base, acme["token"].as_str().expect("token"));
    let before = &acme["segments"]["lapsed_buyers"]["history"]["items"];
    let latest = before[0]["run_id"].as_str().expect("latest run");
    let run = api.post("/v1/tenants/acme/segments/lapsed_buyers/runs", &json!({"as_of": "2026-12-01T00:00:00Z"})).await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["id"].as_str().expect("id");
    let view = watch(&api, "acme", id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "succeeded", "{view:?}");
    let history = api.get("/v1/tenants/acme/segments/lapsed_buyers/history").await.body;
    assert_eq!(history["items"].as_array().map(Vec::len), before.as_array().map(|b| b.len() + 1), "{history:?}");
    let newest = &history["items"][0];
    assert_eq!(newest["previous_run_id"].as_str(), Some(latest), "{newest:?}");
}
