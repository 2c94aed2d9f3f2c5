// `jailfleet up` as a user runs it: a local cluster comes up, runs a jail, and on SIGINT removes
// the jail, stops its children and the broker, leaves nothing mounted, and exits 0. `ready:` means
// a `run` is placed at once; a killed agent is a failover to watch, and it can be brought back;
// a killed `up` leaves nothing behind either.
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { connect as tcpConnect } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_LEADER } from '../../contracts/index.js';
import { freePort } from '../../services/common/index.js';
import { cliPath, jailProcesses, mountsUnder, processArgvs } from '../support/cluster.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

/** Whether something accepts connections on 127.0.0.1:port. */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const sock = tcpConnect({ port, host: '127.0.0.1' });
    sock.once('connect', () => (sock.destroy(), resolve(true)));
    sock.once('error', () => resolve(false));
  });

/** A port p with p, p+1 and p+2 free a moment ago (for --nats-cluster 3). */
async function threeFreePorts(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p + 2 < 65536 && !(await accepts(p + 1)) && !(await accepts(p + 2))) return p;
  }
}

/** Polls `check` every 200 ms until true; throws when `ms` have passed. */
async function until(check: () => boolean | Promise<boolean>, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${check.toString()}`);
    await sleep(200);
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every process that belongs to the `up` with pid `upPid` on `dir`: by its argv (services, broker, keeper, jails). */
function processesOf(dir: string, upPid: number): string[] {
  const found: string[] = [];
  for (const { pid, argv } of processArgvs()) {
    const ours = argv.some((a) => a.startsWith(dir)) || argv.some((a, i) => a === '--exit-with-parent' && argv[i + 1] === String(upPid));
    if (ours && pid !== process.pid) found.push(`${pid} ${argv.join(' ').trim()}`);
  }
  return found;
}

/** Starts `up` and resolves once it printed `ready:`, with its output so far. */
async function startUp(args: string[]) {
  const proc = execa(process.execPath, [cliPath, 'up', ...args], { reject: false, buffer: true });
  const out = { stdout: '', stderr: '' };
  proc.stdout!.on('data', (b: Buffer) => (out.stdout += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out.stderr += b.toString()));
  const deadline = Date.now() + 60_000;
  while (!out.stdout.includes('ready:') && Date.now() < deadline && proc.exitCode === null) await sleep(100);
  return { proc, out };
}

d('jailfleet up', () => {
  const dir = mkdtempSync(join(tmpdir(), 'jailfleet-up-'));
  let up: ResultPromise | undefined;

  afterAll(async () => {
    if (up && up.exitCode === null) {
      up.kill('SIGKILL');
      await up.catch(() => undefined);
    }
    const left = mountsUnder(dir);
    if (left.length === 0) rmSync(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
  }, 60_000);

  it('brings up a cluster, runs a jail, and tears everything down on SIGINT', async () => {
    const port = await freePort();
    up = execa(process.execPath, [cliPath, 'up', '--hosts', '2', '--data-dir', dir, '--nats-port', String(port)], { reject: false, buffer: true });
    let out = '';
    up.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 60_000;
    while (!out.includes('ready:') && Date.now() < deadline && up.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain(`ready: nats://127.0.0.1:${port} hosts=host-1,host-2`);
    // every service serves its metrics on a loopback port of its own, printed after `ready:`
    for (const until = Date.now() + 5000; !/^metrics: .*\n/m.test(out) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    const metricsLine = /^metrics: (.*)$/m.exec(out)?.[1] ?? '';
    const metricsUrls = Object.fromEntries(metricsLine.split(' ').map((kv) => kv.split('=') as [string, string]));
    expect(Object.keys(metricsUrls).sort()).toEqual(['host-1', 'host-2', 'scheduler', 'status']);
    const seriesOf = { scheduler: 'jailfleet_scheduler_leader 1', status: 'jailfleet_hosts{status="up"} 2', 'host-1': 'jailfleet_host_capacity_cpus{host="host-1"}', 'host-2': 'jailfleet_host_capacity_cpus{host="host-2"}' } as Record<string, string>;
    for (const [name, metricsUrl] of Object.entries(metricsUrls)) {
      expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      expect(await (await fetch(metricsUrl)).text()).toContain(seriesOf[name]);
    }

    const url = `nats://127.0.0.1:${port}`;
    const cli = (args: string[]) => execa(process.execPath, [cliPath, '--nats', url, ...args], { reject: false });
    const run = await cli(['run', 'hello', '--', '/bin/sleep', '3600']);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(/^hello running on host-[12]$/);
    const ps = JSON.parse((await cli(['ps', '--json'])).stdout) as { name: string; pid: number }[];
    const pid = ps.find((j) => j.name === 'hello')!.pid;
    expect(alive(pid)).toBe(true);
    // a second `up` on the same data dir is refused while this one runs
    const second = await execa(process.execPath, [cliPath, 'up', '--data-dir', dir, '--nats-port', String(await freePort())], { reject: false });
    expect(second.exitCode).not.toBe(0);
    expect(second.stderr).toMatch(/^jailfleet: another jailfleet up \(pid \d+\) uses /);
    // both agents serve
    const hosts = JSON.parse((await cli(['hosts', '--json'])).stdout) as { host: string; status: string }[];
    expect(hosts.map((h) => [h.host, h.status])).toEqual([
      ['host-1', 'up'],
      ['host-2', 'up'],
    ]);

    up.kill('SIGINT');
    const r = await up;
    expect(r.exitCode).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(mountsUnder(dir)).toEqual([]);
    expect(existsSync(join(dir, 'up.pid'))).toBe(false);
    for (const metricsUrl of Object.values(metricsUrls)) await expect(fetch(metricsUrl)).rejects.toThrow();
    // every child is gone: nothing is listening on the broker's port any more
    const after = await cli(['hosts']);
    expect(after.exitCode).not.toBe(0);
    expect(after.stderr).toMatch(/^jailfleet: cannot reach NATS/);
  }, 120_000);

  it('brings up three clustered nats-servers and two schedulers with --nats-cluster 3 --schedulers 2', async () => {
    const port = await threeFreePorts();
    const urls = [0, 1, 2].map((i) => `nats://127.0.0.1:${port + i}`);
    up = execa(process.execPath, [cliPath, 'up', '--hosts', '1', '--nats-cluster', '3', '--schedulers', '2', '--data-dir', dir, '--nats-port', String(port)], { reject: false, buffer: true });
    let out = '';
    up.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 90_000;
    while (!out.includes('ready:') && Date.now() < deadline && up.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain(`ready: ${urls.join(',')} hosts=host-1`);
    const cli = (args: string[]) => execa(process.execPath, [cliPath, '--nats', urls.join(','), ...args], { reject: false });
    const run = await cli(['run', 'clustered', '--timeout', '60000', '--', '/bin/sleep', '3600']);
    expect({ exitCode: run.exitCode, stderr: run.stderr }).toEqual({ exitCode: 0, stderr: '' });
    // every stream and bucket has three replicas
    const nc = await connect({ servers: urls });
    const jsm = await jetstreamManager(nc);
    const replicas: Record<string, number> = {};
    for await (const si of jsm.streams.list()) replicas[si.config.name] = si.config.num_replicas;
    // one scheduler leads: the lease (a single key) is held
    const lease = await (await new Kvm(nc).open(BUCKET_LEADER)).get('scheduler');
    await nc.close();
    expect(Object.values(replicas).length).toBeGreaterThanOrEqual(5);
    expect(new Set(Object.values(replicas))).toEqual(new Set([3]));
    expect(lease?.operation).toBe('PUT');
    // two scheduler processes of this up
    expect(processesOf(dir, up.pid!).filter((p) => / serve scheduler /.test(p))).toHaveLength(2);

    up.kill('SIGINT');
    const r = await up;
    expect(r.exitCode).toBe(0);
    expect(mountsUnder(dir)).toEqual([]);
    for (const u of urls) expect(await accepts(Number(u.split(':').pop()))).toBe(false);
  }, 180_000);

  it('says ready only once a run is placed at once: the first run takes no longer than the next', async () => {
    const port = await freePort();
    const started = await startUp(['--hosts', '2', '--data-dir', dir, '--nats-port', String(port)]);
    up = started.proc;
    expect(started.out.stdout).toContain('ready:');
    const cli = (args: string[]) => execa(process.execPath, [cliPath, '--nats', `nats://127.0.0.1:${port}`, ...args], { reject: false });
    const timed = async (name: string) => {
      const t0 = Date.now();
      const r = await cli(['run', name, '--', '/bin/sleep', '3600']);
      expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
      return Date.now() - t0;
    };
    const first = await timed('first');
    const second = await timed('second');
    expect(first).toBeLessThanOrEqual(second + 1500);
    up.kill('SIGINT');
    expect((await up).exitCode).toBe(0);
    expect(mountsUnder(dir)).toEqual([]);
  }, 120_000);

  it('keeps running when an agent dies: its jail runs on the other host, the printed command brings it back, Ctrl-C removes everything', async () => {
    const port = await freePort();
    const started = await startUp(['--hosts', '2', '--data-dir', dir, '--nats-port', String(port)]);
    up = started.proc;
    const upPid = up.pid!;
    const cli = (args: string[]) => execa(process.execPath, [cliPath, '--nats', `nats://127.0.0.1:${port}`, ...args], { reject: false });
    const where = async (name: string) => {
      const rows = JSON.parse((await cli(['ps', '--json'])).stdout || '[]') as { name: string; host: string | null; state: string }[];
      return rows.find((j) => j.name === name);
    };
    const agentPid = (host: string) => (JSON.parse(readFileSync(join(dir, 'up-children.json'), 'utf8')) as Record<string, number | null>)[host]!;
    /** SIGKILLs the agent running `jail`; resolves with that host once the jail runs on another one. */
    const killAgentUnder = async (jail: string) => {
      const victim = (await where(jail))!.host!;
      process.kill(agentPid(victim), 'SIGKILL');
      const killedAt = Date.now();
      for (;;) {
        const row = await where(jail);
        if (row?.state === 'running' && row.host !== victim) break;
        // TTL 3 s, and a few seconds for the move
        if (Date.now() - killedAt > 12_000) throw new Error(`${jail} did not run elsewhere within 12 s of the SIGKILL of ${victim}: ${JSON.stringify(row)}`);
        await sleep(200);
      }
      return victim;
    };

    expect((await cli(['run', 'moved', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    const victim = await killAgentUnder('moved');
    expect(up.exitCode).toBeNull();
    await until(() => started.out.stderr.includes(`${victim} exited (signal SIGKILL)`));
    const line = started.out.stderr.split('\n').find((l) => l.includes(`${victim} exited (signal SIGKILL)`))!;
    expect(line).toMatch(new RegExp(`^jailfleet: ${victim} exited \\(signal SIGKILL\\): it is down now; the scheduler moves its jails\\. Bring it back with: jailfleet up `));
    // the printed command, as a user would run it (with the built CLI for `jailfleet`)
    const command = line.slice(line.indexOf('Bring it back with: ') + 'Bring it back with: '.length).split(' ');
    expect(command[0]).toBe('jailfleet');
    const back = await execa(process.execPath, [cliPath, ...command.slice(1)], { reject: false });
    expect({ exitCode: back.exitCode, stderr: back.stderr }).toEqual({ exitCode: 0, stderr: '' });
    await until(async () => {
      const hosts = JSON.parse((await cli(['hosts', '--json'])).stdout || '[]') as { host: string; status: string }[];
      return hosts.find((h) => h.host === victim)?.status === 'up';
    }, 20_000);

    // the other agent dies now, and stays dead: Ctrl-C must still remove the copy it left running
    const second = await killAgentUnder('moved');
    expect(second).not.toBe(victim);
    expect(jailProcesses(dir).filter((p) => p.host === second).length).toBe(1);

    up.kill('SIGINT');
    expect((await up).exitCode).toBe(0);
    expect(jailProcesses(dir)).toEqual([]);
    expect(mountsUnder(dir)).toEqual([]);
    expect(processesOf(dir, upPid)).toEqual([]);
  }, 180_000);

  it('when up is SIGKILLed, its services, broker and jails all go within 15 s', async () => {
    const port = await freePort();
    const started = await startUp(['--hosts', '2', '--data-dir', dir, '--nats-port', String(port)]);
    up = started.proc;
    const upPid = up.pid!;
    const cli = (args: string[]) => execa(process.execPath, [cliPath, '--nats', `nats://127.0.0.1:${port}`, ...args], { reject: false });
    expect((await cli(['run', 'orphan', '--', '/bin/sleep', '3600'])).exitCode).toBe(0);
    expect(jailProcesses(dir).length).toBe(1);
    up.kill('SIGKILL');
    await up;
    const killedAt = Date.now();
    await until(async () => processesOf(dir, upPid).length === 0 && mountsUnder(dir).length === 0, 15_000).catch(() => undefined);
    expect({ left: processesOf(dir, upPid), mounts: mountsUnder(dir) }).toEqual({ left: [], mounts: [] });
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    expect(await accepts(port)).toBe(false);
    // a later `up` on the same directory starts clean: the killed one's jail is not brought back
    const again = await startUp(['--hosts', '1', '--data-dir', dir, '--nats-port', String(port)]);
    up = again.proc;
    expect(again.out.stdout).toContain('ready:');
    expect(JSON.parse((await cli(['ps', '--json'])).stdout)).toEqual([]);
    up.kill('SIGINT');
    expect((await up).exitCode).toBe(0);
  }, 180_000);

  it('refuses bad flags before starting anything', async () => {
    const r = await execa(process.execPath, [cliPath, 'up', '--hosts', '0', '--data-dir', dir], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('jailfleet: --hosts: must be at least 1 (got "0")');
    const p = await execa(process.execPath, [cliPath, 'up', '--nats-port', '70000', '--data-dir', dir], { reject: false });
    expect(p.exitCode).toBe(2);
    expect(p.stderr).toMatch(/^jailfleet: --nats-port: /);
    const c = await execa(process.execPath, [cliPath, 'up', '--nats-cluster', '2', '--data-dir', dir], { reject: false });
    expect(c.exitCode).toBe(2);
    expect(c.stderr).toBe('jailfleet: --nats-cluster: must be 1 (one server) or 3 (a cluster) (got "2")');
  });
});
