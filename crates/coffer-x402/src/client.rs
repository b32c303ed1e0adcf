//! The payer's side of `exact` on EVM: from a 402 answer, the payment header an official
//! client sends — `PAYMENT-SIGNATURE` with a version-2 payload echoing the chosen requirement,
//! or `X-PAYMENT` with a version-1 payload — carrying an EIP-3009 `TransferWithAuthorization`
//! signed over the token's EIP-712 domain (`extra.name` / `extra.version`). `coffer dev
//! pay-x402` pays with it; the interop tests prove the official clients build the same.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use coffer_evm::contracts::TransferWithAuthorization;
use serde_json::{Value, json};

use crate::headers;
use crate::wire::{
    Authorization, ExactEvmPayload, PayloadV1, PayloadV2, RequirementsV1, RequirementsV2,
};

/// What a 402 answer offers, by version.
#[derive(Debug, Clone)]
pub enum Offer {
    /// Version 2: the decoded `PAYMENT-REQUIRED` header's `resource` and `accepts`.
    V2 {
        /// The resource object, echoed in the payment.
        resource: Option<Value>,
        /// The requirements offered.
        accepts: Vec<RequirementsV2>,
    },
    /// Version 1: the body's `accepts`.
    V1(Vec<RequirementsV1>),
}

impl Offer {
    /// Reads a 402 answer: the `PAYMENT-REQUIRED` header when there is one, else the body.
    ///
    /// # Errors
    /// A message saying what the answer lacks.
    pub fn from_answer(payment_required: Option<&str>, body: &[u8]) -> Result<Offer, String> {
        if let Some(header) = payment_required {
            let required: Value =
                headers::decode(header).map_err(|error| format!("PAYMENT-REQUIRED: {error}"))?;
            let accepts = serde_json::from_value(required["accepts"].clone())
                .map_err(|error| format!("PAYMENT-REQUIRED accepts: {error}"))?;
            return Ok(Offer::V2 {
                resource: required.get("resource").cloned(),
                accepts,
            });
        }
        let body: Value = serde_json::from_slice(body).map_err(|_| {
            "the 402 answer has neither a PAYMENT-REQUIRED header nor a JSON body".to_owned()
        })?;
        let accepts = serde_json::from_value(body["accepts"].clone())
            .map_err(|error| format!("the 402 body's accepts: {error}"))?;
        Ok(Offer::V1(accepts))
    }
}

/// One requirement, whichever version it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The network as the offer names it (`eip155:84532` or `base-sepolia`).
    pub network: String,
    /// Token contract.
    pub asset: Address,
    /// Recipient.
    pub pay_to: Address,
    /// Amount in base units.
    pub amount: U256,
    /// Seconds the payment may take.
    pub max_timeout_seconds: u64,
    /// EIP-712 domain name and version (`extra`).
    pub domain: Option<(String, String)>,
}

/// The terms of `exact` requirement `r`; `None` for another scheme or one that does not read.
fn terms(r: &RequirementsV2) -> Option<Terms> {
    if r.scheme != "exact" {
        return None;
    }
    let domain = r.extra.as_ref().and_then(|extra| {
        Some((
            extra.get("name")?.as_str()?.to_owned(),
            extra.get("version")?.as_str()?.to_owned(),
        ))
    });
    Some(Terms {
        network: r.network.clone(),
        asset: r.asset.parse().ok()?,
        pay_to: r.pay_to.parse().ok()?,
        amount: r.amount.parse().ok()?,
        max_timeout_seconds: r.max_timeout_seconds,
        domain,
    })
}

/// A version-1 requirement in version 2's shape (the fields `exact` pays by are the same).
fn as_v2(r: &RequirementsV1) -> RequirementsV2 {
    RequirementsV2 {
        scheme: r.scheme.clone(),
        network: r.network.clone(),
        amount: r.max_amount_required.clone(),
        asset: r.asset.clone(),
        pay_to: r.pay_to.clone(),
        max_timeout_seconds: r.max_timeout_seconds,
        extra: r.extra.clone(),
    }
}

impl Offer {
    /// The requirements offered, in version 2's shape.
    fn requirements(&self) -> Vec<RequirementsV2> {
        match self {
            Offer::V2 { accepts, .. } => accepts.clone(),
            Offer::V1(accepts) => accepts.iter().map(as_v2).collect(),
        }
    }

    /// Every `exact` requirement offered that can be read, in the offer's order.
    pub fn exact_terms(&self) -> Vec<Terms> {
        self.requirements().iter().filter_map(terms).collect()
    }

    /// The header that pays `chosen` (one of [`Offer::exact_terms`]) on chain `chain_id`,
    /// signed by `payer` at unix time `now` with `nonce`: its name and value.
    ///
    /// # Errors
    /// A message when the requirement names no EIP-712 domain or cannot be signed.
    pub fn pay(
        &self,
        chosen: &Terms,
        chain_id: u64,
        payer: &PrivateKeySigner,
        now: u64,
        nonce: B256,
    ) -> Result<(&'static str, String), String> {
        let (name, version) = chosen
            .domain
            .clone()
            .ok_or("the requirement names no EIP-712 domain (extra.name, extra.version)")?;
        // As the official clients do: valid from ten minutes ago until the requirement's timeout.
        let authorization = TransferWithAuthorization {
            from: payer.address(),
            to: chosen.pay_to,
            value: chosen.amount,
            validAfter: U256::from(now.saturating_sub(600)),
            validBefore: U256::from(now + chosen.max_timeout_seconds.max(60)),
            nonce,
        };
        let domain = Eip712Domain::new(
            Some(name.into()),
            Some(version.into()),
            Some(U256::from(chain_id)),
            Some(chosen.asset),
            None,
        );
        let signature = payer
            .sign_hash_sync(&authorization.eip712_signing_hash(&domain))
            .map_err(|error| format!("cannot sign: {error}"))?;
        let payload = ExactEvmPayload {
            signature: format!("0x{}", alloy::hex::encode(signature.as_bytes())),
            authorization: Authorization {
                from: authorization.from.to_checksum(None),
                to: authorization.to.to_checksum(None),
                value: authorization.value.to_string(),
                valid_after: authorization.validAfter.to_string(),
                valid_before: authorization.validBefore.to_string(),
                nonce: format!("{:#x}", authorization.nonce),
            },
        };
        match self {
            Offer::V2 { resource, accepts } => {
                let accepted = accepts
                    .iter()
                    .find(|r| terms(r).as_ref() == Some(chosen))
                    .cloned()
                    .ok_or("the chosen requirement is not in the offer")?;
                let payment = PayloadV2 {
                    x402_version: 2,
                    resource: resource.clone(),
                    accepted,
                    payload,
                    extensions: None,
                };
                Ok(("PAYMENT-SIGNATURE", headers::encode(&payment)))
            }
            Offer::V1(_) => {
                let payment = PayloadV1 {
                    x402_version: 1,
                    scheme: "exact".to_owned(),
                    network: chosen.network.clone(),
                    payload,
                };
                Ok(("X-PAYMENT", headers::encode(&json!(payment))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";

    fn requirement() -> Value {
        json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": ASSET,
            "payTo": PAY_TO, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}})
    }

    #[test]
    fn a_v2_offer_is_paid_with_a_signed_authorization_echoing_the_requirement() {
        let header = headers::encode(
            &json!({"x402Version": 2, "resource": {"url": "http://x/premium"},
            "accepts": [{"scheme": "upto", "network": "eip155:84532", "amount": "1", "asset": ASSET, "payTo": PAY_TO}, requirement()]}),
        );
        let offer = Offer::from_answer(Some(&header), b"").unwrap();
        let terms = offer.exact_terms();
        assert_eq!(terms.len(), 1, "only exact is offered to pay");
        let payer = PrivateKeySigner::random();
        let (name, value) = offer
            .pay(
                &terms[0],
                84_532,
                &payer,
                1_800_000_000,
                B256::repeat_byte(9),
            )
            .unwrap();
        assert_eq!(name, "PAYMENT-SIGNATURE");
        let payment: PayloadV2 = headers::decode(&value).unwrap();
        assert_eq!(
            serde_json::to_value(&payment.accepted).unwrap(),
            requirement()
        );
        assert_eq!(payment.resource, Some(json!({"url": "http://x/premium"})));
        let auth = &payment.payload.authorization;
        assert_eq!(
            (
                auth.value.as_str(),
                auth.valid_after.as_str(),
                auth.valid_before.as_str()
            ),
            ("10000", "1799999400", "1800000300")
        );
        // The signature is the payer's, over the token's EIP-712 domain.
        let signed = TransferWithAuthorization {
            from: payer.address(),
            to: PAY_TO.parse().unwrap(),
            value: U256::from(10_000u64),
            validAfter: U256::from(1_799_999_400u64),
            validBefore: U256::from(1_800_000_300u64),
            nonce: B256::repeat_byte(9),
        };
        let digest = signed.eip712_signing_hash(&coffer_evm::testnet::usdc_domain(
            84_532,
            ASSET.parse().unwrap(),
        ));
        let signature: alloy::primitives::Signature = payment.payload.signature.parse().unwrap();
        assert_eq!(
            signature.recover_address_from_prehash(&digest).unwrap(),
            payer.address()
        );
    }

    #[test]
    fn a_v1_offer_is_paid_with_x_payment_and_an_offer_without_a_domain_is_refused() {
        let mut v1 = requirement();
        v1["maxAmountRequired"] = json!("10000");
        v1["network"] = json!("base-sepolia");
        let body = serde_json::to_vec(&json!({"x402Version": 1, "accepts": [v1]})).unwrap();
        let offer = Offer::from_answer(None, &body).unwrap();
        let terms = offer.exact_terms();
        let payer = PrivateKeySigner::random();
        let (name, value) = offer
            .pay(&terms[0], 84_532, &payer, 1_800_000_000, B256::ZERO)
            .unwrap();
        assert_eq!(name, "X-PAYMENT");
        let payment: PayloadV1 = headers::decode(&value).unwrap();
        assert_eq!(
            (payment.x402_version, payment.network.as_str()),
            (1, "base-sepolia")
        );

        let mut bare = terms[0].clone();
        bare.domain = None;
        assert!(
            offer
                .pay(&bare, 84_532, &payer, 1_800_000_000, B256::ZERO)
                .unwrap_err()
                .contains("EIP-712 domain")
        );
        assert!(
            Offer::from_answer(None, b"not json")
                .unwrap_err()
                .contains("neither a PAYMENT-REQUIRED header")
        );
    }
}
