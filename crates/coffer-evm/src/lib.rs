//! Coffer's EVM layer, built on alloy.
//!
//! - [`contracts`]: Solidity bindings — the ERC-20 interface Coffer reads, and the test tokens
//!   in `contracts/` (an EIP-3009 token behaving like USDC, a plain 18-decimal ERC-20 like BSC
//!   USDT, and an ERC-1271 smart wallet) with their committed bytecode.
//! - [`hd`]: watch-only deposit addresses from a merchant's xpub (BIP-32).
//! - [`rpc`]: [`rpc::ChainRpc`], a chain's RPC endpoints with failover and a readiness probe.
//! - [`testnet`]: deployment of the test tokens, either as a fresh contract or at a canonical
//!   address (so that clients which trust only the public USDC address pay the local chain).
//! - [`anvil`]: starting and stopping a local anvil node for `coffer dev` and tests.
//!
//! Errors say whether a retry may help ([`EvmError::is_retryable`]).

pub mod anvil;
pub mod contracts;
pub mod hd;
pub mod rpc;
pub mod testnet;

/// A failure talking to a chain.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// Every RPC endpoint failed; the last error is kept.
    #[error("chain {chain}: no RPC endpoint answered: {last}")]
    Unreachable {
        /// The chain's key.
        chain: String,
        /// The last endpoint's error.
        last: String,
    },
    /// The RPC endpoint serves another chain than configured.
    #[error("chain {chain}: RPC endpoint {url} serves chain id {actual}, expected {expected}")]
    WrongChain {
        /// The chain's key.
        chain: String,
        /// The endpoint (without credentials).
        url: String,
        /// Configured chain id.
        expected: u64,
        /// Chain id the endpoint reported.
        actual: u64,
    },
    /// An RPC call failed.
    #[error("RPC error: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    /// A contract call reverted or could not be decoded.
    #[error("contract error: {0}")]
    Contract(#[from] alloy::contract::Error),
    /// A transaction was mined but reverted.
    #[error("transaction {0} reverted")]
    Reverted(alloy::primitives::TxHash),
    /// A receipt did not arrive in time.
    #[error("waiting for a receipt failed: {0}")]
    Receipt(#[from] alloy::providers::PendingTransactionError),
    /// A local process (anvil) could not be started or stopped.
    #[error("{what}: {detail}")]
    Process {
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// An RPC URL is not valid.
    #[error("invalid RPC URL {0:?}")]
    InvalidUrl(String),
    /// A canonical contract's committed bytecode is not the one public chains hold.
    #[error("{0}")]
    Artifact(String),
}

impl EvmError {
    /// Whether the same call may succeed later (network trouble, not a logic error).
    pub fn is_retryable(&self) -> bool {
        match self {
            EvmError::Unreachable { .. } | EvmError::Receipt(_) => true,
            EvmError::Rpc(error) => error.is_transport_error(),
            _ => false,
        }
    }
}
