//! Signed sample payments for the unit tests: a facilitator that knows Base Sepolia (its RPC
//! never answers), and version-2 requests for EIP-3009 authorizations of its USDC.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolStruct;
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::contracts::TransferWithAuthorization;
use coffer_evm::testnet::usdc_domain;
use serde_json::json;

use crate::facilitator::{CheckedPayment, Facilitator};
use crate::wire::PaymentRequest;

/// Circle's USDC on Base Sepolia.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// Who the sample payments pay.
pub const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
/// The time the sample payments are valid at (unix seconds).
pub const NOW: u64 = 1_800_000_000;

/// A facilitator for Base Sepolia whose RPC endpoint never answers.
pub fn facilitator() -> Facilitator {
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "base-sepolia".to_owned(),
        ChainOverride {
            rpc_urls: vec!["http://127.0.0.1:9".to_owned()],
            ..Default::default()
        },
    );
    registry.apply(&overrides).unwrap();
    Facilitator::new(Arc::new(registry), Arc::new(Vec::new()), Address::ZERO)
}

/// 0.01 USDC from `from` to [`PAY_TO`], valid ten minutes either side of [`NOW`].
pub fn authorization(from: Address) -> TransferWithAuthorization {
    TransferWithAuthorization {
        from,
        to: PAY_TO,
        value: U256::from(10_000u64),
        validAfter: U256::from(NOW - 600),
        validBefore: U256::from(NOW + 600),
        nonce: B256::repeat_byte(7),
    }
}

/// What the payer signs.
pub fn digest(auth: &TransferWithAuthorization) -> B256 {
    auth.eip712_signing_hash(&usdc_domain(84_532, USDC))
}

/// The version-2 request of `auth` with `signature`.
pub fn request(auth: &TransferWithAuthorization, signature: &[u8]) -> PaymentRequest {
    let requirements = json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000",
        "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"}});
    let body = json!({"x402Version": 2, "paymentRequirements": requirements,
        "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": {
            "signature": Bytes::copy_from_slice(signature).to_string(), "authorization": {
            "from": auth.from.to_checksum(None), "to": PAY_TO.to_checksum(None), "value": "10000",
            "validAfter": auth.validAfter.to_string(), "validBefore": auth.validBefore.to_string(),
            "nonce": format!("{:#x}", auth.nonce)}}}});
    PaymentRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

/// A request for `auth` signed by `payer`.
pub fn signed_request(
    payer: &PrivateKeySigner,
    auth: &TransferWithAuthorization,
) -> PaymentRequest {
    let signature = payer.sign_hash_sync(&digest(auth)).unwrap();
    request(auth, &signature.as_bytes())
}

/// A fresh payer's payment, checked at [`NOW`], and its request.
pub fn checked_payment() -> (CheckedPayment, PaymentRequest) {
    let payer = PrivateKeySigner::random();
    let request = signed_request(&payer, &authorization(payer.address()));
    let checked = facilitator().check(&request, NOW).unwrap();
    (checked, request)
}
