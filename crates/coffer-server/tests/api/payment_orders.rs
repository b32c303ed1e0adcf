//! Payment orders end to end against a real anvil chain, on SQLite and PostgreSQL: the HTTP
//! API creates orders, real ERC-20 transfers pay them, the watcher, expirer and dispatcher are
//! driven step by step, and a local endpoint receives the signed webhooks.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::ReorgOptions;
use alloy::sol_types::SolCall;
use coffer_evm::contracts::IERC20;
use coffer_gateway::events::verify_signature;
use coffer_gateway::workers::expirer::Expirer;
use coffer_gateway::workers::watcher::{StepReport, Watcher};
use coffer_server::AppState;
use coffer_store::testing::Backend;
use coffer_store::{ChainBlock, ChainStep};
use reqwest::StatusCode;
use serde_json::{Value, json};

use coffer_gateway::clock::Clock;

use crate::kit::{self, Answer, CHAIN_ID, Inbox, Options, USDC, new_merchant, rpc, usdc};
use coffer_server::testing::Fault;

/// The payment-order environment: the kit's, with two confirmations, a merchant whose webhooks
/// go to a local endpoint, a deposit wallet and a watcher at the current block.
struct Env {
    kit: kit::Env,
    watcher: Watcher,
    sink: Inbox,
}

impl Deref for Env {
    type Target = kit::Env;

    fn deref(&self) -> &kit::Env {
        &self.kit
    }
}

impl Env {
    async fn new(backend: Backend) -> Env {
        Env::with(backend, |options| options).await
    }

    /// The environment with Coffer reaching the chain through a [`coffer_server::testing::FaultyRpc`].
    async fn faulty(backend: Backend) -> Env {
        Env::with(backend, Options::faulty_rpc).await
    }

    /// The environment without a chain (its RPC refuses connections), for tests that pay
    /// nothing: a test that does touch the chain fails.
    async fn chain_free(backend: Backend) -> Env {
        Env::with(backend, Options::without_chain).await
    }

    async fn with(backend: Backend, more: impl FnOnce(Options) -> Options) -> Env {
        let (sink, sink_url) = Inbox::start().await;
        // The webhook endpoints are local: loopback is allowed, as under `coffer dev`.
        let options = Options::on(backend)
            .confirmations(2)
            .local_endpoints()
            .merchant_webhook(&sink_url);
        let kit = kit::Env::with(more(options)).await;
        kit.deposit_wallet(&kit.merchant.id).await;
        let watcher = match kit.anvil {
            Some(_) => kit.watcher().await,
            None => Watcher::new(&kit.state.gateway, kit::CHAIN_ID).unwrap(),
        };
        Env { kit, watcher, sink }
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn create_order(&self, amount: &str, nonce: i64, extra: Value) -> Value {
        let mut body = json!({
            "amount": amount,
            "currency": "USDC",
            "blockchain": "base-sepolia",
            "order_info": "{\"product\": \"Premium Plan\", \"quantity\": 1}",
            "nonce": nonce,
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, body) = self.post("/api/payment-orders/", body, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"].clone()
    }

    /// The order, once its status and amount paid are checked (the order is in the message).
    async fn order_in(&self, order_id: &str, status: &str, amount_paid: &str) -> Value {
        let order = self.order(order_id).await;
        assert_eq!(
            (order["status"].as_str(), order["amount_paid"].as_str()),
            (Some(status), Some(amount_paid)),
            "{order}"
        );
        order
    }

    async fn order(&self, order_id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/payment-orders/{order_id}/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Signs a USDC transfer from the payer; returns the raw transaction.
    async fn signed_transfer(&self, to: &str, units: u64) -> Bytes {
        let to: Address = to.parse().unwrap();
        let wallet = EthereumWallet::from(self.payer.clone());
        let nonce = self
            .chain
            .get_transaction_count(self.payer.address())
            .await
            .unwrap();
        let request = TransactionRequest::default()
            .with_from(self.payer.address())
            .with_to(USDC)
            .with_input(
                IERC20::transferCall {
                    to,
                    value: U256::from(units),
                }
                .abi_encode(),
            )
            .with_nonce(nonce)
            .with_chain_id(CHAIN_ID)
            .with_gas_limit(100_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000);
        let envelope = request.build(&wallet).await.unwrap();
        envelope.encoded_2718().into()
    }

    /// Pays `units` of USDC to `to` and waits for the receipt.
    async fn pay(&self, to: &str, units: u64) -> Bytes {
        let raw = self.signed_transfer(to, units).await;
        let receipt = self
            .chain
            .send_raw_transaction(&raw)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        raw
    }

    /// Runs the watcher until it has caught up with the head.
    async fn watch(&mut self) -> Vec<StepReport> {
        let mut reports = Vec::new();
        loop {
            let report = self.watcher.step().await.expect("watcher step");
            if report == StepReport::Idle {
                return reports;
            }
            reports.push(report);
        }
    }
}

async fn an_exact_payment_is_confirmed_after_two_blocks_and_webhooked_with_a_valid_signature(
    backend: Backend,
) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("100.00", 1, json!({})).await;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["amount"], "100.00");
    let order_id = order["order_id"].as_str().unwrap();
    let address = order["receiving_address"].as_str().unwrap();
    let page = reqwest::get(order["payment_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(
        page.contains("100.00 USDC")
            && page.contains(address)
            && page.contains("data-stage=\"waiting\""),
        "{page}"
    );
    // Absolute, like payment_url: a client opens it as given.
    assert_eq!(
        order["qr_code_url"],
        format!("{}/qr/{order_id}", env.base).as_str()
    );
    let qr = reqwest::get(order["qr_code_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert!(qr.text().await.unwrap().contains("<svg"));

    env.pay(address, usdc(100)).await;
    env.watch().await;
    let seen = env.order_in(order_id, "processing", "100.00").await;
    assert_eq!(seen["transaction"]["confirmations"], 1);

    env.mine(1).await;
    env.watch().await;
    let confirmed = env.order(order_id).await;
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["payment_status"], Value::Null);
    assert_eq!(confirmed["transaction"]["status"], "confirmed");
    assert_eq!(confirmed["transaction"]["confirmations"], 2);
    assert!(confirmed["confirmed_at"].is_string());
    assert_eq!(confirmed["payments"].as_array().unwrap().len(), 1);
    assert_eq!(
        confirmed["payments"][0]["sender"],
        env.payer.address().to_checksum(None)
    );

    assert!(env.deliver().await >= 2);
    assert_eq!(
        env.sink.event_types(),
        [
            "payment_order.payment_detected",
            "payment_order.processing",
            "payment_order.confirmed"
        ]
    );
    for (headers, body) in env.sink.events() {
        let signature = headers.get("coffer-signature").unwrap().to_str().unwrap();
        let raw = serde_json::to_string(&body).unwrap();
        let now = chrono::Utc::now().timestamp();
        let received = env
            .sink
            .received()
            .iter()
            .find(|(_, text)| serde_json::from_str::<Value>(text).unwrap() == body)
            .unwrap()
            .1
            .clone();
        assert!(
            verify_signature(
                &env.merchant.webhook_secret,
                signature,
                received.as_bytes(),
                now,
                300
            ),
            "{raw}"
        );
        assert!(!verify_signature(
            "whsec_wrong",
            signature,
            received.as_bytes(),
            now,
            300
        ));
        assert_eq!(body["data"]["order_id"], order_id);
    }
    let last = env.sink.events().pop().unwrap().1;
    assert_eq!(last["data"]["status"], "confirmed");
    assert_eq!(
        env.deliver().await,
        0,
        "delivered events are not sent again"
    );
    // What an operator watches: the watcher against the head, and the deliveries.
    let (_, metrics) = raw_get(&env.base, "/metrics").await;
    let head = env.chain.get_block_number().await.unwrap();
    let processed = metric(&metrics, r#"coffer_watcher_block{chain="base-sepolia"}"#);
    let seen = metric(&metrics, r#"coffer_chain_head_block{chain="base-sepolia"}"#);
    assert!(processed <= seen && seen <= head, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"coffer_watcher_lag_blocks{chain="base-sepolia"}"#
        ),
        seen - processed
    );
    assert_eq!(
        metric(&metrics, r#"coffer_webhook_deliveries{status="delivered"}"#),
        3
    );
    assert_eq!(metric(&metrics, "coffer_webhook_oldest_pending_seconds"), 0);
}

/// The value of the series `name` (with its labels) in OpenMetrics `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

async fn raw_get(base: &str, path: &str) -> (StatusCode, String) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn underpayment_waits_and_a_second_payment_completes_the_order(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("50", 2, json!({})).await;
    let (order_id, address) = (
        order["order_id"].as_str().unwrap(),
        order["receiving_address"].as_str().unwrap(),
    );
    env.pay(address, usdc(20)).await;
    env.mine(3).await;
    env.watch().await;
    let partial = env.order(order_id).await;
    assert_eq!(
        (
            partial["status"].as_str(),
            partial["payment_status"].as_str()
        ),
        (Some("pending"), Some("underpaid"))
    );
    assert_eq!(partial["amount_paid"], "20.00");
    env.pay(address, usdc(30)).await;
    env.mine(1).await;
    env.watch().await;
    let done = env.order(order_id).await;
    assert_eq!(
        (done["status"].as_str(), done["payment_status"].as_str()),
        (Some("confirmed"), None)
    );
    assert_eq!(done["amount_paid"], "50.00");
    assert_eq!(done["payments"].as_array().unwrap().len(), 2);
}

/// A public endpoint fails some calls in passing (502s): every call the watcher makes fails
/// twice before it is answered, and the watcher still takes every step and confirms the order.
async fn the_watcher_rides_out_an_endpoint_that_fails_in_passing(backend: Backend) {
    let mut env = Env::faulty(backend).await;
    let rpc = env.rpc_faults.clone().unwrap();
    let order = env.create_order("5", 3, json!({})).await;
    let (order_id, address) = (
        order["order_id"].as_str().unwrap(),
        order["receiving_address"].as_str().unwrap(),
    );
    env.pay(address, usdc(5)).await;
    env.mine(2).await;
    let methods = ["eth_getBlockByNumber", "eth_getLogs"];
    for method in methods {
        rpc.fail(method, Fault::BadGateway, 2);
    }
    let reports = env.watch().await;
    assert!(!reports.is_empty(), "the watcher made progress");
    let done = env.order(order_id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(done["amount_paid"], "5.00");
    for method in methods {
        assert!(
            rpc.calls(method) >= 3,
            "{method}: the faults were met and retried"
        );
    }
    // /metrics counts the endpoint's calls, retries and errors.
    let metrics = reqwest::get(format!("{}/metrics", env.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |name: &str| {
        let series = format!(
            "{name}_total{{chain=\"base-sepolia\",endpoint=\"{}\"}} ",
            rpc.url
        );
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    assert!(
        counter("coffer_rpc_retries") >= 4.0,
        "two per planned fault"
    );
    assert!(counter("coffer_rpc_calls") >= 2.0);
    assert_eq!(
        counter("coffer_rpc_errors"),
        0.0,
        "every call was answered in the end"
    );
    assert!(counter("coffer_rpc_call_seconds") > 0.0);
}

/// An order created and paid while a watcher step waits for the chain's head (a slow
/// endpoint) is credited: the step reads the head before the orders, so the order is watched
/// when the block holding its payment is scanned. (Read the other way round, the block was
/// scanned before the order was known, and the payment was never seen.)
async fn an_order_paid_while_the_watcher_waits_for_the_head_is_credited(backend: Backend) {
    let mut env = Env::faulty(backend).await;
    let rpc = env.rpc_faults.clone().unwrap();
    env.watch().await;
    let arrived = rpc.calls("eth_getBlockByNumber");
    rpc.fail(
        "eth_getBlockByNumber",
        Fault::Stall(Duration::from_millis(800)),
        1,
    );
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
    let step = tokio::spawn(async move {
        let report = watcher.step().await;
        (watcher, report)
    });
    while rpc.calls("eth_getBlockByNumber") == arrived {
        tokio::task::yield_now().await;
    }
    let order = env.create_order("3", 15, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(3))
        .await;
    let (watcher, report) = step.await.unwrap();
    report.unwrap();
    env.watcher = watcher;
    env.mine(2).await;
    env.watch().await;
    env.order_in(order_id, "confirmed", "3.00").await;
}

/// On PostgreSQL an order's id comes from a sequence when it is inserted, so an order may
/// become visible after one with a higher id (its transaction committed later). The watcher
/// reads the ids it skipped over again for a while: such an order is watched, and its payment
/// credited. (Simulated: an id is taken from the sequence, a later order committed, and then
/// an order given the skipped id.)
#[tokio::test]
async fn an_order_whose_lower_id_commits_late_is_still_watched() {
    let mut env = Env::new(Backend::Postgres).await;
    let sql = sqlx::PgPool::connect(&env.db.url).await.unwrap();
    env.watch().await;
    let skipped: i64 =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('payment_orders', 'id'))")
            .fetch_one(&sql)
            .await
            .unwrap();
    env.create_order("1", 16, json!({})).await;
    env.watch().await;

    let late = env.create_order("2", 17, json!({})).await;
    let late_id = late["order_id"].as_str().unwrap();
    sqlx::query("UPDATE payment_orders SET id = $1 WHERE order_id = $2")
        .bind(skipped)
        .bind(late_id)
        .execute(&sql)
        .await
        .unwrap();
    env.pay(late["receiving_address"].as_str().unwrap(), usdc(2))
        .await;
    env.mine(2).await;
    env.watch().await;
    env.order_in(late_id, "confirmed", "2.00").await;
}

/// A step that fails half-way through reading 40 blocks keeps the headers it had read: the
/// next step asks only for the rest, and the payment among them is confirmed.
async fn a_failed_watcher_step_keeps_the_blocks_it_had_read(backend: Backend) {
    let mut env = Env::faulty(backend).await;
    let rpc = env.rpc_faults.clone().unwrap();
    let order = env.create_order("6", 14, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.watch().await;
    env.mine(20).await;
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(6))
        .await;
    env.mine(19).await;

    // The step reads the head, the first block and 20 more; the next read fails (a JSON-RPC
    // error is not retried).
    let before = rpc.calls("eth_getBlockByNumber");
    rpc.fail_after("eth_getBlockByNumber", 22, Fault::ErrorAnswer, 1);
    assert!(env.watcher.step().await.is_err());
    let failed_step = rpc.calls("eth_getBlockByNumber") - before;
    assert_eq!(failed_step, 23);

    let before = rpc.calls("eth_getBlockByNumber");
    let report = env.watcher.step().await.unwrap();
    let next_step = rpc.calls("eth_getBlockByNumber") - before;
    assert!(
        matches!(report, StepReport::Progressed { payments: 1, .. }),
        "{report:?}"
    );
    assert!(
        next_step <= 2 + 20,
        "the head, the first block and the 19 or 20 not read yet, not all 40 again: {next_step}"
    );
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "confirmed");
}

/// The dispatcher's schedule, on a manual clock: a failing endpoint is asked again only when
/// its backoff ends (10 s, then 20 s, …), and once 3 days have passed since the event the
/// delivery is given up. Days pass without sleeping.
async fn webhook_retries_follow_their_schedule_and_end_after_three_days(backend: Backend) {
    // A minute ahead of the wall clock, so that events written now are due at once.
    let clock = Clock::manual(coffer_gateway::clock::now_ms() + 60_000);
    let workers_clock = clock.clone();
    let mut env = Env::with(backend, move |options| {
        options.configure(move |state| state.with_clock(workers_clock))
    })
    .await;
    env.sink.answer_with(Answer::Fail);
    let order = env.create_order("1", 9, json!({})).await;
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(1))
        .await;
    env.mine(1).await;
    env.watch().await;
    let due = env.deliver().await;
    assert!(due >= 1, "the order's events went out once");
    for (wait, then) in [(9, 0), (1, due), (19, 0), (1, due)] {
        clock.advance(Duration::from_secs(wait));
        assert_eq!(env.deliver().await, then, "{wait} s later");
    }
    // Backoff doubles up to 6 hours; 3 days after the event the retries have run out.
    let mut attempts = 2;
    for _ in 0..14 {
        clock.advance(Duration::from_secs(6 * 3600));
        if env.deliver().await > 0 {
            attempts += 1;
        }
    }
    assert!(attempts > 4, "retried along the way: {attempts}");
    let (_, events) = env
        .get(&format!(
            "/api/events/?order_id={}",
            order["order_id"].as_str().unwrap()
        ))
        .await;
    let mut checked = 0;
    for event in events["data"].as_array().unwrap() {
        let (_, deliveries) = env
            .get(&format!(
                "/api/events/{}/deliveries/",
                event["id"].as_str().unwrap()
            ))
            .await;
        for delivery in deliveries["data"].as_array().unwrap() {
            assert_eq!(delivery["status"], "failed", "{delivery}");
            checked += 1;
        }
    }
    assert_eq!(checked, due, "every delivery was given up");
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        env.deliver().await,
        0,
        "a failed delivery is never due again"
    );
    assert!(env.sink.events().is_empty());
}

async fn overpayment_confirms_and_is_flagged(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("10.5", 3, json!({})).await;
    env.pay(order["receiving_address"].as_str().unwrap(), 12_000_000)
        .await;
    env.mine(2).await;
    env.watch().await;
    let done = env.order(order["order_id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["payment_status"].as_str()),
        (Some("confirmed"), Some("overpaid"))
    );
    assert_eq!(done["amount_paid"], "12.00");
}

async fn a_payment_after_expiry_is_recorded_and_flagged_paid_late(backend: Backend) {
    let clock = Clock::manual(coffer_gateway::clock::now_ms());
    let workers_clock = clock.clone();
    let mut env = Env::with(backend, move |options| {
        options.configure(move |state| state.with_clock(workers_clock))
    })
    .await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let order = env
        .create_order("5", 4, json!({ "expires_at": expires }))
        .await;
    let order_id = order["order_id"].as_str().unwrap();
    let expirer = Expirer::new(&env.state.gateway);
    assert_eq!(expirer.expire_due(clock.now_ms()).await.unwrap(), 0);
    // Past the window on the workers' clock, and on the chain's by more than its one-second
    // resolution, without waiting.
    clock.advance(Duration::from_millis(3_200));
    assert_eq!(expirer.expire_due(clock.now_ms()).await.unwrap(), 1);
    assert_eq!(env.order(order_id).await["status"], "expired");
    env.chain.anvil_increase_time(4).await.unwrap();
    env.mine(1).await;
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(5))
        .await;
    env.mine(1).await;
    env.watch().await;
    let late = env.order(order_id).await;
    assert_eq!(
        (late["status"].as_str(), late["payment_status"].as_str()),
        (Some("confirmed"), Some("paid_late"))
    );
    env.deliver().await;
    let types = env.sink.event_types();
    assert!(
        types.contains(&"payment_order.expired".to_owned()),
        "{types:?}"
    );
    assert!(
        types.contains(&"payment_order.confirmed".to_owned()),
        "{types:?}"
    );
}

async fn a_reorg_that_drops_the_payment_moves_the_order_back_until_it_is_mined_again(
    backend: Backend,
) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("7", 5, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.mine(2).await;
    env.watch().await;
    let raw = env
        .pay(order["receiving_address"].as_str().unwrap(), usdc(7))
        .await;
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "processing");

    // Replace the block holding the payment with an empty one.
    env.chain
        .anvil_reorg(ReorgOptions {
            depth: 1,
            tx_block_pairs: Vec::new(),
        })
        .await
        .unwrap();
    let reports = env.watch().await;
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, StepReport::Reorged { updated: 1, .. })),
        "{reports:?}"
    );
    let dropped = env.order_in(order_id, "pending", "0.00").await;
    assert_eq!(dropped["payments"][0]["status"], "orphaned");
    env.deliver().await;
    // Deliveries run concurrently, so they may arrive in any order.
    let types = env.sink.event_types();
    assert!(
        types.contains(&"payment_order.reorged".to_owned()),
        "{types:?}"
    );
    assert!(
        types.contains(&"payment_order.pending".to_owned()),
        "{types:?}"
    );

    // The same signed transaction is mined again: the same payment comes back, once. Its
    // receipt is asked for directly: a pending-transaction watcher may still remember the
    // orphaned block that held the same hash, and ask for a receipt the node no longer has.
    let hash = *env
        .chain
        .send_raw_transaction(&raw)
        .await
        .unwrap()
        .tx_hash();
    let mut receipt = None;
    for _ in 0..100 {
        receipt = env.chain.get_transaction_receipt(hash).await.unwrap();
        if receipt.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receipt = receipt.expect("the transaction is mined again");
    assert!(receipt.status());
    env.mine(1).await;
    let reports = env.watch().await;
    let back = env.order(order_id).await;
    assert_eq!(back["status"], "confirmed", "{reports:?} {back}");
    assert_eq!(back["amount_paid"], "7.00");
    assert_eq!(
        back["payments"].as_array().unwrap().len(),
        1,
        "one transfer is one payment: {back}"
    );
}

/// A reorg deeper than the chain's confirmations drops the payment of a confirmed order: the
/// money is not there any more, so the order goes back to pending and the merchant is told
/// (`payment_order.reorged`); when the same transaction is mined again, it is confirmed again
/// with the one payment.
async fn a_reorg_below_a_confirmed_payment_takes_the_order_back_and_tells_the_merchant(
    backend: Backend,
) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("4", 11, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.watch().await;
    let raw = env
        .pay(order["receiving_address"].as_str().unwrap(), usdc(4))
        .await;
    env.mine(2).await;
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "confirmed");

    // The payment's block and the two above it are replaced by empty blocks.
    env.chain
        .anvil_reorg(ReorgOptions {
            depth: 3,
            tx_block_pairs: Vec::new(),
        })
        .await
        .unwrap();
    env.watch().await;
    let dropped = env.order_in(order_id, "pending", "0.00").await;
    assert_eq!(dropped["payments"][0]["status"], "orphaned");
    env.deliver().await;
    let types = env.sink.event_types();
    assert!(
        types.contains(&"payment_order.reorged".to_owned()),
        "{types:?}"
    );

    let mined_again = env
        .chain
        .send_raw_transaction(&raw)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(mined_again.status());
    env.mine(2).await;
    env.watch().await;
    let back = env.order(order_id).await;
    assert_eq!(back["status"], "confirmed", "{back}");
    assert_eq!(back["amount_paid"], "4.00");
    let live: Vec<&Value> = back["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|payment| payment["status"] != "orphaned")
        .collect();
    assert_eq!(live.len(), 1, "{back}");
}

/// A double spend: the block holding a payment is replaced, and the payer's conflicting
/// transaction — the same account nonce, the money sent elsewhere — is mined instead. The
/// payment is orphaned for good: the order goes back to pending and stays there, and the
/// original transaction can never be mined again.
async fn a_double_spend_that_replaces_the_payment_leaves_the_order_unpaid(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("5", 13, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.watch().await;
    let raw = env
        .pay(order["receiving_address"].as_str().unwrap(), usdc(5))
        .await;
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "processing");

    env.chain
        .anvil_reorg(ReorgOptions {
            depth: 1,
            tx_block_pairs: Vec::new(),
        })
        .await
        .unwrap();
    let elsewhere = env.stranger.address().to_checksum(None);
    let conflicting = env.signed_transfer(&elsewhere, usdc(5)).await;
    assert_eq!(
        TxEnvelope::decode_2718(&mut conflicting.as_ref())
            .unwrap()
            .nonce(),
        TxEnvelope::decode_2718(&mut raw.as_ref()).unwrap().nonce(),
        "the same account nonce as the payment"
    );
    let replaced = env
        .chain
        .send_raw_transaction(&conflicting)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(replaced.status());
    env.mine(3).await;
    env.watch().await;

    let unpaid = env.order_in(order_id, "pending", "0.00").await;
    assert_eq!(unpaid["payments"][0]["status"], "orphaned");
    assert!(
        env.chain.send_raw_transaction(&raw).await.is_err(),
        "the payment's nonce is spent"
    );
}

/// A reorg deeper than the 256 block hashes the watcher keeps: the block of a confirmed
/// payment is replaced far below them. The watcher finds the common ancestor among the
/// blocks of recorded payments, orphans the payment, and takes the order back.
async fn a_reorg_deeper_than_the_kept_block_hashes_still_orphans_the_payments_it_drops(
    backend: Backend,
) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("2", 12, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.watch().await;
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(2))
        .await;
    env.mine(300).await;
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "confirmed");

    env.chain
        .anvil_reorg(ReorgOptions {
            depth: 302,
            tx_block_pairs: Vec::new(),
        })
        .await
        .unwrap();
    env.mine(1).await;
    env.watch().await;
    let dropped = env.order(order_id).await;
    assert_eq!(dropped["payments"][0]["status"], "orphaned", "{dropped}");
    assert_eq!(
        (dropped["status"].as_str(), dropped["amount_paid"].as_str()),
        (Some("pending"), Some("0.00")),
        "{dropped}"
    );
}

/// A range committed already is scanned again (the cursor put back before the payment's
/// block, as a crash between a commit and its acknowledgement would leave it): the payment
/// is found again and credited once, the order confirmed once.
async fn a_committed_range_scanned_again_credits_nothing_twice(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("4", 18, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.watch().await;
    let before = env.chain.get_block_number().await.unwrap();
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(4))
        .await;
    env.watch().await;
    assert_eq!(env.order(order_id).await["status"], "processing");

    let back = env
        .chain
        .get_block_by_number(before.into())
        .await
        .unwrap()
        .unwrap();
    let cursor = ChainBlock {
        number: before,
        hash: format!("{:#x}", back.header.hash),
        parent_hash: format!("{:#x}", back.header.parent_hash),
    };
    env.state
        .gateway
        .store
        .commit_chain_step(&ChainStep {
            chain_id: CHAIN_ID,
            rewind_to: Some(before),
            orphans: Vec::new(),
            blocks: vec![cursor.clone()],
            cursor,
            payments: Vec::new(),
            order_updates: Vec::new(),
            keep_blocks: 256,
            now_ms: coffer_gateway::clock::now_ms(),
        })
        .await
        .unwrap();
    let replayed = env.watch().await;
    assert!(
        replayed.iter().any(
            |report| matches!(report, StepReport::Progressed { from, .. } if *from == before + 1)
        ),
        "the range was scanned again: {replayed:?}"
    );
    env.mine(1).await;
    env.watch().await;
    let done = env.order_in(order_id, "confirmed", "4.00").await;
    assert_eq!(done["payments"].as_array().unwrap().len(), 1, "{done}");
    let (_, events) = env.get(&format!("/api/events/?order_id={order_id}")).await;
    let mut types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
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
}

/// An order created and paid before the chain's watcher ever ran (a fresh database, the
/// first process killed before its watcher's first step): the first step starts below the
/// head, and the payment is credited.
async fn a_payment_made_before_the_watchers_first_step_is_credited(backend: Backend) {
    let kit = kit::Env::with(Options::on(backend).confirmations(2).local_endpoints()).await;
    kit.deposit_wallet(&kit.merchant.id).await;
    let watcher = Watcher::new(&kit.state.gateway, CHAIN_ID).unwrap();
    let (sink, _) = Inbox::start().await;
    let mut env = Env { kit, watcher, sink };
    let order = env.create_order("2", 19, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(2))
        .await;
    env.mine(2).await;
    env.watch().await;
    env.order_in(order_id, "confirmed", "2.00").await;
}

async fn a_restarted_watcher_replays_nothing_twice(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env.create_order("3", 6, json!({})).await;
    let order_id = order["order_id"].as_str().unwrap();
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(3))
        .await;
    env.watch().await;
    // A new watcher, as after a restart, picks up from the stored cursor.
    env.watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
    env.mine(1).await;
    env.watch().await;
    let done = env.order_in(order_id, "confirmed", "3.00").await;
    assert_eq!(done["payments"].as_array().unwrap().len(), 1);
    let (_, events) = env.get(&format!("/api/events/?order_id={order_id}")).await;
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "payment_order.confirmed",
            "payment_order.processing",
            "payment_order.payment_detected",
            "payment_order.created"
        ]
    );
}

async fn a_failing_webhook_endpoint_is_retried_and_never_blocks_others(backend: Backend) {
    let mut env = Env::new(backend).await;
    let (healthy, healthy_url) = Inbox::start().await;
    env.sink.answer_with(Answer::Fail);
    let down = env.create_order("1", 7, json!({})).await;
    let up = env
        .create_order("1", 8, json!({ "webhook_url": healthy_url }))
        .await;
    env.pay(down["receiving_address"].as_str().unwrap(), usdc(1))
        .await;
    env.pay(up["receiving_address"].as_str().unwrap(), usdc(1))
        .await;
    env.mine(1).await;
    env.watch().await;
    env.deliver().await;
    assert!(
        healthy
            .event_types()
            .contains(&"payment_order.confirmed".to_owned()),
        "{:?}",
        healthy.event_types()
    );
    assert!(env.sink.events().is_empty());

    let (_, events) = env
        .get(&format!(
            "/api/events/?order_id={}",
            down["order_id"].as_str().unwrap()
        ))
        .await;
    let confirmed = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "payment_order.confirmed")
        .unwrap()
        .clone();
    let event_id = confirmed["id"].as_str().unwrap();
    let (_, deliveries) = env
        .get(&format!("/api/events/{event_id}/deliveries/"))
        .await;
    let delivery = &deliveries["data"][0];
    assert_eq!(delivery["status"], "pending");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["log"][0]["status_code"], 500);
    assert!(delivery["next_attempt_at"].is_string());
    assert_eq!(env.deliver().await, 0, "the retry waits for its backoff");

    env.sink.answer_with(Answer::Acknowledge);
    let (status, scheduled) = env
        .post(
            &format!("/api/events/{event_id}/redeliver/"),
            json!({}),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scheduled}");
    assert_eq!(env.deliver().await, 1);
    assert_eq!(env.sink.event_types(), ["payment_order.confirmed"]);
    let (_, deliveries) = env
        .get(&format!("/api/events/{event_id}/deliveries/"))
        .await;
    let statuses: Vec<&str> = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["delivered", "pending"]);
}

async fn concurrent_orders_with_one_nonce_create_exactly_one(backend: Backend) {
    let env = Arc::new(Env::chain_free(backend).await);
    let attempts = (0..12).map(|_| {
        let env = env.clone();
        tokio::spawn(async move {
            let body = json!({"amount": "1", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 42});
            env.post("/api/payment-orders/", body, &[]).await
        })
    });
    let mut created = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "DUPLICATE_NONCE"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    let (_, page) = env.get("/api/payment-orders/").await;
    assert_eq!(page["count"], 1);
}

async fn idempotency_keys_replay_the_same_order_and_refuse_a_different_body(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let body = json!({"amount": "2", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 9});
    let (first_status, first) = env
        .post(
            "/api/payment-orders/",
            body.clone(),
            &[("Idempotency-Key", "k-1")],
        )
        .await;
    let (again_status, again) = env
        .post("/api/payment-orders/", body, &[("Idempotency-Key", "k-1")])
        .await;
    assert_eq!(
        (first_status, again_status),
        (StatusCode::CREATED, StatusCode::OK)
    );
    assert_eq!(first["data"]["order_id"], again["data"]["order_id"]);
    assert_eq!(
        first["data"]["receiving_address"],
        again["data"]["receiving_address"]
    );
    let other = json!({"amount": "3", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 10});
    let (status, error) = env
        .post("/api/payment-orders/", other, &[("Idempotency-Key", "k-1")])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let (_, page) = env.get("/api/payment-orders/").await;
    assert_eq!(page["count"], 1);
}

async fn bad_requests_get_their_error_code_and_change_nothing(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let valid = json!({"amount": "1.5", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 1});
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let cases = [
        (
            with("amount", json!("1.0000001")),
            "INVALID_AMOUNT",
            "amount",
        ),
        (with("amount", json!("0")), "INVALID_AMOUNT", "amount"),
        (with("amount", json!("-5")), "INVALID_AMOUNT", "amount"),
        (with("amount", json!("abc")), "INVALID_AMOUNT", "amount"),
        (with("amount", json!(5)), "VALIDATION_ERROR", "amount"),
        (
            with("currency", json!("DOGE")),
            "UNSUPPORTED_CURRENCY",
            "currency",
        ),
        (
            with("blockchain", json!("solana")),
            "INVALID_BLOCKCHAIN",
            "blockchain",
        ),
        (
            with("blockchain", json!("ethereum")),
            "INVALID_BLOCKCHAIN",
            "blockchain",
        ),
        (
            with("order_info", json!("not json")),
            "INVALID_ORDER_INFO",
            "order_info",
        ),
        (with("nonce", json!("x")), "VALIDATION_ERROR", "nonce"),
        (
            with("webhook_url", json!("ftp://x")),
            "VALIDATION_ERROR",
            "webhook_url",
        ),
        (
            with("expires_at", json!("yesterday")),
            "VALIDATION_ERROR",
            "expires_at",
        ),
        (
            with("expires_at", json!("2001-01-01T00:00:00Z")),
            "VALIDATION_ERROR",
            "expires_at",
        ),
        (with("colour", json!("red")), "VALIDATION_ERROR", "colour"),
    ];
    for (body, code, field) in cases {
        let (status, error) = env.post("/api/payment-orders/", body.clone(), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["success"], false);
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{error}"
        );
    }
    let response = reqwest::Client::new()
        .post(format!("{}/api/payment-orders/", env.base))
        .bearer_auth(&env.api_key)
        .header("Content-Type", "application/json")
        .body("{\"amount\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "INVALID_JSON");

    // A merchant without a deposit wallet.
    let (_, key) = new_merchant(&env.state, "No Wallet", None).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/payment-orders/", env.base))
        .bearer_auth(&key)
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "WALLET_NOT_CONFIGURED");

    let (_, page) = env.get("/api/payment-orders/").await;
    assert_eq!(page["count"], 0, "nothing was created");
    let (status, missing) = env.get("/api/payment-orders/ORD-nothing/").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ORDER_NOT_FOUND"))
    );
}

/// What a newcomer gets wrong first, each answered with how to fix it.
async fn errors_say_how_to_fix_what_a_newcomer_got_wrong(backend: Backend) {
    let env = Env::chain_free(backend).await;
    let client = reqwest::Client::new();
    let message = |answer: &Value| {
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // `Authorization: Bearer $COFFER_API_KEY` with the variable unset.
    for header in ["Bearer ", "Bearer", "bearer    "] {
        let response = client
            .get(format!("{}/api/merchant", env.base))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let answer: Value = response.json().await.unwrap();
        assert!(
            message(&answer).contains("API key after \"Bearer\" is empty"),
            "{header:?}: {answer}"
        );
    }
    let response = client
        .get(format!("{}/api/merchant", env.base))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert!(
        message(&answer).contains("must be \"Bearer <api key>\""),
        "{answer}"
    );

    // The paths without their trailing slash answer the same.
    let body = json!({"amount": "2", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 7});
    let (status, created) = env.post("/api/payment-orders", body, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let order_id = created["data"]["order_id"].as_str().unwrap();
    let (status, order) = env.get(&format!("/api/payment-orders/{order_id}")).await;
    assert_eq!(
        (status, order["data"]["order_id"].as_str()),
        (StatusCode::OK, Some(order_id))
    );
    let (status, page) = env.get("/api/payment-orders").await;
    assert_eq!((status, page["count"].as_u64()), (StatusCode::OK, Some(1)));

    // A chain Coffer knows but this server does not watch: the setting that enables it.
    let body = json!({"amount": "2", "currency": "USDT", "blockchain": "polygon", "order_info": "{}", "nonce": 8});
    let (status, error) = env.post("/api/payment-orders/", body, &[]).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_BLOCKCHAIN"))
    );
    let text = message(&error);
    for part in [
        "Polygon is known to Coffer but not configured",
        "chains.polygon.rpc_urls",
        "COFFER__CHAINS__POLYGON__RPC_URLS",
        "this server accepts: base-sepolia",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }

    // The list's filter names the chains it knows.
    let (status, error) = env.get("/api/payment-orders/?blockchain=solana").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&error).contains("use one of: ethereum, base, base-sepolia, polygon"),
        "{error}"
    );

    // The numeric `id` of an answer is not how an order is looked up.
    let (status, error) = env.get("/api/payment-orders/1/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        message(&error).contains("looked up by their order_id"),
        "{error}"
    );
    let (_, error) = env.get("/api/payment-orders/ORD-nothing/").await;
    assert!(!message(&error).contains("numeric"), "{error}");
}

async fn the_list_filters_orders_and_pages_through_them(backend: Backend) {
    let mut env = Env::new(backend).await;
    for (i, amount) in ["5", "1", "3", "2", "4"].iter().enumerate() {
        env.create_order(amount, 100 + i64::try_from(i).unwrap(), json!({}))
            .await;
    }
    let paid = env.create_order("6", 200, json!({})).await;
    env.pay(paid["receiving_address"].as_str().unwrap(), usdc(6))
        .await;
    env.mine(1).await;
    env.watch().await;

    let (_, page) = env.get("/api/payment-orders/?page_size=2").await;
    assert_eq!(page["count"], 6);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["results"][0]["order_id"], paid["order_id"],
        "newest first"
    );
    assert_eq!(page["next"], "/api/payment-orders/?page=2&page_size=2");
    assert_eq!(page["previous"], Value::Null);
    let (_, last) = env.get("/api/payment-orders/?page=3&page_size=2").await;
    assert_eq!(last["next"], Value::Null);
    assert_eq!(last["previous"], "/api/payment-orders/?page=2&page_size=2");

    let (_, confirmed) = env
        .get("/api/payment-orders/?status=confirmed&blockchain=base-sepolia&currency=USDC")
        .await;
    assert_eq!(confirmed["count"], 1);
    assert_eq!(confirmed["results"][0]["order_id"], paid["order_id"]);
    let (_, by_amount) = env.get("/api/payment-orders/?ordering=amount").await;
    let amounts: Vec<&str> = by_amount["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["1.00", "2.00", "3.00", "4.00", "5.00", "6.00"]);
    for bad in [
        "?page_size=101",
        "?page=0",
        "?status=paid",
        "?ordering=nonce",
        "?blockchain=mars",
    ] {
        let (status, error) = env.get(&format!("/api/payment-orders/{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
    }
}

async fn native_coin_payments_are_detected(backend: Backend) {
    let mut env = Env::new(backend).await;
    let order = env
        .create_order("0.25", 300, json!({ "currency": "ETH" }))
        .await;
    let to: Address = order["receiving_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wallet = ProviderBuilder::new()
        .wallet(EthereumWallet::from(env.payer.clone()))
        .connect_http(env.anvil_url().parse().unwrap());
    let tx = TransactionRequest::default()
        .with_to(to)
        .with_value(U256::from(250_000_000_000_000_000u64));
    wallet
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    env.mine(1).await;
    env.watch().await;
    let done = env.order(order["order_id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["amount_paid"].as_str()),
        (Some("confirmed"), Some("0.25"))
    );
    assert_eq!(done["payments"][0]["log_index"], -1);
}

coffer_store::on_both_databases!(
    an_exact_payment_is_confirmed_after_two_blocks_and_webhooked_with_a_valid_signature,
    underpayment_waits_and_a_second_payment_completes_the_order,
    the_watcher_rides_out_an_endpoint_that_fails_in_passing,
    a_failed_watcher_step_keeps_the_blocks_it_had_read,
    an_order_paid_while_the_watcher_waits_for_the_head_is_credited,
    webhook_retries_follow_their_schedule_and_end_after_three_days,
    overpayment_confirms_and_is_flagged,
    a_payment_after_expiry_is_recorded_and_flagged_paid_late,
    a_reorg_that_drops_the_payment_moves_the_order_back_until_it_is_mined_again,
    a_reorg_below_a_confirmed_payment_takes_the_order_back_and_tells_the_merchant,
    a_reorg_deeper_than_the_kept_block_hashes_still_orphans_the_payments_it_drops,
    a_double_spend_that_replaces_the_payment_leaves_the_order_unpaid,
    a_restarted_watcher_replays_nothing_twice,
    a_committed_range_scanned_again_credits_nothing_twice,
    a_payment_made_before_the_watchers_first_step_is_credited,
    a_failing_webhook_endpoint_is_retried_and_never_blocks_others,
    concurrent_orders_with_one_nonce_create_exactly_one,
    idempotency_keys_replay_the_same_order_and_refuse_a_different_body,
    bad_requests_get_their_error_code_and_change_nothing,
    errors_say_how_to_fix_what_a_newcomer_got_wrong,
    the_list_filters_orders_and_pages_through_them,
    native_coin_payments_are_detected,
);

#[tokio::test]
async fn the_watcher_fails_over_to_the_next_rpc_endpoint() {
    let env = Env::new(Backend::Sqlite).await;
    let registry = kit::registry(&[(
        "base-sepolia",
        rpc(&["http://127.0.0.1:9", env.anvil_url()], Some(2)),
    )]);
    let state = AppState::new(env.state.gateway.store.clone(), registry, &env.base).unwrap();
    let mut watcher = Watcher::new(&state.gateway, CHAIN_ID).unwrap();

    let order = env.create_order("1", 900, json!({})).await;
    env.pay(order["receiving_address"].as_str().unwrap(), usdc(1))
        .await;
    env.mine(1).await;
    let first = watcher.step().await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("rpc")),
        "the dead endpoint fails first: {first:?}"
    );
    while watcher.step().await.expect("the next endpoint answers") != StepReport::Idle {}
    assert_eq!(
        env.order(order["order_id"].as_str().unwrap()).await["status"],
        "confirmed"
    );
}
