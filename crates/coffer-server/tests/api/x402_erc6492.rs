//! ERC-6492: a smart wallet that is not deployed yet pays through the facilitator on anvil.
//! Verification proves the signature counterfactually — the factory deploys the wallet inside
//! one `eth_call`, the wallet checks the inner signature, the token runs the transfer — and
//! deploys nothing. Settlement refuses, with a clear reason and nothing broadcast, until the
//! wallet is on chain; then the same signature settles, exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolCall, SolStruct};
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::{IEip3009, TransferWithAuthorization};
use coffer_evm::testnet::{self, UsdcSpec};
use coffer_server::AppState;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_x402::facilitator::erc6492;
use coffer_x402::settlement::SettleOptions;
use serde_json::{Value, json};

sol!(
    #[sol(rpc)]
    TestSmartWalletFactory,
    "../../contracts/artifacts/TestSmartWalletFactory.json"
);

const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");

struct Env {
    _anvil: Anvil,
    chain: DynProvider,
    base: String,
    settlement_signer: Address,
    _db: TestDatabase,
}

impl Env {
    async fn new(backend: Backend) -> Env {
        let binary =
            anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
        let anvil = Anvil::start(&AnvilOptions {
            binary,
            chain_id: 84_532,
            port: 0,
            state_file: None,
            block_time: None,
        })
        .await
        .unwrap();
        let owner = testnet::dev_account(0).unwrap();
        let chain = ProviderBuilder::new()
            .wallet(EthereumWallet::from(owner.clone()))
            .connect_http(anvil.url().parse().unwrap())
            .erased();
        let spec = UsdcSpec {
            name: "USDC".into(),
            version: "2".into(),
            symbol: "USDC".into(),
            decimals: 6,
            owner: owner.address(),
        };
        testnet::install_usdc_at(&chain, USDC, &spec).await.unwrap();
        let mut registry = ChainRegistry::builtin();
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "base-sepolia".to_owned(),
            ChainOverride {
                rpc_urls: vec![anvil.url().to_owned()],
                ..Default::default()
            },
        );
        registry.apply(&overrides).unwrap();
        let db = TestDatabase::new(backend).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let signer = testnet::dev_account(9).unwrap();
        let settlement_signer = signer.address();
        let options = SettleOptions {
            receipt_timeout: Duration::from_secs(5),
            ..SettleOptions::default()
        };
        let state = AppState::new(db.store.clone(), registry, &base)
            .unwrap()
            .with_settlement(vec![signer], options)
            .with_facilitator_policy(coffer_gateway::facilitator_policy::FacilitatorPolicy::open());
        tokio::spawn(coffer_server::serve(
            listener,
            coffer_server::router(state),
            std::future::pending(),
        ));
        Env {
            _anvil: anvil,
            chain,
            base,
            settlement_signer,
            _db: db,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }

    async fn balance(&self, who: Address) -> U256 {
        IEip3009::new(USDC, &self.chain)
            .balanceOf(who)
            .call()
            .await
            .unwrap()
    }

    async fn has_code(&self, who: Address) -> bool {
        !self.chain.get_code_at(who).await.unwrap().is_empty()
    }

    async fn settlement_transactions(&self) -> u64 {
        self.chain
            .get_transaction_count(self.settlement_signer)
            .await
            .unwrap()
    }
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

fn authorization(from: Address, value: u64) -> TransferWithAuthorization {
    TransferWithAuthorization {
        from,
        to: PAY_TO,
        value: U256::from(value),
        validAfter: U256::from(now() - 600),
        validBefore: U256::from(now() + 300),
        nonce: B256::from(rand::random::<[u8; 32]>()),
    }
}

fn signed_by(signer: &PrivateKeySigner, auth: &TransferWithAuthorization) -> Bytes {
    let domain = Eip712Domain::new(
        Some("USDC".into()),
        Some("2".into()),
        Some(U256::from(84_532)),
        Some(USDC),
        None,
    );
    let signature = signer
        .sign_hash_sync(&auth.eip712_signing_hash(&domain))
        .unwrap();
    Bytes::from(signature.as_bytes().to_vec())
}

fn v2_request(auth: &TransferWithAuthorization, signature: &Bytes) -> Value {
    let requirements = json!({
        "scheme": "exact", "network": "eip155:84532", "amount": auth.value.to_string(),
        "asset": USDC.to_checksum(None), "payTo": PAY_TO.to_checksum(None), "maxTimeoutSeconds": 300,
        "extra": {"name": "USDC", "version": "2"}
    });
    let authorization = json!({
        "from": auth.from.to_checksum(None), "to": auth.to.to_checksum(None),
        "value": auth.value.to_string(), "validAfter": auth.validAfter.to_string(),
        "validBefore": auth.validBefore.to_string(), "nonce": format!("{:#x}", auth.nonce),
    });
    json!({
        "x402Version": 2,
        "paymentPayload": {"x402Version": 2, "resource": {"url": "http://127.0.0.1/paid"}, "accepted": requirements,
                           "payload": {"signature": signature.to_string(), "authorization": authorization}},
        "paymentRequirements": requirements,
    })
}

fn v1_request(auth: &TransferWithAuthorization, signature: &Bytes) -> Value {
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
    fn sign(&self, auth: &TransferWithAuthorization) -> Bytes {
        erc6492::wrap(
            self.factory,
            self.deploy.clone(),
            signed_by(&self.owner, auth),
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
    let auth = authorization(wallet.address, 10_000);
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
    let forged = erc6492::wrap(factory, wallet.deploy.clone(), signed_by(&stranger, &auth));
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
        signed_by(&wallet.owner, &auth),
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
        signed_by(&wallet.owner, &auth),
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
    let bare = signed_by(&wallet.owner, &auth);
    let reply = env.post("/x402/verify", &v2_request(&auth, &bare)).await;
    assert_eq!(
        reply["invalidReason"], "invalid_exact_evm_signature",
        "{reply}"
    );
    // Balance is proved counterfactually too.
    let too_much = authorization(wallet.address, 60_000);
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

#[tokio::test]
async fn an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed_on_sqlite() {
    an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed_on_postgres() {
    an_undeployed_wallet_verifies_counterfactually_and_settles_once_deployed(Backend::Postgres)
        .await;
}
