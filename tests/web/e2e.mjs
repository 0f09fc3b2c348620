// The web UI end to end in a real browser (Debian's chromium, headless, driven by
// playwright-core). tests/web_ui.rs sets the scene with the real binary (an index, a second
// node sharing files, the node under test) and runs this with:
//
//   PEERSHARE_UI_URL      the URL the node printed (http://127.0.0.1:PORT/?token=...)
//   PEERSHARE_SMALL       name of a file to download (its content id: PEERSHARE_SMALL_ID)
//   PEERSHARE_FOLDER      the folder it is in at the second node (downloaded with its button)
//   PEERSHARE_BIG         name of a larger file (paused and resumed under a download limit)
//   PEERSHARE_XSS         the name `<img src=x onerror=alert(1)>`
//   PEERSHARE_XSS2        the name `"><svg onload=alert(2)>.txt` (in the folder `odd`)
//   PEERSHARE_SCREENSHOT  where to save a screenshot of the UI
//   PEERSHARE_SCREENSHOT_PHONE  where to save one on a phone-sized screen (optional)
//   CHROMIUM              the browser (default /usr/bin/chromium)
//
// It exits 0 when every check passed; tests/web_ui.rs then checks the downloaded files with
// b3sum. Every wait is bounded.

import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL_WITH_TOKEN = env('PEERSHARE_UI_URL');
const SMALL = env('PEERSHARE_SMALL');
const SMALL_ID = env('PEERSHARE_SMALL_ID');
const FOLDER = env('PEERSHARE_FOLDER');
const BIG = env('PEERSHARE_BIG');
const XSS = env('PEERSHARE_XSS');
const XSS2 = env('PEERSHARE_XSS2');
const SCREENSHOT = env('PEERSHARE_SCREENSHOT');
const BASE = new URL(URL_WITH_TOKEN).origin;
const TOKEN = new URL(URL_WITH_TOKEN).searchParams.get('token');

const WAIT = 20000;

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

function step(what) {
  console.log(`-- ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking'],
  timeout: 30000,
});
let failed = false;
try {
  await run();
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

async function run() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  // Anything that would mean script ran or the page broke: a dialog (alert), an uncaught
  // error, a console error (a CSP violation, a module that failed to load).
  const dialogs = [];
  const errors = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });

  step('open the UI with the token URL');
  await page.goto(URL_WITH_TOKEN);
  check(new URL(page.url()).pathname === '/' && !page.url().includes('token'),
    `the token is exchanged for a cookie and left out of the address (${page.url()})`);
  await page.locator('#connection[data-state="live"]').waitFor();
  check(await page.locator('#view-transfers').isVisible(), 'the page opens on the transfers');
  check(await page.locator('nav a[aria-current="page"]').textContent() !== null, 'a view is marked current');

  step('search by keyboard only: Tab to the Search link, Enter, type, Enter');
  let tabs = 0;
  while (tabs < 20) {
    await page.keyboard.press('Tab');
    tabs += 1;
    const at = await page.evaluate(() => document.activeElement?.getAttribute('data-view'));
    if (at === 'search') break;
  }
  check(tabs < 20, `the Search link is reached by Tab (${tabs} presses)`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== 'none', `the focused link shows its focus (outline ${outline})`);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.activeElement?.id === 'q');
  check(true, 'Enter on the link opens the search view with the focus in the search box');
  await page.keyboard.type(SMALL);
  await page.keyboard.press('Enter');
  const smallButton = page.getByRole('button', { name: `Download ${SMALL}`, exact: true });
  await smallButton.waitFor();
  const smallRow = page.locator('#results tbody tr', { has: smallButton });
  check(await smallRow.getAttribute('data-id') === SMALL_ID, 'the result is the file (its content id)');
  const smallText = await smallRow.textContent();
  check(smallText.includes(`${FOLDER}/${SMALL}`), `the result shows where its source keeps it (${FOLDER}/${SMALL})`);
  check(/1 source/.test(smallText) && /KiB/.test(smallText), 'the result shows its sources and its size');
  check(!(await smallRow.locator('.have').count()), 'not marked as had before downloading');

  step('download it, and its folder');
  await smallButton.click();
  await page.locator('#search-status', { hasText: `Added “${SMALL}”` }).waitFor();
  await page.getByRole('button', { name: `Download the folder ${FOLDER} from peer`, exact: false }).first().click();
  await page.locator('#search-status', { hasText: `Added the folder “${FOLDER}”` }).waitFor();

  step('the transfers show them done');
  await page.click('nav a[data-view="transfers"]');
  const row = (name) => page.locator('#transfers tbody tr', {
    has: page.locator('.title').getByText(name, { exact: true }),
  });
  await row(SMALL).and(page.locator('[data-state="done"]')).waitFor();
  check((await row(SMALL).textContent()).includes('saved as'), 'the done file shows where it was saved');
  await row(FOLDER).and(page.locator('[data-state="done"]')).waitFor();
  check(true, 'the folder is done');

  step('the search marks it as had now');
  await page.click('nav a[data-view="search"]');
  await page.fill('#q', SMALL);
  await page.press('#q', 'Enter');
  await page.locator('#results tbody tr', { has: page.locator('.have') }).first().waitFor();
  check(true, 'the file downloaded is marked "have"');

  step('a file named like HTML shows as text');
  await page.fill('#q', 'onerror');
  await page.press('#q', 'Enter');
  const xssButton = page.getByRole('button', { name: `Download ${XSS}`, exact: true });
  await xssButton.waitFor();
  const titles = await page.locator('#results .title').allTextContents();
  check(titles.includes(XSS), `the name is shown as its text: ${JSON.stringify(titles)}`);
  await xssButton.click();
  await page.click('nav a[data-view="transfers"]');
  await row(XSS).and(page.locator('[data-state="done"]')).waitFor();
  const xssTitle = await row(XSS).locator('.title').textContent();
  check(xssTitle === XSS, 'the transfer shows the name as its text');
  const imgs = await page.evaluate(() => [...document.querySelectorAll('img')].map((i) => i.getAttribute('src')));
  check(imgs.every((s) => s === '/ui/icon.svg'), `no <img> but the logo: ${JSON.stringify(imgs)}`);
  check(await page.locator('img[src="x"]').count() === 0, 'no <img src=x> element exists');
  check(dialogs.length === 0, `no dialog opened (${JSON.stringify(dialogs)})`);

  await page.click('nav a[data-view="search"]');
  await page.fill('#q', 'onload');
  await page.press('#q', 'Enter');
  await page.getByRole('button', { name: `Download ${XSS2}`, exact: true }).waitFor();
  const row2 = await page.locator('#results tbody tr').first();
  check(await row2.locator('.title').textContent() === XSS2, 'a name breaking out of an attribute shows as its text');
  check(await row2.locator('.path').textContent() === `odd/${XSS2}`, 'so does its path');
  check(await page.locator('#results svg').count() === 0, 'no <svg> element was made');
  check(dialogs.length === 0, 'no dialog opened');

  step('settings: a download limit and one download at once, so that a queue forms');
  await page.click('nav a[data-view="settings"]');
  // The form shows the node's settings once loaded (an empty field would be left unchanged).
  await page.waitForFunction(() => document.querySelector('input[name="upload_slots"]').value !== '');
  await page.fill('input[name="max_download_rate"]', '128');
  await page.fill('input[name="parallel"]', '1');
  await page.press('input[name="max_download_rate"]', 'Enter');
  await page.locator('#settings-status', { hasText: 'Saved' }).waitFor();
  await page.locator('[data-now="max_download_rate"]', { hasText: '128 KiB/s' }).waitFor();
  const saved = await page.evaluate(async () => (await fetch('/api/v1/settings')).json());
  check(saved.max_download_rate === 128 * 1024 && saved.parallel === 1,
    `the node has the settings (${JSON.stringify(saved)})`);

  step('download the big file: live progress, pause, resume');
  await page.click('nav a[data-view="search"]');
  await page.fill('#q', BIG);
  await page.press('#q', 'Enter');
  await page.getByRole('button', { name: `Download ${BIG}`, exact: true }).click();
  await page.click('nav a[data-view="transfers"]');
  const big = row(BIG);
  await big.and(page.locator('[data-state="running"]')).waitFor();
  // Live figures arrive over the event stream while it runs: some bytes, a rate, an ETA.
  await page.waitForFunction((name) => {
    const tr = [...document.querySelectorAll('#transfers tbody tr')]
      .find((r) => r.querySelector('.title')?.textContent === name);
    const bar = tr?.querySelector('progress');
    const cell = (label) => tr.querySelector(`td[data-label="${label}"]`).textContent;
    return tr && bar && bar.value > 0 && /^[1-9][0-9.]* [KM]iB\/s$/.test(cell('Rate')) && /\d s$/.test(cell('ETA'));
  }, BIG, { timeout: WAIT });
  check(true, 'it shows its progress, a rate and an ETA, live');
  step('a queue behind it: a selection and a query added, reordered, one cancelled');
  await page.click('nav a[data-view="search"]');
  await page.fill('#q', SMALL);
  await page.press('#q', 'Enter');
  await page.getByRole('button', { name: `Download ${SMALL}`, exact: true }).waitFor();
  await page.check('#select-all');
  await page.getByRole('button', { name: 'Download 1 selected', exact: true }).click();
  await page.locator('#search-status', { hasText: 'Added 1 file' }).waitFor();
  await page.click('nav a[data-view="transfers"]');
  await page.click('details.add summary');
  await page.selectOption('#add-kind', 'query');
  await page.fill('#add-target', 'notes');
  await page.press('#add-target', 'Enter');
  await page.click('details.add summary');
  const names = async () => page.locator('#transfers tbody tr .title').allTextContents();
  await page.waitForFunction(() => document.querySelectorAll('#transfers tbody tr').length === 6);
  const queued = page.locator('#transfers tbody tr[data-state="queued"]');
  check(await queued.count() === 2, 'two items wait behind the running one');
  check((await names()).at(-1) === 'notes', `the query is last (${await names()})`);
  await row('notes').getByRole('button', { name: 'Move to the top of the queue: notes', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('#transfers tbody tr .title')?.textContent === 'notes');
  check(true, 'moved to the top: first in the list');
  await row('notes').getByRole('button', { name: 'Move down: notes', exact: true }).click();
  await page.waitForFunction(() => document.querySelectorAll('#transfers tbody tr .title')[1]?.textContent === 'notes');
  const order = await page.evaluate(async () => (await (await fetch('/api/v1/transfers')).json()).items.map((i) => i.name || i.target));
  check(order[1] === 'notes', `the node has the new order (${order})`);
  const second = row(SMALL).and(page.locator('[data-state="queued"]'));
  await second.getByRole('button', { name: `Cancel ${SMALL}`, exact: true }).click();
  await row(SMALL).and(page.locator('[data-state="cancelled"]')).waitFor();
  check(true, 'the queued copy is cancelled');
  const sources = await big.locator('td[data-label="Sources"]').textContent();
  check(/active of 1/.test(sources) && /direct/.test(sources), `the running item shows its source and how it is reached (${sources})`);
  // The counts follow (the node's status, asked again after each change).
  await page.locator('[data-count="cancelled"]', { hasText: '(1)' }).waitFor();
  await page.locator('[data-count="queued"]', { hasText: '(1)' }).waitFor();
  check(true, 'the counts by state follow the changes');
  await page.screenshot({ path: SCREENSHOT });
  check(true, `screenshot saved to ${SCREENSHOT}`);
  const id = await big.getAttribute('data-id');
  // By keyboard: Enter on the focused Pause button; the focus stays in the row, on Resume.
  await big.getByRole('button', { name: `Pause ${BIG}`, exact: true }).focus();
  await page.keyboard.press('Enter');
  await big.and(page.locator('[data-state="paused"]')).waitFor();
  await page.waitForFunction((name) => document.activeElement?.getAttribute('aria-label') === `Resume ${name}`, BIG);
  check(true, 'paused by keyboard; the focus moved to its Resume button');
  const item = async () => page.evaluate(async (i) => (await fetch(`/api/v1/transfers/${i}`)).json(), id);
  const before = await item();
  await page.waitForTimeout(1500);
  const after = await item();
  check(after.state === 'paused' && after.bytes_done === before.bytes_done && after.bytes_done < after.bytes_total,
    `paused: nothing more arrives (${before.bytes_done} then ${after.bytes_done} of ${after.bytes_total})`);
  check(await big.getByRole('button', { name: `Resume ${BIG}`, exact: true }).isVisible(), 'a paused item offers Resume');
  await page.keyboard.press('Enter');
  await big.and(page.locator('[data-state="running"]')).waitFor();
  check(true, 'resumed: running again');
  // Lift the limit so that it finishes soon.
  await page.click('nav a[data-view="settings"]');
  await page.fill('input[name="max_download_rate"]', '0');
  await page.fill('input[name="parallel"]', '3');
  await page.click('#settings-form button[type="submit"]');
  await page.locator('[data-now="max_download_rate"]', { hasText: 'no limit' }).waitFor();
  await page.click('nav a[data-view="transfers"]');
  await big.and(page.locator('[data-state="done"]')).waitFor({ timeout: 60000 });
  check(true, 'the big file is done after the resume');

  step('the other views');
  await page.click('nav a[data-view="shares"]');
  await page.locator('#share', { hasText: 'serving' }).waitFor();
  await page.locator('#share', { hasText: /at 127\.0\.0\.1:\d+/ }).waitFor();
  check(true, 'the share says how others reach it');
  await page.click('nav a[data-view="group"]');
  await page.locator('#members tbody tr').first().waitFor();
  check(await page.locator('#members tbody tr').count() >= 2, 'the peers at the index are listed');

  step('a phone-sized screen');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('nav a[data-view="transfers"]');
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(widths[0] <= widths[1], `nothing wider than the screen (${widths[0]} <= ${widths[1]})`);
  for (const b of await page.locator('#transfers tbody tr button').all()) {
    const box = await b.boundingBox();
    check(box && box.x >= 0 && box.x + box.width <= 390 && box.height >= 32,
      `a row's button fits the screen and is big enough to tap (${JSON.stringify(box)})`);
  }
  const header = await page.locator('#transfers thead').isVisible();
  check(!header, 'the table is shown as cards (no header row)');
  if (process.env.PEERSHARE_SCREENSHOT_PHONE) {
    await page.screenshot({ path: process.env.PEERSHARE_SCREENSHOT_PHONE, fullPage: true });
  }

  step('without the cookie: the login form, and the API refuses');
  const fresh = await browser.newContext();
  fresh.setDefaultTimeout(WAIT);
  const login = await fresh.newPage();
  await login.goto(`${BASE}/`);
  check(await login.locator('input[name="token"]').isVisible(), 'a browser without the cookie gets the login form');
  check(await login.locator('#transfers').count() === 0, 'and not the UI');
  const status = await login.evaluate(async () => (await fetch('/api/v1/transfers')).status);
  check(status === 401, `the API needs the token (${status})`);
  await login.fill('input[name="token"]', TOKEN);
  await login.press('input[name="token"]', 'Enter');
  await login.locator('#connection[data-state="live"]').waitFor();
  await login.locator('#transfers tbody tr').nth(5).waitFor();
  check(true, 'after logging in: the UI with the transfers');
  await fresh.close();

  check(errors.length === 0, `no errors in the page (${JSON.stringify(errors)})`);
  check(dialogs.length === 0, 'no dialog at all');
  await context.close();
}
