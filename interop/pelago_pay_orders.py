"""Pays Pelago orders one after another with the official PyPI `x402` client, for Coffer's tests.

    .tools/python/bin/python interop/pelago_pay_orders.py '<json>'

where <json> is {"privateKey": "0x…", "base": "http://…", "apiKey": "ck_…", "count": 200,
"amount": "0.01"}. Each round does what a merchant's integration does: create an order
(POST /openapi/crypto/x402/order → 402 with its orderId and x402 requirements), let the client
build the payment for those requirements, and confirm that order with the X-PAYMENT header the
client picks and {"orderId": …}. Prints {"results": [{"orderId", "status", "body"}, …]}.
"""
import json, sys, urllib.error, urllib.request
from eth_account import Account
from x402 import x402ClientSync
from x402.http.x402_http_client import x402HTTPClientSync
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

args = json.loads(sys.argv[1])
client = x402ClientSync()
register_exact_evm_client(client, EthAccountSigner(Account.from_key(args["privateKey"])))
http = x402HTTPClientSync(client)
url = args["base"] + "/openapi/crypto/x402/order"


def post(body, headers):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Merchant-App-Key": args["apiKey"], "Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


results = []
for _ in range(args["count"]):
    status, headers, body = post({"description": "interop", "amount": args["amount"], "network": "base-sepolia"}, {})
    if status != 402:
        results.append({"orderId": None, "status": status, "body": body.decode("utf-8", "replace")})
        continue
    parsed = json.loads(body)
    lowered = {k.lower(): v for k, v in headers.items()}
    required = http.get_payment_required_response(lambda name: lowered.get(name.lower()), parsed)
    payload = client.create_payment_payload(required)
    status, _, body = post({"orderId": parsed["orderId"]}, http.encode_payment_signature_header(payload))
    results.append({"orderId": parsed["orderId"], "status": status, "body": body.decode("utf-8", "replace")})
print(json.dumps({"results": results}))
