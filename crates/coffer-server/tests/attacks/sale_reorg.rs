//! Attack 10, x402 sales and the chain: a sale counts as confirmed only at the chain's
//! confirmations, a reorg below a sale whose block survived leaves it paid (also when the sale
//! is recorded while the rewind is being judged), and a sale whose block was dropped but whose
//! transaction was mined again is found in its new block.

use alloy::primitives::Bytes;
use alloy::providers::Provider;
use coffer_server::workers::watcher::{StepReport, Watcher};
use coffer_store::testing::Backend;
use serde_json::{Value, json};

use crate::harness::{Auth, CHAIN_ID, Env, Options, PAY_TO};

async fn mine(env: &Env, blocks: u64) {
    for _ in 0..blocks {
        let _: Value = env.chain.raw_request("evm_mine".into(), ()).await.unwrap();
    }
}

/// Mines one empty block whose timestamp differs from anything mined before at its height,
/// so that it is a different block.
async fn mine_fork_block(env: &Env, offset: u64) {
    let latest = env
        .chain
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    let _: Value = env
        .chain
        .raw_request("evm_mine".into(), (latest.header.timestamp + 100 + offset,))
        .await
        .unwrap();
}

async fn snapshot(env: &Env) -> String {
    env.chain
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap()
}

async fn revert(env: &Env, id: &str) {
    let reverted: bool = env
        .chain
        .raw_request("evm_revert".into(), (id,))
        .await
        .unwrap();
    assert!(reverted);
}

async fn order_of_sale(env: &Env, tx_hash: &str) -> String {
    env.state
        .store
        .order_paid_by(CHAIN_ID, &tx_hash.to_ascii_lowercase())
        .await
        .unwrap()
        .expect("the sale was recorded")
}

async fn settle_to_merchant(env: &Env, value: u64) -> Value {
    let auth = Auth::fresh(env.payer.address(), PAY_TO, value);
    let (status, reply) = env
        .post(
            "/x402/settle",
            &[],
            &auth.v2_request(auth.payload(&env.payer)),
        )
        .await;
    assert_eq!(
        (status, &reply["success"]),
        (200, &Value::Bool(true)),
        "{reply}"
    );
    reply
}

/// With three confirmations asked, a sale is `processing` when mined and `confirmed` only when
/// three blocks deep, through the facilitator and through Pelago alike.
async fn a_sale_is_confirmed_at_the_chains_confirmations(backend: Backend) {
    let mut options = Options::on(backend);
    options.confirmations = 3;
    let env = Env::with(options).await;
    let mut watcher = Watcher::new(&env.state, CHAIN_ID).unwrap();
    watcher.step().await.unwrap();

    let reply = settle_to_merchant(&env, 1_000).await;
    let order_id = order_of_sale(&env, reply["transaction"].as_str().unwrap()).await;
    let order = env.state.store.order(&order_id).await.unwrap();
    assert_eq!(
        order.status.as_str(),
        "processing",
        "one confirmation of three"
    );
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e == "payment_order.confirmed"),
        "{events:?}"
    );

    // Pelago waits for the confirmations (up to its bound), then says it is still confirming.
    let pelago = env.pelago_order("0.01").await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 10_000);
    let header = auth.x_payment(auth.payload(&env.payer));
    let (status, body) = env.pelago_pay(&pelago, &header).await;
    assert_eq!(
        (status, &body["code"]),
        (202, &json!("CONFIRMING")),
        "{body}"
    );
    assert_eq!(
        env.state
            .store
            .order(&pelago)
            .await
            .unwrap()
            .status
            .as_str(),
        "processing"
    );

    mine(&env, 2).await;
    let (status, body) = env.pelago_pay(&pelago, &header).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("confirmed")),
        "{body}"
    );
    watcher.step().await.unwrap();
    let order = env.state.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed");
    assert!(
        env.event_types(&order_id)
            .await
            .iter()
            .any(|e| e == "payment_order.confirmed")
    );
}

#[tokio::test]
async fn a_sale_is_confirmed_at_the_chains_confirmations_on_sqlite() {
    a_sale_is_confirmed_at_the_chains_confirmations(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_sale_is_confirmed_at_the_chains_confirmations_on_postgres() {
    a_sale_is_confirmed_at_the_chains_confirmations(Backend::Postgres).await;
}

/// The watcher is behind; a reorg replaced the block it last saw, and a sale was then mined on
/// the new chain. Rewinding below the sale must not orphan it: its block is canonical.
async fn a_reorg_below_a_sale_leaves_it_paid(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state, CHAIN_ID).unwrap();
    mine(&env, 2).await;
    let before_fork = snapshot(&env).await;
    mine(&env, 1).await;
    watcher.step().await.unwrap();
    // The block the watcher saw is replaced.
    revert(&env, &before_fork).await;
    mine_fork_block(&env, 0).await;
    let reply = settle_to_merchant(&env, 1_000).await;
    let order_id = order_of_sale(&env, reply["transaction"].as_str().unwrap()).await;
    assert_eq!(
        env.state
            .store
            .order(&order_id)
            .await
            .unwrap()
            .status
            .as_str(),
        "confirmed"
    );

    let report = watcher.step().await.unwrap();
    assert!(matches!(report, StepReport::Reorged { .. }), "{report:?}");
    watcher.step().await.unwrap();
    let order = env.state.store.order(&order_id).await.unwrap();
    assert_eq!(
        order.status.as_str(),
        "confirmed",
        "the sale's block survived"
    );
    assert_eq!(order.amount_paid.to_base_units_string(), "1000");
    let payments = env.state.store.payments_for_order(&order_id).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert!(!payments[0].orphaned);
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e == "payment_order.reorged"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_reorg_below_a_sale_leaves_it_paid_on_sqlite() {
    a_reorg_below_a_sale_leaves_it_paid(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_reorg_below_a_sale_leaves_it_paid_on_postgres() {
    a_reorg_below_a_sale_leaves_it_paid(Backend::Postgres).await;
}

/// The sale's own block is dropped and its transaction mined again in another block: the
/// watcher finds it there (a sale is not watched by address, so no scan would).
async fn a_sale_mined_again_is_found_in_its_new_block(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state, CHAIN_ID).unwrap();
    mine(&env, 1).await;
    watcher.step().await.unwrap();
    let before_sale = snapshot(&env).await;
    let reply = settle_to_merchant(&env, 1_000).await;
    let tx_hash = reply["transaction"].as_str().unwrap().to_owned();
    let order_id = order_of_sale(&env, &tx_hash).await;
    let raw: Bytes = env
        .chain
        .raw_request("eth_getRawTransactionByHash".into(), (tx_hash.clone(),))
        .await
        .unwrap();
    let first_block = env.state.store.payments_for_order(&order_id).await.unwrap()[0]
        .payment
        .block_hash
        .clone();
    watcher.step().await.unwrap();

    revert(&env, &before_sale).await;
    mine_fork_block(&env, 7).await;
    env.chain
        .send_raw_transaction(&raw)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    let report = watcher.step().await.unwrap();
    assert!(matches!(report, StepReport::Reorged { .. }), "{report:?}");
    watcher.step().await.unwrap();
    let order = env.state.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed", "{order:?}");
    let payments = env.state.store.payments_for_order(&order_id).await.unwrap();
    let live: Vec<_> = payments.iter().filter(|p| !p.orphaned).collect();
    assert_eq!(live.len(), 1, "{payments:?}");
    assert_ne!(
        live[0].payment.block_hash, first_block,
        "found in its new block"
    );
    assert_eq!(
        order.amount_paid.to_base_units_string(),
        "1000",
        "credited once"
    );
}

#[tokio::test]
async fn a_sale_mined_again_is_found_in_its_new_block_on_sqlite() {
    a_sale_mined_again_is_found_in_its_new_block(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_sale_mined_again_is_found_in_its_new_block_on_postgres() {
    a_sale_mined_again_is_found_in_its_new_block(Backend::Postgres).await;
}

/// A rewind is judged while a sale settles beside the watcher: the sale lands in a canonical
/// block above the ancestor after the judgement and before its commit. The commit orphans only
/// what the watcher judged off the chain, so the sale stays live and its order confirmed.
async fn a_sale_recorded_while_a_rewind_is_judged_stays_paid(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state, CHAIN_ID).unwrap();
    watcher.step().await.unwrap();
    mine(&env, 2).await;
    watcher.step().await.unwrap();
    let ancestor = env.chain.get_block_number().await.unwrap();
    let before_fork = snapshot(&env).await;
    mine(&env, 1).await;
    watcher.step().await.unwrap();
    // The block the watcher saw last is replaced.
    revert(&env, &before_fork).await;
    mine_fork_block(&env, 0).await;

    let judged = watcher
        .judge_rewind()
        .await
        .unwrap()
        .expect("the reorg is seen");
    assert_eq!(judged.rewind_to, Some(ancestor));
    assert!(judged.orphans.is_empty(), "{:?}", judged.orphans);

    // The sale settles now, in the block after the new tip: canonical, above the ancestor.
    let reply = settle_to_merchant(&env, 1_000).await;
    let order_id = order_of_sale(&env, reply["transaction"].as_str().unwrap()).await;
    let sale_block = env.state.store.payments_for_order(&order_id).await.unwrap()[0]
        .payment
        .block_number;
    assert!(sale_block > ancestor);

    env.state.store.commit_chain_step(&judged).await.unwrap();
    let payments = env.state.store.payments_for_order(&order_id).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert!(!payments[0].orphaned, "the sale's block is canonical");

    while watcher.step().await.unwrap() != StepReport::Idle {}
    let order = env.state.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed", "{order:?}");
    assert_eq!(order.amount_paid.to_base_units_string(), "1000");
    let payments = env.state.store.payments_for_order(&order_id).await.unwrap();
    assert!(payments.iter().all(|p| !p.orphaned), "{payments:?}");
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e == "payment_order.reorged"),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_sale_recorded_while_a_rewind_is_judged_stays_paid_on_sqlite() {
    a_sale_recorded_while_a_rewind_is_judged_stays_paid(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_sale_recorded_while_a_rewind_is_judged_stays_paid_on_postgres() {
    a_sale_recorded_while_a_rewind_is_judged_stays_paid(Backend::Postgres).await;
}
