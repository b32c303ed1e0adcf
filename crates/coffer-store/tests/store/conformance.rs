//! One conformance suite, run against every backend: each test body takes a fresh store.

use chrono::{Duration, TimeZone, Utc};
use coffer_core::MerchantId;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{Constraint, NewApiKey, NewMerchant, Store, StoreError};

fn merchant(suffix: &str) -> NewMerchant {
    NewMerchant {
        id: MerchantId::from_suffix(suffix).expect("valid id"),
        name: format!("Shop {suffix}"),
        webhook_url: Some("https://shop.example/hooks".to_owned()),
        webhook_secret: format!("whsec_{suffix}"),
        // Whole microseconds: both backends keep microsecond precision.
        created_at: Utc
            .timestamp_opt(1_700_000_000, 123_456_000)
            .single()
            .expect("time"),
    }
}

fn key(id: &str, merchant: &NewMerchant, offset_seconds: i64) -> NewApiKey {
    NewApiKey {
        id: id.to_owned(),
        merchant_id: merchant.id.clone(),
        label: format!("label {id}"),
        secret_hash: vec![7; 32],
        created_at: merchant.created_at + Duration::seconds(offset_seconds),
    }
}

async fn merchants_round_trip_and_ids_are_unique(store: &dyn Store) {
    let shop = merchant("shop1");
    let inserted = store.insert_merchant(shop.clone()).await.expect("insert");
    assert_eq!(store.merchant(&shop.id).await.expect("read"), inserted);
    assert!(matches!(
        store.insert_merchant(shop.clone()).await,
        Err(StoreError::Conflict(Constraint::Merchant))
    ));
    let missing = MerchantId::from_suffix("nobody").expect("id");
    assert!(matches!(
        store.merchant(&missing).await,
        Err(StoreError::NotFound("merchant"))
    ));
    store
        .insert_merchant(merchant("shop2"))
        .await
        .expect("second");
    let listed: Vec<String> = store
        .merchants()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(listed, ["mer_shop1", "mer_shop2"]);
}

async fn api_keys_belong_to_a_merchant_and_revoke_once(store: &dyn Store) {
    let shop = merchant("keys");
    let other = merchant("other");
    store.insert_merchant(shop.clone()).await.expect("merchant");
    store
        .insert_merchant(other.clone())
        .await
        .expect("merchant");
    let first = store
        .insert_api_key(key("ck_a", &shop, 1))
        .await
        .expect("key");
    store
        .insert_api_key(key("ck_b", &shop, 2))
        .await
        .expect("key");
    store
        .insert_api_key(key("ck_c", &other, 3))
        .await
        .expect("key");
    assert_eq!(store.api_key("ck_a").await.expect("read"), first);
    assert!(matches!(
        store.insert_api_key(key("ck_a", &shop, 4)).await,
        Err(StoreError::Conflict(Constraint::ApiKey))
    ));
    let orphan = key("ck_d", &merchant("ghost"), 5);
    assert!(matches!(
        store.insert_api_key(orphan).await,
        Err(StoreError::NotFound("merchant"))
    ));

    let ids =
        |keys: Vec<coffer_store::ApiKeyRow>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.api_keys(Some(&shop.id)).await.expect("list")),
        ["ck_a", "ck_b"]
    );
    assert_eq!(
        ids(store.api_keys(None).await.expect("list")),
        ["ck_a", "ck_b", "ck_c"]
    );

    let first_revocation = shop.created_at + Duration::hours(1);
    let revoked = store
        .revoke_api_key("ck_a", first_revocation)
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_at, Some(first_revocation));
    let again = store
        .revoke_api_key("ck_a", first_revocation + Duration::hours(1))
        .await
        .expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(first_revocation),
        "the first revocation time stays"
    );
    assert!(matches!(
        store.revoke_api_key("ck_zzz", first_revocation).await,
        Err(StoreError::NotFound("api key"))
    ));
    assert_eq!(store.api_key("ck_b").await.expect("read").revoked_at, None);
}

async fn reopening_keeps_data_and_migrations_run_once(backend: Backend) {
    let db = TestDatabase::new(backend).await.expect("fresh database");
    let store = &*db.store;
    store.ping().await.expect("ping");
    store
        .insert_merchant(merchant("durable"))
        .await
        .expect("insert");
    let reopened = db.reopen().await.expect("reopen");
    let id = MerchantId::from_suffix("durable").expect("id");
    assert_eq!(
        reopened.merchant(&id).await.expect("read").name,
        "Shop durable"
    );
}

async fn reports_its_backend(backend: Backend) {
    let db = TestDatabase::new(backend).await.expect("fresh database");
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(db.store.backend(), name);
}

coffer_store::on_both_databases! {
    backend: [
        reopening_keeps_data_and_migrations_run_once,
        reports_its_backend,
    ];
    store: [
        merchants_round_trip_and_ids_are_unique,
        api_keys_belong_to_a_merchant_and_revoke_once,
    ];
}
