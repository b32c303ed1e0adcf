//! Every vendor document's example, as `examples/seeds/` sends it — verbatim but for the
//! placeholders — against one `coffer dev`, on the chain the document names: each answer checked
//! the way the vendor documents it, and where money moves, the balances on chain. The demo
//! paywall, paid by the official x402 client, is tried on the same `coffer dev`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use alloy::providers::ProviderBuilder;
use coffer::dev::Summary;
use coffer_evm::contracts::IERC20;
use kit::dev::Dev;
use serde_json::Value;
use tokio::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `examples/seeds/<script>` against the `coffer dev` whose summary is at `summary`;
/// the answers it printed, one `{"step", "status", "body"}` per line.
async fn run_seed(script: &str, summary: &Path) -> Vec<Value> {
    let path = root().join("examples/seeds").join(script);
    let mut command = if script.ends_with(".mjs") {
        let mut node = Command::new("node");
        node.arg(&path);
        node
    } else {
        Command::new(&path)
    };
    let output = command
        .env("COFFER_DEV_SUMMARY", summary)
        .output()
        .await
        .unwrap_or_else(|error| panic!("{script} runs: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("{script}: not JSON: {line}"))
        })
        .collect()
}

/// The `symbol` balance of `holder` on the summary's chain `name`, in base units.
async fn balance(summary: &Summary, name: &str, symbol: &str, holder: &str) -> U256 {
    let chain = summary.chains.iter().find(|c| c.name == name).unwrap();
    let token = chain.tokens.iter().find(|t| t.symbol == symbol).unwrap();
    let provider = ProviderBuilder::new().connect_http(chain.rpc_url.parse().unwrap());
    let holder: Address = holder.parse().unwrap();
    IERC20::new(token.address.parse().unwrap(), &provider)
        .balanceOf(holder)
        .call()
        .await
        .unwrap()
}

fn step<'a>(answers: &'a [Value], name: &str) -> &'a Value {
    answers
        .iter()
        .find(|answer| answer["step"] == name)
        .unwrap_or_else(|| panic!("no {name:?} among {answers:?}"))
}

#[tokio::test]
async fn every_seed_example_works_verbatim_against_coffer_dev_on_its_own_chain() {
    let data_dir = tempfile::tempdir().unwrap();
    let (dev, _) = Dev::start(data_dir.path(), &[]).await;
    let summary = dev.summary.clone();
    let summary_path = data_dir.path().join("out/summary.json");
    let funded = U256::from(10_000_000_000u64);

    // Each script pays from payer 0 on its own chain, so they run side by side.
    let (gatepay, cryptopay, pelago, okx) = tokio::join!(
        run_seed("gatepay.sh", &summary_path),
        run_seed("cryptopay.mjs", &summary_path),
        run_seed("pelago.sh", &summary_path),
        run_seed("okx.sh", &summary_path),
    );

    // GatePay: SUCCESS in GatePay's envelope, an order for 1 USDT on Polygon, paid there.
    let created = step(&gatepay, "place checkout order");
    assert_eq!(created["status"], 200, "{created}");
    let body = &created["body"];
    assert_eq!(
        (&body["status"], &body["code"], &body["errorMessage"]),
        (&"SUCCESS".into(), &"000000".into(), &"".into()),
        "{body}"
    );
    let data = &body["data"];
    assert!(
        data["prepayId"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
    assert_eq!(
        [
            &data["orderAmount"],
            &data["currency"],
            &data["payAmount"],
            &data["terminalType"]
        ],
        ["1", "USDT", "1", "APP"]
    );
    assert_eq!(data["goodsName"], "Sipariş Ödemesi - 177");
    assert_eq!(
        (&data["chain"]["chain_type"], &data["chain"]["fullCurrType"]),
        (&"MATIC".into(), &"USDT_MATIC".into())
    );
    let deposit = data["chain"]["address"].as_str().unwrap();
    assert_eq!(
        balance(&summary, "polygon", "USDT", deposit).await,
        U256::from(1_000_000u64)
    );
    let queried = step(&gatepay, "query order");
    assert_eq!(queried["body"]["data"]["status"], "PAID", "{queried}");

    // CryptoPay: the example's answer, then the order confirmed with what was paid on "base".
    let created = &step(&cryptopay, "create payment order")["body"];
    assert_eq!(created["success"], true, "{created}");
    assert_eq!(
        [
            &created["data"]["amount"],
            &created["data"]["currency"],
            &created["data"]["blockchain"],
            &created["data"]["status"]
        ],
        ["100.00", "USDC", "base", "pending"]
    );
    let confirmed = step(&cryptopay, "get payment order");
    assert_eq!(confirmed["status"], 200);
    let order = &confirmed["body"]["data"];
    assert_eq!(
        [&order["status"], &order["amount_paid"]],
        ["confirmed", "100.00"],
        "{order}"
    );
    assert_eq!(order["transaction"]["status"], "confirmed");
    let receiving = created["data"]["receiving_address"].as_str().unwrap();
    assert_eq!(
        balance(&summary, "base-sepolia", "USDC", receiving).await,
        U256::from(100_000_000u64)
    );

    // Pelago: 200 with the documented body, the order paid by the transaction on BSC.
    let confirmed = step(&pelago, "create or confirm order");
    assert_eq!(confirmed["status"], 200, "{confirmed}");
    assert_eq!(
        (&confirmed["body"]["status"], &confirmed["body"]["message"]),
        (&"confirmed".into(), &"Payment successful".into())
    );
    assert!(
        confirmed["body"]["orderId"]
            .as_str()
            .unwrap()
            .starts_with("CO")
    );
    let status = &step(&pelago, "query order status")["body"];
    assert_eq!(status["payStatus"], "paid", "{status}");
    assert_eq!(status["txHash"].as_str().unwrap().len(), 66);
    assert_eq!(
        balance(&summary, "bsc", "USDT", &summary.pay_to).await,
        U256::from(2_600_000u64)
    );

    // OKX: as printed (maxAmountRequired "0" beside a 1 USD₮0 authorization) a clear refusal
    // that moves nothing; with the amount the authorization carries, settled on X Layer.
    let refused = &step(&okx, "settle as printed")["body"];
    assert_eq!(refused["code"], "0", "{refused}");
    assert_eq!(
        (
            &refused["data"][0]["success"],
            &refused["data"][0]["errorReason"]
        ),
        (
            &false.into(),
            &"invalid_exact_evm_payload_authorization_value".into()
        ),
        "{refused}"
    );
    let settled = &step(&okx, "settle")["body"];
    let data = &settled["data"][0];
    assert_eq!(
        (
            &settled["code"],
            &data["success"],
            &data["chainIndex"],
            &data["chainName"]
        ),
        (&"0".into(), &true.into(), &"196".into(), &"X Layer".into()),
        "{settled}"
    );
    assert_eq!(data["txHash"].as_str().unwrap().len(), 66);
    let payer = &summary
        .chains
        .iter()
        .find(|c| c.name == "x-layer")
        .unwrap()
        .payers[0]
        .address;
    assert_eq!(
        data["payer"].as_str().unwrap().to_lowercase(),
        payer.to_lowercase()
    );
    assert_eq!(
        balance(&summary, "x-layer", "USDT", &summary.pay_to).await,
        U256::from(1_000_000u64)
    );
    assert_eq!(
        balance(&summary, "x-layer", "USDT", payer).await,
        funded - U256::from(1_000_000u64)
    );

    the_demo_paywall_answers_402_until_paid(&summary).await;
    dev.interrupt().await;
}

/// The demo paywall: 402 until paid by the official x402 client, then the upstream's answer,
/// once.
async fn the_demo_paywall_answers_402_until_paid(summary: &Summary) {
    let paywall = summary.paywall.clone().expect("a demo paywall");
    let hits = || async {
        let count: Value = reqwest::get(&paywall.upstream_hits_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count["hits"].as_u64().unwrap()
    };
    let unpaid = reqwest::get(&paywall.url).await.unwrap();
    assert_eq!(unpaid.status().as_u16(), 402);
    assert!(unpaid.headers().contains_key("payment-required"));
    assert_eq!(hits().await, 0);
    let payer = &summary.chains[0].payers[2];
    let input =
        serde_json::json!({"version": 2, "privateKey": payer.private_key, "url": paywall.url});
    let output = Command::new("node")
        .arg(root().join("interop/x402_fetch.mjs"))
        .arg(input.to_string())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let paid: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(paid["status"], 200, "{paid}");
    assert_eq!(paid["paymentResponse"]["success"], true);
    assert_eq!(hits().await, 1);
}
