//! Attack 10 (f): a timestamp that makes the server's arithmetic overflow.
//!
//! `X-GatePay-Timestamp: -9223372036854775808` once made `now - sent` overflow, which panics in
//! a debug build (the request dies without an answer) and wraps in a release build. Every
//! extreme or malformed timestamp on the GatePay and OKX routes, and every extreme GatePay
//! `orderExpireTime`, must get the family's 4xx in its own envelope; never a 5xx, never a
//! dropped connection. (Tests run in the dev profile, with overflow checks on.)

use coffer_gateway::okx;
use coffer_store::testing::Backend;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::kit::{Env, Options};

/// Timestamps no clock sends: the ends of i64, their neighbours, numbers past i64, and text.
const EXTREME: &[&str] = &[
    "-9223372036854775808",
    "9223372036854775807",
    "-9223372036854775807",
    "9223372036854775806",
    "-1",
    "0",
    "1",
    "+9223372036854775807",
    "99999999999999999999",
    "-99999999999999999999",
    "18446744073709551616",
    "1e30",
    "0x7fffffffffffffff",
    "soon",
    "NaN",
    "--1",
    "1.5",
    "9223372036854775807000",
];

/// RFC 3339 times at and past the edges of what a date library holds, and non-times.
const EXTREME_RFC3339: &[&str] = &[
    "-9223372036854775808",
    "9223372036854775807",
    "-1",
    "99999999999999999999",
    "0000-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999-23:59",
    "0000-01-01T00:00:00.000+23:59",
    "+262143-12-31T23:59:59.999Z",
    "-262143-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "soon",
];

const GATEPAY_ROUTES: &[&str] = &[
    "/v1/pay/checkout/order",
    "/v1/pay/order/query",
    "/v1/pay/order/close",
    "/v1/pay/order/refund",
    "/v1/pay/order/refund/query",
];

const OKX_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v6/x402/supported"),
    ("POST", "/api/v6/x402/verify"),
    ("POST", "/api/v6/x402/settle"),
    ("GET", "/api/v6/pay/x402/supported"),
    ("POST", "/api/v6/pay/x402/verify"),
    ("POST", "/api/v6/pay/x402/settle"),
    (
        "GET",
        "/api/v6/pay/x402/settle/status?txHash=0x0000000000000000000000000000000000000000000000000000000000000000",
    ),
];

async fn extreme_timestamps_get_the_familys_4xx_never_a_5xx_or_a_panic(backend: Backend) {
    let env = Env::with(Options::on(backend).without_chain()).await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;

    // GatePay: every route, correctly signed over each timestamp.
    for path in GATEPAY_ROUTES {
        for timestamp in EXTREME {
            let (status, answer) = env.gatepay_at(&client, path, "{}", timestamp).await;
            assert_eq!(status, 401, "{path} {timestamp}: {answer}");
            assert_eq!(
                (&answer["status"], &answer["code"], &answer["label"]),
                (
                    &json!("FAIL"),
                    &json!("400003"),
                    &json!("REQUEST_TIMESTAMP_TIMEOUT")
                ),
                "{path} {timestamp}: {answer}"
            );
        }
    }

    // GatePay: the payment window's end, correctly signed and fresh.
    for (n, expire) in [
        json!(i64::MIN),
        json!(i64::MAX),
        json!(i64::MIN + 1),
        json!(i64::MAX - 1),
        json!(-1),
        json!(0),
        json!(1),
        json!(u64::MAX),
        json!(99_999_999_999_999_999_999.0),
        json!(1e300),
        json!(-1.5),
        json!("99999999999999999999"),
        json!("soon"),
        json!(null),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({
            "merchantTradeNo": format!("expire-{n}"), "env": {"terminalType": "WEB"},
            "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
            "orderAmount": "1", "orderExpireTime": expire,
        });
        let (status, answer) = env
            .gatepay(&client, "/v1/pay/checkout/order", &body.to_string())
            .await;
        if expire.is_null() {
            assert_eq!(
                status, 200,
                "a null orderExpireTime is the default: {answer}"
            );
            continue;
        }
        assert_eq!(status, 400, "orderExpireTime {expire}: {answer}");
        assert_eq!(
            answer["code"], "400001",
            "orderExpireTime {expire}: {answer}"
        );
        assert!(
            answer["errorMessage"]
                .as_str()
                .unwrap()
                .starts_with("orderExpireTime"),
            "orderExpireTime {expire}: {answer}"
        );
    }
    assert_eq!(
        env.orders().await.len(),
        1,
        "only the default window made an order"
    );

    // OKX: every route, correctly signed over each timestamp.
    let credential = env
        .state
        .gateway
        .okx
        .create(&env.merchant.id)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for (method, path) in OKX_ROUTES {
        for timestamp in EXTREME.iter().chain(EXTREME_RFC3339) {
            let body = if *method == "POST" { "{}" } else { "" };
            let signature = okx::sign(
                credential.secret.expose_secret(),
                timestamp,
                method,
                path,
                body.as_bytes(),
            );
            let request = match *method {
                "POST" => http
                    .post(format!("{}{path}", env.base))
                    .header("Content-Type", "application/json")
                    .body(body),
                _ => http.get(format!("{}{path}", env.base)),
            };
            let response = request
                .header("OK-ACCESS-KEY", &credential.access_key)
                .header(
                    "OK-ACCESS-PASSPHRASE",
                    credential.passphrase.expose_secret(),
                )
                .header("OK-ACCESS-TIMESTAMP", *timestamp)
                .header("OK-ACCESS-SIGN", signature)
                .send()
                .await
                .unwrap_or_else(|error| panic!("{method} {path} {timestamp}: no answer: {error}"));
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(status, 401, "{method} {path} {timestamp}: {answer}");
            let code = match &answer["code"] {
                Value::String(code) => code.clone(),
                other => other.to_string(),
            };
            assert_eq!(code, "50112", "{method} {path} {timestamp}: {answer}");
        }
    }
}

coffer_store::on_both_databases!(extreme_timestamps_get_the_familys_4xx_never_a_5xx_or_a_panic);
