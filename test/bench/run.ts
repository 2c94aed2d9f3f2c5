// `npm run bench`: speed figures as JSON lines, each beside a baseline measured in the same run
// (a ratio, since these machines are noisy). `npm run bench -- placement rollout` runs only
// the figures named; the default is all. The figures that start real jails need root. The floor
// of a jail start is `jail-floor` (test/bench/jail-floor.c): the same isolation in one process.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_PLACEMENT, WIRE_VERSION, subjects, type Command, type JailSpec, type StateEvent } from '../../contracts/index.js';
import { ensureTopology, freePort } from '../../services/common/index.js';
import { TestCluster, cliPath, mountsUnder, repoRoot } from '../support/cluster.js';
import { dashboardLoadFigure } from './dashboard.js';
import { agentRestartFigure, failoverFigure } from './failover.js';
import { imagePullFigure, imageStartFigure } from './images.js';
import { metricsScrapeFigure } from './metrics.js';
import { placementFigure, planQualityFigure } from './placement.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** Lines of the host's mount table (this process runs in the host's mount namespace). */
const mountLines = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).length;
const median = (xs: number[]) => percentile(xs, 50);

interface Floor {
  jails: number;
  p50: number;
  p95: number;
  min: number;
  max: number;
  mountLinesBefore: number;
  mountLinesRunning: number;
  mountLinesAfter: number;
}

/** `n` jails in a row by the floor program (one clone(), every mount in the jail's namespace); all removed after. */
async function runFloor(n: number): Promise<Floor> {
  const dir = mkdtempSync(join(tmpdir(), 'jailfleet-bench-floor-'));
  try {
    const r = await execa(join(repoRoot, 'dist', 'test', 'bench', 'jail-floor'), [String(n), join(dir, 'jails')], { reject: false });
    if (r.exitCode !== 0) throw new Error(`jail-floor failed: ${r.stderr || r.message} (build it with: node scripts/setup.mjs)`);
    return JSON.parse(r.stdout) as Floor;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The floor of this run, measured once (100 in a row) and shared by the figures that compare to it. */
let floorOfRun: Promise<Floor> | undefined;
const floor = () => (floorOfRun ??= runFloor(Number(process.env.BENCH_JAILS ?? 100)));

async function jailFloor() {
  const f = await floor();
  emit({
    figure: 'jail-floor',
    jails: f.jails,
    unit: 'ms',
    p50: f.p50,
    p95: f.p95,
    min: f.min,
    max: f.max,
    what: 'new pid, mount, uts, ipc namespaces; thin root (ro /usr binds, /etc, tmpfs /dev + 6 device binds, devpts, /dev/shm, /tmp, /proc); pivot_root; exec; one process, in a row',
    mountLinesBefore: f.mountLinesBefore,
    mountLinesRunning: f.mountLinesRunning,
    mountLinesAfter: f.mountLinesAfter,
    goal: 'mount lines equal before, running and after',
  });
}

/** Median wall time of `runs` runs of `argv` (node + args); the first failure is thrown. */
async function wallMedian(argv: string[], runs: number, env: Record<string, string> = {}): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = await execa(process.execPath, argv, { env, reject: false });
    xs.push(performance.now() - t0);
    if (r.exitCode !== 0) throw new Error(`${argv.slice(1).join(' ')}: ${r.stderr.trim() || r.message}`);
  }
  return median(xs);
}
const nodeBare = (runs: number) => wallMedian(['-e', ''], runs);

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
 * baseline is what the floor would take to start them, spread over the cores: n × its p50
 * (measured in this run) / cores; the goal is twice that.
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
  const single = (await floor()).p50;
  const shell = percentile(await shellBaseline(5), 50);
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
    baseline: `${n} × jail-floor's p50 (this run) / ${cores} cores`,
    baselineSingleP50: round(single),
    baselineWall: round(baselineMs),
    ratio: round(wallMs / baselineMs),
    goal: 'ratio <= 2',
    shellBaselineP50: round(shell),
  });
}

/**
 * 100 jails on one agent: command published → `running` event, one jail at a time; then as many
 * vnet jails (own network namespace, a veth on the jail bridge, an address) on the same agent.
 * The agent runs in a network namespace of the bench's own (joined to the broker by a veth
 * pair), so its jail bridge never appears in the machine's namespace; it goes with the bench.
 */
async function startLatency(n: number) {
  const tag = `jfb${process.pid % 100000}`;
  const ip = (...args: string[]) => execa('ip', args);
  await ip('netns', 'add', tag);
  try {
    await ip('link', 'add', `${tag}h`, 'type', 'veth', 'peer', 'name', `${tag}n`);
    await ip('link', 'set', `${tag}n`, 'netns', tag);
    await ip('addr', 'add', '10.213.11.1/30', 'dev', `${tag}h`);
    await ip('link', 'set', `${tag}h`, 'up');
    await ip('-n', tag, 'addr', 'add', '10.213.11.2/30', 'dev', `${tag}n`);
    await ip('-n', tag, 'link', 'set', `${tag}n`, 'up');
    await ip('-n', tag, 'link', 'set', 'lo', 'up');
    await startLatencyIn(n, tag);
  } finally {
    await execa('ip', ['netns', 'delete', tag], { reject: false });
    await execa('ip', ['link', 'delete', `${tag}h`], { reject: false });
  }
}

async function startLatencyIn(n: number, netns: string) {
  const c = await TestCluster.start({ hosts: [], scheduler: false, status: false, natsHost: '10.213.11.1' });
  c.startAgent('bench-1', [], ['nsenter', `--net=/run/netns/${netns}`, '--']);
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
  const startAll = async (prefix: string, network: (i: number) => JailSpec['network']) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const name = `${prefix}-${i}`;
      const cmd: Command = { v: WIRE_VERSION, op: 'ensure', jail: name, generation: 1, revision: i + 1, desired: 'running', spec: { ...spec(name), network: network(i) }, issuedAt: new Date().toISOString() };
      const t0 = performance.now();
      const running = new Promise<void>((r) => waiting.set(name, r));
      await js.publish(subjects.cmd('bench-1'), enc(cmd));
      await running;
      out.push(performance.now() - t0);
    }
    return out;
  };
  const jf = await startAll('lat', () => 'inherit');
  // the scheduler pins an address into a vnet spec; here the bench does, as it plays the scheduler
  const vnet = await startAll('vlat', (i) => ({ mode: 'vnet', address: `10.88.${Math.floor((i + 2) / 256)}.${(i + 2) % 256}` }));
  await nc.close();
  await c.stop();

  const f = await floor();
  // the old baseline, kept for comparison: mount(8) once per mount point, on the host's table
  const shell = await shellBaseline(10);
  const p50 = percentile(jf, 50);
  emit({
    figure: 'start-latency',
    jails: n,
    unit: 'ms',
    p50: round(p50),
    p95: round(percentile(jf, 95)),
    baseline: `jail-floor, ${f.jails} in a row (this run)`,
    baselineP50: f.p50,
    baselineP95: f.p95,
    ratio: round(p50 / f.p50),
    goal: 'ratio <= 2',
    shellBaselineP50: round(percentile(shell, 50)),
    vnetP50: round(percentile(vnet, 50)),
    vnetP95: round(percentile(vnet, 95)),
    vnetAddsP50: round(percentile(vnet, 50) - p50),
    vnetGoal: 'vnetAddsP50 <= 5',
  });
}

/**
 * `jailfleet ps --json` wall time with `n` jails known to the status service (synthetic
 * placements and state events, written straight to the bucket and the stream), through a broker
 * with nats-server's default 1 MB max_payload, beside `node -e ''` (process start alone) and
 * `jailfleet hosts --json` (the same start, connect and request, a tiny reply); also the text
 * table and a `--name` filter. A failing ps is reported in the JSON (`error`), not thrown: the
 * other figures still run.
 */
async function psLatency(n: number, runs: number) {
  const c = await TestCluster.start({ hosts: [], scheduler: false, status: true, logLevel: 'info', natsMaxPayload: '1MB' });
  const hostCount = 20;
  const hb = await connect({ servers: c.url });
  // the hosts are heard from throughout, so their jails show as running rather than lost
  const beatAll = () => {
    for (let h = 0; h < hostCount; h++) {
      const host = `host-${h}`;
      hb.publish(subjects.hb(host), enc({ v: WIRE_VERSION, host, at: new Date().toISOString(), startedAt: new Date(0).toISOString(), capacity: { cpu: 64, memoryMB: 65536 }, labels: {}, allocated: { cpu: 0, memoryMB: 0 }, driver: 'linux', jails: [] }));
    }
  };
  beatAll();
  const beating = setInterval(beatAll, 500);
  try {
    const nc = await connect({ servers: c.url });
    await ensureTopology(nc);
    const js = jetstream(nc);
    const placements = await new Kvm(nc).open(BUCKET_PLACEMENT);
    const at = new Date().toISOString();
    for (let from = 0; from < n; from += 1000) {
      const batch = Array.from({ length: Math.min(1000, n - from) }, (_, k) => from + k);
      await Promise.all(batch.map((i) => placements.put(`svc-${i}`, enc({ v: WIRE_VERSION, host: `host-${i % hostCount}`, generation: 1, reason: null }))));
      await Promise.all(
        batch.map((i) => {
          const ev: StateEvent = { v: WIRE_VERSION, host: `host-${i % hostCount}`, jail: `svc-${i}`, generation: 1, seq: 1, state: 'running', pid: 1000 + i, exitCode: null, restarts: 0, error: null, at };
          return js.publish(subjects.evt(ev.host, ev.jail), enc(ev));
        }),
      );
    }
    await nc.close();
    // the status service consumes in stream order: once the last jail shows, all do
    await c.until('status to know every jail', async () => (await c.json<unknown[]>(['ps', '--name', `svc-${n - 1}`])).length === 1, 120_000);
    const known = (await c.json<unknown[]>(['ps'])).length;
    const env = { JAILFLEET_NATS_URL: c.url };
    const node = await nodeBare(runs);
    const hosts = await wallMedian([cliPath, 'hosts', '--json'], runs, env);
    let ps: number | undefined;
    let error: string | undefined;
    try {
      ps = await wallMedian([cliPath, 'ps', '--json'], runs, env);
    } catch (err) {
      error = (err as Error).message.split('\n')[0];
    }
    const text = await wallMedian([cliPath, 'ps'], runs, env).catch(() => undefined);
    const named = await wallMedian([cliPath, 'ps', '--json', '--name', 'svc-99*'], runs, env).catch(() => undefined);
    emit({
      figure: 'ps-latency',
      jails: n,
      known,
      maxPayload: '1MB',
      textMedian: text === undefined ? null : round(text),
      namedMedian: named === undefined ? null : round(named),
      unit: 'ms',
      median: ps === undefined ? null : round(ps),
      ...(error !== undefined && { error }),
      runs,
      baseline: "node -e '' (process start alone)",
      nodeBareMedian: round(node),
      overNode: ps === undefined ? null : round(ps - node),
      goal: "median <= node -e '' + 60 ms",
      hostsMedian: round(hosts),
    });
  } finally {
    clearInterval(beating);
    await hb.close();
    await c.stop();
  }
}

/**
 * `jailfleet exec NAME -- /bin/true` wall time (median of `runs`) against a running jail, beside
 * `node -e ''` and `jailfleet hosts --json` measured in the same run.
 */
async function execLatency(runs: number) {
  const c = await TestCluster.start({ hosts: ['exec-1'], logLevel: 'info' });
  try {
    await c.until('the agent up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'), 60_000);
    const r = await c.cli(['run', 'exec-target', '--timeout', '60000', '--', '/bin/sleep', '3600']);
    if (r.exitCode !== 0) throw new Error(`exec-latency: run failed: ${r.stderr}`);
    const env = { JAILFLEET_NATS_URL: c.url };
    const exec = await wallMedian([cliPath, 'exec', 'exec-target', '--', '/bin/true'], runs, env);
    const node = await nodeBare(runs);
    const hosts = await wallMedian([cliPath, 'hosts', '--json'], runs, env);
    emit({
      figure: 'exec-latency',
      unit: 'ms',
      median: round(exec),
      runs,
      baseline: "node -e '' (process start alone)",
      nodeBareMedian: round(node),
      overNode: round(exec - node),
      hostsMedian: round(hosts),
      note: "compare with ps-latency's median of the same run",
    });
  } finally {
    await c.stop();
  }
}

/** A jail with room for the session figures (2 cores, 512 MB: a session counts in its cgroup) and `dataDir` at /data. */
async function sessionTarget(c: TestCluster, name: string, dataDir: string) {
  const fleet = join(dataDir, '..', `${name}.yaml`);
  writeFileSync(
    fleet,
    `jails:\n  - name: ${name}\n    command: [/bin/sleep, "3600"]\n    resources: { cpu: 2, memoryMB: 512 }\n    mounts: [{ source: ${dataDir}, target: /data }]\n`,
  );
  const r = await c.cli(['apply', '-f', fleet, '--wait', '--timeout', '60000']);
  if (r.exitCode !== 0) throw new Error(`${name}: apply failed: ${r.stderr}`);
}

/**
 * Keystroke to echo through a pseudo-terminal: `n` single bytes written to the terminal of
 * `argv` (run under native/jailsession's pty, the same harness for both sides), each timed until
 * it comes back. The shell's line is cleared every 20 keys.
 */
async function echoLatencies(argv: string[], env: Record<string, string>, n: number, ready: RegExp): Promise<number[]> {
  const p = execa(join(repoRoot, 'dist', 'native', 'jailsession'), ['--tty', '24', '80', '--', ...argv], { env, reject: false, stdin: 'pipe', stdout: 'pipe', buffer: false });
  let seen = '';
  let waiter: (() => void) | undefined;
  p.stdout!.on('data', (b: Buffer) => {
    seen += b.toString('latin1');
    waiter?.();
  });
  const until = (check: () => boolean, ms: number) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no echo within ${ms} ms; the screen: ${JSON.stringify(seen.slice(-200))}`)), ms);
      waiter = () => {
        if (check()) {
          clearTimeout(t);
          waiter = undefined;
          resolve();
        }
      };
      waiter();
    });
  try {
    await until(() => ready.test(seen), 20_000);
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      if (i % 20 === 0) {
        // ^U: the kernel's line discipline clears the line
        p.stdin!.write('\x15');
        await new Promise((r) => setTimeout(r, 50));
      }
      const before = seen.length;
      const t0 = performance.now();
      p.stdin!.write('k');
      await until(() => seen.indexOf('k', before) >= 0, 5000);
      xs.push(performance.now() - t0);
    }
    return xs;
  } finally {
    p.stdin!.end('\x15exit\n');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await p;
    clearTimeout(t);
  }
}

async function consoleLatency(n: number) {
  const c = await TestCluster.start({ hosts: [], logLevel: 'info' });
  const data = mkdtempSync(join(tmpdir(), 'jailfleet-bench-console-'));
  // the target jail mounts a directory of `data`: the agent must allow it as a mount source
  c.startAgent('session-1', ['--allow-mount-source', data]);
  try {
    await c.until('the agent up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'), 60_000);
    mkdirSync(join(data, 'data'));
    await sessionTarget(c, 'console-target', join(data, 'data'));
    const env = { JAILFLEET_NATS_URL: c.url, TERM: 'xterm', PS1: '$ ' };
    const local = await echoLatencies(['/bin/sh'], env, n, /[$#] $/);
    const remote = await echoLatencies([process.execPath, cliPath, 'exec', '-it', 'console-target', '--', '/bin/sh'], env, n, /[$#] $/);
    emit({
      figure: 'console-latency',
      unit: 'ms',
      keys: n,
      p50: round(percentile(remote, 50)),
      p95: round(percentile(remote, 95)),
      baseline: 'local /bin/sh under the same pty harness',
      localP50: round(percentile(local, 50)),
      localP95: round(percentile(local, 95)),
      overLocalP50: round(percentile(remote, 50) - percentile(local, 50)),
      goal: 'p50 at most 10 ms over the local one',
    });
  } finally {
    await c.stop();
    rmSync(data, { recursive: true, force: true });
  }
}

/** MB/s of `mb` MB published in 64 KiB messages from one bare client to another through the broker at `url`. */
async function natsPubSubMBs(url: string, mb: number): Promise<number> {
  const [a, b] = await Promise.all([connect({ servers: url }), connect({ servers: url })]);
  try {
    const n = mb * 16;
    const payload = new Uint8Array(64 * 1024);
    let got = 0;
    const done = new Promise<void>((resolve) => b.subscribe('bench.pubsub', { callback: () => void (++got === n && resolve()) }));
    await b.flush();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) a.publish('bench.pubsub', payload);
    await done;
    return mb / ((performance.now() - t0) / 1000);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

async function execThroughput(mb: number) {
  const c = await TestCluster.start({ hosts: [], logLevel: 'info' });
  const data = mkdtempSync(join(tmpdir(), 'jailfleet-bench-exec-'));
  // the target jail mounts a directory of `data`: the agent must allow it as a mount source
  c.startAgent('session-1', ['--allow-mount-source', data]);
  try {
    await c.until('the agent up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'), 60_000);
    mkdirSync(join(data, 'data'));
    const file = join(data, 'data', 'big');
    writeFileSync(file, randomBytes(mb * 1024 * 1024));
    await sessionTarget(c, 'exec-target', join(data, 'data'));
    const env = { JAILFLEET_NATS_URL: c.url };
    // /dev/null itself as stdout (execa's { file } option would copy through this process)
    const devNull = openSync('/dev/null', 'w');
    const timed = async (argv: string[]) => {
      const t0 = performance.now();
      const r = await execa(argv[0]!, argv.slice(1), { env, reject: false, stdout: devNull as 1 });
      if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
      return (performance.now() - t0) / 1000;
    };
    // warm the page cache, then three of each; the best of each
    await timed(['cat', file]);
    const host: number[] = [];
    const jail: number[] = [];
    for (let i = 0; i < 3; i++) {
      host.push(await timed(['cat', file]));
      jail.push(await timed([process.execPath, cliPath, 'exec', 'exec-target', '--', 'cat', '/data/big']));
    }
    closeSync(devNull);
    const natsMBs = await natsPubSubMBs(c.url, mb);
    const hostMBs = mb / Math.min(...host);
    const jailMBs = mb / Math.min(...jail);
    emit({
      figure: 'exec-throughput',
      unit: 'MB/s',
      mb,
      value: round(jailMBs, 1),
      what: `jailfleet exec NAME -- cat of ${mb} MB to /dev/null (CLI start included), through NATS with credit flow control`,
      baseline: `cat of the same file to /dev/null on the host`,
      hostMBs: round(hostMBs, 1),
      ratio: round(jailMBs / hostMBs, 3),
      natsMBs: round(natsMBs, 1),
      natsWhat: `the same bytes in 64 KiB messages between two bare NATS clients on this broker (the transport's ceiling here)`,
      ratioToNats: round(jailMBs / natsMBs, 3),
    });
  } finally {
    await c.stop();
    rmSync(data, { recursive: true, force: true });
  }
}

/** Resident memory of a process, in MB (VmRSS). */
function rssMB(pid: number): number {
  const kb = Number(/^VmRSS:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return round(kb / 1024, 1);
}

/**
 * `n` jails on one agent of `jailfleet up` (JAILFLEET_BENCH_DENSITY=N for fewer): apply 100, then
 * the fleet of `n` (the 100 and the rest) to all running. Per-jail cost at `n` (whole time / n)
 * against at 100; the agent's RSS and the host's mount-table lines with `n` running; then
 * `up`'s own Ctrl-C teardown, timed to its exit.
 */
async function density(n: number) {
  const dir = mkdtempSync(join(tmpdir(), 'jailfleet-bench-density-'));
  const port = await freePort();
  const first = Math.min(100, n);
  const up = execa(process.execPath, [cliPath, 'up', '--hosts', '1', '--data-dir', join(dir, 'up'), '--nats-port', String(port), '--agent-cpu', String(Math.max(1, n / 10)), '--agent-memory-mb', String(Math.max(1024, n * 64))], { reject: false, buffer: true });
  let out = '';
  up.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  const env = { JAILFLEET_NATS_URL: `nats://127.0.0.1:${port}` };
  const before = mountLines();
  const fleet = (count: number) => {
    const file = join(dir, `fleet-${count}.json`);
    writeFileSync(file, JSON.stringify({ jails: Array.from({ length: count }, (_, i) => ({ name: `dense-${i}`, command: ['/bin/sleep', '3600'], restart: 'never' })) }));
    return file;
  };
  const apply = async (count: number) => {
    const t0 = performance.now();
    const r = await execa(process.execPath, [cliPath, 'apply', '-f', fleet(count), '--wait', '--timeout', '3600000'], { env, reject: false });
    if (r.exitCode !== 0) throw new Error(`density: apply of ${count} failed: ${r.stderr}`);
    return performance.now() - t0;
  };
  let teardownMs: number | undefined;
  try {
    for (const deadline = Date.now() + 120_000; !out.includes('ready:'); await new Promise((r) => setTimeout(r, 100))) {
      if (up.exitCode !== null || Date.now() > deadline) throw new Error(`density: up did not get ready: ${String((await up).stderr)}`);
    }
    const wallFirst = await apply(first);
    const wallRest = n > first ? await apply(n) : 0;
    const running = (JSON.parse((await execa(process.execPath, [cliPath, 'ps', '--json'], { env, reject: false })).stdout || '[]') as { state: string }[]).filter((j) => j.state === 'running').length;
    const agentPid = (JSON.parse(readFileSync(join(dir, 'up', 'up-children.json'), 'utf8')) as Record<string, number>)['host-1']!;
    const rss = rssMB(agentPid);
    const duringLines = mountLines();
    const t0 = performance.now();
    up.kill('SIGINT');
    const r = await up;
    teardownMs = performance.now() - t0;
    const after = mountLines();
    const perFirst = wallFirst / first;
    const perAll = (wallFirst + wallRest) / n;
    emit({
      figure: 'density',
      jails: n,
      unit: 'ms',
      running,
      wallFirst100: round(wallFirst),
      wallAll: round(wallFirst + wallRest),
      perJailAt100: round(perFirst),
      perJailAtAll: round(perAll),
      perJailOfTheRest: n > first ? round(wallRest / (n - first)) : null,
      ratio: round(perAll / perFirst),
      goal: 'ratio <= 1.25; mount lines equal; agent RSS <= 200 MB; teardown <= 20 s',
      agentRssMB: rss,
      mountLinesBefore: before,
      mountLinesRunning: duringLines,
      mountLinesAfter: after,
      teardown: "jailfleet up's Ctrl-C (SIGINT) to its exit, every jail removed",
      teardownMs: round(teardownMs),
      upExitCode: r.exitCode,
    });
  } finally {
    if (up.exitCode === null) {
      up.kill('SIGINT');
      await up;
    }
    const left = mountsUnder(dir);
    if (left.length === 0) rmSync(dir, { recursive: true, force: true });
    else console.error(`jailfleet: density left mounts under ${dir}: ${left.length}`);
  }
}

const FIGURES: Record<string, { root: boolean; run: () => unknown }> = {
  'jail-floor': { root: true, run: () => jailFloor() },
  'start-latency': { root: true, run: () => startLatency(Number(process.env.BENCH_JAILS ?? 100)) },
  'ps-latency': { root: true, run: () => psLatency(Number(process.env.BENCH_PS_JAILS ?? 10_000), 7) },
  'exec-latency': { root: true, run: () => execLatency(7) },
  'console-latency': { root: true, run: () => consoleLatency(200) },
  'exec-throughput': { root: true, run: () => execThroughput(100) },
  density: { root: true, run: () => density(Number(process.env.JAILFLEET_BENCH_DENSITY ?? 1000)) },
  rollout: { root: true, run: () => rollout(Number(process.env.BENCH_ROLLOUT_JAILS ?? 500), 5) },
  placement: { root: false, run: () => placementFigure() },
  'plan-quality': { root: false, run: () => planQualityFigure() },
  failover: { root: true, run: () => failoverFigure(Number(process.env.BENCH_JAILS ?? 100)) },
  'agent-restart': { root: true, run: () => agentRestartFigure(Number(process.env.BENCH_JAILS ?? 100)) },
  'image-start': { root: true, run: () => imageStartFigure(Number(process.env.BENCH_IMAGE_JAILS ?? 30)) },
  'dashboard-load': { root: false, run: () => dashboardLoadFigure(Number(process.env.BENCH_DASHBOARD_JAILS ?? 10_000), 5) },
  'image-pull': { root: true, run: () => imagePullFigure(Number(process.env.BENCH_IMAGE_MB ?? 100), 3) },
  'metrics-scrape': { root: true, run: () => metricsScrapeFigure(Number(process.env.BENCH_SCRAPE_JAILS ?? 1000), 20) },
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
