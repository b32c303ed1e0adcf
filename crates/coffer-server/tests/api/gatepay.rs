//! The GatePay-compatible checkout API end to end against a real anvil chain, on SQLite and
//! PostgreSQL: signed requests create payment orders, a real ERC-20 transfer pays them, the
//! watcher and dispatcher are driven step by step, and a local merchant endpoint receives
//! GatePay notifications signed with the same X-GatePay-* headers.

use std::collections::BTreeMap;
use std::ops::Deref;

use coffer_gateway::fiat::FiatRates;
use coffer_gateway::gatepay;
use coffer_gateway::workers::watcher::{StepReport, Watcher};
use coffer_server::AppState;
use coffer_store::DeliveryStatus;
use coffer_store::testing::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::{self, Answer, Inbox, Options, now_ms};

fn answer_text(answer: &Value) -> String {
    answer["errorMessage"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The seed's example request body, byte for byte as published.
const SEED_EXAMPLE: &str = r#"
{
  "merchantTradeNo": "163",
  "env": {
    "terminalType": "APP"
  },
  "merchantUserId": 123,
  "goods": {
    "goodsType": "02",
    "goodsName": "Sipariş Ödemesi - 177",
    "goodsDetail": "Sipariş No : 160"
  },
  "chain": "MATIC",
  "fullCurrType": "USDT_MATIC"
}
"#;

/// The GatePay environment: the kit's, with two confirmations, Polygon enabled (never watched
/// here) so that the seed's USDT_MATIC order can be created, a EUR rate, a merchant whose
/// endpoint receives the notifications, a deposit wallet, a GatePay credential and a watcher at
/// the current block.
struct Env {
    kit: kit::Env,
    client_id: String,
    secret: String,
    watcher: Watcher,
    sink: Inbox,
}

impl Deref for Env {
    type Target = kit::Env;

    fn deref(&self) -> &kit::Env {
        &self.kit
    }
}

impl Env {
    async fn new(backend: Backend) -> Env {
        Env::with(backend, true).await
    }

    /// The environment without a chain (its RPC refuses connections), for tests that pay
    /// nothing: a test that does touch the chain fails.
    async fn chain_free(backend: Backend) -> Env {
        Env::with(backend, false).await
    }

    async fn with(backend: Backend, with_chain: bool) -> Env {
        let (sink, notify_url) = Inbox::start().await;
        let eur = BTreeMap::from([(
            "EUR".to_owned(),
            BTreeMap::from([("USDC".to_owned(), "0.9".to_owned())]),
        )]);
        let rates = FiatRates::with_overrides(&eur).unwrap();
        // The merchant's endpoint is local: loopback is allowed, as under `coffer dev`.
        let options = Options::on(backend)
            .confirmations(2)
            .also_serving("polygon")
            .local_endpoints()
            .configure(move |state| state.with_fiat_rates(rates))
            .merchant_webhook(&notify_url);
        let options = if with_chain {
            options
        } else {
            options.without_chain()
        };
        let kit = kit::Env::with(options).await;
        kit.deposit_wallet(&kit.merchant.id).await;
        let client = kit.gatepay_client(&kit.merchant.id).await;
        let watcher = if with_chain {
            kit.watcher().await
        } else {
            Watcher::new(&kit.state.gateway, kit::CHAIN_ID).unwrap()
        };
        Env {
            client_id: client.client_id,
            secret: client.secret,
            watcher,
            sink,
            kit,
        }
    }

    /// Sends `body` to `path` with the given headers.
    async fn send(
        &self,
        base: &str,
        path: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn signed_headers(
        &self,
        body: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Vec<(&'static str, String)> {
        let timestamp = timestamp.to_string();
        vec![
            ("X-GatePay-Certificate-ClientId", self.client_id.clone()),
            ("X-GatePay-Timestamp", timestamp.clone()),
            ("X-GatePay-Nonce", nonce.to_owned()),
            (
                "X-GatePay-Signature",
                gatepay::sign(&self.secret, &timestamp, nonce, body.as_bytes()),
            ),
        ]
    }

    /// A correctly signed request with a fresh nonce.
    async fn call(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let nonce = coffer_gateway::events::new_id("n");
        let headers = self.signed_headers(body, now_ms(), &nonce);
        self.send(&self.base, path, body, &headers).await
    }

    async fn create(&self, body: Value) -> Value {
        let (status, answer) = self.call("/v1/pay/checkout/order", &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "SUCCESS", "{answer}");
        assert_eq!(answer["code"], "000000");
        answer["data"].clone()
    }

    async fn query(&self, prepay_id: &str) -> Value {
        let (status, answer) = self
            .call(
                "/v1/pay/order/query",
                &json!({"prepayId": prepay_id}).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["data"].clone()
    }

    async fn watch(&mut self) {
        while self.watcher.step().await.expect("watcher step") != StepReport::Idle {}
    }
}

fn order_body(trade_no: &str, amount: &str) -> Value {
    json!({
        "merchantTradeNo": trade_no,
        "env": {"terminalType": "WEB"},
        "merchantUserId": 7,
        "goods": {"goodsType": "02", "goodsName": "Plan", "goodsDetail": "one month"},
        "fullCurrType": "USDC_BASESEPOLIA",
        "orderAmount": amount,
        "returnUrl": "https://shop.example/paid",
        "cancelUrl": "https://shop.example/cancelled"
    })
}

async fn the_seeds_example_request_correctly_signed_succeeds(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let (status, answer) = env.call("/v1/pay/checkout/order", SEED_EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["status"], &answer["code"], &answer["errorMessage"]),
        (&json!("SUCCESS"), &json!("000000"), &json!(""))
    );
    let data = &answer["data"];
    let prepay_id = data["prepayId"].as_str().unwrap();
    assert!(prepay_id.len() >= 18 && prepay_id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(data["currency"], "USDT");
    assert_eq!(data["orderAmount"], "1");
    assert_eq!(data["payCurrency"], "USDT");
    assert_eq!(data["payAmount"], "1");
    assert_eq!(data["terminalType"], "APP");
    assert_eq!(data["goodsName"], "Sipariş Ödemesi - 177");
    assert_eq!(data["chain"]["chain_type"], "MATIC");
    assert_eq!(data["chain"]["fullCurrType"], "USDT_MATIC");
    assert!(data["chain"]["address"].as_str().unwrap().starts_with("0x"));
    assert!(data["expireTime"].as_i64().unwrap() > now_ms());
    let location = data["location"].as_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/pay/ORD-", env.base)),
        "{location}"
    );
    assert!(
        data["qrContent"]
            .as_str()
            .unwrap()
            .starts_with("ethereum:0x")
    );
    // The checkout page answers.
    let page = reqwest::get(location).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // The same order, by merchantTradeNo.
    let (_, found) = env
        .call("/v1/pay/order/query", r#"{"merchantTradeNo":"163"}"#)
        .await;
    assert_eq!(found["data"]["prepayId"], prepay_id);
    assert_eq!(found["data"]["status"], "PENDING");
}

async fn wrong_signature_stale_timestamp_and_reused_nonce_get_gatepays_errors(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let body = order_body("auth-1", "1").to_string();
    let path = "/v1/pay/checkout/order";

    let mut headers = env.signed_headers(&body, now_ms(), "n1");
    headers[3].1 = gatepay::sign("not-the-secret", &headers[1].1, "n1", body.as_bytes());
    let (status, answer) = env.send(&env.base, path, &body, &headers).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (&answer["status"], &answer["code"], &answer["label"]),
        (
            &json!("FAIL"),
            &json!("400002"),
            &json!("INVALID_SIGNATURE")
        )
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("X-GatePay-Signature")
    );

    // Signed over another body.
    let headers = env.signed_headers("{}", now_ms(), "n2");
    let (_, answer) = env.send(&env.base, path, &body, &headers).await;
    assert_eq!(answer["code"], "400002");

    let stale = env.signed_headers(&body, now_ms() - 6 * 60 * 1000, "n3");
    let (status, answer) = env.send(&env.base, path, &body, &stale).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["code"], "400003");
    let future = env.signed_headers(&body, now_ms() + 6 * 60 * 1000, "n4");
    assert_eq!(
        env.send(&env.base, path, &body, &future).await.1["code"],
        "400003"
    );
    // Seconds where milliseconds belong: said so, with the server's time to compare.
    let seconds = env.signed_headers(&body, now_ms() / 1000, "n4s");
    let (_, answer) = env.send(&env.base, path, &body, &seconds).await;
    let text = answer["errorMessage"].as_str().unwrap();
    assert_eq!(answer["code"], "400003");
    assert!(
        text.contains("looks like unix seconds: send milliseconds")
            && text.contains("from the server time 1"),
        "{text}"
    );
    assert!(
        !answer_text(&env.send(&env.base, path, &body, &stale).await.1).contains("looks like"),
        "a plain stale timestamp gets no hint"
    );

    let fresh = env.signed_headers(&body, now_ms(), "n5");
    let (status, answer) = env.send(&env.base, path, &body, &fresh).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = env.send(&env.base, path, &body, &fresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (&answer["code"], &answer["label"]),
        (&json!("400020"), &json!("SIGNATURE_NONCE_ERROR"))
    );

    // A nonce that failed its signature check was not burnt.
    let other = order_body("auth-2", "1").to_string();
    let headers = env.signed_headers(&other, now_ms(), "n1");
    assert_eq!(
        env.send(&env.base, path, &other, &headers).await.0,
        StatusCode::OK
    );

    // Missing headers and an unknown client.
    let (_, answer) = env.send(&env.base, path, &body, &[]).await;
    assert_eq!(answer["code"], "400004");
    let mut unknown = env.signed_headers(&body, now_ms(), "n6");
    unknown[0].1 = "00000000-0000-0000-0000-000000000000".to_owned();
    assert_eq!(
        env.send(&env.base, path, &body, &unknown).await.1["code"],
        "400004"
    );
    let no_nonce: Vec<_> = env
        .signed_headers(&body, now_ms(), "n7")
        .into_iter()
        .filter(|(name, _)| *name != "X-GatePay-Nonce")
        .collect();
    assert_eq!(
        env.send(&env.base, path, &body, &no_nonce).await.1["code"],
        "400020"
    );

    // The nonce is remembered in the database: a restarted server (a new state over a new
    // connection) still refuses the replay.
    let store = env.db.reopen().await.unwrap();
    let chains = (*env.state.gateway.chains).clone();
    let (base, _) = kit::serve(|_| AppState::new(store, chains, &env.base).unwrap()).await;
    let (status, answer) = env.send(&base, path, &body, &fresh).await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::UNAUTHORIZED, &json!("400020"))
    );

    // A revoked credential stops working at once.
    env.state
        .gateway
        .gatepay
        .revoke(&env.client_id)
        .await
        .unwrap();
    let (_, answer) = env.call(path, &order_body("auth-3", "1").to_string()).await;
    assert_eq!(answer["code"], "400004");
}

async fn a_merchant_trade_number_is_used_once(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let first = env.create(order_body("dup-1", "2.5")).await;
    let (status, answer) = env
        .call(
            "/v1/pay/checkout/order",
            &order_body("dup-1", "3").to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        (&answer["status"], &answer["code"]),
        (&json!("FAIL"), &json!("400201"))
    );
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("merchantTradeNo")
    );
    // The first order is untouched; a failed creation frees its number.
    assert_eq!(
        env.query(first["prepayId"].as_str().unwrap()).await["orderAmount"],
        "2.5"
    );
    let mut bad = order_body("dup-2", "1.0000001");
    let (status, _) = env.call("/v1/pay/checkout/order", &bad.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    bad["orderAmount"] = json!("1");
    env.create(bad).await;
}

async fn bad_input_gets_a_4xx_in_gatepays_envelope_naming_the_field(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let valid = order_body("bad-1", "1");
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    let cases = [
        ("{\"merchantTradeNo\": ".to_owned(), "body"),
        ("[]".to_owned(), "body"),
        (without("merchantTradeNo"), "merchantTradeNo"),
        (
            with("merchantTradeNo", json!("has space")),
            "merchantTradeNo",
        ),
        (with("merchantTradeNo", json!(12)), "merchantTradeNo"),
        (without("env"), "env"),
        (
            with("env", json!({"terminalType": "TV"})),
            "env.terminalType",
        ),
        (without("goods"), "goods"),
        (with("orderAmount", json!(1.5)), "orderAmount"),
        (with("orderAmount", json!("1.0000001")), "orderAmount"),
        (with("orderAmount", json!("-1")), "orderAmount"),
        (with("orderAmount", json!("0")), "orderAmount"),
        (with("orderAmount", json!("1e3")), "orderAmount"),
        (with("fullCurrType", json!("DOGE_MOON")), "fullCurrType"),
        (with("chain", json!("BSC")), "chain"),
        (with("currency", json!("USDT")), "currency"),
        (with("returnUrl", json!("javascript:alert(1)")), "returnUrl"),
        (with("cancelUrl", json!("ftp://x")), "cancelUrl"),
        (with("callbackUrl", json!("nope")), "callbackUrl"),
        (with("orderExpireTime", json!(1)), "orderExpireTime"),
        (with("orderExpireTime", json!("soon")), "orderExpireTime"),
        (with("merchantUserId", json!("abc")), "merchantUserId"),
        (with("surchargeAmount", json!("x")), "surchargeAmount"),
        (with("toleranceAmount", json!("5")), "toleranceAmount"),
        (with("fiatCurrency", json!("USD")), "orderAmount"),
    ];
    for (body, field) in cases {
        let (status, answer) = env.call("/v1/pay/checkout/order", &body).await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        assert_eq!(answer["status"], "FAIL", "{body}: {answer}");
        assert!(
            answer["code"].as_str().unwrap().starts_with("400"),
            "{body}: {answer}"
        );
        assert!(
            answer["errorMessage"].as_str().unwrap().starts_with(field),
            "{body}: expected the message to name {field}: {answer}"
        );
    }
    for (path, body, field) in [
        ("/v1/pay/order/query", "{}", "prepayId"),
        (
            "/v1/pay/order/query",
            r#"{"prepayId":"1","merchantTradeNo":"x"}"#,
            "prepayId",
        ),
        ("/v1/pay/order/query", r#"{"prepayId":5}"#, "prepayId"),
        ("/v1/pay/order/close", "null", "body"),
        (
            "/v1/pay/order/refund",
            r#"{"prepayId":"1"}"#,
            "refundRequestId",
        ),
        ("/v1/pay/order/refund/query", "{}", "refundRequestId"),
    ] {
        let (status, answer) = env.call(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert!(
            answer["errorMessage"].as_str().unwrap().starts_with(field),
            "{path} {body}: {answer}"
        );
    }
    let (status, answer) = env
        .call("/v1/pay/order/query", r#"{"prepayId":"123"}"#)
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::NOT_FOUND, &json!("400202"))
    );
    assert!(
        answer_text(&answer).starts_with("prepayId: order \"123\" does not exist"),
        "{answer}"
    );
    let (_, answer) = env
        .call("/v1/pay/order/close", r#"{"merchantTradeNo":"shop-9"}"#)
        .await;
    assert!(
        answer_text(&answer).starts_with("merchantTradeNo: order \"shop-9\" does not exist"),
        "{answer}"
    );
    // Nothing was created.
    let stored = env
        .state
        .gateway
        .store
        .gatepay_order_by_trade_no(&env.merchant.id, "bad-1")
        .await
        .unwrap();
    assert!(stored.is_none());
}

async fn a_paid_order_queries_paid_and_the_merchant_gets_a_signed_notification(backend: Backend) {
    let mut env = Env::new(backend).await;
    let data = env.create(order_body("paid-1", "12.5")).await;
    let prepay_id = data["prepayId"].as_str().unwrap().to_owned();
    assert_eq!(data["payAmount"], "12.5");
    let address = data["chain"]["address"].as_str().unwrap().to_owned();

    env.pay(&address, 12_500_000).await;
    env.watch().await;
    assert_eq!(env.query(&prepay_id).await["status"], "PROCESS");
    assert_eq!(env.deliver().await, 0, "nothing is told before it is paid");
    env.mine(1).await;
    env.watch().await;

    let paid = env.query(&prepay_id).await;
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["merchantTradeNo"], "paid-1");
    assert_eq!(paid["actualAmount"], "12.5");
    assert_eq!(
        paid["pay_account"].as_str().unwrap().to_lowercase(),
        env.payer.address().to_string().to_lowercase()
    );
    assert!(paid["transactionId"].as_str().unwrap().starts_with("0x"));
    assert_eq!(paid["payDetails"].as_array().unwrap().len(), 1);

    assert_eq!(env.deliver().await, 1);
    let notifications = env.sink.received();
    assert_eq!(
        notifications.len(),
        1,
        "only the GatePay notification is sent"
    );
    let (headers, body) = &notifications[0];
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("X-GatePay-Certificate-ClientId"), env.client_id);
    assert!(gatepay::verify(
        &env.secret,
        &header("X-GatePay-Timestamp"),
        &header("X-GatePay-Nonce"),
        body.as_bytes(),
        &header("X-GatePay-Signature"),
    ));
    assert_eq!(header("X-GatePay-Signature").len(), 128);
    let notification: Value = serde_json::from_str(body).unwrap();
    assert_eq!(notification["bizType"], "PAY");
    assert_eq!(notification["bizId"], prepay_id.as_str());
    assert_eq!(notification["bizStatus"], "PAY_SUCCESS");
    assert_eq!(notification["client_id"], env.client_id.as_str());
    let inner: Value = serde_json::from_str(notification["data"].as_str().unwrap()).unwrap();
    assert_eq!(inner["merchantTradeNo"], "paid-1");
    assert_eq!(inner["orderAmount"], "12.5");
    assert_eq!(inner["totalFee"], "12.5");
    assert_eq!(inner["currency"], "USDC");
    assert_eq!(inner["terminalType"], "WEB");
    assert_eq!(inner["productName"], "Plan");
    assert_eq!(inner["transactionId"], paid["transactionId"]);

    // Acknowledged: delivered, never sent again.
    let deliveries = env
        .state
        .gateway
        .store
        .deliveries(&env.merchant.id, None, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivered);
    assert_eq!(env.deliver().await, 0);

    // Refunds are recorded against the paid amount.
    let refund = |id: &str, amount: &str| {
        json!({"refundRequestId": id, "prepayId": prepay_id, "refundAmount": amount, "refundReason": "changed mind"}).to_string()
    };
    let (status, answer) = env
        .call("/v1/pay/order/refund", &refund("r-1", "2.5"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["refundAmount"], "2.5");
    let (status, answer) = env
        .call("/v1/pay/order/refund", &refund("r-2", "10.01"))
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (StatusCode::BAD_REQUEST, &json!("400608"))
    );
    let (_, answer) = env.call("/v1/pay/order/refund", &refund("r-1", "1")).await;
    assert_eq!(answer["code"], "400607");
    let (_, answer) = env
        .call("/v1/pay/order/refund/query", r#"{"refundRequestId":"r-1"}"#)
        .await;
    assert_eq!(answer["data"]["refundStatus"], "PROCESS");
    assert_eq!(answer["data"]["prepayId"], prepay_id.as_str());
    // A paid order cannot be closed.
    let (_, answer) = env
        .call(
            "/v1/pay/order/close",
            &json!({"prepayId": prepay_id}).to_string(),
        )
        .await;
    assert_eq!(answer["code"], "400204");
}

async fn an_unacknowledged_notification_is_retried(backend: Backend) {
    let mut env = Env::new(backend).await;
    env.sink.answer_with(Answer::PlainOk);
    let data = env.create(order_body("retry-1", "1")).await;
    env.pay(data["chain"]["address"].as_str().unwrap(), 1_000_000)
        .await;
    env.mine(1).await;
    env.watch().await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(env.sink.received().len(), 1);
    let deliveries = env
        .state
        .gateway
        .store
        .deliveries(&env.merchant.id, None, 10)
        .await
        .unwrap();
    assert_eq!(
        deliveries[0].status,
        DeliveryStatus::Pending,
        "a plain 200 OK is not an acknowledgement"
    );
    assert!(
        deliveries[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("returnCode")
    );
    assert!(deliveries[0].next_attempt_at_ms > now_ms());
}

async fn closing_an_unpaid_order_cancels_it_and_notifies_pay_close(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let data = env.create(order_body("close-1", "1")).await;
    let prepay_id = data["prepayId"].as_str().unwrap();
    let (status, answer) = env
        .call("/v1/pay/order/close", r#"{"merchantTradeNo":"close-1"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["result"], "SUCCESS");
    assert_eq!(env.query(prepay_id).await["status"], "CANCELLED");
    // The checkout page shows the cancelled screen and sends the customer to cancelUrl.
    let location = data["location"].as_str().unwrap();
    let page = reqwest::get(location).await.unwrap().text().await.unwrap();
    assert!(page.contains("data-stage=\"cancelled\""), "{page}");
    assert!(
        page.contains("url=https://shop.example/cancelled"),
        "{page}"
    );
    assert!(
        !page.contains("id=\"cancel\""),
        "no cancel link once cancelled"
    );
    let live: Value = reqwest::get(format!("{location}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["stage"], "cancelled");
    assert_eq!(live["cancel_url"], "https://shop.example/cancelled");
    let (_, again) = env
        .call("/v1/pay/order/close", r#"{"merchantTradeNo":"close-1"}"#)
        .await;
    assert_eq!(again["code"], "400204");
    let (_, refund) = env
        .call(
            "/v1/pay/order/refund",
            &json!({"refundRequestId": "x", "prepayId": prepay_id, "refundAmount": "1"})
                .to_string(),
        )
        .await;
    assert_eq!(refund["code"], "400604");
    assert_eq!(env.deliver().await, 1);
    let (_, body) = &env.sink.received()[0];
    let notification: Value = serde_json::from_str(body).unwrap();
    assert_eq!(notification["bizStatus"], "PAY_CLOSE");
    let inner: Value = serde_json::from_str(notification["data"].as_str().unwrap()).unwrap();
    assert!(inner.get("transactionId").is_none());
}

async fn the_checkout_page_shows_what_an_underpaid_order_still_needs(backend: Backend) {
    let mut env = Env::new(backend).await;
    let data = env.create(order_body("under-1", "5")).await;
    env.pay(data["chain"]["address"].as_str().unwrap(), 2_000_000)
        .await;
    env.mine(1).await;
    env.watch().await;
    let location = data["location"].as_str().unwrap();
    let live: Value = reqwest::get(format!("{location}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&live["stage"], &live["amount_paid"], &live["amount_due"]),
        (&json!("underpaid"), &json!("2.00"), &json!("3.00"))
    );
    let page = reqwest::get(location).await.unwrap().text().await.unwrap();
    assert!(page.contains("data-stage=\"underpaid\""), "{page}");
    // The headline and the QR code ask for the 3.00 still due, never the 5 of the order.
    assert!(
        page.contains("id=\"amount\" aria-labelledby=\"amount-label\">3.00 USDC<"),
        "{page}"
    );
    assert!(!page.contains(">5.00 USDC<"), "{page}");
    let queried = env.query(data["prepayId"].as_str().unwrap()).await;
    assert_eq!(queried["subStatus"], "underpaid");
    assert!(
        queried["qrContent"]
            .as_str()
            .unwrap()
            .ends_with("&uint256=3000000"),
        "{queried}"
    );
    let qr_url = data["qrCodeUrl"].as_str().unwrap();
    let qr = reqwest::get(qr_url).await.unwrap();
    assert_eq!(
        (qr.status(), qr.headers()["cache-control"].to_str().unwrap()),
        (StatusCode::OK, "no-store")
    );

    // Paid in full: the page offers no way to pay, and there is no code to scan.
    env.pay(data["chain"]["address"].as_str().unwrap(), 3_000_000)
        .await;
    env.mine(1).await;
    env.watch().await;
    let page = reqwest::get(location).await.unwrap().text().await.unwrap();
    assert!(page.contains("<div id=\"pay\" hidden>"), "{page}");
    assert!(page.contains("<div id=\"pay-to\" hidden>"), "{page}");
    let qr = reqwest::get(qr_url).await.unwrap();
    assert_eq!(qr.status(), StatusCode::GONE);
    let gone: Value = qr.json().await.unwrap();
    assert_eq!(gone["error"]["code"], "NOTHING_TO_PAY");

    // An unknown order: a browser gets a page saying so, an API client JSON.
    let unknown = format!("{}/pay/ORD-nothing-here", env.base);
    let page = reqwest::Client::new()
        .get(&unknown)
        .header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains("Payment not found") && text.contains("ORD-nothing-here"),
        "{text}"
    );
    let api = reqwest::get(&unknown).await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let api: Value = api.json().await.unwrap();
    assert_eq!(api["error"]["code"], "ORDER_NOT_FOUND");
}

async fn fiat_priced_orders_lock_and_return_the_rate(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let mut body = order_body("fiat-1", "1");
    body.as_object_mut().unwrap().remove("orderAmount");
    body["fiatCurrency"] = json!("USD");
    body["fiatAmount"] = json!("10.5");
    let data = env.create(body.clone()).await;
    assert_eq!(
        (
            &data["payAmount"],
            &data["fiatCurrency"],
            &data["fiatAmount"],
            &data["fiatRate"]
        ),
        (&json!("10.5"), &json!("USD"), &json!("10.50"), &json!("1"))
    );
    let queried = env.query(data["prepayId"].as_str().unwrap()).await;
    assert_eq!(queried["fiatRate"], "1");
    // 10 EUR at 0.9 EUR per USDC is 11.1111… USDC: rounded up to 11.111112.
    body["merchantTradeNo"] = json!("fiat-2");
    body["fiatCurrency"] = json!("EUR");
    body["fiatAmount"] = json!("10");
    let data = env.create(body.clone()).await;
    assert_eq!(
        (&data["payAmount"], &data["fiatRate"]),
        (&json!("11.111112"), &json!("0.9"))
    );
    body["merchantTradeNo"] = json!("fiat-3");
    body["fiatCurrency"] = json!("JPY");
    let (_, answer) = env.call("/v1/pay/checkout/order", &body.to_string()).await;
    assert_eq!(answer["code"], "400205");
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("fiatCurrency")
    );
    body["fiatCurrency"] = json!("USD");
    body["fiatAmount"] = json!("1.001");
    let (_, answer) = env.call("/v1/pay/checkout/order", &body.to_string()).await;
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("fiatAmount"),
        "{answer}"
    );

    // The payment-orders API takes the same fields.
    let key = env
        .state
        .gateway
        .merchants
        .create_key(&env.merchant.id, "t")
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/api/payment-orders/", env.base))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&key.key))
        .json(&json!({"fiat_currency": "EUR", "fiat_amount": "10", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        (
            &order["data"]["amount"],
            &order["data"]["fiat_currency"],
            &order["data"]["fiat_amount"],
            &order["data"]["exchange_rate"]
        ),
        (
            &json!("11.111112"),
            &json!("EUR"),
            &json!("10.00"),
            &json!("0.9")
        )
    );
    let id = order["data"]["order_id"].as_str().unwrap();
    let read: Value = reqwest::Client::new()
        .get(format!("{}/api/payment-orders/{id}/", env.base))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&key.key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["data"]["exchange_rate"], "0.9");
}

coffer_store::on_both_databases!(
    the_seeds_example_request_correctly_signed_succeeds,
    wrong_signature_stale_timestamp_and_reused_nonce_get_gatepays_errors,
    a_merchant_trade_number_is_used_once,
    bad_input_gets_a_4xx_in_gatepays_envelope_naming_the_field,
    a_paid_order_queries_paid_and_the_merchant_gets_a_signed_notification,
    an_unacknowledged_notification_is_retried,
    closing_an_unpaid_order_cancels_it_and_notifies_pay_close,
    the_checkout_page_shows_what_an_underpaid_order_still_needs,
    fiat_priced_orders_lock_and_return_the_rate,
);
