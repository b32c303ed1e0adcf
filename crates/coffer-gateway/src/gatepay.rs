//! GatePay-style credentials, request authentication and merchant notifications.
//!
//! A credential is a ClientId and a secret, shown once at creation. Each request carries
//! `X-GatePay-Certificate-ClientId`, `X-GatePay-Timestamp` (unix milliseconds),
//! `X-GatePay-Nonce` and `X-GatePay-Signature` = lowercase hex
//! HMAC-SHA512(secret, timestamp + "\n" + nonce + "\n" + raw body + "\n"). Timestamps more
//! than five minutes from Coffer's clock are refused, and a nonce is accepted once per client:
//! nonces are kept in the database (for ten minutes, twice the window), so a replay is refused
//! after a restart and by every replica. `X-GatePay-Certificate-SN`, which GatePay's SDKs also
//! send, is accepted and ignored.
//!
//! Notifications to the merchant are signed the same way with the same secret, in GatePay's
//! envelope `{"bizType":"PAY","bizId":prepayId,"bizStatus":…,"client_id":…,"data":"<JSON>"}`
//! (see [`notification_event`]); they go through the webhook outbox and dispatcher like every
//! other event, and count as delivered only when the merchant answers
//! `{"returnCode":"SUCCESS"}`.
//!
//! What makes an order a GatePay order, and which credential signs its notifications, is the
//! order's row in the store ([`GatePayOrderRow`]), written when the GatePay API created it —
//! never the order's `order_info`, which is the merchant's free text. The dispatcher signs with
//! that credential only while it is unrevoked and belongs to the order's merchant.

use std::sync::Arc;

use coffer_core::MerchantId;
use coffer_store::{
    GatePayCredentialRow, GatePayOrderRow, MerchantRow, NewDelivery, NewEvent, OrderRow, Store,
    StoreError, WebhookFormat,
};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use sha2::Sha512;
use subtle::ConstantTimeEq;

use crate::events::new_id;

/// How far a request's timestamp may be from Coffer's clock.
pub const TIMESTAMP_TOLERANCE_MS: i64 = 5 * 60 * 1000;
/// How long a used nonce is remembered (longer than any timestamp that is still accepted).
pub const NONCE_MEMORY_MS: i64 = 2 * TIMESTAMP_TOLERANCE_MS;
/// Event types of GatePay notifications start with this (how they are told apart in the
/// events API; the dispatcher goes by the event's [`WebhookFormat`]).
pub const EVENT_PREFIX: &str = "gatepay.";

/// A refused request: GatePay's code, label and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// GatePay error code (`400002` …).
    pub code: &'static str,
    /// GatePay's label (`INVALID_SIGNATURE` …).
    pub label: &'static str,
    /// Message naming the header at fault.
    pub message: std::borrow::Cow<'static, str>,
}

const fn refuse(code: &'static str, label: &'static str, message: &'static str) -> AuthError {
    AuthError {
        code,
        label,
        message: std::borrow::Cow::Borrowed(message),
    }
}

/// The refusal of a timestamp more than 5 minutes from `now_ms`, showing the server time, and
/// saying so when the client sent seconds (or microseconds) where milliseconds belong.
fn stale_timestamp(sent: i64, now_ms: i64) -> AuthError {
    let close = |scaled: Option<i64>| {
        scaled.is_some_and(|ms| now_ms.abs_diff(ms) <= TIMESTAMP_TOLERANCE_MS.unsigned_abs())
    };
    let hint = if close(sent.checked_mul(1000)) {
        " (it looks like unix seconds: send milliseconds)"
    } else if close(Some(sent / 1000)) {
        " (it looks like unix microseconds: send milliseconds)"
    } else {
        ""
    };
    AuthError {
        code: "400003",
        label: "REQUEST_TIMESTAMP_TIMEOUT",
        message: std::borrow::Cow::Owned(format!(
            "X-GatePay-Timestamp: {sent} is more than 5 minutes from the server time {now_ms} (unix milliseconds){hint}"
        )),
    }
}

/// A new credential, with its secret shown once.
pub struct NewCredential {
    /// `X-GatePay-Certificate-ClientId`.
    pub client_id: String,
    /// The HMAC-SHA512 secret.
    pub secret: SecretString,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("client_id", &self.client_id)
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

fn mac(secret: &str, timestamp: &str, nonce: &str, body: &[u8]) -> Hmac<Sha512> {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(nonce.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac.update(b"\n");
    mac
}

/// The `X-GatePay-Signature` of a request or notification: lowercase hex
/// HMAC-SHA512(secret, `timestamp\nnonce\nbody\n`), 128 characters.
pub fn sign(secret: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, nonce, body).finalize().into_bytes())
}

/// Checks a signature in constant time; hex case does not matter.
pub fn verify(secret: &str, timestamp: &str, nonce: &str, body: &[u8], signature: &str) -> bool {
    match hex::decode(signature.trim()) {
        Ok(bytes) => mac(secret, timestamp, nonce, body)
            .verify_slice(&bytes)
            .is_ok(),
        Err(_) => false,
    }
}

/// The headers that sign a notification `body` with `secret` now.
pub fn notification_headers(client_id: &str, secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let timestamp = crate::clock::now_ms().to_string();
    let nonce = random(32);
    let signature = sign(secret, &timestamp, &nonce, body);
    vec![
        (
            "X-GatePay-Certificate-ClientId".to_owned(),
            client_id.to_owned(),
        ),
        ("X-GatePay-Timestamp".to_owned(), timestamp),
        ("X-GatePay-Nonce".to_owned(), nonce),
        ("X-GatePay-Signature".to_owned(), signature),
    ]
}

/// The credential service.
#[derive(Clone)]
pub struct GatePayCredentials {
    store: Arc<dyn Store>,
}

impl GatePayCredentials {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        GatePayCredentials { store }
    }

    /// Creates a credential for a merchant.
    ///
    /// # Errors
    /// The store's error (`NotFound` for an unknown merchant).
    pub async fn create(&self, merchant: &MerchantId) -> Result<NewCredential, StoreError> {
        self.store.merchant(merchant).await?;
        let raw = random(32).to_ascii_lowercase();
        let client_id = format!(
            "{}-{}-{}-{}-{}",
            &raw[0..8],
            &raw[8..12],
            &raw[12..16],
            &raw[16..20],
            &raw[20..32]
        );
        let secret = random(48);
        self.store
            .insert_gatepay_credential(&GatePayCredentialRow {
                client_id: client_id.clone(),
                merchant_id: merchant.clone(),
                secret: secret.clone(),
                created_at_ms: crate::clock::now_ms(),
                revoked_at_ms: None,
            })
            .await?;
        Ok(NewCredential {
            client_id,
            secret: secret.into(),
        })
    }

    /// Revokes a credential.
    ///
    /// # Errors
    /// `NotFound` for an unknown client id.
    pub async fn revoke(&self, client_id: &str) -> Result<(), StoreError> {
        self.store
            .revoke_gatepay_credential(client_id, crate::clock::now_ms())
            .await
    }

    /// Authenticates a request, returning the merchant and the client id.
    ///
    /// Checks run in this order: client id, timestamp, nonce format, signature, and last
    /// nonce reuse (so that a forged request cannot burn a nonce).
    ///
    /// # Errors
    /// [`AuthError`] with GatePay's code: `400004` unknown or revoked ClientId, `400003`
    /// missing or stale timestamp, `400020` missing, malformed or reused nonce, `400002`
    /// missing or wrong signature, `300000` when the store fails.
    pub async fn authenticate<'h>(
        &self,
        headers: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
    ) -> Result<(MerchantRow, String), AuthError> {
        let header = |name: &str| headers(name).map(str::trim).filter(|v| !v.is_empty());
        let client_id = header("x-gatepay-certificate-clientid").ok_or(refuse(
            "400004",
            "INVALID_CLIENT_ID",
            "X-GatePay-Certificate-ClientId: required",
        ))?;
        let timestamp = header("x-gatepay-timestamp").ok_or(refuse(
            "400003",
            "REQUEST_TIMESTAMP_TIMEOUT",
            "X-GatePay-Timestamp: required (unix milliseconds)",
        ))?;
        let sent: i64 = timestamp.parse().map_err(|_| {
            refuse(
                "400003",
                "REQUEST_TIMESTAMP_TIMEOUT",
                "X-GatePay-Timestamp: must be unix milliseconds",
            )
        })?;
        let now_ms = crate::clock::now_ms();
        // `abs_diff`: total for every i64 a client can send (`now - i64::MIN` overflows).
        if now_ms.abs_diff(sent) > TIMESTAMP_TOLERANCE_MS.unsigned_abs() {
            return Err(stale_timestamp(sent, now_ms));
        }
        let nonce = header("x-gatepay-nonce").ok_or(refuse(
            "400020",
            "SIGNATURE_NONCE_ERROR",
            "X-GatePay-Nonce: required",
        ))?;
        if nonce.len() > 64
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(refuse(
                "400020",
                "SIGNATURE_NONCE_ERROR",
                "X-GatePay-Nonce: must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let signature = header("x-gatepay-signature").ok_or(refuse(
            "400002",
            "INVALID_SIGNATURE",
            "X-GatePay-Signature: required",
        ))?;
        let credential = match self.store.gatepay_credential(client_id).await {
            Ok(Some(credential)) if credential.revoked_at_ms.is_none() => credential,
            Ok(_) => {
                return Err(refuse(
                    "400004",
                    "INVALID_CLIENT_ID",
                    "X-GatePay-Certificate-ClientId: unknown or revoked",
                ));
            }
            Err(error) => {
                tracing::error!(%error, "reading a GatePay credential failed");
                return Err(refuse("300000", "SYSTEM_ERROR", "system error, retry"));
            }
        };
        let expected = sign(&credential.secret, timestamp, nonce, body);
        let given = signature.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(refuse(
                "400002",
                "INVALID_SIGNATURE",
                "X-GatePay-Signature: does not match HMAC-SHA512 of timestamp, nonce and body",
            ));
        }
        match self
            .store
            .use_gatepay_nonce(client_id, nonce, now_ms, now_ms - NONCE_MEMORY_MS)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(refuse(
                    "400020",
                    "SIGNATURE_NONCE_ERROR",
                    "X-GatePay-Nonce: already used by this client",
                ));
            }
            Err(error) => {
                tracing::error!(%error, "recording a GatePay nonce failed");
                return Err(refuse("300000", "SYSTEM_ERROR", "system error, retry"));
            }
        }
        let merchant = self
            .store
            .merchant(&credential.merchant_id)
            .await
            .map_err(|_| {
                refuse(
                    "400004",
                    "INVALID_CLIENT_ID",
                    "X-GatePay-Certificate-ClientId: unknown or revoked",
                )
            })?;
        Ok((merchant, credential.client_id))
    }
}

/// A GatePay order in GatePay's words: its stored facts ([`GatePayOrderRow`]) with the amounts
/// of its payment order, as answers and notifications render them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFacts {
    /// `prepayId`.
    pub prepay_id: String,
    /// `merchantTradeNo`.
    pub merchant_trade_no: String,
    /// The credential that created the order.
    pub client_id: String,
    /// `env.terminalType`.
    pub terminal_type: String,
    /// `goods.goodsType`.
    pub goods_type: String,
    /// `goods.goodsName`.
    pub goods_name: String,
    /// `goods.goodsDetail`.
    pub goods_detail: String,
    /// `merchantUserId`.
    pub merchant_user_id: Option<i64>,
    /// `channelId`.
    pub channel_id: String,
    /// The order's price before the surcharge, in token units.
    pub order_amount: String,
    /// `surchargeAmount`, in token units.
    pub surcharge_amount: String,
    /// `currency` (the token symbol).
    pub currency: String,
    /// `cancelUrl`.
    pub cancel_url: Option<String>,
}

impl OrderFacts {
    /// The facts of the GatePay order `row` names, whose payment order is `order`: the price
    /// before the surcharge is the order's amount less the surcharge.
    pub fn of(row: &GatePayOrderRow, order: &OrderRow) -> OrderFacts {
        let before_surcharge = order
            .amount
            .checked_sub(row.surcharge_amount)
            .unwrap_or(order.amount);
        OrderFacts {
            prepay_id: row.prepay_id.clone(),
            merchant_trade_no: row.merchant_trade_no.clone(),
            client_id: row.client_id.clone(),
            terminal_type: row.terminal_type.clone(),
            goods_type: row.goods_type.clone(),
            goods_name: row.goods_name.clone(),
            goods_detail: row.goods_detail.clone(),
            merchant_user_id: row.merchant_user_id,
            channel_id: row.channel_id.clone(),
            order_amount: before_surcharge.to_decimal_string(order.decimals),
            surcharge_amount: row.surcharge_amount.to_decimal_string(order.decimals),
            currency: order.currency.clone(),
            cancel_url: row.cancel_url.clone(),
        }
    }
}

/// The `bizStatus` of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BizStatus {
    /// Paid (and confirmed).
    PaySuccess,
    /// Closed by the merchant or expired unpaid.
    PayClose,
}

impl BizStatus {
    fn as_str(self) -> &'static str {
        match self {
            BizStatus::PaySuccess => "PAY_SUCCESS",
            BizStatus::PayClose => "PAY_CLOSE",
        }
    }
}

/// What a notification says about the payment.
#[derive(Debug, Clone)]
pub struct Paid {
    /// Amount paid, in token units.
    pub amount: String,
    /// The confirming transaction.
    pub transaction_id: Option<String>,
    /// Who paid.
    pub payer: Option<String>,
}

/// Builds the GatePay notification of an order's new state, as an event in the outbox with a
/// delivery to the order's `callbackUrl`, else the merchant's webhook endpoint.
pub fn notification_event(
    merchant: &MerchantRow,
    order: &OrderRow,
    facts: &OrderFacts,
    status: BizStatus,
    paid: &Paid,
    now_ms: i64,
) -> NewEvent {
    let (order_id, url, created_at_ms) = (
        order.order_id.as_str(),
        order.webhook_url.as_deref(),
        order.created_at_ms,
    );
    let mut data = serde_json::json!({
        "merchantTradeNo": facts.merchant_trade_no,
        "productType": facts.goods_type,
        "productName": facts.goods_name,
        "tradeType": facts.terminal_type,
        "goodsName": facts.goods_name,
        "terminalType": facts.terminal_type,
        "currency": facts.currency,
        "totalFee": paid.amount,
        "orderAmount": facts.order_amount,
        "createTime": created_at_ms,
        "channelId": facts.channel_id,
    });
    if status == BizStatus::PaySuccess {
        data["transactionId"] =
            serde_json::Value::from(paid.transaction_id.clone().unwrap_or_default());
        if let Some(payer) = &paid.payer {
            data["payerAddress"] = serde_json::Value::from(payer.clone());
        }
    }
    let payload = serde_json::json!({
        "bizType": "PAY",
        "bizId": facts.prepay_id,
        "bizStatus": status.as_str(),
        "client_id": facts.client_id,
        "data": data.to_string(),
    });
    let url = url.or(merchant.webhook_url.as_deref());
    NewEvent {
        event_id: new_id("evt"),
        merchant_id: merchant.id.clone(),
        order_id: Some(order_id.to_owned()),
        event_type: format!("{EVENT_PREFIX}{}", status.as_str().to_ascii_lowercase()),
        payload: payload.to_string(),
        format: WebhookFormat::GatePay,
        created_at_ms: now_ms,
        delivery: url.map(|url| NewDelivery {
            delivery_id: new_id("whd"),
            url: url.to_owned(),
        }),
    }
}

/// Whether a merchant's answer to a notification acknowledges it:
/// `{"returnCode":"SUCCESS"}`.
pub fn acknowledged(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get("returnCode")
                .and_then(|code| code.as_str().map(str::to_owned))
        })
        .is_some_and(|code| code == "SUCCESS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_published_worked_example() {
        // vendor-apis.md §B.2 (ccx-api's unit test, recomputed with Python's hmac).
        let signature = sign("123", "1700073707111", "456", b"{the_answer: 42}");
        assert_eq!(
            signature,
            "1b03f547af065490c6e106bd93afc861329c52b596512d49489ca0c4ea57adee2991a576e402422a6bb092b83acf0a5618f5b0a7d4c639ae7779fbb3a1b16346"
        );
        assert!(verify(
            "123",
            "1700073707111",
            "456",
            b"{the_answer: 42}",
            &signature.to_ascii_uppercase()
        ));
        assert!(!verify(
            "124",
            "1700073707111",
            "456",
            b"{the_answer: 42}",
            &signature
        ));
    }

    #[test]
    fn an_empty_body_signs_three_lines() {
        let mut mac =
            <Hmac<Sha512> as Mac>::new_from_slice(b"k").unwrap_or_else(|_| unreachable!());
        mac.update(b"1\n2\n\n");
        assert_eq!(
            sign("k", "1", "2", b""),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn only_return_code_success_acknowledges() {
        assert!(acknowledged(
            br#"{"returnCode":"SUCCESS","returnMessage":""}"#
        ));
        assert!(!acknowledged(br#"{"returnCode":"FAIL"}"#));
        assert!(!acknowledged(b"OK"));
    }

    #[test]
    fn the_price_before_the_surcharge_is_the_amount_less_the_surcharge() {
        let row = GatePayOrderRow {
            prepay_id: "1".into(),
            merchant_id: MerchantId::from_suffix("m").unwrap_or_else(|_| unreachable!()),
            merchant_trade_no: "t".into(),
            order_id: "ORD-1".into(),
            client_id: "c".into(),
            created_at_ms: 0,
            terminal_type: "WEB".into(),
            goods_type: String::new(),
            goods_name: String::new(),
            goods_detail: String::new(),
            merchant_user_id: None,
            channel_id: String::new(),
            surcharge_amount: coffer_core::Amount::from(500_000u64),
            cancel_url: None,
        };
        let order = OrderRow {
            id: 1,
            order_id: "ORD-1".into(),
            merchant_id: row.merchant_id.clone(),
            chain_id: 1,
            blockchain: "ethereum".into(),
            currency: "USDC".into(),
            asset_address: None,
            decimals: 6,
            amount: coffer_core::Amount::from(13_000_000u64),
            underpayment_tolerance: coffer_core::Amount::ZERO,
            amount_paid: coffer_core::Amount::ZERO,
            status: coffer_core::OrderStatus::Pending,
            sub_status: coffer_core::PaymentSubStatus::None,
            receiving_address: String::new(),
            derivation_index: 0,
            order_info: "{}".into(),
            nonce: 0,
            webhook_url: None,
            redirect_url: None,
            idempotency_key: None,
            request_hash: None,
            closed: false,
            created_at_ms: 0,
            expires_at_ms: 0,
            monitor_until_ms: 0,
            confirmed_at_ms: None,
            updated_at_ms: 0,
            version: 0,
            sold: false,
        };
        let facts = OrderFacts::of(&row, &order);
        assert_eq!(
            (facts.order_amount.as_str(), facts.surcharge_amount.as_str()),
            ("12.5", "0.5")
        );
        assert_eq!(facts.currency, "USDC");
    }

    mod properties {
        use proptest::prelude::*;
        use secrecy::ExposeSecret;

        use super::super::*;
        use crate::test_support::{MerchantFixture, header_map, run};

        const CLIENT_ID: &str = "x-gatepay-certificate-clientid";
        const TIMESTAMP: &str = "x-gatepay-timestamp";
        const NONCE: &str = "x-gatepay-nonce";
        const SIGNATURE: &str = "x-gatepay-signature";

        /// A merchant with a GatePay credential over a fresh SQLite database.
        struct Fixture {
            base: MerchantFixture,
            service: GatePayCredentials,
            client_id: String,
            secret: String,
        }

        impl Fixture {
            fn new() -> Fixture {
                let base = MerchantFixture::new();
                let service = GatePayCredentials::new(base.db.store.clone());
                let credential = base
                    .runtime
                    .block_on(service.create(&base.merchant.id))
                    .unwrap();
                Fixture {
                    client_id: credential.client_id.clone(),
                    secret: credential.secret.expose_secret().to_owned(),
                    base,
                    service,
                }
            }

            /// The headers of a correctly signed request with `nonce`, now.
            fn signed(&self, nonce: &str, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
                let timestamp = crate::clock::now_ms().to_string();
                let signature = sign(&self.secret, &timestamp, nonce, body);
                vec![
                    (CLIENT_ID, self.client_id.clone().into_bytes()),
                    (TIMESTAMP, timestamp.into_bytes()),
                    (NONCE, nonce.as_bytes().to_vec()),
                    (SIGNATURE, signature.into_bytes()),
                ]
            }

            fn authenticate(
                &self,
                headers: &[(&'static str, Vec<u8>)],
                body: &[u8],
            ) -> Option<Result<(MerchantRow, String), AuthError>> {
                let map = header_map(headers)?;
                Some(
                    self.base.runtime.block_on(
                        self.service
                            .authenticate(|name| map.get(name).and_then(|v| v.to_str().ok()), body),
                    ),
                )
            }
        }

        /// Header values as clients send them: valid ones, hostile text and extreme numbers.
        fn header_value(valid: String) -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                3 => Just(Some(valid.into_bytes())),
                1 => Just(None),
                2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Some),
                2 => prop::sample::select(vec![
                    i64::MIN.to_string(),
                    i64::MAX.to_string(),
                    u64::MAX.to_string(),
                    "-0".to_owned(),
                    "+1".to_owned(),
                    "9".repeat(80),
                    " ".to_owned(),
                    "n".repeat(65),
                    "é".to_owned(),
                ])
                .prop_map(|text| Some(text.into_bytes())),
            ]
        }

        /// The documented errors of each header, never `300000` (a system error) and never a
        /// success unless every header is the signed one.
        #[test]
        fn hostile_headers_are_refused_with_gatepays_codes() {
            let fixture = Fixture::new();
            let body = br#"{"prepayId":"1"}"#;
            let valid = fixture.signed("valid-nonce", body);
            let text = |index: usize| String::from_utf8(valid[index].1.clone()).unwrap();
            let strategy = (
                header_value(text(0)),
                header_value(text(1)),
                header_value(text(2)),
                header_value(text(3)),
            );
            run(strategy, |(client_id, timestamp, nonce, signature)| {
                let headers: Vec<_> = [CLIENT_ID, TIMESTAMP, NONCE, SIGNATURE]
                    .into_iter()
                    .zip([client_id, timestamp, nonce, signature])
                    .filter_map(|(name, value)| value.map(|value| (name, value)))
                    .collect();
                let all_valid = headers == valid;
                let Some(outcome) = fixture.authenticate(&headers, body) else {
                    return Ok(());
                };
                match outcome {
                    Ok(_) => prop_assert!(all_valid, "{headers:?}"),
                    Err(error) => prop_assert!(
                        ["400002", "400003", "400004", "400020"].contains(&error.code),
                        "{error:?}"
                    ),
                }
                Ok(())
            });
        }

        /// A signed request with one byte of its signature, timestamp, nonce or body changed
        /// is refused, and does not burn the nonce: the original is then accepted, once.
        #[test]
        fn a_signed_request_with_one_byte_changed_is_refused_and_burns_nothing() {
            let fixture = Fixture::new();
            let counter = std::sync::atomic::AtomicU64::new(0);
            let strategy = (
                prop::collection::vec(any::<u8>(), 0..200),
                0usize..4,
                any::<prop::sample::Index>(),
                any::<u8>(),
            );
            run(strategy, |(body, part, position, byte)| {
                let nonce = format!(
                    "n{}",
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let original = fixture.signed(&nonce, &body);
                let mut headers = original.clone();
                let mut mutated_body = body.clone();
                // Part 0..3: the timestamp, nonce or signature header; 4: the body.
                let target = match part {
                    0 => &mut headers[1].1,
                    1 => &mut headers[2].1,
                    2 => &mut headers[3].1,
                    _ => &mut mutated_body,
                };
                if target.is_empty() {
                    target.push(byte);
                } else {
                    let at = position.index(target.len());
                    target[at] = byte;
                }
                let unchanged = headers == original && mutated_body == body;
                // Hex case does not matter, and header values are trimmed.
                let alias = part == 2 && headers[3].1.eq_ignore_ascii_case(&original[3].1);
                let trimmed =
                    part < 3 && headers[part + 1].1.trim_ascii() == original[part + 1].1.as_slice();
                prop_assume!(!unchanged && !alias && !trimmed);
                if let Some(outcome) = fixture.authenticate(&headers, &mutated_body) {
                    prop_assert!(outcome.is_err(), "{headers:?}");
                }
                let accepted = fixture.authenticate(&original, &body).unwrap();
                prop_assert!(accepted.is_ok(), "{accepted:?}");
                let replayed = fixture.authenticate(&original, &body).unwrap();
                prop_assert_eq!(replayed.map(|_| ()).unwrap_err().code, "400020");
                Ok(())
            });
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn a_signature_verifies_only_for_what_was_signed(
                secret in "\\PC{0,40}",
                timestamp in "\\PC{0,20}",
                nonce in "\\PC{0,20}",
                body in prop::collection::vec(any::<u8>(), 0..200),
                position in 0usize..128,
                replacement in "[0-9a-f]",
            ) {
                let signature = sign(&secret, &timestamp, &nonce, &body);
                prop_assert_eq!(signature.len(), 128);
                prop_assert!(verify(&secret, &timestamp, &nonce, &body, &signature));
                let mut forged = signature.clone();
                forged.replace_range(position..=position, &replacement);
                prop_assert_eq!(
                    verify(&secret, &timestamp, &nonce, &body, &forged),
                    forged == signature
                );
            }

            #[test]
            fn any_signature_text_is_checked_without_panicking(signature in "\\PC{0,300}") {
                let expected = sign("secret", "1", "n", b"{}");
                let verified = verify("secret", "1", "n", b"{}", &signature);
                prop_assert!(!verified || signature.trim().eq_ignore_ascii_case(&expected));
            }
        }
    }
}
