//! `cohort serve`: the store, the executor pool and the HTTP API in one process.
//!
//! Start: open the store (migrations applied), queue again whatever a previous process left
//! admitted or running, catch up on schedules that fell due meanwhile, start the pool's
//! dispatcher and the schedule loop, then listen. Stop (SIGTERM or SIGINT):
//! stop accepting requests, stop admitting, give running jobs the grace period, queue the rest
//! again, close the store.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, AppState, new_token, token_hash};
use crate::estimates::Estimates;
use crate::membership::MembershipFiles;
use crate::policy::{Route, SizeRule};
use crate::pool::{Pool, PoolSettings, Sizing};
use crate::{Config, Error, Result, Store};

/// Work to start once the service is up (the demo uses it).
pub type Hook = Box<dyn FnOnce(AppState) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Runs the service until SIGTERM or SIGINT. Builds its own runtimes: one for the API and the
/// store, one for segment execution.
pub fn run(config: Config, hook: Option<Hook>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("cohort-api")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))?;
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.clamp(1, 64))
        .thread_name("cohort-exec")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the executor runtime: {e}")))?;
    let result = runtime.block_on(serve(config, executor.handle().clone(), hook));
    executor.shutdown_timeout(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The admin token: configured, or kept in `<data_dir>/admin-token` (made on first start).
fn admin_token(config: &Config) -> Result<String> {
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if token.len() >= 16 {
            return Ok(token);
        }
    }
    let token = new_token("ca_");
    write_private(&path, &token).map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("cohort: a new admin token was written to {}", path.display());
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The service put together from its configuration, not yet running: the store opened (its
/// migrations applied) and recovered, the pool, the estimator, alerting and triage made, and
/// the API's state that holds them. [`serve`] starts the loops beside it and listens; router
/// tests call the API on `state` without a socket.
#[derive(Debug)]
pub struct Assembled {
    /// The API's state: the store, the pool, sizing, the estimator, alerting, triage.
    pub state: AppState,
    /// Metrics and traces.
    pub telemetry: Arc<crate::Telemetry>,
    /// This process as an alert evaluator (its instance name and lease).
    pub replica: crate::alerts::Replica,
}

/// Puts the service together (see [`Assembled`]); `address` is where it will listen, the base of
/// the links in its alerts and reports when no `external_url` is set.
pub async fn assemble(config: &Config, executor: tokio::runtime::Handle, address: &str) -> Result<Assembled> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Config(format!("cannot create the data folder {}: {e}", config.data_dir.display())))?;
    let admin = admin_token(config)?;
    // Tokens found are remembered for a lease period at most: a revocation by another
    // process reaches this one within it.
    let store = Store::connect(&config.database_url(), config.db_connections).await?.with_token_ttl(Duration::from_secs_f64(config.lease_seconds.max(0.3)));
    let instance = config.instance.clone().unwrap_or_else(|| crate::new_id("cohort-"));
    let requeued = match store.backend() {
        // One process per SQLite store: whatever was running, that process stopped.
        crate::store::Backend::Sqlite => store.requeue_unfinished("recovered at start: the previous process stopped while it ran").await?,
        // Other processes may share PostgreSQL: only what no live lease covers (and what
        // this process's previous life held, when its name is stable).
        crate::store::Backend::Postgres => store.requeue_expired(crate::now_micros(), Some(&instance), "").await?.len() as u64,
    };
    if requeued > 0 {
        tracing::info!(jobs = requeued, "recovered unfinished jobs; they run again");
    }
    let files = MembershipFiles::new(config.data_dir.join("members"));
    let settings = PoolSettings {
        slots: config.workers,
        budget: config.memory_budget,
        poll: Duration::from_millis(config.poll_ms.max(10)),
        half_life: Duration::from_secs_f64(config.fair_share_half_life_seconds),
        retry: config.retry_policy(),
        instance,
        lease: Duration::from_secs_f64(config.lease_seconds.max(0.3)),
        ballista: config.ballista_url()?,
    };
    let replica = crate::alerts::Replica { instance: settings.instance.clone(), lease: settings.lease };
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => crate::traces::Traces::otlp(endpoint, Duration::from_millis(config.otlp_batch_delay_ms), tokio::runtime::Handle::current())?,
        None => crate::traces::Traces::off(),
    };
    let telemetry = crate::Telemetry::new(config.metrics_top_tenants, traces);
    // Every tenant in the store is known to the metrics from the start: its series show 0
    // before its first job.
    let mut after = String::new();
    loop {
        let page = store.tenants(&after, 1000).await?;
        for t in &page {
            telemetry.metrics.set_region(&t.id, &t.region);
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after = last.id.clone(),
            _ => break,
        }
    }
    let pool = Pool::new(store.clone(), files.clone(), settings, executor, Arc::clone(&telemetry));
    pool.catalogs().set_storage(config.storage.clone());
    let sizer = Arc::new(SizeRule { min_bytes: config.min_grant, per_source_byte: config.grant_per_source_byte, max_bytes: config.largest_estimate() });
    let estimates = Estimates::load(&store, config.estimator_settings()).await?;
    pool.learn_with(Arc::clone(&estimates));
    // With a Ballista cluster, estimates are not capped at the budget: a job estimated above
    // what the pool may grant runs there.
    let route = config.ballista_url()?.map(|_| Route { budget: config.memory_budget, client_grant: config.min_grant.max(64 << 20) });
    let sizing = Sizing { sizer, deadlines: config.deadlines(), estimates: Some(Arc::clone(&estimates)), catalogs: pool.catalogs(), route };
    let alerting = crate::alerts::Alerting::new(store.clone(), config.alert_settings(address));
    if let Err(e) = telemetry.registry.register(Box::new(alerting.evaluating_gauge())) {
        tracing::warn!(error = %e, "the alert evaluator gauge could not be registered");
    }
    let triage = Arc::new(config.triage_settings(address)?);
    let state = AppState {
        store,
        pool,
        files,
        sizing,
        admin_hash: token_hash(&admin),
        schedules: Arc::new(tokio::sync::Notify::new()),
        estimates,
        alerting,
        triage,
        sessions: crate::api::SessionSettings {
            lifetime: Duration::from_secs_f64(config.ui_session_seconds),
            secure: config.external_url.as_deref().is_some_and(|u| u.to_ascii_lowercase().starts_with("https://")),
        },
    };
    Ok(Assembled { state, telemetry, replica })
}

async fn serve(config: Config, executor: tokio::runtime::Handle, hook: Option<Hook>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener.local_addr().map_err(|e| Error::Config(format!("listener address: {e}")))?;
    let Assembled { state, telemetry, replica } = assemble(&config, executor, &address.to_string()).await?;
    let (store, pool, alerting, sizing) = (state.store.clone(), Arc::clone(&state.pool), Arc::clone(&state.alerting), state.sizing.clone());
    // Alerting listens to job events from before the first job runs; it rebuilds its windows
    // from the failures in the store, so a restart forgets nothing. On PostgreSQL one process
    // at a time evaluates, reading every process's finished jobs from the store.
    let evaluator = tokio::spawn(Arc::clone(&alerting).evaluate(pool.subscribe(), replica.clone()));
    let deliveries = tokio::spawn(Arc::clone(&alerting).deliver());
    let reports = tokio::spawn(crate::triage::run_schedule(store.clone(), Arc::clone(&state.triage), Arc::clone(&alerting)));
    let catch_up = (config.catch_up_seconds * 1e6) as i64;
    // Runs that fell due while the service was down are enqueued (or counted as missed)
    // before it says it is listening.
    let started = crate::schedules::start_unstarted(&store, crate::now_micros()).await?;
    if started > 0 {
        tracing::info!(schedules = started, "schedules stored before they ran: first due times set");
    }
    let caught_up = crate::schedules::tick(&store, &sizing, crate::now_micros(), catch_up).await?;
    if !caught_up.enqueued.is_empty() || caught_up.missed > 0 {
        tracing::info!(enqueued = caught_up.enqueued.len(), missed = caught_up.missed, "schedules caught up at start");
    }
    for job in caught_up.enqueued {
        pool.enqueued(job, None);
    }
    let dispatcher = tokio::spawn(Arc::clone(&pool).dispatch());
    let leases = tokio::spawn(Arc::clone(&pool).keep_leases());
    let refits = tokio::spawn(Arc::clone(&state.estimates).run(store.clone()));
    let schedules = tokio::spawn(crate::schedules::run(store.clone(), sizing.clone(), Arc::clone(&pool), Arc::clone(&state.schedules), catch_up));
    let app = api::router(state.clone(), usize::try_from(config.max_body).unwrap_or(usize::MAX));
    tracing::info!(%address, store = ?store.backend(), workers = config.workers, memory_budget = config.memory_budget, "cohort is serving");
    // The line tests and scripts wait for.
    println!("cohort listening on http://{address}");
    let _ = std::io::stdout().flush();
    if let Some(hook) = hook {
        tokio::spawn(hook(state.clone()));
    }
    axum::serve(listener, app).with_graceful_shutdown(signal()).await.map_err(|e| Error::Internal(format!("server: {e}")))?;
    tracing::info!(grace_seconds = config.shutdown_grace_seconds, "stopping: no new jobs; running jobs get the grace period");
    schedules.abort();
    reports.abort();
    refits.abort();
    pool.shutdown(Duration::from_secs(config.shutdown_grace_seconds)).await;
    dispatcher.abort();
    leases.abort();
    evaluator.abort();
    alerting.release(&replica).await;
    deliveries.abort();
    // The batch exporter sends from a thread of its own, through this runtime: flush it here.
    tokio::task::spawn_blocking(move || telemetry.traces.shutdown()).await.ok();
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the service still runs; it stops when killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
