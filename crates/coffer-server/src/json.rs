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

/// The field a serde error about a whole object names in backticks (`missing field `nonce``,
/// `unknown field `colour``), never text the client wrote: a type error quotes the value
/// (`invalid type: string "`x`"`), which is no field.
pub(crate) fn named_field(message: &str) -> Option<&str> {
    ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next())
}

/// Why a body is not a JSON object, when it is not: `Err` with the syntax error for malformed
/// JSON, `Ok` for well-formed JSON of another kind (`[…]`, `"…"`, `1`, which serde would read
/// field by position or name after its value). `None` for what starts as an object (and for an
/// empty body, which the parser refuses).
pub(crate) fn not_an_object(raw: &[u8]) -> Option<Result<(), String>> {
    match raw.iter().find(|byte| !byte.is_ascii_whitespace()) {
        None | Some(b'{') => None,
        Some(_) => Some(
            serde_json::from_slice::<serde::de::IgnoredAny>(raw)
                .map(|_| ())
                .map_err(|error| {
                    let message = error.to_string();
                    let message = message.split(" at line ").next().unwrap_or(&message);
                    format!("malformed JSON: {message}")
                }),
        ),
    }
}

/// The path (`goods.goodsName`, `body` for a key) of the first string in the JSON `raw` that
/// holds a NUL character (written `\u0000`), which no store can keep.
pub(crate) fn nul_in(raw: &[u8]) -> Option<String> {
    /// The path to the first text holding a NUL below `value`, which sits at `path` (`None`:
    /// the body itself; a key may be empty, so the root is not an empty path).
    fn walk(value: &serde_json::Value, path: Option<&str>) -> Option<Option<String>> {
        match value {
            serde_json::Value::String(text) if text.contains('\0') => Some(path.map(str::to_owned)),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().find_map(|(index, item)| {
                    let at = format!("{}[{index}]", path.unwrap_or("body"));
                    walk(item, Some(&at))
                })
            }
            serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
                if key.contains('\0') {
                    return Some(path.map(str::to_owned));
                }
                let at = match path {
                    None => key.clone(),
                    Some(path) => format!("{path}.{key}"),
                };
                walk(item, Some(&at))
            }),
            _ => None,
        }
    }
    if !raw.windows(6).any(|window| window == b"\\u0000") {
        return None;
    }
    let value = serde_json::from_slice(raw).ok()?;
    walk(&value, None).map(|path| path.unwrap_or_else(|| "body".to_owned()))
}

/// Why a body was refused, for each API family to put in its own envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyError {
    /// Whether the bytes were not JSON at all (rather than JSON of the wrong shape).
    pub malformed: bool,
    /// The field at fault (`body` for the body as a whole), a path such as `goods.goodsName`.
    pub field: String,
    /// What is wrong, never more of the client's text than serde quotes.
    pub message: String,
}

impl BodyError {
    fn new(malformed: bool, field: impl Into<String>, message: impl Into<String>) -> Self {
        BodyError {
            malformed,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The one body parser every family uses: parses `raw`, a JSON object, as `T`, naming the
/// field at fault.
///
/// # Errors
/// [`BodyError`] for malformed JSON, a value that is not an object, a wrong type, a missing
/// or an unknown field, or text holding a NUL character.
pub(crate) fn parse_object<T: DeserializeOwned>(raw: &[u8]) -> Result<T, BodyError> {
    match not_an_object(raw) {
        Some(Ok(())) => return Err(BodyError::new(false, "body", "must be a JSON object")),
        Some(Err(malformed)) => return Err(BodyError::new(true, "body", malformed)),
        None => {}
    }
    let value = parse_fields(raw)?;
    match nul_in(raw) {
        Some(field) => Err(BodyError::new(false, field, crate::extract::NUL)),
        None => Ok(value),
    }
}

fn parse_fields<T: DeserializeOwned>(raw: &[u8]) -> Result<T, BodyError> {
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
            BodyError::new(true, "body", format!("malformed JSON: {message}"))
        } else if path == "." {
            let field = named_field(&message).unwrap_or("body").to_owned();
            BodyError::new(false, field, message)
        } else {
            BodyError::new(false, path, message)
        }
    })
}

/// Parses `raw`, a JSON object, as `T`, naming the field at fault in Coffer's envelope.
///
/// # Errors
/// [`ApiError`] 400 `INVALID_JSON` for malformed JSON, `VALIDATION_ERROR` for a value that is
/// not an object, a wrong type, a missing or an unknown field, or text holding a NUL
/// character.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    parse_object(raw).map_err(|error| {
        let code = if error.malformed {
            "INVALID_JSON"
        } else {
            "VALIDATION_ERROR"
        };
        ApiError::field(code, error.field, error.message)
    })
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
            .map_err(|rejection| crate::extract::native_body_refusal(&rejection))?;
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
    fn a_nul_is_named_by_its_whole_path_even_under_an_empty_key() {
        // Found by the properties: under an empty top-level key, the path lost its root and
        // named only the inner key.
        assert_eq!(nul_in(br#"{"": {"A": "\u0000"}}"#).as_deref(), Some(".A"));
        assert_eq!(
            nul_in(br#"{"a": ["x", "\u0000"]}"#).as_deref(),
            Some("a[1]")
        );
        assert_eq!(nul_in(br#"{"a": "\u0000"}"#).as_deref(), Some("a"));
        assert_eq!(nul_in(br#"{"a\u0000": 1}"#).as_deref(), Some("body"));
        assert_eq!(nul_in(br#"{"a": "b"}"#), None);
    }

    #[test]
    fn a_value_the_client_wrote_is_never_taken_for_a_field() {
        // Found by the properties below: a type error at the top quotes the value, which was
        // read as the field's name, and an array was read as the object, field by position.
        for body in ["0", r#""`amount`""#, "[]", "[false]", "true", "null"] {
            let error = parse::<Sample>(body.as_bytes()).expect_err("invalid");
            assert_eq!(
                (error.code(), error.field_name()),
                ("VALIDATION_ERROR", Some("body")),
                "{body}"
            );
        }
        // Malformed JSON that starts as an array was read element by element (`[0]`).
        for body in ["[[", "[{", "[1,"] {
            let error = parse::<Sample>(body.as_bytes()).expect_err("invalid");
            assert_eq!(
                (error.code(), error.field_name()),
                ("INVALID_JSON", Some("body")),
                "{body}"
            );
        }
        let error = parse::<Sample>(br#"{"amount": "1", "nonce": 1, "nonce": 2}"#).unwrap_err();
        assert_eq!(error.field_name(), Some("nonce"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::cryptopay::CreateOrderRequest;
        use coffer_gateway::hostile_input::{json_value, shaped_object};

        const ORDER_FIELDS: &[&str] = &[
            "amount",
            "fiat_currency",
            "fiat_amount",
            "currency",
            "blockchain",
            "order_info",
            "nonce",
            "webhook_url",
            "redirect_url",
            "expires_at",
            "underpayment_tolerance",
        ];

        /// A refusal names the body, a field the request has, or a field the client sent that
        /// it does not have — never a value the client wrote.
        fn refused_properly(raw: &[u8]) -> Result<(), TestCaseError> {
            let Err(error) = parse::<CreateOrderRequest>(raw) else {
                return Ok(());
            };
            prop_assert!(matches!(error.code(), "INVALID_JSON" | "VALIDATION_ERROR"));
            prop_assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
            let field = error.field_name().unwrap_or_default();
            let sent = serde_json::from_slice::<serde_json::Value>(raw).ok();
            let sent_a_field_named_so = sent
                .as_ref()
                .and_then(serde_json::Value::as_object)
                .is_some_and(|object| object.contains_key(field));
            prop_assert!(
                field == "body" || ORDER_FIELDS.contains(&field) || sent_a_field_named_so,
                "{:?}",
                error
            );
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_are_refused_naming_the_body_or_a_field(
                raw in prop::collection::vec(any::<u8>(), 0..256),
            ) {
                refused_properly(&raw)?;
            }

            #[test]
            fn arbitrary_json_is_refused_naming_the_body_or_a_field(value in json_value()) {
                refused_properly(&serde_json::to_vec(&value).unwrap())?;
            }

            #[test]
            fn an_order_of_hostile_values_is_refused_naming_one_of_its_fields(
                value in shaped_object(ORDER_FIELDS),
            ) {
                refused_properly(&serde_json::to_vec(&value).unwrap())?;
            }
        }
    }
}
