//! `verify`: the x402 facilitator's offline verifications per second on one thread — decoding
//! the `/verify` JSON body, the EIP-712 hash, recovering the signer and the rules, exactly what
//! [`coffer_x402::facilitator::Facilitator::check`] does before the chain is asked. Also times
//! signer recovery alone with both backends: libsecp256k1 (what Coffer uses) and k256 (alloy's
//! default).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolStruct;
use anyhow::{Context, Result, ensure};
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::contracts::TransferWithAuthorization;
use coffer_evm::testnet::usdc_domain;
use coffer_x402::facilitator::{Facilitator, recovery};
use coffer_x402::wire::PaymentRequest;
use serde_json::json;

use crate::setup::{CHAIN_ID, USDC};

/// Options of `coffer-bench verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verifications timed (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// Distinct signed payments cycled through.
    #[arg(long, default_value_t = 1_000)]
    pub payments: usize,
}

const PAY_TO: Address = alloy::primitives::address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");

/// A signed x402 v2 `/verify` body and what recovery needs.
struct Payment {
    body: Vec<u8>,
    digest: B256,
    signature: Signature,
}

fn payment(now: u64) -> Result<Payment> {
    let payer = PrivateKeySigner::random();
    let message = TransferWithAuthorization {
        from: payer.address(),
        to: PAY_TO,
        value: U256::from(10_000u64),
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + 600),
        nonce: B256::from(rand::random::<[u8; 32]>()),
    };
    let domain = usdc_domain(CHAIN_ID, USDC);
    let digest = message.eip712_signing_hash(&domain);
    let signature = payer.sign_hash_sync(&digest)?;
    let requirements = json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000",
        "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 600,
        "extra": {"name": "USDC", "version": "2"}});
    let body = json!({"x402Version": 2, "paymentRequirements": requirements,
        "paymentPayload": {"x402Version": 2, "resource": {"url": "https://example.com/paid"}, "accepted": requirements,
        "payload": {"signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "authorization": {
            "from": payer.address().to_checksum(None), "to": PAY_TO.to_checksum(None), "value": "10000",
            "validAfter": (now - 600).to_string(), "validBefore": (now + 600).to_string(),
            "nonce": format!("{:#x}", message.nonce)}}}});
    Ok(Payment {
        body: serde_json::to_vec(&body)?,
        digest,
        signature,
    })
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn time(count: usize, mut step: impl FnMut(usize) -> Result<()>) -> Result<Duration> {
    for i in 0..count / 10 {
        step(i)?;
    }
    let start = Instant::now();
    for i in 0..count {
        step(i)?;
    }
    Ok(start.elapsed())
}

/// Runs the benchmark and prints the results.
///
/// # Errors
/// When a payment does not verify (the benchmark would measure a failure path).
pub async fn run(args: Args) -> Result<()> {
    ensure!(
        args.payments > 0 && args.count > 0,
        "--count and --payments must be positive"
    );
    let now = u64::try_from(chrono::Utc::now().timestamp())?;
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    // The offline checks only need the chain configured; its RPC is never asked.
    overrides.insert(
        "base-sepolia".to_owned(),
        ChainOverride {
            rpc_urls: vec!["http://127.0.0.1:9".to_owned()],
            ..Default::default()
        },
    );
    registry.apply(&overrides)?;
    let facilitator = Facilitator::new(Arc::new(registry), Arc::new(Vec::new()), Address::ZERO);
    let payments = (0..args.payments)
        .map(|_| payment(now))
        .collect::<Result<Vec<_>>>()?;
    let pick = |i: usize| &payments[i % payments.len()];

    let offline = time(args.count, |i| {
        let request = PaymentRequest::parse(black_box(&pick(i).body))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let checked = facilitator
            .check(&request, now)
            .map_err(|rejection| anyhow::anyhow!("{}", rejection.message))?;
        ensure!(
            checked.signed_by_eoa,
            "the signature did not recover to the payer"
        );
        black_box(checked);
        Ok(())
    })?;
    let libsecp = time(args.count, |i| {
        let payment = pick(i);
        black_box(recovery::recover_signer(
            &payment.digest,
            &payment.signature,
        ))
        .context("unrecoverable")?;
        Ok(())
    })?;
    let k256 = time(args.count, |i| {
        let payment = pick(i);
        black_box(
            payment
                .signature
                .recover_address_from_prehash(&payment.digest),
        )?;
        Ok(())
    })?;
    println!(
        "x402 offline verification, one thread, {} runs over {} signed payments",
        args.count, args.payments
    );
    println!(
        "  decode + EIP-712 + recover + rules : {:>9.0} verifies/s ({:.1} µs each)",
        per_second(args.count, offline),
        offline.as_secs_f64() * 1e6 / args.count as f64
    );
    println!(
        "  recover alone, libsecp256k1        : {:>9.0} /s",
        per_second(args.count, libsecp)
    );
    println!(
        "  recover alone, k256 (alloy default): {:>9.0} /s",
        per_second(args.count, k256)
    );
    Ok(())
}
