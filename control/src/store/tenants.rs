//! Tenants, their tokens and dashboard sessions, their models and their segments.
//!
//! Token hashes once found are remembered for the token TTL (a revocation here forgets at once;
//! other replicas' within the TTL). `tenant_and_segment` reads both in one query for a submission;
//! `recent_model` reuses a model read for two seconds to size submissions (this process's own
//! changes at once). Dashboard sessions are stored as hashes with their expiry.

use super::*;

impl Store {
    // ---- tenants and tokens

    /// Creates a tenant with its first token; `Conflict` if the id is taken.
    pub async fn create_tenant(&self, tenant: &Tenant, token_hash: &str) -> Result<()> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1").bind(&tenant.id).fetch_optional(&mut *tx).await?;
        if exists.is_some() {
            return Err(Error::Conflict(format!("tenant {:?} already exists", tenant.id)));
        }
        sqlx::query(
            "INSERT INTO tenants (id, region, data_root, max_concurrent_jobs, memory_quota_bytes, jobs_per_minute, share, created_at, storage) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&tenant.id)
        .bind(&tenant.region)
        .bind(&tenant.data_root)
        .bind(tenant.max_concurrent_jobs)
        .bind(tenant.memory_quota_bytes)
        .bind(tenant.jobs_per_minute)
        .bind(tenant.share)
        .bind(now)
        .bind(tenant.storage.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default()))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO tokens (hash, tenant_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(&tenant.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The store, remembering tokens found for `ttl` at most (a token revoked by another
    /// process is refused here after that).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Store {
        self.token_ttl = ttl;
        self
    }

    /// A tenant's tokens (by id, never the token), oldest first.
    pub async fn tokens(&self, tenant_id: &str) -> Result<Vec<TokenRow>> {
        let rows =
            sqlx::query("SELECT hash, created_at FROM tokens WHERE tenant_id = $1 ORDER BY created_at, hash").bind(tenant_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(TokenRow { id: token_id(&r.try_get::<String, _>(0)?), created_at: r.try_get(1)? })).collect()
    }

    /// Revokes a tenant's token by its id; `false` if the tenant has no such token. This
    /// process refuses it from now on.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let Some(prefix) = id.strip_prefix(TOKEN_ID_PREFIX).filter(|p| p.len() == TOKEN_ID_HEX && p.bytes().all(|b| b.is_ascii_hexdigit())) else {
            return Ok(false);
        };
        let prefix = prefix.to_ascii_lowercase();
        let rows = sqlx::query("SELECT hash FROM tokens WHERE tenant_id = $1").bind(tenant_id).fetch_all(&self.pool).await?;
        let mut revoked = false;
        for r in rows {
            let hash: String = r.try_get(0)?;
            if !hash.starts_with(&prefix) {
                continue;
            }
            let deleted = sqlx::query("DELETE FROM tokens WHERE hash = $1 AND tenant_id = $2").bind(&hash).bind(tenant_id).execute(&self.pool).await?;
            self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&hash);
            revoked |= deleted.rows_affected() > 0;
        }
        Ok(revoked)
    }

    /// Adds a token to a tenant.
    pub async fn add_token(&self, tenant_id: &str, token_hash: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, tenant_id, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(tenant_id)
            .bind(now_micros())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The tenant a token hash belongs to.
    pub async fn tenant_for_token(&self, token_hash: &str) -> Result<Option<String>> {
        if let Some((tenant, read)) = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(token_hash)
            && read.elapsed() < self.token_ttl
        {
            return Ok(Some(tenant.clone()));
        }
        let row = sqlx::query("SELECT tenant_id FROM tokens WHERE hash = $1").bind(token_hash).fetch_optional(&self.pool).await?;
        let tenant = row.map(|r| r.try_get::<String, _>(0)).transpose()?;
        if let Some(t) = &tenant {
            let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if tokens.len() >= TOKENS_KEPT {
                tokens.clear();
            }
            tokens.insert(token_hash.to_string(), (t.clone(), std::time::Instant::now()));
        } else {
            self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(token_hash);
        }
        Ok(tenant)
    }

    // ---- dashboard sessions

    /// Records a dashboard session by the hash of its id, until `expires_at`; sessions
    /// already over are deleted.
    pub async fn create_session(&self, hash: &str, expires_at: i64) -> Result<()> {
        let now = now_micros();
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        sqlx::query("INSERT INTO ui_sessions (hash, created_at, expires_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a session (by the hash of its id) exists and has not ended.
    pub async fn session_live(&self, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT expires_at FROM ui_sessions WHERE hash = $1").bind(hash).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? > now_micros(),
            None => false,
        })
    }

    /// Ends a session.
    pub async fn end_session(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE hash = $1").bind(hash).execute(&self.pool).await?;
        Ok(())
    }

    /// One tenant.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    /// Tenants ordered by id, after `after`.
    pub async fn tenants(&self, after: &str, limit: i64) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    // ---- models

    /// Replaces a tenant's model; returns its new version.
    pub async fn put_model(&self, tenant_id: &str, definition: &str, objects: i64, relationships: i64, source_bytes: i64) -> Result<i64> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let current = sqlx::query("SELECT version FROM models WHERE tenant_id = $1").bind(tenant_id).fetch_optional(&mut *tx).await?;
        let version = match current {
            Some(row) => {
                let version = row.try_get::<i64, _>(0)? + 1;
                sqlx::query(
                    "UPDATE models SET version = $1, definition = $2, objects = $3, relationships = $4, source_bytes = $5, updated_at = $6 \
                     WHERE tenant_id = $7",
                )
                .bind(version)
                .bind(definition)
                .bind(objects)
                .bind(relationships)
                .bind(source_bytes)
                .bind(now)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
                version
            }
            None => {
                sqlx::query(
                    "INSERT INTO models (tenant_id, version, definition, objects, relationships, source_bytes, updated_at) \
                     VALUES ($1, 1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant_id)
                .bind(definition)
                .bind(objects)
                .bind(relationships)
                .bind(source_bytes)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                1
            }
        };
        tx.commit().await?;
        self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant_id);
        Ok(version)
    }

    /// A tenant and one of its segments, in one query: `None` without the tenant, the
    /// segment `None` without it.
    pub async fn tenant_and_segment(&self, tenant_id: &str, segment_id: &str) -> Result<Option<(Tenant, Option<SegmentRow>)>> {
        let columns = |table: &str, list: &str| list.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {}, {} FROM tenants t LEFT JOIN segments s ON s.tenant_id = t.id AND s.id = $2 WHERE t.id = $1",
            columns("t", TENANT_COLUMNS),
            columns("s", SEGMENT_COLUMNS)
        );
        let Some(row) = sqlx::query(&sql).bind(tenant_id).bind(segment_id).fetch_optional(&self.pool).await? else { return Ok(None) };
        let tenant = tenant_from_row(&row)?;
        let at = TENANT_COLUMNS.split(',').count();
        let found: Option<String> = row.try_get(at + 1)?;
        let segment = found.map(|_| segment_from_row_at(&row, at)).transpose()?;
        Ok(Some((tenant, segment)))
    }

    /// The tenant's model as read at most [`MODEL_MAX_AGE`] ago (this process's own changes
    /// at once): for sizing submissions, not for running them.
    pub async fn recent_model(&self, tenant_id: &str) -> Result<Option<Arc<ModelRow>>> {
        let cached = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant_id)
            .filter(|(at, _)| at.elapsed() < MODEL_MAX_AGE)
            .map(|(_, row)| Arc::clone(row));
        if cached.is_some() {
            return Ok(cached);
        }
        let Some(row) = self.model(tenant_id).await? else { return Ok(None) };
        let row = Arc::new(row);
        let mut models = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if models.len() >= TOKENS_KEPT {
            models.retain(|_, (at, _)| at.elapsed() < MODEL_MAX_AGE);
        }
        models.insert(tenant_id.to_string(), (std::time::Instant::now(), Arc::clone(&row)));
        Ok(Some(row))
    }

    /// A tenant's model.
    pub async fn model(&self, tenant_id: &str) -> Result<Option<ModelRow>> {
        let row = sqlx::query("SELECT version, definition, objects, relationships, source_bytes, updated_at FROM models WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ModelRow {
                version: r.try_get(0)?,
                definition: r.try_get(1)?,
                objects: r.try_get(2)?,
                relationships: r.try_get(3)?,
                source_bytes: r.try_get(4)?,
                updated_at: r.try_get(5)?,
            })
        })
        .transpose()
    }

    // ---- segments

    /// Creates or replaces a segment's definition and schedule; true when created. The
    /// schedule's next due time is `row.next_due_at` when the schedule is new or changed; an
    /// unchanged schedule keeps its place (a due run is neither skipped nor repeated).
    pub async fn put_segment(&self, row: &SegmentRow) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let existing = sqlx::query("SELECT schedule, timezone, next_due_at FROM segments WHERE tenant_id = $1 AND id = $2")
            .bind(&row.tenant_id)
            .bind(&row.id)
            .fetch_optional(&mut *tx)
            .await?;
        let exists = existing.is_some();
        if let Some(existing) = existing {
            let (schedule, timezone, next_due): (Option<String>, String, Option<i64>) = (existing.try_get(0)?, existing.try_get(1)?, existing.try_get(2)?);
            // A schedule with no next due time (stored before schedules ran, or past its
            // last due time) takes the one computed now.
            let same_schedule = schedule == row.schedule && timezone == row.timezone && next_due.is_some();
            sqlx::query(
                "UPDATE segments SET definition = $1, schedule = $2, timezone = $3, overlap = $4, updated_at = $5 \
                 WHERE tenant_id = $6 AND id = $7",
            )
            .bind(&row.definition)
            .bind(&row.schedule)
            .bind(&row.timezone)
            .bind(&row.overlap)
            .bind(now)
            .bind(&row.tenant_id)
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
            if !same_schedule {
                sqlx::query("UPDATE segments SET next_due_at = $1, buffered_due_at = NULL WHERE tenant_id = $2 AND id = $3")
                    .bind(row.next_due_at)
                    .bind(&row.tenant_id)
                    .bind(&row.id)
                    .execute(&mut *tx)
                    .await?;
            }
        } else {
            sqlx::query(
                "INSERT INTO segments (tenant_id, id, definition, schedule, timezone, overlap, latest_run_id, members, created_at, \
                 updated_at, next_due_at) VALUES ($1, $2, $3, $4, $5, $6, '', 0, $7, $7, $8)",
            )
            .bind(&row.tenant_id)
            .bind(&row.id)
            .bind(&row.definition)
            .bind(&row.schedule)
            .bind(&row.timezone)
            .bind(&row.overlap)
            .bind(now)
            .bind(row.next_due_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(!exists)
    }

    /// One segment.
    pub async fn segment(&self, tenant_id: &str, id: &str) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| segment_from_row(&r)).transpose()
    }

    /// A tenant's segments ordered by id, after `after`.
    pub async fn segments(&self, tenant_id: &str, after: &str, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .bind(tenant_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from_row).collect()
    }

    /// Deletes a segment; false if there was none.
    pub async fn delete_segment(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM segments WHERE tenant_id = $1 AND id = $2").bind(tenant_id).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
