//! What the chain says about an authorization: whether a transaction used it, and, when ours
//! did not, whether another one did.
//!
//! EIP-3009 authorizations can be submitted by anyone. A settlement whose own transaction
//! reverted (or whose call in a batch failed) may still have paid: someone else submitted the
//! same signed authorization first, or later, before it expired. The token then says the
//! authorization is used, and its `AuthorizationUsed(payer, nonce)` log names the transaction
//! that moved the money. A settlement is failed only when the token says it is unused.

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::sol_types::SolEvent;
use coffer_evm::contracts::IEip3009;
use coffer_store::SettlementKey;

/// How many blocks one log query spans; public endpoints commonly refuse much wider ranges.
const LOG_QUERY_BLOCKS: u64 = 2_000;

/// How far back, in blocks, the transaction that used an authorization is looked for.
const LOG_SEARCH_BLOCKS: u64 = 10_000;

/// The parsed identity of an authorization: its token, payer and nonce.
fn parts(key: &SettlementKey) -> Option<(Address, Address, B256)> {
    Some((
        key.token.parse().ok()?,
        key.payer.parse().ok()?,
        key.auth_nonce.parse().ok()?,
    ))
}

/// Whether a receipt shows this settlement's authorization used: its token's
/// `AuthorizationUsed(payer, nonce)` log in a successful transaction. A batch whose own call
/// for it failed has none.
pub(super) fn authorization_used(receipt: &TransactionReceipt, key: &SettlementKey) -> bool {
    let Some((token, payer, nonce)) = parts(key) else {
        return false;
    };
    receipt.status()
        && receipt.inner.logs().iter().any(|log| {
            let topics = log.topics();
            log.address() == token
                && topics.len() == 3
                && topics[0] == IEip3009::AuthorizationUsed::SIGNATURE_HASH
                && topics[1] == payer.into_word()
                && topics[2] == nonce
        })
}

/// What the chain says of an authorization that a transaction of ours did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Elsewhere {
    /// The token says it is unused: nothing moved, the settlement failed.
    Unused,
    /// Another transaction used it: the payment went through there.
    UsedBy(String),
}

/// Why the chain's word on an authorization could not be had; the settlement stays as it is
/// and is looked at again.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unknown {
    /// The key is not an authorization's identity.
    #[error("the journal row is not an authorization's identity")]
    Malformed,
    /// The node could not be asked.
    #[error("{0}")]
    Rpc(String),
    /// The token says used, but no log of it was found in the blocks searched.
    #[error("the authorization is used, by no transaction in the last {LOG_SEARCH_BLOCKS} blocks")]
    Untraced,
}

/// Asks the token whether `key`'s authorization is used and, if so, finds the transaction that
/// used it among the blocks up to `up_to` (the chain's head when `None`), newest first.
pub(super) async fn used_elsewhere(
    provider: &DynProvider,
    key: &SettlementKey,
    up_to: Option<u64>,
) -> Result<Elsewhere, Unknown> {
    let (token, payer, nonce) = parts(key).ok_or(Unknown::Malformed)?;
    let rpc = |error: alloy::transports::TransportError| Unknown::Rpc(error.to_string());
    let used = IEip3009::new(token, provider)
        .authorizationState(payer, nonce)
        .call()
        .await
        .map_err(|error| Unknown::Rpc(error.to_string()))?;
    if !used {
        return Ok(Elsewhere::Unused);
    }
    let head = match up_to {
        Some(block) => block,
        None => provider.get_block_number().await.map_err(rpc)?,
    };
    let oldest = head.saturating_sub(LOG_SEARCH_BLOCKS);
    let mut to = head;
    loop {
        let from = to.saturating_sub(LOG_QUERY_BLOCKS - 1).max(oldest);
        let filter = Filter::new()
            .address(token)
            .event_signature(IEip3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(payer.into_word())
            .topic2(nonce)
            .from_block(from)
            .to_block(to);
        let logs = provider.get_logs(&filter).await.map_err(rpc)?;
        if let Some(hash) = logs.iter().rev().find_map(|log| log.transaction_hash) {
            return Ok(Elsewhere::UsedBy(format!("{hash:#x}")));
        }
        if from <= oldest {
            return Err(Unknown::Untraced);
        }
        to = from - 1;
    }
}
