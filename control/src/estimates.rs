//! The estimator in the service: features before each run, grants from the calibrated bound,
//! refits as runs finish, the model kept in the store.
//!
//! Before a job is queued, [`Estimates::estimate`] reads its features (the segment's plan
//! shape, the sizes of what it reads from the tenant's catalog) and the segment's recent runs
//! from the store, and asks the model. The features and the estimate are stored with the job
//! (`job_estimates`), so each finished run becomes a [`Record`] to learn from: the refit
//! loop refits after `refit_runs` finished runs or every `refit_interval`, stores the new
//! model version and swaps it in. An attempt that ran out of memory is a record too: its
//! grant is a lower bound of the segment's peak, so the next estimate goes up.
//!
//! A rider's estimate is deleted when it commits (it ran nothing). A segment's recent runs are
//! read once and reused by its next submissions until a job of this process settles
//! ([`Estimates::settled`], called before the change is announced) or two seconds pass (other
//! replicas' runs). A model version another replica stored first is taken instead of one's own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cohort_estimator::{Estimate, Estimator, Features, HISTORY_LEN, Model, PastRun, Record};
use cohort_executor::{Catalog, PlanMode, RunOptions, Segment, plan_mode};
use serde::Serialize;
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::store::Store;
use crate::{Result, now_micros};

/// Sources smaller than this run on one partition (small jobs run best that way).
const ONE_PARTITION_BELOW: u64 = 64 << 20;

/// The options a job of `catalog` runs with: partitions by the size of the sources.
pub fn run_options(catalog: &Catalog, as_of: i64) -> RunOptions {
    let mut options = RunOptions::new(as_of);
    let source_bytes: u64 = catalog.objects.iter().map(|o| o.bytes).sum();
    if source_bytes < ONE_PARTITION_BELOW {
        options.target_partitions = 1;
    }
    options
}

/// What is known of a run of `segment` before it starts.
pub fn features(catalog: &Catalog, segment: &Segment, options: &RunOptions) -> Features {
    let shape = segment.shape();
    let read: Vec<&cohort_executor::LoadedObject> = segment.objects_read().into_iter().filter_map(|i| catalog.objects.get(i)).collect();
    let rows = |o: &cohort_executor::LoadedObject| o.rows.unwrap_or(0);
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Features {
        objects: clamp(shape.objects),
        joins: clamp(shape.joins),
        related_predicates: clamp(shape.related_predicates),
        max_hops: clamp(shape.max_hops),
        phases: match plan_mode(segment, options.plan) {
            PlanMode::Phased => clamp(shape.top_level_branches),
            PlanMode::Single => 1,
        },
        partitions: clamp(options.target_partitions),
        source_rows: read.iter().map(|o| rows(o)).sum(),
        source_bytes: read.iter().map(|o| o.bytes).sum(),
        root_rows: catalog.objects.get(segment.root).map_or(0, rows),
        largest_rows: read.iter().map(|o| rows(o)).max().unwrap_or(0),
    }
}

/// How the service uses the estimator.
#[derive(Debug, Clone)]
pub struct EstimatorSettings {
    /// Grant the estimator's bound (false: the size rule grants; features are still
    /// recorded and the model still learns).
    pub enabled: bool,
    /// The estimator's own settings (coverage, floors, fitting).
    pub config: cohort_estimator::Config,
    /// Refit after this many finished attempts…
    pub refit_runs: usize,
    /// …or this often, whichever comes first.
    pub refit_interval: Duration,
}

/// The estimator of a running service.
#[derive(Debug)]
pub struct Estimates {
    settings: EstimatorSettings,
    current: RwLock<Estimator>,
    fitted_at: AtomicI64,
    since_fit: AtomicUsize,
    refit: Notify,
    /// Attempts finished in this process (never reset): what the cached accuracy is keyed by.
    finished_runs: AtomicUsize,
    /// Recent accuracy, with the finished count and time it was computed at.
    accuracy: std::sync::Mutex<Option<(usize, std::time::Instant, Accuracy)>>,
    /// Segments' recent runs as read from the store, with the generation and time they were
    /// read at: submissions of one segment read them once, not each.
    histories: std::sync::Mutex<HashMap<(String, String), CachedHistory>>,
    /// Counts the settling of this process's jobs (a final state or a retry).
    generation: AtomicU64,
    /// Per segment, the count at its last settled job: a history read before it is stale.
    settled: std::sync::Mutex<HashMap<(String, String), u64>>,
}

/// A segment's recent runs, the generation they were read at and when.
type CachedHistory = (u64, std::time::Instant, Arc<Vec<PastRun>>);

/// How long a segment's recent runs are reused (runs of other replicas count after this).
const HISTORY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);
/// Segments whose recent runs are kept before the stale ones are dropped.
const HISTORIES_KEPT: usize = 10_000;

/// Recent accuracy is computed again at least this often (other replicas' runs count too).
const ACCURACY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The estimator's state, for the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EstimatorStatus {
    /// Whether jobs are granted the estimator's bound (else the size rule's grant).
    pub enabled: bool,
    /// The share of runs meant to stay within their grant.
    pub coverage: f64,
    /// The model in use (0: none fitted yet; rules answer).
    pub model_version: u64,
    /// When it was fitted (RFC 3339), if any.
    pub fitted_at: Option<String>,
    /// Finished runs it learned from.
    pub trained_on: usize,
    /// Per regime (`warm`: segments seen before; `cold`: never seen): runs fitted on and
    /// held out, and the bound's margin over the prediction (a factor).
    pub regimes: Vec<RegimeStatus>,
    /// Finished attempts since the last fit.
    pub runs_since_fit: usize,
    /// How the recent estimates did.
    pub recent: Accuracy,
}

/// One regime of the model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegimeStatus {
    /// `warm` or `cold`.
    pub name: String,
    /// Runs fitted on.
    pub fitted_on: usize,
    /// Runs held out to calibrate the bound.
    pub calibrated_on: usize,
    /// True when the margin is the conformal quantile at the coverage; false when there were
    /// too few held-out runs and it is the largest residual plus a safety margin.
    pub calibrated: bool,
    /// The bound's widest margin over its groups: held-out residuals ÷ their predicted spread,
    /// at the coverage.
    pub memory_margin: f64,
}

/// How recent estimates compared with what runs used.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Accuracy {
    /// Finished runs looked at (the most recent ones with an estimate).
    pub runs: usize,
    /// Of them, runs whose first grant was too small (an attempt ran out of memory).
    pub under_granted: usize,
    /// `under_granted / runs`.
    pub under_grant_rate: f64,
    /// Mean of (grant − peak) / grant over the runs whose first grant held.
    pub relative_slack: f64,
    /// Median of |predicted − actual| / actual runtime.
    pub runtime_mdape: f64,
}

/// How many recent runs the accuracy looks at.
const ACCURACY_RUNS: i64 = 1_000;

impl Estimates {
    /// The estimator with the newest model in the store, if any.
    pub async fn load(store: &Store, settings: EstimatorSettings) -> Result<Arc<Estimates>> {
        let estimates = Arc::new(Estimates {
            current: RwLock::new(Estimator::new(settings.config.clone())),
            settings,
            fitted_at: AtomicI64::new(0),
            since_fit: AtomicUsize::new(0),
            refit: Notify::new(),
            finished_runs: AtomicUsize::new(0),
            accuracy: std::sync::Mutex::new(None),
            histories: std::sync::Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            settled: std::sync::Mutex::new(HashMap::new()),
        });
        estimates.reload(store).await?;
        Ok(estimates)
    }

    /// Whether grants come from the estimator.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Takes the newest model in the store if it is newer than the one in use.
    async fn reload(&self, store: &Store) -> Result<()> {
        let Some((version, created_at, text)) = store.latest_estimator_model().await? else { return Ok(()) };
        if self.version() >= u64::try_from(version).unwrap_or(0) {
            return Ok(());
        }
        match serde_json::from_str::<Model>(&text) {
            Ok(model) => {
                write(&self.current).model = Some(model);
                self.fitted_at.store(created_at, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(version, error = %e, "a stored estimator model does not parse; keeping the one in use"),
        }
        Ok(())
    }

    fn version(&self) -> u64 {
        read(&self.current).model.as_ref().map_or(0, |m| m.version)
    }

    /// The estimate for a run with `features`, after the segment's recent runs in the store.
    pub async fn estimate(&self, store: &Store, tenant: &str, segment: &str, features: &Features) -> Result<Estimate> {
        let key = (tenant.to_string(), segment.to_string());
        let generation = self.generation.load(Ordering::SeqCst);
        let settled = lock(&self.settled).get(&key).copied().unwrap_or(0);
        let cached =
            lock(&self.histories).get(&key).filter(|(g, at, _)| *g >= settled && at.elapsed() < HISTORY_MAX_AGE).map(|(_, _, history)| Arc::clone(history));
        let history = match cached {
            Some(history) => history,
            None => {
                let records = store.estimator_records(Some((tenant, segment)), HISTORY_LEN as i64).await?;
                let history: Arc<Vec<PastRun>> = Arc::new(records.iter().filter_map(PastRun::from_record).collect());
                let mut histories = lock(&self.histories);
                if histories.len() >= HISTORIES_KEPT {
                    histories.retain(|_, (_, at, _)| at.elapsed() < HISTORY_MAX_AGE);
                }
                histories.insert(key, (generation, std::time::Instant::now(), Arc::clone(&history)));
                history
            }
        };
        Ok(read(&self.current).estimate(features, &history))
    }

    /// A job of `segment` in this process settled (its final state or a retry is committed):
    /// the segment's recent runs must be read again. Call it before the change is announced,
    /// so that whoever waited for it sees its effect.
    pub fn settled(&self, tenant: &str, segment: &str) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut settled = lock(&self.settled);
        if settled.len() >= HISTORIES_KEPT {
            // Forgetting is safe only for histories read before now: drop those too.
            settled.clear();
            lock(&self.histories).clear();
        }
        settled.insert((tenant.to_string(), segment.to_string()), generation);
    }

    /// Counts a finished attempt; enough of them wake the refit.
    pub fn finished(&self) {
        self.finished_runs.fetch_add(1, Ordering::Relaxed);
        if self.since_fit.fetch_add(1, Ordering::Relaxed) + 1 >= self.settings.refit_runs {
            self.refit.notify_one();
        }
    }

    /// Refits on the recent runs in the store, stores the model as the next version and uses
    /// it. Returns the new version, or `None` when there was nothing new to learn from.
    pub async fn refit(&self, store: &Store) -> Result<Option<u64>> {
        self.reload(store).await?;
        let window = i64::try_from(self.settings.config.window).unwrap_or(i64::MAX);
        let records = store.estimator_records(None, window).await?;
        if records.iter().filter(|r| r.measured()).count() < self.settings.config.min_fit {
            return Ok(None);
        }
        let version = self.version() + 1;
        let config = self.settings.config.clone();
        let model = tokio::task::spawn_blocking(move || cohort_estimator::fit(&records, &config, version))
            .await
            .map_err(|e| crate::Error::Internal(format!("the estimator fit panicked: {e}")))?;
        let text = serde_json::to_string(&model).map_err(|e| crate::Error::Internal(format!("serializing the model: {e}")))?;
        if !store.save_estimator_model(i64::try_from(version).unwrap_or(i64::MAX), model.trained_on as i64, &text).await? {
            // Another replica stored this version first: use the newest stored.
            self.reload(store).await?;
            self.since_fit.store(0, Ordering::Relaxed);
            return Ok(Some(self.version()));
        }
        tracing::info!(version, trained_on = model.trained_on, warm = model.warm.is_some(), cold = model.cold.is_some(), "estimator refitted");
        write(&self.current).model = Some(model);
        self.fitted_at.store(now_micros(), Ordering::Relaxed);
        self.since_fit.store(0, Ordering::Relaxed);
        Ok(Some(version))
    }

    /// Refits when enough runs finished, or on the interval, until the task is dropped.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            tokio::select! {
                _ = self.refit.notified() => {}
                _ = tokio::time::sleep(self.settings.refit_interval) => {}
            }
            if let Err(e) = self.refit(&store).await {
                tracing::warn!(error = %e, "estimator refit failed; trying again later");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// The estimator's state and recent accuracy.
    pub async fn status(&self, store: &Store) -> Result<EstimatorStatus> {
        let recent = self.recent_accuracy(store).await?;
        let (model_version, trained_on, regimes) = {
            let current = read(&self.current);
            match &current.model {
                Some(m) => {
                    let regimes = [("warm", &m.warm), ("cold", &m.cold)]
                        .into_iter()
                        .filter_map(|(name, r)| {
                            r.as_ref().map(|r| RegimeStatus {
                                name: name.into(),
                                fitted_on: r.fitted_on,
                                calibrated_on: r.calibrated_on,
                                calibrated: r.calibrated,
                                memory_margin: r.memory.margins.iter().copied().fold(0.0, f64::max),
                            })
                        })
                        .collect();
                    (m.version, m.trained_on, regimes)
                }
                None => (0, 0, Vec::new()),
            }
        };
        let fitted_at = self.fitted_at.load(Ordering::Relaxed);
        Ok(EstimatorStatus {
            enabled: self.settings.enabled,
            coverage: self.settings.config.coverage,
            model_version,
            fitted_at: (model_version > 0 && fitted_at > 0).then(|| crate::rfc3339(fitted_at)),
            trained_on,
            regimes,
            runs_since_fit: self.since_fit.load(Ordering::Relaxed),
            recent,
        })
    }

    /// The accuracy of the last `ACCURACY_RUNS` runs: read again when a run finished here
    /// since, or when it is older than `ACCURACY_MAX_AGE`, so frequent scrapes of a quiet
    /// service do not each read a thousand records.
    async fn recent_accuracy(&self, store: &Store) -> Result<Accuracy> {
        let generation = self.finished_runs.load(Ordering::Relaxed);
        let cached = self.accuracy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some((g, at, a)) = cached
            && g == generation
            && at.elapsed() < ACCURACY_MAX_AGE
        {
            return Ok(a);
        }
        let recent = accuracy(&store.estimator_records(None, ACCURACY_RUNS).await?);
        *self.accuracy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, std::time::Instant::now(), recent.clone()));
        Ok(recent)
    }
}

/// How the first grants of `records` compared with their runs.
pub fn accuracy(records: &[Record]) -> Accuracy {
    let mut a = Accuracy { runs: records.len(), ..Accuracy::default() };
    let mut slack = Vec::new();
    let mut errors = Vec::new();
    for r in records {
        if let (Some(actual), Some(predicted)) = (r.runtime_seconds, r.estimated_runtime_seconds) {
            errors.push((predicted - actual).abs() / actual.max(1e-6));
        }
        if r.exhausted_bytes.is_some() {
            a.under_granted += 1;
        } else if let (Some(peak), Some(grant)) = (r.peak_bytes, r.granted_bytes.filter(|g| *g > 0)) {
            slack.push((grant as f64 - peak as f64) / grant as f64);
        }
    }
    if a.runs > 0 {
        a.under_grant_rate = a.under_granted as f64 / a.runs as f64;
    }
    if !slack.is_empty() {
        a.relative_slack = slack.iter().sum::<f64>() / slack.len() as f64;
    }
    if !errors.is_empty() {
        errors.sort_by(f64::total_cmp);
        a.runtime_mdape = errors[errors.len() / 2];
    }
    a
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
