//! `coffer dev` as a new user meets it: it comes up with two chains, its summary lets a script
//! pay, the banner's request works, Ctrl-C stops everything, and a second run resumes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use kit::chain::transfer;
use kit::dev::Dev;
use kit::server::{json_answer, order_id_and_deposit};
use tokio::process::{Child, Command};

sol! {
    #[sol(rpc)]
    interface IToken {
        function name() external view returns (string);
        function version() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function balanceOf(address account) external view returns (uint256);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        function transfer(address to, uint256 value) external returns (bool);
    }

    struct Probe { uint256 value; }
}

/// Starts `coffer dev` with its data in `data_dir`; returns it once it has written its summary,
/// with the banner it printed.
async fn start_dev(data_dir: &Path, extra: &[&str]) -> (Dev, String) {
    let summary_path = data_dir.join("out/summary.json");
    let _ = std::fs::remove_file(&summary_path);
    let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .arg("--summary")
        .arg(&summary_path)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("COFFER_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("coffer dev starts");
    let mut dev = Dev::when_summarised(child, &summary_path).await;
    let banner = read_banner(&mut dev.child).await;
    (dev, banner)
}

async fn read_banner(child: &mut Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut banner = String::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
    {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // Keep reading, as a terminal would, so coffer dev never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    banner
}

fn banner_curl(banner: &str) -> (String, String) {
    let line = banner
        .lines()
        .find(|line| line.trim_start().starts_with("curl "))
        .expect("a curl line");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http"))
        .expect("url")
        .to_owned();
    let key = line
        .split("Bearer ")
        .nth(1)
        .expect("bearer")
        .trim_end_matches('"')
        .to_owned();
    (url, key)
}

/// The newest webhook in the inbox at `inbox_url` that `matches`, looked for every 100 ms for
/// up to 15 s.
async fn webhook_within_15_s(
    inbox_url: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    for _ in 0..150 {
        let inbox: serde_json::Value = reqwest::get(inbox_url).await.unwrap().json().await.unwrap();
        let found = inbox.as_array().unwrap().iter().find(|hook| matches(hook));
        if found.is_some() {
            return found.cloned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn coffer_dev_runs_two_funded_chains_a_demo_merchant_and_resumes_its_state() {
    let data_dir = tempfile::tempdir().unwrap();
    // As an older `coffer dev` left it: readable by everyone.
    std::fs::set_permissions(data_dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let (dev, banner) = start_dev(data_dir.path(), &[]).await;
    let summary = dev.summary.clone();

    // The summary and the demo credentials hold keys: they, and the master key, are their
    // owner's alone, in a directory that is too; the secrets are encrypted in the database.
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data_dir.path()), 0o700);
    for file in ["out/summary.json", "demo-merchant.json", "master.key"] {
        assert_eq!(mode(&data_dir.path().join(file)), 0o600, "{file}");
    }
    let master_key = std::fs::read_to_string(data_dir.path().join("master.key")).unwrap();
    let mut database = Vec::new();
    for file in ["coffer.db", "coffer.db-wal"] {
        database.extend(std::fs::read(data_dir.path().join(file)).unwrap_or_default());
    }
    let database = String::from_utf8_lossy(&database);
    assert!(
        database.contains(&summary.merchant_id),
        "the database was read"
    );
    for secret in [
        &summary.webhook_secret,
        &summary.gatepay.secret,
        &summary.okx.secret,
    ] {
        assert!(
            !database.contains(secret.as_str()),
            "a secret is stored in plain text"
        );
    }

    // The banner's curl works as printed.
    let (url, key) = banner_curl(&banner);
    assert_eq!(key, summary.api_key);
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["id"], summary.merchant_id.as_str());
    assert!(summary.webhook_secret.starts_with("whsec_"));
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", summary.api_base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    // The summary lets a script pay: RPC answers for the right chain, tokens exist with the
    // given EIP-712 domain, payers hold tokens.
    let names: Vec<_> = summary
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c.chain_id))
        .collect();
    assert_eq!(names, [("base-sepolia", 84_532), ("bsc", 56)]);
    let mut balances = Vec::new();
    let mut domains_checked = 0;
    for chain in &summary.chains {
        let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
        assert_eq!(provider.get_chain_id().await.unwrap(), chain.chain_id);
        assert_eq!(chain.tokens.len(), 1);
        let token = &chain.tokens[0];
        let address: Address = token.address.parse().unwrap();
        let contract = IToken::new(address, &provider);
        assert_eq!(contract.decimals().call().await.unwrap(), token.decimals);
        assert_eq!(contract.symbol().call().await.unwrap(), token.symbol);
        if let (Some(name), Some(version)) = (&token.eip712_name, &token.eip712_version) {
            assert_eq!(contract.name().call().await.unwrap(), *name);
            assert_eq!(contract.version().call().await.unwrap(), *version);
            let domain = Eip712Domain::new(
                Some(name.clone().into()),
                Some(version.clone().into()),
                Some(U256::from(chain.chain_id)),
                Some(address),
                None,
            );
            assert_eq!(
                contract.DOMAIN_SEPARATOR().call().await.unwrap(),
                domain.separator()
            );
            let _ = Probe { value: U256::ZERO }.eip712_signing_hash(&domain);
            domains_checked += 1;
        }
        assert!(chain.payers.len() >= 2);
        for payer in &chain.payers {
            let signer: alloy::signers::local::PrivateKeySigner =
                payer.private_key.parse().unwrap();
            assert_eq!(signer.address().to_checksum(None), payer.address);
            let balance = contract.balanceOf(signer.address()).call().await.unwrap();
            assert_eq!(
                balance,
                U256::from(10_000u64) * U256::from(10u64).pow(U256::from(token.decimals))
            );
            assert!(
                provider.get_balance(signer.address()).await.unwrap() > U256::ZERO,
                "payer has gas"
            );
        }
        balances.push((chain.rpc_url.clone(), address));
    }
    assert!(
        domains_checked >= 1,
        "at least one EIP-3009 token's domain was checked"
    );
    let usdc = &summary.chains[0].tokens[0];
    assert_eq!(
        (
            usdc.address.as_str(),
            usdc.eip712_name.as_deref(),
            usdc.eip712_version.as_deref()
        ),
        (
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            Some("USDC"),
            Some("2")
        )
    );
    assert_eq!(
        (
            summary.chains[1].tokens[0].symbol.as_str(),
            summary.chains[1].tokens[0].decimals
        ),
        ("USDT", 18)
    );
    summary.signer.parse::<Address>().expect("signer address");

    // The seed's JavaScript example, run by node, creates an order.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/create_order.mjs"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .env("COFFER_URL", &summary.api_base_url)
        .env("CRYPTOPAY_API_KEY", &summary.api_key)
        .output()
        .await
        .expect("node runs the example");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_js: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_js["success"], true, "{from_js}");
    assert_eq!(
        (
            from_js["data"]["status"].as_str(),
            from_js["data"]["amount"].as_str()
        ),
        (Some("pending"), Some("100.00"))
    );
    assert_eq!(from_js["data"]["blockchain"], "base");

    // The payment-orders seed's request, verbatim but for host and key: an order on "base"
    // (the local Base chain), paid from a funded account, confirmed, and webhooked, signed.
    let client = reqwest::Client::new();
    let request = client
        .post(format!("{}/api/payment-orders/", summary.api_base_url))
        .bearer_auth(&summary.api_key)
        .json(&serde_json::json!({
            "amount": "100.00",
            "currency": "USDC",
            "blockchain": "base",
            "order_info": serde_json::json!({"product": "Premium Plan", "customer_id": "user_123", "quantity": 1}).to_string(),
            "nonce": 1_640_995_200_123_456_i64,
        }));
    let created = json_answer(request).await;
    assert_eq!(created["data"]["status"], "pending", "{created}");
    let (order_id, deposit) = order_id_and_deposit(&created);
    let customer: alloy::signers::local::PrivateKeySigner =
        summary.chains[0].payers[2].private_key.parse().unwrap();
    let customer_chain = ProviderBuilder::new()
        .wallet(customer)
        .connect_http(summary.chains[0].rpc_url.parse().unwrap());
    let usdc_at: Address = summary.chains[0].tokens[0].address.parse().unwrap();
    transfer(
        &customer_chain,
        usdc_at,
        deposit,
        U256::from(100_000_000u64),
    )
    .await;
    let confirmed_hook = webhook_within_15_s(&summary.webhook_inbox_url, |hook| {
        hook["event_type"] == "payment_order.confirmed"
            && hook["body"]["data"]["order_id"] == order_id.as_str()
    })
    .await;
    let hook = confirmed_hook.expect("a payment_order.confirmed webhook within 15 s");
    assert_eq!(hook["signature_valid"], true);
    let order: serde_json::Value = json_answer(
        client
            .get(format!(
                "{}/api/payment-orders/{order_id}/",
                summary.api_base_url
            ))
            .bearer_auth(&summary.api_key),
    )
    .await;
    assert_eq!(order["data"]["status"], "confirmed");
    assert_eq!(order["data"]["amount_paid"], "100.00");

    // GatePay, with the summary's credential: a signed checkout order returns a `location`
    // that answers; paying it makes the query return PAID and the merchant's inbox receive a
    // correctly signed PAY_SUCCESS notification.
    let body = serde_json::json!({
        "merchantTradeNo": "dev-1",
        "env": {"terminalType": "WEB"},
        "goods": {"goodsName": "Plan"},
        "fullCurrType": "USDC_BASESEPOLIA",
        "orderAmount": "3",
    })
    .to_string();
    let gatepay_call = |path: &'static str, body: String, nonce: &'static str| {
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        let signature = coffer_gateway::gatepay::sign(
            &summary.gatepay.secret,
            &timestamp,
            nonce,
            body.as_bytes(),
        );
        client
            .post(format!("{}{path}", summary.api_base_url))
            .header("Content-Type", "application/json")
            .header("X-GatePay-Certificate-ClientId", &summary.gatepay.client_id)
            .header("X-GatePay-Timestamp", timestamp)
            .header("X-GatePay-Nonce", nonce)
            .header("X-GatePay-Signature", signature)
            .body(body)
    };
    let created = json_answer(gatepay_call("/v1/pay/checkout/order", body, "dev1")).await;
    assert_eq!(created["status"], "SUCCESS", "{created}");
    let location = created["data"]["location"].as_str().unwrap();
    assert_eq!(reqwest::get(location).await.unwrap().status(), 200);
    let prepay_id = created["data"]["prepayId"].as_str().unwrap().to_owned();
    let deposit: Address = created["data"]["chain"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    transfer(&customer_chain, usdc_at, deposit, U256::from(3_000_000u64)).await;
    let notification = webhook_within_15_s(&summary.webhook_inbox_url, |hook| {
        hook["event_type"] == "gatepay PAY_SUCCESS" && hook["body"]["bizId"] == prepay_id.as_str()
    })
    .await;
    let notification = notification.expect("a GatePay PAY_SUCCESS notification within 15 s");
    assert_eq!(notification["signature_valid"], true);
    let queried = json_answer(gatepay_call(
        "/v1/pay/order/query",
        serde_json::json!({"prepayId": prepay_id}).to_string(),
        "dev2",
    ))
    .await;
    assert_eq!(queried["data"]["status"], "PAID", "{queried}");

    // A payer pays on chain; the transfer must survive a restart.
    let payer = &summary.chains[0].payers[0];
    let payee: Address = summary.chains[0].payers[1].address.parse().unwrap();
    let payer_signer: alloy::signers::local::PrivateKeySigner = payer.private_key.parse().unwrap();
    let paying = ProviderBuilder::new()
        .wallet(payer_signer)
        .connect_http(summary.chains[0].rpc_url.parse().unwrap());
    let usdc_address: Address = summary.chains[0].tokens[0].address.parse().unwrap();
    let receipt = transfer(&paying, usdc_address, payee, U256::from(1_500_000u64)).await;
    assert!(receipt.status());

    // Ctrl-C stops Coffer and the chains.
    dev.interrupt().await;
    for (rpc_url, _) in &balances {
        let provider = ProviderBuilder::new().connect_http(rpc_url.parse().unwrap());
        assert!(
            provider.get_chain_id().await.is_err(),
            "{rpc_url} still answers after Ctrl-C"
        );
    }

    // A second run keeps the merchant, the key and the chains' state (no second mint).
    let (again, _) = start_dev(data_dir.path(), &[]).await;
    assert_eq!(again.summary.merchant_id, summary.merchant_id);
    assert_eq!(again.summary.api_key, summary.api_key);
    assert_eq!(
        std::fs::read_to_string(data_dir.path().join("master.key")).unwrap(),
        master_key,
        "the master key is reused"
    );
    assert_eq!(again.summary.webhook_secret, summary.webhook_secret);
    let chain = &again.summary.chains[0];
    let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
    let token = IToken::new(chain.tokens[0].address.parse().unwrap(), &provider);
    let payer: Address = chain.payers[0].address.parse().unwrap();
    assert_eq!(
        token.balanceOf(payer).call().await.unwrap(),
        U256::from(9_998_500_000u64)
    );
    assert_eq!(
        token.balanceOf(payee).call().await.unwrap(),
        U256::from(10_001_500_000u64)
    );
    assert!(provider.get_block_number().await.unwrap() >= receipt.block_number.unwrap());
    again.interrupt().await;

    // --fresh starts over.
    let (fresh, _) = start_dev(data_dir.path(), &["--fresh"]).await;
    assert_ne!(fresh.summary.merchant_id, summary.merchant_id);
    fresh.interrupt().await;
}

#[tokio::test]
async fn the_demo_paywall_and_the_pelago_seed_example_work_against_coffer_dev() {
    use alloy::signers::SignerSync;
    let data_dir = tempfile::tempdir().unwrap();
    let (dev, banner) = start_dev(data_dir.path(), &[]).await;
    let summary = dev.summary.clone();
    assert!(banner.contains(&summary.paywall.url), "{}", banner);
    let hits = || async {
        let count: serde_json::Value = reqwest::get(&summary.paywall.upstream_hits_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count["hits"].as_u64().unwrap()
    };

    // The demo paywall: 402 until paid, then the upstream's answer, once.
    let unpaid = reqwest::get(&summary.paywall.url).await.unwrap();
    assert_eq!(unpaid.status().as_u16(), 402);
    assert!(unpaid.headers().contains_key("payment-required"));
    assert_eq!(hits().await, 0);
    let payer = &summary.chains[0].payers[2];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let input = serde_json::json!({"version": 2, "privateKey": payer.private_key, "url": summary.paywall.url});
    let output = Command::new("node")
        .arg(root.join("interop/x402_fetch.mjs"))
        .arg(input.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let paid: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(paid["status"], 200, "{paid}");
    assert_eq!(paid["paymentResponse"]["success"], true);
    assert_eq!(hits().await, 1);

    // Pelago's published curl example, with real values: a USDT transfer on bsc-mainnet (the
    // local chain 56), proven by its tx hash and the sender's signature.
    let bsc = &summary.chains[1];
    let payer = &bsc.payers[2];
    let signer: alloy::signers::local::PrivateKeySigner = payer.private_key.parse().unwrap();
    let paying = ProviderBuilder::new()
        .wallet(signer.clone())
        .connect_http(bsc.rpc_url.parse().unwrap());
    let usdt: Address = bsc.tokens[0].address.parse().unwrap();
    let pay_to: Address = summary.paywall.pay_to.parse().unwrap();
    let receipt = transfer(&paying, usdt, pay_to, U256::from(2_600_000u64)).await;
    let tx_hash = format!("{:#x}", receipt.transaction_hash);
    let message = coffer_gateway::pelago::proof_message("", &tx_hash);
    let signature = signer.sign_message_sync(message.as_bytes()).unwrap();
    let x_payment = coffer_x402::headers::encode(
        &serde_json::json!({"x402Version": 1, "scheme": "exact", "network": "bsc-mainnet",
            "payload": {"amount": "2600000", "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "txHash": tx_hash}}),
    );
    let mut answer = serde_json::Value::Null;
    for _ in 0..30 {
        let output = Command::new("curl")
            .args(["-s", "--location", "--request", "POST"])
            .arg(format!(
                "{}/openapi/crypto/x402/order",
                summary.api_base_url
            ))
            .args(["--header", &format!("X-PAYMENT: {x_payment}")])
            .args([
                "--header",
                &format!("Merchant-App-Key: {}", summary.api_key),
            ])
            .args(["--header", "Content-Type: application/json"])
            .args([
                "--data-raw",
                "{\n    \"description\": \"Payment for premium subscription\"\n}",
            ])
            .output()
            .await
            .unwrap();
        answer = serde_json::from_slice(&output.stdout).unwrap();
        if answer["code"] != "TX_NOT_CONFIRMED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(answer["status"], "confirmed", "{answer}");
    assert_eq!(answer["message"], "Payment successful");
    let order_id = answer["orderId"].as_str().unwrap();
    let status: serde_json::Value = json_answer(
        reqwest::Client::new()
            .get(format!(
                "{}/openapi/crypto/x402/order/{order_id}",
                summary.api_base_url
            ))
            .header("Merchant-App-Key", &summary.api_key),
    )
    .await;
    assert_eq!(status["txHash"], tx_hash.as_str());
    assert_eq!(status["payStatus"], "paid");
    dev.interrupt().await;
}
