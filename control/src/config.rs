//! Configuration: defaults that work on one machine with no file, a TOML file over them,
//! `COHORT_*` environment variables over the file, and command-line flags over everything
//! (the binary applies those).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Everything `cohort serve` can be told. Sizes accept `512MiB`-style text or byte counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address to listen on (`COHORT_LISTEN`). Port 0 picks a free port.
    pub listen: String,
    /// Where the SQLite store and the memberships live (`COHORT_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…` (`COHORT_DATABASE_URL`); default: a SQLite file
    /// `cohort.db` in the data folder.
    pub database_url: Option<String>,
    /// The admin token (`COHORT_ADMIN_TOKEN`); default: one is made on first start and kept in
    /// `<data_dir>/admin-token` (mode 0600).
    pub admin_token: Option<String>,
    /// Executor worker slots (`COHORT_WORKERS`); default: the number of cores.
    pub workers: usize,
    /// Memory the running jobs may be granted in all (`COHORT_MEMORY_BUDGET`); default: half
    /// the machine's memory.
    #[serde(deserialize_with = "de_bytes")]
    pub memory_budget: u64,
    /// The smallest grant a job gets (`COHORT_MIN_GRANT`).
    #[serde(deserialize_with = "de_bytes")]
    pub min_grant: u64,
    /// Grant per byte of the tenant's sources, before the estimator learns better
    /// (`COHORT_GRANT_PER_SOURCE_BYTE`).
    pub grant_per_source_byte: f64,
    /// Request bodies larger than this are refused with 413 (`COHORT_MAX_BODY`).
    #[serde(deserialize_with = "de_bytes")]
    pub max_body: u64,
    /// On SIGTERM/SIGINT, how long running jobs may finish before they are queued again
    /// (`COHORT_SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace_seconds: u64,
    /// Connections to the store (`COHORT_DB_CONNECTIONS`).
    pub db_connections: u32,
    /// How often the pool looks at the store for work even when nothing signalled it
    /// (`COHORT_POLL_MS`): a backstop for jobs queued by another process.
    pub poll_ms: u64,
    /// How long a process's claim on the jobs it admitted lasts without renewal
    /// (`COHORT_LEASE_SECONDS`); it renews them every third of it. On PostgreSQL, where
    /// several processes may share the store, another process queues a job whose lease ran
    /// out again.
    pub lease_seconds: f64,
    /// This process's name in job leases (`COHORT_INSTANCE`); default: a random one. With a
    /// stable name, a restarted process queues again at once the jobs its previous life held
    /// (on PostgreSQL; on SQLite, one process per store, a start always does).
    pub instance: Option<String>,
    /// Where jobs too large for this service's pool run (`COHORT_BALLISTA`): `embedded` (the
    /// default: every job runs here, its grant capped at the budget) or an Apache DataFusion
    /// Ballista scheduler, `df://HOST:PORT` (started with `cohort ballista`). With a scheduler,
    /// a job whose memory estimate exceeds what the pool may grant (the budget, or its
    /// tenant's quota) runs on the cluster; the rest stay here. The choice is recorded on the job.
    pub ballista: String,
    /// `text` or `json` logs (`COHORT_LOG_FORMAT`).
    pub log_format: String,
    /// Fair share: a tenant's recent usage halves every this many seconds
    /// (`COHORT_FAIR_SHARE_HALF_LIFE_SECONDS`).
    pub fair_share_half_life_seconds: f64,
    /// Attempts in all for a job whose failures are transient (`COHORT_RETRY_ATTEMPTS`).
    pub retry_attempts: u32,
    /// The wait before the first transient retry, doubling after (`COHORT_RETRY_BACKOFF_MS`).
    pub retry_backoff_ms: u64,
    /// The longest wait between retries (`COHORT_RETRY_BACKOFF_MAX_SECONDS`).
    pub retry_backoff_max_seconds: f64,
    /// An attempt's deadline is its expected runtime times this (`COHORT_DEADLINE_FACTOR`)...
    pub deadline_factor: f64,
    /// ...but at least this many seconds (`COHORT_DEADLINE_FLOOR_SECONDS`)...
    pub deadline_floor_seconds: f64,
    /// ...and at most this many (`COHORT_DEADLINE_CEILING_SECONDS`); it also caps a run's own
    /// `timeout_seconds`.
    pub deadline_ceiling_seconds: f64,
    /// Of the due runs missed while the service was down, the latest still runs if it is at
    /// most this many seconds late (`COHORT_CATCH_UP_SECONDS`).
    pub catch_up_seconds: f64,
    /// Grant jobs the estimator's bound (`COHORT_ESTIMATOR`); false: the size rule grants
    /// (features are recorded and the model learns either way).
    pub estimator: bool,
    /// The share of runs whose peak should stay within their grant
    /// (`COHORT_ESTIMATOR_COVERAGE`).
    pub estimator_coverage: f64,
    /// Refit the estimator after this many finished attempts (`COHORT_ESTIMATOR_REFIT_RUNS`)...
    pub estimator_refit_runs: usize,
    /// ...or this often (`COHORT_ESTIMATOR_REFIT_SECONDS`).
    pub estimator_refit_seconds: f64,
    /// The alert rules: `[alerts]` (windows and thresholds per scope, inhibition, runtime and
    /// burn-rate rules); see `cohort_alerting::config`.
    pub alerts: cohort_alerting::AlertRules,
    /// A failure's millisecond is closed this long after it (`COHORT_ALERT_SETTLE_MS`), so
    /// failures committed in the same millisecond count together.
    pub alert_settle_ms: u64,
    /// A firing alert is notified again when more alerts are inhibited under it, at most this
    /// often (`COHORT_ALERT_GROUP_INTERVAL_SECONDS`).
    pub alert_group_interval_seconds: f64,
    /// Firing alerts are notified again this often (`COHORT_ALERT_REPEAT_INTERVAL_SECONDS`).
    pub alert_repeat_interval_seconds: f64,
    /// A webhook's first retry waits this long, doubling after (`COHORT_WEBHOOK_RETRY_MS`)...
    pub webhook_retry_ms: u64,
    /// ...up to this long (`COHORT_WEBHOOK_RETRY_MAX_SECONDS`)...
    pub webhook_retry_max_seconds: f64,
    /// ...and a notification not delivered within this long is given up
    /// (`COHORT_WEBHOOK_GIVE_UP_SECONDS`).
    pub webhook_give_up_seconds: f64,
    /// One delivery attempt's time limit (`COHORT_WEBHOOK_TIMEOUT_SECONDS`).
    pub webhook_timeout_seconds: f64,
    /// Webhooks may reach private addresses: 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
    /// (`COHORT_WEBHOOK_ALLOW_PRIVATE`; default false). Link-local and metadata addresses
    /// are refused whatever this says.
    pub webhook_allow_private: bool,
    /// Webhooks may reach loopback addresses, 127/8 and ::1 (`COHORT_WEBHOOK_ALLOW_LOOPBACK`;
    /// default false; `serve --demo` allows them).
    pub webhook_allow_loopback: bool,
    /// This service's URL as people reach it, for links in notifications
    /// (`COHORT_EXTERNAL_URL`); default: the listening address. When it is https, the
    /// dashboard's session cookie is `Secure`.
    pub external_url: Option<String>,
    /// How long a dashboard sign-in lasts (`COHORT_UI_SESSION_SECONDS`; 12 hours).
    pub ui_session_seconds: f64,
    /// Per-tenant metric series for this many of the busiest tenants; the rest are summed
    /// as `tenant="other"` of their region (`COHORT_METRICS_TOP_TENANTS`).
    pub metrics_top_tenants: usize,
    /// Export traces over OTLP/HTTP to this collector, e.g. `http://127.0.0.1:4318`
    /// (`COHORT_OTLP_ENDPOINT`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`); default: no
    /// traces.
    pub otlp_endpoint: Option<String>,
    /// Spans are exported in batches at most this far apart (`COHORT_OTLP_BATCH_DELAY_MS`).
    pub otlp_batch_delay_ms: u64,
    /// When triage reports are made, stored and sent to the webhook receivers: a cron
    /// expression with seconds, in UTC (`COHORT_TRIAGE_SCHEDULE`); default daily at 06:00;
    /// empty: never.
    pub triage_schedule: String,
    /// The window a scheduled report covers, ending when it is made
    /// (`COHORT_TRIAGE_WINDOW_SECONDS`); default one day.
    pub triage_window_seconds: f64,
    /// A signature is new if none of this many windows before the report's saw it
    /// (`COHORT_TRIAGE_HISTORY`).
    pub triage_history: u32,
    /// Object storage: credentials tenants' `s3://` data roots name, and how requests are
    /// retried (`[storage]`).
    pub storage: crate::storage::StorageConfig,
}

impl Config {
    /// The largest memory an estimate may ask for: the budget, or with a Ballista cluster
    /// (where larger jobs go) a petabyte.
    pub fn largest_estimate(&self) -> u64 {
        if matches!(self.ballista_url(), Ok(Some(_))) { (1u64 << 50).max(self.memory_budget) } else { self.memory_budget }
    }

    /// The Ballista scheduler jobs too large for the pool go to; `None`: embedded only.
    pub fn ballista_url(&self) -> Result<Option<cohort_executor::BallistaUrl>> {
        match self.ballista.trim() {
            "" | "embedded" => Ok(None),
            url => cohort_executor::BallistaUrl::parse(url).map(Some).map_err(|e| Error::Config(format!("ballista: {e}"))),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./cohort-data"),
            database_url: None,
            admin_token: None,
            workers: cores,
            memory_budget: machine_memory().map(|m| m / 2).unwrap_or(4 << 30),
            min_grant: 64 << 10,
            grant_per_source_byte: 4.0,
            max_body: 16 << 20,
            shutdown_grace_seconds: 30,
            db_connections: 8,
            poll_ms: 1000,
            lease_seconds: 30.0,
            instance: None,
            ballista: "embedded".into(),
            log_format: "text".into(),
            fair_share_half_life_seconds: 3600.0,
            retry_attempts: 3,
            retry_backoff_ms: 1000,
            retry_backoff_max_seconds: 300.0,
            deadline_factor: 10.0,
            deadline_floor_seconds: 60.0,
            deadline_ceiling_seconds: 6.0 * 3600.0,
            catch_up_seconds: 3600.0,
            estimator: true,
            estimator_coverage: 0.995,
            estimator_refit_runs: 100,
            estimator_refit_seconds: 600.0,
            alerts: cohort_alerting::AlertRules::default(),
            alert_settle_ms: 50,
            alert_group_interval_seconds: 30.0,
            alert_repeat_interval_seconds: 4.0 * 3600.0,
            webhook_retry_ms: 1000,
            webhook_retry_max_seconds: 300.0,
            webhook_give_up_seconds: 24.0 * 3600.0,
            webhook_timeout_seconds: 10.0,
            webhook_allow_private: false,
            webhook_allow_loopback: false,
            external_url: None,
            ui_session_seconds: 12.0 * 3600.0,
            metrics_top_tenants: 50,
            otlp_endpoint: None,
            otlp_batch_delay_ms: 5000,
            triage_schedule: "0 0 6 * * *".into(),
            triage_window_seconds: 86_400.0,
            triage_history: 7,
            storage: crate::storage::StorageConfig::default(),
        }
    }
}

impl Config {
    /// The defaults, then the TOML file (if any), then the `COHORT_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => Config::default(),
        };
        for (name, value) in env {
            config.set_from_env(&name, &value)?;
        }
        config.check()?;
        Ok(config)
    }

    fn set_from_env(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |what: &str| Error::Config(format!("{name}={value:?}: {what}"));
        match name {
            "COHORT_LISTEN" => self.listen = value.into(),
            "COHORT_METRICS_TOP_TENANTS" => self.metrics_top_tenants = value.parse().map_err(|_| bad("expected a number of tenants"))?,
            "COHORT_OTLP_ENDPOINT" => self.otlp_endpoint = Some(value.into()).filter(|v: &String| !v.is_empty()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" if self.otlp_endpoint.is_none() => {
                self.otlp_endpoint = Some(value.into()).filter(|v: &String| !v.is_empty());
            }
            "COHORT_OTLP_BATCH_DELAY_MS" => self.otlp_batch_delay_ms = value.parse().map_err(|_| bad("expected milliseconds"))?,
            "COHORT_DATA_DIR" => self.data_dir = value.into(),
            "COHORT_DATABASE_URL" => self.database_url = Some(value.into()),
            "COHORT_ADMIN_TOKEN" => self.admin_token = Some(value.into()),
            "COHORT_WORKERS" => self.workers = value.parse().map_err(|_| bad("expected a number of slots"))?,
            "COHORT_MEMORY_BUDGET" => self.memory_budget = parse_bytes(value).map_err(|e| bad(&e))?,
            "COHORT_MIN_GRANT" => self.min_grant = parse_bytes(value).map_err(|e| bad(&e))?,
            "COHORT_GRANT_PER_SOURCE_BYTE" => self.grant_per_source_byte = value.parse().map_err(|_| bad("expected a number"))?,
            "COHORT_MAX_BODY" => self.max_body = parse_bytes(value).map_err(|e| bad(&e))?,
            "COHORT_SHUTDOWN_GRACE_SECONDS" => self.shutdown_grace_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_DB_CONNECTIONS" => self.db_connections = value.parse().map_err(|_| bad("expected a number"))?,
            "COHORT_POLL_MS" => self.poll_ms = value.parse().map_err(|_| bad("expected milliseconds"))?,
            "COHORT_LEASE_SECONDS" => {
                self.lease_seconds = value.parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.3).ok_or_else(|| bad("expected seconds, at least 0.3"))?;
            }
            "COHORT_INSTANCE" => self.instance = Some(value.into()).filter(|v: &String| !v.is_empty()),
            "COHORT_BALLISTA" => self.ballista = value.into(),
            "COHORT_LOG_FORMAT" => self.log_format = value.into(),
            "COHORT_FAIR_SHARE_HALF_LIFE_SECONDS" => self.fair_share_half_life_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_RETRY_ATTEMPTS" => self.retry_attempts = value.parse().map_err(|_| bad("expected a number of attempts"))?,
            "COHORT_RETRY_BACKOFF_MS" => self.retry_backoff_ms = value.parse().map_err(|_| bad("expected milliseconds"))?,
            "COHORT_RETRY_BACKOFF_MAX_SECONDS" => self.retry_backoff_max_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_DEADLINE_FACTOR" => self.deadline_factor = value.parse().map_err(|_| bad("expected a number"))?,
            "COHORT_DEADLINE_FLOOR_SECONDS" => self.deadline_floor_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_DEADLINE_CEILING_SECONDS" => self.deadline_ceiling_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_CATCH_UP_SECONDS" => self.catch_up_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_ESTIMATOR" => self.estimator = value.parse().map_err(|_| bad("expected true or false"))?,
            "COHORT_ESTIMATOR_COVERAGE" => self.estimator_coverage = value.parse().map_err(|_| bad("expected a number"))?,
            "COHORT_ESTIMATOR_REFIT_RUNS" => self.estimator_refit_runs = value.parse().map_err(|_| bad("expected a number of runs"))?,
            "COHORT_ALERT_SETTLE_MS" => self.alert_settle_ms = value.parse().map_err(|_| bad("expected milliseconds"))?,
            "COHORT_ALERT_GROUP_INTERVAL_SECONDS" => self.alert_group_interval_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_ALERT_REPEAT_INTERVAL_SECONDS" => self.alert_repeat_interval_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_WEBHOOK_RETRY_MS" => self.webhook_retry_ms = value.parse().map_err(|_| bad("expected milliseconds"))?,
            "COHORT_WEBHOOK_RETRY_MAX_SECONDS" => self.webhook_retry_max_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_WEBHOOK_GIVE_UP_SECONDS" => self.webhook_give_up_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_WEBHOOK_ALLOW_PRIVATE" => self.webhook_allow_private = value.parse().map_err(|_| bad("expected true or false"))?,
            "COHORT_WEBHOOK_ALLOW_LOOPBACK" => self.webhook_allow_loopback = value.parse().map_err(|_| bad("expected true or false"))?,
            "COHORT_WEBHOOK_TIMEOUT_SECONDS" => self.webhook_timeout_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_EXTERNAL_URL" => self.external_url = Some(value.into()),
            "COHORT_UI_SESSION_SECONDS" => self.ui_session_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_TRIAGE_SCHEDULE" => self.triage_schedule = value.into(),
            "COHORT_TRIAGE_WINDOW_SECONDS" => self.triage_window_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_TRIAGE_HISTORY" => self.triage_history = value.parse().map_err(|_| bad("expected a number of windows"))?,
            "COHORT_STORAGE_REQUEST_TIMEOUT_SECONDS" => self.storage.request_timeout_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_STORAGE_MAX_RETRIES" => self.storage.max_retries = value.parse().map_err(|_| bad("expected a number of retries"))?,
            "COHORT_STORAGE_RETRY_TIMEOUT_SECONDS" => self.storage.retry_timeout_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            "COHORT_ESTIMATOR_REFIT_SECONDS" => self.estimator_refit_seconds = value.parse().map_err(|_| bad("expected seconds"))?,
            _ => {}
        }
        Ok(())
    }

    /// Refuses settings that cannot work, saying which.
    pub fn check(&self) -> Result<()> {
        self.ballista_url()?;
        self.storage.check()?;
        if self.workers == 0 {
            return Err(Error::Config("workers must be at least 1".into()));
        }
        if self.min_grant > self.memory_budget {
            return Err(Error::Config(format!("min_grant ({}) is larger than memory_budget ({})", self.min_grant, self.memory_budget)));
        }
        if !(self.grant_per_source_byte.is_finite() && self.grant_per_source_byte >= 0.0) {
            return Err(Error::Config("grant_per_source_byte must be a non-negative number".into()));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::Config(format!("log_format {:?}: expected text or json", self.log_format)));
        }
        for (name, seconds) in [
            ("fair_share_half_life_seconds", self.fair_share_half_life_seconds),
            ("retry_backoff_max_seconds", self.retry_backoff_max_seconds),
            ("deadline_floor_seconds", self.deadline_floor_seconds),
            ("deadline_ceiling_seconds", self.deadline_ceiling_seconds),
            ("catch_up_seconds", self.catch_up_seconds),
            ("estimator_refit_seconds", self.estimator_refit_seconds),
            ("alert_group_interval_seconds", self.alert_group_interval_seconds),
            ("alert_repeat_interval_seconds", self.alert_repeat_interval_seconds),
            ("webhook_retry_max_seconds", self.webhook_retry_max_seconds),
            ("webhook_give_up_seconds", self.webhook_give_up_seconds),
            ("webhook_timeout_seconds", self.webhook_timeout_seconds),
            ("ui_session_seconds", self.ui_session_seconds),
        ] {
            if !(0.0..1e9).contains(&seconds) {
                return Err(Error::Config(format!("{name} must be a number of seconds, 0 or more")));
            }
        }
        if self.fair_share_half_life_seconds <= 0.0 {
            return Err(Error::Config("fair_share_half_life_seconds must be more than 0".into()));
        }
        if !(self.deadline_factor.is_finite() && self.deadline_factor >= 1.0) {
            return Err(Error::Config("deadline_factor must be a number of at least 1".into()));
        }
        if self.deadline_floor_seconds > self.deadline_ceiling_seconds {
            return Err(Error::Config(format!(
                "deadline_floor_seconds ({}) is larger than deadline_ceiling_seconds ({})",
                self.deadline_floor_seconds, self.deadline_ceiling_seconds
            )));
        }
        if self.estimator_refit_runs == 0 || self.estimator_refit_seconds <= 0.0 {
            return Err(Error::Config("estimator_refit_runs and estimator_refit_seconds must be more than 0".into()));
        }
        self.alerts.check().map_err(Error::Config)?;
        if self.alert_repeat_interval_seconds <= 0.0 || self.webhook_timeout_seconds <= 0.0 {
            return Err(Error::Config("alert_repeat_interval_seconds and webhook_timeout_seconds must be more than 0".into()));
        }
        self.estimator_config().validate().map_err(|e| Error::Config(e.to_string()))?;
        if !self.triage_schedule.trim().is_empty() {
            self.triage_cron()?;
        }
        if !(1.0..=366.0 * 86_400.0).contains(&self.triage_window_seconds) {
            return Err(Error::Config("triage_window_seconds must be from 1 to 31622400 (a year)".into()));
        }
        if self.retry_attempts == 0 {
            return Err(Error::Config("retry_attempts must be at least 1 (the first attempt)".into()));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(Error::Config("admin_token must be at least 16 characters".into()));
        }
        Ok(())
    }

    /// How triage reports are made; `listening` is the address the service listens on.
    pub fn triage_settings(&self, listening: &str) -> Result<crate::triage::TriageSettings> {
        let alert_window_ms = cohort_alerting::Scope::ALL.iter().map(|s| self.alerts.failures.at(*s).window_ms).max().unwrap_or(600_000);
        Ok(crate::triage::TriageSettings {
            schedule: self.triage_cron()?,
            window: std::time::Duration::from_secs_f64(self.triage_window_seconds),
            history: self.triage_history,
            alert_window_ms,
            // The evaluator closes an instant `settle` after it; on PostgreSQL it reads the
            // store's finished jobs every 250 ms and takes them 500 ms later still.
            alert_lag_ms: i64::try_from(self.alert_settle_ms).unwrap_or(i64::MAX).saturating_add(1_000),
            external_url: self.alert_settings(listening).external_url,
        })
    }

    /// The triage schedule, if any.
    pub fn triage_cron(&self) -> Result<Option<cron::Schedule>> {
        let text = self.triage_schedule.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<cron::Schedule>()
            .map(Some)
            .map_err(|e| Error::Config(format!("triage_schedule {text:?}: {e} (a cron expression with seconds, e.g. \"0 0 6 * * *\")")))
    }

    /// The pool's retry policy.
    pub fn retry_policy(&self) -> crate::policy::RetryPolicy {
        crate::policy::RetryPolicy {
            transient_attempts: self.retry_attempts,
            backoff_base: std::time::Duration::from_millis(self.retry_backoff_ms),
            backoff_max: std::time::Duration::from_secs_f64(self.retry_backoff_max_seconds),
        }
    }

    /// The estimator's settings: the coverage, grants between `min_grant` and the budget, the
    /// size rule for segments never seen before a model is fitted.
    pub fn estimator_config(&self) -> cohort_estimator::Config {
        cohort_estimator::Config {
            coverage: self.estimator_coverage,
            min_bytes: self.min_grant,
            max_bytes: self.largest_estimate(),
            rule_base_bytes: self.min_grant,
            rule_bytes_per_source_byte: self.grant_per_source_byte,
            refit_every: self.estimator_refit_runs,
            ..cohort_estimator::Config::default()
        }
    }

    /// How the service uses the estimator.
    pub fn estimator_settings(&self) -> crate::estimates::EstimatorSettings {
        crate::estimates::EstimatorSettings {
            enabled: self.estimator,
            config: self.estimator_config(),
            refit_runs: self.estimator_refit_runs,
            refit_interval: std::time::Duration::from_secs_f64(self.estimator_refit_seconds),
        }
    }

    /// How alerting runs; `listening` is the address the service listens on.
    pub fn alert_settings(&self, listening: &str) -> crate::alerts::AlertSettings {
        use std::time::Duration;
        crate::alerts::AlertSettings {
            rules: self.alerts.clone(),
            settle: Duration::from_millis(self.alert_settle_ms),
            group_interval: Duration::from_secs_f64(self.alert_group_interval_seconds),
            repeat_interval: Duration::from_secs_f64(self.alert_repeat_interval_seconds),
            retry_base: Duration::from_millis(self.webhook_retry_ms.max(1)),
            retry_max: Duration::from_secs_f64(self.webhook_retry_max_seconds),
            give_up_after: Duration::from_secs_f64(self.webhook_give_up_seconds),
            timeout: Duration::from_secs_f64(self.webhook_timeout_seconds),
            egress: crate::egress::EgressPolicy { allow_private: self.webhook_allow_private, allow_loopback: self.webhook_allow_loopback },
            external_url: self.external_url.clone().unwrap_or_else(|| format!("http://{listening}")),
        }
    }

    /// Attempt deadlines.
    pub fn deadlines(&self) -> crate::policy::Deadlines {
        crate::policy::Deadlines {
            factor: self.deadline_factor,
            floor: std::time::Duration::from_secs_f64(self.deadline_floor_seconds),
            ceiling: std::time::Duration::from_secs_f64(self.deadline_ceiling_seconds),
        }
    }

    /// The store's URL: the configured one, or the SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("cohort.db").display()))
    }
}

pub use cohort_common::units::parse_bytes;

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

/// Total memory of the machine, from `/proc/meminfo`.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cohort.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\nworkers = 3\nmemory_budget = \"2GiB\"\n").expect("write");
        let env = vec![("COHORT_WORKERS".to_string(), "5".to_string()), ("PATH".to_string(), "/bin".to_string())];
        let config = Config::load(Some(&file), env).expect("load");
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.workers, 5);
        assert_eq!(config.memory_budget, 2 << 30);
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cohort.example.toml");
        let config = Config::load(Some(&path), Vec::new()).expect("cohort.example.toml");
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.min_grant, 64 << 10);
        assert_eq!(config.ballista_url().expect("ballista"), None);
    }

    #[test]
    fn the_backend_is_embedded_or_a_ballista_scheduler() {
        let config = Config::load(None, vec![("COHORT_BALLISTA".into(), "df://sched:50060".into())]).expect("config");
        let url = config.ballista_url().expect("url").expect("a scheduler");
        assert_eq!((url.host.as_str(), url.port), ("sched", 50060));
        let e = Config::load(None, vec![("COHORT_BALLISTA".into(), "http://sched".into())]).expect_err("not a df:// URL");
        assert!(e.to_string().contains("df://"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cohort.toml");
        std::fs::write(&file, "listn = \"x\"\n").expect("write");
        let e = Config::load(Some(&file), Vec::new()).expect_err("unknown key");
        assert!(e.to_string().contains("listn"), "{e}");
        let e = Config::load(None, vec![("COHORT_WORKERS".into(), "many".into())]).expect_err("bad number");
        assert!(e.to_string().contains("COHORT_WORKERS"), "{e}");
        assert!(Config::load(None, Vec::new()).is_ok());
    }
}
