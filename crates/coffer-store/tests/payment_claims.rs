//! Claims on payments presented to paid routes, on both backends: one holder at a time across
//! every process sharing the database, released only by its holder, taken over once lapsed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{NewPaymentClaim, SettlementKey, Store};

fn key(nonce: &str) -> SettlementKey {
    SettlementKey {
        chain_id: 84_532,
        token: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".to_owned(),
        payer: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8".to_owned(),
        auth_nonce: nonce.to_owned(),
    }
}

fn claim(nonce: &str, holder: &str, now_ms: i64) -> NewPaymentClaim {
    NewPaymentClaim {
        key: key(nonce),
        holder: holder.to_owned(),
        now_ms,
        expires_at_ms: now_ms + 1_000,
    }
}

async fn a_payment_has_one_holder_across_replicas_until_released_or_lapsed(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    // A second process's view of the same database.
    let other: Arc<dyn Store> = db.reopen().await.unwrap();
    let store = db.store.clone();

    // Twenty requests with the same payment, half on each replica, at once: one holds it.
    let attempts = (0..20).map(|i| {
        let replica = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tokio::spawn(async move {
            replica
                .claim_payment(&claim("0x01", &format!("holder-{i}"), 10))
                .await
                .unwrap()
        })
    });
    let mut held = 0;
    for attempt in attempts {
        if attempt.await.unwrap() {
            held += 1;
        }
    }
    assert_eq!(held, 1, "exactly one request holds a payment");

    // Another authorization is independent.
    assert!(store.claim_payment(&claim("0x02", "a", 10)).await.unwrap());

    // Only the holder releases: a stranger's release changes nothing.
    assert!(store.claim_payment(&claim("0x03", "a", 10)).await.unwrap());
    other.release_payment(&key("0x03"), "b").await.unwrap();
    assert!(!other.claim_payment(&claim("0x03", "b", 20)).await.unwrap());
    // The holder's release frees it for the next presentation, on any replica.
    store.release_payment(&key("0x03"), "a").await.unwrap();
    assert!(other.claim_payment(&claim("0x03", "b", 20)).await.unwrap());
    assert!(!store.claim_payment(&claim("0x03", "c", 30)).await.unwrap());

    // A claim whose holder died lapses at its deadline and is taken over; the old holder's
    // late release cannot free the new holder's claim.
    assert!(
        !store
            .claim_payment(&claim("0x03", "c", 1_019))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_payment(&claim("0x03", "c", 1_020))
            .await
            .unwrap()
    );
    other.release_payment(&key("0x03"), "b").await.unwrap();
    assert!(
        !other
            .claim_payment(&claim("0x03", "d", 1_021))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_payment_has_one_holder_across_replicas_until_released_or_lapsed_on_sqlite() {
    a_payment_has_one_holder_across_replicas_until_released_or_lapsed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_payment_has_one_holder_across_replicas_until_released_or_lapsed_on_postgres() {
    a_payment_has_one_holder_across_replicas_until_released_or_lapsed(Backend::Postgres).await;
}
