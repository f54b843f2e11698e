//! API errors (`{"error": {"code", "message", "details"}}`) and extractors whose rejections
//! are such errors, so no malformed request ever gets a non-JSON answer.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `invalid_segment` or `not_found`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// More, where there is more: the place in a document (`place`), the limit exceeded, …
    #[schema(value_type = Object)]
    pub details: Value,
}

/// An error answer: a status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// Details.
    pub details: Value,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!({}) }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500, logged; the caller sees no internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed inside the service");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the service failed to answer; the error is in its log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, details: self.details } };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::NotFound(m) => ApiError::not_found(m),
            crate::Error::Conflict(m) => ApiError::conflict(m),
            crate::Error::Model(e) => ApiError::from(e),
            other => ApiError::internal(other),
        }
    }
}

impl From<cohort_executor::Error> for ApiError {
    /// Executor errors met while checking what a caller sent: all but bugs are the caller's.
    fn from(e: cohort_executor::Error) -> Self {
        use cohort_executor::Error as E;
        let message = e.to_string();
        match &e {
            E::InvalidModel { place, .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", message).with_details(json!({ "place": place })),
            E::InvalidSegment { place, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_segment", message).with_details(json!({ "place": place }))
            }
            E::SchemaMismatch { place, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", message).with_details(json!({ "place": place }))
            }
            E::Source { object, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "source_unavailable", message).with_details(json!({ "object": object }))
            }
            E::Unreadable { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "source_unavailable", message),
            E::ResourcesExhausted { .. } | E::Execution(_) | E::Internal(_) => ApiError::internal(message),
        }
    }
}

/// A JSON body; a malformed, mistyped or oversized one is a 4xx [`ApiError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(ct) = content_type.filter(|ct| !ct.starts_with("application/json") && !ct.contains("+json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the body must be JSON (Content-Type: application/json), not {ct:?}"),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is larger than the service accepts")
            } else {
                ApiError::bad_request("unreadable_body", format!("the request body could not be read: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("empty_body", "the request needs a JSON body"));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, naming the line and column of what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde_json keeps its nesting limit (128): deeper documents are refused, not recursed.
    serde_json::from_slice(bytes).map_err(|e: serde_json::Error| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "invalid_body" };
        ApiError::bad_request(code, format!("the body is not what this call takes: {e}")).with_details(json!({ "line": e.line(), "column": e.column() }))
    })
}

/// A path parameter; an undecodable one is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query parameters; mistyped ones are a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}
