//! The Pelago-compatible "Crypto for x402" family: create or confirm an order
//! (`POST /openapi/crypto/x402/order`), query it, and list the supported payment methods.
//! Authenticated with `Merchant-App-Key`. See [`coffer_gateway::pelago`] for the payment forms.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::CallingMerchant;
use crate::error::ApiError;
use crate::extract::ApiPath;
use coffer_gateway::pelago::{OrderRequest, OrderStatusView, Outcome, PelagoError};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_or_confirm))
        .routes(routes!(order_status))
        .routes(routes!(payment_methods))
}

fn error_response(error: PelagoError) -> Response {
    match error {
        PelagoError::Invalid {
            code,
            field,
            message,
        } => ApiError::field(code, field, message).into_response(),
        PelagoError::Refused {
            code,
            message,
            order_id,
        } => {
            let status = match code {
                "TX_ALREADY_USED"
                | "PAYMENT_ALREADY_USED"
                | "ORDER_ALREADY_PAID"
                | "PAYMENT_NOT_FOR_ORDER" => StatusCode::CONFLICT,
                "SETTLEMENT_PENDING" | "CONFIRMING" => StatusCode::ACCEPTED,
                _ => StatusCode::PAYMENT_REQUIRED,
            };
            let message = coffer_core::redact::redact_urls(&message);
            let body =
                json!({"x402Version": 1, "code": code, "error": message, "orderId": order_id});
            (status, Json(body)).into_response()
        }
        PelagoError::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "record not found").into_response()
        }
        PelagoError::Unavailable(message) => {
            tracing::warn!(%message, "pelago order: chain unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "CHAIN_UNAVAILABLE",
                "the chain could not be reached; retry",
            )
            .into_response()
        }
        PelagoError::Store(error) => ApiError::internal(&error).into_response(),
    }
}

/// Create an order, or confirm one with `X-PAYMENT`.
///
/// Without `X-PAYMENT`: creates an order (body `{description, amount, currency?, network?}`,
/// `amount` in token units, `currency` default `USDC`, `network` default every network the
/// merchant registered a payTo on) — or, with `orderId`, re-reads one — and answers **402**
/// `{x402Version: 1, error, orderId, accepts: [x402 v1 requirements]}`.
///
/// With `X-PAYMENT` (base64 JSON, x402 v1): pays `orderId` (or, without one, creates and pays an
/// order for the amount the payment proves) and answers **200**
/// `{orderId, status: "confirmed", message: "Payment successful"}`. The payload is either an
/// EIP-3009 authorization (settled by Coffer) or Pelago's tx-hash proof
/// `{amount, signature, txHash}` where `signature` is the transfer sender's `personal_sign` of
/// `"Coffer x402 payment\norderId: <orderId or empty>\ntxHash: <lower-case tx hash>"`.
#[utoipa::path(
    post,
    path = "/openapi/crypto/x402/order",
    tag = "x402 seller (Pelago)",
    request_body(content = OrderRequest, description = "May be empty: an empty body is `{}`"),
    params((
        "X-PAYMENT" = Option<String>,
        Header,
        description = "Base64 of an x402 v1 payment (`X402PayloadV1`, or Pelago's tx-hash proof)",
        pattern = "^[A-Za-z0-9+/_-]+={0,2}$"
    )),
    responses(
        (status = 200, description = "Payment successful, order confirmed", body = coffer_gateway::pelago::Confirmed),
        (status = 202, description = "SETTLEMENT_PENDING or CONFIRMING: paid, not yet confirmed; ask again", body = crate::ops::openapi::PelagoRefusal),
        (status = 400, description = "INVALID_AMOUNT, INVALID_NETWORK, INVALID_DESCRIPTION, PAYTO_NOT_CONFIGURED, INVALID_PAYMENT_HEADER, VALIDATION_ERROR, INVALID_JSON (code and field)", body = crate::error::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = crate::error::ErrorBody),
        (status = 402, description = "Pay this order: `{x402Version, error, orderId, accepts}`; or the payment was refused: `{x402Version, code, error, orderId}`", body = crate::ops::openapi::PelagoPaymentRequired),
        (status = 404, description = "NOT_FOUND: no such order of this merchant", body = crate::error::ErrorBody),
        (status = 409, description = "TX_ALREADY_USED, PAYMENT_ALREADY_USED or ORDER_ALREADY_PAID", body = crate::ops::openapi::PelagoRefusal),
        (status = 503, description = "CHAIN_UNAVAILABLE: the chain could not be reached; or OVERLOADED", body = crate::error::ErrorBody)
    ),
    security(("api_key" = []), ("merchant_app_key" = []))
)]
#[tracing::instrument(skip_all)]
async fn create_or_confirm(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return crate::extract::native_body_refusal(&rejection).into_response(),
    };
    let request: OrderRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OrderRequest::default()
    } else {
        match crate::json::parse(&body) {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        }
    };
    let x_payment = match headers.get("x-payment").map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text.to_owned()),
        Some(Err(_)) => {
            return ApiError::field("INVALID_PAYMENT_HEADER", "X-PAYMENT", "not ASCII")
                .into_response();
        }
    };
    let resource = format!("{}/openapi/crypto/x402/order", state.gateway.public_url);
    match state
        .gateway
        .pelago()
        .order(&merchant, &request, x_payment.as_deref(), &resource)
        .await
    {
        Ok(Outcome::Confirmed(confirmed)) => (StatusCode::OK, Json(confirmed)).into_response(),
        Ok(Outcome::PaymentRequired {
            order_id,
            accepts,
            error,
        }) => {
            let body =
                json!({"x402Version": 1, "error": error, "orderId": order_id, "accepts": accepts});
            (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response()
        }
        Err(error) => error_response(error),
    }
}

/// Query an order: `{orderId, message, orderStatus, payStatus, paidAmount, transactionFee,
/// gasFee, txHash}`; 404 when it does not exist.
#[utoipa::path(
    get,
    path = "/openapi/crypto/x402/order/{orderId}",
    tag = "x402 seller (Pelago)",
    params(("orderId" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = OrderStatusView),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = crate::error::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = crate::error::ErrorBody),
        (status = 404, description = "NOT_FOUND: no such order of this merchant", body = crate::error::ErrorBody)
    ),
    security(("api_key" = []), ("merchant_app_key" = []))
)]
#[tracing::instrument(skip_all)]
async fn order_status(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiPath(order_id): ApiPath<String>,
) -> Response {
    match state.gateway.pelago().status(&merchant, &order_id).await {
        Ok(view) => Json(view).into_response(),
        Err(error) => error_response(error),
    }
}

/// The supported payment methods: each network and token the merchant can be paid in, with
/// the scheme (`exact`) and payment forms (`eip3009`, `txHash`).
#[utoipa::path(
    get,
    path = "/openapi/crypto/x402/supported",
    tag = "x402 seller (Pelago)",
    responses(
        (status = 200, description = "Each network and token the merchant can be paid in", body = crate::ops::openapi::PelagoMethods),
        (status = 401, description = "Missing, invalid or revoked API key", body = crate::error::ErrorBody)
    ),
    security(("api_key" = []), ("merchant_app_key" = []))
)]
#[tracing::instrument(skip_all)]
async fn payment_methods(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
) -> Response {
    match state.gateway.pelago().methods(&merchant).await {
        Ok(methods) => Json(methods).into_response(),
        Err(error) => error_response(error),
    }
}
