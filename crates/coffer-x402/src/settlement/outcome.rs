//! What a settlement came to, typed, and why one could not be completed.
//!
//! [`SettleOutcome`] is the settler's answer; [`SettleOutcome::response`] turns it into the
//! `/settle` wire reply, [`SettleResponse`]. [`SettleError`] is a failure of the settler
//! itself (the journal, the chain, the signer), with its cause kept and whether trying again
//! later may help.

use alloy::primitives::{Address, SignatureError};
use alloy::transports::TransportError;
use coffer_store::{SettlementRow, SettlementStatus, StoreError};

use super::{SETTLEMENT_PENDING, TRANSACTION_FAILED, UNEXPECTED_SETTLE_ERROR};
use crate::facilitator::Rejection;
use crate::reasons::Reason;
use crate::wire::{PaymentRequest, SettleResponse};

/// How a settlement ended for one call.
#[derive(Debug)]
pub enum SettleOutcome {
    /// The transaction was mined and used the authorization.
    Settled {
        /// The transaction's hash.
        transaction: String,
    },
    /// Claimed or broadcast, and not mined yet (or not within the wait): the payment may still
    /// go through, so the payer must not sign again.
    Pending {
        /// The transaction's hash, once one was signed.
        transaction: Option<String>,
    },
    /// The payment was refused; nothing was written or sent for this call.
    Rejected(Rejection),
    /// The settlement failed.
    Failed(Failure),
}

/// How a settlement failed.
#[derive(Debug)]
pub enum Failure {
    /// The journal records the settlement as failed, on evidence from the chain: its
    /// transaction reverted, or its call in a batch failed when mined.
    Recorded {
        /// The journaled reason ([`TRANSACTION_FAILED`] unless another was recorded).
        reason: String,
        /// The transaction's hash, when one was signed.
        transaction: Option<String>,
    },
    /// The chain could not be asked, or the transaction could not be signed or sent (the
    /// claim is released then); nothing was decided or moved, and settling the same
    /// authorization again later may succeed.
    ChainUnavailable {
        /// Details for people (no URL in them).
        message: String,
    },
    /// The settler itself failed (see [`SettleError::is_retryable`]).
    Error(SettleError),
}

impl SettleOutcome {
    /// The outcome a journal row records.
    pub fn from_row(row: SettlementRow) -> Self {
        match row.status {
            SettlementStatus::Succeeded => SettleOutcome::Settled {
                transaction: row.tx_hash.unwrap_or_default(),
            },
            SettlementStatus::Failed => SettleOutcome::Failed(Failure::Recorded {
                reason: row
                    .error_reason
                    .unwrap_or_else(|| TRANSACTION_FAILED.to_owned()),
                transaction: row.tx_hash,
            }),
            SettlementStatus::Broadcast | SettlementStatus::Pending => SettleOutcome::Pending {
                transaction: row.tx_hash,
            },
        }
    }

    /// The outcome of a refused payment: a refusal because the chain could not be asked is
    /// the settlement's failure, not the payment's.
    pub fn rejected(rejection: Rejection) -> Self {
        if rejection.reason == Reason::ChainUnavailable {
            return SettleOutcome::Failed(Failure::ChainUnavailable {
                message: rejection.message,
            });
        }
        SettleOutcome::Rejected(rejection)
    }

    /// Whether the payment went through.
    pub fn is_settled(&self) -> bool {
        matches!(self, SettleOutcome::Settled { .. })
    }

    /// The `/settle` reply to `request`, in its protocol version's words.
    pub fn response(self, request: &PaymentRequest) -> SettleResponse {
        let (success, reason, message, transaction) = match self {
            SettleOutcome::Settled { transaction } => (true, None, None, Some(transaction)),
            SettleOutcome::Pending { transaction } => (
                false,
                Some(SETTLEMENT_PENDING.to_owned()),
                None,
                transaction,
            ),
            SettleOutcome::Rejected(rejection) => (
                false,
                Some(rejection.reason.as_str(request.version()).to_owned()),
                Some(rejection.message),
                None,
            ),
            SettleOutcome::Failed(Failure::Recorded {
                reason,
                transaction,
            }) => (false, Some(reason), None, transaction),
            SettleOutcome::Failed(Failure::ChainUnavailable { message }) => (
                false,
                Some(UNEXPECTED_SETTLE_ERROR.to_owned()),
                Some(message),
                None,
            ),
            SettleOutcome::Failed(Failure::Error(error)) => (
                false,
                Some(UNEXPECTED_SETTLE_ERROR.to_owned()),
                Some(error.redacted()),
                None,
            ),
        };
        SettleResponse {
            success,
            error_reason: reason,
            error_message: message,
            payer: Some(request.payer().to_owned()),
            transaction: transaction.unwrap_or_default(),
            network: request.network().to_owned(),
        }
    }
}

/// A failure of the settler: the journal, the chain or the signer, not the payment.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A journal row this call was working on is gone.
    #[error("journal row vanished")]
    RowVanished,
    /// No RPC endpoint is configured for the chain.
    #[error("no RPC endpoint")]
    NoRpcEndpoint {
        /// The chain.
        chain_id: u64,
    },
    /// No settlement signer is configured.
    #[error("no settlement signer is configured")]
    NoSigner,
    /// The signer that sent a journaled transaction is no longer configured.
    #[error("the signer that sent it is no longer configured")]
    SignerGone {
        /// The journaled signer.
        signer: Address,
    },
    /// A journaled transaction's row names no signer.
    #[error("the journal row names no signer")]
    NoJournaledSigner,
    /// The batch a claim waited in stopped before sending it.
    #[error("the batch was abandoned")]
    BatchAbandoned,
    /// The node could not estimate fees.
    #[error("fee estimate: {0}")]
    FeeEstimate(#[source] TransportError),
    /// Gas costs more than the configured cap.
    #[error("gas price {fee} above the cap {cap}")]
    FeeAboveCap {
        /// The estimated `maxFeePerGas`, in wei.
        fee: u128,
        /// [`super::SettleOptions::max_fee_per_gas`].
        cap: u128,
    },
    /// Replacing a stuck transaction would cost more than the configured cap.
    #[error("the replacement's fee {fee} would pass the cap {cap}")]
    ReplacementAboveCap {
        /// The replacement's `maxFeePerGas`, in wei.
        fee: u128,
        /// [`super::SettleOptions::max_fee_per_gas`].
        cap: u128,
    },
    /// The node could not tell the signer's transaction count.
    #[error("nonce: {0}")]
    SignerNonce(#[source] TransportError),
    /// The transaction could not be signed.
    #[error("signing: {0}")]
    Signing(#[source] alloy::network::TransactionBuilderError<alloy::network::Ethereum>),
    /// The payment's signature cannot be split into `(v, r, s)`.
    #[error("{0}")]
    Signature(#[source] SignatureError),
    /// A journaled transaction cannot be decoded.
    #[error("{0}")]
    Journaled(#[source] alloy::eips::eip2718::Eip2718Error),
    /// A journaled transaction creates a contract, so it is no settlement.
    #[error("the stuck transaction creates a contract")]
    ContractCreation,
    /// The node refused the transaction: nothing was broadcast.
    #[error("node refused {tx_hash}: {source}")]
    NodeRefused {
        /// The refused transaction.
        tx_hash: String,
        /// The node's answer.
        source: TransportError,
    },
    /// A replacement transaction could not be handed to the node.
    #[error("broadcast: {0}")]
    Broadcast(#[source] TransportError),
}

impl SettleError {
    /// Whether settling again later may succeed: the journal or the chain could not be
    /// reached, or gas was too dear, rather than a configuration or a transaction at fault.
    pub fn is_retryable(&self) -> bool {
        match self {
            SettleError::Store(error) => error.is_retryable(),
            SettleError::FeeEstimate(error)
            | SettleError::SignerNonce(error)
            | SettleError::Broadcast(error) => error.is_transport_error(),
            SettleError::BatchAbandoned
            | SettleError::FeeAboveCap { .. }
            | SettleError::ReplacementAboveCap { .. } => true,
            SettleError::RowVanished
            | SettleError::NoRpcEndpoint { .. }
            | SettleError::NoSigner
            | SettleError::SignerGone { .. }
            | SettleError::NoJournaledSigner
            | SettleError::Signing(_)
            | SettleError::Signature(_)
            | SettleError::Journaled(_)
            | SettleError::ContractCreation
            | SettleError::NodeRefused { .. } => false,
        }
    }

    /// The message, with any URL (an RPC error's, which may carry an API key) redacted.
    pub fn redacted(&self) -> String {
        coffer_core::redact::redact_urls(&self.to_string()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use coffer_store::SettlementKey;
    use serde_json::json;

    use super::*;
    use crate::sample_payments::checked_payment;

    fn row(status: SettlementStatus, tx_hash: Option<&str>, reason: Option<&str>) -> SettlementRow {
        SettlementRow {
            id: 1,
            key: SettlementKey {
                chain_id: 84_532,
                token: "0xtoken".to_owned(),
                payer: "0xpayer".to_owned(),
                auth_nonce: "0x07".to_owned(),
            },
            pay_to: "0xpayee".to_owned(),
            value: "10000".to_owned(),
            network: "eip155:84532".to_owned(),
            terms_hash: None,
            order_id: None,
            status,
            signer: None,
            signer_nonce: None,
            tx_hash: tx_hash.map(str::to_owned),
            raw_tx: None,
            error_reason: reason.map(str::to_owned),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    /// The `/settle` reply to a sample request, as JSON.
    fn reply(outcome: SettleOutcome) -> serde_json::Value {
        let (_, request) = checked_payment();
        let mut reply = serde_json::to_value(outcome.response(&request)).unwrap();
        assert_eq!(reply["payer"], request.payer());
        assert_eq!(reply["network"], "eip155:84532");
        let object = reply.as_object_mut().unwrap();
        object.remove("payer");
        object.remove("network");
        reply
    }

    #[test]
    fn each_journal_status_is_the_outcome_it_stands_for() {
        use SettlementStatus::{Broadcast, Failed, Pending, Succeeded};
        let outcome = |status, tx, reason| SettleOutcome::from_row(row(status, tx, reason));
        assert!(matches!(
            outcome(Succeeded, Some("0xaa"), None),
            SettleOutcome::Settled { transaction } if transaction == "0xaa"
        ));
        assert!(matches!(
            outcome(Broadcast, Some("0xaa"), None),
            SettleOutcome::Pending { transaction: Some(transaction) } if transaction == "0xaa"
        ));
        assert!(matches!(
            outcome(Pending, None, None),
            SettleOutcome::Pending { transaction: None }
        ));
        assert!(matches!(
            outcome(Failed, Some("0xaa"), Some("reverted")),
            SettleOutcome::Failed(Failure::Recorded { reason, transaction: Some(transaction) })
                if reason == "reverted" && transaction == "0xaa"
        ));
        assert!(matches!(
            outcome(Failed, None, None),
            SettleOutcome::Failed(Failure::Recorded { reason, transaction: None })
                if reason == TRANSACTION_FAILED
        ));
    }

    #[test]
    fn each_outcome_answers_the_settle_reply_clients_know() {
        assert_eq!(
            reply(SettleOutcome::Settled {
                transaction: "0xaa".to_owned()
            }),
            json!({"success": true, "transaction": "0xaa"})
        );
        assert_eq!(
            reply(SettleOutcome::Pending {
                transaction: Some("0xaa".to_owned())
            }),
            json!({"success": false, "errorReason": SETTLEMENT_PENDING, "transaction": "0xaa"})
        );
        assert_eq!(
            reply(SettleOutcome::Pending { transaction: None }),
            json!({"success": false, "errorReason": SETTLEMENT_PENDING, "transaction": ""})
        );
        assert_eq!(
            reply(SettleOutcome::Rejected(Rejection {
                reason: Reason::NonceUsed,
                message: "used".to_owned()
            })),
            json!({"success": false, "errorReason": Reason::NonceUsed.as_str(2),
                "errorMessage": "used", "transaction": ""})
        );
        assert_eq!(
            reply(SettleOutcome::Failed(Failure::Recorded {
                reason: TRANSACTION_FAILED.to_owned(),
                transaction: Some("0xaa".to_owned())
            })),
            json!({"success": false, "errorReason": TRANSACTION_FAILED, "transaction": "0xaa"})
        );
    }

    #[test]
    fn a_chain_that_could_not_be_asked_is_the_settlements_failure_not_the_payments() {
        let outcome = SettleOutcome::rejected(Rejection {
            reason: Reason::ChainUnavailable,
            message: "retry".to_owned(),
        });
        assert!(
            matches!(&outcome, SettleOutcome::Failed(Failure::ChainUnavailable { message }) if message == "retry"),
            "{outcome:?}"
        );
        assert_eq!(
            reply(outcome),
            json!({"success": false, "errorReason": UNEXPECTED_SETTLE_ERROR,
                "errorMessage": "retry", "transaction": ""})
        );
        let refused = Rejection {
            reason: Reason::Signature,
            message: "no".to_owned(),
        };
        assert!(matches!(
            SettleOutcome::rejected(refused.clone()),
            SettleOutcome::Rejected(rejection) if rejection == refused
        ));
    }

    #[test]
    fn a_settler_failure_answers_its_message_without_urls() {
        let error = SettleError::Store(StoreError::Corrupt {
            what: "settlement",
            detail: "from https://rpc.example/v2/SECRET".to_owned(),
        });
        let answered = reply(SettleOutcome::Failed(Failure::Error(error)));
        assert_eq!(answered["errorReason"], UNEXPECTED_SETTLE_ERROR);
        let message = answered["errorMessage"].as_str().unwrap();
        assert!(
            message.starts_with("corrupt settlement in the database: from https://rpc.example")
        );
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn errors_keep_their_words_and_say_whether_a_retry_may_help() {
        let store = StoreError::NotFound("settlement");
        assert_eq!(
            SettleError::Store(StoreError::NotFound("settlement")).to_string(),
            store.to_string()
        );
        for (error, text, retryable) in [
            (SettleError::RowVanished, "journal row vanished", false),
            (
                SettleError::NoRpcEndpoint { chain_id: 1 },
                "no RPC endpoint",
                false,
            ),
            (
                SettleError::NoSigner,
                "no settlement signer is configured",
                false,
            ),
            (SettleError::BatchAbandoned, "the batch was abandoned", true),
            (
                SettleError::FeeAboveCap { fee: 2, cap: 1 },
                "gas price 2 above the cap 1",
                true,
            ),
            (
                SettleError::ReplacementAboveCap { fee: 2, cap: 1 },
                "the replacement's fee 2 would pass the cap 1",
                true,
            ),
            (SettleError::Store(store), "settlement not found", false),
        ] {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}
