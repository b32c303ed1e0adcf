//! The x402 HTTP headers: their names, and their one encoding, base64 of JSON.
//!
//! | header | version | carries |
//! | --- | --- | --- |
//! | [`PAYMENT_REQUIRED`] | 2 | the 402 challenge |
//! | [`PAYMENT_SIGNATURE`] | 2 | the payment ([`crate::wire::PayloadV2`]) |
//! | [`PAYMENT_RESPONSE`] | 2 | the settlement ([`crate::wire::SettleResponse`]) |
//! | [`X_PAYMENT`] | 1 | the payment ([`crate::wire::PayloadV1`]) |
//! | [`X_PAYMENT_RESPONSE`] | 1 | the settlement ([`crate::wire::SettleResponse`]) |
//!
//! Every one is JSON in base64. [`encode`] writes the standard alphabet with padding, as the
//! reference implementations do; [`decode_bytes`] also reads what clients send in practice:
//! the URL-safe alphabet, missing padding, surrounding white space.
//!
//! ```
//! use coffer_x402::headers;
//! let header = headers::encode(&serde_json::json!({"x402Version": 2}));
//! assert_eq!(header, "eyJ4NDAyVmVyc2lvbiI6Mn0=");
//! let value: serde_json::Value = headers::decode(&header).unwrap();
//! assert_eq!(value["x402Version"], 2);
//! ```

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version 2's 402 challenge.
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// Version 2's payment.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// Version 2's settlement result.
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// Version 1's payment.
pub const X_PAYMENT: &str = "x-payment";
/// Version 1's settlement result.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
/// The headers a browser page may read from an answer (`Access-Control-Expose-Headers`).
pub const EXPOSED: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";

/// A header value that is not base64 of JSON.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Not base64 in any alphabet or padding.
    #[error("not base64")]
    NotBase64,
    /// Base64, but not JSON (of the expected shape).
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
}

/// A header value: `value` as JSON, in base64 (standard alphabet, padded). A value that
/// cannot be written as JSON (a map with non-string keys; none of the wire types) encodes as
/// the empty string.
pub fn encode(value: &impl Serialize) -> String {
    STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

/// The bytes of a base64 header value: the standard alphabet, tolerating the URL-safe one,
/// missing padding and white space around the value. `None` when it is not base64.
pub fn decode_bytes(value: &str) -> Option<Vec<u8>> {
    let trimmed = value.trim();
    STANDARD
        .decode(trimmed)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')).ok())
        .or_else(|| STANDARD_NO_PAD.decode(trimmed.trim_end_matches('=')).ok())
}

/// A header value read as JSON of type `T`.
///
/// # Errors
/// [`HeaderError::NotBase64`], or [`HeaderError::NotJson`] when the bytes are not JSON that
/// reads as `T`.
pub fn decode<T: DeserializeOwned>(value: &str) -> Result<T, HeaderError> {
    let bytes = decode_bytes(value).ok_or(HeaderError::NotBase64)?;
    serde_json::from_slice(&bytes).map_err(HeaderError::NotJson)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::engine::general_purpose::URL_SAFE;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::hostile_input::json_value;
    use crate::wire::SettleResponse;

    #[test]
    fn a_settlement_is_encoded_as_standard_padded_base64_of_its_json() {
        let settled = SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some("0xpayer".to_owned()),
            transaction: "0xabc".to_owned(),
            network: "base-sepolia".to_owned(),
        };
        let header = encode(&settled);
        assert_eq!(
            header,
            STANDARD.encode(serde_json::to_vec(&settled).unwrap())
        );
        let read: SettleResponse = decode(&header).unwrap();
        assert_eq!(read, settled);
    }

    #[test]
    fn what_is_not_base64_of_json_is_refused_saying_which() {
        assert!(matches!(
            decode::<Value>("%%%not-base64"),
            Err(HeaderError::NotBase64)
        ));
        assert_eq!(
            decode::<Value>("%%%").unwrap_err().to_string(),
            "not base64"
        );
        let not_json = decode::<Value>(&STANDARD.encode("{oops")).unwrap_err();
        assert!(matches!(not_json, HeaderError::NotJson(_)));
        assert!(not_json.to_string().starts_with("not JSON: "), "{not_json}");
        let wrong_shape = decode::<SettleResponse>(&encode(&json!({"success": "yes"})));
        assert!(matches!(wrong_shape, Err(HeaderError::NotJson(_))));
    }

    proptest! {
        #[test]
        fn any_json_reads_back_as_it_was_written(value in json_value()) {
            let written = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(decode_bytes(&encode(&value)), Some(written));
        }

        #[test]
        fn every_base64_flavour_decodes_to_what_was_encoded(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            for encoded in [
                STANDARD.encode(&bytes),
                STANDARD_NO_PAD.encode(&bytes),
                URL_SAFE.encode(&bytes),
                URL_SAFE_NO_PAD.encode(&bytes),
            ] {
                prop_assert_eq!(decode_bytes(&encoded), Some(bytes.clone()));
                prop_assert_eq!(decode_bytes(&format!(" {encoded}\t")), Some(bytes.clone()));
            }
        }

        #[test]
        fn decoding_any_text_never_panics(text in ".*") {
            let _ = decode::<Value>(&text);
        }
    }
}
