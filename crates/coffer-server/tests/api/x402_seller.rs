//! The x402 seller against a real EIP-3009 token on anvil: settlements to a merchant's payTo
//! recorded as orders (on SQLite and PostgreSQL), the paywall reverse proxy, and the
//! Pelago-compatible order endpoint with both payment forms.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use coffer_evm::contracts::IERC20;
use coffer_store::testing::Backend;
use serde_json::{Value, json};

use crate::kit::{
    self, Auth, Mined, Options, PAY_TO, USDC, b64, interop, paywall_route, requirements_v2, unb64,
    with_paywall,
};

/// A payTo nobody registered.
const STRANGER_PAY_TO: Address = address!("0x1111111111111111111111111111111111111111");

/// The seller's environment: the kit's, with a payer holding 5 USDC, a merchant whose webhook
/// endpoint is local, and a paywall selling `/premium/*` and `/broken/*` from an upstream that
/// counts its hits.
struct Env {
    kit: kit::Env,
    hits: Arc<AtomicU64>,
}

impl Deref for Env {
    type Target = kit::Env;

    fn deref(&self) -> &kit::Env {
        &self.kit
    }
}

async fn upstream(hits: Arc<AtomicU64>) -> String {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/premium/{*rest}",
            get(|State(hits): State<Arc<AtomicU64>>| async move {
                let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(json!({"quote": "paid content", "served": n}))
            }),
        )
        .route(
            "/broken/{*rest}",
            get(|State(hits): State<Arc<AtomicU64>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream failed")
            }),
        )
        .with_state(hits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

impl Env {
    async fn new(backend: Backend) -> Env {
        let hits = Arc::new(AtomicU64::new(0));
        let upstream = upstream(hits.clone()).await;
        // The merchant's webhook endpoint is local: loopback is allowed, as under `coffer dev`.
        let options = Options::on(backend)
            .payer_funds(5_000_000)
            .local_endpoints()
            .merchant_webhook("http://127.0.0.1:9/hooks")
            .configure(move |state| {
                let routes = [
                    paywall_route("/premium/*", &upstream),
                    paywall_route("/broken/*", &upstream),
                ];
                with_paywall(state, &routes)
            });
        Env {
            kit: kit::Env::with(options).await,
            hits,
        }
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, &[], body).await
    }
}

async fn settlements_to_a_merchants_pay_to_are_recorded_once(backend: Backend) {
    let env = Env::new(backend).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 250_000);
    let requirements = requirements_v2(PAY_TO, 250_000);
    let request = json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": auth.payload(&env.payer)},
        "paymentRequirements": requirements,
    });
    let (status, first) = env.post_json("/x402/settle", &request).await;
    assert_eq!(
        (status, first["success"].as_bool()),
        (200, Some(true)),
        "{first}"
    );
    let (_, again) = env.post_json("/x402/settle", &request).await;
    assert_eq!(again["transaction"], first["transaction"]);

    let orders = env.orders().await;
    assert_eq!(orders.len(), 1, "a repeated settle records once");
    let order = &orders[0];
    assert_eq!(order.status.as_str(), "confirmed");
    assert_eq!(order.amount.to_base_units_string(), "250000");
    assert_eq!(order.amount_paid.to_base_units_string(), "250000");
    assert_eq!(order.receiving_address, PAY_TO.to_checksum(None));
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&order.order_id)
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    let payment = &payments[0].payment;
    assert_eq!(
        payment.tx_hash,
        first["transaction"].as_str().unwrap().to_ascii_lowercase()
    );
    assert_eq!(payment.sender, env.payer.address().to_checksum(None));
    assert_eq!(payment.amount.to_base_units_string(), "250000");
    let receipt = env
        .chain
        .get_transaction_receipt(payment.tx_hash.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(payment.block_number), receipt.block_number);
    let transfer_log = receipt
        .inner
        .logs()
        .iter()
        .find(|log| log.log_index == Some(u64::try_from(payment.log_index).unwrap()))
        .unwrap();
    assert_eq!(
        transfer_log.topics()[0],
        <IERC20::Transfer as alloy::sol_types::SolEvent>::SIGNATURE_HASH
    );
    let events = env
        .state
        .gateway
        .store
        .events(&env.merchant.id, Some(&order.order_id), 10)
        .await
        .unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"payment_order.confirmed"), "{types:?}");
    let deliveries = env
        .state
        .gateway
        .store
        .deliveries(&env.merchant.id, None, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1, "one webhook for the confirmation");

    // The order is listed through the payment-orders API like any other.
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/payment-orders/", env.base))
        .bearer_auth(&env.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["results"][0]["status"], "confirmed");

    // A settlement to an address no merchant registered is not Coffer's to pay gas for.
    let stranger = Auth::fresh(env.payer.address(), STRANGER_PAY_TO, 1_000);
    let requirements = requirements_v2(STRANGER_PAY_TO, 1_000);
    let (status, reply) = env
        .post_json(
            "/x402/settle",
            &json!({"x402Version": 2,
                "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": stranger.payload(&env.payer)},
                "paymentRequirements": requirements}),
        )
        .await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["errorReason"], "pay_to_not_allowed", "{reply}");
    assert_eq!(env.orders().await.len(), 1);
    assert_eq!(
        env.state.gateway.sales.sweep().await.unwrap(),
        0,
        "nothing left to record"
    );
}

async fn the_paywall_answers_402_until_paid_then_proxies_once(backend: Backend) {
    let env = Env::new(backend).await;
    let client = reqwest::Client::new();
    let url = format!("{}/premium/quote?x=1", env.base);

    // Unpaid: 402 with the v2 header and the v1 body, and the upstream is not called.
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 402);
    let headers = response.headers().clone();
    assert!(
        headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("PAYMENT-RESPONSE")
    );
    let required = unb64(headers["payment-required"].to_str().unwrap());
    let body: Value = response.json().await.unwrap();
    assert_eq!(required["x402Version"], 2);
    assert_eq!(required["accepts"][0], requirements_v2(PAY_TO, 10_000));
    assert_eq!(
        required["resource"]["url"],
        format!("{}/premium/quote", env.base)
    );
    assert_eq!(body["x402Version"], 1);
    let v1 = &body["accepts"][0];
    assert_eq!(v1["network"], "base-sepolia");
    assert_eq!(v1["maxAmountRequired"], "10000");
    assert_eq!(v1["resource"], format!("{}/premium/quote", env.base));
    assert_eq!(v1["description"], "Premium quotes");
    assert_eq!(v1["mimeType"], "application/json");
    assert!(v1.get("outputSchema").is_none());

    // Browsers get a page.
    let page = client
        .get(&url)
        .header("accept", "text/html")
        .header("user-agent", "Mozilla/5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 402);
    assert!(page.text().await.unwrap().contains("Payment required"));

    // Paid (v2): forwarded once, settled, answered with PAYMENT-RESPONSE.
    let before = env.balance(PAY_TO).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 10_000);
    let mut accepted = requirements_v2(PAY_TO, 10_000);
    // Address case and key order do not matter.
    accepted["payTo"] = json!(PAY_TO.to_string().to_ascii_lowercase());
    let payment =
        json!({"x402Version": 2, "accepted": accepted, "payload": auth.payload(&env.payer)});
    let paid = client
        .get(&url)
        .header("PAYMENT-SIGNATURE", b64(&payment))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status().as_u16(), 200);
    let settled = unb64(paid.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settled["success"], true, "{settled}");
    let body: Value = paid.json().await.unwrap();
    assert_eq!(body["quote"], "paid content");
    assert_eq!(env.hits.load(Ordering::SeqCst), 1);
    assert_eq!(env.balance(PAY_TO).await - before, U256::from(10_000u64));
    assert_eq!(env.orders().await.len(), 1, "the sale is an order");

    // The same header again is refused, and the upstream is not called again.
    let replay = client
        .get(&url)
        .header("PAYMENT-SIGNATURE", b64(&payment))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 402);
    assert_eq!(env.hits.load(Ordering::SeqCst), 1);

    // v1 (X-PAYMENT) works too, with X-PAYMENT-RESPONSE.
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 10_000);
    let v1_payment = json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": auth.payload(&env.payer)});
    let paid = client
        .get(&url)
        .header("X-PAYMENT", b64(&v1_payment))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status().as_u16(), 200);
    assert!(paid.headers().contains_key("x-payment-response"));
    assert_eq!(env.hits.load(Ordering::SeqCst), 2);

    // A malformed header is a clear 400; a wrong amount does not match.
    let malformed = client
        .get(&url)
        .header("PAYMENT-SIGNATURE", "%%%not-base64")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let error: Value = malformed.json().await.unwrap();
    assert_eq!(error["code"], "INVALID_PAYMENT_HEADER");
    let cheap = Auth::fresh(env.payer.address(), PAY_TO, 1);
    let wrong = json!({"x402Version": 2, "accepted": requirements_v2(PAY_TO, 1), "payload": cheap.payload(&env.payer)});
    let refused = client
        .get(&url)
        .header("PAYMENT-SIGNATURE", b64(&wrong))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 402);

    // An upstream failure is not charged.
    let before = env.balance(PAY_TO).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 10_000);
    let payment = json!({"x402Version": 2, "accepted": requirements_v2(PAY_TO, 10_000), "payload": auth.payload(&env.payer)});
    let failed = client
        .get(format!("{}/broken/thing", env.base))
        .header("PAYMENT-SIGNATURE", b64(&payment))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status().as_u16(), 500);
    assert!(!failed.headers().contains_key("payment-response"));
    assert_eq!(env.balance(PAY_TO).await, before, "nothing settled");

    // Metrics name the paywall route as configured, and count the settlements by status.
    let metrics = client
        .get(format!("{}/metrics", env.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"coffer_http_requests_total{method="GET",route="/premium/*",status="200"} 2"#,
        r#"coffer_http_requests_total{method="GET",route="/premium/*",status="402"} 4"#,
        r#"coffer_x402_settlements{status="succeeded"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(!metrics.contains("route=\"unmatched\""), "{metrics}");
}

async fn pelago_orders_are_paid_by_authorization_or_tx_hash_proof(backend: Backend) {
    let env = Env::new(backend).await;
    let client = reqwest::Client::new();
    let endpoint = format!("{}/openapi/crypto/x402/order", env.base);
    let create = |body: Value| {
        client
            .post(&endpoint)
            .header("Merchant-App-Key", &env.api_key)
            .json(&body)
    };

    // Create → 402 with requirements and the order id.
    let response =
        create(json!({"description": "Payment for premium subscription", "amount": "2.60"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 402);
    let required: Value = response.json().await.unwrap();
    let order_id = required["orderId"].as_str().unwrap().to_owned();
    assert!(order_id.starts_with("CO"));
    assert_eq!(required["accepts"][0]["maxAmountRequired"], "2600000");
    assert_eq!(required["accepts"][0]["network"], "base-sepolia");

    // Pay with an EIP-3009 authorization → 200 confirmed.
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 2_600_000);
    let header = b64(
        &json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": auth.payload(&env.payer)}),
    );
    let response =
        create(json!({"description": "Payment for premium subscription", "orderId": order_id}))
            .header("X-PAYMENT", &header)
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let confirmed: Value = response.json().await.unwrap();
    assert_eq!(
        confirmed,
        json!({"orderId": order_id, "status": "confirmed", "message": "Payment successful"})
    );
    let status: Value = client
        .get(format!("{endpoint}/{order_id}"))
        .header("Merchant-App-Key", &env.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["orderStatus"], "confirmed");
    assert_eq!(status["payStatus"], "paid");
    assert_eq!(status["paidAmount"], "2.60");
    assert!(status["txHash"].as_str().unwrap().starts_with("0x"));

    // Pay with a tx-hash proof: the payer transfers, then signs order id + tx hash.
    let payer_chain = ProviderBuilder::new()
        .wallet(EthereumWallet::from(env.payer.clone()))
        .connect_http(env.anvil_url().parse().unwrap());
    let token = IERC20::new(USDC, &payer_chain);
    let receipt = token
        .transfer(PAY_TO, U256::from(1_000_000u64))
        .mined()
        .await;
    let tx_hash = format!("{:#x}", receipt.transaction_hash);
    let response = create(json!({"amount": "1", "description": "proof"}))
        .send()
        .await
        .unwrap();
    let second: Value = response.json().await.unwrap();
    let second_id = second["orderId"].as_str().unwrap().to_owned();
    let proof = |order: &str, signer: &PrivateKeySigner| {
        let message = coffer_gateway::pelago::proof_message(order, &tx_hash);
        let signature = signer.sign_message_sync(message.as_bytes()).unwrap();
        b64(
            &json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"amount": "1000000", "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "txHash": tx_hash}}),
        )
    };
    // Someone else's transfer: the signature is not by its sender.
    let thief = PrivateKeySigner::random();
    let response = create(json!({"orderId": second_id}))
        .header("X-PAYMENT", proof(&second_id, &thief))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 402);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["code"], "TX_NOT_PAYERS");
    let response = create(json!({"orderId": second_id}))
        .header("X-PAYMENT", proof(&second_id, &env.payer))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().await.unwrap()
    );

    // The same transaction for a third order is refused.
    let response = create(json!({"amount": "1"})).send().await.unwrap();
    let third: Value = response.json().await.unwrap();
    let third_id = third["orderId"].as_str().unwrap().to_owned();
    let response = create(json!({"orderId": third_id}))
        .header("X-PAYMENT", proof(&third_id, &env.payer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["code"], "TX_ALREADY_USED");

    // A malformed header and an unknown order are clear 4xx.
    let response = create(json!({}))
        .header("X-PAYMENT", "!!")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = client
        .get(format!("{endpoint}/CO000"))
        .header("Merchant-App-Key", &env.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = create(json!({"description": "no amount"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // Supported methods list the payTo and both forms.
    let methods: Value = client
        .get(format!("{}/openapi/crypto/x402/supported", env.base))
        .header("Merchant-App-Key", &env.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usdc = methods["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["currency"] == "USDC")
        .unwrap();
    assert_eq!(usdc["paymentForms"], json!(["eip3009", "txHash"]));
    assert_eq!(env.orders().await.len(), 3);
}

/// Runs an official client; returns its JSON output.
fn official_fetch(client: &str, version: u8, key: &str, url: &str, request: &Value) -> Value {
    let mut input = json!({"version": version, "privateKey": key, "url": url});
    for (name, value) in request.as_object().into_iter().flatten() {
        input[name] = value.clone();
    }
    interop(client, "x402_fetch", &input)
}

#[tokio::test]
async fn the_official_fetch_clients_pay_through_the_paywall_once_each() {
    let env = Env::new(Backend::Sqlite).await;
    let key = format!("0x{}", alloy::hex::encode(env.payer.to_bytes()));
    let url = format!("{}/premium/quote", env.base);
    let mut hits = 0;
    for (client, version) in [("npm", 2), ("npm", 1), ("pypi", 2)] {
        let payee_before = env.balance(PAY_TO).await;
        let payer_before = env.balance(env.payer.address()).await;
        let result = tokio::task::spawn_blocking({
            let key = key.clone();
            let url = url.clone();
            move || official_fetch(client, version, &key, &url, &json!({}))
        })
        .await
        .unwrap();
        assert_eq!(result["status"], 200, "{client} v{version}: {result}");
        assert_eq!(
            result["paymentResponse"]["success"], true,
            "{client} v{version}: {result}"
        );
        let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["quote"], "paid content");
        hits += 1;
        assert_eq!(
            env.hits.load(Ordering::SeqCst),
            hits,
            "{client} v{version}: one upstream request"
        );
        assert_eq!(
            env.balance(PAY_TO).await - payee_before,
            U256::from(10_000u64)
        );
        assert_eq!(
            payer_before - env.balance(env.payer.address()).await,
            U256::from(10_000u64)
        );
    }
    assert_eq!(env.orders().await.len(), 3, "each sale is an order");
}

#[tokio::test]
async fn the_official_fetch_clients_pay_pelago_orders() {
    let env = Env::new(Backend::Sqlite).await;
    let key = format!("0x{}", alloy::hex::encode(env.payer.to_bytes()));
    let url = format!("{}/openapi/crypto/x402/order", env.base);
    let request = json!({
        "method": "POST",
        "headers": {"Merchant-App-Key": env.api_key, "Content-Type": "application/json"},
        "body": json!({"description": "Payment for premium subscription", "amount": "0.02"}).to_string(),
    });
    for (client, version) in [("npm", 2), ("npm", 1), ("pypi", 2)] {
        let payee_before = env.balance(PAY_TO).await;
        let result = tokio::task::spawn_blocking({
            let (key, url, request) = (key.clone(), url.clone(), request.clone());
            move || official_fetch(client, version, &key, &url, &request)
        })
        .await
        .unwrap();
        assert_eq!(result["status"], 200, "{client} v{version}: {result}");
        let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["status"], "confirmed", "{client} v{version}: {body}");
        assert_eq!(body["message"], "Payment successful");
        assert_eq!(
            env.balance(PAY_TO).await - payee_before,
            U256::from(20_000u64),
            "{client} v{version}: paid once"
        );
        let order = env
            .state
            .gateway
            .store
            .order(body["orderId"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(order.status.as_str(), "confirmed");
    }
}

coffer_store::on_both_databases!(
    backend: [
        settlements_to_a_merchants_pay_to_are_recorded_once,
        the_paywall_answers_402_until_paid_then_proxies_once,
        pelago_orders_are_paid_by_authorization_or_tx_hash_proof,
    ];
);
