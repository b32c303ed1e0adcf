//! Attack 10 (d): refunding more than was paid by asking many times at once.
//!
//! A merchant's paid GatePay order is refunded by 20 requests sent in parallel, each asking for
//! a tenth of what was paid. Each request alone is within the paid amount; together they ask
//! for twice as much. At most what was paid may ever be accepted and recorded. The race is run
//! on several paid orders, with the connections open beforehand, so that it bites.

use coffer_core::Amount;
use coffer_store::testing::Backend;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::kit::{Env, GatePayClient};

/// What was paid: 10 USDC.
const PAID: u64 = 10_000_000;

/// How many paid orders are raced (each with its own twenty requests).
const ROUNDS: usize = 3;

async fn concurrent_refunds_never_exceed_what_was_paid(backend: Backend) {
    let env = Env::new(backend).await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;
    let mut watcher = env.watcher().await;
    let mut prepay_ids = Vec::new();
    for round in 0..ROUNDS {
        let (status, answer) = env
            .gatepay(
                &client,
                "/v1/pay/checkout/order",
                &json!({
                    "merchantTradeNo": format!("refund-race-{round}"), "env": {"terminalType": "WEB"},
                    "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
                    "orderAmount": "10",
                })
                .to_string(),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        env.pay(answer["data"]["chain"]["address"].as_str().unwrap(), PAID)
            .await;
        prepay_ids.push(answer["data"]["prepayId"].as_str().unwrap().to_owned());
    }
    env.watch_and_deliver(&mut watcher).await;

    // One client whose twenty connections are open before the race starts.
    let http = reqwest::Client::new();
    for outcome in join_all((0..20).map(|_| http.get(format!("{}/healthz", env.base)).send())).await
    {
        outcome.unwrap();
    }
    for (round, prepay_id) in prepay_ids.iter().enumerate() {
        let (_, queried) = env
            .gatepay(
                &client,
                "/v1/pay/order/query",
                &json!({"prepayId": prepay_id}).to_string(),
            )
            .await;
        assert_eq!(queried["data"]["status"], "PAID", "{queried}");

        // All twenty signed first, then sent at once, each from its own task.
        let requests: Vec<_> = (0..20)
            .map(|n| {
                let body = json!({
                    "refundRequestId": format!("race-{round}-{n}"), "prepayId": prepay_id,
                    "refundAmount": "1", "refundReason": "race",
                })
                .to_string();
                let timestamp = chrono::Utc::now().timestamp_millis().to_string();
                let nonce = format!("race{round}x{n}");
                http.post(format!("{}/v1/pay/order/refund", env.base))
                    .header("Content-Type", "application/json")
                    .header("X-GatePay-Certificate-ClientId", &client.client_id)
                    .header("X-GatePay-Timestamp", &timestamp)
                    .header("X-GatePay-Nonce", &nonce)
                    .header(
                        "X-GatePay-Signature",
                        coffer_gateway::gatepay::sign(
                            &client.secret,
                            &timestamp,
                            &nonce,
                            body.as_bytes(),
                        ),
                    )
                    .body(body)
            })
            .collect();
        let sent: Vec<_> = requests
            .into_iter()
            .map(|request| {
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = join_all(sent)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_at_most_what_was_paid(&env, &client, prepay_id, &answers).await;
    }
}

/// Of one race's answers: only acceptances and 400608 refusals, acceptances totalling exactly
/// what was paid, and the store holding exactly what was accepted.
async fn assert_at_most_what_was_paid(
    env: &Env,
    client: &GatePayClient,
    prepay_id: &str,
    answers: &[(u16, Value)],
) {
    let mut accepted = Amount::ZERO;
    let mut accepted_count = 0;
    for (status, answer) in answers {
        match status {
            200 => {
                assert_eq!(answer["data"]["refundAmount"], "1", "{answer}");
                accepted = accepted.checked_add(Amount::from(1_000_000u64)).unwrap();
                accepted_count += 1;
            }
            400 => assert_eq!(
                (&answer["status"], &answer["code"]),
                (&json!("FAIL"), &json!("400608")),
                "{answer}"
            ),
            other => panic!("a refund answered {other}: {answer}"),
        }
    }
    assert!(
        accepted <= Amount::from(PAID),
        "refunds of {accepted:?} were accepted for {PAID} paid"
    );
    assert_eq!(accepted_count, 10, "exactly the ten tenths that fit");
    let recorded = env
        .state
        .gateway
        .store
        .gatepay_refunds_for(&env.merchant.id, prepay_id)
        .await
        .unwrap();
    assert_eq!(
        recorded.len(),
        accepted_count,
        "what was answered is what was recorded"
    );
    let total = recorded.iter().fold(Amount::ZERO, |sum, refund| {
        sum.checked_add(refund.refund_amount).unwrap()
    });
    assert!(
        total <= Amount::from(PAID),
        "{total:?} recorded for {PAID} paid"
    );
    // And one more, now that it is all refunded, is refused.
    let (status, answer) = env
        .gatepay(
            client,
            "/v1/pay/order/refund",
            &json!({"refundRequestId": format!("late-{prepay_id}"), "prepayId": prepay_id, "refundAmount": "0.000001"})
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (400, &json!("400608")),
        "{answer}"
    );
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refunds_never_exceed_what_was_paid() {
        super::concurrent_refunds_never_exceed_what_was_paid(super::Backend::Sqlite).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refunds_never_exceed_what_was_paid() {
        super::concurrent_refunds_never_exceed_what_was_paid(super::Backend::Postgres).await;
    }
}
