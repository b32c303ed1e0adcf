//! x402 settlements when the RPC endpoint misbehaves, on both databases: a settlement is failed
//! only on evidence from the chain. An error before anything was sent leaves the authorization
//! free for the payer's retry with the same signature; an error answer to a transaction that
//! reached the node does not hide the payment it made.

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, TxHash, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::SignerSync;
use coffer_evm::contracts::{IERC20, IEip3009};
use coffer_evm::testnet;
use coffer_gateway::clock::Clock;
use coffer_gateway::sales::settlement_key;
use coffer_gateway::workers::Worker;
use coffer_store::NewSettlement;
use coffer_store::testing::Backend;
use coffer_x402::settlement::SettleOptions;
use coffer_x402::wire::PaymentRequest;
use serde_json::Value;

use crate::kit::{Auth, Env, FUNDED, Mined, Options, PAY_TO, USDC};
use coffer_server::testing::{Fault, FaultyRpc};

const PRICE: u64 = 1_000_000;

/// An environment whose settler reaches the chain through a faulty endpoint, and a fresh
/// authorization of 1 USDC to the merchant's payTo with its `/x402/settle` request.
async fn faulty(backend: Backend) -> (Env, FaultyRpc, Auth, Value) {
    let env = Env::with(Options::on(backend).faulty_rpc()).await;
    let rpc = env.rpc_faults.clone().unwrap();
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let request = auth.v2_request(auth.payload(&env.payer));
    (env, rpc, auth, request)
}

async fn authorization_used(env: &Env, auth: &Auth) -> bool {
    IEip3009::new(USDC, &env.chain)
        .authorizationState(auth.from, auth.nonce)
        .call()
        .await
        .unwrap()
}

/// Asserts that `reply` says nothing happened and that trying again may help.
fn assert_nothing_sent(reply: &Value) {
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["errorReason"], "unexpected_settle_error", "{reply}");
    assert_eq!(reply["transaction"], "", "{reply}");
}

async fn an_rpc_error_before_broadcast_leaves_the_authorization_to_the_retry(backend: Backend) {
    let (env, rpc, auth, request) = faulty(backend).await;
    // Fee estimation fails on every try: the settlement cannot be sent.
    rpc.fail("eth_feeHistory", Fault::BadGateway, 1_000);
    let (status, first) = env.settle(&request).await;
    assert_eq!(status, 200);
    assert_nothing_sent(&first);
    assert!(rpc.calls("eth_feeHistory") > 0, "the fault was met");
    assert_eq!(rpc.calls("eth_sendRawTransaction"), 0);
    assert!(!authorization_used(&env, &auth).await);

    rpc.heal();
    let (_, retry) = env.settle(&request).await;
    assert_eq!(
        retry["success"], true,
        "the same signature settles: {retry}"
    );
    assert!(authorization_used(&env, &auth).await);
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE));
    assert_eq!(env.signer_transactions().await, 1);
}

async fn a_refused_broadcast_the_node_does_not_hold_frees_its_nonce_and_the_authorization(
    backend: Backend,
) {
    let (env, rpc, auth, request) = faulty(backend).await;
    rpc.fail("eth_sendRawTransaction", Fault::ErrorAnswer, 1);
    let (_, first) = env.settle(&request).await;
    assert_nothing_sent(&first);
    assert_eq!(rpc.calls("eth_sendRawTransaction"), 1);
    assert_eq!(
        env.signer_transactions().await,
        0,
        "nothing reached the chain"
    );

    let (_, retry) = env.settle(&request).await;
    assert_eq!(retry["success"], true, "{retry}");
    assert_eq!(
        env.signer_transactions().await,
        1,
        "the refused transaction's nonce was reused, no gap"
    );
    assert!(authorization_used(&env, &auth).await);
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE));
}

async fn an_error_answer_to_a_transaction_that_went_through_is_not_reported_as_failed(
    backend: Backend,
) {
    let (env, rpc, auth, request) = faulty(backend).await;
    rpc.fail("eth_sendRawTransaction", Fault::ErrorAfterForwarding, 1);
    let (_, first) = env.settle(&request).await;
    assert!(authorization_used(&env, &auth).await, "the payment moved");
    assert_eq!(
        first["success"], true,
        "a payment that moved money is never answered as failed: {first}"
    );
    let transaction = first["transaction"].as_str().unwrap();
    assert!(transaction.starts_with("0x"), "{first}");

    let (_, again) = env.settle(&request).await;
    assert_eq!(again, first, "a retry answers the same settlement");
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE), "paid once");
    assert_eq!(env.signer_transactions().await, 1);
}

/// The chain's first endpoint is down: verify and settle fail over to the next one.
async fn a_dead_first_endpoint_is_failed_over(backend: Backend) {
    let env = Env::with(Options::on(backend).dead_endpoint_first()).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let request = auth.v2_request(auth.payload(&env.payer));
    let (_, verified) = env.verify(&request).await;
    assert_eq!(verified["isValid"], true, "{verified}");
    let (_, settled) = env.settle(&request).await;
    assert_eq!(settled["success"], true, "{settled}");
    assert!(authorization_used(&env, &auth).await);
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE));
}

/// A tip far above the settler's, so that a transaction sent with it is mined first.
const HIGH_TIP: u128 = 100_000_000_000;

/// Submits `auth`, signed by the env's payer, from a relayer — anyone may submit an EIP-3009
/// authorization — with [`HIGH_TIP`], and returns its hash without waiting for a block.
async fn relay(env: &Env, auth: &Auth) -> TxHash {
    let signature = env.payer.sign_hash_sync(&auth.hash("USDC")).unwrap();
    let relayer = testnet::dev_account(5).unwrap();
    let relaying = ProviderBuilder::new()
        .wallet(EthereumWallet::from(relayer))
        .connect_http(env.anvil_url().parse().unwrap());
    let m = auth.message();
    *IEip3009::new(USDC, &relaying)
        .transferWithAuthorization_0(
            m.from,
            m.to,
            m.value,
            m.validAfter,
            m.validBefore,
            m.nonce,
            27 + u8::from(signature.v()),
            signature.r().into(),
            signature.s().into(),
        )
        .gas(200_000)
        .max_priority_fee_per_gas(HIGH_TIP)
        .max_fee_per_gas(2 * HIGH_TIP)
        .send()
        .await
        .unwrap()
        .tx_hash()
}

/// Waits until `who` has a transaction in the node's pool (its pending count passed `mined`).
async fn until_pending(env: &Env, who: Address, mined: u64) {
    for _ in 0..400 {
        let pending = env
            .chain
            .get_transaction_count(who)
            .pending()
            .await
            .unwrap();
        if pending > mined {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no transaction of {who} reached the pool");
}

/// The receipt of a transaction sent while blocks are mined on demand, once it is mined.
async fn receipt_of(env: &Env, hash: TxHash) -> alloy::rpc::types::TransactionReceipt {
    for _ in 0..400 {
        if let Some(receipt) = env.chain.get_transaction_receipt(hash).await.unwrap() {
            return receipt;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{hash} was never mined");
}

/// Starts settling `request` with mining paused, and returns once the settler's transaction
/// is in the pool: the caller decides what the next block holds.
async fn settle_into_pool(
    env: &std::sync::Arc<Env>,
    request: &Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    env.chain.anvil_set_auto_mine(false).await.unwrap();
    let settling = tokio::spawn({
        let (env, request) = (env.clone(), request.clone());
        async move { env.settle(&request).await }
    });
    until_pending(env, env.signer.address(), 0).await;
    settling
}

/// The transaction hash a sale order was paid by, for the only order of the env's merchant.
async fn sale_paid_by(env: &Env) -> String {
    let orders = env.orders().await;
    assert_eq!(orders.len(), 1, "one sale");
    let payments = env
        .state
        .gateway
        .store
        .payments_for_order(&orders[0].order_id)
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    payments[0].payment.tx_hash.clone()
}

/// A relayer submits the same authorization ahead of the settler's transaction, which then
/// reverts: the payment went through (in the relayer's transaction), and is answered and
/// recorded as paid there, never as failed.
async fn an_authorization_submitted_first_by_someone_else_is_answered_as_paid_there(
    backend: Backend,
) {
    let env = std::sync::Arc::new(Env::new(backend).await);
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let request = auth.v2_request(auth.payload(&env.payer));
    let settling = settle_into_pool(&env, &request).await;
    let relayed = relay(&env, &auth).await;
    env.mine(1).await;
    env.chain.anvil_set_auto_mine(true).await.unwrap();

    let (status, reply) = settling.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["success"], true, "the payment moved: {reply}");
    assert_eq!(reply["transaction"], format!("{relayed:#x}"), "{reply}");
    let ours = env
        .chain
        .get_transaction_count(env.signer.address())
        .await
        .unwrap();
    assert_eq!(
        ours, 1,
        "the settler's own transaction was mined (and reverted)"
    );
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE), "paid once");
    assert_eq!(sale_paid_by(&env).await, format!("{relayed:#x}"));
    let (_, again) = env.settle(&request).await;
    assert_eq!(again, reply, "a retry answers the same");
}

/// The settler's transaction reverts because the payer emptied their balance in the same
/// block: failed, on the chain's evidence. Later the payer is funded and someone submits the
/// same (still valid) authorization: the reconciler corrects the settlement to succeeded
/// with that transaction and records the sale; a retry answers paid.
async fn a_failed_settlement_whose_authorization_is_used_later_is_corrected(backend: Backend) {
    let env = std::sync::Arc::new(Env::new(backend).await);
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let request = auth.v2_request(auth.payload(&env.payer));
    let settling = settle_into_pool(&env, &request).await;
    let payer = ProviderBuilder::new()
        .wallet(EthereumWallet::from(env.payer.clone()))
        .connect_http(env.anvil_url().parse().unwrap());
    let drain = *IERC20::new(USDC, &payer)
        .transfer(env.stranger.address(), U256::from(FUNDED))
        .max_priority_fee_per_gas(HIGH_TIP)
        .max_fee_per_gas(2 * HIGH_TIP)
        .gas(100_000)
        .send()
        .await
        .unwrap()
        .tx_hash();
    until_pending(&env, env.payer.address(), 0).await;
    env.mine(1).await;
    env.chain.anvil_set_auto_mine(true).await.unwrap();
    assert!(receipt_of(&env, drain).await.status());

    let (_, failed) = settling.await.unwrap();
    assert_eq!(failed["success"], false, "{failed}");
    assert_eq!(
        failed["errorReason"],
        "invalid_exact_evm_transaction_failed"
    );
    assert!(!authorization_used(&env, &auth).await, "nothing moved");

    // Funded again, the authorization is submitted by someone else.
    let stranger = ProviderBuilder::new()
        .wallet(EthereumWallet::from(env.stranger.clone()))
        .connect_http(env.anvil_url().parse().unwrap());
    IERC20::new(USDC, &stranger)
        .transfer(env.payer.address(), U256::from(PRICE))
        .mined()
        .await;
    let relayed = relay(&env, &auth).await;
    assert!(receipt_of(&env, relayed).await.status());

    let (_, before) = env.settle(&request).await;
    assert_eq!(before, failed, "journaled as failed until rechecked");
    let mut reconciler = coffer_gateway::workers::reconciler::Reconciler::new(&env.state.gateway);
    reconciler.run_once().await.unwrap();
    let (_, after) = env.settle(&request).await;
    assert_eq!(after["success"], true, "{after}");
    assert_eq!(after["transaction"], format!("{relayed:#x}"));
    assert_eq!(sale_paid_by(&env).await, format!("{relayed:#x}"));
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE), "paid once");
}

/// A settle that claimed an authorization and died before signing (the journal row a
/// `settle.after_claim` crash leaves) holds it: a retry waits, then answers that the
/// settlement is pending, with no transaction yet. Once the claim is older than `abandoned_after` on the settler's clock, the next retry
/// takes it over and pays, once. The half minute passes without sleeping.
async fn an_abandoned_claim_is_taken_over_once_its_time_has_passed(backend: Backend) {
    let clock = Clock::manual(coffer_gateway::clock::now_ms());
    let settler_clock = clock.clone();
    let options = Options::on(backend)
        .settle(SettleOptions {
            receipt_timeout: Duration::from_millis(500),
            ..SettleOptions::default()
        })
        .configure(move |state| state.with_clock(settler_clock));
    let env = Env::with(options).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    let request = auth.v2_request(auth.payload(&env.payer));

    let parsed = PaymentRequest::parse(request.to_string().as_bytes()).unwrap();
    let gateway = &env.state.gateway;
    let payment = gateway
        .facilitator
        .check(&parsed, crate::kit::now())
        .unwrap();
    let (_, fresh) = gateway
        .store
        .claim_settlement(&NewSettlement {
            key: settlement_key(&gateway.chains, &parsed).unwrap(),
            pay_to: format!("{:#x}", payment.to),
            value: payment.value.to_string(),
            network: parsed.network().to_owned(),
            terms_hash: payment.terms_hash(),
            order_id: None,
            now_ms: clock.now_ms(),
        })
        .await
        .unwrap();
    assert!(fresh);

    let assert_held = |reply: &Value| {
        assert_eq!(reply["success"], false, "{reply}");
        assert_eq!(reply["errorReason"], "settlement_pending", "{reply}");
        assert_eq!(reply["transaction"], "", "{reply}");
    };
    let (_, held) = env.settle(&request).await;
    assert_held(&held);
    clock.advance(Duration::from_secs(29));
    let (_, still_held) = env.settle(&request).await;
    assert_held(&still_held);
    assert_eq!(env.signer_transactions().await, 0);

    clock.advance(Duration::from_secs(1));
    let (_, taken_over) = env.settle(&request).await;
    assert_eq!(taken_over["success"], true, "{taken_over}");
    assert!(authorization_used(&env, &auth).await);
    assert_eq!(env.balance(PAY_TO).await, U256::from(PRICE));
    assert_eq!(env.signer_transactions().await, 1);
}

coffer_store::on_both_databases!(
    backend: [
        an_abandoned_claim_is_taken_over_once_its_time_has_passed,
        an_authorization_submitted_first_by_someone_else_is_answered_as_paid_there,
        a_failed_settlement_whose_authorization_is_used_later_is_corrected,
        a_dead_first_endpoint_is_failed_over,
        an_rpc_error_before_broadcast_leaves_the_authorization_to_the_retry,
        a_refused_broadcast_the_node_does_not_hold_frees_its_nonce_and_the_authorization,
        an_error_answer_to_a_transaction_that_went_through_is_not_reported_as_failed,
    ];
);
