//! Tokens and dashboard sessions through a real server: a tenant's tokens are listed and
//! revoked (refused at once by the process that revoked them, and within one lease period by
//! another process on the same PostgreSQL); the dashboard's cookie carries a session id whose
//! hash alone is stored, expires, and is `Secure` when the service's URL is https.

use std::time::Duration;

use serde_json::json;

use crate::server::{ADMIN, Api, Backend, Server, TestStore, backends, datagen, setup_tenant};

/// Whether `token` is accepted by the server at `base` for tenant `tenant`.
async fn accepted(base: &str, token: &str, tenant: &str) -> bool {
    let answer = Api::new(base, token).get(&format!("/v1/tenants/{tenant}")).await;
    assert!(answer.status == 200 || answer.status == 401, "{:?}", answer.body);
    answer.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("acme");
    datagen("retail", 100, 4, &root);
    let data = dir.path().join("data");
    let server = Server::start(&data, &format!("sqlite://{}", data.join("cohort.db").display()), 1);
    let admin = Api::new(&server.base, ADMIN);
    let first = setup_tenant(&admin, "acme", "us-east", &root, &[]).await;
    setup_tenant(&admin, "other", "us-east", &root, &[]).await;

    let created = first.post("/v1/tenants/acme/tokens", &json!({})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let second = created.body["token"].as_str().expect("token").to_string();
    assert!(accepted(&server.base, &second, "acme").await, "a new token works (and is now remembered)");

    // Listed without the tokens themselves: an id, when it was made.
    let listed = first.get("/v1/tenants/acme/tokens").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let items = listed.body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().all(|t| t["id"].is_string() && t["created_at"].is_string()), "{items:?}");
    assert!(!listed.body.to_string().contains(&second) && !listed.body.to_string().contains(&first.token), "tokens are never shown again");
    let second_id = created.body["id"].as_str().expect("the new token's id").to_string();
    assert!(items.iter().any(|t| t["id"] == second_id.as_str()), "{items:?}");

    // Another tenant cannot see or revoke them.
    let other = admin.post("/v1/tenants/other/tokens", &json!({})).await;
    let other = Api::new(&server.base, other.body["token"].as_str().expect("token"));
    assert_eq!(other.get("/v1/tenants/acme/tokens").await.status, 404);
    let revoke = |api: &Api, id: &str| {
        let (api, path) = (api.clone(), format!("/v1/tenants/acme/tokens/{id}"));
        async move { api.send(reqwest::Method::DELETE, &path, None).await }
    };
    assert_eq!(revoke(&other, &second_id).await.status, 404);
    assert!(accepted(&server.base, &second, "acme").await);

    // Revoked: refused at once, though this process had it cached; the first still works.
    assert_eq!(revoke(&first, &second_id).await.status, 204);
    assert!(!accepted(&server.base, &second, "acme").await, "a revoked token is refused at once");
    assert!(accepted(&server.base, &first.token, "acme").await);
    assert_eq!(revoke(&first, &second_id).await.status, 404, "revoked once");
    assert_eq!(revoke(&first, "tok_nope").await.status, 404);
    assert_eq!(first.get("/v1/tenants/acme/tokens").await.body["items"].as_array().map(Vec::len), Some(1));
    // The admin revokes too.
    let first_id = first.get("/v1/tenants/acme/tokens").await.body["items"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(revoke(&admin, &first_id).await.status, 204);
    assert!(!accepted(&server.base, &first.token, "acme").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_replica_is_refused_by_another_within_a_lease() {
    let Some(url) = backends().into_iter().find_map(|b| match b {
        Backend::Postgres(url) => Some(url),
        Backend::Sqlite => None,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("acme");
    datagen("retail", 100, 4, &root);
    let store = TestStore::new(&Backend::Postgres(url), dir.path()).await;
    let data = dir.path().join("data");
    let env = [("COHORT_LEASE_SECONDS", "1")];
    let a = Server::start_with(&data, &store.url, 1, &env);
    let b = Server::start_with(&data, &store.url, 1, &env);
    let admin = Api::new(&a.base, ADMIN);
    let tenant = setup_tenant(&admin, "acme", "us-east", &root, &[]).await;
    let created = tenant.post("/v1/tenants/acme/tokens", &json!({})).await;
    let token = created.body["token"].as_str().expect("token").to_string();
    let id = created.body["id"].as_str().expect("id").to_string();
    assert!(accepted(&b.base, &token, "acme").await, "b remembers the token now");
    let revoked = tenant.send(reqwest::Method::DELETE, &format!("/v1/tenants/acme/tokens/{id}"), None).await;
    assert_eq!(revoked.status, 204, "{:?}", revoked.body);
    assert!(!accepted(&a.base, &token, "acme").await, "refused at once where it was revoked");
    // The other process forgets what it remembered within one lease period (1 s here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accepted(&b.base, &token, "acme").await {
        assert!(tokio::time::Instant::now() < deadline, "the other replica still accepts a token revoked 30 s ago");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b));
    store.drop_database().await;
}

/// The `cohort_session` cookie a login answers, with its attributes.
fn session_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cohort_session="))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", response.headers()))
        .to_string()
}

async fn login(client: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    client.post(format!("{base}/ui/login")).form(&[("token", token)]).send().await.expect("login answers")
}

/// Whether the dashboard's overview opens with `cookie` (else it asks to sign in).
async fn opens(client: &reqwest::Client, base: &str, cookie: &str) -> bool {
    let page = client.get(format!("{base}/")).header(reqwest::header::COOKIE, cookie).send().await.expect("page");
    let status = page.status().as_u16();
    let text = page.text().await.expect("text");
    status == 200 && !text.contains("action=\"/ui/login\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_cookie_is_a_stored_hashed_session_that_expires() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(&backend, dir.path()).await;
        let data = dir.path().join("data");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

        let server = Server::start_with(&data, &store.url, 1, &[("COHORT_UI_SESSION_SECONDS", "2")]);
        assert_eq!(login(&client, &server.base, "not-the-admin-token").await.status(), 401);
        let response = login(&client, &server.base, ADMIN).await;
        assert!(response.status().is_redirection(), "{}", response.status());
        let set = session_cookie(&response);
        let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
        let pair = attributes[0];
        let value = pair.trim_start_matches("cohort_session=");
        assert!(!set.contains(ADMIN), "the cookie does not hold the admin token: {set}");
        assert!(value.len() >= 32, "a long random session id: {set}");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(attributes.contains(&flag), "{flag}: {set}");
        }
        assert!(attributes.iter().any(|a| a.starts_with("Max-Age=")), "the cookie expires: {set}");
        assert!(!attributes.contains(&"Secure"), "not Secure on http: {set}");
        assert!(opens(&client, &server.base, pair).await, "the session opens the dashboard");
        assert!(!opens(&client, &server.base, &format!("cohort_session={ADMIN}")).await, "the admin token is no session id");

        // Only a hash of the id is in the store.
        let dump = store_text(&store.url).await;
        assert!(!dump.contains(value), "the session id itself is stored");

        // Signing out ends the session; a later one expires (2 s here).
        let out = client.get(format!("{}/ui/logout", server.base)).header(reqwest::header::COOKIE, pair).send().await.expect("logout");
        assert!(out.status().is_redirection() || out.status().is_success(), "{}", out.status());
        assert!(!opens(&client, &server.base, pair).await, "signed out");
        let again = session_cookie(&login(&client, &server.base, ADMIN).await);
        let pair = again.split(';').next().expect("pair").trim().to_string();
        assert!(opens(&client, &server.base, &pair).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while opens(&client, &server.base, &pair).await {
            assert!(tokio::time::Instant::now() < deadline, "a 2 s session still opens the dashboard after 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(server);

        // Behind https, the cookie is Secure.
        let server = Server::start_with(&data, &store.url, 1, &[("COHORT_EXTERNAL_URL", "https://cohort.example.com")]);
        let set = session_cookie(&login(&client, &server.base, ADMIN).await);
        assert!(set.split(';').map(str::trim).any(|a| a == "Secure"), "Secure behind https: {set}");
        drop(server);
        store.drop_database().await;
    }
}

/// Every text value of every table of the store, as one string.
async fn store_text(url: &str) -> String {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("store");
    let tables: Vec<String> = if url.starts_with("sqlite") {
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(&mut conn).await.expect("tables")
    } else {
        sqlx::query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'").fetch_all(&mut conn).await.expect("tables")
    }
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let mut out = String::new();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(&mut conn).await.unwrap_or_default();
        for r in rows {
            for (i, _) in r.columns().iter().enumerate() {
                if let Ok(Some(text)) = r.try_get::<Option<String>, _>(i) {
                    out.push_str(&text);
                    out.push('\n');
                }
            }
        }
    }
    out
}
