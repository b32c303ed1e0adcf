//! The facilitator's verification of `exact` EVM payments (EIP-3009).
//!
//! [`Facilitator::verify`] follows the reference order: scheme, EIP-712 domain, network and
//! asset, signature, recipient, `validBefore ≥ now + 6 s`, `validAfter ≤ now`, exact value,
//! then one `eth_call` of `transferWithAuthorization` that proves the nonce is unused and the
//! balance suffices (and checks contract-wallet signatures through ERC-1271). When the
//! simulation fails, a diagnosis reads `authorizationState`, `balanceOf`, `name` and
//! `version` to say precisely why. Verification is free: nothing is ever broadcast.
//!
//! Signatures come in three kinds:
//! - **EOA** (65 bytes, low-s): recovered offline with libsecp256k1 ([`recovery`]);
//! - **ERC-1271** (a deployed contract wallet): the token asks the wallet in the simulation;
//! - **ERC-6492** (a wallet not deployed yet, [`erc6492`]): the wrapper is removed offline and
//!   one deployless `eth_call` deploys the wallet, checks the inner signature with it and runs
//!   the transfer. Such a payment verifies, but it cannot settle while the wallet is not on
//!   chain — `transferWithAuthorization` asks the wallet itself — so [`Facilitator::simulate`],
//!   which settlement runs before it broadcasts, answers
//!   `invalid_exact_evm_payload_undeployed_smart_wallet` and nothing is sent. Coffer never pays
//!   gas for a factory named by a payer. Once the wallet is deployed (by its first user
//!   operation, or anyone calling its factory), the same signature settles, unwrapped.

pub mod erc6492;
pub mod recovery;

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{Eip712Domain, SolCall, SolStruct};
use coffer_core::{Asset, Chain, ChainRegistry, TransferMethod};
use coffer_evm::contracts::{IEip3009, TransferWithAuthorization};
use coffer_evm::rpc::ChainRpc;

use self::erc6492::{CheckOutcome, Erc6492Signature};
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

/// A rejection; any URL in its message (an RPC error's) is redacted, since the message is
/// answered to whoever asked.
fn reject(reason: Reason, message: impl Into<String>) -> Rejection {
    let message = message.into();
    Rejection {
        reason,
        message: coffer_core::redact::redact_urls(&message).into_owned(),
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
    /// The signature the token checks: as given, or the inner signature of an ERC-6492
    /// wrapper.
    pub signature: Bytes,
    /// The EIP-712 domain the payer signed with.
    pub domain: Eip712Domain,
    /// The EIP-712 hash of the authorization (what the payer signed).
    pub digest: B256,
    /// Whether the signature recovered to `from` (an EOA). When not, `from` must be a
    /// contract wallet and the token checks the signature (ERC-1271) in the simulation.
    pub signed_by_eoa: bool,
    /// The ERC-6492 wrapper the signature came in, if any: how to deploy the payer's wallet.
    pub erc6492: Option<Erc6492Signature>,
}

impl CheckedPayment {
    /// A hash of what the payer signed (the EIP-712 digest, which binds payer, payee, value,
    /// validity window, nonce, token and chain) and of the signature the token checks, as
    /// 0x hex. Two requests naming the same `(payer, nonce)` have the same terms hash only when
    /// they carry the same authorization with the same signature.
    pub fn terms_hash(&self) -> String {
        let mut bytes = Vec::with_capacity(32 + self.signature.len());
        bytes.extend_from_slice(self.digest.as_slice());
        // An ECDSA signature in one canonical spelling (`v` as 27/28, whether it came as 0/1 or
        // 27/28): the same signature is the same terms, whatever its encoding.
        match Signature::try_from(self.signature.as_ref()) {
            Ok(parsed) if self.signature.len() == 65 => {
                bytes.extend_from_slice(&parsed.as_bytes());
            }
            _ => bytes.extend_from_slice(&self.signature),
        }
        format!("{:#x}", alloy::primitives::keccak256(bytes))
    }
}

/// What the simulation does with a valid ERC-6492 payment whose wallet is not deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undeployed {
    /// Verification: the counterfactual proof is the answer.
    Accept,
    /// Settlement: the transfer cannot run yet; answer why.
    Refuse,
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

/// Whether an RPC failure means the chain could not be asked (no connection, an HTTP error, a
/// timeout), rather than an answer from the node such as a revert.
fn unreachable(error: &alloy::transports::TransportError) -> bool {
    matches!(error, alloy::transports::RpcError::Transport(_))
}

/// The rejection of a payment the chain could not be asked about. The cause stays in the log:
/// RPC errors can name the endpoint's URL, and with it an API key.
fn chain_unavailable(error: &dyn std::fmt::Display) -> Rejection {
    tracing::warn!(%error, "the chain could not be asked about a payment");
    reject(
        Reason::ChainUnavailable,
        "the chain could not be reached; nothing was decided, retry",
    )
}

/// The rejection of a payment a simulation step could not run for: the chain could not be
/// asked, or the node answered `context` failed.
fn rpc_failure(error: &alloy::transports::TransportError, context: &str) -> Rejection {
    if unreachable(error) {
        return chain_unavailable(error);
    }
    reject(Reason::SimulationFailed, format!("{context}: {error}"))
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
            .and_then(|rpc| rpc.provider().cloned())
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
        self.check_at(request, Some(now))
    }

    /// The static checks except the validity window: what an authorization that was already
    /// settled (and may have expired since) must still pass to be recognised as the same.
    ///
    /// # Errors
    /// The first [`Rejection`].
    pub fn check_terms(&self, request: &PaymentRequest) -> Result<CheckedPayment, Rejection> {
        self.check_at(request, None)
    }

    fn check_at(
        &self,
        request: &PaymentRequest,
        now: Option<u64>,
    ) -> Result<CheckedPayment, Rejection> {
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
        let given = parse_hex("signature", &terms.payload.signature)?;
        let wrapper = erc6492::unwrap(&given)
            .transpose()
            .map_err(|message| reject(Reason::Signature, message))?;
        let domain = Eip712Domain::new(
            Some(name.to_owned().into()),
            Some(version.to_owned().into()),
            Some(U256::from(chain.chain_id)),
            Some(asset_address),
            None,
        );
        let digest = TransferWithAuthorization {
            from,
            to,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce,
        }
        .eip712_signing_hash(&domain);
        // The signature the token will check; an ERC-6492 wrapper is never sent to it.
        let signature = wrapper
            .as_ref()
            .map_or_else(|| given.clone(), |wrapper| wrapper.inner.clone());
        let mut signed_by_eoa = false;
        if signature.len() == 65 {
            // A bare 65-byte signature must be a valid low-s ECDSA signature. Inside an
            // ERC-6492 wrapper it may be anything the wallet accepts; if it is the payer's own
            // ECDSA signature (an EOA whose wallet software always wraps), it counts as such.
            match Signature::try_from(signature.as_ref()) {
                Err(_) if wrapper.is_none() => {
                    return Err(reject(
                        Reason::Signature,
                        "the signature is not a valid secp256k1 signature",
                    ));
                }
                Ok(parsed) if parsed.normalize_s().is_some() => {
                    if wrapper.is_none() {
                        return Err(reject(
                            Reason::Signature,
                            "high-s signatures are not accepted",
                        ));
                    }
                }
                Ok(parsed) => {
                    signed_by_eoa = recovery::recover_signer(&digest, &parsed) == Some(from);
                }
                Err(_) => {}
            }
        }
        let checked = CheckedPayment {
            chain: chain.clone(),
            asset,
            from,
            to,
            value,
            valid_after,
            valid_before,
            nonce,
            signature,
            domain,
            digest,
            signed_by_eoa,
            erc6492: wrapper,
        };
        if to != parse_address("paymentRequirements.payTo", terms.pay_to)? {
            return Err(reject(
                Reason::Recipient,
                "authorization.to differs from paymentRequirements.payTo",
            ));
        }
        if let Some(now) = now {
            if valid_before < U256::from(now.saturating_add(VALID_BEFORE_SLACK)) {
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

    /// Proves the transfer would go through if it were sent now — settlement's last check
    /// before it broadcasts; on failure, diagnoses why.
    ///
    /// A valid ERC-6492 payment whose wallet is not deployed yet is checked counterfactually
    /// (so a bad inner signature, nonce or balance is still named), then refused with
    /// `UndeployedSmartWallet`: the token would ask a wallet that does not exist.
    ///
    /// # Errors
    /// A [`Rejection`] with the diagnosed reason, or `ChainUnavailable` when the chain cannot
    /// be asked.
    pub async fn simulate(&self, payment: &CheckedPayment) -> Result<(), Rejection> {
        self.prove(payment, Undeployed::Refuse).await
    }

    async fn prove(
        &self,
        payment: &CheckedPayment,
        undeployed: Undeployed,
    ) -> Result<(), Rejection> {
        let provider = self
            .provider(payment.chain.chain_id)
            .ok_or_else(|| reject(Reason::Network, "no RPC endpoint for this network"))?;
        if !payment.signed_by_eoa {
            // Only a contract wallet can vouch for a signature that is not its own: a deployed
            // one (ERC-1271), or one the signature says how to deploy (ERC-6492).
            let code = provider
                .get_code_at(payment.from)
                .await
                .map_err(|error| rpc_failure(&error, "cannot read the payer's code"))?;
            if code.is_empty() {
                return match &payment.erc6492 {
                    Some(wrapper) => {
                        self.prove_counterfactually(&provider, payment, wrapper)
                            .await?;
                        match undeployed {
                            Undeployed::Accept => Ok(()),
                            Undeployed::Refuse => Err(reject(
                                Reason::UndeployedSmartWallet,
                                "the payer's smart wallet is valid but not deployed yet \
                                 (ERC-6492); transferWithAuthorization needs it on chain: \
                                 deploy the wallet, then settle again",
                            )),
                        }
                    }
                    None if payment.signature.len() == 65 => Err(reject(
                        Reason::Signature,
                        "the signature was not made by authorization.from",
                    )),
                    None => Err(reject(
                        Reason::UndeployedSmartWallet,
                        "authorization.from has no code and the signature carries no \
                         ERC-6492 deployment",
                    )),
                };
            }
        }
        let token = IEip3009::new(payment.asset.address, &provider);
        let input = simulated_calldata(payment)?;
        let call = TransactionRequest::default()
            .with_from(self.caller)
            .with_to(payment.asset.address)
            .with_input(input);
        let Err(error) = provider.call(call).await else {
            return Ok(());
        };
        if unreachable(&error) {
            return Err(chain_unavailable(&error));
        }
        tracing::debug!(%error, "simulated transferWithAuthorization reverted");
        Err(self.diagnose(&token, payment, &error.to_string()).await)
    }

    /// The deployless `eth_call` of [`erc6492::Erc6492Check`]: deploys the wallet, asks it about
    /// the inner signature, runs the transfer.
    async fn prove_counterfactually(
        &self,
        provider: &DynProvider,
        payment: &CheckedPayment,
        wrapper: &Erc6492Signature,
    ) -> Result<(), Rejection> {
        let code = erc6492::check_code(
            payment.from,
            wrapper,
            payment.digest,
            payment.asset.address,
            simulated_calldata(payment)?,
        );
        let call = TransactionRequest::default()
            .with_from(self.caller)
            .with_deploy_code(code);
        let output = provider
            .call(call)
            .await
            .map_err(|error| rpc_failure(&error, "the ERC-6492 check could not run"))?;
        let outcome = erc6492::read_outcome(&output)
            .map_err(|message| reject(Reason::SimulationFailed, message))?;
        match outcome {
            CheckOutcome::Valid => Ok(()),
            CheckOutcome::FactoryFailed(data) => Err(reject(
                Reason::Signature,
                format!(
                    "the ERC-6492 factory call reverted ({data}); the signature cannot deploy the \
                     payer's wallet"
                ),
            )),
            CheckOutcome::NotDeployed => Err(reject(
                Reason::Signature,
                "the ERC-6492 factory call does not deploy a wallet at authorization.from",
            )),
            CheckOutcome::SignatureRejected => Err(reject(
                Reason::Signature,
                "the payer's wallet, once deployed, rejects the inner ERC-6492 signature",
            )),
            CheckOutcome::TransferFailed(data) => {
                let token = IEip3009::new(payment.asset.address, provider);
                Err(self.diagnose(&token, payment, &revert_text(&data)).await)
            }
        }
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
            Err(alloy::contract::Error::TransportError(error)) if unreachable(&error) => {
                return chain_unavailable(&error);
            }
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

    /// Verifies a payment: static checks, then the simulation. Never broadcasts. An ERC-6492
    /// payment from a wallet not deployed yet is valid when it would be valid once deployed.
    pub async fn verify(&self, request: &PaymentRequest, now: u64) -> VerifyResponse {
        let version = request.version();
        let payer = Some(terms(request).payload.authorization.from.clone());
        let outcome = match self.check(request, now) {
            Ok(payment) => self.prove(&payment, Undeployed::Accept).await,
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

/// The `transferWithAuthorization` call, as simulated.
fn simulated_calldata(payment: &CheckedPayment) -> Result<Bytes, Rejection> {
    transfer_calldata(payment).map_err(|_| {
        reject(
            Reason::Signature,
            "the signature is not a valid secp256k1 signature",
        )
    })
}

/// The `transferWithAuthorization` call settlement sends: the `(v, r, s)` overload for a
/// 65-byte signature, the `bytes` one otherwise (FiatToken ≥ 2.2).
pub(crate) fn transfer_calldata(
    payment: &CheckedPayment,
) -> Result<Bytes, alloy::primitives::SignatureError> {
    let p = payment;
    if p.signature.len() == 65 {
        let signature = Signature::try_from(p.signature.as_ref())?;
        return Ok(IEip3009::transferWithAuthorization_0Call {
            from: p.from,
            to: p.to,
            value: p.value,
            validAfter: p.valid_after,
            validBefore: p.valid_before,
            nonce: p.nonce,
            v: 27 + u8::from(signature.v()),
            r: signature.r().into(),
            s: signature.s().into(),
        }
        .abi_encode()
        .into());
    }
    Ok(IEip3009::transferWithAuthorization_1Call {
        from: p.from,
        to: p.to,
        value: p.value,
        validAfter: p.valid_after,
        validBefore: p.valid_before,
        nonce: p.nonce,
        signature: p.signature.clone(),
    }
    .abi_encode()
    .into())
}

/// Revert data as text: the `Error(string)` message when there is one, else the hex.
fn revert_text(data: &[u8]) -> String {
    <alloy::sol_types::Revert as alloy::sol_types::SolError>::abi_decode(data)
        .map(|revert| revert.reason)
        .unwrap_or_else(|_| format!("reverted with {}", Bytes::copy_from_slice(data)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use serde_json::json;

    use super::*;
    use crate::sample_payments::{NOW, authorization, digest, facilitator, request};

    #[test]
    fn an_eoa_signature_recovers_to_the_payer_and_high_s_is_refused() {
        let payer = PrivateKeySigner::random();
        let auth = authorization(payer.address());
        let signature = payer.sign_hash_sync(&digest(&auth)).unwrap();
        let checked = facilitator()
            .check(&request(&auth, &signature.as_bytes()), NOW)
            .unwrap();
        assert!(checked.signed_by_eoa);
        assert_eq!(checked.digest, digest(&auth));
        assert_eq!(checked.erc6492, None);

        let n = U256::from_be_slice(&alloy::hex!(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"
        ));
        let high_s = Signature::new(signature.r(), n - signature.s(), !signature.v());
        let rejection = facilitator()
            .check(&request(&auth, &high_s.as_bytes()), NOW)
            .unwrap_err();
        assert_eq!(rejection.reason, Reason::Signature);
        assert!(rejection.message.contains("high-s"));

        let stranger = PrivateKeySigner::random();
        let forged = stranger.sign_hash_sync(&digest(&auth)).unwrap();
        let checked = facilitator()
            .check(&request(&auth, &forged.as_bytes()), NOW)
            .unwrap();
        assert!(
            !checked.signed_by_eoa,
            "left to the chain: only a wallet could vouch"
        );
    }

    #[test]
    fn an_erc6492_signature_is_unwrapped_and_only_its_inner_signature_reaches_the_token() {
        let owner = PrivateKeySigner::random();
        let wallet = Address::repeat_byte(0x5a);
        let auth = authorization(wallet);
        let inner = Bytes::from(owner.sign_hash_sync(&digest(&auth)).unwrap().as_bytes());
        let factory = Address::repeat_byte(0xfa);
        let wrapped = erc6492::wrap(factory, Bytes::from(vec![1, 2, 3]), inner.clone());
        let checked = facilitator().check(&request(&auth, &wrapped), NOW).unwrap();
        assert_eq!(checked.signature, inner);
        assert!(!checked.signed_by_eoa);
        let wrapper = checked.erc6492.expect("wrapped");
        assert_eq!(
            (wrapper.factory, wrapper.factory_calldata.to_vec()),
            (factory, vec![1, 2, 3])
        );

        // An EOA whose wallet software wraps anyway is still an EOA.
        let payer = PrivateKeySigner::random();
        let auth = authorization(payer.address());
        let own = Bytes::from(payer.sign_hash_sync(&digest(&auth)).unwrap().as_bytes());
        let wrapped = erc6492::wrap(factory, Bytes::new(), own.clone());
        let checked = facilitator().check(&request(&auth, &wrapped), NOW).unwrap();
        assert!(checked.signed_by_eoa);
        assert_eq!(checked.signature, own);

        let mut garbage = vec![0xab; 40];
        garbage.extend_from_slice(erc6492::MAGIC.as_slice());
        let rejection = facilitator()
            .check(&request(&auth, &garbage), NOW)
            .unwrap_err();
        assert_eq!(rejection.reason, Reason::Signature);
        assert!(
            rejection.message.contains("ERC-6492"),
            "{}",
            rejection.message
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::hostile_input::{hostile_text, shaped_request};

        /// Where each field of a version-2 request sits, for replacing it with hostile text.
        const LEAVES: [&str; 16] = [
            "/paymentPayload/accepted/scheme",
            "/paymentRequirements/scheme",
            "/paymentPayload/accepted/network",
            "/paymentRequirements/network",
            "/paymentRequirements/asset",
            "/paymentRequirements/payTo",
            "/paymentRequirements/amount",
            "/paymentRequirements/extra/name",
            "/paymentRequirements/extra/version",
            "/paymentPayload/payload/signature",
            "/paymentPayload/payload/authorization/from",
            "/paymentPayload/payload/authorization/to",
            "/paymentPayload/payload/authorization/value",
            "/paymentPayload/payload/authorization/validAfter",
            "/paymentPayload/payload/authorization/validBefore",
            "/paymentPayload/payload/authorization/nonce",
        ];

        /// A correctly signed version-2 request, as JSON, and its payer.
        fn signed_body() -> (serde_json::Value, Address) {
            let payer = PrivateKeySigner::random();
            let auth = authorization(payer.address());
            let signature = payer.sign_hash_sync(&digest(&auth)).unwrap();
            let PaymentRequest::V2 {
                payload,
                requirements,
            } = request(&auth, &signature.as_bytes())
            else {
                unreachable!("built as version 2")
            };
            let body = json!({"x402Version": 2, "paymentPayload": payload,
                "paymentRequirements": requirements});
            (body, payer.address())
        }

        fn run_both_checks(request: &PaymentRequest, now: u64) {
            let facilitator = facilitator();
            let checked = facilitator.check(request, now);
            let terms = facilitator.check_terms(request);
            if let Ok(checked) = checked {
                // What passed with the window also passes without it, identically.
                let terms = terms.expect("check_terms is check without the window");
                assert_eq!(checked.terms_hash(), terms.terms_hash());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn hostile_requests_of_the_right_shape_never_panic_the_checks(
                value in shaped_request(),
                now in any::<u64>(),
            ) {
                if let Ok(request) = PaymentRequest::parse(&serde_json::to_vec(&value).unwrap()) {
                    run_both_checks(&request, now);
                }
            }

            #[test]
            fn a_signed_request_with_hostile_fields_is_refused_or_no_longer_the_payers(
                replaced in prop::collection::vec(
                    (prop::sample::select(LEAVES.to_vec()), hostile_text()),
                    1..4,
                ),
                now in prop_oneof![Just(NOW), any::<u64>()],
            ) {
                let (mut body, payer) = signed_body();
                let original = body.clone();
                for (pointer, text) in &replaced {
                    *body.pointer_mut(pointer).unwrap() = serde_json::Value::from(text.clone());
                }
                prop_assume!(body != original);
                let Ok(request) = PaymentRequest::parse(&serde_json::to_vec(&body).unwrap()) else {
                    return Ok(());
                };
                run_both_checks(&request, now);
                if let Ok(checked) = facilitator().check_terms(&request) {
                    let original = PaymentRequest::parse(&serde_json::to_vec(&original).unwrap())
                        .unwrap();
                    let original = facilitator().check_terms(&original).unwrap();
                    // Either the payer's signature no longer covers it, or it says exactly
                    // what the payer signed (an address in other letter case, a nonce in
                    // upper-case hex: the same terms).
                    prop_assert!(
                        !checked.signed_by_eoa
                            || (checked.from == payer && checked.digest == original.digest),
                        "{replaced:?}"
                    );
                }
            }

            #[test]
            fn a_signature_with_one_byte_changed_is_never_the_payers(
                position in 0usize..65,
                flip in 1u8..=255,
            ) {
                let payer = PrivateKeySigner::random();
                let auth = authorization(payer.address());
                let signature = payer.sign_hash_sync(&digest(&auth)).unwrap();
                let mut bytes = signature.as_bytes();
                bytes[position] ^= flip;
                match facilitator().check(&request(&auth, &bytes), NOW) {
                    Err(rejection) => prop_assert_eq!(rejection.reason, Reason::Signature),
                    Ok(checked) => {
                        // `v` has aliases (27 and 0 are the same parity): those are the same
                        // signature, anything else is no longer the payer's.
                        let same = Signature::try_from(&bytes[..])
                            .is_ok_and(|parsed| parsed == signature);
                        prop_assert_eq!(checked.signed_by_eoa, same, "byte {} ^ {}", position, flip);
                    }
                }
            }
        }
    }
}
