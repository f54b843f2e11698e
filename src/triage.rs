//! `cohort triage`: the failure triage report over a window, from a service's store (or from
//! failure records in a file, `--failures FILE`, with no alerts to relate them to).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use cohort_alerting::config::parse_duration_ms;
use cohort_alerting::triage::{Failure, markdown, report};

/// Arguments of `cohort triage`.
#[derive(Debug, clap::Args)]
pub struct TriageArgs {
    /// The window's start: a duration before --until (24h, 90m, 7d) or an RFC 3339 time.
    #[arg(long, default_value = "24h", value_name = "WHEN")]
    pub since: String,
    /// The window's end, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// json, markdown or html.
    #[arg(long, default_value = "markdown")]
    pub format: String,
    /// Only this tenant's failures.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A signature is new if none of this many windows before this one saw it (default: the
    /// service's triage_history).
    #[arg(long, value_name = "N")]
    pub history: Option<u32>,
    #[command(flatten)]
    pub store: crate::store_args::StoreArgs,
    /// Read failed attempts from this file (JSON lines: at (ms since the epoch), tenant,
    /// region, segment, job, attempt, class, message, recovered, job_failed, grant, data) instead of
    /// a store.
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,
    /// Print to standard error how long reading and reporting took.
    #[arg(long)]
    pub stats: bool,
}

/// Runs `cohort triage`.
pub async fn run(args: TriageArgs) -> anyhow::Result<()> {
    let clock = Instant::now();
    if !matches!(args.format.as_str(), "json" | "markdown" | "md" | "html") {
        anyhow::bail!("--format {:?}: expected json, markdown or html", args.format);
    }
    let mut config = args.store.config()?;
    let until = match &args.until {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text).with_context(|| format!("--until {text:?}: an RFC 3339 time"))?.timestamp_micros(),
        None => cohort_control::now_micros(),
    };
    let since = match chrono::DateTime::parse_from_rfc3339(&args.since) {
        Ok(t) => t.timestamp_micros(),
        Err(_) => until - parse_duration_ms(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}; or an RFC 3339 time"))? * 1000,
    };
    if since >= until {
        anyhow::bail!("--since must be before --until");
    }
    if let Some(h) = args.history {
        config.triage_history = h;
    }
    let r = match &args.failures {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mut failures = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let f: Failure = serde_json::from_str(line).with_context(|| format!("{} line {}: not a failure record", path.display(), i + 1))?;
                if args.tenant.as_ref().is_none_or(|t| *t == f.tenant) {
                    failures.push(f);
                }
            }
            let read = clock.elapsed();
            let reporting = Instant::now();
            let alert_window = 600_000;
            let r = report(&failures, since / 1000, until / 1000, config.triage_history, &[], alert_window, None);
            if args.stats {
                eprintln!("{} failure records read in {:.3} s; report made in {:.3} s", failures.len(), read.as_secs_f64(), reporting.elapsed().as_secs_f64());
            }
            r
        }
        None => {
            let store = crate::store_args::StoreArgs::connect(&config).await?;
            let settings = config.triage_settings(&config.listen)?;
            let r = cohort_control::triage::make(&store, &settings, since, until, args.tenant.as_deref()).await;
            store.close().await;
            let r = r?;
            if args.stats {
                eprintln!("{} failed attempts, report made from the store in {:.3} s", r.failures, clock.elapsed().as_secs_f64());
            }
            r
        }
    };
    let text = match args.format.as_str() {
        "json" => serde_json::to_string_pretty(&r)?,
        "html" => cohort_control::api::triage_html(&r, "Failure triage"),
        _ => markdown(&r),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}
