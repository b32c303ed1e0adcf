//! Path and query parameters parsed so that a mistake answers in Coffer's envelope.
//!
//! axum's `Path` and `Query` extractors refuse a malformed parameter (a duplicated query key, a
//! number that is not one, a path segment that is not UTF-8) with a plain-text 400; [`Path`]
//! and [`Query`] answer 400 `VALIDATION_ERROR` in the native envelope instead, naming the
//! parameter when serde names it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Path parameters, refused in the native envelope.
#[derive(Debug)]
pub struct Path<T>(pub T);

/// Query parameters, refused in the native envelope.
#[derive(Debug)]
pub struct Query<T>(pub T);

/// The parameter a rejection's text names, else `fallback`. axum's text reads
/// `Failed to deserialize query string: limit: invalid digit found in string` (the path of
/// the value at fault) or `…: duplicate field `limit`` (serde quotes the field).
fn named_parameter(text: &str, fallback: &str) -> String {
    let detail = text.split_once(": ").map_or(text, |(_, detail)| detail);
    let is_name = |name: &&str| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    };
    detail
        .split_once(": ")
        .map(|(path, _)| path)
        .filter(is_name)
        .or_else(|| detail.split('`').nth(1).filter(is_name))
        .map_or_else(|| fallback.to_owned(), str::to_owned)
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                Err(ApiError::field(
                    "VALIDATION_ERROR",
                    named_parameter(&text, "path"),
                    text,
                ))
            }
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                Err(ApiError::field(
                    "VALIDATION_ERROR",
                    named_parameter(&text, "query"),
                    text,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;

    #[derive(Debug, serde::Deserialize)]
    struct Limits {
        #[allow(dead_code)]
        limit: Option<u64>,
    }

    async fn refusal(uri: &str) -> (StatusCode, serde_json::Value) {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        let error = Query::<Limits>::from_request_parts(&mut parts, &())
            .await
            .expect_err("refused");
        let response = error.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_malformed_or_repeated_query_parameter_is_named_in_the_native_envelope() {
        for uri in ["/e?limit=-1", "/e?limit=x", "/e?limit=1&limit=2"] {
            let (status, body) = refusal(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(body["success"], false, "{uri}");
            assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{uri}");
            assert_eq!(body["error"]["field"], "limit", "{uri}: {body}");
        }
    }
}
