//! Where sources live: the local file system, or an S3-compatible object store.
//!
//! A source URL `s3://bucket/key/...` (or a model whose base is an `s3://` prefix) is read
//! through `object_store`'s Amazon S3 client, one client per bucket, built from an
//! [`S3Settings`]: endpoint, region, path-style requests, plain HTTP, credentials and how
//! requests are retried. The settings travel with the model ([`crate::Model::with_storage`]),
//! so the catalog load and every run of it register the same clients in their sessions.
//!
//! Transient store errors (timeouts, 5xx, `SlowDown`) are retried inside the client with
//! exponential backoff, up to [`S3Settings::max_retries`] times and [`S3Settings::retry_timeout`]
//! in all; an error that persists reaches the run as [`crate::Error::Source`] (class
//! `source_unavailable`), which the control plane retries as a new attempt.
//!
//! Credentials are never printed: [`S3Credentials`]'s `Debug` names only the key id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::{Error, Result};

/// Credentials for an S3-compatible store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).field("secret_access_key", &"<redacted>").finish()
    }
}

/// How to reach an S3-compatible object store.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    /// The endpoint, e.g. `http://127.0.0.1:9000`; `None` for Amazon S3 itself.
    pub endpoint: Option<String>,
    /// The region (any name for stores that ignore it).
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted ones
    /// (`bucket.endpoint/key`): what most S3-compatible servers want.
    pub path_style: bool,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: bool,
    /// Signed requests with these credentials; `None` sends unsigned requests (public
    /// buckets, or servers that do not check).
    pub credentials: Option<S3Credentials>,
    /// The time one request may take.
    pub request_timeout: Duration,
    /// How many times a failed request (timeout, 5xx, `SlowDown`) is retried.
    pub max_retries: usize,
    /// The time after the first request of an operation past which it is not retried.
    pub retry_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            allow_http: false,
            credentials: None,
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

impl S3Settings {
    /// Settings from the standard environment variables, as the AWS tools read them:
    /// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and
    /// `AWS_ALLOW_HTTP=true`; an endpoint given makes requests path-style unless
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub fn from_env() -> S3Settings {
        let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
        let truthy = |name: &str| std::env::var(name).is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        let endpoint = var(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]);
        let credentials = match (var(&["AWS_ACCESS_KEY_ID"]), var(&["AWS_SECRET_ACCESS_KEY"])) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(S3Credentials { access_key_id, secret_access_key, session_token: var(&["AWS_SESSION_TOKEN"]) })
            }
            _ => None,
        };
        S3Settings {
            path_style: endpoint.is_some() && !truthy("AWS_VIRTUAL_HOSTED_STYLE_REQUEST"),
            allow_http: truthy("AWS_ALLOW_HTTP") || endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
            endpoint,
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| "us-east-1".into()),
            credentials,
            ..S3Settings::default()
        }
    }

    /// A client for `bucket`.
    pub fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let retry = RetryConfig {
            backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), base: 2.0 },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        };
        let client = ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.request_timeout.min(Duration::from_secs(10)));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_retry(retry)
            .with_client_options(client);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder = match &self.credentials {
            Some(c) => {
                let b = builder.with_access_key_id(&c.access_key_id).with_secret_access_key(&c.secret_access_key);
                match &c.session_token {
                    Some(t) => b.with_token(t),
                    None => b,
                }
            }
            None => builder.with_skip_signature(true),
        };
        let store = builder.build().map_err(|e| Error::Source { object: String::new(), message: format!("S3 client for bucket {bucket:?}: {e}") })?;
        Ok(Arc::new(store))
    }
}

/// The object stores a model's sources are read through: one S3 client per bucket, built
/// on first use from the model's settings and shared by every session of the model.
#[derive(Debug, Default)]
pub struct ObjectStores {
    s3: Option<S3Settings>,
    built: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Clone for ObjectStores {
    fn clone(&self) -> Self {
        let built = self.built.lock().map(|b| b.clone()).unwrap_or_default();
        ObjectStores { s3: self.s3.clone(), built: Mutex::new(built) }
    }
}

impl ObjectStores {
    /// Stores that read `s3://` URLs with `settings`.
    pub fn s3(settings: S3Settings) -> ObjectStores {
        ObjectStores { s3: Some(settings), built: Mutex::new(HashMap::new()) }
    }

    /// The S3 settings, when there are any.
    pub fn s3_settings(&self) -> Option<&S3Settings> {
        self.s3.as_ref()
    }

    /// The client for `s3://bucket`, built once.
    pub fn bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        if let Some(store) = self.built.lock().ok().and_then(|b| b.get(bucket).cloned()) {
            return Ok(store);
        }
        let settings = match &self.s3 {
            Some(s) => s.clone(),
            None => S3Settings::from_env(),
        };
        let store = settings.build(bucket)?;
        if let Ok(mut built) = self.built.lock() {
            built.insert(bucket.to_string(), Arc::clone(&store));
        }
        Ok(store)
    }

    /// Registers the client of every bucket in `urls` (others are ignored) in `runtime`.
    pub fn register<'a>(&self, runtime: &RuntimeEnv, urls: impl IntoIterator<Item = &'a url::Url>) -> Result<()> {
        for url in urls {
            if url.scheme() != "s3" {
                continue;
            }
            let bucket =
                url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| Error::Source { object: String::new(), message: format!("{url} names no bucket") })?;
            let store = self.bucket(bucket)?;
            let base = url::Url::parse(&format!("s3://{bucket}")).map_err(|e| Error::Internal(format!("bucket URL for {bucket:?}: {e}")))?;
            runtime.register_object_store(&base, store);
        }
        Ok(())
    }

    /// [`ObjectStores::register`] into a session.
    pub fn register_in<'a>(&self, ctx: &SessionContext, urls: impl IntoIterator<Item = &'a url::Url>) -> Result<()> {
        self.register(ctx.runtime_env().as_ref(), urls)
    }
}

/// An object-store registry that, beside what is registered in it (the local file system),
/// builds the client of any `s3://` bucket asked for from its settings: what a Ballista
/// executor reads sources with, given the settings of its own configuration.
#[derive(Debug)]
pub struct StoreRegistry {
    inner: datafusion::execution::object_store::DefaultObjectStoreRegistry,
    stores: ObjectStores,
}

impl StoreRegistry {
    /// A registry building `s3://` clients with `stores`' settings (the standard `AWS_*`
    /// variables when it has none).
    pub fn new(stores: ObjectStores) -> StoreRegistry {
        StoreRegistry { inner: Default::default(), stores }
    }
}

impl datafusion::execution::object_store::ObjectStoreRegistry for StoreRegistry {
    fn register_store(&self, url: &url::Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        match self.inner.get_store(url) {
            Ok(store) => Ok(store),
            Err(e) if url.scheme() != "s3" => Err(e),
            Err(_) => {
                let bucket = url.host_str().unwrap_or_default();
                let store = self.stores.bucket(bucket).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                let base = url::Url::parse(&format!("s3://{bucket}")).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                self.inner.register_store(&base, Arc::clone(&store));
                Ok(store)
            }
        }
    }
}

/// A hash of the keys, sizes, modification times and entity tags of every object under the
/// `s3://` sources of a model (each source's folder, or the folder of its glob or file): a
/// catalog loaded before is reused while it is unchanged. Lists; reads no object.
pub async fn fingerprint(model: &crate::Model) -> Result<u64> {
    use futures::TryStreamExt;
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let Some(prefix) = &model.prefix else {
        return Ok(0);
    };
    let store = model.stores.bucket(&prefix.bucket)?;
    let mut folders: Vec<String> = model
        .objects
        .iter()
        .map(|o| {
            let path = o.source.path.as_str();
            let literal = &path[..path.find(['*', '?', '[']).unwrap_or(path.len())];
            let folder = literal.rsplit_once('/').map_or("", |(f, _)| f);
            let parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
            format!("{}{}", prefix.key, parts.join("/"))
        })
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        let location = object_store::path::Path::from(folder.trim_end_matches('/'));
        let mut listed: Vec<object_store::ObjectMeta> = store
            .list(Some(&location))
            .try_collect()
            .await
            .map_err(|e| Error::Source { object: String::new(), message: format!("cannot list s3://{}/{folder}: {e}", prefix.bucket) })?;
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        folder.hash(&mut h);
        for o in listed {
            o.location.as_ref().hash(&mut h);
            o.size.hash(&mut h);
            o.last_modified.timestamp_micros().hash(&mut h);
            o.e_tag.hash(&mut h);
        }
    }
    Ok(h.finish())
}

/// The bucket and key prefix of an `s3://bucket/prefix/` URL text, the prefix ending in `/`
/// (empty for the whole bucket). `None` for anything else.
pub fn split_s3(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    let mut key = key.to_string();
    if !key.is_empty() && !key.ends_with('/') {
        key.push('/');
    }
    Some((bucket.to_string(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_printed() {
        let c = S3Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "wJalrXUtnFEMI/K7MDENG".into(), session_token: Some("tok".into()) };
        let shown = format!("{:?}", S3Settings { credentials: Some(c), ..S3Settings::default() });
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains("wJalr") && !shown.contains("tok"), "{shown}");
    }

    #[test]
    fn s3_prefixes_split_into_bucket_and_key() {
        assert_eq!(split_s3("s3://lake/tenants/acme"), Some(("lake".into(), "tenants/acme/".into())));
        assert_eq!(split_s3("s3://lake/"), Some(("lake".into(), String::new())));
        assert_eq!(split_s3("s3://lake"), Some(("lake".into(), String::new())));
        assert_eq!(split_s3("s3:///x"), None);
        assert_eq!(split_s3("/data/acme"), None);
    }
}
