//! What every attack starts from: a real server on port 0 over a fresh database (SQLite or
//! PostgreSQL), one anvil chain (`base-sepolia`, chain id 84532) with the EIP-3009 test USDC at
//! Base Sepolia's address, a funded payer, a settlement signer, and a merchant with an API key
//! and a registered x402 payTo.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256, address};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine;
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::{IEip3009, TransferWithAuthorization};
use coffer_evm::testnet::{self, UsdcSpec};
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{MerchantRow, OrderOrdering, OrderQuery, OrderRow};
use coffer_x402::settlement::SettleOptions;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// Base Sepolia's USDC address, where the test token is installed.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// The merchant's registered payTo.
pub const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
/// The chain id of the test chain.
pub const CHAIN_ID: u64 = 84_532;
/// Base units every funded account starts with (5,000 USDC).
pub const FUNDED: u64 = 5_000_000_000;
/// Base's USDC address, where the mainnet chain's test token is installed.
pub const BASE_USDC: Address = address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
/// The chain id of the mainnet chain.
pub const BASE_CHAIN_ID: u64 = 8453;

/// A running Coffer with one chain and one merchant.
pub struct Env {
    pub anvil: Anvil,
    /// The chain, sending from anvil's first dev account (the token's owner).
    pub chain: DynProvider,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A funded payer (dev account 1).
    pub payer: PrivateKeySigner,
    /// A funded stranger (dev account 2), who is no merchant.
    pub stranger: PrivateKeySigner,
    /// Coffer's settlement signer (dev account 9).
    pub signer: PrivateKeySigner,
    pub state: AppState,
    pub merchant: MerchantRow,
    pub api_key: String,
    pub db: TestDatabase,
    /// The mainnet chain, when asked for.
    pub mainnet: Option<Anvil>,
}

/// How the environment is built; the defaults suit most attacks.
pub struct Options {
    pub backend: Backend,
    /// Confirmations the chain asks for.
    pub confirmations: u64,
    /// anvil's block time; `None` mines on demand.
    pub block_time: Option<u64>,
    /// Also run a mainnet chain (`base`, chain id 8453, USDC "USD Coin"/2 at Base's address),
    /// where the merchant registers the same payTo.
    pub mainnet: bool,
    /// Changes the state before the server starts (paywall routes, policies, …).
    pub configure: Box<dyn FnOnce(AppState) -> AppState + Send>,
}

impl Options {
    pub fn on(backend: Backend) -> Options {
        Options {
            backend,
            confirmations: 1,
            block_time: None,
            mainnet: false,
            configure: Box::new(|state| state),
        }
    }
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        Env::with(Options::on(backend)).await
    }

    /// An environment whose webhooks may go to endpoints on this machine (as `coffer dev`'s).
    pub async fn with_local_endpoints(backend: Backend) -> Env {
        let mut options = Options::on(backend);
        options.configure = Box::new(|state| {
            state
                .with_outbound_policy(coffer_gateway::outbound::OutboundPolicy::allowing_loopback())
        });
        Env::with(options).await
    }

    pub async fn with(options: Options) -> Env {
        let payer = testnet::dev_account(1).unwrap();
        let stranger = testnet::dev_account(2).unwrap();
        let anvil = start_chain(
            CHAIN_ID,
            USDC,
            "USDC",
            &[payer.address(), stranger.address()],
            options.block_time,
        )
        .await;
        let chain = ProviderBuilder::new()
            .wallet(EthereumWallet::from(testnet::dev_account(0).unwrap()))
            .connect_http(anvil.url().parse().unwrap())
            .erased();
        let mainnet = match options.mainnet {
            true => Some(
                start_chain(
                    BASE_CHAIN_ID,
                    BASE_USDC,
                    "USD Coin",
                    &[payer.address()],
                    None,
                )
                .await,
            ),
            false => None,
        };
        let mut registry = ChainRegistry::builtin();
        let mut overrides = BTreeMap::new();
        if let Some(mainnet) = &mainnet {
            overrides.insert(
                "base".to_owned(),
                ChainOverride {
                    rpc_urls: vec![mainnet.url().to_owned()],
                    confirmations: Some(options.confirmations),
                    ..Default::default()
                },
            );
        }
        overrides.insert(
            "base-sepolia".to_owned(),
            ChainOverride {
                rpc_urls: vec![anvil.url().to_owned()],
                confirmations: Some(options.confirmations),
                ..Default::default()
            },
        );
        registry.apply(&overrides).unwrap();
        let db = TestDatabase::new(options.backend).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let signer = testnet::dev_account(9).unwrap();
        let settle = SettleOptions {
            receipt_timeout: Duration::from_secs(5),
            ..SettleOptions::default()
        };
        let state = AppState::new(db.store.clone(), registry, &base)
            .unwrap()
            .with_settlement(vec![signer.clone()], settle);
        let state = (options.configure)(state);
        let merchant = state
            .gateway
            .merchants
            .create("Seller", None)
            .await
            .unwrap();
        let key = state
            .gateway
            .merchants
            .create_key(&merchant.id, "test")
            .await
            .unwrap();
        state
            .gateway
            .sales
            .add_pay_to(&merchant, CHAIN_ID, PAY_TO)
            .await
            .unwrap();
        if mainnet.is_some() {
            state
                .gateway
                .sales
                .add_pay_to(&merchant, BASE_CHAIN_ID, PAY_TO)
                .await
                .unwrap();
        }
        tokio::spawn(coffer_server::serve(
            listener,
            coffer_server::router(state.clone()),
            std::future::pending(),
        ));
        Env {
            anvil,
            chain,
            base,
            payer,
            stranger,
            signer,
            state,
            merchant,
            api_key: key.key.expose_secret().to_owned(),
            db,
            mainnet,
        }
    }

    /// A token balance.
    pub async fn balance(&self, who: Address) -> U256 {
        IEip3009::new(USDC, &self.chain)
            .balanceOf(who)
            .call()
            .await
            .unwrap()
    }

    /// The signer's transaction count: how many transactions Coffer paid gas for.
    pub async fn signer_transactions(&self) -> u64 {
        self.chain
            .get_transaction_count(self.signer.address())
            .await
            .unwrap()
    }

    /// Every order of the merchant, oldest first.
    pub async fn orders(&self) -> Vec<OrderRow> {
        orders_of(&self.state, &self.merchant.id).await
    }

    /// `POST` a JSON body with extra headers; the status and the body (JSON, else a string).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.unwrap()).await
    }

    /// `GET` with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.unwrap()).await
    }

    /// The merchant's API key as a header.
    pub fn auth(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.api_key))
    }
}

/// Starts an anvil chain (mining every `block_time` seconds, else on demand) with the EIP-3009
/// test token at `token` (EIP-712 `name`, version `2`, owned by dev account 0) and funds
/// `payers`.
pub async fn start_chain(
    chain_id: u64,
    token: Address,
    name: &str,
    payers: &[Address],
    block_time: Option<u64>,
) -> Anvil {
    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    let anvil = Anvil::start(&AnvilOptions {
        binary,
        chain_id,
        port: 0,
        state_file: None,
        block_time,
    })
    .await
    .unwrap();
    let owner = testnet::dev_account(0).unwrap();
    let chain = ProviderBuilder::new()
        .wallet(EthereumWallet::from(owner.clone()))
        .connect_http(anvil.url().parse().unwrap())
        .erased();
    let spec = UsdcSpec {
        name: name.into(),
        version: "2".into(),
        symbol: "USDC".into(),
        decimals: 6,
        owner: owner.address(),
    };
    testnet::install_usdc_at(&chain, token, &spec)
        .await
        .unwrap();
    for who in payers {
        testnet::mint(&chain, token, *who, U256::from(FUNDED))
            .await
            .unwrap();
    }
    anvil
}

/// Every order of a merchant, oldest first.
pub async fn orders_of(state: &AppState, merchant_id: &coffer_core::MerchantId) -> Vec<OrderRow> {
    let (orders, _) = state
        .gateway
        .store
        .list_orders(&OrderQuery {
            merchant_id: merchant_id.clone(),
            status: None,
            chain_id: None,
            currency: None,
            ordering: OrderOrdering::OldestFirst,
            offset: 0,
            limit: 100,
        })
        .await
        .unwrap();
    orders
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

/// An EIP-3009 `transferWithAuthorization` of the test USDC.
#[derive(Clone)]
pub struct Auth {
    pub from: Address,
    pub to: Address,
    pub value: u64,
    pub nonce: B256,
    pub valid_after: u64,
    pub valid_before: u64,
}

impl Auth {
    /// A fresh authorization (random nonce, valid for five minutes).
    pub fn fresh(from: Address, to: Address, value: u64) -> Auth {
        Auth {
            from,
            to,
            value,
            nonce: B256::from(rand::random::<[u8; 32]>()),
            valid_after: now() - 600,
            valid_before: now() + 300,
        }
    }

    /// The payer's EIP-712 signature on the test chain, 0x hex.
    pub fn sign(&self, signer: &PrivateKeySigner) -> String {
        self.sign_on(signer, CHAIN_ID, USDC, "USDC")
    }

    /// The payer's EIP-712 signature for a token on a chain, 0x hex.
    pub fn sign_on(
        &self,
        signer: &PrivateKeySigner,
        chain_id: u64,
        token: Address,
        name: &str,
    ) -> String {
        let domain = Eip712Domain::new(
            Some(name.to_owned().into()),
            Some("2".into()),
            Some(U256::from(chain_id)),
            Some(token),
            None,
        );
        let message = TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: U256::from(self.value),
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        let signature = signer
            .sign_hash_sync(&message.eip712_signing_hash(&domain))
            .unwrap();
        format!("0x{}", alloy::hex::encode(signature.as_bytes()))
    }

    /// `{signature, authorization}` with the given signature.
    pub fn payload_signed(&self, signature: &str) -> Value {
        json!({
            "signature": signature,
            "authorization": {
                "from": self.from.to_checksum(None), "to": self.to.to_checksum(None),
                "value": self.value.to_string(), "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(), "nonce": format!("{:#x}", self.nonce),
            }
        })
    }

    /// `{signature, authorization}` signed by `signer`.
    pub fn payload(&self, signer: &PrivateKeySigner) -> Value {
        self.payload_signed(&self.sign(signer))
    }

    /// A v2 facilitator request (`/x402/verify`, `/x402/settle`) for this authorization.
    pub fn v2_request(&self, payload: Value) -> Value {
        let requirements = requirements_v2(self.to, self.value);
        json!({
            "x402Version": 2,
            "paymentPayload": {"x402Version": 2, "accepted": requirements, "payload": payload},
            "paymentRequirements": requirements,
        })
    }

    /// A v1 `X-PAYMENT` header value for this authorization on the test chain.
    pub fn x_payment(&self, payload: Value) -> String {
        x_payment_on("base-sepolia", payload)
    }
}

/// A v1 `X-PAYMENT` header value with `payload` on `network`.
pub fn x_payment_on(network: &str, payload: Value) -> String {
    b64(&json!({"x402Version": 1, "scheme": "exact", "network": network, "payload": payload}))
}

/// v2 requirements to pay `amount` base units of the test USDC to `pay_to`.
pub fn requirements_v2(pay_to: Address, amount: u64) -> Value {
    json!({
        "scheme": "exact", "network": "eip155:84532", "amount": amount.to_string(),
        "asset": USDC.to_checksum(None), "payTo": pay_to.to_checksum(None), "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2"}
    })
}

/// Base64 (standard, padded) of a JSON value.
pub fn b64(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

/// A 65-byte signature that signs nothing.
pub fn junk_signature() -> String {
    format!("0x{}1b", "11".repeat(64))
}

impl Env {
    /// Creates a Pelago order on the test chain for `amount` USDC; its order id.
    pub async fn pelago_order(&self, amount: &str) -> String {
        let (status, body) = self
            .post(
                "/openapi/crypto/x402/order",
                &[("Merchant-App-Key", &self.api_key)],
                &json!({"amount": amount, "currency": "USDC", "network": "base-sepolia"}),
            )
            .await;
        assert_eq!(status, 402, "{body}");
        body["orderId"].as_str().unwrap().to_owned()
    }

    /// Presents `x_payment` for a Pelago order.
    pub async fn pelago_pay(&self, order_id: &str, x_payment: &str) -> (u16, Value) {
        self.post(
            "/openapi/crypto/x402/order",
            &[
                ("Merchant-App-Key", &self.api_key),
                ("X-PAYMENT", x_payment),
            ],
            &json!({"orderId": order_id}),
        )
        .await
    }

    /// A provider sending from `signer`.
    pub fn wallet(&self, signer: &PrivateKeySigner) -> DynProvider {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_http(self.anvil.url().parse().unwrap())
            .erased()
    }

    /// Every event recorded for an order, by type.
    pub async fn event_types(&self, order_id: &str) -> Vec<String> {
        self.state
            .gateway
            .store
            .events(&self.merchant.id, Some(order_id), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|event| event.event_type)
            .collect()
    }

    /// How many orders the merchant has.
    pub async fn order_count(&self) -> u64 {
        let (_, count) = self
            .state
            .gateway
            .store
            .list_orders(&OrderQuery {
                merchant_id: self.merchant.id.clone(),
                status: None,
                chain_id: None,
                currency: None,
                ordering: OrderOrdering::OldestFirst,
                offset: 0,
                limit: 1,
            })
            .await
            .unwrap();
        count
    }
}

/// An answer read off the wire by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (JSON when it parses, else a string).
    pub body: Value,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request exactly as written — the target is not parsed or normalised the
/// way an HTTP client would (`%2e%2e` stays, `\` stays) — and reads the answer to the end.
pub async fn raw_request(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    parse_raw_response(&answer)
}

/// Parses an HTTP/1.1 answer (`Content-Length` or chunked body).
pub fn parse_raw_response(answer: &[u8]) -> RawResponse {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut raw_body = answer[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &raw_body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        raw_body = decoded;
    }
    let text = String::from_utf8_lossy(&raw_body).into_owned();
    RawResponse {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

// ---------------------------------------------------------------------------------------------
// Payment orders, GatePay credentials and a merchant's endpoint (GatePay and page attacks)
// ---------------------------------------------------------------------------------------------

/// A merchant's endpoint on this machine: records every request POSTed to it and acknowledges
/// it in GatePay's words (`{"returnCode":"SUCCESS"}`, which Coffer's own webhooks accept too).
#[derive(Clone, Default)]
pub struct Inbox {
    received: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

impl Inbox {
    /// Starts the endpoint; returns it and its URL.
    pub async fn start() -> (Inbox, String) {
        let inbox = Inbox::default();
        let sink = inbox.clone();
        let router = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let sink = sink.clone();
                async move {
                    sink.received.lock().unwrap().push((headers, body));
                    r#"{"returnCode":"SUCCESS","returnMessage":""}"#
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (inbox, url)
    }

    /// Every request received so far: headers and body.
    pub fn received(&self) -> Vec<(axum::http::HeaderMap, String)> {
        self.received.lock().unwrap().clone()
    }
}

/// A GatePay credential: ClientId and secret.
#[derive(Clone)]
pub struct GatePayClient {
    pub client_id: String,
    pub secret: String,
}

impl GatePayClient {
    /// Whether a request carries an `X-GatePay-Signature` made with this secret.
    pub fn signed(&self, headers: &axum::http::HeaderMap, body: &str) -> bool {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        coffer_gateway::gatepay::verify(
            &self.secret,
            &header("X-GatePay-Timestamp"),
            &header("X-GatePay-Nonce"),
            body.as_bytes(),
            &header("X-GatePay-Signature"),
        )
    }
}

impl Env {
    /// Another merchant, with an API key; notifications go to `webhook_url`.
    pub async fn another_merchant(&self, name: &str, webhook_url: &str) -> (MerchantRow, String) {
        let merchant = self
            .state
            .gateway
            .merchants
            .create(name, Some(webhook_url))
            .await
            .unwrap();
        let key = self
            .state
            .gateway
            .merchants
            .create_key(&merchant.id, "test")
            .await
            .unwrap();
        self.deposit_wallet(&merchant.id).await;
        (merchant, key.key.expose_secret().to_owned())
    }

    /// Gives a merchant the development deposit wallet (xpub) on every chain, so that it can
    /// take payment orders.
    pub async fn deposit_wallet(&self, merchant: &coffer_core::MerchantId) {
        let xpub = coffer_evm::hd::dev_deposit_key(coffer_evm::testnet::DEV_MNEMONIC)
            .unwrap()
            .to_base58()
            .unwrap();
        self.state
            .gateway
            .store
            .set_wallet(merchant, 0, &xpub, 0)
            .await
            .unwrap();
    }

    /// A new GatePay credential of a merchant.
    pub async fn gatepay_client(&self, merchant: &coffer_core::MerchantId) -> GatePayClient {
        let credential = self.state.gateway.gatepay.create(merchant).await.unwrap();
        GatePayClient {
            client_id: credential.client_id.clone(),
            secret: credential.secret.expose_secret().to_owned(),
        }
    }

    /// A GatePay request signed by `client` with a fresh nonce and the current time.
    pub async fn gatepay(&self, client: &GatePayClient, path: &str, body: &str) -> (u16, Value) {
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        self.gatepay_at(client, path, body, &timestamp).await
    }

    /// A GatePay request signed by `client` with the given `X-GatePay-Timestamp` text.
    pub async fn gatepay_at(
        &self,
        client: &GatePayClient,
        path: &str,
        body: &str,
        timestamp: &str,
    ) -> (u16, Value) {
        let nonce = coffer_gateway::events::new_id("n");
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .header("X-GatePay-Certificate-ClientId", &client.client_id)
            .header("X-GatePay-Timestamp", timestamp)
            .header("X-GatePay-Nonce", &nonce)
            .header(
                "X-GatePay-Signature",
                coffer_gateway::gatepay::sign(&client.secret, timestamp, &nonce, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// A watcher of the test chain whose cursor is at the current block (start it before the
    /// payments it should see).
    pub async fn watcher(&self) -> coffer_gateway::workers::watcher::Watcher {
        let mut watcher =
            coffer_gateway::workers::watcher::Watcher::new(&self.state.gateway, CHAIN_ID).unwrap();
        watcher.step().await.unwrap();
        watcher
    }

    /// Lets the watcher catch up with the chain, then sends every due webhook once.
    pub async fn watch_and_deliver(&self, watcher: &mut coffer_gateway::workers::watcher::Watcher) {
        use coffer_gateway::workers::watcher::StepReport;
        while watcher.step().await.unwrap() != StepReport::Idle {}
        coffer_gateway::workers::dispatcher::Dispatcher::new(&self.state.gateway)
            .dispatch_due()
            .await
            .unwrap();
    }

    /// Transfers `units` of the test USDC from the payer to `to` (one mined block).
    pub async fn pay(&self, to: &str, units: u64) {
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.payer.clone()))
            .connect_http(self.anvil.url().parse().unwrap());
        let receipt = coffer_evm::contracts::IERC20::new(USDC, provider)
            .transfer(to.parse().unwrap(), U256::from(units))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
    }
}
