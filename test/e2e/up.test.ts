// `jailfleet up` as a user runs it: a local cluster comes up, runs a jail, and on SIGINT removes
// the jail, stops its children and the broker, leaves nothing mounted, and exits 0.
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { connect as tcpConnect } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
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
    expect(readFileSync(join(dir, 'logs', 'host-1.log'), 'utf8')).toContain('agent started');
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
    await nc.close();
    expect(Object.values(replicas).length).toBeGreaterThanOrEqual(5);
    expect(new Set(Object.values(replicas))).toEqual(new Set([3]));
    // one scheduler leads
    const logs = ['scheduler-1', 'scheduler-2'].map((n) => readFileSync(join(dir, 'logs', `${n}.log`), 'utf8'));
    expect(logs.filter((l) => l.includes('leading')).length).toBe(1);

    up.kill('SIGINT');
    const r = await up;
    expect(r.exitCode).toBe(0);
    expect(mountsUnder(dir)).toEqual([]);
    for (const u of urls) expect(await accepts(Number(u.split(':').pop()))).toBe(false);
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
