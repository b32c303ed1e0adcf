//! `coffer dev pay` and `coffer dev pay-x402`: pay the local Coffer from the terminal, with a
//! funded dev account from the running `coffer dev`'s summary — no wallet, no Foundry.
//!
//! `pay <order id>` reads the order's public status (`/pay/{order_id}/status`: chain, deposit
//! address, token, what is still due) and sends that amount (or `--amount`) of the token from
//! payer N on the order's chain, then waits for the receipt. `pay-x402 <url>` requests a
//! paywalled URL, reads the 402's requirements, signs the EIP-3009 authorization an official
//! x402 client would (`coffer_x402::client`) for the first requirement on a local chain, and
//! requests the URL again with it.

use std::path::PathBuf;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use coffer_core::Amount;
use coffer_evm::contracts::IERC20;
use coffer_x402::client::Offer;

use crate::dev::summary::{ChainSummary, Summary};
use crate::failure::Failure;

/// Where a payment command finds the running `coffer dev`.
#[derive(Debug, Clone, Args)]
pub struct SummaryArg {
    /// The summary `coffer dev` wrote.
    #[arg(
        long,
        env = "COFFER_DEV_SUMMARY",
        default_value = ".coffer-dev/summary.json",
        value_name = "PATH"
    )]
    pub summary: PathBuf,
    /// Which funded payer of the summary pays (0–3).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub payer: usize,
}

/// Options of `coffer dev pay`.
#[derive(Debug, Clone, Args)]
pub struct PayArgs {
    /// The order to pay (`ORD-…`, as in `payment_url` or GatePay's `location`).
    pub order_id: String,
    /// How much to send, in token units (`1.5`); default: what is still due.
    #[arg(long, value_name = "AMOUNT")]
    pub amount: Option<String>,
    /// Wait until the order is confirmed (up to two minutes), showing its confirmations.
    #[arg(long)]
    pub confirmed: bool,
    /// The running coffer dev and the paying account.
    #[command(flatten)]
    pub from: SummaryArg,
}

/// Options of `coffer dev pay-x402`.
#[derive(Debug, Clone, Args)]
pub struct PayX402Args {
    /// The paywalled URL (e.g. the summary's `paywall.url`).
    pub url: String,
    /// The running coffer dev and the paying account.
    #[command(flatten)]
    pub from: SummaryArg,
}

fn read_summary(path: &std::path::Path) -> Result<Summary, Failure> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Failure::new(format!(
            "cannot read {} ({error}): is coffer dev running? Start it, or pass --summary",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|error| {
        Failure::new(format!(
            "{}: not a coffer dev summary: {error}",
            path.display()
        ))
    })
}

fn payer(chain: &ChainSummary, index: usize) -> Result<PrivateKeySigner, Failure> {
    let account = chain.payers.get(index).ok_or_else(|| {
        Failure::new(format!(
            "--payer: {index} is not a funded payer; choose 0 to {}",
            chain.payers.len().saturating_sub(1)
        ))
    })?;
    account
        .private_key
        .parse()
        .map_err(|_| Failure::new("the summary's payer key does not parse"))
}

async fn get_json(url: &str) -> Result<(u16, serde_json::Value), Failure> {
    let response = reqwest::get(url)
        .await
        .map_err(|error| Failure::new(format!("{url}: {error}")))?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or_default();
    Ok((status, body))
}

/// Pays an order from a dev account.
///
/// # Errors
/// [`Failure`] naming what is missing: the summary, the order, its chain, a bad amount, or a
/// transfer that failed.
pub async fn pay(args: PayArgs) -> Result<(), Failure> {
    let summary = read_summary(&args.from.summary)?;
    let status_url = format!("{}/pay/{}/status", summary.api_base_url, args.order_id);
    let (status, order) = get_json(&status_url).await?;
    if status != 200 {
        return Err(Failure::new(format!(
            "order {}: {}",
            args.order_id,
            order["error"]["message"].as_str().unwrap_or("not found")
        )));
    }
    let chain_id = order["chain_id"].as_u64().unwrap_or_default();
    let chain = summary
        .chains
        .iter()
        .find(|chain| chain.chain_id == chain_id)
        .ok_or_else(|| {
            Failure::new(format!(
                "order {}: its chain {chain_id} is not a chain of this coffer dev",
                args.order_id
            ))
        })?;
    let decimals = u8::try_from(order["decimals"].as_u64().unwrap_or(18)).unwrap_or(18);
    let currency = order["currency"].as_str().unwrap_or("?").to_owned();
    let text = args
        .amount
        .clone()
        .unwrap_or_else(|| order["amount_due"].as_str().unwrap_or("0").to_owned());
    let amount = Amount::parse_decimal(&text, decimals)
        .map_err(|error| Failure::new(format!("--amount: {text:?}: {error}")))?;
    if amount.is_zero() {
        return Err(Failure::new(format!(
            "order {} asks for nothing now (it is {}); pass --amount to send anyway",
            args.order_id,
            order["status"].as_str().unwrap_or("?")
        )));
    }
    let to: Address = order["receiving_address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Failure::new("the order's status has no deposit address"))?;
    let signer = payer(chain, args.from.payer)?;
    let from = signer.address();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer))
        .connect_http(
            chain
                .rpc_url
                .parse()
                .map_err(|_| Failure::new("bad RPC URL in the summary"))?,
        );
    let value = amount.base_units();
    let pending = match order["token_address"].as_str() {
        Some(token) => {
            let token: Address = token
                .parse()
                .map_err(|_| Failure::new("bad token address"))?;
            IERC20::new(token, &provider)
                .transfer(to, value)
                .send()
                .await
                .map_err(|error| Failure::new(format!("the transfer was not sent: {error}")))?
        }
        None => provider
            .send_transaction(TransactionRequest::default().to(to).value(value))
            .await
            .map_err(|error| Failure::new(format!("the transfer was not sent: {error}")))?,
    };
    let receipt = pending
        .get_receipt()
        .await
        .map_err(|error| Failure::new(format!("no receipt: {error}")))?;
    if !receipt.status() {
        return Err(Failure::new(format!(
            "the transfer {} reverted",
            receipt.transaction_hash
        )));
    }
    println!(
        "sent {} {currency} on {} from {from} to {to}\ntransaction {} in block {}",
        amount.to_decimal_string(decimals),
        chain.name,
        receipt.transaction_hash,
        receipt.block_number.unwrap_or_default(),
    );
    // Wait until Coffer has seen it, so that what is due is current for the next command.
    let paid_before = order["amount_paid"].clone();
    for _ in 0..80 {
        let (_, now) = get_json(&status_url).await?;
        if now["amount_paid"] != paid_before {
            println!(
                "Coffer saw it: {} paid of {} {currency}, order {} ({})",
                now["amount_paid"].as_str().unwrap_or("?"),
                now["amount"].as_str().unwrap_or("?"),
                now["status"].as_str().unwrap_or("?"),
                now["stage"].as_str().unwrap_or("?"),
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if args.confirmed {
        wait_until_confirmed(&status_url).await?;
    }
    println!("watch it: {}/pay/{}", summary.api_base_url, args.order_id);
    Ok(())
}

/// Polls the order's status until it is confirmed, printing each change; fails after two
/// minutes, or when the order ends otherwise.
async fn wait_until_confirmed(status_url: &str) -> Result<(), Failure> {
    let mut last = String::new();
    for _ in 0..480 {
        let (_, now) = get_json(status_url).await?;
        let status = now["status"].as_str().unwrap_or("?");
        let line = format!(
            "order {status}: {} of {} confirmations, {} paid of {}",
            now["confirmations"],
            now["required_confirmations"],
            now["amount_paid"].as_str().unwrap_or("?"),
            now["amount"].as_str().unwrap_or("?"),
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        match status {
            "confirmed" => return Ok(()),
            "expired" | "failed" => {
                return Err(Failure::new(format!("the order ended {status}")));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
    Err(Failure::new(
        "the order was not confirmed within two minutes",
    ))
}

/// Pays a paywalled URL as an official x402 client would.
///
/// # Errors
/// [`Failure`] when the URL does not ask for an x402 payment Coffer dev's chains can make, or
/// the paid request fails.
pub async fn pay_x402(args: PayX402Args) -> Result<(), Failure> {
    let summary = read_summary(&args.from.summary)?;
    let client = reqwest::Client::new();
    let first = client
        .get(&args.url)
        .send()
        .await
        .map_err(|error| Failure::new(format!("{}: {error}", args.url)))?;
    if first.status().as_u16() != 402 {
        return Err(Failure::new(format!(
            "{} answered {} without payment: nothing to pay",
            args.url,
            first.status()
        )));
    }
    let required = first
        .headers()
        .get("payment-required")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = first.bytes().await.unwrap_or_default();
    let offer = Offer::from_answer(required.as_deref(), &body).map_err(Failure::new)?;
    let (terms, chain) = offer
        .exact_terms()
        .into_iter()
        .find_map(|terms| {
            let chain = summary
                .chains
                .iter()
                .find(|chain| chain.caip2 == terms.network || chain.name == terms.network)?;
            Some((terms, chain))
        })
        .ok_or_else(|| {
            Failure::new("the 402 offers no `exact` payment on a chain of this coffer dev")
        })?;
    let signer = payer(chain, args.from.payer)?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let nonce = B256::from(rand::random::<[u8; 32]>());
    let (name, value) = offer
        .pay(&terms, chain.chain_id, &signer, now, nonce)
        .map_err(Failure::new)?;
    let paid = client
        .get(&args.url)
        .header(name, value)
        .send()
        .await
        .map_err(|error| Failure::new(format!("{}: {error}", args.url)))?;
    let status = paid.status();
    let receipt = paid
        .headers()
        .get("payment-response")
        .or_else(|| paid.headers().get("x-payment-response"))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| coffer_x402::headers::decode::<serde_json::Value>(value).ok());
    let text = paid.text().await.unwrap_or_default();
    println!(
        "paid {} base units to {} on {} from {}: {status}",
        terms.amount,
        terms.pay_to,
        chain.name,
        signer.address()
    );
    if let Some(receipt) = &receipt {
        println!("settlement: {receipt}");
    }
    println!("{text}");
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure::new(format!("the paid request answered {status}")))
    }
}
