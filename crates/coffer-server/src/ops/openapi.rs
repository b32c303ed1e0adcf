//! The `/openapi.json` document: what each route accepts and answers, precisely enough that a
//! client generator or a fuzzer (the test suite runs schemathesis against `coffer dev`) builds
//! requests that reach the real logic.
//!
//! Routes document themselves with `#[utoipa::path]`; [`ApiDoc`] adds the security schemes of
//! every API family. [`finish`] then completes the document in three ways utoipa's derives
//! cannot:
//!
//! - **Wire formats Coffer does not own** (the x402 facilitator's bodies, OKX's and GatePay's
//!   envelopes) are written here as JSON Schema ([`wire_schemas`]). Handlers name them through
//!   the marker types of this module ([`X402PaymentRequest`], …), whose derived placeholder is
//!   replaced by the hand-written schema.
//! - **What this deployment accepts**: the blockchains, networks, tokens and fiat currencies
//!   depend on the configured chains and rates, so their enums are filled from a
//!   [`Deployment`]; a request naming another chain is refused by the server anyway.
//! - **Answers every route can give**: the request limits of [`crate::app::router`] answer 408
//!   `REQUEST_TIMEOUT` and 503 `OVERLOADED` in the native envelope on any route.

use std::collections::BTreeSet;

use coffer_core::ChainRegistry;
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Coffer's OpenAPI document before [`finish`]; routes add themselves in
/// [`crate::app::router`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Coffer",
        description = "Self-hosted crypto payment gateway. Coffer's own API and the payment-orders \
            family authenticate with `Authorization: Bearer <api key>` (the Pelago family also \
            with `Merchant-App-Key: <api key>`); the GatePay family with `X-GatePay-*` HMAC \
            headers; the OKX family with `OK-ACCESS-*` HMAC headers; the x402 facilitator is \
            open within its access policy.",
        license(name = "Apache-2.0")
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The security scheme names used in `security(...)` of the routes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A merchant's API key: `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        components.add_security_scheme(
            "merchant_app_key",
            header(
                "Merchant-App-Key",
                "A merchant's API key, as the Pelago family sends it.",
            ),
        );
        for (scheme, name, description) in [
            (
                "gatepay_client_id",
                "X-GatePay-Certificate-ClientId",
                "The GatePay credential's ClientId.",
            ),
            (
                "gatepay_timestamp",
                "X-GatePay-Timestamp",
                "Unix milliseconds, within 5 minutes of the server's clock.",
            ),
            (
                "gatepay_nonce",
                "X-GatePay-Nonce",
                "1 to 64 letters, digits, '-' or '_', single use per ClientId.",
            ),
            (
                "gatepay_signature",
                "X-GatePay-Signature",
                "Lower-case hex HMAC-SHA512(secret, \"<timestamp>\\n<nonce>\\n<body>\\n\").",
            ),
            (
                "okx_access_key",
                "OK-ACCESS-KEY",
                "The OKX credential's key.",
            ),
            (
                "okx_access_passphrase",
                "OK-ACCESS-PASSPHRASE",
                "The OKX credential's passphrase.",
            ),
            (
                "okx_access_timestamp",
                "OK-ACCESS-TIMESTAMP",
                "ISO-8601 UTC with milliseconds, within 30 seconds of the server's clock.",
            ),
            (
                "okx_access_sign",
                "OK-ACCESS-SIGN",
                "Base64 HMAC-SHA256(secret, timestamp + method + path with query + body).",
            ),
        ] {
            components.add_security_scheme(scheme, header(name, description));
        }
    }
}

/// What this deployment accepts where the document lists choices: its configured chains and
/// their tokens, and the fiat currencies it has rates for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    /// One entry per configured chain.
    pub chains: Vec<DeployedChain>,
    /// Fiat currency codes (`USD`) with the token symbols they have a rate for.
    pub fiat_currencies: Vec<(String, Vec<String>)>,
}

/// A configured chain's names and tokens, as the request bodies name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedChain {
    /// CryptoPay `blockchain` slug (`base`).
    pub slug: String,
    /// x402 v1 network name (`base-sepolia`).
    pub x402_v1: String,
    /// Further v1 names accepted (`bsc-mainnet`).
    pub aliases: Vec<String>,
    /// CAIP-2 id (`eip155:84532`).
    pub caip2: String,
    /// OKX `chainIndex` (`84532`).
    pub okx_chain_index: String,
    /// GatePay chain code (`BASESEPOLIA`).
    pub gatepay_chain: String,
    /// Token symbols (`USDC`).
    pub tokens: Vec<String>,
    /// GatePay `fullCurrType` of each token (`USDC_BASESEPOLIA`).
    pub full_curr_types: Vec<String>,
    /// The native coin's symbol (`ETH`).
    pub native_symbol: String,
}

impl Deployment {
    /// The configured chains of `chains`, and `fiat_currencies`.
    pub fn new(chains: &ChainRegistry, fiat_currencies: Vec<(String, Vec<String>)>) -> Self {
        Deployment {
            chains: chains
                .configured()
                .map(|chain| DeployedChain {
                    slug: chain.names.cryptopay_slug.clone(),
                    x402_v1: chain.names.x402_v1.clone(),
                    aliases: chain.names.aliases.clone(),
                    caip2: chain.names.caip2.clone(),
                    okx_chain_index: chain.names.okx_chain_index.clone(),
                    gatepay_chain: chain.names.gatepay_chain.clone(),
                    tokens: chain.assets.iter().map(|a| a.symbol.clone()).collect(),
                    full_curr_types: chain
                        .assets
                        .iter()
                        .map(|a| a.gatepay_full_curr_type.clone())
                        .collect(),
                    native_symbol: chain.native_symbol.clone(),
                })
                .collect(),
            fiat_currencies,
        }
    }

    fn all<'a>(&'a self, names: impl Fn(&'a DeployedChain) -> Vec<&'a str>) -> Vec<Value> {
        let set: BTreeSet<&str> = self.chains.iter().flat_map(names).collect();
        set.into_iter().map(Value::from).collect()
    }

    fn slugs(&self) -> Vec<Value> {
        self.all(|chain| vec![chain.slug.as_str()])
    }

    /// Every v1 network name and alias.
    fn v1_networks(&self) -> Vec<Value> {
        self.all(|chain| {
            std::iter::once(chain.x402_v1.as_str())
                .chain(chain.aliases.iter().map(String::as_str))
                .collect()
        })
    }

    fn caip2_networks(&self) -> Vec<Value> {
        self.all(|chain| vec![chain.caip2.as_str()])
    }

    fn tokens(&self) -> Vec<Value> {
        self.all(|chain| chain.tokens.iter().map(String::as_str).collect())
    }
}

/// The pattern [`finish`] gives every string of `format: uri` (webhook endpoints, page links):
/// `http(s)://host[:port][/path]` without spaces or credentials. The server accepts more (any
/// http(s) URL it can parse, within its outbound policy); this is what a request should look
/// like.
pub const HTTP_URL_PATTERN: &str = "^https?://([a-z0-9]{1,20}\\.){0,3}[a-z]{2,10}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,40}){0,4}$";

/// The document `/openapi.json` serves.
#[derive(Debug, Clone)]
pub struct ServedDocument(pub Value);

/// The served document: `document` with the hand-written wire schemas, the enums of
/// `deployment` and the answers of the request limits.
pub fn finish(document: &utoipa::openapi::OpenApi, deployment: &Deployment) -> Value {
    let mut document = serde_json::to_value(document).unwrap_or_else(|error| {
        tracing::error!(%error, "the OpenAPI document does not serialize");
        Value::Null
    });
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in wire_schemas() {
            schemas.insert(name.to_owned(), schema);
        }
    }
    if let Some(components) = document
        .pointer_mut("/components")
        .and_then(Value::as_object_mut)
    {
        components.insert("responses".to_owned(), limit_responses());
    }
    add_limit_answers(&mut document);
    camel_case_links(&mut document);
    narrow_to(&mut document, deployment);
    if let Some(schemas) = document.pointer_mut("/components/schemas") {
        pattern_urls(schemas);
    }
    document
}

/// Gives every string schema of `format: uri` under `schema` the [`HTTP_URL_PATTERN`].
fn pattern_urls(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.get("format").and_then(Value::as_str) == Some("uri") {
                object
                    .entry("pattern")
                    .or_insert_with(|| Value::from(HTTP_URL_PATTERN));
            }
            object.values_mut().for_each(pattern_urls);
        }
        Value::Array(items) => items.iter_mut().for_each(pattern_urls),
        _ => {}
    }
}

/// The 408 and 503 answers of the request limits, shared by every operation.
fn limit_responses() -> Value {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    json!({
        "RequestTimeout": {
            "description": "REQUEST_TIMEOUT: the request did not complete within the configured request timeout",
            "content": error,
        },
        "Overloaded": {
            "description": "OVERLOADED: the server is handling as many requests as it may; retry after `Retry-After` seconds",
            "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
            "content": error,
        },
    })
}

fn add_limit_answers(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            responses
                .entry("408")
                .or_insert_with(|| json!({"$ref": "#/components/responses/RequestTimeout"}));
            if !crate::app::NEVER_SHED.contains(&path.as_str()) {
                responses
                    .entry("503")
                    .or_insert_with(|| json!({"$ref": "#/components/responses/Overloaded"}));
            }
        }
    }
}

/// Spells the response links' fields as OpenAPI does (`operationId`): utoipa 5.5 writes
/// them in snake case, which no client reads.
fn camel_case_links(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|operations| operations.values_mut())
        .filter_map(|operation| {
            operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
        })
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

/// Sets `enum` on the schema at `pointer`, keeping `null` allowed where the schema allows it.
fn set_enum(document: &mut Value, pointer: &str, values: &[Value]) {
    let Some(schema) = document.pointer_mut(pointer).and_then(Value::as_object_mut) else {
        tracing::warn!(pointer, "no schema to narrow in the OpenAPI document");
        return;
    };
    let nullable = schema
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t == "null"));
    let mut values = values.to_vec();
    if nullable {
        values.push(Value::Null);
    }
    schema.insert("enum".to_owned(), Value::Array(values));
}

/// Fills the choices that depend on the configured chains and rates.
fn narrow_to(document: &mut Value, deployment: &Deployment) {
    let schemas = "/components/schemas";
    // Payment orders: the blockchain, and a currency of that blockchain.
    let order = format!("{schemas}/CreateOrderRequest");
    set_enum(
        document,
        &format!("{order}/properties/blockchain"),
        &deployment.slugs(),
    );
    let mut currencies = deployment.tokens();
    for chain in &deployment.chains {
        let native = Value::from(chain.native_symbol.as_str());
        if !currencies.contains(&native) {
            currencies.push(native);
        }
    }
    set_enum(
        document,
        &format!("{order}/properties/currency"),
        &currencies,
    );
    let fiat: Vec<Value> = deployment
        .fiat_currencies
        .iter()
        .map(|(code, _)| Value::from(code.as_str()))
        .collect();
    set_enum(
        document,
        &format!("{order}/properties/fiat_currency"),
        &fiat,
    );
    let per_chain: Vec<Value> = deployment
        .chains
        .iter()
        .map(|chain| {
            let mut symbols: Vec<&str> = chain.tokens.iter().map(String::as_str).collect();
            symbols.push(&chain.native_symbol);
            json!({"properties": {"blockchain": {"enum": [chain.slug]}, "currency": {"enum": symbols}}})
        })
        .collect();
    if let Some(schema) = document.pointer_mut(&order).and_then(Value::as_object_mut) {
        // `amount`, or `fiat_currency` with `fiat_amount` (null is absent); and a currency
        // of the blockchain.
        let given = |fields: &[&str]| {
            let typed: serde_json::Map<String, Value> = fields
                .iter()
                .map(|field| ((*field).to_owned(), json!({"type": "string"})))
                .collect();
            json!({"required": fields, "properties": typed})
        };
        // A fiat price needs a rate from that currency to the token.
        let rated: Vec<Value> = deployment
            .fiat_currencies
            .iter()
            .map(|(code, tokens)| {
                json!({"properties": {"fiat_currency": {"enum": [code]}, "currency": {"enum": tokens}}})
            })
            .collect();
        let priced = json!({"oneOf": [
            {"allOf": [given(&["amount"]), {"not": given(&["fiat_currency"])}, {"not": given(&["fiat_amount"])}]},
            {"allOf": [given(&["fiat_currency", "fiat_amount"]), {"not": given(&["amount"])}, {"anyOf": rated}]},
        ]});
        let mut all_of = vec![priced];
        if !per_chain.is_empty() {
            all_of.push(json!({"anyOf": per_chain}));
        }
        schema.insert("allOf".to_owned(), Value::Array(all_of));
    }
    // The list filter.
    if let Some(parameters) = document
        .pointer_mut("/paths/~1api~1payment-orders~1/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            if parameter["name"] == "blockchain" {
                parameter["schema"]["enum"] = Value::Array(deployment.slugs());
            }
        }
    }
    // Pelago: a served network and token.
    let pelago = format!("{schemas}/OrderRequest/properties");
    let mut networks = deployment.v1_networks();
    networks.extend(deployment.caip2_networks());
    set_enum(document, &format!("{pelago}/network"), &networks);
    set_enum(
        document,
        &format!("{pelago}/currency"),
        &deployment.tokens(),
    );
    // GatePay: a configured `fullCurrType` or chain code.
    let checkout = format!("{schemas}/CheckoutOrderRequest/properties");
    set_enum(
        document,
        &format!("{checkout}/fullCurrType"),
        &deployment.all(|chain| chain.full_curr_types.iter().map(String::as_str).collect()),
    );
    set_enum(
        document,
        &format!("{checkout}/chain"),
        &deployment.all(|chain| vec![chain.gatepay_chain.as_str()]),
    );
    // x402: a configured network of each version.
    for (schema, values) in [
        ("X402RequirementsV1", deployment.v1_networks()),
        ("X402PayloadV1", deployment.v1_networks()),
        ("X402RequirementsV2", deployment.caip2_networks()),
    ] {
        set_enum(
            document,
            &format!("{schemas}/{schema}/properties/network"),
            &values,
        );
    }
    let indexes = deployment.all(|chain| vec![chain.okx_chain_index.as_str()]);
    set_enum(
        document,
        &format!("{schemas}/OkxLegacyPaymentRequest/properties/chainIndex"),
        &indexes,
    );
}

/// Declares marker types that stand for a hand-written schema of [`wire_schemas`] in
/// `#[utoipa::path]` annotations.
macro_rules! wire_schema {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            /// A placeholder: [`finish`] writes the schema itself.
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new().into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

wire_schema!(
    /// An x402 `/verify` or `/settle` body, version 1 or 2.
    X402PaymentRequest,
    /// An x402 `/verify` answer.
    X402VerifyResponse,
    /// An x402 `/settle` answer.
    X402SettleResponse,
    /// An x402 `/supported` answer.
    X402Supported,
    /// An OKX legacy (`/api/v6/x402`) verify or settle body.
    OkxLegacyPaymentRequest,
    /// An OKX current (`/api/v6/pay/x402`) verify or settle body.
    OkxPaymentRequest,
    /// OKX's legacy envelope: a string `code`, `data` an array.
    OkxLegacyEnvelope,
    /// OKX's current envelope: a numeric `code`, `data` an object or null.
    OkxEnvelope,
    /// GatePay's envelope.
    GatePayEnvelope,
    /// Pelago's 402: the order and how to pay it.
    PelagoPaymentRequired,
    /// Pelago's refusal of a payment (402, 409) or its pending answer (202).
    PelagoRefusal,
    /// Pelago's payment methods.
    PelagoMethods,
);

const ADDRESS: &str = "^0x[0-9a-fA-F]{40}$";
const UINT: &str = "^[0-9]{1,78}$";

fn address(description: &str) -> Value {
    json!({"type": "string", "pattern": ADDRESS, "description": description})
}

fn uint(description: &str) -> Value {
    json!({"type": "string", "pattern": UINT, "description": description})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The JSON Schemas written by hand, by component name.
pub fn wire_schemas() -> Vec<(&'static str, Value)> {
    let authorization = json!({
        "type": "object",
        "description": "An EIP-3009 authorization as the payer signed it; every number is a decimal string.",
        "required": ["from", "to", "value", "validAfter", "validBefore", "nonce"],
        "properties": {
            "from": address("Payer"),
            "to": address("Payee"),
            "value": uint("Amount in base units"),
            "validAfter": {"type": "string", "pattern": "^[0-9]{1,20}$", "description": "Unix seconds after which it is valid"},
            "validBefore": {"type": "string", "pattern": "^[0-9]{1,20}$", "description": "Unix seconds before which it is valid"},
            "nonce": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$", "description": "32-byte hex nonce"},
        },
    });
    let exact_payload = json!({
        "type": "object",
        "description": "The `exact` EVM payload: a signature over an authorization.",
        "required": ["signature", "authorization"],
        "properties": {
            "signature": {"type": "string", "pattern": "^0x([0-9a-fA-F]{2})+$", "minLength": 132, "description": "Hex signature: 65 bytes for an EOA, longer for contract wallets (ERC-6492)"},
            "authorization": authorization,
        },
    });
    let domain = json!({
        "type": ["object", "null"],
        "description": "`{name, version}` of the token's EIP-712 domain",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    });
    let seconds = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": "Seconds the payment may take"});
    let requirements_v1 = json!({
        "type": "object",
        "description": "What a resource asks for, x402 version 1.",
        "required": ["scheme", "network", "maxAmountRequired", "payTo", "asset"],
        "properties": {
            "scheme": {"type": "string", "enum": ["exact"]},
            "network": {"type": "string", "description": "x402 v1 network name"},
            "maxAmountRequired": uint("Amount in base units"),
            "resource": {"type": "string", "description": "The resource's URL"},
            "description": {"type": "string"},
            "mimeType": {"type": "string"},
            "payTo": address("Recipient"),
            "maxTimeoutSeconds": seconds,
            "asset": address("Token contract"),
            "outputSchema": {"description": "Output schema, when given"},
            "extra": domain,
        },
    });
    let requirements_v2 = json!({
        "type": "object",
        "description": "What a resource asks for, x402 version 2.",
        "required": ["scheme", "network", "amount", "asset", "payTo"],
        "properties": {
            "scheme": {"type": "string", "enum": ["exact"]},
            "network": {"type": "string", "description": "CAIP-2 network"},
            "amount": uint("Amount in base units"),
            "asset": address("Token contract"),
            "payTo": address("Recipient"),
            "maxTimeoutSeconds": seconds,
            "extra": domain,
        },
    });
    let payload_v1 = json!({
        "type": "object",
        "description": "A version-1 payment (the decoded `X-PAYMENT` header).",
        "required": ["x402Version", "scheme", "network", "payload"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [1]},
            "scheme": {"type": "string", "enum": ["exact"]},
            "network": {"type": "string", "description": "x402 v1 network name"},
            "payload": exact_payload,
        },
    });
    let payload_v2 = json!({
        "type": "object",
        "description": "A version-2 payment (the decoded `PAYMENT-SIGNATURE` header).",
        "required": ["x402Version", "accepted", "payload"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [2]},
            "resource": {"description": "The resource paid for"},
            "accepted": schema_ref("X402RequirementsV2"),
            "payload": exact_payload,
            "extensions": {"description": "Extensions echoed by the client"},
        },
    });
    let version = |version: u8, payload: &str, requirements: &str| {
        json!({
            "type": "object",
            "required": ["paymentPayload", "paymentRequirements"],
            "properties": {
                "x402Version": {"type": "integer", "enum": [version], "description": "Advisory: the version is `paymentPayload.x402Version`"},
                "paymentPayload": schema_ref(payload),
                "paymentRequirements": schema_ref(requirements),
            },
        })
    };
    let payment_request = json!({
        "description": "A `/verify` or `/settle` body in x402 version 1 or 2; the version is `paymentPayload.x402Version`. Unknown fields are ignored.",
        "oneOf": [
            version(1, "X402PayloadV1", "X402RequirementsV1"),
            version(2, "X402PayloadV2", "X402RequirementsV2"),
        ],
    });
    let verify_response = json!({
        "type": "object",
        "required": ["isValid"],
        "properties": {
            "isValid": {"type": "boolean"},
            "invalidReason": {"type": "string", "description": "Machine-readable reason, e.g. `invalid_exact_evm_payload_signature`"},
            "invalidMessage": {"type": "string", "description": "Explanation naming the field at fault"},
            "payer": {"type": "string"},
        },
    });
    let settle_response = json!({
        "type": "object",
        "required": ["success", "transaction", "network"],
        "properties": {
            "success": {"type": "boolean"},
            "errorReason": {"type": "string", "description": "`settlement_pending` when the transaction is in flight (do not sign again)"},
            "errorMessage": {"type": "string"},
            "payer": {"type": "string"},
            "transaction": {"type": "string", "description": "Transaction hash, empty when nothing was sent"},
            "network": {"type": "string"},
        },
    });
    let supported = json!({
        "type": "object",
        "required": ["kinds", "extensions", "signers"],
        "properties": {
            "kinds": {"type": "array", "items": {
                "type": "object",
                "required": ["x402Version", "scheme", "network"],
                "properties": {
                    "x402Version": {"type": "integer", "enum": [1, 2]},
                    "scheme": {"type": "string"},
                    "network": {"type": "string"},
                    "extra": {"type": "object"},
                },
            }},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "signers": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        },
    });
    let okx_legacy_request = json!({
        "type": "object",
        "description": "An x402 version-1 payment on `chainIndex`; `network`, `asset` and the EIP-712 domain may be left out and are taken from the chain.",
        "required": ["chainIndex", "paymentPayload", "paymentRequirements"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [1]},
            "chainIndex": {"type": "string", "description": "OKX chain index (`196`)"},
            "paymentPayload": {
                "type": "object",
                "required": ["scheme", "payload"],
                "properties": {
                    "x402Version": {"type": "integer", "enum": [1]},
                    "scheme": {"type": "string", "enum": ["exact"]},
                    "network": {"type": "string"},
                    "payload": exact_payload,
                },
            },
            "paymentRequirements": {
                "type": "object",
                "required": ["scheme", "maxAmountRequired", "payTo"],
                "properties": {
                    "scheme": {"type": "string", "enum": ["exact"]},
                    "network": {"type": "string"},
                    "maxAmountRequired": uint("Amount in base units"),
                    "payTo": address("Recipient"),
                    "asset": address("Token contract (default: the chain's EIP-3009 token)"),
                    "maxTimeoutSeconds": seconds,
                    "resource": {"type": "string"},
                    "description": {"type": "string"},
                    "mimeType": {"type": "string"},
                    "extra": domain,
                },
            },
            "syncSettle": {"type": "boolean", "description": "Settle only: wait for the receipt"},
        },
    });
    let okx_request = json!({
        "description": "An x402 version-2 payment, with `syncSettle` on settle.",
        "allOf": [
            version(2, "X402PayloadV2", "X402RequirementsV2"),
            {"type": "object", "properties": {"syncSettle": {"type": "boolean", "description": "Settle only: wait for the receipt (`success` or `timeout`) instead of answering at broadcast (`pending`)"}}},
        ],
    });
    let okx_legacy_envelope = json!({
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {
            "code": {"type": "string", "description": "`0` on success; `51000` parameter invalid; `50103`–`50113` authentication; `50011` rate limited; `50001` unavailable; `50026` system error"},
            "msg": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
        },
    });
    let okx_envelope = json!({
        "type": "object",
        "required": ["code", "msg", "data"],
        "properties": {
            "code": {"type": "integer", "description": "`0` on success; `51000` parameter invalid; `50103`–`50113` authentication; `50011` rate limited; `50001` unavailable; `50026` system error"},
            "msg": {"type": "string"},
            "data": {"type": ["object", "null"]},
        },
    });
    let gatepay_envelope = json!({
        "type": "object",
        "required": ["status", "code", "label", "errorMessage", "data"],
        "properties": {
            "status": {"type": "string", "enum": ["SUCCESS", "FAIL"]},
            "code": {"type": "string", "description": "`000000` on success, else GatePay's error code (`400002` signature, …)"},
            "label": {"type": "string", "description": "The code's name (`INVALID_SIGNATURE`), empty on success"},
            "errorMessage": {"type": "string", "description": "Explanation naming the field or header at fault, empty on success"},
            "data": {"type": "object"},
        },
    });
    let pelago_payment_required = json!({
        "type": "object",
        "required": ["x402Version", "error", "orderId", "accepts"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [1]},
            "error": {"type": "string", "description": "`X-PAYMENT header is required`, or why the payment was not taken"},
            "orderId": {"type": "string"},
            "accepts": {"type": "array", "items": schema_ref("X402RequirementsV1")},
        },
    });
    let pelago_refusal = json!({
        "type": "object",
        "required": ["x402Version", "code", "error", "orderId"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [1]},
            "code": {"type": "string", "description": "`TX_ALREADY_USED`, `PAYMENT_ALREADY_USED`, `ORDER_ALREADY_PAID` (409); `SETTLEMENT_PENDING`, `CONFIRMING` (202); others 402"},
            "error": {"type": "string"},
            "orderId": {"type": ["string", "null"]},
        },
    });
    let pelago_methods = json!({
        "type": "object",
        "required": ["x402Version", "methods"],
        "properties": {
            "x402Version": {"type": "integer", "enum": [1]},
            "methods": {"type": "array", "items": {
                "type": "object",
                "required": ["network", "caip2", "chainId", "currency", "asset", "decimals", "scheme", "paymentForms", "payTo", "confirmations"],
                "properties": {
                    "network": {"type": "string"},
                    "caip2": {"type": "string"},
                    "chainId": {"type": "integer", "minimum": 0},
                    "currency": {"type": "string"},
                    "asset": {"type": "string"},
                    "decimals": {"type": "integer", "minimum": 0},
                    "scheme": {"type": "string", "enum": ["exact"]},
                    "paymentForms": {"type": "array", "items": {"type": "string", "enum": ["eip3009", "txHash"]}},
                    "payTo": {"type": "string"},
                    "confirmations": {"type": "integer", "minimum": 0},
                },
            }},
        },
    });
    vec![
        ("X402PaymentRequest", payment_request),
        ("X402PayloadV1", payload_v1),
        ("X402PayloadV2", payload_v2),
        ("X402RequirementsV1", requirements_v1),
        ("X402RequirementsV2", requirements_v2),
        ("X402VerifyResponse", verify_response),
        ("X402SettleResponse", settle_response),
        ("X402Supported", supported),
        ("OkxLegacyPaymentRequest", okx_legacy_request),
        ("OkxPaymentRequest", okx_request),
        ("OkxLegacyEnvelope", okx_legacy_envelope),
        ("OkxEnvelope", okx_envelope),
        ("GatePayEnvelope", gatepay_envelope),
        ("PelagoPaymentRequired", pelago_payment_required),
        ("PelagoRefusal", pelago_refusal),
        ("PelagoMethods", pelago_methods),
    ]
}
