-- What Coffer knows about a GatePay order lives with GatePay's names for it, never in the
-- order's `order_info` (the merchant's free text). Whether an order is a GatePay order is
-- whether it has a row here; the credential that signs its notifications is `client_id`.
ALTER TABLE gatepay_orders ADD COLUMN terminal_type TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_type TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_name TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN merchant_user_id BIGINT;
ALTER TABLE gatepay_orders ADD COLUMN channel_id TEXT NOT NULL DEFAULT '';
-- Base units of the order's token (the order's amount includes it).
ALTER TABLE gatepay_orders ADD COLUMN surcharge_amount TEXT NOT NULL DEFAULT '0';
ALTER TABLE gatepay_orders ADD COLUMN cancel_url TEXT;

-- GatePay orders made before this migration kept these facts in their order's `order_info`
-- (`{"gatepay":{…}}`, written by Coffer): copy them here. Only orders that have a row in
-- `gatepay_orders` are touched; a payment order whose `order_info` merely looks like that
-- stays an ordinary order. The surcharge was a decimal in token units; it becomes base units.
-- (Materialized, so that only those orders' `order_info` is read as JSON; `\u0000`, which
-- jsonb refuses, is read as U+FFFD.)
WITH legacy AS MATERIALIZED (
    SELECT order_id, decimals,
           replace(order_info, E'\\u0000', E'\\ufffd')::jsonb -> 'gatepay' AS facts
    FROM payment_orders
    WHERE order_id IN (SELECT order_id FROM gatepay_orders)
      AND order_info LIKE '{"gatepay"%'
)
UPDATE gatepay_orders
SET terminal_type = COALESCE(legacy.facts ->> 'terminalType', ''),
    goods_type = COALESCE(legacy.facts ->> 'goodsType', ''),
    goods_name = COALESCE(legacy.facts ->> 'goodsName', ''),
    goods_detail = COALESCE(legacy.facts ->> 'goodsDetail', ''),
    merchant_user_id = CASE WHEN jsonb_typeof(legacy.facts -> 'merchantUserId') = 'number'
                            THEN (legacy.facts ->> 'merchantUserId')::BIGINT END,
    channel_id = COALESCE(legacy.facts ->> 'channelId', ''),
    cancel_url = legacy.facts ->> 'cancelUrl',
    surcharge_amount = CASE
        WHEN COALESCE(legacy.facts ->> 'surchargeAmount', '') = '' THEN '0'
        ELSE COALESCE(NULLIF(ltrim(
            split_part(legacy.facts ->> 'surchargeAmount', '.', 1)
            || rpad(split_part(legacy.facts ->> 'surchargeAmount', '.', 2), legacy.decimals::INTEGER, '0'),
            '0'), ''), '0')
        END
FROM legacy
WHERE legacy.order_id = gatepay_orders.order_id
  AND jsonb_typeof(legacy.facts) = 'object';

-- A refund is checked against the order's earlier refunds.
CREATE INDEX gatepay_refunds_by_order ON gatepay_refunds (merchant_id, prepay_id);
