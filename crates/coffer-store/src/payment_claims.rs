//! Single-use claims on x402 payments presented to a paid route.
//!
//! A paid request claims its authorization (`(chain, token, payer, nonce)`, the settlement
//! journal's key) before anything else happens. The claim is one atomic insert-or-refuse in the
//! shared database, so the same payment header sent to several replicas at once is served by
//! one of them; the others see a replay. The holder releases the claim when nothing was settled
//! (the payer may present the payment again), and keeps it once settlement began (the journal
//! then answers for the authorization). A claim whose holder died expires at its deadline.

use async_trait::async_trait;

use crate::StoreError;
use crate::settlement_rows::SettlementKey;

/// A claim to take on an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPaymentClaim {
    /// The authorization.
    pub key: SettlementKey,
    /// A random value naming the request that holds the claim.
    pub holder: String,
    /// Time.
    pub now_ms: i64,
    /// When the claim lapses unless released first.
    pub expires_at_ms: i64,
}

/// Claims on authorizations presented to paid routes.
#[async_trait]
pub trait PaymentClaims: Send + Sync + 'static {
    /// Claims an authorization for one request, atomically: `true` when this call holds it now
    /// (there was no claim, or the one there had expired), `false` when another request holds
    /// it — a replay.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn claim_payment(&self, claim: &NewPaymentClaim) -> Result<bool, StoreError>;

    /// Releases the claim `holder` took on `key`; nothing changes when the claim has lapsed
    /// and another request holds it now.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn release_payment(&self, key: &SettlementKey, holder: &str) -> Result<(), StoreError>;
}
