//! Path parameters, query strings and raw bodies whose refusals are in Coffer's envelopes.
//!
//! axum's own extractors answer what they cannot read in plain text: a path parameter that is
//! not UTF-8 once percent-decoded (`/pay/%80`), a query string that does not fit its type
//! (`?limit=abc`, `?txHash=a&txHash=b`), a body over the 2 MB limit. [`ApiPath`] and
//! [`ApiQuery`] answer 400 `VALIDATION_ERROR` naming the parameter in the native envelope
//! instead; [`query_refusal`] and [`body_refusal`] say what was wrong for the families that
//! answer in their own envelopes (GatePay, OKX, x402).
//!
//! Client text holding a NUL character is refused at the door ([`NUL`]): PostgreSQL text
//! cannot hold one, so such a value would fail in the store instead of being answered.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A path parameter; a refusal names it. A parameter holding a NUL character (`%00`) is
/// refused too: no store can keep it (PostgreSQL text cannot hold one), so nothing can match.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await
            && let Some((key, _)) = params.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(ApiError::field("VALIDATION_ERROR", key, NUL));
        }
        Ok(ApiPath(value))
    }
}

/// A query string; a refusal names the parameter at fault, also one holding a NUL character.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        let query = parts.uri.query().unwrap_or_default();
        if let Some((key, _)) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, value)| key.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::field(
                "VALIDATION_ERROR",
                key.replace('\0', ""),
                NUL,
            ));
        }
        Ok(ApiQuery(value))
    }
}

/// Why text with a NUL character is refused.
pub const NUL: &str = "must not contain NUL characters";

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let PathRejection::FailedToDeserializePathParams(failure) = &rejection else {
            // The route and its handler disagree: Coffer's mistake, not the client's.
            return ApiError::internal(&rejection);
        };
        if failure.status().is_server_error() {
            return ApiError::internal(&rejection);
        }
        match failure.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => ApiError::field(
                "VALIDATION_ERROR",
                key,
                "must be UTF-8 once percent-decoded",
            ),
            ErrorKind::ParseErrorAtKey {
                key, expected_type, ..
            } => ApiError::field("VALIDATION_ERROR", key, format!("must be {expected_type}")),
            ErrorKind::DeserializeError { key, message, .. } => {
                ApiError::field("VALIDATION_ERROR", key, message)
            }
            other => ApiError::field("VALIDATION_ERROR", "path", other),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let (field, message) = query_refusal(&rejection);
        ApiError::field("VALIDATION_ERROR", field, message)
    }
}

/// The query parameter a refused query string is wrong about (`query` when it cannot tell),
/// and what is wrong.
pub fn query_refusal(rejection: &QueryRejection) -> (String, String) {
    let text = rejection.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    // serde_path_to_error's `limit: invalid digit …`, or serde's `duplicate field `txHash``.
    if let Some(field) = crate::json::named_field(detail) {
        return (field.to_owned(), detail.to_owned());
    }
    match detail.split_once(": ") {
        Some((field, message))
            if !field.is_empty()
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            (field.to_owned(), message.to_owned())
        }
        _ => ("query".to_owned(), detail.to_owned()),
    }
}

/// The status and message of a body that could not be read: 413 past the 2 MB limit, else 400.
pub fn body_refusal(rejection: &BytesRejection) -> (StatusCode, &'static str) {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (StatusCode::PAYLOAD_TOO_LARGE, "is larger than 2 MB")
    } else {
        (StatusCode::BAD_REQUEST, "could not be read")
    }
}

/// A body refusal in the native envelope: 413 `PAYLOAD_TOO_LARGE` or 400 `INVALID_JSON`.
pub fn native_body_refusal(rejection: &BytesRejection) -> ApiError {
    match body_refusal(rejection) {
        (StatusCode::PAYLOAD_TOO_LARGE, message) => {
            ApiError::field("PAYLOAD_TOO_LARGE", "body", message)
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        (status, message) => ApiError::field("INVALID_JSON", "body", message).with_status(status),
    }
}
