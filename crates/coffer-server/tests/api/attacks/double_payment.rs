//! Two payments for one Pelago order: a client that retries with a fresh authorization after a
//! timeout, or has the checkout open twice. Only one may be settled; and a second payment that
//! moved money anyway (on another replica) is recorded as a sale of its own — never lost, and
//! never left for the reconciler to retry forever.

use std::time::Duration;

use alloy::primitives::U256;
use coffer_store::testing::Backend;
use coffer_x402::wire::PaymentRequest;
use serde_json::Value;

use crate::kit::{Auth, Env, PAY_TO};

const PRICE: u64 = 2_500_000;

async fn two_payments_for_one_order_settle_once(backend: Backend) {
    let env = Env::new(backend).await;
    let order_id = env.pelago_order("2.50").await;
    let before = env.balance(env.payer.address()).await;
    let first = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let second = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let (first, second) = (
        first.x_payment(first.payload(&env.payer)),
        second.x_payment(second.payload(&env.payer)),
    );
    let (a, b) = tokio::join!(
        env.pelago_pay(&order_id, &first),
        env.pelago_pay(&order_id, &second),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_eq!(refused["code"], "ORDER_ALREADY_PAID", "{refused}");
    assert_eq!(
        before - env.balance(env.payer.address()).await,
        U256::from(PRICE),
        "the payer paid once"
    );
    assert_eq!(env.order_count().await, 1);
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.amount_paid.to_base_units_string(), PRICE.to_string());
}

/// A second settlement made for an order that another payment already paid (as a replica
/// that did not see the first would make it) is recorded as its own sale by the reconciler's
/// sweep, and nothing is left unrecorded.
async fn a_second_payment_that_moved_money_is_recorded_not_lost(backend: Backend) {
    let env = Env::new(backend).await;
    let order_id = env.pelago_order("2.50").await;
    let first = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let (status, body) = env
        .pelago_pay(&order_id, &first.x_payment(first.payload(&env.payer)))
        .await;
    assert_eq!(status, 200, "{body}");

    // The other replica's settlement, made for the same order, straight through the engine.
    let second = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let mut request: Value = second.v2_request(second.payload(&env.payer));
    request["paymentRequirements"]["extra"]["orderId"] = Value::from(order_id.clone());
    let request = PaymentRequest::parse(request.to_string().as_bytes()).unwrap();
    let now = crate::kit::now();
    let settled = env
        .state
        .gateway
        .settler
        .settle_for(&request, now, Duration::from_secs(5), Some(&order_id))
        .await;
    assert!(settled.success, "{settled:?}");

    let recorded = env.state.gateway.sales.sweep().await.unwrap();
    assert_eq!(recorded, 1, "recorded, as its own sale");
    assert_eq!(
        env.state.gateway.sales.sweep().await.unwrap(),
        0,
        "nothing left to retry"
    );
    let orders = env.orders().await;
    assert_eq!(orders.len(), 2);
    let paid: U256 = orders.iter().map(|o| o.amount_paid.base_units()).sum();
    assert_eq!(
        paid,
        U256::from(2 * PRICE),
        "every payment that moved is recorded"
    );
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.amount_paid.to_base_units_string(), PRICE.to_string());
}

coffer_store::on_both_databases!(
    backend: [
        two_payments_for_one_order_settle_once,
        a_second_payment_that_moved_money_is_recorded_not_lost,
    ];
);
