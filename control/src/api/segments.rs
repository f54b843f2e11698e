//! Segments: stored, read, listed and deleted.

use super::*;

pub(super) fn segment_view(row: SegmentRow) -> Result<SegmentView, ApiError> {
    Ok(SegmentView {
        id: row.id,
        definition: serde_json::from_str(&row.definition).map_err(ApiError::internal)?,
        schedule: row.schedule,
        timezone: row.timezone,
        overlap: row.overlap,
        latest_run_id: Some(row.latest_run_id).filter(|r| !r.is_empty()),
        members: row.members,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        next_due_at: row.next_due_at.map(rfc3339),
        buffered_due_at: row.buffered_due_at.map(rfc3339),
        missed_runs: row.missed_runs,
        overlapped_runs: row.overlapped_runs,
    })
}

/// Creates or replaces a segment, after checking it against the tenant's model.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)), request_body = PutSegment,
    responses((status = 200, body = SegmentView), (status = 201, body = SegmentView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn put_segment(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutSegment>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    check_id("segment", &segment)?;
    if let Some(name) = body.definition.get("name")
        && name.as_str() != Some(segment.as_str())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_segment",
            format!("invalid segment: name: {name} differs from the segment id {segment:?} in the path (leave it out or make them equal)"),
        )
        .with_details(json!({"place": "name"})));
    }
    let overlap = body.overlap.unwrap_or_else(|| "skip".into());
    if !matches!(overlap.as_str(), "skip" | "buffer_one" | "allow") {
        return Err(ApiError::bad_request("invalid_body", format!("overlap {overlap:?}: expected skip, buffer_one or allow")));
    }
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    let next_due_at = match &body.schedule {
        None => {
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(ApiError::bad_request("invalid_schedule", format!("timezone {timezone:?}: not an IANA time zone name")));
            }
            None
        }
        Some(schedule) => {
            let parsed = CronSchedule::parse(schedule, &timezone).map_err(|e| ApiError::bad_request("invalid_schedule", e))?;
            let next = parsed.next_after(now_micros());
            if next.is_none() {
                return Err(ApiError::bad_request("invalid_schedule", format!("schedule {schedule:?} is never due again")));
            }
            next
        }
    };
    let model = s.store.model(&tenant.id).await?.ok_or_else(|| ApiError::conflict("the tenant has no model: PUT its model first"))?;
    let model_value: Value = serde_json::from_str(&model.definition).map_err(ApiError::internal)?;
    let catalog = crate::service::check_model(&s.pool.catalogs(), &tenant, &model_value).await?;
    Segment::from_value(&body.definition, &catalog)?;
    let row = SegmentRow {
        tenant_id: tenant.id.clone(),
        id: segment.clone(),
        definition: body.definition.to_string(),
        schedule: body.schedule,
        timezone,
        overlap,
        next_due_at,
        ..SegmentRow::default()
    };
    let created = s.store.put_segment(&row).await?;
    s.schedules.notify_one();
    let stored = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::internal("segment vanished"))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(segment_view(stored)?)).into_response())
}

/// One segment.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)),
    responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_segment(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
) -> Result<Json<SegmentView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let row = s.store.segment(&tenant.id, &segment).await?.ok_or_else(|| ApiError::not_found(format!("no segment {segment:?}")))?;
    Ok(Json(segment_view(row)?))
}

/// Deletes a segment (its jobs and history stay readable by run id).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/segments/{segment}", tag = "segments",
    params(("tenant" = String, Path), ("segment" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn delete_segment(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((tenant, segment)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    if s.store.delete_segment(&tenant.id, &segment).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::not_found(format!("no segment {segment:?}"))) }
}

/// The tenant's segments.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments", tag = "segments", params(("tenant" = String, Path), AfterPage),
    responses((status = 200, body = SegmentPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list_segments(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(page): ApiQuery<AfterPage>,
) -> Result<Json<SegmentPage>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = s.store.segments(&tenant.id, page.after.as_deref().unwrap_or(""), limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
    let items = rows.into_iter().map(segment_view).collect::<Result<_, _>>()?;
    Ok(Json(SegmentPage { items, next }))
}
