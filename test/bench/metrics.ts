// Bench figure of issue 13: how long a scrape of one agent's /metrics takes with 1,000 running
// jails (every jail's cpu and memory read from its cgroup at the scrape), beside two baselines
// measured in the same run: the same agent before its jails came, and a bare prom-client
// registry with as many series, served by the same endpoint code in this process (the cost of
// the text format alone). Real processes and jails, torn down after.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { freePort } from '../../services/common/nats-server.js';
import { MetricsEndpoint } from '../../services/common/metrics.js';
import { TestCluster } from '../support/cluster.js';

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** `runs` scrapes of `url` one after another (after one to warm up): each one's wall time in ms, and the last body. */
async function scrapes(url: string, runs: number): Promise<{ ms: number[]; body: string }> {
  let body = await (await fetch(url)).text();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const res = await fetch(url);
    body = await res.text();
    ms.push(performance.now() - t0);
    if (!res.ok) throw new Error(`metrics-scrape: ${url} answered ${res.status}`);
  }
  return { ms, body };
}

const seriesOf = (body: string) => body.split('\n').filter((l) => l && !l.startsWith('#')).length;

/** A bare registry with `n` jails' two series each, served in this process: the text format's own cost. */
async function bareRegistryScrapes(n: number, runs: number) {
  const registry = new Registry();
  const cpu = new Counter({ name: 'jailfleet_jail_cpu_seconds_total', help: 'cpu', labelNames: ['jail', 'host'], registers: [registry] });
  const mem = new Gauge({ name: 'jailfleet_jail_memory_bytes', help: 'memory', labelNames: ['jail', 'host'], registers: [registry] });
  for (let i = 0; i < n; i++) {
    cpu.inc({ jail: `scrape-${i}`, host: 'host-1' }, 0.01 * i);
    mem.set({ jail: `scrape-${i}`, host: 'host-1' }, 1_000_000 + i);
  }
  const endpoint = await MetricsEndpoint.listen(registry, { host: '127.0.0.1', port: 0 });
  try {
    return await scrapes(endpoint.url, runs);
  } finally {
    await endpoint.close();
  }
}

export async function metricsScrapeFigure(n: number, runs: number) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/metrics`;
  const c = await TestCluster.start({
    hosts: [],
    logLevel: 'info',
    agentArgs: ['--cpu', String(Math.ceil(n / 10) + 1), '--memory-mb', String(n * 64 + 1024)],
  });
  const dir = mkdtempSync(join(tmpdir(), 'jf-bench-metrics-'));
  try {
    c.startAgent('host-1', ['--metrics-addr', `127.0.0.1:${port}`]);
    await c.until('host-1 up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'), 60_000);
    const empty = await scrapes(url, runs);
    const fleet = join(dir, 'fleet.yaml');
    writeFileSync(fleet, `jails:\n${Array.from({ length: n }, (_, i) => `  - name: scrape-${i}\n    command: [/bin/sleep, "3600"]\n    restart: never\n`).join('')}`);
    const applied = await c.cli(['apply', '-f', fleet, '--wait', '--timeout', '1200000'], { timeoutMs: 1_260_000 });
    if (applied.exitCode !== 0) throw new Error(`metrics-scrape: apply of ${n} failed: ${applied.stderr}`);
    const full = await scrapes(url, runs);
    const jailSeries = full.body.split('\n').filter((l) => l.startsWith('jailfleet_jail_memory_bytes{')).length;
    if (jailSeries !== n) throw new Error(`metrics-scrape: ${jailSeries} jails in the scrape, not ${n}`);
    const bare = await bareRegistryScrapes(n, runs);
    const p50 = percentile(full.ms, 50);
    emit({
      figure: 'metrics-scrape',
      jails: n,
      unit: 'ms',
      scrapes: runs,
      p50: round(p50),
      p95: round(percentile(full.ms, 95)),
      max: round(Math.max(...full.ms)),
      series: seriesOf(full.body),
      bytes: full.body.length,
      baselineEmptyAgentP50: round(percentile(empty.ms, 50)),
      baselineEmptyAgentSeries: seriesOf(empty.body),
      baselineBareRegistryP50: round(percentile(bare.ms, 50)),
      baselineBareRegistrySeries: seriesOf(bare.body),
      ratioToBareRegistry: round(p50 / percentile(bare.ms, 50)),
      what: "GET /metrics of one agent, one scrape after another: every running jail's cpu.stat/cpuacct.usage and memory read from its cgroup",
      goal: 'p50 <= 100 ms at 1,000 jails',
    });
  } finally {
    await c.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
