//! Request bodies: JSON parsed so that every mistake names its field.
//!
//! axum's `Json` extractor answers malformed bodies in its own format; [`JsonBody`] answers in
//! Coffer's envelope instead, with the path of the offending field (`nonce: invalid type:
//! string "x", expected i64`) and the raw bytes kept for idempotency hashing. A body over the
//! 2 MB limit is a 413 `PAYLOAD_TOO_LARGE`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A parsed JSON body and its raw bytes.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed value.
    pub value: T,
    /// The body as received.
    pub raw: Bytes,
}

/// Parses `raw` as `T`, naming the field at fault.
///
/// # Errors
/// [`ApiError`] 400 `INVALID_JSON` for malformed JSON, `VALIDATION_ERROR` for a wrong type, a
/// missing or an unknown field.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::field("INVALID_JSON", "body", format!("malformed JSON: {message}"))
        } else if path == "." {
            ApiError::field("VALIDATION_ERROR", named_field(&message), message)
        } else {
            ApiError::field("VALIDATION_ERROR", path, message)
        }
    })
}

/// The field a top-level error names: serde quotes it in backticks in `missing field `x``,
/// `unknown field `x`, expected …` and `duplicate field `x``; any other error (`invalid type:
/// boolean `false`, expected struct …`, where the quoted text is the value sent) is about the
/// body as a whole.
pub(crate) fn named_field(message: &str) -> String {
    ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .map_or_else(|| "body".to_owned(), str::to_owned)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::field(
                "INVALID_JSON",
                "Content-Type",
                "must be application/json",
            )
            .with_status(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let raw = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::field("PAYLOAD_TOO_LARGE", "body", "is larger than 2 MB")
                        .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE)
                } else {
                    ApiError::field("INVALID_JSON", "body", rejection.body_text())
                }
            })?;
        Ok(JsonBody {
            value: parse(&raw)?,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        amount: String,
        nonce: i64,
    }

    fn error_of(body: &str) -> (String, String) {
        let error = parse::<Sample>(body.as_bytes()).expect_err("invalid");
        let response = axum::response::IntoResponse::into_response(error);
        let _ = response;
        let error = parse::<Sample>(body.as_bytes()).expect_err("invalid");
        (error.code().to_owned(), format!("{error:?}"))
    }

    #[test]
    fn each_mistake_names_its_field() {
        let (code, debug) = error_of(r#"{"amount": "1", "nonce": "x"}"#);
        assert_eq!(code, "VALIDATION_ERROR");
        assert!(debug.contains("field: Some(\"nonce\")"), "{debug}");
        let (code, debug) = error_of(r#"{"amount": "1", "nonce": 1, "colour": "red"}"#);
        assert_eq!(code, "VALIDATION_ERROR");
        assert!(debug.contains("field: Some(\"colour\")"), "{debug}");
        let (code, debug) = error_of(r#"{"nonce": 1}"#);
        assert_eq!(code, "VALIDATION_ERROR");
        assert!(debug.contains("field: Some(\"amount\")"), "{debug}");
        let (code, _) = error_of(r#"{"amount": "1", "#);
        assert_eq!(code, "INVALID_JSON");
    }

    #[test]
    fn a_body_of_the_wrong_type_is_about_the_body_not_the_value_sent() {
        for body in [
            "false",
            "0",
            "6.954326358352348e+16",
            "\"AAA\"",
            "[]",
            "null",
        ] {
            let (code, debug) = error_of(body);
            assert_eq!(code, "VALIDATION_ERROR", "{body}");
            assert!(debug.contains("field: Some(\"body\")"), "{body}: {debug}");
        }
    }
}
