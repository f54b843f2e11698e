//! `cohort`: the command line of Cohort.
//!
//! The commands: `serve` (settings from defaults, then `--config` TOML, then `COHORT_*`
//! variables, then the flags; the service is `cohort_control::server::run`), `segment run |
//! validate | explain` (here), `datagen` (`datagen/`), `estimator eval | trace`
//! (`estimator.rs`), `alerts replay` (`alerts.rs`), `triage` (`triage.rs`), `simulate`
//! (`simulate.rs`) and `ballista scheduler | executor | local` (`ballista.rs`). Errors are
//! printed with their chain. The exit status is an executor error's own (2 an invalid model or
//! segment, or a schema mismatch; 3 memory; 1 anything else), 2 for input `alerts replay`
//! cannot use, and 1 for any other error.

mod alerts;
mod ballista;
mod demo;
mod estimator;
mod simulate;
mod store_args;
mod triage;

// DataFusion allocates and frees many small buffers on many threads; glibc's allocator spent
// a fifth of the service's CPU in malloc/free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cohort_datagen as datagen;
use cohort_executor::{Catalog, FieldType, JoinStrategy, Model, PlanChoice, RunOptions, Segment, explain, run_segment};
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

#[derive(Debug, Parser)]
#[command(
    name = "cohort",
    version,
    about = "Cohort: audience segmentation for many tenants, with an embedded executor.",
    long_about = "Cohort evaluates tenants' audience segments over their own data models.\n\n\
                  Start with `cohort datagen --profile retail --scale 10000 --out /tmp/retail` and\n\
                  `cohort segment run --model /tmp/retail/model.json --segment /tmp/retail/segments/<name>.json`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run, check or explain a segment over a data model.
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Write a synthetic tenant: Parquet data, a model.json and a segments/ folder.
    Datagen(datagen::DatagenArgs),
    /// Evaluate the job-size estimator on a trace of runs, or write a trace from a store.
    #[command(subcommand)]
    Estimator(estimator::EstimatorCommand),
    /// Replay job outcomes through the failure-alert rule.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Print the failure triage report of a window: failed attempts grouped by signature,
    /// classified, with what to do; new signatures first. Reads the service's store.
    Triage(triage::TriageArgs),
    /// Simulate a month of the service on a virtual clock: the real scheduling core, retry
    /// policy, estimator and alert rule over a simulated workload and executor, with faults
    /// injected. Reports the success rate, queue waits, memory granted against used and the
    /// alerts fired, to size the pool and compare policies.
    Simulate(simulate::SimulateArgs),
    /// Run the processes of an Apache DataFusion Ballista cluster for Cohort's jobs: a
    /// scheduler, executors, or both in one process on loopback ports.
    #[command(subcommand)]
    Ballista(ballista::BallistaCommand),
    /// Run the control plane: the HTTP API, the store and the executor pool.
    ///
    /// Settings come from defaults, then --config FILE (TOML), then COHORT_* variables, then
    /// these flags. Stops on SIGTERM or SIGINT: running jobs get the grace period, the rest are
    /// queued again for the next start.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings (keys as in cohort.example.toml).
    #[arg(long, value_name = "FILE", env = "COHORT_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The folder for the SQLite store and the memberships.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The store: sqlite://PATH or postgres://USER@HOST:PORT/DB (default: SQLite in --data-dir).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Executor worker slots (default: the number of cores).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Memory the pool may grant to running jobs in all, e.g. 8GiB (default: half the machine's).
    #[arg(long, value_name = "SIZE")]
    memory_budget: Option<String>,
    /// Logs as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Also create demo regions and tenants (made with datagen) and keep runs flowing.
    #[arg(long)]
    demo: bool,
    /// With --demo: how many tenants.
    #[arg(long, default_value_t = 24, value_name = "N")]
    demo_tenants: usize,
}

#[derive(Debug, Subcommand)]
enum SegmentCommand {
    /// Evaluate a segment and print its members (one key per line, sorted by bytes).
    ///
    /// Exit status: 0 done; 2 the model or segment is invalid; 3 the memory limit was not
    /// enough; 1 anything else (for example unreadable data).
    Run(RunArgs),
    /// Check a model, and a segment against it, without reading any rows.
    Validate(ValidateArgs),
    /// Print the resolved relationship paths, the plan mode and the DataFusion plans.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Also run the segment and print each executed plan with its operators' metrics
    /// (output rows, time, memory, spills), then the run's summary.
    #[arg(long)]
    analyze: bool,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The data model (JSON); relative source paths are relative to its folder.
    #[arg(long)]
    model: PathBuf,
    /// A segment (JSON) to check against the model.
    #[arg(long)]
    segment: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanArg {
    /// Phases when the segment has more related predicates than --phase-threshold.
    Auto,
    /// Always one plan.
    Single,
    /// Always one phase per top-level branch.
    Phased,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum JoinArg {
    /// Hash joins: fastest; a build side larger than the limit fails the run (exit 3).
    Hash,
    /// Sort-merge joins: slower, but their sorts spill to disk to stay under the limit.
    SortMerge,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The data model (JSON); relative source paths are relative to its folder.
    #[arg(long)]
    model: PathBuf,
    /// The segment (JSON).
    #[arg(long)]
    segment: PathBuf,
    /// The instant to evaluate for (RFC 3339); defaults to now.
    #[arg(long, value_name = "RFC3339")]
    as_of: Option<String>,
    /// The memory pool's size, e.g. 512MiB, 2GiB, 100MB; unlimited when absent.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Write the members to this file (.parquet or .csv, one column `key`) instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Plan the whole filter at once, in phases, or decide by its complexity.
    #[arg(long, value_enum, default_value_t = PlanArg::Auto)]
    plan: PlanArg,
    /// With --plan auto: the most related predicates planned in a single plan.
    #[arg(long, default_value_t = 8, value_name = "N")]
    phase_threshold: usize,
    /// Join algorithm.
    #[arg(long, value_enum, default_value_t = JoinArg::Hash)]
    join: JoinArg,
    /// Threads inside the run (defaults to the number of cores).
    #[arg(long, value_name = "N")]
    partitions: Option<usize>,
    /// Also write the run's report (costs, plan shape, phases) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Run the plans on this Apache DataFusion Ballista scheduler (df://HOST:PORT, started
    /// with `cohort ballista`) instead of in this process.
    #[arg(long, value_name = "URL", value_parser = cohort_executor::BallistaUrl::parse)]
    ballista: Option<cohort_executor::BallistaUrl>,
}

/// Parses a size such as `512MiB`, `2GiB`, `100MB`, `64k` or a plain byte count.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes = cohort_control::config::parse_bytes(text)?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} is larger than this machine can address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = cli.command {
        return match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e.downcast_ref::<cohort_executor::Error>() {
                Some(x) => x.exit_code(),
                None if e.is::<alerts::BadInput>() => 2,
                None => 1,
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Segment(SegmentCommand::Run(args)) => segment_run(args).await,
        Command::Segment(SegmentCommand::Validate(args)) => segment_validate(args).await,
        Command::Segment(SegmentCommand::Explain(args)) => segment_explain(args).await,
        Command::Datagen(args) => datagen::run(args),
        Command::Estimator(command) => estimator::run(command).await,
        Command::Alerts(command) => alerts::run(command),
        Command::Triage(args) => triage::run(args).await,
        Command::Simulate(args) => simulate::run(args),
        Command::Ballista(command) => ballista::run(command).await,
        Command::Serve(_) => anyhow::bail!("serve runs on its own runtimes"),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = cohort_control::Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.database_url {
        config.database_url = Some(url);
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(budget) = args.memory_budget {
        config.memory_budget = cohort_control::config::parse_bytes(&budget).map_err(|e| anyhow::anyhow!("--memory-budget: {e}"))?;
    }
    if args.log_json {
        config.log_format = "json".into();
    }
    config.check()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    if args.demo {
        // The demo's receivers, if any are added, run on this machine.
        config.webhook_allow_loopback = true;
    }
    let hook: Option<cohort_control::server::Hook> = if args.demo {
        let tenants = demo::prepare(&config.data_dir, args.demo_tenants.max(1))?;
        let data_dir = config.data_dir.clone();
        Some(Box::new(move |state| Box::pin(demo::drive(state, tenants, data_dir))))
    } else {
        None
    };
    cohort_control::server::run(config, hook)?;
    Ok(())
}

async fn load(model: &Path, segment: &Path) -> anyhow::Result<(Catalog, Segment)> {
    let model = Model::from_file(model)?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    let segment = Segment::from_file(segment, &catalog)?;
    Ok((catalog, segment))
}

fn options(args: &RunArgs) -> anyhow::Result<RunOptions> {
    let as_of = match &args.as_of {
        Some(text) => {
            cohort_executor::parse_timestamp(text).ok_or_else(|| anyhow::anyhow!("--as-of {text:?} is not an RFC 3339 timestamp like 2026-09-01T12:00:00Z"))?
        }
        None => chrono::Utc::now().timestamp_micros(),
    };
    let mut options = RunOptions::new(as_of);
    options.memory_limit_bytes = args.memory_limit;
    options.plan = match args.plan {
        PlanArg::Auto => PlanChoice::Auto { max_related_single: args.phase_threshold },
        PlanArg::Single => PlanChoice::Single,
        PlanArg::Phased => PlanChoice::Phased,
    };
    options.join_strategy = match args.join {
        JoinArg::Hash => JoinStrategy::Hash,
        JoinArg::SortMerge => JoinStrategy::SortMerge,
    };
    if let Some(p) = args.partitions {
        options.target_partitions = p.max(1);
    }
    options.ballista = args.ballista.clone();
    Ok(options)
}

async fn segment_run(args: RunArgs) -> anyhow::Result<()> {
    let options = options(&args)?;
    let (catalog, segment) = load(&args.model, &args.segment).await?;
    let report = run_segment(&catalog, &segment, &options).await?;
    match &args.output {
        Some(path) => write_members(path, &report.members, report.key_type)?,
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for key in &report.members {
                out.write_all(key.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report_json(&report))?;
        std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))?;
    }
    eprintln!("{}", report.summary());
    Ok(())
}

fn report_json(report: &cohort_executor::RunReport) -> serde_json::Value {
    serde_json::json!({
        "members": report.members.len(),
        "rows_scanned": report.rows_scanned,
        "bytes_scanned": report.bytes_scanned,
        "peak_memory_bytes": report.peak_memory_bytes,
        "memory_limit_bytes": report.memory_limit_bytes,
        "elapsed_seconds": report.elapsed.as_secs_f64(),
        "spill_count": report.spill_count,
        "spilled_bytes": report.spilled_bytes,
        "plan_mode": report.plan_mode,
        "shape": report.shape,
        "ballista": report.ballista,
        "snapshots": report.snapshots.iter().map(|(object, s)| serde_json::json!({"object": object, "format": s.format, "id": s.id, "metadata": s.metadata})).collect::<Vec<_>>(),
        "phases": report.phases.iter().map(|p| serde_json::json!({
            "place": p.place, "rows": p.rows, "elapsed_seconds": p.elapsed.as_secs_f64(), "rows_scanned": p.rows_scanned,
        })).collect::<Vec<_>>(),
    })
}

fn write_members(path: &Path, members: &[String], key_type: FieldType) -> anyhow::Result<()> {
    let (data_type, column): (DataType, ArrayRef) = match key_type {
        FieldType::Int => {
            let values = members.iter().map(|m| m.parse::<i64>()).collect::<Result<Vec<_>, _>>().context("an int key did not parse back")?;
            (DataType::Int64, Arc::new(Int64Array::from(values)))
        }
        _ => (DataType::Utf8, Arc::new(StringArray::from_iter_values(members.iter()))),
    };
    let schema = Arc::new(Schema::new(vec![Field::new("key", data_type, false)]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column])?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => {
            let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
            writer.write(&batch)?;
            writer.close()?;
        }
        Some("csv") => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(file);
            writer.write(&batch)?;
        }
        _ => anyhow::bail!("--output {}: use a .parquet or .csv file name", path.display()),
    }
    Ok(())
}

async fn segment_validate(args: ValidateArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let model = Model::from_file(&args.model)?;
    let catalog = Catalog::load(model, &Default::default()).await?;
    eprintln!(
        "model ok: {} objects, {} relationships; loaded and checked against the sources in {:.1} ms",
        catalog.objects.len(),
        catalog.model.relationships.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if let Some(path) = &args.segment {
        let started = std::time::Instant::now();
        let segment = Segment::from_file(path, &catalog)?;
        let checked = started.elapsed();
        let options = RunOptions::new(chrono::Utc::now().timestamp_micros());
        let plans = cohort_executor::compile_plans(&catalog, &segment, &options)?;
        let compiled = started.elapsed();
        let shape = segment.shape();
        eprintln!(
            "segment ok: {:?}, {} related predicates, {} joins, max {} hops; checked in {:.1} ms, compiled to {} DataFusion plan{} in {:.1} ms",
            segment.name,
            shape.related_predicates,
            shape.joins,
            shape.max_hops,
            checked.as_secs_f64() * 1e3,
            plans.len(),
            if plans.len() == 1 { "" } else { "s" },
            compiled.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

async fn segment_explain(args: ExplainArgs) -> anyhow::Result<()> {
    let options = options(&args.run)?;
    let (catalog, segment) = load(&args.run.model, &args.run.segment).await?;
    print!("{}", explain(&catalog, &segment, &options).await?);
    if args.analyze {
        let (report, executed) = cohort_executor::run_analyzed(&catalog, &segment, &options).await?;
        print!("\n{executed}");
        println!("\n{}", report.summary());
    }
    Ok(())
}
