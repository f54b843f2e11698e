//! The API's routing, authentication and error shapes, called through the router itself
//! (`tower::ServiceExt::oneshot`) on a service assembled over a scratch SQLite store: no
//! socket, no process. What needs a process (signals, restarts, replicas) is tested in the
//! root package's tests.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use cohort_control::Config;
use cohort_control::server::{Assembled, assemble};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ADMIN: &str = "ca_router-test-admin-token";
const MAX_BODY: usize = 64 * 1024;

struct Api {
    router: Router,
    service: Assembled,
    dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config { data_dir: dir.path().join("data"), admin_token: Some(ADMIN.to_string()), workers: 1, ..Config::default() };
    let service = assemble(&config, tokio::runtime::Handle::current(), "127.0.0.1:0").await.expect("the service assembles");
    let router = cohort_control::api::router(service.state.clone(), MAX_BODY);
    Api { router, service, dir }
}

impl Api {
    /// One request through the router: its status and its body as JSON (`Null` when empty,
    /// a string when not JSON).
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Body>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body.unwrap_or_else(Body::empty)).expect("a request");
        let response = self.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    async fn json(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(method, path, token, Some(Body::from(body.to_string()))).await
    }

    async fn close(self) {
        self.service.state.store.close().await;
        drop(self.dir);
    }
}

/// The error body every failure answers: `{"error": {"code", "message", "details"}}`.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "answer: {}", answer.1);
    let error = &answer.1["error"];
    assert_eq!(error["code"], code, "answer: {}", answer.1);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "a message for people: {}", answer.1);
    assert!(error["details"].is_object(), "details are an object: {}", answer.1);
}

#[tokio::test]
async fn routes_answer_json_errors_for_what_does_not_exist_and_methods_they_do_not_take() {
    let api = api().await;
    assert_error(&api.call(Method::GET, "/v1/no-such-thing", Some(ADMIN), None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&api.call(Method::GET, "/nowhere/at/all", None, None).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&api.call(Method::DELETE, "/v1/tenants", Some(ADMIN), None).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_error(&api.call(Method::GET, "/v1/tenants/nobody", Some(ADMIN), None).await, StatusCode::NOT_FOUND, "not_found");
    // Health, readiness and the OpenAPI document need no token.
    assert_eq!(api.call(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    let (status, document) = api.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/v1/tenants"].is_object(), "the document describes /v1/tenants");
    api.close().await;
}

#[tokio::test]
async fn the_admin_token_opens_everything_a_tenant_token_its_own_tenant_and_nothing_else_opens_anything() {
    let api = api().await;
    assert_error(&api.call(Method::GET, "/v1/tenants", None, None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(&api.call(Method::GET, "/v1/tenants", Some("ca_not-the-token-at-all"), None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(&api.call(Method::GET, "/v1/tenants", Some("Ünïcödé ✓ token"), None).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.call(Method::GET, "/v1/tenants", Some(ADMIN), None).await.0, StatusCode::OK);

    let root = api.dir.path().to_str().expect("a UTF-8 temp path").to_string();
    let mut tokens = Vec::new();
    for id in ["acme", "globex"] {
        let (status, body) = api.json(Method::POST, "/v1/tenants", Some(ADMIN), json!({"id": id, "region": "us-east", "data_root": root})).await;
        assert_eq!(status, StatusCode::CREATED, "create {id}: {body}");
        tokens.push(body["token"].as_str().expect("a tenant token").to_string());
    }
    let (acme, globex) = (&tokens[0], &tokens[1]);
    assert_eq!(api.call(Method::GET, "/v1/tenants/acme", Some(acme), None).await.0, StatusCode::OK);
    // Another tenant's resources are not found (their existence is not told), and admin-only
    // calls are forbidden.
    assert_error(&api.call(Method::GET, "/v1/tenants/acme", Some(globex), None).await, StatusCode::NOT_FOUND, "not_found");
    let (status, page) = api.call(Method::GET, "/v1/tenants", Some(acme), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"].as_array().expect("items").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["acme"], "a tenant token lists its own tenant only");
    assert_error(&api.call(Method::GET, "/v1/receivers", Some(acme), None).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(
        &api.json(Method::POST, "/v1/tenants", Some(acme), json!({"id": "initech", "region": "eu", "data_root": root})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    api.close().await;
}

#[tokio::test]
async fn malformed_requests_answer_400_or_413_with_the_error_body_never_500() {
    let api = api().await;
    let root = api.dir.path().to_str().expect("a UTF-8 temp path").to_string();
    // Not JSON, JSON of the wrong shape, a bad id, a folder that does not exist.
    for body in [Body::from("{not json"), Body::from("[]"), Body::from(json!({"id": 7}).to_string())] {
        let answer = api.call(Method::POST, "/v1/tenants", Some(ADMIN), Some(body)).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "answer: {}", answer.1);
        assert_error(&answer, StatusCode::BAD_REQUEST, answer.1["error"]["code"].as_str().unwrap_or("?"));
    }
    for id in ["", "-leading-dash", "spaces in it", "ünïcödé", &"x".repeat(65)] {
        let answer = api.json(Method::POST, "/v1/tenants", Some(ADMIN), json!({"id": id, "region": "us-east", "data_root": root})).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "id {id:?}: {}", answer.1);
    }
    let answer = api.json(Method::POST, "/v1/tenants", Some(ADMIN), json!({"id": "acme", "region": "us-east", "data_root": "/no/such/folder/🦀"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_data_root");
    // A body over max_body.
    let big = json!({"id": "acme", "region": "us-east", "data_root": root, "padding": "p".repeat(MAX_BODY)});
    assert_error(&api.json(Method::POST, "/v1/tenants", Some(ADMIN), big).await, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // A query parameter of the wrong type.
    let answer = api.call(Method::GET, "/v1/tenants?limit=lots", Some(ADMIN), None).await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "answer: {}", answer.1);
    api.close().await;
}
