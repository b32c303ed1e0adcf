//! A local chain for tests that pay: anvil (chain id 84532) with the EIP-3009 test token at
//! Base Sepolia's USDC address, token transfers, and x402 payments signed for that token.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256, address};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::{IERC20, TransferWithAuthorization};
use coffer_evm::testnet::{self, UsdcSpec};
use serde_json::{Value, json};

/// Base Sepolia's USDC address, where the test token is installed.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");

/// A fresh anvil chain (id 84532) with the EIP-3009 test token at Base Sepolia's USDC address,
/// and a provider whose wallet owns the token (it can mint).
pub async fn chain_with_usdc() -> (Anvil, DynProvider) {
    let binary = anvil::locate_binary().expect("anvil is missing: run scripts/install-tools.sh");
    let chain = Anvil::start(&AnvilOptions {
        binary,
        chain_id: 84_532,
        port: 0,
        state_file: None,
        block_time: None,
    })
    .await
    .unwrap();
    let owner = testnet::dev_account(0).unwrap();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(owner.clone()))
        .connect_http(chain.url().parse().unwrap())
        .erased();
    let spec = UsdcSpec {
        name: "USDC".into(),
        version: "2".into(),
        symbol: "USDC".into(),
        decimals: 6,
        owner: owner.address(),
    };
    testnet::install_usdc_at(&provider, USDC, &spec)
        .await
        .unwrap();
    (chain, provider)
}

/// Signs an EIP-3009 authorization for `to` with the payer's key, as an x402 v2 request.
pub fn x402_request(payer: &PrivateKeySigner, to: Address, value: u64) -> Value {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let nonce = B256::from(rand::random::<[u8; 32]>());
    let message = TransferWithAuthorization {
        from: payer.address(),
        to,
        value: U256::from(value),
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + 600),
        nonce,
    };
    let domain = Eip712Domain::new(
        Some("USDC".into()),
        Some("2".into()),
        Some(U256::from(84_532)),
        Some(USDC),
        None,
    );
    let signature = payer
        .sign_hash_sync(&message.eip712_signing_hash(&domain))
        .unwrap();
    let requirements = json!({"scheme": "exact", "network": "eip155:84532", "amount": value.to_string(), "asset": USDC.to_checksum(None),
        "payTo": to.to_checksum(None), "maxTimeoutSeconds": 600, "extra": {"name": "USDC", "version": "2"}});
    json!({"x402Version": 2, "paymentRequirements": requirements, "paymentPayload": {"x402Version": 2, "accepted": requirements,
        "payload": {"signature": format!("0x{}", alloy::hex::encode(signature.as_bytes())), "authorization": {
            "from": payer.address().to_checksum(None), "to": to.to_checksum(None), "value": value.to_string(),
            "validAfter": (now - 600).to_string(), "validBefore": (now + 600).to_string(), "nonce": format!("{nonce:#x}")}}}})
}

/// Transfers `amount` of `token` to `to` from the wallet of `from`, and waits for the receipt.
pub async fn transfer(
    from: &impl Provider,
    token: Address,
    to: Address,
    amount: U256,
) -> TransactionReceipt {
    IERC20::new(token, from)
        .transfer(to, amount)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
}
