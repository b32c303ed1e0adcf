//! GatePay credentials, nonces, orders and refunds, and fiat quotes, on both backends; and the
//! migration that moves a GatePay order's facts out of its `order_info`.

use std::sync::Arc;

use coffer_core::{Amount, MerchantId, OrderStatus, PaymentSubStatus};
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{
    Constraint, ExternalReference, GatePayCredentialRow, GatePayOrderRow, GatePayRefundRow,
    NewEvent, NewOrder, OrderQuoteRow, OrderUpdate, RefundDecision, Store, StoreError,
    WebhookFormat,
};
use sqlx::Connection;

use crate::fixtures::merchant;

async fn credentials_work_until_revoked_and_nonces_are_single_use(store: &dyn Store) {
    let owner = merchant(store, "gp").await;
    let credential = GatePayCredentialRow {
        client_id: "client-1".to_owned(),
        merchant_id: owner.clone(),
        secret: "s3cret".to_owned(),
        created_at_ms: 1,
        revoked_at_ms: None,
    };
    store.insert_gatepay_credential(&credential).await.unwrap();
    assert!(matches!(
        store.insert_gatepay_credential(&credential).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.gatepay_credential("client-1").await.unwrap(),
        Some(credential.clone())
    );
    assert!(
        !format!("{credential:?}").contains("s3cret"),
        "Debug hides the secret"
    );
    assert_eq!(store.gatepay_credentials(&owner).await.unwrap().len(), 1);
    store
        .revoke_gatepay_credential("client-1", 9)
        .await
        .unwrap();
    store
        .revoke_gatepay_credential("client-1", 10)
        .await
        .unwrap();
    assert_eq!(
        store
            .gatepay_credential("client-1")
            .await
            .unwrap()
            .and_then(|c| c.revoked_at_ms),
        Some(9),
        "the first revocation time is kept"
    );
    assert!(matches!(
        store.revoke_gatepay_credential("nope", 9).await,
        Err(StoreError::NotFound(_))
    ));

    assert!(
        store
            .use_gatepay_nonce("client-1", "n1", 1_000, 0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_gatepay_nonce("client-1", "n1", 1_001, 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_gatepay_nonce("client-2", "n1", 1_002, 0)
            .await
            .unwrap(),
        "per client"
    );
    // Forgotten once older than the window.
    assert!(
        store
            .use_gatepay_nonce("client-1", "n1", 9_000, 5_000)
            .await
            .unwrap()
    );
}

async fn trade_numbers_are_unique_per_merchant_and_refunds_and_quotes_are_kept(store: &dyn Store) {
    let first = merchant(store, "one").await;
    let second = merchant(store, "two").await;
    let order = |merchant: &MerchantId, prepay: &str, trade: &str, order: &str| {
        gatepay_order(merchant, prepay, trade, order)
    };
    store
        .insert_gatepay_order(&order(&first, "100", "T-1", "ORD-a"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_gatepay_order(&order(&first, "101", "T-1", "ORD-b"))
            .await,
        Err(StoreError::Conflict(Constraint::MerchantTradeNo))
    ));
    assert!(matches!(
        store
            .insert_gatepay_order(&order(&first, "100", "T-2", "ORD-c"))
            .await,
        Err(StoreError::Conflict(Constraint::PrepayId))
    ));
    store
        .insert_gatepay_order(&order(&second, "102", "T-1", "ORD-d"))
        .await
        .unwrap();
    assert_eq!(
        store
            .gatepay_order_by_trade_no(&first, "T-1")
            .await
            .unwrap()
            .map(|o| o.order_id),
        Some("ORD-a".to_owned())
    );
    assert_eq!(
        store
            .gatepay_order_by_prepay_id(&second, "100")
            .await
            .unwrap(),
        None,
        "another merchant's order is not found"
    );

    let stored = store.gatepay_order_of("ORD-a").await.unwrap().unwrap();
    assert_eq!(
        stored,
        order(&first, "100", "T-1", "ORD-a"),
        "every fact reads back"
    );
    assert_eq!(store.gatepay_order_of("ORD-x").await.unwrap(), None);

    // Forgotten names free the trade number.
    store.delete_gatepay_order("102").await.unwrap();
    assert_eq!(
        store
            .gatepay_order_by_trade_no(&second, "T-1")
            .await
            .unwrap(),
        None
    );

    let quote = OrderQuoteRow {
        order_id: "ORD-a".to_owned(),
        fiat_currency: "EUR".to_owned(),
        fiat_amount: "10.00".to_owned(),
        rate: "0.9".to_owned(),
        created_at_ms: 3,
    };
    store.insert_order_quote(&quote).await.unwrap();
    assert_eq!(store.order_quote("ORD-a").await.unwrap(), Some(quote));
    assert_eq!(store.order_quote("ORD-x").await.unwrap(), None);
}

async fn an_order_and_its_gatepay_names_are_written_together_or_not_at_all(store: &dyn Store) {
    let owner = merchant(store, "together").await;
    let with_names = |n: u32, prepay: &str, trade: &str| {
        let mut order = payment_order(&owner, n, "{}");
        order.external_reference = Some(ExternalReference::GatePay(gatepay_order(
            &owner,
            prepay,
            trade,
            &order.order_id,
        )));
        order
    };
    store
        .insert_order(with_names(1, "200", "T-1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .gatepay_order_of("ORD-0001")
            .await
            .unwrap()
            .map(|names| names.merchant_trade_no),
        Some("T-1".to_owned())
    );
    // A taken trade number or prepay id: no order, no names, and the nonce stays free.
    for (n, prepay, trade, taken) in [
        (2, "201", "T-1", Constraint::MerchantTradeNo),
        (3, "200", "T-3", Constraint::PrepayId),
    ] {
        let refused = store.insert_order(with_names(n, prepay, trade)).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(constraint)) if constraint == taken),
            "{refused:?}"
        );
        let order_id = format!("ORD-{n:04}");
        assert!(matches!(
            store.order(&order_id).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.gatepay_order_of(&order_id).await.unwrap(), None);
        store
            .insert_order(payment_order(&owner, n, "{}"))
            .await
            .unwrap();
    }
    // Written at once (the writer groups concurrent orders): each is decided alone.
    let (first, second, third) = tokio::join!(
        store.insert_order(with_names(10, "300", "T-10")),
        store.insert_order(with_names(11, "301", "T-10")),
        store.insert_order(payment_order(&owner, 12, "{}")),
    );
    assert!(third.is_ok(), "{third:?}");
    assert_eq!(
        u8::from(first.is_ok()) + u8::from(second.is_ok()),
        1,
        "one trade number, one order: {first:?} {second:?}"
    );
    let loser = if first.is_ok() {
        "ORD-0011"
    } else {
        "ORD-0010"
    };
    assert!(matches!(
        store.order(loser).await,
        Err(StoreError::NotFound(_))
    ));
}

fn gatepay_order(merchant: &MerchantId, prepay: &str, trade: &str, order: &str) -> GatePayOrderRow {
    GatePayOrderRow {
        prepay_id: prepay.to_owned(),
        merchant_id: merchant.clone(),
        merchant_trade_no: trade.to_owned(),
        order_id: order.to_owned(),
        client_id: "c".to_owned(),
        created_at_ms: 1,
        terminal_type: "WEB".to_owned(),
        goods_type: "02".to_owned(),
        goods_name: "Plan".to_owned(),
        goods_detail: "one month".to_owned(),
        merchant_user_id: Some(7),
        channel_id: "app".to_owned(),
        surcharge_amount: Amount::from(500_000u64),
        cancel_url: Some("https://shop.example/cancelled".to_owned()),
    }
}

/// A payment order of 10 USDC (6 decimals), number `n`.
fn payment_order(merchant: &MerchantId, n: u32, order_info: &str) -> NewOrder {
    let order_id = format!("ORD-{n:04}");
    NewOrder {
        order_id: order_id.clone(),
        merchant_id: merchant.clone(),
        chain_id: 1,
        blockchain: "ethereum".to_owned(),
        currency: "USDC".to_owned(),
        asset_address: Some("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48".to_owned()),
        decimals: 6,
        amount: Amount::from(10_000_000u64),
        underpayment_tolerance: Amount::ZERO,
        receiving_address: format!("0x{n:040X}"),
        derivation_index: n,
        order_info: order_info.to_owned(),
        nonce: i64::from(n),
        webhook_url: None,
        redirect_url: None,
        idempotency_key: None,
        request_hash: None,
        created_at_ms: 1,
        expires_at_ms: 3_600_000,
        monitor_until_ms: 7_200_000,
        external_reference: None,
        event: NewEvent {
            event_id: format!("evt_{n}"),
            merchant_id: merchant.clone(),
            order_id: Some(order_id),
            event_type: "payment_order.created".to_owned(),
            payload: "{}".to_owned(),
            format: coffer_store::WebhookFormat::Coffer,
            created_at_ms: 1,
            delivery: None,
        },
    }
}

/// Marks an order confirmed with `paid` base units.
async fn confirm(store: &dyn Store, order_id: &str, paid: u64) {
    let order = store.order(order_id).await.unwrap();
    store
        .update_orders(&[OrderUpdate {
            order_id: order_id.to_owned(),
            expected_version: order.version,
            status: OrderStatus::Confirmed,
            sub_status: PaymentSubStatus::None,
            amount_paid: Amount::from(paid),
            confirmed_at_ms: Some(2),
            closed: false,
            updated_at_ms: 2,
            events: Vec::new(),
        }])
        .await
        .unwrap();
}

fn refund(merchant: &MerchantId, id: &str, prepay: &str, units: u64) -> GatePayRefundRow {
    GatePayRefundRow {
        merchant_id: merchant.clone(),
        refund_request_id: id.to_owned(),
        prepay_id: prepay.to_owned(),
        refund_amount: Amount::from(units),
        refund_reason: "changed mind".to_owned(),
        status: "PROCESS".to_owned(),
        created_at_ms: 3,
    }
}

async fn refunds_are_recorded_only_for_paid_orders_and_up_to_what_was_paid(store: &dyn Store) {
    let owner = merchant(store, "refunds").await;
    let other = merchant(store, "other").await;
    store
        .insert_gatepay_order(&gatepay_order(&owner, "200", "T-200", "ORD-0001"))
        .await
        .unwrap();
    store
        .insert_order(payment_order(&owner, 1, "{}"))
        .await
        .unwrap();
    assert_eq!(
        store
            .record_gatepay_refund(&refund(&owner, "R-1", "200", 1))
            .await
            .unwrap(),
        RefundDecision::NotPaid(OrderStatus::Pending)
    );
    confirm(store, "ORD-0001", 10_000_000).await;
    assert_eq!(
        store
            .record_gatepay_refund(&refund(&other, "R-1", "200", 1))
            .await
            .unwrap(),
        RefundDecision::UnknownOrder,
        "another merchant's prepayId is unknown"
    );
    let first = refund(&owner, "R-1", "200", 2_500_000);
    assert_eq!(
        store.record_gatepay_refund(&first).await.unwrap(),
        RefundDecision::Recorded
    );
    assert!(matches!(
        store.record_gatepay_refund(&first).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .record_gatepay_refund(&refund(&owner, "R-2", "200", 7_500_001))
            .await
            .unwrap(),
        RefundDecision::MoreThanPaid {
            total: Amount::from(10_000_001u64),
            paid: Amount::from(10_000_000u64)
        }
    );
    assert_eq!(
        store
            .record_gatepay_refund(&refund(&owner, "R-3", "200", 7_500_000))
            .await
            .unwrap(),
        RefundDecision::Recorded,
        "exactly what was paid in total"
    );
    assert_eq!(
        store.gatepay_refund(&owner, "R-1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store
            .gatepay_refunds_for(&owner, "200")
            .await
            .unwrap()
            .iter()
            .map(|r| r.refund_request_id.as_str())
            .collect::<Vec<_>>(),
        ["R-1", "R-3"]
    );
}

async fn concurrent_refunds_never_total_more_than_was_paid(store: Arc<dyn Store>) {
    let owner = merchant(&*store, "race").await;
    store
        .insert_gatepay_order(&gatepay_order(&owner, "300", "T-300", "ORD-0002"))
        .await
        .unwrap();
    store
        .insert_order(payment_order(&owner, 2, "{}"))
        .await
        .unwrap();
    confirm(&*store, "ORD-0002", 10_000_000).await;
    let attempts: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            let row = refund(&owner, &format!("R-{n}"), "300", 1_000_000);
            tokio::spawn(async move { store.record_gatepay_refund(&row).await.unwrap() })
        })
        .collect();
    let mut recorded = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            RefundDecision::Recorded => recorded += 1,
            RefundDecision::MoreThanPaid { paid, .. } => {
                assert_eq!(paid, Amount::from(10_000_000u64));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, 10, "ten tenths fit, no more");
    let total = store
        .gatepay_refunds_for(&owner, "300")
        .await
        .unwrap()
        .iter()
        .fold(Amount::ZERO, |sum, r| {
            sum.checked_add(r.refund_amount).unwrap()
        });
    assert_eq!(total, Amount::from(10_000_000u64));
}

/// Migration 8 copies a GatePay order's facts out of the `order_info` an older Coffer wrote,
/// and leaves an ordinary order whose `order_info` only looks like that an ordinary order.
async fn migration_8_moves_gatepay_facts_out_of_order_info(backend: Backend) {
    let old = TestDatabase::migrated_to(backend, 6).await.unwrap();
    let owner = merchant(&*old.store, "legacy").await;
    let facts = r#"{"gatepay":{"prepayId":"400","merchantTradeNo":"T-400","clientId":"client-legacy","terminalType":"APP","goodsType":"02","goodsName":"Tea \u0000 pot","goodsDetail":"green","merchantUserId":123,"channelId":"shop","orderAmount":"12","surchargeAmount":"0.5","currency":"USDC","cancelUrl":"https://shop.example/back"}}"#;
    let lookalike = r#"{"gatepay":{"prepayId":"401","merchantTradeNo":"T-401","clientId":"someone-else","terminalType":"WEB","goodsType":"","goodsName":"","goodsDetail":"","merchantUserId":null,"channelId":"","orderAmount":"1","surchargeAmount":"0","currency":"USDC","cancelUrl":"javascript:alert(1)"}}"#;
    let no_surcharge = r#"{"gatepay":{"prepayId":"402","merchantTradeNo":"T-402","clientId":"client-legacy","terminalType":"WEB","goodsType":"","goodsName":"","goodsDetail":"","merchantUserId":null,"channelId":"","orderAmount":"","surchargeAmount":"0","currency":"USDC","cancelUrl":null}}"#;
    // GatePay's names, as migration 4 stored them (ORD-0005 never was a GatePay order).
    // Orders and events as an older Coffer wrote them, events without a format.
    let owner_id = owner.as_str();
    let insert = format!(
        "{orders};
         INSERT INTO events (event_id, merchant_id, order_id, event_type, payload, created_at_ms)
         VALUES ('evt_plain', '{owner_id}', 'ORD-0004', 'payment_order.confirmed', '{{}}', 1),
                ('evt_gatepay', '{owner_id}', 'ORD-0004', 'gatepay.pay_success', '{{}}', 2);
         INSERT INTO gatepay_orders (prepay_id, merchant_id, merchant_trade_no, order_id, client_id, created_at_ms)
         VALUES ('400', '{owner_id}', 'T-400', 'ORD-0004', 'client-legacy', 1),
                ('402', '{owner_id}', 'T-402', 'ORD-0006', 'client-legacy', 1)",
        orders = [(4, facts), (5, lookalike), (6, no_surcharge)]
            .map(|(n, order_info)| legacy_order(&owner, n, order_info))
            .join(";\n"),
    );
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&old.url).await.unwrap();
            sqlx::raw_sql(&insert).execute(&mut conn).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&old.url).await.unwrap();
            sqlx::raw_sql(&insert).execute(&mut conn).await.unwrap();
        }
    }

    let store = old.reopen().await.unwrap();
    let migrated = store.gatepay_order_of("ORD-0004").await.unwrap().unwrap();
    assert_eq!(
        (
            migrated.client_id.as_str(),
            migrated.terminal_type.as_str(),
            migrated.goods_type.as_str(),
            migrated.goods_detail.as_str(),
            migrated.merchant_user_id,
            migrated.channel_id.as_str(),
            migrated.surcharge_amount,
            migrated.cancel_url.as_deref(),
        ),
        (
            "client-legacy",
            "APP",
            "02",
            "green",
            Some(123),
            "shop",
            Amount::from(500_000u64),
            Some("https://shop.example/back"),
        )
    );
    assert!(
        migrated.goods_name.starts_with("Tea "),
        "{:?}",
        migrated.goods_name
    );
    let plain = store.gatepay_order_of("ORD-0006").await.unwrap().unwrap();
    assert_eq!(
        (
            plain.surcharge_amount,
            plain.merchant_user_id,
            plain.cancel_url
        ),
        (Amount::ZERO, None, None)
    );
    assert_eq!(
        store.gatepay_order_of("ORD-0005").await.unwrap(),
        None,
        "an order_info that looks like GatePay's does not make a GatePay order"
    );
    assert_eq!(
        store.order("ORD-0004").await.unwrap().order_info,
        facts,
        "order_info is kept as it was"
    );
    // Migration 10: an event's format, told apart by the name GatePay's were given.
    for (event_id, format) in [
        ("evt_plain", WebhookFormat::Coffer),
        ("evt_gatepay", WebhookFormat::GatePay),
    ] {
        assert_eq!(
            store.event(event_id).await.unwrap().format,
            format,
            "{event_id}"
        );
    }
}

/// [`payment_order`] as an `INSERT` an older Coffer could run (no column of a later migration).
fn legacy_order(merchant: &MerchantId, n: u32, order_info: &str) -> String {
    let order = payment_order(merchant, n, order_info);
    format!(
        "INSERT INTO payment_orders (order_id, merchant_id, chain_id, blockchain, currency, asset_address,
             decimals, amount, amount_sort_key, underpayment_tolerance, amount_paid, status, receiving_address,
             derivation_index, order_info, nonce, closed, created_at_ms, expires_at_ms, monitor_until_ms,
             updated_at_ms, version)
         VALUES ('{}', '{}', 1, 'ethereum', 'USDC', '{}', 6, '{}', '{:040}', '0', '0', 'pending', '{}',
             {n}, '{}', {n}, FALSE, 1, {}, {}, 1, 0)",
        order.order_id,
        merchant.as_str(),
        order.asset_address.unwrap_or_default(),
        order.amount.to_base_units_string(),
        10_000_000u64,
        order.receiving_address,
        order.order_info.replace('\'', "''"),
        order.expires_at_ms,
        order.monitor_until_ms,
    )
}

coffer_store::on_both_databases! {
    backend: [migration_8_moves_gatepay_facts_out_of_order_info];
    store: [
        credentials_work_until_revoked_and_nonces_are_single_use,
        trade_numbers_are_unique_per_merchant_and_refunds_and_quotes_are_kept,
        an_order_and_its_gatepay_names_are_written_together_or_not_at_all,
        refunds_are_recorded_only_for_paid_orders_and_up_to_what_was_paid,
    ];
    shared_store: [concurrent_refunds_never_total_more_than_was_paid];
}
