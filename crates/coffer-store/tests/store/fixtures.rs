//! What several suites build alike: a merchant without a webhook endpoint, the key of an
//! authorization, and a settlement moved on.

use chrono::Utc;
use coffer_core::MerchantId;
use coffer_store::{NewMerchant, SettlementKey, SettlementStatus, Store};

/// Inserts merchant `mer_<suffix>`, named `suffix`, without a webhook endpoint.
pub async fn merchant(store: &dyn Store, suffix: &str) -> MerchantId {
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

/// The key of an authorization with `nonce`: one payer's USDC on Base Sepolia.
pub fn settlement_key(nonce: &str) -> SettlementKey {
    SettlementKey {
        chain_id: 84_532,
        token: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".to_owned(),
        payer: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8".to_owned(),
        auth_nonce: nonce.to_owned(),
    }
}

/// Moves settlement `id` from `from` to `to` at `now_ms`, with `error` and no mined
/// transaction; whether it moved.
pub async fn finish_settlement(
    store: &dyn Store,
    id: i64,
    (from, to): (SettlementStatus, SettlementStatus),
    error: Option<&str>,
    now_ms: i64,
) -> bool {
    store
        .finish_settlement(id, from, to, error, None, now_ms)
        .await
        .unwrap()
}
