//! Storage for the GatePay-compatible checkout API and fiat-priced orders: GatePay credentials,
//! the nonces they have used, GatePay's names and facts of payment orders, refund requests, and
//! the fiat quote (currency, amount, locked rate) of an order.
//!
//! Whether a payment order is a GatePay order, and which credential signs its notifications,
//! is what [`GatePayOrderRow`] says — never the order's `order_info`, which is the merchant's
//! free text.

use async_trait::async_trait;
use coffer_core::{Amount, MerchantId, OrderStatus};

use crate::StoreError;

/// A GatePay-style API credential (`X-GatePay-Certificate-ClientId` and its HMAC secret).
#[derive(Clone, PartialEq, Eq)]
pub struct GatePayCredentialRow {
    /// `X-GatePay-Certificate-ClientId`.
    pub client_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// The HMAC-SHA512 secret (requests and notifications).
    pub secret: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// Revocation time (unix ms).
    pub revoked_at_ms: Option<i64>,
}

impl std::fmt::Debug for GatePayCredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatePayCredentialRow")
            .field("client_id", &self.client_id)
            .field("merchant_id", &self.merchant_id)
            .field("secret", &"***")
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// GatePay's names for a payment order and what its creating request said: everything needed
/// to answer and notify in GatePay's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePayOrderRow {
    /// `prepayId` (decimal digits).
    pub prepay_id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// `merchantTradeNo`, unique per merchant.
    pub merchant_trade_no: String,
    /// The payment order (`ORD-…`).
    pub order_id: String,
    /// The credential that created it: the only one that may sign its notifications, and only
    /// while it belongs to the order's merchant and is not revoked.
    pub client_id: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
    /// `env.terminalType`, upper case.
    pub terminal_type: String,
    /// `goods.goodsType`.
    pub goods_type: String,
    /// `goods.goodsName`.
    pub goods_name: String,
    /// `goods.goodsDetail`.
    pub goods_detail: String,
    /// `merchantUserId`.
    pub merchant_user_id: Option<i64>,
    /// `channelId`.
    pub channel_id: String,
    /// `surchargeAmount` in the order's token; the order's amount includes it.
    pub surcharge_amount: Amount,
    /// `cancelUrl`, an absolute http(s) URL when it was accepted.
    pub cancel_url: Option<String>,
}

/// A refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePayRefundRow {
    /// Owner.
    pub merchant_id: MerchantId,
    /// `refundRequestId`, unique per merchant.
    pub refund_request_id: String,
    /// The refunded order.
    pub prepay_id: String,
    /// Amount in the order's token.
    pub refund_amount: Amount,
    /// Reason as given.
    pub refund_reason: String,
    /// `PROCESS` until it is sent on chain.
    pub status: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}

/// What became of a refund request checked against its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundDecision {
    /// Recorded: with it, the order's refunds total at most what was paid.
    Recorded,
    /// The merchant has no GatePay order with this `prepayId`.
    UnknownOrder,
    /// The order is not paid (confirmed); nothing was recorded.
    NotPaid(OrderStatus),
    /// With it, the order's refunds would total `total`, more than the `paid`; nothing was
    /// recorded.
    MoreThanPaid {
        /// The order's refunds including this one.
        total: Amount,
        /// What the order was paid.
        paid: Amount,
    },
}

/// The fiat price of an order and the rate locked for its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuoteRow {
    /// The payment order.
    pub order_id: String,
    /// ISO 4217 code, upper case (`USD`).
    pub fiat_currency: String,
    /// Fiat amount as given (decimal text).
    pub fiat_amount: String,
    /// Fiat units per token unit (decimal text).
    pub rate: String,
    /// Creation time (unix ms).
    pub created_at_ms: i64,
}

/// GatePay credentials, nonces, orders, refunds, and fiat quotes.
#[async_trait]
pub trait Checkout: Send + Sync + 'static {
    /// Stores a credential.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the client id exists.
    async fn insert_gatepay_credential(
        &self,
        credential: &GatePayCredentialRow,
    ) -> Result<(), StoreError>;

    /// A credential by client id, revoked or not.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_credential(
        &self,
        client_id: &str,
    ) -> Result<Option<GatePayCredentialRow>, StoreError>;

    /// A merchant's credentials, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_credentials(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<GatePayCredentialRow>, StoreError>;

    /// Revokes a credential; it stops working at once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown client id.
    async fn revoke_gatepay_credential(
        &self,
        client_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Records a client's nonce; `false` when the client used it before. Nonces seen before
    /// `forget_before_ms` are forgotten first (requests that old are refused by their
    /// timestamp anyway).
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn use_gatepay_nonce(
        &self,
        client_id: &str,
        nonce: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Records GatePay's names for an existing order. A new order carries them as its
    /// [`ExternalReference`](crate::ExternalReference) instead, written in its transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with [`MerchantTradeNo`](crate::Constraint::MerchantTradeNo)
    /// when the merchant used the trade number before, with
    /// [`PrepayId`](crate::Constraint::PrepayId) when the id is taken.
    async fn insert_gatepay_order(&self, order: &GatePayOrderRow) -> Result<(), StoreError>;

    /// Forgets GatePay's names for an order (the order itself stays).
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn delete_gatepay_order(&self, prepay_id: &str) -> Result<(), StoreError>;

    /// A merchant's order by `prepayId`.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_order_by_prepay_id(
        &self,
        merchant: &MerchantId,
        prepay_id: &str,
    ) -> Result<Option<GatePayOrderRow>, StoreError>;

    /// A merchant's order by `merchantTradeNo`.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_order_by_trade_no(
        &self,
        merchant: &MerchantId,
        merchant_trade_no: &str,
    ) -> Result<Option<GatePayOrderRow>, StoreError>;

    /// The GatePay names and facts of a payment order; `None` when it is not a GatePay order.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_order_of(&self, order_id: &str)
    -> Result<Option<GatePayOrderRow>, StoreError>;

    /// Records a refund request if its order (the merchant's, by `prepayId`) is paid and its
    /// refunds, this one included, total at most what was paid. The check and the insert are
    /// one transaction that holds the order (`FOR UPDATE` on PostgreSQL, the write lock on
    /// SQLite), so concurrent requests are decided one after the other; amounts are compared
    /// as integers in Rust.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the merchant used the refund request id before,
    /// [`StoreError::Corrupt`] for an unreadable stored amount, [`StoreError::Database`] on
    /// failure.
    async fn record_gatepay_refund(
        &self,
        refund: &GatePayRefundRow,
    ) -> Result<RefundDecision, StoreError>;

    /// A merchant's refund request.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_refund(
        &self,
        merchant: &MerchantId,
        refund_request_id: &str,
    ) -> Result<Option<GatePayRefundRow>, StoreError>;

    /// The refund requests of an order, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn gatepay_refunds_for(
        &self,
        merchant: &MerchantId,
        prepay_id: &str,
    ) -> Result<Vec<GatePayRefundRow>, StoreError>;

    /// Stores the fiat quote of an order (before the order itself is written).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the order has one.
    async fn insert_order_quote(&self, quote: &OrderQuoteRow) -> Result<(), StoreError>;

    /// The fiat quote of an order, if it was priced in fiat.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn order_quote(&self, order_id: &str) -> Result<Option<OrderQuoteRow>, StoreError>;
}
