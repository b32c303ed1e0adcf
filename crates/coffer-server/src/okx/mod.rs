//! OKX's x402 facilitator dialects, authenticated with `OK-ACCESS-*` headers.
//!
//! - `/api/v6/x402/{supported,verify,settle}`: the legacy generation — x402 version 1,
//!   networks by `chainIndex`, envelope `{"code": "0", "msg": "", "data": [ … ]}` with a string
//!   code and `data` as an array.
//! - `/api/v6/pay/x402/{supported,verify,settle,settle/status}`: the current generation —
//!   version 2 in the Coinbase format, envelope `{"code": 0, "msg": "", "data": { … }}` with a
//!   numeric code, `syncSettle`, and a settlement `status` of `pending`, `success` or
//!   `timeout`.
//!
//! Both run on the same facilitator and settlement journal as `/x402/*`.

use std::marker::PhantomData;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use coffer_store::{MerchantRow, SettlementStatus};
use coffer_x402::wire::PaymentRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use coffer_gateway::facilitator_policy::{Caller, Denied};
use coffer_gateway::okx::AuthError;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(v1_supported))
        .routes(routes!(v1_verify))
        .routes(routes!(v1_settle))
        .routes(routes!(v2_supported))
        .routes(routes!(v2_verify))
        .routes(routes!(v2_settle))
        .routes(routes!(v2_settle_status))
}

/// Which envelope to answer in.
#[derive(Clone, Copy)]
enum Dialect {
    /// `code` as a string, `data` as an array.
    Legacy,
    /// `code` as a number.
    Current,
}

fn envelope(dialect: Dialect, status: StatusCode, code: u32, msg: &str, data: Value) -> Response {
    let code = match dialect {
        Dialect::Legacy => Value::String(code.to_string()),
        Dialect::Current => Value::from(code),
    };
    (
        status,
        Json(json!({"code": code, "msg": coffer_core::redact::redact_urls(msg), "data": data})),
    )
        .into_response()
}

fn refused(dialect: Dialect, error: &AuthError) -> Response {
    let status = if error.code == 50026 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::UNAUTHORIZED
    };
    let empty = match dialect {
        Dialect::Legacy => json!([]),
        Dialect::Current => Value::Null,
    };
    envelope(dialect, status, error.code, error.message, empty)
}

fn invalid(dialect: Dialect, message: String) -> Response {
    invalid_with(dialect, StatusCode::BAD_REQUEST, &message)
}

fn invalid_with(dialect: Dialect, status: StatusCode, message: &str) -> Response {
    let empty = match dialect {
        Dialect::Legacy => json!([]),
        Dialect::Current => Value::Null,
    };
    envelope(
        dialect,
        status,
        51000,
        &format!("Parameter invalid: {message}"),
        empty,
    )
}

/// OKX's answer to a body that could not be read (413 past the 2 MB limit).
fn unreadable(dialect: Dialect, rejection: &BytesRejection) -> Response {
    let (status, message) = crate::extract::body_refusal(rejection);
    invalid_with(dialect, status, &format!("body: {message}"))
}

/// The envelope an extractor answers its refusals in.
trait Answers {
    const DIALECT: Dialect;
}

/// The legacy generation's envelope.
struct Legacy;

impl Answers for Legacy {
    const DIALECT: Dialect = Dialect::Legacy;
}

/// The current generation's envelope.
struct Current;

impl Answers for Current {
    const DIALECT: Dialect = Dialect::Current;
}

/// A request signed with an OKX credential (`OK-ACCESS-*` over timestamp, method, path and
/// body): the merchant it acts for and the body it signed. Refusals answer in `D`'s envelope:
/// an unreadable body first, then a bad signature.
struct OkxSigned<D> {
    merchant: MerchantRow,
    body: Bytes,
    _answers: PhantomData<D>,
}

impl<D: Answers> FromRequest<AppState> for OkxSigned<D> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Ok(uri) = OriginalUri::from_request_parts(&mut parts, state).await;
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| unreadable(D::DIALECT, &rejection))?;
        let merchant = authenticate(state, D::DIALECT, &method, &uri, &headers, &body).await?;
        Ok(OkxSigned {
            merchant,
            body,
            _answers: PhantomData,
        })
    }
}

/// A bodiless request signed with an OKX credential (the signature covers an empty body).
struct OkxSignedQuery<D> {
    merchant: MerchantRow,
    _answers: PhantomData<D>,
}

impl<D: Answers> FromRequestParts<AppState> for OkxSignedQuery<D> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(uri) = OriginalUri::from_request_parts(parts, state).await;
        let merchant =
            authenticate(state, D::DIALECT, &parts.method, &uri, &parts.headers, b"").await?;
        Ok(OkxSignedQuery {
            merchant,
            _answers: PhantomData,
        })
    }
}

async fn authenticate(
    state: &AppState,
    dialect: Dialect,
    method: &Method,
    uri: &OriginalUri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<MerchantRow, Response> {
    state
        .gateway
        .okx
        .authenticate(
            method.as_str(),
            uri.0
                .path_and_query()
                .map_or(uri.0.path(), |pq| pq.as_str()),
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            body,
        )
        .await
        .map_err(|error| refused(dialect, &error))
}

/// A parsed payment request admitted under the facilitator policy for `merchant`, or the
/// refusal in `dialect`'s envelope.
async fn admitted<T>(
    state: &AppState,
    dialect: Dialect,
    merchant: MerchantRow,
    parsed: Result<(PaymentRequest, T), String>,
) -> Result<(PaymentRequest, T), Response> {
    let (request, rest) = parsed.map_err(|message| invalid(dialect, message))?;
    admit(state, dialect, &request, merchant).await?;
    Ok((request, rest))
}

/// Admits a verify or settle request of `merchant` under the facilitator policy: an OKX
/// credential settles only for its own merchant's payTo addresses (unless the policy is
/// `public`), above the minimum value, within the rate limits.
async fn admit(
    state: &AppState,
    dialect: Dialect,
    request: &PaymentRequest,
    merchant: MerchantRow,
) -> Result<(), Response> {
    let signed_by_payer = state
        .gateway
        .facilitator
        .check_terms(request)
        .is_ok_and(|checked| checked.signed_by_eoa);
    let denied = match state
        .gateway
        .facilitator_gate
        .admit(
            &*state.gateway.store,
            &state.gateway.chains,
            request,
            &Caller::Merchant(merchant),
            signed_by_payer,
        )
        .await
    {
        Ok(()) => return Ok(()),
        Err(denied) => denied,
    };
    let empty = match dialect {
        Dialect::Legacy => json!([]),
        Dialect::Current => Value::Null,
    };
    Err(match &denied {
        Denied::RateLimited {
            retry_after,
            message,
        } => crate::x402::with_retry_after(
            envelope(
                dialect,
                StatusCode::TOO_MANY_REQUESTS,
                50011,
                message,
                empty,
            ),
            *retry_after,
        ),
        Denied::Unavailable => envelope(
            dialect,
            StatusCode::SERVICE_UNAVAILABLE,
            50001,
            denied.message(),
            empty,
        ),
        Denied::PayToNotAllowed(message)
        | Denied::BelowMinimum(message)
        | Denied::Unauthorized(message) => invalid(dialect, message.clone()),
    })
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

/// Rewrites a legacy (`chainIndex`) body into the Coinbase v1 request the facilitator reads.
fn legacy_request(
    state: &AppState,
    body: &[u8],
) -> Result<(PaymentRequest, String, String), String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body: malformed JSON: {e}"))?;
    let index = match value.get("chainIndex") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err("chainIndex: required (e.g. \"196\")".to_owned()),
    };
    let chain = state
        .gateway
        .chains
        .by_okx_chain_index(&index)
        .filter(|chain| !chain.rpc_urls.is_empty())
        .ok_or_else(|| format!("chainIndex: {index} is not supported"))?;
    let network = Value::String(chain.names.x402_v1.clone());
    // OKX lets `asset` and the EIP-712 domain be implied by the chain: fill them from the
    // registry (the chain's EIP-3009 token), the authority on token domains.
    if let Some(Value::Object(requirements)) = value.get_mut("paymentRequirements") {
        let asset = match requirements.get("asset").and_then(Value::as_str) {
            Some(text) => text
                .parse::<alloy::primitives::Address>()
                .ok()
                .and_then(|a| chain.asset_by_address(a)),
            None => chain
                .assets
                .iter()
                .find(|a| a.transfer_method == coffer_core::TransferMethod::Eip3009),
        };
        if let Some(asset) = asset {
            requirements
                .entry("asset")
                .or_insert_with(|| json!(asset.address.to_checksum(None)));
            if let Some(domain) = &asset.eip712 {
                let extra = requirements.entry("extra").or_insert_with(|| json!({}));
                if let Value::Object(extra) = extra {
                    extra.entry("name").or_insert_with(|| json!(domain.name));
                    extra
                        .entry("version")
                        .or_insert_with(|| json!(domain.version));
                }
            }
        }
    }
    for pointer in ["/paymentPayload", "/paymentRequirements"] {
        match value.pointer_mut(pointer) {
            Some(Value::Object(object)) => {
                object.entry("network").or_insert_with(|| network.clone());
            }
            _ => return Err(format!("{}: required", &pointer[1..])),
        }
    }
    value["x402Version"] = json!(1);
    value["paymentPayload"]["x402Version"] = json!(1);
    let request = PaymentRequest::parse(value.to_string().as_bytes()).map_err(|e| e.to_string())?;
    Ok((request, index, chain.names.okx_chain_name.clone()))
}

/// OKX legacy: the supported (chainIndex, scheme) pairs.
#[utoipa::path(
    get,
    path = "/api/v6/x402/supported",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    responses(
        (status = 200, description = "`data`: [{x402Version, scheme, chainIndex, chainName}]", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxLegacyEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v1_supported(State(state): State<AppState>, _signed: OkxSignedQuery<Legacy>) -> Response {
    let kinds: Vec<Value> = state
        .gateway
        .facilitator
        .supported(&[])
        .kinds
        .iter()
        .filter(|kind| kind.x402_version == 1)
        .filter_map(|kind| state.gateway.chains.by_x402_v1_name(&kind.network))
        .map(|chain| json!({"x402Version": 1, "scheme": "exact", "chainIndex": chain.names.okx_chain_index, "chainName": chain.names.okx_chain_name}))
        .collect();
    envelope(Dialect::Legacy, StatusCode::OK, 0, "", Value::Array(kinds))
}

/// OKX legacy: verify a version-1 payment on `chainIndex`.
#[utoipa::path(
    post,
    path = "/api/v6/x402/verify",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    request_body = crate::ops::openapi::OkxLegacyPaymentRequest,
    responses(
        (status = 200, description = "`data`: [{isValid, invalidReason, payer}]", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 400, description = "51000 parameter invalid, naming the field (also a payee or value the facilitator's policy refuses)", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 429, description = "50011 rate limited; retry after `Retry-After` seconds", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 503, description = "50001 the policy's store could not be read; or OVERLOADED (native envelope)", body = crate::ops::openapi::OkxLegacyEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v1_verify(State(state): State<AppState>, signed: OkxSigned<Legacy>) -> Response {
    let parsed = legacy_request(&state, &signed.body)
        .map(|(request, chain_index, chain_name)| (request, (chain_index, chain_name)));
    let (request, (_, _)) = match admitted(&state, Dialect::Legacy, signed.merchant, parsed).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let reply = state.gateway.facilitator.verify(&request, now()).await;
    let data = json!([{"isValid": reply.is_valid, "invalidReason": reply.invalid_reason, "payer": reply.payer}]);
    envelope(Dialect::Legacy, StatusCode::OK, 0, "success", data)
}

/// OKX legacy: settle a version-1 payment on `chainIndex`.
#[utoipa::path(
    post,
    path = "/api/v6/x402/settle",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    request_body = crate::ops::openapi::OkxLegacyPaymentRequest,
    responses(
        (status = 200, description = "`data`: [{chainIndex, chainName, success, payer, txHash, errorMsg, errorReason}]", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 400, description = "51000 parameter invalid, naming the field (also a payee or value the facilitator's policy refuses)", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 429, description = "50011 rate limited; retry after `Retry-After` seconds", body = crate::ops::openapi::OkxLegacyEnvelope),
        (status = 503, description = "50001 the policy's store could not be read; or OVERLOADED (native envelope)", body = crate::ops::openapi::OkxLegacyEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v1_settle(State(state): State<AppState>, signed: OkxSigned<Legacy>) -> Response {
    let parsed = legacy_request(&state, &signed.body)
        .map(|(request, chain_index, chain_name)| (request, (chain_index, chain_name)));
    let (request, (chain_index, chain_name)) =
        match admitted(&state, Dialect::Legacy, signed.merchant, parsed).await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let reply = state.gateway.settler.settle(&request, now()).await;
    state.gateway.sales.after_settle(&request, &reply).await;
    let data = json!([{
        "chainIndex": chain_index,
        "chainName": chain_name,
        "success": reply.success,
        "payer": reply.payer,
        "txHash": reply.transaction,
        "errorMsg": reply.error_reason,
        "errorReason": reply.error_reason,
    }]);
    envelope(Dialect::Legacy, StatusCode::OK, 0, "", data)
}

/// OKX current: supported kinds (x402 version 2) and signers.
#[utoipa::path(
    get,
    path = "/api/v6/pay/x402/supported",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    responses(
        (status = 200, description = "`data`: {kinds, extensions, signers}", body = crate::ops::openapi::OkxEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v2_supported(State(state): State<AppState>, _signed: OkxSignedQuery<Current>) -> Response {
    let mut supported = state
        .gateway
        .facilitator
        .supported(&state.gateway.settler.signer_addresses());
    supported.kinds.retain(|kind| kind.x402_version == 2);
    envelope(
        Dialect::Current,
        StatusCode::OK,
        0,
        "",
        serde_json::to_value(supported).unwrap_or_default(),
    )
}

fn current_request(body: &[u8]) -> Result<PaymentRequest, String> {
    let request = PaymentRequest::parse(body).map_err(|e| e.to_string())?;
    if request.version() == 2 {
        Ok(request)
    } else {
        Err("x402Version: must be 2 on /api/v6/pay/x402".to_owned())
    }
}

/// OKX current: verify a version-2 payment.
#[utoipa::path(
    post,
    path = "/api/v6/pay/x402/verify",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    request_body = crate::ops::openapi::OkxPaymentRequest,
    responses(
        (status = 200, description = "`data`: {isValid, invalidReason?, invalidMessage?, payer}", body = crate::ops::openapi::OkxEnvelope),
        (status = 400, description = "51000 parameter invalid, naming the field (also a payee or value the facilitator's policy refuses)", body = crate::ops::openapi::OkxEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxEnvelope),
        (status = 429, description = "50011 rate limited; retry after `Retry-After` seconds", body = crate::ops::openapi::OkxEnvelope),
        (status = 503, description = "50001 the policy's store could not be read; or OVERLOADED (native envelope)", body = crate::ops::openapi::OkxEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v2_verify(State(state): State<AppState>, signed: OkxSigned<Current>) -> Response {
    let parsed = current_request(&signed.body).map(|request| (request, ()));
    let (request, ()) = match admitted(&state, Dialect::Current, signed.merchant, parsed).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let reply = state.gateway.facilitator.verify(&request, now()).await;
    envelope(
        Dialect::Current,
        StatusCode::OK,
        0,
        "",
        serde_json::to_value(reply).unwrap_or_default(),
    )
}

/// OKX current: settle a version-2 payment. `syncSettle: true` waits for the receipt (status
/// `success`, or `timeout` with the hash); otherwise the answer comes at broadcast (`pending`).
#[utoipa::path(
    post,
    path = "/api/v6/pay/x402/settle",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    request_body = crate::ops::openapi::OkxPaymentRequest,
    responses(
        (status = 200, description = "`data`: {success, errorReason?, payer, transaction, network, status: pending|success|timeout}", body = crate::ops::openapi::OkxEnvelope),
        (status = 400, description = "51000 parameter invalid, naming the field (also a payee or value the facilitator's policy refuses)", body = crate::ops::openapi::OkxEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxEnvelope),
        (status = 429, description = "50011 rate limited; retry after `Retry-After` seconds", body = crate::ops::openapi::OkxEnvelope),
        (status = 503, description = "50001 the policy's store could not be read; or OVERLOADED (native envelope)", body = crate::ops::openapi::OkxEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v2_settle(State(state): State<AppState>, signed: OkxSigned<Current>) -> Response {
    let parsed = current_request(&signed.body).map(|request| (request, ()));
    let (request, ()) = match admitted(&state, Dialect::Current, signed.merchant, parsed).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let sync = serde_json::from_slice::<Value>(&signed.body)
        .ok()
        .and_then(|v| v.get("syncSettle").and_then(Value::as_bool))
        .unwrap_or(false);
    let wait = if sync {
        state.gateway.settle_timeout
    } else {
        Duration::ZERO
    };
    let reply = state
        .gateway
        .settler
        .settle_with(&request, now(), wait)
        .await;
    state.gateway.sales.after_settle(&request, &reply).await;
    let pending =
        reply.error_reason.as_deref() == Some(coffer_x402::settlement::SETTLEMENT_PENDING);
    let status = match (reply.success, pending, sync) {
        (true, _, _) => Some("success"),
        (false, true, true) => Some("timeout"),
        (false, true, false) => Some("pending"),
        (false, false, _) => None,
    };
    let mut data = serde_json::to_value(&reply).unwrap_or_default();
    if let Some(status) = status {
        data["status"] = json!(status);
        if pending {
            // Pending is not a failure: the transaction is in flight.
            data.as_object_mut().map(|o| o.remove("errorReason"));
        }
    }
    envelope(Dialect::Current, StatusCode::OK, 0, "", data)
}

/// `?txHash=0x…`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// The settlement transaction, a 0x-prefixed 32-byte hash.
    #[serde(rename = "txHash")]
    #[param(pattern = "^0x[0-9a-fA-F]{64}$")]
    pub tx_hash: Option<String>,
}

/// Whether `merchant` may read a settlement: one paid to its own payTo, or, under a public
/// facilitator policy, one paid to a payee no merchant registered.
async fn visible_to(
    state: &AppState,
    merchant: &MerchantRow,
    row: &coffer_store::SettlementRow,
) -> bool {
    match state
        .gateway
        .store
        .pay_to_owner(row.key.chain_id, &row.pay_to.to_ascii_lowercase())
        .await
    {
        Ok(Some(owner)) => owner.merchant_id == merchant.id,
        Ok(None) => {
            state.gateway.facilitator_gate.policy().access
                == coffer_gateway::facilitator_policy::Access::Public
        }
        Err(_) => false,
    }
}

/// OKX current: the status of a settlement by transaction hash.
#[utoipa::path(
    get,
    path = "/api/v6/pay/x402/settle/status",
    tag = "x402 (OKX)",
    security(("okx_access_key" = [], "okx_access_passphrase" = [], "okx_access_timestamp" = [], "okx_access_sign" = [])),
    params(StatusParams),
    responses(
        (status = 200, description = "`data`: {success, status: pending|success|failed, errorReason, payer, transaction, network}; `code` 51000 with `data: null` when no settlement has this transaction", body = crate::ops::openapi::OkxEnvelope),
        (status = 400, description = "51000 txHash missing or not a 0x-prefixed 32-byte hash", body = crate::ops::openapi::OkxEnvelope),
        (status = 401, description = "50103–50107 a missing header, 50105 wrong passphrase, 50111 unknown key, 50112 stale timestamp, 50113 wrong signature", body = crate::ops::openapi::OkxEnvelope)
    )
)]
#[tracing::instrument(skip_all)]
async fn v2_settle_status(
    State(state): State<AppState>,
    OkxSignedQuery { merchant, .. }: OkxSignedQuery<Current>,
    params: Result<Query<StatusParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            let (field, message) = crate::extract::query_refusal(&rejection);
            return invalid(Dialect::Current, format!("{field}: {message}"));
        }
    };
    let Some(tx_hash) = params.tx_hash.filter(|hash| {
        hash.len() == 66
            && hash.starts_with("0x")
            && hash[2..].bytes().all(|b| b.is_ascii_hexdigit())
    }) else {
        return invalid(
            Dialect::Current,
            "txHash: required, a 0x-prefixed 32-byte hash".to_owned(),
        );
    };
    let row = match state.gateway.settler.status_of(&tx_hash).await {
        // A credential sees its own merchant's settlements only (any payee's under a public
        // policy, but never another merchant's); others read as unknown, so nothing tells
        // them apart.
        Ok(Some(row)) if visible_to(&state, &merchant, &row).await => row,
        Ok(_) => {
            return envelope(
                Dialect::Current,
                StatusCode::OK,
                51000,
                "Parameter invalid: txHash: no settlement with this transaction",
                Value::Null,
            );
        }
        Err(error) => {
            tracing::error!(%error, "reading a settlement failed");
            return envelope(
                Dialect::Current,
                StatusCode::INTERNAL_SERVER_ERROR,
                50026,
                "System error.",
                Value::Null,
            );
        }
    };
    let status = match row.status {
        SettlementStatus::Succeeded => "success",
        SettlementStatus::Failed => "failed",
        SettlementStatus::Pending | SettlementStatus::Broadcast => "pending",
    };
    let payer = alloy::primitives::Address::parse_checksummed(&row.key.payer, None)
        .or_else(|_| row.key.payer.parse::<alloy::primitives::Address>())
        .map(|address| address.to_checksum(None))
        .unwrap_or(row.key.payer.clone());
    let data = json!({
        "success": row.status == SettlementStatus::Succeeded,
        "status": status,
        "errorReason": row.error_reason,
        "errorMessage": null,
        "payer": payer,
        "transaction": row.tx_hash,
        "network": row.network,
    });
    envelope(Dialect::Current, StatusCode::OK, 0, "", data)
}
