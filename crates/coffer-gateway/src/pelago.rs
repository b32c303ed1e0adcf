//! The Pelago-compatible x402 order family: create an order, answer 402 with x402 requirements,
//! confirm it with an `X-PAYMENT` header.
//!
//! Two payment forms are accepted in `X-PAYMENT` (base64 JSON, `x402Version: 1`):
//!
//! - the standard `exact` EVM payload, an EIP-3009 authorization
//!   (`payload.{signature, authorization}`), which Coffer verifies and settles with its own
//!   facilitator, exactly once;
//! - Pelago's tx-hash proof `payload.{amount, signature, txHash}`: the payer broadcast the
//!   transfer itself. Coffer reads the receipt, finds a `Transfer` of an accepted token to the
//!   merchant's payTo address of at least the order's amount, waits for the chain's
//!   confirmations, and checks that `signature` is an EIP-191 (`personal_sign`) signature by
//!   the transfer's sender of [`proof_message`]. One transfer pays one order, ever.
//!
//! Orders are payment orders like any other (they appear in `/api/payment-orders/` lists and
//! raise webhooks) with the merchant's payTo as receiving address.

use std::str::FromStr;
use std::sync::Arc;

use alloy::primitives::{Address, B256, Signature};
use chrono::Utc;
use coffer_core::{Amount, Asset, Chain, ChainRegistry, OrderStatus, TransferMethod};
use coffer_store::{
    MerchantRow, NewOrder, OrderRow, OrderSource, Recorded, SettlementKey, SettlementStatus, Store,
    StoreError,
};
use coffer_x402::facilitator::{CheckedPayment, Facilitator};
use coffer_x402::reasons::Reason;
use coffer_x402::settlement::{SETTLEMENT_PENDING, Settler, UNEXPECTED_SETTLE_ERROR, same_terms};
use coffer_x402::wire::{ExactEvmPayload, PayloadV1, PaymentRequest, RequirementsV1};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::order_event;
use crate::sales::{FoundTransfer, X402Sales, rescale, settlement_key, transfers_to};

/// How long a Pelago order stays payable.
pub const ORDER_WINDOW_MS: i64 = 30 * 60 * 1000;
/// How far a block's timestamp may lag Coffer's clock when a transfer is compared with the
/// creation of the order it pays.
const CLOCK_SKEW_MS: i64 = 60 * 1000;

/// `POST /openapi/crypto/x402/order` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    /// What is paid for, at most 1024 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub description: Option<String>,
    /// Price in token units (`"2.60"`), greater than zero, with no more decimals than the
    /// token has; required to create an order without paying at once.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$", example = "2.60")
    )]
    pub amount: Option<String>,
    /// Token symbol; default `USDC`. The merchant must have a payTo address on a network
    /// with this token.
    #[serde(default)]
    pub currency: Option<String>,
    /// One network (x402 v1 name, CAIP-2 id or alias such as `bsc-mainnet`); default every
    /// network where the merchant registered a payTo address.
    #[serde(default)]
    pub network: Option<String>,
    /// The order to confirm (from the 402); absent with `X-PAYMENT`: the order is created for
    /// the amount the payment proves, and confirmed at once.
    #[serde(default)]
    pub order_id: Option<String>,
}

/// The 200 answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Confirmed {
    /// Order id.
    pub order_id: String,
    /// `confirmed`.
    pub status: &'static str,
    /// `Payment successful`.
    pub message: &'static str,
}

/// `GET /openapi/crypto/x402/order/{orderId}`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusView {
    /// Order id.
    pub order_id: String,
    /// What the status means.
    pub message: String,
    /// `pending`, `confirmed`, `expired` or `failed`.
    pub order_status: String,
    /// `unpaid` or `paid`.
    pub pay_status: String,
    /// Amount paid, in token units.
    pub paid_amount: String,
    /// Coffer's fee: always `"0"`.
    pub transaction_fee: String,
    /// Gas the merchant paid: always `"0"` (Coffer's facilitator pays settlement gas).
    pub gas_fee: String,
    /// The paying transaction, `""` while unpaid.
    pub tx_hash: String,
}

/// What the order endpoint answers.
#[derive(Debug)]
pub enum Outcome {
    /// 402: pay one of these (v1 `accepts`), for this order.
    PaymentRequired {
        /// Order id.
        order_id: String,
        /// v1 requirements.
        accepts: Vec<RequirementsV1>,
        /// Why (`X-PAYMENT header is required`, or the verification failure).
        error: String,
    },
    /// 200.
    Confirmed(Confirmed),
}

/// Why a Pelago request fails.
#[derive(Debug, thiserror::Error)]
pub enum PelagoError {
    /// A request field is wrong (400).
    #[error("{field}: {message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The payment is refused (402, or 409 for a reused transfer).
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: &'static str,
        /// Why.
        message: String,
        /// The order concerned.
        order_id: Option<String>,
    },
    /// No such order.
    #[error("record not found")]
    NotFound,
    /// The chain could not be asked (503).
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> PelagoError {
    PelagoError::Invalid {
        code,
        field: field.to_owned(),
        message: message.into(),
    }
}

fn refused(code: &'static str, message: impl Into<String>, order_id: Option<&str>) -> PelagoError {
    PelagoError::Refused {
        code,
        message: message.into(),
        order_id: order_id.map(str::to_owned),
    }
}

/// The message a tx-hash proof's `signature` signs (EIP-191 `personal_sign`), with the order id
/// (`""` when paying without one) and the transaction hash in lower-case hex:
///
/// ```text
/// Coffer x402 payment
/// orderId: CO2026112207310004817263950182736451
/// txHash: 0x5c50…
/// ```
pub fn proof_message(order_id: &str, tx_hash: &str) -> String {
    format!(
        "Coffer x402 payment\norderId: {order_id}\ntxHash: {}",
        tx_hash.to_ascii_lowercase()
    )
}

/// The tx-hash proof payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxProof {
    amount: Option<String>,
    signature: String,
    tx_hash: String,
}

/// The Pelago order service.
#[derive(Clone)]
pub struct Pelago {
    store: Arc<dyn Store>,
    chains: Arc<ChainRegistry>,
    facilitator: Facilitator,
    settler: Arc<Settler>,
    settle_timeout: std::time::Duration,
    sales: X402Sales,
}

use crate::clock::now_ms;

/// Digits of randomness in an order id: about 66 bits, so ids (which open the public payment
/// page) cannot be guessed or enumerated.
const ORDER_ID_RANDOM_DIGITS: usize = 20;

/// `CO<UTC timestamp><20 random digits>`: Pelago's shape, with a suffix no one can guess.
fn new_order_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let random: String = (0..ORDER_ID_RANDOM_DIGITS)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    format!("CO{}{random}", Utc::now().format("%Y%m%d%H%M%S"))
}

/// The transaction hash (as 0x text), signature and claimed amount of a transfer proof.
fn parse_proof(proof: &TxProof) -> Result<(String, Signature, Option<Amount>), PelagoError> {
    let tx_hash: B256 = proof.tx_hash.parse().map_err(|_| {
        invalid(
            "INVALID_PAYMENT_HEADER",
            "X-PAYMENT.payload.txHash",
            "must be 32 bytes of 0x hex",
        )
    })?;
    let tx_text = format!("{tx_hash:#x}");
    let signature = Signature::from_str(proof.signature.trim()).map_err(|_| {
        invalid(
            "INVALID_PAYMENT_HEADER",
            "X-PAYMENT.payload.signature",
            "must be a 65-byte 0x hex signature",
        )
    })?;
    let claimed = proof
        .amount
        .as_deref()
        .map(Amount::from_base_units_str)
        .transpose()
        .map_err(|_| {
            invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT.payload.amount",
                "must be an integer string of base units",
            )
        })?;
    Ok((tx_text, signature, claimed))
}

/// An x402 authorization offered for an order (or to create one).
struct AuthorizationPayment<'a> {
    merchant: &'a MerchantRow,
    existing: Option<OrderRow>,
    chain: &'a Chain,
    currency: &'a str,
    payload: PayloadV1,
    description: &'a str,
    resource: &'a str,
    asked: Option<&'a str>,
}

/// An authorization checked against the merchant and priced: what to verify and settle.
struct PricedAuthorization {
    asset: Asset,
    pay_to: Address,
    value: Amount,
    request: PaymentRequest,
    key: SettlementKey,
}

impl Pelago {
    /// The service over the application's parts.
    pub fn new(
        store: Arc<dyn Store>,
        chains: Arc<ChainRegistry>,
        facilitator: Facilitator,
        settler: Arc<Settler>,
        settle_timeout: std::time::Duration,
        sales: X402Sales,
    ) -> Self {
        Pelago {
            store,
            chains,
            facilitator,
            settler,
            settle_timeout,
            sales,
        }
    }

    /// The (chain, asset, payTo) options a merchant accepts for `currency`, optionally on one
    /// network.
    async fn options(
        &self,
        merchant: &MerchantRow,
        currency: &str,
        network: Option<&str>,
    ) -> Result<Vec<(Chain, Asset, Address)>, PelagoError> {
        let only = match network {
            Some(name) => Some(
                self.chains
                    .by_name(name)
                    .or_else(|| self.chains.by_caip2(name))
                    .ok_or_else(|| {
                        invalid(
                            "INVALID_NETWORK",
                            "network",
                            format!("unknown network {name:?}"),
                        )
                    })?
                    .chain_id,
            ),
            None => None,
        };
        let mut options = Vec::new();
        for row in self.store.pay_tos(&merchant.id).await? {
            if only.is_some_and(|id| id != row.chain_id) {
                continue;
            }
            let Some(chain) = self.chains.by_chain_id(row.chain_id) else {
                continue;
            };
            if chain.rpc_urls.is_empty() {
                continue;
            }
            let Some(asset) = chain.asset_by_symbol(currency) else {
                continue;
            };
            let Ok(pay_to) = row.address.parse::<Address>() else {
                continue;
            };
            if options
                .iter()
                .any(|(c, _, _): &(Chain, Asset, Address)| c.chain_id == chain.chain_id)
            {
                continue;
            }
            options.push((chain.clone(), asset.clone(), pay_to));
        }
        if options.is_empty() {
            return Err(invalid(
                "PAYTO_NOT_CONFIGURED",
                if network.is_some() {
                    "network"
                } else {
                    "currency"
                },
                format!(
                    "the merchant has no x402 payTo address for {currency} on {}; register one with `coffer payto add`",
                    network.unwrap_or("any served network")
                ),
            ));
        }
        Ok(options)
    }

    /// v1 requirements for an order on each option.
    fn requirements(
        order: &OrderRow,
        options: &[(Chain, Asset, Address)],
        resource: &str,
        description: &str,
    ) -> Vec<RequirementsV1> {
        options
            .iter()
            .filter_map(|(chain, asset, pay_to)| {
                let amount = rescale(order.amount, order.decimals, asset.decimals)?;
                Some(RequirementsV1 {
                    scheme: "exact".to_owned(),
                    network: chain.names.x402_v1.clone(),
                    max_amount_required: amount.to_base_units_string(),
                    resource: resource.to_owned(),
                    description: description.to_owned(),
                    mime_type: "application/json".to_owned(),
                    pay_to: pay_to.to_checksum(None),
                    max_timeout_seconds: 300,
                    asset: asset.address.to_checksum(None),
                    output_schema: None,
                    extra: asset
                        .eip712
                        .as_ref()
                        .map(|d| json!({"name": d.name, "version": d.version, "orderId": order.order_id})),
                })
            })
            .collect()
    }

    async fn insert_order(
        &self,
        merchant: &MerchantRow,
        chain: &Chain,
        asset: &Asset,
        pay_to: Address,
        amount: Amount,
        description: &str,
    ) -> Result<OrderRow, PelagoError> {
        let now = now_ms();
        let order_id = new_order_id();
        let order = NewOrder {
            order_id: order_id.clone(),
            merchant_id: merchant.id.clone(),
            chain_id: chain.chain_id,
            blockchain: chain.names.cryptopay_slug.clone(),
            currency: asset.symbol.clone(),
            asset_address: Some(format!("{:#x}", asset.address)),
            decimals: asset.decimals,
            amount,
            underpayment_tolerance: Amount::ZERO,
            receiving_address: pay_to.to_checksum(None),
            derivation_index: 0,
            order_info: json!({"x402": "pelago", "description": description}).to_string(),
            nonce: 0,
            webhook_url: None,
            redirect_url: None,
            idempotency_key: None,
            request_hash: None,
            created_at_ms: now,
            expires_at_ms: now + ORDER_WINDOW_MS,
            // Never watched by address: the payTo is shared; payments arrive through X-PAYMENT.
            monitor_until_ms: now,
            external_reference: None,
            event: order_event(
                merchant,
                &order_id,
                None,
                "payment_order.created",
                Value::Null,
                now,
                false,
            ),
        };
        Ok(self
            .store
            .insert_sale_order(&order, OrderSource::Pelago)
            .await?)
    }

    /// `POST /openapi/crypto/x402/order`.
    ///
    /// # Errors
    /// [`PelagoError`] for bad input, a refused payment or a storage failure.
    #[tracing::instrument(skip_all, fields(merchant = %merchant.id))]
    pub async fn order(
        &self,
        merchant: &MerchantRow,
        request: &OrderRequest,
        x_payment: Option<&str>,
        resource: &str,
    ) -> Result<Outcome, PelagoError> {
        let description = request.description.clone().unwrap_or_default();
        if description.len() > 1024 {
            return Err(invalid(
                "INVALID_DESCRIPTION",
                "description",
                "must be at most 1024 bytes",
            ));
        }
        let currency = request
            .currency
            .clone()
            .unwrap_or_else(|| "USDC".to_owned());
        let existing = match &request.order_id {
            Some(order_id) => Some(self.own_order(merchant, order_id).await?),
            None => None,
        };
        let Some(header) = x_payment else {
            let order = match existing {
                Some(order) => order,
                None => {
                    let options = self
                        .options(merchant, &currency, request.network.as_deref())
                        .await?;
                    let text = request.amount.as_deref().ok_or_else(|| {
                        invalid(
                            "INVALID_AMOUNT",
                            "amount",
                            "required to create an order (a decimal string such as \"2.60\")",
                        )
                    })?;
                    // The order's network: the first where an x402 client can authorize the
                    // payment (EIP-3009), else the first (paid by tx-hash proof).
                    let (chain, asset, pay_to) = options
                        .iter()
                        .find(|(_, asset, _)| asset.transfer_method == TransferMethod::Eip3009)
                        .unwrap_or(&options[0]);
                    let amount =
                        Amount::parse_decimal(text.trim(), asset.decimals).map_err(|e| {
                            invalid("INVALID_AMOUNT", "amount", format!("{text:?}: {e}"))
                        })?;
                    if amount.is_zero() {
                        return Err(invalid(
                            "INVALID_AMOUNT",
                            "amount",
                            "must be greater than zero",
                        ));
                    }
                    self.insert_order(merchant, chain, asset, *pay_to, amount, &description)
                        .await?
                }
            };
            if order.status != OrderStatus::Pending {
                return match order.status {
                    OrderStatus::Confirmed => Ok(Outcome::Confirmed(confirmed(&order.order_id))),
                    other => Err(refused(
                        "ORDER_NOT_PAYABLE",
                        format!("order {} is {other}", order.order_id),
                        Some(&order.order_id),
                    )),
                };
            }
            let mut options = self
                .options(merchant, &order.currency, request.network.as_deref())
                .await?;
            // An order is paid on its own network, and offered on that one only.
            options.retain(|(chain, _, _)| chain.chain_id == order.chain_id);
            if options.is_empty() {
                return Err(invalid(
                    "PAYTO_NOT_CONFIGURED",
                    "orderId",
                    format!(
                        "the merchant no longer has a payTo address on the network of order {}",
                        order.order_id
                    ),
                ));
            }
            return Ok(Outcome::PaymentRequired {
                accepts: Self::requirements(&order, &options, resource, &description),
                order_id: order.order_id,
                error: "X-PAYMENT header is required".to_owned(),
            });
        };
        // One payment at a time per order: a second one waits, then finds the order paid.
        let _paying = match &existing {
            Some(order) => Some(self.sales.hold_order(&order.order_id).await),
            None => None,
        };
        let existing = match existing {
            Some(order) => Some(self.own_order(merchant, &order.order_id).await?),
            None => None,
        };
        let decoded = coffer_x402::headers::decode_bytes(header)
            .ok_or_else(|| invalid("INVALID_PAYMENT_HEADER", "X-PAYMENT", "not base64"))?;
        let payment: Value = serde_json::from_slice(&decoded).map_err(|e| {
            invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT",
                format!("not JSON: {e}"),
            )
        })?;
        let network = payment
            .get("network")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("INVALID_PAYMENT_HEADER", "X-PAYMENT.network", "required"))?;
        if payment.get("scheme").and_then(Value::as_str) != Some("exact") {
            return Err(invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT.scheme",
                "must be \"exact\"",
            ));
        }
        let inner = payment
            .get("payload")
            .ok_or_else(|| invalid("INVALID_PAYMENT_HEADER", "X-PAYMENT.payload", "required"))?;
        if let Some(order) = &existing
            && matches!(
                order.status,
                OrderStatus::Confirmed | OrderStatus::Processing
            )
        {
            // Confirming twice answers the same; a different payment is not taken.
            let sale = self.store.sale_for_order(&order.order_id).await?;
            let same = match (sale, inner.get("txHash").and_then(Value::as_str)) {
                (Some(sale), Some(tx)) => sale.tx_hash.eq_ignore_ascii_case(tx),
                (Some(sale), None) => inner
                    .pointer("/authorization/nonce")
                    .and_then(Value::as_str)
                    .is_some_and(|n| {
                        sale.auth_nonce
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case(n))
                    }),
                _ => false,
            };
            return if same {
                self.once_confirmed(&order.order_id).await
            } else {
                Err(refused(
                    "ORDER_ALREADY_PAID",
                    format!("order {} is paid already", order.order_id),
                    Some(&order.order_id),
                ))
            };
        }
        if let Some(order) = &existing
            && order.status != OrderStatus::Pending
        {
            return Err(refused(
                "ORDER_NOT_PAYABLE",
                format!("order {} is {}", order.order_id, order.status),
                Some(&order.order_id),
            ));
        }
        let chain = self
            .chains
            .by_name(network)
            .filter(|c| !c.rpc_urls.is_empty())
            .ok_or_else(|| {
                invalid(
                    "INVALID_NETWORK",
                    "X-PAYMENT.network",
                    format!("network {network:?} is not served here"),
                )
            })?
            .clone();
        if let Some(order) = &existing {
            let own = self.chains.by_chain_id(order.chain_id);
            if own.is_none_or(|own| own.chain_id != chain.chain_id) {
                return Err(refused(
                    "NETWORK_MISMATCH",
                    format!(
                        "order {} is payable on {} only, not on {}",
                        order.order_id,
                        own.map_or("its own network", |own| own.names.x402_v1.as_str()),
                        chain.names.x402_v1
                    ),
                    Some(&order.order_id),
                ));
            }
        }
        if inner.get("txHash").is_some() {
            let proof: TxProof = serde_json::from_value(inner.clone()).map_err(|e| {
                invalid("INVALID_PAYMENT_HEADER", "X-PAYMENT.payload", e.to_string())
            })?;
            self.pay_with_transfer(
                merchant,
                existing,
                &chain,
                request.currency.as_deref(),
                &proof,
                &description,
            )
            .await
        } else {
            let payload: PayloadV1 = serde_json::from_value(payment.clone())
                .map_err(|e| invalid("INVALID_PAYMENT_HEADER", "X-PAYMENT", e.to_string()))?;
            self.pay_with_authorization(AuthorizationPayment {
                merchant,
                existing,
                chain: &chain,
                currency: &currency,
                payload,
                description: &description,
                resource,
                asked: request.amount.as_deref(),
            })
            .await
        }
    }

    async fn own_order(
        &self,
        merchant: &MerchantRow,
        order_id: &str,
    ) -> Result<OrderRow, PelagoError> {
        match self.store.order(order_id).await {
            Ok(order) if order.merchant_id == merchant.id => Ok(order),
            Ok(_) | Err(StoreError::NotFound(_)) => Err(PelagoError::NotFound),
            Err(error) => Err(error.into()),
        }
    }

    async fn pay_with_authorization(
        &self,
        payment: AuthorizationPayment<'_>,
    ) -> Result<Outcome, PelagoError> {
        let priced = self.priced_authorization(&payment).await?;
        let AuthorizationPayment {
            merchant,
            existing,
            chain,
            description,
            ..
        } = payment;
        let order_id = existing.as_ref().map(|o| o.order_id.as_str());
        // Every check but the validity window, before anything is looked up: a request that
        // names a journaled (payer, nonce) must carry that authorization, signed, for this
        // merchant and this price — never junk that merely reuses the nonce.
        let checked = self
            .facilitator
            .check_terms(&priced.request)
            .map_err(|rejection| {
                refused(
                    "PAYMENT_INVALID",
                    format!("{}: {}", rejection.reason.as_str(1), rejection.message),
                    order_id,
                )
            })?;
        if let Some(answer) = self
            .answer_from_journal(&priced.key, &checked, existing.as_ref(), description)
            .await?
        {
            return Ok(answer);
        }
        let now = self.verified(&priced.request, order_id).await?;
        let order = match existing {
            Some(order) => order,
            None => {
                self.insert_order(
                    merchant,
                    chain,
                    &priced.asset,
                    priced.pay_to,
                    priced.value,
                    description,
                )
                .await?
            }
        };
        self.settle_and_record(&priced, &order, description, now)
            .await
    }

    /// The payment request an authorization makes for this order (or for a new one at its
    /// value): the merchant's payTo, the EIP-3009 token, and the price it must pay.
    async fn priced_authorization(
        &self,
        payment: &AuthorizationPayment<'_>,
    ) -> Result<PricedAuthorization, PelagoError> {
        let AuthorizationPayment {
            merchant,
            existing,
            chain,
            currency,
            payload,
            description,
            resource,
            asked,
        } = payment;
        let asset = chain
            .assets
            .iter()
            .find(|a| {
                a.transfer_method == TransferMethod::Eip3009
                    && a.symbol.eq_ignore_ascii_case(
                        existing.as_ref().map_or(*currency, |o| o.currency.as_str()),
                    )
            })
            .ok_or_else(|| {
                invalid(
                    "INVALID_NETWORK",
                    "X-PAYMENT.network",
                    format!("no EIP-3009 {currency} on {}", chain.key()),
                )
            })?
            .clone();
        let ExactEvmPayload { authorization, .. } = &payload.payload;
        let pay_to: Address = authorization.to.parse().map_err(|_| {
            invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT.payload.authorization.to",
                "not an address",
            )
        })?;
        let owner = self.sales.owner(chain.chain_id, pay_to).await?;
        if owner.as_ref().map(|m| &m.id) != Some(&merchant.id) {
            return Err(refused(
                "invalid_exact_evm_payload_recipient_mismatch",
                "authorization.to is not one of the merchant's payTo addresses",
                existing.as_ref().map(|o| o.order_id.as_str()),
            ));
        }
        let value = Amount::from_base_units_str(&authorization.value).map_err(|_| {
            invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT.payload.authorization.value",
                "not an integer",
            )
        })?;
        let required = match &existing {
            Some(order) => {
                rescale(order.amount, order.decimals, asset.decimals).ok_or_else(|| {
                    refused(
                        "ORDER_NOT_PAYABLE",
                        format!("the order's amount cannot be paid in {}", asset.symbol),
                        Some(&order.order_id),
                    )
                })?
            }
            None => match asked {
                // The body's amount, when given, is what must be paid.
                Some(text) => {
                    let asked =
                        Amount::parse_decimal(text.trim(), asset.decimals).map_err(|e| {
                            invalid("INVALID_AMOUNT", "amount", format!("{text:?}: {e}"))
                        })?;
                    if asked != value {
                        return Err(refused(
                            "PAYMENT_INVALID",
                            format!(
                                "authorization.value {} differs from amount {text}",
                                value.to_base_units_string()
                            ),
                            None,
                        ));
                    }
                    asked
                }
                None => value,
            },
        };
        let requirements = RequirementsV1 {
            scheme: "exact".to_owned(),
            network: chain.names.x402_v1.clone(),
            max_amount_required: required.to_base_units_string(),
            resource: (*resource).to_owned(),
            description: (*description).to_owned(),
            mime_type: "application/json".to_owned(),
            pay_to: pay_to.to_checksum(None),
            max_timeout_seconds: 300,
            asset: asset.address.to_checksum(None),
            output_schema: None,
            extra: asset
                .eip712
                .as_ref()
                .map(|d| json!({"name": d.name, "version": d.version})),
        };
        let mut payload = payload.clone();
        payload.network = chain.names.x402_v1.clone();
        let request = PaymentRequest::V1 {
            payload,
            requirements,
        };
        let key = settlement_key(&self.chains, &request).ok_or_else(|| {
            invalid(
                "INVALID_PAYMENT_HEADER",
                "X-PAYMENT.payload.authorization",
                "from and nonce must be an address and 32 bytes",
            )
        })?;
        Ok(PricedAuthorization {
            asset,
            pay_to,
            value,
            request,
            key,
        })
    }

    /// The answer the journal already holds for this authorization, if any: pending, paid (this
    /// order or the sale it made), or used for something else. `None` when it was never
    /// settled or its settlement failed (the settle call answers that).
    async fn answer_from_journal(
        &self,
        key: &SettlementKey,
        checked: &CheckedPayment,
        existing: Option<&OrderRow>,
        description: &str,
    ) -> Result<Option<Outcome>, PelagoError> {
        let order_id = existing.map(|o| o.order_id.as_str());
        let Some(row) = self.store.settlement(key).await? else {
            return Ok(None);
        };
        if same_terms(&row, checked).is_err() {
            return Err(refused(
                "PAYMENT_ALREADY_USED",
                "this authorization's nonce was already used with other terms",
                order_id,
            ));
        }
        // Only a settlement made for this order pays it: one made for another order, or for
        // another purchase altogether (the paywall, another seller), never does.
        let made_for_this = match (&row.order_id, existing) {
            (Some(bound), Some(order)) => *bound == order.order_id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !made_for_this {
            return Err(refused(
                "PAYMENT_ALREADY_USED",
                "this authorization was settled for another purchase",
                order_id,
            ));
        }
        match row.status {
            SettlementStatus::Broadcast | SettlementStatus::Pending => Err(refused(
                "SETTLEMENT_PENDING",
                format!(
                    "settlement_pending: transaction {} is broadcast; retry shortly, do not pay again",
                    row.tx_hash.as_deref().unwrap_or("(not yet signed)")
                ),
                row.order_id.as_deref().or(order_id),
            )),
            SettlementStatus::Succeeded => {
                let recorded = match self.sales.record_key(key, description, existing).await {
                    Ok(recorded) => recorded,
                    // Settled, but its transaction is not on the chain now (a reorg
                    // dropped it; the reconciler sends it again): in flight, not an outage.
                    Err(crate::sales::SaleError::Chain { message, .. })
                        if message.starts_with("no receipt") =>
                    {
                        return Err(refused(
                            "SETTLEMENT_PENDING",
                            format!(
                                "settlement_pending: transaction {} is not on the chain now; it is being sent again — query the order, do not pay again",
                                row.tx_hash.as_deref().unwrap_or("(unknown)")
                            ),
                            row.order_id.as_deref().or(order_id),
                        ));
                    }
                    Err(error) => return Err(PelagoError::Unavailable(error.to_string())),
                };
                match recorded {
                    Some(recorded)
                        if existing.is_none_or(|o| o.order_id == recorded.order().order_id) =>
                    {
                        self.once_confirmed(&recorded.order().order_id)
                            .await
                            .map(Some)
                    }
                    _ => Err(refused(
                        "PAYMENT_ALREADY_USED",
                        "this authorization was settled for another order",
                        order_id,
                    )),
                }
            }
            // A failed settlement answers its failure through the settle call.
            SettlementStatus::Failed => Ok(None),
        }
    }

    /// Verifies the payment now; the time it was verified at, or why it is refused.
    async fn verified(
        &self,
        request: &PaymentRequest,
        order_id: Option<&str>,
    ) -> Result<u64, PelagoError> {
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
        let verified = self.facilitator.verify(request, now).await;
        let unavailable = Reason::ChainUnavailable.as_str(request.version());
        if verified.invalid_reason.as_deref() == Some(unavailable) {
            return Err(PelagoError::Unavailable(unavailable.to_owned()));
        }
        if !verified.is_valid {
            let reason = verified
                .invalid_reason
                .unwrap_or_else(|| "invalid_payment".to_owned());
            let message = verified.invalid_message.unwrap_or_default();
            return Err(refused(
                "PAYMENT_INVALID",
                format!("{reason}: {message}"),
                order_id,
            ));
        }
        Ok(now)
    }

    /// Settles a verified authorization for `order` and records it as the order's payment.
    async fn settle_and_record(
        &self,
        priced: &PricedAuthorization,
        order: &OrderRow,
        description: &str,
        now: u64,
    ) -> Result<Outcome, PelagoError> {
        let PricedAuthorization { request, key, .. } = priced;
        let settled = self
            .settler
            .settle_for(request, now, self.settle_timeout, Some(&order.order_id))
            .await;
        if settled.error_reason.as_deref() == Some(UNEXPECTED_SETTLE_ERROR) {
            // Something failed on the way. If the journal holds a transaction, the payment may
            // land: it is pending, never "nothing was sent" (the client would pay again).
            if let Ok(Some(row)) = self.store.settlement(key).await
                && let Some(tx_hash) = row.tx_hash
            {
                return Err(refused(
                    "SETTLEMENT_PENDING",
                    format!(
                        "settlement_pending: transaction {tx_hash} is broadcast; query the order, do not pay again"
                    ),
                    Some(&order.order_id),
                ));
            }
            return Err(PelagoError::Unavailable(UNEXPECTED_SETTLE_ERROR.to_owned()));
        }
        // The journal may have answered for a settlement another purchase made meanwhile (the
        // paywall, with the same payment): it does not pay this order.
        if settled.success
            && self
                .store
                .settlement(key)
                .await?
                .is_none_or(|row| row.order_id.as_deref() != Some(order.order_id.as_str()))
        {
            return Err(refused(
                "PAYMENT_ALREADY_USED",
                "this authorization was settled for another purchase",
                Some(&order.order_id),
            ));
        }
        if !settled.success {
            let reason = settled.error_reason.unwrap_or_default();
            let code = if reason == SETTLEMENT_PENDING {
                "SETTLEMENT_PENDING"
            } else {
                "SETTLEMENT_FAILED"
            };
            let message = if reason == SETTLEMENT_PENDING {
                format!(
                    "settlement_pending: transaction {} is broadcast; query the order, do not pay again",
                    settled.transaction
                )
            } else {
                format!("{reason}: {}", settled.error_message.unwrap_or_default())
            };
            return Err(refused(code, message, Some(&order.order_id)));
        }
        let recorded = match self.sales.record_key(key, description, Some(order)).await {
            Ok(recorded) => recorded,
            // Settled, but not a payment of this order: said as it is, not as an outage.
            Err(crate::sales::SaleError::NotThisOrder { message, .. }) => {
                return Err(refused(
                    "PAYMENT_NOT_FOR_ORDER",
                    message,
                    Some(&order.order_id),
                ));
            }
            Err(error) => return Err(PelagoError::Unavailable(error.to_string())),
        };
        match recorded {
            Some(recorded) if recorded.order().order_id == order.order_id => {
                self.once_confirmed(&order.order_id).await
            }
            Some(recorded @ Recorded::New(_)) => Err(refused(
                "ORDER_ALREADY_PAID",
                format!(
                    "order {} was paid by another payment meanwhile; this one was recorded as its own sale {}",
                    order.order_id,
                    recorded.order().order_id
                ),
                Some(&order.order_id),
            )),
            Some(Recorded::Already(_)) | None => Err(refused(
                "PAYMENT_ALREADY_USED",
                "this authorization was recorded for another order",
                Some(&order.order_id),
            )),
        }
    }

    /// Answers `confirmed` once the order's payment has the chain's confirmations, waiting up
    /// to the settlement bound; a payment still confirming then is `CONFIRMING` (202): the
    /// money has moved, the client should query the order rather than pay again.
    async fn once_confirmed(&self, order_id: &str) -> Result<Outcome, PelagoError> {
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        loop {
            let order = self
                .sales
                .confirm_if_deep(order_id)
                .await
                .map_err(|e| PelagoError::Unavailable(e.to_string()))?;
            match order.status {
                OrderStatus::Confirmed => return Ok(Outcome::Confirmed(confirmed(order_id))),
                OrderStatus::Processing if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                OrderStatus::Processing => {
                    return Err(refused(
                        "CONFIRMING",
                        format!(
                            "order {order_id} is paid and waiting for confirmations; query it, do not pay again"
                        ),
                        Some(order_id),
                    ));
                }
                other => {
                    return Err(refused(
                        "ORDER_NOT_PAYABLE",
                        format!("order {order_id} is {other}"),
                        Some(order_id),
                    ));
                }
            }
        }
    }

    async fn pay_with_transfer(
        &self,
        merchant: &MerchantRow,
        existing: Option<OrderRow>,
        chain: &Chain,
        currency: Option<&str>,
        proof: &TxProof,
        description: &str,
    ) -> Result<Outcome, PelagoError> {
        let order_id = existing.as_ref().map(|o| o.order_id.as_str());
        let (tx_text, signature, claimed) = parse_proof(proof)?;
        let (asset, transfer) = self
            .transfer_paying(
                merchant,
                existing.as_ref(),
                chain,
                currency,
                &tx_text,
                claimed,
            )
            .await?;
        let transfer = &transfer;
        if let Some(claimed) = claimed
            && Amount::from_base_units(transfer.value) < claimed
        {
            return Err(refused(
                "TX_AMOUNT_MISMATCH",
                "payload.amount exceeds the transfer",
                order_id,
            ));
        }
        let message = proof_message(order_id.unwrap_or(""), &tx_text);
        let signer = signature
            .recover_address_from_msg(message.as_bytes())
            .map_err(|_| {
                invalid(
                    "INVALID_PAYMENT_HEADER",
                    "X-PAYMENT.payload.signature",
                    "does not recover",
                )
            })?;
        if signer != transfer.from {
            return Err(refused(
                "TX_NOT_PAYERS",
                "payload.signature is not by the transfer's sender: sign the order id and tx hash with the paying account",
                order_id,
            ));
        }
        self.check_made_for_order(chain, transfer, existing.as_ref(), &tx_text)
            .await?;
        if let Some(used) = self.payment_owner(chain.chain_id, &tx_text).await? {
            return Err(refused(
                "TX_ALREADY_USED",
                format!("transaction {tx_text} already paid order {used}"),
                order_id,
            ));
        }
        let order = match existing {
            Some(order) => order,
            None => {
                let pay_to = transfer.to;
                self.insert_order(
                    merchant,
                    chain,
                    &asset,
                    pay_to,
                    Amount::from_base_units(transfer.value),
                    description,
                )
                .await?
            }
        };
        match self
            .sales
            .record_transfer(&order, chain.chain_id, &tx_text, transfer)
            .await
        {
            Ok(Recorded::New(_) | Recorded::Already(_)) => {
                self.once_confirmed(&order.order_id).await
            }
            Err(crate::sales::SaleError::Store(StoreError::Conflict(
                coffer_store::Constraint::Payment,
            ))) => Err(refused(
                "TX_ALREADY_USED",
                format!("transaction {tx_text} already paid another order"),
                Some(&order.order_id),
            )),
            Err(crate::sales::SaleError::Store(StoreError::Conflict(_))) => Err(refused(
                "ORDER_NOT_PAYABLE",
                format!("order {} changed meanwhile; query it", order.order_id),
                Some(&order.order_id),
            )),
            Err(error) => Err(PelagoError::Unavailable(error.to_string())),
        }
    }

    /// The transfer of `tx_text` that pays the merchant: of the order's token (else the one asked
    /// for, else any of the chain's), to one of its payTo addresses, of at least the order's
    /// amount (else the amount the proof claims), the largest such.
    async fn transfer_paying(
        &self,
        merchant: &MerchantRow,
        existing: Option<&OrderRow>,
        chain: &Chain,
        currency: Option<&str>,
        tx_text: &str,
        claimed: Option<Amount>,
    ) -> Result<(Asset, FoundTransfer), PelagoError> {
        let order_id = existing.map(|o| o.order_id.as_str());
        // The token: the order's; else the one asked for; else any token of the chain.
        let symbol = existing.map(|o| o.currency.as_str()).or(currency);
        let assets: Vec<Asset> = match symbol {
            Some(symbol) => vec![
                chain
                    .asset_by_symbol(symbol)
                    .ok_or_else(|| {
                        invalid(
                            "INVALID_NETWORK",
                            "X-PAYMENT.network",
                            format!("no {symbol} on {}", chain.key()),
                        )
                    })?
                    .clone(),
            ],
            None => chain.assets.clone(),
        };
        let pay_tos: Vec<Address> = self
            .store
            .pay_tos(&merchant.id)
            .await?
            .iter()
            .filter(|row| row.chain_id == chain.chain_id)
            .filter_map(|row| row.address.parse().ok())
            .collect();
        let receipt = match self.sales.receipt(chain.chain_id, tx_text).await {
            Ok(receipt) => receipt,
            Err(crate::sales::SaleError::Chain { message, .. })
                if message.starts_with("no receipt") =>
            {
                return Err(refused(
                    "TX_NOT_FOUND",
                    format!("transaction {tx_text} is not mined on {}", chain.key()),
                    order_id,
                ));
            }
            Err(error) => return Err(PelagoError::Unavailable(error.to_string())),
        };
        let mut found = None;
        for asset in &assets {
            let required = match existing {
                Some(order) => rescale(order.amount, order.decimals, asset.decimals),
                None => claimed,
            };
            let best = pay_tos
                .iter()
                .flat_map(|pay_to| transfers_to(&receipt, asset.address, *pay_to))
                .filter(|t| required.is_none_or(|r| Amount::from_base_units(t.value) >= r))
                .max_by_key(|t| t.value);
            if let Some(best) = best {
                found = Some((asset.clone(), best));
                break;
            }
        }
        let Some((asset, transfer)) = found else {
            return Err(refused(
                "TX_NOT_A_PAYMENT",
                format!(
                    "transaction {tx_text} has no transfer of {} of at least the amount to the merchant's payTo on {}",
                    symbol.unwrap_or("an accepted token"),
                    chain.key()
                ),
                order_id,
            ));
        };
        Ok((asset, transfer))
    }

    /// Refuses a transfer not made for this order, or not yet deep enough to count.
    async fn check_made_for_order(
        &self,
        chain: &Chain,
        transfer: &FoundTransfer,
        existing: Option<&OrderRow>,
        tx_text: &str,
    ) -> Result<(), PelagoError> {
        let order_id = existing.map(|o| o.order_id.as_str());
        // A transfer pays an order only if it was made for it: mined after the order was
        // created (allowing for clocks), or, for an order created by this very proof, within
        // one order window.
        let mined_at = self
            .sales
            .block_timestamp(chain.chain_id, transfer.block_number)
            .await
            .map_err(|e| PelagoError::Unavailable(e.to_string()))?;
        let not_before_ms = match existing {
            Some(order) => order.created_at_ms.saturating_sub(CLOCK_SKEW_MS),
            None => now_ms().saturating_sub(ORDER_WINDOW_MS),
        };
        if i64::try_from(mined_at)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
            < not_before_ms
        {
            return Err(refused(
                "TX_TOO_OLD",
                format!(
                    "transaction {tx_text} was mined before this order was created; pay the order with a new transfer"
                ),
                order_id,
            ));
        }
        let head = self
            .sales
            .block_number(chain.chain_id)
            .await
            .map_err(|e| PelagoError::Unavailable(e.to_string()))?;
        let confirmations = head.saturating_sub(transfer.block_number) + 1;
        if confirmations < chain.confirmations.max(1) {
            return Err(refused(
                "TX_NOT_CONFIRMED",
                format!(
                    "transaction {tx_text} has {confirmations} of {} confirmations; retry shortly",
                    chain.confirmations
                ),
                order_id,
            ));
        }
        Ok(())
    }

    /// The order a transaction already pays, if any.
    async fn payment_owner(
        &self,
        chain_id: u64,
        tx_hash: &str,
    ) -> Result<Option<String>, PelagoError> {
        Ok(self.store.order_paid_by(chain_id, tx_hash).await?)
    }

    /// `GET /openapi/crypto/x402/order/{orderId}`.
    ///
    /// # Errors
    /// [`PelagoError::NotFound`] for an unknown order or someone else's.
    #[tracing::instrument(skip_all, fields(merchant = %merchant.id, order_id = %order_id))]
    pub async fn status(
        &self,
        merchant: &MerchantRow,
        order_id: &str,
    ) -> Result<OrderStatusView, PelagoError> {
        let order = match self.store.order(order_id).await {
            Ok(order) if order.merchant_id == merchant.id => order,
            Ok(_) | Err(StoreError::NotFound(_)) => return Err(PelagoError::NotFound),
            Err(error) => return Err(error.into()),
        };
        let payments = self.store.payments_for_order(order_id).await?;
        let tx_hash = payments
            .iter()
            .rev()
            .find(|p| !p.orphaned)
            .map(|p| p.payment.tx_hash.clone())
            .unwrap_or_default();
        let paid = !order.amount_paid.is_zero();
        let message = match order.status {
            OrderStatus::Confirmed => "Payment successful",
            OrderStatus::Pending => "Awaiting payment",
            OrderStatus::Processing => "Payment detected, awaiting confirmations",
            OrderStatus::Expired => "Order expired",
            OrderStatus::Failed => "Payment failed",
        };
        Ok(OrderStatusView {
            order_id: order.order_id.clone(),
            message: message.to_owned(),
            order_status: order.status.to_string(),
            pay_status: if paid { "paid" } else { "unpaid" }.to_owned(),
            paid_amount: order.amount_paid.to_decimal_string_min(order.decimals, 2),
            transaction_fee: "0".to_owned(),
            gas_fee: "0".to_owned(),
            tx_hash,
        })
    }

    /// The supported payment methods: for each network and token the merchant can be paid in,
    /// the schemes and payment forms accepted.
    ///
    /// # Errors
    /// [`PelagoError::Store`] when reading fails.
    pub async fn methods(&self, merchant: &MerchantRow) -> Result<Value, PelagoError> {
        let mut methods = Vec::new();
        for row in self.store.pay_tos(&merchant.id).await? {
            let Some(chain) = self.chains.by_chain_id(row.chain_id) else {
                continue;
            };
            if chain.rpc_urls.is_empty() {
                continue;
            }
            let pay_to = row
                .address
                .parse::<Address>()
                .map_or_else(|_| row.address.clone(), |a| a.to_checksum(None));
            for asset in &chain.assets {
                let mut forms = vec!["txHash"];
                if asset.transfer_method == TransferMethod::Eip3009 {
                    forms.insert(0, "eip3009");
                }
                methods.push(json!({
                    "network": chain.names.x402_v1,
                    "caip2": chain.names.caip2,
                    "chainId": chain.chain_id,
                    "currency": asset.symbol,
                    "asset": asset.address.to_checksum(None),
                    "decimals": asset.decimals,
                    "scheme": "exact",
                    "paymentForms": forms,
                    "payTo": pay_to,
                    "confirmations": chain.confirmations,
                }));
            }
        }
        Ok(json!({"x402Version": 1, "methods": methods}))
    }
}

fn confirmed(order_id: &str) -> Confirmed {
    Confirmed {
        order_id: order_id.to_owned(),
        status: "confirmed",
        message: "Payment successful",
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use proptest::prelude::*;

    use super::*;
    use crate::hostile_input::json_value;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn an_x_payment_header_decodes_to_what_was_encoded(value in json_value()) {
            let decoded = coffer_x402::headers::decode_bytes(&coffer_x402::headers::encode(&value));
            prop_assert_eq!(decoded, Some(serde_json::to_vec(&value).unwrap()));
        }

        #[test]
        fn a_tx_hash_proof_signs_for_its_own_order_and_transaction_only(
            order_id in "CO[0-9]{34}",
            tx_hash in any::<[u8; 32]>(),
            mutate_order in any::<bool>(),
            position in any::<prop::sample::Index>(),
            replacement in "[0-9a-fA-FxCO]",
        ) {
            let payer = PrivateKeySigner::random();
            let tx_hash = format!("{:#x}", B256::from(tx_hash));
            let signature = payer
                .sign_message_sync(proof_message(&order_id, &tx_hash).as_bytes())
                .unwrap();
            let (mut order, mut hash) = (order_id.clone(), tx_hash.clone());
            let target = if mutate_order { &mut order } else { &mut hash };
            let at = position.index(target.len());
            target.replace_range(at..=at, &replacement);
            // The hash is signed in lower case: another case is the same transaction.
            let same = order == order_id && hash.eq_ignore_ascii_case(&tx_hash);
            let recovered = signature
                .recover_address_from_msg(proof_message(&order, &hash).as_bytes())
                .ok();
            prop_assert_eq!(recovered == Some(payer.address()), same);
        }
    }
}
