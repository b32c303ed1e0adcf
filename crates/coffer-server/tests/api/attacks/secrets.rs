//! Attack 8: secrets leaking.
//!
//! An operator's RPC URL carries an API key (`https://…/v2/<KEY>`, `?apikey=…`, or
//! `https://user:pass@host`), and the HTTP client's errors append the URL they failed on. A
//! stranger who makes Coffer talk to a failing endpoint must not read the key in any answer —
//! readiness, x402 verify/settle, OKX, Pelago, the paywall, payment orders, GatePay — nor may it
//! reach the logs. Then the secrets Coffer holds for merchants (webhook, GatePay and OKX
//! secrets) are encrypted at rest: someone who can write the database cannot make Coffer sign
//! with a secret moved from another merchant's row, and after a key rotation every signature
//! still works with the new key only.

use std::io::Write;
use std::sync::{Arc, Mutex};

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use coffer_core::ChainRegistry;
use coffer_evm::testnet;
use coffer_gateway::workers::dispatcher::Dispatcher;
use coffer_gateway::workers::watcher::Watcher;
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{MasterKey, MerchantRow, Sealer, SecretError, StoreError};
use coffer_x402::settlement::SettleOptions;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kit::{
    self, Auth, CHAIN_ID, Inbox, PAY_TO, USDC, b64, deposit_wallet, junk_signature, new_merchant,
    paywall_route, registry, rpc, with_paywall,
};

/// What must never be read outside the process.
const SECRETS: [&str; 4] = ["SEKRETKEY123", "SEKRETKEY456", "SEKRETPASS", "sekretuser"];

/// How the fake RPC endpoint fails.
#[derive(Clone, Copy)]
enum Failure {
    /// Accepts and hangs up at once: the HTTP client reports a send error (with the URL).
    HangUp,
    /// Answers 502 with a body that quotes the request line and the URL, as a careless proxy
    /// might.
    BadGateway,
}

/// A local "RPC endpoint" that always fails; its port.
async fn failing_endpoint(failure: Failure) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let read = socket.read(&mut head).await.unwrap_or(0);
                if let Failure::BadGateway = failure {
                    let line = String::from_utf8_lossy(&head[..read])
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let body = format!(
                        "upstream failed: {line} (http://127.0.0.1:{port}/v2/SEKRETKEY123?apikey=SEKRETKEY456)"
                    );
                    let answer = format!(
                        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    port
}

/// Log lines written while a test runs, captured by a subscriber on the test's thread (the
/// server runs on the same current-thread runtime, so its events land here too).
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures every event of every crate, at every level, until the guard is dropped.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} leaks {secret}: {}",
            &text[text.find(secret).unwrap_or(0).saturating_sub(200)..]
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
}

/// A running Coffer whose only chain is served by failing endpoints with keys in their URLs.
struct Leaky {
    base: String,
    state: AppState,
    merchant: MerchantRow,
    api_key: String,
    okx: (String, String, String),
    gatepay: (String, String),
    payer: PrivateKeySigner,
    db: TestDatabase,
}

/// An answer as an attacker sees it: status, every header, the body.
struct Seen {
    status: u16,
    text: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Leaky {
    async fn start(backend: Backend, rpc_urls: Vec<String>) -> Leaky {
        let urls: Vec<&str> = rpc_urls.iter().map(String::as_str).collect();
        let registry = registry(&[("base-sepolia", rpc(&urls, Some(1)))]);
        let db = TestDatabase::new(backend).await.unwrap();
        let (base, state) = serve(db.store.clone(), registry).await;
        let (merchant, api_key) = new_merchant(&state, "Seller", None).await;
        state
            .gateway
            .sales
            .add_pay_to(&merchant, CHAIN_ID, PAY_TO)
            .await
            .unwrap();
        deposit_wallet(&state, &merchant.id).await;
        let okx = state.gateway.okx.create(&merchant.id).await.unwrap();
        let gatepay = state.gateway.gatepay.create(&merchant.id).await.unwrap();
        Leaky {
            base,
            merchant,
            api_key,
            okx: (
                okx.access_key.clone(),
                okx.secret.expose_secret().to_owned(),
                okx.passphrase.expose_secret().to_owned(),
            ),
            gatepay: (
                gatepay.client_id.clone(),
                gatepay.secret.expose_secret().to_owned(),
            ),
            payer: testnet::dev_account(1).unwrap(),
            state,
            db,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Seen {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let mut text = String::new();
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        text.push('\n');
        let body = response.text().await.unwrap();
        let seen = Seen {
            status,
            text: body.clone(),
        };
        assert_no_secret(&format!("an answer ({status})"), &format!("{text}{body}"));
        seen
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().post(format!("{}{path}", self.base))
    }

    fn okx_request(&self, method: &str, path: &str, body: &str) -> reqwest::RequestBuilder {
        let (key, secret, passphrase) = &self.okx;
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let signature =
            coffer_gateway::okx::sign(secret, &timestamp, method, path, body.as_bytes());
        let client = reqwest::Client::new();
        let request = if method == "GET" {
            client.get(format!("{}{path}", self.base))
        } else {
            client
                .post(format!("{}{path}", self.base))
                .body(body.to_owned())
        };
        request
            .header("Content-Type", "application/json")
            .header("OK-ACCESS-KEY", key)
            .header("OK-ACCESS-SIGN", signature)
            .header("OK-ACCESS-PASSPHRASE", passphrase)
            .header("OK-ACCESS-TIMESTAMP", timestamp)
    }

    fn gatepay_request(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        gatepay_request(&self.base, &self.gatepay.0, &self.gatepay.1, path, body)
    }
}

/// A signed GatePay request.
fn gatepay_request(
    base: &str,
    client_id: &str,
    secret: &str,
    path: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = coffer_gateway::events::new_id("n");
    let signature = coffer_gateway::gatepay::sign(secret, &timestamp, &nonce, body.as_bytes());
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .header("X-GatePay-Certificate-ClientId", client_id)
        .header("X-GatePay-Timestamp", timestamp)
        .header("X-GatePay-Nonce", nonce)
        .header("X-GatePay-Signature", signature)
        .body(body.to_owned())
}

/// Serves a state over `store` and `registry` on port 0 (with a settlement signer and a
/// paywall route on the chain); its base URL and state.
async fn serve(store: Arc<dyn coffer_store::Store>, registry: ChainRegistry) -> (String, AppState) {
    let settle = SettleOptions {
        receipt_timeout: std::time::Duration::from_secs(2),
        ..SettleOptions::default()
    };
    kit::serve(|base| {
        // The tests' webhook inbox listens on this machine.
        let state = AppState::new(store, registry, base)
            .unwrap()
            .with_settlement(vec![testnet::dev_account(9).unwrap()], settle)
            .with_outbound_policy(coffer_gateway::outbound::OutboundPolicy::allowing_loopback());
        with_paywall(state, &[paywall_route("/premium/*", "http://127.0.0.1:9")])
    })
    .await
}

/// The URLs an operator might configure, each pointing at a failing local endpoint.
async fn keyed_urls() -> [String; 2] {
    let hang_up = failing_endpoint(Failure::HangUp).await;
    let bad_gateway = failing_endpoint(Failure::BadGateway).await;
    [
        format!("http://127.0.0.1:{hang_up}/v2/SEKRETKEY123?apikey=SEKRETKEY456"),
        format!("http://sekretuser:SEKRETPASS@127.0.0.1:{bad_gateway}"),
    ]
}

/// Every route that reaches the chain, hit while its endpoints fail.
async fn hit_everything_that_reaches_the_rpc(env: &Leaky) {
    // Readiness names the failing chain, but not its URL.
    let ready = env
        .send(reqwest::Client::new().get(format!("{}/readyz", env.base)))
        .await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let chain = &ready.json()["chains"]["base-sepolia"];
    assert_eq!(chain["ok"], false);
    assert!(
        chain["error"].as_str().unwrap().contains("127.0.0.1"),
        "the reason still names the endpoint's host: {chain}"
    );

    // A payment whose signature is not the payer's: the facilitator asks the chain for the
    // payer's code (ERC-1271), which fails — the reason must not quote the URL.
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 10_000);
    let junk = auth.v2_request(auth.payload_signed(&junk_signature()));
    let signed = auth.v2_request(auth.payload(&env.payer));
    for request in [&junk, &signed] {
        let verified = env.send(env.post("/x402/verify").json(request)).await;
        assert_eq!(verified.json()["isValid"], false, "{}", verified.text);
        let settled = env.send(env.post("/x402/settle").json(request)).await;
        assert_eq!(settled.json()["success"], false, "{}", settled.text);
    }
    let verified = env.send(env.post("/x402/verify").json(&junk)).await;
    assert!(
        verified.json()["invalidMessage"]
            .as_str()
            .is_some_and(|m| m.contains("the chain could not be reached")),
        "the RPC failure is what was reported: {}",
        verified.text
    );

    // OKX's two dialects.
    let legacy = json!({
        "x402Version": 1, "chainIndex": 84532,
        "paymentPayload": {"x402Version": 1, "scheme": "exact", "payload": auth.payload_signed(&junk_signature())},
        "paymentRequirements": {"scheme": "exact", "maxAmountRequired": "10000", "resource": "https://api.example.com/r",
            "description": "r", "mimeType": "application/json", "payTo": PAY_TO.to_checksum(None),
            "maxTimeoutSeconds": 10, "asset": USDC.to_checksum(None)},
    })
    .to_string();
    for path in ["/api/v6/x402/verify", "/api/v6/x402/settle"] {
        let answer = env.send(env.okx_request("POST", path, &legacy)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
    }
    for path in ["/api/v6/pay/x402/verify", "/api/v6/pay/x402/settle"] {
        let answer = env
            .send(env.okx_request("POST", path, &junk.to_string()))
            .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
    }

    // Pelago: an order paid with an authorization, and one paid with a transaction proof.
    let pelago = |body: Value| {
        env.post("/openapi/crypto/x402/order")
            .header("Merchant-App-Key", &env.api_key)
            .json(&body)
    };
    let created = env
        .send(pelago(json!({"description": "plan", "amount": "0.01"})))
        .await;
    assert_eq!(created.status, 402, "{}", created.text);
    let order_id = created.json()["orderId"].as_str().unwrap().to_owned();
    let header = b64(
        &json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": auth.payload_signed(&junk_signature())}),
    );
    let refused = env
        .send(pelago(json!({"orderId": order_id})).header("X-PAYMENT", header))
        .await;
    assert!(refused.status >= 400, "{}", refused.text);
    let tx_hash = format!("0x{}", "ab".repeat(32));
    let message = coffer_gateway::pelago::proof_message(&order_id, &tx_hash);
    let signature = env.payer.sign_message_sync(message.as_bytes()).unwrap();
    let proof = b64(
        &json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
        "payload": {"amount": "10000", "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "txHash": tx_hash}}),
    );
    let unavailable = env
        .send(pelago(json!({"orderId": order_id})).header("X-PAYMENT", proof))
        .await;
    assert!(unavailable.status >= 400, "{}", unavailable.text);

    // The paywall, paid with the same payment.
    let paid = env
        .send(
            reqwest::Client::new()
                .get(format!("{}/premium/quote", env.base))
                .header(
                    "X-PAYMENT",
                    auth.x_payment(auth.payload_signed(&junk_signature())),
                ),
        )
        .await;
    // The chain cannot be asked: unavailable, nothing charged (and no URL in the answer).
    assert_eq!(paid.status, 503, "{}", paid.text);

    // Payment orders and GatePay orders on the chain.
    let order = env
        .send(
            env.post("/api/payment-orders/")
                .header("Authorization", format!("Bearer {}", env.api_key))
                .json(
                    &json!({"amount": "1.00", "currency": "USDC", "blockchain": "base-sepolia",
                    "order_info": "{}", "nonce": 1}),
                ),
        )
        .await;
    assert!(order.status < 500, "{}", order.text);
    let checkout = json!({
        "merchantTradeNo": "T1", "env": {"terminalType": "WEB"}, "merchantUserId": 7,
        "goods": {"goodsType": "02", "goodsName": "Plan", "goodsDetail": "one month"},
        "fullCurrType": "USDC_BASESEPOLIA", "orderAmount": "1",
        "returnUrl": "https://shop.example/paid", "cancelUrl": "https://shop.example/cancelled"
    })
    .to_string();
    let checkout = env
        .send(env.gatepay_request("/v1/pay/checkout/order", &checkout))
        .await;
    assert!(checkout.status < 500, "{}", checkout.text);

    // The chain watcher's step fails; what its loop would log must be clean too.
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).expect("a watcher for the chain");
    let error = watcher.step().await.expect_err("the chain is down");
    tracing::warn!(%error, "watcher step failed");
    assert_no_secret("the watcher's error", &error.to_string());
    assert_no_secret("the watcher's error (Debug)", &format!("{error:?}"));
    assert_no_secret(
        "the RPC clients (Debug)",
        &format!("{:?}", env.state.gateway.rpcs),
    );
    assert_no_secret(
        "the registry (Debug)",
        &format!("{:?}", env.state.gateway.chains),
    );
}

/// An RPC URL's key never appears in an answer of any API family, in readiness, or in the
/// logs, whichever way the endpoint fails and wherever the key sits in the URL.
#[tokio::test]
async fn rpc_url_keys_never_leave_the_process() {
    let logs = CapturedLogs::default();
    let _capture = logs.install();
    let [in_path, in_user_info] = keyed_urls().await;
    for urls in [
        vec![in_path.clone(), in_user_info.clone()],
        vec![in_user_info, in_path],
    ] {
        let env = Leaky::start(Backend::Sqlite, urls).await;
        hit_everything_that_reaches_the_rpc(&env).await;
    }
    let logged = logs.text();
    assert!(
        logged.contains("RPC endpoint failed") && logged.contains("watcher step failed"),
        "the logs were captured: {}",
        logged.chars().take(2000).collect::<String>()
    );
    for line in logged
        .lines()
        .filter(|l| l.contains("SEKRET") || l.contains("sekret"))
    {
        eprintln!("LEAK {line}");
    }
    assert_no_secret("the logs", &logged);
}

/// Plain SQL on the test database, as someone holding a copy of it (or write access) would.
async fn raw_execute(db: &TestDatabase, backend: Backend, sql: &str, binds: &[&str]) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            query.execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            query.execute(&pool).await.unwrap();
        }
    }
}

async fn raw_strings(db: &TestDatabase, backend: Backend, sql: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

/// Creates a payment order through the API and schedules a delivery of its `created` event to
/// the merchant's endpoint through the store (the API sends only events meant to be sent): a
/// signed webhook is then due.
async fn due_webhook(state: &AppState, base: &str, api_key: &str, nonce: u64) {
    let client = reqwest::Client::new();
    let auth = format!("Bearer {api_key}");
    let response = client
        .post(format!("{base}/api/payment-orders/"))
        .header("Authorization", &auth)
        .json(
            &json!({"amount": "1.00", "currency": "USDC", "blockchain": "base-sepolia",
            "order_info": "{}", "nonce": nonce}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap()
    );
    let order: Value = response.json().await.unwrap();
    let order_id = order["data"]["order_id"].as_str().unwrap().to_owned();
    let stored = state.gateway.store.order(&order_id).await.unwrap();
    let merchant = state
        .gateway
        .store
        .merchant(&stored.merchant_id)
        .await
        .unwrap();
    let event = state
        .gateway
        .store
        .events(&merchant.id, Some(&order_id), 10)
        .await
        .unwrap()
        .remove(0);
    state
        .gateway
        .store
        .schedule_delivery(
            &event,
            "whd_due",
            merchant.webhook_url.as_deref().unwrap(),
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .unwrap();
}

/// The chain the encryption attacks configure (never contacted).
fn quiet_registry() -> ChainRegistry {
    registry(&[("base-sepolia", rpc(&["http://127.0.0.1:9"], None))])
}

/// Someone who can write the database (but has no master key) copies a victim merchant's
/// sealed webhook and GatePay secrets onto their own merchant's rows, hoping Coffer signs
/// their webhooks and accepts their requests with the victim's keys. The ciphertexts are bound
/// to their rows: nothing is signed, sent, or accepted with them, and the secrets are nowhere
/// in the database in plain text.
async fn a_sealed_secret_moved_to_another_merchant_signs_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let (base, state) = serve(db.store.clone(), quiet_registry()).await;
    let (inbox, hook) = Inbox::start().await;
    let victim = state
        .gateway
        .merchants
        .create("Victim", Some(&hook))
        .await
        .unwrap();
    let victim_gatepay = state.gateway.gatepay.create(&victim.id).await.unwrap();
    let (thief, thief_api_key) = new_merchant(&state, "Thief", Some(&hook)).await;
    let thief_gatepay = state.gateway.gatepay.create(&thief.id).await.unwrap();
    deposit_wallet(&state, &thief.id).await;
    // The thief's order: a webhook of theirs is due.
    due_webhook(&state, &base, &thief_api_key, 1).await;

    let dump = raw_strings(
        &db,
        backend,
        "SELECT webhook_secret FROM merchants UNION ALL SELECT secret FROM gatepay_credentials",
    )
    .await;
    for secret in [
        victim.webhook_secret.as_str(),
        victim_gatepay.secret.expose_secret(),
        thief.webhook_secret.as_str(),
    ] {
        assert!(
            dump.iter().all(|stored| !stored.contains(secret)),
            "a secret is stored in plain text: {dump:?}"
        );
    }

    let victim_webhook = raw_strings(
        &db,
        backend,
        &format!(
            "SELECT webhook_secret FROM merchants WHERE id = '{}'",
            victim.id
        ),
    )
    .await
    .remove(0);
    let victim_sealed_gatepay = raw_strings(
        &db,
        backend,
        &format!(
            "SELECT secret FROM gatepay_credentials WHERE client_id = '{}'",
            victim_gatepay.client_id
        ),
    )
    .await
    .remove(0);
    raw_execute(
        &db,
        backend,
        "UPDATE merchants SET webhook_secret = $1 WHERE id = $2",
        &[&victim_webhook, thief.id.as_str()],
    )
    .await;
    raw_execute(
        &db,
        backend,
        "UPDATE gatepay_credentials SET secret = $1 WHERE client_id = $2",
        &[&victim_sealed_gatepay, &thief_gatepay.client_id],
    )
    .await;

    // A GatePay request under the thief's client id, signed with the victim's secret (or the
    // thief's own), is not accepted.
    let body = json!({"prepayId": "1"}).to_string();
    for secret in [
        victim_gatepay.secret.expose_secret(),
        thief_gatepay.secret.expose_secret(),
    ] {
        let response = gatepay_request(
            &base,
            &thief_gatepay.client_id,
            secret,
            "/v1/pay/order/query",
            &body,
        )
        .send()
        .await
        .unwrap();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(answer["status"], "SUCCESS", "{answer}");
        assert_ne!(answer["code"], "000000", "{answer}");
    }
    assert!(matches!(
        db.store.gatepay_credential(&thief_gatepay.client_id).await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));

    // The thief's webhook is due, but nothing is signed with the victim's secret: the
    // dispatcher of a restarted server (with the right key) cannot open the moved secret, and
    // nothing leaves.
    let (fresh_base, fresh_state) = serve(db.reopen().await.unwrap(), quiet_registry()).await;
    assert!(matches!(
        fresh_state.gateway.store.merchant(&thief.id).await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    assert_eq!(
        fresh_state
            .gateway
            .store
            .merchant(&victim.id)
            .await
            .unwrap()
            .webhook_secret,
        victim.webhook_secret
    );
    // The thief's API key no longer authenticates either: their merchant row does not open.
    let response = reqwest::Client::new()
        .get(format!("{fresh_base}/api/merchant"))
        .header("Authorization", format!("Bearer {thief_api_key}"))
        .send()
        .await
        .unwrap();
    assert!(!response.status().is_success());
    let pending = "SELECT CAST(COUNT(*) AS TEXT) FROM webhook_deliveries WHERE status = 'pending'";
    assert_eq!(
        raw_strings(&db, backend, pending).await,
        ["1"],
        "a webhook is due"
    );
    let sent = Dispatcher::new(&fresh_state.gateway)
        .dispatch_due()
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert!(inbox.received().is_empty(), "nothing was sent");
    assert_eq!(
        raw_strings(&db, backend, pending).await,
        ["1"],
        "the delivery waits (for the right secret), it is not marked sent"
    );
}

/// After `coffer secrets rotate`'s re-encryption, the old key opens nothing, and with the new
/// key every signature works as before: webhooks are signed with the merchant's secret, and
/// GatePay and OKX requests signed with theirs are accepted.
async fn after_rotation_only_the_new_key_works_and_every_signature_still_does(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let (_, state) = serve(db.store.clone(), quiet_registry()).await;
    let (inbox, hook) = Inbox::start().await;
    let (merchant, api_key) = new_merchant(&state, "Shop", Some(&hook)).await;
    let gatepay = state.gateway.gatepay.create(&merchant.id).await.unwrap();
    let okx = state.gateway.okx.create(&merchant.id).await.unwrap();
    deposit_wallet(&state, &merchant.id).await;

    let (new_key, _) = MasterKey::generate();
    assert_eq!(db.store.reseal_secrets(&new_key).await.unwrap(), 3);
    let stored = raw_strings(
        &db,
        backend,
        "SELECT webhook_secret FROM merchants UNION ALL SELECT secret FROM gatepay_credentials
         UNION ALL SELECT secret FROM okx_credentials",
    )
    .await;
    assert_eq!(stored.len(), 3);
    for value in &stored {
        assert!(
            value.starts_with(&format!("enc:v1:{}:", new_key.id())),
            "{value}"
        );
    }

    // The old key opens nothing any more.
    let stale = db.reopen().await.unwrap();
    assert!(matches!(
        stale.merchant(&merchant.id).await,
        Err(StoreError::Secret(SecretError::UnknownKey { .. }))
    ));
    assert!(matches!(
        stale.gatepay_credential(&gatepay.client_id).await,
        Err(StoreError::Secret(SecretError::UnknownKey { .. }))
    ));
    assert!(matches!(
        stale.okx_credential(&okx.access_key).await,
        Err(StoreError::Secret(SecretError::UnknownKey { .. }))
    ));

    // A server restarted with the new key.
    let rotated = coffer_store::open(&db.url, Sealer::new(new_key))
        .await
        .unwrap();
    let (base, state) = serve(rotated, quiet_registry()).await;

    let checkout = json!({
        "merchantTradeNo": "T1", "env": {"terminalType": "WEB"}, "merchantUserId": 7,
        "goods": {"goodsType": "02", "goodsName": "Plan", "goodsDetail": "one month"},
        "fullCurrType": "USDC_BASESEPOLIA", "orderAmount": "1",
        "returnUrl": "https://shop.example/paid", "cancelUrl": "https://shop.example/cancelled"
    })
    .to_string();
    let answer: Value = gatepay_request(
        &base,
        &gatepay.client_id,
        gatepay.secret.expose_secret(),
        "/v1/pay/checkout/order",
        &checkout,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        answer["status"], "SUCCESS",
        "GatePay authentication passed: {answer}"
    );

    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = "/api/v6/x402/supported";
    let signature =
        coffer_gateway::okx::sign(okx.secret.expose_secret(), &timestamp, "GET", path, b"");
    let supported: Value = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("OK-ACCESS-KEY", &okx.access_key)
        .header("OK-ACCESS-SIGN", signature)
        .header("OK-ACCESS-PASSPHRASE", okx.passphrase.expose_secret())
        .header("OK-ACCESS-TIMESTAMP", timestamp)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        supported["code"], "0",
        "OKX authentication passed: {supported}"
    );

    due_webhook(&state, &base, &api_key, 7).await;
    let sent = Dispatcher::new(&state.gateway)
        .dispatch_due()
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let received = inbox.received();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    let signature = headers["coffer-signature"].to_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(coffer_gateway::events::verify_signature(
        &merchant.webhook_secret,
        signature,
        body.as_bytes(),
        now,
        300
    ));
}

coffer_store::on_both_databases!(
    a_sealed_secret_moved_to_another_merchant_signs_nothing,
    after_rotation_only_the_new_key_works_and_every_signature_still_does,
);
