//! x402 for Coffer: the HTTP 402 payment protocol's wire formats and the facilitator that
//! verifies EIP-3009 authorizations.
//!
//! - [`wire`]: the Coinbase reference wire format, version 1 (network names such as
//!   `base-sepolia`, `maxAmountRequired`) and version 2 (CAIP-2 networks, `amount`, the
//!   `accepted` echo), for `/verify`, `/settle` and `/supported`.
//! - [`facilitator`]: [`facilitator::Facilitator::verify`] checks a payment in the reference
//!   order — scheme, EIP-712 domain, network, signature, recipient, validity window, exact
//!   value — and then proves nonce and balance with one simulation of
//!   `transferWithAuthorization`, diagnosing a failure with precise reasons. Only assets in the
//!   chain registry are accepted, so Coffer never calls an arbitrary contract.
//! - [`settlement`]: [`settlement::Settler::settle`] settles exactly once: the authorization
//!   is claimed in the journal by `(chain, token, payer, nonce)`, the signed transaction is
//!   journaled before it is broadcast with a signer nonce Coffer assigns itself, concurrent or
//!   repeated calls share that one transaction, a receipt wait that runs out answers
//!   `settlement_pending` with the hash, and [`settlement::Settler::reconcile`] resolves
//!   pending ones, also after a restart. [`settlement::Settler::settle_outcome`] tells how a
//!   settlement ended as a [`settlement::SettleOutcome`]; failures of the settler itself are
//!   [`settlement::SettleError`]s that say whether trying again may help.
//! - [`headers`]: the x402 HTTP headers (`PAYMENT-REQUIRED`, `PAYMENT-SIGNATURE`,
//!   `PAYMENT-RESPONSE`, and version 1's `X-PAYMENT`, `X-PAYMENT-RESPONSE`) and their one
//!   codec, base64 of JSON.
//! - [`reasons`]: the reason strings, in the TypeScript reference's set for v2 and the legacy
//!   names for v1.

pub mod client;
pub mod facilitator;
pub mod headers;
#[cfg(test)]
mod hostile_input;
pub mod reasons;
#[cfg(test)]
mod sample_payments;
pub mod settlement;
pub mod wire;
