//! The hosted checkout page in a real browser: Coffer and anvil run here, headless Chromium
//! (Debian's `/usr/bin/chromium`, driven by playwright-core from `.tools/`) opens the page of
//! a GatePay checkout order, checks the amount and the QR code, and watches the test pay on
//! anvil: the page moves to "confirming (1 of 2)", then "paid", then follows `returnUrl`.
//! Screenshots land in `target/screenshots/checkout-page/`.
//!
//! Needs `scripts/install-tools.sh` (anvil, playwright-core and Chromium).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::IERC20;
use coffer_evm::testnet::{self, DEV_MNEMONIC, UsdcSpec};
use coffer_gateway::gatepay;
use coffer_gateway::workers::dispatcher::Dispatcher;
use coffer_gateway::workers::watcher::Watcher;
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use std::io::BufRead;

const USDC: Address = alloy::primitives::address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
const CHAIN_ID: u64 = 84_532;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_checkout_page_shows_the_qr_and_amount_then_paid_and_redirects() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: run scripts/install-tools.sh"
    );
    let playwright = repo_root().join(".tools/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "playwright-core is missing: run scripts/install-tools.sh"
    );
    let shots = repo_root().join("target/screenshots/checkout-page");
    std::fs::create_dir_all(&shots).unwrap();

    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    let anvil = Anvil::start(&AnvilOptions {
        binary,
        chain_id: CHAIN_ID,
        port: 0,
        state_file: None,
        block_time: None,
    })
    .await
    .expect("anvil");
    let owner = testnet::dev_account(0).unwrap();
    let chain = ProviderBuilder::new()
        .wallet(EthereumWallet::from(owner.clone()))
        .connect_http(anvil.url().parse().unwrap())
        .erased();
    let spec = UsdcSpec {
        name: "USDC".into(),
        version: "2".into(),
        symbol: "USDC".into(),
        decimals: 6,
        owner: owner.address(),
    };
    testnet::install_usdc_at(&chain, USDC, &spec).await.unwrap();
    let payer = testnet::dev_account(1).unwrap();
    testnet::mint(&chain, USDC, payer.address(), U256::from(1_000_000_000u64))
        .await
        .unwrap();

    let mut registry = ChainRegistry::builtin();
    registry
        .apply(&BTreeMap::from([(
            "base-sepolia".to_owned(),
            ChainOverride {
                rpc_urls: vec![anvil.url().to_owned()],
                confirmations: Some(2),
                ..Default::default()
            },
        )]))
        .unwrap();
    let db = TestDatabase::new(Backend::Sqlite).await.expect("database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The shop is local: loopback is allowed, as under `coffer dev`.
    let state = AppState::new(db.store.clone(), registry, &base)
        .unwrap()
        .with_outbound_policy(coffer_gateway::outbound::OutboundPolicy::allowing_loopback());
    // The shop: where the customer returns, and where notifications go.
    let shop = axum::Router::new()
        .route(
            "/thanks",
            axum::routing::get(|| async { axum::response::Html("<h1>Thanks for your order</h1>") }),
        )
        .route(
            "/notify",
            axum::routing::post(|| async { r#"{"returnCode":"SUCCESS"}"# }),
        )
        .merge(coffer_server::router(state.clone()));
    tokio::spawn(async move { axum::serve(listener, shop).await });

    let merchant = state
        .gateway
        .merchants
        .create("Coffee Shop", Some(&format!("{base}/notify")))
        .await
        .unwrap();
    let credential = state.gateway.gatepay.create(&merchant.id).await.unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(&credential.secret).to_owned();
    let xpub = coffer_evm::hd::dev_deposit_key(DEV_MNEMONIC)
        .unwrap()
        .to_base58()
        .unwrap();
    state
        .gateway
        .store
        .set_wallet(&merchant.id, 0, &xpub, 0)
        .await
        .unwrap();

    let return_url = format!("{base}/thanks");
    let body = json!({
        "merchantTradeNo": "browser-1",
        "env": {"terminalType": "WAP"},
        "goods": {"goodsName": "Flat white"},
        "fullCurrType": "USDC_BASESEPOLIA",
        "orderAmount": "4.2",
        "returnUrl": return_url,
        "cancelUrl": format!("{base}/cancelled"),
    })
    .to_string();
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/pay/checkout/order"))
        .header("Content-Type", "application/json")
        .header("X-GatePay-Certificate-ClientId", &credential.client_id)
        .header("X-GatePay-Timestamp", &timestamp)
        .header("X-GatePay-Nonce", "browser1")
        .header(
            "X-GatePay-Signature",
            gatepay::sign(&secret, &timestamp, "browser1", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "SUCCESS", "{answer}");
    let location = answer["data"]["location"].as_str().unwrap().to_owned();
    let deposit: Address = answer["data"]["chain"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // The watcher and the dispatcher run as in `coffer serve`.
    let mut watcher = Watcher::new(&state.gateway, CHAIN_ID).expect("watcher");
    let dispatcher = Dispatcher::new(&state.gateway);
    let workers = tokio::spawn(async move {
        loop {
            let _ = watcher.step().await;
            let _ = dispatcher.dispatch_due().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let script = repo_root().join("crates/coffer-server/tests/browser/checkout_page.cjs");
    let mut browser = std::process::Command::new("node")
        .arg(&script)
        .arg(&location)
        .arg("4.20 USDC")
        .arg(&return_url)
        .arg(&shots)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let stdout = browser.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = rx.recv().await {
            match line.as_str() {
                "READY" => {
                    // Pay from a funded test account: one block, the page shows 1 of 2.
                    let wallet = ProviderBuilder::new()
                        .wallet(EthereumWallet::from(payer.clone()))
                        .connect_http(anvil.url().parse().unwrap());
                    let receipt = IERC20::new(USDC, wallet)
                        .transfer(deposit, U256::from(4_200_000u64))
                        .send()
                        .await
                        .unwrap()
                        .get_receipt()
                        .await
                        .unwrap();
                    assert!(receipt.status());
                }
                "CONFIRMING" => chain.anvil_mine(Some(1), None).await.unwrap(),
                _ => {}
            }
            seen.push(line);
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(180), run).await;
    if finished.is_err() {
        let _ = browser.kill();
    }
    let status = browser.wait().unwrap();
    workers.abort();
    assert!(
        finished.is_ok(),
        "the browser script did not finish in time; saw {seen:?}"
    );
    assert!(status.success(), "the browser script failed; saw {seen:?}");
    assert_eq!(seen, ["READY", "CONFIRMING", "PAID", "DONE"]);
    for shot in [
        "00-waiting-zh.png",
        "01-waiting.png",
        "02-confirming.png",
        "03-paid.png",
        "04-returned.png",
    ] {
        assert!(shots.join(shot).is_file(), "screenshot {shot} missing");
    }
}
