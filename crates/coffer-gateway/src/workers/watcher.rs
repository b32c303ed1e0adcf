//! The chain watcher: one per chain.
//!
//! Each step follows the chain from the stored cursor towards the head:
//!
//! 1. read the head, then refresh the in-memory set of watched deposit addresses (new orders
//!    since the last step, and ids skipped over lately, whose insert may commit late; now and
//!    then a fresh set is read alongside, a chunk per step, and replaces the old one, dropping
//!    orders closed or past their monitoring window) — in that order, so that an order paid
//!    in a block up to the head is always watched when the block is scanned;
//! 2. check that the next block's parent is the cursor's hash; if not, walk back through the
//!    stored block hashes to the common ancestor and commit a rewind: payments in dropped
//!    blocks are orphaned, each by name (a sale recorded beside the watcher meanwhile is left
//!    alone), x402 sales mined again are found in their new blocks, and the orders are
//!    re-evaluated (e.g. `processing` → `pending`);
//! 3. fetch `Transfer` logs of the chain's tokens for a block range in one call, and match
//!    recipients against the address set — the cost per block does not depend on how many
//!    orders are open; native-coin payments are found in the blocks' transactions when some
//!    order asks for the native coin;
//! 4. re-evaluate affected orders (new payments, orders waiting for confirmations) and commit
//!    payments, order updates, events, recent block hashes and the cursor in one transaction.
//!
//! A crash anywhere replays the range: payments are keyed by (chain, tx hash, log index), so a
//! replay never credits twice. An RPC failure moves the watcher to the healthiest other
//! endpoint (each step reads one endpoint, for a consistent view); the loop backs off. The
//! range grows while calls succeed and halves when a node refuses it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Block, Filter, TransactionReceipt};
use alloy::sol_types::SolEvent;
use coffer_core::{Amount, Chain, MerchantId, OrderStatus};
use coffer_evm::contracts::IERC20;
use coffer_evm::rpc::ChainRpc;
use coffer_store::{
    ChainBlock, ChainStep, MerchantRow, NewPayment, OrderRow, OrderUpdate, OrphanedPayment,
    PaymentRow, Store, StoreError,
};

use super::{Outcome, StepError, Worker};
use crate::Gateway;
use crate::orders::{PaymentOrders, Reevaluation, reevaluate};
use crate::sales::{AuthorizationUsed, FoundTransfer, authorized_transfer, transfers_to};

/// Block hashes kept for reorg detection.
const KEEP_BLOCKS: u64 = 256;
/// Largest range for one `eth_getLogs`.
const MAX_RANGE: u64 = 2_000;
/// Largest range when blocks must be fetched whole (native-coin orders).
const MAX_RANGE_WITH_BLOCKS: u64 = 50;
/// A fresh address set is started every this many steps.
const RELOAD_EVERY: u64 = 600;
/// Orders read per query when loading the address set. A fresh set is read one such chunk per
/// step, so that it never holds SQLite's one connection for more than a few milliseconds at a
/// time: reading 50,000 open orders at once stalled order creation for hundreds of them.
const LOAD_CHUNK: usize = 1_000;
/// How far below the head a watcher's first step starts when orders are open already.
const FIRST_RUN_LOOKBACK: u64 = KEEP_BLOCKS;
/// How long an order id skipped over is read again: longer than an insert takes to commit.
const GAP_PATIENCE: Duration = Duration::from_secs(30);
/// The most ids one jump records as gaps; a larger burst (thousands of sales at once) is
/// passed over.
const MAX_GAPS: i64 = 1_000;

/// A fresh address set being read, a chunk per step, to replace the current one.
#[derive(Debug, Default)]
struct Reload {
    after_id: i64,
    watched: HashMap<Address, Watched>,
}

impl Reload {
    /// The set that replaces `current` once every chunk is read: the fresh set, plus the
    /// orders newer than its last that were added to `current` meanwhile. Orders of `current`
    /// the fresh set no longer holds (closed, or past their monitoring window) are dropped.
    fn finish(self, current: HashMap<Address, Watched>) -> HashMap<Address, Watched> {
        let Reload {
            after_id,
            mut watched,
        } = self;
        watched.extend(current.into_iter().filter(|(_, entry)| entry.id > after_id));
        watched
    }
}

#[derive(Debug, Clone)]
struct Watched {
    /// The order's row id (the order of creation).
    id: i64,
    order_id: String,
    asset: Option<Address>,
    monitor_until_ms: i64,
}

/// Follows one chain.
pub struct Watcher {
    chain: Chain,
    rpc: ChainRpc,
    endpoint: usize,
    store: Arc<dyn Store>,
    orders: PaymentOrders,
    wake: Arc<tokio::sync::Notify>,
    tokens: Vec<Address>,
    watched: HashMap<Address, Watched>,
    reload: Option<Reload>,
    native_watchers: usize,
    last_order_id: i64,
    /// Order ids skipped over by the ids read so far, with when they were first missed: an
    /// insert that took a lower id may commit after a higher one (PostgreSQL sequences), so
    /// they are read again until [`GAP_PATIENCE`] has passed.
    gaps: std::collections::BTreeMap<i64, i64>,
    /// Whether the open orders were read once (gaps are looked for after that).
    loaded: bool,
    range: u64,
    steps: u64,
    /// Block headers a failed step already fetched (and whether with their transactions):
    /// the next step reuses those still in its range instead of asking for them again.
    fetched: (HashMap<u64, Block>, bool),
}

/// What [`Watcher::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepReport {
    /// Nothing new on chain.
    Idle,
    /// Blocks `from..=to` processed.
    Progressed {
        /// First block.
        from: u64,
        /// Last block.
        to: u64,
        /// Payments recorded.
        payments: usize,
        /// Orders whose state changed.
        updated: usize,
    },
    /// A reorg was found; the cursor moved back to the common ancestor.
    Reorged {
        /// The common ancestor.
        ancestor: u64,
        /// Orders whose state changed.
        updated: usize,
    },
}

/// What follows the cursor.
enum NextMove {
    /// The chain has nothing new.
    Idle,
    /// The chain no longer holds the cursor's block: rewind, walking back from block `from`.
    Rewind {
        /// Where the walk back starts.
        from: u64,
    },
    /// Scan on from the block after the cursor.
    Scan {
        /// That block, already fetched.
        first: Box<Block>,
    },
}

/// An open order's deposit address and what the watcher needs to know of it.
fn watched_entry(order: OrderRow) -> Option<(Address, Watched)> {
    let address = order.receiving_address.parse::<Address>().ok()?;
    let asset = order
        .asset_address
        .as_deref()
        .and_then(|text| text.parse::<Address>().ok());
    Some((
        address,
        Watched {
            id: order.id,
            order_id: order.order_id,
            asset,
            monitor_until_ms: order.monitor_until_ms,
        },
    ))
}

fn rpc_error(error: impl std::error::Error + Send + Sync + 'static) -> StepError {
    StepError::Rpc(Box::new(error))
}

fn hash_text(hash: B256) -> String {
    format!("{hash:#x}")
}

impl Watcher {
    /// A watcher for `chain_id`, if that chain has RPC endpoints.
    pub fn new(gateway: &Gateway, chain_id: u64) -> Option<Self> {
        let chain = gateway.chains.by_chain_id(chain_id)?.clone();
        let rpc = gateway
            .rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)?
            .clone();
        Some(Watcher {
            tokens: chain.assets.iter().map(|asset| asset.address).collect(),
            chain,
            rpc,
            endpoint: 0,
            store: gateway.store.clone(),
            orders: gateway.orders.clone(),
            wake: gateway.webhook_wakeup.clone(),
            watched: HashMap::new(),
            reload: None,
            native_watchers: 0,
            last_order_id: 0,
            gaps: std::collections::BTreeMap::new(),
            loaded: false,
            range: 50,
            fetched: (HashMap::new(), false),
            steps: 0,
        })
    }

    /// How many deposit addresses are watched.
    pub fn watched_addresses(&self) -> usize {
        self.watched.len()
    }

    fn provider(&self) -> Result<DynProvider, StepError> {
        self.rpc
            .endpoint(self.endpoint)
            .map(|(_, provider)| provider.clone())
            .ok_or_else(|| {
                StepError::Configuration(format!(
                    "{}: no RPC endpoint configured",
                    self.chain.key()
                ))
            })
    }

    fn fail_over(&mut self, error: &StepError) {
        if self.rpc.endpoint_count() > 1 {
            let from = self
                .rpc
                .endpoint(self.endpoint)
                .map(|(url, _)| url.to_owned())
                .unwrap_or_default();
            self.endpoint = self
                .rpc
                .healthiest_except(self.endpoint)
                .unwrap_or((self.endpoint + 1) % self.rpc.endpoint_count());
            let to = self
                .rpc
                .endpoint(self.endpoint)
                .map(|(url, _)| url.to_owned())
                .unwrap_or_default();
            tracing::warn!(chain = self.chain.key(), %from, %to, %error, "RPC failed; switching endpoint");
        }
    }

    /// One chunk of the open orders after `after_id`: their entries, the last id read, and
    /// whether it was the last chunk.
    async fn read_watched(
        &self,
        after_id: i64,
        now_ms: i64,
    ) -> Result<(Vec<(Address, Watched)>, i64, bool), StepError> {
        let batch = self
            .store
            .watched_orders(self.chain.chain_id, after_id, now_ms, LOAD_CHUNK as u64)
            .await?;
        let done = batch.len() < LOAD_CHUNK;
        let last_id = batch.last().map_or(after_id, |order| order.id);
        Ok((
            batch.into_iter().filter_map(watched_entry).collect(),
            last_id,
            done,
        ))
    }

    async fn refresh_watched(&mut self, now_ms: i64) -> Result<(), StepError> {
        // Ids skipped earlier whose insert may have committed since: read from the oldest
        // again (a few rows), and give up on those older than the patience.
        let patience = i64::try_from(GAP_PATIENCE.as_millis()).unwrap_or(i64::MAX);
        self.gaps
            .retain(|_, missed_at| now_ms - *missed_at <= patience);
        let start = match self.gaps.first_key_value() {
            Some((oldest, _)) => (*oldest - 1).min(self.last_order_id),
            None => self.last_order_id,
        };
        // New orders since the last step (at start: every open order).
        let mut after = start;
        loop {
            let batch = self
                .store
                .watched_orders(self.chain.chain_id, after, now_ms, LOAD_CHUNK as u64)
                .await?;
            let done = batch.len() < LOAD_CHUNK;
            for order in batch {
                self.gaps.remove(&order.id);
                if order.id > self.last_order_id {
                    // Ids between the last one read and this one are closed orders (a sale is
                    // written confirmed), rolled-back inserts, or inserts not committed yet.
                    // Only new orders count (not the first load), and not a burst.
                    let skipped = self.last_order_id + 1..order.id;
                    if self.loaded && skipped.end - skipped.start <= MAX_GAPS {
                        for missing in skipped {
                            self.gaps.entry(missing).or_insert(now_ms);
                        }
                    }
                    self.last_order_id = order.id;
                }
                after = order.id;
                let Some((address, watched)) = watched_entry(order) else {
                    continue;
                };
                let native = watched.asset.is_none();
                let replaced = self.watched.insert(address, watched);
                self.native_watchers += usize::from(native);
                if replaced.is_some_and(|old| old.asset.is_none()) {
                    self.native_watchers -= 1;
                }
            }
            if done {
                break;
            }
        }
        self.loaded = true;
        if self.steps > 0 && self.steps.is_multiple_of(RELOAD_EVERY) && self.reload.is_none() {
            self.reload = Some(Reload::default());
        }
        let Some(after_id) = self.reload.as_ref().map(|reload| reload.after_id) else {
            return Ok(());
        };
        let (entries, last_id, done) = self.read_watched(after_id, now_ms).await?;
        if let Some(reload) = self.reload.as_mut() {
            reload.after_id = last_id;
            reload.watched.extend(entries);
        }
        if done && let Some(reload) = self.reload.take() {
            self.watched = reload.finish(std::mem::take(&mut self.watched));
            self.native_watchers = self
                .watched
                .values()
                .filter(|entry| entry.asset.is_none())
                .count();
        }
        Ok(())
    }

    async fn header(provider: &DynProvider, number: u64, full: bool) -> Result<Block, StepError> {
        let request = provider.get_block_by_number(BlockNumberOrTag::Number(number));
        let block = if full {
            request.full().await
        } else {
            request.await
        };
        block
            .map_err(rpc_error)?
            .ok_or_else(|| StepError::Chain(format!("block {number} not found")))
    }

    /// One step; see the module docs.
    ///
    /// # Errors
    /// [`StepError`] on RPC or store failure (the step is then retried from the same cursor).
    #[tracing::instrument(skip_all, fields(chain_id = self.chain.chain_id))]
    pub async fn step(&mut self) -> Result<StepReport, StepError> {
        let result = self.step_inner().await;
        if let Err(error) = &result
            && error.to_string().starts_with("rpc")
        {
            self.fail_over(error);
        }
        result
    }

    async fn step_inner(&mut self) -> Result<StepReport, StepError> {
        let now_ms = crate::clock::now_ms();
        let provider = self.provider()?;
        // The head first, then the orders: an order paid in a block up to this head was
        // created before the block was mined, so it is among the orders read next. (Read the
        // other way round, an order created and paid between the two reads would be scanned
        // past without being watched.)
        let latest = Self::latest(&provider).await?;
        self.refresh_watched(now_ms).await?;
        self.steps += 1;
        let head = latest.header.number;
        self.rpc.note_head(head);
        let chain_id = self.chain.chain_id;
        let Some(cursor) = self.store.chain_cursor(chain_id).await? else {
            // First run on this chain: start at the head — or, when orders are open already
            // (created before this watcher's first step), [`FIRST_RUN_LOOKBACK`] blocks
            // below it, so that a payment made before the first step is scanned.
            let number = if self.watched.is_empty() {
                head
            } else {
                head.saturating_sub(FIRST_RUN_LOOKBACK)
            };
            let block = Self::header(&provider, number, false).await?;
            let start = ChainBlock {
                number,
                hash: hash_text(block.header.hash),
                parent_hash: hash_text(block.header.parent_hash),
            };
            self.store
                .commit_chain_step(&ChainStep {
                    chain_id,
                    rewind_to: None,
                    orphans: Vec::new(),
                    blocks: vec![start.clone()],
                    cursor: start,
                    payments: Vec::new(),
                    order_updates: Vec::new(),
                    keep_blocks: KEEP_BLOCKS,
                    now_ms,
                })
                .await?;
            return Ok(StepReport::Progressed {
                from: number,
                to: number,
                payments: 0,
                updated: 0,
            });
        };
        let first = match self.next_move(&provider, &latest, &cursor).await? {
            NextMove::Idle => return Ok(StepReport::Idle),
            NextMove::Rewind { from } => return self.rewind(&provider, from, now_ms).await,
            NextMove::Scan { first } => *first,
        };
        let from = cursor.number + 1;
        let max_range = if self.native_watchers > 0 {
            MAX_RANGE_WITH_BLOCKS
        } else {
            self.range
        };
        let to = head.min(from + max_range - 1);
        let step = self.scan(&provider, from, to, first, now_ms).await;
        match step {
            Ok(report) => {
                self.range = (self.range * 2).min(MAX_RANGE);
                Ok(report)
            }
            Err(error)
                if ["range", "limit", "too many"]
                    .iter()
                    .any(|hint| error.to_string().contains(hint)) =>
            {
                self.range = (self.range / 2).max(1);
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The head block. One call gives its number and hash: an idle poll costs a single request
    /// and still notices a tip replaced at the same height.
    async fn latest(provider: &DynProvider) -> Result<Block, StepError> {
        provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(rpc_error)?
            .ok_or_else(|| StepError::Chain("rpc: the node returned no latest block".to_owned()))
    }

    /// What follows the cursor: nothing yet, a reorg (the chain no longer holds the cursor's
    /// block), or the next block to scan from.
    async fn next_move(
        &self,
        provider: &DynProvider,
        latest: &Block,
        cursor: &ChainBlock,
    ) -> Result<NextMove, StepError> {
        let head = latest.header.number;
        if head == cursor.number && hash_text(latest.header.hash) == cursor.hash {
            return Ok(NextMove::Idle);
        }
        if head <= cursor.number {
            // The tip was replaced at the same height, or the chain got shorter.
            return Ok(NextMove::Rewind { from: head });
        }
        let first = Self::header(provider, cursor.number + 1, self.native_watchers > 0).await?;
        if hash_text(first.header.parent_hash) != cursor.hash {
            return Ok(NextMove::Rewind {
                from: cursor.number,
            });
        }
        Ok(NextMove::Scan {
            first: Box::new(first),
        })
    }

    /// The rewind the next step would commit, judged now and not committed: `None` when the
    /// chain still holds the cursor's block (or the chain was never followed).
    /// [`coffer_store::Ledger::commit_chain_step`] commits it as the step would, so that what happens between
    /// the judgement and the commit (a sale recorded beside the watcher, say) can be examined.
    ///
    /// # Errors
    /// [`StepError`] on RPC or store failure.
    pub async fn judge_rewind(&self) -> Result<Option<ChainStep>, StepError> {
        let now_ms = crate::clock::now_ms();
        let provider = self.provider()?;
        let latest = Self::latest(&provider).await?;
        let Some(cursor) = self.store.chain_cursor(self.chain.chain_id).await? else {
            return Ok(None);
        };
        match self.next_move(&provider, &latest, &cursor).await? {
            NextMove::Rewind { from } => Ok(Some(self.rewind_step(&provider, from, now_ms).await?)),
            NextMove::Idle | NextMove::Scan { .. } => Ok(None),
        }
    }

    async fn scan(
        &mut self,
        provider: &DynProvider,
        from: u64,
        to: u64,
        first: Block,
        now_ms: i64,
    ) -> Result<StepReport, StepError> {
        let chain_id = self.chain.chain_id;
        // Blocks whose hashes we keep (the recent ones) and whose contents we need.
        let near_from = to.saturating_sub(KEEP_BLOCKS - 1).max(from);
        let full = self.native_watchers > 0;
        // What a failed step fetched is kept (and checked below with the rest).
        let (mut blocks, fetched_full) = std::mem::take(&mut self.fetched);
        if fetched_full != full {
            blocks.clear();
        }
        blocks.retain(|number, _| (from..=to).contains(number));
        blocks.insert(from, first);
        let wanted: Vec<u64> = if full {
            (from..=to).collect()
        } else {
            (near_from..=to).collect()
        };
        for number in wanted {
            if blocks.contains_key(&number) {
                continue;
            }
            match Self::header(provider, number, full).await {
                Ok(block) => {
                    blocks.insert(number, block);
                }
                Err(error) => {
                    self.fetched = (blocks, full);
                    return Err(error);
                }
            }
        }
        // Consecutive blocks we fetched must link up, or a reorg happened mid-step (and what
        // was kept is stale).
        for number in from + 1..=to {
            if let (Some(parent), Some(child)) = (blocks.get(&(number - 1)), blocks.get(&number))
                && child.header.parent_hash != parent.header.hash
            {
                return Err(StepError::Chain(format!(
                    "chain changed while reading block {number}; retrying"
                )));
            }
        }
        // Headers fetched from here on are kept if the step fails.
        let keep = |blocks: &HashMap<u64, Block>| (blocks.clone(), full);

        let mut payments = Vec::new();
        if !self.tokens.is_empty() && !self.watched.is_empty() {
            let filter = Filter::new()
                .address(self.tokens.clone())
                .event_signature(IERC20::Transfer::SIGNATURE_HASH)
                .from_block(from)
                .to_block(to);
            let logs = match provider.get_logs(&filter).await {
                Ok(logs) => logs,
                Err(error) => {
                    self.fetched = keep(&blocks);
                    return Err(rpc_error(error));
                }
            };
            for log in logs {
                if log.removed {
                    continue;
                }
                let Ok(transfer) = log.log_decode::<IERC20::Transfer>() else {
                    continue;
                };
                let event = &transfer.inner.data;
                let Some(watched) = self.watched.get(&event.to) else {
                    continue;
                };
                if watched.asset != Some(log.address())
                    || watched.monitor_until_ms <= now_ms - 60_000
                {
                    continue;
                }
                let (Some(number), Some(block_hash), Some(tx_hash), Some(log_index)) = (
                    log.block_number,
                    log.block_hash,
                    log.transaction_hash,
                    log.log_index,
                ) else {
                    continue;
                };
                let block = match blocks.get(&number) {
                    Some(block) => block.clone(),
                    None => {
                        let block = Self::header(provider, number, false).await?;
                        blocks.insert(number, block.clone());
                        block
                    }
                };
                if block.header.hash != block_hash {
                    return Err(StepError::Chain(format!(
                        "log of block {number} is from another fork; retrying"
                    )));
                }
                payments.push(NewPayment {
                    chain_id,
                    tx_hash: hash_text(tx_hash),
                    log_index: i64::try_from(log_index).unwrap_or(i64::MAX),
                    order_id: watched.order_id.clone(),
                    asset_address: Some(log.address().to_checksum(None).to_ascii_lowercase()),
                    sender: event.from.to_checksum(None),
                    recipient: event.to.to_checksum(None),
                    amount: Amount::from_base_units(event.value),
                    block_number: number,
                    block_hash: hash_text(block_hash),
                    block_time: i64::try_from(block.header.timestamp).unwrap_or(i64::MAX),
                    detected_at_ms: now_ms,
                });
            }
        }
        if full {
            for number in from..=to {
                let Some(block) = blocks.get(&number) else {
                    continue;
                };
                let Some(transactions) = block.transactions.as_transactions() else {
                    continue;
                };
                for tx in transactions {
                    let Some(recipient) = tx.to() else { continue };
                    let Some(watched) = self.watched.get(&recipient) else {
                        continue;
                    };
                    if watched.asset.is_some() || tx.value().is_zero() {
                        continue;
                    }
                    let receipt = provider
                        .get_transaction_receipt(tx.tx_hash())
                        .await
                        .map_err(rpc_error)?;
                    if !receipt.is_some_and(|receipt| receipt.status()) {
                        continue;
                    }
                    payments.push(NewPayment {
                        chain_id,
                        tx_hash: hash_text(tx.tx_hash()),
                        log_index: -1,
                        order_id: watched.order_id.clone(),
                        asset_address: None,
                        sender: tx.from().to_checksum(None),
                        recipient: recipient.to_checksum(None),
                        amount: Amount::from_base_units(tx.value()),
                        block_number: number,
                        block_hash: hash_text(block.header.hash),
                        block_time: i64::try_from(block.header.timestamp).unwrap_or(i64::MAX),
                        detected_at_ms: now_ms,
                    });
                }
            }
        }

        // Orders to re-evaluate: those just paid and those waiting for confirmations.
        let mut affected: Vec<OrderRow> = self
            .store
            .orders_in_status(chain_id, OrderStatus::Processing)
            .await?;
        let mut seen: HashSet<String> = affected
            .iter()
            .map(|order| order.order_id.clone())
            .collect();
        let mut new_per_order: HashMap<String, Vec<NewPayment>> = HashMap::new();
        for payment in &payments {
            new_per_order
                .entry(payment.order_id.clone())
                .or_default()
                .push(payment.clone());
            if seen.insert(payment.order_id.clone()) {
                affected.push(self.store.order(&payment.order_id).await?);
            }
        }
        let mut updates = Vec::new();
        let mut merchants: HashMap<MerchantId, MerchantRow> = HashMap::new();
        for order in &affected {
            let mut known = self.store.payments_for_order(&order.order_id).await?;
            let fresh = new_per_order.remove(&order.order_id).unwrap_or_default();
            let mut new_count = 0;
            for payment in fresh {
                match known.iter_mut().find(|row| {
                    row.payment.tx_hash == payment.tx_hash
                        && row.payment.log_index == payment.log_index
                }) {
                    Some(row) if !row.orphaned && row.payment.block_hash == payment.block_hash => {}
                    Some(row) => {
                        row.payment = payment;
                        row.orphaned = false;
                        new_count += 1;
                    }
                    None => {
                        known.push(PaymentRow {
                            payment,
                            orphaned: false,
                        });
                        new_count += 1;
                    }
                }
            }
            let merchant = match merchants.get(&order.merchant_id) {
                Some(merchant) => merchant.clone(),
                None => {
                    let merchant = self.store.merchant(&order.merchant_id).await?;
                    merchants.insert(order.merchant_id.clone(), merchant.clone());
                    merchant
                }
            };
            let gatepay = self.store.gatepay_order_of(&order.order_id).await?;
            if let Some(update) = reevaluate(
                &self.orders,
                Reevaluation {
                    merchant: &merchant,
                    order,
                    gatepay: gatepay.as_ref(),
                    payments: &known,
                    head: to,
                    required_confirmations: self.chain.confirmations,
                    now_ms,
                    new_payments: new_count,
                    orphaned_now: false,
                },
            ) {
                updates.push(update);
            }
        }

        let mut kept: Vec<ChainBlock> = (near_from..=to)
            .filter_map(|number| blocks.get(&number))
            .map(|block| ChainBlock {
                number: block.header.number,
                hash: hash_text(block.header.hash),
                parent_hash: hash_text(block.header.parent_hash),
            })
            .collect();
        kept.sort_by_key(|block| block.number);
        let cursor = kept
            .last()
            .cloned()
            .ok_or_else(|| StepError::Chain("no block to advance to".to_owned()))?;
        let report = StepReport::Progressed {
            from,
            to,
            payments: payments.len(),
            updated: updates.len(),
        };
        let notify = updates
            .iter()
            .any(|update: &OrderUpdate| !update.events.is_empty());
        if !payments.is_empty() {
            coffer_core::crash_point!("watcher.after_fetch");
        }
        self.commit(ChainStep {
            chain_id,
            rewind_to: None,
            orphans: Vec::new(),
            blocks: kept,
            cursor,
            payments,
            order_updates: updates,
            keep_blocks: KEEP_BLOCKS,
            now_ms,
        })
        .await?;
        if notify {
            self.wake.notify_one();
        }
        Ok(report)
    }

    async fn commit(&self, step: ChainStep) -> Result<(), StepError> {
        match self.store.commit_chain_step(&step).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(what)) => Err(StepError::Chain(format!(
                "{what} changed during the step; retrying"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    /// Commits a rewind judged by [`Watcher::rewind_step`].
    async fn rewind(
        &self,
        provider: &DynProvider,
        from: u64,
        now_ms: i64,
    ) -> Result<StepReport, StepError> {
        let step = self.rewind_step(provider, from, now_ms).await?;
        let ancestor = step.cursor.number;
        let updated = step.order_updates.len();
        self.commit(step).await?;
        if updated > 0 {
            self.wake.notify_one();
        }
        Ok(StepReport::Reorged { ancestor, updated })
    }

    /// Walks back from block `from` to the newest stored block still on the canonical chain
    /// and judges a rewind to it: which payments left the chain, where sales were mined again,
    /// and how the orders they paid change.
    ///
    /// A payment above the ancestor is orphaned only if its block is no longer on the chain:
    /// x402 sales are recorded when they settle, often in blocks the watcher has not reached,
    /// and those blocks may be perfectly canonical. The step names each orphan, so that a sale
    /// recorded after this judgement is never orphaned by it. An orphaned sale's transaction is
    /// looked for again (it is not watched by address, so no scan would find it): mined again,
    /// its payment is restored in its new block.
    async fn rewind_step(
        &self,
        provider: &DynProvider,
        from: u64,
        now_ms: i64,
    ) -> Result<ChainStep, StepError> {
        let chain_id = self.chain.chain_id;
        let mut number = from;
        let mut canonical_hashes: HashMap<u64, Option<String>> = HashMap::new();
        let ancestor = loop {
            let canonical = Self::header(provider, number, false).await?;
            let canonical_block = ChainBlock {
                number,
                hash: hash_text(canonical.header.hash),
                parent_hash: hash_text(canonical.header.parent_hash),
            };
            canonical_hashes.insert(number, Some(canonical_block.hash.clone()));
            match self.store.chain_block(chain_id, number).await? {
                Some(stored) if stored.hash == canonical_block.hash => break canonical_block,
                Some(_) if number > 0 => number -= 1,
                _ => {
                    tracing::error!(
                        chain = self.chain.key(),
                        block = number,
                        "reorg deeper than the kept block hashes: looking for the common ancestor among the blocks of recorded payments"
                    );
                    break self
                        .ancestor_below_kept_hashes(provider, number, &mut canonical_hashes)
                        .await?;
                }
            }
        };
        let ancestor_number = ancestor.number;
        tracing::warn!(
            chain = self.chain.key(),
            from,
            ancestor = ancestor_number,
            "reorg: rewinding"
        );
        let head = provider.get_block_number().await.map_err(rpc_error)?;
        let mut updates = Vec::new();
        let mut orphans = Vec::new();
        let mut restored = Vec::new();
        // Transfers already given to a sale mined again: one log never pays two payments.
        let mut claimed: HashSet<(String, i64)> = HashSet::new();
        for order in self
            .store
            .orders_paid_after(chain_id, ancestor_number)
            .await?
        {
            let mut payments = self.store.payments_for_order(&order.order_id).await?;
            let mut orphaned_now = false;
            let mut mined_again = Vec::new();
            for row in &mut payments {
                if row.orphaned || row.payment.block_number <= ancestor_number {
                    continue;
                }
                let number = row.payment.block_number;
                let canonical = match canonical_hashes.get(&number) {
                    Some(hash) => hash.clone(),
                    None => {
                        let hash = match provider.get_block_by_number(number.into()).await {
                            Ok(block) => block.map(|block| hash_text(block.header.hash)),
                            Err(error) => return Err(rpc_error(error)),
                        };
                        canonical_hashes.insert(number, hash.clone());
                        hash
                    }
                };
                if canonical.as_deref() == Some(row.payment.block_hash.as_str()) {
                    continue;
                }
                orphans.push(OrphanedPayment::of(&row.payment));
                row.orphaned = true;
                orphaned_now = true;
                if order.sold
                    && let Some(again) = self
                        .sale_mined_again(provider, &row.payment, &claimed)
                        .await?
                {
                    claimed.insert((again.tx_hash.clone(), again.log_index));
                    mined_again.push(again);
                }
            }
            if !orphaned_now {
                continue;
            }
            for payment in mined_again {
                restored.push(payment.clone());
                payments.push(PaymentRow {
                    payment,
                    orphaned: false,
                });
            }
            let merchant = self.store.merchant(&order.merchant_id).await?;
            let gatepay = self.store.gatepay_order_of(&order.order_id).await?;
            if let Some(update) = reevaluate(
                &self.orders,
                Reevaluation {
                    merchant: &merchant,
                    order: &order,
                    gatepay: gatepay.as_ref(),
                    payments: &payments,
                    head,
                    required_confirmations: self.chain.confirmations,
                    now_ms,
                    new_payments: 0,
                    orphaned_now: true,
                },
            ) {
                updates.push(update);
            }
        }
        Ok(ChainStep {
            chain_id,
            rewind_to: Some(ancestor_number),
            orphans,
            blocks: Vec::new(),
            cursor: ancestor,
            payments: restored,
            order_updates: updates,
            keep_blocks: KEEP_BLOCKS,
            now_ms,
        })
    }

    /// The common ancestor of a reorg that reaches below the kept block hashes (`below` has
    /// none): the newest block holding a recorded payment that the chain still holds, found
    /// page by page from `below` down (the chain agrees up to any block whose hash it still
    /// has). When the chain holds none of them, the block before the oldest (nothing older
    /// was paid), or `below` itself when no payment is that old. Every payment above it is
    /// then checked, and the range above it scanned again.
    async fn ancestor_below_kept_hashes(
        &self,
        provider: &DynProvider,
        below: u64,
        canonical_hashes: &mut HashMap<u64, Option<String>>,
    ) -> Result<ChainBlock, StepError> {
        const PAGE: u64 = 100;
        let chain_id = self.chain.chain_id;
        let mut at_or_below = below;
        let mut oldest_lost = None;
        let agreed = 'search: loop {
            let page = self
                .store
                .payment_blocks_at_or_below(chain_id, at_or_below, PAGE)
                .await?;
            for (number, hash) in &page {
                let header = Self::header(provider, *number, false).await?;
                let canonical = hash_text(header.header.hash);
                canonical_hashes.insert(*number, Some(canonical.clone()));
                if canonical == *hash {
                    break 'search *number;
                }
                oldest_lost = Some(*number);
            }
            match page.last() {
                Some((oldest, _)) if page.len() as u64 == PAGE && *oldest > 0 => {
                    at_or_below = oldest - 1;
                }
                _ => break oldest_lost.map_or(below, |oldest| oldest.saturating_sub(1)),
            }
        };
        let block = Self::header(provider, agreed, false).await?;
        Ok(ChainBlock {
            number: agreed,
            hash: hash_text(block.header.hash),
            parent_hash: hash_text(block.header.parent_hash),
        })
    }

    /// Where a sale's transfer is now, if its transaction was mined again after a reorg
    /// dropped its block, and that transfer is not `claimed` by another payment already.
    ///
    /// An authorization sale's transfer is the one its authorization made: the `Transfer` next
    /// to the token's `AuthorizationUsed(payer, nonce)` in the transaction's current receipt (a
    /// batched transaction may carry several identical transfers, one per authorization).
    /// Without that log the authorization was not used by the transaction as mined now, and
    /// nothing is found. A transfer sale (a tx-hash proof, no authorization) takes the first
    /// unclaimed transfer of the same token, sender, recipient and amount.
    async fn sale_mined_again(
        &self,
        provider: &DynProvider,
        payment: &NewPayment,
        claimed: &HashSet<(String, i64)>,
    ) -> Result<Option<NewPayment>, StepError> {
        let Ok(hash) = payment.tx_hash.parse::<B256>() else {
            return Ok(None);
        };
        let (Some(token), Ok(pay_to), Ok(sender)) = (
            payment
                .asset_address
                .as_deref()
                .and_then(|a| a.parse::<Address>().ok()),
            payment.recipient.parse::<Address>(),
            payment.sender.parse::<Address>(),
        ) else {
            return Ok(None);
        };
        let Some(receipt) = provider
            .get_transaction_receipt(hash)
            .await
            .map_err(rpc_error)?
        else {
            return Ok(None);
        };
        let value = payment.amount.base_units();
        let unclaimed = |found: &FoundTransfer| {
            let log_index = i64::try_from(found.log_index).unwrap_or(i64::MAX);
            !claimed.contains(&(payment.tx_hash.clone(), log_index))
        };
        let sale = self.store.sale_for_order(&payment.order_id).await?;
        let found = match sale.and_then(|sale| sale.auth_nonce.map(|nonce| (sale.payer, nonce))) {
            Some((payer, nonce)) => {
                let (Ok(payer), Ok(nonce)) = (payer.parse::<Address>(), nonce.parse::<B256>())
                else {
                    return Ok(None);
                };
                if !authorization_used(&receipt, token, payer, nonce) {
                    return Ok(None);
                }
                authorized_transfer(&receipt, token, payer, pay_to, nonce, value)
                    .filter(|found| unclaimed(found))
            }
            None => transfers_to(&receipt, token, pay_to)
                .into_iter()
                .find(|found| found.from == sender && found.value == value && unclaimed(found)),
        };
        let Some(found) = found else {
            return Ok(None);
        };
        let block = Self::header(provider, found.block_number, false).await?;
        Ok(Some(NewPayment {
            log_index: i64::try_from(found.log_index).unwrap_or(i64::MAX),
            block_number: found.block_number,
            block_hash: hash_text(found.block_hash),
            block_time: i64::try_from(block.header.timestamp).unwrap_or(i64::MAX),
            ..payment.clone()
        }))
    }
}

/// Whether a receipt holds the token's `AuthorizationUsed(payer, nonce)`: the authorization was
/// used by that transaction.
fn authorization_used(
    receipt: &TransactionReceipt,
    token: Address,
    payer: Address,
    nonce: B256,
) -> bool {
    receipt.status()
        && receipt.inner.logs().iter().any(|log| {
            log.address() == token
                && log.topics() == [AuthorizationUsed::SIGNATURE_HASH, payer.into_word(), nonce]
        })
}

impl Worker for Watcher {
    fn name(&self) -> String {
        format!("watcher:{}", self.chain.key())
    }

    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        Ok(match self.step().await? {
            StepReport::Idle => Outcome::Idle,
            StepReport::Progressed { .. } | StepReport::Reorged { .. } => Outcome::Worked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, byte: u8) -> (Address, Watched) {
        (
            Address::repeat_byte(byte),
            Watched {
                id,
                order_id: format!("ORD-{id}"),
                asset: None,
                monitor_until_ms: 0,
            },
        )
    }

    #[test]
    fn a_finished_reload_drops_closed_orders_and_keeps_the_ones_created_meanwhile() {
        // The current set: orders 1–3 and 7, 8 (created while the fresh set was being read).
        let current: HashMap<Address, Watched> = [
            entry(1, 1),
            entry(2, 2),
            entry(3, 3),
            entry(7, 7),
            entry(8, 8),
        ]
        .into();
        // The fresh set read orders up to 5: order 2 has closed, 4 and 5 were picked up too.
        let reload = Reload {
            after_id: 5,
            watched: [entry(1, 1), entry(3, 3), entry(4, 4), entry(5, 5)].into(),
        };
        let mut ids: Vec<i64> = reload
            .finish(current)
            .values()
            .map(|entry| entry.id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 3, 4, 5, 7, 8]);
    }
}
