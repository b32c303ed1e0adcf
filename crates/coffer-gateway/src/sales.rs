//! x402 sales: settlements paid to a merchant's x402 `payTo` address become payment orders.
//!
//! Whatever settled the payment — `/x402/settle`, the OKX routes, the paywall or the Pelago
//! endpoint — the journal row of the authorization says who paid whom how much, and in which
//! transaction. When the `payTo` is registered to a merchant ([`X402Sales::add_pay_to`]), the
//! sale is written as an order already `confirmed`, with its payment (transaction hash, log
//! index of the `Transfer`, block, amount, payer) and its events, in one transaction. The sale
//! is keyed by the authorization, so a repeated settle never records twice. Settlements whose
//! receipt came after the settle call answered (`settlement_pending`) are recorded by
//! [`X402Sales::sweep`], which the settlement reconciler runs.
//!
//! Webhooks then flow through the existing outbox like any other order's.

use std::collections::HashMap;
use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::SolEvent;
use chrono::Utc;
use coffer_core::{Amount, ChainRegistry};
use coffer_evm::contracts::IERC20;
use coffer_evm::rpc::ChainRpc;
use coffer_store::{
    MerchantRow, NewOrder, NewPayment, NewSale, OrderRow, OrderSource, PayToRow, Recorded,
    SaleOrder, SaleProof, SettlementKey, SettlementStatus, Store, StoreError,
};
use coffer_x402::wire::{PaymentRequest, SettleResponse};

use crate::events::order_event;
use crate::orders::{PaymentOrders, Reevaluation};

alloy::sol! {
    /// Emitted by EIP-3009 tokens when an authorization is used.
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
}

/// What can go wrong while recording a sale.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain could not be asked (retry later).
    #[error("chain {chain_id}: {message}")]
    Chain {
        /// The chain.
        chain_id: u64,
        /// What failed.
        message: String,
    },
    /// What was paid does not pay the order it would be recorded into (another merchant's
    /// payee, another token, less than the price).
    #[error("order {order_id}: {message}")]
    NotThisOrder {
        /// The order.
        order_id: String,
        /// What does not match.
        message: String,
    },
    /// The transaction does not show the transfer that was expected.
    #[error("transaction {tx_hash}: {message}")]
    NoTransfer {
        /// The transaction.
        tx_hash: String,
        /// What is missing.
        message: String,
    },
}

/// The transfer that paid a sale, and how the payer proved it.
struct PaidBy<'a> {
    chain_id: u64,
    transfer: &'a FoundTransfer,
    tx_hash: &'a str,
    proof: SaleProof,
}

/// A transfer found in a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTransfer {
    /// Token contract.
    pub token: Address,
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Amount in base units.
    pub value: U256,
    /// Log index.
    pub log_index: u64,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
}

/// Records x402 settlements as orders.
#[derive(Clone)]
pub struct X402Sales {
    store: Arc<dyn Store>,
    chains: Arc<ChainRegistry>,
    rpcs: Arc<Vec<ChainRpc>>,
    orders: PaymentOrders,
    webhook_wakeup: Arc<tokio::sync::Notify>,
    /// One payment at a time per order, in this process.
    paying: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

use crate::clock::now_ms;

/// `amount` (base units at `from` decimals) at `to` decimals, when exact.
pub fn rescale(amount: Amount, from: u8, to: u8) -> Option<Amount> {
    let ten = U256::from(10u8);
    let units = amount.base_units();
    let scaled = if to >= from {
        units.checked_mul(ten.pow(U256::from(to - from)))?
    } else {
        let divisor = ten.pow(U256::from(from - to));
        if units % divisor != U256::ZERO {
            return None;
        }
        units / divisor
    };
    Some(Amount::from_base_units(scaled))
}

/// The journal key of an authorization, as the settlement engine writes it.
pub fn settlement_key(chains: &ChainRegistry, request: &PaymentRequest) -> Option<SettlementKey> {
    let (network, asset, authorization) = match request {
        PaymentRequest::V1 {
            payload,
            requirements,
        } => (
            chains.by_x402_v1_name(&requirements.network)?,
            &requirements.asset,
            &payload.payload.authorization,
        ),
        PaymentRequest::V2 {
            payload,
            requirements,
        } => (
            chains.by_caip2(&requirements.network)?,
            &requirements.asset,
            &payload.payload.authorization,
        ),
    };
    let asset: Address = asset.parse().ok()?;
    let payer: Address = authorization.from.parse().ok()?;
    let nonce: B256 = authorization.nonce.parse().ok()?;
    Some(SettlementKey {
        chain_id: network.chain_id,
        token: format!("{asset:#x}"),
        payer: format!("{payer:#x}"),
        auth_nonce: format!("{nonce:#x}"),
    })
}

impl X402Sales {
    /// The service over the application's store, chains and RPC clients.
    pub fn new(
        store: Arc<dyn Store>,
        chains: Arc<ChainRegistry>,
        rpcs: Arc<Vec<ChainRpc>>,
        orders: PaymentOrders,
        webhook_wakeup: Arc<tokio::sync::Notify>,
    ) -> Self {
        X402Sales {
            store,
            chains,
            rpcs,
            orders,
            webhook_wakeup,
            paying: Arc::default(),
        }
    }

    /// Holds `order_id` for one payment: a second payment presented for the same order waits,
    /// then sees it paid, instead of both being settled. Within this process; across replicas
    /// a second payment that slips through is still recorded, as a sale of its own.
    pub async fn hold_order(&self, order_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut paying = self
                .paying
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            paying.retain(|_, lock| Arc::strong_count(lock) > 1);
            paying.entry(order_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Registers a merchant's payTo address on a chain.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when another merchant registered it.
    pub async fn add_pay_to(
        &self,
        merchant: &MerchantRow,
        chain_id: u64,
        address: Address,
    ) -> Result<PayToRow, StoreError> {
        let row = PayToRow {
            chain_id,
            address: format!("{address:#x}"),
            merchant_id: merchant.id.clone(),
            created_at_ms: now_ms(),
        };
        self.store.add_pay_to(&row).await?;
        Ok(row)
    }

    /// The merchant owning `address` on a chain, if any.
    ///
    /// # Errors
    /// [`StoreError`] when reading fails.
    pub async fn owner(
        &self,
        chain_id: u64,
        address: Address,
    ) -> Result<Option<MerchantRow>, StoreError> {
        match self
            .store
            .pay_to_owner(chain_id, &format!("{address:#x}"))
            .await?
        {
            Some(row) => Ok(Some(self.store.merchant(&row.merchant_id).await?)),
            None => Ok(None),
        }
    }

    /// Records the settlement of a request that settled successfully, if its payTo belongs to
    /// a merchant; `description` goes into the order info.
    ///
    /// # Errors
    /// [`SaleError`] when the journal, the chain or the store fails.
    #[tracing::instrument(skip_all)]
    pub async fn record_settled(
        &self,
        request: &PaymentRequest,
        description: &str,
    ) -> Result<Option<Recorded>, SaleError> {
        let Some(key) = settlement_key(&self.chains, request) else {
            return Ok(None);
        };
        // Most settlements pay no merchant of this Coffer: one lookup and done.
        let pay_to = match request {
            PaymentRequest::V1 { requirements, .. } => &requirements.pay_to,
            PaymentRequest::V2 { requirements, .. } => &requirements.pay_to,
        };
        let Ok(pay_to) = pay_to.parse::<Address>() else {
            return Ok(None);
        };
        if self
            .store
            .pay_to_owner(key.chain_id, &format!("{pay_to:#x}"))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.record_key(&key, description, None).await
    }

    /// Records a settle call's result when it succeeded; failures are logged (the reconciler's
    /// sweep records the sale later).
    pub async fn after_settle(&self, request: &PaymentRequest, reply: &SettleResponse) {
        if !reply.success {
            return;
        }
        if let Err(error) = self.record_settled(request, "").await {
            tracing::warn!(%error, "recording an x402 sale failed; the reconciler retries");
        }
    }

    /// Records the settlement journaled under `key` (when it succeeded and its payTo is a
    /// merchant's) into the order it was made for, if any, else into `existing` — a pending
    /// order of that merchant — or a new order. `Ok(None)` when there is nothing to record, or
    /// when the settlement was made for an order other than `existing`.
    ///
    /// # Errors
    /// [`SaleError`] when the journal, the chain or the store fails, or
    /// [`SaleError::NotThisOrder`] when the payment does not pay the order.
    #[tracing::instrument(skip_all, fields(chain_id = key.chain_id))]
    pub async fn record_key(
        &self,
        key: &SettlementKey,
        description: &str,
        existing: Option<&OrderRow>,
    ) -> Result<Option<Recorded>, SaleError> {
        match self.record_key_once(key, description, existing, true).await {
            // The order moved meanwhile (a concurrent call recorded this settlement into it,
            // or it expired): read it again and try once more.
            Err(SaleError::Store(StoreError::Conflict(
                coffer_store::Constraint::PaymentOrderVersion,
            ))) => {
                let fresh = match existing {
                    Some(order) => Some(self.store.order(&order.order_id).await?),
                    None => None,
                };
                match self
                    .record_key_once(key, description, fresh.as_ref(), true)
                    .await
                {
                    // The order was paid by another payment meanwhile (a second payment that
                    // slipped past the hold, on another replica): the money moved all the
                    // same, so it is recorded as a sale of its own, never lost.
                    Err(SaleError::Store(StoreError::Conflict(
                        coffer_store::Constraint::PaymentOrderVersion,
                    ))) => {
                        tracing::warn!(
                            order = existing.map_or("", |o| o.order_id.as_str()),
                            "a second payment for a paid order is recorded as its own sale"
                        );
                        self.record_key_once(key, description, None, false).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// `to_bound`: record into the order the settlement was made for, if any.
    async fn record_key_once(
        &self,
        key: &SettlementKey,
        description: &str,
        existing: Option<&OrderRow>,
        to_bound: bool,
    ) -> Result<Option<Recorded>, SaleError> {
        let Some(row) = self.store.settlement(key).await? else {
            return Ok(None);
        };
        if row.status != SettlementStatus::Succeeded {
            return Ok(None);
        }
        let Some(tx_hash) = row.tx_hash.clone() else {
            return Ok(None);
        };
        let pay_to: Address = row.pay_to.parse().map_err(|_| SaleError::NoTransfer {
            tx_hash: tx_hash.clone(),
            message: format!("journaled payTo {:?} is not an address", row.pay_to),
        })?;
        // The order the settlement was made for is where it is recorded, whoever records it.
        let bound;
        let made_for = row.order_id.as_ref().filter(|_| to_bound);
        let existing = match (made_for, existing) {
            (Some(made_for), Some(order)) if *made_for != order.order_id => return Ok(None),
            (Some(made_for), None) => match self.store.order(made_for).await {
                Ok(order) => {
                    bound = order;
                    Some(&bound)
                }
                Err(StoreError::NotFound(_)) => None,
                Err(error) => return Err(error.into()),
            },
            (_, existing) => existing,
        };
        // Only a payment to the order's own merchant pays it.
        let merchant = match (existing, self.owner(key.chain_id, pay_to).await?) {
            (Some(order), Some(owner)) if owner.id == order.merchant_id => owner,
            (Some(order), _) => {
                return Err(SaleError::NotThisOrder {
                    order_id: order.order_id.clone(),
                    message: format!(
                        "the settlement paid {pay_to:#x}, which is not this merchant's payTo"
                    ),
                });
            }
            (None, Some(owner)) => owner,
            (None, None) => return Ok(None),
        };
        let token: Address = key.token.parse().map_err(|_| SaleError::NoTransfer {
            tx_hash: tx_hash.clone(),
            message: "journaled token is not an address".to_owned(),
        })?;
        let payer: Address = key.payer.parse().map_err(|_| SaleError::NoTransfer {
            tx_hash: tx_hash.clone(),
            message: "journaled payer is not an address".to_owned(),
        })?;
        let nonce: B256 = key.auth_nonce.parse().map_err(|_| SaleError::NoTransfer {
            tx_hash: tx_hash.clone(),
            message: "journaled nonce is not 32 bytes".to_owned(),
        })?;
        let value = Amount::from_base_units_str(&row.value).map_err(|_| SaleError::NoTransfer {
            tx_hash: tx_hash.clone(),
            message: "journaled value is not an amount".to_owned(),
        })?;
        let receipt = self.receipt(key.chain_id, &tx_hash).await?;
        let transfer =
            authorized_transfer(&receipt, token, payer, pay_to, nonce, value.base_units())
                .ok_or_else(|| SaleError::NoTransfer {
                    tx_hash: tx_hash.clone(),
                    message: "no Transfer log of this authorization".to_owned(),
                })?;
        let sale = self
            .sale(
                &merchant,
                PaidBy {
                    chain_id: key.chain_id,
                    transfer: &transfer,
                    tx_hash: &tx_hash,
                    proof: SaleProof::Authorization {
                        auth_nonce: key.auth_nonce.clone(),
                    },
                },
                description,
                existing,
            )
            .await?;
        let recorded = self.store.record_sale(&sale).await?;
        if matches!(recorded, Recorded::New(_)) {
            self.webhook_wakeup.notify_one();
        }
        Ok(Some(recorded))
    }

    /// Records a transfer the payer broadcast itself (Pelago's tx-hash proof) into a pending
    /// order.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`"payment"`) when the transfer already pays an order.
    pub async fn record_transfer(
        &self,
        order: &OrderRow,
        chain_id: u64,
        tx_hash: &str,
        transfer: &FoundTransfer,
    ) -> Result<Recorded, SaleError> {
        let merchant = self.store.merchant(&order.merchant_id).await?;
        let sale = self
            .sale(
                &merchant,
                PaidBy {
                    chain_id,
                    transfer,
                    tx_hash,
                    proof: SaleProof::Transfer,
                },
                "",
                Some(order),
            )
            .await?;
        let recorded = self.store.record_sale(&sale).await?;
        self.webhook_wakeup.notify_one();
        Ok(recorded)
    }

    /// Records succeeded settlements not recorded yet; returns how many were recorded.
    ///
    /// # Errors
    /// [`SaleError`] when the store fails; a chain failure on one settlement is logged and the
    /// rest go on.
    pub async fn sweep(&self) -> Result<usize, SaleError> {
        let keys = self.store.unrecorded_settlements(100).await?;
        let mut recorded = 0;
        for key in keys {
            match self.record_key(&key, "", None).await {
                Ok(Some(Recorded::New(_))) => recorded += 1,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "recording an x402 sale failed"),
            }
        }
        Ok(recorded)
    }

    /// The receipt of a transaction.
    ///
    /// # Errors
    /// [`SaleError::Chain`] when the chain cannot be asked or has no such receipt.
    pub async fn receipt(
        &self,
        chain_id: u64,
        tx_hash: &str,
    ) -> Result<TransactionReceipt, SaleError> {
        let chain_error = |message: String| SaleError::Chain { chain_id, message };
        let hash: B256 = tx_hash
            .parse()
            .map_err(|_| chain_error(format!("{tx_hash:?} is not a transaction hash")))?;
        self.provider(chain_id)?
            .get_transaction_receipt(hash)
            .await
            .map_err(|error| chain_error(error.to_string()))?
            .ok_or_else(|| chain_error(format!("no receipt for {tx_hash}")))
    }

    /// Re-evaluates a sale against the chain's current head: a sale recorded `processing`
    /// becomes `confirmed` once its payment has the chain's confirmations (the watcher does the
    /// same on its own; whichever is first records it, once). Returns the order as it now is.
    ///
    /// # Errors
    /// [`SaleError`] when the chain or the store cannot be read.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn confirm_if_deep(&self, order_id: &str) -> Result<OrderRow, SaleError> {
        let order = self.store.order(order_id).await?;
        if order.status != coffer_core::OrderStatus::Processing {
            return Ok(order);
        }
        let head = self.block_number(order.chain_id).await?;
        let required = self
            .chains
            .by_chain_id(order.chain_id)
            .map_or(1, |chain| chain.confirmations);
        let payments = self.store.payments_for_order(order_id).await?;
        let merchant = self.store.merchant(&order.merchant_id).await?;
        let Some(update) = crate::orders::reevaluate(
            &self.orders,
            Reevaluation {
                merchant: &merchant,
                order: &order,
                gatepay: // A sale is never a GatePay order.
            None,
                payments: &payments,
                head,
                required_confirmations: required,
                now_ms: now_ms(),
                new_payments: 0,
                orphaned_now: false,
            },
        ) else {
            return Ok(order);
        };
        match self
            .store
            .update_orders(std::slice::from_ref(&update))
            .await
        {
            // The watcher recorded it meanwhile: its write stands.
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error.into()),
        }
        self.webhook_wakeup.notify_one();
        Ok(self.store.order(order_id).await?)
    }

    /// The current block number of a chain.
    ///
    /// # Errors
    /// [`SaleError::Chain`] when the chain cannot be asked.
    pub async fn block_number(&self, chain_id: u64) -> Result<u64, SaleError> {
        self.provider(chain_id)?
            .get_block_number()
            .await
            .map_err(|error| SaleError::Chain {
                chain_id,
                message: error.to_string(),
            })
    }

    /// The timestamp (unix seconds) of a block.
    ///
    /// # Errors
    /// [`SaleError::Chain`] when the chain cannot be asked or has no such block.
    pub async fn block_timestamp(&self, chain_id: u64, number: u64) -> Result<u64, SaleError> {
        let chain_error = |message: String| SaleError::Chain { chain_id, message };
        self.provider(chain_id)?
            .get_block_by_number(number.into())
            .await
            .map_err(|error| chain_error(error.to_string()))?
            .map(|block| block.header.timestamp)
            .ok_or_else(|| chain_error(format!("no block {number}")))
    }

    /// A block's time for a payment row, the clock's when the chain cannot say.
    async fn block_time(&self, chain_id: u64, number: u64) -> i64 {
        match self.block_timestamp(chain_id, number).await {
            Ok(at) => i64::try_from(at).unwrap_or(i64::MAX),
            Err(_) => Utc::now().timestamp(),
        }
    }

    /// The chain's first RPC endpoint.
    fn provider(&self, chain_id: u64) -> Result<alloy::providers::DynProvider, SaleError> {
        self.rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)
            .and_then(|rpc| rpc.provider().cloned())
            .ok_or_else(|| SaleError::Chain {
                chain_id,
                message: "no RPC endpoint configured".to_owned(),
            })
    }

    async fn sale(
        &self,
        merchant: &MerchantRow,
        paid: PaidBy<'_>,
        description: &str,
        existing: Option<&OrderRow>,
    ) -> Result<NewSale, SaleError> {
        let PaidBy {
            chain_id,
            transfer,
            tx_hash,
            proof,
        } = paid;
        let now = now_ms();
        let chain = self
            .chains
            .by_chain_id(chain_id)
            .ok_or_else(|| SaleError::Chain {
                chain_id,
                message: "unknown chain".to_owned(),
            })?;
        let asset =
            chain
                .asset_by_address(transfer.token)
                .ok_or_else(|| SaleError::NoTransfer {
                    tx_hash: tx_hash.to_owned(),
                    message: format!("token {} is not known on {}", transfer.token, chain.key()),
                })?;
        let amount = Amount::from_base_units(transfer.value);
        let block_time = self.block_time(chain_id, transfer.block_number).await;
        let order_id = match existing {
            Some(order) => order.order_id.clone(),
            None => crate::orders::new_order_id(),
        };
        let receiving_address = transfer.to.to_checksum(None);
        let payment = NewPayment {
            chain_id,
            tx_hash: tx_hash.to_ascii_lowercase(),
            log_index: i64::try_from(transfer.log_index).unwrap_or(i64::MAX),
            order_id: order_id.clone(),
            asset_address: Some(format!("{:#x}", transfer.token)),
            sender: transfer.from.to_checksum(None),
            recipient: receiving_address.clone(),
            amount,
            block_number: transfer.block_number,
            block_hash: format!("{:#x}", transfer.block_hash),
            block_time,
            detected_at_ms: now,
        };
        let webhook_url = existing.and_then(|order| order.webhook_url.clone());
        let (order, source, order_row_for_view) = match existing {
            Some(order) => {
                let not_this_order = |message: String| SaleError::NotThisOrder {
                    order_id: order.order_id.clone(),
                    message,
                };
                if order.chain_id != chain_id {
                    return Err(not_this_order(format!(
                        "paid on chain {chain_id}, the order is payable on chain {} only",
                        order.chain_id
                    )));
                }
                if !asset.symbol.eq_ignore_ascii_case(&order.currency) {
                    return Err(not_this_order(format!(
                        "paid in {}, the order asks for {}",
                        asset.symbol, order.currency
                    )));
                }
                let asked =
                    rescale(order.amount, order.decimals, asset.decimals).ok_or_else(|| {
                        not_this_order(format!("the price cannot be paid in {}", asset.symbol))
                    })?;
                if amount.base_units() < asked.base_units() {
                    return Err(not_this_order(format!(
                        "paid {} base units, the price is {}",
                        amount.to_base_units_string(),
                        asked.to_base_units_string()
                    )));
                }
                let mut next = order.clone();
                next.amount = asked;
                next.chain_id = chain_id;
                next.blockchain = chain.names.cryptopay_slug.clone();
                next.currency = asset.symbol.clone();
                next.asset_address = Some(format!("{:#x}", asset.address));
                next.decimals = asset.decimals;
                next.receiving_address = receiving_address.clone();
                (
                    SaleOrder::Existing {
                        order_id: order.order_id.clone(),
                        expected_version: order.version,
                        chain_id,
                        blockchain: next.blockchain.clone(),
                        currency: next.currency.clone(),
                        asset_address: next.asset_address.clone(),
                        decimals: asset.decimals,
                        amount: asked,
                        receiving_address: receiving_address.clone(),
                    },
                    OrderSource::Pelago,
                    next,
                )
            }
            None => {
                let order_info = serde_json::json!({
                    "x402": true,
                    "description": description,
                    "payer": transfer.from.to_checksum(None),
                })
                .to_string();
                let new = NewOrder {
                    order_id: order_id.clone(),
                    merchant_id: merchant.id.clone(),
                    chain_id,
                    blockchain: chain.names.cryptopay_slug.clone(),
                    currency: asset.symbol.clone(),
                    asset_address: Some(format!("{:#x}", asset.address)),
                    decimals: asset.decimals,
                    amount,
                    underpayment_tolerance: Amount::ZERO,
                    receiving_address: receiving_address.clone(),
                    derivation_index: 0,
                    order_info: order_info.clone(),
                    nonce: 0,
                    webhook_url: None,
                    redirect_url: None,
                    idempotency_key: None,
                    request_hash: None,
                    created_at_ms: now,
                    expires_at_ms: now,
                    monitor_until_ms: now,
                    external_reference: None,
                    event: order_event(
                        merchant,
                        &order_id,
                        None,
                        "payment_order.created",
                        serde_json::Value::Null,
                        now,
                        false,
                    ),
                };
                let row = OrderRow {
                    id: 0,
                    order_id: order_id.clone(),
                    merchant_id: merchant.id.clone(),
                    chain_id,
                    blockchain: new.blockchain.clone(),
                    currency: new.currency.clone(),
                    asset_address: new.asset_address.clone(),
                    decimals: asset.decimals,
                    amount,
                    underpayment_tolerance: Amount::ZERO,
                    amount_paid: amount,
                    status: coffer_core::OrderStatus::Confirmed,
                    sub_status: coffer_core::PaymentSubStatus::None,
                    receiving_address: receiving_address.clone(),
                    derivation_index: 0,
                    order_info,
                    nonce: 0,
                    webhook_url: None,
                    redirect_url: None,
                    idempotency_key: None,
                    request_hash: None,
                    closed: false,
                    created_at_ms: now,
                    expires_at_ms: now,
                    monitor_until_ms: now,
                    confirmed_at_ms: Some(now),
                    updated_at_ms: now,
                    version: 0,
                    sold: true,
                };
                (SaleOrder::New(Box::new(new)), OrderSource::X402, row)
            }
        };
        // A sale counts as confirmed at the chain's confirmations, like any payment; until then
        // it is processing, and the watcher confirms it.
        let head = self.block_number(chain_id).await?;
        let required = chain.confirmations.max(1);
        let confirmed = head.saturating_sub(transfer.block_number) + 1 >= required;
        let (status, event_type) = if confirmed {
            (
                coffer_core::OrderStatus::Confirmed,
                "payment_order.confirmed",
            )
        } else {
            (
                coffer_core::OrderStatus::Processing,
                "payment_order.processing",
            )
        };
        let mut view_row = order_row_for_view;
        view_row.status = status;
        view_row.amount_paid = amount;
        view_row.confirmed_at_ms = confirmed.then_some(now);
        let payment_row = coffer_store::PaymentRow {
            payment: payment.clone(),
            orphaned: false,
        };
        let view = self.orders.view(
            &view_row,
            std::slice::from_ref(&payment_row),
            Some(head.max(transfer.block_number)),
            required,
        );
        let data = serde_json::to_value(view).unwrap_or_default();
        let events = vec![order_event(
            merchant,
            &order_id,
            webhook_url.as_deref(),
            event_type,
            data,
            now,
            true,
        )];
        Ok(NewSale {
            order,
            merchant_id: merchant.id.clone(),
            source,
            proof,
            payment,
            confirmed,
            events,
            now_ms: now,
        })
    }
}

/// The `Transfer` log an EIP-3009 authorization produced: the token's `AuthorizationUsed` for
/// `(payer, nonce)` and, next to it, the matching `Transfer` (a batched transaction may hold
/// several transfers of the same payer).
pub fn authorized_transfer(
    receipt: &TransactionReceipt,
    token: Address,
    payer: Address,
    pay_to: Address,
    nonce: B256,
    value: U256,
) -> Option<FoundTransfer> {
    if !receipt.status() {
        return None;
    }
    let logs = receipt.inner.logs();
    let used = logs.iter().position(|log| {
        log.address() == token
            && log.topics().first() == Some(&AuthorizationUsed::SIGNATURE_HASH)
            && log.topics().get(1) == Some(&payer.into_word())
            && log.topics().get(2) == Some(&nonce)
    });
    let is_transfer = |log: &alloy::rpc::types::Log| -> bool {
        log.address() == token
            && IERC20::Transfer::decode_log(&log.inner)
                .ok()
                .is_some_and(|t| {
                    t.data.from == payer && t.data.to == pay_to && t.data.value == value
                })
    };
    let found: &alloy::rpc::types::Log = match used {
        // The transfer sits right after (FiatToken) or right before the authorization's log.
        Some(at) => {
            let after = logs.get(at + 1).filter(|log| is_transfer(log));
            let before = at
                .checked_sub(1)
                .and_then(|i| logs.get(i))
                .filter(|log| is_transfer(log));
            after.or(before)?
        }
        None => logs.iter().find(|log| is_transfer(log))?,
    };
    Some(FoundTransfer {
        token,
        from: payer,
        to: pay_to,
        value,
        log_index: found.log_index?,
        block_number: found.block_number.or(receipt.block_number)?,
        block_hash: found.block_hash.or(receipt.block_hash)?,
    })
}

/// Every `Transfer` of `token` to `pay_to` in a successful receipt.
pub fn transfers_to(
    receipt: &TransactionReceipt,
    token: Address,
    pay_to: Address,
) -> Vec<FoundTransfer> {
    if !receipt.status() {
        return Vec::new();
    }
    receipt
        .inner
        .logs()
        .iter()
        .filter(|log| log.address() == token)
        .filter_map(|log| {
            let decoded = IERC20::Transfer::decode_log(&log.inner).ok()?.data;
            (decoded.to == pay_to).then_some(FoundTransfer {
                token,
                from: decoded.from,
                to: decoded.to,
                value: decoded.value,
                log_index: log.log_index?,
                block_number: log.block_number.or(receipt.block_number)?,
                block_hash: log.block_hash.or(receipt.block_hash)?,
            })
        })
        .collect()
}
