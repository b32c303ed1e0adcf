//! The facilitator's wire format (Coinbase reference), versions 1 and 2.
//!
//! Requests are parsed leniently where clients differ (extra fields are ignored, `extra` may be
//! absent) and strictly where money is concerned (numbers are decimal strings, addresses and
//! hashes are hex, checked later by the facilitator). Replies omit null fields, and settle
//! replies always carry `transaction` and `network`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An EIP-3009 authorization as signed by the payer; every number is a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// Payer.
    pub from: String,
    /// Payee.
    pub to: String,
    /// Amount in base units.
    pub value: String,
    /// Unix seconds after which it is valid.
    pub valid_after: String,
    /// Unix seconds before which it is valid.
    pub valid_before: String,
    /// 32-byte hex nonce.
    pub nonce: String,
}

/// The `exact` EVM payload: a signature over an authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    /// Hex signature: 65 bytes for an EOA, longer for contract wallets.
    pub signature: String,
    /// What was signed.
    pub authorization: Authorization,
}

/// What a resource asks for, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    /// `exact`.
    pub scheme: String,
    /// v1 network name (`base-sepolia`).
    pub network: String,
    /// Amount in base units.
    pub max_amount_required: String,
    /// The resource's URL.
    #[serde(default)]
    pub resource: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// MIME type.
    #[serde(default)]
    pub mime_type: String,
    /// Recipient.
    pub pay_to: String,
    /// Seconds the payment may take.
    #[serde(default)]
    pub max_timeout_seconds: u64,
    /// Token contract.
    pub asset: String,
    /// Output schema, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// `{name, version}` of the EIP-712 domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// What a resource asks for, version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV2 {
    /// `exact`.
    pub scheme: String,
    /// CAIP-2 network (`eip155:84532`).
    pub network: String,
    /// Amount in base units.
    pub amount: String,
    /// Token contract.
    pub asset: String,
    /// Recipient.
    pub pay_to: String,
    /// Seconds the payment may take.
    #[serde(default)]
    pub max_timeout_seconds: u64,
    /// `{name, version}` of the EIP-712 domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// A version-1 payment (the decoded `X-PAYMENT` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadV1 {
    /// 1.
    pub x402_version: u8,
    /// `exact`.
    pub scheme: String,
    /// v1 network name.
    pub network: String,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
}

/// A version-2 payment (the decoded `PAYMENT-SIGNATURE` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadV2 {
    /// 2.
    pub x402_version: u8,
    /// The resource paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    /// The requirement the client chose, echoed.
    pub accepted: RequirementsV2,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
    /// Extensions echoed by the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// A `/verify` or `/settle` request of either version.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentRequest {
    /// Version 1.
    V1 {
        /// The payment.
        payload: PayloadV1,
        /// What was asked.
        requirements: RequirementsV1,
    },
    /// Version 2.
    V2 {
        /// The payment.
        payload: PayloadV2,
        /// What was asked.
        requirements: RequirementsV2,
    },
}

/// Why a request body is not a payment request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    x402_version: Option<Value>,
    payment_payload: Value,
    payment_requirements: Value,
}

/// The name a serde error about a whole object gives in backticks (`missing field `payTo``),
/// never text the client wrote (`invalid type: string "`x`"` quotes the value).
fn named_field(message: &str) -> Option<&str> {
    ["missing field `", "duplicate field `", "unknown field `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next())
}

/// The error of a value at `prefix` (`""` for the body itself): the field is the path to the
/// value at fault, or the field a missing-field error names.
fn field_error(prefix: &str, path: &str, error: &serde_json::Error) -> RequestError {
    let message = error.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let name = if path == "." {
        named_field(&message)
    } else {
        Some(path)
    };
    let field = match (prefix, name) {
        ("", Some(name)) => name.to_owned(),
        ("", None) => "body".to_owned(),
        (prefix, Some(name)) => format!("{prefix}.{name}"),
        (prefix, None) => prefix.to_owned(),
    };
    RequestError { field, message }
}

/// Reads `value` as `T`, naming the field at fault under `prefix`.
fn from_value<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: Value,
) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        field_error(prefix, &path, error.inner())
    })
}

impl PaymentRequest {
    /// Parses a `/verify` or `/settle` body; the version comes from
    /// `paymentPayload.x402Version` (the top-level `x402Version` is advisory, as in the
    /// reference facilitator).
    ///
    /// # Errors
    /// [`RequestError`] naming the missing or malformed field.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(body);
        let raw: RawRequest = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let error = error.into_inner();
            if error.is_syntax() || error.is_eof() {
                RequestError {
                    field: "body".to_owned(),
                    message: format!("malformed JSON: {error}"),
                }
            } else {
                field_error("", &path, &error)
            }
        })?;
        let version = raw
            .payment_payload
            .get("x402Version")
            .or(raw.x402_version.as_ref())
            .and_then(Value::as_u64)
            .ok_or_else(|| RequestError {
                field: "paymentPayload.x402Version".to_owned(),
                message: "must be 1 or 2".to_owned(),
            })?;
        match version {
            1 => Ok(PaymentRequest::V1 {
                payload: from_value("paymentPayload", raw.payment_payload)?,
                requirements: from_value("paymentRequirements", raw.payment_requirements)?,
            }),
            2 => Ok(PaymentRequest::V2 {
                payload: from_value("paymentPayload", raw.payment_payload)?,
                requirements: from_value("paymentRequirements", raw.payment_requirements)?,
            }),
            other => Err(RequestError {
                field: "paymentPayload.x402Version".to_owned(),
                message: format!("version {other} is not supported; use 1 or 2"),
            }),
        }
    }

    /// The network as the request names it (v1 name or CAIP-2).
    pub fn network(&self) -> &str {
        match self {
            PaymentRequest::V1 { requirements, .. } => &requirements.network,
            PaymentRequest::V2 { requirements, .. } => &requirements.network,
        }
    }

    /// The payer as given.
    pub fn payer(&self) -> &str {
        match self {
            PaymentRequest::V1 { payload, .. } => &payload.payload.authorization.from,
            PaymentRequest::V2 { payload, .. } => &payload.payload.authorization.from,
        }
    }

    /// The protocol version.
    pub fn version(&self) -> u8 {
        match self {
            PaymentRequest::V1 { .. } => 1,
            PaymentRequest::V2 { .. } => 2,
        }
    }
}

/// Messages leave the process without URLs: an RPC endpoint's URL carries its API key.
fn serialize_redacted<S: serde::Serializer>(
    message: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match message {
        Some(text) => serializer.serialize_some(&coffer_core::redact::redact_urls(text)),
        None => serializer.serialize_none(),
    }
}

/// The `/verify` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment may be settled.
    pub is_valid: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Details for people (any URL in them is redacted when serialised).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted"
    )]
    pub invalid_message: Option<String>,
    /// The payer, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// The `/settle` reply; `transaction` and `network` are always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the transfer happened.
    pub success: bool,
    /// Why not; `settlement_pending` when it was broadcast but not yet mined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Details for people (any URL in them is redacted when serialised).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted"
    )]
    pub error_message: Option<String>,
    /// The payer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash, `""` when nothing was broadcast.
    pub transaction: String,
    /// The network as requested.
    pub network: String,
}

/// One `/supported` kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// 1 or 2.
    pub x402_version: u8,
    /// `exact`.
    pub scheme: String,
    /// v1 name or CAIP-2 id.
    pub network: String,
}

/// The `/supported` reply: v1 and v2 kinds in one list, and the signers per namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supported {
    /// Every (version, scheme, network) served.
    pub kinds: Vec<SupportedKind>,
    /// Extensions (none yet).
    pub extensions: Vec<String>,
    /// Settlement signers by namespace (`eip155:*`).
    pub signers: std::collections::BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"{"x402Version":2,"paymentPayload":{"x402Version":2,"resource":{"url":"https://x"},
      "accepted":{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":300,"extra":{"name":"USDC","version":"2"}},
      "payload":{"signature":"0x00","authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66",
        "to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","value":"10000","validAfter":"1","validBefore":"2","nonce":"0x01"}}},
      "paymentRequirements":{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":300,"extra":{"name":"USDC","version":"2"}}}"#;

    #[test]
    fn both_versions_parse_by_the_payloads_version() {
        let request = PaymentRequest::parse(V2.as_bytes()).expect("v2");
        assert_eq!(request.version(), 2);
        let v1 = r#"{"x402Version":1,"paymentPayload":{"x402Version":1,"scheme":"exact","network":"base-sepolia",
          "payload":{"signature":"0x00","authorization":{"from":"0x1","to":"0x2","value":"1","validAfter":"0","validBefore":"9","nonce":"0x0"}}},
          "paymentRequirements":{"scheme":"exact","network":"base-sepolia","maxAmountRequired":"1","resource":"https://x",
          "description":"","mimeType":"","payTo":"0x2","maxTimeoutSeconds":60,"asset":"0x3"}}"#;
        assert_eq!(
            PaymentRequest::parse(v1.as_bytes()).expect("v1").version(),
            1
        );
    }

    #[test]
    fn malformed_requests_name_the_field() {
        assert_eq!(PaymentRequest::parse(b"{").unwrap_err().field, "body");
        let missing = V2.replace("\"payTo\":\"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\",\"maxTimeoutSeconds\":300,\"extra\":{\"name\":\"USDC\",\"version\":\"2\"}}}", "\"maxTimeoutSeconds\":300}}");
        assert_eq!(
            PaymentRequest::parse(missing.as_bytes()).unwrap_err().field,
            "paymentRequirements.payTo"
        );
        let version = V2.replace(
            "\"paymentPayload\":{\"x402Version\":2",
            "\"paymentPayload\":{\"x402Version\":3",
        );
        assert_eq!(
            PaymentRequest::parse(version.as_bytes()).unwrap_err().field,
            "paymentPayload.x402Version"
        );
    }

    #[test]
    fn errors_name_the_field_never_the_value_the_client_wrote() {
        let field = |body: &str| PaymentRequest::parse(body.as_bytes()).unwrap_err().field;
        // Found by the properties below: the value was taken for a field name.
        assert_eq!(field("0"), "body");
        assert_eq!(field(r#""`x`""#), "body");
        assert_eq!(field("{}"), "paymentPayload");
        assert_eq!(
            field(r#"{"paymentPayload":{"x402Version":2},"paymentPayload":{}}"#),
            "paymentPayload"
        );
        let wrong_type = V2.replace(
            "\"maxTimeoutSeconds\":300,\"extra\":{\"name\":\"USDC\",\"version\":\"2\"}}}",
            "\"maxTimeoutSeconds\":\"`evil`\"}}",
        );
        assert_eq!(field(&wrong_type), "paymentRequirements.maxTimeoutSeconds");
        let nested = V2.replace("\"validAfter\":\"1\"", "\"validAfter\":false");
        assert_eq!(
            field(&nested),
            "paymentPayload.payload.authorization.validAfter"
        );
    }

    #[test]
    fn deeply_nested_or_huge_bodies_are_refused_naming_the_body() {
        for depth in [200, 10_000, 100_000] {
            let arrays = "[".repeat(depth);
            assert_eq!(
                PaymentRequest::parse(arrays.as_bytes()).unwrap_err().field,
                "body"
            );
            let nested = format!(
                r#"{{"paymentPayload":{}{},"paymentRequirements":{{}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                PaymentRequest::parse(nested.as_bytes()).unwrap_err().field,
                "body"
            );
        }
        let version = format!(
            r#"{{"paymentPayload":{{"x402Version":{}}},"paymentRequirements":{{}}}}"#,
            "9".repeat(80)
        );
        assert_eq!(
            PaymentRequest::parse(version.as_bytes()).unwrap_err().field,
            "paymentPayload.x402Version"
        );
    }

    #[test]
    fn replies_omit_nulls() {
        let reply = VerifyResponse {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer: Some("0x1".into()),
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"isValid":true,"payer":"0x1"}"#
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::json;

        use super::super::*;
        use crate::hostile_input::{hostile_text, json_value, shaped_request};

        /// Every name a request's fields have.
        const FIELD_NAMES: [&str; 24] = [
            "x402Version",
            "scheme",
            "network",
            "payload",
            "signature",
            "authorization",
            "from",
            "to",
            "value",
            "validAfter",
            "validBefore",
            "nonce",
            "accepted",
            "resource",
            "extensions",
            "amount",
            "asset",
            "payTo",
            "maxTimeoutSeconds",
            "extra",
            "maxAmountRequired",
            "description",
            "mimeType",
            "outputSchema",
        ];

        /// Whether an error names a field the request has (or the body), never text the
        /// client wrote.
        fn names_a_field_of_the_request(error: &RequestError) -> bool {
            let mut segments = error.field.split('.');
            let root = segments.next().unwrap_or_default();
            match root {
                "body" => error.field == "body",
                "paymentPayload" | "paymentRequirements" => {
                    segments.all(|segment| FIELD_NAMES.contains(&segment))
                }
                _ => false,
            }
        }

        prop_compose! {
            fn authorization()(
                from in hostile_text(), to in hostile_text(), value in hostile_text(),
                valid_after in hostile_text(), valid_before in hostile_text(), nonce in hostile_text(),
            ) -> Authorization {
                Authorization { from, to, value, valid_after, valid_before, nonce }
            }
        }

        prop_compose! {
            fn exact_payload()(signature in hostile_text(), authorization in authorization())
                -> ExactEvmPayload {
                ExactEvmPayload { signature, authorization }
            }
        }

        /// `extra` as clients send it: an object (a JSON `null` reads as absent).
        fn extra() -> impl Strategy<Value = Option<Value>> {
            prop::option::of(
                prop::collection::btree_map("[a-zA-Z]{1,8}", hostile_text(), 0..4)
                    .prop_map(|map| json!(map)),
            )
        }

        prop_compose! {
            fn requirements_v2()(
                scheme in hostile_text(), network in hostile_text(), amount in hostile_text(),
                asset in hostile_text(), pay_to in hostile_text(), max_timeout_seconds in any::<u64>(),
                extra in extra(),
            ) -> RequirementsV2 {
                RequirementsV2 { scheme, network, amount, asset, pay_to, max_timeout_seconds, extra }
            }
        }

        prop_compose! {
            fn requirements_v1()(
                scheme in hostile_text(), network in hostile_text(), amount in hostile_text(),
                resource in hostile_text(), description in hostile_text(), mime_type in hostile_text(),
                pay_to in hostile_text(), max_timeout_seconds in any::<u64>(), asset in hostile_text(),
                output_schema in extra(), extra in extra(),
            ) -> RequirementsV1 {
                RequirementsV1 {
                    scheme, network, max_amount_required: amount, resource, description, mime_type,
                    pay_to, max_timeout_seconds, asset, output_schema, extra,
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_are_refused_naming_a_field_and_never_panic(
                body in prop::collection::vec(any::<u8>(), 0..512),
            ) {
                if let Err(error) = PaymentRequest::parse(&body) {
                    prop_assert!(names_a_field_of_the_request(&error), "{error:?}");
                }
            }

            #[test]
            fn arbitrary_json_never_panics_and_errors_name_a_field(value in json_value()) {
                let body = serde_json::to_vec(&value).unwrap();
                if let Err(error) = PaymentRequest::parse(&body) {
                    prop_assert!(names_a_field_of_the_request(&error), "{error:?}");
                }
            }

            #[test]
            fn hostile_values_in_the_right_shape_parse_only_as_version_1_or_2(
                value in shaped_request(),
            ) {
                let body = serde_json::to_vec(&value).unwrap();
                match PaymentRequest::parse(&body) {
                    Ok(request) => {
                        prop_assert!(matches!(request.version(), 1 | 2));
                        let _ = (request.network(), request.payer());
                    }
                    Err(error) => prop_assert!(names_a_field_of_the_request(&error), "{error:?}"),
                }
            }

            #[test]
            fn a_version_2_request_reads_back_as_it_was_written(
                accepted in requirements_v2(),
                requirements in requirements_v2(),
                payload in exact_payload(),
                resource in extra(),
                extensions in extra(),
            ) {
                let written = PayloadV2 {
                    x402_version: 2, resource, accepted, payload, extensions,
                };
                let body = json!({
                    "x402Version": 2,
                    "paymentPayload": written,
                    "paymentRequirements": requirements,
                });
                let read = PaymentRequest::parse(&serde_json::to_vec(&body).unwrap());
                prop_assert_eq!(read, Ok(PaymentRequest::V2 { payload: written, requirements }));
            }

            #[test]
            fn a_version_1_request_reads_back_as_it_was_written(
                scheme in hostile_text(),
                network in hostile_text(),
                payload in exact_payload(),
                requirements in requirements_v1(),
            ) {
                let written = PayloadV1 { x402_version: 1, scheme, network, payload };
                let body = json!({
                    "x402Version": 1,
                    "paymentPayload": written,
                    "paymentRequirements": requirements,
                });
                let read = PaymentRequest::parse(&serde_json::to_vec(&body).unwrap());
                prop_assert_eq!(read, Ok(PaymentRequest::V1 { payload: written, requirements }));
            }
        }
    }
}
