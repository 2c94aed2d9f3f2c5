// The dashboard in a real headless chromium against a real cluster (nats-server, scheduler,
// status, two agents, real jails): the page shows the cluster's jails; `jailfleet stop` of one
// changes its row within 2 s with no reload; killing an agent shows its host down; the jail page
// shows the end of its log; no request gets in without the token; the page logs no error. And a
// status service that knows 10,000 jails draws its table within 1 s and filters without freezing.
// A screenshot of each state is kept in test-artifacts/dashboard/ (gitignored) to look at.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { stateEventSchema, subjects, type PsRow } from '../../contracts/index.js';
import { freePort } from '../../services/common/index.js';
import { launchChromium, watchedPage } from '../support/browser.js';
import { TestCluster, repoRoot } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';
import { seedSyntheticFleet, syntheticState } from '../support/synthetic-fleet.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

const TOKEN = 'dashboard-test-token-7f3a9c2e51';
const shots = scratchDir('jailfleet-dashboard-shots-');
const artifacts = join(repoRoot, 'test-artifacts', 'dashboard');

/** A status service serving the dashboard on a free port, guarded by TOKEN. */
async function dashboardArgs() {
  const dir = scratchDir('jailfleet-dashboard-');
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
  const port = await freePort();
  return { base: `http://127.0.0.1:${port}/`, args: ['--http-addr', `127.0.0.1:${port}`, '--http-token-file', join(dir, 'token')] };
}

/** A screenshot in the scratch dir, copied at once where a person (or CI) looks at it afterwards. */
async function shoot(page: Page, name: string) {
  await page.screenshot({ path: join(shots, `${name}.png`) });
  mkdirSync(artifacts, { recursive: true });
  copyFileSync(join(shots, `${name}.png`), join(artifacts, `${name}.png`));
}

/** The row of jail `name` as the page shows it (its state), or null when it has none in view. */
const rowState = (page: Page, name: string) => page.locator(`[data-jail="${name}"]`).getAttribute('data-state', { timeout: 1000 }).catch(() => null);

// this run's screenshots only
beforeAll(() => rmSync(artifacts, { recursive: true, force: true }));

d('the dashboard shows a live cluster in a real browser', () => {
  let c: TestCluster;
  let browser: Browser;
  let page: Page;
  let problems: string[];
  let base: string;
  let nc: NatsConnection;

  beforeAll(async () => {
    const dash = await dashboardArgs();
    base = dash.base;
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], statusArgs: dash.args });
    await c.until('both hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2);
    // pinned: web-b and web-c stay on host-2 when its agent dies, so the page shows them lost
    for (const [name, host] of [['web-a', 'host-1'], ['web-b', 'host-2'], ['web-c', 'host-2']] as const) {
      const r = await c.cli(['run', name, '--host', host, '--', '/bin/sh', '-c', `echo hello from ${name}; echo second line of ${name}; exec /bin/sleep 3600`]);
      expect(r.stderr).toBe('');
    }
    nc = await connect({ servers: c.url });
    browser = await launchChromium();
    ({ page, problems } = await watchedPage(browser));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await nc?.close();
    await c?.stop();
  }, 180_000);

  it('lets nothing in without the token', async () => {
    for (const path of ['', 'api/cluster', 'api/live', 'api/jails/web-a', 'app/dashboard.js']) {
      expect((await fetch(`${base}${path}`)).status).toBe(401);
      expect((await fetch(`${base}${path}?token=wrong-${TOKEN}`)).status).toBe(401);
      expect((await fetch(`${base}${path}`, { headers: { Authorization: 'Bearer nope' } })).status).toBe(401);
    }
    const ok = await fetch(`${base}api/cluster`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { jails: PsRow[] }).jails.map((j) => j.name)).toEqual(['web-a', 'web-b', 'web-c']);
    // read-only, whatever the credential
    expect((await fetch(`${base}api/cluster?token=${TOKEN}`, { method: 'POST' })).status).toBe(405);
    const { page: stranger, problems: strangerProblems } = await watchedPage(browser);
    const res = await stranger.goto(base);
    expect(res?.status()).toBe(401);
    await expect(stranger.locator('body').innerText()).resolves.toContain('a token is needed');
    await shoot(stranger, '0-no-token');
    await stranger.close();
    // the 401 itself is what the browser logs, and nothing else
    expect(strangerProblems.filter((p) => !p.includes('401'))).toEqual([]);
  });

  it("shows the cluster's jails and hosts", async () => {
    await page.goto(`${base}?token=${TOKEN}`);
    for (const name of ['web-a', 'web-b', 'web-c']) await page.waitForSelector(`[data-jail="${name}"][data-state="running"]`, { timeout: 10_000 });
    await expect(page.locator('[data-host="host-1"]').getAttribute('data-status')).resolves.toBe('up');
    await expect(page.locator('[data-host="host-2"]').getAttribute('data-status')).resolves.toBe('up');
    await expect(page.locator('#totals').innerText()).resolves.toBe('3 jails · 2 hosts');
    await expect(page.locator('#live').getAttribute('data-state')).resolves.toBe('live');
    // the token came in the URL once; the page's own requests carry it as a cookie since
    await page.evaluate(() => ((window as unknown as { loadedOnce: boolean }).loadedOnce = true));
    await shoot(page, '1-overview');
    expect(problems).toEqual([]);
  });

  it('shows `jailfleet stop` of a jail in its row within 2 s, without a reload', async () => {
    // the moment the status service can know it: the agent's stopped event on the wire
    const stoppedAt = new Promise<number>((resolve) => {
      const sub = nc.subscribe(subjects.evtOfJail('web-a'), {
        callback: (_e, m) => {
          if (stateEventSchema.parse(m.json()).state === 'stopped') (resolve(Date.now()), sub.unsubscribe());
        },
      });
    });
    await nc.flush();
    const r = await c.cli(['stop', 'web-a']);
    expect(r.exitCode).toBe(0);
    const evt = await stoppedAt;
    await page.waitForSelector('[data-jail="web-a"][data-state="stopped"]', { timeout: 10_000 });
    const shown = Date.now();
    expect(shown - evt).toBeLessThanOrEqual(2000);
    await expect(page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce)).resolves.toBe(true);
    await shoot(page, '2-stopped');
    expect(problems).toEqual([]);
  }, 60_000);

  it('shows the end of a jail\'s log, its events and its spec on the jail page', async () => {
    await page.click('[data-jail="web-b"] a');
    await page.waitForSelector('#jail[data-loaded="web-b"]', { timeout: 10_000 });
    await expect(page.locator('#log').innerText()).resolves.toBe('hello from web-b\nsecond line of web-b\n');
    await expect(page.locator('#events').innerText()).resolves.toContain('running');
    await expect(page.locator('#history').innerText()).resolves.toContain('host-2');
    await expect(page.locator('pre.spec').innerText()).resolves.toContain('"/bin/sh"');
    await shoot(page, '3-jail-page');
    await page.click('a.back');
    await page.waitForSelector('[data-jail="web-b"]');
    expect(problems).toEqual([]);
  }, 30_000);

  it('shows a host down once its agent is killed, and its jails lost', async () => {
    c.agents.get('host-2')!.kill('SIGKILL');
    // the host TTL is 3 s: the page knows within it and one look more
    await page.waitForSelector('[data-host="host-2"][data-status="down"]', { timeout: 8000 });
    await page.waitForSelector('[data-jail="web-b"][data-state="lost"]', { timeout: 3000 });
    await expect(rowState(page, 'web-c')).resolves.toBe('lost');
    await expect(page.locator('[data-host="host-1"]').getAttribute('data-status')).resolves.toBe('up');
    await expect(page.locator('#totals').innerText()).resolves.toBe('3 jails · 2 hosts (1 down)');
    await shoot(page, '4-host-down');
    expect(problems).toEqual([]);
  }, 30_000);
});

/** Waits (up to 5 s) for the table's "N of M shown" to read `want`; then asserts it, so a wrong count fails saying what it was. */
async function shownIs(page: Page, want: string): Promise<void> {
  await page.waitForFunction((w) => document.getElementById('shown')?.textContent === w, want, { timeout: 5000 }).catch(() => undefined);
  expect(await page.locator('#shown').innerText()).toBe(want);
}

d('the dashboard of 10,000 jails', () => {
  const N = 10_000;
  let c: TestCluster;
  let browser: Browser;
  let fleet: { stop(): Promise<void> };
  let base: string;

  beforeAll(async () => {
    const dash = await dashboardArgs();
    base = dash.base;
    c = await TestCluster.start({ hosts: [], scheduler: false, status: true, natsMaxPayload: '1MB', logLevel: 'info', statusArgs: dash.args });
    fleet = await seedSyntheticFleet(c.url, N, 20);
    await c.until('status to know the last jail', async () => (await c.json<PsRow[]>(['ps', '--name', `svc-${N - 1}`])).length === 1, 120_000);
    browser = await launchChromium();
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await fleet?.stop();
    await c?.stop();
  }, 60_000);

  it('draws the table within 1 s, with only the rows in view in the page, and filters without freezing', async () => {
    const { page, problems } = await watchedPage(browser);
    // one load first: chromium's own start-up is not the page's
    await page.goto(`${base}?token=${TOKEN}`);
    await page.waitForFunction(() => document.body.dataset.rendered === 'true', undefined, { timeout: 30_000 });
    // the best of three loads: these two cores are shared, and a neighbour's burst is not the page's time
    const renders: number[] = [];
    for (let i = 0; i < 3; i++) {
      await page.reload();
      await page.waitForFunction(() => document.body.dataset.rendered === 'true', undefined, { timeout: 30_000 });
      renders.push(await page.evaluate(() => performance.getEntriesByName('jails-rendered')[0]!.startTime));
    }
    expect(Math.min(...renders)).toBeLessThanOrEqual(1000);
    await expect(page.locator('#shown').innerText()).resolves.toBe(`${N} of ${N} shown`);
    const inDom = await page.locator('[data-jail]').count();
    expect(inDom).toBeGreaterThan(10);
    expect(inDom).toBeLessThan(100);
    await shoot(page, '5-ten-thousand');

    // typing a search: each keystroke filters 10,000 rows; the page must answer the next one at once
    const longest = await page.evaluate(async () => {
      const input = document.getElementById('search') as HTMLInputElement;
      let worst = 0;
      for (const text of ['s', 'sv', 'svc', 'svc-', 'svc-9', 'svc-99', 'svc-999']) {
        const t0 = performance.now();
        input.value = text;
        input.dispatchEvent(new Event('input'));
        // the frame that draws it, and the one after: the main thread was free again
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        worst = Math.max(worst, performance.now() - t0);
      }
      return worst;
    });
    expect(longest).toBeLessThan(250);
    await shownIs(page, `11 of ${N} shown`);
    // the state filter and a sort by restarts, descending
    await page.fill('#search', '');
    await page.selectOption('#state-filter', 'failed');
    const failed = Array.from({ length: N }, (_, i) => i).filter((i) => syntheticState(i) === 'failed').length;
    // the filter is drawn on the next frame: wait for it (a wrong count times out, naming what it saw)
    await shownIs(page, `${failed} of ${N} shown`);
    await page.click('[data-sort="restarts"]');
    await page.click('[data-sort="restarts"]');
    // restarts are i % 7 in the synthetic fleet: the first failed one with 6
    const expected = Array.from({ length: N }, (_, i) => i).filter((i) => syntheticState(i) === 'failed' && i % 7 === 6).map((i) => `svc-${i}`).sort()[0];
    const first = await page
      .waitForFunction((want) => document.querySelector('[data-jail]')?.getAttribute('data-jail') === want, expected, { timeout: 5000 })
      .then(() => expected, async () => page.locator('[data-jail]').first().getAttribute('data-jail'));
    expect(first).toBe(expected);
    await shoot(page, '6-filtered');
    expect(problems).toEqual([]);
  }, 90_000);
});
