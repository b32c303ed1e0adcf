//! The HTTP server against real databases (SQLite and PostgreSQL) and a real anvil chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::oneshot;

struct TestServer {
    base: String,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _db: TestDatabase,
}

impl TestServer {
    async fn start(backend: Backend, registry: ChainRegistry) -> Self {
        Self::start_with(backend, registry, |router| router).await
    }

    async fn start_with(
        backend: Backend,
        registry: ChainRegistry,
        extend: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        let db = TestDatabase::new(backend).await.expect("fresh database");
        let mut state =
            AppState::new(db.store.clone(), registry, "http://127.0.0.1").expect("state");
        state.readiness_timeout = Duration::from_secs(2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let router = extend(coffer_server::router(state.clone()));
        let task = tokio::spawn(coffer_server::serve(listener, router, async {
            let _ = stopped.await;
        }));
        TestServer {
            base: format!("http://{address}"),
            state,
            stop: Some(stop),
            task,
            _db: db,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("join").expect("serve");
    }
}

async fn start_anvil(chain_id: u64) -> Anvil {
    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    Anvil::start(&AnvilOptions {
        binary,
        chain_id,
        port: 0,
        state_file: None,
        block_time: None,
    })
    .await
    .expect("anvil starts")
}

fn registry_with(chain: &str, rpc_url: &str) -> ChainRegistry {
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    overrides.insert(
        chain.to_owned(),
        ChainOverride {
            rpc_urls: vec![rpc_url.to_owned()],
            ..ChainOverride::default()
        },
    );
    registry.apply(&overrides).expect("override");
    registry
}

async fn liveness_answers_without_dependencies(backend: Backend) {
    let server = TestServer::start(backend, ChainRegistry::builtin()).await;
    let (status, body) = server.get("/healthz", &[]).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    server.shutdown().await;
}

async fn readiness_checks_the_database_and_each_chain(backend: Backend) {
    let chain = start_anvil(84_532).await;
    let server = TestServer::start(backend, registry_with("base-sepolia", chain.url())).await;
    let (status, body) = server.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["chains"]["base-sepolia"]["ok"], true);
    assert!(body["chains"]["base-sepolia"]["block_number"].is_u64());
    server.shutdown().await;
    chain.stop().await.expect("stop anvil");
}

async fn api_keys_authenticate_their_merchant_until_revoked(backend: Backend) {
    let server = TestServer::start(backend, ChainRegistry::builtin()).await;
    let merchants = &server.state.merchants;
    let shop = merchants
        .create("Shop", Some("https://shop.example/hook"))
        .await
        .expect("merchant");
    let key = merchants.create_key(&shop.id, "test").await.expect("key");
    let secret = key.key.expose_secret().to_owned();

    let bearer = format!("Bearer {secret}");
    let (status, body) = server
        .get("/api/merchant", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["id"], shop.id.as_str());
    assert_eq!(body["data"]["name"], "Shop");
    assert!(
        body["data"].get("webhook_secret").is_none(),
        "the secret is never shown"
    );

    let (status, body) = server
        .get("/api/merchant", &[("merchant-app-key", &secret)])
        .await;
    assert_eq!(
        (status, &body["data"]["id"]),
        (StatusCode::OK, &Value::from(shop.id.as_str()))
    );

    // Same key id, wrong secret.
    let mut tampered = secret.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    for (header, value) in [
        ("authorization", format!("Bearer {tampered}")),
        (
            "authorization",
            "Bearer ck_000000000000_0000000000000000000000000000000000000000".to_owned(),
        ),
        ("authorization", "Basic dXNlcjpwYXNz".to_owned()),
        ("authorization", "Bearer ".to_owned()),
        ("merchant-app-key", "not-a-key".to_owned()),
    ] {
        let (status, body) = server.get("/api/merchant", &[(header, &value)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}: {value}");
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    let (status, body) = server.get("/api/merchant", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );

    merchants.revoke_key(&key.row.id).await.expect("revoke");
    let (status, body) = server
        .get("/api/merchant", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "API key has been revoked");

    // Revoked by another process (e.g. the CLI): verified keys are trusted for at most
    // KEY_CACHE_TTL without reading the database again.
    let second_key = merchants.create_key(&shop.id, "second").await.expect("key");
    let second = format!("Bearer {}", second_key.key.expose_secret());
    let (status, _) = server
        .get("/api/merchant", &[("authorization", &second)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let elsewhere = coffer_server::merchants::Merchants::new(server.state.store.clone());
    elsewhere
        .revoke_key(&second_key.row.id)
        .await
        .expect("revoke elsewhere");
    tokio::time::sleep(coffer_server::merchants::KEY_CACHE_TTL + Duration::from_millis(50)).await;
    let (status, body) = server
        .get("/api/merchant", &[("authorization", &second)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "API key has been revoked");
    server.shutdown().await;
}

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Postgres).await; })*
        }
    };
}

on_both_databases!(
    liveness_answers_without_dependencies,
    readiness_checks_the_database_and_each_chain,
    api_keys_authenticate_their_merchant_until_revoked,
);

#[tokio::test]
async fn readiness_fails_when_a_chain_is_unreachable_or_the_wrong_chain() {
    let wrong_chain = start_anvil(31_337).await;
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "base".to_owned(),
        ChainOverride {
            rpc_urls: vec!["http://127.0.0.1:9".to_owned()],
            ..Default::default()
        },
    );
    overrides.insert(
        "bsc".to_owned(),
        ChainOverride {
            rpc_urls: vec![wrong_chain.url().to_owned()],
            ..Default::default()
        },
    );
    registry.apply(&overrides).expect("override");
    let server = TestServer::start(Backend::Sqlite, registry).await;
    let (status, body) = server.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["chains"]["base"]["ok"], false);
    assert!(
        body["chains"]["base"]["error"]
            .as_str()
            .unwrap()
            .contains("no RPC endpoint answered")
    );
    assert_eq!(body["chains"]["bsc"]["ok"], false);
    assert!(
        body["chains"]["bsc"]["error"]
            .as_str()
            .unwrap()
            .contains("serves chain id 31337, expected 56")
    );
    server.shutdown().await;
    wrong_chain.stop().await.expect("stop");
}

#[tokio::test]
async fn a_failed_endpoint_fails_over_to_the_next() {
    let chain = start_anvil(56).await;
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    let urls = vec!["http://127.0.0.1:9".to_owned(), chain.url().to_owned()];
    overrides.insert(
        "bsc".to_owned(),
        ChainOverride {
            rpc_urls: urls,
            ..Default::default()
        },
    );
    registry.apply(&overrides).expect("override");
    let server = TestServer::start(Backend::Sqlite, registry).await;
    let (status, body) = server.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.shutdown().await;
    chain.stop().await.expect("stop");
}

#[tokio::test]
async fn openapi_documents_every_route_the_server_answers() {
    let server = TestServer::start(Backend::Sqlite, ChainRegistry::builtin()).await;
    let (status, document) = server.get("/openapi.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let expected = BTreeSet::from([
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/merchant",
        "/api/payment-orders/",
        "/api/payment-orders/{order_id}/",
        "/api/events/",
        "/api/events/{event_id}/deliveries/",
        "/api/events/{event_id}/redeliver/",
        "/pay/{order_id}",
        "/pay/{order_id}/status",
        "/qr/{order_id}",
        "/x402/verify",
        "/x402/settle",
        "/x402/supported",
        "/api/v6/x402/supported",
        "/api/v6/x402/verify",
        "/api/v6/x402/settle",
        "/api/v6/pay/x402/supported",
        "/api/v6/pay/x402/verify",
        "/api/v6/pay/x402/settle",
        "/api/v6/pay/x402/settle/status",
        "/v1/pay/checkout/order",
        "/v1/pay/order/query",
        "/v1/pay/order/close",
        "/v1/pay/order/refund",
        "/v1/pay/order/refund/query",
        "/openapi/crypto/x402/order",
        "/openapi/crypto/x402/order/{orderId}",
        "/openapi/crypto/x402/supported",
    ]);
    assert_eq!(documented, expected);
    let client = reqwest::Client::new();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let concrete = path
                .replace("{order_id}", "ORD-x")
                .replace("{event_id}", "evt_x");
            let method =
                reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = client
                .request(method.clone(), format!("{}{concrete}", server.base))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let unknown_order = response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.to_str().unwrap_or("").starts_with("application/json"))
                && status == StatusCode::NOT_FOUND
                && response.text().await.unwrap().contains("ORDER_NOT_FOUND");
            assert!(
                unknown_order
                    || (status != StatusCode::NOT_FOUND
                        && status != StatusCode::METHOD_NOT_ALLOWED),
                "{method} {path} is documented but answers {status}"
            );
            assert!(
                operation["description"].is_string() || operation["summary"].is_string(),
                "{method} {path} has no description"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let server = TestServer::start(Backend::Sqlite, ChainRegistry::builtin()).await;
    let (status, body) = server.get("/nowhere", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let response = reqwest::Client::new()
        .post(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let server = TestServer::start(Backend::Sqlite, ChainRegistry::builtin()).await;
    server.get("/healthz", &[]).await;
    server.get("/healthz", &[]).await;
    server.get("/api/merchant", &[]).await;
    let (status, text) = server.get("/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text");
    assert!(
        text.contains(
            r#"coffer_http_requests_total{method="GET",route="/healthz",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"coffer_http_requests_total{method="GET",route="/api/merchant",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("coffer_http_request_duration_seconds_bucket"),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered = std::sync::Mutex::new(Some(entered_tx));
    let entered = std::sync::Arc::new(entered);
    let server = TestServer::start_with(Backend::Sqlite, ChainRegistry::builtin(), move |router| {
        router.route(
            "/slow",
            axum::routing::get(move || {
                let entered = entered.clone();
                async move {
                    if let Some(tx) = entered.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "finished"
                }
            }),
        )
    })
    .await;
    let url = format!("{}/slow", server.base);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await?.text().await });
    entered_rx.await.expect("the slow request started");
    let base = server.base.clone();
    server.shutdown().await;
    assert_eq!(
        in_flight.await.expect("join").expect("response"),
        "finished"
    );
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no new connections after shutdown"
    );
}
