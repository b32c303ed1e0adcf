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
        let well_formed = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && text.bytes().filter(|b| *b == b'.').count() <= 1;
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
    fn rate_key(&self) -> String {
        match self {
            Caller::Merchant(merchant) => format!("merchant:{}", merchant.id.as_str()),
            Caller::Anonymous(Some(ip)) => format!("ip:{ip}"),
            Caller::Anonymous(None) => "ip:unknown".to_owned(),
        }
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

    /// Admits a verify or settle request of `caller`, or says why not.
    ///
    /// # Errors
    /// [`Denied`].
    pub async fn admit(
        &self,
        store: &dyn Store,
        chains: &ChainRegistry,
        request: &PaymentRequest,
        caller: &Caller,
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
            let minimum = Amount::parse_decimal(&self.policy.min_amount, decimals)
                .or_else(|_| Amount::parse_decimal("0", decimals))
                .unwrap_or(Amount::ZERO);
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
        self.payers
            .take(&request.payer().to_ascii_lowercase())
            .map_err(|retry_after| Denied::RateLimited {
                retry_after,
                message: "too many facilitator requests for this payer; slow down".to_owned(),
            })
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
