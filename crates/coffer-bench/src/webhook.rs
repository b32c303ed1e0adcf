//! `coffer-bench webhook-latency`: from the block that completes an order's confirmations to
//! its `payment_order.confirmed` webhook arriving.
//!
//! The workers run as in `coffer serve` (watcher, expirer, dispatcher; the dispatcher is woken
//! when the watcher commits events), with the watcher polling every `--watcher-poll-ms`. A
//! local endpoint records when each webhook arrives. For each order: create it, pay it in
//! full (the payment's block is its first confirmation), wait for `payment_order.processing`,
//! then mine the second block and time until `payment_order.confirmed` arrives.
//!
//! The latency is split at the moment the watcher step that confirmed the order started (the
//! order's `confirmed_at`): before it the block waits for the watcher's next poll; after it
//! come the step itself, the dispatcher and the HTTP request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::http::StatusCode;
use coffer_gateway::orders::OrderCommand;
use coffer_gateway::workers::{self, Intervals};
use coffer_store::Store;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::setup::{self, CHAIN_ID, Chain, DatabaseArgs, ONE_USDC};
use crate::stats::{Summary, ms, print_table};

/// Options of `coffer-bench webhook-latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders to pay and time.
    #[arg(long, default_value_t = 20)]
    orders: u32,
    /// Database.
    #[command(flatten)]
    database: DatabaseArgs,
    /// The watcher's poll interval when idle, in milliseconds (`coffer serve` uses 500).
    #[arg(long, default_value_t = 50)]
    watcher_poll_ms: u64,
}

/// A webhook as the endpoint received it.
#[derive(Debug)]
struct Received {
    event_type: String,
    order_id: String,
    at: Instant,
    at_ms: i64,
}

/// Starts the webhook endpoint; returns its URL.
async fn start_sink(events: mpsc::UnboundedSender<Received>) -> Result<String> {
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let events = events.clone();
            async move {
                let at = Instant::now();
                let at_ms = chrono::Utc::now().timestamp_millis();
                let Ok(event) = serde_json::from_str::<Value>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
                let _ = events.send(Received {
                    event_type: text(&event["type"]),
                    order_id: text(&event["data"]["order_id"]),
                    at,
                    at_ms,
                });
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// The webhooks received so far and those still to come.
struct Inbox {
    events: mpsc::UnboundedReceiver<Received>,
    early: Vec<Received>,
}

impl Inbox {
    /// Waits up to 10 s for `event_type` about `order_id`.
    async fn wait_for(&mut self, event_type: &str, order_id: &str) -> Result<Received> {
        let matches =
            |event: &Received| event.event_type == event_type && event.order_id == order_id;
        if let Some(position) = self.early.iter().position(matches) {
            return Ok(self.early.remove(position));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("no {event_type} webhook for {order_id} within 10 s"))?
                .context("the webhook endpoint stopped")?;
            if matches(&event) {
                return Ok(event);
            }
            self.early.push(event);
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: Args) -> Result<()> {
    if args.orders == 0 || args.watcher_poll_ms == 0 {
        bail!("--orders and --watcher-poll-ms must be at least 1");
    }
    let database = args.database.clone();
    setup::with_database(&database, |store| measure(args, store)).await
}

async fn measure(args: Args, store: Arc<dyn Store>) -> Result<()> {
    let backend = args.database.backend;
    eprintln!(
        "webhook-latency: {}, watcher polling every {} ms",
        backend.name(),
        args.watcher_poll_ms
    );
    let mut chain = Chain::start().await?;
    let state = setup::app_state(store.clone(), chain.url())?;
    let (sender, events) = mpsc::unbounded_channel();
    let sink_url = start_sink(sender).await?;
    let mut inbox = Inbox {
        events,
        early: Vec::new(),
    };
    let merchant = setup::merchant(&state, Some(&sink_url)).await?;

    let poll = Duration::from_millis(args.watcher_poll_ms);
    let intervals = Intervals {
        watcher: poll,
        expirer: Duration::from_secs(1),
        dispatcher: Duration::from_secs(1),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let handles = workers::spawn_all(&state.gateway, intervals, &stopping);
    let result = async {
        // Payments count only once the watcher has recorded where it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.chain_cursor(CHAIN_ID).await?.is_none() {
            if Instant::now() > deadline {
                bail!("the watcher did not start within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut latencies = Vec::new();
        let mut pickups = Vec::new();
        let mut rest = Vec::new();
        for index in 0..args.orders {
            let command = OrderCommand {
                amount: Some("1.00".to_owned()),
                currency: "USDC".to_owned(),
                blockchain: "base-sepolia".to_owned(),
                order_info: "{}".to_owned(),
                nonce: i64::from(index),
                ..OrderCommand::default()
            };
            let order = state
                .gateway
                .orders
                .create(&merchant, &command, None)
                .await?
                .order;
            chain
                .transfer(order.receiving_address.parse()?, ONE_USDC)
                .await?;
            inbox
                .wait_for("payment_order.processing", &order.order_id)
                .await?;
            // Mine at different points of the watcher's poll cycle.
            let phase = (u64::from(index) * 17) % args.watcher_poll_ms;
            tokio::time::sleep(Duration::from_millis(phase)).await;
            chain.mine(1).await?;
            let mined = Instant::now();
            let mined_ms = chrono::Utc::now().timestamp_millis();
            let received = inbox
                .wait_for("payment_order.confirmed", &order.order_id)
                .await?;
            latencies.push(received.at.duration_since(mined));
            let confirmed_at_ms = store
                .order(&order.order_id)
                .await?
                .confirmed_at_ms
                .context("a confirmed order without confirmed_at")?;
            // Millisecond wall-clock differences, small enough for f64.
            #[allow(clippy::cast_precision_loss)]
            {
                pickups.push((confirmed_at_ms - mined_ms) as f64);
                rest.push((received.at_ms - confirmed_at_ms) as f64);
            }
        }
        Ok::<_, anyhow::Error>((latencies, pickups, rest))
    }
    .await;
    let _ = stop.send(true);
    for handle in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    drop(chain);
    let (latencies, pickups, rest) = result?;

    let total = Summary::of(&latencies);
    let pickup = Summary::of_millis(pickups);
    let rest = Summary::of_millis(rest);
    println!();
    print_table(&[
        vec![
            "backend".into(),
            "watcher poll (ms)".into(),
            "orders".into(),
            "median (ms)".into(),
            "p90 (ms)".into(),
            "p99 (ms)".into(),
            "max (ms)".into(),
            "mean (ms)".into(),
            "waiting for poll, median (ms)".into(),
            "step + dispatch + HTTP, median (ms)".into(),
        ],
        vec![
            backend.name().into(),
            args.watcher_poll_ms.to_string(),
            total.count.to_string(),
            ms(total.median),
            ms(total.p90),
            ms(total.p99),
            ms(total.max),
            ms(total.mean),
            ms(pickup.median),
            ms(rest.median),
        ],
    ]);
    println!(
        "\nFrom anvil_mine returning for the block that completes {} confirmations to the \
         payment_order.confirmed webhook arriving at a local endpoint.",
        setup::CONFIRMATIONS
    );
    println!(
        "SUMMARY webhook backend={} poll_ms={} orders={} median_ms={:.2} p90_ms={:.2} \
         p99_ms={:.2} max_ms={:.2} mean_ms={:.2} wait_median_ms={:.2} after_median_ms={:.2}",
        backend.name(),
        args.watcher_poll_ms,
        total.count,
        total.median,
        total.p90,
        total.p99,
        total.max,
        total.mean,
        pickup.median,
        rest.median
    );
    Ok(())
}
