//! `coffer-bench paywall`: the x402 paywall's cost.
//!
//! In one process: a throwaway anvil chain with USDC, a tiny upstream, and Coffer with one
//! paywall route in front of it (SQLite). Measures
//!
//! 1. the latency of `GET` on the upstream directly and through the paywall with a fresh
//!    EIP-3009 payment each time (verify → forward → settle with the receipt), sequentially,
//!    so the difference is the paywall's overhead per paid request (dominated by the chain:
//!    one simulation and one transaction with its receipt);
//! 2. unpaid requests answered with 402 per second, with `--connections` concurrent clients
//!    for `--seconds`.
//!
//! Prints a table and a `SUMMARY key=value …` line for `scripts/bench.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, address};
use alloy::signers::SignerSync;
use alloy::sol_types::SolStruct;
use anyhow::{Result, bail};
use coffer_evm::contracts::TransferWithAuthorization;
use coffer_evm::testnet::{self, usdc_domain};
use coffer_server::paywall::{Paywall, PaywallRouteConfig};
use coffer_store::testing::{Backend, TestDatabase};
use coffer_x402::headers;
use coffer_x402::settlement::SettleOptions;
use serde_json::json;

use crate::setup::{self, CHAIN_ID, USDC};
use crate::stats::{Summary, ms, print_table};

const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");

/// Options of `coffer-bench paywall`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Paid requests (and as many direct ones).
    #[arg(long, default_value_t = 200)]
    pub paid: usize,
    /// Seconds of the unpaid-402 throughput run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients in the throughput run.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

fn payment_header(payer: &alloy::signers::local::PrivateKeySigner) -> Result<String> {
    let nonce = B256::from(rand::random::<[u8; 32]>());
    let (after, before) = (now() - 600, now() + 300);
    let message = TransferWithAuthorization {
        from: payer.address(),
        to: PAY_TO,
        value: U256::from(10_000u64),
        validAfter: U256::from(after),
        validBefore: U256::from(before),
        nonce,
    };
    let domain = usdc_domain(CHAIN_ID, USDC);
    let signature = payer.sign_hash_sync(&message.eip712_signing_hash(&domain))?;
    let payment = json!({
        "x402Version": 2,
        "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
            "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 300,
            "extra": {"name": "USDC", "version": "2"}},
        "payload": {"signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())),
            "authorization": {"from": payer.address().to_checksum(None), "to": PAY_TO.to_checksum(None),
                "value": "10000", "validAfter": after.to_string(), "validBefore": before.to_string(),
                "nonce": format!("{nonce:#x}")}},
    });
    Ok(headers::encode(&payment))
}

/// Runs the measurement.
///
/// # Errors
/// When the chain, the database or a request fails.
pub async fn run(args: Args) -> Result<()> {
    let chain = setup::Chain::start().await?;
    let db = TestDatabase::new(Backend::Sqlite).await?;
    let hits = Arc::new(AtomicU64::new(0));
    let upstream = {
        let hits = hits.clone();
        let router = axum::Router::new().route(
            "/premium/{*rest}",
            axum::routing::get(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::Relaxed);
                    axum::Json(json!({"quote": "paid content"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let signer = testnet::dev_account(9)?;
    let mut state = setup::app_state(db.store.clone(), chain.url())?.with_settlement(
        vec![signer],
        SettleOptions {
            receipt_timeout: Duration::from_secs(10),
            ..SettleOptions::default()
        },
    );
    state.paywall = Arc::new(Paywall::new(
        &[PaywallRouteConfig {
            path: "/premium/*".to_owned(),
            method: Some("GET".to_owned()),
            price: "0.01".to_owned(),
            networks: vec!["base-sepolia".to_owned()],
            assets: vec!["USDC".to_owned()],
            pay_to: PAY_TO.to_checksum(None),
            upstream: upstream.clone(),
            description: "bench".to_owned(),
            mime_type: "application/json".to_owned(),
            max_timeout_seconds: 300,
        }],
        &state.gateway.chains,
        &base,
    )?);
    tokio::spawn(coffer_server::serve(
        listener,
        coffer_server::router(state),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let payer = testnet::dev_account(1)?;

    let mut direct = Vec::with_capacity(args.paid);
    let mut paid = Vec::with_capacity(args.paid);
    for _ in 0..args.paid {
        let started = Instant::now();
        let response = client
            .get(format!("{upstream}/premium/quote"))
            .send()
            .await?;
        response.bytes().await?;
        direct.push(started.elapsed());

        let header = payment_header(&payer)?;
        let started = Instant::now();
        let response = client
            .get(format!("{base}/premium/quote"))
            .header(headers::PAYMENT_SIGNATURE, header)
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        paid.push(started.elapsed());
        if status.as_u16() != 200 {
            bail!("a paid request answered {status}");
        }
    }
    let forwarded = hits.load(Ordering::Relaxed);
    let expected = u64::try_from(2 * args.paid)?;
    if forwarded != expected {
        bail!("the upstream saw {forwarded} requests, expected {expected}");
    }

    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let client = client.clone();
        let url = format!("{base}/premium/quote");
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(response) if response.status().as_u16() == 402 => {
                        let _ = response.bytes().await;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    #[allow(clippy::cast_precision_loss)]
    let per_second = answered.load(Ordering::Relaxed) as f64 / args.seconds as f64;

    let direct = Summary::of(&direct);
    let paid = Summary::of(&paid);
    print_table(&[
        vec!["".into(), "p50".into(), "p99".into(), "mean".into()],
        vec![
            "upstream directly".into(),
            ms(direct.median),
            ms(direct.p99),
            ms(direct.mean),
        ],
        vec![
            "through the paywall, paid".into(),
            ms(paid.median),
            ms(paid.p99),
            ms(paid.mean),
        ],
    ]);
    println!(
        "unpaid 402 answers: {per_second:.0}/s ({} clients, {} s, in-process client)",
        args.connections, args.seconds
    );
    println!(
        "SUMMARY direct_p50_ms={:.2} direct_p99_ms={:.2} paid_p50_ms={:.2} paid_p99_ms={:.2} overhead_p50_ms={:.2} overhead_p99_ms={:.2} unpaid_rps={per_second:.0}",
        direct.median,
        direct.p99,
        paid.median,
        paid.p99,
        paid.median - direct.median,
        paid.p99 - direct.p99
    );
    Ok(())
}
