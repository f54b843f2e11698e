//! Tenants' object storage: the settings a tenant's data root in an S3-compatible store is
//! read with, and the credentials the service's configuration references.
//!
//! A tenant whose `data_root` is `s3://bucket/prefix/` carries a [`TenantStorage`]
//! (endpoint, region, path-style, plain HTTP, and the *name* of its credentials). The
//! credentials themselves live outside the store: `[storage.credentials.NAME]` in the
//! configuration names the environment variables, or a file, that hold them, read each time a
//! tenant's catalog is built (a rotated key is picked up at the next load). Neither the store
//! nor the API ever holds or shows a key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cohort_executor::storage::{ObjectStores, S3Credentials, S3Settings, split_s3};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a tenant's `s3://` data root is reached. Stored with the tenant; holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantStorage {
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000` (default: Amazon S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want
    /// (default: true when an endpoint is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Allow a plain `http://` endpoint (default: true when the endpoint is `http://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// The name of the credentials in the service's configuration
    /// (`[storage.credentials.NAME]`); none: unsigned requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// Where one set of credentials is read from: environment variables, or a TOML file with
/// `access_key_id`, `secret_access_key` and optionally `session_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialSource {
    /// The variable holding the access key id.
    pub access_key_id_env: Option<String>,
    /// The variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// The variable holding a session token (optional).
    pub session_token_env: Option<String>,
    /// A TOML file holding the keys instead.
    pub file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialFile {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
}

impl CredentialSource {
    /// Reads the credentials now. The error names the variable or file, never a value.
    pub fn read(&self, name: &str) -> Result<S3Credentials> {
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("credentials {name:?}: cannot read {}: {e}", path.display())))?;
            let file: CredentialFile = toml::from_str(&text)
                .map_err(|_| Error::Config(format!("credentials {name:?}: {} is not a TOML file of access_key_id and secret_access_key", path.display())))?;
            return Ok(S3Credentials { access_key_id: file.access_key_id, secret_access_key: file.secret_access_key, session_token: file.session_token });
        }
        let var = |what: &str, variable: &Option<String>| -> Result<String> {
            let variable = variable.as_deref().ok_or_else(|| Error::Config(format!("credentials {name:?}: no {what}_env or file")))?;
            std::env::var(variable).ok().filter(|v| !v.is_empty()).ok_or_else(|| Error::Config(format!("credentials {name:?}: {variable} is not set")))
        };
        let session_token = match &self.session_token_env {
            Some(v) => Some(var("session_token", &Some(v.clone()))?),
            None => None,
        };
        Ok(S3Credentials {
            access_key_id: var("access_key_id", &self.access_key_id_env)?,
            secret_access_key: var("secret_access_key", &self.secret_access_key_env)?,
            session_token,
        })
    }
}

/// An Iceberg SQL catalog models may name (`{"format": "iceberg", "catalog": NAME, "table":
/// "ns.table"}`): the database PyIceberg's `SqlCatalog` (or Java's JDBC catalog) keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergCatalog {
    /// Its database, as an sqlx URL: `sqlite:///path/catalog.db?mode=ro`, `postgres://…`.
    pub uri: String,
    /// The catalog's name in it (its `catalog_name` column); default: the name it is
    /// configured under.
    #[serde(default)]
    pub catalog_name: Option<String>,
}

/// The `[storage]` section: credentials by name, Iceberg catalogs, and how object-store
/// requests are retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Credentials tenants may name.
    pub credentials: BTreeMap<String, CredentialSource>,
    /// Iceberg SQL catalogs models may name (`[storage.iceberg_catalogs.NAME]`).
    pub iceberg_catalogs: BTreeMap<String, IcebergCatalog>,
    /// The time one request may take (`COHORT_STORAGE_REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout_seconds: f64,
    /// Retries of a failed request: a timeout, a 5xx, `SlowDown` (`COHORT_STORAGE_MAX_RETRIES`).
    pub max_retries: usize,
    /// The time after an operation's first request past which it is not retried
    /// (`COHORT_STORAGE_RETRY_TIMEOUT_SECONDS`); the run then fails `source_unavailable` and
    /// is retried as a new attempt.
    pub retry_timeout_seconds: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let s = S3Settings::default();
        StorageConfig {
            credentials: BTreeMap::new(),
            iceberg_catalogs: BTreeMap::new(),
            request_timeout_seconds: s.request_timeout.as_secs_f64(),
            max_retries: s.max_retries,
            retry_timeout_seconds: s.retry_timeout.as_secs_f64(),
        }
    }
}

impl StorageConfig {
    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<()> {
        for (name, seconds) in
            [("storage.request_timeout_seconds", self.request_timeout_seconds), ("storage.retry_timeout_seconds", self.retry_timeout_seconds)]
        {
            if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e6) {
                return Err(Error::Config(format!("{name} must be a number of seconds above 0")));
            }
        }
        for (name, source) in &self.credentials {
            let by_env = source.access_key_id_env.is_some() || source.secret_access_key_env.is_some();
            if by_env == source.file.is_some() || (by_env && (source.access_key_id_env.is_none() || source.secret_access_key_env.is_none())) {
                return Err(Error::Config(format!("storage.credentials.{name}: give access_key_id_env and secret_access_key_env, or a file, not both")));
            }
        }
        Ok(())
    }

    /// Checks a tenant's storage settings against its data root when the tenant is created:
    /// an `s3://` root needs a bucket; named credentials must be configured. A local root
    /// takes no storage settings.
    pub fn check_tenant(&self, data_root: &str, storage: Option<&TenantStorage>) -> std::result::Result<(), String> {
        if !data_root.starts_with("s3://") {
            return match storage {
                Some(_) => Err("storage settings are for a data_root in object storage (s3://bucket/prefix/)".into()),
                None => Ok(()),
            };
        }
        let (bucket, key) = split_s3(data_root).ok_or_else(|| format!("data_root {data_root:?} names no bucket (s3://bucket/prefix/)"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(format!("{bucket:?} is not a bucket name (3 to 63 of a-z 0-9 . -)"));
        }
        if key.split('/').any(|part| part == "." || part == "..") || key.contains("//") || key.contains(['*', '?', '[', '#', '\\']) {
            return Err(format!("data_root {data_root:?}: the prefix must be plain folder names, without . or .. or glob characters"));
        }
        let storage = storage.cloned().unwrap_or_default();
        if let Some(endpoint) = &storage.endpoint {
            let parsed = url::Url::parse(endpoint).map_err(|e| format!("storage.endpoint {endpoint:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!("storage.endpoint {endpoint:?} must be an http:// or https:// address"));
            }
        }
        if let Some(region) = &storage.region
            && (region.is_empty() || region.len() > 64 || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!("storage.region {region:?} must be 1 to 64 of A-Z a-z 0-9 - _"));
        }
        if let Some(name) = &storage.credentials
            && !self.credentials.contains_key(name)
        {
            return Err(format!("storage.credentials {name:?} is not configured ([storage.credentials.{name}] in the service's configuration)"));
        }
        Ok(())
    }

    /// The S3 settings of a tenant's storage, its credentials read now.
    pub fn settings(&self, storage: Option<&TenantStorage>) -> Result<S3Settings> {
        let storage = storage.cloned().unwrap_or_default();
        let credentials = match &storage.credentials {
            Some(name) => {
                let source = self.credentials.get(name).ok_or_else(|| Error::Config(format!("credentials {name:?} are not configured")))?;
                Some(source.read(name)?)
            }
            None => None,
        };
        let with_endpoint = storage.endpoint.is_some();
        Ok(S3Settings {
            allow_http: storage.allow_http.unwrap_or_else(|| storage.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            endpoint: storage.endpoint,
            region: storage.region.unwrap_or_else(|| "us-east-1".into()),
            path_style: storage.path_style.unwrap_or(with_endpoint),
            credentials,
            request_timeout: Duration::from_secs_f64(self.request_timeout_seconds),
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs_f64(self.retry_timeout_seconds),
        })
    }

    /// The model with its tables from Iceberg catalogs resolved to their current metadata
    /// files (inside the tenant's data root: see [`cohort_executor::Model::resolve_table`]).
    /// A catalog nobody configured, or a table it does not have, is the model's error.
    pub async fn resolve_tables(&self, model: cohort_executor::Model) -> Result<cohort_executor::Model> {
        let mut model = model;
        for (index, catalog, table) in model.catalog_tables() {
            let place = format!("objects[{index}].source.catalog");
            let Some(config) = self.iceberg_catalogs.get(&catalog) else {
                let known: Vec<&str> = self.iceberg_catalogs.keys().map(String::as_str).collect();
                return Err(Error::Model(cohort_executor::Error::invalid_model(
                    place,
                    format!("no Iceberg catalog {catalog:?} is configured (configured: {known:?})"),
                )));
            };
            let name = config.catalog_name.as_deref().unwrap_or(&catalog);
            let location = crate::store::catalogs::iceberg_metadata_location(&config.uri, name, &table).await.map_err(|e| {
                Error::Model(cohort_executor::Error::Source { object: model.objects[index].name.clone(), message: format!("Iceberg catalog {catalog:?}: {e}") })
            })?;
            let location = location.ok_or_else(|| {
                Error::Model(cohort_executor::Error::invalid_model(
                    format!("objects[{index}].source.table"),
                    format!("the Iceberg catalog {catalog:?} has no table {table:?}"),
                ))
            })?;
            model = model.resolve_table(index, &location)?;
        }
        Ok(model)
    }

    /// The object stores a tenant's model is read through: its S3 client settings when its
    /// data root is in object storage, none otherwise.
    pub fn stores(&self, data_root: &str, storage: Option<&TenantStorage>) -> Result<Arc<ObjectStores>> {
        if !data_root.starts_with("s3://") {
            return Ok(Arc::new(ObjectStores::default()));
        }
        Ok(Arc::new(ObjectStores::s3(self.settings(storage)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_names_credentials_that_are_configured_and_never_holds_them() {
        let mut config = StorageConfig::default();
        config.credentials.insert(
            "lake".into(),
            CredentialSource {
                access_key_id_env: Some("COHORT_TEST_NO_SUCH_KEY".into()),
                secret_access_key_env: Some("COHORT_TEST_NO_SUCH_SECRET".into()),
                ..Default::default()
            },
        );
        config.check().expect("valid");
        let named = |n: &str| TenantStorage { credentials: Some(n.into()), ..Default::default() };
        assert!(config.check_tenant("s3://lake-data/acme/", Some(&named("lake"))).is_ok());
        assert!(config.check_tenant("s3://lake-data/acme/", Some(&named("other"))).expect_err("not configured").contains("not configured"));
        assert!(config.check_tenant("/data/acme", Some(&named("lake"))).is_err());
        assert!(config.check_tenant("s3://Lake/acme", None).is_err());
        assert!(config.check_tenant("s3://lake-data/../x", None).is_err());
        assert!(config.check_tenant("s3://", None).is_err());
        // The variables are unset: the error names the variable, and nothing else.
        let e = config.settings(Some(&named("lake"))).expect_err("the variables are unset").to_string();
        assert!(e.contains("COHORT_TEST_NO_SUCH_KEY"), "{e}");
    }

    #[test]
    fn credentials_come_from_a_file_and_the_error_shows_no_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lake.toml");
        std::fs::write(&path, "access_key_id = \"AK\"\nsecret_access_key = \"SECRET\"\n").expect("write");
        let source = CredentialSource { file: Some(path.clone()), ..Default::default() };
        let c = source.read("lake").expect("read");
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str()), ("AK", "SECRET"));
        std::fs::write(&path, "secret = \"SHOWN?\"\n").expect("write");
        let e = source.read("lake").expect_err("not credentials").to_string();
        assert!(!e.contains("SHOWN?"), "{e}");
    }
}
