// Records that do not fit their contract, and plan as a dry run of apply, end to end: a real
// nats-server, real `jailfleet serve` processes, real jails. An unreadable desired record leaves
// its jail exactly as it was (same pid, still running) until the admin applies its spec again;
// `plan` on the live cluster says what an apply would do and writes nothing.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_DESIRED, BUCKET_PLACEMENT, type PsRow } from '../../contracts/index.js';
import { TestCluster } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

d('records the contract refuses, and plan on the live cluster', () => {
  let c: TestCluster;
  let dir: string;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: [] });
    c.startAgent('host-1', ['--cpu', '2', '--memory-mb', '1024']);
    c.startAgent('host-2', ['--cpu', '2', '--memory-mb', '1024']);
    await c.until('both hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2);
    dir = scratchDir('jf-records-');
  }, 60_000);

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await c?.stop();
  }, 120_000);

  const row = async (name: string) => (await c.json<PsRow[]>(['ps'])).find((r) => r.name === name);

  it('an unreadable desired record leaves its jail running as it was; applying the spec again mends it', async () => {
    expect((await c.cli(['run', 'mangled', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const before = await c.until('mangled running', async () => ((await row('mangled'))?.state === 'running' ? row('mangled') : undefined));
    const nc = await connect({ servers: c.url });
    try {
      const desired = await new Kvm(nc).open(BUCKET_DESIRED);
      await desired.put('mangled', new TextEncoder().encode('{"v":1,"spec":"not a spec"}'));
      // a few resync passes of the scheduler (every 2 s)
      await new Promise((r) => setTimeout(r, 5000));
      const during = await row('mangled');
      expect(during).toMatchObject({ state: 'running', pid: before!.pid, generation: before!.generation, host: before!.host });
      const placement = await (await new Kvm(nc).open(BUCKET_PLACEMENT)).get('mangled');
      expect(placement?.json()).toMatchObject({ host: before!.host, generation: before!.generation });
      // stop cannot act on it, and says what to do
      const stop = await c.cli(['stop', 'mangled']);
      expect(stop.exitCode).toBe(1);
      expect(stop.stderr).toMatch(/^jailfleet: .*unreadable.*apply its spec again, or rm it/);
      // the admin applies the spec again: a new generation, above the one running
      expect((await c.cli(['run', 'mangled', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
      const after = await c.until('mangled at a new generation', async () => {
        const r = await row('mangled');
        return r && r.state === 'running' && r.generation > before!.generation ? r : undefined;
      });
      expect(after.pid).not.toBe(before!.pid);
    } finally {
      await nc.close();
    }
    expect((await c.cli(['rm', 'mangled'])).exitCode).toBe(0);
  }, 90_000);

  it('an unreadable placement is skipped by every service: the jail keeps running, ps does not call it removing', async () => {
    expect((await c.cli(['run', 'misplaced', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const before = await c.until('misplaced running', async () => ((await row('misplaced'))?.state === 'running' ? row('misplaced') : undefined));
    const nc = await connect({ servers: c.url });
    try {
      await (await new Kvm(nc).open(BUCKET_PLACEMENT)).put('misplaced', new TextEncoder().encode('{"v":1,"host":42,"generation":1}'));
      await new Promise((r) => setTimeout(r, 4000));
      expect(await row('misplaced')).toMatchObject({ state: 'running', pid: before!.pid, host: before!.host });
    } finally {
      await nc.close();
    }
    // rm is the admin's word: the jail and its unreadable placement go
    expect((await c.cli(['rm', 'misplaced'])).exitCode).toBe(0);
    await c.until('misplaced gone', async () => (await row('misplaced')) === undefined);
  }, 90_000);

  it('plan on the live cluster is what apply then does, and writes nothing', async () => {
    const fleet = join(dir, 'fleet.json');
    writeFileSync(fleet, JSON.stringify({ jails: Array.from({ length: 6 }, (_, i) => ({ name: `pl-${i}`, command: ['/bin/sleep', '3600'], resources: { cpu: 0.5, memoryMB: 256 } })) }));
    const planned = await c.cli(['plan', '-f', fleet, '--json']);
    expect(planned.exitCode).toBe(0);
    const plan = JSON.parse(planned.stdout) as { hosts: { host: string; jails: string[] }[]; unplaced: unknown[] };
    expect(plan.unplaced).toEqual([]);
    expect((await c.json<PsRow[]>(['ps'])).filter((r) => r.name.startsWith('pl-'))).toEqual([]);
    expect((await c.cli(['apply', '-f', fleet, '--wait'])).exitCode).toBe(0);
    const rows = (await c.json<PsRow[]>(['ps'])).filter((r) => r.name.startsWith('pl-'));
    const where = Object.fromEntries(plan.hosts.flatMap((h) => h.jails.map((j) => [j, h.host])));
    expect(Object.fromEntries(rows.map((r) => [r.name, r.host]))).toEqual(where);
    // planned again, the placed jails stay where they are
    const again = JSON.parse((await c.cli(['plan', '-f', fleet, '--json'])).stdout) as { hosts: { host: string; jails: string[] }[] };
    expect(Object.fromEntries(again.hosts.flatMap((h) => h.jails.map((j) => [j, h.host])))).toEqual(where);
    for (const r of rows) expect((await c.cli(['rm', r.name])).exitCode).toBe(0);
  }, 90_000);
});
