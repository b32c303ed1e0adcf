//! Row types of the x402 settlement journal.

/// Where a settlement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementStatus {
    /// Claimed; nothing broadcast yet.
    Pending,
    /// A transaction was signed, journaled and handed to the node.
    Broadcast,
    /// The transaction succeeded.
    Succeeded,
    /// The settlement failed (verification, node rejection or revert).
    Failed,
}

impl SettlementStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementStatus::Pending => "pending",
            SettlementStatus::Broadcast => "broadcast",
            SettlementStatus::Succeeded => "succeeded",
            SettlementStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(SettlementStatus::Pending),
            "broadcast" => Some(SettlementStatus::Broadcast),
            "succeeded" => Some(SettlementStatus::Succeeded),
            "failed" => Some(SettlementStatus::Failed),
            _ => None,
        }
    }
}

/// The identity of an EIP-3009 authorization: `(chain, token, payer, nonce)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SettlementKey {
    /// Chain id.
    pub chain_id: u64,
    /// Token contract, lower-case hex.
    pub token: String,
    /// Payer, lower-case hex.
    pub payer: String,
    /// The authorization's nonce, lower-case 0x hex.
    pub auth_nonce: String,
}

/// A settlement to claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSettlement {
    /// Its identity.
    pub key: SettlementKey,
    /// Payee.
    pub pay_to: String,
    /// Amount in base units (decimal text).
    pub value: String,
    /// The network as the request named it (for replies).
    pub network: String,
    /// A hash of what the payer signed and the signature ([`SettlementRow::terms_hash`]).
    pub terms_hash: String,
    /// The order this settlement pays, when it was made for one.
    pub order_id: Option<String>,
    /// Time.
    pub now_ms: i64,
}

/// A journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRow {
    /// Row id.
    pub id: i64,
    /// Identity.
    pub key: SettlementKey,
    /// Payee.
    pub pay_to: String,
    /// Amount in base units.
    pub value: String,
    /// Network as first requested.
    pub network: String,
    /// A hash of the authorization's EIP-712 digest and its signature: a repeated settle is
    /// answered from this row only when it presents the same. `None` for rows journaled before
    /// terms were kept.
    pub terms_hash: Option<String>,
    /// The order this settlement pays, when it was made for one; whoever records the sale
    /// records it there.
    pub order_id: Option<String>,
    /// Where it is.
    pub status: SettlementStatus,
    /// The signer that broadcast it.
    pub signer: Option<String>,
    /// The signer's account nonce used.
    pub signer_nonce: Option<u64>,
    /// Transaction hash, once signed.
    pub tx_hash: Option<String>,
    /// The signed transaction, for rebroadcasting.
    pub raw_tx: Option<String>,
    /// Why it failed.
    pub error_reason: Option<String>,
    /// Claim time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
}

/// A signed transaction about to be broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSettlement {
    /// Chain id.
    pub chain_id: u64,
    /// The signer.
    pub signer: String,
    /// Its account nonce.
    pub signer_nonce: u64,
    /// Transaction hash.
    pub tx_hash: String,
    /// Raw signed transaction (0x hex).
    pub raw_tx: String,
}
