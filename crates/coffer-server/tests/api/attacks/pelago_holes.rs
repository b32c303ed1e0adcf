//! Smaller holes in the Pelago family (attack 10): paying a mainnet order with testnet tokens,
//! paying an order with a transfer made before it existed, and guessing order ids (which open
//! the public payment page).

use std::collections::HashSet;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use coffer_evm::contracts::IERC20;
use coffer_store::testing::Backend;
use serde_json::{Value, json};

use crate::kit::{
    Auth, BASE_CHAIN_ID, BASE_USDC, Env, Mined, Options, PAY_TO, USDC, now, x_payment_on,
};

async fn create(env: &Env, body: Value) -> Value {
    let (status, reply) = env
        .post(
            "/openapi/crypto/x402/order",
            &[("Merchant-App-Key", &env.api_key)],
            &body,
        )
        .await;
    assert_eq!(status, 402, "{reply}");
    reply
}

async fn a_mainnet_order_is_never_paid_on_a_testnet(backend: Backend) {
    let env = Env::with(Options::on(backend).mainnet()).await;

    let mainnet_order = create(
        &env,
        json!({"amount": "1", "currency": "USDC", "network": "base"}),
    )
    .await;
    let order_id = mainnet_order["orderId"].as_str().unwrap().to_owned();
    let networks: Vec<&str> = mainnet_order["accepts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["network"].as_str().unwrap())
        .collect();
    assert_eq!(networks, ["base"]);

    // Testnet tokens, correctly signed for the merchant's payTo and the full price.
    let testnet = Auth::fresh(env.payer.address(), PAY_TO, 1_000_000);
    let testnet_before = env.balance(env.payer.address()).await;
    let (status, body) = env
        .pelago_pay(&order_id, &testnet.x_payment(testnet.payload(&env.payer)))
        .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["code"], "NETWORK_MISMATCH", "{body}");
    assert_eq!(env.balance(env.payer.address()).await, testnet_before);
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "pending");

    // An order without a network is offered on its own network only.
    let any = create(&env, json!({"amount": "1", "currency": "USDC"})).await;
    assert_eq!(any["accepts"].as_array().unwrap().len(), 1, "{any}");

    // The mainnet payment pays it.
    let mainnet = Auth::fresh(env.payer.address(), PAY_TO, 1_000_000);
    let signature = mainnet.sign_on(&env.payer, BASE_CHAIN_ID, BASE_USDC, "USD Coin");
    let (status, body) = env
        .pelago_pay(
            &order_id,
            &x_payment_on("base", mainnet.payload_signed(&signature)),
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("confirmed")),
        "{body}"
    );
}

/// A transfer the payer made an hour ago (to the merchant's payTo, for some other reason) is
/// presented as the tx-hash proof of a new order.
async fn an_old_transfer_never_pays_a_new_order(backend: Backend) {
    let env = Env::new(backend).await;
    let an_hour_ago = now() - 3600;
    let _: Value = env
        .chain
        .raw_request("anvil_setTime".into(), (an_hour_ago,))
        .await
        .unwrap();
    let payer_chain = env.wallet(&env.payer);
    let receipt = IERC20::new(USDC, &payer_chain)
        .transfer(PAY_TO, U256::from(1_000_000u64))
        .mined()
        .await;
    let _: Value = env
        .chain
        .raw_request("anvil_setTime".into(), (now(),))
        .await
        .unwrap();
    let _: Value = env.chain.raw_request("evm_mine".into(), ()).await.unwrap();
    let tx_hash = format!("{:#x}", receipt.transaction_hash);
    let proof = |order_id: &str| {
        let message = coffer_gateway::pelago::proof_message(order_id, &tx_hash);
        let signature = env.payer.sign_message_sync(message.as_bytes()).unwrap();
        x_payment_on(
            "base-sepolia",
            json!({"amount": "1000000", "txHash": tx_hash,
                "signature": format!("0x{}", alloy::hex::encode(signature.as_bytes()))}),
        )
    };

    let order_id = env.pelago_order("1").await;
    let (status, body) = env.pelago_pay(&order_id, &proof(&order_id)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["code"], "TX_TOO_OLD", "{body}");
    let order = env.state.gateway.store.order(&order_id).await.unwrap();
    assert_eq!(order.status.as_str(), "pending");
    assert!(
        env.state
            .gateway
            .store
            .payments_for_order(&order_id)
            .await
            .unwrap()
            .is_empty()
    );

    // Nor does it create and pay an order of its own.
    let (status, body) = env
        .post(
            "/openapi/crypto/x402/order",
            &[
                ("Merchant-App-Key", &env.api_key),
                ("X-PAYMENT", &proof("")),
            ],
            &json!({"description": "old"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (402, &json!("TX_TOO_OLD")),
        "{body}"
    );
    assert_eq!(env.order_count().await, 1, "no order was created for it");
}

/// Order ids open the public payment page: orders created in the same second must not give
/// away each other's ids.
#[tokio::test]
async fn order_ids_cannot_be_enumerated() {
    let env = Env::new(Backend::Sqlite).await;
    let mut suffixes = Vec::new();
    for _ in 0..40 {
        let id = env.pelago_order("1").await;
        assert!(id.starts_with("CO"), "{id}");
        let digits = &id[2..];
        assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(digits.len() >= 14 + 20, "at least 20 random digits: {id}");
        suffixes.push(digits[14..].to_owned());
    }
    let distinct: HashSet<&String> = suffixes.iter().collect();
    assert_eq!(distinct.len(), suffixes.len());
    // Neighbours share no long run: the suffix is not a counter or a clock.
    for pair in suffixes.windows(2) {
        let same = pair[0]
            .bytes()
            .zip(pair[1].bytes())
            .filter(|(a, b)| a == b)
            .count();
        assert!(same < 12, "{} and {} are alike", pair[0], pair[1]);
    }
    // A guess in the old shape (timestamp + 5 digits) finds nothing.
    let guess = format!("{}00001", &env.pelago_order("1").await[..16]);
    let (status, _) = env.get(&format!("/pay/{guess}/status"), &[]).await;
    assert_eq!(status, 404);
}

coffer_store::on_both_databases!(
    backend: [
        a_mainnet_order_is_never_paid_on_a_testnet,
        an_old_transfer_never_pays_a_new_order,
    ];
);
