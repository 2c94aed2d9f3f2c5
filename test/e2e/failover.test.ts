// Failover and crash safety end to end: real nats-servers, real `jailfleet serve` processes and
// real jails. Processes die by SIGKILL, as in a crash; the kernel's own process table says how
// many copies of each jail run.
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath, runningCopies } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;


const TTL = 3000;

function fleetFile(names: string[], extra = ''): string {
  const dir = mkdtempSync(join(tmpdir(), 'jf-fleet-'));
  const file = join(dir, 'fleet.yaml');
  writeFileSync(file, `jails:\n${names.map((n) => `  - name: ${n}\n    command: [/bin/sleep, "3600"]\n${extra}`).join('')}`);
  return file;
}

/** Rows of `names`, once every one of them is running on a host that is not in `notOn`. */
async function allRunning(c: TestCluster, names: string[], notOn: string[] = []): Promise<PsRow[] | undefined> {
  const rows = (await c.json<PsRow[]>(['ps'])).filter((r) => names.includes(r.name));
  const ok = rows.length === names.length && rows.every((r) => r.state === 'running' && r.host && !notOn.includes(r.host));
  return ok ? rows : undefined;
}

/** True once the kernel runs exactly one copy of each of `names` (and none of anything else). */
function exactlyOneCopyEach(c: TestCluster, names: string[]) {
  const copies = runningCopies(c.dir);
  return Object.keys(copies).sort().join() === [...names].sort().join() && names.every((n) => copies[n]!.length === 1) ? copies : undefined;
}

d('a host dies: its jails move, and come back to exactly one copy', () => {
  let c: TestCluster;
  const names = Array.from({ length: 10 }, (_, i) => `mv-${i}`);

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2', 'host-3'], schedulerArgs: ['--host-ttl-ms', String(TTL), '--strategy', 'spread'], statusArgs: ['--host-ttl-ms', String(TTL)] });
    await c.until('three hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 3);
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  }, 180_000);

  it('runs the ten jails of a SIGKILLed agent on the other two hosts within the TTL and a margin', async () => {
    const r = await c.cli(['apply', '-f', fleetFile(names), '--wait']);
    expect(r.exitCode).toBe(0);
    const before = (await allRunning(c, names))!;
    const victim = 'host-1';
    const moved = before.filter((row) => row.host === victim).map((row) => row.name);
    expect(moved.length).toBeGreaterThan(0);
    const stayed = before.filter((row) => row.host !== victim);

    const killedAt = Date.now();
    await c.stopAgent(victim, 'SIGKILL');
    const after = await c.until('every jail running off the dead host', () => allRunning(c, names, [victim]), TTL + 30_000);
    const tookMs = Date.now() - killedAt;
    // generous: the TTL, plus starting the jails on a loaded two-core machine
    expect(tookMs).toBeLessThan(TTL + 25_000);
    for (const row of after) {
      if (moved.includes(row.name)) expect(row.generation).toBe(2);
      else {
        // the jails of the live hosts were not touched
        const was = stayed.find((s) => s.name === row.name)!;
        expect([row.host, row.pid, row.generation, row.restarts]).toEqual([was.host, was.pid, was.generation, 0]);
      }
    }
    expect(new Set(after.map((row) => row.host))).toEqual(new Set(['host-2', 'host-3']));
    const hosts = await c.json<{ host: string; status: string }[]>(['hosts']);
    expect(hosts.find((h) => h.host === victim)?.status).toBe('down');
    // the dead agent's jails still run on its machine (a killed agent is not a dead kernel)
    const copies = runningCopies(c.dir);
    for (const n of moved) expect(copies[n]!.sort()).toEqual([victim, after.find((row) => row.name === n)!.host].sort());
  }, 90_000);

  it('destroys the stale copies when the agent returns, leaving exactly one copy of each jail', async () => {
    c.startAgent('host-1');
    await c.until('one copy of each jail', async () => exactlyOneCopyEach(c, names), 60_000);
    const rows = (await allRunning(c, names, ['host-1']))!;
    expect(rows).toHaveLength(10);
    expect(c.log('host-1')).toMatch(/fencing: destroying a stale copy/);
    // and it stays so: nothing is started again on the returned host
    await new Promise((r) => setTimeout(r, 2000));
    expect(exactlyOneCopyEach(c, names)).toBeDefined();
  }, 90_000);

  it('leaves a jail with failover.reschedule false where it is, shown as lost, until its host returns', async () => {
    const r = await c.cli(['apply', '-f', fleetFile(['stay-0'], '    placement: { host: host-3 }\n    failover: { reschedule: false }\n'), '--wait']);
    expect(r.exitCode).toBe(0);
    const [row] = (await allRunning(c, ['stay-0']))!;
    await c.stopAgent('host-3', 'SIGKILL');
    await c.until('stay-0 lost', async () => (await c.json<PsRow[]>(['ps'])).find((x) => x.name === 'stay-0' && x.state === 'lost'), TTL + 15_000);
    // it is not placed anywhere else meanwhile
    await new Promise((res) => setTimeout(res, 1500));
    expect(runningCopies(c.dir)['stay-0']).toEqual(['host-3']);
    c.startAgent('host-3');
    const [back] = (await c.until('stay-0 running again', () => allRunning(c, ['stay-0']), 30_000))!;
    // re-adopted, not restarted
    expect([back!.host, back!.pid, back!.generation, back!.restarts]).toEqual(['host-3', row!.pid, 1, 0]);
  }, 90_000);

  it('re-adopts every jail of a SIGKILLed agent restarted at once (same pids, no restart), then carries out what was asked meanwhile', async () => {
    // a jail pinned to the host, to be stopped while its agent is away
    const pinned = await c.cli(['apply', '-f', fleetFile(['pin-2'], '    placement: { host: host-2 }\n'), '--wait']);
    expect(pinned.exitCode).toBe(0);
    const all = [...names, 'stay-0', 'pin-2'];
    const before = (await allRunning(c, all))!;
    const host = 'host-2';
    const mine = before.filter((row) => row.host === host && row.name !== 'pin-2');
    expect(mine.length).toBeGreaterThan(0);
    const starts = () => (c.log(host).match(/agent started/g) ?? []).length;
    const startsBefore = starts();
    await c.stopAgent(host, 'SIGKILL');
    const stop = await c.cli(['stop', 'pin-2']);
    expect(stop.exitCode).toBe(0);
    c.startAgent(host);
    await c.until('agent back', async () => starts() > startsBefore, 30_000);
    expect((c.log(host).match(/re-adopting jail/g) ?? []).length).toBeGreaterThanOrEqual(mine.length);
    const after = (await c.until('all running', () => allRunning(c, [...names, 'stay-0']), 30_000))!;
    for (const row of mine) {
      const now = after.find((a) => a.name === row.name)!;
      expect([now.host, now.pid, now.generation, now.restarts]).toEqual([row.host, row.pid, row.generation, row.restarts]);
    }
    // the stop published while the agent was away is carried out on its return
    await c.until('pin-2 stopped', async () => (await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'pin-2' && r.state === 'stopped'), 30_000);
    expect(exactlyOneCopyEach(c, [...names, 'stay-0'])).toBeDefined();
  }, 90_000);
});

d('services crash: a scheduler during an apply, the status service', () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], schedulers: 2 });
    await c.until('two hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2);
    await c.until('a leading scheduler', async () => ['scheduler-1', 'scheduler-2'].some((s) => /leading/.test(c.log(s))));
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  }, 180_000);

  it('runs all 50 jails exactly once when the leading scheduler is SIGKILLed during the apply', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `ap-${i}`);
    const leader = ['scheduler-1', 'scheduler-2'].find((s) => /leading/.test(c.log(s)))!;
    const standby = leader === 'scheduler-1' ? 'scheduler-2' : 'scheduler-1';
    const apply = execa(process.execPath, [cliPath, 'apply', '-f', fleetFile(names), '--wait', '--timeout', '120000'], {
      env: { JAILFLEET_NATS_URL: c.url },
      reject: false,
    });
    // as soon as the leader has placed anything: most of the fleet is left to the standby
    await c.until('the apply under way', async () => (await c.json<PsRow[]>(['ps'])).length > 0, 30_000);
    await c.killService(leader);
    const r = await apply;
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    await c.until('the standby leads', async () => /leading/.test(c.log(standby)), 10_000);
    await c.until('50 running', () => allRunning(c, names), 60_000);
    await c.until('one copy each', async () => exactlyOneCopyEach(c, names), 30_000);
    // one generation each: a new leader does not place again what the old one placed
    const rows = (await allRunning(c, names))!;
    expect(rows.every((row) => row.generation === 1 && row.restarts === 0)).toBe(true);
  }, 150_000);

  it('rebuilds the same view after the status service is SIGKILLed and restarted', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `ap-${i}`);
    const before = (await c.until('50 running', () => allRunning(c, names), 60_000))!;
    await c.killService('status');
    c.startService('status');
    const after = await c.until('status answers again', async () => c.json<PsRow[]>(['ps']), 30_000);
    expect(after).toEqual(before);
  }, 60_000);

  it('finishes a drain whose leading scheduler is SIGKILLed halfway, with every jail running once', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `ap-${i}`);
    // two schedulers again (one was killed above), then the host holding most jails is drained
    const dead = ['scheduler-1', 'scheduler-2'].find((s) => !c.services.has(s))!;
    c.startService(dead);
    const rows = (await c.until('50 running', () => allRunning(c, names), 60_000))!;
    const count = (h: string) => rows.filter((r) => r.host === h).length;
    const victim = count('host-1') >= count('host-2') ? 'host-1' : 'host-2';
    const onVictim = count(victim);
    const d = await c.cli(['drain', victim, '--parallel', '4']);
    expect(d.exitCode).toBe(0);
    await c.until('a few moved', async () => (await c.json<PsRow[]>(['ps'])).filter((r) => names.includes(r.name) && r.host !== victim && r.state === 'running').length >= 50 - onVictim + 2, 60_000);
    const leader = ['scheduler-1', 'scheduler-2'].find((s) => c.services.has(s) && /leading/.test(c.log(s)))!;
    await c.killService(leader);
    await c.until('drained', async () => (await c.json<{ host: string; status: string }[]>(['hosts'])).find((h) => h.host === victim)?.status === 'drained', 120_000);
    const after = (await c.until('50 running off the drained host', () => allRunning(c, names, [victim]), 60_000))!;
    expect(after).toHaveLength(50);
    await c.until('one copy each', async () => exactlyOneCopyEach(c, names), 30_000);
  }, 240_000);
});

d('a nats-server of three dies during an apply', () => {
  let c: TestCluster;
  afterEach(async () => {
    await c?.stop();
  }, 180_000);

  it('converges: every jail runs exactly once', async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], natsCluster: 3 });
    await c.until('two hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2, 60_000);
    const names = Array.from({ length: 20 }, (_, i) => `nc-${i}`);
    const apply = execa(process.execPath, [cliPath, 'apply', '-f', fleetFile(names), '--wait', '--timeout', '150000'], {
      env: { JAILFLEET_NATS_URL: c.url },
      reject: false,
    });
    await c.until('the apply under way', async () => (await c.json<PsRow[]>(['ps'])).some((r) => r.state === 'running'), 60_000);
    const victim = c.natsServers[0]!;
    victim.process.kill('SIGKILL');
    await victim.process;
    const r = await apply;
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    await c.until(
      '20 running',
      async () => {
        const rows = await allRunning(c, names);
        if (rows) return rows;
        const seen = (await c.json<PsRow[]>(['ps'])).map((row) => `${row.name}:${row.state}@${row.host}`);
        throw new Error(`ps: ${seen.join(' ')}; kernel: ${JSON.stringify(runningCopies(c.dir))}`);
      },
      60_000,
    );
    await c.until('one copy each', async () => exactlyOneCopyEach(c, names), 30_000);
  }, 240_000);
});
