//! `coffer-bench settle`: x402 settlement throughput and gas per settled payment, with and
//! without Multicall3 batching.
//!
//! Each run gets a fresh database and a throwaway anvil chain (automine: every transaction is
//! mined as it arrives) with Multicall3 installed. `--payments` payers, each a new account
//! holding exactly its payment, sign one EIP-3009 authorization each; all of them are handed to
//! the settlement engine at once (the same path `/x402/settle` takes: checks, a simulation per
//! authorization, the journal, signing, broadcast and the receipt), and the clock stops when the
//! last one has its receipt. Gas is the sum of `gasUsed` over every settlement transaction,
//! divided by the payments settled.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolStruct;
use anyhow::{Result, bail};
use coffer_evm::contracts::TestUsdc;
use coffer_evm::contracts::TransferWithAuthorization;
use coffer_evm::testnet::{self, usdc_domain};
use coffer_x402::settlement::SettleOptions;
use coffer_x402::wire::PaymentRequest;
use serde_json::json;

use crate::setup::{self, CHAIN_ID, Chain, DatabaseArgs, USDC};
use crate::stats::print_table;

/// Options of `coffer-bench settle`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Payments to settle in each mode.
    #[arg(long, default_value_t = 2000)]
    payments: usize,
    /// The batched run's extra wait for company, in milliseconds (`x402.batch_window_ms`).
    #[arg(long, default_value_t = 0)]
    batch_window_ms: u64,
    /// Database.
    #[command(flatten)]
    database: DatabaseArgs,
}

/// One mode's result.
struct Measured {
    per_second: f64,
    transactions: usize,
    gas_per_payment: f64,
}

/// Runs both modes and prints the table.
pub async fn run(args: Args) -> Result<()> {
    let mut rows = vec![vec![
        "mode".to_owned(),
        "payments".to_owned(),
        "transactions".to_owned(),
        "settlements/s".to_owned(),
        "gas per payment".to_owned(),
    ]];
    let mut results = Vec::new();
    for (mode, max_batch) in [
        ("batched (Multicall3)", SettleOptions::default().max_batch),
        ("one transaction each", 1),
    ] {
        let measured = measure(&args, max_batch).await?;
        rows.push(vec![
            mode.to_owned(),
            args.payments.to_string(),
            measured.transactions.to_string(),
            format!("{:.0}", measured.per_second),
            format!("{:.0}", measured.gas_per_payment),
        ]);
        results.push(measured);
    }
    print_table(&rows);
    if let [batched, single] = results.as_slice() {
        println!(
            "gas saved by batching: {:.1}%",
            100.0 * (1.0 - batched.gas_per_payment / single.gas_per_payment)
        );
    }
    Ok(())
}

async fn measure(args: &Args, max_batch: usize) -> Result<Measured> {
    let batch_window = Duration::from_millis(args.batch_window_ms);
    let chain = Chain::start().await?;
    testnet::install_multicall3(chain.provider()).await?;
    let payees = PrivateKeySigner::random().address();
    eprintln!("funding {} payers…", args.payments);
    let payers: Vec<PrivateKeySigner> = (0..args.payments)
        .map(|_| PrivateKeySigner::random())
        .collect();
    // Mints are sent back to back (anvil mines each as it arrives); only the last is awaited.
    let token = TestUsdc::new(USDC, chain.provider());
    let mut last = None;
    for payer in &payers {
        last = Some(
            token
                .mint(payer.address(), U256::from(10_000u64))
                .send()
                .await?,
        );
    }
    if let Some(last) = last {
        last.get_receipt().await?;
    }
    let now = u64::try_from(chrono::Utc::now().timestamp())?;
    let requests: Vec<PaymentRequest> = payers
        .iter()
        .enumerate()
        .map(|(i, payer)| signed_request(payer, payees, i, now))
        .collect::<Result<_>>()?;
    let signer = testnet::dev_account(9)?;
    let url = chain.url().to_owned();
    let payments = args.payments;
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = outcome.clone();
    setup::with_database(&args.database, |store| async move {
        let state = setup::app_state(store, &url)?.with_settlement(
            vec![signer.clone()],
            SettleOptions {
                receipt_timeout: Duration::from_secs(60),
                batch_window,
                max_batch,
                ..SettleOptions::default()
            },
        );
        eprintln!(
            "settling {payments} payments ({})…",
            if max_batch <= 1 {
                "one transaction each".to_owned()
            } else {
                format!("up to {max_batch} per transaction")
            }
        );
        let started = Instant::now();
        let calls: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let settler = state.gateway.settler.clone();
                tokio::spawn(async move { settler.settle(&request, now).await })
            })
            .collect();
        let mut hashes = std::collections::BTreeSet::new();
        for call in calls {
            let reply = call.await?;
            if !reply.success {
                bail!("a settlement failed: {:?}", reply.error_reason);
            }
            hashes.insert(reply.transaction);
        }
        let elapsed = started.elapsed();
        *record.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some((elapsed, hashes));
        Ok(())
    })
    .await?;
    let finished = outcome
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .take();
    let Some((elapsed, hashes)) = finished else {
        bail!("the run did not finish");
    };
    let mut gas = 0u128;
    for hash in &hashes {
        let receipt = chain
            .provider()
            .get_transaction_receipt(hash.parse()?)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no receipt for {hash}"))?;
        gas += u128::from(receipt.gas_used);
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(Measured {
        per_second: args.payments as f64 / elapsed.as_secs_f64(),
        transactions: hashes.len(),
        gas_per_payment: gas as f64 / args.payments as f64,
    })
}

/// A v2 settle request for one authorization of `payer`, paying 0.01 USDC to `pay_to`.
fn signed_request(
    payer: &PrivateKeySigner,
    pay_to: Address,
    index: usize,
    now: u64,
) -> Result<PaymentRequest> {
    let value = 10_000u64;
    let message = TransferWithAuthorization {
        from: payer.address(),
        to: pay_to,
        value: U256::from(value),
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + 3_600),
        nonce: B256::from(keccak256(index.to_be_bytes())),
    };
    let domain = usdc_domain(CHAIN_ID, USDC);
    let signature = payer.sign_hash_sync(&message.eip712_signing_hash(&domain))?;
    let requirements = json!({
        "scheme": "exact", "network": "eip155:84532", "amount": value.to_string(),
        "asset": USDC.to_checksum(None), "payTo": pay_to.to_checksum(None), "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2"}
    });
    let body = json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "resource": {"url": "http://127.0.0.1/paid"}, "accepted": requirements,
            "payload": {
                "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())),
                "authorization": {
                    "from": payer.address().to_checksum(None), "to": pay_to.to_checksum(None),
                    "value": value.to_string(), "validAfter": (now - 600).to_string(),
                    "validBefore": (now + 3_600).to_string(), "nonce": format!("{:#x}", message.nonce),
                }}},
        "paymentRequirements": requirements,
    });
    PaymentRequest::parse(body.to_string().as_bytes())
        .map_err(|error| anyhow::anyhow!("the request does not parse: {error:?}"))
}
