//! Why a payment is invalid, in each protocol version's words.
//!
//! Version 2 uses the TypeScript reference facilitator's strings; version 1 keeps the legacy
//! names its clients know. Clients treat them as opaque text, but merchants read them.

/// A reason a payment failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The scheme is not `exact`.
    Scheme,
    /// The requirements lack the EIP-712 `extra.name` / `extra.version`.
    MissingEip712Domain,
    /// The network is unknown or differs between payload and requirements.
    Network,
    /// The asset is not one Coffer settles on that network.
    Asset,
    /// The signature does not recover to `from` (or the contract wallet rejects it).
    Signature,
    /// `authorization.to` is not the requirements' `payTo`.
    Recipient,
    /// `validBefore` is too close or past.
    ValidBefore,
    /// `validAfter` is in the future.
    ValidAfter,
    /// `authorization.value` differs from the amount asked.
    Value,
    /// The authorization's nonce was used or cancelled.
    NonceUsed,
    /// The payer's balance is below the value.
    InsufficientBalance,
    /// The token's name differs from `extra.name`.
    TokenName,
    /// The token's version differs from `extra.version`.
    TokenVersion,
    /// The token has no EIP-3009.
    Eip3009NotSupported,
    /// The payer is a smart wallet that is not deployed: either the signature carries no
    /// ERC-6492 deployment, or it does and settlement needs the wallet on chain first.
    UndeployedSmartWallet,
    /// The simulated transfer reverted for another reason.
    SimulationFailed,
    /// The payload is malformed (bad hex, numbers, addresses).
    Payload,
    /// The chain could not be asked (its RPC endpoint is unreachable, failing or slow): nothing
    /// was decided about the payment, and asking again later may succeed.
    ChainUnavailable,
}

impl Reason {
    /// The string for a protocol version (1 or 2).
    pub fn as_str(self, version: u8) -> &'static str {
        if version == 1 {
            return match self {
                Reason::Scheme => "invalid_scheme",
                Reason::MissingEip712Domain => "invalid_payment_requirements",
                Reason::Network => "invalid_network",
                Reason::Asset => "invalid_payment_requirements",
                Reason::Signature => "invalid_exact_evm_payload_signature",
                Reason::Recipient => "invalid_exact_evm_payload_recipient_mismatch",
                Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
                Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
                Reason::Value => "invalid_exact_evm_payload_authorization_value",
                Reason::NonceUsed => "invalid_transaction_state",
                Reason::InsufficientBalance => "insufficient_funds",
                Reason::TokenName | Reason::TokenVersion => "invalid_payment_requirements",
                Reason::Eip3009NotSupported => "invalid_payment_requirements",
                Reason::UndeployedSmartWallet => {
                    "invalid_exact_evm_payload_undeployed_smart_wallet"
                }
                Reason::SimulationFailed => "invalid_transaction_state",
                Reason::Payload => "invalid_payload",
                Reason::ChainUnavailable => "unexpected_verify_error",
            };
        }
        match self {
            Reason::Scheme => "invalid_exact_evm_scheme",
            Reason::MissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            Reason::Network => "invalid_exact_evm_network_mismatch",
            Reason::Asset => "invalid_exact_evm_asset_not_supported",
            Reason::Signature => "invalid_exact_evm_signature",
            Reason::Recipient => "invalid_exact_evm_recipient_mismatch",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::Value => "invalid_exact_evm_authorization_value",
            Reason::NonceUsed => "invalid_exact_evm_nonce_already_used",
            Reason::InsufficientBalance => "invalid_exact_evm_insufficient_balance",
            Reason::TokenName => "invalid_exact_evm_token_name_mismatch",
            Reason::TokenVersion => "invalid_exact_evm_token_version_mismatch",
            Reason::Eip3009NotSupported => "invalid_exact_evm_eip3009_not_supported",
            Reason::UndeployedSmartWallet => "invalid_exact_evm_payload_undeployed_smart_wallet",
            Reason::SimulationFailed => "invalid_exact_evm_transaction_simulation_failed",
            Reason::Payload => "invalid_exact_evm_payload",
            Reason::ChainUnavailable => "unexpected_verify_error",
        }
    }
}
