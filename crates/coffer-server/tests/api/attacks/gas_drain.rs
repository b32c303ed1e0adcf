//! Attack 6: draining the signer's gas. `/x402/settle` used to be open to anyone, for any
//! payee, any value (0 included) and any rate: random keys could make Coffer pay gas forever,
//! and 0-value "sales" to a merchant's payTo flooded its orders. The facilitator now admits a
//! request only under its policy (registered payees by default, a minimum value, per-payer and
//! per-client limits), and every credential acts only for its own merchant.

use alloy::signers::local::PrivateKeySigner;
use coffer_gateway::facilitator_policy::{Access, FacilitatorPolicy};
use coffer_store::testing::Backend;
use serde_json::Value;

use crate::kit::{Auth, Env, Options, PAY_TO};

fn with_policy(backend: Backend, policy: FacilitatorPolicy) -> Options {
    Options::on(backend).configure(move |state| state.with_facilitator_policy(policy))
}

async fn settle(
    env: &Env,
    auth: &Auth,
    signer: &PrivateKeySigner,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    env.post(
        "/x402/settle",
        headers,
        &auth.v2_request(auth.payload(signer)),
    )
    .await
}

/// Under the default policy, strangers settling to payees nobody registered, and dust or
/// zero-value "payments" to the merchant, are refused before anything is simulated or sent.
async fn strangers_cannot_spend_the_signers_gas(backend: Backend) {
    let env = Env::new(backend).await;
    let broadcasts = env.signer_transactions().await;
    let orders = env.order_count().await;

    // Random payers paying random payees (the payers need no funds to be refused).
    for _ in 0..5 {
        let payer = PrivateKeySigner::random();
        let payee = PrivateKeySigner::random().address();
        let auth = Auth::fresh(payer.address(), payee, 1_000_000);
        let (status, reply) = settle(&env, &auth, &payer, &[]).await;
        assert_eq!(status, 403, "{reply}");
        assert_eq!(reply["errorReason"], "pay_to_not_allowed");
        assert_eq!(reply["transaction"], "");
        let (status, reply) = env
            .post("/x402/verify", &[], &auth.v2_request(auth.payload(&payer)))
            .await;
        assert_eq!(
            (status, &reply["isValid"]),
            (403, &Value::Bool(false)),
            "{reply}"
        );
    }
    // Zero and dust to the merchant's registered payTo.
    for value in [0, 1, 999] {
        let auth = Auth::fresh(env.payer.address(), PAY_TO, value);
        let (status, reply) = settle(&env, &auth, &env.payer, &[]).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["success"], false, "value {value}: {reply}");
        assert_eq!(
            reply["errorReason"], "invalid_exact_evm_payload_authorization_value",
            "{reply}"
        );
    }
    assert_eq!(env.signer_transactions().await, broadcasts, "no gas spent");
    assert_eq!(
        env.order_count().await,
        orders,
        "no zero-value sales recorded"
    );

    // A real payment to the merchant still settles, and its gas is counted for the merchant.
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let (status, reply) = settle(&env, &auth, &env.payer, &[]).await;
    assert_eq!(
        (status, &reply["success"]),
        (200, &Value::Bool(true)),
        "{reply}"
    );
    let (_, metrics) = env.get("/metrics", &[]).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    let line = format!(
        "coffer_x402_settlement_gas_total{{merchant=\"{}\"}} ",
        env.merchant.id.as_str()
    );
    let gas: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no gas line for the merchant in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(gas > 20_000, "one transferWithAuthorization's gas: {gas}");
    assert!(metrics.trim_end().ends_with("# EOF"), "still OpenMetrics");
}

/// Per-payer and per-client limits answer 429 with Retry-After, and spend nothing.
async fn floods_are_rate_limited(backend: Backend) {
    let policy = FacilitatorPolicy {
        payer_per_minute: 3,
        client_per_minute: 8,
        ..FacilitatorPolicy::default()
    };
    let env = Env::with(with_policy(backend, policy)).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
        answers.push(settle(&env, &auth, &env.payer, &[]).await);
    }
    let admitted = answers
        .iter()
        .filter(|(s, r)| *s == 200 && r["success"] == true)
        .count();
    assert_eq!(admitted, 3, "{answers:?}");
    let limited = &answers[3];
    assert_eq!(limited.0, 429, "{limited:?}");
    assert_eq!(limited.1["errorReason"], "rate_limited");
    let broadcasts = env.signer_transactions().await;
    // Another payer is not held back by the first one's limit...
    let auth = Auth::fresh(env.stranger.address(), PAY_TO, 1_000);
    assert_eq!(
        settle(&env, &auth, &env.stranger, &[]).await.1["success"],
        true
    );
    // ...but the client is, past its own limit, whoever the payer is.
    let mut client_limited = false;
    for _ in 0..4 {
        let payer = PrivateKeySigner::random();
        let auth = Auth::fresh(payer.address(), PAY_TO, 1_000);
        let response = reqwest::Client::new()
            .post(format!("{}/x402/verify", env.base))
            .json(&auth.v2_request(auth.payload(&payer)))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            client_limited = true;
        }
    }
    assert!(client_limited, "the client limit held");
    assert_eq!(env.signer_transactions().await, broadcasts + 1);
}

/// A stranger's junk naming a real payer's address does not spend that payer's limit (only
/// signatures that recover to the payer count against it), and a huge `from` is just invalid.
async fn a_stranger_cannot_lock_a_payer_out(backend: Backend) {
    let policy = FacilitatorPolicy {
        payer_per_minute: 3,
        client_per_minute: 0,
        ..FacilitatorPolicy::default()
    };
    let env = Env::with(with_policy(backend, policy)).await;
    for _ in 0..10 {
        let forged = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
        let (status, reply) = env
            .post(
                "/x402/verify",
                &[],
                &forged.v2_request(forged.payload_signed(&crate::kit::junk_signature())),
            )
            .await;
        assert_ne!(status, 429, "junk counted against the payer: {reply}");
    }
    let mut huge = Auth::fresh(env.payer.address(), PAY_TO, 1_000)
        .v2_request(serde_json::json!({}))
        .to_string();
    huge = huge.replace(
        "\"payload\":{}",
        &format!(
            "\"payload\":{{\"signature\":\"0x00\",\"authorization\":{{\"from\":\"{}\",\"to\":\"{}\",\"value\":\"1000\",\"validAfter\":\"0\",\"validBefore\":\"99999999999\",\"nonce\":\"0x00\"}}}}",
            "a".repeat(1_000_000),
            PAY_TO
        ),
    );
    let response = reqwest::Client::new()
        .post(format!("{}/x402/verify", env.base))
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error() || response.status() == 200);
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let (status, reply) = settle(&env, &auth, &env.payer, &[]).await;
    assert_eq!(
        (status, &reply["success"]),
        (200, &Value::Bool(true)),
        "{reply}"
    );
}

#[tokio::test]
async fn a_stranger_cannot_lock_a_payer_out_on_sqlite() {
    a_stranger_cannot_lock_a_payer_out(Backend::Sqlite).await;
}

/// With `access = "api_key"`, an anonymous caller is refused, and a merchant's key settles only
/// to that merchant's payees — never another merchant's.
async fn a_key_settles_only_for_its_own_merchant(backend: Backend) {
    let policy = FacilitatorPolicy {
        access: Access::ApiKey,
        ..FacilitatorPolicy::default()
    };
    let env = Env::with(with_policy(backend, policy)).await;
    let other = env
        .state
        .gateway
        .merchants
        .create("Other", None)
        .await
        .unwrap();
    let other_key = env
        .state
        .gateway
        .merchants
        .create_key(&other.id, "t")
        .await
        .unwrap();
    let other_key = secrecy::ExposeSecret::expose_secret(&other_key.key).to_owned();
    let broadcasts = env.signer_transactions().await;

    let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let (status, reply) = settle(&env, &auth, &env.payer, &[]).await;
    assert_eq!(
        (status, &reply["errorReason"]),
        (401, &Value::from("unauthorized")),
        "{reply}"
    );
    let bearer = format!("Bearer {other_key}");
    let (status, reply) = settle(&env, &auth, &env.payer, &[("Authorization", &bearer)]).await;
    assert_eq!(status, 403, "another merchant's key: {reply}");
    let (status, _) = settle(
        &env,
        &auth,
        &env.payer,
        &[("Authorization", "Bearer ck_nope_x")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(env.signer_transactions().await, broadcasts);

    // An OKX credential of the other merchant is refused the same way.
    let credential = env.state.gateway.okx.create(&other.id).await.unwrap();
    let body = serde_json::json!({
        "x402Version": 2,
        "paymentPayload": auth.v2_request(auth.payload(&env.payer))["paymentPayload"],
        "paymentRequirements": auth.v2_request(auth.payload(&env.payer))["paymentRequirements"],
    })
    .to_string();
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let secret = coffer_gateway::okx::expose(&credential.secret);
    let passphrase = coffer_gateway::okx::expose(&credential.passphrase);
    let path = "/api/v6/pay/x402/settle";
    let response = reqwest::Client::new()
        .post(format!("{}{path}", env.base))
        .header("Content-Type", "application/json")
        .header("OK-ACCESS-KEY", credential.access_key.as_str())
        .header(
            "OK-ACCESS-SIGN",
            coffer_gateway::okx::sign(secret, &timestamp, "POST", path, body.as_bytes()),
        )
        .header("OK-ACCESS-PASSPHRASE", passphrase)
        .header("OK-ACCESS-TIMESTAMP", timestamp)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["code"], 51000, "{reply}");
    assert_eq!(env.signer_transactions().await, broadcasts);

    // The merchant's own key settles to its own payee.
    let own = format!("Bearer {}", env.api_key);
    let (status, reply) = settle(&env, &auth, &env.payer, &[("Authorization", &own)]).await;
    assert_eq!(
        (status, &reply["success"]),
        (200, &Value::Bool(true)),
        "{reply}"
    );

    // Its settlement's status is the merchant's own business: another merchant's OKX
    // credential cannot read it (it reads as unknown); the merchant's own can.
    let tx_hash = reply["transaction"].as_str().unwrap().to_owned();
    let status_of = |credential: coffer_gateway::okx::NewCredential| {
        let path = format!("/api/v6/pay/x402/settle/status?txHash={tx_hash}");
        let base = env.base.clone();
        async move {
            let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let secret = coffer_gateway::okx::expose(&credential.secret);
            let response = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .header("OK-ACCESS-KEY", credential.access_key.as_str())
                .header(
                    "OK-ACCESS-SIGN",
                    coffer_gateway::okx::sign(secret, &timestamp, "GET", &path, b""),
                )
                .header(
                    "OK-ACCESS-PASSPHRASE",
                    coffer_gateway::okx::expose(&credential.passphrase),
                )
                .header("OK-ACCESS-TIMESTAMP", timestamp)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    let foreign = status_of(env.state.gateway.okx.create(&other.id).await.unwrap()).await;
    assert_eq!(foreign["code"], 51000, "{foreign}");
    assert!(foreign["data"].is_null(), "{foreign}");
    let own = status_of(
        env.state
            .gateway
            .okx
            .create(&env.merchant.id)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(own["data"]["status"], "success", "{own}");
}

#[tokio::test]
async fn floods_are_rate_limited_on_sqlite() {
    floods_are_rate_limited(Backend::Sqlite).await;
}

coffer_store::on_both_databases!(
    backend: [
        strangers_cannot_spend_the_signers_gas,
        a_key_settles_only_for_its_own_merchant,
    ];
);
