//! Settling EIP-3009 authorizations exactly once.
//!
//! 1. The request is checked (fields, signature, times, value) before anything is written.
//! 2. Calls for the same authorization are serialised in this process, and the journal row
//!    keyed by `(chain, token, payer, nonce)` is claimed; a row that exists already decides
//!    the answer (its result, its pending transaction) — nothing is broadcast twice.
//! 3. The owner re-verifies with a simulation and hands the claim to its signer's batch queue.
//!    An idle signer sends at once; claims that arrive while it is sending (or within the
//!    optional [`SettleOptions::batch_window`]) share the next transaction, a Multicall3
//!    `aggregate3` (each call allowed to fail on its own). A lone claim, or a chain without
//!    Multicall3, gets a plain `transferWithAuthorization`. The transaction is signed
//!    with a signer nonce from Coffer's journal (never below the node's count) and journaled
//!    with every claim it carries before it is broadcast.
//! 4. One resolver per transaction polls for its receipt and records the outcome of every
//!    settlement it carries in one statement per outcome; each caller waits for that up to a
//!    bound. Past it, the answer is `settlement_pending` with the transaction hash — never a
//!    plain failure, which would make the client sign again and pay twice.
//!    [`Settler::reconcile`] resolves pending settlements later, rebroadcasting the journaled
//!    transaction if the node lost it and replacing it with higher fees (same signer nonce)
//!    when it is stuck past [`SettleOptions::bump_after`].
//!
//! Each settlement's outcome is read from the receipt's `AuthorizationUsed(payer, nonce)` log
//! of its token, so one failed call in a batch fails only its own settlement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, Bytes, TxHash};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use coffer_core::clock::Clock;
use coffer_evm::contracts::{IEip3009, IMulticall3, MULTICALL3};
use coffer_evm::rpc::ChainRpc;
use coffer_store::{
    NewSettlement, SettlementKey, SettlementRow, SettlementStatus, SignedSettlement, Store,
    StoreError,
};

use crate::facilitator::{CheckedPayment, Facilitator, Rejection, transfer_calldata};
use crate::reasons::Reason;
use crate::wire::{PaymentRequest, SettleResponse};

mod evidence;
mod outcome;

use evidence::{Elsewhere, authorization_used, used_elsewhere};
pub use outcome::{Failure, SettleError, SettleOutcome};

/// The reason for a broadcast whose receipt has not arrived yet.
pub const SETTLEMENT_PENDING: &str = "settlement_pending";
/// The reason for a transaction that reverted or was refused by the node.
pub const TRANSACTION_FAILED: &str = "invalid_exact_evm_transaction_failed";
/// The reason for a settlement that could not be attempted (the chain could not be asked, the
/// journal failed): nothing was sent, and settling again later may succeed.
pub const UNEXPECTED_SETTLE_ERROR: &str = "unexpected_settle_error";
/// Gas limit of one `transferWithAuthorization` (USDC uses about 60–80k).
const GAS_LIMIT: u64 = 150_000;
/// Gas limit added per authorization carried by a Multicall3 batch.
const GAS_PER_BATCHED_CALL: u64 = 120_000;
/// How long a found receipt is reused for the other settlements of its transaction.
const RECEIPT_CACHE_TTL: Duration = Duration::from_secs(10);
/// A replacement raises both fee fields by at least this many percent (nodes demand 10).
const FEE_BUMP_PERCENT: u128 = 25;

/// Settlement limits.
#[derive(Debug, Clone, Copy)]
pub struct SettleOptions {
    /// How long `/settle` waits for the receipt before answering `settlement_pending`.
    pub receipt_timeout: Duration,
    /// The highest `maxFeePerGas` Coffer pays, in wei.
    pub max_fee_per_gas: u128,
    /// How long an idle signer waits for more claims before it sends the first one. Zero
    /// still batches under load: claims that arrive while a transaction is being sent share
    /// the next one.
    pub batch_window: Duration,
    /// The most authorizations one transaction carries (1: no batching).
    pub max_batch: usize,
    /// A broadcast transaction still without a receipt after this long is replaced by one with
    /// higher fees at the same signer nonce.
    pub bump_after: Duration,
    /// A claim still unsigned this long after it was made is taken over by the next settle of
    /// its authorization (its process died). Safe at any value: the journal lets one
    /// transaction only be signed for a claim.
    pub abandoned_after: Duration,
}

impl Default for SettleOptions {
    fn default() -> Self {
        SettleOptions {
            receipt_timeout: Duration::from_secs(10),
            max_fee_per_gas: 500_000_000_000,
            batch_window: Duration::ZERO,
            max_batch: 100,
            bump_after: Duration::from_secs(30),
            abandoned_after: Duration::from_secs(30),
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
    sender: Sender,
    queues: Arc<BatchQueues>,
}

/// Gas a payee's settlements cost Coffer's signers, since this process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GasSpent {
    /// Gas units.
    pub gas: u64,
    /// What that gas cost, in the chain's smallest native unit (wei).
    pub wei: u128,
    /// Settlements resolved (succeeded or failed).
    pub settlements: u64,
}

/// The most payees [`GasLedger`] tells apart; the rest are counted under the zero address.
const GAS_LEDGER_PAYEES: usize = 10_000;

/// Gas spent per `(chain, payee)`: each resolved settlement's share of its transaction (a
/// batch's cost split evenly among the settlements it carried), counted once, by whichever
/// path recorded the outcome.
#[derive(Debug, Default)]
struct GasLedger {
    spent: Mutex<HashMap<(u64, Address), GasSpent>>,
}

impl GasLedger {
    fn add(&self, chain_id: u64, payee: Address, receipt: &TransactionReceipt, share_of: u64) {
        let share_of = share_of.max(1);
        let gas = receipt.gas_used / share_of;
        let wei = u128::from(receipt.gas_used).saturating_mul(receipt.effective_gas_price)
            / u128::from(share_of);
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if spent.len() < GAS_LEDGER_PAYEES || spent.contains_key(&(chain_id, payee)) {
            (chain_id, payee)
        } else {
            (chain_id, Address::ZERO)
        };
        let entry = spent.entry(key).or_default();
        entry.gas = entry.gas.saturating_add(gas);
        entry.wei = entry.wei.saturating_add(wei);
        entry.settlements += 1;
    }
}

/// Claims waiting to be sent, per `(chain, signer)`.
type BatchQueues = Mutex<HashMap<(u64, Address), BatchQueue>>;

/// Ends a flush that stopped abnormally (a panic): the signer's queue is no longer marked as
/// being sent, and the claims still waiting are dropped, so their callers get an answer
/// (their rows are still `pending`, and they fail them) instead of waiting forever.
struct FlushGuard {
    queues: Arc<BatchQueues>,
    key: (u64, Address),
    finished: bool,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queues.get_mut(&self.key) {
            queue.flushing = false;
            queue.claims.clear();
        }
    }
}

/// One signer's claims waiting to be sent, and whether a task is sending them.
#[derive(Default)]
struct BatchQueue {
    claims: Vec<Queued>,
    flushing: bool,
}

/// Signs, journals and broadcasts settlement transactions; shared with the batch flushers.
#[derive(Clone)]
struct Sender {
    store: Arc<dyn Store>,
    options: SettleOptions,
    /// The time journaled rows are stamped with and judged by (abandoned claims, fee bumps).
    clock: Clock,
    signer_nonces: Arc<Locks<(u64, Address)>>,
    /// Whether each chain has Multicall3, once looked up.
    multicall: Arc<Mutex<HashMap<u64, bool>>>,
    receipts: Arc<Receipts>,
    gas: Arc<GasLedger>,
}

/// Receipts found lately: every settlement of a batch reads the same one, fetched once.
#[derive(Default)]
struct Receipts {
    found: Mutex<HashMap<TxHash, (Arc<TransactionReceipt>, std::time::Instant)>>,
    fetches: Locks<TxHash>,
}

impl Receipts {
    fn cached(&self, hash: TxHash) -> Option<Arc<TransactionReceipt>> {
        self.found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < RECEIPT_CACHE_TTL)
            .map(|(receipt, _)| receipt.clone())
    }

    /// A transaction's receipt, fetched once for all the settlements it carries: concurrent
    /// lookups of one hash wait for the first, and a found receipt is kept for
    /// [`RECEIPT_CACHE_TTL`].
    async fn get(
        &self,
        provider: &DynProvider,
        hash: TxHash,
    ) -> Result<Option<Arc<TransactionReceipt>>, alloy::transports::TransportError> {
        if let Some(receipt) = self.cached(hash) {
            return Ok(Some(receipt));
        }
        let lock = lock_for(&self.fetches, &hash);
        let _single_flight = lock.lock().await;
        if let Some(receipt) = self.cached(hash) {
            return Ok(Some(receipt));
        }
        let Some(receipt) = provider.get_transaction_receipt(hash).await? else {
            return Ok(None);
        };
        let receipt = Arc::new(receipt);
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        found.retain(|_, (_, at)| at.elapsed() < RECEIPT_CACHE_TTL);
        found.insert(hash, (receipt.clone(), std::time::Instant::now()));
        Ok(Some(receipt))
    }
}

/// What the mined transaction of a batch did to its settlements, recorded in one statement per
/// outcome by the batch's resolver. A row in neither set was moved by another process first.
#[derive(Debug, Default)]
struct Resolved {
    succeeded: Vec<i64>,
    failed: Vec<i64>,
    at_ms: i64,
}

/// A claim's transaction, journaled and handed to the node, and where its outcome will appear
/// (`None` until the receipt is recorded; closed if the resolver gave up waiting).
struct Broadcast {
    signed: SignedSettlement,
    resolution: tokio::sync::watch::Receiver<Option<Arc<Resolved>>>,
}

/// A claimed settlement waiting in its signer's batch queue.
struct Queued {
    row_id: i64,
    payment: CheckedPayment,
    done: tokio::sync::oneshot::Sender<Result<Broadcast, Refused>>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signers: Vec<_> = self.signers.iter().map(PrivateKeySigner::address).collect();
        f.debug_struct("Settler")
            .field("signers", &signers)
            .finish_non_exhaustive()
    }
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
            sender: Sender {
                store: store.clone(),
                options,
                clock: Clock::system(),
                signer_nonces: Arc::default(),
                multicall: Arc::default(),
                receipts: Arc::default(),
                gas: Arc::default(),
            },
            store,
            rpcs,
            signers,
            options,
            authorizations: Mutex::default(),
            queues: Arc::default(),
        }
    }

    /// Judges claims, stamps the journal and times fee bumps by `clock` (a manual one in
    /// tests) instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.sender.clock = clock;
        self
    }

    /// Whether a claimed row has no transaction long after its claim: its owner died, and
    /// the claim is taken over.
    fn abandoned(&self, row: &SettlementRow) -> bool {
        let after = i64::try_from(self.options.abandoned_after.as_millis()).unwrap_or(i64::MAX);
        row.status == SettlementStatus::Pending
            && self.sender.clock.now_ms() - row.updated_at_ms >= after
    }

    /// Gas spent per `(chain, payee)` since this process started.
    pub fn gas_spent(&self) -> Vec<(u64, Address, GasSpent)> {
        self.sender
            .gas
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(&(chain_id, payee), &spent)| (chain_id, payee, spent))
            .collect()
    }

    /// The signers' addresses, for `/supported`.
    pub fn signer_addresses(&self) -> Vec<Address> {
        self.signers.iter().map(PrivateKeySigner::address).collect()
    }

    fn provider(&self, chain_id: u64) -> Option<DynProvider> {
        self.rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)
            .and_then(|rpc| rpc.provider().cloned())
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
        self.settle_for(request, now, receipt_timeout, None).await
    }

    /// Settles a payment made for `order_id` (journaled with it, so that whoever records the
    /// sale records it into that order), waiting for the receipt up to `receipt_timeout`.
    pub async fn settle_for(
        &self,
        request: &PaymentRequest,
        now: u64,
        receipt_timeout: Duration,
        order_id: Option<&str>,
    ) -> SettleResponse {
        self.settle_outcome(request, now, receipt_timeout, Purpose::Order(order_id))
            .await
            .response(request)
    }

    /// Settles a payment that must be settled by this very call: an authorization already in
    /// the journal — settled, in flight, or claimed by any other caller — is refused
    /// (`NonceUsed`) instead of answered from the journal. For a seller that delivers on the
    /// strength of the answer (the paywall): one payment must never be answered "success"
    /// twice, to two different purchases.
    pub async fn settle_exclusive(
        &self,
        request: &PaymentRequest,
        now: u64,
        receipt_timeout: Duration,
    ) -> SettleResponse {
        self.settle_outcome(request, now, receipt_timeout, Purpose::Exclusive)
            .await
            .response(request)
    }

    /// Settles a payment for `purpose`, waiting for the receipt up to `receipt_timeout`, and
    /// tells how it ended; [`SettleOutcome::response`] is the `/settle` reply. The methods
    /// above answer that reply directly.
    pub async fn settle_outcome(
        &self,
        request: &PaymentRequest,
        now: u64,
        receipt_timeout: Duration,
        purpose: Purpose<'_>,
    ) -> SettleOutcome {
        let payment = match self.facilitator.check(request, now) {
            Ok(payment) => payment,
            Err(rejection) => return SettleOutcome::Rejected(rejection),
        };
        let key = key_of(&payment);
        let lock = lock_for(&self.authorizations, &key);
        let _serialised = lock.lock().await;
        match self
            .settle_once(request, &payment, &key, receipt_timeout, purpose)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(error = %error.redacted(), "settlement failed unexpectedly");
                SettleOutcome::Failed(Failure::Error(error))
            }
        }
    }

    async fn settle_once(
        &self,
        request: &PaymentRequest,
        payment: &CheckedPayment,
        key: &SettlementKey,
        receipt_timeout: Duration,
        purpose: Purpose<'_>,
    ) -> Result<SettleOutcome, SettleError> {
        let order_id = match purpose {
            Purpose::Order(order_id) => order_id,
            Purpose::Exclusive => None,
        };
        // An existing row decides the answer — this authorization is (being) settled already —
        // but only for a request that presents the same signed terms, and never for one that
        // must settle it itself.
        if let Some(row) = self.store.settlement(key).await? {
            if let Err(rejection) = same_terms(&row, payment) {
                return Ok(SettleOutcome::rejected(rejection));
            }
            if purpose == Purpose::Exclusive {
                return Ok(SettleOutcome::rejected(already_presented()));
            }
            if !self.abandoned(&row) {
                return self.existing(row, receipt_timeout).await;
            }
        }
        // Prove it on chain before writing anything, so a forged request for someone else's
        // authorization can never claim (and block) its journal row.
        if let Err(rejection) = self.facilitator.simulate(payment).await {
            return Ok(SettleOutcome::rejected(rejection));
        }
        let new = NewSettlement {
            key: key.clone(),
            pay_to: format!("{:#x}", payment.to),
            value: payment.value.to_string(),
            network: request.network().to_owned(),
            terms_hash: payment.terms_hash(),
            order_id: order_id.map(str::to_owned),
            now_ms: self.sender.clock.now_ms(),
        };
        let (row, fresh) = self.store.claim_settlement(&new).await?;
        if let Err(rejection) = same_terms(&row, payment) {
            return Ok(SettleOutcome::rejected(rejection));
        }
        if !fresh && purpose == Purpose::Exclusive {
            return Ok(SettleOutcome::rejected(already_presented()));
        }
        if !fresh && !self.abandoned(&row) {
            return self.existing(row, receipt_timeout).await;
        }
        coffer_core::crash_point!("settle.after_claim");
        let Broadcast { signed, resolution } = match self.broadcast(&row, payment, key).await {
            Ok(broadcast) => broadcast,
            Err(refused) => {
                // Another process may have taken over the same claim and broadcast: then its
                // transaction is the answer.
                let current = self.store.settlement(key).await?;
                if let Some(current) =
                    current.filter(|current| current.status != SettlementStatus::Pending)
                {
                    return self.existing(current, receipt_timeout).await;
                }
                // Nothing went to the chain for this authorization, so nothing on chain says
                // the payment failed: release the claim, so that the payer's retry with the
                // same signature is settled, and say that trying again may succeed.
                self.store.release_settlement_claim(row.id).await?;
                tracing::warn!(error = %refused.redacted(), "nothing was broadcast; the claim is released");
                return Ok(SettleOutcome::Failed(Failure::ChainUnavailable {
                    message: format!(
                        "the settlement was not sent ({}); nothing moved, try again",
                        refused.redacted()
                    ),
                }));
            }
        };
        // The journal holds what was just written; no need to read it back.
        let row = SettlementRow {
            status: SettlementStatus::Broadcast,
            signer: Some(signed.signer),
            signer_nonce: Some(signed.signer_nonce),
            tx_hash: Some(signed.tx_hash),
            raw_tx: Some(signed.raw_tx),
            ..row
        };
        self.await_resolution(row, resolution, receipt_timeout)
            .await
            .map(SettleOutcome::from_row)
    }

    /// Waits, up to the bound, for the resolver of a just-broadcast transaction to record its
    /// outcome; if the resolver gave up first, looks for the receipt itself until the bound.
    async fn await_resolution(
        &self,
        row: SettlementRow,
        mut resolution: tokio::sync::watch::Receiver<Option<Arc<Resolved>>>,
        receipt_timeout: Duration,
    ) -> Result<SettlementRow, SettleError> {
        let started = tokio::time::Instant::now();
        // The watch guard is not `Send`: take the value out before anything else is awaited.
        let waited = match tokio::time::timeout(
            receipt_timeout,
            resolution.wait_for(std::option::Option::is_some),
        )
        .await
        {
            Ok(Ok(resolved)) => Ok(resolved.clone()),
            Ok(Err(closed)) => Err(Some(closed)),
            Err(_) => Err(None),
        };
        let resolved = match waited {
            Ok(resolved) => resolved,
            // The resolver gave up before the bound: keep looking for the rest of it.
            Err(Some(_)) => {
                let left = receipt_timeout.saturating_sub(started.elapsed());
                return self.await_receipt(row, left).await;
            }
            // The bound passed: one last look, then the answer is pending.
            Err(None) => return self.await_receipt(row, Duration::ZERO).await,
        };
        let Some(resolved) = resolved else {
            return Ok(row);
        };
        let outcome = if resolved.succeeded.contains(&row.id) {
            (SettlementStatus::Succeeded, None)
        } else if resolved.failed.contains(&row.id) {
            (
                SettlementStatus::Failed,
                Some(TRANSACTION_FAILED.to_owned()),
            )
        } else {
            // Another process recorded it first: its outcome stands.
            return self.reread(&row).await;
        };
        Ok(SettlementRow {
            status: outcome.0,
            error_reason: outcome.1,
            updated_at_ms: resolved.at_ms,
            ..row
        })
    }

    /// The answer of a row journaled already: its outcome, once a broadcast one's receipt was
    /// awaited up to the bound.
    async fn existing(
        &self,
        row: SettlementRow,
        receipt_timeout: Duration,
    ) -> Result<SettleOutcome, SettleError> {
        let deadline = tokio::time::Instant::now() + receipt_timeout;
        // Claimed by another call (perhaps another process) that has not signed yet: wait for
        // its transaction rather than answer without one.
        let row = match row.status {
            SettlementStatus::Pending => match self.await_signing(row, deadline).await? {
                Some(row) => row,
                None => {
                    return Ok(SettleOutcome::Failed(Failure::ChainUnavailable {
                        message: "the settlement was not sent; nothing moved, try again".to_owned(),
                    }));
                }
            },
            _ => row,
        };
        let row = match row.status {
            SettlementStatus::Broadcast => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.await_receipt(row, left).await?
            }
            _ => row,
        };
        Ok(SettleOutcome::from_row(row))
    }

    /// Waits, until `deadline`, for a claim another call holds to be signed and journaled (or
    /// decided). `None` when its holder released it: nothing was sent.
    async fn await_signing(
        &self,
        row: SettlementRow,
        deadline: tokio::time::Instant,
    ) -> Result<Option<SettlementRow>, SettleError> {
        let mut pause = Duration::from_millis(5);
        let mut row = row;
        while row.status == SettlementStatus::Pending && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            match self.store.settlement(&row.key).await? {
                Some(now) => row = now,
                None => return Ok(None),
            }
        }
        Ok(Some(row))
    }

    /// A journal row as it is now.
    async fn reread(&self, row: &SettlementRow) -> Result<SettlementRow, SettleError> {
        self.store
            .settlement(&row.key)
            .await?
            .ok_or(SettleError::RowVanished)
    }

    /// Sends a claimed settlement: alone, or through its signer's batch queue when batching is
    /// on. Returns once its transaction is journaled and handed to the node.
    async fn broadcast(
        &self,
        row: &SettlementRow,
        payment: &CheckedPayment,
        key: &SettlementKey,
    ) -> Result<Broadcast, Refused> {
        let signer = self.signer_for(key).ok_or(SettleError::NoSigner)?.clone();
        let chain_id = payment.chain.chain_id;
        let provider = self
            .provider(chain_id)
            .ok_or(SettleError::NoRpcEndpoint { chain_id })?;
        let (done, outcome) = tokio::sync::oneshot::channel();
        let queued = Queued {
            row_id: row.id,
            payment: payment.clone(),
            done,
        };
        if self.options.max_batch <= 1 {
            self.sender
                .send_batch(&provider, &signer, chain_id, vec![queued])
                .await;
        } else {
            let key = (chain_id, signer.address());
            let start_flushing = {
                let mut queues = self
                    .queues
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let queue = queues.entry(key).or_default();
                queue.claims.push(queued);
                !std::mem::replace(&mut queue.flushing, true)
            };
            // An idle signer starts flushing at once (after the optional window); claims that
            // arrive while a transaction is being sent wait for it and go together in the next
            // one. The flush runs on its own task, so a caller that goes away never strands
            // the others.
            if start_flushing {
                let queues = self.queues.clone();
                let sender = self.sender.clone();
                let window = self.options.batch_window;
                tokio::spawn(async move {
                    let mut guard = FlushGuard {
                        queues: queues.clone(),
                        key,
                        finished: false,
                    };
                    if !window.is_zero() {
                        tokio::time::sleep(window).await;
                    }
                    loop {
                        let batch: Vec<Queued> = {
                            let mut queues = queues
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let queue = queues.entry(key).or_default();
                            if queue.claims.is_empty() {
                                queue.flushing = false;
                                guard.finished = true;
                                break;
                            }
                            let size = queue.claims.len().min(sender.options.max_batch);
                            queue.claims.drain(..size).collect()
                        };
                        sender.send_batch(&provider, &signer, chain_id, batch).await;
                    }
                });
            }
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(Arc::new(SettleError::BatchAbandoned)))
    }

    /// Records a settlement's outcome, compare-and-set from the state this call saw: if another
    /// process moved the row meanwhile, its outcome stands and is what we answer. Also tells
    /// whether this call moved the row. `mined_tx` names the transaction that was mined when
    /// it is not the row's latest (a fee bump's predecessor).
    async fn finish(
        &self,
        row: SettlementRow,
        status: SettlementStatus,
        reason: Option<&str>,
        mined_tx: Option<&str>,
    ) -> Result<(SettlementRow, bool), SettleError> {
        let now = self.sender.clock.now_ms();
        let moved = self
            .store
            .finish_settlement(row.id, row.status, status, reason, mined_tx, now)
            .await?;
        if moved && mined_tx.is_none() {
            return Ok((
                SettlementRow {
                    status,
                    error_reason: reason.map(str::to_owned),
                    updated_at_ms: now,
                    ..row
                },
                true,
            ));
        }
        Ok((self.reread(&row).await?, moved))
    }

    /// Waits for a broadcast settlement's receipt, up to the bound, and records the outcome.
    async fn await_receipt(
        &self,
        row: SettlementRow,
        receipt_timeout: Duration,
    ) -> Result<SettlementRow, SettleError> {
        let deadline = tokio::time::Instant::now() + receipt_timeout;
        // Look again soon at first (a fast chain mines within milliseconds), then every 100 ms.
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(resolved) = self.check_receipt(&row, false).await? {
                return Ok(resolved);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Looks once for the receipt of a broadcast settlement's transaction; `Some` when it
    /// resolved. With `earlier` it also looks at the transactions its fee bumps replaced.
    async fn check_receipt(
        &self,
        row: &SettlementRow,
        earlier: bool,
    ) -> Result<Option<SettlementRow>, SettleError> {
        let Some(current) = row.tx_hash.clone() else {
            return Ok(None);
        };
        let chain_id = row.key.chain_id;
        let provider = self
            .provider(chain_id)
            .ok_or(SettleError::NoRpcEndpoint { chain_id })?;
        let mut candidates = vec![current.clone()];
        if earlier && let (Some(signer), Some(nonce)) = (row.signer.as_deref(), row.signer_nonce) {
            let journaled = self
                .store
                .transactions_at_nonce(row.key.chain_id, signer, nonce)
                .await?;
            candidates.extend(
                journaled
                    .into_iter()
                    .map(|(hash, _)| hash)
                    .filter(|hash| *hash != current),
            );
        }
        for candidate in candidates {
            let Ok(hash) = candidate.parse::<TxHash>() else {
                continue;
            };
            match self.sender.receipts.get(&provider, hash).await {
                Ok(Some(receipt)) => {
                    let ours = (candidate != current).then(|| candidate.clone());
                    let (status, reason, mined) = if authorization_used(&receipt, &row.key) {
                        (SettlementStatus::Succeeded, None, ours)
                    } else {
                        // Ours did not use it; the chain says whether another transaction did.
                        match used_elsewhere(&provider, &row.key, receipt.block_number).await {
                            Ok(Elsewhere::Unused) => {
                                (SettlementStatus::Failed, Some(TRANSACTION_FAILED), ours)
                            }
                            Ok(Elsewhere::UsedBy(other)) => {
                                tracing::warn!(tx = %candidate, used_by = %other, "another transaction used the authorization: the payment went through there");
                                (SettlementStatus::Succeeded, None, Some(other))
                            }
                            Err(unknown) => {
                                tracing::warn!(tx = %candidate, %unknown, "a settlement's transaction did not use its authorization; looking again later");
                                return Ok(None);
                            }
                        }
                    };
                    let mined = mined.as_deref();
                    let (resolved, moved) = self.finish(row.clone(), status, reason, mined).await?;
                    if moved && let Ok(payee) = row.pay_to.parse::<Address>() {
                        // How many settlements the transaction carried: one per authorization
                        // it used (at least this one).
                        let carried = receipt
                            .inner
                            .logs()
                            .iter()
                            .filter(|log| {
                                log.topics().first()
                                    == Some(&IEip3009::AuthorizationUsed::SIGNATURE_HASH)
                            })
                            .count();
                        self.sender.gas.add(
                            row.key.chain_id,
                            payee,
                            &receipt,
                            u64::try_from(carried).unwrap_or(1),
                        );
                    }
                    return Ok(Some(resolved));
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "receipt lookup failed"),
            }
        }
        Ok(None)
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
            && let Ok(Some(resolved)) = self.check_receipt(&row, true).await
        {
            return Ok(Some(resolved));
        }
        Ok(Some(row))
    }

    /// Resolves broadcast settlements (after a timeout or a restart): records receipts that
    /// arrived (of the latest transaction or one it replaced), rebroadcasts journaled
    /// transactions the node no longer knows, and replaces ones stuck past
    /// [`SettleOptions::bump_after`] with higher fees. Returns how many resolved.
    ///
    /// # Errors
    /// The store's error.
    pub async fn reconcile(&self) -> Result<usize, StoreError> {
        let mut resolved = 0;
        let mut handled = std::collections::HashSet::new();
        for row in self.store.open_settlements(100).await? {
            match self.check_receipt(&row, true).await {
                Ok(Some(_)) => resolved += 1,
                Ok(None) => {
                    // A batch's rows share one transaction: act on it once per pass.
                    if let Some(hash) = row.tx_hash.clone()
                        && handled.insert(hash)
                    {
                        self.resend_if_lost_or_stuck(&row).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "reconciling a settlement failed"),
            }
        }
        self.fill_nonce_gaps().await?;
        Ok(resolved)
    }

    /// Looks again at settlements recorded `failed` in the last `window`: an EIP-3009
    /// authorization can be submitted by anyone while it is valid, so one whose own
    /// transaction failed may still pay. A settlement whose authorization the token now says
    /// is used is corrected to succeeded, with the transaction that used it (and is then
    /// recorded as a sale where it paid a merchant). Returns how many were corrected.
    ///
    /// # Errors
    /// The store's error.
    pub async fn recheck_failed(&self, window: Duration) -> Result<usize, StoreError> {
        let since =
            self.sender.clock.now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut corrected = 0;
        for row in self.store.failed_settlements_since(since, 100).await? {
            let Some(provider) = self.provider(row.key.chain_id) else {
                continue;
            };
            match used_elsewhere(&provider, &row.key, None).await {
                Ok(Elsewhere::Unused) => {}
                Ok(Elsewhere::UsedBy(other)) => {
                    let moved = self
                        .store
                        .finish_settlement(
                            row.id,
                            SettlementStatus::Failed,
                            SettlementStatus::Succeeded,
                            None,
                            Some(&other),
                            self.sender.clock.now_ms(),
                        )
                        .await?;
                    if moved {
                        tracing::warn!(failed_tx = ?row.tx_hash, used_by = %other, "a settlement recorded as failed was paid on chain: corrected to succeeded");
                        corrected += 1;
                    }
                }
                Err(unknown) => {
                    tracing::warn!(tx = ?row.tx_hash, %unknown, "rechecking a failed settlement");
                }
            }
        }
        Ok(corrected)
    }

    /// Sends again, for each signer on each chain, the journaled transaction at the nonce the
    /// node expects next, when the journal has gone past it and the node has forgotten it: a
    /// reorg that dropped a mined settlement leaves the node one nonce behind the journal, and
    /// every later transaction would wait behind the gap forever.
    async fn fill_nonce_gaps(&self) -> Result<(), StoreError> {
        for rpc in self.rpcs.iter() {
            let chain_id = rpc.chain_id();
            let Some(provider) = self.provider(chain_id) else {
                continue;
            };
            for signer in &self.signers {
                let address = signer.address();
                let journaled = format!("{address:#x}");
                let Some(journal_next) = self.store.next_signer_nonce(chain_id, &journaled).await?
                else {
                    continue;
                };
                let node_next = match provider.get_transaction_count(address).pending().await {
                    Ok(next) => next,
                    Err(error) => {
                        tracing::warn!(%error, chain_id, "reading a signer's nonce failed");
                        continue;
                    }
                };
                if node_next >= journal_next {
                    continue;
                }
                for (hash, raw) in self
                    .store
                    .transactions_at_nonce(chain_id, &journaled, node_next)
                    .await?
                {
                    let (Ok(parsed), Ok(raw)) = (hash.parse::<TxHash>(), raw.parse::<Bytes>())
                    else {
                        continue;
                    };
                    if !matches!(provider.get_transaction_by_hash(parsed).await, Ok(None)) {
                        continue;
                    }
                    tracing::warn!(
                        chain_id,
                        signer = %address,
                        nonce = node_next,
                        tx = %hash,
                        "the node lost a journaled settlement (a reorg?): sending it again"
                    );
                    if provider.send_raw_transaction(&raw).await.is_ok() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn resend_if_lost_or_stuck(&self, row: &SettlementRow) {
        let (Some(provider), Some(hash), Some(raw)) = (
            self.provider(row.key.chain_id),
            row.tx_hash
                .as_deref()
                .and_then(|h| h.parse::<TxHash>().ok()),
            row.raw_tx.as_deref().and_then(|r| r.parse::<Bytes>().ok()),
        ) else {
            return;
        };
        match provider.get_transaction_by_hash(hash).await {
            Ok(None) => {
                tracing::info!(tx = %hash, "rebroadcasting a journaled settlement the node lost");
                let _ = provider.send_raw_transaction(&raw).await;
            }
            Ok(Some(_)) => {
                let stuck_for = self.sender.clock.now_ms() - row.updated_at_ms;
                let bump_after =
                    i64::try_from(self.options.bump_after.as_millis()).unwrap_or(i64::MAX);
                if stuck_for >= bump_after
                    && let Err(error) = self.bump_fees(&provider, row, &raw).await
                {
                    tracing::warn!(tx = %hash, %error, "cannot replace a stuck settlement");
                }
            }
            Err(error) => tracing::warn!(tx = %hash, %error, "transaction lookup failed"),
        }
    }

    /// Replaces a stuck transaction with the same call at the same signer nonce and fees raised
    /// by [`FEE_BUMP_PERCENT`] (or to the current estimate, if higher), journaled before it is
    /// sent. Whichever of the two is mined settles the batch; the other can no longer be.
    async fn bump_fees(
        &self,
        provider: &DynProvider,
        row: &SettlementRow,
        raw: &Bytes,
    ) -> Result<(), SettleError> {
        let stuck = TxEnvelope::decode_2718(&mut raw.as_ref()).map_err(SettleError::Journaled)?;
        let signer_address = row
            .signer
            .as_deref()
            .and_then(|s| s.parse::<Address>().ok())
            .ok_or(SettleError::NoJournaledSigner)?;
        let signer = self
            .signers
            .iter()
            .find(|signer| signer.address() == signer_address)
            .ok_or(SettleError::SignerGone {
                signer: signer_address,
            })?;
        let raised = |fee: u128| fee + fee * FEE_BUMP_PERCENT / 100 + 1;
        let estimate = provider
            .estimate_eip1559_fees()
            .await
            .map_err(SettleError::FeeEstimate)?;
        let tip = raised(stuck.max_priority_fee_per_gas().unwrap_or_default())
            .max(estimate.max_priority_fee_per_gas);
        let max_fee = raised(stuck.max_fee_per_gas())
            .max(estimate.max_fee_per_gas)
            .max(tip);
        if max_fee > self.options.max_fee_per_gas {
            return Err(SettleError::ReplacementAboveCap {
                fee: max_fee,
                cap: self.options.max_fee_per_gas,
            });
        }
        let to = stuck.to().ok_or(SettleError::ContractCreation)?;
        let replacement = TransactionRequest::default()
            .with_from(signer_address)
            .with_to(to)
            .with_input(stuck.input().clone())
            .with_nonce(stuck.nonce())
            .with_chain_id(row.key.chain_id)
            .with_gas_limit(stuck.gas_limit())
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip)
            .build(&EthereumWallet::from(signer.clone()))
            .await
            .map_err(SettleError::Signing)?;
        let signed = SignedSettlement {
            chain_id: row.key.chain_id,
            signer: format!("{signer_address:#x}"),
            signer_nonce: stuck.nonce(),
            tx_hash: format!("{:#x}", replacement.tx_hash()),
            raw_tx: format!("0x{}", alloy::hex::encode(replacement.encoded_2718())),
        };
        let replaced = row.tx_hash.as_deref().unwrap_or_default();
        self.store
            .replace_transaction(replaced, &signed, self.sender.clock.now_ms())
            .await?;
        tracing::info!(replaced, tx = %signed.tx_hash, max_fee, "replaced a stuck settlement with higher fees");
        provider
            .send_raw_transaction(&replacement.encoded_2718())
            .await
            .map(|_| ())
            .map_err(SettleError::Broadcast)
    }
}

impl Sender {
    /// Signs one transaction for `claims` (a Multicall3 batch when there are several and the
    /// chain has Multicall3; else one plain transaction each), journals it with every claim,
    /// broadcasts it, and tells each claim's caller.
    async fn send_batch(
        &self,
        provider: &DynProvider,
        signer: &PrivateKeySigner,
        chain_id: u64,
        claims: Vec<Queued>,
    ) {
        if claims.len() > 1 && !self.has_multicall(provider, chain_id).await {
            for claim in claims {
                self.send(provider, signer, chain_id, vec![claim]).await;
            }
            return;
        }
        self.send(provider, signer, chain_id, claims).await;
    }

    async fn has_multicall(&self, provider: &DynProvider, chain_id: u64) -> bool {
        let known = self
            .multicall
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&chain_id)
            .copied();
        if let Some(known) = known {
            return known;
        }
        match provider.get_code_at(MULTICALL3).await {
            Ok(code) => {
                let present = !code.is_empty();
                if !present {
                    tracing::warn!(
                        chain_id,
                        "no Multicall3 on this chain: settlements are not batched"
                    );
                }
                self.multicall
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(chain_id, present);
                present
            }
            Err(_) => false,
        }
    }

    async fn send(
        &self,
        provider: &DynProvider,
        signer: &PrivateKeySigner,
        chain_id: u64,
        claims: Vec<Queued>,
    ) {
        let mut calls = Vec::with_capacity(claims.len());
        let mut accepted = Vec::with_capacity(claims.len());
        for claim in claims {
            match transfer_calldata(&claim.payment) {
                Ok(call) => {
                    calls.push(IMulticall3::Call3 {
                        target: claim.payment.asset.address,
                        allowFailure: true,
                        callData: call,
                    });
                    accepted.push(claim);
                }
                Err(error) => {
                    let _ = claim
                        .done
                        .send(Err(Arc::new(SettleError::Signature(error))));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let ids: Vec<i64> = accepted.iter().map(|claim| claim.row_id).collect();
        let outcome = self
            .sign_journal_broadcast(provider, signer, chain_id, &ids, calls)
            .await;
        if accepted.len() > 1 {
            tracing::debug!(
                chain_id,
                size = accepted.len(),
                ok = outcome.is_ok(),
                "settlement batch sent"
            );
        }
        let signed = match outcome {
            Ok(signed) => signed,
            Err(error) => {
                let refused = Arc::new(error);
                for claim in accepted {
                    let _ = claim.done.send(Err(refused.clone()));
                }
                return;
            }
        };
        let (resolved, resolution) = tokio::sync::watch::channel(None);
        let rows: Vec<(i64, SettlementKey, Address)> = accepted
            .iter()
            .map(|claim| (claim.row_id, key_of(&claim.payment), claim.payment.to))
            .collect();
        tokio::spawn(self.clone().resolve(
            provider.clone(),
            signed.tx_hash.clone(),
            rows,
            resolved,
        ));
        for claim in accepted {
            let _ = claim.done.send(Ok(Broadcast {
                signed: signed.clone(),
                resolution: resolution.clone(),
            }));
        }
    }

    /// Waits for a broadcast transaction's receipt (up to [`SettleOptions::receipt_timeout`])
    /// and records the outcome of every settlement it carries, one statement per outcome, then
    /// publishes it to their callers (even if they stopped waiting, so that rows do not linger
    /// as broadcast). Past the bound it gives up; the callers and the reconciler look for
    /// themselves.
    async fn resolve(
        self,
        provider: DynProvider,
        tx_hash: String,
        rows: Vec<(i64, SettlementKey, Address)>,
        resolved: tokio::sync::watch::Sender<Option<Arc<Resolved>>>,
    ) {
        let Ok(hash) = tx_hash.parse::<TxHash>() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + self.options.receipt_timeout;
        let mut pause = Duration::from_millis(10);
        let receipt = loop {
            tokio::time::sleep(pause).await;
            match self.receipts.get(&provider, hash).await {
                Ok(Some(receipt)) => break receipt,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, tx = %tx_hash, "receipt lookup failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        let (used, unused): (Vec<_>, Vec<_>) = rows
            .iter()
            .partition(|(_, key, _)| authorization_used(&receipt, key));
        // An authorization this transaction did not use failed only if the token says it is
        // unused; one that another transaction used paid there, and is recorded with it. Rows
        // the chain could not tell about stay broadcast for the reconciler.
        let mut failed = Vec::new();
        for row in unused {
            let (id, key, _) = row;
            match used_elsewhere(&provider, key, receipt.block_number).await {
                Ok(Elsewhere::Unused) => failed.push(row),
                Ok(Elsewhere::UsedBy(other)) => {
                    tracing::warn!(tx = %tx_hash, used_by = %other, "another transaction used the authorization: the payment went through there");
                    let moved = self
                        .store
                        .finish_settlement(
                            *id,
                            SettlementStatus::Broadcast,
                            SettlementStatus::Succeeded,
                            None,
                            Some(&other),
                            self.clock.now_ms(),
                        )
                        .await;
                    if let Err(error) = moved {
                        tracing::warn!(%error, tx = %tx_hash, "recording a settlement paid elsewhere failed");
                    }
                }
                Err(unknown) => {
                    tracing::warn!(tx = %tx_hash, %unknown, "a settlement's transaction did not use its authorization; looking again later");
                }
            }
        }
        let now = self.clock.now_ms();
        let mut outcome = Resolved {
            at_ms: now,
            ..Resolved::default()
        };
        for (ids, status, reason, moved) in [
            (
                used,
                SettlementStatus::Succeeded,
                None,
                &mut outcome.succeeded,
            ),
            (
                failed,
                SettlementStatus::Failed,
                Some(TRANSACTION_FAILED),
                &mut outcome.failed,
            ),
        ] {
            let ids: Vec<i64> = ids.into_iter().map(|(id, _, _)| *id).collect();
            match self
                .store
                .finish_broadcast_settlements(&ids, status, reason, now)
                .await
            {
                Ok(ids) => *moved = ids,
                // Left broadcast: the callers' own look, or the reconciler, records it.
                Err(error) => {
                    tracing::warn!(%error, tx = %tx_hash, "recording a batch's outcome failed");
                    return;
                }
            }
        }
        let carried = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        for (id, key, payee) in &rows {
            if outcome.succeeded.contains(id) || outcome.failed.contains(id) {
                self.gas.add(key.chain_id, *payee, &receipt, carried);
            }
        }
        let _ = resolved.send(Some(Arc::new(outcome)));
    }

    /// Signs with the next signer nonce, journals, and broadcasts, all under the signer's lock
    /// so that a refused transaction's nonce is reused by the next one and never leaves a gap.
    async fn sign_journal_broadcast(
        &self,
        provider: &DynProvider,
        signer: &PrivateKeySigner,
        chain_id: u64,
        ids: &[i64],
        mut calls: Vec<IMulticall3::Call3>,
    ) -> Result<SignedSettlement, SettleError> {
        let (to, input, gas_limit) = if calls.len() == 1 {
            let call = calls.remove(0);
            (call.target, call.callData, GAS_LIMIT)
        } else {
            let gas = GAS_LIMIT + GAS_PER_BATCHED_CALL * calls.len() as u64;
            let input = IMulticall3::aggregate3Call { calls }.abi_encode();
            (MULTICALL3, Bytes::from(input), gas)
        };
        let fees = provider
            .estimate_eip1559_fees()
            .await
            .map_err(SettleError::FeeEstimate)?;
        if fees.max_fee_per_gas > self.options.max_fee_per_gas {
            return Err(SettleError::FeeAboveCap {
                fee: fees.max_fee_per_gas,
                cap: self.options.max_fee_per_gas,
            });
        }
        let signer_address = signer.address();
        let nonce_lock = lock_for(&self.signer_nonces, &(chain_id, signer_address));
        let _nonce_guard = nonce_lock.lock().await;
        let on_chain = provider
            .get_transaction_count(signer_address)
            .pending()
            .await
            .map_err(SettleError::SignerNonce)?;
        let journaled = self
            .store
            .next_signer_nonce(chain_id, &format!("{signer_address:#x}"))
            .await?
            .unwrap_or(0);
        let nonce = on_chain.max(journaled);
        let envelope = TransactionRequest::default()
            .with_from(signer_address)
            .with_to(to)
            .with_input(input)
            .with_nonce(nonce)
            .with_chain_id(chain_id)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .build(&EthereumWallet::from(signer.clone()))
            .await
            .map_err(SettleError::Signing)?;
        let signed = SignedSettlement {
            chain_id,
            signer: format!("{signer_address:#x}"),
            signer_nonce: nonce,
            tx_hash: format!("{:#x}", envelope.tx_hash()),
            raw_tx: format!("0x{}", alloy::hex::encode(envelope.encoded_2718())),
        };
        self.store
            .record_signed(ids, &signed, self.clock.now_ms())
            .await?;
        coffer_core::crash_point!("settle.after_journal");
        let raw = envelope.encoded_2718();
        match provider.send_raw_transaction(&raw).await {
            Ok(_) => {
                coffer_core::crash_point!("settle.after_broadcast");
                Ok(signed)
            }
            // The node answered with an error. That is no evidence that nothing was sent (an
            // endpoint behind a retrying proxy answers "already known" for a transaction it
            // passed on): ask the node whether it holds the transaction before deciding.
            Err(error) if error.as_error_resp().is_some() => {
                match provider.get_transaction_by_hash(*envelope.tx_hash()).await {
                    Ok(Some(_)) => {
                        tracing::warn!(%error, tx = %signed.tx_hash, "the node refused a transaction it holds; following it");
                        Ok(signed)
                    }
                    // Not broadcast: forget the transaction (freeing its nonce for the next
                    // one) and release the claims it carried, so they can be presented again.
                    Ok(None) => {
                        self.store.void_transaction(&signed.tx_hash).await?;
                        Err(SettleError::NodeRefused {
                            tx_hash: signed.tx_hash,
                            source: error,
                        })
                    }
                    // Unknown: it stays journaled as broadcast; reconciliation rebroadcasts it
                    // if the node does not know it.
                    Err(lookup) => {
                        tracing::warn!(%error, %lookup, tx = %signed.tx_hash, "broadcast outcome unknown; will reconcile");
                        Ok(signed)
                    }
                }
            }
            Err(error) => {
                // Unknown whether it arrived: it stays journaled as broadcast; reconciliation
                // rebroadcasts it if the node does not know it.
                tracing::warn!(%error, tx = %signed.tx_hash, "broadcast outcome unknown; will reconcile");
                Ok(signed)
            }
        }
    }
}

/// Whether a request presents the terms its journal row was made with: the same authorization
/// with the same signature. Rows journaled before terms were kept are matched on payee and
/// value, and only for a signature that recovers to the payer (a contract wallet's signature
/// cannot be checked once its nonce is used).
///
/// # Errors
/// A `NonceUsed` rejection: the `(payer, nonce)` was settled with other terms.
pub fn same_terms(row: &SettlementRow, payment: &CheckedPayment) -> Result<(), Rejection> {
    let same = match &row.terms_hash {
        Some(hash) => *hash == payment.terms_hash(),
        None => {
            payment.signed_by_eoa
                && row
                    .pay_to
                    .eq_ignore_ascii_case(&format!("{:#x}", payment.to))
                && row.value == payment.value.to_string()
        }
    };
    if same {
        Ok(())
    } else {
        Err(Rejection {
            reason: Reason::NonceUsed,
            message: "this authorization's nonce was already used by a settlement with other \
                      terms (payee, value, validity or signature)"
                .to_owned(),
        })
    }
}

/// What a settlement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// Shared with any caller presenting the same authorization (the facilitator's
    /// idempotency), journaled with the order it pays, if any.
    Order(Option<&'a str>),
    /// This call's alone: an authorization already journaled is refused.
    Exclusive,
}

/// The refusal of an authorization that another request settled or is settling.
fn already_presented() -> Rejection {
    Rejection {
        reason: Reason::NonceUsed,
        message: "this authorization was already presented and pays once; sign a new one"
            .to_owned(),
    }
}

/// Why a claim's transaction was not broadcast, shared by every claim it was to carry.
type Refused = Arc<SettleError>;

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;
    use alloy::signers::local::PrivateKeySigner;
    use coffer_evm::contracts::TransferWithAuthorization;
    use coffer_store::testing::{Backend, TestDatabase};
    use serde_json::json;

    use super::*;
    use crate::sample_payments::{
        NOW, authorization, checked_payment, facilitator, signed_request,
    };

    /// The journal row a claim of `payment` writes.
    fn claim_of(payment: &CheckedPayment) -> NewSettlement {
        NewSettlement {
            key: key_of(payment),
            pay_to: format!("{:#x}", payment.to),
            value: payment.value.to_string(),
            network: "eip155:84532".to_owned(),
            terms_hash: payment.terms_hash(),
            order_id: None,
            now_ms: coffer_core::clock::now_ms(),
        }
    }

    /// A row journaled before terms were kept, for `payment`'s authorization.
    fn legacy_row(payment: &CheckedPayment) -> SettlementRow {
        let claim = claim_of(payment);
        SettlementRow {
            id: 1,
            key: claim.key,
            pay_to: claim.pay_to,
            value: claim.value,
            network: claim.network,
            terms_hash: None,
            order_id: None,
            status: SettlementStatus::Succeeded,
            signer: None,
            signer_nonce: None,
            tx_hash: None,
            raw_tx: None,
            error_reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn refused_as_nonce_used(result: Result<(), Rejection>) -> bool {
        result.is_err_and(|rejection| rejection.reason == Reason::NonceUsed)
    }

    #[test]
    fn the_same_terms_are_the_same_authorization_with_the_same_signature() {
        let (payment, _) = checked_payment();
        let row = SettlementRow {
            terms_hash: Some(payment.terms_hash()),
            ..legacy_row(&payment)
        };
        assert_eq!(same_terms(&row, &payment), Ok(()));

        let other = SettlementRow {
            terms_hash: Some(format!("0x{}", "0".repeat(64))),
            ..row
        };
        let rejection = same_terms(&other, &payment).unwrap_err();
        assert_eq!(rejection.reason, Reason::NonceUsed);
        assert!(
            rejection.message.contains("other terms"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn a_row_without_terms_matches_on_payee_and_value_only_for_an_eoa_signature() {
        let (payment, _) = checked_payment();
        let row = legacy_row(&payment);
        assert_eq!(same_terms(&row, &payment), Ok(()));
        let shouted = SettlementRow {
            pay_to: row.pay_to.to_ascii_uppercase().replace("0X", "0x"),
            ..row.clone()
        };
        assert_eq!(same_terms(&shouted, &payment), Ok(()));

        let other_value = SettlementRow {
            value: "9999".to_owned(),
            ..row.clone()
        };
        assert!(refused_as_nonce_used(same_terms(&other_value, &payment)));
        let other_payee = SettlementRow {
            pay_to: format!("{:#x}", Address::repeat_byte(1)),
            ..row.clone()
        };
        assert!(refused_as_nonce_used(same_terms(&other_payee, &payment)));
        let by_a_wallet = CheckedPayment {
            signed_by_eoa: false,
            ..payment
        };
        assert!(refused_as_nonce_used(same_terms(&row, &by_a_wallet)));
    }

    /// A settler over a fresh SQLite journal, with one signer and no RPC endpoint: what it
    /// answers here it answers from the checks and the journal alone.
    async fn settler() -> (Settler, TestDatabase) {
        let db = TestDatabase::new(Backend::Sqlite).await.unwrap();
        let settler = Settler::new(
            facilitator(),
            db.store.clone(),
            Arc::new(Vec::new()),
            vec![PrivateKeySigner::random()],
            SettleOptions::default(),
        );
        (settler, db)
    }

    /// Journals a fresh claim of `payment`.
    async fn journal_claim(store: &dyn Store, payment: &CheckedPayment) -> SettlementRow {
        let (row, fresh) = store.claim_settlement(&claim_of(payment)).await.unwrap();
        assert!(fresh);
        row
    }

    /// Journals `payment` as signed in transaction `tx_hash`.
    async fn journal_signed(store: &dyn Store, payment: &CheckedPayment, tx_hash: &str) -> i64 {
        let row = journal_claim(store, payment).await;
        let signed = SignedSettlement {
            chain_id: payment.chain.chain_id,
            signer: format!("{:#x}", Address::repeat_byte(9)),
            signer_nonce: 0,
            tx_hash: tx_hash.to_owned(),
            raw_tx: "0x00".to_owned(),
        };
        store
            .record_signed(&[row.id], &signed, coffer_core::clock::now_ms())
            .await
            .unwrap();
        row.id
    }

    /// Asserts that `reply` refuses the payment as a used nonce, saying `why`, with no
    /// transaction.
    fn assert_refused_as_used(reply: &SettleResponse, why: &str) {
        assert!(!reply.success);
        assert_eq!(
            reply.error_reason.as_deref(),
            Some(Reason::NonceUsed.as_str(2))
        );
        let message = reply.error_message.as_deref().unwrap_or_default();
        assert!(message.contains(why), "{reply:?}");
        assert_eq!(reply.transaction, "");
    }

    const TX: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

    #[tokio::test]
    async fn a_payment_the_checks_refuse_is_answered_with_their_reason_and_not_journaled() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        let late = NOW + 3_600;
        let outcome = settler
            .settle_outcome(&request, late, Duration::ZERO, Purpose::Order(None))
            .await;
        assert!(
            matches!(&outcome, SettleOutcome::Rejected(rejection) if rejection.reason == Reason::ValidBefore),
            "{outcome:?}"
        );
        let reply = settler.settle(&request, late).await;
        assert!(!reply.success);
        assert_eq!(
            reply.error_reason.as_deref(),
            Some(Reason::ValidBefore.as_str(2))
        );
        assert!(reply.error_message.is_some());
        assert_eq!(reply.payer.as_deref(), Some(request.payer()));
        assert_eq!(reply.transaction, "");
        assert_eq!(reply.network, "eip155:84532");
        assert_eq!(db.store.settlement(&key_of(&payment)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_settled_authorization_is_answered_from_the_journal_with_its_transaction() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        let id = journal_signed(db.store.as_ref(), &payment, TX).await;
        db.store
            .finish_broadcast_settlements(
                &[id],
                SettlementStatus::Succeeded,
                None,
                coffer_core::clock::now_ms(),
            )
            .await
            .unwrap();

        let outcome = settler
            .settle_outcome(&request, NOW, Duration::ZERO, Purpose::Order(None))
            .await;
        assert!(outcome.is_settled(), "{outcome:?}");
        let reply = settler
            .settle_for(&request, NOW, Duration::ZERO, None)
            .await;
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"success": true, "payer": request.payer(), "transaction": TX,
                "network": "eip155:84532"})
        );
    }

    #[tokio::test]
    async fn the_same_nonce_with_other_terms_is_refused_as_used() {
        let (settler, db) = settler().await;
        let payer = PrivateKeySigner::random();
        let auth = authorization(payer.address());
        let first = facilitator()
            .check(&signed_request(&payer, &auth), NOW)
            .unwrap();
        journal_signed(db.store.as_ref(), &first, TX).await;

        let longer = TransferWithAuthorization {
            validBefore: auth.validBefore + U256::from(1),
            ..auth.clone()
        };
        let reply = settler.settle(&signed_request(&payer, &longer), NOW).await;
        assert_refused_as_used(&reply, "other terms");
    }

    #[tokio::test]
    async fn an_exclusive_settle_of_a_journaled_authorization_is_refused() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        journal_claim(db.store.as_ref(), &payment).await;

        let reply = settler
            .settle_exclusive(&request, NOW, Duration::ZERO)
            .await;
        assert_refused_as_used(&reply, "already presented");
    }

    #[tokio::test]
    async fn a_claim_not_yet_broadcast_answers_pending_without_a_transaction() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        journal_claim(db.store.as_ref(), &payment).await;

        let outcome = settler
            .settle_outcome(&request, NOW, Duration::ZERO, Purpose::Order(None))
            .await;
        assert!(
            matches!(outcome, SettleOutcome::Pending { transaction: None }),
            "{outcome:?}"
        );
        // Waited for up to the bound, the holder never signs: still pending.
        let reply = settler
            .settle_outcome(
                &request,
                NOW,
                Duration::from_millis(50),
                Purpose::Order(None),
            )
            .await
            .response(&request);
        assert_eq!(
            (
                reply.success,
                reply.error_reason.as_deref(),
                reply.transaction.as_str()
            ),
            (false, Some(SETTLEMENT_PENDING), "")
        );
    }

    #[tokio::test]
    async fn a_claim_released_while_waited_for_answers_try_again() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        let claim = journal_claim(db.store.as_ref(), &payment).await;
        let store = db.store.clone();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(store.release_settlement_claim(claim.id).await.unwrap());
        });
        let outcome = settler
            .settle_outcome(&request, NOW, Duration::from_secs(5), Purpose::Order(None))
            .await;
        release.await.unwrap();
        let SettleOutcome::Failed(Failure::ChainUnavailable { message }) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(message.contains("try again"), "{message}");
    }

    #[tokio::test]
    async fn a_failed_settlement_answers_its_journaled_reason_and_transaction() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        let id = journal_signed(db.store.as_ref(), &payment, TX).await;
        db.store
            .finish_broadcast_settlements(
                &[id],
                SettlementStatus::Failed,
                Some(TRANSACTION_FAILED),
                coffer_core::clock::now_ms(),
            )
            .await
            .unwrap();

        let reply = settler.settle(&request, NOW).await;
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"success": false, "errorReason": TRANSACTION_FAILED,
                "payer": request.payer(), "transaction": TX, "network": "eip155:84532"})
        );
    }

    #[tokio::test]
    async fn a_broadcast_settlement_without_an_rpc_endpoint_is_an_unexpected_error() {
        let (settler, db) = settler().await;
        let (payment, request) = checked_payment();
        journal_signed(db.store.as_ref(), &payment, TX).await;

        let outcome = settler
            .settle_outcome(&request, NOW, Duration::ZERO, Purpose::Order(None))
            .await;
        let SettleOutcome::Failed(Failure::Error(error)) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(matches!(
            error,
            SettleError::NoRpcEndpoint { chain_id: 84_532 }
        ));
        assert!(!error.is_retryable());
        let reply = settler.settle(&request, NOW).await;
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"success": false, "errorReason": UNEXPECTED_SETTLE_ERROR,
                "errorMessage": "no RPC endpoint", "payer": request.payer(), "transaction": "",
                "network": "eip155:84532"})
        );
    }
}
