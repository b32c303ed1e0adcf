//! Row types and the storage trait of x402 sales: merchants' payTo addresses, and settlements
//! (or Pelago tx-hash proofs) recorded as payment orders with a payment.

use async_trait::async_trait;
use coffer_core::MerchantId;

use crate::StoreError;
use crate::order_rows::{NewEvent, NewOrder, NewPayment, OrderRow};

/// A merchant's x402 payTo address on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayToRow {
    /// Chain id.
    pub chain_id: u64,
    /// Address, lower-case hex.
    pub address: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// Registration time.
    pub created_at_ms: i64,
}

/// Where an order of x402 origin came from (`payment_orders.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSource {
    /// A settlement through the facilitator, the OKX routes or the paywall.
    X402,
    /// An order of the Pelago-compatible endpoint.
    Pelago,
}

impl OrderSource {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSource::X402 => "x402",
            OrderSource::Pelago => "pelago",
        }
    }
}

/// How a sale was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleProof {
    /// An EIP-3009 authorization settled by Coffer; its nonce (lower-case 0x hex) keys the sale.
    Authorization {
        /// The authorization's nonce.
        auth_nonce: String,
    },
    /// A transfer the payer broadcast itself (Pelago's tx-hash proof).
    Transfer,
}

/// Which order a sale pays.
#[derive(Debug, Clone)]
pub enum SaleOrder {
    /// A new order, written already confirmed (its `event` is the creation event).
    New(Box<NewOrder>),
    /// An existing pending order, moved to confirmed if its version still matches; the paid
    /// chain and asset replace the ones it was created with.
    Existing {
        /// Public id.
        order_id: String,
        /// The version read.
        expected_version: i64,
        /// The chain paid on.
        chain_id: u64,
        /// Its blockchain slug.
        blockchain: String,
        /// Token symbol.
        currency: String,
        /// Token contract (lower-case hex).
        asset_address: Option<String>,
        /// Token decimals.
        decimals: u8,
        /// Amount asked, in this token's base units.
        amount: coffer_core::Amount,
        /// The payTo address (checksummed).
        receiving_address: String,
    },
}

/// A sale to record: an order (new or existing) confirmed by one payment, with its events.
#[derive(Debug, Clone)]
pub struct NewSale {
    /// The order.
    pub order: SaleOrder,
    /// Owner.
    pub merchant_id: MerchantId,
    /// What source a new order gets.
    pub source: OrderSource,
    /// How it was paid.
    pub proof: SaleProof,
    /// The payment (its `order_id` must be the order's).
    pub payment: NewPayment,
    /// Whether the payment already has the chain's confirmations: the order is recorded
    /// `confirmed`, else `processing` (and the watcher confirms it later).
    pub confirmed: bool,
    /// Events besides a new order's creation event (e.g. `payment_order.confirmed`).
    pub events: Vec<NewEvent>,
    /// Time.
    pub now_ms: i64,
}

/// A recorded sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRow {
    /// The order it confirmed.
    pub order_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// `authorization` or `transfer`.
    pub kind: String,
    /// Chain id.
    pub chain_id: u64,
    /// Token (lower-case hex).
    pub token: String,
    /// Payer (lower-case hex).
    pub payer: String,
    /// The authorization's nonce, for `authorization` sales.
    pub auth_nonce: Option<String>,
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index of the `Transfer`.
    pub log_index: i64,
    /// Time recorded.
    pub created_at_ms: i64,
}

/// The outcome of [`Sales::record_sale`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    New(OrderRow),
    /// The same authorization was recorded before (for this or another order); nothing written.
    Already(OrderRow),
}

impl Recorded {
    /// The order, either way.
    pub fn order(&self) -> &OrderRow {
        match self {
            Recorded::New(order) | Recorded::Already(order) => order,
        }
    }
}

/// x402 sales: payTo addresses and settlements recorded as orders.
#[async_trait]
pub trait Sales: Send + Sync + 'static {
    /// Registers `address` (lower-case hex) as the merchant's payTo on a chain; registering it
    /// again for the same merchant changes nothing.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] ([`PayToAddress`](crate::Constraint::PayToAddress)) when
    /// another merchant owns it;
    /// [`StoreError::NotFound`] for an unknown merchant.
    async fn add_pay_to(&self, row: &PayToRow) -> Result<(), StoreError>;

    /// Removes a merchant's payTo address.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the merchant has no such address.
    async fn remove_pay_to(
        &self,
        merchant: &MerchantId,
        chain_id: u64,
        address: &str,
    ) -> Result<(), StoreError>;

    /// Who owns a payTo address (lower-case hex) on a chain.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn pay_to_owner(
        &self,
        chain_id: u64,
        address: &str,
    ) -> Result<Option<PayToRow>, StoreError>;

    /// A merchant's payTo addresses, by chain.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn pay_tos(&self, merchant: &MerchantId) -> Result<Vec<PayToRow>, StoreError>;

    /// Inserts a pending order of x402 origin (a Pelago order awaiting payment) with its
    /// creation event. Unlike deposit orders, its receiving address (the payTo) is shared.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the order id is taken.
    async fn insert_sale_order(
        &self,
        order: &NewOrder,
        source: OrderSource,
    ) -> Result<OrderRow, StoreError>;

    /// Records a sale in one transaction: the order (inserted confirmed, or an existing one
    /// confirmed), its payment, the sale row and the events. An authorization recorded before
    /// is answered with [`Recorded::Already`] and the order it paid, writing nothing.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with [`Payment`](crate::Constraint::Payment) when the transfer
    /// `(chain, tx, log index)` already pays an order, with
    /// [`PaymentOrderVersion`](crate::Constraint::PaymentOrderVersion) when an existing order
    /// moved meanwhile.
    async fn record_sale(&self, sale: &NewSale) -> Result<Recorded, StoreError>;

    /// The sale that paid an order.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn sale_for_order(&self, order_id: &str) -> Result<Option<SaleRow>, StoreError>;

    /// The order a transaction pays (any of its logs), if any.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn order_paid_by(
        &self,
        chain_id: u64,
        tx_hash: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Succeeded settlements paid to a registered payTo and not recorded yet (those whose
    /// receipt came after the settle call answered), oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn unrecorded_settlements(
        &self,
        limit: u64,
    ) -> Result<Vec<crate::SettlementKey>, StoreError>;
}
