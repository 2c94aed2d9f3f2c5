// Failover and crash safety end to end: real nats-servers, real `jailfleet serve` processes and
// real jails. Processes die by SIGKILL, as in a crash; the kernel's own process table says how
// many copies of each jail run. A cluster is shared by a describe block; each test runs jails of
// its own names and kills what it kills itself (a beforeEach brings every agent back), so any one
// of them runs alone (`jest -t NAME`).
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster, cliPath, runningCopies } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;


const TTL = 3000;

function fleetFile(names: string[], extra = ''): string {
  const dir = scratchDir('jf-fleet-');
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

/** The kernel's copies of `names` once it runs exactly one copy of each of them. */
function exactlyOneCopyEach(c: TestCluster, names: string[]) {
  const copies = runningCopies(c.dir);
  return names.every((n) => copies[n]?.length === 1) ? Object.fromEntries(names.map((n) => [n, copies[n]!])) : undefined;
}

const alive = (pid: number) => existsSync(`/proc/${pid}`);

/** Starts an agent for every host of `hosts` that has none, and waits until all are up. */
async function everyHostUp(c: TestCluster, hosts: string[]) {
  for (const h of hosts) if (!c.agents.has(h)) await c.startAgentServing(h);
  await c.until(`${hosts.length} hosts up`, async () => (await c.json<{ host: string; status: string }[]>(['hosts'])).filter((h) => hosts.includes(h.host) && h.status === 'up').length === hosts.length, 30_000);
}

/**
 * Starts `scheduler-1` alone and waits until it holds the lease, then `scheduler-2` as its
 * standby: which one leads is known, not read from a log. Returns the leader's lease id.
 */
async function twoSchedulersFirstLeading(c: TestCluster): Promise<string> {
  c.startService('scheduler-1');
  const lease = await c.until('scheduler-1 leading', () => c.leaseHolder(), 30_000);
  c.startService('scheduler-2');
  return lease;
}

d('a host dies: its jails move, and come back to exactly one copy', () => {
  let c: TestCluster;
  const HOSTS = ['host-1', 'host-2', 'host-3'];

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: HOSTS, schedulerArgs: ['--host-ttl-ms', String(TTL), '--strategy', 'spread'], statusArgs: ['--host-ttl-ms', String(TTL)] });
  }, 60_000);
  // an agent that an earlier test killed is back before the next one starts
  beforeEach(async () => {
    await everyHostUp(c, HOSTS);
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  }, 180_000);

  it('runs the ten jails of a SIGKILLed agent on the other two hosts within the TTL and a margin', async () => {
    const names = Array.from({ length: 10 }, (_, i) => `mv-${i}`);
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
    const names = Array.from({ length: 6 }, (_, i) => `st-${i}`);
    expect((await c.cli(['apply', '-f', fleetFile(names), '--wait'])).exitCode).toBe(0);
    const before = (await allRunning(c, names))!;
    const count = (h: string) => before.filter((row) => row.host === h).length;
    const victim = [...HOSTS].sort((a, b) => count(b) - count(a))[0]!;
    const moved = before.filter((row) => row.host === victim).map((row) => row.name);
    expect(moved.length).toBeGreaterThan(0);
    await c.stopAgent(victim, 'SIGKILL');
    const after = (await c.until('every jail running off the dead host', () => allRunning(c, names, [victim]), TTL + 30_000))!;
    // two copies of each moved jail now: the stale one on the dead agent's host, the new one
    const twice = runningCopies(c.dir);
    for (const n of moved) expect(twice[n]!.sort()).toEqual([victim, after.find((row) => row.name === n)!.host!].sort());

    await c.startAgentServing(victim);
    const copies = await c.until('one copy of each jail', async () => exactlyOneCopyEach(c, names), 60_000);
    // the copy that went is the stale one: the new copies run on, the very same processes
    for (const row of after) {
      expect(copies[row.name]).toEqual([row.host]);
      expect(alive(row.pid!)).toBe(true);
    }
    const rows = (await allRunning(c, names, [victim]))!;
    expect(rows.map((row) => [row.name, row.host, row.pid, row.generation])).toEqual(after.map((row) => [row.name, row.host, row.pid, row.generation]));
    // and it stays so: nothing is started again on the returned host
    await new Promise((r) => setTimeout(r, 2000));
    expect(exactlyOneCopyEach(c, names)).toEqual(copies);
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
    const host = 'host-2';
    // pinned, so that they stay on the host even should the restart outlast the TTL; pin-2 is
    // to be stopped while its agent is away
    const names = ['ra-0', 'ra-1', 'ra-2'];
    const r = await c.cli(['apply', '-f', fleetFile([...names, 'pin-2'], `    placement: { host: ${host} }\n`), '--wait']);
    expect(r.exitCode).toBe(0);
    const mine = (await allRunning(c, names))!;
    expect(mine.map((row) => row.host)).toEqual([host, host, host]);
    await c.stopAgent(host, 'SIGKILL');
    const stop = await c.cli(['stop', 'pin-2']);
    expect(stop.exitCode).toBe(0);
    // the new agent's first heartbeat holds every jail with the pid it had: re-adopted, not started anew
    const hb = await c.startAgentServing(host);
    for (const row of mine) expect(hb.jails.find((j) => j.name === row.name)).toMatchObject({ generation: row.generation, pid: row.pid });
    const after = (await c.until('all running', () => allRunning(c, names), 30_000))!;
    for (const row of mine) {
      const now = after.find((a) => a.name === row.name)!;
      expect([now.host, now.pid, now.generation, now.restarts]).toEqual([row.host, row.pid, row.generation, row.restarts]);
      expect(alive(row.pid!)).toBe(true);
    }
    // the stop published while the agent was away is carried out on its return
    await c.until('pin-2 stopped', async () => (await c.json<PsRow[]>(['ps'])).find((row) => row.name === 'pin-2' && row.state === 'stopped'), 30_000);
    await c.until('pin-2 gone from the kernel', async () => !runningCopies(c.dir)['pin-2']);
    expect(exactlyOneCopyEach(c, names)).toEqual(Object.fromEntries(names.map((n) => [n, [host]])));
  }, 90_000);
});

d('services crash: a scheduler during an apply, the status service', () => {
  let c: TestCluster;
  /** The lease of scheduler-1, which leads until a test kills it. */
  let firstLease: string;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], scheduler: false });
    firstLease = await twoSchedulersFirstLeading(c);
    await everyHostUp(c, ['host-1', 'host-2']);
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  }, 180_000);

  it('runs all 50 jails exactly once when the leading scheduler is SIGKILLed during the apply', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `ap-${i}`);
    expect(await c.leaseHolder()).toBe(firstLease);
    const apply = execa(process.execPath, [cliPath, 'apply', '-f', fleetFile(names), '--wait', '--timeout', '120000'], {
      env: { JAILFLEET_NATS_URL: c.url },
      reject: false,
    });
    // as soon as the leader has placed anything: most of the fleet is left to the standby
    await c.until('the apply under way', async () => (await c.json<PsRow[]>(['ps'])).some((row) => names.includes(row.name)), 30_000);
    await c.killService('scheduler-1');
    const r = await apply;
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    // the standby took the lease over
    await c.until('the standby leads', async () => {
      const holder = await c.leaseHolder();
      return holder !== undefined && holder !== firstLease;
    }, 10_000);
    await c.until('50 running', () => allRunning(c, names), 60_000);
    await c.until('one copy each', async () => exactlyOneCopyEach(c, names), 30_000);
    // one generation each: a new leader does not place again what the old one placed
    const rows = (await allRunning(c, names))!;
    expect(rows.every((row) => row.generation === 1 && row.restarts === 0)).toBe(true);
  }, 150_000);

  it('rebuilds the same view after the status service is SIGKILLed and restarted', async () => {
    const names = Array.from({ length: 5 }, (_, i) => `sv-${i}`);
    expect((await c.cli(['apply', '-f', fleetFile(names), '--wait'])).exitCode).toBe(0);
    await c.until('5 running', () => allRunning(c, names), 30_000);
    const before = await c.json<PsRow[]>(['ps']);
    const hostsBefore = (await c.json<{ host: string; status: string; jails: number }[]>(['hosts'])).map((h) => [h.host, h.status, h.jails]);
    await c.killService('status');
    c.startService('status');
    const after = await c.until('status answers again', async () => c.json<PsRow[]>(['ps']), 30_000);
    // usage is a reading that moves (and comes with an agent's next reading, every 5 s): the rest is the same view
    const stable = (rows: PsRow[]) => rows.map(({ usage: _usage, ...row }) => row);
    expect(stable(after)).toEqual(stable(before));
    await c.until('each running jail\'s usage again', async () => (await c.json<PsRow[]>(['ps'])).every((r) => r.state !== 'running' || r.usage), 15_000);
    // hosts come from heartbeats (every second), not from the stream: the restarted service has them within a beat or two
    const hostsRow = async () => (await c.json<{ host: string; status: string; jails: number }[]>(['hosts'])).map((h) => [h.host, h.status, h.jails]);
    await c.until('the same hosts', async () => JSON.stringify(await hostsRow()) === JSON.stringify(hostsBefore), 10_000);
    expect(await hostsRow()).toEqual(hostsBefore);
  }, 60_000);
});

d('a drain whose leading scheduler crashes halfway', () => {
  let c: TestCluster;
  let firstLease: string;

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'], scheduler: false });
    firstLease = await twoSchedulersFirstLeading(c);
    await everyHostUp(c, ['host-1', 'host-2']);
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  }, 180_000);

  it('finishes a drain whose leading scheduler is SIGKILLed halfway, with every jail running once', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `dr-${i}`);
    expect((await c.cli(['apply', '-f', fleetFile(names), '--wait'])).exitCode).toBe(0);
    // the host holding most jails is drained, two at a time
    const rows = (await allRunning(c, names))!;
    const count = (h: string) => rows.filter((r) => r.host === h).length;
    const victim = count('host-1') >= count('host-2') ? 'host-1' : 'host-2';
    const onVictim = count(victim);
    expect(onVictim).toBeGreaterThanOrEqual(10);
    const d = await c.cli(['drain', victim, '--parallel', '2']);
    expect(d.exitCode).toBe(0);
    const offVictim = async () => (await c.json<PsRow[]>(['ps'])).filter((r) => names.includes(r.name) && r.host !== victim && r.state === 'running').length;
    await c.until('a few moved', async () => (await offVictim()) >= names.length - onVictim + 2, 60_000);
    expect(await c.leaseHolder()).toBe(firstLease);
    await c.killService('scheduler-1');
    // halfway indeed: the leader died with jails still to move
    expect(await offVictim()).toBeLessThan(names.length);
    await c.until('drained', async () => (await c.json<{ host: string; status: string }[]>(['hosts'])).find((h) => h.host === victim)?.status === 'drained', 120_000);
    // the standby finished it, holding the lease
    const leaseNow = await c.leaseHolder();
    expect(leaseNow).toBeDefined();
    expect(leaseNow).not.toBe(firstLease);
    const after = (await c.until('all running off the drained host', () => allRunning(c, names, [victim]), 60_000))!;
    expect(after).toHaveLength(names.length);
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
