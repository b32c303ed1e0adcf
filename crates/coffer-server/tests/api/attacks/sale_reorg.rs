//! Attack 10, x402 sales and the chain: a sale counts as confirmed only at the chain's
//! confirmations, a reorg below a sale whose block survived leaves it paid (also when the sale
//! is recorded while the rewind is being judged), and a sale whose block was dropped but whose
//! transaction was mined again is found in its new block — each sale its own transfer, also
//! when one batched transaction carries identical ones.

use std::time::Duration;

use alloy::primitives::{Bytes, U256};
use alloy::providers::Provider;
use coffer_gateway::workers::watcher::{StepReport, Watcher};
use coffer_store::testing::Backend;
use coffer_x402::settlement::SettleOptions;
use serde_json::{Value, json};

use crate::kit::{Auth, CHAIN_ID, Env, Mined, Options, PAY_TO, USDC};

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
        .gateway
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
    let env = Env::with(Options::on(backend).confirmations(3)).await;
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
    watcher.step().await.unwrap();

    let reply = settle_to_merchant(&env, 1_000).await;
    let order_id = order_of_sale(&env, reply["transaction"].as_str().unwrap()).await;
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
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
            .gateway
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
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed");
    assert!(
        env.event_types(&order_id)
            .await
            .iter()
            .any(|e| e == "payment_order.confirmed")
    );
}

/// The watcher is behind; a reorg replaced the block it last saw, and a sale was then mined on
/// the new chain. Rewinding below the sale must not orphan it: its block is canonical.
async fn a_reorg_below_a_sale_leaves_it_paid(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
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
            .gateway
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
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(
        order.status.as_str(),
        "confirmed",
        "the sale's block survived"
    );
    assert_eq!(order.amount_paid.to_base_units_string(), "1000");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    assert!(!payments[0].orphaned);
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e == "payment_order.reorged"),
        "{events:?}"
    );
}

/// The sale's own block is dropped and its transaction mined again in another block: the
/// watcher finds it there (a sale is not watched by address, so no scan would).
async fn a_sale_mined_again_is_found_in_its_new_block(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
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
    let first_block = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap()[0]
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
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed", "{order:?}");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap();
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

/// A rewind is judged while a sale settles beside the watcher: the sale lands in a canonical
/// block above the ancestor after the judgement and before its commit. The commit orphans only
/// what the watcher judged off the chain, so the sale stays live and its order confirmed.
async fn a_sale_recorded_while_a_rewind_is_judged_stays_paid(backend: Backend) {
    let env = Env::new(backend).await;
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
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
    let sale_block = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap()[0]
        .payment
        .block_number;
    assert!(sale_block > ancestor);

    env.state
        .gateway
        .store
        .commit_chain_step(&judged)
        .await
        .unwrap();
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    assert!(!payments[0].orphaned, "the sale's block is canonical");

    while watcher.step().await.unwrap() != StepReport::Idle {}
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "confirmed", "{order:?}");
    assert_eq!(order.amount_paid.to_base_units_string(), "1000");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&order_id)
        .await
        .unwrap();
    assert!(payments.iter().all(|p| !p.orphaned), "{payments:?}");
    let events = env.event_types(&order_id).await;
    assert!(
        !events.iter().any(|e| e == "payment_order.reorged"),
        "{events:?}"
    );
}

/// An environment whose settler batches authorizations arriving together into one Multicall3
/// transaction, with a watcher following the chain.
async fn batching_env(backend: Backend) -> (Env, Watcher) {
    let options = Options::on(backend).multicall3().settle(SettleOptions {
        receipt_timeout: Duration::from_secs(5),
        batch_window: Duration::from_millis(400),
        ..SettleOptions::default()
    });
    let env = Env::with(options).await;
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).unwrap();
    watcher.step().await.unwrap();
    mine(&env, 1).await;
    watcher.step().await.unwrap();
    (env, watcher)
}

/// A sale of [`twin_sales`]: its order, its authorization and its transfer's log index.
struct Twin {
    order_id: String,
    auth: Auth,
    log_index: i64,
}

/// An agent pays the same route twice: two authorizations with the same payer, payTo and value
/// (different nonces), settled together in one batched transaction and recorded as two sales,
/// in the order of their rows (the order a rewind examines them in). Also the transaction's
/// hash and raw bytes, to mine it again.
async fn twin_sales(env: &Env) -> (Vec<Twin>, String, Bytes) {
    let auths = [
        Auth::fresh(env.payer.address(), PAY_TO, 1_000),
        Auth::fresh(env.payer.address(), PAY_TO, 1_000),
    ];
    let requests = auths
        .clone()
        .map(|auth| auth.v2_request(auth.payload(&env.payer)));
    let ((_, first), (_, second)) = tokio::join!(
        env.post("/x402/settle", &[], &requests[0]),
        env.post("/x402/settle", &[], &requests[1]),
    );
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(second["success"], true, "{second}");
    let tx_hash = first["transaction"].as_str().unwrap().to_owned();
    assert_eq!(second["transaction"], tx_hash.as_str(), "one batch");
    let raw: Bytes = env
        .chain
        .raw_request("eth_getRawTransactionByHash".into(), (tx_hash.clone(),))
        .await
        .unwrap();
    let mut orders = env.orders().await;
    assert_eq!(orders.len(), 2, "two sales");
    orders.sort_by_key(|order| order.id);
    let mut twins = Vec::new();
    for order in orders {
        let sale = env
            .state
            .gateway
            .store
            .sale_for_order(&order.order_id)
            .await
            .unwrap()
            .expect("a sale");
        let nonce = sale.auth_nonce.expect("an authorization sale");
        let auth = auths
            .iter()
            .find(|auth| format!("{:#x}", auth.nonce) == nonce)
            .expect("one of the two")
            .clone();
        let payments = env
            .state
            .gateway
            .store
            .payments_for_order(&order.order_id)
            .await
            .unwrap();
        assert_eq!(payments.len(), 1);
        twins.push(Twin {
            order_id: order.order_id,
            auth,
            log_index: payments[0].payment.log_index,
        });
    }
    assert_ne!(twins[0].log_index, twins[1].log_index);
    (twins, tx_hash, raw)
}

/// The `Transfer` an authorization made in a receipt, if it was used there.
fn transfer_of(
    receipt: &alloy::rpc::types::TransactionReceipt,
    auth: &Auth,
) -> Option<coffer_gateway::sales::FoundTransfer> {
    coffer_gateway::sales::authorized_transfer(
        receipt,
        USDC,
        auth.from,
        auth.to,
        auth.nonce,
        U256::from(auth.value),
    )
}

/// Whether a receipt holds the token's `AuthorizationUsed` for an authorization.
fn authorization_used(receipt: &alloy::rpc::types::TransactionReceipt, auth: &Auth) -> bool {
    use alloy::sol_types::SolEvent;
    receipt.inner.logs().iter().any(|log| {
        log.address() == USDC
            && log.topics()
                == [
                    coffer_evm::contracts::IEip3009::AuthorizationUsed::SIGNATURE_HASH,
                    auth.from.into_word(),
                    auth.nonce,
                ]
    })
}

async fn receipt_of(env: &Env, tx_hash: &str) -> alloy::rpc::types::TransactionReceipt {
    let hash: alloy::primitives::TxHash = tx_hash.parse().unwrap();
    let receipt = env
        .chain
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .expect("mined again");
    assert!(receipt.status());
    receipt
}

/// An agent pays the same route twice ([`twin_sales`]). A reorg drops the block; the
/// transaction is mined again behind two other transactions, so that every log moves two
/// places and one sale's transfer now sits where the other's was. Each order must get back its
/// own transfer — the one next to its authorization's `AuthorizationUsed` — credited once,
/// never both orders from one transfer.
async fn identical_sales_batched_in_one_transaction_keep_their_own_transfers_after_a_reorg(
    backend: Backend,
) {
    let (env, mut watcher) = batching_env(backend).await;
    let before_sale = snapshot(&env).await;
    let (twins, tx_hash, raw) = twin_sales(&env).await;
    watcher.step().await.unwrap();

    // The block is dropped; the transaction is mined again behind two token transfers of
    // another account, which pay more for their place.
    revert(&env, &before_sale).await;
    mine_fork_block(&env, 7).await;
    let _: Value = env
        .chain
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let token = coffer_evm::contracts::IERC20::new(USDC, env.wallet(&env.stranger));
    for _ in 0..2 {
        let _ = token
            .transfer(env.stranger.address(), U256::from(1u64))
            .max_priority_fee_per_gas(50_000_000_000)
            .max_fee_per_gas(100_000_000_000)
            .send()
            .await
            .unwrap();
    }
    let _ = env.chain.send_raw_transaction(&raw).await.unwrap();
    mine(&env, 1).await;
    let _: Value = env
        .chain
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .unwrap();
    let receipt = receipt_of(&env, &tx_hash).await;

    let report = watcher.step().await.unwrap();
    assert!(matches!(report, StepReport::Reorged { .. }), "{report:?}");
    while watcher.step().await.unwrap() != StepReport::Idle {}

    let mut live_logs = Vec::new();
    for twin in &twins {
        let own = transfer_of(&receipt, &twin.auth).expect("its transfer was mined again");
        let own_log = i64::try_from(own.log_index).unwrap();
        assert_eq!(own_log, twin.log_index + 2, "every log moved two places");

        let payments = env
            .state
            .gateway
            .store
            .payments_for_order(&twin.order_id)
            .await
            .unwrap();
        let live: Vec<_> = payments.iter().filter(|p| !p.orphaned).collect();
        assert_eq!(live.len(), 1, "{} {payments:?}", twin.order_id);
        assert_eq!(live[0].payment.log_index, own_log, "its own transfer");
        assert_eq!(live[0].payment.tx_hash, tx_hash.to_ascii_lowercase());
        assert_eq!(live[0].payment.amount.to_base_units_string(), "1000");
        live_logs.push(own_log);

        let order = env.state.gateway.store.order(&twin.order_id).await.unwrap();
        assert_eq!(order.status.as_str(), "confirmed", "{order:?}");
        assert_eq!(
            order.amount_paid.to_base_units_string(),
            "1000",
            "credited once"
        );
    }
    assert_ne!(live_logs[0], live_logs[1]);
    let before: Vec<i64> = twins.iter().map(|twin| twin.log_index).collect();
    let taken_over = live_logs.iter().filter(|log| before.contains(log)).count();
    assert_eq!(
        taken_over, 1,
        "one sale's transfer now sits where the other's was: {before:?} → {live_logs:?}"
    );
    assert_eq!(env.balance(PAY_TO).await, U256::from(2_000u64));
}

/// The same twin sales ([`twin_sales`]); on the new chain someone submits the first sale's
/// authorization on its own, so that when the batched transaction is mined again that call
/// fails and only the other transfer happens. The transfer that remains is the second sale's:
/// it must not be credited to the first order (examined first), nor to both, and the first
/// order, whose transfer is not in the transaction any more, is not paid by it.
async fn a_batched_sale_whose_call_failed_when_mined_again_takes_nothing_from_its_twin(
    backend: Backend,
) {
    let (env, mut watcher) = batching_env(backend).await;
    let before_sale = snapshot(&env).await;
    let (twins, tx_hash, raw) = twin_sales(&env).await;
    watcher.step().await.unwrap();

    revert(&env, &before_sale).await;
    mine_fork_block(&env, 7).await;
    let front_run = &twins[0].auth;
    let signature: Bytes = front_run.sign(&env.payer).parse().unwrap();
    coffer_evm::contracts::IEip3009::new(USDC, env.wallet(&env.stranger))
        .transferWithAuthorization_1(
            front_run.from,
            front_run.to,
            U256::from(front_run.value),
            U256::from(front_run.valid_after),
            U256::from(front_run.valid_before),
            front_run.nonce,
            signature,
        )
        .mined()
        .await;
    env.chain
        .send_raw_transaction(&raw)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let receipt = receipt_of(&env, &tx_hash).await;
    assert!(
        !authorization_used(&receipt, &twins[0].auth),
        "its call failed"
    );
    assert!(authorization_used(&receipt, &twins[1].auth));
    let transfers = coffer_gateway::sales::transfers_to(&receipt, USDC, PAY_TO);
    assert_eq!(transfers.len(), 1, "one transfer left: {transfers:?}");
    let remaining = &transfers[0];

    let report = watcher.step().await.unwrap();
    assert!(matches!(report, StepReport::Reorged { .. }), "{report:?}");
    while watcher.step().await.unwrap() != StepReport::Idle {}

    let first = env
        .state
        .gateway
        .store
        .order(&twins[0].order_id)
        .await
        .unwrap();
    assert_ne!(first.status.as_str(), "confirmed", "{first:?}");
    assert_eq!(first.amount_paid.to_base_units_string(), "0");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&twins[0].order_id)
        .await
        .unwrap();
    assert!(payments.iter().all(|p| p.orphaned), "{payments:?}");

    let second = env
        .state
        .gateway
        .store
        .order(&twins[1].order_id)
        .await
        .unwrap();
    assert_eq!(second.status.as_str(), "confirmed", "{second:?}");
    assert_eq!(second.amount_paid.to_base_units_string(), "1000");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&twins[1].order_id)
        .await
        .unwrap();
    let live: Vec<_> = payments.iter().filter(|p| !p.orphaned).collect();
    assert_eq!(live.len(), 1, "{payments:?}");
    assert_eq!(
        live[0].payment.log_index,
        i64::try_from(remaining.log_index).unwrap(),
        "its own transfer"
    );
}

/// A reorg drops a mined settlement: the node is one nonce behind Coffer's journal, and every
/// later settlement would wait behind the gap forever (and the paywall would keep serving
/// "pending" payments that never land). The reconciler sends the lost transaction again; the
/// signer moves on.
async fn a_dropped_settlement_does_not_jam_the_signer(backend: Backend) {
    let options = Options::on(backend).configure(|state| {
        state.with_facilitator_policy(coffer_gateway::facilitator_policy::FacilitatorPolicy::open())
    });
    let env = Env::with(options).await;
    let before_payer = env.balance(env.payer.address()).await;
    let before_first = snapshot(&env).await;
    settle_to_merchant(&env, 1_000).await;
    revert(&env, &before_first).await;
    mine_fork_block(&env, 3).await;

    // The next settlement is signed with the journal's next nonce: stuck behind the gap.
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 2_000);
    let request = auth.v2_request(auth.payload(&env.payer));
    let (_, reply) = env.post("/x402/settle", &[], &request).await;
    assert_eq!(reply["errorReason"], "settlement_pending", "{reply}");

    // The reconciler fills the gap; both settlements land.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        env.state.gateway.settler.reconcile().await.unwrap();
        let (_, again) = env.post("/x402/settle", &[], &request).await;
        if again["success"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still jammed: {again}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        before_payer - env.balance(env.payer.address()).await,
        alloy::primitives::U256::from(3_000u64),
        "both payments landed, each once"
    );
}

coffer_store::on_both_databases!(
    backend: [
        a_sale_is_confirmed_at_the_chains_confirmations,
        a_reorg_below_a_sale_leaves_it_paid,
        a_sale_mined_again_is_found_in_its_new_block,
        a_sale_recorded_while_a_rewind_is_judged_stays_paid,
        a_dropped_settlement_does_not_jam_the_signer,
        identical_sales_batched_in_one_transaction_keep_their_own_transfers_after_a_reorg,
        a_batched_sale_whose_call_failed_when_mined_again_takes_nothing_from_its_twin,
    ];
);
