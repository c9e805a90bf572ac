// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";

/**
 * @title ProviderRegistry
 * @notice Where providers publish what they rent out and at what price, and where requestors
 * find them. The external interface, its events, errors and their documentation are in
 * {IProviderRegistry}.
 */
contract ProviderRegistry is IProviderRegistry {
    /// @inheritdoc IProviderRegistry
    uint256 public constant MAX_ENDPOINT_LENGTH = 256;
    /// @inheritdoc IProviderRegistry
    uint256 public constant MAX_GPU_MODEL_LENGTH = 128;
    /// @inheritdoc IProviderRegistry
    uint256 public constant MAX_CAPABILITIES_LENGTH = 4096;
    /// @inheritdoc IProviderRegistry
    uint256 public constant MAX_PAGE_SIZE = 100;

    mapping(address provider => Offer) private _offers;
    /// @inheritdoc IProviderRegistry
    mapping(address provider => uint64) public updatedAt;
    /// @dev Active providers, in no particular order; `_position` is index + 1 (0 = inactive),
    /// so withdrawing is a swap with the last entry and a pop.
    address[] private _active;
    mapping(address provider => uint256) private _position;

    /// @inheritdoc IProviderRegistry
    function publish(Offer calldata offer) external {
        if (_position[msg.sender] != 0) revert OfferAlreadyActive(msg.sender);
        _validate(offer);
        _offers[msg.sender] = offer;
        updatedAt[msg.sender] = uint64(block.timestamp);
        _active.push(msg.sender);
        _position[msg.sender] = _active.length;
        emit OfferPublished(msg.sender, offer.endpoint);
    }

    /// @inheritdoc IProviderRegistry
    function update(Offer calldata offer) external {
        if (_position[msg.sender] == 0) revert NoActiveOffer(msg.sender);
        _validate(offer);
        _offers[msg.sender] = offer;
        updatedAt[msg.sender] = uint64(block.timestamp);
        emit OfferUpdated(msg.sender, offer.endpoint);
    }

    /// @inheritdoc IProviderRegistry
    function withdraw() external {
        uint256 position = _position[msg.sender];
        if (position == 0) revert NoActiveOffer(msg.sender);
        address last = _active[_active.length - 1];
        _active[position - 1] = last;
        _position[last] = position;
        _active.pop();
        delete _position[msg.sender];
        delete _offers[msg.sender];
        delete updatedAt[msg.sender];
        emit OfferWithdrawn(msg.sender);
    }

    /// @inheritdoc IProviderRegistry
    function isActive(address provider) external view returns (bool) {
        return _position[provider] != 0;
    }

    /// @inheritdoc IProviderRegistry
    function offerOf(address provider) external view returns (Offer memory) {
        if (_position[provider] == 0) revert NoActiveOffer(provider);
        return _offers[provider];
    }

    /// @inheritdoc IProviderRegistry
    function activeCount() external view returns (uint256) {
        return _active.length;
    }

    /// @inheritdoc IProviderRegistry
    function activeOffers(uint256 offset, uint256 limit)
        external
        view
        returns (address[] memory providers, Offer[] memory offers)
    {
        if (limit > MAX_PAGE_SIZE) revert PageSizeTooLarge(limit, MAX_PAGE_SIZE);
        uint256 total = _active.length;
        uint256 end = offset >= total ? offset : (offset + limit > total ? total : offset + limit);
        uint256 n = end > offset ? end - offset : 0;
        providers = new address[](n);
        offers = new Offer[](n);
        for (uint256 i; i < n; ++i) {
            address provider = _active[offset + i];
            providers[i] = provider;
            offers[i] = _offers[provider];
        }
    }

    function _validate(Offer calldata offer) private pure {
        uint256 endpointLength = bytes(offer.endpoint).length;
        if (endpointLength == 0) revert EmptyEndpoint();
        if (endpointLength > MAX_ENDPOINT_LENGTH) {
            revert FieldTooLong("endpoint", endpointLength, MAX_ENDPOINT_LENGTH);
        }
        if (bytes(offer.gpuModel).length > MAX_GPU_MODEL_LENGTH) {
            revert FieldTooLong("gpuModel", bytes(offer.gpuModel).length, MAX_GPU_MODEL_LENGTH);
        }
        if (bytes(offer.capabilities).length > MAX_CAPABILITIES_LENGTH) {
            revert FieldTooLong("capabilities", bytes(offer.capabilities).length, MAX_CAPABILITIES_LENGTH);
        }
        if (offer.cpus == 0) revert NoCpus();
        if (offer.gpus > 0 && bytes(offer.gpuModel).length == 0) revert GpuModelMissing();
        if (offer.gpus == 0 && offer.pricePerGpuSecond != 0) revert GpuPriceWithoutGpus();
    }
}
