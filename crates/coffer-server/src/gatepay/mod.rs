//! The GatePay-compatible checkout API, authenticated with `X-GatePay-*` headers.
//!
//! Every answer is GatePay's envelope `{"status", "code", "label", "errorMessage", "data"}`:
//! `SUCCESS`/`000000` with `data`, or `FAIL` with GatePay's code and a message naming the
//! field or header at fault. Unlike GatePay (which answers failures with HTTP 200), Coffer
//! answers them with a 4xx status (500 only for its own failures, code `300000`); the body is
//! the same, so clients that read `status` and `code` work either way.

pub mod checkout;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use checkout::GatePayError;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout_order))
        .routes(routes!(order_query))
        .routes(routes!(order_close))
        .routes(routes!(order_refund))
        .routes(routes!(refund_query))
}

fn success(data: Value) -> Response {
    (
        StatusCode::OK,
        Json(json!({
            "status": "SUCCESS",
            "code": "000000",
            "label": "",
            "errorMessage": "",
            "data": data,
        })),
    )
        .into_response()
}

fn failure(error: &GatePayError) -> Response {
    (
        error.status,
        Json(json!({
            "status": "FAIL",
            "code": error.code,
            "label": error.label,
            "errorMessage": coffer_core::redact::redact_urls(&error.message),
            "data": {},
        })),
    )
        .into_response()
}

/// Which flow a route runs.
#[derive(Clone, Copy)]
enum Flow {
    Create,
    Query,
    Close,
    Refund,
    RefundQuery,
}

/// Authenticates, runs the flow, and renders GatePay's envelope.
async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    flow: Flow,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return failure(&GatePayError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "400007",
            label: "UNSUPPORTED_MEDIA_TYPE",
            message: "Content-Type: must be application/json".to_owned(),
        });
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = crate::extract::body_refusal(&rejection);
            return failure(&GatePayError {
                status,
                ..GatePayError::param("body", message)
            });
        }
    };
    let body = &body;
    let (merchant, client_id) = match state
        .gateway
        .gatepay
        .authenticate(|name| headers.get(name).and_then(|v| v.to_str().ok()), body)
        .await
    {
        Ok(caller) => caller,
        Err(error) => {
            let status = if error.code == "300000" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::UNAUTHORIZED
            };
            return failure(&GatePayError {
                status,
                code: error.code,
                label: error.label,
                message: error.message.into_owned(),
            });
        }
    };
    let result = match flow {
        Flow::Create => checkout::create(state, &merchant, &client_id, body).await,
        Flow::Query => checkout::query(state, &merchant, body).await,
        Flow::Close => checkout::close(state, &merchant, body).await,
        Flow::Refund => checkout::refund(state, &merchant, body).await,
        Flow::RefundQuery => checkout::refund_query(state, &merchant, body).await,
    };
    match result {
        Ok(data) => success(data),
        Err(error) => failure(&error),
    }
}

/// Place a checkout order (GatePay `/v1/pay/checkout/order`): a payment order with a fresh
/// deposit address; `location` is Coffer's hosted checkout page.
#[utoipa::path(
    post,
    path = "/v1/pay/checkout/order",
    tag = "GatePay",
    security(("gatepay_client_id" = [], "gatepay_timestamp" = [], "gatepay_nonce" = [], "gatepay_signature" = [])),
    request_body = crate::gatepay::checkout::CheckoutOrderRequest,
    responses(
        (status = 200, description = "`data`: {prepayId, orderAmount, currency, expireTime, qrContent, location, payCurrency, payAmount, chain: {chain_type, address, fullCurrType}, …}", body = crate::ops::openapi::GatePayEnvelope),
        (status = 400, description = "400001 parameter error naming the field, 400205 invalid currency, 400624 invalid callback URL (malformed, or into a private network)", body = crate::ops::openapi::GatePayEnvelope),
        (status = 401, description = "400004 unknown or revoked ClientId, 400003 missing or stale timestamp, 400020 missing, malformed or reused nonce, 400002 missing or wrong signature", body = crate::ops::openapi::GatePayEnvelope),
        (status = 409, description = "400201 merchantTradeNo already used", body = crate::ops::openapi::GatePayEnvelope),
        (status = 415, description = "400007 Content-Type is not application/json", body = crate::ops::openapi::GatePayEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn checkout_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, &headers, body, Flow::Create).await
}

/// Query an order by `prepayId` or `merchantTradeNo`; `status` is PENDING, PROCESS (paid,
/// confirming), PAID, EXPIRED or CANCELLED (closed).
#[utoipa::path(
    post,
    path = "/v1/pay/order/query",
    tag = "GatePay",
    security(("gatepay_client_id" = [], "gatepay_timestamp" = [], "gatepay_nonce" = [], "gatepay_signature" = [])),
    request_body = crate::gatepay::checkout::OrderRef,
    responses(
        (status = 200, description = "`data`: {prepayId, merchantTradeNo, status: PENDING|PROCESS|PAID|EXPIRED|CANCELLED, orderAmount, currency, transactionId, payDetails, …}", body = crate::ops::openapi::GatePayEnvelope),
        (status = 400, description = "400001 parameter error naming the field", body = crate::ops::openapi::GatePayEnvelope),
        (status = 401, description = "400004 unknown or revoked ClientId, 400003 missing or stale timestamp, 400020 missing, malformed or reused nonce, 400002 missing or wrong signature", body = crate::ops::openapi::GatePayEnvelope),
        (status = 404, description = "400202 order does not exist", body = crate::ops::openapi::GatePayEnvelope),
        (status = 415, description = "400007 Content-Type is not application/json", body = crate::ops::openapi::GatePayEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn order_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, &headers, body, Flow::Query).await
}

/// Close an unpaid order; the merchant is notified with `PAY_CLOSE`.
#[utoipa::path(
    post,
    path = "/v1/pay/order/close",
    tag = "GatePay",
    security(("gatepay_client_id" = [], "gatepay_timestamp" = [], "gatepay_nonce" = [], "gatepay_signature" = [])),
    request_body = crate::gatepay::checkout::OrderRef,
    responses(
        (status = 200, description = "`data`: {result: SUCCESS}", body = crate::ops::openapi::GatePayEnvelope),
        (status = 400, description = "400001 parameter error naming the field, 400204 order status incorrect", body = crate::ops::openapi::GatePayEnvelope),
        (status = 401, description = "400004 unknown or revoked ClientId, 400003 missing or stale timestamp, 400020 missing, malformed or reused nonce, 400002 missing or wrong signature", body = crate::ops::openapi::GatePayEnvelope),
        (status = 404, description = "400202 order does not exist", body = crate::ops::openapi::GatePayEnvelope),
        (status = 415, description = "400007 Content-Type is not application/json", body = crate::ops::openapi::GatePayEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn order_close(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, &headers, body, Flow::Close).await
}

/// Request a refund of a paid order. It is recorded (`refundStatus: PROCESS`); sending it on
/// chain is not part of this API yet.
#[utoipa::path(
    post,
    path = "/v1/pay/order/refund",
    tag = "GatePay",
    security(("gatepay_client_id" = [], "gatepay_timestamp" = [], "gatepay_nonce" = [], "gatepay_signature" = [])),
    request_body = crate::gatepay::checkout::RefundRequest,
    responses(
        (status = 200, description = "`data`: {refundRequestId, prepayId, orderAmount, refundAmount, refundStatus}", body = crate::ops::openapi::GatePayEnvelope),
        (status = 400, description = "400001 parameter error naming the field, 400604 order not refundable, 400608 refund amount", body = crate::ops::openapi::GatePayEnvelope),
        (status = 401, description = "400004 unknown or revoked ClientId, 400003 missing or stale timestamp, 400020 missing, malformed or reused nonce, 400002 missing or wrong signature", body = crate::ops::openapi::GatePayEnvelope),
        (status = 404, description = "400202 order does not exist", body = crate::ops::openapi::GatePayEnvelope),
        (status = 409, description = "400607 refundRequestId already used", body = crate::ops::openapi::GatePayEnvelope),
        (status = 415, description = "400007 Content-Type is not application/json", body = crate::ops::openapi::GatePayEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn order_refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, &headers, body, Flow::Refund).await
}

/// Read a refund request.
#[utoipa::path(
    post,
    path = "/v1/pay/order/refund/query",
    tag = "GatePay",
    security(("gatepay_client_id" = [], "gatepay_timestamp" = [], "gatepay_nonce" = [], "gatepay_signature" = [])),
    request_body = crate::gatepay::checkout::RefundQuery,
    responses(
        (status = 200, description = "`data`: {refundRequestId, prepayId, orderAmount, refundAmount, refundStatus, channelId}", body = crate::ops::openapi::GatePayEnvelope),
        (status = 400, description = "400001 parameter error naming the field", body = crate::ops::openapi::GatePayEnvelope),
        (status = 401, description = "400004 unknown or revoked ClientId, 400003 missing or stale timestamp, 400020 missing, malformed or reused nonce, 400002 missing or wrong signature", body = crate::ops::openapi::GatePayEnvelope),
        (status = 404, description = "400304 refund does not exist", body = crate::ops::openapi::GatePayEnvelope),
        (status = 415, description = "400007 Content-Type is not application/json", body = crate::ops::openapi::GatePayEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn refund_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, &headers, body, Flow::RefundQuery).await
}
