// What the seed examples leave as placeholders, filled in from a running `coffer dev`: keys
// from its summary, request signatures, EIP-3009 authorizations and on-chain transfers by its
// funded payers. Used by the scripts beside it; run on its own it is a small command line:
//
//   node examples/seeds/devkit.mjs get gatepay.client_id
//   node examples/seeds/devkit.mjs token polygon USDT address
//   node examples/seeds/devkit.mjs payer x-layer 0
//   node examples/seeds/devkit.mjs balance x-layer USDT 0x…
//   node examples/seeds/devkit.mjs gatepay-sign <timestamp> <nonce> <body>
//   node examples/seeds/devkit.mjs okx-sign <timestamp> <METHOD> <path> <body>
//   node examples/seeds/devkit.mjs authorize <chain> <symbol> <payer index> <to> <value>
//   node examples/seeds/devkit.mjs transfer <chain> <symbol> <payer index> <to> <value>
//   node examples/seeds/devkit.mjs sign-message <chain> <payer index> <message>
//   node examples/seeds/devkit.mjs units <chain> <symbol> <decimal amount>
//   echo '{"a":{"b":1}}' | node examples/seeds/devkit.mjs pick a.b   (empty when absent)
//   node examples/seeds/devkit.mjs show <step> <http status> <body>
//
// The summary is read from $COFFER_DEV_SUMMARY, else .coffer-dev/summary.json. Amounts are in
// the token's base units. viem comes from the project's .tools (scripts/install-tools.sh).
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const load = async (name) =>
  import(createRequire(join(root, '.tools', 'node_modules', 'x.js')).resolve(name));
const viem = await load('viem');
const { privateKeyToAccount } = await load('viem/accounts');

/** The running `coffer dev`'s summary. */
export function summary() {
  const path = process.env.COFFER_DEV_SUMMARY ?? join(root, '.coffer-dev', 'summary.json');
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read the coffer dev summary at ${path} (is coffer dev running?): ${error.message}`);
  }
}

/** The summary's chain named `name`. */
export function chain(name) {
  const found = summary().chains.find((c) => c.name === name);
  if (!found) throw new Error(`coffer dev runs no chain ${name}; start it without --chains, or with ${name} in it`);
  return found;
}

/** The token `symbol` on chain `name`, as the summary lists it. */
export function token(name, symbol) {
  const found = chain(name).tokens.find((t) => t.symbol === symbol);
  if (!found) throw new Error(`no ${symbol} on ${name}`);
  return found;
}

function clients(name, payerIndex) {
  const c = chain(name);
  const definition = viem.defineChain({
    id: c.chain_id, name: c.name, nativeCurrency: { name: 'native', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [c.rpc_url] } },
  });
  const transport = viem.http(c.rpc_url);
  const account = payerIndex === undefined ? undefined : privateKeyToAccount(c.payers[Number(payerIndex)].private_key);
  return {
    account,
    public: viem.createPublicClient({ chain: definition, transport }),
    wallet: account && viem.createWalletClient({ chain: definition, transport, account }),
  };
}

const erc20 = viem.parseAbi([
  'function balanceOf(address) view returns (uint256)',
  'function transfer(address to, uint256 value) returns (bool)',
]);

/** GatePay's X-GatePay-Signature: hex HMAC-SHA512 of `timestamp\nnonce\nbody\n`. */
export function gatepaySign(timestamp, nonce, body) {
  return createHmac('sha512', summary().gatepay.secret).update(`${timestamp}\n${nonce}\n${body}\n`).digest('hex');
}

/** OKX's OK-ACCESS-SIGN: base64 HMAC-SHA256 of timestamp + method + path + body. */
export function okxSign(timestamp, method, path, body) {
  return createHmac('sha256', summary().okx.secret).update(`${timestamp}${method.toUpperCase()}${path}${body}`).digest('base64');
}

/** An EIP-3009 TransferWithAuthorization of `value` from payer `payerIndex` to `to`, signed. */
export async function authorize(name, symbol, payerIndex, to, value) {
  const { account } = clients(name, payerIndex);
  const t = token(name, symbol);
  if (!t.eip712_name) throw new Error(`${symbol} on ${name} has no EIP-3009 authorizations`);
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from: account.address, to: viem.getAddress(to), value: String(value),
    validAfter: String(now - 60), validBefore: String(now + 600),
    nonce: `0x${randomBytes(32).toString('hex')}`,
  };
  const signature = await account.signTypedData({
    domain: { name: t.eip712_name, version: t.eip712_version, chainId: chain(name).chain_id, verifyingContract: t.address },
    types: { TransferWithAuthorization: [
      { name: 'from', type: 'address' }, { name: 'to', type: 'address' }, { name: 'value', type: 'uint256' },
      { name: 'validAfter', type: 'uint256' }, { name: 'validBefore', type: 'uint256' }, { name: 'nonce', type: 'bytes32' },
    ] },
    primaryType: 'TransferWithAuthorization',
    message: { ...authorization, value: BigInt(value), validAfter: BigInt(authorization.validAfter), validBefore: BigInt(authorization.validBefore) },
  });
  return { signature, authorization };
}

/** Payer `payerIndex` sends `value` of `symbol` to `to`; the transaction hash, once mined. */
export async function transfer(name, symbol, payerIndex, to, value) {
  const c = clients(name, payerIndex);
  const hash = await c.wallet.writeContract({
    address: token(name, symbol).address, abi: erc20, functionName: 'transfer', args: [viem.getAddress(to), BigInt(value)],
  });
  const receipt = await c.public.waitForTransactionReceipt({ hash, pollingInterval: 200 });
  if (receipt.status !== 'success') throw new Error(`transfer ${hash} reverted`);
  return hash;
}

/** `message` signed by payer `payerIndex` (EIP-191 personal_sign). */
export async function signMessage(name, payerIndex, message) {
  return clients(name, payerIndex).account.signMessage({ message });
}

/** The `symbol` balance of `address` on chain `name`, in base units. */
export async function balance(name, symbol, address) {
  const value = await clients(name).public.readContract({
    address: token(name, symbol).address, abi: erc20, functionName: 'balanceOf', args: [viem.getAddress(address)],
  });
  return value.toString();
}

const at = (object, path) => path.split('.').reduce((value, key) => value?.[key], object);

/** One answer as a line of JSON: {"step", "status", "body"} (the body parsed when it is JSON). */
export function show(step, status, body) {
  let parsed = body;
  try { parsed = JSON.parse(body); } catch { /* not JSON: shown as text */ }
  return JSON.stringify({ step, status: status === null ? null : Number(status), body: parsed });
}

const commands = {
  get: (path) => at(summary(), path),
  pick: (path) => at(JSON.parse(readFileSync(0, 'utf8')), path) ?? '',
  units: (name, symbol, amount) => viem.parseUnits(amount, token(name, symbol).decimals).toString(),
  show,
  token: (name, symbol, field) => token(name, symbol)[field],
  payer: (name, index) => chain(name).payers[Number(index)]?.address,
  balance,
  'gatepay-sign': gatepaySign,
  'okx-sign': okxSign,
  authorize: async (...args) => JSON.stringify(await authorize(...args)),
  transfer,
  'sign-message': signMessage,
};

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2);
  if (!commands[command]) {
    console.error(`usage: devkit.mjs ${Object.keys(commands).join('|')} …`);
    process.exit(2);
  }
  try {
    const value = await commands[command](...args);
    if (value === undefined) throw new Error(`${args.join(' ')}: not in the summary`);
    console.log(typeof value === 'object' ? JSON.stringify(value) : String(value));
  } catch (error) {
    console.error(`devkit ${command}: ${error.message}`);
    process.exit(1);
  }
}
