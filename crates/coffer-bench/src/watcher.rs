//! `coffer-bench watcher`: the chain watcher's time per block with N open orders.
//!
//! N orders are written straight into the store (each with its own deposit address), then a
//! new watcher starts, as after a restart. Every block carries a few USDC transfers to watched
//! addresses; the benchmark mines it and times one [`Watcher::step`], which must report exactly
//! that block and those payments. The first step loads the whole watched-address set and is
//! reported on its own; warm-up steps follow, then the timed steady-state steps.
//!
//! The transfers go to the same number of orders (spread over the whole set) whatever N is,
//! so the work per block is the same and only the number of open orders changes. They are
//! underpayments: the orders stay open and watched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256, keccak256};
use anyhow::{Context, Result, bail};
use coffer_core::Amount;
use coffer_gateway::events::order_event;
use coffer_gateway::orders::{DEFAULT_EXPIRY_MS, MONITORING_WINDOW_MS};
use coffer_gateway::workers::watcher::{StepReport, Watcher};
use coffer_store::{MerchantRow, NewOrder, Store};

use crate::setup::{self, Backend, CHAIN_ID, Chain, DatabaseArgs, ONE_USDC, USDC};
use crate::stats::{Summary, ms, print_table};

/// Options of `coffer-bench watcher`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Open orders to watch.
    #[arg(long)]
    orders: u32,
    /// Database.
    #[command(flatten)]
    database: DatabaseArgs,
    /// Blocks to time.
    #[arg(long, default_value_t = 100)]
    blocks: usize,
    /// Blocks stepped before timing starts (not counted).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// USDC transfers to watched addresses in each block.
    #[arg(long, default_value_t = 3)]
    transfers_per_block: usize,
    /// How many orders, spread over the whole set, receive the transfers.
    #[arg(long, default_value_t = 10)]
    paid_orders: u32,
    /// Concurrent inserts while creating the orders (default: 4 on SQLite, 16 on PostgreSQL).
    #[arg(long)]
    insert_concurrency: Option<u32>,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> Result<()> {
    if args.orders == 0 || args.blocks == 0 || args.transfers_per_block == 0 {
        bail!("--orders, --blocks and --transfers-per-block must be at least 1");
    }
    let database = args.database.clone();
    setup::with_database(&database, |store| measure(args, store)).await
}

/// The deposit address of the `index`th benchmark order: distinct for every index.
fn deposit_address(index: u32) -> Address {
    let digest = keccak256(format!("coffer-bench deposit {index}"));
    Address::from_slice(&digest[12..])
}

fn new_order(merchant: &MerchantRow, slug: &str, index: u32, now_ms: i64) -> NewOrder {
    let order_id = format!("ORD-B{index:011}");
    let expires_at_ms = now_ms + DEFAULT_EXPIRY_MS;
    NewOrder {
        external_reference: None,
        event: order_event(
            merchant,
            &order_id,
            None,
            "payment_order.created",
            serde_json::Value::Null,
            now_ms,
            false,
        ),
        order_id,
        merchant_id: merchant.id.clone(),
        chain_id: CHAIN_ID,
        blockchain: slug.to_owned(),
        currency: "USDC".to_owned(),
        asset_address: Some(format!("{USDC:#x}")),
        decimals: 6,
        amount: Amount::from_base_units(U256::from(1_000 * ONE_USDC)),
        underpayment_tolerance: Amount::ZERO,
        receiving_address: deposit_address(index).to_checksum(None),
        derivation_index: index,
        order_info: "{}".to_owned(),
        nonce: i64::from(index),
        webhook_url: None,
        redirect_url: None,
        idempotency_key: None,
        request_hash: None,
        created_at_ms: now_ms,
        expires_at_ms,
        monitor_until_ms: expires_at_ms + MONITORING_WINDOW_MS,
    }
}

/// Inserts `count` open orders with `concurrency` writers.
async fn insert_orders(
    store: &Arc<dyn Store>,
    merchant: &MerchantRow,
    slug: &str,
    count: u32,
    concurrency: u32,
) -> Result<()> {
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..concurrency.max(1) {
        let store = store.clone();
        let merchant = merchant.clone();
        let slug = slug.to_owned();
        writers.spawn(async move {
            let mut index = writer;
            while index < count {
                let now_ms = chrono::Utc::now().timestamp_millis();
                store
                    .insert_order(new_order(&merchant, &slug, index, now_ms))
                    .await
                    .with_context(|| format!("inserting order {index}"))?;
                if writer == 0 && index > 0 && index % 20_000 < concurrency {
                    eprintln!("  … {index} orders");
                }
                index += concurrency;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = writers.join_next().await {
        result.context("an insert task failed")??;
    }
    Ok(())
}

/// Sends the block's transfers, mines it, and times the watcher's step over it.
async fn one_block(
    chain: &mut Chain,
    watcher: &mut Watcher,
    paid: &[Address],
    transfers: usize,
    next: &mut usize,
) -> Result<Duration> {
    for _ in 0..transfers {
        let to = paid[*next % paid.len()];
        *next += 1;
        chain.send_transfer(to, ONE_USDC).await?;
    }
    chain.mine(1).await?;
    let started = Instant::now();
    let report = watcher.step().await?;
    let elapsed = started.elapsed();
    match report {
        StepReport::Progressed {
            from, to, payments, ..
        } if from == to && payments == transfers => Ok(elapsed),
        other => {
            bail!("unexpected watcher step {other:?}: expected one block with {transfers} payments")
        }
    }
}

async fn measure(args: Args, store: Arc<dyn Store>) -> Result<()> {
    let backend = args.database.backend;
    eprintln!(
        "watcher: {} with {} open orders",
        backend.name(),
        args.orders
    );
    let mut chain = Chain::start().await?;
    let state = setup::app_state(store.clone(), chain.url())?;
    let merchant = setup::merchant(&state, None).await?;
    let slug = state
        .gateway
        .chains
        .by_chain_id(CHAIN_ID)
        .map(|chain| chain.names.cryptopay_slug.clone())
        .context("base-sepolia is not in the registry")?;

    // On a new database the first step records the head as the cursor.
    let mut watcher =
        Watcher::new(&state.gateway, CHAIN_ID).context("no watcher for base-sepolia")?;
    watcher.step().await?;

    let concurrency = args.insert_concurrency.unwrap_or(match backend {
        Backend::Sqlite => 4,
        Backend::Postgres => 16,
    });
    let started = Instant::now();
    insert_orders(&store, &merchant, &slug, args.orders, concurrency).await?;
    let insert_time = started.elapsed();
    eprintln!(
        "  inserted {} orders in {:.1} s ({:.0}/s)",
        args.orders,
        insert_time.as_secs_f64(),
        f64::from(args.orders) / insert_time.as_secs_f64()
    );

    let paid_count = args.paid_orders.clamp(1, args.orders);
    let paid: Vec<Address> = (0..paid_count)
        .map(|i| {
            let index = u64::from(i) * u64::from(args.orders) / u64::from(paid_count);
            deposit_address(u32::try_from(index).unwrap_or(u32::MAX))
        })
        .collect();
    chain.set_automine(false).await?;

    // A new watcher, as after a restart: its first step loads every open order.
    let mut watcher =
        Watcher::new(&state.gateway, CHAIN_ID).context("no watcher for base-sepolia")?;
    let mut next = 0;
    let transfers = args.transfers_per_block;
    let first = one_block(&mut chain, &mut watcher, &paid, transfers, &mut next).await?;
    let watched = watcher.watched_addresses();
    if watched != usize::try_from(args.orders)? {
        bail!(
            "the watcher watches {watched} addresses, expected {}",
            args.orders
        );
    }
    for _ in 0..args.warmup {
        one_block(&mut chain, &mut watcher, &paid, transfers, &mut next).await?;
    }
    let mut samples = Vec::with_capacity(args.blocks);
    for _ in 0..args.blocks {
        samples.push(one_block(&mut chain, &mut watcher, &paid, transfers, &mut next).await?);
    }
    let steady = Summary::of(&samples);
    let first_ms = first.as_secs_f64() * 1000.0;

    println!();
    print_table(&[
        vec![
            "backend".into(),
            "open orders".into(),
            "first step incl. load (ms)".into(),
            "blocks".into(),
            "median (ms)".into(),
            "p90 (ms)".into(),
            "p99 (ms)".into(),
            "max (ms)".into(),
            "mean (ms)".into(),
        ],
        vec![
            backend.name().into(),
            args.orders.to_string(),
            ms(first_ms),
            steady.count.to_string(),
            ms(steady.median),
            ms(steady.p90),
            ms(steady.p99),
            ms(steady.max),
            ms(steady.mean),
        ],
    ]);
    println!(
        "\n{transfers} USDC transfers per block to {paid_count} orders; times are one \
         Watcher::step (RPC to anvil + database) per block."
    );
    println!(
        "SUMMARY watcher backend={} orders={} load_ms={:.2} blocks={} median_ms={:.2} \
         p90_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={:.2} insert_s={:.1}",
        backend.name(),
        args.orders,
        first_ms,
        steady.count,
        steady.median,
        steady.p90,
        steady.p99,
        steady.max,
        steady.mean,
        insert_time.as_secs_f64()
    );
    Ok(())
}
