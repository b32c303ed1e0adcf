// CryptoPay — "Create Payment Order", the document's JavaScript example run as printed against
// a running `coffer dev` (scripts/dev.sh), on the chain it names: "blockchain": "base" (locally,
// the Base Sepolia chain with USDC at its real address).
//
// Filled in, because the document leaves them open: the host (the example fetches the relative
// '/api/payment-orders/'; here it is prefixed with coffer dev's API) and YOUR_API_KEY (the
// demo merchant's API key from the summary). Everything else — the body, the random nonce —
// is the document's.
//
// Then, beyond the example: payer 0 sends the order's 100.00 USDC to its receiving_address, and
// "Get Payment Order" is asked until the order is confirmed. Each answer is printed as one JSON
// line {"step", "status", "body"}.
import { show, summary, transfer } from './devkit.mjs';

const BASE_URL = summary().api_base_url;
const YOUR_API_KEY = summary().api_key;

const createOrder = async () => {
const response = await fetch(BASE_URL + '/api/payment-orders/', {
method: 'POST',
headers: {
'Authorization': 'Bearer ' + YOUR_API_KEY,
'Content-Type': 'application/json'
},
body: JSON.stringify({
amount: '100.00',
currency: 'USDC',
blockchain: 'base',
order_info: JSON.stringify({
product: 'Premium Plan',
customer_id: 'user_123',
quantity: 1
}),
nonce: Date.now() + Math.floor(Math.random() * 1000000)
})
});

return await response.json();
};

// The example returns only the body, so no HTTP status is shown for it.
const created = await createOrder();
console.log(show('create payment order', null, JSON.stringify(created)));
if (!created.success) process.exit(1);

const { order_id: orderId, receiving_address: address } = created.data;
console.error(`paying 100.00 USDC on the local Base chain to ${address}`);
const tx = await transfer('base-sepolia', 'USDC', 0, address, 100_000_000n);
console.error(`sent in ${tx}; asking Get Payment Order until it is confirmed`);

for (let attempt = 0; attempt < 60; attempt += 1) {
  const response = await fetch(`${BASE_URL}/api/payment-orders/${orderId}/`, {
    headers: { 'Authorization': 'Bearer ' + YOUR_API_KEY },
  });
  const text = await response.text();
  const order = JSON.parse(text);
  if (order.data?.status === 'confirmed' || attempt === 59) {
    console.log(show('get payment order', response.status, text));
    process.exit(order.data?.status === 'confirmed' ? 0 : 1);
  }
  await new Promise((resolve) => setTimeout(resolve, 1000));
}
