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
use coffer_evm::contracts::{TestSmartWallet, TestUsdc, TestUsdt, TransferWithAuthorization};
use coffer_evm::testnet::{
    PlainTokenSpec, UsdcSpec, deploy_plain_token, deploy_usdc, dev_account, has_code,
    install_usdc_at, mint, usdc_domain,
};

mod eip3009 {
    #![allow(missing_docs)]

    alloy::sol! {
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

use eip3009::{CancelAuthorization, ReceiveWithAuthorization};

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

/// The revert of an authorization whose nonce was used or canceled.
const USED_OR_CANCELED: &str = "FiatTokenV2: authorization is used or canceled";

/// The revert of a signature that is not the authorizer's.
const INVALID_SIGNATURE: &str = "FiatTokenV2: invalid signature";

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

    /// The EIP-3009 token with [`FUNDS`] minted to the payer, as the relayer calls it.
    async fn funded_usdc(&self) -> Usdc {
        let address = self.usdc_with_funded_payer().await;
        let relayer = self.provider(&self.relayer);
        Usdc {
            address,
            token: TestUsdc::new(address, relayer.clone()),
            relayer,
        }
    }

    /// A fresh chain with the EIP-3009 token and [`FUNDS`] minted to the payer.
    async fn start_with_usdc() -> (Self, Usdc) {
        let chain = Chain::start().await;
        let usdc = chain.funded_usdc().await;
        (chain, usdc)
    }

    /// The payer and the payee.
    fn payer_and_payee(&self) -> [Address; 2] {
        [self.payer.address(), self.payee.address()]
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

/// A deployed EIP-3009 token and the relayer that submits authorizations to it.
struct Usdc {
    address: Address,
    relayer: DynProvider,
    /// The token, called by the relayer.
    token: TestUsdc::TestUsdcInstance<DynProvider>,
}

impl Usdc {
    /// `signer`'s signature of `message` in this token's domain.
    fn sign<T: SolStruct>(&self, signer: &PrivateKeySigner, message: &T) -> Signature {
        sign(signer, message, &domain(self.address))
    }

    async fn balances(&self, accounts: &[Address]) -> Vec<U256> {
        balances(self.address, &self.relayer, accounts).await
    }
}

/// The payer's and the payee's balances before the payment.
fn unpaid() -> [U256; 2] {
    [U256::from(FUNDS), U256::ZERO]
}

/// The payer's and the payee's balances after one payment of [`PRICE`].
fn paid() -> [U256; 2] {
    [U256::from(FUNDS - PRICE), U256::from(PRICE)]
}

/// The token's EIP-712 domain as a client computes it.
fn domain(token: Address) -> Eip712Domain {
    usdc_domain(CHAIN_ID, token)
}

fn sign<T: SolStruct>(signer: &PrivateKeySigner, message: &T, domain: &Eip712Domain) -> Signature {
    signer
        .sign_hash_sync(&message.eip712_signing_hash(domain))
        .expect("sign EIP-712 hash")
}

/// The EIP-712 type hash alloy computes for `T` (what `eip712_type_hash` of any `T` is).
fn type_hash<T: SolStruct>() -> B256 {
    keccak256(T::eip712_encode_type().as_bytes())
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

impl From<&TransferWithAuthorization> for ReceiveWithAuthorization {
    /// The `receiveWithAuthorization` message over the same fields.
    fn from(auth: &TransferWithAuthorization) -> Self {
        ReceiveWithAuthorization {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: auth.validAfter,
            validBefore: auth.validBefore,
            nonce: auth.nonce,
        }
    }
}

/// The `transferWithAuthorization(..., uint8 v, bytes32 r, bytes32 s)` call.
fn vrs_call(
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> TestUsdc::transferWithAuthorization_1Call {
    TestUsdc::transferWithAuthorization_1Call {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: auth.validAfter,
        validBefore: auth.validBefore,
        nonce: auth.nonce,
        v: v_byte(signature),
        r: r_of(signature),
        s: s_of(signature),
    }
}

/// The `transferWithAuthorization(..., bytes signature)` call.
fn bytes_call(
    auth: &TransferWithAuthorization,
    signature: &[u8],
) -> TestUsdc::transferWithAuthorization_0Call {
    TestUsdc::transferWithAuthorization_0Call {
        from: auth.from,
        to: auth.to,
        value: auth.value,
        validAfter: auth.validAfter,
        validBefore: auth.validBefore,
        nonce: auth.nonce,
        signature: Bytes::copy_from_slice(signature),
    }
}

/// `transferWithAuthorization(..., uint8 v, bytes32 r, bytes32 s)`.
fn transfer_vrs<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::transferWithAuthorization_1Call> {
    token.call_builder(&vrs_call(auth, signature))
}

/// `transferWithAuthorization(..., bytes signature)`.
fn transfer_bytes<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::transferWithAuthorization_0Call> {
    token.call_builder(&bytes_call(auth, &signature.as_bytes()))
}

/// `call`'s arguments under the selector of `C`, a function with the same parameters
/// (`receiveWithAuthorization` takes what `transferWithAuthorization` takes).
fn same_arguments<C: SolCall>(call: &impl SolCall) -> C {
    let mut arguments = Vec::new();
    call.abi_encode_raw(&mut arguments);
    C::abi_decode_raw(&arguments).expect("the same parameters")
}

/// `receiveWithAuthorization(..., uint8 v, bytes32 r, bytes32 s)`.
fn receive_vrs<'a>(
    token: &'a TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
) -> SolCallBuilder<&'a DynProvider, TestUsdc::receiveWithAuthorization_1Call> {
    token.call_builder(&same_arguments(&vrs_call(auth, signature)))
}

/// What a view call answers, failing the test on an error.
async fn view<P: Provider, C: SolCall>(call: SolCallBuilder<P, C>) -> C::Return {
    call.call().await.expect("view call")
}

/// Sends `call` and waits for its receipt, whatever its status.
async fn receipt_of<P: Provider, C: SolCall>(call: &SolCallBuilder<P, C>) -> TransactionReceipt {
    call.send()
        .await
        .expect("send transaction")
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .expect("transaction receipt")
}

/// Sends `call` with gas given, so without estimation: a call that reverts is mined anyway.
async fn mined_anyway<P: Provider, C: SolCall>(call: SolCallBuilder<P, C>) -> TransactionReceipt {
    receipt_of(&call.gas(200_000)).await
}

async fn confirmed<P: Provider, C: SolCall>(call: &SolCallBuilder<P, C>) -> TransactionReceipt {
    let receipt = receipt_of(call).await;
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

/// Asserts that `auth` with `signature` reverts with `reason` through both overloads of
/// `transferWithAuthorization`, `(v, r, s)` and `bytes`.
async fn assert_transfer_reverts(
    token: &TestUsdc::TestUsdcInstance<DynProvider>,
    auth: &TransferWithAuthorization,
    signature: &Signature,
    reason: &str,
) {
    assert_reverts(&transfer_vrs(token, auth, signature), reason).await;
    assert_reverts(&transfer_bytes(token, auth, signature), reason).await;
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

/// Asserts that `token` logged exactly one `AuthorizationUsed` in `receipt`, for
/// `(authorizer, nonce)`.
fn assert_used_once(
    receipt: &TransactionReceipt,
    token: Address,
    authorizer: Address,
    nonce: B256,
) {
    let used = events::<TestUsdc::AuthorizationUsed>(receipt, token);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].authorizer, used[0].nonce), (authorizer, nonce));
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

    assert_eq!(view(token.name()).await, "USDC");
    assert_eq!(view(token.version()).await, "2");
    assert_eq!(view(token.symbol()).await, "USDC");
    assert_eq!(view(token.decimals()).await, 6);
    assert_eq!(view(token.owner()).await, chain.owner.address());
    assert_eq!(view(token.totalSupply()).await, U256::ZERO);
    let separator = view(token.DOMAIN_SEPARATOR()).await;
    assert_eq!(separator, domain(address).separator());

    let transfer = view(token.TRANSFER_WITH_AUTHORIZATION_TYPEHASH()).await;
    assert_eq!(transfer, type_hash::<TransferWithAuthorization>());
    let receive = view(token.RECEIVE_WITH_AUTHORIZATION_TYPEHASH()).await;
    assert_eq!(receive, type_hash::<ReceiveWithAuthorization>());
    let cancel = view(token.CANCEL_AUTHORIZATION_TYPEHASH()).await;
    assert_eq!(cancel, type_hash::<CancelAuthorization>());

    // Initialization is one-time.
    let stranger = chain.stranger.address();
    let again = token.initialize("X".into(), "9".into(), "X".into(), 18, stranger);
    assert_reverts(&again, "already initialized").await;
    assert_eq!(view(token.owner()).await, chain.owner.address());

    chain.stop().await;
}

#[tokio::test]
async fn installing_usdc_at_the_base_sepolia_address_works_once_and_then_does_nothing() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    assert!(!has_code(&owner, BASE_SEPOLIA_USDC).await.unwrap());

    let spec = chain.usdc_spec();
    let installed = install_usdc_at(&owner, BASE_SEPOLIA_USDC, &spec).await;
    assert!(installed.expect("install"));
    assert!(has_code(&owner, BASE_SEPOLIA_USDC).await.unwrap());
    let token = TestUsdc::new(BASE_SEPOLIA_USDC, &owner);
    assert_eq!(view(token.name()).await, "USDC");
    assert_eq!(view(token.version()).await, "2");
    assert_eq!(view(token.decimals()).await, 6);
    let separator = view(token.DOMAIN_SEPARATOR()).await;
    assert_eq!(separator, domain(BASE_SEPOLIA_USDC).separator());

    let payer = chain.payer.address();
    mint(&owner, BASE_SEPOLIA_USDC, payer, U256::from(FUNDS))
        .await
        .expect("mint");

    // A second install (a restarted chain with saved state) leaves the token and its balances
    // alone.
    let other_spec = UsdcSpec {
        name: "Other".to_owned(),
        owner: chain.stranger.address(),
        ..spec
    };
    let installed = install_usdc_at(&owner, BASE_SEPOLIA_USDC, &other_spec).await;
    assert!(!installed.expect("second install"));
    assert_eq!(view(token.name()).await, "USDC");
    assert_eq!(view(token.owner()).await, chain.owner.address());
    assert_eq!(view(token.balanceOf(payer)).await, U256::from(FUNDS));

    // The installed token honours authorizations signed for the canonical address.
    let auth = payment(&chain, "installed").await;
    let signature = sign(&chain.payer, &auth, &domain(BASE_SEPOLIA_USDC));
    let relayer = chain.provider(&chain.relayer);
    let by_relayer = TestUsdc::new(BASE_SEPOLIA_USDC, relayer.clone());
    confirmed(&transfer_vrs(&by_relayer, &auth, &signature)).await;
    assert_eq!(
        balances(BASE_SEPOLIA_USDC, &relayer, &chain.payer_and_payee()).await,
        paid()
    );

    chain.stop().await;
}

#[tokio::test]
async fn transfer_with_authorization_v_r_s_submitted_by_a_relayer_moves_exactly_the_value() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let payer_nonce_before = usdc
        .relayer
        .get_transaction_count(chain.payer.address())
        .await
        .unwrap();

    let auth = payment(&chain, "vrs").await;
    let signature = usdc.sign(&chain.payer, &auth);
    assert!(signature.s() <= SECP256K1_N >> 1, "alloy signs with low s");
    assert!(!view(usdc.token.authorizationState(auth.from, auth.nonce)).await);

    let receipt = confirmed(&transfer_vrs(&usdc.token, &auth, &signature)).await;

    assert_eq!(
        receipt.from,
        chain.relayer.address(),
        "the relayer sent the transaction"
    );
    let payer_nonce = usdc
        .relayer
        .get_transaction_count(chain.payer.address())
        .await
        .unwrap();
    assert_eq!(payer_nonce, payer_nonce_before, "the payer sent nothing");
    let accounts = [
        chain.payer.address(),
        chain.payee.address(),
        chain.relayer.address(),
    ];
    assert_eq!(
        usdc.balances(&accounts).await,
        [U256::from(FUNDS - PRICE), U256::from(PRICE), U256::ZERO]
    );
    assert_eq!(view(usdc.token.totalSupply()).await, U256::from(FUNDS));
    assert!(view(usdc.token.authorizationState(auth.from, auth.nonce)).await);

    assert_used_once(&receipt, usdc.address, chain.payer.address(), auth.nonce);
    let transfers = events::<TestUsdc::Transfer>(&receipt, usdc.address);
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
    let (chain, usdc) = Chain::start_with_usdc().await;

    let auth = payment(&chain, "bytes").await;
    let signature = usdc.sign(&chain.payer, &auth);
    let receipt = confirmed(&transfer_bytes(&usdc.token, &auth, &signature)).await;

    assert_eq!(usdc.balances(&chain.payer_and_payee()).await, paid());
    assert!(view(usdc.token.authorizationState(auth.from, auth.nonce)).await);
    assert_used_once(&receipt, usdc.address, auth.from, auth.nonce);

    // A signature of any other length is refused by the ECDSA path.
    let second = payment(&chain, "bytes-short").await;
    let signature = usdc.sign(&chain.payer, &second);
    let short = usdc
        .token
        .call_builder(&bytes_call(&second, &signature.as_bytes()[..64]));
    assert_reverts(&short, "ECRecover: invalid signature length").await;

    chain.stop().await;
}

#[tokio::test]
async fn a_reused_nonce_reverts_and_moves_nothing() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let accounts = chain.payer_and_payee();

    let auth = payment(&chain, "reused").await;
    let signature = usdc.sign(&chain.payer, &auth);
    confirmed(&transfer_vrs(&usdc.token, &auth, &signature)).await;
    let after_first = usdc.balances(&accounts).await;

    // The identical authorization again, through either overload.
    assert_transfer_reverts(&usdc.token, &auth, &signature, USED_OR_CANCELED).await;

    // A different, validly signed authorization that reuses the nonce.
    let other = TransferWithAuthorization {
        to: chain.stranger.address(),
        value: U256::from(1),
        ..auth.clone()
    };
    let other_signature = usdc.sign(&chain.payer, &other);
    let reused = transfer_vrs(&usdc.token, &other, &other_signature);
    assert_reverts(&reused, USED_OR_CANCELED).await;

    // Mined anyway (gas given, so no estimation): the transaction reverts on chain.
    let receipt = mined_anyway(transfer_vrs(&usdc.token, &auth, &signature)).await;
    assert!(
        !receipt.status(),
        "replaying the authorization must revert on chain"
    );
    assert!(events::<TestUsdc::Transfer>(&receipt, usdc.address).is_empty());

    assert_eq!(usdc.balances(&accounts).await, after_first);
    assert_eq!(after_first, paid());
    let stranger = chain.stranger.address();
    assert_eq!(view(usdc.token.balanceOf(stranger)).await, U256::ZERO);

    chain.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_authorizations_revert_with_fiat_token_messages() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let token = &usdc.token;

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
    let expired = "FiatTokenV2: authorization is expired";
    let not_yet_valid = "FiatTokenV2: authorization is not yet valid";
    let cases = [
        (window("before-equals-now", 0, at), Some(expired)),
        (window("before-in-past", 0, at - 1), Some(expired)),
        (
            window("after-equals-now", at, at + 3600),
            Some(not_yet_valid),
        ),
        (
            window("after-in-future", at + 1, at + 3600),
            Some(not_yet_valid),
        ),
        (window("tightest-window", at - 1, at + 1), None),
    ];
    for (auth, expected) in &cases {
        let signature = usdc.sign(&chain.payer, auth);
        let call = transfer_vrs(token, auth, &signature);
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
    for (auth, reason) in [
        (window("expired", 0, now), expired),
        (window("early", now + 3600, now + 7200), not_yet_valid),
    ] {
        let signature = usdc.sign(&chain.payer, &auth);
        assert_reverts(&transfer_vrs(token, &auth, &signature), reason).await;
    }

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
        let signature = usdc.sign(&chain.payer, &auth);
        usdc.relayer
            .anvil_set_next_block_timestamp(block_time)
            .await
            .expect("set next block timestamp");
        let receipt = mined_anyway(transfer_vrs(token, &auth, &signature)).await;
        let block = usdc
            .relayer
            .get_block_by_number(receipt.block_number.expect("mined").into())
            .await
            .unwrap()
            .expect("block");
        assert_eq!(block.header.timestamp, block_time);
        assert!(!receipt.status(), "{label} must revert on chain");
        assert!(!view(token.authorizationState(auth.from, auth.nonce)).await);
    }

    assert_eq!(usdc.balances(&chain.payer_and_payee()).await, unpaid());
    chain.stop().await;
}

#[tokio::test]
async fn a_high_s_signature_and_a_signature_by_another_key_are_rejected() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let accounts = chain.payer_and_payee();

    let auth = payment(&chain, "malleable").await;
    let digest = auth.eip712_signing_hash(&domain(usdc.address));
    let low = usdc.sign(&chain.payer, &auth);
    let high = Signature::new(low.r(), SECP256K1_N - low.s(), !low.v());
    assert!(high.s() > SECP256K1_N >> 1);
    assert_eq!(
        high.recover_address_from_prehash(&digest).expect("recover"),
        chain.payer.address(),
        "the flipped signature is mathematically valid for the payer"
    );
    let high_s = "ECRecover: invalid signature 's' value";
    assert_transfer_reverts(&usdc.token, &auth, &high, high_s).await;

    let forged = usdc.sign(&chain.stranger, &auth);
    assert_transfer_reverts(&usdc.token, &auth, &forged, INVALID_SIGNATURE).await;

    // A payer signature over different terms does not authorize these.
    let cheaper = TransferWithAuthorization {
        value: U256::from(1),
        ..auth.clone()
    };
    let for_cheaper = usdc.sign(&chain.payer, &cheaper);
    let mismatched = transfer_vrs(&usdc.token, &auth, &for_cheaper);
    assert_reverts(&mismatched, INVALID_SIGNATURE).await;
    // Nor does one for another chain's domain.
    let other_chain = eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: 8453,
        verifying_contract: usdc.address,
    };
    let wrong_domain = sign(&chain.payer, &auth, &other_chain);
    let elsewhere = transfer_vrs(&usdc.token, &auth, &wrong_domain);
    assert_reverts(&elsewhere, INVALID_SIGNATURE).await;

    assert_eq!(usdc.balances(&accounts).await, unpaid());
    assert!(!view(usdc.token.authorizationState(auth.from, auth.nonce)).await);

    // The canonical low-s signature still goes through.
    confirmed(&transfer_vrs(&usdc.token, &auth, &low)).await;
    assert_eq!(usdc.balances(&accounts).await, paid());

    chain.stop().await;
}

#[tokio::test]
async fn receive_with_authorization_works_only_when_the_payee_submits_it() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let accounts = chain.payer_and_payee();

    // The terms, signed as a receiveWithAuthorization message.
    let auth = payment(&chain, "receive").await;
    let signature = usdc.sign(&chain.payer, &ReceiveWithAuthorization::from(&auth));

    let by_relayer = &usdc.token;
    let caller_not_payee = "FiatTokenV2: caller must be the payee";
    assert_reverts(
        &receive_vrs(by_relayer, &auth, &signature),
        caller_not_payee,
    )
    .await;
    let by_payer = TestUsdc::new(usdc.address, chain.provider(&chain.payer));
    assert_reverts(&receive_vrs(&by_payer, &auth, &signature), caller_not_payee).await;
    assert_eq!(usdc.balances(&accounts).await, unpaid());

    // A transferWithAuthorization signature over the same fields is a different message.
    let by_payee = TestUsdc::new(usdc.address, chain.provider(&chain.payee));
    let transfer_signature = usdc.sign(&chain.payer, &auth);
    let as_receive = receive_vrs(&by_payee, &auth, &transfer_signature);
    assert_reverts(&as_receive, INVALID_SIGNATURE).await;
    let as_transfer = transfer_vrs(by_relayer, &auth, &signature);
    assert_reverts(&as_transfer, INVALID_SIGNATURE).await;

    let receipt = confirmed(&receive_vrs(&by_payee, &auth, &signature)).await;
    assert_eq!(receipt.from, chain.payee.address());
    assert_eq!(usdc.balances(&accounts).await, paid());
    assert!(view(by_payee.authorizationState(auth.from, auth.nonce)).await);
    assert_used_once(&receipt, usdc.address, auth.from, auth.nonce);

    // The bytes overload shares the nonce space: the same authorization cannot be replayed.
    let receive_bytes: TestUsdc::receiveWithAuthorization_0Call =
        same_arguments(&bytes_call(&auth, &signature.as_bytes()));
    assert_reverts(&by_payee.call_builder(&receive_bytes), USED_OR_CANCELED).await;

    chain.stop().await;
}

#[tokio::test]
async fn a_canceled_authorization_cannot_be_used_later() {
    let (chain, usdc) = Chain::start_with_usdc().await;
    let token = &usdc.token;

    let auth = payment(&chain, "canceled").await;
    let transfer_signature = usdc.sign(&chain.payer, &auth);
    let cancel = CancelAuthorization {
        authorizer: chain.payer.address(),
        nonce: auth.nonce,
    };
    let cancel_vrs = |signature: &Signature| {
        token.cancelAuthorization_0(
            cancel.authorizer,
            cancel.nonce,
            v_byte(signature),
            r_of(signature),
            s_of(signature),
        )
    };
    let cancel_bytes = |message: &CancelAuthorization, signature: &Signature| {
        token.cancelAuthorization_1(
            message.authorizer,
            message.nonce,
            Bytes::from(signature.as_bytes()),
        )
    };

    // Only the authorizer can cancel.
    let forged = usdc.sign(&chain.stranger, &cancel);
    assert_reverts(&cancel_vrs(&forged), INVALID_SIGNATURE).await;
    assert!(!view(token.authorizationState(auth.from, auth.nonce)).await);

    let signature = usdc.sign(&chain.payer, &cancel);
    let receipt = confirmed(&cancel_vrs(&signature)).await;
    let canceled = events::<TestUsdc::AuthorizationCanceled>(&receipt, usdc.address);
    assert_eq!(canceled.len(), 1);
    assert_eq!(
        (canceled[0].authorizer, canceled[0].nonce),
        (cancel.authorizer, cancel.nonce)
    );
    assert!(events::<TestUsdc::AuthorizationUsed>(&receipt, usdc.address).is_empty());
    assert!(view(token.authorizationState(auth.from, auth.nonce)).await);

    let after_cancel = transfer_vrs(token, &auth, &transfer_signature);
    assert_reverts(&after_cancel, USED_OR_CANCELED).await;
    assert_reverts(&cancel_bytes(&cancel, &signature), USED_OR_CANCELED).await;
    assert_eq!(usdc.balances(&chain.payer_and_payee()).await, unpaid());

    // Used authorizations cannot be canceled either.
    let paid = payment(&chain, "paid").await;
    let paid_signature = usdc.sign(&chain.payer, &paid);
    confirmed(&transfer_bytes(token, &paid, &paid_signature)).await;
    let late = CancelAuthorization {
        authorizer: chain.payer.address(),
        nonce: paid.nonce,
    };
    let late_signature = usdc.sign(&chain.payer, &late);
    assert_reverts(&cancel_bytes(&late, &late_signature), USED_OR_CANCELED).await;

    chain.stop().await;
}

#[tokio::test]
async fn a_smart_wallet_authorizes_with_an_erc1271_signature_by_its_owner() {
    let chain = Chain::start().await;
    let owner = chain.provider(&chain.owner);
    let usdc = chain.funded_usdc().await;
    // The payer key owns the wallet; its own balance must not move.
    let wallet = TestSmartWallet::deploy(&owner, chain.payer.address())
        .await
        .expect("deploy TestSmartWallet");
    let wallet_address = *wallet.address();
    assert_eq!(view(wallet.owner()).await, chain.payer.address());
    mint(&owner, usdc.address, wallet_address, U256::from(FUNDS))
        .await
        .expect("mint to the wallet");

    let accounts = [wallet_address, chain.payee.address(), chain.payer.address()];
    let auth = TransferWithAuthorization {
        from: wallet_address,
        ..payment(&chain, "wallet").await
    };
    let digest = auth.eip712_signing_hash(&domain(usdc.address));
    let wallet_says =
        |signature: Signature| wallet.isValidSignature(digest, Bytes::from(signature.as_bytes()));

    // Signed by someone else: the wallet says no.
    let forged = chain.stranger.sign_hash_sync(&digest).expect("sign");
    assert_eq!(view(wallet_says(forged)).await, [0xff; 4]);
    assert_transfer_reverts(&usdc.token, &auth, &forged, INVALID_SIGNATURE).await;
    assert_eq!(
        usdc.balances(&accounts).await,
        [U256::from(FUNDS), U256::ZERO, U256::from(FUNDS)]
    );

    // Signed by the owner over the EIP-712 digest.
    let signature = chain.payer.sign_hash_sync(&digest).expect("sign");
    assert_eq!(view(wallet_says(signature)).await, [0x16, 0x26, 0xba, 0x7e]);
    let receipt = confirmed(&transfer_bytes(&usdc.token, &auth, &signature)).await;
    assert_eq!(
        usdc.balances(&accounts).await,
        [
            U256::from(FUNDS - PRICE),
            U256::from(PRICE),
            U256::from(FUNDS)
        ]
    );
    assert!(view(usdc.token.authorizationState(wallet_address, auth.nonce)).await);
    let payer = chain.payer.address();
    assert!(!view(usdc.token.authorizationState(payer, auth.nonce)).await);
    assert_used_once(&receipt, usdc.address, wallet_address, auth.nonce);

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
    assert_eq!(view(token.name()).await, "Tether USD");
    assert_eq!(view(token.symbol()).await, "USDT");
    assert_eq!(view(token.decimals()).await, 18);
    assert_eq!(view(token.owner()).await, chain.owner.address());

    let one = U256::from(10).pow(U256::from(18));
    let funds = one * U256::from(1_000);
    let price = one * U256::from(12) + U256::from(345);
    mint(&owner, address, chain.payer.address(), funds)
        .await
        .expect("mint");
    assert_eq!(view(token.totalSupply()).await, funds);

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
    let [payer_address, payee_address] = chain.payer_and_payee();
    let plain_balances = || async {
        [
            view(token.balanceOf(payer_address)).await,
            view(token.balanceOf(payee_address)).await,
        ]
    };
    assert_eq!(plain_balances().await, [funds - price, price]);
    assert_reverts(
        &payer.transfer(chain.payee.address(), funds),
        "ERC20: transfer amount exceeds balance",
    )
    .await;

    // A correctly signed EIP-3009 call finds no such function (and no fallback) in the contract.
    let auth = TransferWithAuthorization {
        value: price,
        ..payment(&chain, "plain").await
    };
    let domain = eip712_domain! {
        name: "Tether USD",
        version: "2",
        chain_id: CHAIN_ID,
        verifying_contract: address,
    };
    let signature = sign(&chain.payer, &auth, &domain);
    let calls = [
        vrs_call(&auth, &signature).abi_encode(),
        bytes_call(&auth, &signature.as_bytes()).abi_encode(),
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
    assert_eq!(plain_balances().await, [funds - price, price]);

    chain.stop().await;
}
