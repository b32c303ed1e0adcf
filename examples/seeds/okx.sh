#!/usr/bin/env bash
# OKX — x402 "Submit transaction" (settle), the document's curl example sent as printed to a
# running `coffer dev` (scripts/dev.sh), on the chain it names: chainIndex 196, X Layer (the
# local chain 196, with USD₮0 — EIP-3009 — at its real address).
#
# Filled in, because the document leaves them as placeholders: the host
# (https://web3.okx.com → coffer dev's API); the OK-ACCESS-* headers (the demo merchant's OKX
# key and passphrase from the summary, an ISO timestamp, and the HMAC-SHA256 signature of
# timestamp + method + path + body); <payer-wallet-address> (payer 0), <payee-wallet-address>
# (the demo merchant's payTo), <asset-contract-address> (X Layer's USD₮0), and the
# authorization's validAfter, validBefore, nonce and <your-signature> — a real EIP-3009
# TransferWithAuthorization of the example's "value": "1000000" (1 USD₮0), signed by payer 0.
#
# The example contradicts itself: paymentRequirements say "maxAmountRequired": "0" while the
# authorization moves 1000000. Sent as printed, Coffer refuses it — nothing is settled, no
# money moves — with the x402 reason invalid_exact_evm_payload_authorization_value (an exact
# payment must carry exactly the required amount). The script then sends the same request
# with "maxAmountRequired": "1000000", which settles on chain.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST="$(devkit get api_base_url)"
OK_ACCESS_KEY="$(devkit get okx.access_key)"
OK_ACCESS_PASSPHRASE="$(devkit get okx.passphrase)"
PAYEE="$(devkit get pay_to)"
PAYER="$(devkit payer x-layer 0)"
ASSET="$(devkit token x-layer USDT address)"
signed="$(devkit authorize x-layer USDT 0 "$PAYEE" 1000000)"
field() { devkit pick "$1" <<<"$signed"; }

body() { # $1: maxAmountRequired
  cat <<JSON
{
  "x402Version": 1,
  "chainIndex": 196,
  "paymentPayload": {
    "x402Version": 1,
    "scheme": "exact",
    "payload": {
      "signature": "$(field signature)",
      "authorization": {
        "from": "$PAYER",
        "to": "$PAYEE",
        "value": "1000000",
        "validAfter": "$(field authorization.validAfter)",
        "validBefore": "$(field authorization.validBefore)",
        "nonce": "$(field authorization.nonce)"
      }
    }
  },
  "paymentRequirements": {
    "scheme": "exact",
    "maxAmountRequired": "$1",
    "resource": "https://api.example.com/premium/resource/123",
    "description": "Premium API access for data analysis",
    "mimeType": "application/json",
    "outputSchema": {
      "data": "string"
    },
    "payTo": "$PAYEE",
    "maxTimeoutSeconds": 10,
    "asset": "$ASSET",
    "extra": {
      "gasLimit": "1000000"
    }
  }
}
JSON
}

settle() { # $1: step, $2: maxAmountRequired
  local data timestamp
  data="$(body "$2")"
  timestamp="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
  send "$1" --location --request POST "$HOST/api/v6/x402/settle" \
--header 'Content-Type: application/json' \
--header "OK-ACCESS-KEY: $OK_ACCESS_KEY" \
--header "OK-ACCESS-SIGN: $(devkit okx-sign "$timestamp" POST /api/v6/x402/settle "$data")" \
--header "OK-ACCESS-PASSPHRASE: $OK_ACCESS_PASSPHRASE" \
--header "OK-ACCESS-TIMESTAMP: $timestamp" \
  --data "$data"
}

note "payer $PAYER holds $(devkit balance x-layer USDT "$PAYER") base units of USD₮0; payee $PAYEE holds $(devkit balance x-layer USDT "$PAYEE")"
note "POST $HOST/api/v6/x402/settle, as printed (maxAmountRequired \"0\")"
settle "settle as printed" 0
note "POST $HOST/api/v6/x402/settle with maxAmountRequired \"1000000\", the authorization's value"
settle "settle" 1000000
note "payer now holds $(devkit balance x-layer USDT "$PAYER"); payee $(devkit balance x-layer USDT "$PAYEE")"
