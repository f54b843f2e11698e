//! One attempt of a job: its execution under its grant and deadline, the probe after an
//! out-of-memory failure, the commit of its run (and its riders), and its failure.
//!
//! A leader's admitted → running move and its attempt's start are one transaction
//! (`Store::start_running`). The attempt runs on the executor runtime under its grant and its
//! deadline; its spans (admission wait, planning with phases, execution, membership commit) are
//! recorded after the fact. A failure is classed ([`FailureClass`]), the attempt's data probed
//! when the data can cause it (at most [`PROBE_TIME`]), and [`RetryPolicy::decide`] retries it
//! (doubled grant at once, backoff with equal jitter) or fails the job. The commit writes the
//! attempt's own files and commits the run fenced by lease and attempt; a segment whose latest run
//! moved meanwhile gets its diff computed again.

use super::*;

impl Pool {
    /// One admitted job: run it under its deadline, commit what it found, record the attempt;
    /// a failure is retried or final by its class.
    /// `riders` are queued jobs this job's execution answers too: committed after it if it
    /// succeeds, queued again otherwise.
    pub(super) async fn work(self: Arc<Self>, job: JobRow, grant: u64, cancel: Arc<Notify>, riders: Vec<JobRow>) -> Result<()> {
        let mut riders = Riders { pool: &self, jobs: riders };
        let admitted = SystemTime::now();
        let Some(attempt) = self.store.start_running(&job.id, &self.settings.instance, i64::try_from(grant).unwrap_or(i64::MAX)).await? else {
            return Ok(());
        };
        // Every move of the job out of `running` below is this attempt's only while this
        // process still holds the job's lease for it.
        let fence = Fence { owner: &self.settings.instance, attempt };
        let started_at = now_micros();
        self.announce(&job.id, JobStatus::Running);
        let store = self.store.clone();
        let catalogs = Arc::clone(&self.catalogs);
        let input = job.clone();
        let started = std::time::Instant::now();
        let ballista = self.settings.ballista.clone().filter(|_| job.backend == crate::store::BALLISTA);
        if ballista.is_none() && job.backend == crate::store::BALLISTA {
            tracing::warn!(job = %job.id, "queued for the Ballista cluster, but none is configured now: it runs here");
        }
        let execution = self.executor.spawn(async move { execute(&store, &catalogs, &input, grant, ballista).await });
        let abort = execution.abort_handle();
        // Rows from before deadlines existed carry 0: no deadline.
        let deadline = (job.deadline_micros > 0).then(|| Duration::from_micros(job.deadline_micros as u64));
        let mut spans = AttemptSpans {
            attempt,
            grant,
            queued: system_time(job.updated_at),
            admitted,
            planning: None,
            phases: Vec::new(),
            execution: None,
            commit: None,
            end: admitted,
            plan_mode: None,
            peak: None,
            error: None,
        };
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // Lives for one match: the size of the run's report is no cost here.
        #[allow(clippy::large_enum_variant)]
        enum Ended {
            Ran(std::result::Result<Executed, ExecError>),
            Stopped,
            TimedOut,
        }
        let outcome = tokio::select! {
            joined = execution => match joined {
                Ok(result) => Ended::Ran(result),
                Err(e) => Ended::Ran(Err(ExecError::Internal(format!("the execution task ended: {e}")))),
            },
            () = cancel.notified() => {
                abort.abort();
                Ended::Stopped
            }
            () = timer => {
                abort.abort();
                Ended::TimedOut
            }
        };
        match outcome {
            Ended::Stopped => {
                if self.stopping.load(Ordering::SeqCst) {
                    // Shutting down: the job goes back to the queue for the next start.
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "interrupted".into(), ..Default::default() }).await?;
                    if self.store.end_attempt(&job.id, fence, JobStatus::Queued, "shutdown: queued again", None).await? {
                        self.announce(&job.id, JobStatus::Queued);
                    }
                } else {
                    self.store.finish_attempt(&job.id, attempt, &AttemptOutcome { outcome: "cancelled".into(), ..Default::default() }).await?;
                    if self.store.end_attempt(&job.id, fence, JobStatus::Cancelled, "cancelled by request", None).await? {
                        self.settle(&job, JobStatus::Cancelled);
                        self.record_attempt(&job, &mut spans, started.elapsed(), false);
                        self.ended(&job, "cancelled", None);
                    }
                }
            }
            Ended::TimedOut => {
                let limit = deadline.unwrap_or_default();
                let message = format!("ran past its deadline of {:.3} s and was stopped", limit.as_secs_f64());
                let measured = AttemptOutcome {
                    outcome: "failed".into(),
                    error_class: Some(FailureClass::Timeout.as_str().into()),
                    error_message: Some(message.clone()),
                    elapsed_micros: Some(micros(started.elapsed())),
                    data_quality: self.probe(&job, grant).await,
                    ..Default::default()
                };
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                spans.error = Some((FailureClass::Timeout.as_str().into(), message.clone()));
                self.record_attempt(&job, &mut spans, started.elapsed(), false);
                if self.store.end_attempt(&job.id, fence, JobStatus::Failed, &message, Some((FailureClass::Timeout.as_str(), &message))).await? {
                    self.settle(&job, JobStatus::Failed);
                    self.ended(&job, "failed", Some((FailureClass::Timeout.as_str(), &message)));
                }
            }
            Ended::Ran(Ok(Executed { report, began, run_began })) => {
                let mut measured = measured(&report);
                measured.outcome = "succeeded".into();
                let planned = run_began + report.planned;
                spans.planning = Some((began, planned));
                spans.execution = Some((planned, run_began + report.elapsed));
                spans.phases = report
                    .phases
                    .iter()
                    .map(|p| PhaseSpan { place: p.place.clone(), start: run_began + p.started, end: run_began + p.started + p.elapsed, rows: p.rows as u64 })
                    .collect();
                spans.plan_mode = Some(report.plan_mode.to_string());
                spans.peak = Some(report.peak_memory_bytes as u64);
                let commit_began = SystemTime::now();
                let committed = self.commit(&job, fence, report.members, report.key_type.name()).await?;
                spans.commit = Some((commit_began, SystemTime::now()));
                if let Committed::Refused(why) = &committed {
                    // What it found is not the run's: another attempt's commit is (or none).
                    measured.outcome = "superseded".into();
                    measured.error_message = Some(why.clone());
                }
                self.store.finish_attempt(&job.id, attempt, &measured).await?;
                self.record_attempt(&job, &mut spans, started.elapsed(), false);
                if let Committed::Run { members, files } = committed {
                    self.settle(&job, JobStatus::Succeeded);
                    self.ended(&job, "succeeded", None);
                    let leader = Commit {
                        job_id: &job.id,
                        tenant_id: &job.tenant_id,
                        segment_id: &job.segment_id,
                        previous_run_id: "",
                        members,
                        added: 0,
                        removed: 0,
                        key_type: report.key_type.name(),
                        attempt,
                        owner: &self.settings.instance,
                        files: &files,
                    };
                    riders.commit(&leader, started_at).await?;
                }
            }
            Ended::Ran(Err(failure)) => {
                let (class, message) = failure.describe();
                spans.error = Some((class.as_str().into(), message));
                self.record_attempt(&job, &mut spans, started.elapsed(), class == FailureClass::ResourcesExhausted);
                self.failed(&job, fence, grant, &failure, started.elapsed()).await?;
            }
        }
        if let Some(learner) = self.learner.get() {
            learner.finished();
        }
        Ok(())
    }

    /// Reports an attempt that ended: its duration and memory to the metrics, its spans to
    /// the job's trace.
    pub(super) fn record_attempt(&self, job: &JobRow, spans: &mut AttemptSpans, elapsed: Duration, under_grant: bool) {
        spans.end = SystemTime::now();
        self.telemetry.metrics.attempt(&job.tenant_id, elapsed, spans.grant, spans.peak, under_grant);
        self.telemetry.traces.attempt(&self.labels(job), spans);
    }

    /// Measures the data a failed attempt read (a sample of its key fields) for triage: JSON
    /// findings, `None` when it could not be measured within [`PROBE_TIME`].
    pub(super) async fn probe(&self, job: &JobRow, grant: u64) -> Option<String> {
        // The probe runs in the job's name while its grant is still held (its attempt's memory
        // is free again), with what the budget can lend it besides: within the budget.
        let limit = lock(&self.sched).core.lend(&job.id, PROBE_MEMORY.max(grant));
        let limit = if limit == 0 { grant } else { limit };
        let options = ProbeOptions { memory_limit_bytes: usize::try_from(limit).unwrap_or(usize::MAX), ..ProbeOptions::default() };
        let store = self.store.clone();
        let catalogs = Arc::clone(&self.catalogs);
        let (tenant, segment) = (job.tenant_id.clone(), job.segment_id.clone());
        let probe = self.executor.spawn(async move {
            let (catalog, segment) = prepare(&store, &catalogs, &tenant, &segment).await.map_err(|e| e.describe().1)?;
            probe_data(&catalog, &segment, &options).await.map_err(|e| e.to_string())
        });
        let abort = probe.abort_handle();
        match tokio::time::timeout(PROBE_TIME, probe).await {
            Ok(Ok(Ok(findings))) => serde_json::to_string(&findings).ok(),
            Ok(Ok(Err(why))) => {
                tracing::debug!(job = %job.id, error = %why, "data probe failed");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(job = %job.id, error = %e, "data probe task ended");
                None
            }
            Err(_) => {
                abort.abort();
                tracing::debug!(job = %job.id, "data probe ran out of time");
                None
            }
        }
    }

    /// Records a failed attempt and retries the job or fails it, by the failure's class.
    pub(super) async fn failed(&self, job: &JobRow, fence: Fence<'_>, grant: u64, failure: &ExecError, elapsed: Duration) -> Result<()> {
        let attempt = fence.attempt;
        let (class, message) = failure.describe();
        let probed = if class.is_probed() { self.probe(job, grant).await } else { None };
        let measured = AttemptOutcome {
            outcome: "failed".into(),
            error_class: Some(class.as_str().into()),
            error_message: Some(message.clone()),
            elapsed_micros: Some(micros(elapsed)),
            data_quality: probed,
            ..Default::default()
        };
        self.store.finish_attempt(&job.id, attempt, &measured).await?;
        let transient = if class.is_transient() {
            u32::try_from(self.store.failed_attempts(&job.id, &FailureClass::TRANSIENT.map(FailureClass::as_str)).await?).unwrap_or(u32::MAX)
        } else {
            0
        };
        let cap = lock(&self.sched).core.grant_cap(&job.tenant_id);
        let now = now_micros();
        let (not_before, next_grant, detail) = match self.settings.retry.decide(class, grant, cap, transient, rand::random::<f64>()) {
            Retry::Larger(larger) => (now, larger, format!("attempt {attempt} ran out of its {grant}-byte grant: retrying at once with {larger} bytes")),
            Retry::After(wait) => {
                (now.saturating_add(micros(wait)), grant, format!("attempt {attempt} failed ({class}): retrying in {:.3} s", wait.as_secs_f64()))
            }
            Retry::No(why) => {
                let detail = format!("attempt {attempt} failed: {why}");
                if self.store.end_attempt(&job.id, fence, JobStatus::Failed, &detail, Some((class.as_str(), &message))).await? {
                    self.settle(job, JobStatus::Failed);
                    self.ended(job, "failed", Some((class.as_str(), &message)));
                }
                return Ok(());
            }
        };
        if self.store.retry(&job.id, fence, (class.as_str(), &message), not_before, i64::try_from(next_grant).unwrap_or(i64::MAX), &detail).await? {
            self.settle(job, JobStatus::Retrying);
            self.telemetry.metrics.retried(&job.tenant_id, class.as_str());
            self.next_retry.fetch_min(not_before, Ordering::SeqCst);
            self.wake();
        }
        Ok(())
    }

    /// Writes the attempt's files and commits the run with them, if this process still holds
    /// the job's lease for this attempt; retries the diff if another run of the same segment
    /// committed meanwhile.
    pub(super) async fn commit(&self, job: &JobRow, fence: Fence<'_>, mut members: Vec<String>, key_type: &str) -> Result<Committed> {
        members.sort_unstable();
        members.dedup();
        let members = Arc::new(members);
        let own = attempt_files(&job.id, fence.attempt);
        let refused = |why: String| {
            // Files no commit names: never read, deleted here.
            self.files.forget_attempt(&job.tenant_id, &job.segment_id, &own);
            Ok(Committed::Refused(why))
        };
        let mut previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
            Some(s) => s.latest_run_id,
            None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
        };
        for _ in 0..16 {
            // The files of the latest run, as its history record names them.
            let previous_files = match previous.as_str() {
                "" => String::new(),
                run => match self.store.run(&job.tenant_id, run).await? {
                    Some(r) => r.files,
                    None => return Err(Error::Internal(format!("the latest run {run} has no history record"))),
                },
            };
            let files = self.files.clone();
            let (tenant, segment, name, prev, current) =
                (job.tenant_id.clone(), job.segment_id.clone(), own.clone(), previous_files.clone(), Arc::clone(&members));
            let written = tokio::task::spawn_blocking(move || -> Result<(i64, i64)> {
                let before = files.read_members(&tenant, &segment, &prev)?;
                let (added, removed) = diff(&before, &current);
                files.write_run(&tenant, &segment, &name, &current, &added, &removed)?;
                Ok((added.len() as i64, removed.len() as i64))
            })
            .await
            .map_err(|e| Error::Internal(format!("membership writer: {e}")))?;
            let (added, removed) = match written {
                Ok(counts) => counts,
                Err(e) => {
                    // The run read as latest may have been replaced (and its file deleted)
                    // meanwhile: diff against the new latest. Otherwise the error stands.
                    let latest = self.store.segment(&job.tenant_id, &job.segment_id).await?.map(|s| s.latest_run_id);
                    match latest {
                        Some(latest) if latest != previous => {
                            previous = latest;
                            continue;
                        }
                        Some(_) => return Err(e),
                        None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
                    }
                }
            };
            let commit = Commit {
                job_id: &job.id,
                tenant_id: &job.tenant_id,
                segment_id: &job.segment_id,
                previous_run_id: &previous,
                members: members.len() as i64,
                added,
                removed,
                key_type,
                attempt: fence.attempt,
                owner: fence.owner,
                files: &own,
            };
            match self.store.commit_run(&commit).await? {
                CommitResult::Committed => {
                    // The members of the run replaced stay for readers that pinned it (until
                    // the next commit); the generation before it goes.
                    if let Some(older) = self.store.files_before(&job.tenant_id, &job.segment_id, &job.id, &previous_files).await? {
                        self.files.forget_members(&job.tenant_id, &job.segment_id, &older);
                    }
                    return Ok(Committed::Run { members: members.len() as i64, files: own });
                }
                CommitResult::LatestMoved(_) => {
                    previous = match self.store.segment(&job.tenant_id, &job.segment_id).await? {
                        Some(s) => s.latest_run_id,
                        None => return self.fail_commit(job, fence, "the segment was deleted while it ran").await,
                    };
                }
                CommitResult::NotRunning => return refused("not committed: the job was no longer running".into()),
                CommitResult::AlreadyCommitted => return refused("not committed: another attempt's run was committed".into()),
                CommitResult::Superseded => {
                    tracing::warn!(job = %job.id, attempt = fence.attempt, "this attempt's lease ran out and another attempt runs the job: nothing committed");
                    return refused(format!("not committed: the lease of process {} ran out and another attempt runs the job", fence.owner));
                }
            }
        }
        self.fail_commit(job, fence, "the segment's latest run kept changing; the commit gave up").await
    }

    pub(super) async fn fail_commit(&self, job: &JobRow, fence: Fence<'_>, why: &str) -> Result<Committed> {
        self.files.forget_attempt(&job.tenant_id, &job.segment_id, &attempt_files(&job.id, fence.attempt));
        if self.store.end_attempt(&job.id, fence, JobStatus::Failed, why, Some((FailureClass::Commit.as_str(), why))).await? {
            self.settle(job, JobStatus::Failed);
            self.ended(job, "failed", Some((FailureClass::Commit.as_str(), why)));
        }
        Ok(Committed::Failed)
    }
}

/// How an attempt's commit ended.
#[derive(Debug)]
pub(super) enum Committed {
    /// The run is committed with this many members, in the attempt's files of this name.
    Run { members: i64, files: String },
    /// Nothing committed, and the job is not this attempt's to end (why, in words).
    Refused(String),
    /// Nothing committed: the job failed (or was no longer this attempt's to fail).
    Failed,
}

/// Why an execution failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executor refused or failed.
    #[error(transparent)]
    Executor(cohort_executor::Error),
    /// The job's tenant, model or segment is gone or unusable.
    #[error("{0}")]
    Missing(String),
    /// The store failed while the job was set up (may pass by itself).
    #[error(transparent)]
    Store(Error),
    /// The service failed otherwise while the job was set up.
    #[error(transparent)]
    Service(Error),
    /// The execution task ended without an answer (a bug).
    #[error("{0}")]
    Internal(String),
}

impl ExecError {
    /// The failure's class and message, as stored.
    pub fn describe(&self) -> (FailureClass, String) {
        match self {
            ExecError::Executor(e) => (e.class().into(), e.to_string()),
            ExecError::Missing(m) => (FailureClass::Invalid, m.clone()),
            ExecError::Store(e) => (FailureClass::Store, e.to_string()),
            ExecError::Service(e) => (FailureClass::Internal, e.to_string()),
            ExecError::Internal(m) => (FailureClass::Internal, m.clone()),
        }
    }
}

impl From<Error> for ExecError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(_) => ExecError::Store(e),
            other => ExecError::Service(other),
        }
    }
}

pub(super) fn measured(report: &RunReport) -> AttemptOutcome {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    AttemptOutcome {
        outcome: String::new(),
        error_class: None,
        error_message: None,
        peak_memory_bytes: Some(as_i64(report.peak_memory_bytes as u64)),
        elapsed_micros: Some(as_i64(report.elapsed.as_micros() as u64)),
        rows_scanned: Some(as_i64(report.rows_scanned)),
        bytes_scanned: Some(as_i64(report.bytes_scanned)),
        spill_count: Some(as_i64(report.spill_count as u64)),
        plan_mode: Some(format!("{:?}", report.plan_mode).to_lowercase()),
        shape: Some([report.shape.objects as i64, report.shape.joins as i64, report.shape.related_predicates as i64, report.shape.max_hops as i64]),
        data_quality: None,
        phases: (!report.phases.is_empty())
            .then(|| {
                let phases: Vec<serde_json::Value> = report
                    .phases
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "place": p.place,
                            "rows": p.rows,
                            "started_ms": p.started.as_secs_f64() * 1e3,
                            "elapsed_ms": p.elapsed.as_secs_f64() * 1e3,
                        })
                    })
                    .collect();
                serde_json::to_string(&phases).ok()
            })
            .flatten(),
    }
}
