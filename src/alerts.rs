//! `cohort alerts`: replay job outcomes through the failure rule, as the service runs it, and
//! through inhibition, silences and dispatch timing, as the service notifies them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cohort_alerting::config::parse_duration_ms;
use cohort_alerting::dispatch::Timing;
use cohort_alerting::pipeline::{self, Settings, failure_changes};
use cohort_alerting::replay::{parse_events, parse_silences, regions, replay, write_notifications, write_transitions};
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
    ///
    /// --output notifications prints instead what the service would have notified, to one
    /// receiver that takes every alert: the transitions through inhibition ([alerts] inhibit),
    /// the silences of --silences and the group and repeat intervals, decided by the same code
    /// the service runs, each notification at the earliest instant the service sends it
    /// (no delivery delay, no retry). One per line, in the order sent:
    /// {"at": …, "alertname": "CohortJobFailures", "scope": "region", "key": "us-east",
    /// "state": "firing", "kind": "firing", "inhibited": ["tenant=acme"]}, where kind is firing,
    /// update (more alerts inhibited under it), repeat or resolved, and state is what its
    /// payload says.
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
    /// What to print: every transition of the rule, or what would have been notified.
    #[arg(long, value_enum, default_value_t = Output::Transitions)]
    pub output: Output,
    /// Silences for --output notifications: JSON lines as POST /v1/silences takes them, with
    /// when they start, {"matchers": ["tenant=acme"], "starts_at": "2026-01-01T00:00:00Z",
    /// "ends_at": "2026-01-01T01:00:00Z"} (or "duration_seconds": 3600 instead of ends_at;
    /// other fields are ignored, so the lines of GET /v1/silences do).
    #[arg(long, value_name = "FILE")]
    pub silences: Option<PathBuf>,
    /// For --output notifications: the least time between two notifications of one alert when
    /// more alerts are inhibited under it (30s, or --config's alert_group_interval_seconds).
    #[arg(long, value_name = "DURATION")]
    pub group_interval: Option<String>,
    /// For --output notifications: firing alerts are notified again this often (4h, or
    /// --config's alert_repeat_interval_seconds).
    #[arg(long, value_name = "DURATION")]
    pub repeat_interval: Option<String>,
}

/// What `cohort alerts replay` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Every transition of the failure rule.
    Transitions,
    /// Every notification the service would have sent.
    Notifications,
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    alerts: AlertRules,
    alert_group_interval_seconds: Option<f64>,
    alert_repeat_interval_seconds: Option<f64>,
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
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str::<ConfigFile>(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?
        }
        None => ConfigFile { alerts: AlertRules::default(), alert_group_interval_seconds: None, alert_repeat_interval_seconds: None },
    };
    if args.output == Output::Transitions && (args.group_interval.is_some() || args.repeat_interval.is_some()) {
        return Err(BadInput("--group-interval and --repeat-interval change only --output notifications".into()).into());
    }
    let timing = timing(&args, &config)?;
    let mut rules = config.alerts;
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
    let silences = match (&args.silences, args.output) {
        (Some(path), Output::Notifications) => {
            let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
            parse_silences(&text).map_err(|e: Error| BadInput(format!("{}: {e}", path.display())))?
        }
        (Some(_), Output::Transitions) => return Err(BadInput("--silences changes only --output notifications".into()).into()),
        (None, _) => Vec::new(),
    };
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
    let tenant_regions = match args.output {
        Output::Notifications => regions(&events),
        Output::Transitions => Default::default(),
    };
    let transitions = replay(rules.failure_rule(), events);
    let done = started.elapsed();
    let notifications = match args.output {
        Output::Notifications => {
            let settings = Settings { inhibit: rules.inhibit, timing };
            Some(pipeline::notifications(settings, silences, failure_changes(&transitions, &tenant_regions)))
        }
        Output::Transitions => None,
    };
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
        if let Some(notifications) = &notifications {
            eprintln!("notifications {}; decided in {:.3} s", notifications.len(), (started.elapsed() - done).as_secs_f64());
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match &notifications {
        Some(notifications) => write_notifications(&mut out, notifications)?,
        None => write_transitions(&mut out, &transitions)?,
    }
    out.flush()?;
    Ok(())
}

/// The group and repeat intervals: the flags, else the configuration file's, else the
/// service's defaults.
fn timing(args: &ReplayArgs, config: &ConfigFile) -> Result<Timing, BadInput> {
    let flag = |value: &Option<String>, name: &str| -> Result<Option<Duration>, BadInput> {
        value
            .as_deref()
            .map(|v| parse_duration_ms(v).map(|ms| Duration::from_millis(ms.unsigned_abs())).map_err(|e| BadInput(format!("{name}: {e}"))))
            .transpose()
    };
    let file = |seconds: Option<f64>, name: &str| -> Result<Option<Duration>, BadInput> {
        let path = args.config.as_deref().unwrap_or(Path::new("the configuration"));
        seconds
            .map(|s| Duration::try_from_secs_f64(s).map_err(|_| BadInput(format!("{}: {name} must be a number of seconds, 0 or more", path.display()))))
            .transpose()
    };
    let defaults = Timing::default();
    let group = flag(&args.group_interval, "--group-interval")?
        .or(file(config.alert_group_interval_seconds, "alert_group_interval_seconds")?)
        .unwrap_or(Duration::from_micros(defaults.group_interval.unsigned_abs()));
    let repeat = flag(&args.repeat_interval, "--repeat-interval")?
        .or(file(config.alert_repeat_interval_seconds, "alert_repeat_interval_seconds")?)
        .unwrap_or(Duration::from_micros(defaults.repeat_interval.unsigned_abs()));
    if repeat.is_zero() {
        return Err(BadInput("the repeat interval must be more than 0".into()));
    }
    Ok(Timing::new(group, repeat))
}
