//! Settling EIP-3009 authorizations exactly once.
//!
//! 1. The request is checked (fields, signature, times, value) before anything is written.
//! 2. Calls for the same authorization are serialised in this process, and the journal row
//!    keyed by `(chain, token, payer, nonce)` is claimed; a row that exists already decides
//!    the answer (its result, its pending transaction) — nothing is broadcast twice.
//! 3. The owner re-verifies with a simulation, then signs `transferWithAuthorization` with a
//!    signer nonce from Coffer's journal (never below the node's count), journals the signed
//!    transaction, and only then broadcasts it.
//! 4. It waits for the receipt up to a bound. Past it, the answer is `settlement_pending` with
//!    the transaction hash — never a plain failure, which would make the client sign again and
//!    pay twice. [`Settler::reconcile`] resolves pending settlements later, rebroadcasting the
//!    journaled transaction if the node lost it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, Signature, TxHash};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use chrono::Utc;
use coffer_evm::contracts::IEip3009;
use coffer_evm::rpc::ChainRpc;
use coffer_store::{
    NewSettlement, SettlementKey, SettlementRow, SettlementStatus, SignedSettlement, Store,
    StoreError,
};

use crate::facilitator::{CheckedPayment, Facilitator};
use crate::wire::{PaymentRequest, SettleResponse};

/// The reason for a broadcast whose receipt has not arrived yet.
pub const SETTLEMENT_PENDING: &str = "settlement_pending";
/// The reason for a transaction that reverted or was refused by the node.
pub const TRANSACTION_FAILED: &str = "invalid_exact_evm_transaction_failed";
/// Gas limit of one `transferWithAuthorization` (USDC uses about 60–80k).
const GAS_LIMIT: u64 = 150_000;
/// A claimed row with no transaction after this long is taken over (its owner died).
const ABANDONED_AFTER_MS: i64 = 30_000;

/// Settlement limits.
#[derive(Debug, Clone, Copy)]
pub struct SettleOptions {
    /// How long `/settle` waits for the receipt before answering `settlement_pending`.
    pub receipt_timeout: Duration,
    /// The highest `maxFeePerGas` Coffer pays, in wei.
    pub max_fee_per_gas: u128,
}

impl Default for SettleOptions {
    fn default() -> Self {
        SettleOptions {
            receipt_timeout: Duration::from_secs(10),
            max_fee_per_gas: 500_000_000_000,
        }
    }
}

type Locks<K> = Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>;

fn lock_for<K: std::hash::Hash + Eq + Clone>(
    locks: &Locks<K>,
    key: &K,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks.entry(key.clone()).or_default().clone()
}

/// Settles payments.
pub struct Settler {
    facilitator: Facilitator,
    store: Arc<dyn Store>,
    rpcs: Arc<Vec<ChainRpc>>,
    signers: Vec<PrivateKeySigner>,
    options: SettleOptions,
    authorizations: Locks<SettlementKey>,
    signer_nonces: Locks<(u64, Address)>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signers: Vec<_> = self.signers.iter().map(PrivateKeySigner::address).collect();
        f.debug_struct("Settler")
            .field("signers", &signers)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn key_of(payment: &CheckedPayment) -> SettlementKey {
    SettlementKey {
        chain_id: payment.chain.chain_id,
        token: format!("{:#x}", payment.asset.address),
        payer: format!("{:#x}", payment.from),
        auth_nonce: format!("{:#x}", payment.nonce),
    }
}

impl Settler {
    /// A settler with `signers` (several allowed: each authorization always uses the same one).
    pub fn new(
        facilitator: Facilitator,
        store: Arc<dyn Store>,
        rpcs: Arc<Vec<ChainRpc>>,
        signers: Vec<PrivateKeySigner>,
        options: SettleOptions,
    ) -> Self {
        Settler {
            facilitator,
            store,
            rpcs,
            signers,
            options,
            authorizations: Mutex::default(),
            signer_nonces: Mutex::default(),
        }
    }

    /// The signers' addresses, for `/supported`.
    pub fn signer_addresses(&self) -> Vec<Address> {
        self.signers.iter().map(PrivateKeySigner::address).collect()
    }

    fn provider(&self, chain_id: u64) -> Option<DynProvider> {
        self.rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)
            .and_then(|rpc| rpc.endpoint(0).map(|(_, provider)| provider.clone()))
    }

    fn signer_for(&self, key: &SettlementKey) -> Option<&PrivateKeySigner> {
        if self.signers.is_empty() {
            return None;
        }
        let spread = key.auth_nonce.bytes().fold(0usize, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.signers.get(spread % self.signers.len())
    }

    /// Settles a payment, waiting for the receipt up to the configured bound; see the module
    /// docs.
    pub async fn settle(&self, request: &PaymentRequest, now: u64) -> SettleResponse {
        self.settle_with(request, now, self.options.receipt_timeout)
            .await
    }

    /// Settles a payment, waiting for the receipt up to `receipt_timeout` (zero: answer
    /// `settlement_pending` as soon as it is broadcast, unless it is already mined).
    pub async fn settle_with(
        &self,
        request: &PaymentRequest,
        now: u64,
        receipt_timeout: Duration,
    ) -> SettleResponse {
        let version = request.version();
        let reply = |success: bool,
                     reason: Option<&str>,
                     message: Option<String>,
                     transaction: &str| SettleResponse {
            success,
            error_reason: reason.map(str::to_owned),
            error_message: message,
            payer: Some(request.payer().to_owned()),
            transaction: transaction.to_owned(),
            network: request.network().to_owned(),
        };
        let payment = match self.facilitator.check(request, now) {
            Ok(payment) => payment,
            Err(rejection) => {
                return reply(
                    false,
                    Some(rejection.reason.as_str(version)),
                    Some(rejection.message),
                    "",
                );
            }
        };
        let key = key_of(&payment);
        let lock = lock_for(&self.authorizations, &key);
        let _serialised = lock.lock().await;
        match self
            .settle_once(request, &payment, &key, receipt_timeout)
            .await
        {
            Ok(Settled::Row(row)) => self.reply_for(&row, version, request),
            Ok(Settled::Rejected(rejection)) => reply(
                false,
                Some(rejection.reason.as_str(version)),
                Some(rejection.message),
                "",
            ),
            Err(error) => {
                tracing::error!(%error, "settlement failed unexpectedly");
                reply(false, Some("unexpected_settle_error"), Some(error), "")
            }
        }
    }

    fn reply_for(
        &self,
        row: &SettlementRow,
        _version: u8,
        request: &PaymentRequest,
    ) -> SettleResponse {
        let transaction = row.tx_hash.clone().unwrap_or_default();
        let (success, reason) = match row.status {
            SettlementStatus::Succeeded => (true, None),
            SettlementStatus::Failed => (
                false,
                Some(
                    row.error_reason
                        .clone()
                        .unwrap_or_else(|| TRANSACTION_FAILED.to_owned()),
                ),
            ),
            SettlementStatus::Broadcast | SettlementStatus::Pending => {
                (false, Some(SETTLEMENT_PENDING.to_owned()))
            }
        };
        SettleResponse {
            success,
            error_reason: reason,
            error_message: None,
            payer: Some(request.payer().to_owned()),
            transaction,
            network: request.network().to_owned(),
        }
    }

    async fn settle_once(
        &self,
        request: &PaymentRequest,
        payment: &CheckedPayment,
        key: &SettlementKey,
        receipt_timeout: Duration,
    ) -> Result<Settled, String> {
        // An existing row decides the answer: this authorization is (being) settled already.
        if let Some(row) = self
            .store
            .settlement(key)
            .await
            .map_err(|e| e.to_string())?
            && !(row.status == SettlementStatus::Pending
                && now_ms() - row.updated_at_ms > ABANDONED_AFTER_MS)
        {
            return self
                .existing(row, receipt_timeout)
                .await
                .map(|row| Settled::Row(Box::new(row)));
        }
        // Prove it on chain before writing anything, so a forged request for someone else's
        // authorization can never claim (and block) its journal row.
        if let Err(rejection) = self.facilitator.simulate(payment).await {
            return Ok(Settled::Rejected(rejection));
        }
        let new = NewSettlement {
            key: key.clone(),
            pay_to: format!("{:#x}", payment.to),
            value: payment.value.to_string(),
            network: request.network().to_owned(),
            now_ms: now_ms(),
        };
        let (row, fresh) = self
            .store
            .claim_settlement(&new)
            .await
            .map_err(|e| e.to_string())?;
        let abandoned = row.status == SettlementStatus::Pending
            && now_ms() - row.updated_at_ms > ABANDONED_AFTER_MS;
        if !fresh && !abandoned {
            return self
                .existing(row, receipt_timeout)
                .await
                .map(|row| Settled::Row(Box::new(row)));
        }
        match self.sign_journal_broadcast(&row, payment, key).await {
            Ok(()) => {}
            Err(Refused(message)) => {
                // Another process may have taken over the same claim and broadcast: then its
                // transaction is the answer, and this row must not be marked failed.
                let current = self
                    .store
                    .settlement(key)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(current) =
                    current.filter(|current| current.status != SettlementStatus::Pending)
                {
                    return self
                        .existing(current, receipt_timeout)
                        .await
                        .map(|row| Settled::Row(Box::new(row)));
                }
                tracing::warn!(%message, "the settlement transaction was not broadcast");
                return self
                    .finish(row, SettlementStatus::Failed, Some(TRANSACTION_FAILED))
                    .await
                    .map(|row| Settled::Row(Box::new(row)));
            }
        }
        let row = self
            .store
            .settlement(key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("journal row vanished")?;
        self.await_receipt(row, receipt_timeout)
            .await
            .map(|row| Settled::Row(Box::new(row)))
    }

    async fn existing(
        &self,
        row: SettlementRow,
        receipt_timeout: Duration,
    ) -> Result<SettlementRow, String> {
        match row.status {
            SettlementStatus::Broadcast => self.await_receipt(row, receipt_timeout).await,
            _ => Ok(row),
        }
    }

    /// Signs with the next signer nonce, journals, and broadcasts, all under the signer's lock
    /// so that a refused transaction's nonce is reused by the next one and never leaves a gap.
    async fn sign_journal_broadcast(
        &self,
        row: &SettlementRow,
        payment: &CheckedPayment,
        key: &SettlementKey,
    ) -> Result<(), Refused> {
        let signer = self
            .signer_for(key)
            .ok_or_else(|| Refused("no settlement signer is configured".to_owned()))?;
        let provider = self
            .provider(payment.chain.chain_id)
            .ok_or_else(|| Refused("no RPC endpoint".to_owned()))?;
        let input = if payment.signature.len() == 65 {
            let signature = Signature::try_from(payment.signature.as_ref())
                .map_err(|e| Refused(e.to_string()))?;
            IEip3009::transferWithAuthorization_0Call {
                from: payment.from,
                to: payment.to,
                value: payment.value,
                validAfter: payment.valid_after,
                validBefore: payment.valid_before,
                nonce: payment.nonce,
                v: 27 + u8::from(signature.v()),
                r: B256::from(signature.r()),
                s: B256::from(signature.s()),
            }
            .abi_encode()
        } else {
            IEip3009::transferWithAuthorization_1Call {
                from: payment.from,
                to: payment.to,
                value: payment.value,
                validAfter: payment.valid_after,
                validBefore: payment.valid_before,
                nonce: payment.nonce,
                signature: payment.signature.clone(),
            }
            .abi_encode()
        };
        let fees = provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| Refused(format!("fee estimate: {e}")))?;
        if fees.max_fee_per_gas > self.options.max_fee_per_gas {
            return Err(Refused(format!(
                "gas price {} above the cap {}",
                fees.max_fee_per_gas, self.options.max_fee_per_gas
            )));
        }
        let signer_address = signer.address();
        let nonce_lock = lock_for(
            &self.signer_nonces,
            &(payment.chain.chain_id, signer_address),
        );
        let _nonce_guard = nonce_lock.lock().await;
        let on_chain = provider
            .get_transaction_count(signer_address)
            .pending()
            .await
            .map_err(|e| Refused(format!("nonce: {e}")))?;
        let journaled = self
            .store
            .next_signer_nonce(payment.chain.chain_id, &format!("{signer_address:#x}"))
            .await
            .map_err(|e| Refused(e.to_string()))?
            .unwrap_or(0);
        let nonce = on_chain.max(journaled);
        let request = TransactionRequest::default()
            .with_from(signer_address)
            .with_to(payment.asset.address)
            .with_input(input)
            .with_nonce(nonce)
            .with_chain_id(payment.chain.chain_id)
            .with_gas_limit(GAS_LIMIT)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = request
            .build(&EthereumWallet::from(signer.clone()))
            .await
            .map_err(|e| Refused(format!("signing: {e}")))?;
        let signed = SignedSettlement {
            signer: format!("{signer_address:#x}"),
            signer_nonce: nonce,
            tx_hash: format!("{:#x}", envelope.tx_hash()),
            raw_tx: format!("0x{}", alloy::hex::encode(envelope.encoded_2718())),
        };
        self.store
            .record_signed(row.id, &signed, now_ms())
            .await
            .map_err(|e| Refused(e.to_string()))?;
        let raw = envelope.encoded_2718();
        match provider.send_raw_transaction(&raw).await {
            Ok(_) => Ok(()),
            // The node refused it: nothing was broadcast; failing the row frees the nonce.
            Err(error) if error.as_error_resp().is_some() => {
                Err(Refused(format!("node refused {}: {error}", signed.tx_hash)))
            }
            Err(error) => {
                // Unknown whether it arrived: it stays journaled as broadcast; reconciliation
                // rebroadcasts it if the node does not know it.
                tracing::warn!(%error, tx = %signed.tx_hash, "broadcast outcome unknown; will reconcile");
                Ok(())
            }
        }
    }

    async fn finish(
        &self,
        row: SettlementRow,
        status: SettlementStatus,
        reason: Option<&str>,
    ) -> Result<SettlementRow, String> {
        // Compare-and-set from the state this call saw: if another process moved the row
        // meanwhile, its outcome stands and is what we answer.
        self.store
            .finish_settlement(row.id, row.status, status, reason, now_ms())
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .settlement(&row.key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "journal row vanished".to_owned())
    }

    /// Waits for a broadcast settlement's receipt, up to the bound, and records the outcome.
    async fn await_receipt(
        &self,
        row: SettlementRow,
        receipt_timeout: Duration,
    ) -> Result<SettlementRow, String> {
        let deadline = tokio::time::Instant::now() + receipt_timeout;
        loop {
            if let Some(resolved) = self.check_receipt(&row).await? {
                return Ok(resolved);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Looks once for the receipt of a broadcast settlement; `Some` when it resolved.
    async fn check_receipt(&self, row: &SettlementRow) -> Result<Option<SettlementRow>, String> {
        let Some(hash) = row
            .tx_hash
            .as_deref()
            .and_then(|hash| hash.parse::<TxHash>().ok())
        else {
            return Ok(None);
        };
        let provider = self.provider(row.key.chain_id).ok_or("no RPC endpoint")?;
        match provider.get_transaction_receipt(hash).await {
            Ok(Some(receipt)) => {
                let (status, reason) = if receipt.status() {
                    (SettlementStatus::Succeeded, None)
                } else {
                    (SettlementStatus::Failed, Some(TRANSACTION_FAILED))
                };
                self.finish(row.clone(), status, reason).await.map(Some)
            }
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::warn!(%error, "receipt lookup failed");
                Ok(None)
            }
        }
    }

    /// The journaled settlement of a transaction, checked once against the chain if it is
    /// still pending.
    ///
    /// # Errors
    /// The store's error.
    pub async fn status_of(&self, tx_hash: &str) -> Result<Option<SettlementRow>, StoreError> {
        let Some(row) = self
            .store
            .settlement_by_tx_hash(&tx_hash.to_ascii_lowercase())
            .await?
        else {
            return Ok(None);
        };
        if row.status == SettlementStatus::Broadcast
            && let Ok(Some(resolved)) = self.check_receipt(&row).await
        {
            return Ok(Some(resolved));
        }
        Ok(Some(row))
    }

    /// Resolves broadcast settlements (after a timeout or a restart): records receipts that
    /// arrived and rebroadcasts journaled transactions the node no longer knows. Returns how
    /// many resolved.
    ///
    /// # Errors
    /// The store's error.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let mut resolved = 0;
        for row in self.store.open_settlements(100).await? {
            match self.check_receipt(&row).await {
                Ok(Some(_)) => resolved += 1,
                Ok(None) => self.rebroadcast_if_lost(&row).await,
                Err(error) => tracing::warn!(%error, "reconciling a settlement failed"),
            }
        }
        Ok(resolved)
    }

    async fn rebroadcast_if_lost(&self, row: &SettlementRow) {
        let (Some(provider), Some(hash), Some(raw)) = (
            self.provider(row.key.chain_id),
            row.tx_hash
                .as_deref()
                .and_then(|h| h.parse::<TxHash>().ok()),
            row.raw_tx.as_deref().and_then(|r| r.parse::<Bytes>().ok()),
        ) else {
            return;
        };
        if let Ok(None) = provider.get_transaction_by_hash(hash).await {
            tracing::info!(tx = %hash, "rebroadcasting a journaled settlement the node lost");
            let _ = provider.send_raw_transaction(&raw).await;
        }
    }
}

/// How a settlement ended for this call.
enum Settled {
    /// The journal row (succeeded, failed, or still pending).
    Row(Box<SettlementRow>),
    /// The payment was invalid; nothing was written or sent.
    Rejected(crate::facilitator::Rejection),
}

/// Signing was refused before anything was broadcast.
struct Refused(String);
