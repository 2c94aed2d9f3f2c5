// Limits end to end: an agent told what its host offers says so in its heartbeats, and a jail
// that outgrows its memory is killed by the kernel while its neighbour runs on; `jailfleet ps`
// says why. Real nats-server, real `jailfleet serve` processes, real cgroups.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

/** The memory limit of process `pid`'s cgroup in bytes, from the kernel (cgroup v1 or v2). */
function memoryLimitBytes(pid: number): number {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').map((l) => l.split(':'));
  const v1 = lines.find(([, controllers]) => controllers!.split(',').includes('memory'));
  const file = v1 ? `/sys/fs/cgroup/memory${v1[2]}/memory.limit_in_bytes` : `/sys/fs/cgroup${lines.find(([id]) => id === '0')![2]}/memory.max`;
  return Number(readFileSync(file, 'utf8').trim());
}

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts, cgroups): skipped');


d('an agent with a declared capacity, and jails held to their limits', () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: [] });
    c.startAgent('host-1', ['--cpu', '2', '--memory-mb', '1024', '--label', 'zone=a', '--label', 'disk=ssd']);
    await c.until('host-1 up', async () => (await c.json<{ host: string; status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
  }, 120_000);

  it('refuses a bad capacity flag before it starts, naming the flag, with exit 2', async () => {
    const r = await execa(process.execPath, [cliPath, 'serve', 'agent', '--host', 'host-9', '--data-dir', join(c.dir, 'never'), '--cpu', 'lots'], {
      env: { JAILFLEET_NATS_URL: c.url },
      reject: false,
    });
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 2, stderr: 'jailfleet: --cpu: must be a number of cores, like 8 or 0.5 (got "lots")' });
  });

  it('heartbeats carry the capacity and labels it was given', async () => {
    const hb = await c.heartbeat('host-1');
    expect({ capacity: hb.capacity, labels: hb.labels }).toEqual({ capacity: { cpu: 2, memoryMB: 1024 }, labels: { zone: 'a', disk: 'ssd' } });
  });

  it('a memory hog in a 64 MB jail is killed by its limit, ps says "out of memory", its neighbour keeps running', async () => {
    const dir = scratchDir('jf-limits-');
    const fleet = join(dir, 'fleet.json');
    const hogScript = '$| = 1; print "allocating\\n"; $x = "x" x ($ARGV[0] * 1024 * 1024); sleep 60';
    writeFileSync(
      fleet,
      JSON.stringify({
        jails: [
          { name: 'neighbour', command: ['/bin/sleep', '3600'], resources: { memoryMB: 64 } },
          { name: 'hog', command: ['/usr/bin/perl', '-e', hogScript, '200'], restart: 'never', resources: { memoryMB: 64, cpu: 1 } },
        ],
      }),
    );
    const t = Date.now();
    const applied = await c.cli(['apply', '-f', fleet]);
    rmSync(dir, { recursive: true, force: true });
    expect(applied.exitCode).toBe(0);
    const rows = await c.until('the hog to fail', async () => {
      const ps = await c.json<PsRow[]>(['ps']);
      return ps.find((r) => r.name === 'hog')?.state === 'failed' ? ps : undefined;
    });
    console.log(`memory hog: apply to ps showing it failed for memory: ${Date.now() - t} ms`);
    const hog = rows.find((r) => r.name === 'hog')!;
    expect(hog).toMatchObject({
      host: 'host-1',
      state: 'failed',
      exitCode: 137,
      restarts: 0,
      error: { step: 'run', message: 'out of memory: killed at the 64 MB limit' },
    });
    const neighbour = rows.find((r) => r.name === 'neighbour')!;
    expect(neighbour).toMatchObject({ state: 'running', error: null });
    // the kernel holds the neighbour to its own 64 MB, and it runs on
    expect(memoryLimitBytes(neighbour.pid!)).toBe(64 * 1024 * 1024);
    expect(readFileSync(`/proc/${neighbour.pid}/stat`, 'utf8')).toContain('jailinit');

    // the plain table says it too
    const table = await c.cli(['ps']);
    expect(table.stdout).toMatch(/hog .*failed.*run: out of memory: killed at the 64 MB limit/);
    // it did start allocating: its console says so
    expect((await c.cli(['logs', 'hog'])).stdout).toBe('allocating');

    // what the host has given out: 0.1 + 1 cores, 64 + 64 MB
    const hb = await c.heartbeat('host-1', (h) => h.jails.length === 2);
    expect(hb.allocated).toEqual({ cpu: 1.1, memoryMB: 128 });
    for (const n of ['neighbour', 'hog']) expect((await c.cli(['rm', n])).exitCode).toBe(0);
  });
});
