//! Coffer's persistence.
//!
//! Callers see one [`Store`] trait (merchants and API keys, plus the [`Ledger`],
//! [`ReorgQueries`], [`Journal`], [`Credentials`], [`Checkout`], [`Sales`], [`PaymentClaims`]
//! and [`SecretStorage`] it includes), row types ([`MerchantRow`], [`OrderRow`], …) and one
//! error type, [`StoreError`], already classified into not-found, conflict (naming the
//! [`Constraint`]) and the rest — nobody outside this crate matches on a database driver's
//! error.
//!
//! Two backends implement the trait, each with its own migrations:
//! - [`sqlite::SqliteStore`], the default: a single file, WAL mode, for one process.
//! - [`postgres::PostgresStore`], for several replicas sharing one database.
//!
//! The backends share their SQL: the eight `*_sql.rs` files (accounts, orders, sales,
//! settlements, checkout, credentials, payment claims, secrets) are compiled once per backend
//! with its types (see `shared_sql`), placeholders written `$1`, `$2`, … in order of first use,
//! which both databases bind positionally. Only the migrations and a few statements differ: how
//! an order and its event are written, how deliveries are claimed (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), and the locks taken before a redelivery is counted, a refund is decided and
//! secrets are re-sealed.
//!
//! [`open`] picks the backend from the URL scheme (`sqlite:` or `postgres:`/`postgresql:`);
//! any other scheme is an error, never a silent new SQLite file. Both backends run the same
//! suites (`tests/store/`, one binary; each test runs on both through `on_both_databases!` from
//! the `testing` module).
//!
//! Amounts are stored as canonical decimal text of base units (see `coffer_core::Amount`),
//! timestamps as UTC.
//!
//! Secrets (merchants' webhook secrets, GatePay and OKX credential secrets) are stored
//! encrypted: a store is opened with a [`Sealer`] holding the master key, and the backends seal
//! on write and open on read, so callers only ever see plain values in row types (which print
//! `***`). See [`secrets`] for the format and [`SecretStorage`] for the census and rotation.

pub mod checkout;
mod fetch;
mod migrate;
mod order_rows;
mod order_writer;
pub mod payment_claims;
pub mod postgres;
mod rows;
mod sale_rows;
pub mod secrets;
mod settlement_rows;
mod shared_sql;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coffer_core::{MerchantId, OrderStatus};

pub use checkout::{
    Checkout, GatePayCredentialRow, GatePayOrderRow, GatePayRefundRow, OrderQuoteRow,
    RefundDecision,
};
pub use order_rows::{
    AttemptOutcome, AttemptRow, ChainBlock, ChainStep, DeliveryRow, DeliveryStatus, DueDelivery,
    EventRow, ExternalReference, NewDelivery, NewEvent, NewOrder, NewPayment, OrderOrdering,
    OrderQuery, OrderRow, OrderUpdate, OrphanedPayment, PaymentRow, Redelivery, RedeliveryLimit,
    WalletRow, WebhookFormat,
};
pub use payment_claims::{NewPaymentClaim, PaymentClaims};
pub use rows::{ApiKeyRow, MerchantRow, NewApiKey, NewMerchant};
pub use sale_rows::{
    NewSale, OrderSource, PayToRow, Recorded, SaleOrder, SaleProof, SaleRow, Sales,
};
pub use secrets::{MasterKey, Sealer, SecretError, SecretsCensus};
pub use settlement_rows::{
    NewSettlement, SettlementKey, SettlementRow, SettlementStatus, SignedSettlement,
};

/// A storage failure, classified for callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique constraint was violated: the row already exists.
    #[error("{0} already exists")]
    Conflict(Constraint),
    /// The database URL is not one Coffer supports.
    #[error("unsupported database URL {url:?}: use sqlite:<path> or postgres://…")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// A stored value could not be read back (a bug or a hand-edited row).
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The database could not be reached or failed; usually worth retrying.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A secret could not be sealed or opened (no master key, the wrong one, or a value that
    /// was altered or moved from another row).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Whether the same call may succeed if retried (connection trouble, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }

    /// Classifies a failed read of `what`: no row is [`StoreError::NotFound`].
    pub(crate) fn classify(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
        move |error| match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound(what),
            _ => StoreError::Database(error),
        }
    }

    /// Classifies a failed write that `constraint` guards: breaking it is
    /// [`StoreError::Conflict`].
    pub(crate) fn unique(constraint: Constraint) -> impl Fn(sqlx::Error) -> StoreError {
        move |error| match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(constraint)
            }
            _ => StoreError::Database(error),
        }
    }
}

/// A uniqueness rule the store keeps, named in [`StoreError::Conflict`].
///
/// Each prints as the name callers have always seen in the error message
/// (`"{name} already exists"`), GatePay's field names included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// A merchant's id.
    Merchant,
    /// An API key's id.
    ApiKey,
    /// One deposit wallet per merchant and chain.
    Wallet,
    /// A payment order's id.
    PaymentOrder,
    /// A merchant's order nonce.
    Nonce,
    /// A merchant's idempotency key.
    IdempotencyKey,
    /// A deposit address, used by one order per chain.
    ReceivingAddress,
    /// The version an order update was computed from: another writer moved it first.
    PaymentOrderVersion,
    /// A transfer (chain, transaction, log index) pays one order.
    Payment,
    /// An event's id.
    Event,
    /// A webhook delivery's id.
    WebhookDelivery,
    /// A webhook attempt's row.
    WebhookAttempt,
    /// An x402 sale: one per order, one per authorization.
    X402Sale,
    /// A `payTo` address belongs to one merchant.
    PayToAddress,
    /// Settlements that moved on from pending before a transaction was recorded for them.
    Settlement,
    /// A signer's nonce, used by one settlement transaction.
    SignerNonce,
    /// A settlement transaction's hash.
    SettlementTransaction,
    /// A GatePay credential's client id.
    GatePayCredential,
    /// A merchant's GatePay trade number (`merchantTradeNo`).
    MerchantTradeNo,
    /// A GatePay order's id (`prepayId`).
    PrepayId,
    /// A merchant's GatePay refund request id (`refundRequestId`).
    RefundRequestId,
    /// An order's fiat quote.
    OrderQuote,
    /// An OKX-style credential's access key.
    OkxCredential,
    /// One payout wallet per merchant and chain.
    PayoutWallet,
}

impl Constraint {
    /// The name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Constraint::Merchant => "merchant",
            Constraint::ApiKey => "api key",
            Constraint::Wallet => "wallet",
            Constraint::PaymentOrder => "payment order",
            Constraint::Nonce => "nonce",
            Constraint::IdempotencyKey => "idempotency key",
            Constraint::ReceivingAddress => "receiving address",
            Constraint::PaymentOrderVersion => "payment order version",
            Constraint::Payment => "payment",
            Constraint::Event => "event",
            Constraint::WebhookDelivery => "webhook delivery",
            Constraint::WebhookAttempt => "webhook attempt",
            Constraint::X402Sale => "x402 sale",
            Constraint::PayToAddress => "payTo address",
            Constraint::Settlement => "settlement",
            Constraint::SignerNonce => "signer nonce",
            Constraint::SettlementTransaction => "settlement transaction",
            Constraint::GatePayCredential => "GatePay credential",
            Constraint::MerchantTradeNo => "merchantTradeNo",
            Constraint::PrepayId => "prepayId",
            Constraint::RefundRequestId => "refundRequestId",
            Constraint::OrderQuote => "order quote",
            Constraint::OkxCredential => "OKX credential",
            Constraint::PayoutWallet => "payout wallet",
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operator watches, counted in the database (see [`Ledger::operations_census`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationsCensus {
    /// Webhook deliveries by status (`pending`, `delivered`, `failed`).
    pub deliveries: Vec<(String, u64)>,
    /// When the oldest delivery still `pending` was created (unix ms).
    pub oldest_pending_delivery_ms: Option<i64>,
    /// x402 settlements by status (`pending`, `submitted`, `succeeded`, `failed`, …).
    pub settlements: Vec<(String, u64)>,
    /// Each chain's watcher cursor: chain id, last block processed, when (unix ms).
    pub cursors: Vec<(u64, u64, i64)>,
}

/// The payment ledger: deposit wallets, payment orders, payments, chain progress, events and
/// webhook deliveries.
///
/// Every method is atomic. State changes and the events describing them are written in one
/// transaction (outbox), and order updates carry the version they were computed from, so a
/// concurrent change makes the later writer fail with [`StoreError::Conflict`] and retry.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Sets a merchant's extended public key for a chain (`chain_id` 0: every EVM chain).
    /// Replacing the key restarts its child index at 0; keeping it keeps the index.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown merchant.
    async fn set_wallet(
        &self,
        merchant: &MerchantId,
        chain_id: u64,
        xpub: &str,
        now_ms: i64,
    ) -> Result<WalletRow, StoreError>;

    /// The merchant's wallet for a chain: the chain's own, else the all-chains one.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn wallet(
        &self,
        merchant: &MerchantId,
        chain_id: u64,
    ) -> Result<Option<WalletRow>, StoreError>;

    /// Takes the wallet's next child index; an index is handed out once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the wallet changed meanwhile.
    async fn reserve_address_index(&self, wallet: &WalletRow) -> Result<u32, StoreError> {
        self.reserve_address_indexes(wallet, 1).await
    }

    /// Takes the wallet's next `count` child indexes at once and returns the first; each is
    /// handed out once, across every process sharing the database.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the wallet changed meanwhile.
    async fn reserve_address_indexes(
        &self,
        wallet: &WalletRow,
        count: u32,
    ) -> Result<u32, StoreError>;

    /// Inserts an order with its creation event.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with [`Constraint::Nonce`], [`Constraint::IdempotencyKey`] or
    /// [`Constraint::ReceivingAddress`]; with [`Constraint::MerchantTradeNo`] or
    /// [`Constraint::PrepayId`] when its external reference is taken (nothing is written).
    async fn insert_order(&self, order: NewOrder) -> Result<OrderRow, StoreError>;

    /// Reads an order by its public id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none.
    async fn order(&self, order_id: &str) -> Result<OrderRow, StoreError>;

    /// The order a merchant created with an `Idempotency-Key`.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn order_by_idempotency_key(
        &self,
        merchant: &MerchantId,
        key: &str,
    ) -> Result<Option<OrderRow>, StoreError>;

    /// One page of a merchant's orders and the total matching the filters.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn list_orders(&self, query: &OrderQuery) -> Result<(Vec<OrderRow>, u64), StoreError>;

    /// Orders of a chain still monitored at `now_ms`, with `id > after_id`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn watched_orders(
        &self,
        chain_id: u64,
        after_id: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<Vec<OrderRow>, StoreError>;

    /// Orders of a chain in one status.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn orders_in_status(
        &self,
        chain_id: u64,
        status: OrderStatus,
    ) -> Result<Vec<OrderRow>, StoreError>;

    /// Pending orders whose window closed by `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn orders_due_to_expire(
        &self,
        now_ms: i64,
        limit: u64,
    ) -> Result<Vec<OrderRow>, StoreError>;

    /// Every payment recorded for an order, orphaned ones included.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn payments_for_order(&self, order_id: &str) -> Result<Vec<PaymentRow>, StoreError>;

    /// Applies order updates and their events in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when an order's version moved; nothing is applied then.
    async fn update_orders(&self, updates: &[OrderUpdate]) -> Result<(), StoreError>;

    /// The last block the watcher processed on a chain.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn chain_cursor(&self, chain_id: u64) -> Result<Option<ChainBlock>, StoreError>;

    /// What an operator watches, counted in the database: webhook deliveries and x402
    /// settlements by status, the oldest delivery still to be sent, and each chain's watcher
    /// cursor. `/metrics` reads it when scraped.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn operations_census(&self) -> Result<OperationsCensus, StoreError>;

    /// A processed block by number, if still kept.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn chain_block(
        &self,
        chain_id: u64,
        number: u64,
    ) -> Result<Option<ChainBlock>, StoreError>;

    /// Commits one watcher step (rewind, blocks, payments, order updates, events, cursor)
    /// atomically.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when an order's version moved; nothing is applied then.
    async fn commit_chain_step(&self, step: &ChainStep) -> Result<(), StoreError>;

    /// A merchant's events, newest first, optionally of one order.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn events(
        &self,
        merchant: &MerchantId,
        order_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<EventRow>, StoreError>;

    /// One event.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none.
    async fn event(&self, event_id: &str) -> Result<EventRow, StoreError>;

    /// A merchant's webhook deliveries, newest first, optionally of one event.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn deliveries(
        &self,
        merchant: &MerchantId,
        event_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, StoreError>;

    /// The attempts of one delivery, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError>;

    /// Schedules a new delivery of an event (redelivery).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the delivery id is taken.
    async fn schedule_delivery(
        &self,
        event: &EventRow,
        delivery_id: &str,
        url: &str,
        now_ms: i64,
    ) -> Result<DeliveryRow, StoreError>;

    /// Schedules a redelivery of an event unless one of its deliveries is in flight (pending
    /// and not yet attempted, due, or claimed by a dispatcher; whatever the clocks of the
    /// replicas say) or `limit` redeliveries were scheduled in the
    /// window before `now_ms`. The event's own deliveries (written with it) do not count.
    /// Concurrent calls for one event are serialised, so the limit holds across replicas.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the delivery id is taken.
    async fn schedule_redelivery(
        &self,
        event: &EventRow,
        delivery_id: &str,
        url: &str,
        now_ms: i64,
        limit: RedeliveryLimit,
    ) -> Result<Redelivery, StoreError>;

    /// Claims up to `limit` due deliveries for `lease_ms`; a claimed delivery is not handed to
    /// another dispatcher until its lease ends or an attempt is recorded.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u64,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Logs an attempt and moves the delivery to its next state.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn record_attempt(&self, outcome: &AttemptOutcome) -> Result<(), StoreError>;
}

/// The x402 settlement journal.
///
/// A settlement is claimed by its authorization's identity before anything else happens, and
/// its signed transaction is journaled before it is broadcast, so concurrent or repeated
/// settles of one authorization share one transaction, and a restart can finish it.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Claims the settlement of an authorization; `true` when this call created the row.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn claim_settlement(
        &self,
        new: &NewSettlement,
    ) -> Result<(SettlementRow, bool), StoreError>;

    /// The settlement of an authorization, if claimed.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn settlement(&self, key: &SettlementKey) -> Result<Option<SettlementRow>, StoreError>;

    /// The settlement that broadcast a transaction.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn settlement_by_tx_hash(
        &self,
        tx_hash: &str,
    ) -> Result<Option<SettlementRow>, StoreError>;

    /// One past the highest account nonce the journal holds for a signer, if any.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn next_signer_nonce(
        &self,
        chain_id: u64,
        signer: &str,
    ) -> Result<Option<u64>, StoreError>;

    /// Journals a signed transaction and moves the settlements it carries (one, or a batch) to
    /// `broadcast`, all in one database transaction, before it is sent.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a row is no longer pending or the signer nonce is taken;
    /// nothing is written then.
    async fn record_signed(
        &self,
        ids: &[i64],
        signed: &SignedSettlement,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Forgets a journaled transaction the node refused and does not hold (nothing was
    /// broadcast), freeing its signer nonce, and releases the claims of the settlements it
    /// carried, in one database transaction: their authorizations may be presented again.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn void_transaction(&self, tx_hash: &str) -> Result<(), StoreError>;

    /// Releases a claim nothing was signed for (it is still `pending`): the authorization may
    /// be presented again. `false` when the row had moved on (another process signed it) or
    /// was gone.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn release_settlement_claim(&self, id: i64) -> Result<bool, StoreError>;

    /// Journals `signed`, a replacement of `replaced` at the same signer nonce with higher
    /// fees, and points the broadcast settlements of `replaced` at it. Returns how many
    /// settlements moved.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the hash is journaled already.
    async fn replace_transaction(
        &self,
        replaced: &str,
        signed: &SignedSettlement,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Every journaled transaction `(hash, raw)` at a signer nonce, oldest first: the first one
    /// and its fee-bumped replacements; any of them may be the one mined.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn transactions_at_nonce(
        &self,
        chain_id: u64,
        signer: &str,
        signer_nonce: u64,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Moves the broadcast settlements `ids` (the rows of one mined transaction) to `to` in one
    /// statement, compare-and-set like [`Journal::finish_settlement`]. Returns the ids that
    /// moved; the others had been moved by another process first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn finish_broadcast_settlements(
        &self,
        ids: &[i64],
        to: SettlementStatus,
        error_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError>;

    /// Moves a settlement from `from` to `to` (compare-and-set); `false` when it was no longer
    /// in `from` (another process moved it first) and nothing changed. `mined_tx` names the
    /// journaled transaction that decided it when that is not the latest (an earlier one at the
    /// same signer nonce was mined instead of its fee-bumped replacement).
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn finish_settlement(
        &self,
        id: i64,
        from: SettlementStatus,
        to: SettlementStatus,
        error_reason: Option<&str>,
        mined_tx: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Settlements broadcast but not yet resolved, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn open_settlements(&self, limit: u64) -> Result<Vec<SettlementRow>, StoreError>;

    /// Settlements recorded `failed` at or after `since_ms`, oldest first: their
    /// authorizations may still be used on chain by someone else while they are valid.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn failed_settlements_since(
        &self,
        since_ms: i64,
        limit: u64,
    ) -> Result<Vec<SettlementRow>, StoreError>;
}

/// An OKX-style API credential.
#[derive(Clone, PartialEq, Eq)]
pub struct OkxCredentialRow {
    /// `OK-ACCESS-KEY`.
    pub access_key: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// The HMAC secret.
    pub secret: String,
    /// SHA-256 (hex) of the passphrase.
    pub passphrase_hash: String,
    /// Creation time.
    pub created_at_ms: i64,
    /// Revocation time.
    pub revoked_at_ms: Option<i64>,
}

/// A merchant's payout wallet on one chain: the hot wallet money goes out from.
#[derive(Clone, PartialEq, Eq)]
pub struct PayoutWalletRow {
    /// Owner.
    pub merchant_id: MerchantId,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Its address, checksummed.
    pub address: String,
    /// Its private key, hex (`0x…`); sealed with the master key at rest.
    pub private_key: String,
    /// Creation time.
    pub created_at_ms: i64,
}

impl PayoutWalletRow {
    /// The row the sealed key is bound to: `<merchant id>:<chain id>`.
    pub fn wallet_id(&self) -> String {
        format!("{}:{}", self.merchant_id, self.chain_id)
    }
}

impl std::fmt::Debug for PayoutWalletRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayoutWalletRow")
            .field("merchant_id", &self.merchant_id)
            .field("chain_id", &self.chain_id)
            .field("address", &self.address)
            .field("private_key", &"***")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OkxCredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OkxCredentialRow")
            .field("access_key", &self.access_key)
            .field("merchant_id", &self.merchant_id)
            .field("secret", &"***")
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// OKX-style API credentials (`OK-ACCESS-*` headers).
#[async_trait]
pub trait Credentials: Send + Sync + 'static {
    /// Stores a credential.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the key exists, [`StoreError::NotFound`]-like database
    /// errors for an unknown merchant.
    async fn insert_okx_credential(&self, credential: &OkxCredentialRow) -> Result<(), StoreError>;

    /// A credential by access key, revoked or not.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn okx_credential(
        &self,
        access_key: &str,
    ) -> Result<Option<OkxCredentialRow>, StoreError>;

    /// A merchant's credentials.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn okx_credentials(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<OkxCredentialRow>, StoreError>;

    /// Revokes a credential; it stops working at once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown key.
    async fn revoke_okx_credential(&self, access_key: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Stores a merchant's payout wallet on a chain, its key sealed.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with [`Constraint::PayoutWallet`] when the merchant has one on
    /// that chain; [`StoreError::Secret`] without a master key.
    async fn insert_payout_wallet(&self, wallet: &PayoutWalletRow) -> Result<(), StoreError>;

    /// A merchant's payout wallets, by chain id, their keys opened.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure; [`StoreError::Secret`] when a key cannot be opened.
    async fn payout_wallets(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<PayoutWalletRow>, StoreError>;
}

/// The encryption of the secret columns as a whole.
#[async_trait]
pub trait SecretStorage: Send + Sync + 'static {
    /// The id of the master key this store seals with, if it has one.
    fn master_key_id(&self) -> Option<&str>;

    /// How the stored secrets are sealed: how many are in plain text, and how many are sealed
    /// with each master key (by key id).
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn secrets_census(&self) -> Result<SecretsCensus, StoreError>;

    /// Re-encrypts every stored secret under `to`, in one transaction (key rotation). Values
    /// are opened with this store's key, or with `to` itself; values in plain text are sealed
    /// too. Values already sealed with `to` are left as they are, so a second run (after a
    /// crash, or with secrets written meanwhile) finishes the job and changes nothing else.
    /// Returns how many values were re-encrypted. On PostgreSQL other writers of the secret
    /// tables wait until it commits.
    ///
    /// # Errors
    /// [`StoreError::Secret`] when a value opens with neither key (nothing is changed then);
    /// [`StoreError::Database`] on failure.
    async fn reseal_secrets(&self, to: &MasterKey) -> Result<u64, StoreError>;
}

/// What a reorg needs to know.
#[async_trait]
pub trait ReorgQueries: Send + Sync + 'static {
    /// Orders with live payments in blocks above `block_number` (those a reorg back to that
    /// block may orphan).
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn orders_paid_after(
        &self,
        chain_id: u64,
        block_number: u64,
    ) -> Result<Vec<OrderRow>, StoreError>;

    /// The blocks `(number, hash)` that hold live payments at or below `block_number`, newest
    /// first, at most `limit`: where a reorg deeper than the kept block hashes is looked for.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn payment_blocks_at_or_below(
        &self,
        chain_id: u64,
        block_number: u64,
        limit: u64,
    ) -> Result<Vec<(u64, String)>, StoreError>;
}

/// Everything Coffer persists.
///
/// Implementations keep every method atomic: a method either applies all its writes or none.
#[async_trait]
pub trait Store:
    Ledger
    + ReorgQueries
    + Journal
    + Credentials
    + Checkout
    + Sales
    + PaymentClaims
    + SecretStorage
    + Send
    + Sync
    + 'static
{
    /// Which backend this is (`"sqlite"` or `"postgres"`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a merchant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id is taken.
    async fn insert_merchant(&self, merchant: NewMerchant) -> Result<MerchantRow, StoreError>;

    /// Reads one merchant.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none with this id.
    async fn merchant(&self, id: &MerchantId) -> Result<MerchantRow, StoreError>;

    /// Sets or clears a merchant's default webhook endpoint.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such merchant.
    async fn set_merchant_webhook_url(
        &self,
        id: &MerchantId,
        url: Option<&str>,
    ) -> Result<MerchantRow, StoreError>;

    /// Lists merchants, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError>;

    /// Inserts an API key (its hash, never the key itself).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id is taken; [`StoreError::NotFound`] when the
    /// merchant does not exist.
    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRow, StoreError>;

    /// Reads one API key by id, revoked or not.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none.
    async fn api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError>;

    /// Reads an API key and its merchant in one query (authentication's hot path).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such key.
    async fn api_key_with_merchant(&self, id: &str)
    -> Result<(ApiKeyRow, MerchantRow), StoreError>;

    /// Lists API keys, of one merchant or of all, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn api_keys(&self, merchant: Option<&MerchantId>) -> Result<Vec<ApiKeyRow>, StoreError>;

    /// Marks a key revoked at `at`; revoking a revoked key keeps the first time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such key.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRow, StoreError>;
}

/// Opens the store named by `url`, creating a SQLite file if needed, runs migrations, and —
/// when `sealer` has a key — encrypts any secret still stored in plain text (one transaction;
/// nothing to do on later starts).
///
/// Without a key ([`Sealer::none`]) the store opens, but writing or reading a secret fails
/// with [`SecretError::NoMasterKey`].
///
/// # Errors
/// [`StoreError::UnsupportedUrl`] for a scheme other than `sqlite:`, `postgres:` or
/// `postgresql:`; [`StoreError::Database`] when the database cannot be opened;
/// [`StoreError::Migration`] when a migration fails; [`StoreError::Secret`] when a plain-text
/// secret cannot be sealed.
pub async fn open(url: &str, sealer: Sealer) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Arc::new(sqlite::SqliteStore::open(url, sealer).await?)),
        Some("postgres" | "postgresql") => {
            Ok(Arc::new(postgres::PostgresStore::open(url, sealer).await?))
        }
        _ => Err(StoreError::UnsupportedUrl {
            url: redact_url(url),
        }),
    }
}

/// The file a `sqlite:` URL names, or `None` for another scheme, an in-memory database or a URL
/// that does not parse.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.to_ascii_lowercase().starts_with("sqlite:") || url.contains(":memory:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// A database URL safe to log: its password, and query parameters that look like one
/// (`password`, `sslpassword`, `…key`, `…token`, `…secret`), become `***`. Text that does not
/// parse as a URL but looks like one is reduced to scheme, host and port
/// ([`coffer_core::redact::redact_url`]).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Setting a password only fails for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            let secret_parameter = |name: &str| {
                let name = name.to_ascii_lowercase();
                ["password", "secret", "key", "token"]
                    .iter()
                    .any(|word| name.contains(word))
            };
            if parsed
                .query_pairs()
                .any(|(name, _)| secret_parameter(&name))
            {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(name, value)| {
                        let value = if secret_parameter(&name) {
                            "***".to_owned()
                        } else {
                            value.into_owned()
                        };
                        (name.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) if url.contains("://") => coffer_core::redact::redact_url(url),
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_is_an_error_not_a_new_sqlite_file() {
        for url in ["mysql://localhost/coffer", "coffer.db", "file:coffer.db"] {
            let error = open(url, Sealer::none()).await.err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("unsupported database URL")),
                "{url}: {error:?}"
            );
        }
    }

    #[test]
    fn passwords_never_appear_in_a_redacted_url() {
        let redacted = redact_url("postgres://coffer:hunter2@db:5432/coffer");
        assert_eq!(redacted, "postgres://coffer:***@db:5432/coffer");
        let redacted = redact_url("postgres://db/coffer?sslmode=require&password=hunter2");
        assert_eq!(
            redacted,
            "postgres://db/coffer?sslmode=require&password=***"
        );
        let redacted = redact_url("postgres://coffer:hun ter2@db/coffer");
        assert!(!redacted.contains("hun"), "{redacted}");
        assert_eq!(redact_url("sqlite:coffer.db"), "sqlite:coffer.db");
    }
}
