//! The x402 settlement journal and OKX credentials, on both backends.

use coffer_store::SettlementStatus::{Broadcast, Failed, Pending, Succeeded};
use coffer_store::{
    NewSettlement, OkxCredentialRow, SettlementStatus, SignedSettlement, Store, StoreError,
};

use crate::fixtures::{finish_settlement, merchant, settlement_key};

fn claim(nonce: &str) -> NewSettlement {
    NewSettlement {
        key: settlement_key(nonce),
        pay_to: "0x2096".to_owned(),
        value: "10000".to_owned(),
        network: "eip155:84532".to_owned(),
        terms_hash: format!("0xterms{nonce}"),
        order_id: None,
        now_ms: 1,
    }
}

async fn status_of(store: &dyn Store, nonce: &str) -> SettlementStatus {
    let row = store.settlement(&settlement_key(nonce)).await.unwrap();
    row.unwrap().status
}

fn signed(nonce: u64, hash: &str) -> SignedSettlement {
    SignedSettlement {
        chain_id: 84_532,
        signer: "0xsigner".to_owned(),
        signer_nonce: nonce,
        tx_hash: hash.to_owned(),
        raw_tx: "0x02".to_owned(),
    }
}

async fn an_authorization_is_claimed_once_and_moves_by_compare_and_set(store: &dyn Store) {
    let (row, fresh) = store.claim_settlement(&claim("0x01")).await.unwrap();
    assert!(fresh);
    assert_eq!(row.status, Pending);
    let (again, fresh) = store.claim_settlement(&claim("0x01")).await.unwrap();
    assert!(!fresh, "a second claim finds the first");
    assert_eq!(again.id, row.id);

    assert_eq!(
        store.next_signer_nonce(84_532, "0xsigner").await.unwrap(),
        None
    );
    store
        .record_signed(&[row.id], &signed(7, "0xaa"), 2)
        .await
        .unwrap();
    assert!(
        matches!(
            store.record_signed(&[row.id], &signed(8, "0xbb"), 3).await,
            Err(StoreError::Conflict(_))
        ),
        "signed once"
    );
    assert_eq!(
        store.next_signer_nonce(84_532, "0xsigner").await.unwrap(),
        Some(8)
    );
    let by_hash = store
        .settlement_by_tx_hash("0xaa")
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!((by_hash.status, by_hash.signer_nonce), (Broadcast, Some(7)));
    assert_eq!(store.open_settlements(10).await.unwrap().len(), 1);

    // Compare-and-set: only from the state the caller saw.
    let moved = finish_settlement(store, row.id, (Pending, Failed), Some("x"), 4).await;
    assert!(!moved, "the row is no longer pending");
    let moved = finish_settlement(store, row.id, (Broadcast, Succeeded), None, 5).await;
    assert!(moved);
    assert_eq!(status_of(store, "0x01").await, Succeeded);
    assert!(store.open_settlements(10).await.unwrap().is_empty());

    // A signer nonce is used by one transaction only; a voided (refused) one frees it.
    let (other, _) = store.claim_settlement(&claim("0x02")).await.unwrap();
    assert!(
        matches!(
            store
                .record_signed(&[other.id], &signed(7, "0xcc"), 6)
                .await,
            Err(StoreError::Conflict(_))
        ),
        "nonce 7 is taken"
    );
    assert_eq!(
        status_of(store, "0x02").await,
        Pending,
        "a refused journal write changes nothing"
    );
    store
        .record_signed(&[other.id], &signed(8, "0xcc"), 6)
        .await
        .unwrap();
    store.void_transaction("0xcc").await.unwrap();
    assert_eq!(
        store.next_signer_nonce(84_532, "0xsigner").await.unwrap(),
        Some(8),
        "the voided nonce is reusable"
    );
    assert_eq!(
        store.settlement(&settlement_key("0x02")).await.unwrap(),
        None,
        "the claim of a voided transaction's settlement is released"
    );
    assert!(store.settlement_by_tx_hash("0xcc").await.unwrap().is_none());
    let (again, fresh) = store.claim_settlement(&claim("0x02")).await.unwrap();
    assert!(fresh, "the authorization can be presented again");

    // A claim nothing was signed for is released; one that was signed is not.
    assert!(store.release_settlement_claim(again.id).await.unwrap());
    assert!(
        !store.release_settlement_claim(again.id).await.unwrap(),
        "gone"
    );
    assert!(
        !store.release_settlement_claim(row.id).await.unwrap(),
        "a settled row stays"
    );
    assert_eq!(status_of(store, "0x01").await, Succeeded);
    assert_eq!(
        store.settlement(&settlement_key("0x02")).await.unwrap(),
        None
    );
}

async fn a_batch_shares_one_transaction_and_a_fee_bump_replaces_it(store: &dyn Store) {
    let mut ids = Vec::new();
    for nonce in ["0x11", "0x12", "0x13"] {
        ids.push(store.claim_settlement(&claim(nonce)).await.unwrap().0.id);
    }
    // The batch is journaled all or nothing: one row that is no longer pending rolls it back.
    finish_settlement(store, ids[2], (Pending, Failed), Some("x"), 2).await;
    assert!(matches!(
        store.record_signed(&ids, &signed(3, "0xb1"), 3).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(status_of(store, "0x11").await, Pending);
    assert_eq!(
        store.next_signer_nonce(84_532, "0xsigner").await.unwrap(),
        None
    );

    store
        .record_signed(&ids[..2], &signed(3, "0xb1"), 3)
        .await
        .unwrap();
    assert_eq!(store.open_settlements(10).await.unwrap().len(), 2);
    let mut bump = signed(3, "0xb2");
    bump.raw_tx = "0x03".to_owned();
    assert_eq!(
        store.replace_transaction("0xb1", &bump, 4).await.unwrap(),
        2
    );
    for nonce in ["0x11", "0x12"] {
        let row = store
            .settlement(&settlement_key(nonce))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.tx_hash.as_deref(), row.raw_tx.as_deref()),
            (Some("0xb2"), Some("0x03"))
        );
    }
    let hashes: Vec<String> = store
        .transactions_at_nonce(84_532, "0xsigner", 3)
        .await
        .unwrap()
        .into_iter()
        .map(|(hash, _)| hash)
        .collect();
    assert_eq!(hashes, ["0xb1", "0xb2"]);
    // The hash a caller was first given still finds its settlement.
    let found = store.settlement_by_tx_hash("0xb1").await.unwrap().unwrap();
    assert_eq!(found.tx_hash.as_deref(), Some("0xb2"));
    assert_eq!(
        store.next_signer_nonce(84_532, "0xsigner").await.unwrap(),
        Some(4)
    );
}

async fn a_mined_batch_is_finished_in_one_statement_from_broadcast_only(store: &dyn Store) {
    let mut ids = Vec::new();
    for nonce in ["0x21", "0x22", "0x23", "0x24"] {
        ids.push(store.claim_settlement(&claim(nonce)).await.unwrap().0.id);
    }
    let mut batch = signed(5, "0xc1");
    batch.raw_tx = "0xfeed".to_owned();
    store.record_signed(&ids, &batch, 2).await.unwrap();
    // Every row of the batch reads the one journaled copy of the signed transaction.
    for nonce in ["0x21", "0x24"] {
        let row = store
            .settlement(&settlement_key(nonce))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.raw_tx.as_deref(), Some("0xfeed"));
    }
    assert!(
        store
            .open_settlements(10)
            .await
            .unwrap()
            .iter()
            .all(|row| row.raw_tx.as_deref() == Some("0xfeed"))
    );
    // Another process recorded one row first: its outcome stands and it is not reported moved.
    assert!(finish_settlement(store, ids[3], (Broadcast, Failed), Some("elsewhere"), 3).await);
    let mut moved = store
        .finish_broadcast_settlements(&ids[..2], Succeeded, None, 4)
        .await
        .unwrap();
    moved.sort_unstable();
    assert_eq!(moved, ids[..2]);
    let moved = store
        .finish_broadcast_settlements(
            &ids[2..],
            Failed,
            Some("invalid_exact_evm_transaction_failed"),
            4,
        )
        .await
        .unwrap();
    assert_eq!(moved, [ids[2]]);
    let statuses: Vec<(SettlementStatus, Option<String>)> = {
        let mut statuses = Vec::new();
        for nonce in ["0x21", "0x22", "0x23", "0x24"] {
            let row = store
                .settlement(&settlement_key(nonce))
                .await
                .unwrap()
                .unwrap();
            statuses.push((row.status, row.error_reason));
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            (Succeeded, None),
            (Succeeded, None),
            (
                Failed,
                Some("invalid_exact_evm_transaction_failed".to_owned())
            ),
            (Failed, Some("elsewhere".to_owned())),
        ]
    );
    // Finished rows never move again, and an empty batch is a no-op.
    assert!(
        store
            .finish_broadcast_settlements(&ids, Failed, Some("late"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .finish_broadcast_settlements(&[], Failed, None, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.open_settlements(10).await.unwrap().is_empty());
}

async fn okx_credentials_authenticate_until_revoked(store: &dyn Store) {
    let merchant = merchant(store, "okx").await;
    let credential = OkxCredentialRow {
        access_key: "key-1".to_owned(),
        merchant_id: merchant.clone(),
        secret: "SECRET".to_owned(),
        passphrase_hash: "hash".to_owned(),
        created_at_ms: 1,
        revoked_at_ms: None,
    };
    store.insert_okx_credential(&credential).await.unwrap();
    assert!(matches!(
        store.insert_okx_credential(&credential).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.okx_credential("key-1").await.unwrap(),
        Some(credential.clone())
    );
    assert_eq!(store.okx_credentials(&merchant).await.unwrap().len(), 1);
    store.revoke_okx_credential("key-1", 9).await.unwrap();
    assert_eq!(
        store
            .okx_credential("key-1")
            .await
            .unwrap()
            .and_then(|c| c.revoked_at_ms),
        Some(9)
    );
    assert!(matches!(
        store.revoke_okx_credential("nope", 9).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.okx_credential("nope").await.unwrap(), None);
}

async fn a_claim_keeps_its_signed_terms_and_the_order_it_pays(store: &dyn Store) {
    let mut for_order = claim("0x21");
    for_order.order_id = Some("CO1".to_owned());
    let (row, _) = store.claim_settlement(&for_order).await.unwrap();
    assert_eq!(row.terms_hash.as_deref(), Some("0xterms0x21"));
    assert_eq!(row.order_id.as_deref(), Some("CO1"));
    // A later claim with other terms finds the first row unchanged: the first terms stand.
    let mut other = claim("0x21");
    other.terms_hash = "0xother".to_owned();
    other.order_id = Some("CO2".to_owned());
    let (again, fresh) = store.claim_settlement(&other).await.unwrap();
    assert!(!fresh);
    assert_eq!(
        (again.terms_hash.as_deref(), again.order_id.as_deref()),
        (Some("0xterms0x21"), Some("CO1"))
    );
    let read = store
        .settlement(&settlement_key("0x21"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.order_id.as_deref(), Some("CO1"));
}

coffer_store::on_both_databases! {
    store: [
        an_authorization_is_claimed_once_and_moves_by_compare_and_set,
        a_claim_keeps_its_signed_terms_and_the_order_it_pays,
        a_batch_shares_one_transaction_and_a_fee_bump_replaces_it,
        a_mined_batch_is_finished_in_one_statement_from_broadcast_only,
        okx_credentials_authenticate_until_revoked,
    ];
}
