//! Authentication: an API key in `Authorization: Bearer <key>` (payment orders, Coffer's own
//! API) or `Merchant-App-Key: <key>` (the Pelago family) resolves to the calling merchant.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use coffer_store::{MerchantRow, StoreError};
use secrecy::SecretString;

use crate::app::AppState;
use crate::error::ApiError;
use coffer_gateway::merchants::MerchantError;

/// The merchant whose API key authenticated this request.
#[derive(Debug, Clone)]
pub struct CallingMerchant(pub MerchantRow);

/// The API key presented in the headers, if any.
///
/// # Errors
/// [`ApiError::unauthorized`] when the `Authorization` header is present but not a Bearer
/// token.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<SecretString>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
        let (scheme, token) = value
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized(
                "Authorization header must be \"Bearer <api key>\"",
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ApiError::unauthorized(
                "Authorization: the API key after \"Bearer\" is empty (is the variable holding it set?)",
            ));
        }
        return Ok(Some(SecretString::from(token.to_owned())));
    }
    if let Some(value) = headers.get("merchant-app-key") {
        let token = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Merchant-App-Key header is not valid text"))?
            .trim();
        if !token.is_empty() {
            return Ok(Some(SecretString::from(token.to_owned())));
        }
    }
    Ok(None)
}

impl FromRequestParts<AppState> for CallingMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers)?.ok_or_else(|| {
            ApiError::unauthorized("missing API key: send \"Authorization: Bearer <api key>\" or \"Merchant-App-Key: <api key>\"")
        })?;
        match state.gateway.merchants.authenticate(&key).await {
            Ok(merchant) => Ok(CallingMerchant(merchant)),
            Err(MerchantError::InvalidKey) => Err(ApiError::unauthorized("invalid API key")),
            Err(MerchantError::RevokedKey) => {
                Err(ApiError::unauthorized("API key has been revoked"))
            }
            Err(MerchantError::Store(StoreError::NotFound(_))) => {
                Err(ApiError::unauthorized("invalid API key"))
            }
            Err(error) => Err(ApiError::internal(&error)),
        }
    }
}
