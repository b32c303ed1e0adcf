//! Coffer's domain model, free of IO (but for reading the time).
//!
//! Everything here is pure data and pure functions so that every other crate — the store, the
//! EVM layer, the HTTP adapters — agrees on one meaning for money and networks:
//!
//! - [`amount`]: [`Amount`], integer base units in a `U256`, parsed from and printed as decimal
//!   strings without ever rounding.
//! - [`registry`]: the built-in [`ChainRegistry`] of EVM networks and their stablecoins, with
//!   every name the API families use for a network (x402 v1 name, CAIP-2, OKX `chainIndex`,
//!   GatePay chain code, CryptoPay slug), and the overrides a configuration may apply.
//! - [`ids`]: identifiers such as [`MerchantId`], built by fallible constructors.
//! - [`redact`]: URLs made safe to show (RPC URLs carry API keys), alone or inside error text.
//! - [`clock`]: the one clock (unix milliseconds), and a manual one for tests.
//! - [`crash`]: named crash points, compiled in only for tests.

pub mod amount;
pub mod clock;
pub mod crash;
pub mod ids;
pub mod order;
pub mod redact;
pub mod registry;

pub use amount::{Amount, AmountError};
pub use ids::{IdError, MerchantId};
pub use order::{
    Evaluation, OrderStatus, OrderTerms, PaymentFacts, PaymentSubStatus, evaluate, evaluate_sale,
};
pub use registry::{
    Asset, AssetOverride, Chain, ChainOverride, ChainRegistry, Eip712Domain, NetworkNames,
    RegistryError, TransferMethod,
};

/// Ethereum-style 20-byte address, re-exported so dependants share one type.
pub use alloy_primitives::Address;
/// Unsigned 256-bit integer, the representation of every on-chain amount.
pub use alloy_primitives::U256;
