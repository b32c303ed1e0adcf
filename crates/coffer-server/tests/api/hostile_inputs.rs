//! Hostile requests against every route Coffer documents.
//!
//! For each route and method of `/openapi.json` — read when the test starts, so a new route is
//! covered without editing this file — and for the paywall, property-generated requests carry
//! arbitrary bodies, JSON of the route's own shape with hostile values, hostile credentials,
//! `X-PAYMENT` / `PAYMENT-SIGNATURE` headers, path parameters and query strings. They are driven
//! in-process through the real router (`tower::ServiceExt::oneshot`, no sockets) over a fresh
//! SQLite database. Authenticated routes are tried without credentials, with hostile ones and
//! with valid ones (a live API key, a correctly signed GatePay or OKX request), so that hostile
//! bodies reach the decoders behind authentication. The chain's RPC URL points at a closed
//! local port: whatever asks the chain fails fast, as it does when a node is down.
//!
//! Every answer must come back (a panicking handler fails the request's task), must be below
//! 500 — except a 503 for the unreachable chain, which must carry a stable code in its
//! family's envelope, and `/readyz`, whose 503 is its purpose — and every error must be in its
//! family's envelope: native `{success: false, error: {code, message, field?}}` for `/api/*`
//! and the pages, GatePay's `{status: "FAIL", code, label, errorMessage, data}` for `/v1/pay/*`,
//! OKX's `{code, msg, data}` for `/api/v6/*`, x402's `{isValid: false, invalidReason, …}` and
//! `{success: false, errorReason, …}` for `/x402/*`, the paywall's x402 answers, and Pelago's
//! (native, or `{x402Version, code, error, orderId}`) for `/openapi/crypto/*`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffer_evm::testnet;
use coffer_gateway::facilitator_policy::FacilitatorPolicy;
use coffer_server::AppState;
use coffer_server::paywall::PaywallRouteConfig;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_x402::settlement::SettleOptions;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::kit::{
    self, CHAIN_ID, PAY_TO, USDC, closed_port_url, deposit_wallet, new_merchant, now,
    paywall_route, registry, requirements_v2, rpc, with_paywall,
};

/// The paywall route configured for the test.
const PAYWALL_ROUTE: &str = "/premium/*";
/// Cases per route and method.
const CASES: u32 = 256;

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// The router over a fresh database, a merchant with every kind of credential, and the ids of
/// a few real orders and events (so that path parameters and bodies can name them).
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    keys: Keys,
    /// A payer whose signatures the payment templates carry.
    payer: PrivateKeySigner,
    /// Real ids: payment orders, a GatePay order's prepayId and trade number, a Pelago order,
    /// events.
    ids: Vec<String>,
    nonces: AtomicU64,
    _db: TestDatabase,
}

/// A local URL nothing listens on.
impl Harness {
    fn new(backend: Backend) -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (router, db, ids, keys) = runtime.block_on(Harness::build(backend));
        let mut harness = Harness {
            runtime,
            router,
            keys,
            payer: testnet::dev_account(1).unwrap(),
            ids,
            nonces: AtomicU64::new(0),
            _db: db,
        };
        harness
            .ids
            .extend(harness.runtime.block_on(harness.create_fixtures()));
        harness
    }

    async fn build(backend: Backend) -> (axum::Router, TestDatabase, Vec<String>, Keys) {
        let db = TestDatabase::new(backend).await.unwrap();
        let registry = registry(&[("base-sepolia", rpc(&[&closed_port_url()], Some(1)))]);
        let route = PaywallRouteConfig {
            method: None,
            description: "Premium".to_owned(),
            ..paywall_route(PAYWALL_ROUTE, &closed_port_url())
        };
        let state = AppState::new(db.store.clone(), registry, "http://127.0.0.1")
            .unwrap()
            .with_settlement(
                vec![testnet::dev_account(9).unwrap()],
                SettleOptions {
                    receipt_timeout: Duration::from_millis(200),
                    ..SettleOptions::default()
                },
            )
            .with_facilitator_policy(FacilitatorPolicy {
                payer_per_minute: 0,
                client_per_minute: 0,
                ..FacilitatorPolicy::default()
            });
        let mut state = with_paywall(state, &[route]);
        state.readiness_timeout = Duration::from_millis(200);
        let (merchant, api_key) =
            new_merchant(&state, "Shop", Some("https://shop.example/hooks")).await;
        let revoked = state
            .gateway
            .merchants
            .create_key(&merchant.id, "revoked")
            .await
            .unwrap();
        state
            .gateway
            .merchants
            .revoke_key(&revoked.row.id)
            .await
            .unwrap();
        let gatepay = state.gateway.gatepay.create(&merchant.id).await.unwrap();
        let okx = state.gateway.okx.create(&merchant.id).await.unwrap();
        deposit_wallet(&state, &merchant.id).await;
        state
            .gateway
            .sales
            .add_pay_to(&merchant, CHAIN_ID, PAY_TO)
            .await
            .unwrap();
        let router = coffer_server::router(state);
        let keys = Keys {
            api_key,
            revoked_key: revoked.key.expose_secret().to_owned(),
            gatepay_client_id: gatepay.client_id.clone(),
            gatepay_secret: gatepay.secret.expose_secret().to_owned(),
            okx_key: okx.access_key.clone(),
            okx_secret: okx.secret.expose_secret().to_owned(),
            okx_passphrase: okx.passphrase.expose_secret().to_owned(),
        };
        (router, db, vec![merchant.id.to_string()], keys)
    }

    /// Real orders of each family and their events, created through the API itself.
    async fn create_fixtures(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let order = json!({"amount": "1.50", "currency": "USDC", "blockchain": "base-sepolia",
            "order_info": "{}", "nonce": 1});
        let (status, body) = self
            .send(
                Method::POST,
                "/api/payment-orders/",
                Credential::Bearer,
                &order,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["data"]["order_id"].as_str().unwrap().to_owned());

        let checkout = json!({"merchantTradeNo": "trade-1", "env": {"terminalType": "WEB"},
            "goods": {"goodsType": "02", "goodsName": "Tea", "goodsDetail": "Green"},
            "fullCurrType": "USDC_BASESEPOLIA", "orderAmount": "2"});
        let (status, body) = self
            .send(
                Method::POST,
                "/v1/pay/checkout/order",
                Credential::GatePay,
                &checkout,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["data"]["prepayId"].as_str().unwrap().to_owned());
        ids.push("trade-1".to_owned());
        let location = body["data"]["location"].as_str().unwrap();
        ids.push(location.rsplit('/').next().unwrap().to_owned());

        let pelago = json!({"description": "Tea", "amount": "1.5"});
        let (status, body) = self
            .send(
                Method::POST,
                "/openapi/crypto/x402/order",
                Credential::Bearer,
                &pelago,
            )
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        ids.push(body["orderId"].as_str().unwrap().to_owned());

        let (status, body) = self
            .send(
                Method::GET,
                "/api/events/",
                Credential::Bearer,
                &Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for event in body["data"].as_array().unwrap() {
            ids.push(event["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// A request with valid credentials, for the fixtures.
    async fn send(
        &self,
        method: Method,
        path: &str,
        credential: Credential,
        body: &Value,
    ) -> (StatusCode, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.exchange(method, path, credential, &[], body).await
    }

    /// A request of JSON (or any) bytes with `credential` (signed over it) and more headers.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        credential: Credential,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", "application/json");
        for (name, value) in self.credentials(credential, method.as_str(), path, &body) {
            request = request.header(name, value);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn next_nonce(&self) -> u64 {
        self.nonces.fetch_add(1, Ordering::Relaxed)
    }

    /// The headers of a credential, signing `method path body` where the scheme signs.
    fn credentials(
        &self,
        credential: Credential,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Vec<(String, Vec<u8>)> {
        let text = |name: &str, value: String| (name.to_owned(), value.into_bytes());
        match credential {
            Credential::None => Vec::new(),
            Credential::Bearer => vec![text(
                "authorization",
                format!("Bearer {}", self.keys.api_key),
            )],
            Credential::AppKey => vec![text("merchant-app-key", self.keys.api_key.clone())],
            Credential::Revoked => {
                vec![text(
                    "authorization",
                    format!("Bearer {}", self.keys.revoked_key),
                )]
            }
            Credential::GatePay => {
                let timestamp = chrono::Utc::now().timestamp_millis().to_string();
                let nonce = format!("n-{}", self.next_nonce());
                let signature = coffer_gateway::gatepay::sign(
                    &self.keys.gatepay_secret,
                    &timestamp,
                    &nonce,
                    body,
                );
                vec![
                    text(
                        "x-gatepay-certificate-clientid",
                        self.keys.gatepay_client_id.clone(),
                    ),
                    text("x-gatepay-timestamp", timestamp),
                    text("x-gatepay-nonce", nonce),
                    text("x-gatepay-signature", signature),
                ]
            }
            Credential::Okx => {
                let timestamp = chrono::Utc::now()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                let signature = coffer_gateway::okx::sign(
                    &self.keys.okx_secret,
                    &timestamp,
                    method,
                    path_and_query,
                    body,
                );
                vec![
                    text("ok-access-key", self.keys.okx_key.clone()),
                    text("ok-access-passphrase", self.keys.okx_passphrase.clone()),
                    text("ok-access-timestamp", timestamp),
                    text("ok-access-sign", signature),
                ]
            }
        }
    }
}

/// The merchant's credentials, as its clients hold them.
struct Keys {
    api_key: String,
    revoked_key: String,
    gatepay_client_id: String,
    gatepay_secret: String,
    okx_key: String,
    okx_secret: String,
    okx_passphrase: String,
}

// ---------------------------------------------------------------------------------------------
// Routes and their families
// ---------------------------------------------------------------------------------------------

/// The API family a path belongs to, which decides its credentials and its error envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `/api/*`: API key, native envelope.
    Native,
    /// `/v1/pay/*`: GatePay's signed headers and envelope.
    GatePay,
    /// `/api/v6/x402/*`: OKX's signed headers, `code` as a string.
    OkxLegacy,
    /// `/api/v6/pay/x402/*`: OKX's signed headers, `code` as a number.
    OkxCurrent,
    /// `/x402/*`: the facilitator, x402's answers.
    Facilitator,
    /// `/openapi/crypto/*`: Pelago, API key.
    Pelago,
    /// The paywall route: x402's answers.
    Paywall,
    /// Pages, health and meta: no credentials, native envelope.
    Public,
}

fn family_of(path: &str) -> Family {
    if path.starts_with("/api/v6/pay/") {
        Family::OkxCurrent
    } else if path.starts_with("/api/v6/") {
        Family::OkxLegacy
    } else if path.starts_with("/api/") {
        Family::Native
    } else if path.starts_with("/v1/pay/") {
        Family::GatePay
    } else if path.starts_with("/x402/") {
        Family::Facilitator
    } else if path.starts_with("/openapi/crypto/") {
        Family::Pelago
    } else if path.starts_with(PAYWALL_ROUTE.trim_end_matches('*')) {
        Family::Paywall
    } else {
        Family::Public
    }
}

/// One documented operation.
#[derive(Debug, Clone)]
struct Route {
    template: String,
    method: Method,
    query_params: Vec<String>,
}

impl Route {
    fn family(&self) -> Family {
        family_of(&self.template)
    }
}

/// Every operation of `/openapi.json`, and the paywall route with the methods clients use.
fn routes(harness: &Harness) -> Vec<Route> {
    let (status, document) = harness.runtime.block_on(harness.send(
        Method::GET,
        "/openapi.json",
        Credential::None,
        &Value::Null,
    ));
    assert_eq!(status, StatusCode::OK);
    let mut routes = Vec::new();
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let query_params = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|parameter| parameter["in"] == "query")
                .filter_map(|parameter| parameter["name"].as_str().map(str::to_owned))
                .collect();
            routes.push(Route {
                template: template.clone(),
                method,
                query_params,
            });
        }
    }
    assert!(routes.len() >= 20, "the document lists the API: {routes:?}");
    for method in [Method::GET, Method::POST] {
        routes.push(Route {
            template: "/premium/{resource}".to_owned(),
            method,
            query_params: vec!["q".to_owned()],
        });
    }
    routes
}

// ---------------------------------------------------------------------------------------------
// Hostile requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    None,
    Bearer,
    AppKey,
    Revoked,
    GatePay,
    Okx,
}

/// What a request authenticates with.
#[derive(Debug, Clone)]
enum Auth {
    /// The family's valid credential, signed over the final request.
    Valid,
    /// Another of the family's forms (`Merchant-App-Key` for a bearer family).
    ValidOther,
    None,
    Revoked,
    /// The family's headers with some values replaced by hostile bytes.
    Hostile(Vec<(usize, Vec<u8>)>),
}

/// A path parameter: a real id or hostile text (percent-encoded bytes).
#[derive(Debug, Clone)]
enum PathParam {
    Known(prop::sample::Index),
    Encoded(Vec<u8>),
    Raw(String),
}

#[derive(Debug, Clone)]
enum Query {
    None,
    Pairs(Vec<(Option<prop::sample::Index>, Vec<u8>)>),
    Raw(String),
}

/// A JSON body: the route's template with some leaves replaced or removed.
#[derive(Debug, Clone)]
struct Mutations(Vec<(prop::sample::Index, Option<Value>)>);

#[derive(Debug, Clone)]
enum BodyKind {
    Empty,
    Bytes(Vec<u8>),
    Json(Value),
    Template(Mutations),
    /// Past the 2 MB limit.
    Huge(u8),
}

/// An x402 payment header.
#[derive(Debug, Clone)]
enum Payment {
    None,
    Bytes(Vec<u8>),
    Json(Value),
    /// A correctly signed EIP-3009 payload (or a tx-hash proof), mutated, then encoded.
    Template {
        proof: bool,
        value: u64,
        mutations: Mutations,
        encoding: u8,
    },
}

#[derive(Debug, Clone)]
struct Hostile {
    /// A made-up or undeclared method instead of the route's.
    method: Option<String>,
    path: Vec<PathParam>,
    query: Query,
    auth: Auth,
    content_type: Option<Vec<u8>>,
    body: BodyKind,
    payment: Payment,
    /// `PAYMENT-SIGNATURE` (v2) rather than `X-PAYMENT`.
    payment_v2: bool,
    /// Other headers a client controls.
    headers: Vec<(u8, Vec<u8>)>,
}

/// Text a hostile client writes: any characters, lossy invalid UTF-8, NUL, extreme numbers,
/// 80-digit decimals, very long strings.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        any::<Vec<u8>>().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        prop::sample::select(vec![
            String::new(),
            " ".to_owned(),
            "\0".to_owned(),
            "a\0b".to_owned(),
            "`x`".to_owned(),
            "0".to_owned(),
            "-1".to_owned(),
            "0.0000001".to_owned(),
            "1e999".to_owned(),
            i64::MIN.to_string(),
            i64::MAX.to_string(),
            u64::MAX.to_string(),
            U256::MAX.to_string(),
            "9".repeat(80),
            format!("0.{}", "9".repeat(80)),
            "javascript:alert(1)".to_owned(),
            "http://169.254.169.254/latest".to_owned(),
            "+275760-09-13T00:00:00Z".to_owned(),
            "0x".to_owned(),
            format!("0x{}", "f".repeat(64)),
            "x".repeat(20_000),
        ]),
    ]
}

/// Any JSON, nested a few levels (and sometimes far deeper), with hostile leaves.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn mutations() -> impl Strategy<Value = Mutations> {
    let replacement = prop_oneof![
        1 => Just(None),
        4 => hostile_text().prop_map(|text| Some(Value::from(text))),
        2 => json_value().prop_map(Some),
    ];
    prop::collection::vec((any::<prop::sample::Index>(), replacement), 0..4).prop_map(Mutations)
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        6 => Just(Auth::Valid),
        1 => Just(Auth::ValidOther),
        2 => Just(Auth::None),
        1 => Just(Auth::Revoked),
        3 => prop::collection::vec(
            (0usize..4, prop_oneof![bytes(80), hostile_text().prop_map(String::into_bytes)]),
            1..4,
        )
        .prop_map(Auth::Hostile),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let method = prop::option::weighted(
        0.05,
        prop_oneof![
            Just("XFOOBAR".to_owned()),
            Just("DELETE".to_owned()),
            Just("PUT".to_owned()),
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            "[A-Z]{1,12}",
        ],
    );
    let path_param = prop_oneof![
        3 => any::<prop::sample::Index>().prop_map(PathParam::Known),
        3 => bytes(40).prop_map(PathParam::Encoded),
        2 => prop_oneof![
            "[a-zA-Z0-9._~-]{0,40}",
            Just("..".to_owned()),
            Just("%".to_owned()),
            Just("%zz".to_owned()),
            Just("%ff%fe".to_owned()),
            Just("a%00b".to_owned()),
            Just("x".repeat(5_000)),
        ]
        .prop_map(PathParam::Raw),
    ];
    let query = prop_oneof![
        3 => Just(Query::None),
        3 => prop::collection::vec(
            (
                prop::option::weighted(0.8, any::<prop::sample::Index>()),
                prop_oneof![bytes(30), hostile_text().prop_map(String::into_bytes)],
            ),
            1..4,
        )
        .prop_map(Query::Pairs),
        1 => "[a-zA-Z0-9=&%;+._~-]{0,60}".prop_map(Query::Raw),
    ];
    let content_type = prop_oneof![
        8 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        1 => prop_oneof![
            Just(b"text/plain".to_vec()),
            Just(b"application/json; charset=\xff".to_vec()),
            bytes(40),
        ]
        .prop_map(Some),
    ];
    let body = prop_oneof![
        8 => mutations().prop_map(BodyKind::Template),
        2 => bytes(300).prop_map(BodyKind::Bytes),
        2 => json_value().prop_map(BodyKind::Json),
        1 => Just(BodyKind::Empty),
        1 => prop_oneof![
            Just("[".repeat(100_000).into_bytes()),
            Just(format!("{{\"a\":{}1{}}}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes()),
            Just(b"{\"amount\": \"1\", \"amount\": \"2\"}".to_vec()),
            Just(b"\xef\xbb\xbf{}".to_vec()),
            Just(b"{\"nonce\": 1e400}".to_vec()),
        ]
        .prop_map(BodyKind::Bytes),
        1 => Just(BodyKind::Huge(b'{')),
    ];
    let payment = prop_oneof![
        4 => Just(Payment::None),
        1 => bytes(200).prop_map(Payment::Bytes),
        1 => json_value().prop_map(Payment::Json),
        4 => (any::<bool>(), 0u64..20_000_000, mutations(), 0u8..6).prop_map(
            |(proof, value, mutations, encoding)| Payment::Template {
                proof,
                value,
                mutations,
                encoding,
            }
        ),
    ];
    let header = (
        0u8..6,
        prop_oneof![bytes(60), hostile_text().prop_map(String::into_bytes)],
    );
    (
        method,
        prop::collection::vec(path_param, 2),
        query,
        auth(),
        content_type,
        body,
        payment,
        any::<bool>(),
        prop::collection::vec(header, 0..3),
    )
        .prop_map(
            |(method, path, query, auth, content_type, body, payment, payment_v2, headers)| {
                Hostile {
                    method,
                    path,
                    query,
                    auth,
                    content_type,
                    body,
                    payment,
                    payment_v2,
                    headers,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Templates: what a valid request of each route looks like
// ---------------------------------------------------------------------------------------------

/// A signed EIP-3009 authorization of `value` base units to the merchant's payTo, as the
/// `payload` of an x402 request.
fn signed_authorization(payer: &PrivateKeySigner, value: u64, nonce: u64) -> Value {
    let now = now();
    let auth = kit::Auth {
        from: payer.address(),
        to: PAY_TO,
        value,
        nonce: B256::from(U256::from(nonce) + U256::from(1u64 << 40)),
        valid_after: now - 600,
        valid_before: now + 600,
    };
    auth.payload(payer)
}

fn requirements_v1(value: u64) -> Value {
    json!({"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": value.to_string(),
        "resource": "https://shop.example/", "description": "", "mimeType": "",
        "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None),
        "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}})
}

/// The x402 header payload: an EIP-3009 authorization, or Pelago's tx-hash proof.
fn payment_template(harness: &Harness, proof: bool, value: u64, v2: bool) -> Value {
    let nonce = harness.next_nonce();
    if proof {
        let tx_hash = format!("{:#x}", B256::from(U256::from(nonce)));
        let message = coffer_gateway::pelago::proof_message("", &tx_hash);
        let signature = harness.payer.sign_message_sync(message.as_bytes()).unwrap();
        return json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"amount": value.to_string(), "txHash": tx_hash,
                "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes()))}});
    }
    let payload = signed_authorization(&harness.payer, value, nonce);
    if v2 {
        json!({"x402Version": 2, "accepted": requirements_v2(PAY_TO, value), "payload": payload})
    } else {
        json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": payload})
    }
}

/// A valid body for `route`, for the mutations to start from.
fn body_template(harness: &Harness, route: &Route, value: u64, ids: &[String]) -> Value {
    let id = |index: usize| ids.get(index).cloned().unwrap_or_default();
    let nonce = harness.next_nonce();
    let path = route.template.as_str();
    match path {
        "/api/payment-orders/" => json!({"amount": "1.50", "currency": "USDC",
            "blockchain": "base-sepolia", "order_info": "{\"sku\":1}", "nonce": nonce + 1000,
            "webhook_url": "https://shop.example/hooks", "redirect_url": "https://shop.example/",
            "expires_at": null, "underpayment_tolerance": "0.01"}),
        "/v1/pay/checkout/order" => json!({"merchantTradeNo": format!("t-{nonce}"),
            "env": {"terminalType": "WEB"},
            "goods": {"goodsType": "02", "goodsName": "Tea", "goodsDetail": "Green"},
            "merchantUserId": 7, "fullCurrType": "USDC_BASESEPOLIA", "orderAmount": "1.5",
            "surchargeAmount": "0.1", "toleranceAmount": "0.01",
            "returnUrl": "https://shop.example/r", "cancelUrl": "https://shop.example/c",
            "callbackUrl": "https://shop.example/n", "channelId": "shop"}),
        "/v1/pay/order/query" | "/v1/pay/order/close" => {
            if value.is_multiple_of(2) {
                json!({"prepayId": id(2)})
            } else {
                json!({"merchantTradeNo": id(3)})
            }
        }
        "/v1/pay/order/refund" => json!({"refundRequestId": format!("r-{nonce}"),
            "prepayId": id(2), "refundAmount": "0.5", "refundReason": "broken"}),
        "/v1/pay/order/refund/query" => json!({"refundRequestId": format!("r-{}", nonce / 2)}),
        "/openapi/crypto/x402/order" => {
            if value.is_multiple_of(2) {
                json!({"description": "Tea", "amount": "1.5", "currency": "USDC",
                    "network": "base-sepolia"})
            } else {
                json!({"orderId": id(5)})
            }
        }
        _ if route.family() == Family::OkxLegacy => json!({"x402Version": 1, "chainIndex": "84532",
            "paymentPayload": {"x402Version": 1, "scheme": "exact",
                "payload": signed_authorization(&harness.payer, value, nonce)},
            "paymentRequirements": requirements_v1(value), "syncSettle": value.is_multiple_of(2)}),
        _ if matches!(route.family(), Family::Facilitator | Family::OkxCurrent)
            && route.method == Method::POST =>
        {
            if value.is_multiple_of(3) {
                json!({"x402Version": 1,
                    "paymentPayload": payment_template(harness, false, value, false),
                    "paymentRequirements": requirements_v1(value)})
            } else {
                json!({"x402Version": 2,
                    "paymentPayload": payment_template(harness, false, value, true),
                    "paymentRequirements": requirements_v2(PAY_TO, value), "syncSettle": value.is_multiple_of(2)})
            }
        }
        _ => json!({"orderId": id(5), "amount": "1", "note": "anything"}),
    }
}

/// Every JSON pointer into `value` (objects, arrays and leaves), the root excluded.
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, child)| (key.replace('~', "~0").replace('/', "~1"), child))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, child)| (index.to_string(), child))
            .collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        let pointer = format!("{prefix}/{key}");
        out.push(pointer.clone());
        pointers(child, &pointer, out);
    }
}

/// Replaces (or removes) the leaves the mutations pick.
fn mutate(mut value: Value, mutations: &Mutations) -> Value {
    for (index, replacement) in &mutations.0 {
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        if all.is_empty() {
            break;
        }
        let pointer = &all[index.index(all.len())];
        match replacement {
            Some(replacement) => {
                if let Some(slot) = value.pointer_mut(pointer) {
                    *slot = replacement.clone();
                }
            }
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                let key = key.replace("~1", "/").replace("~0", "~");
                let parent = if parent.is_empty() {
                    Some(&mut value)
                } else {
                    value.pointer_mut(parent)
                };
                match parent {
                    Some(Value::Object(map)) => {
                        map.remove(&key);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(at) = key.parse::<usize>()
                            && at < items.len()
                        {
                            items.remove(at);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    value
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("%{byte:02X}")).collect()
}

/// Header values as the client's bytes allow (others are not sendable at all).
fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// The request a hostile spec describes for `route`.
fn build(harness: &Harness, route: &Route, spec: &Hostile) -> Option<Request<Body>> {
    let ids = &harness.ids;
    let mut params = spec.path.iter();
    let mut path = String::new();
    let mut rest = route.template.as_str();
    while let Some(start) = rest.find('{') {
        path.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |end| start + end + 1);
        rest = &rest[end..];
        path.push_str(&match params.next() {
            Some(PathParam::Known(index)) => ids[index.index(ids.len())].clone(),
            Some(PathParam::Encoded(bytes)) => percent_encode(bytes),
            Some(PathParam::Raw(text)) => text.clone(),
            None => String::new(),
        });
    }
    path.push_str(rest);
    let query = match &spec.query {
        Query::None => None,
        Query::Raw(text) => Some(text.clone()),
        Query::Pairs(pairs) => Some(
            pairs
                .iter()
                .map(|(name, value)| {
                    let name = match name {
                        Some(index) if !route.query_params.is_empty() => {
                            route.query_params[index.index(route.query_params.len())].clone()
                        }
                        _ => "unknown".to_owned(),
                    };
                    format!("{name}={}", percent_encode(value))
                })
                .collect::<Vec<_>>()
                .join("&"),
        ),
    };
    let path_and_query = match &query {
        Some(query) => format!("{path}?{query}"),
        None => path.clone(),
    };
    let method = match &spec.method {
        Some(method) => Method::from_bytes(method.as_bytes()).ok()?,
        None => route.method.clone(),
    };
    let value = match &spec.payment {
        Payment::Template { value, .. } => *value,
        _ => 10_000,
    };
    let body: Vec<u8> = match &spec.body {
        // Clients send no body with a GET; its bytes are tried on the routes that read one.
        _ if method == Method::GET && route.method == Method::GET => Vec::new(),
        BodyKind::Empty => Vec::new(),
        BodyKind::Bytes(bytes) => bytes.clone(),
        BodyKind::Json(value) => value.to_string().into_bytes(),
        BodyKind::Template(mutations) => {
            mutate(body_template(harness, route, value, ids), mutations)
                .to_string()
                .into_bytes()
        }
        BodyKind::Huge(byte) => vec![*byte; 2 * 1024 * 1024 + 10],
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(&path_and_query);
    if let Some(content_type) = spec.content_type.as_deref().and_then(header_value) {
        request = request.header("content-type", content_type);
    }
    let family = route.family();
    let (valid, other) = match family {
        Family::GatePay => (Credential::GatePay, Credential::GatePay),
        Family::OkxLegacy | Family::OkxCurrent => (Credential::Okx, Credential::Okx),
        Family::Native | Family::Pelago | Family::Facilitator => {
            (Credential::Bearer, Credential::AppKey)
        }
        Family::Paywall | Family::Public => (Credential::None, Credential::Bearer),
    };
    let credential = match &spec.auth {
        Auth::Valid | Auth::Hostile(_) => valid,
        Auth::ValidOther => other,
        Auth::None => Credential::None,
        Auth::Revoked => Credential::Revoked,
    };
    let mut credentials = harness.credentials(credential, method.as_str(), &path_and_query, &body);
    if let Auth::Hostile(replacements) = &spec.auth {
        if credentials.is_empty() {
            credentials.push(("authorization".to_owned(), Vec::new()));
        }
        for (index, bytes) in replacements {
            let at = index % credentials.len();
            credentials[at].1.clone_from(bytes);
        }
    }
    for (name, value) in credentials {
        if let Some(value) = header_value(&value) {
            request = request.header(name, value);
        }
    }
    let payment = match &spec.payment {
        Payment::None => None,
        Payment::Bytes(bytes) => Some(bytes.clone()),
        Payment::Json(value) => Some(STANDARD.encode(value.to_string()).into_bytes()),
        Payment::Template {
            proof,
            value,
            mutations,
            encoding,
        } => {
            let payload = mutate(
                payment_template(harness, *proof, *value, spec.payment_v2),
                mutations,
            );
            let json = payload.to_string();
            Some(
                match encoding {
                    0 => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&json),
                    1 => json,
                    _ => STANDARD.encode(&json),
                }
                .into_bytes(),
            )
        }
    };
    if let Some(value) = payment.as_deref().and_then(header_value) {
        let name = if spec.payment_v2 {
            "payment-signature"
        } else {
            "x-payment"
        };
        request = request.header(name, value);
    }
    for (which, bytes) in &spec.headers {
        let name = [
            "idempotency-key",
            "accept-language",
            "accept",
            "user-agent",
            "x-gatepay-certificate-sn",
            "x-forwarded-for",
        ][usize::from(*which) % 6];
        if let Some(value) = header_value(bytes) {
            request = request.header(HeaderName::from_static(name), value);
        }
    }
    request.body(Body::from(body)).ok()
}

// ---------------------------------------------------------------------------------------------
// What an answer must be
// ---------------------------------------------------------------------------------------------

fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Coffer's native envelope; a 400 about a field names it, and its message starts with it.
fn native(body: &Value, status: StatusCode) -> Result<(), String> {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or_default();
    if body["success"] != false || !is_code(code) || !error["message"].is_string() {
        return Err("not the native envelope".to_owned());
    }
    let field_codes = [
        "VALIDATION_ERROR",
        "INVALID_JSON",
        "INVALID_AMOUNT",
        "INVALID_PAYMENT_HEADER",
    ];
    if status == StatusCode::BAD_REQUEST && field_codes.contains(&code) {
        let field = error["field"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        if field.is_empty() || !message.starts_with(&format!("{field}: ")) {
            return Err("a field error that does not name its field".to_owned());
        }
    }
    Ok(())
}

fn gatepay(body: &Value) -> Result<(), String> {
    let code = body["code"].as_str().unwrap_or_default();
    let well_formed = body["status"] == "FAIL"
        && code.len() == 6
        && code.bytes().all(|b| b.is_ascii_digit())
        && body["label"].as_str().is_some_and(is_code)
        && body["errorMessage"].is_string()
        && body["data"].is_object();
    if !well_formed {
        return Err("not GatePay's envelope".to_owned());
    }
    if code == "400001"
        && !body["errorMessage"]
            .as_str()
            .is_some_and(|message| message.contains(": "))
    {
        return Err("a parameter error that does not name its field".to_owned());
    }
    Ok(())
}

fn okx(body: &Value, legacy: bool) -> Result<(), String> {
    let code_ok = if legacy {
        body["code"]
            .as_str()
            .is_some_and(|code| !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()))
    } else {
        body["code"].is_u64()
    };
    let data_ok = if legacy {
        body["data"].is_array()
    } else {
        body.get("data").is_some()
    };
    if code_ok && data_ok && body["msg"].is_string() && body["code"] != 0 && body["code"] != "0" {
        Ok(())
    } else {
        Err("not OKX's envelope".to_owned())
    }
}

/// x402's answers: a verify or settle reply, a 402 challenge, the paywall's refusals.
fn x402(body: &Value) -> Result<(), String> {
    let verify = body["isValid"] == false && body["invalidReason"].is_string();
    let settle = body["success"] == false
        && body["errorReason"].is_string()
        && body["transaction"].is_string()
        && body["network"].is_string();
    let challenge = body["x402Version"].is_u64() && body["error"].is_string();
    let refusal = challenge && body["code"].as_str().is_some_and(is_code);
    let plain = body["error"].is_string() && body.as_object().is_some_and(|o| o.len() == 1);
    if verify || settle || challenge || refusal || plain {
        Ok(())
    } else {
        Err("not an x402 answer".to_owned())
    }
}

/// Pelago's answers: the native envelope for bad input, x402's for payments.
fn pelago(body: &Value, status: StatusCode) -> Result<(), String> {
    if native(body, status).is_ok() {
        return Ok(());
    }
    let refused = body["x402Version"] == 1
        && body["code"].as_str().is_some_and(|code| !code.is_empty())
        && body["error"].is_string();
    let required = status == StatusCode::PAYMENT_REQUIRED
        && body["x402Version"] == 1
        && body["accepts"].is_array()
        && body["orderId"].is_string();
    if refused || required {
        Ok(())
    } else {
        Err("not a Pelago answer".to_owned())
    }
}

/// A 503 is allowed only for an unreachable chain (or a full server), with a stable code.
fn allowed_unavailable(family: Family, path: &str, body: &Value) -> bool {
    match family {
        Family::Public if path == "/readyz" => body["status"] == "not_ready",
        Family::OkxLegacy | Family::OkxCurrent => body["code"] == 50001 || body["code"] == "50001",
        _ => [&body["error"]["code"], &body["code"]]
            .into_iter()
            .any(|code| matches!(code.as_str(), Some("CHAIN_UNAVAILABLE" | "OVERLOADED"))),
    }
}

fn check_answer(
    route: &Route,
    method: &Method,
    status: StatusCode,
    body: &[u8],
) -> Result<(), String> {
    let family = route.family();
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_server_error() {
        if status == StatusCode::SERVICE_UNAVAILABLE
            && allowed_unavailable(family, &route.template, &json)
        {
            return Ok(());
        }
        return Err(format!("a server error {status}"));
    }
    if !status.is_client_error() {
        return Ok(());
    }
    if json.is_null() {
        return Err(format!(
            "{status} with a body that is not JSON: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    // A method the route does not declare is answered by the router, in the native envelope.
    if *method != route.method && status == StatusCode::METHOD_NOT_ALLOWED {
        return native(&json, status);
    }
    match family {
        Family::Native | Family::Public => native(&json, status),
        Family::GatePay => gatepay(&json),
        Family::OkxLegacy => okx(&json, true),
        Family::OkxCurrent => okx(&json, false),
        Family::Facilitator | Family::Paywall => x402(&json),
        Family::Pelago => pelago(&json, status),
    }
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

/// Sends one hostile request; the answer must come back, below 500 (but for an unreachable
/// chain), in its family's envelope.
fn attack(
    harness: &Harness,
    route: &Route,
    spec: &Hostile,
    answers: &std::sync::Mutex<BTreeMap<u16, u32>>,
) -> Result<(), TestCaseError> {
    let Some(request) = build(harness, route, spec) else {
        *answers.lock().unwrap().entry(0).or_default() += 1;
        return Ok(());
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let router = harness.router.clone();
    let answered = harness.runtime.block_on(async move {
        let handled = tokio::spawn(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            (status, body)
        });
        tokio::time::timeout(Duration::from_secs(30), handled).await
    });
    let (status, body) = match answered {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "{method} {uri}: no answer in 30 s"
            )));
        }
        Ok(Err(error)) if error.is_panic() => {
            return Err(TestCaseError::fail(format!(
                "{method} {uri}: the handler panicked"
            )));
        }
        Ok(Err(error)) => return Err(TestCaseError::fail(format!("{method} {uri}: {error}"))),
        Ok(Ok((status, Err(error)))) => {
            return Err(TestCaseError::fail(format!(
                "{method} {uri}: {status}, the body broke off: {error}"
            )));
        }
        Ok(Ok((status, Ok(body)))) => (status, body),
    };
    *answers.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    check_answer(route, &method, status, &body).map_err(|problem| {
        TestCaseError::fail(format!(
            "{method} {uri} answered {status}: {problem}: {}",
            String::from_utf8_lossy(&body[..body.len().min(600)])
        ))
    })
}

/// Runs the property for every route `select` picks.
fn attack_routes(backend: Backend, select: impl Fn(Family) -> bool) {
    let harness = Harness::new(backend);
    let routes: Vec<Route> = routes(&harness)
        .into_iter()
        .filter(|route| select(route.family()))
        .collect();
    assert!(!routes.is_empty());
    let mut failures = Vec::new();
    for route in &routes {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let answers = std::sync::Mutex::new(BTreeMap::new());
        if let Err(failure) =
            runner.run(&hostile(), |spec| attack(&harness, route, &spec, &answers))
        {
            failures.push(format!("{} {}: {failure}", route.method, route.template));
        }
        // What the route answered (0: a request no client could send), for `--nocapture`.
        let answers = answers.into_inner().unwrap();
        println!("{} {}: {answers:?}", route.method, route.template);
        let unsendable = answers.get(&0).copied().unwrap_or_default();
        let sent: u32 = answers.values().sum::<u32>() - unsendable;
        assert!(
            sent >= unsendable * 4,
            "{} {}: most hostile requests must be sendable: {answers:?}",
            route.method,
            route.template
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn hostile_requests_to_the_native_api_and_the_pages_get_4xx_in_the_native_envelope(
    backend: Backend,
) {
    attack_routes(backend, |family| {
        matches!(family, Family::Native | Family::Public)
    });
}

fn hostile_requests_to_gatepay_get_4xx_in_gatepays_envelope(backend: Backend) {
    attack_routes(backend, |family| family == Family::GatePay);
}

fn hostile_requests_to_the_facilitators_get_x402_and_okx_answers(backend: Backend) {
    attack_routes(backend, |family| {
        matches!(
            family,
            Family::Facilitator | Family::OkxLegacy | Family::OkxCurrent
        )
    });
}

fn hostile_requests_to_pelago_and_the_paywall_get_their_answers(backend: Backend) {
    attack_routes(backend, |family| {
        matches!(family, Family::Pelago | Family::Paywall)
    });
}

// ---------------------------------------------------------------------------------------------
// What the properties found, kept as plain tests
// ---------------------------------------------------------------------------------------------

/// The error code or label of an answer in any family's envelope.
fn code_of(body: &Value) -> Value {
    [
        &body["error"]["code"],
        &body["code"],
        &body["invalidReason"],
        &body["errorReason"],
    ]
    .into_iter()
    .find(|code| !code.is_null())
    .cloned()
    .unwrap_or(Value::Null)
}

/// A path parameter that is not UTF-8 once percent-decoded, or holds a NUL, and a query
/// parameter of the wrong type or holding a NUL, were answered by axum in plain text (and a
/// NUL reached PostgreSQL, a 500): now a 400 naming the parameter in the native envelope.
fn path_and_query_parameters_are_refused_naming_them(backend: Backend) {
    let harness = Harness::new(backend);
    let cases = [
        ("/api/payment-orders/%80/", "order_id"),
        ("/api/payment-orders/a%00b/", "order_id"),
        ("/pay/%80", "order_id"),
        ("/pay/%00/status", "order_id"),
        ("/qr/%ff", "order_id"),
        ("/api/events/%80/deliveries/", "event_id"),
        ("/api/events/%00/deliveries/", "event_id"),
        ("/openapi/crypto/x402/order/%C0%AE", "orderId"),
        ("/openapi/crypto/x402/order/%00", "orderId"),
        ("/api/events/?limit=abc", "limit"),
        ("/api/events/?limit=1&limit=2", "limit"),
        ("/api/events/?order_id=%00", "order_id"),
        ("/api/payment-orders/?currency=%00", "currency"),
    ];
    for (path, field) in cases {
        let (status, body) = harness.runtime.block_on(harness.send(
            Method::GET,
            path,
            Credential::Bearer,
            &Value::Null,
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["success"], false, "{path}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
}

/// A body over the 2 MB limit was answered by axum in plain text: now a 413 in each family's
/// envelope.
fn an_oversized_body_is_refused_in_the_familys_envelope(backend: Backend) {
    let harness = Harness::new(backend);
    let huge = vec![b' '; 2 * 1024 * 1024 + 1];
    let cases = [
        ("/v1/pay/checkout/order", Credential::None, json!("400001")),
        ("/v1/pay/order/refund", Credential::None, json!("400001")),
        ("/api/v6/x402/verify", Credential::None, json!("51000")),
        ("/api/v6/pay/x402/settle", Credential::None, json!(51000)),
        (
            "/x402/verify",
            Credential::None,
            json!("invalid_exact_evm_payload"),
        ),
        (
            "/x402/settle",
            Credential::None,
            json!("invalid_exact_evm_payload"),
        ),
        (
            "/openapi/crypto/x402/order",
            Credential::Bearer,
            json!("PAYLOAD_TOO_LARGE"),
        ),
        (
            "/api/payment-orders/",
            Credential::Bearer,
            json!("PAYLOAD_TOO_LARGE"),
        ),
    ];
    for (path, credential, code) in cases {
        let (status, body) = harness.runtime.block_on(harness.exchange(
            Method::POST,
            path,
            credential,
            &[],
            huge.clone(),
        ));
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
        assert_eq!(code_of(&body), code, "{path}: {body}");
    }
}

/// OKX's settlement status with a repeated `txHash` was answered by axum in plain text, and a
/// `txHash` holding a NUL reached PostgreSQL (a 500): now OKX's `51000`.
fn okx_status_queries_are_refused_in_okxs_envelope(backend: Backend) {
    let harness = Harness::new(backend);
    let hash = format!("0x{}", "a".repeat(64));
    let nul = format!("0x{}%00", "a".repeat(62));
    for query in [
        format!("txHash={hash}&txHash={hash}"),
        format!("txHash={nul}"),
        format!("txHash=0x{}", "g".repeat(64)),
    ] {
        let path = format!("/api/v6/pay/x402/settle/status?{query}");
        let (status, body) = harness.runtime.block_on(harness.send(
            Method::GET,
            &path,
            Credential::Okx,
            &Value::Null,
        ));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], 51000, "{path}: {body}");
        assert!(body["msg"].as_str().unwrap().contains("txHash"), "{body}");
    }
}

/// Text holding a NUL reached PostgreSQL, which cannot store it (a 500): now a 400 naming the
/// field, in each family's envelope.
fn text_holding_a_nul_is_refused_naming_the_field(backend: Backend) {
    let harness = Harness::new(backend);
    let cases = [
        (
            "/v1/pay/order/query",
            Credential::GatePay,
            json!({"merchantTradeNo": "trade\u{0}1"}),
            "merchantTradeNo",
        ),
        (
            "/v1/pay/order/refund/query",
            Credential::GatePay,
            json!({"refundRequestId": "\u{0}"}),
            "refundRequestId",
        ),
        (
            "/v1/pay/checkout/order",
            Credential::GatePay,
            json!({"merchantTradeNo": "t-nul", "env": {"terminalType": "WEB"},
                "goods": {"goodsName": "Tea\u{0}"}, "fullCurrType": "USDC_BASESEPOLIA",
                "orderAmount": "1"}),
            "goods.goodsName",
        ),
        (
            "/openapi/crypto/x402/order",
            Credential::Bearer,
            json!({"orderId": "CO\u{0}"}),
            "orderId",
        ),
        (
            "/api/payment-orders/",
            Credential::Bearer,
            json!({"amount": "1", "currency": "USDC", "blockchain": "base-sepolia",
                "order_info": "{}", "nonce": 99, "webhook_url": "https://shop.example/\u{0}"}),
            "webhook_url",
        ),
    ];
    for (path, credential, body, field) in cases {
        let (status, answer) =
            harness
                .runtime
                .block_on(harness.send(Method::POST, path, credential, &body));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let message = answer["error"]["message"]
            .as_str()
            .or(answer["errorMessage"].as_str())
            .unwrap();
        assert!(
            message.starts_with(&format!("{field}: must not contain NUL")),
            "{path}: {answer}"
        );
    }
}

/// While the chain cannot be asked, the facilitator said the token "has no authorizationState"
/// (`invalid_exact_evm_eip3009_not_supported`) and Pelago answered a 402 with that, though its
/// tx-hash proofs answered 503: now every family says the chain is unavailable — 503
/// `CHAIN_UNAVAILABLE` where the family answers with a status (Pelago, the paywall), x402's
/// `unexpected_verify_error` / `unexpected_settle_error` where it answers in the body — and
/// nothing is recorded.
fn an_unreachable_chain_is_answered_as_unavailable_in_every_family(backend: Backend) {
    let harness = Harness::new(backend);
    let orders = || {
        let (_, page) = harness.runtime.block_on(harness.send(
            Method::GET,
            "/api/payment-orders/",
            Credential::Bearer,
            &Value::Null,
        ));
        page["count"].clone()
    };
    let before = orders();
    for proof in [true, false] {
        let payment = payment_template(&harness, proof, 1_500_000, false);
        let header = STANDARD.encode(payment.to_string());
        let (status, body) = harness.runtime.block_on(harness.exchange(
            Method::POST,
            "/openapi/crypto/x402/order",
            Credential::Bearer,
            &[("x-payment", &header)],
            json!({"amount": "1.5"}).to_string().into_bytes(),
        ));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "CHAIN_UNAVAILABLE", "{body}");
    }
    let payment = payment_template(&harness, false, 10_000, true);
    let header = STANDARD.encode(payment.to_string());
    let (status, body) = harness.runtime.block_on(harness.exchange(
        Method::GET,
        "/premium/report",
        Credential::None,
        &[("payment-signature", &header)],
        Vec::new(),
    ));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "CHAIN_UNAVAILABLE", "{body}");

    let request = json!({"x402Version": 2,
        "paymentPayload": payment_template(&harness, false, 10_000, true),
        "paymentRequirements": requirements_v2(PAY_TO, 10_000)})
    .to_string()
    .into_bytes();
    for (path, credential) in [
        ("/x402/verify", Credential::None),
        ("/x402/settle", Credential::None),
        ("/api/v6/pay/x402/verify", Credential::Okx),
        ("/api/v6/pay/x402/settle", Credential::Okx),
    ] {
        let (status, body) = harness.runtime.block_on(harness.exchange(
            Method::POST,
            path,
            credential,
            &[],
            request.clone(),
        ));
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let answer = if body["data"].is_object() {
            &body["data"]
        } else {
            &body
        };
        let expected = if path.ends_with("verify") {
            ("invalidReason", "unexpected_verify_error")
        } else {
            ("errorReason", "unexpected_settle_error")
        };
        assert_eq!(answer[expected.0], expected.1, "{path}: {body}");
        assert_ne!(answer["isValid"], true, "{path}: {body}");
        assert_ne!(answer["success"], true, "{path}: {body}");
        assert!(
            answer["transaction"].as_str().is_none_or(str::is_empty),
            "{body}"
        );
    }
    assert_eq!(orders(), before, "nothing was recorded");
}

coffer_store::on_both_databases! {
    blocking: [
        hostile_requests_to_the_native_api_and_the_pages_get_4xx_in_the_native_envelope,
        hostile_requests_to_gatepay_get_4xx_in_gatepays_envelope,
        hostile_requests_to_the_facilitators_get_x402_and_okx_answers,
        hostile_requests_to_pelago_and_the_paywall_get_their_answers,
        path_and_query_parameters_are_refused_naming_them,
        an_oversized_body_is_refused_in_the_familys_envelope,
        okx_status_queries_are_refused_in_okxs_envelope,
        text_holding_a_nul_is_refused_naming_the_field,
        an_unreachable_chain_is_answered_as_unavailable_in_every_family,
    ];
}
