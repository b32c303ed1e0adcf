//! Payment orders: creation, reading, listing, and their wire form.
//!
//! The service validates a request against the chain registry, reserves a fresh deposit
//! address from the merchant's xpub, and writes the order with its `payment_order.created`
//! event. Status changes happen elsewhere (watcher, expirer) through [`reevaluate`], the one
//! place that turns payments into an order update and its events.
//!
//! `order_info` is the merchant's data and nothing more: whether an order is a GatePay order
//! (notified in GatePay's format) is decided by its GatePay row in the store, which callers of
//! [`reevaluate`] read and pass in. `redirect_url` must be an absolute http(s) URL
//! ([`crate::links`]).

use std::sync::Arc;

use alloy::primitives::Address;
use chrono::DateTime;
use coffer_core::{
    Amount, Chain, ChainRegistry, OrderStatus, OrderTerms, PaymentFacts, PaymentSubStatus,
    evaluate, evaluate_sale,
};
use coffer_evm::hd::DepositKey;
use coffer_store::{
    ExternalReference, GatePayOrderRow, MerchantRow, NewOrder, OrderQuery, OrderQuoteRow, OrderRow,
    OrderUpdate, PaymentRow, Store, StoreError,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::events::{new_id, order_event, rfc3339_ms};
use crate::fiat::{FiatError, FiatRates, Quote};
use crate::gatepay::{self, BizStatus, OrderFacts};
use crate::outbound::OutboundPolicy;

/// How long an order stays payable when the request gives no `expires_at`.
pub const DEFAULT_EXPIRY_MS: i64 = 30 * 60 * 1000;
/// How long after expiry late payments are still credited.
pub const MONITORING_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// The longest payment window accepted.
pub const MAX_EXPIRY_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// The fields of an order a command can get wrong; each API family names them its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    /// The token amount.
    Amount,
    /// The fiat amount.
    FiatAmount,
    /// The fiat currency.
    FiatCurrency,
    /// The token.
    Currency,
    /// The chain.
    Blockchain,
    /// The merchant's description of the order.
    OrderInfo,
    /// The merchant's unique number for the order.
    Nonce,
    /// Where the order's webhooks go.
    WebhookUrl,
    /// Where the customer goes after paying.
    RedirectUrl,
    /// The end of the payment window.
    ExpiresAt,
    /// The shortfall still accepted.
    UnderpaymentTolerance,
}

impl OrderField {
    /// Coffer's (and CryptoPay's) name for the field.
    pub fn native_name(self) -> &'static str {
        match self {
            OrderField::Amount => "amount",
            OrderField::FiatAmount => "fiat_amount",
            OrderField::FiatCurrency => "fiat_currency",
            OrderField::Currency => "currency",
            OrderField::Blockchain => "blockchain",
            OrderField::OrderInfo => "order_info",
            OrderField::Nonce => "nonce",
            OrderField::WebhookUrl => "webhook_url",
            OrderField::RedirectUrl => "redirect_url",
            OrderField::ExpiresAt => "expires_at",
            OrderField::UnderpaymentTolerance => "underpayment_tolerance",
        }
    }
}

/// An order to create, whatever API family asked for it. It is priced in the token
/// (`amount`) or in fiat (`fiat_currency` with `fiat_amount`), exactly one of the two.
#[derive(Debug, Clone, Default)]
pub struct OrderCommand {
    /// An amount of the token, as decimal text (`"100.00"`), no more decimals than it has.
    pub amount: Option<String>,
    /// The fiat currency of a fiat price (`USD`).
    pub fiat_currency: Option<String>,
    /// The fiat amount, decimal text with at most 2 decimals; converted at the configured
    /// rate, locked for the order's lifetime and rounded up to the token's decimals.
    pub fiat_amount: Option<String>,
    /// The token symbol (`USDC`) or the chain's native coin (`ETH`).
    pub currency: String,
    /// The chain, by slug (`base`) or registry name.
    pub blockchain: String,
    /// The merchant's description of the order, a JSON-encoded string of at most 16 KiB.
    pub order_info: String,
    /// Unique per merchant, not negative.
    pub nonce: i64,
    /// Where this order's webhooks go (else the merchant's).
    pub webhook_url: Option<String>,
    /// Where to send the customer after payment.
    pub redirect_url: Option<String>,
    /// The end of the payment window, RFC 3339; none is [`DEFAULT_EXPIRY_MS`] from now.
    pub expires_at: Option<String>,
    /// How much less than the price still completes the order, decimal text; none is `0`.
    pub underpayment_tolerance: Option<String>,
    /// The order's public id when the caller chose it (another family whose names for the
    /// order refer to it); none draws one.
    pub order_id: Option<String>,
    /// The name another family knows the order by (GatePay's `prepayId` and
    /// `merchantTradeNo`), written in the order's transaction; when it is taken, nothing is
    /// written and the answer is [`OrderError::ReferenceTaken`].
    pub external_reference: Option<ExternalReference>,
}

/// An `Idempotency-Key` and the request it came with: the same key with the same request
/// answers the order it created; with another request, [`OrderError::IdempotencyMismatch`].
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    /// The key.
    pub key: &'a str,
    /// The request's bytes as sent.
    pub request: &'a [u8],
}

/// The confirming transaction, in the seed's shape.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionView {
    /// Transaction hash.
    pub transaction_hash: String,
    /// Block number.
    pub block_number: u64,
    /// Confirmations so far.
    pub confirmations: u64,
    /// `confirmed` once deep enough, else `pending`.
    pub status: &'static str,
}

/// One payment of an order.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentView {
    /// Transaction hash.
    pub tx_hash: String,
    /// Log index of the `Transfer` event (-1 for a native-coin transfer).
    pub log_index: i64,
    /// Block number.
    pub block_number: u64,
    /// Confirmations so far (0 when orphaned).
    pub confirmations: u64,
    /// Amount, in token units.
    pub amount: String,
    /// Sender.
    pub sender: String,
    /// `pending`, `confirmed`, or `orphaned` (its block left the chain).
    pub status: &'static str,
}

/// A payment order on the wire.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    /// Sequential number.
    pub id: i64,
    /// Public id.
    pub order_id: String,
    /// Amount asked, in token units.
    pub amount: String,
    /// Token symbol.
    pub currency: String,
    /// Blockchain slug.
    pub blockchain: String,
    /// `pending`, `processing`, `confirmed`, `expired` or `failed`.
    pub status: &'static str,
    /// `underpaid`, `overpaid`, `paid_late`, or null.
    pub payment_status: Option<&'static str>,
    /// Sum of the payments counted, in token units.
    pub amount_paid: String,
    /// Accepted shortfall, in token units.
    pub underpayment_tolerance: String,
    /// Deposit address for this order.
    pub receiving_address: String,
    /// Token contract (null for the native coin).
    pub token_address: Option<String>,
    /// Page for the customer.
    pub payment_url: String,
    /// QR code of the payment (SVG).
    pub qr_code_url: String,
    /// Fiat currency of a fiat-priced order.
    pub fiat_currency: Option<String>,
    /// Fiat price of a fiat-priced order.
    pub fiat_amount: Option<String>,
    /// Fiat units per token, locked at creation (fiat-priced orders).
    pub exchange_rate: Option<String>,
    /// Order info as given.
    pub order_info: String,
    /// Nonce as given.
    pub nonce: i64,
    /// Per-order webhook endpoint.
    pub webhook_url: Option<String>,
    /// Redirect URL.
    pub redirect_url: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// End of the payment window.
    pub expires_at: String,
    /// When it was confirmed.
    pub confirmed_at: Option<String>,
    /// The confirming (or latest) transaction.
    pub transaction: Option<TransactionView>,
    /// Every payment seen.
    pub payments: Vec<PaymentView>,
}

impl OrderView {
    /// The view with the fiat price and locked rate of a fiat-priced order.
    #[must_use]
    pub fn with_quote(mut self, quote: Option<&OrderQuoteRow>) -> Self {
        if let Some(quote) = quote {
            self.fiat_currency = Some(quote.fiat_currency.clone());
            self.fiat_amount = Some(quote.fiat_amount.clone());
            self.exchange_rate = Some(quote.rate.clone());
        }
        self
    }
}

/// What can go wrong with a payment-order request.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Bad input, with its CryptoPay error code.
    #[error("{message}")]
    Invalid {
        /// Stable code (`INVALID_AMOUNT`, …).
        code: &'static str,
        /// The field.
        field: OrderField,
        /// Why.
        message: String,
    },
    /// The merchant has no xpub for the chain.
    #[error("no deposit wallet configured for {0}")]
    WalletNotConfigured(String),
    /// The nonce was used before.
    #[error("nonce {0} was already used")]
    DuplicateNonce(i64),
    /// The `Idempotency-Key` was used with another body.
    #[error("Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    /// No such order for this merchant.
    #[error("payment order {0} not found")]
    NotFound(String),
    /// The command's external reference names another order already.
    #[error("the order's external reference is already taken ({0:?})")]
    ReferenceTaken(coffer_store::Constraint),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(code: &'static str, field: OrderField, message: impl Into<String>) -> OrderError {
    OrderError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// Child indexes reserved at once, so creating an order costs one write instead of two. A
/// restart forgets at most this many reserved but unused indexes (a gap in the wallet).
const INDEX_BLOCK: u32 = 16;

/// Reserved child indexes not yet handed out, per (merchant, wallet chain, xpub).
type ReservedIndexes =
    std::sync::Mutex<std::collections::HashMap<(String, u64, String), Vec<std::ops::Range<u32>>>>;

/// The payment-order service.
#[derive(Clone)]
pub struct PaymentOrders {
    store: Arc<dyn Store>,
    rates: Arc<FiatRates>,
    chains: Arc<ChainRegistry>,
    public_url: String,
    /// Judges the webhook URLs orders name.
    outbound: Arc<OutboundPolicy>,
    reserved: Arc<ReservedIndexes>,
    wallets: Arc<WalletCache>,
}

/// How long a merchant's wallet is reused before it is read again.
const WALLET_CACHE: std::time::Duration = std::time::Duration::from_secs(2);

/// Recently read deposit wallets, per (merchant, chain).
type WalletCache = std::sync::Mutex<
    std::collections::HashMap<
        (String, u64),
        (std::time::Instant, coffer_store::WalletRow, DepositKey),
    >,
>;

impl Idempotency<'_> {
    /// What is stored to recognise the request again: its SHA-256, hex.
    fn request_hash(&self) -> String {
        hex::encode(Sha256::digest(self.request))
    }
}

/// An order whose every field was checked, before it has an address.
struct ValidOrder<'a> {
    paid_with: PaidWith<'a>,
    amount: Amount,
    quote: Option<Quote>,
    tolerance: Amount,
    expires_at_ms: i64,
}

/// A fresh public order id, `ORD-` and 12 random characters.
pub fn new_order_id() -> String {
    format!("ORD-{}", &new_id("x")[2..14])
}

/// What [`PaymentOrders::create`] did.
#[derive(Debug)]
pub struct Created {
    /// The order.
    pub order: OrderRow,
    /// False when an earlier request with the same `Idempotency-Key` created it.
    pub fresh: bool,
    /// The fiat price and locked rate, for a fiat-priced order just created.
    pub quote: Option<OrderQuoteRow>,
}

/// The token an order is paid in.
struct PaidWith<'a> {
    chain: &'a Chain,
    symbol: String,
    address: Option<String>,
    decimals: u8,
}

use crate::clock::now_ms;

impl PaymentOrders {
    /// A service over `store` for the chains in `chains`; links are built on `public_url`.
    /// Webhook URLs must pass the strict outbound policy.
    pub fn new(store: Arc<dyn Store>, chains: Arc<ChainRegistry>, public_url: String) -> Self {
        PaymentOrders {
            store,
            chains,
            public_url: public_url.trim_end_matches('/').to_owned(),
            outbound: Arc::new(OutboundPolicy::strict()),
            rates: Arc::new(FiatRates::default()),
            reserved: Arc::default(),
            wallets: Arc::default(),
        }
    }

    /// The same service converting fiat prices with `rates`.
    #[must_use]
    pub fn with_fiat_rates(mut self, rates: FiatRates) -> Self {
        self.rates = Arc::new(rates);
        self
    }

    /// The same service judging webhook URLs with `policy`.
    #[must_use]
    pub fn with_outbound_policy(mut self, policy: Arc<OutboundPolicy>) -> Self {
        self.outbound = policy;
        self
    }

    /// The exchange-rate table.
    pub fn fiat_rates(&self) -> &FiatRates {
        &self.rates
    }

    /// The base URL links are built on.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The merchant's deposit wallet for a chain and its parsed key, cached for a moment so
    /// that creating orders does not read and parse it every time.
    async fn deposit_wallet(
        &self,
        merchant: &MerchantRow,
        chain: &Chain,
    ) -> Result<(coffer_store::WalletRow, DepositKey), OrderError> {
        let cache_key = (merchant.id.to_string(), chain.chain_id);
        let now = std::time::Instant::now();
        if let Some((at, wallet, key)) = self
            .wallets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&cache_key)
            && now.duration_since(*at) < WALLET_CACHE
        {
            return Ok((wallet.clone(), key.clone()));
        }
        let wallet = self
            .store
            .wallet(&merchant.id, chain.chain_id)
            .await?
            .ok_or_else(|| OrderError::WalletNotConfigured(chain.names.cryptopay_slug.clone()))?;
        let key = DepositKey::parse(&wallet.xpub).map_err(|error| {
            OrderError::Store(StoreError::Corrupt {
                what: "wallet xpub",
                detail: error.to_string(),
            })
        })?;
        self.wallets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cache_key, (now, wallet.clone(), key.clone()));
        Ok((wallet, key))
    }

    fn forget_wallet(&self, merchant: &MerchantRow, chain_id: u64) {
        self.wallets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(merchant.id.to_string(), chain_id));
    }

    /// The wallet's next unused child index, from this process's reserved block or a new one.
    async fn next_index(&self, wallet: &coffer_store::WalletRow) -> Result<u32, StoreError> {
        let key = (
            wallet.merchant_id.to_string(),
            wallet.chain_id,
            wallet.xpub.clone(),
        );
        let take = |reserved: &ReservedIndexes| {
            let mut reserved = reserved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ranges = reserved.entry(key.clone()).or_default();
            let index = ranges.last_mut().and_then(Iterator::next);
            ranges.retain(|range| !range.is_empty());
            index
        };
        if let Some(index) = take(&self.reserved) {
            return Ok(index);
        }
        let first = self
            .store
            .reserve_address_indexes(wallet, INDEX_BLOCK)
            .await?;
        let mut reserved = self
            .reserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reserved
            .entry(key)
            .or_default()
            .push(first + 1..first + INDEX_BLOCK);
        Ok(first)
    }

    fn resolve<'a>(&'a self, request: &OrderCommand) -> Result<PaidWith<'a>, OrderError> {
        let known = self
            .chains
            .by_cryptopay_slug(&request.blockchain)
            .or_else(|| self.chains.by_name(&request.blockchain));
        let chain = known
            .filter(|chain| !chain.rpc_urls.is_empty())
            .ok_or_else(|| {
                let supported: Vec<_> = self
                    .chains
                    .configured()
                    .map(|c| c.names.cryptopay_slug.as_str())
                    .collect();
                let why = match known {
                    Some(chain) => chain.rpc_urls_hint(),
                    None => "is not a chain Coffer knows".to_owned(),
                };
                invalid(
                    "INVALID_BLOCKCHAIN",
                    OrderField::Blockchain,
                    format!(
                        "{:?}: {why}; this server accepts: {}",
                        request.blockchain,
                        supported.join(", ")
                    ),
                )
            })?;
        if let Some(asset) = chain.asset_by_symbol(&request.currency) {
            return Ok(PaidWith {
                chain,
                symbol: asset.symbol.clone(),
                address: Some(asset.address.to_checksum(None).to_ascii_lowercase()),
                decimals: asset.decimals,
            });
        }
        if chain.native_symbol.eq_ignore_ascii_case(&request.currency) {
            return Ok(PaidWith {
                chain,
                symbol: chain.native_symbol.clone(),
                address: None,
                decimals: 18,
            });
        }
        let mut supported: Vec<_> = chain.assets.iter().map(|a| a.symbol.as_str()).collect();
        supported.push(&chain.native_symbol);
        Err(invalid(
            "UNSUPPORTED_CURRENCY",
            OrderField::Currency,
            format!(
                "{:?} is not supported on {}; use one of: {}",
                request.currency,
                chain.names.cryptopay_slug,
                supported.join(", ")
            ),
        ))
    }

    /// The amount to ask for: `amount` as given, or the fiat price converted at the locked
    /// rate (rounded up to the token's decimals, see [`crate::fiat`]).
    fn price(
        &self,
        request: &OrderCommand,
        paid_with: &PaidWith<'_>,
    ) -> Result<(Amount, Option<Quote>), OrderError> {
        let fiat = match (&request.fiat_currency, &request.fiat_amount) {
            (None, None) => None,
            (Some(currency), Some(amount)) => Some((currency, amount)),
            (Some(_), None) => {
                return Err(invalid(
                    "VALIDATION_ERROR",
                    OrderField::FiatAmount,
                    "is required with fiat_currency",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "VALIDATION_ERROR",
                    OrderField::FiatCurrency,
                    "is required with fiat_amount",
                ));
            }
        };
        match (&request.amount, fiat) {
            (Some(_), Some(_)) => Err(invalid(
                "VALIDATION_ERROR",
                OrderField::Amount,
                "give either amount or fiat_currency with fiat_amount, not both",
            )),
            (None, None) => Err(invalid(
                "VALIDATION_ERROR",
                OrderField::Amount,
                "is required (or price the order with fiat_currency and fiat_amount)",
            )),
            (None, Some((currency, fiat_amount))) => {
                let quote = self
                    .rates
                    .convert(currency, fiat_amount, &paid_with.symbol, paid_with.decimals)
                    .map_err(|error| match error {
                        FiatError::BadAmount | FiatError::TooLarge => invalid(
                            "INVALID_AMOUNT",
                            OrderField::FiatAmount,
                            format!("{fiat_amount:?}: {error}"),
                        ),
                        FiatError::BadCurrency | FiatError::NoRate { .. } => invalid(
                            "UNSUPPORTED_CURRENCY",
                            OrderField::FiatCurrency,
                            format!("{currency:?}: {error}"),
                        ),
                    })?;
                Ok((quote.amount, Some(quote)))
            }
            (Some(text), None) => {
                let amount =
                    Amount::parse_decimal(text.trim(), paid_with.decimals).map_err(|error| {
                        invalid(
                            "INVALID_AMOUNT",
                            OrderField::Amount,
                            format!("{text:?}: {error}"),
                        )
                    })?;
                Ok((amount, None))
            }
        }
    }

    /// Validates and creates an order, or returns the one an earlier request with the same
    /// `Idempotency-Key` created: validate, reserve a deposit address, write.
    ///
    /// # Errors
    /// [`OrderError`] naming the bad field (`URL_NOT_ALLOWED` for a `webhook_url` the outbound
    /// policy refuses), `WalletNotConfigured`, `DuplicateNonce`, `IdempotencyMismatch`.
    #[tracing::instrument(skip_all, fields(merchant = %merchant.id, nonce = command.nonce))]
    pub async fn create(
        &self,
        merchant: &MerchantRow,
        command: &OrderCommand,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Created, OrderError> {
        if let Some(idempotency) = idempotency
            && let Some(earlier) = self.created_before(merchant, idempotency).await?
        {
            return Ok(earlier);
        }
        let now = now_ms();
        let valid = self.validate(command, now).await?;
        let (index, address) = self
            .reserve_address(merchant, valid.paid_with.chain)
            .await?;
        self.write(merchant, command, valid, (index, address), idempotency, now)
            .await
    }

    /// The order an earlier request with the same key created; [`OrderError::IdempotencyMismatch`]
    /// when that request was another.
    async fn created_before(
        &self,
        merchant: &MerchantRow,
        idempotency: Idempotency<'_>,
    ) -> Result<Option<Created>, OrderError> {
        let Some(existing) = self
            .store
            .order_by_idempotency_key(&merchant.id, idempotency.key)
            .await?
        else {
            return Ok(None);
        };
        if existing.request_hash.as_deref() == Some(idempotency.request_hash().as_str()) {
            Ok(Some(Created {
                order: existing,
                fresh: false,
                quote: None,
            }))
        } else {
            Err(OrderError::IdempotencyMismatch)
        }
    }

    /// Checks every field of `request` against the registry, the rates and the outbound policy.
    async fn validate<'a>(
        &'a self,
        request: &OrderCommand,
        now: i64,
    ) -> Result<ValidOrder<'a>, OrderError> {
        let paid_with = self.resolve(request)?;
        let (amount, quote) = self.price(request, &paid_with)?;
        if amount.is_zero() {
            return Err(invalid(
                "INVALID_AMOUNT",
                OrderField::Amount,
                "must be greater than zero",
            ));
        }
        let tolerance = match &request.underpayment_tolerance {
            None => Amount::ZERO,
            Some(text) => {
                Amount::parse_decimal(text.trim(), paid_with.decimals).map_err(|error| {
                    invalid(
                        "INVALID_AMOUNT",
                        OrderField::UnderpaymentTolerance,
                        error.to_string(),
                    )
                })?
            }
        };
        if tolerance >= amount {
            return Err(invalid(
                "INVALID_AMOUNT",
                OrderField::UnderpaymentTolerance,
                "must be less than amount",
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&request.order_info).is_err() {
            return Err(invalid(
                "INVALID_ORDER_INFO",
                OrderField::OrderInfo,
                "must be a JSON-encoded string, e.g. \"{\\\"product\\\": \\\"Plan\\\"}\"",
            ));
        }
        if request.order_info.len() > 16 * 1024 {
            return Err(invalid(
                "INVALID_ORDER_INFO",
                OrderField::OrderInfo,
                "must be at most 16 KiB",
            ));
        }
        if request.nonce < 0 {
            return Err(invalid(
                "VALIDATION_ERROR",
                OrderField::Nonce,
                "must be a non-negative integer",
            ));
        }
        if let Some(url) = &request.redirect_url
            && !crate::links::is_page_link(url, crate::links::MAX_PAGE_LINK)
        {
            return Err(invalid(
                "VALIDATION_ERROR",
                OrderField::RedirectUrl,
                "must be an absolute http:// or https:// URL of at most 2048 characters, without spaces or credentials",
            ));
        }
        let expires_at_ms = match &request.expires_at {
            None => now + DEFAULT_EXPIRY_MS,
            Some(text) => {
                let at = DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        invalid(
                            "VALIDATION_ERROR",
                            OrderField::ExpiresAt,
                            "must be an RFC 3339 time such as 2030-01-01T12:00:00Z",
                        )
                    })?
                    .timestamp_millis();
                if at <= now {
                    return Err(invalid(
                        "VALIDATION_ERROR",
                        OrderField::ExpiresAt,
                        "must be in the future",
                    ));
                }
                if at.saturating_sub(now) > MAX_EXPIRY_MS {
                    return Err(invalid(
                        "VALIDATION_ERROR",
                        OrderField::ExpiresAt,
                        "must be at most 30 days away",
                    ));
                }
                at
            }
        };
        if let Some(url) = &request.webhook_url {
            self.outbound.check_url(url).await.map_err(|refusal| {
                let code = if refusal.is_forbidden_destination() {
                    "URL_NOT_ALLOWED"
                } else {
                    "VALIDATION_ERROR"
                };
                invalid(code, OrderField::WebhookUrl, refusal.to_string())
            })?;
        }
        Ok(ValidOrder {
            paid_with,
            amount,
            quote,
            tolerance,
            expires_at_ms,
        })
    }

    /// The next deposit address of the merchant's wallet for `chain`, and its child index.
    async fn reserve_address(
        &self,
        merchant: &MerchantRow,
        chain: &Chain,
    ) -> Result<(u32, Address), OrderError> {
        let (mut wallet, mut key) = self.deposit_wallet(merchant, chain).await?;
        let index = match self.next_index(&wallet).await {
            Ok(index) => index,
            // The merchant replaced the key meanwhile: read it again, once.
            Err(StoreError::NotFound(_)) => {
                self.forget_wallet(merchant, chain.chain_id);
                let (fresh, fresh_key) = self.deposit_wallet(merchant, chain).await?;
                if fresh.xpub == wallet.xpub {
                    return Err(OrderError::WalletNotConfigured(
                        chain.names.cryptopay_slug.clone(),
                    ));
                }
                (wallet, key) = (fresh, fresh_key);
                self.next_index(&wallet).await?
            }
            Err(error) => return Err(error.into()),
        };
        let address = key.address(index).map_err(|error| {
            OrderError::Store(StoreError::Corrupt {
                what: "deposit address",
                detail: error.to_string(),
            })
        })?;
        Ok((index, address))
    }

    /// Writes a validated order (its fiat quote first) with its `payment_order.created` event.
    async fn write(
        &self,
        merchant: &MerchantRow,
        request: &OrderCommand,
        valid: ValidOrder<'_>,
        (index, address): (u32, Address),
        idempotency: Option<Idempotency<'_>>,
        now: i64,
    ) -> Result<Created, OrderError> {
        let ValidOrder {
            paid_with,
            amount,
            quote,
            tolerance,
            expires_at_ms,
        } = valid;
        let chain = paid_with.chain;
        let order_id = request.order_id.clone().unwrap_or_else(new_order_id);
        let quote = match quote {
            None => None,
            Some(quote) => {
                let row = OrderQuoteRow {
                    order_id: order_id.clone(),
                    fiat_currency: quote.fiat_currency,
                    fiat_amount: quote.fiat_amount,
                    rate: quote.rate.to_decimal_string(),
                    created_at_ms: now,
                };
                // Written first: a quote whose order never got written is never read.
                self.store.insert_order_quote(&row).await?;
                Some(row)
            }
        };
        let order = NewOrder {
            order_id: order_id.clone(),
            merchant_id: merchant.id.clone(),
            chain_id: chain.chain_id,
            blockchain: chain.names.cryptopay_slug.clone(),
            currency: paid_with.symbol,
            asset_address: paid_with.address,
            decimals: paid_with.decimals,
            amount,
            underpayment_tolerance: tolerance,
            receiving_address: address.to_checksum(None),
            derivation_index: index,
            order_info: request.order_info.clone(),
            nonce: request.nonce,
            webhook_url: request.webhook_url.clone(),
            redirect_url: request.redirect_url.clone(),
            idempotency_key: idempotency.map(|idempotency| idempotency.key.to_owned()),
            request_hash: idempotency.map(|idempotency| idempotency.request_hash()),
            created_at_ms: now,
            expires_at_ms,
            monitor_until_ms: expires_at_ms.saturating_add(MONITORING_WINDOW_MS),
            external_reference: request.external_reference.clone(),
            event: order_event(
                merchant,
                &order_id,
                request.webhook_url.as_deref(),
                "payment_order.created",
                serde_json::Value::Null,
                now,
                false,
            ),
        };
        match self.store.insert_order(order).await {
            Ok(stored) => Ok(Created {
                order: stored,
                fresh: true,
                quote,
            }),
            Err(StoreError::Conflict(coffer_store::Constraint::Nonce)) => {
                Err(OrderError::DuplicateNonce(request.nonce))
            }
            Err(StoreError::Conflict(
                taken @ (coffer_store::Constraint::MerchantTradeNo
                | coffer_store::Constraint::PrepayId),
            )) => Err(OrderError::ReferenceTaken(taken)),
            // A concurrent request with the same key won; answer as it did.
            Err(StoreError::Conflict(coffer_store::Constraint::IdempotencyKey)) => {
                match idempotency {
                    Some(idempotency) => self
                        .created_before(merchant, idempotency)
                        .await?
                        .ok_or(OrderError::IdempotencyMismatch),
                    None => Err(OrderError::IdempotencyMismatch),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Reads a merchant's order with its payments, rendered.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] when the order does not exist or belongs to someone else.
    #[tracing::instrument(skip_all, fields(merchant = %merchant.id, order_id = %order_id))]
    pub async fn get(
        &self,
        merchant: &MerchantRow,
        order_id: &str,
    ) -> Result<OrderView, OrderError> {
        let order = match self.store.order(order_id).await {
            Ok(order) if order.merchant_id == merchant.id => order,
            Ok(_) | Err(StoreError::NotFound(_)) => {
                return Err(OrderError::NotFound(order_id.to_owned()));
            }
            Err(error) => return Err(error.into()),
        };
        self.render(&order).await
    }

    /// Renders an order with its payments and current confirmations.
    ///
    /// # Errors
    /// [`OrderError::Store`] when reading fails.
    pub async fn render(&self, order: &OrderRow) -> Result<OrderView, OrderError> {
        let payments = self.store.payments_for_order(&order.order_id).await?;
        let head = self
            .store
            .chain_cursor(order.chain_id)
            .await?
            .map(|block| block.number);
        let required = self
            .chains
            .by_chain_id(order.chain_id)
            .map_or(1, |chain| chain.confirmations);
        let quote = self.store.order_quote(&order.order_id).await?;
        Ok(self
            .view(order, &payments, head, required)
            .with_quote(quote.as_ref()))
    }

    /// Renders an order just created: it has no payments yet, so nothing more is read.
    pub fn render_new(&self, order: &OrderRow) -> OrderView {
        let required = self
            .chains
            .by_chain_id(order.chain_id)
            .map_or(1, |chain| chain.confirmations);
        self.view(order, &[], None, required)
    }

    /// A page of a merchant's orders and the total.
    ///
    /// # Errors
    /// [`OrderError::Store`] when reading fails.
    pub async fn list(&self, query: &OrderQuery) -> Result<(Vec<OrderView>, u64), OrderError> {
        let (orders, count) = self.store.list_orders(query).await?;
        let mut views = Vec::with_capacity(orders.len());
        for order in &orders {
            views.push(self.render(order).await?);
        }
        Ok((views, count))
    }

    /// The chain id for a `blockchain` filter value.
    pub fn chain_id_for(&self, slug: &str) -> Option<u64> {
        self.chains
            .by_cryptopay_slug(slug)
            .or_else(|| self.chains.by_name(slug))
            .map(|chain| chain.chain_id)
    }

    /// The wire form of an order.
    pub fn view(
        &self,
        order: &OrderRow,
        payments: &[PaymentRow],
        head: Option<u64>,
        required: u64,
    ) -> OrderView {
        let format = |amount: Amount| amount.to_decimal_string_min(order.decimals, 2);
        let confirmations = |row: &PaymentRow| match head {
            Some(head) if !row.orphaned && head >= row.payment.block_number => {
                head - row.payment.block_number + 1
            }
            _ => 0,
        };
        let payment_views: Vec<PaymentView> = payments
            .iter()
            .map(|row| {
                let confirmations = confirmations(row);
                PaymentView {
                    tx_hash: row.payment.tx_hash.clone(),
                    log_index: row.payment.log_index,
                    block_number: row.payment.block_number,
                    confirmations,
                    amount: format(row.payment.amount),
                    sender: row.payment.sender.clone(),
                    status: if row.orphaned {
                        "orphaned"
                    } else if confirmations >= required.max(1) {
                        "confirmed"
                    } else {
                        "pending"
                    },
                }
            })
            .collect();
        let transaction = payments.iter().rev().find(|row| !row.orphaned).map(|row| {
            let confirmations = confirmations(row);
            TransactionView {
                transaction_hash: row.payment.tx_hash.clone(),
                block_number: row.payment.block_number,
                confirmations,
                status: if confirmations >= required.max(1) {
                    "confirmed"
                } else {
                    "pending"
                },
            }
        });
        OrderView {
            id: order.id,
            order_id: order.order_id.clone(),
            amount: format(order.amount),
            currency: order.currency.clone(),
            blockchain: order.blockchain.clone(),
            status: order.status.as_str(),
            payment_status: order.sub_status.as_str(),
            amount_paid: format(order.amount_paid),
            underpayment_tolerance: format(order.underpayment_tolerance),
            receiving_address: order.receiving_address.clone(),
            token_address: order.asset_address.clone(),
            payment_url: format!("{}/pay/{}", self.public_url, order.order_id),
            qr_code_url: format!("{}/qr/{}", self.public_url, order.order_id),
            fiat_currency: None,
            fiat_amount: None,
            exchange_rate: None,
            order_info: order.order_info.clone(),
            nonce: order.nonce,
            webhook_url: order.webhook_url.clone(),
            redirect_url: order.redirect_url.clone(),
            created_at: rfc3339_ms(order.created_at_ms),
            expires_at: rfc3339_ms(order.expires_at_ms),
            confirmed_at: order.confirmed_at_ms.map(rfc3339_ms),
            transaction,
            payments: payment_views,
        }
    }
}

/// What [`reevaluate`] judges an order by.
#[derive(Debug, Clone, Copy)]
pub struct Reevaluation<'a> {
    /// The order's merchant.
    pub merchant: &'a MerchantRow,
    /// The order as stored.
    pub order: &'a OrderRow,
    /// The order's GatePay row, if it is a GatePay order.
    pub gatepay: Option<&'a GatePayOrderRow>,
    /// Every payment of the order, orphaned ones included.
    pub payments: &'a [PaymentRow],
    /// The chain height now.
    pub head: u64,
    /// Confirmations the chain requires.
    pub required_confirmations: u64,
    /// Now, unix milliseconds.
    pub now_ms: i64,
    /// Payments seen for the first time in this step.
    pub new_payments: usize,
    /// Whether payments were just lost to a reorg.
    pub orphaned_now: bool,
}

/// Recomputes an order from its payments at chain height `head`, and returns the update with
/// its events when anything changed. `orphaned_now` says payments were just lost to a reorg.
/// `gatepay` is the order's GatePay row from the store (`Checkout::gatepay_order_of`), `None`
/// for an order of another family: a GatePay order tells its merchant in GatePay's format only.
pub fn reevaluate(service: &PaymentOrders, at: Reevaluation<'_>) -> Option<OrderUpdate> {
    let Reevaluation {
        merchant,
        order,
        gatepay,
        payments,
        head,
        required_confirmations,
        now_ms,
        new_payments,
        orphaned_now,
    } = at;
    let facts: Vec<PaymentFacts> = payments
        .iter()
        .filter(|row| !row.orphaned)
        .map(|row| PaymentFacts {
            amount: row.payment.amount,
            confirmations: head.saturating_sub(row.payment.block_number) + 1,
            block_time: row.payment.block_time,
        })
        .collect();
    let terms = OrderTerms {
        amount: order.amount,
        underpayment_tolerance: order.underpayment_tolerance,
        expires_at: order.expires_at_ms / 1000,
        monitor_until: order.monitor_until_ms / 1000,
        closed: order.closed,
    };
    let evaluation = if order.sold {
        evaluate_sale(&terms, &facts, required_confirmations, now_ms / 1000)
    } else {
        evaluate(&terms, &facts, required_confirmations, now_ms / 1000)
    };
    let changed = evaluation.status != order.status
        || evaluation.sub_status != order.sub_status
        || evaluation.amount_paid != order.amount_paid;
    if !changed && new_payments == 0 && !orphaned_now {
        return None;
    }
    let confirmed_at_ms = match evaluation.status {
        OrderStatus::Confirmed => order.confirmed_at_ms.or(Some(now_ms)),
        _ => None,
    };
    let mut next = order.clone();
    next.status = evaluation.status;
    next.sub_status = evaluation.sub_status;
    next.amount_paid = evaluation.amount_paid;
    next.confirmed_at_ms = confirmed_at_ms;
    let data =
        serde_json::to_value(service.view(&next, payments, Some(head), required_confirmations))
            .unwrap_or_default();
    let mut events = Vec::new();
    // A GatePay order tells its merchant in GatePay's format only; Coffer's events are kept.
    let gatepay_facts = gatepay.map(|row| OrderFacts::of(row, order));
    let deliver_native = gatepay_facts.is_none();
    let mut push = |event_type: &str| {
        events.push(order_event(
            merchant,
            &order.order_id,
            order.webhook_url.as_deref(),
            event_type,
            data.clone(),
            now_ms,
            deliver_native,
        ));
    };
    if orphaned_now {
        push("payment_order.reorged");
    }
    if new_payments > 0 {
        push("payment_order.payment_detected");
    }
    if evaluation.status != order.status {
        push(&format!("payment_order.{}", evaluation.status));
        let biz_status = match evaluation.status {
            OrderStatus::Confirmed => Some(BizStatus::PaySuccess),
            OrderStatus::Expired | OrderStatus::Failed => Some(BizStatus::PayClose),
            OrderStatus::Pending | OrderStatus::Processing => None,
        };
        if let (Some(facts), Some(biz_status)) = (&gatepay_facts, biz_status) {
            let live = payments.iter().rev().find(|row| !row.orphaned);
            let paid = gatepay::Paid {
                amount: evaluation
                    .amount_paid
                    .to_decimal_string_min(order.decimals, 0),
                transaction_id: live.map(|row| row.payment.tx_hash.clone()),
                payer: live.map(|row| row.payment.sender.clone()),
            };
            events.push(gatepay::notification_event(
                merchant, order, facts, biz_status, &paid, now_ms,
            ));
        }
    } else if evaluation.sub_status != order.sub_status
        && evaluation.sub_status != PaymentSubStatus::None
    {
        push("payment_order.updated");
    }
    Some(OrderUpdate {
        order_id: order.order_id.clone(),
        expected_version: order.version,
        status: evaluation.status,
        sub_status: evaluation.sub_status,
        amount_paid: evaluation.amount_paid,
        confirmed_at_ms,
        closed: order.closed,
        updated_at_ms: now_ms,
        events,
    })
}
