//! The x402 facilitator against a real EIP-3009 token on anvil. `/x402/verify`: valid payments
//! in both wire versions, and each way a payment can be wrong, with its reason — and nothing is
//! ever broadcast by verification. `/x402/settle`: exactly one transfer per authorization,
//! however many calls, concurrent or repeated, or restarts in between.

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use coffer_evm::contracts::{IEip3009, TestSmartWallet};
use coffer_evm::testnet;
use coffer_gateway::facilitator_policy::FacilitatorPolicy;
use coffer_server::AppState;
use coffer_store::testing::Backend;
use coffer_x402::settlement::SettleOptions;
use serde_json::{Value, json};

use crate::kit::{
    self, Auth, CHAIN_ID, Env, Mined, Options, PAY_TO, USDC, interop, now, requirements_v2,
};

/// The facilitator alone: an open access policy, Multicall3, a payer with 5 USDC (and no
/// funds for the stranger, dev account 2), the registry's confirmations, and no merchant payTo.
async fn facilitator(backend: Backend) -> Env {
    let settle = SettleOptions {
        receipt_timeout: Duration::from_secs(2),
        ..SettleOptions::default()
    };
    facilitator_with(backend, settle).await
}

async fn facilitator_with(backend: Backend, settle: SettleOptions) -> Env {
    let options = Options::on(backend)
        .registry_confirmations()
        .payer_funds(5_000_000)
        .stranger_funds(0)
        .multicall3()
        .without_pay_to()
        .settle(settle)
        .configure(|state| state.with_facilitator_policy(FacilitatorPolicy::open()));
    Env::with(options).await
}

fn v2_request(auth: &Auth, signature: &str, amount: u64) -> Value {
    let requirements = requirements_v2(PAY_TO, amount);
    json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "resource": {"url": "http://127.0.0.1/paid"}, "accepted": requirements,
                           "payload": auth.payload_signed(signature)},
        "paymentRequirements": requirements,
    })
}

fn v1_request(auth: &Auth, signature: &str) -> Value {
    json!({
        "x402Version": 1,
        "paymentPayload": {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                           "payload": auth.payload_signed(signature)},
        "paymentRequirements": {"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": auth.value.to_string(),
            "resource": "http://127.0.0.1/paid", "description": "", "mimeType": "application/json",
            "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 60, "asset": USDC.to_checksum(None),
            "extra": {"name": "USDC", "version": "2"}},
    })
}

#[tokio::test]
async fn valid_payments_verify_in_both_versions_and_invalid_ones_say_why_without_any_transaction() {
    let env = facilitator(Backend::Sqlite).await;
    let payer = env.payer.clone();
    let nonce_before = env
        .chain
        .get_transaction_count(Address::ZERO)
        .await
        .unwrap();
    let block_before = env.chain.get_block_number().await.unwrap();

    let auth = Auth::fresh(payer.address(), PAY_TO, 10_000);
    let (status, reply) = env
        .verify(&v2_request(&auth, &auth.sign(&payer), 10_000))
        .await;
    assert_eq!(
        (status, reply.clone()),
        (
            200,
            json!({"isValid": true, "payer": payer.address().to_checksum(None)})
        )
    );
    let (status, reply) = env.verify(&v1_request(&auth, &auth.sign(&payer))).await;
    assert_eq!(
        (status, reply["isValid"].as_bool()),
        (200, Some(true)),
        "{reply}"
    );

    let other = PrivateKeySigner::random();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "bad signature",
            v2_request(&auth, &auth.sign(&other), 10_000),
            "invalid_exact_evm_signature",
        ),
        (
            "expired",
            {
                let a = Auth {
                    valid_before: now() + 2,
                    ..Auth::fresh(payer.address(), PAY_TO, 10_000)
                };
                v2_request(&a, &a.sign(&payer), 10_000)
            },
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
        (
            "not yet valid",
            {
                let a = Auth {
                    valid_after: now() + 60,
                    ..Auth::fresh(payer.address(), PAY_TO, 10_000)
                };
                v2_request(&a, &a.sign(&payer), 10_000)
            },
            "invalid_exact_evm_payload_authorization_valid_after",
        ),
        (
            "wrong recipient",
            {
                let a = Auth {
                    to: other.address(),
                    ..Auth::fresh(payer.address(), PAY_TO, 10_000)
                };
                v2_request(&a, &a.sign(&payer), 10_000)
            },
            "invalid_exact_evm_recipient_mismatch",
        ),
        (
            "wrong amount",
            v2_request(&auth, &auth.sign(&payer), 20_000),
            "invalid_exact_evm_authorization_value",
        ),
        (
            "insufficient balance",
            {
                let a = Auth::fresh(payer.address(), PAY_TO, 9_000_000);
                v2_request(&a, &a.sign(&payer), 9_000_000)
            },
            "invalid_exact_evm_insufficient_balance",
        ),
        (
            "unknown asset",
            {
                let mut request = v2_request(&auth, &auth.sign(&payer), 10_000);
                request["paymentRequirements"]["asset"] =
                    json!("0x1111111111111111111111111111111111111111");
                request["paymentPayload"]["accepted"]["asset"] =
                    json!("0x1111111111111111111111111111111111111111");
                request
            },
            "invalid_exact_evm_asset_not_supported",
        ),
        (
            "unknown network",
            {
                let mut request = v2_request(&auth, &auth.sign(&payer), 10_000);
                request["paymentRequirements"]["network"] = json!("eip155:999999");
                request["paymentPayload"]["accepted"]["network"] = json!("eip155:999999");
                request
            },
            "invalid_exact_evm_network_mismatch",
        ),
        (
            "wrong domain name",
            {
                let a = Auth::fresh(payer.address(), PAY_TO, 10_000);
                let signature = payer.sign_hash_sync(&a.hash("USD Coin")).unwrap();
                let mut request = v2_request(
                    &a,
                    &format!("0x{}", alloy::hex::encode(signature.as_bytes())),
                    10_000,
                );
                request["paymentRequirements"]["extra"]["name"] = json!("USD Coin");
                request["paymentPayload"]["accepted"]["extra"]["name"] = json!("USD Coin");
                request
            },
            "invalid_exact_evm_token_name_mismatch",
        ),
        (
            "no EIP-712 domain",
            {
                let mut request = v2_request(&auth, &auth.sign(&payer), 10_000);
                request["paymentRequirements"]
                    .as_object_mut()
                    .unwrap()
                    .remove("extra");
                request
            },
            "invalid_exact_evm_missing_eip712_domain",
        ),
        (
            "not exact",
            {
                let mut request = v2_request(&auth, &auth.sign(&payer), 10_000);
                request["paymentRequirements"]["scheme"] = json!("upto");
                request
            },
            "invalid_exact_evm_scheme",
        ),
    ];
    for (case, request, reason) in cases {
        let (status, reply) = env.verify(&request).await;
        assert_eq!(status, 200, "{case}: {reply}");
        assert_eq!(reply["isValid"], false, "{case}: {reply}");
        assert_eq!(reply["invalidReason"], reason, "{case}: {reply}");
    }

    // A high-s twin of a valid signature recovers to the payer, but tokens refuse it.
    let signature = payer.sign_hash_sync(&auth.hash("USDC")).unwrap();
    let n = U256::from_str_radix(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        16,
    )
    .unwrap();
    let high = alloy::primitives::Signature::new(signature.r(), n - signature.s(), !signature.v());
    let (_, reply) = env
        .verify(&v2_request(
            &auth,
            &format!("0x{}", alloy::hex::encode(high.as_bytes())),
            10_000,
        ))
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );

    // Malformed requests get 400 with a reason naming the problem.
    for body in ["{", "{\"x402Version\":2}", "[]"] {
        let response = reqwest::Client::new()
            .post(format!("{}/x402/verify", env.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["isValid"], false);
        assert!(reply["invalidMessage"].is_string());
    }

    // Verification never sent a transaction.
    assert_eq!(env.chain.get_block_number().await.unwrap(), block_before);
    assert_eq!(
        env.chain
            .get_transaction_count(Address::ZERO)
            .await
            .unwrap(),
        nonce_before
    );

    // Once the authorization is used on chain, the same payment is a reused nonce.
    let v = 27 + u8::from(signature.v());
    let relayer = testnet::dev_account(5).unwrap();
    let relaying = ProviderBuilder::new()
        .wallet(EthereumWallet::from(relayer))
        .connect_http(env.anvil_url().parse().unwrap());
    let m = auth.message();
    IEip3009::new(USDC, &relaying)
        .transferWithAuthorization_0(
            m.from,
            m.to,
            m.value,
            m.validAfter,
            m.validBefore,
            m.nonce,
            v,
            signature.r().into(),
            signature.s().into(),
        )
        .mined()
        .await;
    let (_, reply) = env
        .verify(&v2_request(&auth, &auth.sign(&payer), 10_000))
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_nonce_already_used",
        "{reply}"
    );
}

#[tokio::test]
async fn a_contract_wallet_pays_with_an_erc1271_signature() {
    let env = facilitator(Backend::Sqlite).await;
    let owner = testnet::dev_account(2).unwrap();
    let wallet = TestSmartWallet::deploy(&env.chain, owner.address())
        .await
        .unwrap();
    testnet::mint(&env.chain, USDC, *wallet.address(), U256::from(50_000u64))
        .await
        .unwrap();
    let auth = Auth::fresh(*wallet.address(), PAY_TO, 10_000);
    // The wallet vouches (ERC-1271) for a signature by its owner over the EIP-712 hash.
    let (_, reply) = env
        .verify(&v2_request(&auth, &auth.sign(&owner), 10_000))
        .await;
    assert_eq!(
        reply,
        json!({"isValid": true, "payer": wallet.address().to_checksum(None)})
    );
    let stranger = PrivateKeySigner::random();
    let (_, reply) = env
        .verify(&v2_request(&auth, &auth.sign(&stranger), 10_000))
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
}

#[tokio::test]
async fn supported_lists_both_versions_of_each_configured_chain() {
    let env = facilitator(Backend::Sqlite).await;
    let reply: Value = reqwest::get(format!("{}/x402/supported", env.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reply["kinds"],
        json!([{"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}, {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"}])
    );
    let signer = testnet::dev_account(9).unwrap().address().to_checksum(None);
    assert_eq!(reply["signers"], json!({"eip155:*": [signer]}));
}

async fn a_payment_settles_once_and_repeats_answer_the_same_transaction(backend: Backend) {
    let env = facilitator(backend).await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 250_000);
    let request = v2_request(&auth, &auth.sign(&env.payer), 250_000);
    let payer_before = env.balance(env.payer.address()).await;
    let (status, first) = env.settle(&request).await;
    assert_eq!(status, 200);
    assert_eq!(first["success"], true, "{first}");
    assert_eq!(first["network"], "eip155:84532");
    assert_eq!(first["payer"], env.payer.address().to_checksum(None));
    let hash: alloy::primitives::TxHash = first["transaction"].as_str().unwrap().parse().unwrap();
    let receipt = env
        .chain
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .expect("mined");
    assert!(receipt.status());
    assert_eq!(env.balance(PAY_TO).await, U256::from(250_000u64));
    assert_eq!(
        payer_before - env.balance(env.payer.address()).await,
        U256::from(250_000u64)
    );

    let (_, again) = env.settle(&request).await;
    assert_eq!(again, first, "a repeat answers the same settlement");
    let (_, v1) = env.settle(&v1_request(&auth, &auth.sign(&env.payer))).await;
    assert_eq!(
        (v1["success"].as_bool(), v1["transaction"].as_str()),
        (Some(true), first["transaction"].as_str())
    );
    assert_eq!(
        env.balance(PAY_TO).await,
        U256::from(250_000u64),
        "still one transfer"
    );

    // An invalid payment is refused before anything is written or sent.
    let stranger = PrivateKeySigner::random();
    let bad = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let (_, refused) = env
        .settle(&v2_request(&bad, &bad.sign(&stranger), 1_000))
        .await;
    assert_eq!(
        refused,
        json!({"success": false, "errorReason": "invalid_exact_evm_signature",
        "errorMessage": refused["errorMessage"], "payer": env.payer.address().to_checksum(None),
        "transaction": "", "network": "eip155:84532"})
    );
}

async fn two_hundred_concurrent_settles_of_one_authorization_make_one_transfer(backend: Backend) {
    let env = std::sync::Arc::new(facilitator(backend).await);
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 100_000);
    let request = std::sync::Arc::new(v2_request(&auth, &auth.sign(&env.payer), 100_000));
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (env, request) = (env.clone(), request.clone());
            tokio::spawn(async move { env.settle(&request).await.1 })
        })
        .collect();
    let mut hashes = std::collections::BTreeSet::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply["success"], true, "{reply}");
        hashes.insert(reply["transaction"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        hashes.len(),
        1,
        "every caller got the same transaction: {hashes:?}"
    );
    assert_eq!(env.balance(PAY_TO).await, U256::from(100_000u64));
    let signer = testnet::dev_account(9).unwrap().address();
    assert_eq!(
        env.chain.get_transaction_count(signer).await.unwrap(),
        1,
        "one broadcast"
    );
}

/// Two Coffer processes on one database and one signer (a second server over the same store),
/// 50 settles of one authorization sent to each at once: one transfer, and every caller is
/// answered with it. The journal, not a process's memory, makes a settlement happen once.
async fn two_settlers_on_one_database_settle_an_authorization_once(backend: Backend) {
    let env = std::sync::Arc::new(facilitator(backend).await);
    let registry = kit::registry(&[("base-sepolia", kit::rpc(&[env.anvil_url()], None))]);
    let (second, _) = kit::serve(|base| {
        AppState::new(env.db.store.clone(), registry, base)
            .unwrap()
            .with_settlement(
                vec![env.signer.clone()],
                SettleOptions {
                    receipt_timeout: Duration::from_secs(5),
                    ..SettleOptions::default()
                },
            )
            .with_facilitator_policy(FacilitatorPolicy::open())
    })
    .await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 70_000);
    let request = std::sync::Arc::new(v2_request(&auth, &auth.sign(&env.payer), 70_000));
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let base = if i % 2 == 0 {
                env.base.clone()
            } else {
                second.clone()
            };
            let (client, request) = (client.clone(), request.clone());
            tokio::spawn(async move {
                let answer = client
                    .post(format!("{base}/x402/settle"))
                    .json(&*request)
                    .send()
                    .await
                    .unwrap();
                answer.json::<Value>().await.unwrap()
            })
        })
        .collect();
    let mut hashes = std::collections::BTreeSet::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply["success"], true, "{reply}");
        hashes.insert(reply["transaction"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        hashes.len(),
        1,
        "one transaction for every caller: {hashes:?}"
    );
    assert_eq!(
        env.balance(PAY_TO).await,
        U256::from(70_000u64),
        "paid once"
    );
    let signer = testnet::dev_account(9).unwrap().address();
    assert_eq!(
        env.chain.get_transaction_count(signer).await.unwrap(),
        1,
        "one broadcast"
    );
}

async fn a_thousand_distinct_authorizations_settle_concurrently_without_nonce_errors(
    backend: Backend,
) {
    let env = std::sync::Arc::new(facilitator(backend).await);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let env = env.clone();
            let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
            let request = v2_request(&auth, &auth.sign(&env.payer), 1_000);
            tokio::spawn(async move { env.settle(&request).await.1 })
        })
        .collect();
    let mut transactions = std::collections::BTreeSet::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply["success"], true, "{reply}");
        transactions.insert(reply["transaction"].as_str().unwrap().to_owned());
    }
    assert_eq!(env.balance(PAY_TO).await, U256::from(1_000_000u64));
    let signer = testnet::dev_account(9).unwrap().address();
    let sent = env.chain.get_transaction_count(signer).await.unwrap();
    assert_eq!(
        usize::try_from(sent).unwrap(),
        transactions.len(),
        "every transaction sent is one some caller was given"
    );
    assert!(
        transactions.len() < 1000,
        "batches carried several settlements: {} transactions",
        transactions.len()
    );
}

async fn settlements_arriving_together_share_one_multicall_transaction_and_one_failing_call_fails_alone(
    backend: Backend,
) {
    let env = std::sync::Arc::new(
        facilitator_with(
            backend,
            SettleOptions {
                receipt_timeout: Duration::from_secs(5),
                batch_window: Duration::from_millis(400),
                ..SettleOptions::default()
            },
        )
        .await,
    );
    // A second payer holds 0.7 USDC and signs two 0.6 USDC authorizations: each one alone is
    // valid (and simulates), together they overdraw, so one call in the batch must fail.
    let short = testnet::dev_account(2).unwrap();
    testnet::mint(&env.chain, USDC, short.address(), U256::from(700_000u64))
        .await
        .unwrap();
    let mut requests = Vec::new();
    for _ in 0..5 {
        let auth = Auth::fresh(env.payer.address(), PAY_TO, 100_000);
        requests.push(v2_request(&auth, &auth.sign(&env.payer), 100_000));
    }
    for _ in 0..2 {
        let auth = Auth::fresh(short.address(), PAY_TO, 600_000);
        requests.push(v2_request(&auth, &auth.sign(&short), 600_000));
    }
    let calls: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let env = env.clone();
            tokio::spawn(async move { env.settle(&request).await.1 })
        })
        .collect();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap());
    }
    let transactions: std::collections::BTreeSet<&str> = replies
        .iter()
        .map(|reply| reply["transaction"].as_str().unwrap())
        .collect();
    assert_eq!(
        transactions.len(),
        1,
        "one transaction for all: {replies:?}"
    );
    let succeeded = replies.iter().filter(|r| r["success"] == true).count();
    assert_eq!(succeeded, 6, "{replies:?}");
    let failed: Vec<_> = replies.iter().filter(|r| r["success"] == false).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["errorReason"],
        "invalid_exact_evm_transaction_failed"
    );
    assert_eq!(failed[0]["payer"], short.address().to_checksum(None));

    let signer = testnet::dev_account(9).unwrap().address();
    assert_eq!(env.chain.get_transaction_count(signer).await.unwrap(), 1);
    let hash: alloy::primitives::TxHash = transactions.first().unwrap().parse().unwrap();
    let mined = env
        .chain
        .get_transaction_by_hash(hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        alloy::consensus::Transaction::to(mined.inner.inner()),
        Some(coffer_evm::contracts::MULTICALL3)
    );
    assert_eq!(
        env.balance(PAY_TO).await,
        U256::from(5 * 100_000u64 + 600_000)
    );
    assert_eq!(env.balance(short.address()).await, U256::from(100_000u64));
}

async fn a_stuck_settlement_is_replaced_with_higher_fees_and_resolves_to_the_mined_one(
    backend: Backend,
) {
    let env = facilitator_with(
        backend,
        SettleOptions {
            receipt_timeout: Duration::from_millis(300),
            bump_after: Duration::ZERO,
            ..SettleOptions::default()
        },
    )
    .await;
    env.chain.anvil_set_auto_mine(false).await.unwrap();
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 31_000);
    let request = v2_request(&auth, &auth.sign(&env.payer), 31_000);
    let (_, pending) = env.settle(&request).await;
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let first: alloy::primitives::TxHash =
        pending["transaction"].as_str().unwrap().parse().unwrap();

    // Still in the pool with no receipt: replaced at the same nonce with higher fees.
    assert_eq!(env.state.gateway.settler.reconcile().await.unwrap(), 0);
    let row = env
        .state
        .gateway
        .settler
        .status_of(&format!("{first:#x}"))
        .await
        .unwrap()
        .expect("the first hash still finds its settlement");
    let replacement: alloy::primitives::TxHash = row.tx_hash.unwrap().parse().unwrap();
    assert_ne!(replacement, first, "a replacement was journaled");
    // The node forgets a replaced transaction, so the journal is where both are compared.
    let signer = testnet::dev_account(9).unwrap().address();
    let journaled = env
        .state
        .gateway
        .store
        .transactions_at_nonce(CHAIN_ID, &format!("{signer:#x}"), 0)
        .await
        .unwrap();
    let hashes: Vec<&str> = journaled.iter().map(|(hash, _)| hash.as_str()).collect();
    assert_eq!(
        hashes,
        [format!("{first:#x}"), format!("{replacement:#x}")],
        "the first transaction and its replacement, oldest first"
    );
    let decode = |raw: &str| {
        use alloy::eips::eip2718::Decodable2718;
        let bytes = alloy::hex::decode(raw).unwrap();
        alloy::consensus::TxEnvelope::decode_2718(&mut bytes.as_slice()).unwrap()
    };
    let (old, new) = (decode(&journaled[0].1), decode(&journaled[1].1));
    {
        use alloy::consensus::Transaction as _;
        assert_eq!(new.nonce(), old.nonce(), "the same signer nonce");
        assert!(
            new.max_fee_per_gas() > old.max_fee_per_gas(),
            "{} then {}",
            old.max_fee_per_gas(),
            new.max_fee_per_gas()
        );
        assert!(new.max_priority_fee_per_gas() > old.max_priority_fee_per_gas());
        assert_eq!(
            (new.to(), new.input()),
            (old.to(), old.input()),
            "the same call"
        );
    }

    env.chain.anvil_mine(Some(1), None).await.unwrap();
    assert_eq!(env.state.gateway.settler.reconcile().await.unwrap(), 1);
    let (_, done) = env.settle(&request).await;
    assert_eq!(
        (done["success"].as_bool(), done["transaction"].as_str()),
        (Some(true), Some(format!("{replacement:#x}").as_str()))
    );
    assert!(
        env.chain
            .get_transaction_receipt(first)
            .await
            .unwrap()
            .is_none(),
        "the replaced transaction was never mined"
    );
    assert_eq!(env.balance(PAY_TO).await, U256::from(31_000u64));
    assert_eq!(env.chain.get_transaction_count(signer).await.unwrap(), 1);
}

async fn a_fee_above_the_cap_sends_nothing_and_leaves_the_authorization_free(backend: Backend) {
    let env = facilitator_with(
        backend,
        SettleOptions {
            max_fee_per_gas: 1,
            ..SettleOptions::default()
        },
    )
    .await;
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 27_000);
    let request = v2_request(&auth, &auth.sign(&env.payer), 27_000);
    for attempt in 0..2 {
        let (_, refused) = env.settle(&request).await;
        assert_eq!(refused["success"], false, "{refused}");
        assert_eq!(
            refused["errorReason"], "unexpected_settle_error",
            "{refused}"
        );
        assert_eq!(refused["transaction"], "", "{refused}");
        let message = refused["errorMessage"].as_str().unwrap();
        assert!(message.contains("above the cap 1"), "{attempt}: {message}");
    }
    let signer = testnet::dev_account(9).unwrap().address();
    assert_eq!(env.chain.get_transaction_count(signer).await.unwrap(), 0);
    assert_eq!(env.balance(PAY_TO).await, U256::ZERO);
    let used = IEip3009::new(USDC, &env.chain)
        .authorizationState(auth.from, auth.nonce)
        .call()
        .await
        .unwrap();
    assert!(!used, "the authorization is still the payer's");
    assert!(
        env.state
            .gateway
            .store
            .next_signer_nonce(CHAIN_ID, &format!("{signer:#x}"))
            .await
            .unwrap()
            .is_none(),
        "nothing was journaled"
    );
}

async fn a_settlement_interrupted_after_broadcast_resolves_to_its_one_transaction(
    backend: Backend,
) {
    let env = facilitator(backend).await;
    env.chain.anvil_set_auto_mine(false).await.unwrap();
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 42_000);
    let request = v2_request(&auth, &auth.sign(&env.payer), 42_000);

    // The receipt wait runs out: pending, with the hash, never a plain failure.
    let (_, pending) = env.settle(&request).await;
    assert_eq!(pending["success"], false);
    assert_eq!(pending["errorReason"], "settlement_pending", "{pending}");
    let hash = pending["transaction"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 66);

    // "Restart": a new settler over the same journal; the node also lost the transaction.
    let signer = testnet::dev_account(9).unwrap();
    let restarted = AppState::new(
        env.state.gateway.store.clone(),
        env.state.gateway.chains.as_ref().clone(),
        &env.base,
    )
    .unwrap()
    .with_settlement(
        vec![signer.clone()],
        SettleOptions {
            receipt_timeout: Duration::from_millis(300),
            ..SettleOptions::default()
        },
    );
    env.chain
        .anvil_drop_transaction(hash.parse().unwrap())
        .await
        .unwrap();
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let parsed = coffer_x402::wire::PaymentRequest::parse(request.to_string().as_bytes()).unwrap();
    let again = restarted.gateway.settler.settle(&parsed, now).await;
    assert_eq!(
        (again.error_reason.as_deref(), again.transaction.as_str()),
        (Some("settlement_pending"), hash.as_str())
    );

    // Reconciliation rebroadcasts the journaled transaction; once mined, it resolves.
    assert_eq!(restarted.gateway.settler.reconcile().await.unwrap(), 0);
    env.chain.anvil_mine(Some(1), None).await.unwrap();
    assert_eq!(restarted.gateway.settler.reconcile().await.unwrap(), 1);
    let done = restarted.gateway.settler.settle(&parsed, now).await;
    assert_eq!(
        (done.success, done.transaction.as_str()),
        (true, hash.as_str())
    );
    assert_eq!(env.balance(PAY_TO).await, U256::from(42_000u64));
    assert_eq!(
        env.chain
            .get_transaction_count(signer.address())
            .await
            .unwrap(),
        1,
        "never a second broadcast"
    );
}

/// Runs an official client (npm or PyPI) to build a payment payload.
fn official_payload(client: &str, version: u8, private_key: &str, requirements: &Value) -> Value {
    let input = json!({"version": version, "privateKey": private_key, "requirements": requirements, "resource": "http://127.0.0.1/paid"});
    interop(client, "x402_client", &input)
}

#[tokio::test]
async fn payments_built_by_the_official_npm_and_pypi_clients_verify_and_settle() {
    let env = facilitator(Backend::Sqlite).await;
    let key = format!("0x{}", alloy::hex::encode(env.payer.to_bytes()));
    let v2 = json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": USDC.to_checksum(None),
        "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}});
    let v1 = json!({"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000", "resource": "http://127.0.0.1/paid",
        "description": "", "mimeType": "application/json", "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None),
        "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}});
    let mut paid = U256::ZERO;
    for (client, version, requirements) in [
        ("npm", 2, &v2),
        ("npm", 1, &v1),
        ("pypi", 2, &v2),
        ("pypi", 1, &v1),
    ] {
        let payload = official_payload(client, version, &key, requirements);
        let request = json!({"x402Version": version, "paymentPayload": payload, "paymentRequirements": requirements});
        let (_, verified) = env.verify(&request).await;
        assert_eq!(verified["isValid"], true, "{client} v{version}: {verified}");
        let payer_before = env.balance(env.payer.address()).await;
        let (_, settled) = env.settle(&request).await;
        assert_eq!(settled["success"], true, "{client} v{version}: {settled}");
        assert_eq!(settled["network"], requirements["network"]);
        paid += U256::from(10_000u64);
        assert_eq!(
            env.balance(PAY_TO).await,
            paid,
            "{client} v{version}: the payee got exactly the amount"
        );
        assert_eq!(
            payer_before - env.balance(env.payer.address()).await,
            U256::from(10_000u64)
        );
    }
}

/// Sends a request signed like OKX's SDKs.
async fn okx_call(
    env: &Env,
    method: &str,
    path: &str,
    body: &str,
    credential: (&str, &str, &str),
    timestamp: Option<String>,
) -> (u16, Value) {
    let (key, secret, passphrase) = credential;
    let timestamp = timestamp
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let signature = coffer_gateway::okx::sign(secret, &timestamp, method, path, body.as_bytes());
    let client = reqwest::Client::new();
    let request = if method == "GET" {
        client.get(format!("{}{path}", env.base))
    } else {
        client
            .post(format!("{}{path}", env.base))
            .body(body.to_owned())
    };
    let response = request
        .header("Content-Type", "application/json")
        .header("OK-ACCESS-KEY", key)
        .header("OK-ACCESS-SIGN", signature)
        .header("OK-ACCESS-PASSPHRASE", passphrase)
        .header("OK-ACCESS-TIMESTAMP", timestamp)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn okx_dialects_verify_and_settle_with_signed_requests_and_refuse_bad_credentials() {
    let env = facilitator(Backend::Sqlite).await;
    let merchant = env
        .state
        .gateway
        .merchants
        .create("OKX Shop", None)
        .await
        .unwrap();
    let created = env.state.gateway.okx.create(&merchant.id).await.unwrap();
    let credential = (
        created.access_key.as_str(),
        coffer_gateway::okx::expose(&created.secret),
        coffer_gateway::okx::expose(&created.passphrase),
    );

    // Legacy generation: string code, data array, chainIndex, the seed's body shape (no
    // network, no EIP-712 domain in `extra`, chainIndex as a number).
    let (status, supported) =
        okx_call(&env, "GET", "/api/v6/x402/supported", "", credential, None).await;
    assert_eq!(status, 200);
    assert_eq!(supported["code"], "0");
    assert_eq!(
        supported["data"],
        json!([{"x402Version": 1, "scheme": "exact", "chainIndex": "84532", "chainName": "Base Sepolia"}])
    );
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 1_000_000);
    let body = json!({
        "x402Version": 1, "chainIndex": 84532,
        "paymentPayload": {"x402Version": 1, "scheme": "exact", "payload": {"signature": auth.sign(&env.payer), "authorization": auth.authorization()}},
        "paymentRequirements": {"scheme": "exact", "maxAmountRequired": "1000000", "resource": "https://api.example.com/premium/resource/123",
            "description": "Premium API access for data analysis", "mimeType": "application/json", "outputSchema": {"data": "string"},
            "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 10, "asset": USDC.to_checksum(None), "extra": {"gasLimit": "1000000"}},
    })
    .to_string();
    let (_, verified) =
        okx_call(&env, "POST", "/api/v6/x402/verify", &body, credential, None).await;
    assert_eq!(verified["code"], "0");
    assert_eq!(verified["data"][0]["isValid"], true, "{verified}");
    let (_, settled) = okx_call(&env, "POST", "/api/v6/x402/settle", &body, credential, None).await;
    let data = &settled["data"][0];
    assert_eq!(
        (
            data["success"].as_bool(),
            data["chainIndex"].as_str(),
            data["chainName"].as_str()
        ),
        (Some(true), Some("84532"), Some("Base Sepolia")),
        "{settled}"
    );
    assert_eq!(data["txHash"].as_str().unwrap().len(), 66);
    assert_eq!(env.balance(PAY_TO).await, U256::from(1_000_000u64));

    // Current generation: numeric code, v2 body, syncSettle, settle/status.
    let (_, supported) = okx_call(
        &env,
        "GET",
        "/api/v6/pay/x402/supported",
        "",
        credential,
        None,
    )
    .await;
    assert_eq!(supported["code"], 0);
    assert_eq!(
        supported["data"]["kinds"],
        json!([{"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}])
    );
    let auth = Auth::fresh(env.payer.address(), PAY_TO, 30_000);
    let mut request = v2_request(&auth, &auth.sign(&env.payer), 30_000);
    request["syncSettle"] = json!(true);
    let (_, verified) = okx_call(
        &env,
        "POST",
        "/api/v6/pay/x402/verify",
        &request.to_string(),
        credential,
        None,
    )
    .await;
    assert_eq!(verified["data"]["isValid"], true, "{verified}");
    let (_, settled) = okx_call(
        &env,
        "POST",
        "/api/v6/pay/x402/settle",
        &request.to_string(),
        credential,
        None,
    )
    .await;
    assert_eq!(
        (settled["code"].as_u64(), settled["data"]["status"].as_str()),
        (Some(0), Some("success")),
        "{settled}"
    );
    let hash = settled["data"]["transaction"].as_str().unwrap();
    let path = format!("/api/v6/pay/x402/settle/status?txHash={hash}");
    let (_, status) = okx_call(&env, "GET", &path, "", credential, None).await;
    assert_eq!(
        (
            status["data"]["status"].as_str(),
            status["data"]["success"].as_bool()
        ),
        (Some("success"), Some(true)),
        "{status}"
    );

    // Bad credentials get OKX's codes, in each generation's envelope.
    let stale = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let cases = [
        (("", credential.1, credential.2), None, "50103"),
        ((credential.0, credential.1, ""), None, "50104"),
        ((credential.0, credential.1, "wrong"), None, "50105"),
        (
            (credential.0, "not-the-secret", credential.2),
            None,
            "50113",
        ),
        (credential, Some(stale), "50112"),
        (
            (
                "00000000-0000-0000-0000-000000000000",
                credential.1,
                credential.2,
            ),
            None,
            "50111",
        ),
    ];
    for (bad, timestamp, code) in cases {
        let (status, reply) = okx_call(
            &env,
            "POST",
            "/api/v6/x402/verify",
            &body,
            bad,
            timestamp.clone(),
        )
        .await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (401, Some(code)),
            "{reply}"
        );
        let (status, reply) = okx_call(
            &env,
            "GET",
            "/api/v6/pay/x402/supported",
            "",
            bad,
            timestamp,
        )
        .await;
        assert_eq!(
            (status, reply["code"].as_u64()),
            (401, code.parse::<u64>().ok()),
            "{reply}"
        );
    }
    env.state.gateway.okx.revoke(credential.0).await.unwrap();
    let (status, reply) =
        okx_call(&env, "GET", "/api/v6/x402/supported", "", credential, None).await;
    assert_eq!((status, reply["code"].as_str()), (401, Some("50111")));
}

// The money paths run on both databases; verification and the dialects, which write nothing
// the journal decides, on SQLite.
coffer_store::on_both_databases!(
    backend: [
        a_payment_settles_once_and_repeats_answer_the_same_transaction,
        settlements_arriving_together_share_one_multicall_transaction_and_one_failing_call_fails_alone,
        a_stuck_settlement_is_replaced_with_higher_fees_and_resolves_to_the_mined_one,
        a_fee_above_the_cap_sends_nothing_and_leaves_the_authorization_free,
        a_settlement_interrupted_after_broadcast_resolves_to_its_one_transaction,
    ];
    threaded_backend: [
        two_settlers_on_one_database_settle_an_authorization_once,
        two_hundred_concurrent_settles_of_one_authorization_make_one_transfer,
        a_thousand_distinct_authorizations_settle_concurrently_without_nonce_errors,
    ];
);
