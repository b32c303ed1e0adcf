//! The x402 facilitator in the Coinbase reference wire format (versions 1 and 2).
//!
//! Verification answers HTTP 200 for valid and invalid payments alike, as the reference
//! clients expect; only a body that is not a payment request gets 400, still with
//! `isValid: false` and a reason so clients that read `isValid` keep working.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_x402::wire::{PaymentRequest, SettleResponse, Supported, VerifyResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::presented_key;
use coffer_gateway::facilitator_policy::{Caller, Denied};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify))
        .routes(routes!(settle))
        .routes(routes!(supported))
}

/// Verify an x402 `exact` EVM payment (EIP-3009 authorization) without settling it: scheme,
/// EIP-712 domain, network and asset, signature, recipient, validity window and exact value,
/// then a simulation that proves the nonce is unused and the balance suffices. Body:
/// `{x402Version, paymentPayload, paymentRequirements}` in version 1 or 2.
#[utoipa::path(
    post,
    path = "/x402/verify",
    tag = "x402",
    request_body = crate::ops::openapi::X402PaymentRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Verified: `isValid` says whether the payment is good, `invalidReason` why not (also a value below the facilitator's minimum)", body = crate::ops::openapi::X402VerifyResponse),
        (status = 400, description = "Not a payment request: `isValid: false`, `invalidReason`, `invalidMessage` naming the field", body = crate::ops::openapi::X402VerifyResponse),
        (status = 401, description = "The API key presented is invalid or revoked, or none was under the `api_key` access policy", body = crate::ops::openapi::X402VerifyResponse),
        (status = 403, description = "The access policy refuses this payee: not a payTo address registered with Coffer (of the calling merchant, when one is)", body = crate::ops::openapi::X402VerifyResponse),
        (status = 429, description = "Rate limited per payer or client; retry after `Retry-After` seconds", body = crate::ops::openapi::X402VerifyResponse),
        (status = 503, description = "The policy's store could not be read, or OVERLOADED (native envelope)", body = crate::ops::openapi::X402VerifyResponse)
    )
)]
#[tracing::instrument(skip_all)]
async fn verify(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = crate::extract::body_refusal(&rejection);
            let body = VerifyResponse {
                is_valid: false,
                invalid_reason: Some(malformed_reason(b"").to_owned()),
                invalid_message: Some(format!("body: {message}")),
                payer: None,
            };
            return (status, Json(body)).into_response();
        }
    };
    let request = match PaymentRequest::parse(&body) {
        Ok(request) => request,
        Err(error) => {
            let reason = malformed_reason(&body);
            return (
                StatusCode::BAD_REQUEST,
                Json(VerifyResponse {
                    is_valid: false,
                    invalid_reason: Some(reason.to_owned()),
                    invalid_message: Some(error.to_string()),
                    payer: None,
                }),
            )
                .into_response();
        }
    };
    if let Err(denied) = admit(&state, &headers, peer, &request).await {
        let body = VerifyResponse {
            is_valid: false,
            invalid_reason: Some(denied.reason().to_owned()),
            invalid_message: Some(denied.message().to_owned()),
            payer: Some(request.payer().to_owned()),
        };
        return denial(&denied, body);
    }
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    (
        StatusCode::OK,
        Json(state.gateway.facilitator.verify(&request, now).await),
    )
        .into_response()
}

/// The peer's address, when the server was started with it (`coffer_server::serve` is).
pub(crate) struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
        ))
    }
}

/// Who is calling a facilitator route: the merchant whose API key it presents, else its
/// address.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Caller, Denied> {
    let key = presented_key(headers).map_err(|_| {
        Denied::Unauthorized("Authorization must be \"Bearer <api key>\"".to_owned())
    })?;
    match key {
        None => Ok(Caller::Anonymous(peer)),
        Some(key) => match state.gateway.merchants.authenticate(&key).await {
            Ok(merchant) => Ok(Caller::Merchant(merchant)),
            Err(coffer_gateway::merchants::MerchantError::Store(error))
                if !matches!(error, coffer_store::StoreError::NotFound(_)) =>
            {
                tracing::warn!(%error, "authenticating a facilitator caller failed");
                Err(Denied::Unavailable)
            }
            Err(_) => Err(Denied::Unauthorized(
                "invalid or revoked API key".to_owned(),
            )),
        },
    }
}

/// Admits a verify or settle request under the facilitator policy.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    request: &PaymentRequest,
) -> Result<(), Denied> {
    let caller = caller(state, headers, peer).await?;
    let signed_by_payer = state
        .gateway
        .facilitator
        .check_terms(request)
        .is_ok_and(|checked| checked.signed_by_eoa);
    state
        .gateway
        .facilitator_gate
        .admit(
            &*state.gateway.store,
            &state.gateway.chains,
            request,
            &caller,
            signed_by_payer,
        )
        .await
}

/// A refusal with the HTTP status its kind calls for and, when rate-limited, `Retry-After`.
fn denial(denied: &Denied, body: impl serde::Serialize) -> Response {
    let status = match denied {
        Denied::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Denied::PayToNotAllowed(_) => StatusCode::FORBIDDEN,
        Denied::BelowMinimum(_) => StatusCode::OK,
        Denied::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Denied::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let response = (status, Json(body)).into_response();
    match denied {
        Denied::RateLimited { retry_after, .. } => with_retry_after(response, *retry_after),
        _ => response,
    }
}

/// `response` with `Retry-After` in whole seconds (at least one).
pub(crate) fn with_retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

fn malformed_reason(body: &[u8]) -> &'static str {
    let version = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .pointer("/paymentPayload/x402Version")
                .and_then(serde_json::Value::as_u64)
        })
        .unwrap_or(2);
    if version == 1 {
        "invalid_payload"
    } else {
        "invalid_exact_evm_payload"
    }
}

/// Settle an x402 `exact` EVM payment: re-verify, then `transferWithAuthorization` from
/// Coffer's signer, exactly once per authorization. Concurrent and repeated calls for one
/// authorization get the same transaction. When the receipt does not arrive in time the
/// answer is `success: false, errorReason: "settlement_pending"` **with** the transaction
/// hash: the payment is in flight, do not ask the payer to sign again. A settlement paid to a
/// merchant's registered payTo address is recorded as a confirmed order with its payment.
#[utoipa::path(
    post,
    path = "/x402/settle",
    tag = "x402",
    request_body = crate::ops::openapi::X402PaymentRequest,
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Settled (`success`), in flight (`errorReason: settlement_pending` with the transaction), or refused with `errorReason`", body = crate::ops::openapi::X402SettleResponse),
        (status = 400, description = "Not a payment request: `success: false`, `errorReason`, `errorMessage` naming the field", body = crate::ops::openapi::X402SettleResponse),
        (status = 401, description = "The API key presented is invalid or revoked, or none was under the `api_key` access policy", body = crate::ops::openapi::X402SettleResponse),
        (status = 403, description = "The access policy refuses this payee: not a payTo address registered with Coffer (of the calling merchant, when one is)", body = crate::ops::openapi::X402SettleResponse),
        (status = 429, description = "Rate limited per payer or client; retry after `Retry-After` seconds", body = crate::ops::openapi::X402SettleResponse),
        (status = 503, description = "The policy's store could not be read, or OVERLOADED (native envelope)", body = crate::ops::openapi::X402SettleResponse)
    )
)]
#[tracing::instrument(skip_all)]
async fn settle(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = crate::extract::body_refusal(&rejection);
            let body = SettleResponse {
                success: false,
                error_reason: Some(malformed_reason(b"").to_owned()),
                error_message: Some(format!("body: {message}")),
                payer: None,
                transaction: String::new(),
                network: String::new(),
            };
            return (status, Json(body)).into_response();
        }
    };
    let request = match PaymentRequest::parse(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(SettleResponse {
                    success: false,
                    error_reason: Some(malformed_reason(&body).to_owned()),
                    error_message: Some(error.to_string()),
                    payer: None,
                    transaction: String::new(),
                    network: String::new(),
                }),
            )
                .into_response();
        }
    };
    if let Err(denied) = admit(&state, &headers, peer, &request).await {
        let body = SettleResponse {
            success: false,
            error_reason: Some(denied.reason().to_owned()),
            error_message: Some(denied.message().to_owned()),
            payer: Some(request.payer().to_owned()),
            transaction: String::new(),
            network: request.network().to_owned(),
        };
        return denial(&denied, body);
    }
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let reply = state.gateway.settler.settle(&request, now).await;
    state.gateway.sales.after_settle(&request, &reply).await;
    (StatusCode::OK, Json(reply)).into_response()
}

/// The (version, scheme, network) kinds this facilitator verifies, v1 and v2 in one list.
#[utoipa::path(get, path = "/x402/supported", tag = "x402", responses((status = 200, description = "Kinds, extensions and signers by CAIP-2 family", body = crate::ops::openapi::X402Supported)))]
#[tracing::instrument(skip_all)]
async fn supported(State(state): State<AppState>) -> Json<Supported> {
    Json(
        state
            .gateway
            .facilitator
            .supported(&state.gateway.settler.signer_addresses()),
    )
}
