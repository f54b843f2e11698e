//! Pushes small jobs through a running `cohort serve` and reports jobs per second end to end and
//! submission latency. Run through `bench/service.sh`, which starts the servers.
//! A crate and workspace of its own (`bench/loadgen/Cargo.toml`), so that building it rebuilds
//! nothing of the service.
//!
//! ```text
//! service_bench --base http://127.0.0.1:PORT --admin TOKEN --data DIR --jobs 10000 --label sqlite [--as-of distinct]
//! ```
//! Every job asks for its tenant's segment as of the same instant, so queued jobs of one
//! segment share an execution; with `--as-of distinct` each job asks for its own instant
//! (a second apart), so every job runs.
//! `DIR` holds tenants made by `cohort datagen` (one folder each, with `model.json`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Debug)]
struct Args {
    base: String,
    admin: String,
    data: PathBuf,
    jobs: usize,
    concurrency: usize,
    label: String,
    distinct: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args { base: String::new(), admin: String::new(), data: PathBuf::new(), jobs: 10_000, concurrency: 32, label: "run".into(), distinct: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--base" => a.base = value,
            "--admin" => a.admin = value,
            "--data" => a.data = value.into(),
            "--jobs" => a.jobs = value.parse().map_err(|_| "--jobs: a number")?,
            "--concurrency" => a.concurrency = value.parse().map_err(|_| "--concurrency: a number")?,
            "--label" => a.label = value,
            "--as-of" => {
                a.distinct = match value.as_str() {
                    "same" => false,
                    "distinct" => true,
                    other => return Err(format!("--as-of: same or distinct, not {other:?}")),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.base.is_empty() || a.admin.is_empty() || a.data.as_os_str().is_empty() {
        return Err("usage: service_bench --base URL --admin TOKEN --data DIR [--jobs N] [--concurrency N] [--label L] [--as-of same|distinct]".into());
    }
    Ok(a)
}

async fn call(client: &reqwest::Client, method: reqwest::Method, url: String, token: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Jobs succeeded, failed (or cancelled), and attempts that executed (a job that rode on
/// another's execution runs none), from the service's own counts.
async fn succeeded_and_failed(client: &reqwest::Client, base: &str) -> Result<(u64, u64, u64), String> {
    // A failing /metrics must end the benchmark, not keep it waiting for counts forever.
    let response = client.get(format!("{base}/metrics")).send().await.and_then(reqwest::Response::error_for_status);
    let text = response.map_err(|e| format!("/metrics: {e}"))?.text().await.map_err(|e| e.to_string())?;
    let count = |status: &str| -> u64 {
        let prefix = format!("cohort_jobs{{status=\"{status}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    // Every executed attempt is observed once in the duration histogram, per tenant series.
    let executed: f64 = text
        .lines()
        .filter(|l| l.starts_with("cohort_job_duration_seconds_count"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .sum();
    Ok((count("succeeded"), count("failed") + count("cancelled"), executed as u64))
}

/// The instant job `i` asks for: one for all, or its own (2026-11-01 plus `i` seconds).
fn as_of(i: usize, distinct: bool) -> String {
    let s = if distinct { i } else { 0 };
    format!("2026-11-{:02}T{:02}:{:02}:{:02}Z", 1 + s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let a = args()?;
    let client = reqwest::Client::new();
    // Tenants: one per folder of DIR, each with the first segment of its segments/.
    let mut targets = Vec::new();
    let mut folders: Vec<PathBuf> =
        std::fs::read_dir(&a.data).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).filter(|p| p.join("model.json").exists()).collect();
    folders.sort();
    for (i, folder) in folders.iter().enumerate() {
        let id = format!("bench{i}");
        let root = folder.canonicalize().map_err(|e| e.to_string())?;
        let (status, body) = call(
            &client,
            reqwest::Method::POST,
            format!("{}/v1/tenants", a.base),
            &a.admin,
            Some(json!({"id": id, "region": "bench", "data_root": root, "max_concurrent_jobs": 1000, "jobs_per_minute": 1000000})),
        )
        .await?;
        if status != 201 {
            return Err(format!("creating {id}: {status} {body}"));
        }
        let token = body["token"].as_str().unwrap_or_default().to_string();
        let model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let (status, body) = call(&client, reqwest::Method::PUT, format!("{}/v1/tenants/{id}/model", a.base), &token, Some(model)).await?;
        if status != 200 {
            return Err(format!("model of {id}: {status} {body}"));
        }
        let segment = "recent_big_spenders_not_unsubscribed";
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("segments").join(format!("{segment}.json"))).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let (status, body) =
            call(&client, reqwest::Method::PUT, format!("{}/v1/tenants/{id}/segments/{segment}", a.base), &token, Some(json!({"definition": definition})))
                .await?;
        if status != 201 {
            return Err(format!("segment of {id}: {status} {body}"));
        }
        targets.push((id, token, segment.to_string()));
    }
    if targets.is_empty() {
        return Err(format!("no tenant folders (with model.json) in {}", a.data.display()));
    }
    let (done_before, failed_before, executed_before) = succeeded_and_failed(&client, &a.base).await?;

    let started = Instant::now();
    let targets = &targets;
    let client_ref = &client;
    let base = a.base.as_str();
    let distinct = a.distinct;
    let latencies: Vec<Result<Duration, String>> = futures::stream::iter(0..a.jobs)
        .map(|i| async move {
            let (id, token, segment) = &targets[i % targets.len()];
            let t = Instant::now();
            let (status, body) = call(
                client_ref,
                reqwest::Method::POST,
                format!("{base}/v1/tenants/{id}/segments/{segment}/runs"),
                token,
                Some(json!({"as_of": as_of(i, distinct)})),
            )
            .await?;
            if status != 202 {
                return Err(format!("submission {i}: {status} {body}"));
            }
            Ok(t.elapsed())
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let submitted_in = started.elapsed();
    let mut ok: Vec<Duration> = latencies.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    if let Some(Err(e)) = latencies.iter().find(|r| r.is_err()) {
        return Err(e.clone());
    }
    ok.sort();
    // Wait until every job is final, reading the service's own counts.
    let (succeeded, failed, executed) = loop {
        let (done, failed, executed) = succeeded_and_failed(&client, &a.base).await?;
        let (done, failed) = (done - done_before, failed - failed_before);
        if done + failed >= a.jobs as u64 {
            break (done, failed, executed - executed_before);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let total = started.elapsed();
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} | {} |",
        a.label,
        a.jobs,
        targets.len(),
        total.as_secs_f64(),
        a.jobs as f64 / total.as_secs_f64(),
        percentile(&ok, 0.50).as_secs_f64() * 1e3,
        percentile(&ok, 0.99).as_secs_f64() * 1e3,
        submitted_in.as_secs_f64(),
        succeeded,
        failed,
        executed
    );
    Ok(())
}
