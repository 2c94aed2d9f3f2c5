// Host volumes end to end: an agent offers a directory by name, a jail that asks for it is
// placed on that host and no other (apply and plan agree, with the reason), and what the jail
// writes lands in the host's directory. Real nats-server, real `jailfleet serve`, real binds.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

d('host volumes', () => {
  let c: TestCluster;
  let pgdata: string;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: [] });
    pgdata = join(c.dir, 'pgdata');
    mkdirSync(pgdata);
    c.startAgent('host-1');
    c.startAgent('host-2', ['--volume', `pgdata=${pgdata}`]);
    c.startAgent('host-3');
    await c.until('3 hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 3);
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
  }, 120_000);

  it('a jail with a volume runs on the one host offering it and writes into its directory', async () => {
    const fleet = join(c.dir, 'fleet.json');
    const jails = Array.from({ length: 3 }, (_, i) => ({
      name: `pg-${i}`,
      command: ['/bin/sh', '-c', `echo ${i} > /data/from-pg-${i}; exec sleep 3600`],
      restart: 'never',
      volumes: [{ name: 'pgdata', target: '/data' }],
      placement: { spreadGroup: 'pg' },
    }));
    writeFileSync(fleet, JSON.stringify({ jails }));
    const planned = await c.cli(['plan', '-f', fleet, '--json']);
    expect(planned.exitCode).toBe(0);
    expect(JSON.parse(planned.stdout).hosts.map((h: { host: string }) => h.host)).toEqual(['host-2']);
    const r = await c.cli(['apply', '-f', fleet, '--wait']);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const rows = await c.json<PsRow[]>(['ps']);
    expect(rows.filter((j) => j.name.startsWith('pg-')).map((j) => j.host)).toEqual(['host-2', 'host-2', 'host-2']);
    await c.until('the jails wrote', async () => [0, 1, 2].every((i) => { try { return readFileSync(join(pgdata, `from-pg-${i}`), 'utf8') === `${i}\n`; } catch { return false; } }));
  });

  it('a volume no host offers: plan and apply both say which volume and how many hosts lack it', async () => {
    const fleet = join(c.dir, 'nope.json');
    writeFileSync(fleet, JSON.stringify({ jails: [{ name: 'logs', command: ['/bin/sleep', '60'], volumes: [{ name: 'logs', target: '/logs' }] }] }));
    const planned = await c.cli(['plan', '-f', fleet, '--json']);
    expect(planned.exitCode).toBe(1);
    expect(JSON.parse(planned.stdout).unplaced).toEqual([{ name: 'logs', reason: 'no host fits: 3 hosts lack volume logs' }]);
    expect((await c.cli(['apply', '-f', fleet])).exitCode).toBe(0);
    const row = await c.until('logs unplaced', async () => (await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'logs' && j.state === 'unplaced'));
    expect(row.error?.message).toMatch(/3 hosts lack volume logs/);
  });

  it('run --volume NAME:TARGET[:ro] places the jail where the volume is; :ro is read-only inside; bad values are refused before anything is sent', async () => {
    writeFileSync(join(pgdata, 'seen-by-run'), 'from the host\n');
    const r = await c.cli(['run', '--volume', 'pgdata:/srv/pg:ro', '--restart', 'never', 'pg-run', '--', '/bin/sleep', '3600']);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    expect((await c.json<PsRow[]>(['ps'])).find((j) => j.name === 'pg-run')?.host).toBe('host-2');
    expect((await c.cli(['exec', 'pg-run', '--', '/bin/cat', '/srv/pg/seen-by-run'])).stdout).toBe('from the host');
    const write = await c.cli(['exec', 'pg-run', '--', '/bin/sh', '-c', 'echo x > /srv/pg/written']);
    expect(write.exitCode).not.toBe(0);
    expect(write.stderr).toMatch(/Read-only file system/);

    const bad: [string[], string][] = [
      [['--volume', 'pgdata'], 'jailfleet: --volume: expected NAME:TARGET[:ro|rw] (got "pgdata")'],
      [['--volume', 'pgdata:/srv:rx'], 'jailfleet: --volume: expected NAME:TARGET[:ro|rw] (got "pgdata:/srv:rx")'],
      [['--volume', 'PG:/srv'], expect.stringMatching(/^jailfleet: --volume "PG:\/srv": name: /) as unknown as string],
      [['--volume', 'pgdata:relative'], expect.stringMatching(/^jailfleet: --volume "pgdata:relative": target: /) as unknown as string],
      [['--volume', 'pgdata:/srv', '--mount', `${pgdata}:/srv`], expect.stringMatching(/^jailfleet: run: invalid spec: .*two mounts or volumes have the same target/) as unknown as string],
    ];
    for (const [flags, stderr] of bad) {
      const b = await c.cli(['run', ...flags, 'pg-bad', '--', '/bin/true']);
      expect({ flags, exitCode: b.exitCode, stderr: b.stderr }).toEqual({ flags, exitCode: 2, stderr });
    }
    expect((await c.json<PsRow[]>(['ps'])).some((j) => j.name === 'pg-bad')).toBe(false);
  });
});
