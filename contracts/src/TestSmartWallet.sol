// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title TestSmartWallet
/// @notice Minimal ERC-1271 contract wallet for tests. A signature is valid
/// for a hash iff it is a 65-byte, low-s ECDSA signature by the owner over that
/// exact hash (no message prefix is applied). The owner can make the wallet
/// call any contract.
contract TestSmartWallet {
    bytes4 private constant ERC1271_MAGIC_VALUE = 0x1626ba7e;
    bytes4 private constant ERC1271_INVALID = 0xffffffff;
    uint256 private constant SECP256K1_HALF_N =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public owner;

    constructor(address walletOwner) {
        require(walletOwner != address(0), "TestSmartWallet: owner is the zero address");
        owner = walletOwner;
    }

    receive() external payable {}

    /// @notice ERC-1271: returns 0x1626ba7e iff `signature` is the owner's
    /// signature of `hash`, 0xffffffff otherwise. Never reverts on bad input.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return ERC1271_INVALID;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > SECP256K1_HALF_N || (v != 27 && v != 28)) {
            return ERC1271_INVALID;
        }
        address recovered = ecrecover(hash, v, r, s);
        if (recovered == address(0) || recovered != owner) {
            return ERC1271_INVALID;
        }
        return ERC1271_MAGIC_VALUE;
    }

    /// @notice Owner-only arbitrary call; forwards any attached value and
    /// bubbles up the callee's revert data.
    function execute(address target, bytes calldata data) external payable returns (bytes memory) {
        require(msg.sender == owner, "TestSmartWallet: caller is not the owner");
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }
}

/// @title TestSmartWalletFactory
/// @notice CREATE2 factory of TestSmartWallets, for counterfactual (ERC-6492)
/// tests: a wallet's address is known, can hold tokens and can sign before it
/// is deployed. Deploying an existing wallet again returns it unchanged.
contract TestSmartWalletFactory {
    event WalletCreated(address indexed wallet, address indexed owner, bytes32 salt);

    /// @notice Deploys the wallet of `walletOwner` and `salt` unless it exists; returns it.
    function createWallet(address walletOwner, bytes32 salt) external returns (address wallet) {
        wallet = walletAddress(walletOwner, salt);
        if (wallet.code.length == 0) {
            wallet = address(new TestSmartWallet{salt: salt}(walletOwner));
            emit WalletCreated(wallet, walletOwner, salt);
        }
    }

    /// @notice The address `createWallet(walletOwner, salt)` deploys to.
    function walletAddress(address walletOwner, bytes32 salt) public view returns (address) {
        bytes32 initCodeHash = keccak256(abi.encodePacked(type(TestSmartWallet).creationCode, abi.encode(walletOwner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initCodeHash)))));
    }
}
