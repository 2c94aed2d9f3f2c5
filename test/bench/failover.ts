// Bench figures of issue 3: how long a dead agent's jails take to run elsewhere (beside the host
// TTL that bounds detection), and how long a restarted agent takes to re-adopt its jails (beside
// the same agent starting with none). Real processes, real jails, torn down after each run.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { BUCKET_PLACEMENT, heartbeatSchema, placementRecordSchema, stateEventSchema, subjects, type Heartbeat } from '../../contracts/index.js';
import { decodeWith } from '../../services/common/codec.js';
import { followBucket } from '../../services/common/follow.js';
import { TestCluster } from '../support/cluster.js';

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const silent = pino({ level: 'silent' });

/** The bench's fleet files live in one directory, removed when the bench process exits. */
let scratch: string | undefined;
function fleet(n: number, prefix: string): string {
  if (!scratch) {
    const dir = mkdtempSync(join(tmpdir(), 'jf-bench-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    scratch = dir;
  }
  const file = join(scratch, `${prefix}.yaml`);
  writeFileSync(file, `jails:\n${Array.from({ length: n }, (_, i) => `  - name: ${prefix}-${i}\n    command: [/bin/sleep, "3600"]\n    restart: never\n`).join('')}`);
  return file;
}

/** The first heartbeat of `host` that satisfies `ok`. */
function heartbeatWhere(nc: NatsConnection, host: string, ok: (hb: Heartbeat) => boolean, timeoutMs: number): Promise<Heartbeat> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => (sub.unsubscribe(), reject(new Error(`no such heartbeat from ${host} within ${timeoutMs} ms`))), timeoutMs);
    const sub = nc.subscribe(subjects.hb(host), {
      callback: (_e, m) => {
        const hb = decodeWith(heartbeatSchema, m.data);
        if (ok(hb)) {
          clearTimeout(t);
          sub.unsubscribe();
          resolve(hb);
        }
      },
    });
  });
}

/** A cluster whose only host `host` runs `n` jails (so every jail is there), and a NATS connection to it. */
async function clusterWithJailsOn(host: string, n: number, args: { schedulerArgs?: string[]; statusArgs?: string[] } = {}) {
  const c = await TestCluster.start({ hosts: [host], logLevel: 'info', ...args });
  const nc = await connect({ servers: c.url.split(',') });
  await heartbeatWhere(nc, host, () => true, 30_000);
  const r = await c.cli(['apply', '-f', fleet(n, host), '--wait', '--timeout', '300000'], { timeoutMs: 320_000 });
  if (r.exitCode !== 0) throw new Error(`apply failed: ${r.stderr}`);
  return { c, nc };
}

/** One failover: 100 jails on `victim`, two idle hosts; SIGKILL the victim's agent → all running elsewhere. */
async function failoverOnce(n: number, ttlMs: number): Promise<{ totalMs: number; firstMs: number; placedMs: number }> {
  const ttl = ['--host-ttl-ms', String(ttlMs)];
  const { c, nc } = await clusterWithJailsOn('victim', n, { schedulerArgs: ttl, statusArgs: ttl });
  try {
    c.startAgent('spare-1');
    c.startAgent('spare-2');
    await Promise.all(['spare-1', 'spare-2'].map((h) => heartbeatWhere(nc, h, () => true, 30_000)));
    // the new hosts must be known (up) to the scheduler before the kill: one TTL after their first beat
    await new Promise((res) => setTimeout(res, 500));
    const moved = new Set<string>();
    const placed = new Set<string>();
    let first = 0;
    let allPlaced = 0;
    let t0 = 0;
    const follower = followBucket(
      nc,
      BUCKET_PLACEMENT,
      (e) => {
        const p = e.operation === 'PUT' ? placementRecordSchema.safeParse(e.json()).data : undefined;
        if (p?.host && p.host !== 'victim' && p.generation >= 2) placed.add(e.key);
        if (placed.size === n && !allPlaced) allPlaced = performance.now();
      },
      silent,
    );
    const done = new Promise<void>((resolve) => {
      nc.subscribe(subjects.evtAll, {
        callback: (_e, m) => {
          const ev = decodeWith(stateEventSchema, m.data);
          if (ev.host === 'victim' || ev.state !== 'running' || ev.generation < 2) return;
          first ||= performance.now();
          moved.add(ev.jail);
          if (moved.size === n) resolve();
        },
      });
    });
    await nc.flush();
    t0 = performance.now();
    await c.stopAgent('victim', 'SIGKILL');
    await Promise.race([done, new Promise((_, rej) => setTimeout(() => rej(new Error(`only ${moved.size} of ${n} moved in 120 s`)), 120_000))]);
    follower.stop();
    return { totalMs: performance.now() - t0, firstMs: first - t0, placedMs: allPlaced - t0 };
  } finally {
    await nc.close();
    await c.stop();
  }
}

export async function failoverFigure(n = 100, runs = Number(process.env.BENCH_RUNS ?? 3), ttlMs = 3000) {
  const results: { totalMs: number; firstMs: number; placedMs: number }[] = [];
  for (let i = 0; i < runs; i++) results.push(await failoverOnce(n, ttlMs));
  const total = median(results.map((x) => x.totalMs));
  emit({
    figure: 'failover',
    jails: n,
    runs,
    unit: 'ms',
    median: round(total, 0),
    runsMs: results.map((x) => round(x.totalMs, 0)),
    allPlacedMedian: round(median(results.map((x) => x.placedMs)), 0),
    firstMovedMedian: round(median(results.map((x) => x.firstMs)), 0),
    baseline: 'the configured host TTL (detection cannot be faster)',
    ttlMs,
    ratio: round(total / ttlMs),
    goal: `median <= TTL + 2000 ms (${ttlMs + 2000} ms)`,
  });
}

/** SIGKILL of an agent holding `n` jails, restarted at once: spawn → heartbeat with all `n` running. */
export async function agentRestartFigure(n = 100) {
  // an empty agent joins for the baseline
  const { c, nc } = await clusterWithJailsOn('keeper', n);
  try {
    c.startAgent('empty');
    const restart = async (host: string) => {
      const before = await heartbeatWhere(nc, host, (hb) => hb.jails.every((j) => j.state === 'running'), 30_000);
      await c.stopAgent(host, 'SIGKILL');
      const t0 = performance.now();
      const back = heartbeatWhere(nc, host, (hb) => hb.startedAt !== before.startedAt && hb.jails.length === before.jails.length && hb.jails.every((j) => j.state === 'running'), 60_000);
      c.startAgent(host);
      const hb = await back;
      const samePids = hb.jails.every((j) => before.jails.find((b) => b.name === j.name)?.pid === j.pid);
      return { ms: performance.now() - t0, jails: hb.jails.length, samePids };
    };
    const readopt = await restart('keeper');
    const cold = await restart('empty');
    emit({
      figure: 'agent-restart',
      jails: readopt.jails,
      unit: 'ms',
      readopt: round(readopt.ms, 0),
      samePids: readopt.samePids,
      baseline: `the same agent restarted holding ${cold.jails} jails`,
      baselineMs: round(cold.ms, 0),
      ratio: round(readopt.ms / cold.ms),
    });
  } finally {
    await nc.close();
    await c.stop();
  }
}
