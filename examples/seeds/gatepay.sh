#!/usr/bin/env bash
# GatePay — "Place Checkout Order", the document's curl example sent as printed to a running
# `coffer dev` (scripts/dev.sh), on the chain it names: Polygon (chain "MATIC", USDT_MATIC).
#
# Filled in, because the document leaves them as placeholders: the host
# (http://sandbox.mintlify.com → coffer dev's API) and the four X-GatePay-* headers — the
# demo merchant's ClientId from the summary, a fresh millisecond timestamp and nonce, and the
# HMAC-SHA512 signature over them and the body. The path and the body are byte for byte the
# document's, whitespace included.
#
# Where the document contradicts itself, Coffer follows its example answer: the request has no
# orderAmount and the answer shows "orderAmount": "1", so the order is for 1 USDT; the answer's
# `chain` block says BSC / USDT_EOS, Coffer's says MATIC / USDT_MATIC, the chain asked for.
# merchantTradeNo "163" must be unique per merchant: run again and the answer is GatePay's
# 400201 ORDER_EXISTS (`coffer dev --fresh` starts over, or set MERCHANT_TRADE_NO).
#
# Then, beyond the document: payer 0 sends the order's payAmount of Polygon USDT to the address
# in the answer, and "Query Order" is asked until the order is PAID.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST="$(devkit get api_base_url)"
CLIENT_ID="$(devkit get gatepay.client_id)"
sign() { devkit gatepay-sign "$1" "$2" "$3"; }

body='
{
  "merchantTradeNo": "163",
  "env": {
    "terminalType": "APP"
  },
  "merchantUserId": 123,
  "goods": {
    "goodsType": "02",
    "goodsName": "Sipariş Ödemesi - 177",
    "goodsDetail": "Sipariş No : 160"
  },
  "chain": "MATIC",
  "fullCurrType": "USDT_MATIC"
}
'
if [[ -n "${MERCHANT_TRADE_NO:-}" ]]; then
    body="${body/\"163\"/\"$MERCHANT_TRADE_NO\"}"
fi
request="$body"
timestamp="$(date +%s%3N)"
nonce="$RANDOM$RANDOM"
signature="$(sign "$timestamp" "$nonce" "$request")"

note "POST $HOST/v1/pay/checkout/order (the document's example)"
send "place checkout order" --request POST \
  --url "$HOST/v1/pay/checkout/order" \
  --header 'Content-Type: application/json' \
  --header "X-GatePay-Certificate-ClientId: $CLIENT_ID" \
  --header "X-GatePay-Nonce: $nonce" \
  --header "X-GatePay-Signature: $signature" \
  --header "X-GatePay-Timestamp: $timestamp" \
  --data "$request"
[[ "$status" == 200 ]] || exit 1

prepay_id="$(devkit pick data.prepayId <<<"$body")"
address="$(devkit pick data.chain.address <<<"$body")"
pay_amount="$(devkit pick data.payAmount <<<"$body")"
units="$(devkit units polygon USDT "$pay_amount")"
note "paying $pay_amount USDT on the local Polygon chain to $address"
tx="$(devkit transfer polygon USDT 0 "$address" "$units")"
note "sent in $tx; asking Query Order until it is PAID"

query="{\"prepayId\":\"$prepay_id\"}"
for _ in $(seq 1 60); do
    timestamp="$(date +%s%3N)"
    nonce="$RANDOM$RANDOM"
    line="$(send "query order" --request POST \
      --url "$HOST/v1/pay/order/query" \
      --header 'Content-Type: application/json' \
      --header "X-GatePay-Certificate-ClientId: $CLIENT_ID" \
      --header "X-GatePay-Nonce: $nonce" \
      --header "X-GatePay-Signature: $(sign "$timestamp" "$nonce" "$query")" \
      --header "X-GatePay-Timestamp: $timestamp" \
      --data "$query")"
    if [[ "$(devkit pick body.data.status <<<"$line")" == PAID ]]; then
        printf '%s\n' "$line"
        exit 0
    fi
    sleep 1
done
printf '%s\n' "$line"
note "the order was not PAID within 60 s"
exit 1
