//! `coffer serve` killed with SIGKILL in the middle of the payment flow and started again loses
//! nothing and credits nothing twice, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256, address};
use alloy::providers::ProviderBuilder;
use alloy::providers::ext::AnvilApi;
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::IERC20;
use coffer_evm::testnet::{self, DEV_MNEMONIC, UsdcSpec};
use coffer_store::testing::{Backend, fresh_url};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");

struct Node {
    env: Vec<(String, String)>,
    port: u16,
}

impl Node {
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
        command
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn cli(&self, args: &[&str]) -> Value {
        let output = self.command().args(args).output().await.unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    async fn serve(&self) -> Child {
        let child = self.command().arg("serve").spawn().unwrap();
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        for _ in 0..100 {
            if reqwest::get(&url).await.is_ok() {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("coffer serve did not come up");
    }
}

async fn kill(mut child: Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

async fn order(base: &str, key: &str, order_id: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/payment-orders/{order_id}/"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn wait_for_status(base: &str, key: &str, order_id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let current = order(base, key, order_id).await;
        if current["status"] == status {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "order {order_id} never reached {status}: {}",
        order(base, key, order_id).await
    );
}

/// A fresh anvil chain (id 84532) with the EIP-3009 test token at Base Sepolia's USDC address,
/// and a provider whose wallet owns the token (it can mint).
async fn chain_with_usdc() -> (Anvil, alloy::providers::DynProvider) {
    use alloy::providers::Provider;
    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    let chain = Anvil::start(&AnvilOptions {
        binary,
        chain_id: 84_532,
        port: 0,
        state_file: None,
        block_time: None,
    })
    .await
    .unwrap();
    let owner = testnet::dev_account(0).unwrap();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(owner.clone()))
        .connect_http(chain.url().parse().unwrap())
        .erased();
    let spec = UsdcSpec {
        name: "USDC".into(),
        version: "2".into(),
        symbol: "USDC".into(),
        decimals: 6,
        owner: owner.address(),
    };
    testnet::install_usdc_at(&provider, USDC, &spec)
        .await
        .unwrap();
    (chain, provider)
}

async fn a_killed_server_resumes_without_losing_or_double_counting(backend: Backend) {
    let (chain, provider) = chain_with_usdc().await;
    let payer = testnet::dev_account(3).unwrap();
    testnet::mint(
        &provider,
        USDC,
        payer.address(),
        U256::from(1_000_000_000u64),
    )
    .await
    .unwrap();

    let (database_url, _dir) = fresh_url(backend).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = Node {
        env: vec![
            ("COFFER__DATABASE__URL".into(), database_url),
            ("COFFER__SERVER__LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS".into(),
                format!("[\"{}\"]", chain.url()),
            ),
            (
                "COFFER__CHAINS__BASE_SEPOLIA__CONFIRMATIONS".into(),
                "3".into(),
            ),
            (
                "COFFER_MASTER_KEY".into(),
                coffer_store::MasterKey::generate().1,
            ),
        ],
        port,
    };
    let merchant = node
        .cli(&["merchant", "create", "--name", "Crash Shop", "--json"])
        .await;
    let merchant_id = merchant["id"].as_str().unwrap();
    let key = node
        .cli(&["key", "create", "--merchant", merchant_id, "--json"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let xpub = coffer_evm::hd::dev_deposit_key(DEV_MNEMONIC)
        .unwrap()
        .to_base58()
        .unwrap();
    node.cli(&["wallet", "set", "--merchant", merchant_id, "--xpub", &xpub])
        .await;

    let base = format!("http://127.0.0.1:{port}");
    let server = node.serve().await;
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/api/payment-orders/"))
        .bearer_auth(&key)
        .json(&json!({"amount": "12.5", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = created["data"]["order_id"].as_str().unwrap().to_owned();
    let deposit: Address = created["data"]["receiving_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Let the watcher set its cursor before the payment.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Pay, and kill the server at whatever point it is in.
    let paying = ProviderBuilder::new()
        .wallet(EthereumWallet::from(payer))
        .connect_http(chain.url().parse().unwrap());
    IERC20::new(USDC, &paying)
        .transfer(deposit, U256::from(12_500_000u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    kill(server).await;

    // Up again: the payment is seen; kill again once it is processing.
    let server = node.serve().await;
    wait_for_status(&base, &key, &order_id, "processing").await;
    kill(server).await;
    provider.anvil_mine(Some(3), None).await.unwrap();

    // Up again: it confirms, with one payment and each event once.
    let server = node.serve().await;
    let done = wait_for_status(&base, &key, &order_id, "confirmed").await;
    assert_eq!(done["amount_paid"], "12.50");
    assert_eq!(done["payments"].as_array().unwrap().len(), 1, "{done}");
    let events: Value = reqwest::Client::new()
        .get(format!("{base}/api/events/?order_id={order_id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "payment_order.confirmed",
            "payment_order.created",
            "payment_order.payment_detected",
            "payment_order.processing"
        ]
    );
    kill(server).await;
    chain.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_server_resumes_without_losing_or_double_counting_on_sqlite() {
    a_killed_server_resumes_without_losing_or_double_counting(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_killed_server_resumes_without_losing_or_double_counting_on_postgres() {
    a_killed_server_resumes_without_losing_or_double_counting(Backend::Postgres).await;
}

/// Signs an EIP-3009 authorization for `to` with the payer's key, as an x402 v2 request.
fn x402_request(payer: &alloy::signers::local::PrivateKeySigner, to: Address, value: u64) -> Value {
    use alloy::signers::SignerSync;
    use alloy::sol_types::{Eip712Domain, SolStruct};
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let nonce = alloy::primitives::B256::from(rand::random::<[u8; 32]>());
    let message = coffer_evm::contracts::TransferWithAuthorization {
        from: payer.address(),
        to,
        value: U256::from(value),
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + 600),
        nonce,
    };
    let domain = Eip712Domain::new(
        Some("USDC".into()),
        Some("2".into()),
        Some(U256::from(84_532)),
        Some(USDC),
        None,
    );
    let signature = payer
        .sign_hash_sync(&message.eip712_signing_hash(&domain))
        .unwrap();
    let requirements = json!({"scheme": "exact", "network": "eip155:84532", "amount": value.to_string(), "asset": USDC.to_checksum(None),
        "payTo": to.to_checksum(None), "maxTimeoutSeconds": 600, "extra": {"name": "USDC", "version": "2"}});
    json!({"x402Version": 2, "paymentRequirements": requirements, "paymentPayload": {"x402Version": 2, "accepted": requirements,
        "payload": {"signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "authorization": {
            "from": payer.address().to_checksum(None), "to": to.to_checksum(None), "value": value.to_string(),
            "validAfter": (now - 600).to_string(), "validBefore": (now + 600).to_string(), "nonce": format!("{nonce:#x}")}}}})
}

#[tokio::test]
async fn a_server_killed_between_broadcast_and_receipt_settles_the_one_transaction_after_restart() {
    use alloy::providers::Provider;
    let (chain, provider) = chain_with_usdc().await;
    let payer = testnet::dev_account(4).unwrap();
    testnet::mint(&provider, USDC, payer.address(), U256::from(1_000_000u64))
        .await
        .unwrap();
    provider.anvil_set_auto_mine(false).await.unwrap();

    let signer = testnet::dev_account(7).unwrap();
    let (database_url, _dir) = fresh_url(Backend::Sqlite).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = Node {
        env: vec![
            ("COFFER__DATABASE__URL".into(), database_url),
            ("COFFER__SERVER__LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS".into(),
                format!("[\"{}\"]", chain.url()),
            ),
            (
                "COFFER__X402__SIGNER_KEYS".into(),
                format!("[\"0x{}\"]", alloy::hex::encode(signer.to_bytes())),
            ),
            ("COFFER__X402__SETTLE_TIMEOUT_SECONDS".into(), "30".into()),
            // A stress test of settlement, not of the facilitator's access policy.
            ("COFFER__X402__FACILITATOR__ACCESS".into(), "public".into()),
            (
                "COFFER__X402__FACILITATOR__PAYER_PER_MINUTE".into(),
                "0".into(),
            ),
            (
                "COFFER__X402__FACILITATOR__CLIENT_PER_MINUTE".into(),
                "0".into(),
            ),
        ],
        port,
    };
    let payee: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    let request = x402_request(&payer, payee, 70_000);
    let base = format!("http://127.0.0.1:{port}");

    // The server broadcasts, then waits for a receipt that cannot come; it is killed meanwhile.
    let server = node.serve().await;
    let pending = tokio::spawn({
        let (url, request) = (format!("{base}/x402/settle"), request.clone());
        async move { reqwest::Client::new().post(url).json(&request).send().await }
    });
    let mut broadcast = false;
    for _ in 0..100 {
        if provider
            .get_transaction_count(signer.address())
            .pending()
            .await
            .unwrap()
            == 1
        {
            broadcast = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(broadcast, "the settlement was broadcast");
    kill(server).await;
    assert!(
        pending.await.unwrap().is_err(),
        "the first caller never got an answer"
    );

    // After a restart the block is mined; the reconciler and a retried settle find the one
    // transaction.
    let server = node.serve().await;
    provider.anvil_mine(Some(1), None).await.unwrap();
    let mut settled = Value::Null;
    for _ in 0..50 {
        settled = reqwest::Client::new()
            .post(format!("{base}/x402/settle"))
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if settled["success"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(settled["success"], true, "{settled}");
    let balance = IERC20::new(USDC, &provider)
        .balanceOf(payee)
        .call()
        .await
        .unwrap();
    assert_eq!(balance, U256::from(70_000u64));
    assert_eq!(
        provider
            .get_transaction_count(signer.address())
            .await
            .unwrap(),
        1,
        "never a second broadcast"
    );
    kill(server).await;
    chain.stop().await.unwrap();
}
