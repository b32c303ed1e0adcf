// Drives Coffer's hosted checkout page in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, for the `checkout_page` integration test.
//
// Usage: node checkout_page.cjs <page url> <expected amount text> <amount due after the first
//        payment> <return url> <screenshot dir>
//
// It prints one line per milestone on stdout, which the Rust test waits for:
//   READY       the page shows the amount and the QR code (the test then pays part of it)
//   PARTIAL     the page asks for what is still due, in the headline and the QR code (the test
//               then pays the rest)
//   CONFIRMING  the page shows "confirming (1 of 2)" and no way to pay (the test then mines
//               one more block)
//   PAID        the page shows "paid"
//   DONE        the browser followed the redirect to the return URL, and an unknown order's
//               link shows a "not found" page
// The page runs under its Content-Security-Policy (no inline script but its own, by hash): any
// violation the browser reports fails the run, and the page's own script and style must work.
// Any failure exits non-zero with the reason on stderr.
'use strict';

const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const [url, amount, due, returnUrl, shots] = process.argv.slice(2);
if (!url || !amount || !due || !returnUrl || !shots) {
  console.error('usage: node checkout_page.cjs <url> <amount> <due after a partial payment> <return url> <screenshot dir>');
  process.exit(2);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const origin = new URL(url).origin;

    // Chinese, by Accept-Language.
    const zh = await browser.newContext({ locale: 'zh-CN', viewport: { width: 390, height: 844 } });
    const zhPage = await zh.newPage();
    await zhPage.goto(url);
    check((await zhPage.getAttribute('html', 'lang')) === 'zh', 'zh-CN did not get the Chinese page');
    check((await zhPage.textContent('#status')).includes('等待付款'), 'Chinese status text missing');
    await zhPage.screenshot({ path: path.join(shots, '00-waiting-zh.png'), fullPage: true });
    await zh.close();

    // A phone, in English.
    const context = await browser.newContext({
      locale: 'en-US',
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
    });
    const page = await context.newPage();
    const foreign = [];
    page.on('request', (request) => {
      if (!request.url().startsWith(origin) && !request.url().startsWith(returnUrl)) {
        foreign.push(request.url());
      }
    });
    const violations = [];
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
    });
    const response = await page.goto(url);
    const policy = response.headers()['content-security-policy'] || '';
    check(/script-src 'sha256-/.test(policy), `no script hash in the page's policy: ${policy}`);
    check(!policy.includes("'unsafe-inline'"), `the page's policy allows inline code: ${policy}`);
    const radius = await page.evaluate(() => getComputedStyle(document.querySelector('.card')).borderTopLeftRadius);
    check(radius === '12px', `the page's own style did not apply under its policy (${radius})`);
    check((await page.getAttribute('html', 'lang')) === 'en', 'en-US did not get the English page');
    const shown = (await page.textContent('#amount')).trim();
    check(shown === amount, `amount shows ${JSON.stringify(shown)}, expected ${JSON.stringify(amount)}`);
    await page.waitForFunction(() => {
      const img = document.getElementById('qr');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 10000 });
    const qrAlt = await page.getAttribute('#qr', 'alt');
    check(qrAlt && qrAlt.includes(amount), 'the QR code has no text alternative naming the amount');
    const address = (await page.textContent('#address')).trim();
    check(/^0x[0-9a-fA-F]{40}$/.test(address), `no deposit address: ${address}`);
    check(await page.isVisible('#copy'), 'no copy button');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    check(width <= 390, `the page is wider than the phone: ${width}px`);
    await page.screenshot({ path: path.join(shots, '01-waiting.png'), fullPage: true });
    console.log('READY');

    // Part paid: the headline and the QR code ask for the rest, and only the rest.
    await page.waitForFunction(
      () => document.getElementById('status').dataset.stage === 'underpaid',
      null,
      { timeout: 60000, polling: 100 },
    );
    await page.waitForFunction(
      (want) => document.getElementById('amount').textContent.trim() === want,
      due,
      { timeout: 10000, polling: 100 },
    );
    const qrSrc = await page.getAttribute('#qr', 'src');
    check(qrSrc.includes('due=' + encodeURIComponent(due.split(' ')[0])), `the QR code was not redrawn for what is due: ${qrSrc}`);
    check((await page.getAttribute('#qr', 'alt')).includes(due), 'the QR code text still names the full amount');
    await page.waitForFunction(() => {
      const img = document.getElementById('qr');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 10000 });
    await page.screenshot({ path: path.join(shots, '02-partial.png'), fullPage: true });
    console.log('PARTIAL');

    await page.waitForFunction(
      () => document.getElementById('status').dataset.stage === 'confirming',
      null,
      { timeout: 60000, polling: 100 },
    );
    const confirming = await page.textContent('#status');
    check(/1 of 2/.test(confirming), `expected "1 of 2" confirmations, saw ${JSON.stringify(confirming)}`);
    check(!(await page.isVisible('#qr')) && !(await page.isVisible('#copy')) && !(await page.isVisible('#amount')),
      'a fully paid order still shows a way to pay');
    await page.screenshot({ path: path.join(shots, '03-confirming.png'), fullPage: true });
    console.log('CONFIRMING');

    await page.waitForFunction(
      () => document.getElementById('status').dataset.stage === 'paid',
      null,
      { timeout: 60000, polling: 100 },
    );
    check(!(await page.isVisible('#qr')) && !(await page.isVisible('#address')), 'a paid order still shows a way to pay');
    await page.screenshot({ path: path.join(shots, '04-paid.png'), fullPage: true });
    console.log('PAID');

    await page.waitForURL(returnUrl, { timeout: 30000 });
    await page.screenshot({ path: path.join(shots, '05-returned.png'), fullPage: true });

    // A link to no order: a page for the customer, not JSON.
    const missing = await page.goto(origin + '/pay/ORD-no-such-order');
    check(missing.status() === 404, `an unknown order answered ${missing.status()}`);
    check((await page.textContent('h1')).includes('Payment not found'), 'no "not found" page for an unknown order');
    await page.screenshot({ path: path.join(shots, '06-not-found.png'), fullPage: true });
    check(foreign.length === 0, `the page loaded external resources: ${foreign.join(', ')}`);
    check(violations.length === 0, `the page broke its own policy: ${violations.join(' | ')}`);
    console.log('DONE');
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
