//! The payment-orders family, compatible with CryptoPay: `{success, data}` envelopes, a
//! DRF-style paginated list, and CryptoPay's error codes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use coffer_core::OrderStatus;
use coffer_store::{OrderOrdering, OrderQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::CallingMerchant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::JsonBody;
use coffer_gateway::orders::{Idempotency, OrderCommand, OrderView};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        // CryptoPay's paths end in a slash; the same paths without it answer the same (they
        // are not documented twice).
        .route(
            "/api/payment-orders",
            axum::routing::post(create_order).get(list_orders),
        )
        .route(
            "/api/payment-orders/{order_id}",
            axum::routing::get(get_order),
        )
}

/// `POST /api/payment-orders/` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// Amount in the token's units, e.g. `"100.00"`; no more decimals than the token has
    /// (6 for USDC and USDT on most chains, 18 for native coins), greater than zero.
    /// Required unless the order is priced in fiat (`fiat_currency` + `fiat_amount`).
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$", example = "100.00")]
    pub amount: Option<String>,
    /// Price the order in a fiat currency (`USD`) instead: the token amount is
    /// `fiat_amount / rate` at the configured rate, locked for the order's lifetime and
    /// rounded up to the token's decimals. Give it with `fiat_amount` and without `amount`.
    #[serde(default)]
    pub fiat_currency: Option<String>,
    /// The fiat price, a decimal string with at most 2 decimals (`"19.99"`), greater than zero.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$", example = "19.99")]
    pub fiat_amount: Option<String>,
    /// Token symbol (`USDC`, `USDT`) or the chain's native coin (`ETH`, `BNB`), one the
    /// blockchain has.
    #[schema(example = "USDC")]
    pub currency: String,
    /// Blockchain slug (`base`, `ethereum`, `polygon`, `bsc`, …), one of the configured chains'.
    #[schema(example = "base")]
    pub blockchain: String,
    /// Order details as a JSON-encoded string, at most 16 KiB.
    #[schema(
        content_media_type = "application/json",
        max_length = 4096,
        example = "{\"product\": \"Premium Plan\"}"
    )]
    pub order_info: String,
    /// Unique per merchant, not negative.
    #[schema(minimum = 0)]
    pub nonce: i64,
    /// Webhook endpoint for this order (else the merchant's): an http(s) URL of a public host;
    /// private, loopback and link-local addresses are refused (`URL_NOT_ALLOWED`) unless the
    /// operator allows them.
    #[schema(format = "uri", max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Where to send the customer after payment: an absolute http:// or https:// URL of at
    /// most 2048 characters, without spaces or credentials.
    #[schema(format = "uri", max_length = 2048)]
    pub redirect_url: Option<String>,
    /// End of the payment window, RFC 3339, in the future and at most 30 days away; default
    /// 30 minutes from now.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// How much less than `amount` still completes the order, less than `amount`; default
    /// `"0"`.
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,6})?$")]
    pub underpayment_tolerance: Option<String>,
}

impl From<CreateOrderRequest> for OrderCommand {
    fn from(request: CreateOrderRequest) -> Self {
        OrderCommand {
            amount: request.amount,
            fiat_currency: request.fiat_currency,
            fiat_amount: request.fiat_amount,
            currency: request.currency,
            blockchain: request.blockchain,
            order_info: request.order_info,
            nonce: request.nonce,
            webhook_url: request.webhook_url,
            redirect_url: request.redirect_url,
            expires_at: request.expires_at,
            underpayment_tolerance: request.underpayment_tolerance,
            order_id: None,
            external_reference: None,
        }
    }
}

/// `{"success": true, "data": order}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEnvelope {
    /// Always `true`.
    pub success: bool,
    /// The order.
    pub data: OrderView,
}

/// A page of orders, DRF style.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    /// Orders matching the filters.
    pub count: u64,
    /// The next page's URL, or null.
    pub next: Option<String>,
    /// The previous page's URL, or null.
    pub previous: Option<String>,
    /// This page.
    pub results: Vec<OrderView>,
}

/// List filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `pending`, `processing`, `confirmed`, `expired` or `failed`.
    #[param(pattern = "^(pending|processing|confirmed|expired|failed)$")]
    pub status: Option<String>,
    /// Blockchain slug, one of the configured chains'.
    pub blockchain: Option<String>,
    /// Token symbol (case-insensitive).
    pub currency: Option<String>,
    /// Page number, from 1 (default 1).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1_000_000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
    /// `-created_at` (default), `created_at`, `amount`, `-amount`, `status`, `-status`.
    #[param(pattern = "^(-?created_at|-?amount|-?status)$")]
    pub ordering: Option<String>,
}

/// Create a payment order: a fresh deposit address for `amount` of `currency` on
/// `blockchain`. Send `Idempotency-Key` to make retries safe: the same key and body answer the
/// same order; the same key with another body is refused.
#[utoipa::path(
    post,
    path = "/api/payment-orders/",
    tag = "payment orders",
    security(("api_key" = [])),
    request_body = CreateOrderRequest,
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "Makes retries safe: 1 to 255 visible ASCII characters",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]*[!-~])?$"
    )),
    responses(
        (status = 201, description = "Created", body = OrderEnvelope, links(
            ("order" = (operation_id = "get_order", parameters(("order_id" = "$response.body#/data/order_id")))),
            ("page" = (operation_id = "payment_page", parameters(("order_id" = "$response.body#/data/order_id")))),
            ("status" = (operation_id = "payment_status", parameters(("order_id" = "$response.body#/data/order_id")))),
            ("qr" = (operation_id = "payment_qr", parameters(("order_id" = "$response.body#/data/order_id"))))
        )),
        (status = 200, description = "Replayed with the same Idempotency-Key", body = OrderEnvelope),
        (status = 400, description = "INVALID_AMOUNT, UNSUPPORTED_CURRENCY, INVALID_BLOCKCHAIN, WALLET_NOT_CONFIGURED, INVALID_ORDER_INFO, VALIDATION_ERROR (naming the field, or the Idempotency-Key header), INVALID_JSON, URL_NOT_ALLOWED (a webhook_url into a private network)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 409, description = "DUPLICATE_NONCE or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is over 2 MB", body = ErrorBody),
        (status = 415, description = "INVALID_JSON: Content-Type is not application/json", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn create_order(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    headers: HeaderMap,
    body: JsonBody<CreateOrderRequest>,
) -> Result<(StatusCode, Json<OrderEnvelope>), ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|key| !key.is_empty() && key.len() <= 255)
                .ok_or_else(|| {
                    ApiError::field(
                        "VALIDATION_ERROR",
                        "Idempotency-Key",
                        "must be 1 to 255 visible characters",
                    )
                })?;
            Some(key.to_owned())
        }
    };
    let created = state
        .gateway
        .orders
        .create(
            &merchant,
            &OrderCommand::from(body.value),
            key.as_deref().map(|key| Idempotency {
                key,
                request: &body.raw,
            }),
        )
        .await?;
    let view = if created.fresh {
        state
            .gateway
            .orders
            .render_new(&created.order)
            .with_quote(created.quote.as_ref())
    } else {
        state.gateway.orders.render(&created.order).await?
    };
    let status = if created.fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(OrderEnvelope {
            success: true,
            data: view,
        }),
    ))
}

/// Read one of your payment orders, with its payments and confirmations.
#[utoipa::path(
    get,
    path = "/api/payment-orders/{order_id}/",
    tag = "payment orders",
    security(("api_key" = [])),
    params(("order_id" = String, Path, description = "The order's id, ORD-…")),
    responses(
        (status = 200, body = OrderEnvelope),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND (also another merchant's order)", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn get_order(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<OrderEnvelope>, ApiError> {
    let view = state.gateway.orders.get(&merchant, &order_id).await?;
    Ok(Json(OrderEnvelope {
        success: true,
        data: view,
    }))
}

fn parse_positive(
    field: &'static str,
    text: Option<&str>,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|value| (1..=max).contains(value))
            .ok_or_else(|| {
                ApiError::field(
                    "VALIDATION_ERROR",
                    field,
                    format!("must be an integer from 1 to {max}"),
                )
            }),
    }
}

/// List your payment orders, newest first, filtered and paginated.
#[utoipa::path(
    get,
    path = "/api/payment-orders/",
    tag = "payment orders",
    security(("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, description = "VALIDATION_ERROR or INVALID_BLOCKCHAIN naming the parameter", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn list_orders(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<OrderPage>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|text| {
            text.parse::<OrderStatus>()
                .map_err(|error| ApiError::field("VALIDATION_ERROR", "status", error))
        })
        .transpose()?;
    let chain_id = match params.blockchain.as_deref() {
        None => None,
        Some(slug) => Some(state.gateway.orders.chain_id_for(slug).ok_or_else(|| {
            let known: Vec<_> = state
                .gateway
                .chains
                .chains()
                .iter()
                .map(|chain| chain.names.cryptopay_slug.as_str())
                .collect();
            ApiError::field(
                "INVALID_BLOCKCHAIN",
                "blockchain",
                format!(
                    "{slug:?} is not a known blockchain; use one of: {}",
                    known.join(", ")
                ),
            )
        })?),
    };
    let ordering = match params.ordering.as_deref().unwrap_or("-created_at") {
        "-created_at" => OrderOrdering::NewestFirst,
        "created_at" => OrderOrdering::OldestFirst,
        "amount" => OrderOrdering::AmountAscending,
        "-amount" => OrderOrdering::AmountDescending,
        "status" => OrderOrdering::StatusAscending,
        "-status" => OrderOrdering::StatusDescending,
        _ => {
            return Err(ApiError::field(
                "VALIDATION_ERROR",
                "ordering",
                "must be one of -created_at, created_at, amount, -amount, status, -status",
            ));
        }
    };
    let page = parse_positive("page", params.page.as_deref(), 1, 1_000_000)?;
    let page_size = parse_positive("page_size", params.page_size.as_deref(), 20, 100)?;
    let query = OrderQuery {
        merchant_id: merchant.id.clone(),
        status,
        chain_id,
        currency: params.currency.as_deref().map(str::to_ascii_uppercase),
        ordering,
        offset: (page - 1) * page_size,
        limit: page_size,
    };
    let (results, count) = state.gateway.orders.list(&query).await?;
    let link = |page: u64| {
        let mut pairs = vec![format!("page={page}")];
        for (name, value) in [
            ("status", &params.status),
            ("blockchain", &params.blockchain),
            ("currency", &params.currency),
            ("page_size", &params.page_size),
            ("ordering", &params.ordering),
        ] {
            if let Some(value) = value {
                pairs.push(format!("{name}={}", urlencode(value)));
            }
        }
        format!("/api/payment-orders/?{}", pairs.join("&"))
    };
    let next = (page * page_size < count).then(|| link(page + 1));
    let previous = (page > 1).then(|| link(page - 1));
    Ok(Json(OrderPage {
        count,
        next,
        previous,
        results,
    }))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
