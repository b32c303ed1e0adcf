//! The GatePay checkout flows over Coffer's payment orders: create, query, close, refund.
//!
//! A GatePay order *is* a payment order (same deposit address, watcher, confirmations, reorg
//! handling and expiry); this service only adds GatePay's names for it (`prepayId`, the
//! merchant's unique `merchantTradeNo`) and renders it in GatePay's fields. What the creating
//! request said (terminal, goods, channel, surcharge, `cancelUrl`, the credential) is stored
//! with those names ([`GatePayOrderRow`]) and read from there, never from the order's
//! `order_info`: that is the merchant's free text, and for a GatePay order it only describes
//! the order (`{"merchantTradeNo":…,"goods":{…}}`) for the payment-orders API's listings.
//!
//! `returnUrl` and `cancelUrl` must be absolute http(s) URLs ([`crate::pages::safety`]); refunds
//! are checked against what was paid and recorded in one store transaction, so concurrent
//! requests can never refund more than was paid.

use axum::http::StatusCode;
use coffer_core::{Amount, Asset, Chain, OrderStatus};
use coffer_store::{
    Constraint, ExternalReference, GatePayOrderRow, GatePayRefundRow, MerchantRow, OrderRow,
    RefundDecision, StoreError,
};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use coffer_gateway::fiat::USD_STABLECOINS;
use coffer_gateway::gatepay::OrderFacts;
use coffer_gateway::orders::{
    OrderCommand, OrderError, OrderField, OrderView, Reevaluation, new_order_id, reevaluate,
};

/// How long a GatePay order stays payable when the request gives no `orderExpireTime`
/// (GatePay's default).
pub const DEFAULT_EXPIRY_MS: i64 = 60 * 60 * 1000;

/// A failure in GatePay's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePayError {
    /// HTTP status (4xx for anything the caller can fix, 500 for Coffer's own failures).
    pub status: StatusCode,
    /// GatePay's code (`400001` …).
    pub code: &'static str,
    /// GatePay's label (`PARAM_ERROR` …).
    pub label: &'static str,
    /// What went wrong, starting with the field at fault.
    pub message: String,
}

impl GatePayError {
    /// A 400 about a request field.
    pub fn param(field: &str, message: impl std::fmt::Display) -> Self {
        GatePayError {
            status: StatusCode::BAD_REQUEST,
            code: "400001",
            label: "PARAM_ERROR",
            message: format!("{field}: {message}"),
        }
    }

    fn with(status: StatusCode, code: &'static str, label: &'static str, message: String) -> Self {
        GatePayError {
            status,
            code,
            label,
            message,
        }
    }

    /// Coffer failed (storage); the caller may retry with the same parameters.
    pub fn system(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "GatePay request failed");
        GatePayError::with(
            StatusCode::INTERNAL_SERVER_ERROR,
            "300000",
            "SYSTEM_ERROR",
            "system error, retry with the same parameters".to_owned(),
        )
    }

    /// `400202`: no order of this merchant is `value` in `field`.
    fn order_not_found(field: &str, value: &str) -> Self {
        GatePayError::with(
            StatusCode::NOT_FOUND,
            "400202",
            "ORDER_NOT_EXIST",
            format!("{field}: order {value:?} does not exist (for this ClientId's merchant)"),
        )
    }
}

impl From<StoreError> for GatePayError {
    fn from(error: StoreError) -> Self {
        GatePayError::system(&error)
    }
}

/// Parses a request body, a JSON object, naming the field at fault.
///
/// # Errors
/// `400001` naming the field (or `body` for malformed JSON or a value that is not an object),
/// also for text holding a NUL character.
pub fn parse<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, GatePayError> {
    crate::json::parse_object(raw).map_err(|error| GatePayError::param(&error.field, error.message))
}

/// `env` of a checkout order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Env {
    /// `APP`, `WEB`, `WAP`, `MINIAPP` or `OTHERS` (case-insensitive).
    #[schema(pattern = "^(APP|WEB|WAP|MINIAPP|OTHERS)$")]
    pub terminal_type: String,
}

/// `goods` of a checkout order.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Goods {
    /// Goods type code (`02`).
    #[serde(default)]
    #[schema(max_length = 32)]
    pub goods_type: Option<String>,
    /// Name.
    #[serde(default)]
    #[schema(max_length = 160)]
    pub goods_name: Option<String>,
    /// Details.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub goods_detail: Option<String>,
}

/// `POST /v1/pay/checkout/order` body (unknown fields are ignored, as GatePay's SDKs send
/// more than the docs list). The token is `fullCurrType`, or `chain` with `currency` (or
/// `payCurrency`); the price is `orderAmount`, or `fiatCurrency` with `fiatAmount`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutOrderRequest {
    /// Unique per merchant: 1 to 100 letters, digits, '-' or '_'.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,100}$")]
    pub merchant_trade_no: String,
    /// Terminal.
    pub env: Env,
    /// Goods.
    pub goods: Goods,
    /// The consumer's id on the merchant's platform.
    #[serde(default)]
    pub merchant_user_id: Option<i64>,
    /// GatePay chain code (`MATIC`), one of the configured chains'.
    #[serde(default)]
    pub chain: Option<String>,
    /// `<SYMBOL>_<CHAIN>` (`USDT_MATIC`), one of the configured chains' tokens.
    #[serde(default)]
    pub full_curr_type: Option<String>,
    /// Token symbol of `orderAmount`: the token of `fullCurrType` (Coffer does not convert).
    #[serde(default)]
    pub currency: Option<String>,
    /// Amount, a decimal string with no more decimals than the token has.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$")]
    pub order_amount: Option<String>,
    /// Surcharge borne by the consumer, added to the amount to pay.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$")]
    pub surcharge_amount: Option<String>,
    /// How much less than the amount still completes the order.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$")]
    pub tolerance_amount: Option<String>,
    /// Fiat currency of `fiatAmount`.
    #[serde(default)]
    pub fiat_currency: Option<String>,
    /// Fiat price, at most 2 decimals.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    pub fiat_amount: Option<String>,
    /// Token the consumer pays in (must be the order's token).
    #[serde(default)]
    pub pay_currency: Option<String>,
    /// End of the payment window, unix ms (default one hour).
    #[serde(default)]
    pub order_expire_time: Option<i64>,
    /// Where to send the consumer after paying: an absolute http(s) URL of at most 512
    /// characters, without spaces or credentials.
    #[serde(default)]
    #[schema(format = "uri", max_length = 512)]
    pub return_url: Option<String>,
    /// Where to send the consumer after a cancel or expiry, as `returnUrl`.
    #[serde(default)]
    #[schema(format = "uri", max_length = 512)]
    pub cancel_url: Option<String>,
    /// Client name, at most 32 characters.
    #[serde(default)]
    #[schema(max_length = 32)]
    pub channel_id: Option<String>,
    /// Notification URL for this order (else the merchant's webhook endpoint): an http(s)
    /// URL of at most 512 characters.
    #[serde(default)]
    #[schema(format = "uri", max_length = 512)]
    pub callback_url: Option<String>,
}

/// `POST /v1/pay/order/query` and `/close` body: exactly one of the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderRef {
    /// `prepayId`.
    #[serde(default)]
    pub prepay_id: Option<String>,
    /// `merchantTradeNo`.
    #[serde(default)]
    pub merchant_trade_no: Option<String>,
}

/// `POST /v1/pay/order/refund` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    /// Unique per merchant.
    pub refund_request_id: String,
    /// The paid order.
    pub prepay_id: String,
    /// Amount in the order's token.
    pub refund_amount: String,
    /// Why.
    #[serde(default)]
    pub refund_reason: Option<String>,
}

/// `POST /v1/pay/order/refund/query` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundQuery {
    /// The refund.
    pub refund_request_id: String,
}

fn is_identifier(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The longest `returnUrl` or `cancelUrl` accepted.
const MAX_PAGE_LINK: usize = 512;

fn check_url(field: &str, url: Option<&String>) -> Result<(), GatePayError> {
    if let Some(url) = url
        && !((url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 512
            && !url.contains(char::is_whitespace))
    {
        return Err(GatePayError::param(
            field,
            "must be an http:// or https:// URL of at most 512 characters",
        ));
    }
    Ok(())
}

/// `400624 INVALID_CALLBACK_URL`, GatePay's code for a `callbackUrl` it will not call.
fn invalid_callback_url(error: GatePayError) -> GatePayError {
    GatePayError {
        code: "400624",
        label: "INVALID_CALLBACK_URL",
        ..error
    }
}

fn invalid_currency(message: String) -> GatePayError {
    GatePayError::with(
        StatusCode::BAD_REQUEST,
        "400205",
        "INVALID_CURRENCY",
        message,
    )
}

/// The chain and token a request asks for.
fn resolve<'a>(
    state: &'a AppState,
    request: &CheckoutOrderRequest,
) -> Result<(&'a Chain, &'a Asset), GatePayError> {
    let supported = || {
        state
            .gateway
            .chains
            .configured()
            .flat_map(|chain| {
                chain
                    .assets
                    .iter()
                    .map(|a| a.gatepay_full_curr_type.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (chain, asset) = match (&request.full_curr_type, &request.chain) {
        (Some(full), chain_code) => {
            let known = state.gateway.chains.by_gatepay_full_curr_type(full.trim());
            let (chain, asset) = known
                .filter(|(chain, _)| !chain.rpc_urls.is_empty())
                .ok_or_else(|| {
                    let why = match known {
                        Some((chain, _)) => chain.rpc_urls_hint(),
                        None => "is not supported here".to_owned(),
                    };
                    invalid_currency(format!(
                        "fullCurrType: {full:?} {why}; use one of: {}",
                        supported()
                    ))
                })?;
            if let Some(code) = chain_code
                && !chain.names.gatepay_chain.eq_ignore_ascii_case(code.trim())
            {
                return Err(GatePayError::param(
                    "chain",
                    format!(
                        "{code:?} does not match fullCurrType {full:?} (chain {})",
                        chain.names.gatepay_chain
                    ),
                ));
            }
            (chain, asset)
        }
        (None, Some(code)) => {
            let known = state.gateway.chains.by_gatepay_chain(code.trim());
            let chain = known
                .filter(|chain| !chain.rpc_urls.is_empty())
                .ok_or_else(|| {
                    let why = match known {
                        Some(chain) => chain.rpc_urls_hint(),
                        None => "is not supported here".to_owned(),
                    };
                    GatePayError::param(
                        "chain",
                        format!("{code:?} {why}; use fullCurrType, one of: {}", supported()),
                    )
                })?;
            let symbol = request
                .pay_currency
                .as_ref()
                .or(request.currency.as_ref())
                .ok_or_else(|| {
                    GatePayError::param("fullCurrType", "is required (e.g. \"USDT_MATIC\")")
                })?;
            let asset = chain.asset_by_symbol(symbol.trim()).ok_or_else(|| {
                invalid_currency(format!(
                    "currency: {symbol:?} is not supported on {}",
                    chain.names.gatepay_chain
                ))
            })?;
            (chain, asset)
        }
        (None, None) => {
            return Err(GatePayError::param(
                "fullCurrType",
                "is required (e.g. \"USDT_MATIC\")",
            ));
        }
    };
    for (field, symbol) in [
        ("currency", &request.currency),
        ("payCurrency", &request.pay_currency),
    ] {
        if let Some(symbol) = symbol
            && !symbol.trim().eq_ignore_ascii_case(&asset.symbol)
        {
            return Err(invalid_currency(format!(
                "{field}: {symbol:?} differs from the token of fullCurrType ({}); Coffer does not convert between tokens",
                asset.symbol
            )));
        }
    }
    Ok((chain, asset))
}

fn parse_token_amount(field: &str, text: &str, decimals: u8) -> Result<Amount, GatePayError> {
    Amount::parse_decimal(text.trim(), decimals)
        .map_err(|error| GatePayError::param(field, format!("{text:?}: {error}")))
}

/// Maps a payment-order error to GatePay's, renaming the fields to GatePay's.
fn from_order_error(error: OrderError) -> GatePayError {
    match error {
        OrderError::Invalid { field, message, .. } => {
            let field = match field {
                OrderField::Amount => "orderAmount",
                OrderField::FiatAmount => "fiatAmount",
                OrderField::FiatCurrency => "fiatCurrency",
                OrderField::Currency => "currency",
                OrderField::Blockchain => "chain",
                OrderField::ExpiresAt => "orderExpireTime",
                OrderField::UnderpaymentTolerance => "toleranceAmount",
                OrderField::RedirectUrl => "returnUrl",
                OrderField::WebhookUrl => "callbackUrl",
                other => other.native_name(),
            };
            if field == "fiatCurrency" {
                invalid_currency(format!("{field}: {message}"))
            } else if field == "callbackUrl" {
                invalid_callback_url(GatePayError::param(field, message))
            } else {
                GatePayError::param(field, message)
            }
        }
        OrderError::WalletNotConfigured(chain) => GatePayError::param(
            "chain",
            format!(
                "no deposit wallet is configured for {chain}; set one with `coffer wallet set`"
            ),
        ),
        OrderError::Store(error) => GatePayError::system(&error),
        other => GatePayError::system(&other),
    }
}

fn format_amount(amount: Amount, decimals: u8) -> String {
    amount.to_decimal_string(decimals)
}

/// Creates a checkout order; returns the response `data`.
///
/// # Errors
/// [`GatePayError`]: `400001` naming the field, `400624` for a `callbackUrl` that is malformed
/// or goes where the outbound policy forbids, `400205` for an unsupported currency, `400201`
/// for a `merchantTradeNo` used before, `300000` when storage fails.
pub async fn create(
    state: &AppState,
    merchant: &MerchantRow,
    client_id: &str,
    raw: &[u8],
) -> Result<Value, GatePayError> {
    let request: CheckoutOrderRequest = parse(raw)?;
    if !is_identifier(&request.merchant_trade_no, 100) {
        return Err(GatePayError::param(
            "merchantTradeNo",
            "must be 1 to 100 letters, digits, '-' or '_'",
        ));
    }
    let terminal = request.env.terminal_type.trim().to_ascii_uppercase();
    if !["APP", "WEB", "WAP", "MINIAPP", "OTHERS"].contains(&terminal.as_str()) {
        return Err(GatePayError::param(
            "env.terminalType",
            "must be one of APP, WEB, WAP, MINIAPP, OTHERS",
        ));
    }
    for (field, text, max) in [
        ("goods.goodsType", &request.goods.goods_type, 32),
        ("goods.goodsName", &request.goods.goods_name, 160),
        ("goods.goodsDetail", &request.goods.goods_detail, 256),
        ("channelId", &request.channel_id, 32),
    ] {
        if text.as_ref().is_some_and(|t| t.chars().count() > max) {
            return Err(GatePayError::param(
                field,
                format!("must be at most {max} characters"),
            ));
        }
    }
    for (field, link) in [
        ("returnUrl", &request.return_url),
        ("cancelUrl", &request.cancel_url),
    ] {
        if let Some(link) = link
            && !coffer_gateway::links::is_page_link(link, MAX_PAGE_LINK)
        {
            return Err(GatePayError::param(
                field,
                format!(
                    "must be an absolute http:// or https:// URL of at most {MAX_PAGE_LINK} characters, without spaces or credentials"
                ),
            ));
        }
    }
    if let Some(url) = &request.callback_url {
        check_url("callbackUrl", Some(url)).map_err(invalid_callback_url)?;
        // Coffer calls this URL: it must go where the outbound policy allows. Addresses and
        // localhost are refused here, before anything is written; a host name is looked up
        // once, when the order is created below (which then writes nothing).
        state
            .gateway
            .outbound
            .check_url_without_lookup(url)
            .map_err(|refusal| invalid_callback_url(GatePayError::param("callbackUrl", refusal)))?;
    }
    let (chain, asset) = resolve(state, &request)?;
    let surcharge = match &request.surcharge_amount {
        None => Amount::ZERO,
        Some(text) => parse_token_amount("surchargeAmount", text, asset.decimals)?,
    };
    let fiat = request.fiat_currency.is_some() || request.fiat_amount.is_some();
    if fiat && request.order_amount.is_some() {
        return Err(GatePayError::param(
            "orderAmount",
            "give either orderAmount or fiatCurrency with fiatAmount, not both",
        ));
    }
    if fiat && !surcharge.is_zero() {
        return Err(GatePayError::param(
            "surchargeAmount",
            "is not supported with fiat-priced orders; include it in fiatAmount",
        ));
    }
    // Neither an amount nor a fiat price (as in GatePay's own published example): one unit
    // of the token, which is what GatePay's example response shows.
    let order_amount = match (&request.order_amount, fiat) {
        (Some(text), _) => {
            let amount = parse_token_amount("orderAmount", text, asset.decimals)?;
            if amount.is_zero() {
                return Err(GatePayError::param(
                    "orderAmount",
                    "must be greater than zero",
                ));
            }
            Some(amount)
        }
        (None, true) => None,
        (None, false) => Some(Amount::from(1u64).scaled(asset.decimals)),
    };
    let total = match order_amount {
        Some(amount) => Some(
            amount
                .checked_add(surcharge)
                .ok_or_else(|| GatePayError::param("surchargeAmount", "is too large"))?,
        ),
        None => None,
    };
    let now = coffer_gateway::clock::now_ms();
    let expires_at_ms = match request.order_expire_time {
        None => now + DEFAULT_EXPIRY_MS,
        Some(at) if at <= now => {
            return Err(GatePayError::param(
                "orderExpireTime",
                "must be in the future (unix milliseconds)",
            ));
        }
        Some(at) => at,
    };
    let expires_at = chrono::DateTime::from_timestamp_millis(expires_at_ms)
        .ok_or_else(|| GatePayError::param("orderExpireTime", "is out of range"))?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let prepay_id: i64 = rand::rng().random_range(100_000_000_000_000_000..=i64::MAX);
    let order_id = new_order_id();
    let row = GatePayOrderRow {
        prepay_id: prepay_id.to_string(),
        merchant_id: merchant.id.clone(),
        merchant_trade_no: request.merchant_trade_no.clone(),
        order_id: order_id.clone(),
        client_id: client_id.to_owned(),
        created_at_ms: now,
        terminal_type: terminal.clone(),
        goods_type: request.goods.goods_type.clone().unwrap_or_default(),
        goods_name: request.goods.goods_name.clone().unwrap_or_default(),
        goods_detail: request.goods.goods_detail.clone().unwrap_or_default(),
        merchant_user_id: request.merchant_user_id,
        channel_id: request.channel_id.clone().unwrap_or_default(),
        surcharge_amount: surcharge,
        cancel_url: request.cancel_url.clone(),
    };
    // The merchant's description of the order, for listings; nothing reads it back.
    let description = json!({
        "merchantTradeNo": row.merchant_trade_no,
        "goods": {
            "goodsType": row.goods_type,
            "goodsName": row.goods_name,
            "goodsDetail": row.goods_detail,
        },
    });
    let command = OrderCommand {
        amount: total.map(|a| format_amount(a, asset.decimals)),
        fiat_currency: request.fiat_currency.clone(),
        fiat_amount: request.fiat_amount.clone(),
        currency: asset.symbol.clone(),
        blockchain: chain.names.cryptopay_slug.clone(),
        order_info: description.to_string(),
        nonce: prepay_id,
        webhook_url: request.callback_url.clone(),
        redirect_url: request.return_url.clone(),
        expires_at: Some(expires_at),
        underpayment_tolerance: request.tolerance_amount.clone(),
        order_id: Some(order_id),
        external_reference: Some(ExternalReference::GatePay(row.clone())),
    };
    let created = match state.gateway.orders.create(merchant, &command, None).await {
        Ok(created) => created,
        Err(OrderError::ReferenceTaken(Constraint::MerchantTradeNo)) => {
            return Err(GatePayError::with(
                StatusCode::CONFLICT,
                "400201",
                "ORDER_EXISTS",
                format!(
                    "merchantTradeNo: {:?} was already used",
                    request.merchant_trade_no
                ),
            ));
        }
        Err(error) => return Err(from_order_error(error)),
    };
    let order = &created.order;
    let view = state
        .gateway
        .orders
        .render_new(order)
        .with_quote(created.quote.as_ref());
    let facts = OrderFacts::of(&row, order);
    Ok(order_data(state, merchant, &facts, order, &view))
}

fn in_usdt(symbol: &str, amount: &str) -> String {
    if USD_STABLECOINS.contains(&symbol) {
        amount.to_owned()
    } else {
        String::new()
    }
}

/// The `data` of a created order (GatePay's field names, the seed's shape).
fn order_data(
    state: &AppState,
    merchant: &MerchantRow,
    facts: &OrderFacts,
    order: &OrderRow,
    view: &OrderView,
) -> Value {
    let pay_amount = format_amount(order.amount, order.decimals);
    let chain_code = state
        .gateway
        .chains
        .by_chain_id(order.chain_id)
        .map(|chain| chain.names.gatepay_chain.clone())
        .unwrap_or_default();
    let full_curr_type = format!("{}_{chain_code}", order.currency);
    json!({
        "prepayId": facts.prepay_id,
        "merchantTradeNo": facts.merchant_trade_no,
        "terminalType": facts.terminal_type,
        "expireTime": order.expires_at_ms,
        "qrContent": coffer_gateway::links::payment_link(order),
        "location": view.payment_url,
        "payCurrency": order.currency,
        "payAmount": pay_amount,
        "chain": {
            "chain_type": chain_code,
            "address": order.receiving_address,
            "fullCurrType": full_curr_type,
        },
        "orderAmount": facts.order_amount,
        "surchargeAmount": facts.surcharge_amount,
        "currency": order.currency,
        "fiatCurrency": view.fiat_currency.clone().unwrap_or_default(),
        "fiatAmount": view.fiat_amount.clone().unwrap_or_default(),
        "fiatRate": view.exchange_rate.clone().unwrap_or_default(),
        "channelId": facts.channel_id,
        "goodsName": facts.goods_name,
        "inUsdt": in_usdt(&order.currency, &pay_amount),
        "appName": merchant.name,
        "appLogo": "",
        "qrCodeUrl": view.qr_code_url.clone(),
    })
}

/// GatePay's name for an order's status.
pub fn gatepay_status(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "PENDING",
        OrderStatus::Processing => "PROCESS",
        OrderStatus::Confirmed => "PAID",
        OrderStatus::Expired => "EXPIRED",
        OrderStatus::Failed => "CANCELLED",
    }
}

/// Finds a merchant's order by `prepayId` or `merchantTradeNo` (exactly one).
async fn find(
    state: &AppState,
    merchant: &MerchantRow,
    raw: &[u8],
) -> Result<(GatePayOrderRow, OrderRow), GatePayError> {
    let reference: OrderRef = parse(raw)?;
    let (row, (field, value)) = match (&reference.prepay_id, &reference.merchant_trade_no) {
        (Some(id), None) => (
            state
                .gateway
                .store
                .gatepay_order_by_prepay_id(&merchant.id, id.trim())
                .await?,
            ("prepayId", id),
        ),
        (None, Some(number)) => (
            state
                .gateway
                .store
                .gatepay_order_by_trade_no(&merchant.id, number.trim())
                .await?,
            ("merchantTradeNo", number),
        ),
        _ => {
            return Err(GatePayError::param(
                "prepayId",
                "give exactly one of prepayId and merchantTradeNo",
            ));
        }
    };
    let row = row.ok_or_else(|| GatePayError::order_not_found(field, value))?;
    match state.gateway.store.order(&row.order_id).await {
        Ok(order) => Ok((row, order)),
        Err(StoreError::NotFound(_)) => Err(GatePayError::order_not_found(field, value)),
        Err(error) => Err(error.into()),
    }
}

/// Queries an order; returns the response `data`.
///
/// # Errors
/// `400001` for a bad body, `400202` for an unknown order, `300000` when storage fails.
pub async fn query(
    state: &AppState,
    merchant: &MerchantRow,
    raw: &[u8],
) -> Result<Value, GatePayError> {
    let (row, order) = find(state, merchant, raw).await?;
    let view = state
        .gateway
        .orders
        .render(&order)
        .await
        .map_err(from_order_error)?;
    let facts = OrderFacts::of(&row, &order);
    let pay_amount = format_amount(order.amount, order.decimals);
    let paid = format_amount(order.amount_paid, order.decimals);
    let live = view
        .payments
        .iter()
        .rev()
        .find(|payment| payment.status != "orphaned");
    let pay_details: Vec<Value> = view
        .payments
        .iter()
        .map(|payment| {
            json!({
                "txHash": payment.tx_hash,
                "fromAddress": payment.sender,
                "amount": payment.amount,
                "currency": order.currency,
                "blockNumber": payment.block_number,
                "confirmations": payment.confirmations,
                "status": payment.status,
            })
        })
        .collect();
    let mut data = order_data(state, merchant, &facts, &order, &view);
    let extra = json!({
        "prepayId": row.prepay_id,
        "merchantId": merchant.id.as_str(),
        "merchantTradeNo": row.merchant_trade_no,
        "transactionId": live.map(|p| p.tx_hash.clone()).unwrap_or_default(),
        "status": gatepay_status(order.status),
        "subStatus": view.payment_status.unwrap_or_default(),
        "createTime": order.created_at_ms,
        "transactTime": order.confirmed_at_ms.unwrap_or(0),
        "order_name": facts.goods_name,
        "pay_currency": order.currency,
        "pay_amount": pay_amount,
        "expectCurrency": order.currency,
        "actualCurrency": order.currency,
        "actualAmount": paid,
        "rate": "1",
        "channel_type": "",
        "pay_account": live.map(|p| p.sender.clone()).unwrap_or_default(),
        "totalFeeAmount": "0",
        "totalSettleAmount": paid,
        "payDetails": pay_details,
    });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            data.insert(key.clone(), value.clone());
        }
    }
    Ok(data)
}

/// Closes an unpaid order; returns `{"result": "SUCCESS"}`.
///
/// # Errors
/// `400202` for an unknown order, `400204` when it is not `PENDING` (paid, being paid,
/// expired or closed already), `300000` when storage fails.
pub async fn close(
    state: &AppState,
    merchant: &MerchantRow,
    raw: &[u8],
) -> Result<Value, GatePayError> {
    let (row, order) = find(state, merchant, raw).await?;
    for _ in 0..3 {
        let order = state.gateway.store.order(&order.order_id).await?;
        if order.status != OrderStatus::Pending {
            return Err(GatePayError::with(
                StatusCode::BAD_REQUEST,
                "400204",
                "ORDER_STATUS_ERROR",
                format!(
                    "status: the order is {}; only PENDING orders can be closed",
                    gatepay_status(order.status)
                ),
            ));
        }
        let payments = state
            .gateway
            .store
            .payments_for_order(&order.order_id)
            .await?;
        let head = state
            .gateway
            .store
            .chain_cursor(order.chain_id)
            .await?
            .map_or(0, |block| block.number);
        let required = state
            .gateway
            .chains
            .by_chain_id(order.chain_id)
            .map_or(1, |chain| chain.confirmations);
        let mut closing = order.clone();
        closing.closed = true;
        let now = coffer_gateway::clock::now_ms();
        let Some(mut update) = reevaluate(
            &state.gateway.orders,
            Reevaluation {
                merchant,
                order: &closing,
                gatepay: Some(&row),
                payments: &payments,
                head,
                required_confirmations: required,
                now_ms: now,
                new_payments: 0,
                orphaned_now: false,
            },
        ) else {
            return Err(GatePayError::system(&"closing changed nothing"));
        };
        update.closed = true;
        match state
            .gateway
            .store
            .update_orders(std::slice::from_ref(&update))
            .await
        {
            Ok(()) => {
                state.gateway.webhook_wakeup.notify_one();
                return Ok(json!({"result": "SUCCESS"}));
            }
            // The watcher moved the order meanwhile: look again.
            Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(GatePayError::system(
        &"the order kept changing while closing",
    ))
}

/// Records a refund request of a paid order; returns the response `data`.
///
/// # Errors
/// `400001` naming the field, `400202` unknown order, `400604` the order is not paid,
/// `400608` more than was paid, `300000` when storage fails.
pub async fn refund(
    state: &AppState,
    merchant: &MerchantRow,
    raw: &[u8],
) -> Result<Value, GatePayError> {
    let request: RefundRequest = parse(raw)?;
    if !is_identifier(&request.refund_request_id, 100) {
        return Err(GatePayError::param(
            "refundRequestId",
            "must be 1 to 100 letters, digits, '-' or '_'",
        ));
    }
    let reason = request.refund_reason.clone().unwrap_or_default();
    if reason.chars().count() > 256 {
        return Err(GatePayError::param(
            "refundReason",
            "must be at most 256 characters",
        ));
    }
    let row = state
        .gateway
        .store
        .gatepay_order_by_prepay_id(&merchant.id, request.prepay_id.trim())
        .await?
        .ok_or_else(|| GatePayError::order_not_found("prepayId", &request.prepay_id))?;
    let order = match state.gateway.store.order(&row.order_id).await {
        Ok(order) => order,
        Err(StoreError::NotFound(_)) => {
            return Err(GatePayError::order_not_found(
                "prepayId",
                &request.prepay_id,
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let not_paid = |status: OrderStatus| {
        GatePayError::with(
            StatusCode::BAD_REQUEST,
            "400604",
            "INVALID_REFUND_ORDER",
            format!(
                "prepayId: the order is {}; only PAID orders can be refunded",
                gatepay_status(status)
            ),
        )
    };
    if order.status != OrderStatus::Confirmed {
        return Err(not_paid(order.status));
    }
    let amount = parse_token_amount("refundAmount", &request.refund_amount, order.decimals)?;
    if amount.is_zero() {
        return Err(GatePayError::param(
            "refundAmount",
            "must be greater than zero",
        ));
    }
    // Checked against the order's other refunds and recorded in one transaction: concurrent
    // requests are decided one after the other.
    let decision = state
        .gateway
        .store
        .record_gatepay_refund(&GatePayRefundRow {
            merchant_id: merchant.id.clone(),
            refund_request_id: request.refund_request_id.clone(),
            prepay_id: row.prepay_id.clone(),
            refund_amount: amount,
            refund_reason: reason,
            status: "PROCESS".to_owned(),
            created_at_ms: coffer_gateway::clock::now_ms(),
        })
        .await;
    match decision {
        Ok(RefundDecision::Recorded) => {}
        Ok(RefundDecision::UnknownOrder) => {
            return Err(GatePayError::order_not_found(
                "prepayId",
                &request.prepay_id,
            ));
        }
        Ok(RefundDecision::NotPaid(status)) => return Err(not_paid(status)),
        Ok(RefundDecision::MoreThanPaid { total, paid }) => {
            return Err(GatePayError::with(
                StatusCode::BAD_REQUEST,
                "400608",
                "REFUND_AMOUNT_ERROR",
                format!(
                    "refundAmount: refunds would total {} {}, more than the {} paid",
                    format_amount(total, order.decimals),
                    order.currency,
                    format_amount(paid, order.decimals)
                ),
            ));
        }
        Err(StoreError::Conflict(_)) => {
            return Err(GatePayError::with(
                StatusCode::CONFLICT,
                "400607",
                "REFUND_EXISTS",
                format!(
                    "refundRequestId: {:?} was already used",
                    request.refund_request_id
                ),
            ));
        }
        Err(error) => return Err(error.into()),
    }
    Ok(json!({
        "refundRequestId": request.refund_request_id,
        "prepayId": row.prepay_id,
        "orderAmount": format_amount(order.amount, order.decimals),
        "refundAmount": format_amount(amount, order.decimals),
        "refundStatus": "PROCESS",
    }))
}

/// Reads a refund request; returns the response `data`.
///
/// # Errors
/// `400001` for a bad body, `400304` for an unknown refund, `300000` when storage fails.
pub async fn refund_query(
    state: &AppState,
    merchant: &MerchantRow,
    raw: &[u8],
) -> Result<Value, GatePayError> {
    let request: RefundQuery = parse(raw)?;
    let refund = state
        .gateway
        .store
        .gatepay_refund(&merchant.id, request.refund_request_id.trim())
        .await?
        .ok_or_else(|| {
            GatePayError::with(
                StatusCode::NOT_FOUND,
                "400304",
                "REFUND_NOT_EXIST",
                "refundRequestId: no such refund".to_owned(),
            )
        })?;
    let row = state
        .gateway
        .store
        .gatepay_order_by_prepay_id(&merchant.id, &refund.prepay_id)
        .await?
        .ok_or_else(|| GatePayError::order_not_found("prepayId", &refund.prepay_id))?;
    let order = state.gateway.store.order(&row.order_id).await?;
    Ok(json!({
        "refundRequestId": refund.refund_request_id,
        "prepayId": refund.prepay_id,
        "orderAmount": format_amount(order.amount, order.decimals),
        "refundAmount": format_amount(refund.refund_amount, order.decimals),
        "refundStatus": refund.status,
        "refundReason": refund.refund_reason,
        "channelId": row.channel_id,
    }))
}

/// One unit of a token with `decimals`.
trait Scaled {
    fn scaled(self, decimals: u8) -> Amount;
}

impl Scaled for Amount {
    fn scaled(self, decimals: u8) -> Amount {
        Amount::from_base_units(
            self.base_units()
                * alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(decimals)),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use coffer_gateway::hostile_input::{json_value, shaped_object};

    const CHECKOUT_FIELDS: &[&str] = &[
        "merchantTradeNo",
        "env",
        "goods",
        "merchantUserId",
        "chain",
        "fullCurrType",
        "currency",
        "orderAmount",
        "surchargeAmount",
        "toleranceAmount",
        "fiatCurrency",
        "fiatAmount",
        "payCurrency",
        "orderExpireTime",
        "returnUrl",
        "cancelUrl",
        "channelId",
        "callbackUrl",
    ];
    const NESTED_FIELDS: &[&str] = &["terminalType", "goodsType", "goodsName", "goodsDetail"];
    const REFUND_FIELDS: &[&str] = &[
        "refundRequestId",
        "prepayId",
        "refundAmount",
        "refundReason",
    ];
    const ORDER_REF_FIELDS: &[&str] = &["prepayId", "merchantTradeNo"];

    /// The field a refusal names: what its message starts with.
    fn field_of(error: &GatePayError) -> &str {
        error.message.split(": ").next().unwrap_or_default()
    }

    /// `400001` naming the body or a path into GatePay's request (`env.terminalType`), never
    /// a value the client wrote.
    fn refused_properly<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<(), TestCaseError> {
        let Err(error) = parse::<T>(raw) else {
            return Ok(());
        };
        prop_assert_eq!(
            (error.status, error.code),
            (StatusCode::BAD_REQUEST, "400001")
        );
        let field = field_of(&error);
        if error.message.ends_with(crate::extract::NUL) {
            // Text holding a NUL is refused wherever the client put it, naming where.
            let sent: Value = serde_json::from_slice(raw).unwrap();
            let sent_there = sent.as_object().is_some_and(|object| {
                object.keys().any(|key| {
                    field == key
                        || field.starts_with(&format!("{key}."))
                        || field.starts_with(&format!("{key}["))
                })
            });
            prop_assert!(field == "body" || sent_there, "{:?}", error);
            return Ok(());
        }
        // serde reads an array in an object's place by position (`env[0]`): still a path.
        let known = |segment: &str| {
            let segment = segment.split('[').next().unwrap_or_default();
            CHECKOUT_FIELDS
                .iter()
                .chain(NESTED_FIELDS)
                .chain(REFUND_FIELDS)
                .any(|name| *name == segment)
        };
        prop_assert!(
            field == "body" || field.split('.').all(known),
            "{:?}",
            error
        );
        Ok(())
    }

    fn checkout_order() -> impl Strategy<Value = Value> {
        (
            shaped_object(CHECKOUT_FIELDS),
            prop::option::of(shaped_object(&["terminalType"])),
            prop::option::of(shaped_object(&["goodsType", "goodsName", "goodsDetail"])),
        )
            .prop_map(|(mut order, env, goods)| {
                if let Some(env) = env {
                    order["env"] = env;
                }
                if let Some(goods) = goods {
                    order["goods"] = goods;
                }
                order
            })
    }

    #[test]
    fn a_value_the_client_wrote_is_never_taken_for_a_field() {
        // Found by the properties below: a top-level type error quotes the value, which was
        // read as the field's name, and an array was read as the object, field by position.
        for body in ["0", r#""`prepayId`""#, "[]", r#"["1"]"#, "true", "[["] {
            let error = parse::<OrderRef>(body.as_bytes()).unwrap_err();
            assert_eq!(field_of(&error), "body", "{body}");
        }
        let error = parse::<CheckoutOrderRequest>(br#"{"env": {"terminalType": 1}}"#).unwrap_err();
        assert_eq!(field_of(&error), "env.terminalType");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_are_refused_naming_the_body_or_a_field(
            raw in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            refused_properly::<CheckoutOrderRequest>(&raw)?;
            refused_properly::<RefundRequest>(&raw)?;
        }

        #[test]
        fn arbitrary_json_is_refused_naming_the_body_or_a_field(value in json_value()) {
            let raw = serde_json::to_vec(&value).unwrap();
            refused_properly::<CheckoutOrderRequest>(&raw)?;
            refused_properly::<OrderRef>(&raw)?;
            refused_properly::<RefundRequest>(&raw)?;
            refused_properly::<RefundQuery>(&raw)?;
        }

        #[test]
        fn requests_of_hostile_values_are_refused_naming_one_of_their_fields(
            order in checkout_order(),
            reference in shaped_object(ORDER_REF_FIELDS),
            refund in shaped_object(REFUND_FIELDS),
        ) {
            refused_properly::<CheckoutOrderRequest>(&serde_json::to_vec(&order).unwrap())?;
            refused_properly::<OrderRef>(&serde_json::to_vec(&reference).unwrap())?;
            refused_properly::<RefundRequest>(&serde_json::to_vec(&refund).unwrap())?;
            refused_properly::<RefundQuery>(&serde_json::to_vec(&refund).unwrap())?;
        }
    }
}
