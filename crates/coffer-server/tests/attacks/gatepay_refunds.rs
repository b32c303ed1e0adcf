//! Attack 10 (d): refunding more than was paid by asking many times at once.
//!
//! A merchant's paid GatePay order is refunded by 20 requests sent in parallel, each asking for
//! a tenth of what was paid. Each request alone is within the paid amount; together they ask
//! for twice as much. At most what was paid may ever be accepted and recorded.

use coffer_core::Amount;
use coffer_store::testing::Backend;
use futures_util::future::join_all;
use serde_json::json;

use crate::harness::Env;

/// What was paid: 10 USDC.
const PAID: u64 = 10_000_000;

async fn concurrent_refunds_never_exceed_what_was_paid(backend: Backend) {
    let env = Env::new(backend).await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;
    let mut watcher = env.watcher().await;
    let (status, answer) = env
        .gatepay(
            &client,
            "/v1/pay/checkout/order",
            &json!({
                "merchantTradeNo": "refund-race", "env": {"terminalType": "WEB"},
                "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
                "orderAmount": "10",
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let prepay_id = answer["data"]["prepayId"].as_str().unwrap().to_owned();
    env.pay(answer["data"]["chain"]["address"].as_str().unwrap(), PAID)
        .await;
    env.watch_and_deliver(&mut watcher).await;
    let (_, queried) = env
        .gatepay(
            &client,
            "/v1/pay/order/query",
            &json!({"prepayId": prepay_id}).to_string(),
        )
        .await;
    assert_eq!(queried["data"]["status"], "PAID", "{queried}");

    let answers = join_all((0..20).map(|n| {
        let body = json!({
            "refundRequestId": format!("race-{n}"), "prepayId": prepay_id,
            "refundAmount": "1", "refundReason": "race",
        })
        .to_string();
        let env = &env;
        let client = &client;
        async move { env.gatepay(client, "/v1/pay/order/refund", &body).await }
    }))
    .await;
    let mut accepted = Amount::ZERO;
    let mut accepted_count = 0;
    for (status, answer) in &answers {
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
        .store
        .gatepay_refunds_for(&env.merchant.id, &prepay_id)
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
            &client,
            "/v1/pay/order/refund",
            &json!({"refundRequestId": "late", "prepayId": prepay_id, "refundAmount": "0.000001"})
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
