//! Contract bindings.
//!
//! The test tokens are bound from their committed artifacts in `contracts/artifacts/`, so the
//! ABI the code uses is exactly the one compiled; `tests/artifacts.rs` recompiles the sources
//! with the pinned solc and fails when an artifact is stale.

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::sol;

sol! {
    /// The ERC-20 surface Coffer reads and watches.
    #[sol(rpc)]
    interface IERC20 {
        event Transfer(address indexed from, address indexed to, uint256 value);
        function balanceOf(address account) external view returns (uint256);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
        function name() external view returns (string);
        function transfer(address to, uint256 value) external returns (bool);
    }
}

sol!(
    /// ERC-20 with EIP-3009 authorizations, behaving like USDC FiatTokenV2_2.
    #[sol(rpc)]
    TestUsdc,
    "../../contracts/artifacts/TestUsdc.json"
);

sol!(
    /// Plain 18-decimal ERC-20 without EIP-3009, like USDT on BSC.
    #[sol(rpc)]
    TestUsdt,
    "../../contracts/artifacts/TestUsdt.json"
);

sol!(
    /// A minimal ERC-1271 contract wallet for tests.
    #[sol(rpc)]
    TestSmartWallet,
    "../../contracts/artifacts/TestSmartWallet.json"
);
