// Payment orders, payments, chain progress, events and webhook deliveries, compiled once per
// backend (see `crate::shared_sql`). The backend's `ORDER_AND_EVENT_IN_ONE_STATEMENT`,
// `CLAIM_DELIVERIES` and `LOCK_EVENT_FOR_REDELIVERY` are what differs.

use coffer_core::{Amount, MerchantId, OrderStatus, PaymentSubStatus};
use sqlx::Row;

use crate::{Constraint, StoreError};
use crate::order_rows::{
    AttemptOutcome, AttemptRow, ChainBlock, ChainStep, DeliveryRow, DeliveryStatus, DueDelivery, EventRow, NewDelivery, NewEvent,
    ExternalReference, NewOrder, NewPayment, OrderOrdering, OrderQuery, OrderRow, OrderUpdate, PaymentRow, Redelivery, RedeliveryLimit, WalletRow, WebhookFormat,
    amount_sort_key,
};
use crate::fetch;
use crate::rows::merchant_id;

type Tx<'a> = sqlx::Transaction<'a, Db>;
type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { what, detail: detail.to_string() }
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| corrupt(what, "value exceeds 2^63"))
}

fn to_u64(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(what, "negative value"))
}

fn amount(text: &str, what: &'static str) -> Result<Amount, StoreError> {
    Amount::from_base_units_str(text).map_err(|e| corrupt(what, e))
}

/// Classifies a unique violation on `payment_orders` by the constraint it hit.
fn order_conflict(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
        return if text.contains("idempotency") {
            StoreError::Conflict(Constraint::IdempotencyKey)
        } else if text.contains("nonce") {
            StoreError::Conflict(Constraint::Nonce)
        } else if text.contains("receiving_address") {
            StoreError::Conflict(Constraint::ReceivingAddress)
        } else {
            StoreError::Conflict(Constraint::PaymentOrder)
        };
    }
    StoreError::Database(error)
}

fn order_row(row: &DbRow) -> Result<OrderRow, StoreError> {
    let read = StoreError::classify("payment order");
    let status: String = row.try_get("status").map_err(&read)?;
    let sub_status: Option<String> = row.try_get("sub_status").map_err(&read)?;
    let decimals: i64 = row.try_get("decimals").map_err(&read)?;
    let index: i64 = row.try_get("derivation_index").map_err(&read)?;
    Ok(OrderRow {
        id: row.try_get("id").map_err(&read)?,
        order_id: row.try_get("order_id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
        blockchain: row.try_get("blockchain").map_err(&read)?,
        currency: row.try_get("currency").map_err(&read)?,
        asset_address: row.try_get("asset_address").map_err(&read)?,
        decimals: u8::try_from(decimals).map_err(|e| corrupt("decimals", e))?,
        amount: amount(&row.try_get::<String, _>("amount").map_err(&read)?, "amount")?,
        underpayment_tolerance: amount(&row.try_get::<String, _>("underpayment_tolerance").map_err(&read)?, "tolerance")?,
        amount_paid: amount(&row.try_get::<String, _>("amount_paid").map_err(&read)?, "amount paid")?,
        status: status.parse().map_err(|e| corrupt("status", e))?,
        sub_status: PaymentSubStatus::parse(sub_status.as_deref()).map_err(|e| corrupt("sub status", e))?,
        receiving_address: row.try_get("receiving_address").map_err(&read)?,
        derivation_index: u32::try_from(index).map_err(|e| corrupt("derivation index", e))?,
        order_info: row.try_get("order_info").map_err(&read)?,
        nonce: row.try_get("nonce").map_err(&read)?,
        webhook_url: row.try_get("webhook_url").map_err(&read)?,
        redirect_url: row.try_get("redirect_url").map_err(&read)?,
        idempotency_key: row.try_get("idempotency_key").map_err(&read)?,
        request_hash: row.try_get("request_hash").map_err(&read)?,
        closed: row.try_get("closed").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        expires_at_ms: row.try_get("expires_at_ms").map_err(&read)?,
        monitor_until_ms: row.try_get("monitor_until_ms").map_err(&read)?,
        confirmed_at_ms: row.try_get("confirmed_at_ms").map_err(&read)?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(&read)?,
        version: row.try_get("version").map_err(&read)?,
        sold: row.try_get::<String, _>("source").map_err(&read)? != "deposit",
    })
}

fn payment_row(row: &DbRow) -> Result<PaymentRow, StoreError> {
    let read = StoreError::classify("payment");
    Ok(PaymentRow {
        payment: NewPayment {
            chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
            tx_hash: row.try_get("tx_hash").map_err(&read)?,
            log_index: row.try_get("log_index").map_err(&read)?,
            order_id: row.try_get("order_id").map_err(&read)?,
            asset_address: row.try_get("asset_address").map_err(&read)?,
            sender: row.try_get("sender").map_err(&read)?,
            recipient: row.try_get("recipient").map_err(&read)?,
            amount: amount(&row.try_get::<String, _>("amount").map_err(&read)?, "payment amount")?,
            block_number: to_u64(row.try_get("block_number").map_err(&read)?, "block number")?,
            block_hash: row.try_get("block_hash").map_err(&read)?,
            block_time: row.try_get("block_time").map_err(&read)?,
            detected_at_ms: row.try_get("detected_at_ms").map_err(&read)?,
        },
        orphaned: row.try_get("orphaned").map_err(&read)?,
    })
}

fn event_row(row: &DbRow) -> Result<EventRow, StoreError> {
    let read = StoreError::classify("event");
    Ok(EventRow {
        id: row.try_get("id").map_err(&read)?,
        event_id: row.try_get("event_id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        order_id: row.try_get("order_id").map_err(&read)?,
        event_type: row.try_get("event_type").map_err(&read)?,
        payload: row.try_get("payload").map_err(&read)?,
        format: webhook_format(row)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

fn webhook_format(row: &DbRow) -> Result<WebhookFormat, StoreError> {
    let format: String = row.try_get("format").map_err(StoreError::classify("event"))?;
    WebhookFormat::parse(&format).ok_or_else(|| corrupt("event format", format))
}

fn delivery_row(row: &DbRow) -> Result<DeliveryRow, StoreError> {
    let read = StoreError::classify("webhook delivery");
    let status: String = row.try_get("status").map_err(&read)?;
    let attempts: i64 = row.try_get("attempts").map_err(&read)?;
    let code: Option<i64> = row.try_get("last_status_code").map_err(&read)?;
    Ok(DeliveryRow {
        delivery_id: row.try_get("delivery_id").map_err(&read)?,
        event_id: row.try_get("event_id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        url: row.try_get("url").map_err(&read)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status", status))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms").map_err(&read)?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get("last_error").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        delivered_at_ms: row.try_get("delivered_at_ms").map_err(&read)?,
    })
}

fn block_row(row: &DbRow) -> Result<ChainBlock, StoreError> {
    let read = StoreError::classify("chain block");
    Ok(ChainBlock {
        number: to_u64(row.try_get("block_number").map_err(&read)?, "block number")?,
        hash: row.try_get("block_hash").map_err(&read)?,
        parent_hash: row.try_get("parent_hash").map_err(&read)?,
    })
}

pub(crate) async fn set_wallet(pool: &DbPool, merchant: &MerchantId, chain_id: u64, xpub: &str, now_ms: i64) -> Result<WalletRow, StoreError> {
    sqlx::query(
        "INSERT INTO merchant_wallets (merchant_id, chain_id, xpub, next_index, created_at_ms)
         VALUES ($1, $2, $3, 0, $4)
         ON CONFLICT (merchant_id, chain_id) DO UPDATE SET
             next_index = CASE WHEN merchant_wallets.xpub = excluded.xpub THEN merchant_wallets.next_index ELSE 0 END,
             xpub = excluded.xpub",
    )
    .bind(merchant.as_str())
    .bind(to_i64(chain_id, "chain id")?)
    .bind(xpub)
    .bind(now_ms)
    .execute(pool)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound("merchant"),
        _ => StoreError::unique(Constraint::Wallet)(error),
    })?;
    wallet(pool, merchant, chain_id).await?.ok_or(StoreError::NotFound("wallet"))
}

pub(crate) async fn wallet(pool: &DbPool, merchant: &MerchantId, chain_id: u64) -> Result<Option<WalletRow>, StoreError> {
    let row = sqlx::query(
        "SELECT * FROM merchant_wallets WHERE merchant_id = $1 AND (chain_id = $2 OR chain_id = 0)
         ORDER BY chain_id DESC LIMIT 1",
    )
    .bind(merchant.as_str())
    .bind(to_i64(chain_id, "chain id")?)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::Database)?;
    row.map(|row| {
        let read = StoreError::classify("wallet");
        let index: i64 = row.try_get("next_index").map_err(&read)?;
        Ok(WalletRow {
            merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
            chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
            xpub: row.try_get("xpub").map_err(&read)?,
            next_index: u32::try_from(index).map_err(|e| corrupt("next index", e))?,
        })
    })
    .transpose()
}

pub(crate) async fn reserve_address_indexes(pool: &DbPool, wallet: &WalletRow, count: u32) -> Result<u32, StoreError> {
    let next: i64 = sqlx::query_scalar(
        "UPDATE merchant_wallets SET next_index = next_index + $1
         WHERE merchant_id = $2 AND chain_id = $3 AND xpub = $4 RETURNING next_index",
    )
    .bind(i64::from(count.max(1)))
    .bind(wallet.merchant_id.as_str())
    .bind(to_i64(wallet.chain_id, "chain id")?)
    .bind(&wallet.xpub)
    .fetch_one(pool)
    .await
    .map_err(StoreError::classify("wallet"))?;
    let first = next - i64::from(count.max(1));
    if next > 1 << 31 {
        return Err(corrupt("next index", "the wallet has used every non-hardened child"));
    }
    u32::try_from(first).map_err(|e| corrupt("next index", e))
}

/// Events (and their webhook deliveries) per statement: far below both backends' limits on
/// bound parameters.
const EVENTS_PER_STATEMENT: usize = 1_000;

/// Writes events and their webhook deliveries: one multi-row statement for the events and one
/// for the deliveries (per [`EVENTS_PER_STATEMENT`]).
async fn insert_events(tx: &mut Tx<'_>, events: &[NewEvent]) -> Result<(), StoreError> {
    for events in events.chunks(EVENTS_PER_STATEMENT) {
        let values: Vec<String> = (0..events.len())
            .map(|i| {
                let p = |n: usize| format!("${}", i * 7 + n);
                format!("({}, {}, {}, {}, {}, {}, {})", p(1), p(2), p(3), p(4), p(5), p(6), p(7))
            })
            .collect();
        let sql = format!(
            "INSERT INTO events (event_id, merchant_id, order_id, event_type, payload, format, created_at_ms) VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for event in events {
            insert = insert
                .bind(&event.event_id)
                .bind(event.merchant_id.as_str())
                .bind(&event.order_id)
                .bind(&event.event_type)
                .bind(&event.payload)
                .bind(event.format.as_str())
                .bind(event.created_at_ms);
        }
        insert.execute(&mut **tx).await.map_err(StoreError::unique(Constraint::Event))?;
        let deliveries: Vec<(&NewEvent, &NewDelivery)> =
            events.iter().filter_map(|event| event.delivery.as_ref().map(|delivery| (event, delivery))).collect();
        if deliveries.is_empty() {
            continue;
        }
        let values: Vec<String> = (0..deliveries.len())
            .map(|i| {
                let p = |n: usize| format!("${}", i * 5 + n);
                format!("({}, {}, {}, {}, 'pending', 0, {}, {})", p(1), p(2), p(3), p(4), p(5), p(5))
            })
            .collect();
        let sql = format!(
            "INSERT INTO webhook_deliveries
                 (delivery_id, event_id, merchant_id, url, status, attempts, next_attempt_at_ms, created_at_ms)
             VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (event, delivery) in deliveries {
            insert = insert
                .bind(&delivery.delivery_id)
                .bind(&event.event_id)
                .bind(event.merchant_id.as_str())
                .bind(&delivery.url)
                .bind(event.created_at_ms);
        }
        insert.execute(&mut **tx).await.map_err(StoreError::unique(Constraint::WebhookDelivery))?;
    }
    Ok(())
}

const INSERT_ORDERS: &str = "INSERT INTO payment_orders (
         order_id, merchant_id, chain_id, blockchain, currency, asset_address, decimals, amount, amount_sort_key,
         underpayment_tolerance, amount_paid, status, sub_status, receiving_address, derivation_index, order_info,
         nonce, webhook_url, redirect_url, idempotency_key, request_hash, closed, created_at_ms, expires_at_ms,
         monitor_until_ms, confirmed_at_ms, updated_at_ms, version)
     VALUES ";

/// Parameters bound per order by [`bind_new_order`].
const ORDER_PARAMETERS: usize = 21;

/// One order's `VALUES` tuple, its parameters numbered from `$first + 1`.
fn order_values(first: usize) -> String {
    let p = |n: usize| format!("${}", first + n);
    format!(
        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, '0', 'pending', NULL, {}, {}, {}, {}, {}, {}, {}, {}, FALSE, {}, {}, {}, NULL, {}, 0)",
        p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9), p(10),
        p(11), p(12), p(13), p(14), p(15), p(16), p(17), p(18),
        p(19), p(20), p(21), p(19),
    )
}

pub(crate) async fn insert_order(pool: &DbPool, order: NewOrder) -> Result<OrderRow, StoreError> {
    // Where the backend can, the order and its event are one statement (data-modifying CTE):
    // one round trip instead of four, and atomic without an explicit transaction.
    if ORDER_AND_EVENT_IN_ONE_STATEMENT && order.event.delivery.is_none() && order.external_reference.is_none() {
        let sql = format!(
            "WITH inserted AS ({INSERT_ORDERS}{} RETURNING *),
                  event AS (INSERT INTO events (event_id, merchant_id, order_id, event_type, payload, format, created_at_ms)
                            SELECT $22, merchant_id, $23, $24, $25, $26, $27 FROM inserted)
             SELECT * FROM inserted",
            order_values(0)
        );
        let row = bind_new_order(sqlx::query(&sql), &order)?
            .bind(&order.event.event_id)
            .bind(&order.event.order_id)
            .bind(&order.event.event_type)
            .bind(&order.event.payload)
            .bind(order.event.format.as_str())
            .bind(order.event.created_at_ms)
            .fetch_one(pool)
            .await
            .map_err(order_conflict)?;
        return order_row(&row);
    }
    let sql = format!("{INSERT_ORDERS}{} RETURNING *", order_values(0));
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    let row = bind_new_order(sqlx::query(&sql), &order)?
        .fetch_one(&mut *tx)
        .await
        .map_err(order_conflict)?;
    let stored = order_row(&row)?;
    insert_events(&mut tx, std::slice::from_ref(&order.event)).await?;
    match &order.external_reference {
        None => {}
        Some(ExternalReference::GatePay(names)) => {
            super::checkout::bind_gatepay_order(sqlx::query(super::checkout::INSERT_GATEPAY_ORDER), names)
                .execute(&mut *tx)
                .await
                .map_err(super::checkout::gatepay_order_conflict)?;
        }
    }
    tx.commit().await.map_err(StoreError::Database)?;
    Ok(stored)
}

/// Writes several orders and their events in one transaction of three statements, skipping
/// (not failing on) any order that breaks a uniqueness rule or carries an external reference
/// (whose own uniqueness rules only a write alone can report): the rows returned are the
/// orders written, and the caller writes each skipped one alone (see `crate::order_writer`).
///
/// # Errors
/// [`StoreError::Database`] when the batch fails as a whole (nothing of it is written).
pub(crate) async fn insert_orders_together(pool: &DbPool, orders: &[NewOrder]) -> Result<Vec<OrderRow>, StoreError> {
    let orders: Vec<&NewOrder> = orders.iter().filter(|order| order.external_reference.is_none()).collect();
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<String> = (0..orders.len()).map(|i| order_values(i * ORDER_PARAMETERS)).collect();
    let sql = format!("{INSERT_ORDERS}{} ON CONFLICT DO NOTHING RETURNING *", values.join(", "));
    let mut insert = sqlx::query(&sql);
    for order in &orders {
        insert = bind_new_order(insert, order)?;
    }
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    let rows = insert.fetch_all(&mut *tx).await.map_err(StoreError::Database)?;
    let written = rows.iter().map(order_row).collect::<Result<Vec<_>, _>>()?;
    let written_ids: std::collections::HashSet<&str> = written.iter().map(|row| row.order_id.as_str()).collect();
    let events: Vec<NewEvent> = orders
        .iter()
        .filter(|order| written_ids.contains(order.order_id.as_str()))
        .map(|order| order.event.clone())
        .collect();
    insert_events(&mut tx, &events).await?;
    tx.commit().await.map_err(StoreError::Database)?;
    Ok(written)
}

impl crate::order_writer::WritesOrders for DbPool {
    fn write_together(
        &self,
        orders: &[NewOrder],
    ) -> impl std::future::Future<Output = Result<Vec<OrderRow>, StoreError>> + Send {
        insert_orders_together(self, orders)
    }

    fn write_alone(&self, order: NewOrder) -> impl std::future::Future<Output = Result<OrderRow, StoreError>> + Send {
        insert_order(self, order)
    }
}

fn bind_new_order<'q>(query: DbQuery<'q>, order: &'q NewOrder) -> Result<DbQuery<'q>, StoreError> {
    Ok(query
        .bind(&order.order_id)
        .bind(order.merchant_id.as_str())
        .bind(to_i64(order.chain_id, "chain id")?)
        .bind(&order.blockchain)
        .bind(&order.currency)
        .bind(&order.asset_address)
        .bind(i64::from(order.decimals))
        .bind(order.amount.to_base_units_string())
        .bind(amount_sort_key(order.amount, order.decimals))
        .bind(order.underpayment_tolerance.to_base_units_string())
        .bind(&order.receiving_address)
        .bind(i64::from(order.derivation_index))
        .bind(&order.order_info)
        .bind(order.nonce)
        .bind(&order.webhook_url)
        .bind(&order.redirect_url)
        .bind(&order.idempotency_key)
        .bind(&order.request_hash)
        .bind(order.created_at_ms)
        .bind(order.expires_at_ms)
        .bind(order.monitor_until_ms))
}

/// A payment, its parameters bound by [`bind_payment`].
const INSERT_PAYMENT: &str = "INSERT INTO payments (chain_id, tx_hash, log_index, order_id, asset_address, sender, recipient,
         amount, block_number, block_hash, block_time, orphaned, detected_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE, $12)";

/// Binds `payment` to [`INSERT_PAYMENT`]'s parameters, as paying `order_id`.
fn bind_payment<'q>(query: DbQuery<'q>, chain_id: i64, order_id: &'q str, payment: &'q NewPayment) -> Result<DbQuery<'q>, StoreError> {
    Ok(query
        .bind(chain_id)
        .bind(&payment.tx_hash)
        .bind(payment.log_index)
        .bind(order_id)
        .bind(&payment.asset_address)
        .bind(&payment.sender)
        .bind(&payment.recipient)
        .bind(payment.amount.to_base_units_string())
        .bind(to_i64(payment.block_number, "block number")?)
        .bind(&payment.block_hash)
        .bind(payment.block_time)
        .bind(payment.detected_at_ms))
}

pub(crate) async fn order(pool: &DbPool, order_id: &str) -> Result<OrderRow, StoreError> {
    let row = sqlx::query("SELECT * FROM payment_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify("payment order"))?;
    order_row(&row)
}

pub(crate) async fn order_by_idempotency_key(pool: &DbPool, merchant: &MerchantId, key: &str) -> Result<Option<OrderRow>, StoreError> {
    let query = sqlx::query("SELECT * FROM payment_orders WHERE merchant_id = $1 AND idempotency_key = $2")
        .bind(merchant.as_str())
        .bind(key);
    fetch::optional(pool, query, order_row).await
}

pub(crate) async fn list_orders(pool: &DbPool, query: &OrderQuery) -> Result<(Vec<OrderRow>, u64), StoreError> {
    let order_by = match query.ordering {
        OrderOrdering::NewestFirst => "created_at_ms DESC, id DESC",
        OrderOrdering::OldestFirst => "created_at_ms ASC, id ASC",
        OrderOrdering::AmountAscending => "amount_sort_key ASC, id ASC",
        OrderOrdering::AmountDescending => "amount_sort_key DESC, id DESC",
        OrderOrdering::StatusAscending => "status ASC, id DESC",
        OrderOrdering::StatusDescending => "status DESC, id DESC",
    };
    let filter = "merchant_id = $1
        AND ($2 IS NULL OR status = $2)
        AND ($3 IS NULL OR chain_id = $3)
        AND ($4 IS NULL OR currency = $4)";
    let status = query.status.map(OrderStatus::as_str);
    let chain_id = query.chain_id.map(|id| to_i64(id, "chain id")).transpose()?;
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM payment_orders WHERE {filter}"))
        .bind(query.merchant_id.as_str())
        .bind(status)
        .bind(chain_id)
        .bind(&query.currency)
        .fetch_one(pool)
        .await
        .map_err(StoreError::Database)?;
    let rows = sqlx::query(&format!(
        "SELECT * FROM payment_orders WHERE {filter} ORDER BY {order_by} LIMIT $5 OFFSET $6"
    ))
    .bind(query.merchant_id.as_str())
    .bind(status)
    .bind(chain_id)
    .bind(&query.currency)
    .bind(to_i64(query.limit, "limit")?)
    .bind(to_i64(query.offset, "offset")?)
    .fetch_all(pool)
    .await
    .map_err(StoreError::Database)?;
    let orders = rows.iter().map(order_row).collect::<Result<Vec<_>, _>>()?;
    Ok((orders, to_u64(count, "count")?))
}

pub(crate) async fn watched_orders(pool: &DbPool, chain_id: u64, after_id: i64, now_ms: i64, limit: u64) -> Result<Vec<OrderRow>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM payment_orders
         WHERE chain_id = $1 AND id > $2 AND monitor_until_ms > $3 AND closed = FALSE
         ORDER BY id LIMIT $4",
    )
    .bind(to_i64(chain_id, "chain id")?)
    .bind(after_id)
    .bind(now_ms)
    .bind(to_i64(limit, "limit")?);
    fetch::all(pool, query, order_row).await
}

pub(crate) async fn orders_in_status(pool: &DbPool, chain_id: u64, status: OrderStatus) -> Result<Vec<OrderRow>, StoreError> {
    let query = sqlx::query("SELECT * FROM payment_orders WHERE chain_id = $1 AND status = $2 ORDER BY id")
        .bind(to_i64(chain_id, "chain id")?)
        .bind(status.as_str());
    fetch::all(pool, query, order_row).await
}

pub(crate) async fn orders_due_to_expire(pool: &DbPool, now_ms: i64, limit: u64) -> Result<Vec<OrderRow>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM payment_orders WHERE status = 'pending' AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2",
    )
    .bind(now_ms)
    .bind(to_i64(limit, "limit")?);
    fetch::all(pool, query, order_row).await
}

pub(crate) async fn payments_for_order(pool: &DbPool, order_id: &str) -> Result<Vec<PaymentRow>, StoreError> {
    let query = sqlx::query("SELECT * FROM payments WHERE order_id = $1 ORDER BY block_number, log_index")
        .bind(order_id);
    fetch::all(pool, query, payment_row).await
}

pub(crate) async fn operations_census(pool: &DbPool) -> Result<crate::OperationsCensus, StoreError> {
    let read = StoreError::classify("operations census");
    let read = &read;
    let counts = |sql: &'static str| async move {
        let rows = sqlx::query(sql).fetch_all(pool).await.map_err(StoreError::Database)?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status").map_err(read)?;
                let count: i64 = row.try_get("n").map_err(read)?;
                Ok((status, u64::try_from(count).unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, StoreError>>()
    };
    let deliveries = counts("SELECT status, COUNT(*) AS n FROM webhook_deliveries GROUP BY status ORDER BY status").await?;
    let settlements = counts("SELECT status, COUNT(*) AS n FROM settlements GROUP BY status ORDER BY status").await?;
    let oldest: Option<i64> = sqlx::query("SELECT MIN(created_at_ms) AS oldest FROM webhook_deliveries WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .map_err(StoreError::Database)?
        .try_get("oldest")
        .map_err(read)?;
    let cursors = sqlx::query("SELECT chain_id, block_number, updated_at_ms FROM chain_cursors ORDER BY chain_id")
        .fetch_all(pool)
        .await
        .map_err(StoreError::Database)?
        .iter()
        .map(|row| {
            let chain_id: i64 = row.try_get("chain_id").map_err(read)?;
            let block: i64 = row.try_get("block_number").map_err(read)?;
            let at: i64 = row.try_get("updated_at_ms").map_err(read)?;
            Ok((u64::try_from(chain_id).unwrap_or_default(), u64::try_from(block).unwrap_or_default(), at))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(crate::OperationsCensus { deliveries, oldest_pending_delivery_ms: oldest, settlements, cursors })
}

pub(crate) async fn chain_cursor(pool: &DbPool, chain_id: u64) -> Result<Option<ChainBlock>, StoreError> {
    let query = sqlx::query(
        "SELECT c.block_number, c.block_hash, COALESCE(b.parent_hash, '') AS parent_hash
         FROM chain_cursors c LEFT JOIN chain_blocks b
           ON b.chain_id = c.chain_id AND b.block_number = c.block_number
         WHERE c.chain_id = $1",
    )
    .bind(to_i64(chain_id, "chain id")?);
    fetch::optional(pool, query, block_row).await
}

pub(crate) async fn chain_block(pool: &DbPool, chain_id: u64, number: u64) -> Result<Option<ChainBlock>, StoreError> {
    let query = sqlx::query("SELECT * FROM chain_blocks WHERE chain_id = $1 AND block_number = $2")
        .bind(to_i64(chain_id, "chain id")?)
        .bind(to_i64(number, "block number")?);
    fetch::optional(pool, query, block_row).await
}

async fn apply_updates(tx: &mut Tx<'_>, updates: &[OrderUpdate]) -> Result<(), StoreError> {
    for update in updates {
        let result = sqlx::query(
            "UPDATE payment_orders SET status = $1, sub_status = $2, amount_paid = $3, confirmed_at_ms = $4,
                 closed = $5, updated_at_ms = $6, version = version + 1
             WHERE order_id = $7 AND version = $8",
        )
        .bind(update.status.as_str())
        .bind(update.sub_status.as_str())
        .bind(update.amount_paid.to_base_units_string())
        .bind(update.confirmed_at_ms)
        .bind(update.closed)
        .bind(update.updated_at_ms)
        .bind(&update.order_id)
        .bind(update.expected_version)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::Database)?;
        if result.rows_affected() != 1 {
            return Err(StoreError::Conflict(Constraint::PaymentOrderVersion));
        }
        insert_events(tx, &update.events).await?;
    }
    Ok(())
}

pub(crate) async fn update_orders(pool: &DbPool, updates: &[OrderUpdate]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    apply_updates(&mut tx, updates).await?;
    tx.commit().await.map_err(StoreError::Database)
}

pub(crate) async fn commit_chain_step(pool: &DbPool, step: &ChainStep) -> Result<(), StoreError> {
    let chain_id = to_i64(step.chain_id, "chain id")?;
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    // Only the payments the watcher judged off the chain, and only while they still name the
    // block it judged: a sale recorded beside the watcher during the rewind is not its to orphan.
    for orphan in &step.orphans {
        sqlx::query(
            "UPDATE payments SET orphaned = TRUE
             WHERE chain_id = $1 AND tx_hash = $2 AND log_index = $3 AND block_hash = $4",
        )
        .bind(chain_id)
        .bind(&orphan.tx_hash)
        .bind(orphan.log_index)
        .bind(&orphan.block_hash)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
    }
    if let Some(ancestor) = step.rewind_to {
        let ancestor = to_i64(ancestor, "block number")?;
        sqlx::query("DELETE FROM chain_blocks WHERE chain_id = $1 AND block_number > $2")
            .bind(chain_id)
            .bind(ancestor)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
    }
    for block in &step.blocks {
        sqlx::query(
            "INSERT INTO chain_blocks (chain_id, block_number, block_hash, parent_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT (chain_id, block_number) DO UPDATE SET block_hash = excluded.block_hash,
                 parent_hash = excluded.parent_hash",
        )
        .bind(chain_id)
        .bind(to_i64(block.number, "block number")?)
        .bind(&block.hash)
        .bind(&block.parent_hash)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
    }
    // A payment seen again (a replay, or restored after a reorg) updates its row.
    let upsert = format!(
        "{INSERT_PAYMENT}
         ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET order_id = excluded.order_id,
             asset_address = excluded.asset_address, sender = excluded.sender, recipient = excluded.recipient,
             amount = excluded.amount, block_number = excluded.block_number, block_hash = excluded.block_hash,
             block_time = excluded.block_time, orphaned = FALSE,
             detected_at_ms = CASE WHEN payments.order_id = excluded.order_id
                                   THEN payments.detected_at_ms ELSE excluded.detected_at_ms END
         WHERE payments.orphaned = TRUE OR payments.order_id = excluded.order_id"
    );
    for payment in &step.payments {
        bind_payment(sqlx::query(&upsert), chain_id, &payment.order_id, payment)?
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unique(Constraint::Payment))?;
    }
    apply_updates(&mut tx, &step.order_updates).await?;
    sqlx::query(
        "INSERT INTO chain_cursors (chain_id, block_number, block_hash, updated_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chain_id) DO UPDATE SET block_number = excluded.block_number,
             block_hash = excluded.block_hash, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(chain_id)
    .bind(to_i64(step.cursor.number, "block number")?)
    .bind(&step.cursor.hash)
    .bind(step.now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Database)?;
    let keep_from = step.cursor.number.saturating_sub(step.keep_blocks);
    sqlx::query("DELETE FROM chain_blocks WHERE chain_id = $1 AND block_number < $2")
        .bind(chain_id)
        .bind(to_i64(keep_from, "block number")?)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
    tx.commit().await.map_err(StoreError::Database)
}

pub(crate) async fn events(pool: &DbPool, merchant: &MerchantId, order_id: Option<&str>, limit: u64) -> Result<Vec<EventRow>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM events WHERE merchant_id = $1 AND ($2 IS NULL OR order_id = $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(merchant.as_str())
    .bind(order_id)
    .bind(to_i64(limit, "limit")?);
    fetch::all(pool, query, event_row).await
}

pub(crate) async fn event(pool: &DbPool, event_id: &str) -> Result<EventRow, StoreError> {
    let row = sqlx::query("SELECT * FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify("event"))?;
    event_row(&row)
}

pub(crate) async fn deliveries(pool: &DbPool, merchant: &MerchantId, event_id: Option<&str>, limit: u64) -> Result<Vec<DeliveryRow>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM webhook_deliveries WHERE merchant_id = $1 AND ($2 IS NULL OR event_id = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(merchant.as_str())
    .bind(event_id)
    .bind(to_i64(limit, "limit")?);
    fetch::all(pool, query, delivery_row).await
}

pub(crate) async fn delivery_attempts(pool: &DbPool, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
    let rows = sqlx::query("SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id")
        .bind(delivery_id)
        .fetch_all(pool)
        .await
        .map_err(StoreError::Database)?;
    rows.iter()
        .map(|row| {
            let read = StoreError::classify("webhook attempt");
            let code: Option<i64> = row.try_get("status_code").map_err(&read)?;
            Ok(AttemptRow {
                delivery_id: row.try_get("delivery_id").map_err(&read)?,
                attempted_at_ms: row.try_get("attempted_at_ms").map_err(&read)?,
                status_code: code.and_then(|c| u16::try_from(c).ok()),
                error: row.try_get("error").map_err(&read)?,
                duration_ms: row.try_get("duration_ms").map_err(&read)?,
            })
        })
        .collect()
}

/// A new delivery of an event, due at once.
const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries
             (delivery_id, event_id, merchant_id, url, status, attempts, next_attempt_at_ms, created_at_ms)
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) RETURNING *";

pub(crate) async fn schedule_delivery(pool: &DbPool, event: &EventRow, delivery_id: &str, url: &str, now_ms: i64) -> Result<DeliveryRow, StoreError> {
    let row = sqlx::query(INSERT_DELIVERY)
    .bind(delivery_id)
    .bind(&event.event_id)
    .bind(event.merchant_id.as_str())
    .bind(url)
    .bind(now_ms)
    .fetch_one(pool)
    .await
    .map_err(StoreError::unique(Constraint::WebhookDelivery))?;
    delivery_row(&row)
}

pub(crate) async fn schedule_redelivery(
    pool: &DbPool,
    event: &EventRow,
    delivery_id: &str,
    url: &str,
    now_ms: i64,
    limit: RedeliveryLimit,
) -> Result<Redelivery, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    // Serialises redeliveries of this event: the count below sees every one committed before.
    sqlx::query(LOCK_EVENT_FOR_REDELIVERY)
        .bind(&event.event_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
    let window_start = now_ms.saturating_sub(limit.window_ms);
    let row = sqlx::query(
        "SELECT
             COALESCE(SUM(CASE WHEN status = 'pending'
                               AND (attempts = 0 OR next_attempt_at_ms <= $1 OR locked_until_ms > $1)
                          THEN 1 ELSE 0 END), 0) AS in_flight,
             COALESCE(SUM(CASE WHEN created_at_ms > $2 AND created_at_ms > $3 THEN 1 ELSE 0 END), 0) AS recent,
             MIN(CASE WHEN created_at_ms > $2 AND created_at_ms > $3 THEN created_at_ms END) AS oldest_recent
         FROM webhook_deliveries WHERE event_id = $4",
    )
    .bind(now_ms)
    .bind(event.created_at_ms)
    .bind(window_start)
    .bind(&event.event_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::Database)?;
    let read = StoreError::classify("webhook delivery");
    let in_flight: i64 = row.try_get("in_flight").map_err(&read)?;
    let recent: i64 = row.try_get("recent").map_err(&read)?;
    let oldest_recent: Option<i64> = row.try_get("oldest_recent").map_err(&read)?;
    if in_flight > 0 {
        return Ok(Redelivery::InFlight);
    }
    if recent >= i64::from(limit.per_window) {
        return Ok(Redelivery::Limited {
            retry_at_ms: oldest_recent.unwrap_or(now_ms).saturating_add(limit.window_ms),
        });
    }
    let row = sqlx::query(INSERT_DELIVERY)
    .bind(delivery_id)
    .bind(&event.event_id)
    .bind(event.merchant_id.as_str())
    .bind(url)
    .bind(now_ms)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::unique(Constraint::WebhookDelivery))?;
    let scheduled = delivery_row(&row)?;
    tx.commit().await.map_err(StoreError::Database)?;
    Ok(Redelivery::Scheduled(scheduled))
}

pub(crate) async fn claim_due_deliveries(
    pool: &DbPool,
    sealer: &crate::secrets::Sealer,
    now_ms: i64,
    lease_ms: i64,
    limit: u64,
) -> Result<Vec<DueDelivery>, StoreError> {
    let claimed: Vec<String> = sqlx::query_scalar(CLAIM_DELIVERIES)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(to_i64(limit, "limit")?)
        .fetch_all(pool)
        .await
        .map_err(StoreError::Database)?;
    let mut due = Vec::with_capacity(claimed.len());
    for delivery_id in claimed {
        let row = sqlx::query(
            "SELECT d.*, e.event_type, e.payload, e.format, e.created_at_ms AS event_created_at_ms, m.webhook_secret
             FROM webhook_deliveries d
             JOIN events e ON e.event_id = d.event_id
             JOIN merchants m ON m.id = d.merchant_id
             WHERE d.delivery_id = $1",
        )
        .bind(&delivery_id)
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify("webhook delivery"))?;
        let read = StoreError::classify("webhook delivery");
        let delivery = delivery_row(&row)?;
        let sealed: String = row.try_get("webhook_secret").map_err(&read)?;
        // A secret that does not open (no key, another key, a value moved from another
        // merchant's row) signs nothing: the delivery stays claimed until its lease ends and is
        // tried again then, and the other merchants' deliveries go on.
        let webhook_secret =
            match sealer.open(crate::secrets::MERCHANT_WEBHOOK_SECRET, delivery.merchant_id.as_str(), &sealed) {
                Ok(secret) => secret,
                Err(error) => {
                    tracing::error!(
                        delivery = %delivery.delivery_id, merchant = %delivery.merchant_id, %error,
                        "cannot open the merchant's webhook secret; the delivery waits"
                    );
                    continue;
                }
            };
        due.push(DueDelivery {
            delivery,
            event_type: row.try_get("event_type").map_err(&read)?,
            payload: row.try_get("payload").map_err(&read)?,
            format: webhook_format(&row)?,
            event_created_at_ms: row.try_get("event_created_at_ms").map_err(&read)?,
            webhook_secret,
        });
    }
    Ok(due)
}

pub(crate) async fn record_attempt(pool: &DbPool, outcome: &AttemptOutcome) -> Result<(), StoreError> {
    let attempt = &outcome.attempt;
    let mut tx = pool.begin().await.map_err(StoreError::Database)?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempted_at_ms, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&attempt.delivery_id)
    .bind(attempt.attempted_at_ms)
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(attempt.duration_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::unique(Constraint::WebhookAttempt))?;
    let delivered_at = (outcome.status == DeliveryStatus::Delivered).then_some(attempt.attempted_at_ms);
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_attempt_at_ms = $2,
             locked_until_ms = 0, last_status_code = $3, last_error = $4, delivered_at_ms = $5
         WHERE delivery_id = $6 AND status = 'pending'",
    )
    .bind(outcome.status.as_str())
    .bind(outcome.next_attempt_at_ms)
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(delivered_at)
    .bind(&attempt.delivery_id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Database)?;
    tx.commit().await.map_err(StoreError::Database)
}

#[async_trait::async_trait]
impl crate::Ledger for ThisStore {
    async fn set_wallet(&self, merchant: &MerchantId, chain_id: u64, xpub: &str, now_ms: i64) -> Result<WalletRow, StoreError> {
        set_wallet(&self.pool, merchant, chain_id, xpub, now_ms).await
    }

    async fn wallet(&self, merchant: &MerchantId, chain_id: u64) -> Result<Option<WalletRow>, StoreError> {
        wallet(&self.pool, merchant, chain_id).await
    }

    async fn reserve_address_indexes(&self, wallet: &WalletRow, count: u32) -> Result<u32, StoreError> {
        reserve_address_indexes(&self.pool, wallet, count).await
    }

    async fn insert_order(&self, order: NewOrder) -> Result<OrderRow, StoreError> {
        // Through the store's queue: orders that arrive together are written together.
        self.orders.write(&self.pool, order).await
    }

    async fn order(&self, order_id: &str) -> Result<OrderRow, StoreError> {
        order(&self.pool, order_id).await
    }

    async fn order_by_idempotency_key(&self, merchant: &MerchantId, key: &str) -> Result<Option<OrderRow>, StoreError> {
        order_by_idempotency_key(&self.pool, merchant, key).await
    }

    async fn list_orders(&self, query: &OrderQuery) -> Result<(Vec<OrderRow>, u64), StoreError> {
        list_orders(&self.pool, query).await
    }

    async fn watched_orders(&self, chain_id: u64, after_id: i64, now_ms: i64, limit: u64) -> Result<Vec<OrderRow>, StoreError> {
        watched_orders(&self.pool, chain_id, after_id, now_ms, limit).await
    }

    async fn orders_in_status(&self, chain_id: u64, status: OrderStatus) -> Result<Vec<OrderRow>, StoreError> {
        orders_in_status(&self.pool, chain_id, status).await
    }

    async fn orders_due_to_expire(&self, now_ms: i64, limit: u64) -> Result<Vec<OrderRow>, StoreError> {
        orders_due_to_expire(&self.pool, now_ms, limit).await
    }

    async fn payments_for_order(&self, order_id: &str) -> Result<Vec<PaymentRow>, StoreError> {
        payments_for_order(&self.pool, order_id).await
    }

    async fn update_orders(&self, updates: &[OrderUpdate]) -> Result<(), StoreError> {
        update_orders(&self.pool, updates).await
    }

    async fn chain_cursor(&self, chain_id: u64) -> Result<Option<ChainBlock>, StoreError> {
        chain_cursor(&self.pool, chain_id).await
    }

    async fn operations_census(&self) -> Result<crate::OperationsCensus, StoreError> {
        operations_census(&self.pool).await
    }

    async fn chain_block(&self, chain_id: u64, number: u64) -> Result<Option<ChainBlock>, StoreError> {
        chain_block(&self.pool, chain_id, number).await
    }

    async fn commit_chain_step(&self, step: &ChainStep) -> Result<(), StoreError> {
        commit_chain_step(&self.pool, step).await
    }

    async fn events(&self, merchant: &MerchantId, order_id: Option<&str>, limit: u64) -> Result<Vec<EventRow>, StoreError> {
        events(&self.pool, merchant, order_id, limit).await
    }

    async fn event(&self, event_id: &str) -> Result<EventRow, StoreError> {
        event(&self.pool, event_id).await
    }

    async fn deliveries(&self, merchant: &MerchantId, event_id: Option<&str>, limit: u64) -> Result<Vec<DeliveryRow>, StoreError> {
        deliveries(&self.pool, merchant, event_id, limit).await
    }

    async fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        delivery_attempts(&self.pool, delivery_id).await
    }

    async fn schedule_delivery(&self, event: &EventRow, delivery_id: &str, url: &str, now_ms: i64) -> Result<DeliveryRow, StoreError> {
        schedule_delivery(&self.pool, event, delivery_id, url, now_ms).await
    }

    async fn schedule_redelivery(
        &self,
        event: &EventRow,
        delivery_id: &str,
        url: &str,
        now_ms: i64,
        limit: RedeliveryLimit,
    ) -> Result<Redelivery, StoreError> {
        schedule_redelivery(&self.pool, event, delivery_id, url, now_ms, limit).await
    }

    async fn claim_due_deliveries(&self, now_ms: i64, lease_ms: i64, limit: u64) -> Result<Vec<DueDelivery>, StoreError> {
        claim_due_deliveries(&self.pool, &self.sealer, now_ms, lease_ms, limit).await
    }

    async fn record_attempt(&self, outcome: &AttemptOutcome) -> Result<(), StoreError> {
        record_attempt(&self.pool, outcome).await
    }
}

pub(crate) async fn orders_paid_after(pool: &DbPool, chain_id: u64, block_number: u64) -> Result<Vec<OrderRow>, StoreError> {
    let query = sqlx::query(
        "SELECT * FROM payment_orders WHERE order_id IN
             (SELECT order_id FROM payments WHERE chain_id = $1 AND block_number > $2 AND orphaned = FALSE)
         ORDER BY id",
    )
    .bind(to_i64(chain_id, "chain id")?)
    .bind(to_i64(block_number, "block number")?);
    fetch::all(pool, query, order_row).await
}

#[async_trait::async_trait]
impl crate::ReorgQueries for ThisStore {
    async fn orders_paid_after(&self, chain_id: u64, block_number: u64) -> Result<Vec<OrderRow>, StoreError> {
        orders_paid_after(&self.pool, chain_id, block_number).await
    }

    async fn payment_blocks_at_or_below(&self, chain_id: u64, block_number: u64, limit: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT block_number, block_hash FROM payments
             WHERE chain_id = $1 AND block_number <= $2 AND orphaned = FALSE
             ORDER BY block_number DESC LIMIT $3",
        )
        .bind(to_i64(chain_id, "chain id")?)
        .bind(to_i64(block_number, "block number")?)
        .bind(to_i64(limit, "limit")?)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter()
            .map(|row| {
                let read = StoreError::classify("payment block");
                let number: i64 = row.try_get("block_number").map_err(&read)?;
                Ok((to_u64(number, "block number")?, row.try_get("block_hash").map_err(&read)?))
            })
            .collect()
    }
}
