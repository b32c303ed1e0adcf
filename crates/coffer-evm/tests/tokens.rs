//! The test tokens against a real anvil: the EIP-3009 token must accept exactly the
//! authorizations Circle's FiatToken v2.2 accepts (ECDSA and ERC-1271 signatures made with
//! alloy's EIP-712 implementation), reject the ones it rejects with the same revert reasons,
//! and the plain token must be a plain ERC-20.
//!
//! Every test starts its own anvil (chain id 84532, Base Sepolia) on a free port. The anvil
//! binary comes from `scripts/install-tools.sh`; without it the tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::contract::SolCallBuilder;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256, address, keccak256, uint};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockOverrides, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::{Signature, SignerSync};
use alloy::sol_types::{Eip712Domain, Revert, SolCall, SolEvent, SolStruct, eip712_domain};
use coffer_evm::anvil::{Anvil, AnvilOptions, locate_binary};
use coffer_evm::contracts::{TestSmartWallet, TestUsdc, TestUsdt};
use coffer_evm::testnet::{
    PlainTokenSpec, UsdcSpec, deploy_plain_token, deploy_usdc, dev_account, has_code,
    install_usdc_at, mint,
};

mod eip3009 {
    #![allow(missing_docs)]

    alloy::sol! {
        /// EIP-3009 `transferWithAuthorization` message.
        struct TransferWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }

        /// EIP-3009 `receiveWithAuthorization` message.
        struct ReceiveWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }

        /// EIP-3009 `cancelAuthorization` message.
        struct CancelAuthorization {
            address authorizer;
            bytes32 nonce;
        }
    }
}

use eip3009::{CancelAuthorization, ReceiveWithAuthorization, TransferWithAuthorization};

/// Base Sepolia.
const CHAIN_ID: u64 = 84532;

/// Circle's USDC on Base Sepolia, where `coffer dev` installs the EIP-3009 token.
const BASE_SEPOLIA_USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");

/// The order of the secp256k1 group.
const SECP256K1_N: U256 =
    uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);

/// How long to wait for a receipt before calling a transaction stuck.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Initial payer balance: 1,000 USDC.
const FUNDS: u64 = 1_000_000_000;

/// One payment: 12.345678 USDC.
const PRICE: u64 = 12_345_678;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh anvil with named dev accounts.
struct Chain {
    anvil: Anvil,
    /// Deploys the tokens and may mint.
    owner: PrivateKeySigner,
    /// Signs authorizations; never sends a transaction itself.
    payer: PrivateKeySigner,
    /// Receives payments.
    payee: PrivateKeySigner,
    /// Submits signed authorizations and pays the gas (a facilitator).
    relayer: PrivateKeySigner,
    /// Anyone else.
    stranger: PrivateKeySigner,
}

impl Chain {
    async fn start() -> Self {
        let binary = locate_binary().expect(
            "anvil binary not found (.tools/bin/anvil): run scripts/install-tools.sh to install it",
        );
        let options = AnvilOptions {
            binary,
            chain_id: CHAIN_ID,
            port: 0,
            state_file: None,
            block_time: None,
        };
        let anvil = Anvil::start(&options).await.unwrap_or_else(|error| {
            panic!("{error} (run scripts/install-tools.sh to install anvil)")
        });
        let account = |index| dev_account(index).expect("dev account");
        Chain {
            anvil,
            owner: account(0),
            payer: account(1),
            payee: account(2),
            relayer: account(3),
            stranger: account(4),
        }
    }

    /// A provider that signs with `signer`.
    ///
    /// It asks the node for the nonce of every transaction: alloy's default cached nonce
    /// manager reserves a nonce even when gas estimation then fails, and after such a failure
    /// the next transaction would wait forever behind the gap. These tests send many
    /// transactions that are meant to fail.
    fn provider(&self, signer: &PrivateKeySigner) -> DynProvider {
        ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(signer.clone())
            .connect_http(self.anvil.url().parse().expect("anvil URL"))
            .erased()
    }

    fn usdc_spec(&self) -> UsdcSpec {
        UsdcSpec {
            name: "USDC".to_owned(),
            version: "2".to_owned(),
            symbol: "USDC".to_owned(),
            decimals: 6,
            owner: self.owner.address(),
        }
    }

    /// Deploys the EIP-3009 token and mints [`FUNDS`] to the payer.
    async fn usdc_with_funded_payer(&self) -> Address {
        let owner = self.provider(&self.owner);
        let token = deploy_usdc(&owner, &self.usdc_spec())
            .await
            .expect("deploy TestUsdc");
        mint(&owner, token, self.payer.address(), U256::from(FUNDS))
            .await
            .expect("mint to the payer");
        token
    }

    async fn latest_timestamp(&self) -> u64 {
        self.provider(&self.owner)
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .expect("latest block")
            .expect("a latest block exists")
            .header
            .timestamp
    }

    async fn stop(self) {
        self.anvil.stop().await.expect("stop anvil");
    }
}

/// The token's EIP-712 domain as a client computes it.
fn domain(token: Address) -> Eip712Domain {
    eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: CHAIN_ID,
        verifying_contract: token,
    }
}

fn sign<T: SolStruct>(signer: &PrivateKeySigner, message: &T, domain: &Eip712Domain) -> Signature {
    signer
        .sign_hash_sync(&message.eip712_signing_hash(domain))
        .expect("sign EIP-712 hash")
}

/// `v` as FiatToken's `(v, r, s)` overloads take it.
fn v_byte(signature: &Signature) -> u8 {
    27 + u8::from(signature.v())
}

fn r_of(signature: &Signature) -> B256 {
    signature.r().into()
}

fn s_of(signature: &Signature) -> B256 {
    signature.s().into()
}

fn nonce(label: &str) -> B256 {
    keccak256(label.as_bytes())
}

/// An authorization from the payer to the payee for [`PRICE`], valid for an hour.
async fn payment(chain: &Chain, label: &str) -> TransferWithAuthorization {
    TransferWithAuthorization {
        from: chain.payer.address(),
        to: chain.payee.address(),
        value: U256::from(PRICE),
        validAfter: U256::ZERO,
        validBefore: U256::from(chain.latest_timestamp().await + 3600),
        nonce: nonce(label),
    }
}

/// `transferWithAuthorization(..., uint8 v, bytes32 r, bytes32 s)`.
fn transfer_vrs<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::transferWithAuthorization_1Call> {
    token.transferWithAuthorization_1(
        auth.from,
        auth.to,
        auth.value,
        auth.validAfter,
        auth.validBefore,
        auth.nonce,
        v_byte(signature),
        r_of(signature),
        s_of(signature),
    )
}

/// `transferWithAuthorization(..., bytes signature)`.
fn transfer_bytes<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::transferWithAuthorization_0Call> {
    token.transferWithAuthorization_0(
        auth.from,
        auth.to,
        auth.value,
        auth.validAfter,
        auth.validBefore,
        auth.nonce,
        Bytes::from(signature.as_bytes()),
    )
}

/// `receiveWithAuthorization(..., uint8 v, bytes32 r, bytes32 s)`.
fn receive_vrs<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &ReceiveWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::receiveWithAuthorization_1Call> {
    token.receiveWithAuthorization_1(
        auth.from,
        auth.to,
        auth.value,
        auth.validAfter,
        auth.validBefore,
        auth.nonce,
        v_byte(signature),
        r_of(signature),
        s_of(signature),
    )
}

async fn confirmed<P: Provider, C: SolCall>(call: &SolCallBuilder<P, C>) -> TransactionReceipt {
    let receipt = call
        .send()
        .await
        .expect("send transaction")
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .expect("transaction receipt");
    assert!(
        receipt.status(),
        "transaction {} reverted",
        receipt.transaction_hash
    );
    receipt
}

/// The reason string of a revert (`Error(string)`), failing the test on any other error.
fn revert_reason(error: &alloy::contract::Error) -> String {
    error
        .as_decoded_error::<Revert>()
        .map(|revert| revert.reason)
        .unwrap_or_else(|| panic!("expected a revert with a reason, got: {error}"))
}

/// Asserts that both a simulation and an attempt to send `call` revert with `reason`.
async fn assert_reverts<P: Provider, C: SolCall>(call: &SolCallBuilder<P, C>, reason: &str) {
    let Err(simulated) = call.call().await else {
        panic!("the call should revert with {reason:?}")
    };
    assert_eq!(revert_reason(&simulated), reason, "eth_call revert reason");
    let Err(sent) = call.send().await else {
        panic!("sending should fail at gas estimation with {reason:?}")
    };
    assert_eq!(
        revert_reason(&sent),
        reason,
        "eth_estimateGas revert reason"
    );
}

async fn balances(token: Address, provider: &DynProvider, accounts: &[Address]) -> Vec<U256> {
    let token = TestUsdc::new(token, provider);
    let mut out = Vec::with_capacity(accounts.len());
    for account in accounts {
        out.push(token.balanceOf(*account).call().await.expect("balanceOf"));
    }
    out
}

/// The events of type `E` that `emitter` logged in `receipt`.
fn events<E: SolEvent>(receipt: &TransactionReceipt, emitter: Address) -> Vec<E> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|log| log.address() == emitter && log.topic0() == Some(&E::SIGNATURE_HASH))
        .map(|log| log.log_decode::<E>().expect("decode event").inner.data)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_deployed_usdc_reports_its_metadata_and_the_domain_separator_alloy_computes() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    let address = deploy_usdc(&owner, &chain.usdc_spec())
        .await
        .expect("deploy TestUsdc");
    let token = TestUsdc::new(address, &owner);

    assert_eq!(token.name().call().await.unwrap(), "USDC");
    assert_eq!(token.version().call().await.unwrap(), "2");
    assert_eq!(token.symbol().call().await.unwrap(), "USDC");
    assert_eq!(token.decimals().call().await.unwrap(), 6);
    assert_eq!(token.owner().call().await.unwrap(), chain.owner.address());
    assert_eq!(token.totalSupply().call().await.unwrap(), U256::ZERO);
    assert_eq!(
        token.DOMAIN_SEPARATOR().call().await.unwrap(),
        domain(address).separator()
    );

    let sample = TransferWithAuthorization {
        from: Address::ZERO,
        to: Address::ZERO,
        value: U256::ZERO,
        validAfter: U256::ZERO,
        validBefore: U256::ZERO,
        nonce: B256::ZERO,
    };
    assert_eq!(
        token
            .TRANSFER_WITH_AUTHORIZATION_TYPEHASH()
            .call()
            .await
            .unwrap(),
        sample.eip712_type_hash()
    );
    let sample = ReceiveWithAuthorization {
        from: Address::ZERO,
        to: Address::ZERO,
        value: U256::ZERO,
        validAfter: U256::ZERO,
        validBefore: U256::ZERO,
        nonce: B256::ZERO,
    };
    assert_eq!(
        token
            .RECEIVE_WITH_AUTHORIZATION_TYPEHASH()
            .call()
            .await
            .unwrap(),
        sample.eip712_type_hash()
    );
    let sample = CancelAuthorization {
        authorizer: Address::ZERO,
        nonce: B256::ZERO,
    };
    assert_eq!(
        token.CANCEL_AUTHORIZATION_TYPEHASH().call().await.unwrap(),
        sample.eip712_type_hash()
    );

    // Initialization is one-time.
    let again = token.initialize(
        "X".into(),
        "9".into(),
        "X".into(),
        18,
        chain.stranger.address(),
    );
    assert_reverts(&again, "already initialized").await;
    assert_eq!(token.owner().call().await.unwrap(), chain.owner.address());

    chain.stop().await;
}

#[tokio::test]
async fn installing_usdc_at_the_base_sepolia_address_works_once_and_then_does_nothing() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    assert!(!has_code(&owner, BASE_SEPOLIA_USDC).await.unwrap());

    assert!(
        install_usdc_at(&owner, BASE_SEPOLIA_USDC, &chain.usdc_spec())
            .await
            .expect("install")
    );
    assert!(has_code(&owner, BASE_SEPOLIA_USDC).await.unwrap());
    let token = TestUsdc::new(BASE_SEPOLIA_USDC, &owner);
    assert_eq!(token.name().call().await.unwrap(), "USDC");
    assert_eq!(token.version().call().await.unwrap(), "2");
    assert_eq!(token.decimals().call().await.unwrap(), 6);
    assert_eq!(
        token.DOMAIN_SEPARATOR().call().await.unwrap(),
        domain(BASE_SEPOLIA_USDC).separator()
    );

    mint(
        &owner,
        BASE_SEPOLIA_USDC,
        chain.payer.address(),
        U256::from(FUNDS),
    )
    .await
    .expect("mint");

    // A second install (a restarted chain with saved state) leaves the token and its balances
    // alone.
    let other_spec = UsdcSpec {
        name: "Other".to_owned(),
        owner: chain.stranger.address(),
        ..chain.usdc_spec()
    };
    assert!(
        !install_usdc_at(&owner, BASE_SEPOLIA_USDC, &other_spec)
            .await
            .expect("second install")
    );
    assert_eq!(token.name().call().await.unwrap(), "USDC");
    assert_eq!(token.owner().call().await.unwrap(), chain.owner.address());
    assert_eq!(
        token.balanceOf(chain.payer.address()).call().await.unwrap(),
        U256::from(FUNDS)
    );

    // The installed token honours authorizations signed for the canonical address.
    let auth = payment(&chain, "installed").await;
    let signature = sign(&chain.payer, &auth, &domain(BASE_SEPOLIA_USDC));
    let relayer = chain.provider(&chain.relayer);
    confirmed(&transfer_vrs(
        &TestUsdc::new(BASE_SEPOLIA_USDC, relayer.clone()),
        &auth,
        &signature,
    ))
    .await;
    assert_eq!(
        balances(
            BASE_SEPOLIA_USDC,
            &relayer,
            &[chain.payer.address(), chain.payee.address()]
        )
        .await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE)]
    );

    chain.stop().await;
}

#[tokio::test]
async fn transfer_with_authorization_v_r_s_submitted_by_a_relayer_moves_exactly_the_value() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let payer_nonce_before = relayer
        .get_transaction_count(chain.payer.address())
        .await
        .unwrap();

    let auth = payment(&chain, "vrs").await;
    let signature = sign(&chain.payer, &auth, &domain(address));
    assert!(signature.s() <= SECP256K1_N >> 1, "alloy signs with low s");
    assert!(
        !token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );

    let receipt = confirmed(&transfer_vrs(&token, &auth, &signature)).await;

    assert_eq!(
        receipt.from,
        chain.relayer.address(),
        "the relayer sent the transaction"
    );
    assert_eq!(
        relayer
            .get_transaction_count(chain.payer.address())
            .await
            .unwrap(),
        payer_nonce_before,
        "the payer sent nothing"
    );
    let accounts = [
        chain.payer.address(),
        chain.payee.address(),
        chain.relayer.address(),
    ];
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE), U256::ZERO]
    );
    assert_eq!(token.totalSupply().call().await.unwrap(), U256::from(FUNDS));
    assert!(
        token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );

    let used = events::<TestUsdc::AuthorizationUsed>(&receipt, address);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].authorizer, chain.payer.address());
    assert_eq!(used[0].nonce, auth.nonce);
    let transfers = events::<TestUsdc::Transfer>(&receipt, address);
    assert_eq!(transfers.len(), 1);
    assert_eq!(
        (transfers[0].from, transfers[0].to, transfers[0].value),
        (
            chain.payer.address(),
            chain.payee.address(),
            U256::from(PRICE)
        )
    );

    chain.stop().await;
}

#[tokio::test]
async fn transfer_with_authorization_bytes_signature_overload_moves_the_value() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());

    let auth = payment(&chain, "bytes").await;
    let signature = sign(&chain.payer, &auth, &domain(address));
    let receipt = confirmed(&transfer_bytes(&token, &auth, &signature)).await;

    assert_eq!(
        balances(
            address,
            &relayer,
            &[chain.payer.address(), chain.payee.address()]
        )
        .await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE)]
    );
    assert!(
        token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );
    let used = events::<TestUsdc::AuthorizationUsed>(&receipt, address);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].authorizer, used[0].nonce), (auth.from, auth.nonce));

    // A signature of any other length is refused by the ECDSA path.
    let second = payment(&chain, "bytes-short").await;
    let signature = sign(&chain.payer, &second, &domain(address));
    let short = token.transferWithAuthorization_0(
        second.from,
        second.to,
        second.value,
        second.validAfter,
        second.validBefore,
        second.nonce,
        Bytes::copy_from_slice(&signature.as_bytes()[..64]),
    );
    assert_reverts(&short, "ECRecover: invalid signature length").await;

    chain.stop().await;
}

#[tokio::test]
async fn a_reused_nonce_reverts_and_moves_nothing() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let accounts = [chain.payer.address(), chain.payee.address()];

    let auth = payment(&chain, "reused").await;
    let signature = sign(&chain.payer, &auth, &domain(address));
    confirmed(&transfer_vrs(&token, &auth, &signature)).await;
    let after_first = balances(address, &relayer, &accounts).await;

    // The identical authorization again, through either overload.
    assert_reverts(
        &transfer_vrs(&token, &auth, &signature),
        "FiatTokenV2: authorization is used or canceled",
    )
    .await;
    assert_reverts(
        &transfer_bytes(&token, &auth, &signature),
        "FiatTokenV2: authorization is used or canceled",
    )
    .await;

    // A different, validly signed authorization that reuses the nonce.
    let other = TransferWithAuthorization {
        to: chain.stranger.address(),
        value: U256::from(1),
        ..auth.clone()
    };
    let other_signature = sign(&chain.payer, &other, &domain(address));
    assert_reverts(
        &transfer_vrs(&token, &other, &other_signature),
        "FiatTokenV2: authorization is used or canceled",
    )
    .await;

    // Mined anyway (gas given, so no estimation): the transaction reverts on chain.
    let receipt = transfer_vrs(&token, &auth, &signature)
        .gas(200_000)
        .send()
        .await
        .expect("send")
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .expect("receipt");
    assert!(
        !receipt.status(),
        "replaying the authorization must revert on chain"
    );
    assert!(events::<TestUsdc::Transfer>(&receipt, address).is_empty());

    assert_eq!(balances(address, &relayer, &accounts).await, after_first);
    assert_eq!(after_first, [U256::from(FUNDS - PRICE), U256::from(PRICE)]);
    assert_eq!(
        token
            .balanceOf(chain.stranger.address())
            .call()
            .await
            .unwrap(),
        U256::ZERO
    );

    chain.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_authorizations_revert_with_fiat_token_messages() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let accounts = [chain.payer.address(), chain.payee.address()];
    let funded = [U256::from(FUNDS), U256::ZERO];

    // Simulated in a block at a chosen time `at`: the validity window is open at both ends.
    let at = chain.latest_timestamp().await + 1_000;
    let at_time = BlockOverrides {
        time: Some(at),
        ..BlockOverrides::default()
    };
    let window = |label: &str, valid_after: u64, valid_before: u64| TransferWithAuthorization {
        from: chain.payer.address(),
        to: chain.payee.address(),
        value: U256::from(PRICE),
        validAfter: U256::from(valid_after),
        validBefore: U256::from(valid_before),
        nonce: nonce(label),
    };
    let cases = [
        (
            window("before-equals-now", 0, at),
            Some("FiatTokenV2: authorization is expired"),
        ),
        (
            window("before-in-past", 0, at - 1),
            Some("FiatTokenV2: authorization is expired"),
        ),
        (
            window("after-equals-now", at, at + 3600),
            Some("FiatTokenV2: authorization is not yet valid"),
        ),
        (
            window("after-in-future", at + 1, at + 3600),
            Some("FiatTokenV2: authorization is not yet valid"),
        ),
        (window("tightest-window", at - 1, at + 1), None),
    ];
    for (auth, expected) in &cases {
        let signature = sign(&chain.payer, auth, &domain(address));
        let call = transfer_vrs(&token, auth, &signature);
        let outcome = call
            .call()
            .with_block_overrides(at_time.clone())
            .await
            .map(|_| ());
        match expected {
            Some(reason) => assert_eq!(
                revert_reason(&outcome.expect_err("should revert")),
                *reason,
                "window ({}, {}) at {at}",
                auth.validAfter,
                auth.validBefore
            ),
            None => outcome.expect("the authorization is valid at that time"),
        }
    }

    // The same against the current block, through ordinary simulation and estimation.
    let now = chain.latest_timestamp().await;
    let expired = window("expired", 0, now);
    let signature = sign(&chain.payer, &expired, &domain(address));
    assert_reverts(
        &transfer_vrs(&token, &expired, &signature),
        "FiatTokenV2: authorization is expired",
    )
    .await;
    let early = window("early", now + 3600, now + 7200);
    let signature = sign(&chain.payer, &early, &domain(address));
    assert_reverts(
        &transfer_vrs(&token, &early, &signature),
        "FiatTokenV2: authorization is not yet valid",
    )
    .await;

    // Mined in a block whose timestamp equals validBefore, then one equal to validAfter.
    for (label, valid_after, valid_before) in [
        ("mined-expired", 0, at),
        ("mined-early", at + 10, at + 3600),
    ] {
        let block_time = if valid_after == 0 {
            valid_before
        } else {
            valid_after
        };
        let auth = window(label, valid_after, valid_before);
        let signature = sign(&chain.payer, &auth, &domain(address));
        relayer
            .anvil_set_next_block_timestamp(block_time)
            .await
            .expect("set next block timestamp");
        let receipt = transfer_vrs(&token, &auth, &signature)
            .gas(200_000)
            .send()
            .await
            .expect("send")
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .expect("receipt");
        let block = relayer
            .get_block_by_number(receipt.block_number.expect("mined").into())
            .await
            .unwrap()
            .expect("block");
        assert_eq!(block.header.timestamp, block_time);
        assert!(!receipt.status(), "{label} must revert on chain");
        assert!(
            !token
                .authorizationState(auth.from, auth.nonce)
                .call()
                .await
                .unwrap()
        );
    }

    assert_eq!(balances(address, &relayer, &accounts).await, funded);
    chain.stop().await;
}

#[tokio::test]
async fn a_high_s_signature_and_a_signature_by_another_key_are_rejected() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let accounts = [chain.payer.address(), chain.payee.address()];

    let auth = payment(&chain, "malleable").await;
    let digest = auth.eip712_signing_hash(&domain(address));
    let low = sign(&chain.payer, &auth, &domain(address));
    let high = Signature::new(low.r(), SECP256K1_N - low.s(), !low.v());
    assert!(high.s() > SECP256K1_N >> 1);
    assert_eq!(
        high.recover_address_from_prehash(&digest).expect("recover"),
        chain.payer.address(),
        "the flipped signature is mathematically valid for the payer"
    );
    assert_reverts(
        &transfer_vrs(&token, &auth, &high),
        "ECRecover: invalid signature 's' value",
    )
    .await;
    assert_reverts(
        &transfer_bytes(&token, &auth, &high),
        "ECRecover: invalid signature 's' value",
    )
    .await;

    let forged = sign(&chain.stranger, &auth, &domain(address));
    assert_reverts(
        &transfer_vrs(&token, &auth, &forged),
        "FiatTokenV2: invalid signature",
    )
    .await;
    assert_reverts(
        &transfer_bytes(&token, &auth, &forged),
        "FiatTokenV2: invalid signature",
    )
    .await;

    // A payer signature over different terms does not authorize these.
    let cheaper = TransferWithAuthorization {
        value: U256::from(1),
        ..auth.clone()
    };
    let for_cheaper = sign(&chain.payer, &cheaper, &domain(address));
    assert_reverts(
        &transfer_vrs(&token, &auth, &for_cheaper),
        "FiatTokenV2: invalid signature",
    )
    .await;
    // Nor does one for another chain's domain.
    let other_chain = eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: 8453,
        verifying_contract: address,
    };
    let wrong_domain = sign(&chain.payer, &auth, &other_chain);
    assert_reverts(
        &transfer_vrs(&token, &auth, &wrong_domain),
        "FiatTokenV2: invalid signature",
    )
    .await;

    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS), U256::ZERO]
    );
    assert!(
        !token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );

    // The canonical low-s signature still goes through.
    confirmed(&transfer_vrs(&token, &auth, &low)).await;
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE)]
    );

    chain.stop().await;
}

#[tokio::test]
async fn receive_with_authorization_works_only_when_the_payee_submits_it() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let payee = chain.provider(&chain.payee);
    let accounts = [chain.payer.address(), chain.payee.address()];

    let auth = ReceiveWithAuthorization {
        from: chain.payer.address(),
        to: chain.payee.address(),
        value: U256::from(PRICE),
        validAfter: U256::ZERO,
        validBefore: U256::from(chain.latest_timestamp().await + 3600),
        nonce: nonce("receive"),
    };
    let signature = sign(&chain.payer, &auth, &domain(address));

    let by_relayer = TestUsdc::new(address, relayer.clone());
    assert_reverts(
        &receive_vrs(&by_relayer, &auth, &signature),
        "FiatTokenV2: caller must be the payee",
    )
    .await;
    let by_payer = TestUsdc::new(address, chain.provider(&chain.payer));
    assert_reverts(
        &receive_vrs(&by_payer, &auth, &signature),
        "FiatTokenV2: caller must be the payee",
    )
    .await;
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS), U256::ZERO]
    );

    // A transferWithAuthorization signature over the same fields is a different message.
    let by_payee = TestUsdc::new(address, payee.clone());
    let as_transfer = TransferWithAuthorization {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: auth.validAfter,
        validBefore: auth.validBefore,
        nonce: auth.nonce,
    };
    let transfer_signature = sign(&chain.payer, &as_transfer, &domain(address));
    assert_reverts(
        &receive_vrs(&by_payee, &auth, &transfer_signature),
        "FiatTokenV2: invalid signature",
    )
    .await;
    assert_reverts(
        &transfer_vrs(&by_relayer, &as_transfer, &signature),
        "FiatTokenV2: invalid signature",
    )
    .await;

    let receipt = confirmed(&receive_vrs(&by_payee, &auth, &signature)).await;
    assert_eq!(receipt.from, chain.payee.address());
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE)]
    );
    assert!(
        by_payee
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );
    let used = events::<TestUsdc::AuthorizationUsed>(&receipt, address);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].authorizer, used[0].nonce), (auth.from, auth.nonce));

    // The bytes overload shares the nonce space: the same authorization cannot be replayed.
    let replay = by_payee.receiveWithAuthorization_0(
        auth.from,
        auth.to,
        auth.value,
        auth.validAfter,
        auth.validBefore,
        auth.nonce,
        Bytes::from(signature.as_bytes()),
    );
    assert_reverts(&replay, "FiatTokenV2: authorization is used or canceled").await;

    chain.stop().await;
}

#[tokio::test]
async fn a_canceled_authorization_cannot_be_used_later() {
    let chain = Chain::start().await;
    let address = chain.usdc_with_funded_payer().await;
    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let accounts = [chain.payer.address(), chain.payee.address()];

    let auth = payment(&chain, "canceled").await;
    let transfer_signature = sign(&chain.payer, &auth, &domain(address));
    let cancel = CancelAuthorization {
        authorizer: chain.payer.address(),
        nonce: auth.nonce,
    };

    // Only the authorizer can cancel.
    let forged = sign(&chain.stranger, &cancel, &domain(address));
    let forged_cancel = token.cancelAuthorization_0(
        cancel.authorizer,
        cancel.nonce,
        v_byte(&forged),
        r_of(&forged),
        s_of(&forged),
    );
    assert_reverts(&forged_cancel, "FiatTokenV2: invalid signature").await;
    assert!(
        !token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );

    let signature = sign(&chain.payer, &cancel, &domain(address));
    let receipt = confirmed(&token.cancelAuthorization_0(
        cancel.authorizer,
        cancel.nonce,
        v_byte(&signature),
        r_of(&signature),
        s_of(&signature),
    ))
    .await;
    let canceled = events::<TestUsdc::AuthorizationCanceled>(&receipt, address);
    assert_eq!(canceled.len(), 1);
    assert_eq!(
        (canceled[0].authorizer, canceled[0].nonce),
        (cancel.authorizer, cancel.nonce)
    );
    assert!(events::<TestUsdc::AuthorizationUsed>(&receipt, address).is_empty());
    assert!(
        token
            .authorizationState(auth.from, auth.nonce)
            .call()
            .await
            .unwrap()
    );

    assert_reverts(
        &transfer_vrs(&token, &auth, &transfer_signature),
        "FiatTokenV2: authorization is used or canceled",
    )
    .await;
    let again = token.cancelAuthorization_1(
        cancel.authorizer,
        cancel.nonce,
        Bytes::from(signature.as_bytes()),
    );
    assert_reverts(&again, "FiatTokenV2: authorization is used or canceled").await;
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS), U256::ZERO]
    );

    // Used authorizations cannot be canceled either.
    let paid = payment(&chain, "paid").await;
    confirmed(&transfer_bytes(
        &token,
        &paid,
        &sign(&chain.payer, &paid, &domain(address)),
    ))
    .await;
    let late = CancelAuthorization {
        authorizer: chain.payer.address(),
        nonce: paid.nonce,
    };
    let late_signature = sign(&chain.payer, &late, &domain(address));
    let late_cancel = token.cancelAuthorization_1(
        late.authorizer,
        late.nonce,
        Bytes::from(late_signature.as_bytes()),
    );
    assert_reverts(
        &late_cancel,
        "FiatTokenV2: authorization is used or canceled",
    )
    .await;

    chain.stop().await;
}

#[tokio::test]
async fn a_smart_wallet_authorizes_with_an_erc1271_signature_by_its_owner() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    let address = chain.usdc_with_funded_payer().await;
    // The payer key owns the wallet; its own balance must not move.
    let wallet = TestSmartWallet::deploy(&owner, chain.payer.address())
        .await
        .expect("deploy TestSmartWallet");
    let wallet_address = *wallet.address();
    assert_eq!(wallet.owner().call().await.unwrap(), chain.payer.address());
    mint(&owner, address, wallet_address, U256::from(FUNDS))
        .await
        .expect("mint to the wallet");

    let relayer = chain.provider(&chain.relayer);
    let token = TestUsdc::new(address, relayer.clone());
    let accounts = [wallet_address, chain.payee.address(), chain.payer.address()];
    let auth = TransferWithAuthorization {
        from: wallet_address,
        ..payment(&chain, "wallet").await
    };
    let digest = auth.eip712_signing_hash(&domain(address));

    // Signed by someone else: the wallet says no.
    let forged = chain.stranger.sign_hash_sync(&digest).expect("sign");
    assert_eq!(
        wallet
            .isValidSignature(digest, Bytes::from(forged.as_bytes()))
            .call()
            .await
            .unwrap(),
        [0xff; 4]
    );
    assert_reverts(
        &transfer_bytes(&token, &auth, &forged),
        "FiatTokenV2: invalid signature",
    )
    .await;
    assert_reverts(
        &transfer_vrs(&token, &auth, &forged),
        "FiatTokenV2: invalid signature",
    )
    .await;
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [U256::from(FUNDS), U256::ZERO, U256::from(FUNDS)]
    );

    // Signed by the owner over the EIP-712 digest.
    let signature = chain.payer.sign_hash_sync(&digest).expect("sign");
    assert_eq!(
        wallet
            .isValidSignature(digest, Bytes::from(signature.as_bytes()))
            .call()
            .await
            .unwrap(),
        [0x16, 0x26, 0xba, 0x7e]
    );
    let receipt = confirmed(&transfer_bytes(&token, &auth, &signature)).await;
    assert_eq!(
        balances(address, &relayer, &accounts).await,
        [
            U256::from(FUNDS - PRICE),
            U256::from(PRICE),
            U256::from(FUNDS)
        ]
    );
    assert!(
        token
            .authorizationState(wallet_address, auth.nonce)
            .call()
            .await
            .unwrap()
    );
    assert!(
        !token
            .authorizationState(chain.payer.address(), auth.nonce)
            .call()
            .await
            .unwrap()
    );
    let used = events::<TestUsdc::AuthorizationUsed>(&receipt, address);
    assert_eq!(used.len(), 1);
    assert_eq!(
        (used[0].authorizer, used[0].nonce),
        (wallet_address, auth.nonce)
    );

    chain.stop().await;
}

#[tokio::test]
async fn a_plain_token_has_18_decimals_transfers_and_has_no_transfer_with_authorization() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    let spec = PlainTokenSpec {
        name: "Tether USD".to_owned(),
        symbol: "USDT".to_owned(),
        decimals: 18,
        owner: chain.owner.address(),
    };
    let address = deploy_plain_token(&owner, &spec)
        .await
        .expect("deploy TestUsdt");
    let token = TestUsdt::new(address, &owner);
    assert_eq!(token.name().call().await.unwrap(), "Tether USD");
    assert_eq!(token.symbol().call().await.unwrap(), "USDT");
    assert_eq!(token.decimals().call().await.unwrap(), 18);
    assert_eq!(token.owner().call().await.unwrap(), chain.owner.address());

    let one = U256::from(10).pow(U256::from(18));
    let funds = one * U256::from(1_000);
    let price = one * U256::from(12) + U256::from(345);
    mint(&owner, address, chain.payer.address(), funds)
        .await
        .expect("mint");
    assert_eq!(token.totalSupply().call().await.unwrap(), funds);

    // Only the owner may mint.
    let not_owner = TestUsdt::new(address, chain.provider(&chain.stranger));
    assert_reverts(
        &not_owner.mint(chain.stranger.address(), one),
        "Ownable: caller is not the owner",
    )
    .await;

    let payer = TestUsdt::new(address, chain.provider(&chain.payer));
    let receipt = confirmed(&payer.transfer(chain.payee.address(), price)).await;
    let transfers = events::<TestUsdt::Transfer>(&receipt, address);
    assert_eq!(transfers.len(), 1);
    assert_eq!(
        (transfers[0].from, transfers[0].to, transfers[0].value),
        (chain.payer.address(), chain.payee.address(), price)
    );
    assert_eq!(
        token.balanceOf(chain.payer.address()).call().await.unwrap(),
        funds - price
    );
    assert_eq!(
        token.balanceOf(chain.payee.address()).call().await.unwrap(),
        price
    );
    assert_reverts(
        &payer.transfer(chain.payee.address(), funds),
        "ERC20: transfer amount exceeds balance",
    )
    .await;

    // A correctly signed EIP-3009 call finds no such function (and no fallback) in the contract.
    let auth = TransferWithAuthorization {
        from: chain.payer.address(),
        to: chain.payee.address(),
        value: price,
        validAfter: U256::ZERO,
        validBefore: U256::from(chain.latest_timestamp().await + 3600),
        nonce: nonce("plain"),
    };
    let domain = eip712_domain! {
        name: "Tether USD",
        version: "2",
        chain_id: CHAIN_ID,
        verifying_contract: address,
    };
    let signature = sign(&chain.payer, &auth, &domain);
    let calls = [
        TestUsdc::transferWithAuthorization_1Call {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: auth.validAfter,
            validBefore: auth.validBefore,
            nonce: auth.nonce,
            v: v_byte(&signature),
            r: r_of(&signature),
            s: s_of(&signature),
        }
        .abi_encode(),
        TestUsdc::transferWithAuthorization_0Call {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: auth.validAfter,
            validBefore: auth.validBefore,
            nonce: auth.nonce,
            signature: Bytes::from(signature.as_bytes()),
        }
        .abi_encode(),
    ];
    let relayer = chain.provider(&chain.relayer);
    for calldata in calls {
        let request = TransactionRequest::default()
            .with_to(address)
            .with_input(calldata);
        let error = relayer
            .call(request.clone())
            .await
            .expect_err("the selector must not exist");
        assert!(
            error.to_string().contains("revert"),
            "unexpected error: {error}"
        );
        relayer
            .estimate_gas(request)
            .await
            .expect_err("sending must fail too");
    }
    assert_eq!(
        token.balanceOf(chain.payer.address()).call().await.unwrap(),
        funds - price
    );
    assert_eq!(
        token.balanceOf(chain.payee.address()).call().await.unwrap(),
        price
    );

    chain.stop().await;
}
