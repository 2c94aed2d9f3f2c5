// `npm run bench`: speed figures as JSON lines, each beside a baseline measured in the same run
// (a ratio, since these machines are noisy). `npm run bench -- placement rollout` runs only
// the figures named; the default is all. The figures that start real jails need root.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { WIRE_VERSION, subjects, type Command, type JailSpec, type StateEvent } from '../../contracts/index.js';
import { ensureTopology } from '../../services/common/index.js';
import { TestCluster, cliPath, mountsUnder, repoRoot } from '../support/cluster.js';
import { agentRestartFigure, failoverFigure } from './failover.js';
import { placementFigure, planQualityFigure } from './placement.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** Wall times of `n` jail starts by the shell script (same mounts, unshare, chroot), one at a time; all removed after. */
async function shellBaseline(n: number): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'jailfleet-bench-base-'));
  const base: number[] = [];
  const pids: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await execa(join(repoRoot, 'test', 'bench', 'baseline-start.sh'), [join(dir, `b-${i}`), join(repoRoot, 'dist', 'native', 'jailinit'), '--', '/bin/sleep', '3600']);
      base.push(performance.now() - t0);
      pids.push(Number(r.stdout.trim()));
    }
  } finally {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const m of mountsUnder(dir).reverse()) await execa('umount', ['--lazy', m], { reject: false });
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  }
  return base;
}

/**
 * `n` real jails in one fleet through `jailfleet apply --wait` to `hosts` agents on this machine,
 * each offering room for its share (binpack then fills every agent): apply to all running. The
 * baseline is what the shell script would take to start them one by one, spread over the cores:
 * n × its single-start median (measured in this run) / cores.
 */
async function rollout(n: number, hostCount: number) {
  const names = Array.from({ length: hostCount }, (_, i) => `roll-${i + 1}`);
  const share = Math.ceil(n / hostCount);
  const c = await TestCluster.start({ hosts: [] });
  let wallMs: number;
  const perHost: Record<string, number> = {};
  try {
    // the default jail reserves 0.1 core and 64 MB
    for (const h of names) c.startAgent(h, ['--cpu', String(share / 10), '--memory-mb', String(share * 64)]);
    await c.until('every agent up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === hostCount, 60_000);
    const dir = mkdtempSync(join(tmpdir(), 'jailfleet-bench-rollout-'));
    const file = join(dir, 'fleet.json');
    writeFileSync(file, JSON.stringify({ jails: Array.from({ length: n }, (_, i) => ({ name: `roll-${i}`, command: ['/bin/sleep', '3600'], restart: 'never' })) }));
    const t0 = performance.now();
    const r = await c.cli(['apply', '-f', file, '--wait', '--timeout', '1800000'], { timeoutMs: 1_900_000 });
    wallMs = performance.now() - t0;
    rmSync(dir, { recursive: true, force: true });
    if (r.exitCode !== 0) throw new Error(`rollout: apply --wait failed: ${r.stderr}`);
    for (const row of await c.json<{ host: string | null; state: string }[]>(['ps'])) if (row.state === 'running') perHost[row.host!] = (perHost[row.host!] ?? 0) + 1;
  } finally {
    await c.stop();
  }
  const single = percentile(await shellBaseline(5), 50);
  const cores = cpus().length;
  const baselineMs = (n * single) / cores;
  emit({
    figure: 'rollout',
    jails: n,
    hosts: hostCount,
    unit: 'ms',
    wall: round(wallMs),
    running: Object.values(perHost).reduce((a, b) => a + b, 0),
    perHost,
    baseline: `${n} × the shell script's single start (median of 5, this run) / ${cores} cores`,
    baselineSingleP50: round(single),
    baselineWall: round(baselineMs),
    ratio: round(wallMs / baselineMs),
  });
}

/** 100 jails on one agent: command published → `running` event, one jail at a time. */
async function startLatency(n: number) {
  const c = await TestCluster.start({ hosts: ['bench-1'], scheduler: false, status: false });
  const nc = await connect({ servers: c.url });
  const js = jetstream(nc);
  await ensureTopology(nc);
  const waiting = new Map<string, () => void>();
  nc.subscribe('jailfleet.evt.bench-1.*', {
    callback: (_e, m) => {
      const ev = JSON.parse(new TextDecoder().decode(m.data)) as StateEvent;
      if (ev.state === 'running') waiting.get(ev.jail)?.();
    },
  });
  // the agent is up when its heartbeat arrives
  await new Promise<void>((r) => {
    const s = nc.subscribe(subjects.hb('bench-1'), { callback: () => (s.unsubscribe(), r()) });
  });
  const spec = (name: string): JailSpec => ({
    name, command: ['/bin/sleep', '3600'], env: {}, mounts: [], network: 'inherit', restart: 'never', stopTimeoutMs: 2000, placement: { labels: {} }, resources: { cpu: 0.1, memoryMB: 64, maxProcs: 128 }, failover: { reschedule: true },
  });
  const jf: number[] = [];
  for (let i = 0; i < n; i++) {
    const name = `lat-${i}`;
    const cmd: Command = { v: WIRE_VERSION, op: 'ensure', jail: name, generation: 1, revision: i + 1, desired: 'running', spec: spec(name), issuedAt: new Date().toISOString() };
    const t0 = performance.now();
    const running = new Promise<void>((r) => waiting.set(name, r));
    await js.publish(subjects.cmd('bench-1'), enc(cmd));
    await running;
    jf.push(performance.now() - t0);
  }
  await nc.close();
  await c.stop();

  const base = await shellBaseline(n);
  const p50 = percentile(jf, 50);
  const b50 = percentile(base, 50);
  emit({
    figure: 'start-latency',
    jails: n,
    unit: 'ms',
    p50: round(p50),
    p95: round(percentile(jf, 95)),
    baseline: 'shell script: same mounts + unshare + chroot',
    baselineP50: round(b50),
    baselineP95: round(percentile(base, 95)),
    ratio: round(p50 / b50),
    goal: 'ratio <= 2',
  });
}

/** `jailfleet ps --json` wall time with 1,000 jails known to the status service. */
async function psLatency(n: number, runs: number) {
  const c = await TestCluster.start({ hosts: [], scheduler: false, status: true });
  try {
    const nc = await connect({ servers: c.url });
    await ensureTopology(nc);
    const js = jetstream(nc);
    const at = new Date().toISOString();
    await Promise.all(
      Array.from({ length: n }, (_, i) => {
        const ev: StateEvent = { v: WIRE_VERSION, host: `host-${i % 20}`, jail: `svc-${i}`, generation: 1, seq: 1, state: 'running', pid: 1000 + i, exitCode: null, restarts: 0, error: null, at };
        return js.publish(subjects.evt(ev.host, ev.jail), enc(ev));
      }),
    );
    await nc.close();
    await c.until('status to know every jail', async () => (await c.json<unknown[]>(['ps'])).length === n, 60_000);
    const time = async (args: string[]) => {
      const xs: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const r = await execa(process.execPath, [cliPath, ...args], { env: { JAILFLEET_NATS_URL: c.url } });
        xs.push(performance.now() - t0);
        if (r.exitCode !== 0) throw new Error(r.stderr);
      }
      return percentile(xs, 50);
    };
    const ps = await time(['ps', '--json']);
    const hosts = await time(['hosts', '--json']);
    emit({
      figure: 'ps-latency',
      jails: n,
      unit: 'ms',
      median: round(ps),
      runs,
      baseline: 'jailfleet hosts --json (same process start, connect and request, tiny reply)',
      baselineMedian: round(hosts),
      ratio: round(ps / hosts),
    });
  } finally {
    await c.stop();
  }
}

const FIGURES: Record<string, { root: boolean; run: () => unknown }> = {
  'start-latency': { root: true, run: () => startLatency(Number(process.env.BENCH_JAILS ?? 100)) },
  'ps-latency': { root: true, run: () => psLatency(1000, 7) },
  rollout: { root: true, run: () => rollout(Number(process.env.BENCH_ROLLOUT_JAILS ?? 500), 5) },
  placement: { root: false, run: () => placementFigure() },
  'plan-quality': { root: false, run: () => planQualityFigure() },
  failover: { root: true, run: () => failoverFigure(Number(process.env.BENCH_JAILS ?? 100)) },
  'agent-restart': { root: true, run: () => agentRestartFigure(Number(process.env.BENCH_JAILS ?? 100)) },
};
const asked = process.argv.slice(2);
const unknown = asked.filter((f) => !(f in FIGURES));
if (unknown.length) {
  console.error(`jailfleet: unknown bench figure ${unknown.map((f) => JSON.stringify(f)).join(', ')} (known: ${Object.keys(FIGURES).join(', ')})`);
  process.exit(2);
}
const chosen = asked.length ? Object.keys(FIGURES).filter((f) => asked.includes(f)) : Object.keys(FIGURES);
if (chosen.some((f) => FIGURES[f]!.root) && process.getuid?.() !== 0) {
  console.error(`jailfleet: bench figures ${chosen.filter((f) => FIGURES[f]!.root).join(', ')} must run as root (they start real jails)`);
  process.exit(1);
}
for (const f of chosen) await FIGURES[f]!.run();
