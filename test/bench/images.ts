// The image figures of `npm run bench`, each beside its baseline in the same run:
//   image-start: start latency of jails from a cached busybox image beside thin-root jails,
//                interleaved on one agent (goal: ratio <= 1.2);
//   image-pull:  the first start on a host of a jail from a ~100 MB image (fetch from the object
//                store, sha256, member check, unpack) beside `tar -x` of the same archive from
//                local disk (goal: <= 2x).
// Both start a one-agent cluster of real processes and remove everything they made.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { WIRE_VERSION, subjects, type Command, type JailSpec, type StateEvent } from '../../contracts/index.js';
import { ensureTopology } from '../../services/common/index.js';
import { TestCluster } from '../support/cluster.js';
import { busyboxRoot } from '../support/image-fixtures.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** One agent (`bench-1`) and a way to start a jail by command and time it until its running event. */
async function benchCluster(agentArgs: string[] = []) {
  const c = await TestCluster.start({ hosts: [], scheduler: false, status: false, logLevel: 'info' });
  c.startAgent('bench-1', agentArgs);
  const nc = await connect({ servers: c.url });
  const js = jetstream(nc);
  await ensureTopology(nc);
  const waiting = new Map<string, (ev: StateEvent) => void>();
  nc.subscribe('jailfleet.evt.bench-1.*', {
    callback: (_e, m) => {
      const ev = JSON.parse(new TextDecoder().decode(m.data)) as StateEvent;
      if (ev.state === 'running' || ev.state === 'failed') waiting.get(ev.jail)?.(ev);
    },
  });
  await new Promise<void>((r) => {
    const s = nc.subscribe(subjects.hb('bench-1'), { callback: () => (s.unsubscribe(), r()) });
  });
  let revision = 0;
  const start = async (name: string, extra: Partial<JailSpec>): Promise<number> => {
    const spec: JailSpec = {
      name, command: ['/bin/sleep', '3600'], env: {}, mounts: [], network: 'inherit', restart: 'never', stopTimeoutMs: 2000, placement: { labels: {} }, resources: { cpu: 0.1, memoryMB: 64, maxProcs: 128 }, failover: { reschedule: true }, ...extra,
    };
    const cmd: Command = { v: WIRE_VERSION, op: 'ensure', jail: name, generation: 1, revision: ++revision, desired: 'running', spec, issuedAt: new Date().toISOString() };
    const t0 = performance.now();
    const done = new Promise<StateEvent>((r) => waiting.set(name, r));
    await js.publish(subjects.cmd('bench-1'), enc(cmd));
    const ev = await done;
    if (ev.state !== 'running') throw new Error(`${name} failed: ${ev.error?.message}`);
    return performance.now() - t0;
  };
  const destroy = async (name: string) => {
    const cmd: Command = { v: WIRE_VERSION, op: 'destroy', jail: name, generation: 1, revision: ++revision, issuedAt: new Date().toISOString() };
    await js.publish(subjects.cmd('bench-1'), enc(cmd));
  };
  const importImage = async (tag: string, path: string) => {
    const r = await c.cli(['image', 'import', tag, path, '--max-image-mb', '1024'], { timeoutMs: 600_000 });
    if (r.exitCode !== 0) throw new Error(`import failed: ${r.stderr}`);
    return /sha256:[0-9a-f]{64}/.exec(r.stdout)![0];
  };
  const stop = async () => {
    await nc.close();
    await c.stop();
  };
  return { c, start, destroy, importImage, stop };
}

export async function imageStartFigure(n: number) {
  const work = mkdtempSync(join(tmpdir(), 'jailfleet-bench-image-'));
  const b = await benchCluster();
  try {
    await busyboxRoot(join(work, 'root'));
    const digest = await b.importImage('bench-busybox:1', join(work, 'root'));
    const image = `bench-busybox:1@${digest}`;
    await b.start('warm', { image }); // the first start fetches: not this figure's business
    const thin: number[] = [];
    const fromImage: number[] = [];
    for (let i = 0; i < n; i++) {
      thin.push(await b.start(`thin-${i}`, {}));
      fromImage.push(await b.start(`img-${i}`, { image }));
    }
    const p50 = median(fromImage);
    const base = median(thin);
    emit({ figure: 'image-start', jails: n, unit: 'ms', p50: round(p50), baseline: 'thin-root jails, interleaved (this run)', baselineP50: round(base), ratio: round(p50 / base), goal: 'ratio <= 1.2' });
  } finally {
    await b.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

export async function imagePullFigure(mb: number, runs: number) {
  const work = mkdtempSync(join(tmpdir(), 'jailfleet-bench-pull-'));
  // a cache too small for two images: each new image's fetch collects the last (no jail uses it)
  const b = await benchCluster(['--image-cache-mb', '1']);
  try {
    const pulls: number[] = [];
    const tarX: number[] = [];
    for (let r = 0; r < runs; r++) {
      // a userland plus `mb` MB of incompressible files: what the agent moves is what it unpacks
      const root = join(work, `root-${r}`);
      await busyboxRoot(root, `pull-${r}`);
      mkdirSync(join(root, 'data'));
      for (let i = 0; i < mb; i++) writeFileSync(join(root, 'data', `blob-${i}`), randomBytes(1024 * 1024));
      const archive = join(work, `pull-${r}.tar`);
      await execa('tar', ['-c', '-f', archive, '-C', root, '.']);
      rmSync(root, { recursive: true, force: true });
      const digest = await b.importImage(`bench-pull:${r}`, archive);
      pulls.push(await b.start(`pull-${r}`, { image: `bench-pull:${r}@${digest}` }));
      await b.destroy(`pull-${r}`);
      const out = join(work, `x-${r}`);
      mkdirSync(out);
      const t0 = performance.now();
      await execa('tar', ['-x', '-p', '-f', archive, '-C', out]);
      tarX.push(performance.now() - t0);
      rmSync(out, { recursive: true, force: true });
      rmSync(archive, { force: true });
    }
    const p50 = median(pulls);
    const base = median(tarX);
    emit({ figure: 'image-pull', imageMB: mb, runs, unit: 'ms', firstStartP50: round(p50), baseline: 'tar -x of the same archive from local disk (this run)', baselineP50: round(base), ratio: round(p50 / base), goal: 'ratio <= 2' });
  } finally {
    await b.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
