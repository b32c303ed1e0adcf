use std::collections::BTreeMap;

use alloy_primitives::address;

use super::*;

fn overrides(toml_like: &[(&str, ChainOverride)]) -> BTreeMap<String, ChainOverride> {
    toml_like
        .iter()
        .map(|(key, change)| ((*key).to_owned(), change.clone()))
        .collect()
}

#[test]
fn the_builtin_registry_covers_the_required_networks() {
    let registry = ChainRegistry::builtin();
    for (key, chain_id) in [
        ("ethereum", 1),
        ("base", 8453),
        ("base-sepolia", 84532),
        ("polygon", 137),
        ("bsc", 56),
        ("arbitrum", 42161),
        ("optimism", 10),
        ("avalanche", 43114),
        ("x-layer", 196),
    ] {
        let chain = registry
            .by_name(key)
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(chain.chain_id, chain_id, "{key}");
        assert!(!chain.assets.is_empty(), "{key} has no assets");
    }
}

#[test]
fn every_eip3009_asset_has_a_domain_and_names_are_unique() {
    let registry = ChainRegistry::builtin();
    for chain in registry.chains() {
        for asset in &chain.assets {
            assert_eq!(
                asset.transfer_method == TransferMethod::Eip3009,
                asset.eip712.is_some(),
                "{} {}",
                chain.key(),
                asset.symbol
            );
        }
    }
    let mut fresh = ChainRegistry::builtin();
    assert_eq!(fresh.apply(&BTreeMap::new()), Ok(()));
}

#[test]
fn each_naming_scheme_finds_the_same_chain() {
    let registry = ChainRegistry::builtin();
    let polygon = registry.by_chain_id(137).map(Chain::key);
    assert_eq!(registry.by_caip2("eip155:137").map(Chain::key), polygon);
    assert_eq!(registry.by_okx_chain_index("137").map(Chain::key), polygon);
    assert_eq!(registry.by_gatepay_chain("MATIC").map(Chain::key), polygon);
    assert_eq!(
        registry.by_cryptopay_slug("polygon").map(Chain::key),
        polygon
    );
    assert_eq!(registry.by_x402_v1_name("polygon").map(Chain::key), polygon);
    let (chain, asset) = registry
        .by_gatepay_full_curr_type("USDT_MATIC")
        .expect("USDT_MATIC is known");
    assert_eq!((chain.chain_id, asset.symbol.as_str()), (137, "USDT"));
    assert_eq!(
        registry.by_name("bsc-mainnet").map(|c| c.chain_id),
        Some(56)
    );
    assert_eq!(
        registry
            .by_okx_chain_index("196")
            .map(|c| c.names.okx_chain_name.as_str()),
        Some("X Layer")
    );
}

#[test]
fn eip712_names_differ_between_deployments_of_usdc() {
    let registry = ChainRegistry::builtin();
    let domain = |key: &str| {
        registry
            .by_name(key)
            .and_then(|chain| chain.asset_by_symbol("usdc"))
            .and_then(|asset| asset.eip712.clone())
            .map(|domain| domain.name)
    };
    assert_eq!(domain("base").as_deref(), Some("USD Coin"));
    assert_eq!(domain("base-sepolia").as_deref(), Some("USDC"));
    let xlayer = registry
        .by_name("x-layer")
        .and_then(|c| c.asset_by_symbol("USDT"));
    assert_eq!(
        xlayer
            .and_then(|a| a.eip712.as_ref())
            .map(|d| d.name.as_str()),
        Some("USD₮0")
    );
}

#[test]
fn configuration_adds_rpc_urls_and_overrides_assets() {
    let mut registry = ChainRegistry::builtin();
    let mut assets = BTreeMap::new();
    assets.insert(
        "USDC".to_owned(),
        AssetOverride {
            address: Some(address!("0x1111111111111111111111111111111111111111")),
            ..AssetOverride::default()
        },
    );
    let change = ChainOverride {
        rpc_urls: vec!["http://127.0.0.1:8545".to_owned()],
        confirmations: Some(2),
        assets,
        ..ChainOverride::default()
    };
    registry
        .apply(&overrides(&[("base-sepolia", change)]))
        .expect("valid override");
    let chain = registry.by_chain_id(84532).expect("base-sepolia");
    assert_eq!(chain.rpc_urls, ["http://127.0.0.1:8545"]);
    assert_eq!(chain.confirmations, 2);
    let usdc = chain.asset_by_symbol("USDC").expect("usdc");
    assert_eq!(
        usdc.address,
        address!("0x1111111111111111111111111111111111111111")
    );
    assert_eq!(usdc.eip712.as_ref().map(|d| d.name.as_str()), Some("USDC"));
    assert_eq!(registry.configured().count(), 1);
}

#[test]
fn configuration_can_add_a_chain_with_its_assets() {
    let mut registry = ChainRegistry::builtin();
    let mut assets = BTreeMap::new();
    assets.insert(
        "USDC".to_owned(),
        AssetOverride {
            address: Some(address!("0x2222222222222222222222222222222222222222")),
            decimals: Some(6),
            transfer_method: Some(TransferMethod::Eip3009),
            eip712: Some(Eip712Domain {
                name: "USDC".into(),
                version: "2".into(),
            }),
            gatepay_full_curr_type: None,
        },
    );
    let change = ChainOverride {
        chain_id: Some(31337),
        assets,
        ..ChainOverride::default()
    };
    registry
        .apply(&overrides(&[("localnet", change)]))
        .expect("new chain");
    let chain = registry.by_caip2("eip155:31337").expect("added");
    assert_eq!(chain.key(), "localnet");
    assert_eq!(chain.assets[0].gatepay_full_curr_type, "USDC_LOCALNET");
}

#[test]
fn bad_overrides_name_the_offending_key() {
    let mut registry = ChainRegistry::builtin();
    let error = registry
        .apply(&overrides(&[("nowhere", ChainOverride::default())]))
        .expect_err("no chain id");
    assert_eq!(
        error.to_string(),
        "chains.nowhere.chain_id: required for a chain Coffer does not know"
    );

    let duplicate = ChainOverride {
        chain_id: Some(56),
        ..ChainOverride::default()
    };
    let error = ChainRegistry::builtin()
        .apply(&overrides(&[("bnb-copy", duplicate)]))
        .expect_err("duplicate chain id");
    assert!(error.to_string().contains("chain_id 56"), "{error}");

    let mut assets = BTreeMap::new();
    assets.insert(
        "DAI".to_owned(),
        AssetOverride {
            decimals: Some(18),
            ..AssetOverride::default()
        },
    );
    let error = ChainRegistry::builtin()
        .apply(&overrides(&[(
            "ethereum",
            ChainOverride {
                assets,
                ..ChainOverride::default()
            },
        )]))
        .expect_err("no address");
    assert_eq!(
        error.to_string(),
        "chains.ethereum.assets.DAI.address: required for an asset Coffer does not know"
    );

    let bad_url = ChainOverride {
        rpc_urls: vec!["ws://x".into()],
        ..ChainOverride::default()
    };
    let error = ChainRegistry::builtin()
        .apply(&overrides(&[("base", bad_url)]))
        .expect_err("bad url");
    assert!(
        error.to_string().starts_with("chains.base.rpc_urls[0]"),
        "{error}"
    );
}

#[test]
fn rpc_urls_never_print_whole() {
    let keyed = ChainOverride {
        rpc_urls: vec![
            "https://base.example/v2/SEKRETKEY123?apikey=SEKRETKEY456".into(),
            "https://user:SEKRETPASS@rpc.example".into(),
        ],
        ..ChainOverride::default()
    };
    let mut registry = ChainRegistry::builtin();
    registry
        .apply(&overrides(&[("base", keyed.clone())]))
        .expect("applies");
    let printed = [
        format!("{keyed:?}"),
        format!("{registry:?}"),
        format!("{:?}", registry.by_name("base").expect("base")),
    ];
    for text in printed {
        assert!(text.contains("https://base.example/…"), "{text}");
        for secret in ["SEKRETKEY123", "SEKRETKEY456", "SEKRETPASS"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    let bad = ChainOverride {
        rpc_urls: vec!["wss://user:SEKRETPASS@rpc.example/v2/SEKRETKEY123".into()],
        ..ChainOverride::default()
    };
    let error = ChainRegistry::builtin()
        .apply(&overrides(&[("base", bad)]))
        .expect_err("not http")
        .to_string();
    assert!(
        error.starts_with("chains.base.rpc_urls[0]") && !error.contains("SEKRET"),
        "{error}"
    );
}
