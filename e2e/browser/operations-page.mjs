// The operations page in headless Chromium, as an admin uses it: sign in with a token, see
// the dead letter of an image with its reason, re-drive it, and watch the dead-letter queue
// drain and the image get its thumbnails. Run by e2e/tests/operations_page.rs:
//
//   node operations-page.mjs <base url> <admin token> <queue> <image id>
//
// STAYLER_SCREENSHOT=<file> saves a screenshot of the page with the dead letter on it;
// STAYLER_CHROMIUM names the browser (default /usr/bin/chromium). Prints one JSON line of
// what it saw; exits non-zero with the reason on failure.
import { chromium } from 'playwright-core';

const [baseUrl, token, queue, imageId] = process.argv.slice(2);
if (!baseUrl || !token || !queue || !imageId) {
  console.error('usage: node operations-page.mjs <base url> <admin token> <queue> <image id>');
  process.exit(2);
}
const executablePath = process.env.STAYLER_CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.STAYLER_SCREENSHOT;
const WAIT_MS = 60_000;

// Tests run as root, where Chromium refuses its own sandbox.
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
const problems = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
try {
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));

  await page.goto(new URL('/storage/ops', baseUrl).href);
  await page.locator('#token').fill(token);
  await page.locator('#sign-in button[type=submit]').click();

  const queueRow = page.locator(`#queues tr[data-queue="${queue}"]`);
  await queueRow.locator('td[data-dead-letters="1"]').waitFor();
  const block = page.locator(`#dead-letters .queue-dead[data-queue="${queue}"]`);
  const letter = block.locator('tbody tr', { hasText: imageId });
  await letter.waitFor();
  const reason = (await letter.locator('.reason').textContent()).trim();
  // The rest of the page has drawn by now as well: health, backups, storage charts.
  await page.locator('#by-type rect, #by-type text').first().waitFor();
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  await block.locator('button.redrive').click();
  await queueRow.locator('td[data-dead-letters="0"]').waitFor();
  await page.locator('#no-dead-letters').waitFor();
  const status = (await page.locator('#status').textContent()).trim();

  // The image's thumbnails, asked with the page's own token, until the worker made them.
  const thumbnails = await page.waitForFunction(async (id) => {
    const response = await fetch(`/storage/images/${id}`, {
      headers: { authorization: `Bearer ${sessionStorage.getItem('stayler-admin-token')}` },
    });
    const image = await response.json();
    return image.thumbnails && image.thumbnails.status === 'ready' ? image.thumbnails.status : false;
  }, imageId, { polling: 200, timeout: WAIT_MS });

  if (problems.length > 0) throw new Error(problems.join('\n'));
  console.log(JSON.stringify({ reason, status, thumbnails: await thumbnails.jsonValue() }));
} catch (error) {
  console.error(`operations page: ${error.message}`);
  if (problems.length > 0) console.error(problems.join('\n'));
  const shown = await page.locator('body').innerText().catch(() => '(no page)');
  console.error(`the page showed:\n${shown}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
