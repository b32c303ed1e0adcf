// Fetches a paywalled URL with an official npm x402 fetch wrapper, for Coffer's interop tests.
//
//   node interop/x402_fetch.mjs '<json>'
//
// where <json> is {"version": 1|2, "privateKey": "0x…", "url": "http…"} and optionally
// "method", "headers" (an object) and "body" (a string) for the request. Version 2 uses
// @x402/fetch with @x402/core's x402Client and @x402/evm's exact scheme; version 1 uses the
// legacy `x402-fetch`. Prints {"status", "body", "paymentResponse"} as JSON, where
// paymentResponse is the decoded PAYMENT-RESPONSE / X-PAYMENT-RESPONSE header (or null).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const tools = join(dirname(fileURLToPath(import.meta.url)), '..', '.tools', 'node_modules');
const load = async (name) => import(createRequire(join(tools, 'x.js')).resolve(name));

const input = JSON.parse(process.argv[2]);
const { privateKeyToAccount } = await load('viem/accounts');
const account = privateKeyToAccount(input.privateKey);

let fetchWithPayment;
if (input.version === 2) {
  const { wrapFetchWithPayment } = await load('@x402/fetch');
  const { x402Client } = await load('@x402/core/client');
  const { registerExactEvmScheme } = await load('@x402/evm/exact/client');
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  fetchWithPayment = wrapFetchWithPayment(fetch, client);
} else {
  const { wrapFetchWithPayment } = await load('x402-fetch');
  fetchWithPayment = wrapFetchWithPayment(fetch, account);
}

const response = await fetchWithPayment(input.url, {
  method: input.method ?? 'GET',
  headers: input.headers ?? {},
  body: input.body,
});
const header = response.headers.get('PAYMENT-RESPONSE') ?? response.headers.get('X-PAYMENT-RESPONSE');
const paymentResponse = header ? JSON.parse(Buffer.from(header, 'base64').toString('utf8')) : null;
console.log(JSON.stringify({ status: response.status, body: await response.text(), paymentResponse }));
