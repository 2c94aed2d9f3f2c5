// Consolidation end to end: agents that offer 2 cores and 512 MB each, a scheduler that packs
// (binpack, the default), a fleet packed onto the fewest hosts, a jail that fits nowhere and says
// why, and a host drained for maintenance with every jail running somewhere at every moment
// (checked in the kernel's process table and in `ps` while the drain runs). That a memory hog is
// killed at its limit while its neighbour runs is test/e2e/limits.test.ts.
// Placement depends on what every host already holds, so each test starts from an empty cluster
// (every jail removed, every host taking jails) and builds the layout it needs itself: any one of
// them runs alone (`jest -t NAME`).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath, runningCopies } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

interface HostRow {
  host: string;
  status: string;
  jails: number;
  allocated?: { cpu: number; memoryMB: number };
  drain?: { blocked: { name: string; reason: string }[] };
}

const HOSTS = ['host-1', 'host-2', 'host-3'];
/** Six jails of half a core and 128 MB: 3 cores and 768 MB, two hosts' worth. */
const PACKED = Array.from({ length: 6 }, (_, i) => `pack-${i}`);

function fleetFile(jails: object[]): string {
  const file = join(scratchDir('jf-consol-'), 'fleet.json');
  writeFileSync(file, JSON.stringify({ jails }));
  return file;
}
const sleeper = (name: string, resources: object, extra: object = {}) => ({ name, command: ['/bin/sleep', '3600'], resources, ...extra });

d('consolidation: packing by resources, reasons, drain', () => {
  let c: TestCluster;
  const ps = () => c.json<PsRow[]>(['ps']);
  const hosts = () => c.json<HostRow[]>(['hosts']);

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: [] });
    for (const h of HOSTS) c.startAgent(h, ['--cpu', '2', '--memory-mb', '512']);
    await c.until('three hosts up', async () => (await hosts()).filter((h) => h.status === 'up').length === 3, 60_000);
  }, 90_000);
  afterAll(async () => {
    await c?.stop();
  }, 300_000);

  // every jail removed and every host undrained, until the kernel and the hosts' own reports show nothing held
  beforeEach(async () => {
    for (const row of await ps()) expect((await c.cli(['rm', row.name])).exitCode).toBe(0);
    for (const h of await hosts()) if (h.status === 'draining' || h.status === 'drained') expect((await c.cli(['undrain', h.host])).exitCode).toBe(0);
    await c.until(
      'an empty cluster',
      async () => {
        const rows = await hosts();
        return (await ps()).length === 0 && Object.keys(runningCopies(c.dir)).length === 0 && rows.length === HOSTS.length && rows.every((h) => h.status === 'up' && h.jails === 0 && h.allocated?.memoryMB === 0);
      },
      60_000,
    );
  }, 90_000);

  it('packs a fleet that fits onto the fewest hosts', async () => {
    const r = await c.cli(['apply', '-f', fleetFile(PACKED.map((n) => sleeper(n, { cpu: 0.5, memoryMB: 128 }))), '--wait']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('6 of 6 jails running');
    const rows = (await ps()).filter((row) => PACKED.includes(row.name));
    expect(rows.every((row) => row.state === 'running')).toBe(true);
    const perHost = new Map<string, number>();
    for (const row of rows) perHost.set(row.host!, (perHost.get(row.host!) ?? 0) + 1);
    // 768 MB cannot fit on one 512 MB host: two hosts, the first one full
    expect([...perHost.values()].sort()).toEqual([2, 4]);
    const full = [...perHost].find(([, n]) => n === 4)![0];
    const row = await c.until('the full host reports what it gave out', async () => (await hosts()).find((h) => h.host === full && h.allocated?.memoryMB === 512));
    expect(row.allocated).toEqual({ cpu: 2, memoryMB: 512 });
    const table = await c.cli(['hosts']);
    expect(table.stdout).toMatch(new RegExp(`${full}\\s+up\\s+4\\s+2/2\\s+512/512`));
  }, 120_000);

  it('says why a jail that fits nowhere is not placed: apply exits non-zero, ps shows the reason', async () => {
    const r = await c.cli(['apply', '-f', fleetFile([sleeper('huge', { cpu: 0.5, memoryMB: 1024 })]), '--wait', '--timeout', '20000']);
    expect(r.exitCode).toBe(1);
    const reason = 'no host fits: 3 hosts lack memory (needs 1024 MB, most free 512 MB)';
    expect(r.stdout).toContain(`huge unplaced: ${reason}`);
    expect(r.stderr).toContain(`huge (unplaced: ${reason})`);
    const row = (await ps()).find((x) => x.name === 'huge');
    expect(row).toMatchObject({ host: null, state: 'unplaced', error: { step: 'place', message: reason } });
    expect((await c.cli(['rm', 'huge'])).exitCode).toBe(0);
    await c.until('huge gone', async () => !(await ps()).some((x) => x.name === 'huge'));
  }, 60_000);

  it('refuses bad drain arguments with exit 2 naming the rule, and an unknown host with exit 1', async () => {
    expect(await c.cli(['drain', 'Host_1'])).toMatchObject({ exitCode: 2, stderr: expect.stringContaining('jailfleet: HOST: must be lowercase letters') });
    expect(await c.cli(['drain', 'host-1', '--parallel', '0'])).toMatchObject({ exitCode: 2, stderr: 'jailfleet: --parallel: must be at least 1 (got "0")' });
    expect(await c.cli(['drain', 'host-1', '--parallel', 'two'])).toMatchObject({ exitCode: 2, stderr: 'jailfleet: --parallel: must be a whole number (got "two")' });
    expect(await c.cli(['drain', 'nope'])).toMatchObject({ exitCode: 1, stderr: expect.stringContaining('no host named "nope"') });
  });

  it('drains the full host: every jail has a running copy at every moment, then the host is drained', async () => {
    // four jails on one host, two on another (as packed above)
    expect((await c.cli(['apply', '-f', fleetFile(PACKED.map((n) => sleeper(n, { cpu: 0.5, memoryMB: 128 }))), '--wait'])).exitCode).toBe(0);
    const before = (await ps()).filter((row) => PACKED.includes(row.name));
    const victim = before.find((row) => before.filter((x) => x.host === row.host).length === 4)!.host!;
    const moving = before.filter((row) => row.host === victim).map((row) => row.name);

    const drain = c.cli(['drain', victim, '--parallel', '2', '--wait', '--timeout', '120000']);
    let settled = false;
    void drain.finally(() => (settled = true));
    const gaps: string[] = [];
    // the kernel every 50 ms (cheap), `ps` as often as a CLI process can answer
    let kernelSamples = 0;
    const kernel = setInterval(() => {
      const copies = runningCopies(c.dir);
      for (const n of PACKED) if (!copies[n]?.length) gaps.push(`kernel: no copy of ${n}`);
      kernelSamples++;
    }, 50);
    let psSamples = 0;
    while (!settled) {
      const rows = await ps();
      for (const n of PACKED) {
        const row = rows.find((x) => x.name === n);
        if (row?.state !== 'running') gaps.push(`ps: ${n} is ${row?.state ?? 'missing'}`);
      }
      psSamples++;
    }
    clearInterval(kernel);
    const r = await drain;
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    expect(r.stdout).toContain(`${victim}: draining, 4 jails to move, 2 at a time`);
    expect(r.stdout).toContain(`${victim}: drained (4 of 4 jails moved)`);
    console.log(`drain of 4 jails, 2 at a time: ${kernelSamples} kernel samples, ${psSamples} ps samples, ${gaps.length} gaps`);
    expect(kernelSamples).toBeGreaterThan(10);
    expect(psSamples).toBeGreaterThan(1);
    expect(gaps).toEqual([]);

    expect((await hosts()).find((h) => h.host === victim)).toMatchObject({ status: 'drained', jails: 0 });
    const after = (await ps()).filter((row) => PACKED.includes(row.name));
    expect(after.every((row) => row.state === 'running' && row.host !== victim)).toBe(true);
    // a moved jail runs at the next generation, the others at theirs (names removed by an earlier
    // test keep their generation counter in the tombstone, so compare with before the drain)
    const generationBefore = new Map(before.map((row) => [row.name, row.generation]));
    for (const row of after) expect(row.generation).toBe(generationBefore.get(row.name)! + (moving.includes(row.name) ? 1 : 0));
    // one copy of each, none left on the drained host
    const copies = await c.until('one copy of each jail', async () => {
      const k = runningCopies(c.dir);
      return PACKED.every((n) => k[n]?.length === 1) ? k : undefined;
    });
    expect(Object.values(copies).flat()).not.toContain(victim);
  }, 180_000);

  it('logs -f follows a jail that a drain moves, to its new host, saying so', async () => {
    const script = 'echo "copy starts"; while sleep 0.3; do :; done';
    expect((await c.cli(['run', 'mover', '--', '/bin/sh', '-c', script])).exitCode).toBe(0);
    const from = (await c.until('mover running', async () => (await ps()).find((r) => r.name === 'mover' && r.state === 'running')))!.host!;
    const p = execa(process.execPath, [cliPath, 'logs', '-f', 'mover'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    let out = '';
    let err = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    try {
      await c.until('the first copy\'s line', async () => out === 'copy starts\n', 15_000);
      expect((await c.cli(['drain', from, '--wait', '--timeout', '60000'])).exitCode).toBe(0);
      const to = (await ps()).find((r) => r.name === 'mover')!.host!;
      expect(to).not.toBe(from);
      await c.until('the new copy\'s line, after the move was told', async () => out === 'copy starts\ncopy starts\n' && err.includes('moved'), 20_000);
      // the old copy's stop is told as it happens, then the move
      expect(err).toMatch(new RegExp(`^(jailfleet: mover stopped; still following its console\n)?jailfleet: mover moved from ${from} to ${to}; following it there\n$`));
    } finally {
      p.kill('SIGINT');
    }
    expect((await p).exitCode).toBe(0);
  }, 120_000);

  it('a drained host takes no jail, not even one pinned to it, until it is undrained', async () => {
    const victim = 'host-2';
    const d = await c.cli(['drain', victim, '--wait', '--timeout', '30000']);
    expect(d).toMatchObject({ exitCode: 0, stderr: '' });
    expect((await hosts()).find((h) => h.host === victim)).toMatchObject({ status: 'drained', jails: 0 });
    const fleet = fleetFile([sleeper('pin', { cpu: 0.1, memoryMB: 64 }, { placement: { host: victim } })]);
    const r = await c.cli(['apply', '-f', fleet, '--wait', '--timeout', '10000']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`pin (unplaced: pinned host "${victim}" is draining)`);

    const u = await c.cli(['undrain', victim]);
    expect(u).toMatchObject({ exitCode: 0, stdout: `${victim}: takes jails again (0 placed on it)` });
    const row = await c.until('pin running on the undrained host', async () => (await ps()).find((x) => x.name === 'pin' && x.state === 'running'));
    expect(row.host).toBe(victim);
    expect((await hosts()).find((h) => h.host === victim)!.status).toBe('up');
  }, 60_000);

  it('drain --wait names a jail that cannot move and why, exits non-zero, and leaves it running', async () => {
    // host-1 full (four jails pinned to it); two small jails and a wide one packed together on a
    // second host, which is drained; the third host holds a small pinned jail, which leaves room
    // for the two small ones only (1.9 cores and 448 MB free, then 0.9 and 192). The small ones
    // move first (by name), so the wide one finds no room.
    const fill = Array.from({ length: 4 }, (_, i) => sleeper(`fill-${i}`, { cpu: 0.5, memoryMB: 128 }, { placement: { host: 'host-1' } }));
    expect((await c.cli(['apply', '-f', fleetFile(fill), '--wait'])).exitCode).toBe(0);
    const packed = [sleeper('pair-0', { cpu: 0.5, memoryMB: 128 }), sleeper('pair-1', { cpu: 0.5, memoryMB: 128 }), sleeper('zz-wide', { cpu: 1, memoryMB: 256 })];
    const w = await c.cli(['apply', '-f', fleetFile(packed), '--wait']);
    expect(w.exitCode).toBe(0);
    const rows = (await ps()).filter((row) => ['pair-0', 'pair-1', 'zz-wide'].includes(row.name));
    const half = rows[0]!.host!;
    // binpack put the three on one host, which they fill
    expect(rows.map((row) => row.host)).toEqual([half, half, half]);
    expect(half).not.toBe('host-1');
    const spare = HOSTS.find((h) => h !== 'host-1' && h !== half)!;
    expect((await c.cli(['apply', '-f', fleetFile([sleeper('small', { cpu: 0.1, memoryMB: 64 }, { placement: { host: spare } })]), '--wait'])).exitCode).toBe(0);

    const r = await c.cli(['drain', half, '--wait', '--timeout', '120000']);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/zz-wide cannot move: no host fits: 2 hosts lack memory \(needs 256 MB, most free 192 MB\), 1 is draining/);
    expect(r.stderr).toContain(`1 of 3 jails cannot move off ${half}`);
    const table = await c.cli(['hosts']);
    expect(table.stdout).toMatch(new RegExp(`${half}\\s+draining.*cannot move: zz-wide \\(no host fits`));
    const after = await ps();
    expect(after.find((x) => x.name === 'zz-wide')).toMatchObject({ host: half, state: 'running', generation: 1 });
    // the two that could move did, to the spare host
    expect(after.filter((x) => x.name.startsWith('pair-')).map((x) => [x.name, x.host, x.state, x.generation]).sort()).toEqual([
      ['pair-0', spare, 'running', 2],
      ['pair-1', spare, 'running', 2],
    ]);
    expect(runningCopies(c.dir)['zz-wide']).toEqual([half]);
    expect((await c.cli(['undrain', half])).exitCode).toBe(0);
  }, 180_000);
});
