// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @notice Test-only hostile account. It relays calls to a target (so it can be a requestor
 * or a provider of the escrow) and, when it receives native currency, tries to call the
 * target again with `reentryCall`, recording whether that succeeded. It can also refuse
 * payments outright.
 */
contract ReentrantReceiver {
    address public immutable target;
    bytes public reentryCall;
    bool public reentrySucceeded;
    bytes public reentryRevertData;
    uint256 public attempts;
    bool public rejectPayments;

    constructor(address target_) {
        target = target_;
    }

    function setReentryCall(bytes calldata data) external {
        reentryCall = data;
    }

    function setRejectPayments(bool reject) external {
        rejectPayments = reject;
    }

    /// @notice Calls the target with `data` and this contract as `msg.sender`; bubbles reverts.
    function relay(bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        if (rejectPayments) revert("payments rejected");
        if (reentryCall.length == 0) return;
        attempts += 1;
        (bool ok, bytes memory ret) = target.call(reentryCall);
        reentrySucceeded = reentrySucceeded || ok;
        reentryRevertData = ret;
    }
}
