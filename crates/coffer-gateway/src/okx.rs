//! OKX-style API credentials and request authentication.
//!
//! A credential is an access key, a secret and a passphrase, shown once at creation. Each
//! request carries `OK-ACCESS-KEY`, `OK-ACCESS-PASSPHRASE`, `OK-ACCESS-TIMESTAMP` (ISO-8601
//! UTC with milliseconds) and `OK-ACCESS-SIGN` = base64(HMAC-SHA256(secret, timestamp +
//! METHOD + path[?query] + raw body)). Timestamps more than 30 seconds from Coffer's clock are
//! refused. Failures use OKX's codes 50103–50113.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use coffer_core::MerchantId;
use coffer_store::{MerchantRow, OkxCredentialRow, Store, StoreError};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far a request's timestamp may be from Coffer's clock.
pub const TIMESTAMP_TOLERANCE_MS: i64 = 30_000;

/// A refused request: OKX's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// OKX error code (`50103` …).
    pub code: u32,
    /// Message.
    pub message: &'static str,
}

const fn refuse(code: u32, message: &'static str) -> AuthError {
    AuthError { code, message }
}

/// A new credential, with its secret and passphrase shown once.
pub struct NewCredential {
    /// `OK-ACCESS-KEY`.
    pub access_key: String,
    /// The HMAC secret.
    pub secret: SecretString,
    /// The passphrase.
    pub passphrase: SecretString,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn hash_passphrase(passphrase: &str) -> String {
    hex::encode(Sha256::digest(passphrase.as_bytes()))
}

/// The base64 `OK-ACCESS-SIGN` of a request.
pub fn sign(
    secret: &str,
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(method.to_ascii_uppercase().as_bytes());
    mac.update(path_and_query.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The credential service.
#[derive(Clone)]
pub struct OkxCredentials {
    store: Arc<dyn Store>,
}

impl OkxCredentials {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        OkxCredentials { store }
    }

    /// Creates a credential for a merchant.
    ///
    /// # Errors
    /// The store's error (`NotFound` for an unknown merchant).
    pub async fn create(&self, merchant: &MerchantId) -> Result<NewCredential, StoreError> {
        self.store.merchant(merchant).await?;
        let raw = random(32).to_ascii_lowercase();
        let access_key = format!(
            "{}-{}-{}-{}-{}",
            &raw[0..8],
            &raw[8..12],
            &raw[12..16],
            &raw[16..20],
            &raw[20..32]
        );
        let secret = random(32).to_ascii_uppercase();
        let passphrase = random(16);
        self.store
            .insert_okx_credential(&OkxCredentialRow {
                access_key: access_key.clone(),
                merchant_id: merchant.clone(),
                secret: secret.clone(),
                passphrase_hash: hash_passphrase(&passphrase),
                created_at_ms: crate::clock::now_ms(),
                revoked_at_ms: None,
            })
            .await?;
        Ok(NewCredential {
            access_key,
            secret: secret.into(),
            passphrase: passphrase.into(),
        })
    }

    /// Revokes a credential.
    ///
    /// # Errors
    /// `NotFound` for an unknown key.
    pub async fn revoke(&self, access_key: &str) -> Result<(), StoreError> {
        self.store
            .revoke_okx_credential(access_key, crate::clock::now_ms())
            .await
    }

    /// Authenticates a request, returning the merchant.
    ///
    /// # Errors
    /// [`AuthError`] with OKX's code for a missing header, an unknown or revoked key, a wrong
    /// passphrase, a stale or malformed timestamp, or a wrong signature.
    pub async fn authenticate<'h>(
        &self,
        method: &str,
        path_and_query: &str,
        headers: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
    ) -> Result<MerchantRow, AuthError> {
        let header = |name: &str| headers(name).map(str::trim).filter(|v| !v.is_empty());
        let key = header("ok-access-key").ok_or(refuse(
            50103,
            "Request header OK-ACCESS-KEY can not be empty.",
        ))?;
        let passphrase = header("ok-access-passphrase").ok_or(refuse(
            50104,
            "Request header OK-ACCESS-PASSPHRASE can not be empty.",
        ))?;
        let signature = header("ok-access-sign").ok_or(refuse(
            50106,
            "Request header OK-ACCESS-SIGN can not be empty.",
        ))?;
        let timestamp = header("ok-access-timestamp").ok_or(refuse(
            50107,
            "Request header OK-ACCESS-TIMESTAMP can not be empty.",
        ))?;
        let sent = DateTime::parse_from_rfc3339(timestamp)
            .map_err(|_| refuse(50112, "Invalid OK-ACCESS-TIMESTAMP."))?;
        // `abs_diff`: total whatever the client sent.
        if Utc::now()
            .timestamp_millis()
            .abs_diff(sent.timestamp_millis())
            > TIMESTAMP_TOLERANCE_MS.unsigned_abs()
        {
            return Err(refuse(
                50112,
                "Invalid OK-ACCESS-TIMESTAMP: it is more than 30 seconds from the server time.",
            ));
        }
        let credential = match self.store.okx_credential(key).await {
            Ok(Some(credential)) if credential.revoked_at_ms.is_none() => credential,
            Ok(_) => return Err(refuse(50111, "Invalid OK-ACCESS-KEY.")),
            Err(error) => {
                tracing::error!(%error, "reading an OKX credential failed");
                return Err(refuse(50026, "System error."));
            }
        };
        if !bool::from(
            hash_passphrase(passphrase)
                .as_bytes()
                .ct_eq(credential.passphrase_hash.as_bytes()),
        ) {
            return Err(refuse(
                50105,
                "Request header OK-ACCESS-PASSPHRASE incorrect.",
            ));
        }
        let expected = sign(&credential.secret, timestamp, method, path_and_query, body);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err(refuse(50113, "Invalid Sign."));
        }
        self.store
            .merchant(&credential.merchant_id)
            .await
            .map_err(|_| refuse(50111, "Invalid OK-ACCESS-KEY."))
    }
}

/// A secret as text, for tests and the CLI.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_okxs_worked_example() {
        // vendor-apis.md §D.3: secret "secret", POST /api/v6/x402/settle.
        let signature = sign(
            "secret",
            "2023-10-18T12:21:41.274Z",
            "POST",
            "/api/v6/x402/settle",
            br#"{"x402Version":1,"chainIndex":"196"}"#,
        );
        assert_eq!(signature, "mpjnMjAHry1x3RN+Ji4cB5B6WmK+AnGQkhOBzDoDFzs=");
    }

    mod properties {
        use axum::http::{Method, Uri};
        use proptest::prelude::*;

        use super::super::*;
        use crate::test_support::{MerchantFixture, header_map, run};

        const KEY: &str = "ok-access-key";
        const PASSPHRASE: &str = "ok-access-passphrase";
        const TIMESTAMP: &str = "ok-access-timestamp";
        const SIGN: &str = "ok-access-sign";
        const PATH: &str = "/api/v6/pay/x402/settle/status?txHash=0x01";

        /// A merchant with an OKX credential over a fresh SQLite database.
        struct Fixture {
            base: MerchantFixture,
            service: OkxCredentials,
            access_key: String,
            secret: String,
            passphrase: String,
        }

        impl Fixture {
            fn new() -> Fixture {
                let base = MerchantFixture::new();
                let service = OkxCredentials::new(base.db.store.clone());
                let credential = base
                    .runtime
                    .block_on(service.create(&base.merchant.id))
                    .unwrap();
                Fixture {
                    access_key: credential.access_key.clone(),
                    secret: expose(&credential.secret).to_owned(),
                    passphrase: expose(&credential.passphrase).to_owned(),
                    base,
                    service,
                }
            }

            /// The headers of a correctly signed `method path` request now.
            fn signed(
                &self,
                method: &str,
                path: &str,
                body: &[u8],
            ) -> Vec<(&'static str, Vec<u8>)> {
                let timestamp = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                let signature = sign(&self.secret, &timestamp, method, path, body);
                vec![
                    (KEY, self.access_key.clone().into_bytes()),
                    (PASSPHRASE, self.passphrase.clone().into_bytes()),
                    (TIMESTAMP, timestamp.into_bytes()),
                    (SIGN, signature.into_bytes()),
                ]
            }

            fn authenticate(
                &self,
                method: &str,
                path: &str,
                headers: &[(&'static str, Vec<u8>)],
                body: &[u8],
            ) -> Option<Result<MerchantRow, AuthError>> {
                let method = Method::from_bytes(method.as_bytes()).ok()?;
                let uri: Uri = path.parse().ok()?;
                let map = header_map(headers)?;
                Some(self.base.runtime.block_on(self.service.authenticate(
                    method.as_str(),
                    uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
                    |name| map.get(name).and_then(|v| v.to_str().ok()),
                    body,
                )))
            }
        }

        fn header_value(valid: String) -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                3 => Just(Some(valid.into_bytes())),
                1 => Just(None),
                2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Some),
                2 => prop::sample::select(vec![
                    "+275760-09-13T00:00:00.000Z".to_owned(),
                    "-262143-01-01T00:00:00Z".to_owned(),
                    "9999-12-31T23:59:59.999999999+23:59".to_owned(),
                    "1970-01-01T00:00:00Z".to_owned(),
                    i64::MIN.to_string(),
                    u64::MAX.to_string(),
                    " ".to_owned(),
                    "é".to_owned(),
                ])
                .prop_map(|text| Some(text.into_bytes())),
            ]
        }

        /// OKX's codes for each header, never `50026` (a system error), never a success unless
        /// every header is the signed one.
        #[test]
        fn hostile_headers_are_refused_with_okxs_codes() {
            let fixture = Fixture::new();
            let valid = fixture.signed("GET", PATH, b"");
            let text = |index: usize| String::from_utf8(valid[index].1.clone()).unwrap();
            let strategy = (
                header_value(text(0)),
                header_value(text(1)),
                header_value(text(2)),
                header_value(text(3)),
            );
            run(strategy, |(key, passphrase, timestamp, signature)| {
                let headers: Vec<_> = [KEY, PASSPHRASE, TIMESTAMP, SIGN]
                    .into_iter()
                    .zip([key, passphrase, timestamp, signature])
                    .filter_map(|(name, value)| value.map(|value| (name, value)))
                    .collect();
                let Some(outcome) = fixture.authenticate("GET", PATH, &headers, b"") else {
                    return Ok(());
                };
                match outcome {
                    Ok(_) => prop_assert!(headers == valid, "{headers:?}"),
                    Err(error) => prop_assert!((50103..=50113).contains(&error.code), "{error:?}"),
                }
                Ok(())
            });
        }

        /// A signed request with one byte of its method, path, body or a header changed is
        /// refused.
        #[test]
        fn a_signed_request_with_one_byte_changed_is_refused() {
            let fixture = Fixture::new();
            let strategy = (
                prop::collection::vec(any::<u8>(), 0..200),
                0usize..7,
                any::<prop::sample::Index>(),
                any::<u8>(),
            );
            run(strategy, |(body, part, position, byte)| {
                let original = fixture.signed("POST", PATH, &body);
                let mut headers = original.clone();
                let mut method = b"POST".to_vec();
                let mut path = PATH.as_bytes().to_vec();
                let mut mutated_body = body.clone();
                let target = match part {
                    0..=3 => &mut headers[part].1,
                    4 => &mut method,
                    5 => &mut path,
                    _ => &mut mutated_body,
                };
                if target.is_empty() {
                    target.push(byte);
                } else {
                    let at = position.index(target.len());
                    target[at] = byte;
                }
                let (Ok(method), Ok(path)) = (String::from_utf8(method), String::from_utf8(path))
                else {
                    return Ok(());
                };
                let unchanged =
                    headers == original && method == "POST" && path == PATH && mutated_body == body;
                // Header values are trimmed, and the method is signed in upper case.
                let trimmed =
                    part < 4 && headers[part].1.trim_ascii() == original[part].1.as_slice();
                let alias = method != "POST" && method.eq_ignore_ascii_case("POST");
                prop_assume!(!unchanged && !trimmed && !alias);
                if let Some(outcome) = fixture.authenticate(&method, &path, &headers, &mutated_body)
                {
                    prop_assert!(outcome.is_err(), "{method} {path} {headers:?}");
                }
                let accepted = fixture
                    .authenticate("POST", PATH, &original, &body)
                    .unwrap();
                prop_assert!(accepted.is_ok(), "{accepted:?}");
                Ok(())
            });
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn signing_any_text_never_panics(
                secret in "\\PC{0,40}",
                timestamp in "\\PC{0,30}",
                method in "\\PC{0,10}",
                path in "\\PC{0,60}",
                body in prop::collection::vec(any::<u8>(), 0..100),
            ) {
                let signature = sign(&secret, &timestamp, &method, &path, &body);
                prop_assert_eq!(signature.len(), 44);
            }
        }
    }
}
