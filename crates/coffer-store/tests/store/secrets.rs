//! Secrets at rest, on both backends: webhook, GatePay and OKX secrets and payout wallet keys
//! are encrypted in the
//! database, bound to their row, re-encrypted by rotation, and legacy plain text is sealed when
//! a store with a key opens the database. Rows are read back with plain SQL, as someone holding
//! a copy of the database (a backup, a replica, a stolen disk) would.

use chrono::Utc;
use coffer_core::MerchantId;
use coffer_store::testing::{Backend, TestDatabase};
use coffer_store::{
    GatePayCredentialRow, MasterKey, NewMerchant, OkxCredentialRow, PayoutWalletRow, Sealer,
    SecretError, Store, StoreError,
};

const WEBHOOK_SECRET: &str = "whsec_SEKRETWEBHOOK1";
const GATEPAY_SECRET: &str = "SEKRETGATEPAY22";
const OKX_SECRET: &str = "SEKRETOKX333";
const PAYOUT_KEY: &str = "0xSEKRETPAYOUT4444";
const SECRETS: [&str; 4] = [WEBHOOK_SECRET, GATEPAY_SECRET, OKX_SECRET, PAYOUT_KEY];

/// Plain SQL on the test database, beside the store.
struct Raw {
    backend: Backend,
    url: String,
}

impl Raw {
    fn of(db: &TestDatabase, backend: Backend) -> Raw {
        Raw {
            backend,
            url: db.url.clone(),
        }
    }

    async fn strings(&self, sql: &str) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
            }
        }
    }

    async fn one(&self, sql: &str) -> String {
        self.strings(sql).await.remove(0)
    }

    async fn execute(&self, sql: &str, binds: &[&str]) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(&pool).await.unwrap().rows_affected()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.execute(&pool).await.unwrap().rows_affected()
            }
        }
    }

    /// Everything the secret tables hold, as text: every row of every column (PostgreSQL),
    /// or the database file and its write-ahead log, byte for byte (SQLite).
    async fn everything(&self) -> String {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut text = String::new();
                for file in [path.to_owned(), format!("{path}-wal")] {
                    if let Ok(bytes) = std::fs::read(&file) {
                        text.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
                text
            }
            Backend::Postgres => self
                .strings(
                    "SELECT t::text FROM merchants t
                     UNION ALL SELECT t::text FROM gatepay_credentials t
                     UNION ALL SELECT t::text FROM okx_credentials t
                     UNION ALL SELECT t::text FROM payout_wallets t",
                )
                .await
                .join("\n"),
        }
    }
}

fn new_merchant(suffix: &str, secret: &str) -> NewMerchant {
    NewMerchant {
        id: MerchantId::from_suffix(suffix).unwrap(),
        name: suffix.to_owned(),
        webhook_url: None,
        webhook_secret: secret.to_owned(),
        created_at: Utc::now(),
    }
}

/// A merchant with one GatePay and one OKX credential and a payout wallet, all with known
/// secrets.
async fn merchant_with_credentials(store: &dyn Store, suffix: &str) -> MerchantId {
    let merchant = store
        .insert_merchant(new_merchant(suffix, &format!("{WEBHOOK_SECRET}{suffix}")))
        .await
        .unwrap();
    store
        .insert_gatepay_credential(&GatePayCredentialRow {
            client_id: format!("client-{suffix}"),
            merchant_id: merchant.id.clone(),
            secret: format!("{GATEPAY_SECRET}{suffix}"),
            created_at_ms: 1,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    store
        .insert_okx_credential(&OkxCredentialRow {
            access_key: format!("ak-{suffix}"),
            merchant_id: merchant.id.clone(),
            secret: format!("{OKX_SECRET}{suffix}"),
            passphrase_hash: "00".repeat(32),
            created_at_ms: 1,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    store
        .insert_payout_wallet(&PayoutWalletRow {
            merchant_id: merchant.id.clone(),
            chain_id: 84_532,
            address: format!("0xaddress-{suffix}"),
            private_key: format!("{PAYOUT_KEY}{suffix}"),
            created_at_ms: 1,
        })
        .await
        .unwrap();
    merchant.id
}

/// The four secrets of a merchant as the store reads them.
async fn read_secrets(store: &dyn Store, id: &MerchantId, suffix: &str) -> [String; 4] {
    [
        store.merchant(id).await.unwrap().webhook_secret,
        store
            .gatepay_credential(&format!("client-{suffix}"))
            .await
            .unwrap()
            .unwrap()
            .secret,
        store
            .okx_credential(&format!("ak-{suffix}"))
            .await
            .unwrap()
            .unwrap()
            .secret,
        store.payout_wallets(id).await.unwrap()[0]
            .private_key
            .clone(),
    ]
}

fn expected(suffix: &str) -> [String; 4] {
    SECRETS.map(|secret| format!("{secret}{suffix}"))
}

/// The raw stored value of each secret column of a merchant.
async fn stored(raw: &Raw, suffix: &str) -> [String; 4] {
    [
        raw.one(&format!(
            "SELECT webhook_secret FROM merchants WHERE id = 'mer_{suffix}'"
        ))
        .await,
        raw.one(&format!(
            "SELECT secret FROM gatepay_credentials WHERE client_id = 'client-{suffix}'"
        ))
        .await,
        raw.one(&format!(
            "SELECT secret FROM okx_credentials WHERE access_key = 'ak-{suffix}'"
        ))
        .await,
        raw.one(&format!(
            "SELECT private_key FROM payout_wallets WHERE wallet_id = 'mer_{suffix}:84532'"
        ))
        .await,
    ]
}

async fn secrets_are_encrypted_in_the_database_and_read_back_plain(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let raw = Raw::of(&db, backend);
    let id = merchant_with_credentials(&*db.store, "plain1").await;
    assert_eq!(
        read_secrets(&*db.store, &id, "plain1").await,
        expected("plain1")
    );
    for value in stored(&raw, "plain1").await {
        assert!(
            value.starts_with(&format!("enc:v1:{}:", db.master_key.id())),
            "{value}"
        );
    }
    // Also after the API path of the webhook dispatcher and a merchant listing.
    assert_eq!(db.store.merchants().await.unwrap().len(), 1);
    let everything = raw.everything().await;
    assert!(
        everything.contains("client-plain1"),
        "the dump reads the rows"
    );
    for secret in SECRETS {
        assert!(
            !everything.contains(secret),
            "{secret} is in the database in plain text"
        );
    }
}

async fn a_ciphertext_moved_to_another_row_does_not_open(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let raw = Raw::of(&db, backend);
    merchant_with_credentials(&*db.store, "victim").await;
    let attacker = merchant_with_credentials(&*db.store, "thief").await;
    let [webhook, gatepay, okx, payout_key] = stored(&raw, "victim").await;
    // Someone with write access to the database copies the victim's sealed secrets onto the
    // attacker's rows, hoping Coffer will hand them out or sign with them there.
    raw.execute(
        "UPDATE merchants SET webhook_secret = $1 WHERE id = 'mer_thief'",
        &[&webhook],
    )
    .await;
    raw.execute(
        "UPDATE gatepay_credentials SET secret = $1 WHERE client_id = 'client-thief'",
        &[&gatepay],
    )
    .await;
    raw.execute(
        "UPDATE okx_credentials SET secret = $1 WHERE access_key = 'ak-thief'",
        &[&okx],
    )
    .await;
    raw.execute(
        "UPDATE payout_wallets SET private_key = $1 WHERE wallet_id = 'mer_thief:84532'",
        &[&payout_key],
    )
    .await;
    let store = db.reopen().await.unwrap();
    assert!(matches!(
        store.merchant(&attacker).await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    assert!(matches!(
        store.gatepay_credential("client-thief").await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    assert!(matches!(
        store.okx_credential("ak-thief").await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    assert!(matches!(
        store.payout_wallets(&attacker).await,
        Err(StoreError::Secret(SecretError::Tampered { .. }))
    ));
    // The victim's own rows still open.
    let victim = MerchantId::from_suffix("victim").unwrap();
    assert_eq!(
        read_secrets(&*store, &victim, "victim").await,
        expected("victim")
    );
    // Plain text written over a sealed secret is refused too: it cannot stand in for one.
    raw.execute(
        "UPDATE okx_credentials SET secret = 'chosen' WHERE access_key = 'ak-victim'",
        &[],
    )
    .await;
    assert!(matches!(
        db.store.okx_credential("ak-victim").await,
        Err(StoreError::Secret(SecretError::Unsealed { .. }))
    ));
}

async fn rotation_reseals_everything_and_the_old_key_stops_working(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let raw = Raw::of(&db, backend);
    let first = merchant_with_credentials(&*db.store, "rot1").await;
    let second = merchant_with_credentials(&*db.store, "rot2").await;
    let before = [stored(&raw, "rot1").await, stored(&raw, "rot2").await];
    let (new_key, _) = MasterKey::generate();

    let resealed = db.store.reseal_secrets(&new_key).await.unwrap();
    assert_eq!(resealed, 8);
    for (suffix, old) in [("rot1", &before[0]), ("rot2", &before[1])] {
        for (value, old) in stored(&raw, suffix).await.iter().zip(old) {
            assert!(
                value.starts_with(&format!("enc:v1:{}:", new_key.id())),
                "{value}"
            );
            assert_ne!(value, old);
        }
    }
    let census = db.store.secrets_census().await.unwrap();
    assert_eq!(census.plain, 0);
    assert_eq!(
        census.sealed.into_iter().collect::<Vec<_>>(),
        [(new_key.id().to_owned(), 8)]
    );
    // A second run (say, after a crash right after the first committed) changes nothing.
    let again = stored(&raw, "rot1").await;
    assert_eq!(db.store.reseal_secrets(&new_key).await.unwrap(), 0);
    assert_eq!(stored(&raw, "rot1").await, again);

    let rotated = coffer_store::open(&db.url, Sealer::new(new_key.clone()))
        .await
        .unwrap();
    assert_eq!(
        read_secrets(&*rotated, &first, "rot1").await,
        expected("rot1")
    );
    assert_eq!(
        read_secrets(&*rotated, &second, "rot2").await,
        expected("rot2")
    );
    let stale = db.reopen().await.unwrap();
    assert!(matches!(
        stale.merchant(&first).await,
        Err(StoreError::Secret(SecretError::UnknownKey { .. }))
    ));
    assert!(matches!(
        stale.okx_credential("ak-rot2").await,
        Err(StoreError::Secret(SecretError::UnknownKey { .. }))
    ));
    assert!(stale.merchants().await.is_err());
    let everything = raw.everything().await;
    for secret in SECRETS {
        assert!(!everything.contains(secret), "{secret} in plain text");
    }
}

/// The old rows of a database written before secrets were encrypted.
async fn legacy_rows(raw: &Raw, suffix: &str) {
    raw.execute(
        "INSERT INTO merchants (id, name, webhook_url, webhook_secret, created_at)
         VALUES ($1, 'legacy', NULL, $2, CURRENT_TIMESTAMP)",
        &[
            &format!("mer_{suffix}"),
            &format!("{WEBHOOK_SECRET}{suffix}"),
        ],
    )
    .await;
    raw.execute(
        "INSERT INTO gatepay_credentials (client_id, merchant_id, secret, created_at_ms)
         VALUES ($1, $2, $3, 1)",
        &[
            &format!("client-{suffix}"),
            &format!("mer_{suffix}"),
            &format!("{GATEPAY_SECRET}{suffix}"),
        ],
    )
    .await;
    raw.execute(
        "INSERT INTO okx_credentials (access_key, merchant_id, secret, passphrase_hash, created_at_ms)
         VALUES ($1, $2, $3, 'h', 1)",
        &[
            &format!("ak-{suffix}"),
            &format!("mer_{suffix}"),
            &format!("{OKX_SECRET}{suffix}"),
        ],
    )
    .await;
    // (Plain text in a payout wallet row too: whatever wrote it, it is sealed the same way.)
    raw.execute(
        "INSERT INTO payout_wallets (wallet_id, merchant_id, chain_id, address, private_key, created_at_ms)
         VALUES ($1, $2, 84532, '0x', $3, 1)",
        &[
            &format!("mer_{suffix}:84532"),
            &format!("mer_{suffix}"),
            &format!("{PAYOUT_KEY}{suffix}"),
        ],
    )
    .await;
}

async fn legacy_plain_text_is_sealed_once_when_a_keyed_store_opens(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let raw = Raw::of(&db, backend);
    legacy_rows(&raw, "old1").await;
    let id = MerchantId::from_suffix("old1").unwrap();

    // Without a key, the database still opens (migrations, `coffer migrate`), but the legacy
    // secrets are neither readable nor touched.
    let keyless = coffer_store::open(&db.url, Sealer::none()).await.unwrap();
    let census = keyless.secrets_census().await.unwrap();
    assert_eq!((census.plain, census.total()), (4, 4));
    assert!(matches!(
        keyless.merchant(&id).await,
        Err(StoreError::Secret(SecretError::NoMasterKey))
    ));
    assert_eq!(stored(&raw, "old1").await, expected("old1"));

    let upgraded = db.reopen().await.unwrap();
    let sealed = stored(&raw, "old1").await;
    for value in &sealed {
        assert!(value.starts_with(&format!("enc:v1:{}:", db.master_key.id())));
    }
    assert_eq!(
        read_secrets(&*upgraded, &id, "old1").await,
        expected("old1")
    );
    let census = upgraded.secrets_census().await.unwrap();
    assert_eq!((census.plain, census.total()), (0, 4));
    // Opening again changes nothing.
    db.reopen().await.unwrap();
    assert_eq!(stored(&raw, "old1").await, sealed);

    // Rotation also seals plain text left by an old replica meanwhile.
    legacy_rows(&raw, "old2").await;
    let (new_key, _) = MasterKey::generate();
    assert_eq!(upgraded.reseal_secrets(&new_key).await.unwrap(), 8);
    let rotated = coffer_store::open(&db.url, Sealer::new(new_key))
        .await
        .unwrap();
    let old2 = MerchantId::from_suffix("old2").unwrap();
    assert_eq!(
        read_secrets(&*rotated, &old2, "old2").await,
        expected("old2")
    );
}

async fn without_a_key_no_secret_is_written(backend: Backend) {
    let db = TestDatabase::new(backend).await.unwrap();
    let keyless = coffer_store::open(&db.url, Sealer::none()).await.unwrap();
    assert!(matches!(
        keyless
            .insert_merchant(new_merchant("nokey", WEBHOOK_SECRET))
            .await,
        Err(StoreError::Secret(SecretError::NoMasterKey))
    ));
    assert!(keyless.merchants().await.unwrap().is_empty());
    assert_eq!(keyless.secrets_census().await.unwrap().total(), 0);
}

coffer_store::on_both_databases!(
    secrets_are_encrypted_in_the_database_and_read_back_plain,
    a_ciphertext_moved_to_another_row_does_not_open,
    rotation_reseals_everything_and_the_old_key_stops_working,
    legacy_plain_text_is_sealed_once_when_a_keyed_store_opens,
    without_a_key_no_secret_is_written,
);
