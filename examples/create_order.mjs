// The payment-orders example from CryptoPay's documentation, unchanged but for the base URL
// and the key: run it against Coffer with
//   COFFER_URL=http://127.0.0.1:8080 CRYPTOPAY_API_KEY=ck_… node examples/create_order.mjs
const BASE_URL = process.env.COFFER_URL ?? 'http://127.0.0.1:8080';
const YOUR_API_KEY = process.env.CRYPTOPAY_API_KEY;

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

console.log(JSON.stringify(await createOrder()));
