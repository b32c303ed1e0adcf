// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

interface IErc1271 {
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4);
}

/// @title Erc6492Check
/// @notice Coffer's counterfactual check of an EIP-3009 authorization signed by a smart wallet
/// that is not deployed yet (ERC-6492). It is never deployed: the facilitator runs its creation
/// code in one `eth_call` without a `to` address ("deployless"), so it needs no contract on the
/// chain and nothing it does is ever kept. The constructor
///   1. deploys the wallet with the signature's factory call, unless it has code already,
///   2. requires code at the payer's address afterwards,
///   3. asks the wallet (ERC-1271) whether the inner signature signs the EIP-712 digest,
///   4. runs the token's `transferWithAuthorization` with the inner signature,
/// and returns `abi.encode(uint256 outcome, bytes revertData)` as the call's output.
contract Erc6492Check {
    /// The wallet deployed, vouched for the signature and the transfer went through.
    uint256 internal constant VALID = 0;
    /// The factory call reverted.
    uint256 internal constant FACTORY_FAILED = 1;
    /// The factory call succeeded but left no code at the payer's address.
    uint256 internal constant NOT_DEPLOYED = 2;
    /// The wallet did not return the ERC-1271 magic value for the inner signature.
    uint256 internal constant SIGNATURE_REJECTED = 3;
    /// The token's `transferWithAuthorization` reverted (revert data attached).
    uint256 internal constant TRANSFER_FAILED = 4;

    bytes4 private constant ERC1271_MAGIC_VALUE = 0x1626ba7e;

    constructor(
        address wallet,
        address factory,
        bytes memory factoryCalldata,
        bytes32 digest,
        bytes memory innerSignature,
        address token,
        bytes memory transferCalldata
    ) {
        (uint256 outcome, bytes memory data) =
            _check(wallet, factory, factoryCalldata, digest, innerSignature, token, transferCalldata);
        bytes memory encoded = abi.encode(outcome, data);
        assembly ("memory-safe") {
            return(add(encoded, 0x20), mload(encoded))
        }
    }

    function _check(
        address wallet,
        address factory,
        bytes memory factoryCalldata,
        bytes32 digest,
        bytes memory innerSignature,
        address token,
        bytes memory transferCalldata
    ) private returns (uint256, bytes memory) {
        if (wallet.code.length == 0) {
            (bool deployed, bytes memory factoryRevert) = factory.call(factoryCalldata);
            if (!deployed) {
                return (FACTORY_FAILED, factoryRevert);
            }
            if (wallet.code.length == 0) {
                return (NOT_DEPLOYED, "");
            }
        }
        try IErc1271(wallet).isValidSignature(digest, innerSignature) returns (bytes4 magic) {
            if (magic != ERC1271_MAGIC_VALUE) {
                return (SIGNATURE_REJECTED, "");
            }
        } catch (bytes memory walletRevert) {
            return (SIGNATURE_REJECTED, walletRevert);
        }
        (bool transferred, bytes memory transferRevert) = token.call(transferCalldata);
        if (!transferred) {
            return (TRANSFER_FAILED, transferRevert);
        }
        return (VALID, "");
    }
}
