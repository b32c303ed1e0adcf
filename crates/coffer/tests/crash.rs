//! `coffer serve` killed with SIGKILL in the middle of the payment flow and started again loses
//! nothing and credits nothing twice, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256, address};
use alloy::providers::ProviderBuilder;
use alloy::providers::ext::AnvilApi;
use coffer_evm::contracts::IERC20;
use coffer_evm::testnet::{self, DEV_MNEMONIC};
use coffer_store::testing::{Backend, fresh_url};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use kit::chain::{USDC, chain_with_usdc, transfer, x402_request};
use kit::server::{coffer, free_port, json_answer, order_id_and_deposit, wait_until_answering};

struct Node {
    env: Vec<(String, String)>,
    port: u16,
}

impl Node {
    /// A node on a free port over `database_url` and the chain at `rpc_url`, with `more`
    /// configuration.
    fn new(database_url: String, rpc_url: &str, more: &[(&str, String)]) -> Node {
        let port = free_port();
        let mut env = vec![
            ("COFFER__DATABASE__URL".to_owned(), database_url),
            (
                "COFFER__SERVER__LISTEN".to_owned(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS".to_owned(),
                format!("[\"{rpc_url}\"]"),
            ),
        ];
        env.extend(
            more.iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        Node { env, port }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self) -> Command {
        let mut command = coffer();
        command.envs(self.env.iter().cloned());
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
        assert!(
            wait_until_answering(self.port, 100).await,
            "coffer serve did not come up"
        );
        child
    }
}

async fn kill(mut child: Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

async fn order(base: &str, key: &str, order_id: &str) -> Value {
    let request = reqwest::Client::new()
        .get(format!("{base}/api/payment-orders/{order_id}/"))
        .bearer_auth(key);
    json_answer(request).await["data"].clone()
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
    let node = Node::new(
        database_url,
        chain.url(),
        &[
            ("COFFER__CHAINS__BASE_SEPOLIA__CONFIRMATIONS", "3".into()),
            ("COFFER_MASTER_KEY", coffer_store::MasterKey::generate().1),
        ],
    );
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

    let base = node.base_url();
    let server = node.serve().await;
    let request = reqwest::Client::new()
        .post(format!("{base}/api/payment-orders/"))
        .bearer_auth(&key)
        .json(&json!({"amount": "12.5", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 1}));
    let (order_id, deposit) = order_id_and_deposit(&json_answer(request).await);
    // Let the watcher set its cursor before the payment.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Pay, and kill the server at whatever point it is in.
    let paying = ProviderBuilder::new()
        .wallet(EthereumWallet::from(payer))
        .connect_http(chain.url().parse().unwrap());
    transfer(&paying, USDC, deposit, U256::from(12_500_000u64)).await;
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
    let events: Value = json_answer(
        reqwest::Client::new()
            .get(format!("{base}/api/events/?order_id={order_id}"))
            .bearer_auth(&key),
    )
    .await;
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
    let node = Node::new(
        database_url,
        chain.url(),
        &[
            (
                "COFFER__X402__SIGNER_KEYS",
                format!("[\"0x{}\"]", alloy::hex::encode(signer.to_bytes())),
            ),
            ("COFFER__X402__SETTLE_TIMEOUT_SECONDS", "30".into()),
            // A stress test of settlement, not of the facilitator's access policy.
            ("COFFER__X402__FACILITATOR__ACCESS", "public".into()),
            ("COFFER__X402__FACILITATOR__PAYER_PER_MINUTE", "0".into()),
            ("COFFER__X402__FACILITATOR__CLIENT_PER_MINUTE", "0".into()),
        ],
    );
    let payee: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    let request = x402_request(&payer, payee, 70_000);
    let base = node.base_url();

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
        settled = json_answer(
            reqwest::Client::new()
                .post(format!("{base}/x402/settle"))
                .json(&request),
        )
        .await;
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

coffer_store::on_both_databases!(
    backend: [
        a_killed_server_resumes_without_losing_or_double_counting,
    ];
);
