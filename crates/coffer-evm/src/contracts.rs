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

sol! {
    /// Multicall3's batching entry point (the canonical ABI; struct names do not change it).
    #[sol(rpc)]
    interface IMulticall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }
        struct CallResult {
            bool success;
            bytes returnData;
        }
        function aggregate3(Call3[] calldata calls) external payable returns (CallResult[] memory returnData);
    }
}

/// Where Multicall3 lives on every public EVM chain Coffer supports (and, installed by
/// [`crate::testnet::install_multicall3`], on local chains).
pub const MULTICALL3: alloy::primitives::Address =
    alloy::primitives::address!("0xcA11bde05977b3631167028862bE2a173976CA11");

sol! {
    /// The EIP-3009 surface of USDC-like tokens (FiatTokenV2_2), as the facilitator uses it.
    #[sol(rpc)]
    interface IEip3009 {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }

    /// The EIP-712 message an EIP-3009 transfer authorization signs.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}
