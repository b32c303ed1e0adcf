//! `coffer dev` as a new user meets it: it comes up with four chains, its summary lets a script
//! pay, the banner's request works, Ctrl-C stops everything, and a second run resumes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};
use kit::chain::transfer;
use kit::dev::Dev;
use kit::server::{json_answer, order_id_and_deposit};
use tokio::process::Command;

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

/// The banner's lines for another shell (`export …`) and its curl line, as printed.
fn banner_shell(banner: &str) -> (Vec<String>, String) {
    let exports = banner
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("export "))
        .map(str::to_owned)
        .collect();
    let curl = banner
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("curl "))
        .expect("a curl line")
        .to_owned();
    (exports, curl)
}

/// Runs `script` in bash from an empty folder; its stdout, once it succeeded.
async fn in_another_shell(script: &str) -> String {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .args(["-c", script])
        .current_dir(elsewhere.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(env!("CARGO_BIN_EXE_coffer"))
                    .parent()
                    .unwrap()
                    .display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("COFFER__DATABASE__URL")
        .env_remove("COFFER_MASTER_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
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
async fn coffer_dev_runs_four_funded_chains_a_demo_merchant_and_resumes_its_state() {
    let data_dir = tempfile::tempdir().unwrap();
    // As an older `coffer dev` left it: readable by everyone.
    std::fs::set_permissions(data_dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let (dev, banner) = Dev::start(data_dir.path(), &[]).await;
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

    // The banner's lines work as printed in another shell, from another folder: the curl,
    // and the coffer CLI on coffer dev's database and master key.
    let (exports, curl) = banner_shell(&banner);
    assert_eq!(exports.len(), 8, "{banner}");
    assert_eq!(summary.shell, exports);
    let body: serde_json::Value =
        serde_json::from_str(&in_another_shell(&format!("{}\n{curl}", exports.join("\n"))).await)
            .unwrap();
    assert_eq!(body["data"]["id"], summary.merchant_id.as_str());
    let listed: serde_json::Value = serde_json::from_str(
        &in_another_shell(&format!(
            "{}\ncoffer merchant list --json",
            exports.join("\n")
        ))
        .await,
    )
    .unwrap();
    assert_eq!(listed[0]["id"], summary.merchant_id.as_str(), "{listed}");
    let okx: serde_json::Value = serde_json::from_str(
        &in_another_shell(&format!(
            "{}\ncoffer okx-key create --merchant {} --json",
            exports.join("\n"),
            summary.merchant_id
        ))
        .await,
    )
    .unwrap();
    assert!(
        okx["access_key"].is_string(),
        "the master key was found: {okx}"
    );
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
    assert_eq!(
        names,
        [
            ("base-sepolia", 84_532),
            ("bsc", 56),
            ("polygon", 137),
            ("x-layer", 196)
        ]
    );
    let mut rpc_urls = Vec::new();
    let mut domains_checked = 0;
    for chain in &summary.chains {
        let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
        assert_eq!(provider.get_chain_id().await.unwrap(), chain.chain_id);
        assert!(!chain.tokens.is_empty(), "{} has no token", chain.name);
        assert!(chain.payers.len() >= 2);
        for token in &chain.tokens {
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
            for payer in &chain.payers {
                let signer: alloy::signers::local::PrivateKeySigner =
                    payer.private_key.parse().unwrap();
                assert_eq!(signer.address().to_checksum(None), payer.address);
                let balance = contract.balanceOf(signer.address()).call().await.unwrap();
                assert_eq!(
                    balance,
                    U256::from(10_000u64) * U256::from(10u64).pow(U256::from(token.decimals)),
                    "{} {}",
                    chain.name,
                    token.symbol
                );
            }
        }
        for payer in &chain.payers {
            assert!(
                provider
                    .get_balance(payer.address.parse().unwrap())
                    .await
                    .unwrap()
                    > U256::ZERO,
                "payer has gas"
            );
        }
        rpc_urls.push(chain.rpc_url.clone());
    }
    assert_eq!(
        domains_checked, 4,
        "the EIP-3009 tokens: Base Sepolia USDC, Polygon USDC, X Layer USD₮0 and USDG"
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
    let token = |chain: usize, symbol: &str| {
        let token = summary.chains[chain]
            .tokens
            .iter()
            .find(|token| token.symbol == symbol)
            .unwrap_or_else(|| panic!("{symbol} on chain {chain}"));
        (
            token.address.clone(),
            token.decimals,
            token.eip712_name.clone(),
        )
    };
    assert_eq!(
        token(1, "USDT"),
        (
            "0x55d398326f99059fF775485246999027B3197955".to_owned(),
            18,
            None
        )
    );
    assert_eq!(
        token(2, "USDT"),
        (
            "0xc2132D05D31c914a87C6611C10748AEb04B58e8F".to_owned(),
            6,
            None
        )
    );
    assert_eq!(
        token(3, "USDT"),
        (
            "0x779Ded0c9e1022225f8E0630b35a9b54bE713736".to_owned(),
            6,
            Some("USD₮0".to_owned())
        )
    );
    summary.signer.parse::<Address>().expect("signer address");

    // The demo merchant's payout wallet on every chain, funded, as the API shows it.
    let chains_with_wallets: Vec<_> = summary
        .payout_wallets
        .iter()
        .map(|w| w.chain.as_str())
        .collect();
    assert_eq!(
        chains_with_wallets,
        ["bsc", "polygon", "x-layer", "base-sepolia"],
        "by chain id"
    );
    let wallets: serde_json::Value = json_answer(
        reqwest::Client::new()
            .get(format!("{}/api/payout-wallets/", summary.api_base_url))
            .bearer_auth(&summary.api_key),
    )
    .await;
    for (wallet, listed) in wallets["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&summary.payout_wallets)
    {
        assert_eq!(wallet["address"], listed.address.as_str());
        let balances = wallet["balances"]
            .as_array()
            .unwrap_or_else(|| panic!("{wallet}"));
        assert_eq!(balances[0]["amount"], "100.00", "{wallet}");
        assert!(
            balances[1..].iter().all(|b| b["amount"] == "10000.00"),
            "{wallet}"
        );
    }

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
    // The inbox keeps the raw body and the signature as they arrived: the example verifier
    // accepts them with the summary's secret.
    let mut verifier = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/verify_webhook.py"
        ))
        .arg(&summary.webhook_secret)
        .arg(hook["headers"]["coffer-signature"].as_str().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = verifier.stdin.take().unwrap();
        stdin
            .write_all(hook["raw_body"].as_str().unwrap().as_bytes())
            .await
            .unwrap();
    }
    let verdict = verifier.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&verdict.stdout).trim(), "valid");
    assert_eq!(hook["headers"]["coffer-event"], "payment_order.confirmed");
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
    for rpc_url in &rpc_urls {
        let provider = ProviderBuilder::new().connect_http(rpc_url.parse().unwrap());
        assert!(
            provider.get_chain_id().await.is_err(),
            "{rpc_url} still answers after Ctrl-C"
        );
    }

    // A second run keeps the merchant, the key and the chains' state (no second mint).
    let (again, _) = Dev::start(data_dir.path(), &[]).await;
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

    // --fresh starts over; --chains runs a subset, by any of the chains' names, and the demo
    // paywall moves to the first of them with an EIP-3009 token.
    let (fresh, banner) =
        Dev::start(data_dir.path(), &["--fresh", "--chains", "xlayer,matic"]).await;
    assert_ne!(fresh.summary.merchant_id, summary.merchant_id);
    let names: Vec<_> = fresh
        .summary
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["polygon", "x-layer"]);
    let paywall = fresh.summary.paywall.clone().expect("a paywall");
    assert_eq!(
        (paywall.network.as_str(), paywall.price.as_str()),
        ("polygon", "0.01 USDC")
    );
    let runs = |name: &str| {
        banner
            .lines()
            .any(|line| line.trim_start().starts_with(&format!("{name} ")))
    };
    assert!(runs("x-layer") && !runs("bsc"), "{banner}");
    fresh.interrupt().await;
}

#[tokio::test]
async fn coffer_dev_refuses_a_chain_it_does_not_run() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["dev", "--chains", "bsc,solana", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--chains: \"solana\" is not a chain coffer dev runs; choose from base-sepolia, bsc, polygon, x-layer"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(data_dir.path()).unwrap().next().is_none(),
        "nothing was created"
    );
}
