// A burst of 200 jails on one host, end to end: real nats-server, real `jailfleet serve`
// processes, real jails. The kernel says how many copies run (one `unshare` per jail init) and
// what is mounted; a jail mounts nothing on the host, so the host's mount table never grows.
import { afterEach, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, jailProcesses, mountsUnder, runningCopies } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

const BURST = 200;
const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`);

function fleetFile(): string {
  const file = join(scratchDir('jf-fleet-'), 'fleet.yaml');
  writeFileSync(file, `jails:\n${names.map((n) => `  - name: ${n}\n    command: [/bin/sleep, "3600"]\n`).join('')}`);
  return file;
}

/** The parent pid of `pid` (0 once it is gone). */
function parentOf(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  } catch {
    return 0;
  }
}

/** The children of `pid` (an `unshare`: its jail's init), for a message. */
function childrenOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim() || 'none';
  } catch {
    return 'gone';
  }
}

const hostMountLines = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).length;

/** The cgroup directories of the agent whose data directory is `dataDir` (v2 and any v1 hierarchy). */
function cgroupScopes(dataDir: string): string[] {
  const scope = `data-${createHash('sha256').update(realpathSync(dataDir)).digest('hex').slice(0, 12)}`;
  const roots = ['/sys/fs/cgroup/jailfleet', ...readdirSync('/sys/fs/cgroup').map((c) => `/sys/fs/cgroup/${c}/jailfleet`)];
  return roots.map((r) => join(r, scope));
}

/** Copies of each burst jail the kernel runs, once every one runs exactly once (by `ps` too). */
async function allRunningOnce(c: TestCluster): Promise<Record<string, string[]> | undefined> {
  // the kernel first: a `ps` (a Node process) at every poll would take a core from the burst
  const copies = runningCopies(c.dir);
  if (!names.every((n) => copies[n]?.length === 1)) return undefined;
  const rows = (await c.json<PsRow[]>(['ps'])).filter((r) => names.includes(r.name));
  return rows.length === BURST && rows.every((r) => r.state === 'running') ? copies : undefined;
}

d('a burst of 200 jails on one host', () => {
  let c: TestCluster | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  }, 300_000);

  it('runs all 200 with the host mount table unchanged, and tears them all down with nothing left', async () => {
    const before = hostMountLines();
    c = await TestCluster.start({ hosts: ['host-1'], logLevel: 'info' });
    await c.until('host up', async () => (await c!.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
    const t = Date.now();
    expect((await c.cli(['apply', '-f', fleetFile()])).exitCode).toBe(0);
    const copies = await c.until('all 200 running once', () => allRunningOnce(c!), 240_000);
    console.log(`burst: ${BURST} jails running ${Date.now() - t} ms after apply`);
    expect(Object.keys(copies).sort()).toEqual([...names].sort());
    expect(mountsUnder(c.dir)).toEqual([]);
    expect(hostMountLines()).toBe(before);

    const dataDir = join(c.dir, 'hosts', 'host-1');
    const scopes = cgroupScopes(dataDir);
    expect(scopes.some((s) => existsSync(s))).toBe(true);
    const dir = c.dir;
    const stopping = c;
    c = undefined;
    await stopping.stop(); // throws on a jail left running or a mount left behind
    expect(jailProcesses(dir)).toEqual([]);
    expect(scopes.filter((s) => existsSync(s))).toEqual([]);
    expect(hostMountLines()).toBe(before);
  }, 420_000);

  it('an agent killed in the middle of the burst: its successor re-adopts what runs and starts the rest, no jail twice', async () => {
    // a host TTL longer than the restart: this is an agent restart, not a host failure (that
    // would move every jail to a new generation, which failover.test.ts covers)
    const ttl = ['--host-ttl-ms', '60000'];
    c = await TestCluster.start({ hosts: ['host-1'], logLevel: 'info', schedulerArgs: ttl, statusArgs: ttl });
    await c.until('host up', async () => (await c!.json<{ status: string }[]>(['hosts'])).some((h) => h.status === 'up'));
    expect((await c.cli(['apply', '-f', fleetFile()])).exitCode).toBe(0);
    await c.until('a part of the burst running', async () => Object.keys(runningCopies(c!.dir)).length >= 20, 120_000);
    await c.stopAgent('host-1', 'SIGKILL');
    const running = runningCopies(c.dir);
    const pidsBefore = new Map(jailProcesses(c.dir).map((p) => [p.jail, p.pid]));
    expect(Object.keys(running).length).toBeLessThan(BURST); // the kill was mid-burst
    // never two copies, not even for a moment around the restart
    const twice: string[] = [];
    const watch = setInterval(() => {
      // a jail's unshare forks its init, which looks like unshare until it execs jailinit: that
      // child is the same copy, not a second one
      const all = jailProcesses(c!.dir);
      const pids = new Set(all.map((p) => p.pid));
      const procs = all.filter((p) => !pids.has(parentOf(p.pid)));
      const seen = new Map<string, number[]>();
      for (const p of procs) seen.set(p.jail, [...(seen.get(p.jail) ?? []), p.pid]);
      for (const [jail, pids] of seen) {
        if (pids.length > 1) twice.push(`${jail}: ${pids.map((pid) => `${pid} (init ${childrenOf(pid)})`).join(', ')}`);
      }
    }, 100);
    try {
      c.startAgent('host-1');
      await c.until('all 200 running once after the restart', () => allRunningOnce(c!), 240_000);
    } finally {
      clearInterval(watch);
    }
    expect(twice).toEqual([]);
    // what ran before the kill was re-adopted, not started again: the same unshare process
    const after = new Map(jailProcesses(c.dir).map((p) => [p.jail, p.pid]));
    expect(after.size).toBe(BURST);
    const readopted = [...pidsBefore].filter(([jail, pid]) => after.get(jail) === pid);
    // (all but those caught at their start barrier, at most one per parallel step: they never ran)
    expect(readopted.length).toBeGreaterThan(0);
    expect(readopted.length).toBeGreaterThanOrEqual(pidsBefore.size - 64);
    expect(mountsUnder(c.dir)).toEqual([]);
  }, 420_000);
});
