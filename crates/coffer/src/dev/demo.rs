//! The demo merchant of `coffer dev`: its credentials (API key, OKX and GatePay credentials,
//! kept in the data directory so a re-run reuses them), its webhook inbox, its deposit wallet,
//! and the x402 paywall route whose sales are its orders.

use std::path::Path;

use alloy::primitives::Address;
use coffer_core::{ChainRegistry, MerchantId};
use coffer_evm::testnet;
use coffer_server::AppState;
use coffer_server::paywall::PaywallRouteConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::dev::chains::LocalChain;
use crate::dev::inbox;
use crate::dev::summary::{GatePaySummary, OkxSummary, PaywallSummary};
use crate::dev::upstream::DemoUpstream;
use crate::failure::Failure;
use crate::master_key::write_private_file;

/// Dev account index that receives the demo paywall's payments (the merchant's payTo).
const PAY_TO_ACCOUNT: u32 = 9;
/// The demo paywall route's price.
const DEMO_PRICE: &str = "0.01";

/// The demo merchant's credentials, kept in the data directory so a re-run reuses them.
#[derive(Serialize, Deserialize)]
pub(crate) struct DemoCredentials {
    pub(crate) merchant_id: String,
    pub(crate) api_key: String,
    pub(crate) okx: OkxSummary,
    /// Absent in files written before GatePay credentials existed.
    #[serde(default)]
    pub(crate) gatepay: Option<GatePaySummary>,
}

/// The demo merchant, ready to be paid.
pub(crate) struct DemoMerchant {
    /// Its credentials.
    pub(crate) credentials: DemoCredentials,
    /// Its webhook secret.
    pub(crate) webhook_secret: String,
    /// Its webhook endpoint, the local inbox.
    pub(crate) inbox_url: String,
}

/// The address the demo merchant is paid at over x402, on every local chain.
///
/// # Errors
/// [`Failure`] when the dev account cannot be derived.
pub(crate) fn pay_to() -> Result<Address, Failure> {
    Ok(testnet::dev_account(PAY_TO_ACCOUNT)
        .map_err(Failure::context("payTo account"))?
        .address())
}

/// The token the demo paywall is priced in.
pub(crate) struct PaywallToken {
    /// Coffer's key of its chain.
    network: String,
    /// Its symbol.
    symbol: String,
    /// Its decimals.
    decimals: u8,
}

/// The demo paywall's token: the first running chain's first EIP-3009 token (Base Sepolia's
/// USDC unless `--chains` leaves that chain out); `None` when no running chain has one.
pub(crate) fn paywall_token(
    chains: &[LocalChain],
    registry: &ChainRegistry,
) -> Option<PaywallToken> {
    chains.iter().find_map(|chain| {
        let known = registry.by_chain_id(chain.chain_id)?;
        let asset = known.assets.iter().find(|asset| asset.eip712.is_some())?;
        Some(PaywallToken {
            network: chain.key.to_owned(),
            symbol: asset.symbol.clone(),
            decimals: asset.decimals,
        })
    })
}

/// The demo paywall route: `GET /premium/*` for 0.01 of `token`, paid to `pay_to`, proxied to
/// `upstream`.
pub(crate) fn paywall_route(
    pay_to: Address,
    upstream: &DemoUpstream,
    token: &PaywallToken,
) -> PaywallRouteConfig {
    PaywallRouteConfig {
        path: "/premium/*".to_owned(),
        method: Some("GET".to_owned()),
        price: DEMO_PRICE.to_owned(),
        networks: vec![token.network.clone()],
        assets: vec![token.symbol.clone()],
        pay_to: pay_to.to_checksum(None),
        upstream: upstream.base_url.clone(),
        description: "A premium quote (coffer dev demo)".to_owned(),
        mime_type: "application/json".to_owned(),
        max_timeout_seconds: 300,
    }
}

/// The demo paywall route as the summary shows it, served at `api_base_url`.
pub(crate) fn paywall_summary(
    api_base_url: &str,
    pay_to: Address,
    upstream: &DemoUpstream,
    token: &PaywallToken,
) -> PaywallSummary {
    // DEMO_PRICE is a hundredth of a token.
    let amount = 10u128.pow(u32::from(token.decimals.saturating_sub(2)));
    PaywallSummary {
        url: format!("{api_base_url}/premium/quote"),
        price: format!("{DEMO_PRICE} {}", token.symbol),
        amount: amount.to_string(),
        network: token.network.clone(),
        pay_to: pay_to.to_checksum(None),
        upstream_url: upstream.base_url.clone(),
        upstream_hits_url: upstream.hits_url.clone(),
    }
}

/// Sets up the demo merchant (reusing the one saved in `data_dir`): its webhook goes to a
/// local inbox, its deposit wallet is the dev mnemonic's, and `pay_to` records its sales on
/// every chain.
///
/// # Errors
/// [`Failure`] naming the step that failed.
pub(crate) async fn set_up(
    state: &AppState,
    data_dir: &Path,
    chains: &[LocalChain],
    pay_to: Address,
) -> Result<DemoMerchant, Failure> {
    let credentials = credentials(state, data_dir).await?;
    let merchant = state
        .gateway
        .merchants
        .get(&merchant_id_of(&credentials.merchant_id)?)
        .await?;
    let gatepay_secret = credentials.gatepay.as_ref().map(|g| g.secret.clone());
    let inbox_url = inbox::start(merchant.webhook_secret.clone(), gatepay_secret)
        .await
        .map_err(Failure::context("cannot start the webhook inbox"))?;
    let merchant = state
        .gateway
        .store
        .set_merchant_webhook_url(&merchant.id, Some(&inbox_url))
        .await
        .map_err(Failure::context("demo merchant webhook"))?;
    let deposit_key = coffer_evm::hd::dev_deposit_key(testnet::DEV_MNEMONIC)
        .and_then(|key| key.to_base58())
        .map_err(Failure::context("dev deposit key"))?;
    state
        .gateway
        .store
        .set_wallet(
            &merchant.id,
            0,
            &deposit_key,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .map_err(Failure::context("dev deposit wallet"))?;
    // The demo merchant is paid over x402 at one address on every local chain (the paywall on
    // base-sepolia; Pelago orders on both).
    for chain in chains {
        state
            .gateway
            .sales
            .add_pay_to(&merchant, chain.chain_id, pay_to)
            .await
            .map_err(Failure::context("demo payTo"))?;
    }
    Ok(DemoMerchant {
        credentials,
        webhook_secret: merchant.webhook_secret,
        inbox_url,
    })
}

/// The demo merchant's payout wallet on every running chain, made and funded (gas and 10,000
/// of each token, minted by `owner`) the first time; `(chain, address)` of each.
///
/// # Errors
/// [`Failure`] naming the chain.
pub(crate) async fn payout_wallets(
    state: &AppState,
    merchant: &str,
    chains: &[LocalChain],
    registry: &ChainRegistry,
    owner: &alloy::signers::local::PrivateKeySigner,
) -> Result<Vec<(String, String)>, Failure> {
    let merchant = merchant_id_of(merchant)?;
    let wallets = &state.gateway.payout_wallets;
    let failed = |error: coffer_gateway::payout_wallets::PayoutWalletError| {
        Failure::new(format!("demo payout wallet: {error}"))
    };
    let existing = wallets.list(&merchant).await.map_err(failed)?;
    for chain in chains {
        if existing
            .iter()
            .any(|(_, chain_id, _)| *chain_id == chain.chain_id)
        {
            continue;
        }
        let known = registry
            .by_chain_id(chain.chain_id)
            .ok_or_else(|| Failure::new(format!("{}: not in the chain registry", chain.key)))?;
        let address = wallets.create(&merchant, chain.key).await.map_err(failed)?;
        crate::dev::chains::fund(chain, known, owner, address).await?;
    }
    Ok(wallets
        .list(&merchant)
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|(_, chain_id, _)| chains.iter().any(|c| c.chain_id == *chain_id))
        .map(|(chain, _, address)| (chain, address))
        .collect())
}

fn merchant_id_of(text: &str) -> Result<MerchantId, Failure> {
    MerchantId::parse(text).map_err(|error| Failure::new(error.to_string()))
}

/// The saved credentials when their API key still works (adding a GatePay credential to a file
/// from before they existed), else a new demo merchant's.
async fn credentials(state: &AppState, data_dir: &Path) -> Result<DemoCredentials, Failure> {
    let path = data_dir.join("demo-merchant.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<DemoCredentials>(&text)
    {
        let key = SecretString::from(saved.api_key.clone());
        if let Ok(merchant) = state.gateway.merchants.authenticate(&key).await {
            if saved.gatepay.is_some() {
                return Ok(saved);
            }
            let mut saved = saved;
            saved.gatepay = Some(gatepay(state, &merchant.id).await?);
            write(&path, &saved)?;
            return Ok(saved);
        }
    }
    let merchant = state.gateway.merchants.create("Demo Shop", None).await?;
    let created = state
        .gateway
        .merchants
        .create_key(&merchant.id, "coffer dev")
        .await?;
    let okx = state
        .gateway
        .okx
        .create(&merchant.id)
        .await
        .map_err(Failure::context("demo OKX credential"))?;
    let saved = DemoCredentials {
        merchant_id: merchant.id.to_string(),
        api_key: created.key.expose_secret().to_owned(),
        okx: OkxSummary {
            access_key: okx.access_key.clone(),
            secret: okx.secret.expose_secret().to_owned(),
            passphrase: okx.passphrase.expose_secret().to_owned(),
        },
        gatepay: Some(gatepay(state, &merchant.id).await?),
    };
    write(&path, &saved)?;
    Ok(saved)
}

async fn gatepay(state: &AppState, merchant: &MerchantId) -> Result<GatePaySummary, Failure> {
    let created = state
        .gateway
        .gatepay
        .create(merchant)
        .await
        .map_err(Failure::context("demo GatePay credential"))?;
    Ok(GatePaySummary {
        client_id: created.client_id.clone(),
        secret: created.secret.expose_secret().to_owned(),
    })
}

fn write(path: &Path, saved: &DemoCredentials) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(saved).map_err(|e| Failure::new(e.to_string()))?;
    write_private_file(path, text.as_bytes()).map_err(Failure::new)
}
