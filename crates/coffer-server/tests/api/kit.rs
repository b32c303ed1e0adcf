//! What every test starts from: a real server on port 0 over a fresh database (SQLite or
//! PostgreSQL), one anvil chain (`base-sepolia`, chain id 84532) with the EIP-3009 test USDC at
//! Base Sepolia's address, a funded payer, a settlement signer, and a merchant with an API key
//! and a registered x402 payTo. [`Options`] changes what a family needs (confirmations, a
//! mainnet chain, a webhook endpoint, a paywall, …); the rest of this module is what tests
//! share: signed EIP-3009 authorizations, raw HTTP, a merchant's endpoint, GatePay signing and
//! the official clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use base64::Engine;
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::{IEip3009, TransferWithAuthorization};
use coffer_evm::testnet::{self, UsdcSpec};
use coffer_server::AppState;
use coffer_server::paywall::{Paywall, PaywallRouteConfig};
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{MerchantRow, OrderOrdering, OrderQuery, OrderRow};
use coffer_x402::settlement::SettleOptions;

use coffer_server::testing::FaultyRpc;
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
    /// The test chain; `None` for a chain-free environment ([`Options::without_chain`]).
    pub anvil: Option<Anvil>,
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
    /// The endpoint Coffer reaches the test chain through, when asked for a faulty one.
    pub rpc_faults: Option<FaultyRpc>,
}

/// How the environment is built; the defaults suit most tests. A builder:
/// `Options::on(backend).confirmations(2).merchant_webhook(&url)`.
pub struct Options {
    backend: Backend,
    /// Confirmations the chain asks for; `None` keeps the registry's (5 on Base Sepolia).
    confirmations: Option<u64>,
    /// anvil's block time; `None` mines on demand.
    block_time: Option<u64>,
    /// Also run a mainnet chain.
    mainnet: bool,
    /// What the payer is minted.
    payer_funds: u64,
    /// What the stranger is minted.
    stranger_funds: u64,
    /// Install Multicall3 on the test chain.
    multicall3: bool,
    /// The merchant's webhook URL.
    merchant_webhook: Option<String>,
    /// Register the merchant's x402 payTo.
    pay_to: bool,
    /// Other chains enabled with the test chain's RPC URL (never watched).
    also_serving: Vec<String>,
    settle: SettleOptions,
    /// Reach the test chain through a [`FaultyRpc`].
    faulty_rpc: bool,
    /// List an endpoint that refuses connections before the test chain's own.
    dead_endpoint_first: bool,
    /// Start the test chain (else its RPC URL refuses connections).
    with_chain: bool,
    configure: Box<dyn FnOnce(AppState) -> AppState + Send>,
    routes: Option<axum::Router>,
}

impl Options {
    pub fn on(backend: Backend) -> Options {
        Options {
            with_chain: true,
            backend,
            confirmations: Some(1),
            block_time: None,
            mainnet: false,
            payer_funds: FUNDED,
            stranger_funds: FUNDED,
            multicall3: false,
            merchant_webhook: None,
            pay_to: true,
            also_serving: Vec::new(),
            settle: SettleOptions {
                receipt_timeout: Duration::from_secs(5),
                ..SettleOptions::default()
            },
            faulty_rpc: false,
            dead_endpoint_first: false,
            configure: Box::new(|state| state),
            routes: None,
        }
    }

    /// Coffer reaches the test chain through a [`FaultyRpc`] (`Env::rpc_faults`), which fails
    /// the calls a test plans; the test's own provider goes to anvil directly.
    /// No chain: for tests that never touch one (authentication, input checks, pages of
    /// unpaid orders). The chain's RPC URL refuses connections, so a test that does touch it
    /// fails rather than passing by accident.
    pub fn without_chain(mut self) -> Options {
        self.with_chain = false;
        self
    }

    pub fn faulty_rpc(mut self) -> Options {
        self.faulty_rpc = true;
        self
    }

    /// The test chain's `rpc_urls` start with an endpoint that refuses connections.
    pub fn dead_endpoint_first(mut self) -> Options {
        self.dead_endpoint_first = true;
        self
    }

    /// The test chain asks for `confirmations` (1 unless told).
    pub fn confirmations(mut self, confirmations: u64) -> Options {
        self.confirmations = Some(confirmations);
        self
    }

    /// The test chain keeps the registry's confirmations (5 on Base Sepolia).
    pub fn registry_confirmations(mut self) -> Options {
        self.confirmations = None;
        self
    }

    /// anvil mines a block every `seconds` (else on demand).
    pub fn block_time(mut self, seconds: u64) -> Options {
        self.block_time = Some(seconds);
        self
    }

    /// Also run a mainnet chain (`base`, chain id 8453, USDC "USD Coin"/2 at Base's address),
    /// where the merchant registers the same payTo.
    pub fn mainnet(mut self) -> Options {
        self.mainnet = true;
        self
    }

    /// The payer starts with `units` base units (else [`FUNDED`]).
    pub fn payer_funds(mut self, units: u64) -> Options {
        self.payer_funds = units;
        self
    }

    /// The stranger starts with `units` base units (else [`FUNDED`]; 0 mints nothing).
    pub fn stranger_funds(mut self, units: u64) -> Options {
        self.stranger_funds = units;
        self
    }

    /// Installs Multicall3 on the test chain (the facilitator batches through it).
    pub fn multicall3(mut self) -> Options {
        self.multicall3 = true;
        self
    }

    /// The merchant's webhooks (and GatePay notifications) go to `url`.
    pub fn merchant_webhook(mut self, url: &str) -> Options {
        self.merchant_webhook = Some(url.to_owned());
        self
    }

    /// The merchant registers no x402 payTo: settlements are not sales.
    pub fn without_pay_to(mut self) -> Options {
        self.pay_to = false;
        self
    }

    /// Enables `chain` too, with the test chain's RPC URL (so that its orders can be created;
    /// it is never watched).
    pub fn also_serving(mut self, chain: &str) -> Options {
        self.also_serving.push(chain.to_owned());
        self
    }

    /// The settlement signer's options (a 5-second receipt timeout unless told).
    pub fn settle(mut self, settle: SettleOptions) -> Options {
        self.settle = settle;
        self
    }

    /// Changes the state before the server starts (paywall routes, policies, …), after any
    /// change already asked for.
    pub fn configure(
        mut self,
        configure: impl FnOnce(AppState) -> AppState + Send + 'static,
    ) -> Options {
        let before = self.configure;
        self.configure = Box::new(move |state| configure(before(state)));
        self
    }

    /// Webhooks may go to endpoints on this machine (as `coffer dev`'s).
    pub fn local_endpoints(self) -> Options {
        self.configure(|state| {
            state
                .with_outbound_policy(coffer_gateway::outbound::OutboundPolicy::allowing_loopback())
        })
    }

    /// The server also answers `routes` (a merchant's pages served beside Coffer).
    pub fn routes(mut self, routes: axum::Router) -> Options {
        self.routes = Some(routes);
        self
    }
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        Env::with(Options::on(backend)).await
    }

    /// An environment whose webhooks may go to endpoints on this machine (as `coffer dev`'s).
    pub async fn with_local_endpoints(backend: Backend) -> Env {
        Env::with(Options::on(backend).local_endpoints()).await
    }

    pub async fn with(options: Options) -> Env {
        let payer = testnet::dev_account(1).unwrap();
        let stranger = testnet::dev_account(2).unwrap();
        let dead = closed_port_url();
        let anvil = match options.with_chain {
            true => Some(
                start_chain(
                    CHAIN_ID,
                    USDC,
                    "USDC",
                    &[
                        (payer.address(), options.payer_funds),
                        (stranger.address(), options.stranger_funds),
                    ],
                    options.block_time,
                )
                .await,
            ),
            false => {
                assert!(
                    !(options.mainnet || options.faulty_rpc || options.multicall3),
                    "a chain-free environment has no chain to extend"
                );
                None
            }
        };
        let chain_url = anvil.as_ref().map_or(dead.as_str(), Anvil::url);
        let chain = ProviderBuilder::new()
            .wallet(EthereumWallet::from(testnet::dev_account(0).unwrap()))
            .connect_http(chain_url.parse().unwrap())
            .erased();
        if options.multicall3 {
            testnet::install_multicall3(&chain).await.unwrap();
        }
        let mainnet = match options.mainnet {
            true => Some(
                start_chain(
                    BASE_CHAIN_ID,
                    BASE_USDC,
                    "USD Coin",
                    &[(payer.address(), FUNDED)],
                    None,
                )
                .await,
            ),
            false => None,
        };
        let mut overrides = Vec::new();
        if let Some(mainnet) = &mainnet {
            overrides.push(("base", rpc(&[mainnet.url()], options.confirmations)));
        }
        let rpc_faults = match options.faulty_rpc {
            true => Some(FaultyRpc::start(chain_url).await.unwrap()),
            false => None,
        };
        let test_chain_url = rpc_faults
            .as_ref()
            .map_or(chain_url, |faulty| faulty.url.as_str());
        let urls: Vec<&str> = match options.dead_endpoint_first {
            true => vec![dead.as_str(), test_chain_url],
            false => vec![test_chain_url],
        };
        overrides.push(("base-sepolia", rpc(&urls, options.confirmations)));
        for other in &options.also_serving {
            overrides.push((other.as_str(), rpc(&[chain_url], None)));
        }
        let registry = registry(&overrides);
        let db = TestDatabase::new(options.backend).await.unwrap();
        let signer = testnet::dev_account(9).unwrap();
        let (configure, settle, routes) = (options.configure, options.settle, options.routes);
        let (base, state) = serve_with(
            |base| {
                let state = AppState::new(db.store.clone(), registry, base)
                    .unwrap()
                    .with_settlement(vec![signer.clone()], settle);
                configure(state)
            },
            routes,
        )
        .await;
        let (merchant, api_key) =
            new_merchant(&state, "Seller", options.merchant_webhook.as_deref()).await;
        if options.pay_to {
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
        }
        Env {
            anvil,
            chain,
            base,
            payer,
            stranger,
            signer,
            state,
            merchant,
            api_key,
            db,
            mainnet,
            rpc_faults,
        }
    }

    /// The test chain's RPC URL.
    pub fn anvil_url(&self) -> &str {
        self.anvil
            .as_ref()
            .expect("this test's environment has a chain")
            .url()
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

    /// `POST /x402/verify`.
    pub async fn verify(&self, body: &Value) -> (u16, Value) {
        self.post("/x402/verify", &[], body).await
    }

    /// `POST /x402/settle`.
    pub async fn settle(&self, body: &Value) -> (u16, Value) {
        self.post("/x402/settle", &[], body).await
    }

    /// The merchant's API key as a header.
    pub fn auth(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.api_key))
    }

    /// Mines `blocks` blocks on the test chain.
    pub async fn mine(&self, blocks: u64) {
        self.chain.anvil_mine(Some(blocks), None).await.unwrap();
    }
}

/// Binds port 0, builds the state for its base URL (`http://127.0.0.1:<port>`) and serves
/// Coffer's router there until the test ends; the base URL and the state.
pub async fn serve(state: impl FnOnce(&str) -> AppState) -> (String, AppState) {
    serve_with(state, None).await
}

/// [`serve`], the server also answering `routes`.
async fn serve_with(
    state: impl FnOnce(&str) -> AppState,
    routes: Option<axum::Router>,
) -> (String, AppState) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = state(&base);
    let mut router = coffer_server::router(state.clone());
    if let Some(routes) = routes {
        router = routes.merge(router);
    }
    tokio::spawn(coffer_server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    (base, state)
}

/// `http://127.0.0.1:<port>` where nothing listens (the port was bound and let go).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The built-in registry with `overrides` applied.
pub fn registry(overrides: &[(&str, ChainOverride)]) -> ChainRegistry {
    let mut registry = ChainRegistry::builtin();
    let overrides: BTreeMap<String, ChainOverride> = overrides
        .iter()
        .map(|(chain, change)| ((*chain).to_owned(), change.clone()))
        .collect();
    registry.apply(&overrides).unwrap();
    registry
}

/// A chain served by `urls`, asking for `confirmations` (`None`: the registry's).
pub fn rpc(urls: &[&str], confirmations: Option<u64>) -> ChainOverride {
    ChainOverride {
        rpc_urls: urls.iter().map(|url| (*url).to_owned()).collect(),
        confirmations,
        ..ChainOverride::default()
    }
}

/// Starts a bare anvil chain with `chain_id` (mining every `block_time` seconds, else on
/// demand).
pub async fn start_anvil(chain_id: u64, block_time: Option<u64>) -> Anvil {
    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    Anvil::start(&AnvilOptions {
        binary,
        chain_id,
        port: 0,
        state_file: None,
        block_time,
    })
    .await
    .unwrap()
}

/// Starts an anvil chain (mining every `block_time` seconds, else on demand) with the EIP-3009
/// test token at `token` (EIP-712 `name`, version `2`, owned by dev account 0) and mints each
/// of `payers` its base units.
pub async fn start_chain(
    chain_id: u64,
    token: Address,
    name: &str,
    payers: &[(Address, u64)],
    block_time: Option<u64>,
) -> Anvil {
    let anvil = start_anvil(chain_id, block_time).await;
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
    for (who, units) in payers {
        if *units > 0 {
            testnet::mint(&chain, token, *who, U256::from(*units))
                .await
                .unwrap();
        }
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

/// Unix seconds.
pub fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `units` whole USDC in base units.
pub fn usdc(units: u64) -> u64 {
    units * 1_000_000
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

    /// The signed message.
    pub fn message(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: U256::from(self.value),
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The EIP-712 hash for the test USDC under the domain name `name`.
    pub fn hash(&self, name: &str) -> B256 {
        self.hash_on(CHAIN_ID, USDC, name)
    }

    /// The EIP-712 hash for a token on a chain.
    pub fn hash_on(&self, chain_id: u64, token: Address, name: &str) -> B256 {
        let domain = Eip712Domain::new(
            Some(name.to_owned().into()),
            Some("2".into()),
            Some(U256::from(chain_id)),
            Some(token),
            None,
        );
        self.message().eip712_signing_hash(&domain)
    }

    /// The payer's EIP-712 signature on the test chain.
    pub fn signature(&self, signer: &PrivateKeySigner) -> Bytes {
        let signature = signer.sign_hash_sync(&self.hash("USDC")).unwrap();
        Bytes::from(signature.as_bytes().to_vec())
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
        let signature = signer
            .sign_hash_sync(&self.hash_on(chain_id, token, name))
            .unwrap();
        format!("0x{}", alloy::hex::encode(signature.as_bytes()))
    }

    /// The `authorization` object of a payload.
    pub fn authorization(&self) -> Value {
        json!({
            "from": self.from.to_checksum(None), "to": self.to.to_checksum(None),
            "value": self.value.to_string(), "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(), "nonce": format!("{:#x}", self.nonce),
        })
    }

    /// `{signature, authorization}` with the given signature.
    pub fn payload_signed(&self, signature: &str) -> Value {
        json!({"signature": signature, "authorization": self.authorization()})
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

/// The JSON value of standard base64.
pub fn unb64(text: &str) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
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
            .connect_http(self.anvil_url().parse().unwrap())
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

/// How a merchant's endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `{"returnCode":"SUCCESS"}`: acknowledged in GatePay's words (Coffer's own webhooks take
    /// any 2xx).
    Acknowledge,
    /// A plain `OK`: a 200 that is no GatePay acknowledgement (recorded).
    PlainOk,
    /// A 500, and nothing recorded: the endpoint is down.
    Fail,
}

/// A merchant's endpoint on this machine: records every request POSTed to it and answers as
/// told, [`Answer::Acknowledge`] until told otherwise.
#[derive(Clone)]
pub struct Inbox {
    received: Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
    answer: Arc<std::sync::Mutex<Answer>>,
}

impl Inbox {
    /// Starts the endpoint; returns it and its URL.
    pub async fn start() -> (Inbox, String) {
        let inbox = Inbox {
            received: Arc::default(),
            answer: Arc::new(std::sync::Mutex::new(Answer::Acknowledge)),
        };
        let sink = inbox.clone();
        let router = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let sink = sink.clone();
                async move {
                    use axum::response::IntoResponse;
                    let answer = *sink.answer.lock().unwrap();
                    if answer != Answer::Fail {
                        sink.received.lock().unwrap().push((headers, body));
                    }
                    match answer {
                        Answer::Acknowledge => {
                            r#"{"returnCode":"SUCCESS","returnMessage":""}"#.into_response()
                        }
                        Answer::PlainOk => "OK".into_response(),
                        Answer::Fail => {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (inbox, url)
    }

    /// From now on, answers `answer`.
    pub fn answer_with(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Every request received so far: headers and body.
    pub fn received(&self) -> Vec<(axum::http::HeaderMap, String)> {
        self.received.lock().unwrap().clone()
    }

    /// Every request received so far, its body as JSON.
    pub fn events(&self) -> Vec<(axum::http::HeaderMap, Value)> {
        self.received()
            .into_iter()
            .map(|(headers, body)| (headers, serde_json::from_str(&body).unwrap()))
            .collect()
    }

    /// The `type` of every event received so far.
    pub fn event_types(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|(_, body)| body["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A new merchant (notified at `webhook_url`) and its API key, as its clients hold it.
pub async fn new_merchant(
    state: &AppState,
    name: &str,
    webhook_url: Option<&str>,
) -> (MerchantRow, String) {
    let merchant = state
        .gateway
        .merchants
        .create(name, webhook_url)
        .await
        .unwrap();
    let key = state
        .gateway
        .merchants
        .create_key(&merchant.id, "test")
        .await
        .unwrap();
    (merchant, key.key.expose_secret().to_owned())
}

/// Gives a merchant the development deposit wallet (xpub) on every chain, so that it can take
/// payment orders.
pub async fn deposit_wallet(state: &AppState, merchant: &coffer_core::MerchantId) {
    let xpub = coffer_evm::hd::dev_deposit_key(coffer_evm::testnet::DEV_MNEMONIC)
        .unwrap()
        .to_base58()
        .unwrap();
    state
        .gateway
        .store
        .set_wallet(merchant, 0, &xpub, 0)
        .await
        .unwrap();
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
        let merchant = new_merchant(&self.state, name, Some(webhook_url)).await;
        self.deposit_wallet(&merchant.0.id).await;
        merchant
    }

    /// Gives a merchant the development deposit wallet (xpub) on every chain, so that it can
    /// take payment orders.
    pub async fn deposit_wallet(&self, merchant: &coffer_core::MerchantId) {
        deposit_wallet(&self.state, merchant).await;
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
        self.deliver().await;
    }

    /// Sends every due webhook once; how many were sent.
    pub async fn deliver(&self) -> usize {
        coffer_gateway::workers::dispatcher::Dispatcher::new(&self.state.gateway)
            .dispatch_due()
            .await
            .unwrap()
    }
}

/// A contract call or deployment sent and waited for until mined.
pub trait Mined {
    /// Sends the call from its provider's wallet and returns its receipt once mined.
    fn mined(self) -> impl std::future::Future<Output = TransactionReceipt>;
}

impl<P: Provider, D: alloy::contract::CallDecoder> Mined for alloy::contract::CallBuilder<P, D> {
    async fn mined(self) -> TransactionReceipt {
        self.send().await.unwrap().get_receipt().await.unwrap()
    }
}

impl Env {
    /// Transfers `units` of the test USDC from the payer to `to` (one mined block).
    pub async fn pay(&self, to: &str, units: u64) {
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(self.payer.clone()))
            .connect_http(self.anvil_url().parse().unwrap());
        let receipt = coffer_evm::contracts::IERC20::new(USDC, provider)
            .transfer(to.parse().unwrap(), U256::from(units))
            .mined()
            .await;
        assert!(receipt.status());
    }
}

// ---------------------------------------------------------------------------------------------
// The paywall and the official clients
// ---------------------------------------------------------------------------------------------

/// `GET path` for 0.01 USDC on the test chain, paid to the merchant's payTo, proxied to
/// `upstream`.
pub fn paywall_route(path: &str, upstream: &str) -> PaywallRouteConfig {
    PaywallRouteConfig {
        path: path.to_owned(),
        method: Some("GET".to_owned()),
        price: "0.01".to_owned(),
        networks: vec!["base-sepolia".to_owned()],
        assets: vec!["USDC".to_owned()],
        pay_to: PAY_TO.to_checksum(None),
        upstream: upstream.to_owned(),
        description: "Premium quotes".to_owned(),
        mime_type: "application/json".to_owned(),
        max_timeout_seconds: 300,
    }
}

/// Installs paywall routes on a state.
pub fn with_paywall(mut state: AppState, routes: &[PaywallRouteConfig]) -> AppState {
    state.paywall =
        Arc::new(Paywall::new(routes, &state.gateway.chains, &state.gateway.public_url).unwrap());
    state
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs an official client's script, `interop/<script>.mjs` under node for `npm` and
/// `interop/<script>.py` under `.tools/python` for `pypi`, with `input` as its argument; its
/// JSON output.
pub fn interop(client: &str, script: &str, input: &Value) -> Value {
    let root = repo_root();
    let (program, script) = match client {
        "npm" => (
            PathBuf::from("node"),
            root.join(format!("interop/{script}.mjs")),
        ),
        _ => (
            root.join(".tools/python/bin/python"),
            root.join(format!("interop/{script}.py")),
        ),
    };
    let output = std::process::Command::new(&program)
        .arg(&script)
        .arg(input.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{program:?} is missing ({e}): run scripts/install-tools.sh"));
    assert!(
        output.status.success(),
        "{client} {script:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
