//! Claims on payments presented to paid routes, on both backends: one holder at a time across
//! every process sharing the database, released only by its holder, taken over once lapsed.

use std::sync::Arc;

use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{NewPaymentClaim, Store};

use crate::fixtures::settlement_key;

fn claim(nonce: &str, holder: &str, now_ms: i64) -> NewPaymentClaim {
    NewPaymentClaim {
        key: settlement_key(nonce),
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
    other
        .release_payment(&settlement_key("0x03"), "b")
        .await
        .unwrap();
    assert!(!other.claim_payment(&claim("0x03", "b", 20)).await.unwrap());
    // The holder's release frees it for the next presentation, on any replica.
    store
        .release_payment(&settlement_key("0x03"), "a")
        .await
        .unwrap();
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
    other
        .release_payment(&settlement_key("0x03"), "b")
        .await
        .unwrap();
    assert!(
        !other
            .claim_payment(&claim("0x03", "d", 1_021))
            .await
            .unwrap()
    );
}

coffer_store::on_both_databases!(a_payment_has_one_holder_across_replicas_until_released_or_lapsed);
