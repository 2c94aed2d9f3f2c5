// `jailfleet up` as a user runs it: a local cluster comes up, runs a jail, and on SIGINT removes
// the jail, stops its children and the broker, leaves nothing mounted, and exits 0.
import { afterAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from '../../services/common/index.js';
import { cliPath, mountsUnder } from '../support/cluster.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

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

  it('refuses bad flags before starting anything', async () => {
    const r = await execa(process.execPath, [cliPath, 'up', '--hosts', '0', '--data-dir', dir], { reject: false });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('jailfleet: --hosts: must be at least 1 (got "0")');
    const p = await execa(process.execPath, [cliPath, 'up', '--nats-port', '70000', '--data-dir', dir], { reject: false });
    expect(p.exitCode).toBe(2);
    expect(p.stderr).toMatch(/^jailfleet: --nats-port: /);
  });
});
