//! The HTTP server against real databases (SQLite and PostgreSQL) and a real anvil chain.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use coffer_core::ChainRegistry;
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::kit::{registry, rpc, start_anvil};

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

fn registry_with(chain: &str, rpc_url: &str) -> ChainRegistry {
    registry(&[(chain, rpc(&[rpc_url], None))])
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
    let chain = start_anvil(84_532, None).await;
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
    let merchants = &server.state.gateway.merchants;
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

    // Revoked by another process (e.g. the CLI): a verified key is trusted for KEY_CACHE_TTL
    // without reading the database again, and not a moment longer (time moved, not slept).
    let clock = coffer_gateway::clock::Clock::manual(1_800_000_000_000);
    let cached = coffer_gateway::merchants::Merchants::new(server.state.gateway.store.clone())
        .with_clock(clock.clone());
    let second_key = merchants.create_key(&shop.id, "second").await.expect("key");
    assert!(cached.authenticate(&second_key.key).await.is_ok());
    let elsewhere = coffer_gateway::merchants::Merchants::new(server.state.gateway.store.clone());
    elsewhere
        .revoke_key(&second_key.row.id)
        .await
        .expect("revoke elsewhere");
    clock.advance(coffer_gateway::merchants::KEY_CACHE_TTL - Duration::from_millis(1));
    assert!(
        cached.authenticate(&second_key.key).await.is_ok(),
        "trusted from the cache within its lifetime"
    );
    clock.advance(Duration::from_millis(1));
    assert!(matches!(
        cached.authenticate(&second_key.key).await,
        Err(coffer_gateway::merchants::MerchantError::RevokedKey)
    ));
    server.shutdown().await;
}

coffer_store::on_both_databases!(
    liveness_answers_without_dependencies,
    readiness_checks_the_database_and_each_chain,
    api_keys_authenticate_their_merchant_until_revoked,
);

#[tokio::test]
async fn readiness_fails_when_a_chain_is_unreachable_or_the_wrong_chain() {
    let wrong_chain = start_anvil(31_337, None).await;
    let registry = registry(&[
        ("base", rpc(&["http://127.0.0.1:9"], None)),
        ("bsc", rpc(&[wrong_chain.url()], None)),
    ]);
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
    let chain = start_anvil(56, None).await;
    let registry = registry(&[("bsc", rpc(&["http://127.0.0.1:9", chain.url()], None))]);
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
        "/api/payout-wallets/",
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

/// The schema a request body or response names, its `$ref` resolved.
fn resolved<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => document
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} is not in the document")),
        None => schema,
    }
}

#[tokio::test]
async fn openapi_describes_each_family_s_authentication_bodies_and_this_deployment_s_chains() {
    let registry = registry_with("base-sepolia", "http://127.0.0.1:9");
    let server = TestServer::start(Backend::Sqlite, registry).await;
    let (status, document) = server.get("/openapi.json", &[]).await;
    assert_eq!(status, StatusCode::OK);

    // Every family's credentials are security schemes, required by its operations.
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    let gatepay = [
        "gatepay_client_id",
        "gatepay_timestamp",
        "gatepay_nonce",
        "gatepay_signature",
    ];
    let okx = [
        "okx_access_key",
        "okx_access_passphrase",
        "okx_access_timestamp",
        "okx_access_sign",
    ];
    for name in gatepay
        .iter()
        .chain(&okx)
        .chain(&["api_key", "merchant_app_key"])
    {
        assert!(schemes.contains_key(*name), "no security scheme {name}");
    }
    assert_eq!(schemes["gatepay_signature"]["name"], "X-GatePay-Signature");
    assert_eq!(schemes["okx_access_sign"]["name"], "OK-ACCESS-SIGN");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let required: BTreeSet<&str> = operation["security"]
                .as_array()
                .map(|requirements| {
                    requirements
                        .iter()
                        .flat_map(|requirement| requirement.as_object().unwrap().keys())
                        .map(String::as_str)
                        .collect()
                })
                .unwrap_or_default();
            if path.starts_with("/v1/pay/") {
                assert_eq!(required, BTreeSet::from(gatepay), "{method} {path}");
            } else if path.starts_with("/api/v6/") {
                assert_eq!(required, BTreeSet::from(okx), "{method} {path}");
            } else if path.starts_with("/openapi/crypto/") {
                assert_eq!(
                    required,
                    BTreeSet::from(["api_key", "merchant_app_key"]),
                    "{method} {path}"
                );
            }

            // Request bodies have a shape, not a bare object.
            if let Some(body) = operation.get("requestBody") {
                let schema = resolved(&document, &body["content"]["application/json"]["schema"]);
                assert!(
                    schema.get("properties").is_some()
                        || schema.get("oneOf").is_some()
                        || schema.get("allOf").is_some(),
                    "{method} {path} documents its body as {schema}"
                );
            }
            // Every refusal is documented with its envelope, and so are the request limits'.
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("408"), "{method} {path}");
            for (status, response) in responses {
                let response = resolved(&document, response);
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert!(
                        schema.is_object(),
                        "{method} {path} documents {status} without a JSON body"
                    );
                }
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().unwrap_or_default();
                    assert!(!target.is_empty(), "{method} {path}: link {link}");
                }
            }
        }
    }

    // The choices are this deployment's: only the configured chain and its tokens.
    let order = &document["components"]["schemas"]["CreateOrderRequest"];
    let slug = &server
        .state
        .gateway
        .chains
        .by_name("base-sepolia")
        .unwrap()
        .names
        .cryptopay_slug;
    assert_eq!(
        order["properties"]["blockchain"]["enum"],
        serde_json::json!([slug])
    );
    let currencies = order["properties"]["currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&Value::from("USDC")), "{currencies:?}");
    assert!(!currencies.contains(&Value::from("BNB")), "{currencies:?}");
    let networks =
        &document["components"]["schemas"]["X402RequirementsV2"]["properties"]["network"]["enum"];
    assert_eq!(networks, &serde_json::json!(["eip155:84532"]));
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_parameters_are_refused_in_each_family_s_envelope() {
    let server = TestServer::start(Backend::Sqlite, ChainRegistry::builtin()).await;
    let shop = server
        .state
        .gateway
        .merchants
        .create("Shop", None)
        .await
        .unwrap();
    let key = server
        .state
        .gateway
        .merchants
        .create_key(&shop.id, "test")
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key.expose_secret());
    for (path, field) in [
        ("/api/events/?limit=-1", "limit"),
        ("/api/events/?limit=1&limit=2", "limit"),
        ("/api/payment-orders/?page=1&page=2", "page"),
    ] {
        let (status, body) = server.get(path, &[("authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["success"], false, "{path}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    // OKX's status query: a repeated parameter does not get past authentication, and the
    // refusal is OKX's.
    let (status, body) = server
        .get("/api/v6/pay/x402/settle/status?txHash=0x1&txHash=0x2", &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], 50103, "{body}");
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

/// Every metric `deploy/grafana/coffer.json` reads is one a running Coffer serves.
#[tokio::test]
async fn the_grafana_dashboard_reads_only_metrics_coffer_serves() {
    let server = TestServer::start(Backend::Sqlite, ChainRegistry::builtin()).await;
    server.get("/healthz", &[]).await;
    let (_, text) = server.get("/metrics", &[]).await;
    let text = text.as_str().expect("text").to_owned();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let path = crate::kit::repo_root().join("deploy/grafana/coffer.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut read = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("coffer_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                read.push(name);
            }
        }
    }
    assert!(read.len() >= 10, "{read:?}");
    for name in read {
        let family = ["_bucket", "_total", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            families.contains(&family),
            "the dashboard reads {name}, which Coffer does not serve:\n{text}"
        );
    }
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
