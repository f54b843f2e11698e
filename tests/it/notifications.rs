//! `cohort alerts replay --output notifications` against a live service: the same failures, with
//! inhibition and a silence, go through a real `cohort serve` (and its real webhook receiver)
//! and through the replay with the same rules; the replay prints the notifications the service
//! sent.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::alerts::{Webhook, add_receiver, config, failing_tenant, next, receive, settled};
use crate::server::{ADMIN, AS_OF, Api, Server, TestStore, backends, watch};

/// A tenant pages at two failures, its region at three, within 12 s (short enough for the test
/// to see everything resolve, long enough for the failures of the test to fall in one window);
/// only the failure rule runs. Updates wait a second after the last notification.
const RULES: &str = "alert_group_interval_seconds = 1.0\n\
     [alerts.failures.tenant]\nwindow = \"12s\"\nthreshold = 2\n\
     [alerts.failures.region]\nwindow = \"12s\"\nthreshold = 3\n\
     [alerts.failures.global]\nthreshold = 1000\n\
     [alerts.burn_rate]\nenabled = false\n[alerts.runtime]\nenabled = false\n";

const WINDOW_MS: i64 = 12_000;

/// What is compared of a notification: alertname, scope, key, state, kind, and the alerts it
/// lists as inhibited under it.
type Seen = (String, String, String, String, String, Vec<String>);

/// A run of `tenant` that fails; its outcome as a line of a replay's events file.
async fn fail(api: &Api, tenant: &str, region: &str) -> Value {
    let run = api.post(&format!("/v1/tenants/{tenant}/segments/lapsed_buyers/runs"), &json!({"as_of": AS_OF})).await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["id"].as_str().expect("id").to_string();
    let view = watch(api, tenant, &id, |v| ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or(""))).await;
    assert_eq!(view["status"], "failed", "{view:?}");
    json!({"at": view["finished_at"], "tenant": tenant, "region": region, "job": id, "outcome": "failed"})
}

/// The next webhook, which must be about `scope` `key` and say `status`.
async fn expect(hooks: &mut mpsc::UnboundedReceiver<Webhook>, scope: &str, key: &str, status: &str) -> Webhook {
    let hook = next(hooks).await;
    let label = if scope == "region" { "region" } else { "tenant" };
    assert_eq!((hook.label("scope"), hook.label(label), hook.status()), (scope, key, status), "{:?}", hook.body);
    hook
}

/// A webhook as the comparison sees it: its kind is what the alert's history recorded when it
/// was delivered (`notified`: "<kind> to <receiver> (<webhook-id>)").
async fn seen(admin: &Api, hook: &Webhook) -> Seen {
    let alert = &hook.body["alerts"][0];
    let link = alert["generatorURL"].as_str().expect("generatorURL");
    let id = link.rsplit('/').next().expect("an alert id");
    let view = admin.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(view.status, 200, "{link}: {:?}", view.body);
    let notified = view.body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["kind"] == "notified")
        .filter_map(|e| e["detail"].as_str())
        .find(|d| d.ends_with(&format!("({})", hook.id)))
        .unwrap_or_else(|| panic!("no notified entry for {} in {:?}", hook.id, view.body));
    let kind = notified.split(' ').next().unwrap_or("").to_string();
    let inhibited = alert["annotations"]["inhibited"].as_str().map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (text(&alert["labels"]["alertname"]), text(&view.body["scope"]), text(&view.body["key"]), hook.status().to_string(), kind, inhibited)
}

/// `cohort alerts replay --output notifications` over the files in `dir`, its lines as compared.
fn replay(dir: &Path, silences: bool) -> Vec<Seen> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cohort"));
    command.args(["alerts", "replay", "--output", "notifications", "--events"]).arg(dir.join("events.jsonl")).arg("--config").arg(dir.join("cohort.toml"));
    if silences {
        command.arg("--silences").arg(dir.join("silences.jsonl"));
    }
    let out = command.output().expect("cohort alerts replay runs");
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let text = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {line}")).to_string();
            let inhibited = v["inhibited"].as_array().expect("inhibited").iter().filter_map(|i| i.as_str().map(str::to_string)).collect();
            (text("alertname"), text("scope"), text("key"), text("state"), text("kind"), inhibited)
        })
        .collect()
}

fn seen_line(alertname: &str, scope: &str, key: &str, state: &str, kind: &str, inhibited: &[&str]) -> Seen {
    (alertname.into(), scope.into(), key.into(), state.into(), kind.into(), inhibited.iter().map(|s| s.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_prints_the_notifications_a_live_service_sent_with_inhibition_and_a_silence() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(&backend, dir.path()).await;
        let rules = config(dir.path(), RULES);
        let server = Server::start_with(&dir.path().join("data"), &store.url, 2, &[("COHORT_CONFIG", &rules)]);
        let admin = Api::new(&server.base, ADMIN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let mut hooks = receive(listener).await;
        add_receiver(&admin, &url).await;
        let acme = failing_tenant(&admin, dir.path(), "acme", "us-east").await;
        let bee = failing_tenant(&admin, dir.path(), "bee", "us-east").await;

        // acme is silenced for an hour; the replay takes the silence as the API lists it.
        let silence = admin.post("/v1/silences", &json!({"matchers": ["tenant=acme"], "duration_seconds": 3600, "comment": "maintenance"})).await;
        assert_eq!(silence.status, 201, "{:?}", silence.body);
        std::fs::write(dir.path().join("silences.jsonl"), format!("{}\n", silence.body)).expect("silences");

        // acme pages (silenced); bee's first failure pages the region, which inhibits acme; once
        // the region's page is in, bee's second pages bee, under the region: an update.
        let mut events = Vec::new();
        for _ in 0..2 {
            events.push(fail(&acme, "acme", "us-east").await);
        }
        events.push(fail(&bee, "bee", "us-east").await);
        let mut live = vec![expect(&mut hooks, "region", "us-east", "firing").await];
        events.push(fail(&bee, "bee", "us-east").await);
        let times: Vec<i64> =
            events.iter().map(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().expect("finished_at")).expect("RFC 3339").timestamp_millis()).collect();
        assert!(times[3] - times[0] < WINDOW_MS, "the four failures took longer than one window; the test proves nothing: {times:?}");
        live.push(expect(&mut hooks, "region", "us-east", "firing").await);
        // The window runs out: the region resolves and frees bee, which pages, then resolves.
        for _ in 0..3 {
            live.push(next(&mut hooks).await);
        }
        settled(&admin).await;
        while let Ok(more) = hooks.try_recv() {
            live.push(more);
        }
        let events: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.path().join("events.jsonl"), events).expect("events");

        let mut sent = Vec::new();
        for hook in &live {
            sent.push(seen(&admin, hook).await);
        }
        sent.sort();
        let failures = "CohortJobFailures";
        let mut want = vec![
            seen_line(failures, "region", "us-east", "firing", "firing", &["tenant=acme"]),
            seen_line(failures, "region", "us-east", "firing", "update", &["tenant=acme", "tenant=bee"]),
            seen_line(failures, "region", "us-east", "resolved", "resolved", &["tenant=acme"]),
            seen_line(failures, "tenant", "bee", "firing", "firing", &[]),
            seen_line(failures, "tenant", "bee", "resolved", "resolved", &[]),
        ];
        want.sort();
        assert_eq!(sent, want, "what the service sent");

        // The replay prints the same; without the silence it would page acme too.
        let mut replayed = replay(dir.path(), true);
        replayed.sort();
        assert_eq!(replayed, sent, "the replay's notifications against the service's");
        let unsilenced = replay(dir.path(), false);
        assert!(unsilenced.contains(&seen_line(failures, "tenant", "acme", "firing", "firing", &[])), "{unsilenced:?}");
        drop(server);
        store.drop_database().await;
    }
}

/// A silences file that is not one stops the replay with exit status 2, naming the file, the
/// line and what is wrong; so do flags that change nothing of the output asked for.
#[test]
fn bad_silences_and_misplaced_flags_stop_the_replay_with_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "{\"at\": \"2026-01-01T00:00:00Z\", \"tenant\": \"acme\", \"region\": \"us-east\", \"outcome\": \"failed\"}\n").expect("events");
    let good = r#"{"matchers": ["tenant=acme"], "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T01:00:00Z"}"#;
    let notifications = "notifications";
    let cases = [
        ("not json", notifications, "line 2: not a silence"),
        (r#"{"matchers": ["tenant=acme"], "ends_at": "2026-01-01T01:00:00Z"}"#, notifications, "line 2: not a silence"),
        (r#"{"matchers": [], "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T01:00:00Z"}"#, notifications, "at least one matcher"),
        (r#"{"matchers": ["tenant"], "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-01T01:00:00Z"}"#, notifications, "label=value"),
        (r#"{"matchers": ["tenant=a"], "starts_at": "2026-01-01T01:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}"#, notifications, "end after it starts"),
        (r#"{"matchers": ["tenant=a"], "starts_at": "yesterday", "duration_seconds": 60}"#, notifications, "starts_at: not an RFC 3339 time"),
        (r#"{"matchers": ["tenant=a"], "starts_at": "2026-01-01T00:00:00Z", "duration_seconds": -1}"#, notifications, "duration_seconds must be more than 0"),
        (good, "transitions", "--silences changes only --output notifications"),
    ];
    for (line, output, message) in cases {
        let silences = dir.path().join("silences.jsonl");
        std::fs::write(&silences, format!("{good}\n{line}\n")).expect("silences");
        let out = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .args(["alerts", "replay", "--output", output, "--events"])
            .arg(&events)
            .arg("--silences")
            .arg(&silences)
            .output()
            .expect("cohort alerts replay runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(message), "{line}: {stderr:?} should say {message:?}");
        if output == notifications {
            assert!(stderr.contains("silences.jsonl"), "{line}: {stderr:?} names the file");
        }
    }
    for (args, message) in [
        (&["--repeat-interval", "1h"][..], "change only --output notifications"),
        (&["--output", "notifications", "--repeat-interval", "0s"][..], "the repeat interval must be more than 0"),
        (&["--output", "notifications", "--group-interval", "soon"][..], "--group-interval"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cohort")).args(["alerts", "replay"]).args(args).arg("--events").arg(&events).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr:?} should say {message:?}");
    }
}
