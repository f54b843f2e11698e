//! `cohort serve --demo`: a service with something to show. Regions, a few dozen small tenants
//! made with `datagen` (retail and B2B), their segments, a steady trickle of runs, and a few
//! tenants whose sources fail now and then (a data file is swapped for a damaged copy and
//! back), so failures, retries and alerts have material.
//!
//! By default: 24 tenants in three regions (`us-east`, `eu-west`, `ap-south`), one in four
//! B2B; every segment is also scheduled every five minutes; a run of a random tenant's random
//! segment is submitted every 400 ms. One tenant in eight is flaky: 20 s after each repair, one
//! of its Parquet files is cut to half for 10 s (the good copy kept beside the tenant, so a
//! file left damaged by a stop is restored at the next start).
//!
//! The demo's data lives in `<data_dir>/demo/`; its tenants' tokens are written to
//! `<data_dir>/demo/tokens.txt`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cohort_control::api::{AppState, new_token, stored_token};
use cohort_control::now_micros;
use cohort_control::schedules::CronSchedule;
use cohort_control::service::{Submission, store_model, submit};
use cohort_control::store::{SegmentRow, Tenant};
use rand::Rng;
use serde_json::Value;

use cohort_datagen::{self as datagen, DatagenArgs, Profile};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// Every demo segment is also recomputed on this schedule (every five minutes).
const DEMO_SCHEDULE: &str = "0 */5 * * * *";

/// One demo tenant.
#[derive(Debug, Clone)]
pub struct DemoTenant {
    id: String,
    region: &'static str,
    root: PathBuf,
    flaky: bool,
}

/// The demo's tenants, their data generated (or found from an earlier start).
pub fn prepare(data_dir: &Path, tenants: usize) -> anyhow::Result<Vec<DemoTenant>> {
    let base = data_dir.join("demo");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut out = Vec::new();
    for i in 0..tenants {
        let retail = i % 4 != 3;
        let id = format!("{}-{i:02}", if retail { "shop" } else { "firm" });
        let root = base.join(&id);
        if !root.join("model.json").exists() {
            eprintln!("demo: generating tenant {id} ({}/{tenants})", i + 1);
            datagen::run(DatagenArgs {
                profile: if retail { Profile::Retail } else { Profile::B2b },
                scale: 500 + 250 * (i as u64 % 7),
                seed: 100 + i as u64,
                out: root.clone(),
            })?;
        }
        repair(&root)?;
        out.push(DemoTenant { id, region: REGIONS[i % REGIONS.len()], root, flaky: i % 8 == 5 });
    }
    Ok(out)
}

/// Registers the demo tenants (once), then keeps runs flowing until the service stops.
pub async fn drive(state: AppState, tenants: Vec<DemoTenant>, data_dir: PathBuf) {
    if let Err(e) = register(&state, &tenants, &data_dir).await {
        tracing::error!(error = format!("{e:#}"), "demo: setting up tenants failed");
        return;
    }
    for tenant in tenants.iter().filter(|t| t.flaky) {
        tokio::spawn(flake(tenant.root.clone()));
    }
    let as_of = cohort_executor::parse_timestamp(datagen::random::AS_OF_TEXT).unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    loop {
        let (tenant, segment) = {
            let mut rng = rand::rng();
            let tenant = &tenants[rng.random_range(0..tenants.len())];
            let segments = segment_files(&tenant.root);
            if segments.is_empty() {
                continue;
            }
            (tenant.clone(), segments[rng.random_range(0..segments.len())].0.clone())
        };
        if let Ok(Some((row, Some(segment_row)))) = state.store.tenant_and_segment(&tenant.id, &segment).await
            && let Err(e) = submit(
                &state.store,
                &state.sizing,
                &state.pool,
                &row,
                &segment_row,
                Submission { as_of, key: None, trigger: "demo", timeout: None, trace_link: None },
            )
            .await
        {
            tracing::warn!(tenant = %tenant.id, segment = %segment, error = ?e, "demo: enqueue failed");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn segment_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("segments"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    out.sort();
    out
}

async fn register(state: &AppState, tenants: &[DemoTenant], data_dir: &Path) -> anyhow::Result<()> {
    let mut tokens = String::new();
    for t in tenants {
        if state.store.tenant(&t.id).await?.is_some() {
            continue;
        }
        let root = t.root.canonicalize().with_context(|| format!("{}", t.root.display()))?;
        let tenant = Tenant {
            id: t.id.clone(),
            region: t.region.to_string(),
            data_root: root.display().to_string(),
            max_concurrent_jobs: 2,
            memory_quota_bytes: 1 << 30,
            jobs_per_minute: 120,
            share: 1.0,
            created_at: String::new(),
            storage: None,
        };
        let token = new_token("ct_");
        state.store.create_tenant(&tenant, &stored_token(&token)).await?;
        tokens.push_str(&format!("{} {token}\n", t.id));
        let model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json"))?)?;
        store_model(&state.store, &state.pool.catalogs(), &tenant, &model).await.map_err(|e| anyhow::anyhow!("{}: model: {e}", t.id))?;
        for (name, path) in segment_files(&root) {
            let definition = std::fs::read_to_string(&path)?;
            state
                .store
                .put_segment(&SegmentRow {
                    tenant_id: t.id.clone(),
                    id: name,
                    definition,
                    schedule: Some(DEMO_SCHEDULE.into()),
                    timezone: "UTC".into(),
                    overlap: "skip".into(),
                    next_due_at: CronSchedule::parse(DEMO_SCHEDULE, "UTC").ok().and_then(|c| c.next_after(now_micros())),
                    ..SegmentRow::default()
                })
                .await?;
        }
    }
    if !tokens.is_empty() {
        let path = data_dir.join("demo").join("tokens.txt");
        let mut all = std::fs::read_to_string(&path).unwrap_or_default();
        all.push_str(&tokens);
        std::fs::write(&path, all)?;
        eprintln!("demo: {} tenants registered; their tokens are in {}", tokens.lines().count(), path.display());
    }
    Ok(())
}

/// Every so often, swaps one data file of a tenant for a truncated copy, then restores it.
async fn flake(root: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        let victim = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != "segments")
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "parquet"));
        let Some(victim) = victim else { return };
        let Ok(good) = std::fs::read(&victim) else { continue };
        // Keep the good copy beside the tenant, so a stop mid-damage is repaired at next start.
        let backup = root.join(BACKUP);
        if std::fs::write(&backup, &good).is_err() || std::fs::write(root.join(BACKUP_OF), victim.to_string_lossy().as_bytes()).is_err() {
            continue;
        }
        let damaged = &good[..good.len() / 2];
        if std::fs::write(&victim, damaged).is_ok() {
            tracing::info!(file = %victim.display(), "demo: a source of a flaky tenant is damaged for a while");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        if std::fs::write(&victim, &good).is_ok() {
            let _ = std::fs::remove_file(&backup);
        }
    }
}

const BACKUP: &str = ".flaky-backup";
const BACKUP_OF: &str = ".flaky-backup-of";

/// Puts back a file a previous demo left damaged.
fn repair(root: &Path) -> anyhow::Result<()> {
    let (backup, of) = (root.join(BACKUP), root.join(BACKUP_OF));
    if backup.exists() {
        let target = std::fs::read_to_string(&of).with_context(|| format!("reading {}", of.display()))?;
        std::fs::copy(&backup, target.trim()).with_context(|| format!("restoring {}", target.trim()))?;
        std::fs::remove_file(&backup)?;
    }
    Ok(())
}
