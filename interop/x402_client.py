"""Builds an x402 payment payload with the official PyPI `x402` client, for Coffer's interop tests.

    .tools/python/bin/python interop/x402_client.py '<json>'

where <json> is {"version": 1|2, "privateKey": "0x…", "requirements": {…}, "resource": "http…"}.
Prints the PaymentPayload as JSON.
"""
import json, sys
from eth_account import Account
from x402 import x402ClientSync
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequired, PaymentRequiredV1

args = json.loads(sys.argv[1])
client = x402ClientSync()
register_exact_evm_client(client, EthAccountSigner(Account.from_key(args["privateKey"])))
if args["version"] == 2:
    required = PaymentRequired.model_validate({"x402Version": 2, "error": "Payment required",
        "resource": {"url": args["resource"], "description": "", "mimeType": "application/json"},
        "accepts": [args["requirements"]]})
else:
    required = PaymentRequiredV1.model_validate({"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [args["requirements"]]})
payload = client.create_payment_payload(required)
print(payload.model_dump_json(by_alias=True, exclude_none=True))
