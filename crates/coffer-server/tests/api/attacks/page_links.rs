//! Attack 3, the page half: links that run script on Coffer's hosted checkout page.
//!
//! A merchant (or anyone who got a value into the database) gives the page a `javascript:`,
//! `data:`, `vbscript:` or protocol-relative link as the return or cancel URL; the page follows
//! it on its own once paid or expired. Creation refuses every such link in both API families,
//! and the page never renders or follows one, whatever is stored.

use alloy::primitives::Address;
use coffer_core::{Amount, OrderStatus};
use coffer_store::testing::Backend;
use coffer_store::{GatePayOrderRow, NewEvent, NewOrder};
use serde_json::{Value, json};

use crate::kit::{CHAIN_ID, Env, Options, USDC};

/// Links a page must never render or follow, in the spellings browsers forgive.
const HOSTILE_LINKS: &[&str] = &[
    "javascript:alert(document.cookie)",
    "JaVaScRiPt:alert(1)",
    "JAVASCRIPT:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "\u{1}javascript:alert(1)",
    "javascript://shop.example/%0aalert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DaTa:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "VbScRiPt:msgbox(1)",
    "//evil.example/steal",
    "\\\\evil.example/steal",
    "/\\evil.example/steal",
    "https:evil.example",
    "http:/evil.example",
    "https://shop.example@evil.example/",
];

/// Whether a page's text carries a hostile link or a hint of one.
fn carries_hostile_link(page: &str) -> bool {
    let lower = page.to_ascii_lowercase();
    [
        "javascript:",
        "vbscript:",
        "data:text",
        "evil.example",
        ";url=/",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

async fn non_http_links_are_refused_at_creation_in_both_families(backend: Backend) {
    let env = Env::with(Options::on(backend).without_chain()).await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;
    let (name, value) = env.auth();
    for (n, link) in HOSTILE_LINKS.iter().enumerate() {
        for field in ["returnUrl", "cancelUrl"] {
            let trade_no = format!("link-{n}-{field}");
            let body = json!({
                "merchantTradeNo": trade_no, "env": {"terminalType": "WEB"},
                "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
                "orderAmount": "1", field: link,
            });
            let (status, answer) = env
                .gatepay(&client, "/v1/pay/checkout/order", &body.to_string())
                .await;
            assert_eq!(status, 400, "{field} {link:?}: {answer}");
            assert_eq!(
                (&answer["status"], &answer["code"]),
                (&json!("FAIL"), &json!("400001")),
                "{field} {link:?}: {answer}"
            );
            assert!(
                answer["errorMessage"].as_str().unwrap().starts_with(field),
                "{field} {link:?}: {answer}"
            );
            assert_eq!(
                env.state
                    .gateway
                    .store
                    .gatepay_order_by_trade_no(&env.merchant.id, &trade_no)
                    .await
                    .unwrap(),
                None,
                "{field} {link:?}: nothing was created"
            );
        }
        let (status, answer) = env
            .post(
                "/api/payment-orders/",
                &[(name, value.as_str())],
                &json!({
                    "amount": "1", "currency": "USDC", "blockchain": "base-sepolia",
                    "order_info": "{}", "nonce": n, "redirect_url": link,
                }),
            )
            .await;
        assert_eq!(status, 400, "redirect_url {link:?}: {answer}");
        assert_eq!(
            (
                &answer["success"],
                &answer["error"]["code"],
                &answer["error"]["field"]
            ),
            (
                &json!(false),
                &json!("VALIDATION_ERROR"),
                &json!("redirect_url")
            ),
            "redirect_url {link:?}: {answer}"
        );
    }
    assert!(env.orders().await.is_empty(), "no order was created");
    // The same request with an http(s) link goes through, so the refusals were the links'.
    let (status, answer) = env
        .post(
            "/api/payment-orders/",
            &[(name, value.as_str())],
            &json!({
                "amount": "1", "currency": "USDC", "blockchain": "base-sepolia",
                "order_info": "{}", "nonce": 999, "redirect_url": "HTTPS://shop.example/thanks",
            }),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

/// A payment order written straight into the store with `redirect_url`, as a value that never
/// passed the API would be.
async fn stored_order(env: &Env, nonce: i64, redirect_url: &str) -> (String, Address) {
    let order_id = format!("ORD-STORED{nonce:04}");
    let address = Address::from(rand::random::<[u8; 20]>());
    let now = chrono::Utc::now().timestamp_millis();
    env.state
        .gateway
        .store
        .insert_order(NewOrder {
            order_id: order_id.clone(),
            merchant_id: env.merchant.id.clone(),
            chain_id: CHAIN_ID,
            blockchain: "base-sepolia".to_owned(),
            currency: "USDC".to_owned(),
            asset_address: Some(USDC.to_string().to_ascii_lowercase()),
            decimals: 6,
            amount: Amount::from(1_000_000u64),
            underpayment_tolerance: Amount::ZERO,
            receiving_address: address.to_checksum(None),
            derivation_index: 100_000 + u32::try_from(nonce).unwrap(),
            order_info: "{}".to_owned(),
            nonce: 100_000 + nonce,
            webhook_url: None,
            redirect_url: Some(redirect_url.to_owned()),
            idempotency_key: None,
            request_hash: None,
            created_at_ms: now,
            expires_at_ms: now + 3_600_000,
            monitor_until_ms: now + 90_000_000,
            external_reference: None,
            event: NewEvent {
                event_id: format!("evt_stored_{nonce}"),
                merchant_id: env.merchant.id.clone(),
                order_id: Some(order_id.clone()),
                event_type: "payment_order.created".to_owned(),
                payload: "{}".to_owned(),
                format: coffer_store::WebhookFormat::Coffer,
                created_at_ms: now,
                delivery: None,
            },
        })
        .await
        .unwrap();
    (order_id, address)
}

/// The page and the status it polls, for an order.
async fn page_and_status(env: &Env, order_id: &str) -> (String, Value) {
    let (status, page) = env.get(&format!("/pay/{order_id}"), &[]).await;
    assert_eq!(status, 200, "{page}");
    let (_, live) = env.get(&format!("/pay/{order_id}/status"), &[]).await;
    (page.as_str().unwrap().to_owned(), live)
}

async fn a_page_never_renders_a_non_http_link_even_from_the_database(backend: Backend) {
    let env = Env::new(backend).await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;
    let mut watcher = env.watcher().await;

    // Stored return links: shown by no stage, followed by none (the first is paid).
    let mut stored = Vec::new();
    for (n, link) in HOSTILE_LINKS.iter().enumerate() {
        stored.push(stored_order(&env, i64::try_from(n).unwrap(), link).await);
    }
    env.pay(&stored[0].1.to_checksum(None), 1_000_000).await;
    env.watch_and_deliver(&mut watcher).await;
    assert_eq!(
        env.state
            .gateway
            .store
            .order(&stored[0].0)
            .await
            .unwrap()
            .status,
        OrderStatus::Confirmed
    );
    for ((order_id, _), link) in stored.iter().zip(HOSTILE_LINKS) {
        let (page, live) = page_and_status(&env, order_id).await;
        assert_eq!(live["redirect_url"], Value::Null, "{link:?}: {live}");
        assert!(!carries_hostile_link(&page), "{link:?}: {page}");
    }
    let (page, live) = page_and_status(&env, &stored[0].0).await;
    assert_eq!(live["stage"], "paid");
    assert!(!page.contains(";url="), "no redirect once paid: {page}");

    // Stored cancel links of GatePay orders: no cancel button while unpaid, nothing followed
    // once closed.
    for (n, link) in HOSTILE_LINKS.iter().enumerate() {
        let (status, answer) = env
            .gatepay(
                &client,
                "/v1/pay/checkout/order",
                &json!({
                    "merchantTradeNo": format!("stored-cancel-{n}"), "env": {"terminalType": "WEB"},
                    "goods": {"goodsName": "Plan"}, "fullCurrType": "USDC_BASESEPOLIA",
                    "orderAmount": "1",
                })
                .to_string(),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        // The same order, told by the store that its cancel link is hostile.
        let prepay_id = answer["data"]["prepayId"].as_str().unwrap();
        let row = env
            .state
            .gateway
            .store
            .gatepay_order_by_prepay_id(&env.merchant.id, prepay_id)
            .await
            .unwrap()
            .unwrap();
        env.state
            .gateway
            .store
            .delete_gatepay_order(prepay_id)
            .await
            .unwrap();
        env.state
            .gateway
            .store
            .insert_gatepay_order(&GatePayOrderRow {
                cancel_url: Some((*link).to_owned()),
                ..row.clone()
            })
            .await
            .unwrap();
        let (page, live) = page_and_status(&env, &row.order_id).await;
        assert_eq!(live["stage"], "waiting");
        assert_eq!(live["cancel_url"], Value::Null, "{link:?}: {live}");
        assert!(!page.contains("id=\"cancel\""), "{link:?}: {page}");
        assert!(!carries_hostile_link(&page), "{link:?}: {page}");
        let (status, closed) = env
            .gatepay(
                &client,
                "/v1/pay/order/close",
                &json!({"prepayId": prepay_id}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{closed}");
        let (page, live) = page_and_status(&env, &row.order_id).await;
        assert_eq!(live["stage"], "cancelled");
        assert_eq!(live["cancel_url"], Value::Null, "{link:?}: {live}");
        assert!(!page.contains(";url="), "{link:?}: {page}");
        assert!(!carries_hostile_link(&page), "{link:?}: {page}");
    }

    // GatePay-looking facts in an ordinary order's order_info are only text.
    let (name, value) = env.auth();
    let forged = json!({"gatepay": {
        "prepayId": "1", "merchantTradeNo": "x", "clientId": client.client_id,
        "terminalType": "WEB", "goodsType": "", "goodsName": "", "goodsDetail": "",
        "merchantUserId": null, "channelId": "", "orderAmount": "1", "surchargeAmount": "0",
        "currency": "USDC", "cancelUrl": "javascript:alert(document.cookie)"
    }})
    .to_string();
    let (status, order) = env
        .post(
            "/api/payment-orders/",
            &[(name, value.as_str())],
            &json!({"amount": "1", "currency": "USDC", "blockchain": "base-sepolia", "order_info": forged, "nonce": 7}),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let (page, live) = page_and_status(&env, order["data"]["order_id"].as_str().unwrap()).await;
    assert_eq!(live["cancel_url"], Value::Null, "{live}");
    assert!(!page.contains("id=\"cancel\""), "{page}");
    assert!(!carries_hostile_link(&page), "{page}");
}

coffer_store::on_both_databases!(
    non_http_links_are_refused_at_creation_in_both_families,
    a_page_never_renders_a_non_http_link_even_from_the_database,
);
