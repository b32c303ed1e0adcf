//! GatePay credentials, nonces, orders and refunds, and fiat quotes, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use coffer_core::MerchantId;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{
    GatePayCredentialRow, GatePayOrderRow, GatePayRefundRow, NewMerchant, OrderQuoteRow, Store,
    StoreError,
};

async fn merchant(store: &dyn Store, suffix: &str) -> MerchantId {
    let id = MerchantId::from_suffix(suffix).unwrap();
    store
        .insert_merchant(NewMerchant {
            id: id.clone(),
            name: suffix.to_owned(),
            webhook_url: None,
            webhook_secret: "whsec_x".to_owned(),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    id
}

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
    let order = |merchant: &MerchantId, prepay: &str, trade: &str, order: &str| GatePayOrderRow {
        prepay_id: prepay.to_owned(),
        merchant_id: merchant.clone(),
        merchant_trade_no: trade.to_owned(),
        order_id: order.to_owned(),
        client_id: "c".to_owned(),
        created_at_ms: 1,
    };
    store
        .insert_gatepay_order(&order(&first, "100", "T-1", "ORD-a"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_gatepay_order(&order(&first, "101", "T-1", "ORD-b"))
            .await,
        Err(StoreError::Conflict("merchantTradeNo"))
    ));
    assert!(matches!(
        store
            .insert_gatepay_order(&order(&first, "100", "T-2", "ORD-c"))
            .await,
        Err(StoreError::Conflict("prepayId"))
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

    let refund = GatePayRefundRow {
        merchant_id: first.clone(),
        refund_request_id: "R-1".to_owned(),
        prepay_id: "100".to_owned(),
        refund_amount: "2500000".to_owned(),
        refund_reason: "".to_owned(),
        status: "PROCESS".to_owned(),
        created_at_ms: 2,
    };
    store.insert_gatepay_refund(&refund).await.unwrap();
    assert!(matches!(
        store.insert_gatepay_refund(&refund).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.gatepay_refund(&first, "R-1").await.unwrap(),
        Some(refund.clone())
    );
    assert_eq!(
        store.gatepay_refunds_for(&first, "100").await.unwrap(),
        vec![refund]
    );

    // A failed creation frees the trade number.
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

macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test(&*super::TestDatabase::new(super::Backend::Sqlite).await.unwrap().store).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $test() { super::$test(&*super::TestDatabase::new(super::Backend::Postgres).await.unwrap().store).await; })*
        }
    };
}

on_both_databases!(
    credentials_work_until_revoked_and_nonces_are_single_use,
    trade_numbers_are_unique_per_merchant_and_refunds_and_quotes_are_kept,
);
