//! Payout wallets through the API, on both databases and a real chain: a merchant sees its own
//! wallets with the balances the chain holds, never a key, never another merchant's; a chain
//! that cannot be asked is said so per wallet; a second wallet on one chain and a key that is
//! not one are refused.

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use coffer_gateway::payout_wallets::PayoutWalletError;
use coffer_store::testing::Backend;
use secrecy::SecretString;
use serde_json::Value;

use crate::kit::{Env, Options, new_merchant};

async fn wallets(env: &Env, key: &str) -> (u16, Value) {
    env.get(
        "/api/payout-wallets/",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

async fn a_merchant_sees_its_own_wallets_and_what_the_chain_says_they_hold(backend: Backend) {
    let env = Env::new(backend).await;
    let payouts = &env.state.gateway.payout_wallets;
    let address = payouts
        .create(&env.merchant.id, "base-sepolia")
        .await
        .unwrap();
    env.pay(&address.to_checksum(None), 12_500_000).await;
    env.chain
        .anvil_set_balance(address, U256::from(10u64).pow(U256::from(17u8)))
        .await
        .unwrap();

    let (status, answer) = wallets(&env, &env.api_key).await;
    assert_eq!(status, 200, "{answer}");
    let wallet = &answer["data"][0];
    assert_eq!(
        (
            wallet["chain"].as_str(),
            wallet["chain_id"].as_u64(),
            wallet["address"].as_str()
        ),
        (
            Some("base-sepolia"),
            Some(84_532),
            Some(address.to_checksum(None).as_str())
        )
    );
    let balances = wallet["balances"].as_array().unwrap();
    assert_eq!(
        (
            balances[0]["currency"].as_str(),
            balances[0]["amount"].as_str(),
            &balances[0]["token_address"]
        ),
        (Some("ETH"), Some("0.10"), &Value::Null)
    );
    assert_eq!(
        (
            balances[1]["currency"].as_str(),
            balances[1]["amount"].as_str()
        ),
        (Some("USDC"), Some("12.50"))
    );
    // The key is never in an answer.
    let stored = env
        .state
        .gateway
        .store
        .payout_wallets(&env.merchant.id)
        .await
        .unwrap();
    let key = stored[0].private_key.trim_start_matches("0x").to_owned();
    assert!(
        !answer.to_string().to_lowercase().contains(&key),
        "{answer}"
    );
    // The same path without its slash answers the same.
    let (_, again) = env
        .get(
            "/api/payout-wallets",
            &[("authorization", &format!("Bearer {}", env.api_key))],
        )
        .await;
    assert_eq!(again, answer);

    // Another merchant sees none of them.
    let (_, other_key) = new_merchant(&env.state, "Other", None).await;
    let (status, other) = wallets(&env, &other_key).await;
    assert_eq!(
        (status, other["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // One wallet per merchant and chain; a key must be a key.
    assert!(matches!(
        payouts.create(&env.merchant.id, "base-sepolia").await,
        Err(PayoutWalletError::Exists(chain)) if chain == "base-sepolia"
    ));
    assert!(matches!(
        payouts
            .import(&env.merchant.id, "base", &SecretString::from("0x1234"))
            .await,
        Err(PayoutWalletError::BadKey)
    ));
    assert!(matches!(
        payouts.create(&env.merchant.id, "solana").await,
        Err(PayoutWalletError::UnknownChain(_))
    ));
    let imported: Address = payouts
        .import(
            &env.merchant.id,
            "base",
            &SecretString::from(
                "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        imported,
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse::<Address>()
            .unwrap()
    );
}

async fn a_chain_that_cannot_be_asked_is_said_so_per_wallet(backend: Backend) {
    let env = Env::with(Options::on(backend).without_chain()).await;
    env.state
        .gateway
        .payout_wallets
        .create(&env.merchant.id, "base-sepolia")
        .await
        .unwrap();
    let (status, answer) = wallets(&env, &env.api_key).await;
    assert_eq!(status, 200, "{answer}");
    let wallet = &answer["data"][0];
    assert_eq!(wallet["balances"], Value::Null);
    assert_eq!(wallet["error"], "the chain could not be asked; retry");
}

coffer_store::on_both_databases!(
    a_merchant_sees_its_own_wallets_and_what_the_chain_says_they_hold,
    a_chain_that_cannot_be_asked_is_said_so_per_wallet,
);
