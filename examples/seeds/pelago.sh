#!/usr/bin/env bash
# Pelago — "Create or Confirm Order" (Crypto For X402), the document's curl example sent as
# printed to a running `coffer dev` (scripts/dev.sh), on the network it names: bsc-mainnet
# (the local BNB Smart Chain, chain id 56, with USDT at its real address).
#
# Filled in, because the document leaves them as placeholders: the host
# (https://api.pelagotech.com → coffer dev's API), Merchant-App-Key (the demo merchant's API
# key from the summary), and the X-PAYMENT header's "signature": "0x55.." and
# "txHash": "0x123..". To make those real, payer 0 first sends the example's "amount":
# "2600000" (base units of BSC's 18-decimal USDT) to the demo merchant's payTo, and signs
# Coffer's proof message for that transaction (EIP-191):
#   Coffer x402 payment\norderId: \ntxHash: <hash>
# The X-PAYMENT header is then the document's JSON with those two values, base64-encoded as
# the document's is. The path and the body are as printed, whitespace included.
#
# A transaction needs confirmations first: until it has them the answer is Pelago's
# TX_NOT_CONFIRMED, and the script asks again, as a client would.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST="$(devkit get api_base_url)"
API_KEY="$(devkit get api_key)"
PAY_TO="$(devkit get pay_to)"

note "paying 2600000 base units of USDT on the local BSC chain to the demo payTo $PAY_TO"
tx_hash="$(devkit transfer bsc USDT 0 "$PAY_TO" 2600000)"
signature="$(devkit sign-message bsc 0 "$(printf 'Coffer x402 payment\norderId: \ntxHash: %s' "$tx_hash")")"
x_payment="$(printf '{"x402Version":1,"scheme":"exact","network":"bsc-mainnet","payload":{"amount":"2600000","signature":"%s","txHash":"%s"}}' \
    "$signature" "$tx_hash" | base64 -w0)"

note "POST $HOST/openapi/crypto/x402/order (the document's example)"
for _ in $(seq 1 60); do
    line="$(send "create or confirm order" --location --request POST "$HOST/openapi/crypto/x402/order" \
--header "X-PAYMENT: $x_payment" \
--header "Merchant-App-Key: $API_KEY" \
--header 'Content-Type: application/json' \
--data-raw '{
    "description": "Payment for premium subscription"
}')"
    if [[ "$(devkit pick body.code <<<"$line")" != TX_NOT_CONFIRMED ]]; then
        break
    fi
    note "not confirmed yet; asking again"
    sleep 1
done
printf '%s\n' "$line"

order_id="$(devkit pick body.orderId <<<"$line")"
note "GET $HOST/openapi/crypto/x402/order/$order_id (Query Order Status)"
send "query order status" --location --request GET "$HOST/openapi/crypto/x402/order/$order_id" \
--header "Merchant-App-Key: $API_KEY"
