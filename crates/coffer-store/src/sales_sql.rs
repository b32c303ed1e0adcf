// x402 sales: compiled inside each backend's ledger module (after `orders_sql.rs`, whose helpers
// and imports it uses), so that a sale's order, payment and events share one transaction.

fn pay_to_row(row: &DbRow) -> Result<crate::sale_rows::PayToRow, StoreError> {
    let read = StoreError::classify("payTo address");
    Ok(crate::sale_rows::PayToRow {
        chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
        address: row.try_get("address").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

fn sale_row(row: &DbRow) -> Result<crate::sale_rows::SaleRow, StoreError> {
    let read = StoreError::classify("x402 sale");
    Ok(crate::sale_rows::SaleRow {
        order_id: row.try_get("order_id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        kind: row.try_get("kind").map_err(&read)?,
        chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
        token: row.try_get("token").map_err(&read)?,
        payer: row.try_get("payer").map_err(&read)?,
        auth_nonce: row.try_get("auth_nonce").map_err(&read)?,
        tx_hash: row.try_get("tx_hash").map_err(&read)?,
        log_index: row.try_get("log_index").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

/// A sale's order: the columns [`bind_new_order`] binds, then how much is paid, the status,
/// when it was confirmed and where the order came from.
const INSERT_SALE_ORDER: &str = "INSERT INTO payment_orders (
         order_id, merchant_id, chain_id, blockchain, currency, asset_address, decimals, amount, amount_sort_key,
         underpayment_tolerance, receiving_address, derivation_index, order_info, nonce, webhook_url, redirect_url,
         idempotency_key, request_hash, created_at_ms, expires_at_ms, monitor_until_ms,
         amount_paid, status, confirmed_at_ms, source, sub_status, closed, updated_at_ms, version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
             $22, $23, $24, $25, NULL, FALSE, $19, 0)
     RETURNING *";

async fn insert_sale_order_in(
    tx: &mut Tx<'_>,
    order: &NewOrder,
    source: crate::sale_rows::OrderSource,
    paid: Option<bool>,
) -> Result<OrderRow, StoreError> {
    // Unpaid (`None`), or paid and confirmed (`Some(true)`) or still confirming.
    let (status, paid, confirmed_at) = match paid {
        Some(true) => ("confirmed", order.amount, Some(order.created_at_ms)),
        Some(false) => ("processing", order.amount, None),
        None => ("pending", Amount::ZERO, None),
    };
    let row = bind_new_order(sqlx::query(INSERT_SALE_ORDER), order)?
        .bind(paid.to_base_units_string())
        .bind(status)
        .bind(confirmed_at)
        .bind(source.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(order_conflict)?;
    let stored = order_row(&row)?;
    insert_events(tx, std::slice::from_ref(&order.event)).await?;
    Ok(stored)
}

async fn sale_by_authorization(
    tx: &mut Tx<'_>,
    chain_id: i64,
    token: &str,
    payer: &str,
    auth_nonce: &str,
) -> Result<Option<OrderRow>, StoreError> {
    let query = sqlx::query(
        "SELECT o.* FROM x402_sales s JOIN payment_orders o ON o.order_id = s.order_id
         WHERE s.chain_id = $1 AND s.token = $2 AND s.payer = $3 AND s.auth_nonce = $4",
    )
    .bind(chain_id)
    .bind(token)
    .bind(payer)
    .bind(auth_nonce);
    fetch::optional(&mut **tx, query, order_row).await
}

async fn record_sale_in(tx: &mut Tx<'_>, sale: &crate::sale_rows::NewSale) -> Result<crate::sale_rows::Recorded, StoreError> {
    use crate::sale_rows::{Recorded, SaleOrder, SaleProof};
    let payment = &sale.payment;
    let chain_id = to_i64(payment.chain_id, "chain id")?;
    let token = payment.asset_address.clone().unwrap_or_default();
    let payer = payment.sender.to_ascii_lowercase();
    let auth_nonce = match &sale.proof {
        SaleProof::Authorization { auth_nonce } => {
            if let Some(order) = sale_by_authorization(tx, chain_id, &token, &payer, auth_nonce).await? {
                return Ok(Recorded::Already(order));
            }
            Some(auth_nonce.as_str())
        }
        SaleProof::Transfer => None,
    };
    let order = match &sale.order {
        SaleOrder::New(order) => insert_sale_order_in(tx, order, sale.source, Some(sale.confirmed)).await?,
        SaleOrder::Existing {
            order_id,
            expected_version,
            chain_id: paid_chain,
            blockchain,
            currency,
            asset_address,
            decimals,
            amount,
            receiving_address,
        } => {
            let row = sqlx::query(
                "UPDATE payment_orders SET status = $13, sub_status = NULL, amount_paid = $1,
                     confirmed_at_ms = $14, updated_at_ms = $2, version = version + 1, chain_id = $3, blockchain = $4,
                     currency = $5, asset_address = $6, decimals = $7, amount = $8, amount_sort_key = $9,
                     receiving_address = $10
                 WHERE order_id = $11 AND version = $12 AND status IN ('pending', 'expired') AND source <> 'deposit'
                 RETURNING *",
            )
            .bind(payment.amount.to_base_units_string())
            .bind(sale.now_ms)
            .bind(to_i64(*paid_chain, "chain id")?)
            .bind(blockchain)
            .bind(currency)
            .bind(asset_address)
            .bind(i64::from(*decimals))
            .bind(amount.to_base_units_string())
            .bind(amount_sort_key(*amount, *decimals))
            .bind(receiving_address)
            .bind(order_id)
            .bind(expected_version)
            .bind(if sale.confirmed { "confirmed" } else { "processing" })
            .bind(sale.confirmed.then_some(sale.now_ms))
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::Database)?;
            match row {
                Some(row) => order_row(&row)?,
                None => return Err(StoreError::Conflict(Constraint::PaymentOrderVersion)),
            }
        }
    };
    bind_payment(sqlx::query(INSERT_PAYMENT), chain_id, &order.order_id, payment)?
        .execute(&mut **tx)
        .await
        .map_err(StoreError::unique(Constraint::Payment))?;
    sqlx::query(
        "INSERT INTO x402_sales (order_id, merchant_id, kind, chain_id, token, payer, auth_nonce, tx_hash, log_index,
             created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&order.order_id)
    .bind(sale.merchant_id.as_str())
    .bind(if auth_nonce.is_some() { "authorization" } else { "transfer" })
    .bind(chain_id)
    .bind(&token)
    .bind(&payer)
    .bind(auth_nonce)
    .bind(&payment.tx_hash)
    .bind(payment.log_index)
    .bind(sale.now_ms)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::unique(Constraint::X402Sale))?;
    insert_events(tx, &sale.events).await?;
    Ok(Recorded::New(order))
}

#[async_trait::async_trait]
impl crate::Sales for ThisStore {
    async fn add_pay_to(&self, row: &crate::sale_rows::PayToRow) -> Result<(), StoreError> {
        let chain_id = to_i64(row.chain_id, "chain id")?;
        let inserted = sqlx::query(
            "INSERT INTO x402_pay_to (chain_id, address, merchant_id, created_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (chain_id, address) DO NOTHING",
        )
        .bind(chain_id)
        .bind(&row.address)
        .bind(row.merchant_id.as_str())
        .bind(row.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound("merchant"),
            _ => StoreError::Database(error),
        })?;
        if inserted.rows_affected() == 1 {
            return Ok(());
        }
        match crate::Sales::pay_to_owner(self, row.chain_id, &row.address).await? {
            Some(owner) if owner.merchant_id == row.merchant_id => Ok(()),
            _ => Err(StoreError::Conflict(Constraint::PayToAddress)),
        }
    }

    async fn remove_pay_to(&self, merchant: &MerchantId, chain_id: u64, address: &str) -> Result<(), StoreError> {
        let removed = sqlx::query("DELETE FROM x402_pay_to WHERE merchant_id = $1 AND chain_id = $2 AND address = $3")
            .bind(merchant.as_str())
            .bind(to_i64(chain_id, "chain id")?)
            .bind(address)
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound("payTo address"));
        }
        Ok(())
    }

    async fn pay_to_owner(&self, chain_id: u64, address: &str) -> Result<Option<crate::sale_rows::PayToRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM x402_pay_to WHERE chain_id = $1 AND address = $2")
            .bind(to_i64(chain_id, "chain id")?)
            .bind(address);
        fetch::optional(&self.pool, query, pay_to_row).await
    }

    async fn pay_tos(&self, merchant: &MerchantId) -> Result<Vec<crate::sale_rows::PayToRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM x402_pay_to WHERE merchant_id = $1 ORDER BY chain_id, created_at_ms, address")
            .bind(merchant.as_str());
        fetch::all(&self.pool, query, pay_to_row).await
    }

    async fn insert_sale_order(&self, order: &NewOrder, source: crate::sale_rows::OrderSource) -> Result<OrderRow, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let stored = insert_sale_order_in(&mut tx, order, source, None).await?;
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(stored)
    }

    async fn record_sale(&self, sale: &crate::sale_rows::NewSale) -> Result<crate::sale_rows::Recorded, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        match record_sale_in(&mut tx, sale).await {
            Ok(recorded) => {
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(recorded)
            }
            // A concurrent call recorded the same authorization first: answer with its order.
            Err(StoreError::Conflict(what @ (Constraint::X402Sale | Constraint::Payment))) => {
                drop(tx);
                let crate::sale_rows::SaleProof::Authorization { auth_nonce } = &sale.proof else {
                    return Err(StoreError::Conflict(what));
                };
                let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
                let token = sale.payment.asset_address.clone().unwrap_or_default();
                let chain_id = to_i64(sale.payment.chain_id, "chain id")?;
                let payer = sale.payment.sender.to_ascii_lowercase();
                let found = sale_by_authorization(&mut tx, chain_id, &token, &payer, auth_nonce).await?;
                found.map(crate::sale_rows::Recorded::Already).ok_or(StoreError::Conflict(what))
            }
            Err(error) => Err(error),
        }
    }

    async fn sale_for_order(&self, order_id: &str) -> Result<Option<crate::sale_rows::SaleRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM x402_sales WHERE order_id = $1")
            .bind(order_id);
        fetch::optional(&self.pool, query, sale_row).await
    }

    async fn order_paid_by(&self, chain_id: u64, tx_hash: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT order_id FROM payments WHERE chain_id = $1 AND tx_hash = $2 ORDER BY log_index LIMIT 1")
            .bind(to_i64(chain_id, "chain id")?)
            .bind(tx_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::Database)
    }

    async fn unrecorded_settlements(&self, limit: u64) -> Result<Vec<crate::SettlementKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.chain_id, s.token, s.payer, s.auth_nonce FROM settlements s
             JOIN x402_pay_to p ON p.chain_id = s.chain_id AND p.address = LOWER(s.pay_to)
             WHERE s.status = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM x402_sales x WHERE x.chain_id = s.chain_id AND x.token = s.token
                               AND x.payer = s.payer AND x.auth_nonce = s.auth_nonce)
             ORDER BY s.id LIMIT $1",
        )
        .bind(to_i64(limit, "limit")?)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter()
            .map(|row| {
                let read = StoreError::classify("settlement");
                Ok(crate::SettlementKey {
                    chain_id: to_u64(row.try_get("chain_id").map_err(&read)?, "chain id")?,
                    token: row.try_get("token").map_err(&read)?,
                    payer: row.try_get("payer").map_err(&read)?,
                    auth_nonce: row.try_get("auth_nonce").map_err(&read)?,
                })
            })
            .collect()
    }
}
