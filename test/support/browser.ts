// A real headless browser for the dashboard's tests and bench: Debian's chromium, driven by
// playwright-core (which never downloads a browser). Every page it opens records its console
// errors and failed requests, so a test can say there were none. Callers close the browser.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run node scripts/setup.mjs as root (it installs Debian's chromium)`);
  // root has no user namespace sandbox for chromium here; the page is our own, on loopback
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** A new page whose console errors, uncaught exceptions and failed requests land in `problems`. */
export async function watchedPage(browser: Browser, viewport = { width: 1360, height: 900 }): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport });
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // the live feed is cut when the page goes away or navigates: that is no failure of the page
    if (!r.url().includes('/api/live')) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`);
  });
  return { page, problems };
}
