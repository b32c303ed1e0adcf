//! Who may use the x402 facilitator, and how much.
//!
//! Settling costs Coffer's signer gas, and verifying costs RPC calls, so the facilitator routes
//! (`/x402/*` and OKX's `/api/v6/…/x402/*`) admit a request only under the operator's policy
//! (`[x402.facilitator]`):
//!
//! - **access**: `payto` (the default) settles only payments to a payTo address registered in
//!   Coffer (`coffer payto add`); `api_key` also requires a merchant's API key and settles only
//!   to that merchant's payTo addresses; `public` settles for anyone, to anyone. An
//!   authenticated caller (an API key, or an OKX credential) acts only for its own merchant in
//!   every mode but `public`.
//! - **a minimum value** (`min_amount`, in token units, default `0.001`): a zero or dust
//!   "payment" is refused before anything is simulated.
//! - **rate limits** per client (the calling merchant, else the peer address) and per payer
//!   (`authorization.from`), per minute. A client is limited before anything is read; a payer is
//!   counted only once the rest of the policy admitted the request.
//!
//! The paywall and the Pelago endpoint settle through the engine directly: their payee is the
//! operator's or the authenticated merchant's own, checked where they are.

use std::net::IpAddr;
use std::time::Duration;

use alloy::primitives::Address;
use coffer_core::{Amount, ChainRegistry};
use coffer_store::{MerchantRow, Store, StoreError};
use coffer_x402::wire::PaymentRequest;
use serde::{Deserialize, Serialize};

use crate::rate_limit::RateLimiter;

/// Who may settle through the facilitator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Payments to a payTo registered in Coffer, from anyone.
    #[default]
    Payto,
    /// Callers with a merchant's API key, to that merchant's payTo addresses.
    ApiKey,
    /// Anyone, to anyone.
    Public,
}

/// `[x402.facilitator]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacilitatorPolicy {
    /// `payto`, `api_key` or `public`.
    pub access: Access,
    /// The smallest payment settled or verified, in token units (`"0.001"`); `"0"` admits
    /// anything above zero.
    pub min_amount: String,
    /// Requests per minute per payer (`authorization.from`); 0: unlimited.
    pub payer_per_minute: u32,
    /// Requests per minute per client (the calling merchant, else the peer address); 0:
    /// unlimited.
    pub client_per_minute: u32,
}

impl Default for FacilitatorPolicy {
    fn default() -> Self {
        FacilitatorPolicy {
            access: Access::Payto,
            min_amount: "0.001".to_owned(),
            payer_per_minute: 30,
            client_per_minute: 600,
        }
    }
}

impl FacilitatorPolicy {
    /// Anyone may settle anything above zero, unlimited: how Coffer behaved before it had a
    /// policy. For tests and private deployments.
    pub fn open() -> Self {
        FacilitatorPolicy {
            access: Access::Public,
            min_amount: "0".to_owned(),
            payer_per_minute: 0,
            client_per_minute: 0,
        }
    }

    /// Checks the policy's own values.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let text = self.min_amount.trim();
        let well_formed = text.bytes().any(|b| b.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && text.bytes().filter(|b| *b == b'.').count() <= 1
            && !text.starts_with('.')
            && !text.ends_with('.');
        if !well_formed {
            return Err(format!(
                "x402.facilitator.min_amount: {:?} is not a decimal amount such as \"0.001\"",
                self.min_amount
            ));
        }
        Ok(())
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A merchant, by API key or OKX credential.
    Merchant(MerchantRow),
    /// Nobody in particular, from this address (unknown when the server was not told).
    Anonymous(Option<IpAddr>),
}

impl Caller {
    /// Whose limit a request counts against: the merchant, else the peer's address — an IPv6
    /// peer by its /64, which one client holds whole, so rotating addresses within it gains
    /// nothing.
    fn rate_key(&self) -> String {
        match self {
            Caller::Merchant(merchant) => format!("merchant:{}", merchant.id.as_str()),
            Caller::Anonymous(Some(IpAddr::V4(ip))) => format!("ip:{ip}"),
            Caller::Anonymous(Some(IpAddr::V6(ip))) => match ip.to_ipv4_mapped() {
                Some(v4) => format!("ip:{v4}"),
                None => {
                    let [a, b, c, d, ..] = ip.segments();
                    format!("ip:{a:x}:{b:x}:{c:x}:{d:x}::/64")
                }
            },
            Caller::Anonymous(None) => "ip:unknown".to_owned(),
        }
    }
}

/// `min_amount` in base units of a token with `decimals`, rounded up: a minimum finer than the
/// token's smallest unit is one unit, never zero.
fn minimum_in(min_amount: &str, decimals: u8) -> Amount {
    let text = min_amount.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let places = usize::from(decimals);
    let (kept, dropped) = fraction.split_at(fraction.len().min(places));
    let exact = if kept.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{kept}")
    };
    let minimum = Amount::parse_decimal(&exact, decimals).unwrap_or(Amount::ZERO);
    if dropped.bytes().any(|b| b != b'0') {
        minimum
            .checked_add(Amount::from_base_units(alloy::primitives::U256::from(1u8)))
            .unwrap_or(minimum)
    } else {
        minimum
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The policy asks for an API key (401).
    Unauthorized(String),
    /// The payee is not one this caller may settle for (403).
    PayToNotAllowed(String),
    /// Below the minimum value: the payment is invalid (answered like any invalid payment).
    BelowMinimum(String),
    /// Too many requests; retry after the duration (429).
    RateLimited {
        /// When to retry.
        retry_after: Duration,
        /// Whose limit.
        message: String,
    },
    /// The store could not be read (503).
    Unavailable,
}

impl Denied {
    /// The x402 reason this refusal is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthorized(_) => "unauthorized",
            Denied::PayToNotAllowed(_) => "pay_to_not_allowed",
            Denied::BelowMinimum(_) => "invalid_exact_evm_payload_authorization_value",
            Denied::RateLimited { .. } => "rate_limited",
            Denied::Unavailable => "unavailable",
        }
    }

    /// What a person reads.
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthorized(message)
            | Denied::PayToNotAllowed(message)
            | Denied::BelowMinimum(message)
            | Denied::RateLimited { message, .. } => message,
            Denied::Unavailable => "the store could not be read; retry",
        }
    }
}

/// The facilitator's gate: the policy and its rate limiters.
#[derive(Debug)]
pub struct FacilitatorGate {
    policy: FacilitatorPolicy,
    payers: RateLimiter,
    clients: RateLimiter,
}

impl Default for FacilitatorGate {
    fn default() -> Self {
        FacilitatorGate::new(FacilitatorPolicy::default())
    }
}

impl FacilitatorGate {
    /// A gate enforcing `policy`.
    pub fn new(policy: FacilitatorPolicy) -> Self {
        FacilitatorGate {
            payers: RateLimiter::per_minute(policy.payer_per_minute),
            clients: RateLimiter::per_minute(policy.client_per_minute),
            policy,
        }
    }

    /// The policy enforced.
    pub fn policy(&self) -> &FacilitatorPolicy {
        &self.policy
    }

    /// Admits a verify or settle request of `caller`, or says why not. `signed_by_payer` tells
    /// whether the request's signature recovered to `authorization.from`: only then does it
    /// count against that payer's limit (a stranger's junk naming someone else's address must
    /// not lock them out; it still counts against the stranger's own client limit).
    ///
    /// # Errors
    /// [`Denied`].
    pub async fn admit(
        &self,
        store: &dyn Store,
        chains: &ChainRegistry,
        request: &PaymentRequest,
        caller: &Caller,
        signed_by_payer: bool,
    ) -> Result<(), Denied> {
        self.clients
            .take(&caller.rate_key())
            .map_err(|retry_after| Denied::RateLimited {
                retry_after,
                message: "too many facilitator requests from this client; slow down".to_owned(),
            })?;
        if self.policy.access == Access::ApiKey && !matches!(caller, Caller::Merchant(_)) {
            return Err(Denied::Unauthorized(
                "this facilitator settles for merchants only: send \"Authorization: Bearer <api key>\""
                    .to_owned(),
            ));
        }
        let (network, asset, pay_to, value) = terms(request);
        let chain = match request.version() {
            1 => chains.by_x402_v1_name(network),
            _ => chains.by_caip2(network),
        };
        // What the policy cannot judge (an unknown network or asset, a malformed value) is left
        // to verification, which names the field.
        let decimals = chain
            .zip(asset.parse::<Address>().ok())
            .and_then(|(chain, asset)| chain.asset_by_address(asset))
            .map(|asset| asset.decimals);
        if let (Some(decimals), Ok(value)) = (decimals, Amount::from_base_units_str(value)) {
            let minimum = minimum_in(&self.policy.min_amount, decimals);
            if value.is_zero() || value.base_units() < minimum.base_units() {
                return Err(Denied::BelowMinimum(format!(
                    "authorization.value {value_text} is below this facilitator's minimum of {min} \
                     token units",
                    value_text = value.to_base_units_string(),
                    min = self.policy.min_amount
                )));
            }
        }
        let public = self.policy.access == Access::Public;
        if !public || matches!(caller, Caller::Merchant(_)) {
            self.check_pay_to(store, chain.map(|c| c.chain_id), pay_to, caller, public)
                .await?;
        }
        // The payer's key is its 20 bytes, never the text a client sent.
        let payer = request.payer().parse::<Address>().ok();
        match payer {
            Some(payer) if signed_by_payer => {
                self.payers
                    .take(&format!("{payer:#x}"))
                    .map_err(|retry_after| Denied::RateLimited {
                        retry_after,
                        message: "too many facilitator requests for this payer; slow down"
                            .to_owned(),
                    })
            }
            _ => Ok(()),
        }
    }

    async fn check_pay_to(
        &self,
        store: &dyn Store,
        chain_id: Option<u64>,
        pay_to: &str,
        caller: &Caller,
        public: bool,
    ) -> Result<(), Denied> {
        let registered = match (chain_id, pay_to.parse::<Address>()) {
            (Some(chain_id), Ok(address)) => {
                match store.pay_to_owner(chain_id, &format!("{address:#x}")).await {
                    Ok(owner) => owner,
                    Err(StoreError::NotFound(_)) => None,
                    Err(error) => {
                        tracing::warn!(%error, "reading payTo owners failed");
                        return Err(Denied::Unavailable);
                    }
                }
            }
            _ => None,
        };
        match (caller, registered) {
            (Caller::Merchant(merchant), Some(owner)) if owner.merchant_id == merchant.id => Ok(()),
            (Caller::Merchant(_), None) if public => Ok(()),
            (Caller::Merchant(_), _) => Err(Denied::PayToNotAllowed(
                "paymentRequirements.payTo: not a payTo address of this merchant; register it with `coffer payto add`"
                    .to_owned(),
            )),
            (Caller::Anonymous(_), Some(_)) => Ok(()),
            (Caller::Anonymous(_), None) if public => Ok(()),
            (Caller::Anonymous(_), None) => Err(Denied::PayToNotAllowed(
                "paymentRequirements.payTo: this facilitator settles only payments to payTo addresses registered with it"
                    .to_owned(),
            )),
        }
    }
}

/// `(network, asset, payTo, value)` of a request.
fn terms(request: &PaymentRequest) -> (&str, &str, &str, &str) {
    match request {
        PaymentRequest::V1 {
            payload,
            requirements,
        } => (
            &requirements.network,
            &requirements.asset,
            &requirements.pay_to,
            &payload.payload.authorization.value,
        ),
        PaymentRequest::V2 {
            payload,
            requirements,
        } => (
            &requirements.network,
            &requirements.asset,
            &requirements.pay_to,
            &payload.payload.authorization.value,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimum_finer_than_the_token_rounds_up_never_to_zero() {
        assert_eq!(minimum_in("0.001", 6).to_base_units_string(), "1000");
        assert_eq!(minimum_in("0.0000001", 6).to_base_units_string(), "1");
        assert_eq!(minimum_in("0.0000015", 6).to_base_units_string(), "2");
        assert_eq!(minimum_in("0.0000010", 6).to_base_units_string(), "1");
        assert_eq!(minimum_in("2", 0).to_base_units_string(), "2");
        assert_eq!(minimum_in("0", 18).to_base_units_string(), "0");
    }

    #[test]
    fn only_decimal_amounts_are_valid_minimums() {
        for bad in [".", "", "1.2.3", "-1", "1e3", ".5", "5."] {
            let policy = FacilitatorPolicy {
                min_amount: bad.to_owned(),
                ..FacilitatorPolicy::default()
            };
            assert!(policy.validate().is_err(), "{bad:?}");
        }
        assert!(FacilitatorPolicy::default().validate().is_ok());
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        let key = |ip| Caller::Anonymous(Some(ip)).rate_key();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(key(mapped), "ip:192.0.2.7");
    }
}
