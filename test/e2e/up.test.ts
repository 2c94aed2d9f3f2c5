// `jailfleet up` as a user runs it: a local cluster comes up, runs a jail, and on SIGINT removes
// the jail, stops its children and the broker, leaves nothing mounted, and exits 0. Each test has
// a data directory of its own, so any one of them runs alone (`jest -t NAME`).
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { connect as tcpConnect } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { BUCKET_LEADER } from '../../contracts/index.js';
import { freePort } from '../../services/common/index.js';
import { cliPath, mountsUnder } from '../support/cluster.js';

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

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The argv of every process whose parent is `pid`, from the kernel's process table. */
function childrenOf(pid: number): { pid: number; argv: string[] }[] {
  const out: { pid: number; argv: string[] }[] = [];
  for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      // the parent is the 4th field, after the command name in parentheses (which may hold spaces)
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
      out.push({ pid: Number(p), argv: readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(Boolean) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

d('jailfleet up', () => {
  const dirs: string[] = [];
  /** A fresh data directory for one test. */
  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'jailfleet-up-'));
    dirs.push(dir);
    return dir;
  };
  let up: ResultPromise | undefined;

  afterAll(async () => {
    if (up && up.exitCode === null) {
      up.kill('SIGKILL');
      await up.catch(() => undefined);
    }
    const left = dirs.flatMap((dir) => mountsUnder(dir));
    for (const dir of dirs) if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
  }, 60_000);

  it('brings up a cluster, runs a jail, and tears everything down on SIGINT', async () => {
    const dir = dataDir();
    const port = await freePort();
    up = execa(process.execPath, [cliPath, 'up', '--hosts', '2', '--data-dir', dir, '--nats-port', String(port)], { reject: false, buffer: true });
    let out = '';
    up.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 60_000;
    while (!out.includes('ready:') && Date.now() < deadline && up.exitCode === null) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain(`ready: nats://127.0.0.1:${port} hosts=host-1,host-2`);

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
    const children = childrenOf(up.pid!);
    expect(children.length).toBeGreaterThanOrEqual(5);

    up.kill('SIGINT');
    const r = await up;
    expect(r.exitCode).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(mountsUnder(dir)).toEqual([]);
    expect(existsSync(join(dir, 'up.pid'))).toBe(false);
    // every child is gone: nothing is listening on the broker's port any more
    const after = await cli(['hosts']);
    expect(after.exitCode).not.toBe(0);
    expect(after.stderr).toMatch(/^jailfleet: cannot reach NATS/);
    for (const child of children) expect(alive(child.pid)).toBe(false);
  }, 120_000);

  it('brings up three clustered nats-servers and two schedulers with --nats-cluster 3 --schedulers 2', async () => {
    const dir = dataDir();
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
    // two scheduler processes, children of up
    const schedulers = childrenOf(up.pid!).filter((p) => p.argv.includes('serve') && p.argv.includes('scheduler'));
    expect(schedulers).toHaveLength(2);

    up.kill('SIGINT');
    const r = await up;
    expect(r.exitCode).toBe(0);
    expect(mountsUnder(dir)).toEqual([]);
    for (const u of urls) expect(await accepts(Number(u.split(':').pop()))).toBe(false);
    for (const s of schedulers) expect(alive(s.pid)).toBe(false);
  }, 180_000);

  it('refuses bad flags before starting anything', async () => {
    const dir = dataDir();
    const r = await execa(process.execPath, [cliPath, 'up', '--hosts', '0', '--data-dir', dir], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('jailfleet: --hosts: must be at least 1 (got "0")');
    const p = await execa(process.execPath, [cliPath, 'up', '--nats-port', '70000', '--data-dir', dir], { reject: false });
    expect(p.exitCode).toBe(2);
    expect(p.stderr).toMatch(/^jailfleet: --nats-port: /);
    const c = await execa(process.execPath, [cliPath, 'up', '--nats-cluster', '2', '--data-dir', dir], { reject: false });
    expect(c.exitCode).toBe(2);
    expect(c.stderr).toBe('jailfleet: --nats-cluster: must be 1 (one server) or 3 (a cluster) (got "2")');
    // nothing was started, nothing written
    expect(readdirSync(dir)).toEqual([]);
  });
});
