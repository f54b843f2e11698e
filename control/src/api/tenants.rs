//! Tenants, their tokens and their data models.

use super::*;

/// Creates a tenant and its first token.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_tenant(State(s): State<AppState>, caller: Caller, ApiJson(body): ApiJson<CreateTenant>) -> Result<Response, ApiError> {
    caller.admin()?;
    check_id("tenant", &body.id)?;
    if body.region.trim().is_empty() || body.region.len() > 64 {
        return Err(ApiError::bad_request("invalid_body", "region must be 1 to 64 characters"));
    }
    let root = FsPath::new(&body.data_root);
    if body.data_root.starts_with("s3://") {
        s.pool.catalogs().storage().check_tenant(&body.data_root, body.storage.as_ref()).map_err(|m| ApiError::bad_request("invalid_data_root", m))?;
    } else if !root.is_absolute() || !root.is_dir() {
        return Err(ApiError::bad_request(
            "invalid_data_root",
            format!("data_root {:?} must be an absolute path to an existing folder, or an s3://bucket/prefix/", body.data_root),
        ));
    } else if body.storage.is_some() {
        return Err(ApiError::bad_request("invalid_body", "storage settings are for a data_root in object storage (s3://bucket/prefix/)"));
    }
    let positive = |name: &str, v: Option<i64>, default: i64| match v {
        None => Ok(default),
        Some(n) if n > 0 => Ok(n),
        Some(n) => Err(ApiError::bad_request("invalid_body", format!("{name} must be positive, not {n}"))),
    };
    let share = body.share.unwrap_or(1.0);
    if !(share.is_finite() && share > 0.0) {
        return Err(ApiError::bad_request("invalid_body", "share must be a positive number"));
    }
    let tenant = Tenant {
        id: body.id,
        region: body.region,
        data_root: body.data_root,
        max_concurrent_jobs: positive("max_concurrent_jobs", body.max_concurrent_jobs, 4)?,
        memory_quota_bytes: positive("memory_quota_bytes", body.memory_quota_bytes, i64::MAX)?,
        jobs_per_minute: positive("jobs_per_minute", body.jobs_per_minute, 600)?,
        share,
        created_at: rfc3339(now_micros()),
        storage: body.storage,
    };
    let token = new_token("ct_");
    s.store.create_tenant(&tenant, &stored_token(&token)).await?;
    // Its failure counters show at 0 from now on, before its first job.
    s.pool.telemetry().metrics.set_region(&tenant.id, &tenant.region);
    tracing::info!(tenant = %tenant.id, region = %tenant.region, "tenant created");
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant, token })).into_response())
}

/// Lists tenants (a tenant token sees only its own).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(AfterPage),
    responses((status = 200, body = TenantPage)), security(("bearer" = [])))]
pub(super) async fn list_tenants(State(s): State<AppState>, caller: Caller, ApiQuery(page): ApiQuery<AfterPage>) -> Result<Json<TenantPage>, ApiError> {
    let limit = limit(page.limit, 100, 1000)?;
    let items = match &caller {
        Caller::Admin => s.store.tenants(page.after.as_deref().unwrap_or(""), limit).await?,
        Caller::Tenant(own) => {
            let after = page.after.as_deref().unwrap_or("");
            s.store.tenant(own).await?.into_iter().filter(|t| t.id.as_str() > after).collect()
        }
    };
    let next = (items.len() as i64 == limit).then(|| items.last().map(|t| t.id.clone())).flatten();
    Ok(Json(TenantPage { items, next }))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_tenant(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<Tenant>, ApiError> {
    Ok(Json(caller.tenant(&s.store, &tenant).await?))
}

/// Adds a token to a tenant (the old ones stay valid).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 201, body = TokenCreated), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn create_token(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Response, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let token = new_token("ct_");
    let hash = stored_token(&token);
    s.store.add_token(&tenant.id, &hash).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, id: crate::store::token_id(&hash) })).into_response())
}

/// A tenant's tokens, by id (the tokens themselves are never shown again).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = TokenList), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn list_tokens(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<TokenList>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let items = s.store.tokens(&tenant.id).await?.into_iter().map(|t| TokenView { id: t.id, created_at: rfc3339(t.created_at) }).collect();
    Ok(Json(TokenList { items }))
}

/// Revokes one of a tenant's tokens: refused from now on by this process, and by every other
/// process on the store within one lease period.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{token}", tag = "tenants",
    params(("tenant" = String, Path), ("token" = String, Path, description = "The token's id, as listed")),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn revoke_token(State(s): State<AppState>, caller: Caller, ApiPath((tenant, id)): ApiPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    if s.store.revoke_token(&tenant.id, &id).await? {
        tracing::info!(tenant = %tenant.id, token = %id, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("tenant {:?} has no token {id:?}", tenant.id)))
    }
}

// ---- models

/// Replaces the tenant's data model, after checking it against the sources.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/model", tag = "models", params(("tenant" = String, Path)),
    request_body(content = Object, description = "The data model (segments.md)"),
    responses((status = 200, body = ModelView), (status = 422, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn put_model(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(definition): ApiJson<Value>,
) -> Result<Json<ModelView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let stored = crate::service::store_model(&s.store, &s.pool.catalogs(), &tenant, &definition).await?;
    let StoredModel { version, objects, relationships, source_bytes } = stored;
    Ok(Json(ModelView { version, objects, relationships, source_bytes, updated_at: rfc3339(now_micros()), definition: Value::Null }))
}

/// The tenant's data model.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/model", tag = "models", params(("tenant" = String, Path)),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn get_model(State(s): State<AppState>, caller: Caller, ApiPath(tenant): ApiPath<String>) -> Result<Json<ModelView>, ApiError> {
    let tenant = caller.tenant(&s.store, &tenant).await?;
    let row = s.store.model(&tenant.id).await?.ok_or_else(|| ApiError::not_found("the tenant has no model yet"))?;
    Ok(Json(ModelView {
        version: row.version,
        objects: row.objects,
        relationships: row.relationships,
        source_bytes: row.source_bytes,
        updated_at: rfc3339(row.updated_at),
        definition: serde_json::from_str(&row.definition).map_err(ApiError::internal)?,
    }))
}
