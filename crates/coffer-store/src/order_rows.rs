//! Row types for payment orders, payments, chain progress, events and webhook deliveries.
//!
//! Times in these tables are unix milliseconds (`*_ms`), so that both backends compare them
//! the same way in SQL; amounts are [`Amount`]s stored as canonical base-unit text.

use coffer_core::{Amount, MerchantId, OrderStatus, PaymentSubStatus};

/// A merchant's extended public key for deposit addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRow {
    /// Owner.
    pub merchant_id: MerchantId,
    /// Chain id, or 0 for every EVM chain.
    pub chain_id: u64,
    /// The extended public key (`xpub…`).
    pub xpub: String,
    /// The next unused child index.
    pub next_index: u32,
}

/// A payment order to insert.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Public id (`ORD-…`).
    pub order_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The blockchain slug shown on the wire.
    pub blockchain: String,
    /// Token symbol shown on the wire.
    pub currency: String,
    /// Token contract, `None` for the native coin (lower-case hex).
    pub asset_address: Option<String>,
    /// Token decimals.
    pub decimals: u8,
    /// Amount asked.
    pub amount: Amount,
    /// Accepted shortfall.
    pub underpayment_tolerance: Amount,
    /// Deposit address (checksummed).
    pub receiving_address: String,
    /// BIP-32 child index of the deposit address.
    pub derivation_index: u32,
    /// The merchant's order info (a JSON string).
    pub order_info: String,
    /// The merchant's nonce, unique per merchant.
    pub nonce: i64,
    /// Per-order webhook endpoint.
    pub webhook_url: Option<String>,
    /// Where to send the customer afterwards.
    pub redirect_url: Option<String>,
    /// `Idempotency-Key` of the creating request.
    pub idempotency_key: Option<String>,
    /// Hash of the creating request's body.
    pub request_hash: Option<String>,
    /// Creation time.
    pub created_at_ms: i64,
    /// End of the payment window.
    pub expires_at_ms: i64,
    /// End of late-payment monitoring.
    pub monitor_until_ms: i64,
    /// The `payment_order.created` event.
    pub event: NewEvent,
    /// The name another API knows the order by, written in the order's transaction: when it
    /// is taken, no order is written.
    pub external_reference: Option<ExternalReference>,
}

/// The name another API family gives a payment order, stored beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalReference {
    /// GatePay's `prepayId` and the merchant's `merchantTradeNo`, with what the creating
    /// request said.
    GatePay(crate::checkout::GatePayOrderRow),
}

/// A stored payment order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Sequential number (the seed's integer `id`).
    pub id: i64,
    /// Public id.
    pub order_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// Chain id.
    pub chain_id: u64,
    /// Blockchain slug.
    pub blockchain: String,
    /// Token symbol.
    pub currency: String,
    /// Token contract (lower-case hex), `None` for native.
    pub asset_address: Option<String>,
    /// Token decimals.
    pub decimals: u8,
    /// Amount asked.
    pub amount: Amount,
    /// Accepted shortfall.
    pub underpayment_tolerance: Amount,
    /// Sum of counted payments.
    pub amount_paid: Amount,
    /// Status.
    pub status: OrderStatus,
    /// Sub-status.
    pub sub_status: PaymentSubStatus,
    /// Deposit address (checksummed).
    pub receiving_address: String,
    /// BIP-32 child index.
    pub derivation_index: u32,
    /// Order info.
    pub order_info: String,
    /// Nonce.
    pub nonce: i64,
    /// Per-order webhook endpoint.
    pub webhook_url: Option<String>,
    /// Redirect URL.
    pub redirect_url: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Hash of the creating request.
    pub request_hash: Option<String>,
    /// Closed by a person.
    pub closed: bool,
    /// Creation time.
    pub created_at_ms: i64,
    /// End of the payment window.
    pub expires_at_ms: i64,
    /// End of late-payment monitoring.
    pub monitor_until_ms: i64,
    /// When it reached `confirmed`.
    pub confirmed_at_ms: Option<i64>,
    /// Last change.
    pub updated_at_ms: i64,
    /// Optimistic-concurrency version, bumped by every update.
    pub version: i64,
    /// An x402 sale or Pelago order: paid once, through x402, to a payTo shared by many orders.
    /// It is never watched by address; its status follows its payment's confirmations.
    pub sold: bool,
}

/// A transfer to a deposit address, as detected on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// Chain id.
    pub chain_id: u64,
    /// Transaction hash (0x, lower case).
    pub tx_hash: String,
    /// Log index of the `Transfer` event, or -1 for a native-coin transfer.
    pub log_index: i64,
    /// The order paid.
    pub order_id: String,
    /// Token contract, `None` for native.
    pub asset_address: Option<String>,
    /// Who sent it.
    pub sender: String,
    /// The deposit address.
    pub recipient: String,
    /// Amount in base units.
    pub amount: Amount,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: String,
    /// Block timestamp (unix seconds).
    pub block_time: i64,
    /// When Coffer saw it.
    pub detected_at_ms: i64,
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// The payment.
    pub payment: NewPayment,
    /// Whether its block left the canonical chain.
    pub orphaned: bool,
}

/// A payment a reorg took off the chain: its key and the block it was recorded in. It is
/// orphaned only while its row still names that block, so a row recorded again elsewhere
/// meanwhile is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedPayment {
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index (`-1` for a native-coin transfer).
    pub log_index: i64,
    /// The dropped block's hash.
    pub block_hash: String,
}

impl OrphanedPayment {
    /// The key and block of a stored payment.
    pub fn of(payment: &NewPayment) -> Self {
        OrphanedPayment {
            tx_hash: payment.tx_hash.clone(),
            log_index: payment.log_index,
            block_hash: payment.block_hash.clone(),
        }
    }
}

/// An event to write together with a state change (outbox), with its webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Public id (`evt_…`).
    pub event_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// The order concerned.
    pub order_id: Option<String>,
    /// Type, e.g. `payment_order.confirmed`.
    pub event_type: String,
    /// JSON payload sent to the merchant.
    pub payload: String,
    /// The format the payload is written in, which decides how its webhook is signed.
    pub format: WebhookFormat,
    /// Creation time.
    pub created_at_ms: i64,
    /// The delivery to create, when the merchant has a webhook endpoint.
    pub delivery: Option<NewDelivery>,
}

/// The format of an event's payload, chosen when the event is written from where its order
/// came from: it decides how the webhook is signed and what acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// Coffer's own events, signed with the merchant's webhook secret
    /// (`Coffer-Signature`); any 2xx acknowledges.
    #[default]
    Coffer,
    /// GatePay's merchant notifications, signed with the order's GatePay credential
    /// (`X-GatePay-*`); only `{"returnCode":"SUCCESS"}` acknowledges.
    GatePay,
}

impl WebhookFormat {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Coffer => "coffer",
            WebhookFormat::GatePay => "gatepay",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "coffer" => Some(WebhookFormat::Coffer),
            "gatepay" => Some(WebhookFormat::GatePay),
            _ => None,
        }
    }
}

/// A webhook delivery to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Public id (`whd_…`).
    pub delivery_id: String,
    /// Endpoint.
    pub url: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Sequence number.
    pub id: i64,
    /// Public id.
    pub event_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// The order concerned.
    pub order_id: Option<String>,
    /// Type.
    pub event_type: String,
    /// JSON payload.
    pub payload: String,
    /// The payload's format.
    pub format: WebhookFormat,
    /// Creation time.
    pub created_at_ms: i64,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retries ran out.
    Failed,
}

impl DeliveryStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A stored webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Public id.
    pub delivery_id: String,
    /// The event delivered.
    pub event_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// Endpoint.
    pub url: String,
    /// State.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at_ms: i64,
    /// Last HTTP status.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at_ms: i64,
    /// When it succeeded.
    pub delivered_at_ms: Option<i64>,
}

/// One attempt in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// The delivery.
    pub delivery_id: String,
    /// When.
    pub attempted_at_ms: i64,
    /// HTTP status, if the endpoint answered.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// How often one event may be sent again on request (see [`crate::Ledger::schedule_redelivery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeliveryLimit {
    /// Redeliveries of one event allowed within a window.
    pub per_window: u32,
    /// The window, in milliseconds.
    pub window_ms: i64,
}

/// What a request to send an event again came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// A new delivery, due now.
    Scheduled(DeliveryRow),
    /// A delivery of the event is waiting for its first attempt, due, or being attempted right
    /// now; nothing was scheduled.
    InFlight,
    /// The window's redeliveries are used up; nothing was scheduled. The next one is possible
    /// at `retry_at_ms`.
    Limited {
        /// When the oldest redelivery in the window leaves it.
        retry_at_ms: i64,
    },
}

/// A claimed delivery with what it takes to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub delivery: DeliveryRow,
    /// The event's type.
    pub event_type: String,
    /// The event's payload.
    pub payload: String,
    /// The payload's format.
    pub format: WebhookFormat,
    /// The event's creation time (retries stop 3 days after it).
    pub event_created_at_ms: i64,
    /// The merchant's webhook secret.
    pub webhook_secret: String,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The attempt, for the log.
    pub attempt: AttemptRow,
    /// The delivery's new state.
    pub status: DeliveryStatus,
    /// When to try again (for `Pending`).
    pub next_attempt_at_ms: i64,
}

/// An order's new state, applied only if its version still matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    /// The order.
    pub order_id: String,
    /// The version read before computing this update.
    pub expected_version: i64,
    /// New status.
    pub status: OrderStatus,
    /// New sub-status.
    pub sub_status: PaymentSubStatus,
    /// New amount paid.
    pub amount_paid: Amount,
    /// Confirmation time (callers keep the first one while the order stays `confirmed`).
    pub confirmed_at_ms: Option<i64>,
    /// Close the order (an operator's decision).
    pub closed: bool,
    /// Time of the change.
    pub updated_at_ms: i64,
    /// Events describing the change.
    pub events: Vec<NewEvent>,
}

/// A block the watcher has processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBlock {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: String,
    /// Parent hash.
    pub parent_hash: String,
}

/// Everything one watcher step changes, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStep {
    /// Chain id.
    pub chain_id: u64,
    /// On a reorg: the common ancestor's number; stored blocks above it are forgotten before
    /// anything else is applied. Payments are not orphaned by height: only `orphans` are.
    pub rewind_to: Option<u64>,
    /// On a reorg: the payments whose block left the chain, orphaned before anything else is
    /// applied. Nothing else is orphaned: a payment recorded meanwhile (an x402 sale settling
    /// beside the watcher, say) stays as it is.
    pub orphans: Vec<OrphanedPayment>,
    /// Newly processed blocks (recent ones, for reorg detection).
    pub blocks: Vec<ChainBlock>,
    /// The last processed block: the new cursor.
    pub cursor: ChainBlock,
    /// Payments found (inserted, or restored if seen before and orphaned).
    pub payments: Vec<NewPayment>,
    /// Orders whose state changed.
    pub order_updates: Vec<OrderUpdate>,
    /// Stored blocks older than `cursor.number - keep_blocks` are pruned.
    pub keep_blocks: u64,
    /// Time of the step.
    pub now_ms: i64,
}

/// How a list of orders is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderOrdering {
    /// Newest first (default).
    #[default]
    NewestFirst,
    /// Oldest first.
    OldestFirst,
    /// Smallest amount first.
    AmountAscending,
    /// Largest amount first.
    AmountDescending,
    /// By status name.
    StatusAscending,
    /// By status name, reversed.
    StatusDescending,
}

/// Which orders to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuery {
    /// Owner.
    pub merchant_id: MerchantId,
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Only this chain.
    pub chain_id: Option<u64>,
    /// Only this currency (upper case).
    pub currency: Option<String>,
    /// Sort order.
    pub ordering: OrderOrdering,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return.
    pub limit: u64,
}

/// The sort key for an amount: the human value scaled to 30 decimals, zero-padded, so text
/// order is numeric order across tokens with different decimals.
pub(crate) fn amount_sort_key(amount: Amount, decimals: u8) -> String {
    let scale = 30u32.saturating_sub(u32::from(decimals));
    let scaled = amount
        .base_units()
        .checked_mul(coffer_core::U256::from(10u8).pow(coffer_core::U256::from(scale)))
        .unwrap_or(coffer_core::U256::MAX)
        .to_string();
    format!("{scaled:0>80}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_sort_keys_order_human_values_across_decimals() {
        let one_usdc = amount_sort_key(Amount::from(1_000_000), 6);
        let two_usdt = amount_sort_key(Amount::from(2_000_000_000_000_000_000), 18);
        let half_usdc = amount_sort_key(Amount::from(500_000), 6);
        assert!(half_usdc < one_usdc && one_usdc < two_usdt);
        assert_eq!(one_usdc.len(), 80);
    }
}
