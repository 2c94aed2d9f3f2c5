// The `dashboard-load` figure: a status service that knows 10,000 jails (synthetic: placements
// and events written straight to NATS, no jail runs) serves its dashboard; headless chromium
// opens it, and the time from navigation to the table's first render is read from the page's
// own `jails-rendered` mark. Beside it, in the same run: a static page that fetches and parses
// the same JSON (the floor of any page that shows these rows) and `jailfleet ps --json`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { freePort } from '../../services/common/index.js';
import { launchChromium } from '../support/browser.js';
import { TestCluster, cliPath } from '../support/cluster.js';
import { seedSyntheticFleet } from '../support/synthetic-fleet.js';

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** The baseline page: fetch the JSON, parse it, put the count in the DOM, mark. */
const STATIC_PAGE = `<!doctype html><html><body><p id="n"></p><script>
fetch('/cluster.json').then((r) => r.json()).then((d) => {
  document.getElementById('n').textContent = d.jails.length + ' jails';
  performance.mark('json-loaded');
  document.body.dataset.rendered = 'true';
});
</script></body></html>`;

export async function dashboardLoadFigure(n: number, runs: number) {
  const dir = mkdtempSync(join(tmpdir(), 'jailfleet-bench-dashboard-'));
  const token = 'bench-token-0123456789abcdef';
  writeFileSync(join(dir, 'token'), token, { mode: 0o600 });
  const port = await freePort();
  const c = await TestCluster.start({ hosts: [], scheduler: false, status: true, logLevel: 'info', natsMaxPayload: '1MB', statusArgs: ['--http-addr', `127.0.0.1:${port}`, '--http-token-file', join(dir, 'token')] });
  const fleet = await seedSyntheticFleet(c.url, n, 20);
  const browser = await launchChromium();
  const staticServer = createServer();
  try {
    await c.until('status to know every jail', async () => (await c.json<unknown[]>(['ps', '--name', `svc-${n - 1}`])).length === 1, 180_000);
    const base = `http://127.0.0.1:${port}/`;
    const json = await (await fetch(`${base}api/cluster`, { headers: { Authorization: `Bearer ${token}` } })).text();
    const shown = (JSON.parse(json) as { jails: unknown[] }).jails.length;
    staticServer.on('request', (req, res) => {
      if (req.url === '/cluster.json') res.writeHead(200, { 'Content-Type': 'application/json' }).end(json);
      else res.writeHead(200, { 'Content-Type': 'text/html' }).end(STATIC_PAGE);
    });
    await new Promise<void>((r) => staticServer.listen(0, '127.0.0.1', r));
    const staticUrl = `http://127.0.0.1:${(staticServer.address() as AddressInfo).port}/`;

    /** Navigation start → the page's mark, and the wall time of goto → rendered, in a fresh context each run. */
    const load = async (url: string, mark: string) => {
      const ctx = await browser.newContext();
      try {
        const page = await ctx.newPage();
        const t0 = performance.now();
        await page.goto(url);
        await page.waitForFunction(() => document.body.dataset.rendered === 'true', undefined, { timeout: 60_000 });
        const wall = performance.now() - t0;
        const at = await page.evaluate((m) => performance.getEntriesByName(m)[0]?.startTime ?? -1, mark);
        const rows = await page.locator('[data-jail]').count();
        return { at, wall, rows };
      } finally {
        await ctx.close();
      }
    };
    // one load each first: chromium's own start-up is not the page's
    await load(`${base}?token=${token}`, 'jails-rendered');
    await load(staticUrl, 'json-loaded');
    const dash: { at: number; wall: number; rows: number }[] = [];
    const stat: { at: number; wall: number }[] = [];
    for (let i = 0; i < runs; i++) {
      dash.push(await load(`${base}?token=${token}`, 'jails-rendered'));
      stat.push(await load(staticUrl, 'json-loaded'));
    }
    const ps: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await execa(process.execPath, [cliPath, 'ps', '--json'], { env: { JAILFLEET_NATS_URL: c.url }, stdout: 'ignore' });
      ps.push(performance.now() - t0);
    }
    const firstRender = median(dash.map((d) => d.at));
    emit({
      figure: 'dashboard-load',
      jails: n,
      shown,
      rowsInDom: dash[0]!.rows,
      unit: 'ms',
      firstRenderMedian: round(firstRender),
      firstRenderMax: round(Math.max(...dash.map((d) => d.at))),
      wallMedian: round(median(dash.map((d) => d.wall))),
      runs,
      baseline: 'a static page that fetches and parses the same JSON (navigation to its mark), and jailfleet ps --json',
      staticJsonMedian: round(median(stat.map((s) => s.at))),
      psJsonMedian: round(median(ps)),
      ratio: round(firstRender / median(stat.map((s) => s.at))),
      jsonBytes: json.length,
      goal: 'firstRenderMedian <= 1000',
    });
  } finally {
    staticServer.close();
    await browser.close();
    await fleet.stop();
    await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
