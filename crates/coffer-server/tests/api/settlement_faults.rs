//! x402 settlements when the RPC endpoint misbehaves, on both databases: a settlement is failed
//! only on evidence from the chain. An error before anything was sent leaves the authorization
//! free for the payer's retry with the same signature; an error answer to a transaction that
//! reached the node does not hide the payment it made.

use alloy::primitives::U256;
use coffer_evm::contracts::IEip3009;
use coffer_store::testing::Backend;
use serde_json::Value;

use crate::faulty_rpc::{Fault, FaultyRpc};
use crate::kit::{Auth, Env, Options, PAY_TO, USDC};

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

coffer_store::on_both_databases!(
    backend: [
        a_dead_first_endpoint_is_failed_over,
        an_rpc_error_before_broadcast_leaves_the_authorization_to_the_retry,
        a_refused_broadcast_the_node_does_not_hold_frees_its_nonce_and_the_authorization,
        an_error_answer_to_a_transaction_that_went_through_is_not_reported_as_failed,
    ];
);
