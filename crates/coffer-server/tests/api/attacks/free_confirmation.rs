//! Attack 1: confirming a Pelago order without paying for it.
//!
//! A stranger settles a 0-value (here: 1 base unit) EIP-3009 transfer to themselves through the
//! public facilitator, so its `(from, nonce)` is journaled as succeeded. Then they present an
//! `X-PAYMENT` for the merchant's order that reuses that `(from, nonce)` but names the
//! merchant's payTo, the full price and a junk signature — or their own valid signature of new
//! terms under the used nonce, or the original authorization itself. Every variant must leave
//! the order unpaid, record nothing, tell the merchant nothing and broadcast nothing.

use coffer_store::testing::Backend;
use serde_json::Value;

use coffer_gateway::facilitator_policy::FacilitatorPolicy;

use crate::kit::{Auth, Env, Options, PAY_TO, junk_signature};

const PRICE: u64 = 2_500_000;

async fn a_journaled_nonce_never_confirms_an_order(backend: Backend) {
    // An open facilitator, so that the stranger's own settlement gets journaled.
    let options = Options::on(backend)
        .configure(|state| state.with_facilitator_policy(FacilitatorPolicy::open()));
    let env = Env::with(options).await;
    let order_id = env.pelago_order("2.50").await;

    // The stranger's own settlement, to themselves: journaled as succeeded.
    let own = Auth::fresh(env.stranger.address(), env.stranger.address(), 1);
    let (status, settled) = env
        .post(
            "/x402/settle",
            &[],
            &own.v2_request(own.payload(&env.stranger)),
        )
        .await;
    assert_eq!(
        (status, settled["success"].as_bool()),
        (200, Some(true)),
        "{settled}"
    );
    let broadcasts = env.signer_transactions().await;
    let merchant_balance = env.balance(PAY_TO).await;

    // The forgeries, all naming the used (from, nonce).
    let mut to_merchant = own.clone();
    to_merchant.to = PAY_TO;
    to_merchant.value = PRICE;
    let forgeries: Vec<(&str, String)> = vec![
        (
            "junk signature, merchant's payTo, full price",
            to_merchant.x_payment(to_merchant.payload_signed(&junk_signature())),
        ),
        (
            "the stranger's valid signature of new terms under the used nonce",
            to_merchant.x_payment(to_merchant.payload(&env.stranger)),
        ),
        (
            "the settled authorization itself",
            own.x_payment(own.payload(&env.stranger)),
        ),
        (
            "the settled signature over the new terms",
            to_merchant.x_payment(to_merchant.payload_signed(&own.sign(&env.stranger))),
        ),
    ];
    for (what, header) in forgeries {
        let (status, body) = env.pelago_pay(&order_id, &header).await;
        assert_ne!(status, 200, "{what}: {body}");
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status} {body}"
        );
        assert_ne!(body["status"], "confirmed", "{what}: {body}");
    }

    // Nothing happened.
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "pending");
    assert!(order.amount_paid.is_zero());
    assert!(
        env.state
            .gateway
            .store
            .payments_for_order(&order_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        env.state
            .gateway
            .store
            .sale_for_order(&order_id)
            .await
            .unwrap()
            .is_none()
    );
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e.contains("confirmed")),
        "the merchant is told nothing: {events:?}"
    );
    assert_eq!(
        env.signer_transactions().await,
        broadcasts,
        "nothing broadcast"
    );
    assert_eq!(env.balance(PAY_TO).await, merchant_balance);
    let (_, status) = env
        .get(
            &format!("/openapi/crypto/x402/order/{order_id}"),
            &[("Merchant-App-Key", &env.api_key)],
        )
        .await;
    assert_eq!(status["payStatus"], "unpaid", "{status}");
}

/// An honest payment after the attempts still pays the order, exactly once.
async fn the_real_payment_still_confirms_the_order(backend: Backend) {
    let env = Env::new(backend).await;
    let order_id = env.pelago_order("2.50").await;
    let junk = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let (status, _) = env
        .pelago_pay(
            &order_id,
            &junk.x_payment(junk.payload_signed(&junk_signature())),
        )
        .await;
    assert!((400..500).contains(&status));
    let payment = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let header = payment.x_payment(payment.payload(&env.payer));
    let (status, body) = env.pelago_pay(&order_id, &header).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("confirmed")),
        "{body}"
    );
    // Presented again, it answers the same and pays nothing more.
    let before = env.balance(PAY_TO).await;
    let (status, again) = env.pelago_pay(&order_id, &header).await;
    assert_eq!((status, again), (200, body));
    assert_eq!(env.balance(PAY_TO).await, before);
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.amount_paid.to_base_units_string(), PRICE.to_string());
}

/// A payment for less than the price, correctly signed, never confirms the order.
async fn an_underpayment_never_confirms_an_order(backend: Backend) {
    let env = Env::new(backend).await;
    let order_id = env.pelago_order("2.50").await;
    let short = Auth::fresh(env.payer.address(), PAY_TO, PRICE - 1);
    let before = env.balance(env.payer.address()).await;
    let (status, body) = env
        .pelago_pay(&order_id, &short.x_payment(short.payload(&env.payer)))
        .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert_eq!(
        env.balance(env.payer.address()).await,
        before,
        "nothing moved"
    );
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "pending");
}

coffer_store::on_both_databases!(
    backend: [
        a_journaled_nonce_never_confirms_an_order,
        the_real_payment_still_confirms_the_order,
        an_underpayment_never_confirms_an_order,
    ];
);
