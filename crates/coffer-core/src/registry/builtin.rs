//! The networks and stablecoins Coffer knows out of the box.
//!
//! Token addresses and EIP-712 domains are those of the canonical deployments (Circle's USDC,
//! Tether's USDT and USD₮0, Paxos' USDG). x402 v1 names follow the reference implementation's
//! table where it has one; OKX indexes EVM chains by chain id; GatePay chain codes and
//! `fullCurrType`s follow GatePay's `<SYMBOL>_<CHAIN>` pattern (`USDT_MATIC`).

use alloy_primitives::{Address, address};

use super::{Asset, Chain, Eip712Domain, NetworkNames, TransferMethod};

struct ChainSpec {
    key: &'static str,
    chain_id: u64,
    display_name: &'static str,
    testnet: bool,
    native_symbol: &'static str,
    confirmations: u64,
    gatepay_chain: &'static str,
    cryptopay_slug: &'static str,
    aliases: &'static [&'static str],
}

struct AssetSpec {
    symbol: &'static str,
    address: Address,
    decimals: u8,
    /// `Some((name, version))` for EIP-3009 tokens.
    eip3009: Option<(&'static str, &'static str)>,
}

const fn usdc(address: Address, name: &'static str) -> AssetSpec {
    AssetSpec {
        symbol: "USDC",
        address,
        decimals: 6,
        eip3009: Some((name, "2")),
    }
}

const fn erc20(symbol: &'static str, address: Address, decimals: u8) -> AssetSpec {
    AssetSpec {
        symbol,
        address,
        decimals,
        eip3009: None,
    }
}

fn build(spec: ChainSpec, assets: &[AssetSpec]) -> Chain {
    Chain {
        chain_id: spec.chain_id,
        display_name: spec.display_name.to_owned(),
        testnet: spec.testnet,
        native_symbol: spec.native_symbol.to_owned(),
        confirmations: spec.confirmations,
        rpc_urls: Vec::new(),
        names: NetworkNames {
            x402_v1: spec.key.to_owned(),
            caip2: format!("eip155:{}", spec.chain_id),
            okx_chain_index: spec.chain_id.to_string(),
            okx_chain_name: spec.display_name.to_owned(),
            gatepay_chain: spec.gatepay_chain.to_owned(),
            cryptopay_slug: spec.cryptopay_slug.to_owned(),
            aliases: spec
                .aliases
                .iter()
                .map(|alias| (*alias).to_owned())
                .collect(),
        },
        assets: assets
            .iter()
            .map(|asset| Asset {
                symbol: asset.symbol.to_owned(),
                address: asset.address,
                decimals: asset.decimals,
                transfer_method: if asset.eip3009.is_some() {
                    TransferMethod::Eip3009
                } else {
                    TransferMethod::Erc20
                },
                eip712: asset.eip3009.map(|(name, version)| Eip712Domain {
                    name: name.to_owned(),
                    version: version.to_owned(),
                }),
                gatepay_full_curr_type: format!("{}_{}", asset.symbol, spec.gatepay_chain),
            })
            .collect(),
    }
}

pub(super) fn chains() -> Vec<Chain> {
    vec![
        build(
            ChainSpec {
                key: "ethereum",
                chain_id: 1,
                display_name: "Ethereum",
                testnet: false,
                native_symbol: "ETH",
                confirmations: 12,
                gatepay_chain: "ETH",
                cryptopay_slug: "ethereum",
                aliases: &["eth", "eth-mainnet", "ethereum-mainnet"],
            },
            &[
                usdc(
                    address!("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0xdAC17F958D2ee523a2206206994597C13D831ec7"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "base",
                chain_id: 8453,
                display_name: "Base",
                testnet: false,
                native_symbol: "ETH",
                confirmations: 10,
                gatepay_chain: "BASE",
                cryptopay_slug: "base",
                aliases: &["base-mainnet"],
            },
            &[
                usdc(
                    address!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0xfde4C96c8593536E31F229EA8f37b2ADa2699bb2"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "base-sepolia",
                chain_id: 84532,
                display_name: "Base Sepolia",
                testnet: true,
                native_symbol: "ETH",
                confirmations: 5,
                gatepay_chain: "BASESEPOLIA",
                cryptopay_slug: "base-sepolia",
                aliases: &["base_sepolia"],
            },
            &[usdc(
                address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
                "USDC",
            )],
        ),
        build(
            ChainSpec {
                key: "polygon",
                chain_id: 137,
                display_name: "Polygon",
                testnet: false,
                native_symbol: "POL",
                confirmations: 64,
                gatepay_chain: "MATIC",
                cryptopay_slug: "polygon",
                aliases: &["matic", "polygon-mainnet"],
            },
            &[
                usdc(
                    address!("0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0xc2132D05D31c914a87C6611C10748AEb04B58e8F"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "bsc",
                chain_id: 56,
                display_name: "BNB Smart Chain",
                testnet: false,
                native_symbol: "BNB",
                confirmations: 15,
                gatepay_chain: "BSC",
                cryptopay_slug: "bsc",
                aliases: &["bsc-mainnet", "bnb", "binance-smart-chain"],
            },
            &[
                erc20(
                    "USDT",
                    address!("0x55d398326f99059fF775485246999027B3197955"),
                    18,
                ),
                erc20(
                    "USDC",
                    address!("0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d"),
                    18,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "arbitrum",
                chain_id: 42161,
                display_name: "Arbitrum One",
                testnet: false,
                native_symbol: "ETH",
                confirmations: 20,
                gatepay_chain: "ARBEVM",
                cryptopay_slug: "arbitrum",
                aliases: &["arbitrum-one", "arbitrum-mainnet"],
            },
            &[
                usdc(
                    address!("0xaf88d065e77c8cC2239327C5EDb3A432268e5831"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "optimism",
                chain_id: 10,
                display_name: "OP Mainnet",
                testnet: false,
                native_symbol: "ETH",
                confirmations: 10,
                gatepay_chain: "OPETH",
                cryptopay_slug: "optimism",
                aliases: &["op", "op-mainnet", "optimism-mainnet"],
            },
            &[
                usdc(
                    address!("0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0x94b008aA00579c1307B0EF2c499aD98a8ce58e58"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "avalanche",
                chain_id: 43114,
                display_name: "Avalanche C-Chain",
                testnet: false,
                native_symbol: "AVAX",
                confirmations: 3,
                gatepay_chain: "AVAX_C",
                cryptopay_slug: "avalanche",
                aliases: &["avax", "avalanche-c", "avalanche-mainnet"],
            },
            &[
                usdc(
                    address!("0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E"),
                    "USD Coin",
                ),
                erc20(
                    "USDT",
                    address!("0x9702230A8Ea53601f5cD2dc00fDBc13d4dF4A8c7"),
                    6,
                ),
            ],
        ),
        build(
            ChainSpec {
                key: "x-layer",
                chain_id: 196,
                display_name: "X Layer",
                testnet: false,
                native_symbol: "OKB",
                confirmations: 10,
                gatepay_chain: "XLAYER",
                cryptopay_slug: "xlayer",
                aliases: &["xlayer", "x-layer-mainnet", "okx-xlayer"],
            },
            &[
                AssetSpec {
                    symbol: "USDT",
                    address: address!("0x779Ded0c9e1022225f8E0630b35a9b54bE713736"),
                    decimals: 6,
                    eip3009: Some(("USD₮0", "1")),
                },
                AssetSpec {
                    symbol: "USDG",
                    address: address!("0x4ae46a509f6b1d9056937ba4500cb143933d2dc8"),
                    decimals: 6,
                    eip3009: Some(("USDG", "2")),
                },
            ],
        ),
    ]
}
