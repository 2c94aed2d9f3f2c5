// Exhaustion stays inside the jail: a fork bomb meets the jail's pids limit while the agent's
// heartbeats stay on time, and /tmp and /dev/shm are size-limited tmpfs a jail cannot grow
// without end. Real nats-server, real agent, real jails, only the CLI and the heartbeat subject.
// Harmless even if a limit were missing: the bomb is bounded (500 forks of sleeping children),
// and the tmpfs writes stop at 400 MB.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

d('exhaustion stays inside a jail', () => {
  let c: TestCluster;
  let scratch: string;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1'] });
    scratch = scratchDir('jf-exhaustion-');
    await c.until('the host up', async () => (await c.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
  }, 60_000);

  afterAll(async () => {
    rmSync(scratch, { recursive: true, force: true });
    await c?.stop();
  }, 120_000);

  it('a fork bomb meets the pids limit, and the host\'s heartbeats stay on time', async () => {
    const fleet = join(scratch, 'bomb.json');
    const bomb = '$| = 1; for (1 .. 500) { my $p = fork(); if (!defined $p) { $failed++ } elsif ($p == 0) { sleep 1000; exit 0 } } print "forks failed: $failed\\n"; sleep 1000';
    writeFileSync(fleet, JSON.stringify({ jails: [{ name: 'bomb', command: ['/usr/bin/perl', '-e', bomb], env: { PATH: '/usr/bin:/bin' }, resources: { cpu: 0.1, maxProcs: 32 } }] }));
    // heartbeats come every second (the agent's default); their arrival times, while the bomb goes off
    const arrivals: number[] = [];
    const watching = c.heartbeat('host-1', () => arrivals.push(Date.now()) >= 12, 40_000);
    expect(await c.cli(['apply', '-f', fleet])).toMatchObject({ exitCode: 0 });
    const log = await c.until('the bomb spent', async () => {
      const r = await c.cli(['logs', 'bomb']);
      return r.stdout.includes('forks failed') && r.stdout;
    });
    // the init, perl and 30 children make 32: the other 470 forks were refused
    expect(log).toBe('forks failed: 470');
    await watching;
    const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!);
    expect(Math.max(...gaps)).toBeLessThan(2_500);
    // the host still answers, and the jail still runs its command
    const [row] = (await c.json<{ name: string; state: string }[]>(['ps'])).filter((r) => r.name === 'bomb');
    expect(row).toMatchObject({ state: 'running' });
    expect((await c.cli(['exec', 'bomb', '--', '/bin/true'])).exitCode).not.toBe(0); // no pid left for a session either
    expect((await c.cli(['rm', 'bomb'])).exitCode).toBe(0);
  }, 90_000);

  it('/tmp and /dev/shm are size-limited tmpfs: filling them stops at their size', async () => {
    // memory enough to hold a full /dev/shm (its pages count against the jail's memory limit)
    const fleet = join(scratch, 'filler.json');
    writeFileSync(fleet, JSON.stringify({ jails: [{ name: 'filler', command: ['/bin/sleep', '3600'], resources: { memoryMB: 512 } }] }));
    expect(await c.cli(['apply', '-f', fleet])).toMatchObject({ exitCode: 0 });
    await c.until('filler running', async () => (await c.json<{ name: string; state: string }[]>(['ps'])).some((r) => r.name === 'filler' && r.state === 'running'));
    const df = await c.cli(['exec', 'filler', '--', 'df', '-k', '--output=target,size', '/tmp', '/dev/shm']);
    expect(df.stdout.split('\n').slice(1).map((l) => l.trim().split(/\s+/))).toEqual([['/tmp', String(256 * 1024)], ['/dev/shm', String(64 * 1024)]]);
    // 400 MB at most, in 1 MB blocks: the writes stop at the tmpfs's size with "No space left"
    const fill = await c.cli(['exec', 'filler', '--', 'dd', 'if=/dev/zero', 'of=/dev/shm/fill', 'bs=1M', 'count=400']);
    expect(fill.exitCode).not.toBe(0);
    expect(fill.stderr).toMatch(/No space left on device/);
    expect((await c.cli(['exec', 'filler', '--', 'stat', '-c', '%s', '/dev/shm/fill'])).stdout).toBe(String(64 * 1024 * 1024));
    expect((await c.cli(['exec', 'filler', '--', 'rm', '/dev/shm/fill'])).exitCode).toBe(0);
  }, 60_000);
});
