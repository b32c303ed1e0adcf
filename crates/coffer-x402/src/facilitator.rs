//! The facilitator's verification of `exact` EVM payments (EIP-3009).
//!
//! [`Facilitator::verify`] follows the reference order: scheme, EIP-712 domain, network and
//! asset, signature, recipient, `validBefore ≥ now + 6 s`, `validAfter ≤ now`, exact value,
//! then one `eth_call` of `transferWithAuthorization` that proves the nonce is unused and the
//! balance suffices (and checks contract-wallet signatures through ERC-1271). When the
//! simulation fails, a diagnosis reads `authorizationState`, `balanceOf`, `name` and
//! `version` to say precisely why. Verification is free: nothing is ever broadcast.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::{Eip712Domain, SolStruct};
use coffer_core::{Asset, Chain, ChainRegistry, TransferMethod};
use coffer_evm::contracts::{IEip3009, TransferWithAuthorization};
use coffer_evm::rpc::ChainRpc;

use crate::reasons::Reason;
use crate::wire::{ExactEvmPayload, PaymentRequest, Supported, SupportedKind, VerifyResponse};

/// Seconds a payment must stay valid after verification (block time slack).
pub const VALID_BEFORE_SLACK: u64 = 6;

/// Verifies x402 payments against the configured chains.
#[derive(Clone)]
pub struct Facilitator {
    chains: Arc<ChainRegistry>,
    rpcs: Arc<Vec<ChainRpc>>,
    /// The address simulations call from (the settlement signer).
    caller: Address,
}

/// A failed check: the reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason.
    pub reason: Reason,
    /// Details.
    pub message: String,
}

fn reject(reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

/// A payment whose fields parsed and passed the static checks.
#[derive(Debug, Clone)]
pub struct CheckedPayment {
    /// The chain.
    pub chain: Chain,
    /// The token.
    pub asset: Asset,
    /// Payer.
    pub from: Address,
    /// Payee.
    pub to: Address,
    /// Amount.
    pub value: U256,
    /// Valid after (unix seconds).
    pub valid_after: U256,
    /// Valid before (unix seconds).
    pub valid_before: U256,
    /// Authorization nonce.
    pub nonce: B256,
    /// The signature as given.
    pub signature: Bytes,
    /// The EIP-712 domain the payer signed with.
    pub domain: Eip712Domain,
    /// Whether the signature recovered to `from` (an EOA). When not, `from` must be a
    /// contract wallet and the token checks the signature (ERC-1271) in the simulation.
    pub signed_by_eoa: bool,
}

/// The normalised view of either version's request.
struct Terms<'a> {
    version: u8,
    payload_scheme: &'a str,
    required_scheme: &'a str,
    payload_network: &'a str,
    required_network: &'a str,
    asset: &'a str,
    pay_to: &'a str,
    amount: &'a str,
    extra: Option<&'a serde_json::Value>,
    payload: &'a ExactEvmPayload,
}

fn terms(request: &PaymentRequest) -> Terms<'_> {
    match request {
        PaymentRequest::V1 {
            payload,
            requirements,
        } => Terms {
            version: 1,
            payload_scheme: &payload.scheme,
            required_scheme: &requirements.scheme,
            payload_network: &payload.network,
            required_network: &requirements.network,
            asset: &requirements.asset,
            pay_to: &requirements.pay_to,
            amount: &requirements.max_amount_required,
            extra: requirements.extra.as_ref(),
            payload: &payload.payload,
        },
        PaymentRequest::V2 {
            payload,
            requirements,
        } => Terms {
            version: 2,
            payload_scheme: &payload.accepted.scheme,
            required_scheme: &requirements.scheme,
            payload_network: &payload.accepted.network,
            required_network: &requirements.network,
            asset: &requirements.asset,
            pay_to: &requirements.pay_to,
            amount: &requirements.amount,
            extra: requirements.extra.as_ref(),
            payload: &payload.payload,
        },
    }
}

fn parse_address(field: &str, text: &str) -> Result<Address, Rejection> {
    text.parse::<Address>().map_err(|_| {
        reject(
            Reason::Payload,
            format!("{field}: {text:?} is not an address"),
        )
    })
}

fn parse_uint(field: &str, text: &str) -> Result<U256, Rejection> {
    let valid = !text.is_empty() && text.len() <= 78 && text.bytes().all(|b| b.is_ascii_digit());
    valid
        .then(|| U256::from_str_radix(text, 10).ok())
        .flatten()
        .ok_or_else(|| {
            reject(
                Reason::Payload,
                format!("{field}: {text:?} is not a decimal integer"),
            )
        })
}

fn parse_hex(field: &str, text: &str) -> Result<Bytes, Rejection> {
    text.parse::<Bytes>()
        .map_err(|_| reject(Reason::Payload, format!("{field}: not 0x-prefixed hex")))
}

impl Facilitator {
    /// A facilitator over the configured chains; simulations call from `caller`.
    pub fn new(chains: Arc<ChainRegistry>, rpcs: Arc<Vec<ChainRpc>>, caller: Address) -> Self {
        Facilitator {
            chains,
            rpcs,
            caller,
        }
    }

    fn provider(&self, chain_id: u64) -> Option<DynProvider> {
        self.rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)
            .and_then(|rpc| rpc.endpoint(0).map(|(_, provider)| provider.clone()))
    }

    /// Every (version, scheme, network) this facilitator verifies: configured chains with an
    /// EIP-3009 asset, in both versions.
    pub fn supported(&self, signers: &[Address]) -> Supported {
        let mut kinds = Vec::new();
        for chain in self.chains.configured() {
            if !chain
                .assets
                .iter()
                .any(|asset| asset.transfer_method == TransferMethod::Eip3009)
            {
                continue;
            }
            kinds.push(SupportedKind {
                x402_version: 2,
                scheme: "exact".to_owned(),
                network: chain.names.caip2.clone(),
            });
            kinds.push(SupportedKind {
                x402_version: 1,
                scheme: "exact".to_owned(),
                network: chain.names.x402_v1.clone(),
            });
        }
        let mut by_namespace = BTreeMap::new();
        by_namespace.insert(
            "eip155:*".to_owned(),
            signers
                .iter()
                .map(|signer| signer.to_checksum(None))
                .collect(),
        );
        Supported {
            kinds,
            extensions: Vec::new(),
            signers: by_namespace,
        }
    }

    /// The static checks (everything but the chain), in the reference order.
    ///
    /// # Errors
    /// The first [`Rejection`].
    pub fn check(&self, request: &PaymentRequest, now: u64) -> Result<CheckedPayment, Rejection> {
        let terms = terms(request);
        if terms.payload_scheme != "exact" || terms.required_scheme != "exact" {
            return Err(reject(
                Reason::Scheme,
                "only the \"exact\" scheme is supported",
            ));
        }
        let name = terms
            .extra
            .and_then(|extra| extra.get("name"))
            .and_then(serde_json::Value::as_str);
        let version = terms
            .extra
            .and_then(|extra| extra.get("version"))
            .and_then(serde_json::Value::as_str);
        let (Some(name), Some(version)) = (name, version) else {
            return Err(reject(
                Reason::MissingEip712Domain,
                "paymentRequirements.extra must carry name and version",
            ));
        };
        if terms.payload_network != terms.required_network {
            return Err(reject(
                Reason::Network,
                "the payload's network differs from the requirements'",
            ));
        }
        let chain = match terms.version {
            1 => self.chains.by_x402_v1_name(terms.required_network),
            _ => self.chains.by_caip2(terms.required_network),
        }
        .filter(|chain| !chain.rpc_urls.is_empty())
        .ok_or_else(|| {
            reject(
                Reason::Network,
                format!("network {:?} is not served here", terms.required_network),
            )
        })?;
        let asset_address = parse_address("paymentRequirements.asset", terms.asset)?;
        let asset = chain
            .asset_by_address(asset_address)
            .filter(|asset| asset.transfer_method == TransferMethod::Eip3009)
            .ok_or_else(|| {
                reject(
                    Reason::Asset,
                    format!(
                        "asset {asset_address} is not an EIP-3009 token Coffer settles on {}",
                        chain.key()
                    ),
                )
            })?
            .clone();

        let authorization = &terms.payload.authorization;
        let from = parse_address("authorization.from", &authorization.from)?;
        let to = parse_address("authorization.to", &authorization.to)?;
        let value = parse_uint("authorization.value", &authorization.value)?;
        let valid_after = parse_uint("authorization.validAfter", &authorization.valid_after)?;
        let valid_before = parse_uint("authorization.validBefore", &authorization.valid_before)?;
        let nonce_bytes = parse_hex("authorization.nonce", &authorization.nonce)?;
        if nonce_bytes.len() != 32 {
            return Err(reject(
                Reason::Payload,
                "authorization.nonce: must be 32 bytes",
            ));
        }
        let nonce = B256::from_slice(&nonce_bytes);
        let signature = parse_hex("signature", &terms.payload.signature)?;
        let domain = Eip712Domain::new(
            Some(name.to_owned().into()),
            Some(version.to_owned().into()),
            Some(U256::from(chain.chain_id)),
            Some(asset_address),
            None,
        );
        let checked = CheckedPayment {
            chain: chain.clone(),
            asset,
            from,
            to,
            value,
            valid_after,
            valid_before,
            nonce,
            signature: signature.clone(),
            domain,
            signed_by_eoa: false,
        };
        let mut checked = checked;
        if signature.len() == 65 {
            let message = TransferWithAuthorization {
                from,
                to,
                value,
                validAfter: valid_after,
                validBefore: valid_before,
                nonce,
            };
            let hash = message.eip712_signing_hash(&checked.domain);
            let parsed = Signature::try_from(signature.as_ref()).map_err(|_| {
                reject(
                    Reason::Signature,
                    "the signature is not a valid secp256k1 signature",
                )
            })?;
            if parsed.normalize_s().is_some() {
                return Err(reject(
                    Reason::Signature,
                    "high-s signatures are not accepted",
                ));
            }
            checked.signed_by_eoa = parsed.recover_address_from_prehash(&hash).ok() == Some(from);
        }
        if to != parse_address("paymentRequirements.payTo", terms.pay_to)? {
            return Err(reject(
                Reason::Recipient,
                "authorization.to differs from paymentRequirements.payTo",
            ));
        }
        if valid_before < U256::from(now + VALID_BEFORE_SLACK) {
            return Err(reject(
                Reason::ValidBefore,
                "the authorization expires too soon",
            ));
        }
        if valid_after > U256::from(now) {
            return Err(reject(
                Reason::ValidAfter,
                "the authorization is not valid yet",
            ));
        }
        let amount = parse_uint("paymentRequirements amount", terms.amount)?;
        if value != amount {
            return Err(reject(
                Reason::Value,
                format!("authorization.value {value} differs from the amount {amount}"),
            ));
        }
        Ok(checked)
    }

    /// Simulates the transfer; on failure, diagnoses why.
    ///
    /// # Errors
    /// A [`Rejection`] with the diagnosed reason, or `SimulationFailed` when the chain cannot
    /// be asked.
    pub async fn simulate(&self, payment: &CheckedPayment) -> Result<(), Rejection> {
        let provider = self
            .provider(payment.chain.chain_id)
            .ok_or_else(|| reject(Reason::Network, "no RPC endpoint for this network"))?;
        if !payment.signed_by_eoa {
            // Only a deployed contract wallet can vouch for a signature that is not its own.
            let code = provider.get_code_at(payment.from).await.map_err(|error| {
                reject(
                    Reason::SimulationFailed,
                    format!("cannot read the payer's code: {error}"),
                )
            })?;
            if code.is_empty() {
                return Err(reject(
                    Reason::Signature,
                    "the signature was not made by authorization.from",
                ));
            }
        }
        let token = IEip3009::new(payment.asset.address, &provider);
        let p = payment;
        let simulated = if p.signature.len() == 65 {
            let signature = Signature::try_from(p.signature.as_ref()).map_err(|_| {
                reject(
                    Reason::Signature,
                    "the signature is not a valid secp256k1 signature",
                )
            })?;
            let v = 27 + u8::from(signature.v());
            token
                .transferWithAuthorization_0(
                    p.from,
                    p.to,
                    p.value,
                    p.valid_after,
                    p.valid_before,
                    p.nonce,
                    v,
                    signature.r().into(),
                    signature.s().into(),
                )
                .from(self.caller)
                .call()
                .await
                .map(drop)
        } else {
            token
                .transferWithAuthorization_1(
                    p.from,
                    p.to,
                    p.value,
                    p.valid_after,
                    p.valid_before,
                    p.nonce,
                    p.signature.clone(),
                )
                .from(self.caller)
                .call()
                .await
                .map(drop)
        };
        let Err(error) = simulated else { return Ok(()) };
        tracing::debug!(%error, "simulated transferWithAuthorization reverted");
        Err(self.diagnose(&token, payment, &error.to_string()).await)
    }

    async fn diagnose(
        &self,
        token: &IEip3009::IEip3009Instance<&DynProvider>,
        payment: &CheckedPayment,
        revert: &str,
    ) -> Rejection {
        match token
            .authorizationState(payment.from, payment.nonce)
            .call()
            .await
        {
            Err(_) => {
                return reject(
                    Reason::Eip3009NotSupported,
                    "the token has no authorizationState",
                );
            }
            Ok(true) => {
                return reject(
                    Reason::NonceUsed,
                    "the authorization's nonce was already used or cancelled",
                );
            }
            Ok(false) => {}
        }
        if let Ok(name) = token.name().call().await
            && payment.domain.name.as_deref() != Some(name.as_str())
        {
            return reject(
                Reason::TokenName,
                format!("the token's EIP-712 name is {name:?}"),
            );
        }
        if let Ok(version) = token.version().call().await
            && payment.domain.version.as_deref() != Some(version.as_str())
        {
            return reject(
                Reason::TokenVersion,
                format!("the token's EIP-712 version is {version:?}"),
            );
        }
        if let Ok(balance) = token.balanceOf(payment.from).call().await
            && balance < payment.value
        {
            return reject(
                Reason::InsufficientBalance,
                format!("the payer holds {balance}, less than {}", payment.value),
            );
        }
        if revert.contains("invalid signature") {
            return reject(Reason::Signature, "the token rejected the signature");
        }
        reject(
            Reason::SimulationFailed,
            revert.chars().take(300).collect::<String>(),
        )
    }

    /// Verifies a payment: static checks, then the simulation. Never broadcasts.
    pub async fn verify(&self, request: &PaymentRequest, now: u64) -> VerifyResponse {
        let version = request.version();
        let payer = Some(terms(request).payload.authorization.from.clone());
        let outcome = match self.check(request, now) {
            Ok(payment) => self.simulate(&payment).await,
            Err(rejection) => Err(rejection),
        };
        match outcome {
            Ok(()) => VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer,
            },
            Err(rejection) => VerifyResponse {
                is_valid: false,
                invalid_reason: Some(rejection.reason.as_str(version).to_owned()),
                invalid_message: Some(rejection.message),
                payer,
            },
        }
    }
}
