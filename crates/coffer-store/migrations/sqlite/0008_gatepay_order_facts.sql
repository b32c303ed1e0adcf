-- What Coffer knows about a GatePay order lives with GatePay's names for it, never in the
-- order's `order_info` (the merchant's free text). Whether an order is a GatePay order is
-- whether it has a row here; the credential that signs its notifications is `client_id`.
ALTER TABLE gatepay_orders ADD COLUMN terminal_type TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_type TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_name TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN goods_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE gatepay_orders ADD COLUMN merchant_user_id INTEGER;
ALTER TABLE gatepay_orders ADD COLUMN channel_id TEXT NOT NULL DEFAULT '';
-- Base units of the order's token (the order's amount includes it).
ALTER TABLE gatepay_orders ADD COLUMN surcharge_amount TEXT NOT NULL DEFAULT '0';
ALTER TABLE gatepay_orders ADD COLUMN cancel_url TEXT;

-- GatePay orders made before this migration kept these facts in their order's `order_info`
-- (`{"gatepay":{…}}`, written by Coffer): copy them here. Only orders that have a row in
-- `gatepay_orders` are touched; a payment order whose `order_info` merely looks like that
-- stays an ordinary order. The surcharge was a decimal in token units; it becomes base units.
UPDATE gatepay_orders
SET terminal_type = COALESCE(legacy.terminal_type, ''),
    goods_type = COALESCE(legacy.goods_type, ''),
    goods_name = COALESCE(legacy.goods_name, ''),
    goods_detail = COALESCE(legacy.goods_detail, ''),
    merchant_user_id = legacy.merchant_user_id,
    channel_id = COALESCE(legacy.channel_id, ''),
    cancel_url = legacy.cancel_url,
    surcharge_amount = CASE
        WHEN legacy.surcharge IS NULL OR legacy.surcharge = '' THEN '0'
        ELSE COALESCE(NULLIF(ltrim(
            CASE WHEN instr(legacy.surcharge, '.') = 0
                 THEN legacy.surcharge || substr(legacy.zeros, 1, legacy.decimals)
                 ELSE substr(legacy.surcharge, 1, instr(legacy.surcharge, '.') - 1)
                      || substr(substr(legacy.surcharge, instr(legacy.surcharge, '.') + 1)
                                || legacy.zeros, 1, legacy.decimals)
            END, '0'), ''), '0')
        END
FROM (
    SELECT order_id,
           decimals,
           '000000000000000000000000000000000000000000000000000000000000000000000000000000' AS zeros,
           json_extract(info, '$.gatepay.terminalType') AS terminal_type,
           json_extract(info, '$.gatepay.goodsType') AS goods_type,
           json_extract(info, '$.gatepay.goodsName') AS goods_name,
           json_extract(info, '$.gatepay.goodsDetail') AS goods_detail,
           json_extract(info, '$.gatepay.merchantUserId') AS merchant_user_id,
           json_extract(info, '$.gatepay.channelId') AS channel_id,
           json_extract(info, '$.gatepay.cancelUrl') AS cancel_url,
           CAST(json_extract(info, '$.gatepay.surchargeAmount') AS TEXT) AS surcharge
    FROM (
        SELECT order_id, decimals,
               CASE WHEN json_valid(order_info) THEN order_info ELSE '{}' END AS info
        FROM payment_orders
        WHERE order_info LIKE '{"gatepay"%'
    )
) AS legacy
WHERE legacy.order_id = gatepay_orders.order_id;

-- A refund is checked against the order's earlier refunds.
CREATE INDEX gatepay_refunds_by_order ON gatepay_refunds (merchant_id, prepay_id);
