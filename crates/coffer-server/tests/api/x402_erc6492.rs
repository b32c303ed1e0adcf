//! ERC-6492: a smart wallet that is not deployed yet pays through the facilitator on anvil.
//! Verification proves the signature counterfactually — the factory deploys the wallet inside
//! one `eth_call`, the wallet checks the inner signature, the token runs the transfer — and
//! deploys nothing. Settlement refuses, with a clear reason and nothing broadcast, until the
//! wallet is on chain; then the same signature settles, exactly once.

use std::ops::Deref;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use coffer_evm::testnet;
use coffer_gateway::facilitator_policy::FacilitatorPolicy;
use coffer_store::testing::Backend;
use coffer_x402::facilitator::erc6492;
use serde_json::{Value, json};

use crate::kit::{self, Auth, Options, PAY_TO, USDC, requirements_v2};

sol!(
    #[sol(rpc)]
    TestSmartWalletFactory,
    "../../contracts/artifacts/TestSmartWalletFactory.json"
);

/// The facilitator's environment: the kit's with an open access policy, the registry's
/// confirmations, no merchant payTo and nobody funded (the wallets are minted what they pay).
struct Env {
    kit: kit::Env,
}

impl Deref for Env {
    type Target = kit::Env;

    fn deref(&self) -> &kit::Env {
        &self.kit
    }
}

impl Env {
    async fn new(backend: Backend) -> Env {
        let options = Options::on(backend)
            .registry_confirmations()
            .payer_funds(0)
            .stranger_funds(0)
            .without_pay_to()
            .configure(|state| state.with_facilitator_policy(FacilitatorPolicy::open()));
        Env {
            kit: kit::Env::with(options).await,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let (status, reply) = self.kit.post(path, &[], body).await;
        assert_eq!(status, 200);
        reply
    }

    async fn has_code(&self, who: Address) -> bool {
        !self.chain.get_code_at(who).await.unwrap().is_empty()
    }

    async fn settlement_transactions(&self) -> u64 {
        self.signer_transactions().await
    }
}

fn v2_request(auth: &Auth, signature: &Bytes) -> Value {
    let requirements = requirements_v2(PAY_TO, auth.value);
    json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "resource": {"url": "http://127.0.0.1/paid"}, "accepted": requirements,
                           "payload": auth.payload_signed(&signature.to_string())},
        "paymentRequirements": requirements,
    })
}

fn v1_request(auth: &Auth, signature: &Bytes) -> Value {
    let v2 = v2_request(auth, signature);
    json!({
        "x402Version": 1,
        "paymentPayload": {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                           "payload": v2["paymentPayload"]["payload"]},
        "paymentRequirements": {"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": auth.value.to_string(),
            "resource": "http://127.0.0.1/paid", "description": "", "mimeType": "application/json",
            "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 60, "asset": USDC.to_checksum(None),
            "extra": {"name": "USDC", "version": "2"}},
    })
}

/// A counterfactual wallet of a fresh owner: its factory, address, and the factory call that
/// deploys it.
struct Counterfactual {
    owner: PrivateKeySigner,
    factory: Address,
    address: Address,
    deploy: Bytes,
}

impl Counterfactual {
    async fn new(env: &Env, factory: Address) -> Counterfactual {
        let owner = PrivateKeySigner::random();
        let salt = B256::from(rand::random::<[u8; 32]>());
        let address = TestSmartWalletFactory::new(factory, &env.chain)
            .walletAddress(owner.address(), salt)
            .call()
            .await
            .unwrap();
        let deploy = TestSmartWalletFactory::createWalletCall {
            walletOwner: owner.address(),
            salt,
        }
        .abi_encode()
        .into();
        Counterfactual {
            owner,
            factory,
            address,
            deploy,
        }
    }

    /// The ERC-6492 signature of `auth` by the wallet's owner.
    fn sign(&self, auth: &Auth) -> Bytes {
        erc6492::wrap(
            self.factory,
            self.deploy.clone(),
            auth.signature(&self.owner),
        )
    }
}

async fn an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed(
    backend: Backend,
) {
    let env = Env::new(backend).await;
    let factory = *TestSmartWalletFactory::deploy(&env.chain)
        .await
        .unwrap()
        .address();
    let wallet = Counterfactual::new(&env, factory).await;
    testnet::mint(&env.chain, USDC, wallet.address, U256::from(50_000u64))
        .await
        .unwrap();
    assert!(!env.has_code(wallet.address).await);

    // Valid in both versions, counterfactually.
    let auth = Auth::fresh(wallet.address, PAY_TO, 10_000);
    let signature = wallet.sign(&auth);
    let payer = wallet.address.to_checksum(None);
    let valid = json!({"isValid": true, "payer": payer});
    assert_eq!(
        env.post("/x402/verify", &v2_request(&auth, &signature))
            .await,
        valid
    );
    assert_eq!(
        env.post("/x402/verify", &v1_request(&auth, &signature))
            .await,
        valid
    );

    // The inner signature is always checked: a stranger's, wrapped with the real deployment,
    // is refused.
    let stranger = PrivateKeySigner::random();
    let forged = erc6492::wrap(factory, wallet.deploy.clone(), auth.signature(&stranger));
    let reply = env.post("/x402/verify", &v2_request(&auth, &forged)).await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    assert!(
        reply["invalidMessage"].as_str().unwrap().contains("inner"),
        "{reply}"
    );
    // A deployment of somebody else's wallet does not vouch for this one.
    let elsewhere = Counterfactual::new(&env, factory).await;
    let misdeployed = erc6492::wrap(
        factory,
        elsewhere.deploy.clone(),
        auth.signature(&wallet.owner),
    );
    let reply = env
        .post("/x402/verify", &v2_request(&auth, &misdeployed))
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    assert!(
        reply["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("does not deploy"),
        "{reply}"
    );
    // A factory call that reverts.
    let broken = erc6492::wrap(
        factory,
        Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        auth.signature(&wallet.owner),
    );
    let reply = env.post("/x402/verify", &v2_request(&auth, &broken)).await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    assert!(
        reply["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("factory call reverted"),
        "{reply}"
    );
    // The magic suffix on something that is not a wrapper.
    let mut garbage = vec![0xab; 40];
    garbage.extend_from_slice(erc6492::MAGIC.as_slice());
    let reply = env
        .post("/x402/verify", &v2_request(&auth, &Bytes::from(garbage)))
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    // The owner's bare signature, without the deployment, cannot be checked by anyone.
    let bare = auth.signature(&wallet.owner);
    let reply = env.post("/x402/verify", &v2_request(&auth, &bare)).await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    // Balance is proved counterfactually too.
    let too_much = Auth::fresh(wallet.address, PAY_TO, 60_000);
    let reply = env
        .post(
            "/x402/verify",
            &v2_request(&too_much, &wallet.sign(&too_much)),
        )
        .await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_insufficient_balance",
        "{reply}"
    );
    assert!(
        !env.has_code(wallet.address).await,
        "verification deploys nothing"
    );

    // Settlement refuses while the wallet is not on chain, and sends nothing.
    let request = v2_request(&auth, &signature);
    let refused = env.post("/x402/settle", &request).await;
    assert_eq!(
        refused,
        json!({"success": false, "errorReason": "invalid_exact_evm_payload_undeployed_smart_wallet",
               "errorMessage": refused["errorMessage"], "payer": payer,
               "transaction": "", "network": "eip155:84532"})
    );
    assert!(
        refused["errorMessage"]
            .as_str()
            .unwrap()
            .contains("deploy the wallet"),
        "{refused}"
    );
    assert_eq!(
        env.settlement_transactions().await,
        0,
        "nothing was broadcast"
    );
    assert!(!env.has_code(wallet.address).await);
    assert_eq!(env.balance(wallet.address).await, U256::from(50_000u64));

    // Anyone deploys the wallet with the signature's own factory call ...
    let deployed = env
        .chain
        .send_transaction(
            alloy::rpc::types::TransactionRequest::default()
                .to(factory)
                .input(wallet.deploy.clone().into()),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(deployed.status());
    assert!(env.has_code(wallet.address).await);

    // ... and the same ERC-6492 signature now verifies and settles, unwrapped, exactly once.
    assert_eq!(env.post("/x402/verify", &request).await, valid);
    let settled = env.post("/x402/settle", &request).await;
    assert_eq!(settled["success"], true, "{settled}");
    let hash: alloy::primitives::TxHash = settled["transaction"].as_str().unwrap().parse().unwrap();
    let receipt = env
        .chain
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .expect("mined");
    assert!(receipt.status());
    assert_eq!(env.balance(PAY_TO).await, U256::from(10_000u64));
    assert_eq!(env.balance(wallet.address).await, U256::from(40_000u64));
    let again = env
        .post("/x402/settle", &v1_request(&auth, &signature))
        .await;
    assert_eq!(again["transaction"], settled["transaction"], "{again}");
    assert_eq!(
        env.balance(PAY_TO).await,
        U256::from(10_000u64),
        "one transfer"
    );
    assert_eq!(env.settlement_transactions().await, 1);
}

coffer_store::on_both_databases!(
    backend: [
        an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed,
    ];
);
