// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/**
 * @title IProviderRegistry
 * @notice Where providers publish what they rent out and at what price, and where requestors
 * find them. One offer per provider address.
 *
 * Reputation is deliberately not stored here: anyone can compute it from the escrow's
 * `Paid` and `FaultReported` events, and nobody has to trust a number the provider wrote.
 */
interface IProviderRegistry {
    /**
     * @notice What a provider offers. Prices are per second of compute, in the smallest unit
     * of the native currency; `startFee` is charged once per agreement.
     * @param endpoint Where the provider agent listens (`host:port`); at most MAX_ENDPOINT_LENGTH bytes.
     * @param pricePerCpuSecond Price of one CPU for one second.
     * @param pricePerGpuSecond Price of one GPU for one second; zero when `gpus` is zero.
     * @param startFee Charged once per agreement.
     * @param cpus Number of CPUs; at least one.
     * @param gpus Number of GPUs.
     * @param gpuModel GPU model name; required when `gpus` > 0; at most MAX_GPU_MODEL_LENGTH bytes.
     * @param memoryBytes Memory available to the requestor's workers.
     * @param capabilities Free-form JSON object (e.g. `"token"`, `"sandbox"`); at most
     * MAX_CAPABILITIES_LENGTH bytes.
     */
    struct Offer {
        string endpoint;
        uint256 pricePerCpuSecond;
        uint256 pricePerGpuSecond;
        uint256 startFee;
        uint32 cpus;
        uint32 gpus;
        string gpuModel;
        uint64 memoryBytes;
        string capabilities;
    }

    // ------------------------------------------------------------------ events

    /**
     * @notice `provider` published its first (or, after a withdrawal, a new) offer.
     * @param provider The provider.
     * @param endpoint Where its agent listens.
     */
    event OfferPublished(address indexed provider, string endpoint);

    /**
     * @notice `provider` replaced its active offer.
     * @param provider The provider.
     * @param endpoint Where its agent listens now.
     */
    event OfferUpdated(address indexed provider, string endpoint);

    /**
     * @notice `provider` took its offer off the market.
     * @param provider The provider.
     */
    event OfferWithdrawn(address indexed provider);

    // ------------------------------------------------------------------ errors

    /**
     * @notice {publish} while the caller already has an active offer (use {update}).
     * @param provider The caller.
     */
    error OfferAlreadyActive(address provider);

    /**
     * @notice {update}, {withdraw} or {offerOf} for a provider without an active offer.
     * @param provider The provider.
     */
    error NoActiveOffer(address provider);

    /// @notice An offer with an empty endpoint.
    error EmptyEndpoint();

    /**
     * @notice An offer field above its size limit.
     * @param field The field's name (`endpoint`, `gpuModel` or `capabilities`).
     * @param length Its length in bytes.
     * @param max The most it may have.
     */
    error FieldTooLong(string field, uint256 length, uint256 max);

    /// @notice An offer with zero CPUs.
    error NoCpus();

    /// @notice An offer with GPUs that does not name the GPU model.
    error GpuModelMissing();

    /// @notice An offer without GPUs that sets a GPU price.
    error GpuPriceWithoutGpus();

    /**
     * @notice {activeOffers} with a page size above MAX_PAGE_SIZE.
     * @param limit The page size asked for.
     * @param max MAX_PAGE_SIZE.
     */
    error PageSizeTooLarge(uint256 limit, uint256 max);

    // ------------------------------------------------------------------ providers

    /**
     * @notice Publishes the caller's offer. Reverts if the caller already has an active one
     * (use {update}). Emits {OfferPublished}.
     * @param offer The offer.
     */
    function publish(Offer calldata offer) external;

    /**
     * @notice Replaces the caller's active offer. Emits {OfferUpdated}.
     * @param offer The new offer.
     */
    function update(Offer calldata offer) external;

    /// @notice Removes the caller's offer from the market. Emits {OfferWithdrawn}.
    function withdraw() external;

    // ------------------------------------------------------------------ views

    /**
     * @notice Largest endpoint, in bytes.
     * @return The limit.
     */
    function MAX_ENDPOINT_LENGTH() external view returns (uint256);

    /**
     * @notice Largest GPU model name, in bytes.
     * @return The limit.
     */
    function MAX_GPU_MODEL_LENGTH() external view returns (uint256);

    /**
     * @notice Largest capabilities JSON, in bytes.
     * @return The limit.
     */
    function MAX_CAPABILITIES_LENGTH() external view returns (uint256);

    /**
     * @notice Most offers {activeOffers} returns at once.
     * @return The limit.
     */
    function MAX_PAGE_SIZE() external view returns (uint256);

    /**
     * @notice When `provider` last published or updated its offer.
     * @param provider The provider.
     * @return Unix time of the block, zero without an active offer.
     */
    function updatedAt(address provider) external view returns (uint64);

    /**
     * @notice Whether `provider` has an active offer.
     * @param provider The provider.
     * @return True while its offer is on the market.
     */
    function isActive(address provider) external view returns (bool);

    /**
     * @notice The active offer of `provider`; reverts with {NoActiveOffer} if there is none.
     * @param provider The provider.
     * @return The offer as last published or updated.
     */
    function offerOf(address provider) external view returns (Offer memory);

    /**
     * @notice Number of active offers.
     * @return The count.
     */
    function activeCount() external view returns (uint256);

    /**
     * @notice A page of active offers: at most `limit` (<= MAX_PAGE_SIZE) starting at `offset`.
     * @dev The order changes when offers are withdrawn; a client reading many pages while the
     * market moves may see an offer twice or miss one, and should de-duplicate by address.
     * @param offset Index of the first active offer to return.
     * @param limit Most offers to return; at most MAX_PAGE_SIZE.
     * @return providers The providers of the page, in the same order as `offers`.
     * @return offers Their offers.
     */
    function activeOffers(uint256 offset, uint256 limit)
        external
        view
        returns (address[] memory providers, Offer[] memory offers);
}
