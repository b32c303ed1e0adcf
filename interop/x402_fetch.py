"""Fetches a paywalled URL with the official PyPI `x402` client's HTTP layer, for Coffer's interop tests.

    .tools/python/bin/python interop/x402_fetch.py '<json>'

where <json> is {"privateKey": "0x…", "url": "http…"} and optionally "method", "headers" (an
object) and "body" (a string) for the request. It does what the package's requests
adapter does (which needs the optional `requests` extra): read the 402 (the PAYMENT-REQUIRED
header first, else the v1 body), build the payment with x402ClientSync, send it once in the
header the client picks, and print {"status", "body", "paymentResponse"} as JSON.
"""
import base64, json, sys, urllib.error, urllib.request
from eth_account import Account
from x402 import x402ClientSync
from x402.http.x402_http_client import x402HTTPClientSync
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

args = json.loads(sys.argv[1])
client = x402ClientSync()
register_exact_evm_client(client, EthAccountSigner(Account.from_key(args["privateKey"])))
http = x402HTTPClientSync(client)


def get(url, headers):
    body = args.get("body")
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8") if body is not None else None,
        headers={**args.get("headers", {}), **headers},
        method=args.get("method", "GET"),
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


status, headers, body = get(args["url"], {})
if status == 402:
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    required = http.get_payment_required_response(lambda name: lowered.get(name.lower()), parsed)
    payload = client.create_payment_payload(required)
    status, headers, body = get(args["url"], http.encode_payment_signature_header(payload))
lowered = {k.lower(): v for k, v in headers.items()}
settled = lowered.get("payment-response") or lowered.get("x-payment-response")
print(json.dumps({
    "status": status,
    "body": body.decode("utf-8", "replace"),
    "paymentResponse": json.loads(base64.b64decode(settled)) if settled else None,
}))
