//! Bad input over HTTP gets a 4xx JSON error that names the problem: never a 500, never a panic.

use serde_json::{Value, json};

use crate::server::{ADMIN, Api, Server, datagen, setup_tenant};

/// Sends raw bytes with a content type, on a connection of its own: a refused oversized
/// body leaves its connection closed by the server, and reusing it would fail the next call.
///
/// The server answers an oversized body's headers with its 413 without reading the body and
/// closes the connection; when the close reaches the client while it is still writing, the
/// client's socket is reset and the answer lost. That is TCP, not the server: such a send is
/// tried again (three times at most), and the answer must still be the 413.
async fn raw(api: &Api, method: reqwest::Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let mut tries = 0;
    let response = loop {
        tries += 1;
        let mut request = client.request(method.clone(), format!("{}{path}", api.base)).bearer_auth(&api.token).body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        match request.send().await {
            Ok(response) => break response,
            Err(e) if tries < 3 && body.len() > (1 << 20) => eprintln!("oversized send lost its answer ({e}); again"),
            Err(e) => panic!("the server answers: {e}"),
        }
    };
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| json!({ "not_json": text })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_named_4xx_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    datagen("retail", 100, 5, &root);
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, root.join("escape")).expect("symlink");
    // A folder listed as a source whose second file is a link to a file outside the root.
    let first_individual = std::fs::read_dir(root.join("individual"))
        .expect("individual")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a Parquet file of individual");
    std::fs::create_dir_all(root.join("mirror")).expect("mirror");
    std::fs::copy(&first_individual, root.join("mirror/part-0.parquet")).expect("copy");
    std::fs::copy(&first_individual, outside.join("secret.parquet")).expect("copy");
    std::os::unix::fs::symlink(outside.join("secret.parquet"), root.join("mirror/part-1.parquet")).expect("symlink");
    let data_dir = dir.path().join("serve");
    let server = Server::start(&data_dir, &format!("sqlite://{}", data_dir.join("cohort.db").display()), 1);
    let admin = Api::new(&server.base, ADMIN);
    let api = setup_tenant(&admin, "acme", "us-east", &root, &["lapsed_buyers"]).await;
    let model: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model.json")).expect("model")).expect("json");
    let with_path = |path: &str| {
        let mut m = model.clone();
        m["objects"][0]["source"]["path"] = json!(path);
        m
    };
    // Built as text: a 10,000-deep serde_json::Value would overflow this test's own stack.
    let deep_text = format!(
        "{{\"definition\": {{\"root\": \"individual\", \"filter\": {}{}{}}}}}",
        "{\"not\": ".repeat(10_000),
        r#"{"field": "country", "op": "eq", "value": "US"}"#,
        "}".repeat(10_000)
    )
    .into_bytes();
    let huge_in: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    let j = Some("application/json");
    use reqwest::Method as M;

    // (what, method, path, content type, body, expected status, expected code, words the message must hold)
    type Case = (&'static str, M, String, Option<&'static str>, Vec<u8>, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        ("malformed JSON", M::POST, "/v1/tenants".into(), j, b"{\"id\": \"x\",".to_vec(), 400, "malformed_json", "line"),
        ("wrong type", M::POST, "/v1/tenants".into(), j, br#"{"id": 5, "region": "r", "data_root": "/tmp"}"#.to_vec(), 400, "invalid_body", "invalid type"),
        (
            "unknown field",
            M::POST,
            "/v1/tenants".into(),
            j,
            br#"{"id": "t", "region": "r", "data_root": "/tmp", "colour": 1}"#.to_vec(),
            400,
            "invalid_body",
            "colour",
        ),
        ("missing field", M::POST, "/v1/tenants".into(), j, br#"{"id": "t"}"#.to_vec(), 400, "invalid_body", "region"),
        (
            "bad tenant id",
            M::POST,
            "/v1/tenants".into(),
            j,
            br#"{"id": "../etc", "region": "r", "data_root": "/tmp"}"#.to_vec(),
            400,
            "invalid_id",
            "tenant id",
        ),
        (
            "relative data root",
            M::POST,
            "/v1/tenants".into(),
            j,
            br#"{"id": "t2", "region": "r", "data_root": "data"}"#.to_vec(),
            400,
            "invalid_data_root",
            "absolute",
        ),
        ("empty body", M::POST, "/v1/tenants".into(), j, Vec::new(), 400, "empty_body", "JSON body"),
        ("not JSON", M::POST, "/v1/tenants".into(), Some("text/plain"), b"id=x".to_vec(), 415, "unsupported_media_type", "JSON"),
        ("huge body", M::PUT, "/v1/tenants/acme/model".into(), j, vec![b' '; 17 << 20], 413, "body_too_large", "larger"),
        ("unknown tenant", M::GET, "/v1/tenants/nobody/segments".into(), None, Vec::new(), 404, "not_found", "nobody"),
        ("unknown segment", M::POST, "/v1/tenants/acme/segments/nope/runs".into(), None, Vec::new(), 404, "not_found", "nope"),
        ("unknown run", M::GET, "/v1/tenants/acme/runs/run_0".into(), None, Vec::new(), 404, "not_found", "run_0"),
        ("unknown route", M::GET, "/v1/nothing/here".into(), None, Vec::new(), 404, "not_found", "openapi"),
        ("wrong method", M::PATCH, "/v1/tenants".into(), None, Vec::new(), 405, "method_not_allowed", "method"),
        ("bad query", M::GET, "/v1/tenants/acme/segments?limit=lots".into(), None, Vec::new(), 400, "invalid_query", "limit"),
        ("limit out of range", M::GET, "/v1/tenants/acme/segments?limit=0".into(), None, Vec::new(), 400, "invalid_query", "limit"),
        (
            "bad as_of",
            M::POST,
            "/v1/tenants/acme/segments/lapsed_buyers/runs".into(),
            j,
            br#"{"as_of": "yesterday"}"#.to_vec(),
            400,
            "invalid_body",
            "RFC 3339",
        ),
        (
            "invalid segment: unknown field",
            M::PUT,
            "/v1/tenants/acme/segments/s1".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"root": "individual", "filter": {"field": "contry", "op": "eq", "value": "US"}}})).expect("json"),
            422,
            "invalid_segment",
            "filter.field",
        ),
        (
            "invalid segment: wrong type",
            M::PUT,
            "/v1/tenants/acme/segments/s1".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"root": "individual", "filter": {"field": "country", "op": "gt", "value": 3}}})).expect("json"),
            422,
            "invalid_segment",
            "filter.value",
        ),
        (
            "invalid segment: huge IN list",
            M::PUT,
            "/v1/tenants/acme/segments/s1".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"root": "individual", "filter": {"field": "country", "op": "in", "value": huge_in}}})).expect("json"),
            422,
            "invalid_segment",
            "filter",
        ),
        ("invalid segment: 10,000 nested not", M::PUT, "/v1/tenants/acme/segments/s1".into(), j, deep_text, 400, "malformed_json", "recursion"),
        (
            "invalid segment: a duration ending in a multi-byte character",
            M::PUT,
            "/v1/tenants/acme/segments/s1".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"root": "individual", "filter": {"field": "signup_at", "op": "within_last", "value": "30é"}}}))
                .expect("json"),
            422,
            "invalid_segment",
            "not a duration",
        ),
        (
            "segment name differs",
            M::PUT,
            "/v1/tenants/acme/segments/s1".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"name": "s2", "root": "individual", "filter": {"field": "country", "op": "eq", "value": "US"}}}))
                .expect("json"),
            422,
            "invalid_segment",
            "name",
        ),
        (
            "bad segment id",
            M::PUT,
            "/v1/tenants/acme/segments/a%20b".into(),
            j,
            serde_json::to_vec(&json!({"definition": {"root": "individual", "filter": {"field": "country", "op": "eq", "value": "US"}}})).expect("json"),
            400,
            "invalid_id",
            "segment id",
        ),
        (
            "model: .. in a path",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("../outside/x.parquet")).expect("json"),
            422,
            "invalid_model",
            "objects[0].source.path",
        ),
        (
            "model: absolute path",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("/etc/passwd")).expect("json"),
            422,
            "invalid_model",
            "objects[0].source.path",
        ),
        (
            "model: link out of the root",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("escape/")).expect("json"),
            422,
            "invalid_model",
            "link",
        ),
        (
            "model: a link inside a listed folder",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("mirror/")).expect("json"),
            422,
            "invalid_model",
            "mirror/part-1.parquet",
        ),
        (
            "model: a link matched by a glob",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("mirror/*.parquet")).expect("json"),
            422,
            "invalid_model",
            "mirror/part-1.parquet",
        ),
        (
            "model: a URL",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("s3://bucket/x")).expect("json"),
            422,
            "invalid_model",
            "objects[0].source.path",
        ),
        ("model: not an object", M::PUT, "/v1/tenants/acme/model".into(), j, b"[1, 2]".to_vec(), 422, "invalid_model", "object"),
        (
            "model: missing source",
            M::PUT,
            "/v1/tenants/acme/model".into(),
            j,
            serde_json::to_vec(&with_path("nothing-here/")).expect("json"),
            422,
            "",
            "nothing-here",
        ),
    ];
    for (what, method, path, content_type, body, status, code, words) in cases {
        // Tenant creation is the admin's; everything else is the tenant's own.
        let caller = if path == "/v1/tenants" { &admin } else { &api };
        let (got, answer) = raw(caller, method, &path, content_type, body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{what}: not a JSON error: {answer}");
        if !code.is_empty() {
            assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        }
        let text = answer["error"].to_string();
        assert!(text.contains(words), "{what}: the error should mention {words:?}: {answer}");
    }

    // No token, a bad token, a bad header.
    for token in ["", "not-a-token"] {
        let (status, answer) = raw(&Api::new(&server.base, token), M::GET, "/v1/tenants", None, Vec::new()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let response = reqwest::Client::new().get(server.url("/v1/tenants")).header("authorization", "Basic abc").send().await.expect("answer");
    assert_eq!(response.status().as_u16(), 401);

    // The service is still well.
    assert_eq!(Api::new(&server.base, "").get("/healthz").await.status, 200);
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}
