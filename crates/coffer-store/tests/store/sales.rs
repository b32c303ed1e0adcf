//! x402 sales on both backends: payTo ownership, a sale recorded once per authorization, one
//! transfer for one order, and the settlements still to record.

use coffer_core::{Amount, MerchantId};
use coffer_store::{
    Constraint, NewEvent, NewOrder, NewPayment, NewSale, NewSettlement, OrderSource, PayToRow,
    Recorded, SaleOrder, SaleProof, SettlementStatus, SignedSettlement, Store, StoreError,
};

use crate::fixtures::{finish_settlement, merchant, settlement_key};

const USDC: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";
const PAY_TO: &str = "0x209693bc6afc0c5328ba36faf03c514ef312287c";
const PAYER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

fn event(merchant: &MerchantId, order_id: &str, kind: &str) -> NewEvent {
    NewEvent {
        event_id: format!("evt_{kind}_{order_id}"),
        merchant_id: merchant.clone(),
        order_id: Some(order_id.to_owned()),
        event_type: format!("payment_order.{kind}"),
        payload: "{}".to_owned(),
        format: coffer_store::WebhookFormat::Coffer,
        created_at_ms: 1,
        delivery: None,
    }
}

fn order(merchant: &MerchantId, order_id: &str) -> NewOrder {
    NewOrder {
        order_id: order_id.to_owned(),
        merchant_id: merchant.clone(),
        chain_id: 84_532,
        blockchain: "base".to_owned(),
        currency: "USDC".to_owned(),
        asset_address: Some(USDC.to_owned()),
        decimals: 6,
        amount: Amount::from(10_000),
        underpayment_tolerance: Amount::ZERO,
        receiving_address: PAY_TO.to_owned(),
        derivation_index: 0,
        order_info: "{}".to_owned(),
        nonce: 0,
        webhook_url: None,
        redirect_url: None,
        idempotency_key: None,
        request_hash: None,
        created_at_ms: 1,
        expires_at_ms: 1,
        monitor_until_ms: 1,
        external_reference: None,
        event: event(merchant, order_id, "created"),
    }
}

/// `order`, already stored at `version`, as a sale pays it.
fn existing(order: NewOrder, version: i64) -> SaleOrder {
    SaleOrder::Existing {
        order_id: order.order_id,
        expected_version: version,
        chain_id: order.chain_id,
        blockchain: order.blockchain,
        currency: order.currency,
        asset_address: order.asset_address,
        decimals: order.decimals,
        amount: order.amount,
        receiving_address: order.receiving_address,
    }
}

fn payment(order_id: &str, tx: &str) -> NewPayment {
    NewPayment {
        chain_id: 84_532,
        tx_hash: tx.to_owned(),
        log_index: 1,
        order_id: order_id.to_owned(),
        asset_address: Some(USDC.to_owned()),
        sender: PAYER.to_owned(),
        recipient: PAY_TO.to_owned(),
        amount: Amount::from(10_000),
        block_number: 5,
        block_hash: "0xbb".to_owned(),
        block_time: 1,
        detected_at_ms: 1,
    }
}

fn sale(merchant: &MerchantId, order_id: &str, tx: &str, proof: SaleProof) -> NewSale {
    NewSale {
        order: SaleOrder::New(Box::new(order(merchant, order_id))),
        merchant_id: merchant.clone(),
        source: OrderSource::X402,
        proof,
        payment: payment(order_id, tx),
        confirmed: true,
        events: vec![event(merchant, order_id, "confirmed")],
        now_ms: 2,
    }
}

fn authorization(nonce: &str) -> SaleProof {
    SaleProof::Authorization {
        auth_nonce: nonce.to_owned(),
    }
}

async fn sales_are_recorded_once_and_pay_to_addresses_have_one_owner(store: &dyn Store) {
    let seller = merchant(store, "seller").await;
    let other = merchant(store, "other").await;
    let pay_to = |merchant: &MerchantId| PayToRow {
        chain_id: 84_532,
        address: PAY_TO.to_owned(),
        merchant_id: merchant.clone(),
        created_at_ms: 1,
    };
    store.add_pay_to(&pay_to(&seller)).await.unwrap();
    store.add_pay_to(&pay_to(&seller)).await.unwrap();
    assert!(matches!(
        store.add_pay_to(&pay_to(&other)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .pay_to_owner(84_532, PAY_TO)
            .await
            .unwrap()
            .unwrap()
            .merchant_id,
        seller
    );
    assert_eq!(store.pay_tos(&seller).await.unwrap().len(), 1);

    // Two sales to one payTo are two orders; the same authorization again records nothing.
    let first = store
        .record_sale(&sale(&seller, "ORD-1", "0xt1", authorization("0x01")))
        .await
        .unwrap();
    assert!(matches!(first, Recorded::New(_)));
    assert_eq!(first.order().status.as_str(), "confirmed");
    assert_eq!(first.order().amount_paid, Amount::from(10_000));
    let second = store
        .record_sale(&sale(&seller, "ORD-2", "0xt2", authorization("0x02")))
        .await
        .unwrap();
    assert!(matches!(second, Recorded::New(_)));
    let again = store
        .record_sale(&sale(&seller, "ORD-3", "0xt1", authorization("0x01")))
        .await
        .unwrap();
    assert_eq!(again, Recorded::Already(first.order().clone()));
    assert!(store.order("ORD-3").await.is_err(), "nothing written");
    assert_eq!(store.payments_for_order("ORD-1").await.unwrap().len(), 1);
    assert_eq!(
        store
            .order_paid_by(84_532, "0xt1")
            .await
            .unwrap()
            .as_deref(),
        Some("ORD-1")
    );
    let events = store.events(&seller, Some("ORD-1"), 10).await.unwrap();
    assert_eq!(events.len(), 2, "created and confirmed");

    // A pending Pelago order is confirmed by a transfer, once; the transfer pays nothing else.
    let pending = store
        .insert_sale_order(&order(&seller, "CO-1"), OrderSource::Pelago)
        .await
        .unwrap();
    assert_eq!(pending.status.as_str(), "pending");
    let confirm = |order_id: &str, version: i64| NewSale {
        order: existing(order(&seller, order_id), version),
        merchant_id: seller.clone(),
        source: OrderSource::Pelago,
        proof: SaleProof::Transfer,
        payment: payment(order_id, "0xt9"),
        confirmed: true,
        events: vec![event(&seller, order_id, "confirmed")],
        now_ms: 3,
    };
    let paid = store
        .record_sale(&confirm("CO-1", pending.version))
        .await
        .unwrap();
    assert_eq!(paid.order().status.as_str(), "confirmed");
    let other_order = store
        .insert_sale_order(&order(&seller, "CO-2"), OrderSource::Pelago)
        .await
        .unwrap();
    assert!(matches!(
        store
            .record_sale(&confirm("CO-2", other_order.version))
            .await,
        Err(StoreError::Conflict(Constraint::Payment))
    ));
    assert_eq!(
        store.order("CO-2").await.unwrap().status.as_str(),
        "pending"
    );
    assert_eq!(
        store.sale_for_order("CO-1").await.unwrap().unwrap().kind,
        "transfer"
    );

    // A succeeded settlement to the registered payTo, not yet recorded, is listed until it is.
    let key = settlement_key("0x07");
    let (row, _) = store
        .claim_settlement(&NewSettlement {
            key: key.clone(),
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".to_owned(),
            value: "10000".to_owned(),
            network: "eip155:84532".to_owned(),
            terms_hash: "0xterms".to_owned(),
            order_id: None,
            now_ms: 1,
        })
        .await
        .unwrap();
    store
        .record_signed(
            &[row.id],
            &SignedSettlement {
                chain_id: 84_532,
                signer: "0xsigner".to_owned(),
                signer_nonce: 0,
                tx_hash: "0xt7".to_owned(),
                raw_tx: "0x02".to_owned(),
            },
            2,
        )
        .await
        .unwrap();
    assert!(
        store.unrecorded_settlements(10).await.unwrap().is_empty(),
        "not succeeded yet"
    );
    finish_settlement(
        store,
        row.id,
        (SettlementStatus::Broadcast, SettlementStatus::Succeeded),
        None,
        3,
    )
    .await;
    assert_eq!(store.unrecorded_settlements(10).await.unwrap(), vec![key]);
    store
        .record_sale(&sale(&seller, "ORD-7", "0xt7", authorization("0x07")))
        .await
        .unwrap();
    assert!(store.unrecorded_settlements(10).await.unwrap().is_empty());

    store.remove_pay_to(&seller, 84_532, PAY_TO).await.unwrap();
    assert!(store.pay_to_owner(84_532, PAY_TO).await.unwrap().is_none());
}

coffer_store::on_both_databases! {
    store: [sales_are_recorded_once_and_pay_to_addresses_have_one_owner];
}
