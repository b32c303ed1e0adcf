// GatePay credentials, nonces, orders, refunds and fiat quotes, compiled once per backend (see
// `crate::shared_sql`). The backend's `BEGIN_REFUND` starts a refund's transaction and its
// `LOCK_REFUNDED_ORDER` reads the refunded order and holds it until the transaction ends.

use coffer_core::{Amount, MerchantId, OrderStatus};
use sqlx::Row;

use crate::{Constraint, StoreError};
use crate::checkout::{GatePayCredentialRow, GatePayOrderRow, GatePayRefundRow, OrderQuoteRow, RefundDecision};
use crate::fetch;
use crate::rows::merchant_id;
use crate::secrets::{GATEPAY_SECRET, Sealer};

fn stored_amount(text: &str, what: &'static str) -> Result<Amount, StoreError> {
    Amount::from_base_units_str(text).map_err(|error| StoreError::Corrupt { what, detail: format!("{text:?}: {error}") })
}

/// A stored GatePay credential, its secret opened.
fn credential_row(sealer: &Sealer, row: &DbRow) -> Result<GatePayCredentialRow, StoreError> {
    let read = StoreError::classify("GatePay credential");
    let client_id: String = row.try_get("client_id").map_err(&read)?;
    let sealed: String = row.try_get("secret").map_err(&read)?;
    Ok(GatePayCredentialRow {
        secret: sealer.open(GATEPAY_SECRET, &client_id, &sealed)?,
        client_id,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        revoked_at_ms: row.try_get("revoked_at_ms").map_err(&read)?,
    })
}

/// GatePay's names for an order, bound by [`bind_gatepay_order`]; written by the order's own
/// transaction (see `ledger::insert_order`).
pub(super) const INSERT_GATEPAY_ORDER: &str = "INSERT INTO gatepay_orders (prepay_id, merchant_id, merchant_trade_no, order_id, client_id,
         created_at_ms, terminal_type, goods_type, goods_name, goods_detail, merchant_user_id, channel_id, surcharge_amount, cancel_url)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Binds `order` to [`INSERT_GATEPAY_ORDER`]'s parameters.
pub(super) fn bind_gatepay_order<'q>(
    query: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>,
    order: &'q GatePayOrderRow,
) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>> {
    query
        .bind(&order.prepay_id)
        .bind(order.merchant_id.as_str())
        .bind(&order.merchant_trade_no)
        .bind(&order.order_id)
        .bind(&order.client_id)
        .bind(order.created_at_ms)
        .bind(&order.terminal_type)
        .bind(&order.goods_type)
        .bind(&order.goods_name)
        .bind(&order.goods_detail)
        .bind(order.merchant_user_id)
        .bind(&order.channel_id)
        .bind(order.surcharge_amount.to_base_units_string())
        .bind(&order.cancel_url)
}

/// Classifies a unique violation on `gatepay_orders`: the trade number is the one a caller
/// can act on; otherwise the (random) prepay id was taken.
pub(super) fn gatepay_order_conflict(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
            StoreError::Conflict(if text.contains("merchant_trade_no") { Constraint::MerchantTradeNo } else { Constraint::PrepayId })
        }
        _ => StoreError::Database(error),
    }
}

fn order_row(row: &DbRow) -> Result<GatePayOrderRow, StoreError> {
    let read = StoreError::classify("GatePay order");
    Ok(GatePayOrderRow {
        prepay_id: row.try_get("prepay_id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        merchant_trade_no: row.try_get("merchant_trade_no").map_err(&read)?,
        order_id: row.try_get("order_id").map_err(&read)?,
        client_id: row.try_get("client_id").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        terminal_type: row.try_get("terminal_type").map_err(&read)?,
        goods_type: row.try_get("goods_type").map_err(&read)?,
        goods_name: row.try_get("goods_name").map_err(&read)?,
        goods_detail: row.try_get("goods_detail").map_err(&read)?,
        merchant_user_id: row.try_get("merchant_user_id").map_err(&read)?,
        channel_id: row.try_get("channel_id").map_err(&read)?,
        surcharge_amount: stored_amount(&row.try_get::<String, _>("surcharge_amount").map_err(&read)?, "GatePay surcharge")?,
        cancel_url: row.try_get("cancel_url").map_err(&read)?,
    })
}

fn refund_row(row: &DbRow) -> Result<GatePayRefundRow, StoreError> {
    let read = StoreError::classify("GatePay refund");
    Ok(GatePayRefundRow {
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        refund_request_id: row.try_get("refund_request_id").map_err(&read)?,
        prepay_id: row.try_get("prepay_id").map_err(&read)?,
        refund_amount: stored_amount(&row.try_get::<String, _>("refund_amount").map_err(&read)?, "refund amount")?,
        refund_reason: row.try_get("refund_reason").map_err(&read)?,
        status: row.try_get("status").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

fn quote_row(row: &DbRow) -> Result<OrderQuoteRow, StoreError> {
    let read = StoreError::classify("order quote");
    Ok(OrderQuoteRow {
        order_id: row.try_get("order_id").map_err(&read)?,
        fiat_currency: row.try_get("fiat_currency").map_err(&read)?,
        fiat_amount: row.try_get("fiat_amount").map_err(&read)?,
        rate: row.try_get("rate").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

#[async_trait::async_trait]
impl crate::Checkout for ThisStore {
    async fn insert_gatepay_credential(&self, credential: &GatePayCredentialRow) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(GATEPAY_SECRET, &credential.client_id, &credential.secret)?;
        sqlx::query(
            "INSERT INTO gatepay_credentials (client_id, merchant_id, secret, created_at_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&credential.client_id)
        .bind(credential.merchant_id.as_str())
        .bind(&sealed)
        .bind(credential.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(StoreError::unique(Constraint::GatePayCredential))
    }

    async fn gatepay_credential(&self, client_id: &str) -> Result<Option<GatePayCredentialRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_credentials WHERE client_id = $1")
            .bind(client_id);
        fetch::optional(&self.pool, query, |row| credential_row(&self.sealer, row)).await
    }

    async fn gatepay_credentials(&self, merchant: &MerchantId) -> Result<Vec<GatePayCredentialRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_credentials WHERE merchant_id = $1 ORDER BY created_at_ms, client_id")
            .bind(merchant.as_str());
        fetch::all(&self.pool, query, |row| credential_row(&self.sealer, row)).await
    }

    async fn revoke_gatepay_credential(&self, client_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE gatepay_credentials SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE client_id = $2",
        )
        .bind(now_ms)
        .bind(client_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        if updated.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound("GatePay credential")) }
    }

    async fn use_gatepay_nonce(&self, client_id: &str, nonce: &str, now_ms: i64, forget_before_ms: i64) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM gatepay_nonces WHERE seen_at_ms < $1")
            .bind(forget_before_ms)
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        let inserted = sqlx::query(
            "INSERT INTO gatepay_nonces (client_id, nonce, seen_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (client_id, nonce) DO NOTHING",
        )
        .bind(client_id)
        .bind(nonce)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn insert_gatepay_order(&self, order: &GatePayOrderRow) -> Result<(), StoreError> {
        bind_gatepay_order(sqlx::query(INSERT_GATEPAY_ORDER), order)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(gatepay_order_conflict)
    }

    async fn delete_gatepay_order(&self, prepay_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM gatepay_orders WHERE prepay_id = $1")
            .bind(prepay_id)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StoreError::Database)
    }

    async fn gatepay_order_by_prepay_id(&self, merchant: &MerchantId, prepay_id: &str) -> Result<Option<GatePayOrderRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_orders WHERE merchant_id = $1 AND prepay_id = $2")
            .bind(merchant.as_str())
            .bind(prepay_id);
        fetch::optional(&self.pool, query, order_row).await
    }

    async fn gatepay_order_by_trade_no(&self, merchant: &MerchantId, merchant_trade_no: &str) -> Result<Option<GatePayOrderRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_orders WHERE merchant_id = $1 AND merchant_trade_no = $2")
            .bind(merchant.as_str())
            .bind(merchant_trade_no);
        fetch::optional(&self.pool, query, order_row).await
    }

    async fn gatepay_order_of(&self, order_id: &str) -> Result<Option<GatePayOrderRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_orders WHERE order_id = $1")
            .bind(order_id);
        fetch::optional(&self.pool, query, order_row).await
    }

    async fn record_gatepay_refund(&self, refund: &GatePayRefundRow) -> Result<RefundDecision, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_REFUND).await.map_err(StoreError::Database)?;
        let Some(order) = sqlx::query(LOCK_REFUNDED_ORDER)
            .bind(refund.merchant_id.as_str())
            .bind(&refund.prepay_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::Database)?
        else {
            return Ok(RefundDecision::UnknownOrder);
        };
        let read = StoreError::classify("refunded order");
        let status: String = order.try_get("status").map_err(&read)?;
        let status: OrderStatus = status
            .parse()
            .map_err(|error| StoreError::Corrupt { what: "order status", detail: format!("{error}") })?;
        if status != OrderStatus::Confirmed {
            return Ok(RefundDecision::NotPaid(status));
        }
        let paid = stored_amount(&order.try_get::<String, _>("amount_paid").map_err(&read)?, "amount paid")?;
        let earlier: Vec<String> = sqlx::query_scalar(
            "SELECT refund_amount FROM gatepay_refunds WHERE merchant_id = $1 AND prepay_id = $2",
        )
        .bind(refund.merchant_id.as_str())
        .bind(&refund.prepay_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
        // Saturating: a sum past the largest amount is more than anything paid.
        let mut total = refund.refund_amount;
        for text in &earlier {
            let amount = stored_amount(text, "refund amount")?;
            total = total.checked_add(amount).unwrap_or(Amount::from_base_units(coffer_core::U256::MAX));
        }
        if total > paid {
            return Ok(RefundDecision::MoreThanPaid { total, paid });
        }
        sqlx::query(
            "INSERT INTO gatepay_refunds (merchant_id, refund_request_id, prepay_id, refund_amount, refund_reason, status, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(refund.merchant_id.as_str())
        .bind(&refund.refund_request_id)
        .bind(&refund.prepay_id)
        .bind(refund.refund_amount.to_base_units_string())
        .bind(&refund.refund_reason)
        .bind(&refund.status)
        .bind(refund.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique(Constraint::RefundRequestId))?;
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(RefundDecision::Recorded)
    }

    async fn gatepay_refund(&self, merchant: &MerchantId, refund_request_id: &str) -> Result<Option<GatePayRefundRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_refunds WHERE merchant_id = $1 AND refund_request_id = $2")
            .bind(merchant.as_str())
            .bind(refund_request_id);
        fetch::optional(&self.pool, query, refund_row).await
    }

    async fn gatepay_refunds_for(&self, merchant: &MerchantId, prepay_id: &str) -> Result<Vec<GatePayRefundRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM gatepay_refunds WHERE merchant_id = $1 AND prepay_id = $2 ORDER BY created_at_ms, refund_request_id")
            .bind(merchant.as_str())
            .bind(prepay_id);
        fetch::all(&self.pool, query, refund_row).await
    }

    async fn insert_order_quote(&self, quote: &OrderQuoteRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO order_quotes (order_id, fiat_currency, fiat_amount, rate, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&quote.order_id)
        .bind(&quote.fiat_currency)
        .bind(&quote.fiat_amount)
        .bind(&quote.rate)
        .bind(quote.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(StoreError::unique(Constraint::OrderQuote))
    }

    async fn order_quote(&self, order_id: &str) -> Result<Option<OrderQuoteRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM order_quotes WHERE order_id = $1")
            .bind(order_id);
        fetch::optional(&self.pool, query, quote_row).await
    }
}
