//! Runs (jobs): submitted, listed, watched and cancelled; a segment's members and history.

use super::*;

pub(super) fn job_view_waiting(pool: &Pool, job: JobRow) -> JobView {
    let waiting = pool.why_waiting(&job).map(WaitingView::from);
    let mut view = JobView::from(job);
    view.waiting = waiting;
    view
}

/// Enqueues a run of the segment. With an `Idempotency-Key` this tenant used before, answers
/// the first job (200) instead of queuing another.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/segments/{segment}/runs", tag = "runs",
    params(("tenant" = String, Path), ("segment" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Option<EnqueueRun>),
    responses((status = 202, body = JobView), (status = 200, body = JobView, description = "the job first queued with this idempotency key"),
        (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn enqueue_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    headers: HeaderMap,
    request_trace: Option<axum::Extension<RequestTrace>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The tenant and the segment in one read: this is the hot path of submissions.
    caller.may_see(&tenant)?;
    let (tenant, segment_row) = s.store.tenant_and_segment(&tenant, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {tenant:?}")))?;
    let request: EnqueueRun = if body.iter().all(u8::is_ascii_whitespace) { EnqueueRun::default() } else { parse_json(&body)? };
    let as_of = match &request.as_of {
        None => now_micros(),
        Some(text) => cohort_executor::parse_timestamp(text)
            .ok_or_else(|| ApiError::bad_request("invalid_body", format!("as_of {text:?} is not an RFC 3339 timestamp")))?,
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters"))?;
            if k.starts_with("schedule:") {
                return Err(ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key may not start with \"schedule:\" (the schedules' own keys)"));
            }
            Some(k.to_string())
        }
    };
    let timeout = match request.timeout_seconds {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
        Some(t) => return Err(ApiError::bad_request("invalid_body", format!("timeout_seconds must be a positive number of seconds, not {t}"))),
    };
    let segment_row = segment_row.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
    let submission = Submission { as_of, key, trigger: "api", timeout, trace_link: request_trace.map(|t| t.0.0) };
    let (job, created) = crate::service::submit(&s.store, &s.sizing, &s.pool, &tenant, &segment_row, submission).await?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(job_view_waiting(&s.pool, job))).into_response())
}

/// The segment's jobs, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/runs", tag = "runs",
    params(("tenant" = String, Path), ("segment" = String, Path), BeforePage),
    responses((status = 200, body = JobPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<BeforePage>,
) -> Result<Json<JobPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.jobs_of_segment(&tenant.id, &segment, page.before.as_deref().unwrap_or(""), limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
    Ok(Json(JobPage { items: rows.into_iter().map(|j| job_view_waiting(&s.pool, j)).collect(), next }))
}

/// One job, with its transitions. `wait_seconds` waits for a final state.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/runs/{run}", tag = "runs",
    params(("tenant" = String, Path), ("run" = String, Path), WaitQuery),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, run)): ApiPath<(String, String)>,
    ApiQuery(wait): ApiQuery<WaitQuery>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let missing = || ApiError::not_found(format!("no run {run:?}"));
    let while_status = match wait.while_status.as_deref() {
        None => None,
        Some(name) => Some(
            JobStatus::parse(name)
                .ok_or_else(|| ApiError::bad_request("invalid_query", format!("while_status {name:?}: expected a job status such as queued or running")))?,
        ),
    };
    let waiting = |status: JobStatus| match while_status {
        Some(w) => status == w,
        None => !status.is_final(),
    };
    let wait = Duration::from_secs(wait.wait_seconds.unwrap_or(0).min(60));
    let mut events = s.pool.subscribe();
    let mut job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    let deadline = tokio::time::Instant::now() + wait;
    while waiting(job.status) && !wait.is_zero() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Ok(event)) if event.job_id != job.id || waiting(event.status) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            // A message for this job, or missed messages (lagged): read the store again.
            Ok(_) => {}
        }
        job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    }
    let transitions = s.store.job_events(&job.id).await?.into_iter().map(|(at, from, to, detail)| Transition { at: rfc3339(at), from, to, detail }).collect();
    let attempts = s.store.attempts(&job.id).await?.into_iter().map(AttemptView::from).collect();
    let mut view = job_view_waiting(&s.pool, job);
    view.transitions = transitions;
    view.attempt_history = attempts;
    view.estimate = s.store.job_estimate(&view.id).await?.map(|e| EstimateView {
        memory_bytes: e.memory_bytes,
        bound_bytes: e.bound_bytes,
        runtime_seconds: e.runtime_micros as f64 / 1e6,
        model_version: e.model_version,
        basis: e.basis,
        features: serde_json::from_str(&e.features).unwrap_or_default(),
    });
    Ok(Json(view))
}

/// Cancels a job that has not finished.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/runs/{run}/cancel", tag = "runs",
    params(("tenant" = String, Path), ("run" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn cancel_run(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, run)): ApiPath<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let missing = || ApiError::not_found(format!("no run {run:?}"));
    let mut events = s.pool.subscribe();
    let job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    if job.status.is_final() {
        return Err(ApiError::conflict(format!("run {run:?} is already {}", job.status.as_str())));
    }
    for from in [JobStatus::Queued, JobStatus::Retrying] {
        if s.store.transition(&job.id, from, JobStatus::Cancelled, "cancelled by request", None).await? {
            s.pool.forget(&job.id, &job.tenant_id);
            s.pool.announce(&job.id, JobStatus::Cancelled);
            s.pool.ended(&job, "cancelled", None);
        }
    }
    if s.pool.cancel(&job.id) {
        // Running here: wait (briefly) for the worker to record the cancellation.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if event.job_id == job.id && event.status.is_final() {
                break;
            }
        }
    }
    let job = s.store.job(&tenant.id, &run).await?.ok_or_else(missing)?;
    Ok(Json(job_view_waiting(&s.pool, job)))
}

// ---- members and history

pub(super) fn key_value(key: String, key_type: &str) -> Value {
    if key_type == "int"
        && let Ok(n) = key.parse::<i64>()
    {
        return Value::from(n);
    }
    Value::String(key)
}

pub(super) fn history_record(row: RunRow) -> HistoryRecord {
    HistoryRecord {
        run_id: row.run_id,
        previous_run_id: Some(row.previous_run_id).filter(|r| !r.is_empty()),
        members: row.members,
        added: row.added,
        removed: row.removed,
        key_type: row.key_type,
        committed_at: rfc3339(row.committed_at),
    }
}

/// Reads one page of the file named `files` of a run (members or changes) off the async
/// threads; `None` if the file is gone.
pub(super) async fn read_page(
    s: &AppState,
    tenant: &str,
    segment: &str,
    files: &str,
    members: bool,
    offset: i64,
    limit: i64,
) -> Result<Option<KeyPage>, ApiError> {
    let (store, t, seg, f) = (s.files.clone(), tenant.to_string(), segment.to_string(), files.to_string());
    let (offset, limit) = (u64::try_from(offset).unwrap_or(0), u64::try_from(limit).unwrap_or(0));
    let page = tokio::task::spawn_blocking(move || {
        if members { store.read_members_page(&t, &seg, &f, offset, limit) } else { store.read_changes_page(&t, &seg, &f, offset, limit) }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(page)
}

/// The segment's members, paged: of its latest run, or of the run `run_id` names.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/members", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), MembersQuery),
    responses((status = 200, body = MembersPage),
        (status = 404, body = ErrorBody, description = "No such segment, or no run `run_id` in its history"),
        (status = 410, body = RunGoneBody, description = "The members of the pinned run `run_id` are gone (newer runs replaced them); \
            `error.details.latest_run_id` names the run to read now")),
    security(("bearer" = [])))]
pub(super) async fn get_members(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<MembersQuery>,
) -> Result<Json<MembersPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 1000, 10_000)?;
    let offset = page.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("invalid_query", "offset must not be negative"));
    }
    let missing_run = |run: &str| ApiError::not_found(format!("no run {run:?} in the history of {segment:?}"));
    // Unpinned, a commit may replace the latest run (and delete its members file) between
    // reading which run is the latest and opening its file: read the new latest then.
    for _ in 0..8 {
        let row = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
        let run_id = match &page.run_id {
            Some(pinned) => pinned.clone(),
            None if row.latest_run_id.is_empty() => {
                return Ok(Json(MembersPage { run_id: None, key_type: None, total: 0, offset, items: Vec::new() }));
            }
            None => row.latest_run_id.clone(),
        };
        let run = match s.store.run(&tenant.id, &run_id).await?.filter(|r| r.segment_id == segment) {
            Some(run) => run,
            None if page.run_id.is_some() => return Err(missing_run(&run_id)),
            // The segment was deleted and made again meanwhile: read it again.
            None => continue,
        };
        match read_page(&s, &tenant.id, &segment, &run.files, true, offset, limit).await? {
            Some(found) => {
                let total = i64::try_from(found.total).unwrap_or(i64::MAX);
                let items = found.keys.into_iter().map(|(k, _)| key_value(k, &run.key_type)).collect();
                return Ok(Json(MembersPage { run_id: Some(run.run_id), key_type: Some(run.key_type), total, offset, items }));
            }
            None if page.run_id.is_some() => {
                let latest = s.store.segment(&tenant.id, &segment).await?.map(|r| r.latest_run_id).filter(|r| !r.is_empty());
                if latest.as_deref() == Some(run_id.as_str()) {
                    return Err(ApiError::internal(format!("the members file of the latest run {run_id} of {segment:?} is missing")));
                }
                return Err(ApiError::new(StatusCode::GONE, "run_gone", format!("the members of run {run_id:?} are gone: newer runs replaced them"))
                    .with_details(json!({ "latest_run_id": latest })));
            }
            None => continue,
        }
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the segment's latest run kept changing while it was read; try again"))
}

/// The segment's membership history, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/history", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), BeforePage),
    responses((status = 200, body = HistoryPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_history(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<BeforePage>,
) -> Result<Json<HistoryPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.runs(&tenant.id, &segment, page.before.as_deref().unwrap_or(""), limit).await?;
    if rows.is_empty() && s.store.segment(&tenant.id, &segment).await?.is_none() {
        return Err(ApiError::not_found(format!("no segment {segment:?}")));
    }
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.run_id.clone())).flatten();
    Ok(Json(HistoryPage { items: rows.into_iter().map(history_record).collect(), next }))
}

/// One run's record and the keys it added and removed, paged.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}/history/{run}", tag = "members",
    params(("tenant" = String, Path), ("segment" = String, Path), ("run" = String, Path), OffsetPage),
    responses((status = 200, body = HistoryDetail), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_history_record(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment, run)): ApiPath<(String, String, String)>,
    ApiQuery(page): ApiQuery<OffsetPage>,
) -> Result<Json<HistoryDetail>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 1000, 10_000)?;
    let offset = page.offset.unwrap_or(0).max(0);
    let row = s
        .store
        .run(&tenant.id, &run)
        .await?
        .filter(|r| r.segment_id == segment)
        .ok_or_else(|| ApiError::not_found(format!("no run {run:?} in the history of {segment:?}")))?;
    // A run that changed nothing may have no file (a job that rode on another's execution).
    let (total, changes) = if row.added == 0 && row.removed == 0 {
        (0, Vec::new())
    } else {
        let page = read_page(&s, &tenant.id, &segment, &row.files, false, offset, limit)
            .await?
            .ok_or_else(|| ApiError::internal(format!("the changes file of run {run} is missing")))?;
        (i64::try_from(page.total).unwrap_or(i64::MAX), page.keys)
    };
    let changes = changes.into_iter().map(|(key, change)| KeyChange { key: key_value(key, &row.key_type), change }).collect();
    Ok(Json(HistoryDetail { run: history_record(row), total, offset, changes }))
}
