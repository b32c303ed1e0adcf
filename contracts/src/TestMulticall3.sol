// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title TestMulticall3
/// @notice The `aggregate3` entry point of Multicall3, with the same ABI, for local chains.
/// Public chains have Multicall3 at 0xcA11bde05977b3631167028862bE2a173976CA11; Coffer's
/// development chains get this contract's runtime code at that address, so settlement
/// batching runs the same calls locally as in production.
contract TestMulticall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Calls each target in order. A call that reverts makes the whole batch revert
    /// unless its `allowFailure` is set; then its result records the failure and the other
    /// calls stand.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; i++) {
            Call3 calldata call = calls[i];
            (bool success, bytes memory data) = call.target.call(call.callData);
            if (!success && !call.allowFailure) {
                revert("Multicall3: call failed");
            }
            returnData[i] = Result(success, data);
        }
    }
}
