//! `cohort alerts`: replay job outcomes through the failure rule, as the service runs it.

use std::io::Write;
use std::path::PathBuf;

use cohort_alerting::config::parse_duration_ms;
use cohort_alerting::replay::{parse_events, replay, write_transitions};
use cohort_alerting::{AlertRules, Error};

/// `cohort alerts …`
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Replay job outcomes and print every alert transition, as the live service raises them.
    ///
    /// Input: one JSON object per line, in any order:
    /// {"at": "2026-01-01T00:00:00.000Z", "tenant": "acme", "region": "us-east", "outcome": "failed"}.
    /// Output: one transition per line, sorted by time, then scope (global, region, tenant),
    /// then key, including the resolutions after the last event:
    /// {"at": …, "scope": "tenant", "key": "acme", "state": "firing", "failures": 5}.
    /// A line that is not an outcome stops the replay with exit status 2, naming the line.
    /// Test rules before deploying them: --config takes the service's configuration file and
    /// replays with its [alerts.failures.*] windows and thresholds.
    Replay(ReplayArgs),
}

/// Arguments of `cohort alerts replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The outcomes: JSON lines (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// The window at every scope (10m, 30s, 1500ms); overrides --config.
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Failures within the window that fire, at every scope; overrides --config.
    #[arg(long)]
    pub threshold: Option<u32>,
    /// A `cohort serve` configuration file whose [alerts] section holds the rules.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print to standard error how long reading, sorting and evaluating took (events per
    /// second of the evaluator alone, and of the whole replay).
    #[arg(long)]
    pub stats: bool,
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    alerts: AlertRules,
}

/// Exit status 2: the input or the rules given are not usable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn run(command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::Replay(args) => replay_command(args),
    }
}

fn replay_command(args: ReplayArgs) -> anyhow::Result<()> {
    let mut rules = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str::<ConfigFile>(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?.alerts
        }
        None => AlertRules::default(),
    };
    if let Some(window) = &args.window {
        let ms = parse_duration_ms(window).map_err(|e| BadInput(format!("--window: {e}")))?;
        for w in [&mut rules.failures.global, &mut rules.failures.region, &mut rules.failures.tenant] {
            w.window = ms;
        }
    }
    if let Some(threshold) = args.threshold {
        for w in [&mut rules.failures.global, &mut rules.failures.region, &mut rules.failures.tenant] {
            w.threshold = threshold;
        }
    }
    rules.check().map_err(BadInput)?;
    let started = std::time::Instant::now();
    let text = if args.events.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| BadInput(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(&args.events).map_err(|e| BadInput(format!("cannot read {}: {e}", args.events.display())))?
    };
    let loaded = started.elapsed();
    let mut events = parse_events(&text).map_err(|e: Error| BadInput(format!("{}: {e}", args.events.display())))?;
    let parsed = started.elapsed();
    events.sort_by_key(|e| e.at);
    let sorted = started.elapsed();
    let n = events.len();
    let transitions = replay(rules.failure_rule(), events);
    let done = started.elapsed();
    if args.stats {
        let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
        let evaluate = done - sorted;
        eprintln!(
            "events {n}; load {:.3} s, parse {:.3} s, sort {:.3} s, evaluate {:.3} s ({:.0} events/s); whole replay {:.0} events/s; transitions {}",
            loaded.as_secs_f64(),
            (parsed - loaded).as_secs_f64(),
            (sorted - parsed).as_secs_f64(),
            evaluate.as_secs_f64(),
            rate(evaluate),
            rate(done),
            transitions.len()
        );
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_transitions(&mut out, &transitions)?;
    out.flush()?;
    Ok(())
}
