//! Running one segment under a memory pool of a given size, in one plan or in phases, and
//! reporting what it cost.
//!
//! Every run has its own `SessionContext` and memory pool ([`session`]): a `GreedyMemoryPool` of
//! the limit behind a `TrackConsumersPool` (so an exhausted pool names its largest consumers),
//! wrapped in [`PeakTrackingPool`], a `MemoryPool` that records the high-water mark the report
//! gives and the estimator learns from. What the run holds outside operators is reserved in the
//! same pool: the tables run first (phase sets, key sets), the final batches and the member
//! strings, so the limit and the reported peak cover everything. The session prefers hash joins
//! unless [`JoinStrategy::SortMerge`] is asked for (slower, but its sorts spill), skips partial
//! aggregation unless it folds its first rows fifty to one (segments group by keys of people
//! and accounts), and keeps a sixteenth of the limit (64 KiB to 10 MiB) for merging spilled
//! sorts.
//!
//! [`PlanChoice::Auto`], the default, runs in phases when the filter is an `and` or `or` with
//! more than eight `related` predicates. In single-plan mode the parts worth running first (see
//! `compile.rs`) are looked for only when the model's objects hold at least
//! [`RunOptions::key_sets_first_min_rows`] rows in all; each part found is executed, then the
//! segment compiled again with its rows.
//!
//! With [`RunOptions::ballista`], [`session`] upgrades the session for Ballista, Cohort's
//! settings over Ballista's defaults, and the costs of each distributed job are read from the
//! scheduler's job metrics instead of the local plan's (the reported peak is then the larger of
//! this process's pool and the cluster's largest stage).
//!
//! [`explain`] prints the resolved paths, the plan mode and the plans; [`run_analyzed`]
//! (`cohort segment explain --analyze`) runs them and returns each executed plan with its
//! operators' metrics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ident;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use cohort_common::units::human_bytes;

use crate::catalog::{Catalog, LoadedObject};
use crate::compile::Compiler;
use crate::distributed::{self, BallistaUrl};
use crate::error::{Error, Result};
use crate::machine::cores;
use crate::model::{FieldType, SourceFormat};
use crate::segment::{Node, PlanShape, Segment};

/// How the filter is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// One plan for the whole segment.
    Single,
    /// Each top-level branch planned and executed on its own, then combined.
    Phased,
}

impl fmt::Display for PlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanMode::Single => "single",
            PlanMode::Phased => "phased",
        })
    }
}

/// Which plan mode to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChoice {
    /// Always one plan.
    Single,
    /// Always phases (one phase when the root is not `and`/`or`).
    Phased,
    /// Phases when the segment has more than this many `related` predicates.
    Auto {
        /// The most related predicates a single plan takes.
        max_related_single: usize,
    },
}

impl Default for PlanChoice {
    fn default() -> Self {
        PlanChoice::Auto { max_related_single: 8 }
    }
}

/// How joins are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinStrategy {
    /// Hash joins: fastest; their build side cannot spill, so a limit they exceed fails the run.
    #[default]
    Hash,
    /// Sort-merge joins: slower, but their sorts spill to disk, so they hold to a memory limit.
    SortMerge,
}

/// Everything a run needs besides the model and segment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The instant the segment is evaluated for, in microseconds since the epoch (UTC).
    pub as_of_micros: i64,
    /// The memory pool's size; `None` for no limit.
    pub memory_limit_bytes: Option<usize>,
    /// Single plan, phases, or decide by complexity.
    pub plan: PlanChoice,
    /// Hash or sort-merge joins.
    pub join_strategy: JoinStrategy,
    /// Parallelism inside the run (DataFusion's target partitions).
    pub target_partitions: usize,
    /// A key set of an aggregate condition in the segment's own filter (and the root rows
    /// before such a condition) runs first when its plan reads at least this many rows (CSV:
    /// bytes / 100); below, it stays in the main plan.
    pub key_sets_first_min_rows: u64,
    /// With parts run first: the root rows that something is connected to, known before an
    /// aggregate condition of the segment's own filter, cut the aggregate's input to their
    /// start values when they are at most this share of the root's rows (0: never, 1: always).
    pub cut_share: f64,
    /// Run the plans on this Ballista cluster instead of in this process (`None`: embedded).
    /// The memory limit then bounds only what this process holds (the rows read back and the
    /// parts run first); the executors' pools bound the rest.
    pub ballista: Option<BallistaUrl>,
}

/// The default [`RunOptions::key_sets_first_min_rows`]: on smaller inputs a second plan
/// costs more than a hash table built on the wrong side.
pub const KEY_SETS_FIRST_MIN_ROWS: u64 = 1_000_000;

impl RunOptions {
    /// Options for `as_of` with no memory limit and the default plan choice.
    pub fn new(as_of_micros: i64) -> Self {
        RunOptions {
            as_of_micros,
            memory_limit_bytes: None,
            plan: PlanChoice::default(),
            join_strategy: JoinStrategy::default(),
            target_partitions: cores(),
            key_sets_first_min_rows: KEY_SETS_FIRST_MIN_ROWS,
            cut_share: CUT_SHARE,
            ballista: None,
        }
    }
}

/// What one phase of a phased run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    /// The branch's place in the segment (`filter.and[2]`).
    pub place: String,
    /// Rows in the branch's materialized set.
    pub rows: usize,
    /// When the phase started, from the start of the run.
    pub started: Duration,
    /// Time the phase took.
    pub elapsed: Duration,
    /// Rows its scans read.
    pub rows_scanned: u64,
}

/// What a run produced and what it cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The members' keys in their text form, sorted by bytes.
    pub members: Vec<String>,
    /// The type of the root's primary key.
    pub key_type: FieldType,
    /// Rows read by all scans.
    pub rows_scanned: u64,
    /// Bytes read by all scans (Parquet: bytes fetched; CSV: file sizes).
    pub bytes_scanned: u64,
    /// The memory pool's high-water mark.
    pub peak_memory_bytes: usize,
    /// The pool size the run had, if limited.
    pub memory_limit_bytes: Option<usize>,
    /// Wall time of the run (planning and execution).
    pub elapsed: Duration,
    /// When planning ended and the final plan started executing, from the start of the run
    /// (phased runs execute their phases while planning).
    pub planned: Duration,
    /// Times an operator spilled to disk.
    pub spill_count: usize,
    /// Bytes spilled to disk.
    pub spilled_bytes: usize,
    /// Single or phased.
    pub plan_mode: PlanMode,
    /// The plan's shape.
    pub shape: PlanShape,
    /// Per phase, for phased runs.
    pub phases: Vec<PhaseReport>,
    /// Where it ran when it ran on a Ballista cluster (`None`: embedded).
    pub ballista: Option<BallistaRun>,
    /// The snapshot of each table source read (Iceberg), by object name.
    pub snapshots: Vec<(String, crate::catalog::SourceSnapshot)>,
}

/// A run on a Ballista cluster: where, and the scheduler's ids of its jobs (one per plan run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BallistaRun {
    /// The scheduler's URL.
    pub scheduler: String,
    /// The jobs, in the order they ran.
    pub jobs: Vec<String>,
}

impl RunReport {
    /// The one-line summary `cohort segment run` prints to standard error.
    pub fn summary(&self) -> String {
        format!(
            "{} members; {} rows scanned ({}); peak memory {}{}; {:.3}s; plan {}{}{}{}",
            self.members.len(),
            self.rows_scanned,
            human_bytes(self.bytes_scanned),
            human_bytes(self.peak_memory_bytes as u64),
            self.memory_limit_bytes.map(|l| format!(" of {}", human_bytes(l as u64))).unwrap_or_default(),
            self.elapsed.as_secs_f64(),
            self.plan_mode,
            if self.phases.is_empty() { String::new() } else { format!(" ({} phases)", self.phases.len()) },
            if self.spill_count > 0 { format!("; {} spills ({})", self.spill_count, human_bytes(self.spilled_bytes as u64)) } else { String::new() },
            match &self.ballista {
                Some(b) => format!("; on Ballista {} ({} jobs)", b.scheduler, b.jobs.len()),
                None => String::new(),
            },
        )
    }
}

/// A memory pool that remembers its high-water mark.
#[derive(Debug)]
pub struct PeakTrackingPool {
    inner: Arc<dyn MemoryPool>,
    peak: AtomicUsize,
}

impl PeakTrackingPool {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        PeakTrackingPool { inner, peak: AtomicUsize::new(0) }
    }

    /// The most memory reserved at any one time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn note(&self) {
        self.peak.fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }
}

impl fmt::Display for PeakTrackingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeakTrackingPool({})", self.inner)
    }
}

impl MemoryPool for PeakTrackingPool {
    fn name(&self) -> &str {
        "peak_tracking"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.note();
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> datafusion::error::Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.note();
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// The default [`RunOptions::cut_share`]: probing the cut costs about what aggregating the
/// rows it removes does when a quarter of the start values remain.
pub const CUT_SHARE: f64 = 0.25;

/// A session for one run: its own memory pool of the given size.
pub fn session(options: &RunOptions) -> Result<(SessionContext, Arc<PeakTrackingPool>)> {
    let inner: Arc<dyn MemoryPool> = match options.memory_limit_bytes {
        Some(limit) => {
            Arc::new(TrackConsumersPool::new(GreedyMemoryPool::new(limit), std::num::NonZeroUsize::new(5).ok_or_else(|| Error::Internal("zero".into()))?))
        }
        None => Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default()),
    };
    let pool = Arc::new(PeakTrackingPool::new(inner));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::clone(&pool) as Arc<dyn MemoryPool>)
        .build_arc()
        .map_err(|e| Error::Internal(format!("runtime: {e}")))?;
    let mut config = SessionConfig::new().with_target_partitions(options.target_partitions.max(1)).with_information_schema(false);
    config.options_mut().optimizer.prefer_hash_join = options.join_strategy == JoinStrategy::Hash;
    // Segments group by keys of people and accounts: nearly as many groups as rows, so a
    // partial aggregation before the repartition rarely shrinks its input. Skip it unless it
    // folds its first rows at least fifty to one.
    config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.02;
    // Sorts that spill need room to merge; keep a share of the pool for it.
    config.options_mut().execution.sort_spill_reservation_bytes = options.memory_limit_bytes.map(|l| (l / 16).clamp(64 << 10, 10 << 20)).unwrap_or(10 << 20);
    let Some(url) = &options.ballista else {
        return Ok((SessionContext::new_with_config_rt(config, runtime), pool));
    };
    // Ballista's defaults first, Cohort's settings over them.
    let mut upgraded =
        distributed::session_config(SessionConfig::new()).with_target_partitions(options.target_partitions.max(1)).with_information_schema(false);
    {
        let (theirs, ours) = (upgraded.options_mut(), config.options());
        theirs.optimizer.prefer_hash_join = ours.optimizer.prefer_hash_join;
        theirs.execution.skip_partial_aggregation_probe_ratio_threshold = ours.execution.skip_partial_aggregation_probe_ratio_threshold;
        theirs.execution.sort_spill_reservation_bytes = ours.execution.sort_spill_reservation_bytes;
    }
    let state = SessionContext::new_with_config_rt(upgraded, runtime).state();
    let state = ballista_core::extension::SessionStateExt::upgrade_for_ballista(state, url.grpc())
        .map_err(|e| Error::Execution(format!("Ballista session for {url}: {e}")))?;
    Ok((SessionContext::new_with_state(state), pool))
}

/// Decides the plan mode for `segment` under `choice`.
pub fn plan_mode(segment: &Segment, choice: PlanChoice) -> PlanMode {
    match choice {
        PlanChoice::Single => PlanMode::Single,
        PlanChoice::Phased => PlanMode::Phased,
        PlanChoice::Auto { max_related_single } => {
            let shape = segment.shape();
            let branches = matches!(segment.filter, Node::And(_) | Node::Or(_));
            if branches && shape.related_predicates > max_related_single { PlanMode::Phased } else { PlanMode::Single }
        }
    }
}

/// Runs `segment` over `catalog` and reports members and costs.
pub async fn run_segment(catalog: &Catalog, segment: &Segment, options: &RunOptions) -> Result<RunReport> {
    run_observed(catalog, segment, options, &mut |_, _| {}).await
}

/// Runs `segment` like [`run_segment`] and returns, with the report, each executed physical
/// plan (each phase, then the final one) annotated with its operators' metrics: rows,
/// time, memory, spills. `cohort segment explain --analyze` prints it.
pub async fn run_analyzed(catalog: &Catalog, segment: &Segment, options: &RunOptions) -> Result<(RunReport, String)> {
    use std::fmt::Write;
    let mut text = String::new();
    let report = run_observed(catalog, segment, options, &mut |title, plan| {
        let _ = writeln!(text, "== {title}: executed ==\n{}", datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan).indent(true));
    })
    .await?;
    Ok((report, text))
}

/// Runs `segment`, handing every executed physical plan to `observe` with its title.
async fn run_observed(
    catalog: &Catalog,
    segment: &Segment,
    options: &RunOptions,
    observe: &mut (dyn FnMut(&str, &dyn ExecutionPlan) + Send),
) -> Result<RunReport> {
    let started = Instant::now();
    let (ctx, pool) = session(options)?;
    catalog.register_stores(&ctx)?;
    let tables: Vec<usize> = (0..catalog.objects.len()).filter(|&i| !catalog.objects[i].data_files.is_empty()).collect();
    catalog.check_table_files(&ctx, &tables).await?;
    let limit = options.memory_limit_bytes.unwrap_or(usize::MAX);
    let mode = plan_mode(segment, options.plan);
    let mut totals = PlanCosts::default();
    let mut phases = Vec::new();
    let mut compiler = Compiler::new(catalog, &ctx, options.as_of_micros);
    let held = MemoryConsumer::new("parts run first").register(&ctx.runtime_env().memory_pool);

    let members_df = match (mode, &segment.filter) {
        (PlanMode::Phased, Node::And(branches) | Node::Or(branches)) => {
            let is_and = matches!(segment.filter, Node::And(_));
            let signature = compiler.signature(segment);
            let mut combined: Option<DataFrame> = None;
            for (i, branch) in branches.iter().enumerate() {
                let phase_started = Instant::now();
                let phase_df = compiler.phase(segment.root, branch, &signature)?;
                let (batches, costs) = execute(&ctx, phase_df, limit, &format!("phase {}", i + 1), observe, options.ballista.as_ref()).await?;
                let rows = batches.iter().map(RecordBatch::num_rows).sum();
                phases.push(PhaseReport {
                    place: format!("filter.{}[{i}]", if is_and { "and" } else { "or" }),
                    started: phase_started.duration_since(started),
                    rows,
                    elapsed: phase_started.elapsed(),
                    rows_scanned: costs.rows_scanned,
                });
                totals.add(&costs);
                // The phase's rows stay in memory until the run ends: held in the run's pool.
                let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
                held.try_grow(bytes).map_err(|e| Error::from_datafusion(e, limit))?;
                let schema = batches.first().map(|b| b.schema()).ok_or(()).or_else(|_| phase_schema(&ctx, &mut compiler, segment, branch, &signature))?;
                let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Internal(format!("phase table: {e}")))?;
                let set = ctx.read_table(Arc::new(table)).map_err(|e| Error::Internal(format!("phase table: {e}")))?;
                combined = Some(match combined {
                    None => set,
                    Some(acc) if is_and => acc.intersect_distinct(set).map_err(internal)?,
                    Some(acc) => acc.union_distinct(set).map_err(internal)?,
                });
            }
            let combined = combined.ok_or_else(|| Error::Internal("a phased plan with no branches".into()))?;
            let pk = &catalog.objects[segment.root].primary_key;
            combined
                .select(vec![ident(pk).alias("__cohort_member")])
                .and_then(|d| d.filter(ident("__cohort_member").is_not_null()))
                .and_then(DataFrame::distinct)
                .map_err(internal)?
        }
        _ => {
            // Key sets of aggregate conditions, and the rows before them, run first, so the
            // main plan joins them at their real size. Their rows stay in memory until the run
            // ends, held in the run's pool like any operator's.
            // Nothing can read the threshold's rows when the whole model holds fewer: the
            // search (another compilation per part) is skipped for small tenants.
            let model_rows: u64 = catalog.objects.iter().map(LoadedObject::rows_or_estimate).sum();
            if model_rows >= options.key_sets_first_min_rows {
                // Each part found is run, then the segment compiled again with its rows; a
                // segment holds finitely many places, the bound only guards against a loop.
                let most = 2 * segment.shape().related_predicates + 2;
                let root_rows = catalog.objects[segment.root].rows_or_estimate();
                for _ in 0..most {
                    let Some(first) = compiler.next_to_run_first(segment, options.key_sets_first_min_rows)? else { break };
                    let started_first = Instant::now();
                    let title = format!("{} ({})", first.place, first.kind.describe());
                    let schema = Arc::new(first.plan.schema().as_arrow().clone());
                    let (batches, costs) = execute(&ctx, first.plan, limit, &title, observe, options.ballista.as_ref()).await?;
                    totals.add(&costs);
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
                    held.try_grow(bytes).map_err(|e| Error::from_datafusion(e, limit))?;
                    phases.push(PhaseReport {
                        place: title,
                        rows,
                        started: started_first.duration_since(started),
                        elapsed: started_first.elapsed(),
                        rows_scanned: costs.rows_scanned,
                    });
                    // Cutting an aggregate's input to the start values of the rows before it
                    // pays when they are few next to the root's rows.
                    let cut = first.cut.filter(|_| rows as f64 <= options.cut_share * root_rows as f64);
                    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Internal(format!("table of {}: {e}", first.place)))?;
                    compiler.use_run_first(first.place, first.kind, ctx.read_table(Arc::new(table)).map_err(internal)?, cut)?;
                }
            }
            compiler.members(segment)?
        }
    };
    let planned = started.elapsed();
    let (batches, costs) = execute(&ctx, members_df, limit, "members", observe, options.ballista.as_ref()).await?;
    totals.add(&costs);
    for object in &compiler.scans {
        let o = &catalog.objects[*object];
        if o.format == SourceFormat::Csv {
            totals.bytes_scanned += o.bytes;
        }
    }
    let root = &catalog.objects[segment.root];
    let key_type = root.field(&root.primary_key).map(|f| f.field_type).ok_or_else(|| Error::Internal("root primary key vanished".into()))?;
    // The members' batches, then their strings, are held in the pool too, so the limit and
    // the reported peak cover everything the run holds.
    let final_bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    held.try_grow(final_bytes).map_err(|e| Error::from_datafusion(e, limit))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let text: usize = batches.iter().map(|b| b.column(0).get_buffer_memory_size()).sum();
    held.try_grow(rows * std::mem::size_of::<String>() + text).map_err(|e| Error::from_datafusion(e, limit))?;
    let members = member_strings(&batches)?;
    drop(batches);
    held.shrink(final_bytes.min(held.size()));
    Ok(RunReport {
        members,
        key_type,
        rows_scanned: totals.rows_scanned,
        bytes_scanned: totals.bytes_scanned,
        peak_memory_bytes: pool.peak().max(totals.cluster_peak_bytes),
        memory_limit_bytes: options.memory_limit_bytes,
        ballista: options.ballista.as_ref().map(|url| BallistaRun { scheduler: url.to_string(), jobs: std::mem::take(&mut totals.cluster_jobs) }),
        elapsed: started.elapsed(),
        planned,
        spill_count: totals.spill_count,
        spilled_bytes: totals.spilled_bytes,
        plan_mode: mode,
        shape: segment.shape(),
        phases,
        snapshots: catalog.snapshots(),
    })
}

/// The schema of a phase that produced no batches (needed to build its empty table).
fn phase_schema(
    _ctx: &SessionContext,
    compiler: &mut Compiler<'_>,
    segment: &Segment,
    branch: &Node,
    signature: &[String],
) -> Result<datafusion::arrow::datatypes::SchemaRef> {
    let df = compiler.phase(segment.root, branch, signature)?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

fn internal(e: datafusion::error::DataFusionError) -> Error {
    Error::Internal(format!("building the plan: {e}"))
}

#[derive(Debug, Default)]
struct PlanCosts {
    rows_scanned: u64,
    bytes_scanned: u64,
    spill_count: usize,
    spilled_bytes: usize,
    /// On Ballista: the largest stage memory of the jobs.
    cluster_peak_bytes: usize,
    /// On Ballista: the scheduler's ids of the jobs.
    cluster_jobs: Vec<String>,
}

impl PlanCosts {
    fn add(&mut self, other: &PlanCosts) {
        self.rows_scanned += other.rows_scanned;
        self.bytes_scanned += other.bytes_scanned;
        self.spill_count += other.spill_count;
        self.spilled_bytes += other.spilled_bytes;
        self.cluster_peak_bytes = self.cluster_peak_bytes.max(other.cluster_peak_bytes);
        self.cluster_jobs.extend(other.cluster_jobs.iter().cloned());
    }
}

/// Plans and executes `df`, then reads the costs off the physical plan's metrics (on a
/// Ballista cluster: off the scheduler's metrics of the job).
async fn execute(
    ctx: &SessionContext,
    df: DataFrame,
    limit: usize,
    title: &str,
    observe: &mut (dyn FnMut(&str, &dyn ExecutionPlan) + Send),
    cluster: Option<&BallistaUrl>,
) -> Result<(Vec<RecordBatch>, PlanCosts)> {
    let fail = |e| match cluster {
        Some(_) => distributed::classify(e, limit),
        None => Error::from_datafusion(e, limit),
    };
    let plan = df.create_physical_plan().await.map_err(fail)?;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.map_err(fail)?;
    observe(title, plan.as_ref());
    let mut costs = PlanCosts::default();
    match cluster {
        None => gather_costs(plan.as_ref(), &mut costs),
        Some(url) => {
            let mut jobs = Vec::new();
            distributed_jobs(plan.as_ref(), &mut jobs);
            for job in jobs {
                let job_costs = distributed::job_costs(url, &job).await?;
                costs.rows_scanned += job_costs.rows_scanned;
                costs.bytes_scanned += job_costs.bytes_scanned;
                costs.spill_count += job_costs.spill_count;
                costs.spilled_bytes += job_costs.spilled_bytes;
                costs.cluster_peak_bytes = costs.cluster_peak_bytes.max(job_costs.peak_memory_bytes);
                costs.cluster_jobs.push(job);
            }
        }
    }
    Ok((batches, costs))
}

/// The Ballista jobs a physical plan ran.
fn distributed_jobs(plan: &dyn ExecutionPlan, jobs: &mut Vec<String>) {
    use ballista_core::execution_plans::DistributedQueryExec;
    let any: &dyn std::any::Any = plan;
    if let Some(exec) = any.downcast_ref::<DistributedQueryExec<datafusion_proto::protobuf::LogicalPlanNode>>()
        && let Some(job) = exec.job_id()
    {
        jobs.push(job.to_string());
    }
    for child in plan.children() {
        distributed_jobs(child.as_ref(), jobs);
    }
}

fn gather_costs(plan: &dyn ExecutionPlan, costs: &mut PlanCosts) {
    if let Some(metrics) = plan.metrics() {
        costs.spill_count += metrics.spill_count().unwrap_or(0);
        costs.spilled_bytes += metrics.spilled_bytes().unwrap_or(0);
        if plan.children().is_empty() {
            costs.rows_scanned += metrics.output_rows().unwrap_or(0) as u64;
            costs.bytes_scanned += metrics.sum_by_name("bytes_scanned").map(|v| v.as_usize() as u64).unwrap_or(0);
        }
    }
    for child in plan.children() {
        gather_costs(child.as_ref(), costs);
    }
}

/// The members' text forms, sorted by their bytes.
fn member_strings(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let mut members = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        let column = batch.column(0);
        match column.data_type() {
            DataType::Int64 => {
                let values = column.as_primitive::<Int64Type>();
                members.extend(values.iter().flatten().map(|v| v.to_string()));
            }
            DataType::Utf8 => members.extend(column.as_string::<i32>().iter().flatten().map(str::to_string)),
            DataType::LargeUtf8 => members.extend(column.as_string::<i64>().iter().flatten().map(str::to_string)),
            DataType::Utf8View => members.extend(column.as_string_view().iter().flatten().map(str::to_string)),
            other => {
                let cast =
                    datafusion::arrow::compute::cast(column, &DataType::Utf8).map_err(|e| Error::Internal(format!("member keys of type {other}: {e}")))?;
                members.extend(cast.as_string::<i32>().iter().flatten().map(str::to_string));
            }
        }
        debug_assert_eq!(column.null_count(), 0);
    }
    members.sort_unstable();
    Ok(members)
}

/// Builds the segment's DataFusion logical plans (one, or one per phase) without running
/// them; returns them unoptimized, as the compiler made them.
pub fn compile_plans(catalog: &Catalog, segment: &Segment, options: &RunOptions) -> Result<Vec<datafusion::logical_expr::LogicalPlan>> {
    let (ctx, _) = session(options)?;
    catalog.register_stores(&ctx)?;
    let mut compiler = Compiler::new(catalog, &ctx, options.as_of_micros);
    match (plan_mode(segment, options.plan), &segment.filter) {
        (PlanMode::Phased, Node::And(branches) | Node::Or(branches)) => {
            let signature = compiler.signature(segment);
            branches.iter().map(|b| compiler.phase(segment.root, b, &signature).map(DataFrame::into_unoptimized_plan)).collect()
        }
        _ => Ok(vec![compiler.members(segment)?.into_unoptimized_plan()]),
    }
}

/// The text `cohort segment explain` prints: resolved paths, plan mode and DataFusion plans.
pub async fn explain(catalog: &Catalog, segment: &Segment, options: &RunOptions) -> Result<String> {
    use std::fmt::Write;
    let (ctx, _) = session(options)?;
    catalog.register_stores(&ctx)?;
    let mode = plan_mode(segment, options.plan);
    let mut out = String::new();
    let shape = segment.shape();
    let _ = writeln!(out, "segment {:?} over {:?}", segment.name, catalog.objects[segment.root].name);
    let _ = writeln!(
        out,
        "shape: {} objects, {} joins, {} related predicates, max {} hops, depth {}",
        shape.objects, shape.joins, shape.related_predicates, shape.max_hops, shape.depth
    );
    let _ = writeln!(out, "plan mode: {mode}");
    let _ = writeln!(out, "\nresolved paths:");
    let mut any = false;
    fn paths(catalog: &Catalog, node: &Node, out: &mut String, any: &mut bool) {
        match node {
            Node::Leaf(_) => {}
            Node::And(c) | Node::Or(c) => c.iter().for_each(|n| paths(catalog, n, out, any)),
            Node::Not(n) => paths(catalog, n, out, any),
            Node::Related(r) => {
                *any = true;
                let mut line = format!("  {}: {}", r.place, catalog.objects[r.path[0].from_object].name);
                for hop in &r.path {
                    let from = &catalog.objects[hop.from_object].name;
                    let to = &catalog.objects[hop.to_object].name;
                    line.push_str(&format!(" -[{}: {from}.{} = {to}.{}]-> {to}", hop.relationship, hop.from_field, hop.to_field));
                }
                let _ = writeln!(out, "{line}");
                if let Some(w) = &r.where_ {
                    paths(catalog, w, out, any);
                }
            }
        }
    }
    paths(catalog, &segment.filter, &mut out, &mut any);
    if !any {
        let _ = writeln!(out, "  (none)");
    }
    let mut compiler = Compiler::new(catalog, &ctx, options.as_of_micros);
    let mut plans: Vec<(String, DataFrame)> = Vec::new();
    match (mode, &segment.filter) {
        (PlanMode::Phased, Node::And(branches) | Node::Or(branches)) => {
            let signature = compiler.signature(segment);
            let kind = if matches!(segment.filter, Node::And(_)) { "and" } else { "or" };
            for (i, b) in branches.iter().enumerate() {
                plans.push((format!("phase {} (filter.{kind}[{i}])", i + 1), compiler.phase(segment.root, b, &signature)?));
            }
            let _ = writeln!(out, "\nphases are combined by {} of their (key, fields) sets", if kind == "and" { "intersection" } else { "union" });
        }
        _ => plans.push(("plan".to_string(), compiler.members(segment)?)),
    }
    for (title, df) in plans {
        let logical = df.clone().into_optimized_plan().map_err(internal)?;
        let physical = df.create_physical_plan().await.map_err(internal)?;
        let _ = writeln!(out, "\n== {title}: logical ==\n{}", logical.display_indent());
        let _ = writeln!(out, "== {title}: physical ==\n{}", datafusion::physical_plan::displayable(physical.as_ref()).indent(true));
    }
    Ok(out)
}
