// A page open while its node restarts (tests/web_ui.rs kills it with -9 and starts it again
// on the same port): the session it had is gone, so the page says so and offers the login
// form instead of retrying forever (each retry would count as a failed login), and logging in
// again works (it was not locked out).
//
//   PEERSHARE_UI_URL  the URL the node printed; CHROMIUM: the browser
//
// Protocol with the test on stdin/stdout: prints "ready" once the page is live, then waits
// for a line "restarted".

import { chromium } from 'playwright-core';
import readline from 'node:readline';

const URL_WITH_TOKEN = process.env.PEERSHARE_UI_URL;
const TOKEN = new URL(URL_WITH_TOKEN).searchParams.get('token');
const lines = readline.createInterface({ input: process.stdin });
const next = () => new Promise((resolve) => lines.once('line', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking'],
  timeout: 30000,
});
let failed = false;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(URL_WITH_TOKEN);
  await page.locator('#connection[data-state="live"]').waitFor();
  console.log('ready');
  const restarted = await next();
  if (restarted !== 'restarted') throw new Error(`expected "restarted", got ${restarted}`);
  await page.locator('#connection[data-state="closed"]').waitFor();
  const notice = await page.textContent('#notice-text');
  if (!/Logged out/.test(notice)) throw new Error(`no logged-out notice: ${notice}`);
  console.log(`ok: the page says it is logged out (${notice})`);
  await page.click('#notice-login');
  await page.fill('input[name="token"]', TOKEN);
  await page.press('input[name="token"]', 'Enter');
  await page.locator('#connection[data-state="live"]').waitFor();
  console.log('ok: logging in again works');
  if (errors.length) throw new Error(`page errors: ${errors}`);
} catch (e) {
  failed = true;
  console.log(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
  lines.close();
}
process.exit(failed ? 1 : 0);
