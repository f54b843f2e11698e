//! `cohort estimator`: replay a trace of runs against the estimator and its baselines, and
//! write such a trace from a service's store.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cohort_estimator::{Config, eval, parse_trace};

/// `cohort estimator …`
#[derive(Debug, clap::Subcommand)]
pub enum EstimatorCommand {
    /// Replay a trace in time order and compare our grants with the baselines'.
    ///
    /// Each run is estimated only from the runs before it (the model is refitted as the
    /// service would: first after `--first-fit-after` runs, then every `--refit-every`). For
    /// our estimator and for two baselines — a static grant, and an Autopilot-style decayed
    /// maximum of the segment's recent peaks plus 15% — it prints the under-grant rate (peak
    /// above grant), the relative slack (mean of (grant − peak) / grant), the runtime median
    /// absolute percentage error, and GiB-hours granted versus used.
    Eval(EvalArgs),
    /// Write the finished runs in a service's store as a trace (one JSON run per line, oldest
    /// first): the features known before each run, its peak and runtime, and any grant it ran
    /// out of.
    Trace(TraceArgs),
}

/// Arguments of `cohort estimator eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The trace: JSON lines as `cohort estimator trace` writes them.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// The share of runs meant to stay within their grant.
    #[arg(long, default_value_t = 0.995)]
    pub coverage: f64,
    /// The smallest grant (the service's min_grant).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    pub min_grant: u64,
    /// The static baseline's grant (also the Autopilot baseline's for a segment's first run).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub static_grant: u64,
    /// Refit after this many new runs.
    #[arg(long, default_value_t = 100)]
    pub refit_every: usize,
    /// The first fit comes after this many runs.
    #[arg(long, default_value_t = 60)]
    pub first_fit_after: usize,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `cohort estimator trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub store: crate::store_args::StoreArgs,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// At most this many runs (the newest).
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: i64,
}

fn parse_size(text: &str) -> Result<u64, String> {
    cohort_control::config::parse_bytes(text)
}

/// Runs `cohort estimator …`.
pub async fn run(command: EstimatorCommand) -> anyhow::Result<()> {
    match command {
        EstimatorCommand::Eval(args) => evaluate(args),
        EstimatorCommand::Trace(args) => trace(args).await,
    }
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let config = Config {
        coverage: args.coverage,
        min_bytes: args.min_grant,
        rule_base_bytes: args.min_grant,
        refit_every: args.refit_every.max(1),
        first_fit_after: args.first_fit_after,
        ..Config::default()
    };
    config.validate()?;
    let text = std::fs::read_to_string(&args.trace).with_context(|| format!("reading the trace {}", args.trace.display()))?;
    let records = parse_trace(&text).with_context(|| format!("in {}", args.trace.display()))?;
    if records.is_empty() {
        anyhow::bail!("{} holds no runs", args.trace.display());
    }
    let evaluation = eval::replay(&records, &config, args.static_grant);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{evaluation}");
    }
    Ok(())
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let config = args.store.config()?;
    let store = crate::store_args::StoreArgs::connect(&config).await?;
    let records = store.estimator_records(None, args.limit.max(1)).await?;
    store.close().await;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for r in &records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{} runs written{}", records.len(), args.out.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default());
    Ok(())
}
