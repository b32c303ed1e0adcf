//! One payment, two purchases: the same EIP-3009 authorization presented to the paywall and to
//! a Pelago order of the same merchant and price (both pay the merchant's payTo). Whichever
//! comes first gets what it paid for; the other is refused and delivers nothing — in either
//! order, and when the order is paid while the paywall's upstream is answering.

use std::time::Duration;

use coffer_store::testing::Backend;

use super::paywall_paths::{PRICE, Upstream, ledger, paywalled};
use crate::kit::{Auth, Env, PAY_TO, raw_request};

fn one_payment(env: &Env) -> String {
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    auth.x_payment(auth.payload(&env.payer))
}

async fn the_order_first_then_the_paywall(backend: Backend) {
    let upstream = Upstream::start().await;
    let env = Env::with(paywalled(backend, &upstream)).await;
    let before = ledger(&env).await;
    let header = one_payment(&env);
    let order_id = env.pelago_order("0.01").await;
    let (status, body) = env.pelago_pay(&order_id, &header).await;
    assert_eq!(status, 200, "{body}");
    let served = raw_request(
        &env.base,
        "GET",
        "/premium/quote",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert_eq!(served.status, 402, "{served:?}");
    assert!(upstream.seen().is_empty(), "the content was not served");
    assert_eq!(
        before.payer - ledger(&env).await.payer,
        alloy::primitives::U256::from(PRICE),
        "paid once"
    );
}

async fn the_paywall_first_then_the_order(backend: Backend) {
    let upstream = Upstream::start().await;
    let env = Env::with(paywalled(backend, &upstream)).await;
    let header = one_payment(&env);
    let served = raw_request(
        &env.base,
        "GET",
        "/premium/quote",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert_eq!(served.status, 200, "{served:?}");
    let order_id = env.pelago_order("0.01").await;
    let (status, body) = env.pelago_pay(&order_id, &header).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "PAYMENT_ALREADY_USED", "{body}");
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "pending");
}

/// The paywall's request is verified and forwarded to an upstream that takes its time; the
/// order is paid with the same authorization meanwhile; then the paywall settles. It must not
/// deliver: the settlement it gets is not its own.
async fn a_paywall_request_waiting_on_its_upstream_loses_to_the_order(backend: Backend) {
    let upstream = Upstream::slow(Duration::from_secs(2), 1).await;
    let env = Env::with(paywalled(backend, &upstream)).await;
    let before = ledger(&env).await;
    let header = one_payment(&env);
    let order_id = env.pelago_order("0.01").await;
    let paywall = tokio::spawn({
        let (base, header) = (env.base.clone(), header.clone());
        async move {
            raw_request(
                &base,
                "GET",
                "/premium/quote",
                &[("X-PAYMENT", &header)],
                b"",
            )
            .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while upstream.seen().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the paywall forwards");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = env.pelago_pay(&order_id, &header).await;
    assert_eq!(status, 200, "{body}");
    let answer = paywall.await.unwrap();
    assert_eq!(answer.status, 402, "the content is withheld: {answer:?}");
    assert!(answer.body.get("quote").is_none(), "{answer:?}");
    assert_eq!(
        before.payer - ledger(&env).await.payer,
        alloy::primitives::U256::from(PRICE),
        "paid once"
    );
}

coffer_store::on_both_databases!(
    backend: [
        the_order_first_then_the_paywall,
        the_paywall_first_then_the_order,
        a_paywall_request_waiting_on_its_upstream_loses_to_the_order,
    ];
);
