// Builds an x402 payment payload with the official npm clients, for Coffer's interop tests.
//
//   node interop/x402_client.mjs '<json>'
//
// where <json> is {"version": 1|2, "privateKey": "0x…", "requirements": {…}, "resource": "http…"}.
// Version 2 uses @x402/core's x402Client with @x402/evm's exact scheme; version 1 uses the
// legacy `x402` package. Prints the PaymentPayload as JSON.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const tools = join(dirname(fileURLToPath(import.meta.url)), '..', '.tools', 'node_modules');
const load = async (name) => import(createRequire(join(tools, 'x.js')).resolve(name));

const input = JSON.parse(process.argv[2]);
const { privateKeyToAccount } = await load('viem/accounts');
const account = privateKeyToAccount(input.privateKey);

if (input.version === 2) {
  const { x402Client } = await load('@x402/core/client');
  const { registerExactEvmScheme } = await load('@x402/evm/exact/client');
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  const paymentRequired = {
    x402Version: 2,
    error: 'Payment required',
    resource: { url: input.resource, description: '', mimeType: 'application/json' },
    accepts: [input.requirements],
  };
  const payload = await client.createPaymentPayload(paymentRequired);
  console.log(JSON.stringify(payload));
} else {
  const { createPaymentHeader } = await load('x402/client');
  const header = await createPaymentHeader(account, 1, input.requirements);
  console.log(Buffer.from(header, 'base64').toString('utf8'));
}
