// Health checks, as an admin meets them: a jail whose web server stops answering is restarted and
// `ps` says why; a drain of a jail that takes a while to become healthy never leaves it without a
// ready copy (checked in the kernel while the drain runs); an exec check runs inside the jail; and
// bad checks are refused by the CLI naming the field. Real nats-server, agents, jails; only the CLI.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, jailProcesses } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';
import type { PsRow } from '../../contracts/index.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts): skipped');

/** A loopback port of its own per run: jails here share the host's network (network: inherit). */
const port = 20_000 + (process.pid % 20_000);

d('health checks', () => {
  let c: TestCluster;
  let scratch: string;
  const ps = () => c.json<PsRow[]>(['ps']);
  const row = async (name: string) => (await ps()).find((r) => r.name === name);
  const fleetFile = (jails: object[]) => {
    const file = join(scratch, `fleet-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify({ jails }));
    return file;
  };

  beforeAll(async () => {
    c = await TestCluster.start({ hosts: ['host-1', 'host-2'] });
    scratch = scratchDir('jf-health-');
    await c.until('two hosts up', async () => (await c.json<{ status: string }[]>(['hosts'])).filter((h) => h.status === 'up').length === 2, 60_000);
  }, 90_000);

  afterAll(async () => {
    for (const r of (await ps().catch(() => [])) ?? []) await c.cli(['rm', r.name]);
    await c?.stop();
  }, 120_000);

  it('a jail whose http check starts failing is restarted, and ps and events say why', async () => {
    // serves for 4 s, then its server goes while the jail's command lives on (a hung service)
    const serve = `mkdir -p /tmp/www && echo ok > /tmp/www/index.html && busybox httpd -f -p 127.0.0.1:${port} -h /tmp/www & sleep 4; kill $!; exec sleep 3600`;
    const r = await c.cli([
      'apply', '--wait', '-f',
      fleetFile([{ name: 'web', command: ['/bin/sh', '-c', serve], stopTimeoutMs: 1000, health: { http: { port, path: '/index.html' }, intervalMs: 500, timeoutMs: 500, failures: 2, graceMs: 3000 } }]),
    ]);
    expect(r).toMatchObject({ exitCode: 0, stdout: expect.stringContaining('1 of 1 jails running') });
    // --wait answered once healthy: ps says so, in its HEALTH column too
    expect(await row('web')).toMatchObject({ state: 'running', health: 'healthy', restarts: 0 });
    expect((await c.cli(['ps'])).stdout).toMatch(/NAME\s+HOST\s+STATE\s+HEALTH\s+GEN.*\nweb\s+host-\d\s+running\s+healthy\s+1/);
    const why = `health check failed 2 times in a row: GET http://127.0.0.1:${port}/index.html: connection refused`;
    // restarted: the reason is the jail's error while it stops, then carried until a check passes
    const seen = await c.until(
      'a restart for the failed check, its reason in ps',
      async () => {
        const w = await row('web');
        return w && w.restarts >= 1 && (w.healthReason === why || w.error?.message === why) ? w : undefined;
      },
      30_000,
    );
    expect(seen.generation).toBe(1);
    const events = await c.cli(['events', '--jail', 'web']);
    expect(events.stdout).toContain(`stopped  exit=143  run: ${why}`);
    expect(events.stdout).toMatch(/running {2}pid=\d+ {2}health=starting \(health check failed 2 times in a row/);
    // the new run serves again: healthy, the restart counted, the reason gone
    const back = await c.until('healthy again', async () => {
      const w = await row('web');
      return w?.state === 'running' && w.health === 'healthy' ? w : undefined;
    });
    expect(back.restarts).toBeGreaterThanOrEqual(1);
    expect(back.healthReason).toBeNull();
    expect((await c.cli(['rm', 'web'])).exitCode).toBe(0);
  }, 90_000);

  it('an exec check runs inside the jail: its files, its cgroup, its exit code', async () => {
    // the check reads a file only the jail's own /tmp holds, and notes the cgroup it ran in
    const r = await c.cli([
      'apply', '--wait', '-f',
      fleetFile([{ name: 'probe', command: ['/bin/sh', '-c', 'echo fine > /tmp/state; exec sleep 3600'], health: { exec: ['/bin/sh', '-c', 'cat /proc/self/cgroup > /tmp/check-cgroup; grep -q fine /tmp/state'], intervalMs: 2000, timeoutMs: 2000, failures: 2, graceMs: 0 } }]),
    ]);
    expect(r.exitCode).toBe(0);
    expect(await row('probe')).toMatchObject({ state: 'running', health: 'healthy' });
    // the check counted against the jail's limits: the cgroup of the jail's own command
    const checkCgroup = await c.cli(['exec', 'probe', '--', '/bin/cat', '/tmp/check-cgroup']);
    const jailCgroup = await c.cli(['exec', 'probe', '--', '/bin/cat', '/proc/1/cgroup']);
    expect(checkCgroup.exitCode).toBe(0);
    expect(checkCgroup.stdout).toContain('jailfleet');
    expect(checkCgroup.stdout).toBe(jailCgroup.stdout);
    // the jail's state turns bad: the check fails in the jail, and the reason names the command
    expect((await c.cli(['exec', 'probe', '--', '/bin/sh', '-c', 'echo broken > /tmp/state'])).exitCode).toBe(0);
    const failed = await c.until('a restart for the failed exec check', async () => {
      const w = await row('probe');
      return w && w.restarts >= 1 ? w : undefined;
    });
    expect(failed.generation).toBe(1);
    expect((await c.cli(['events', '--jail', 'probe'])).stdout).toContain('run: health check failed 2 times in a row: /bin/sh exited 1');
    // the restarted jail wrote "fine" again: healthy
    await c.until('healthy again', async () => (await row('probe'))?.health === 'healthy');
    expect((await c.cli(['rm', 'probe'])).exitCode).toBe(0);
  }, 90_000);

  it('a drain of a jail slow to become healthy never leaves it without a ready copy', async () => {
    // ready 3 s after it starts: the exec check passes from then on
    const r = await c.cli([
      'apply', '--wait', '-f',
      fleetFile([{ name: 'slow', command: ['/bin/sh', '-c', 'sleep 3; touch /tmp/ready; exec sleep 3600'], health: { exec: ['/bin/test', '-f', '/tmp/ready'], intervalMs: 1000, timeoutMs: 1000, failures: 3, graceMs: 20_000 } }]),
    ]);
    expect(r.exitCode).toBe(0);
    const from = (await row('slow'))!.host!;
    /** The copies of `slow` in the kernel, and whether each is ready (its init's root holds the file). */
    const copies = () =>
      jailProcesses(c.dir)
        .filter((p) => p.jail === 'slow')
        .map((p) => {
          const children = (() => {
            try {
              return readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
            } catch {
              return [];
            }
          })();
          return { host: p.host, ready: children.some((pid) => existsSync(`/proc/${pid}/root/tmp/ready`)) };
        });
    expect(copies()).toEqual([{ host: from, ready: true }]);
    const drain = c.cli(['drain', from, '--wait'], { timeoutMs: 60_000 });
    let drained = false;
    void drain.then(() => (drained = true));
    const samples: { host: string; ready: boolean }[][] = [];
    while (!drained) {
      const now = copies();
      samples.push(now);
      // never a moment without a ready copy
      expect(now.some((x) => x.ready)).toBe(true);
      await new Promise((res) => setTimeout(res, 100));
    }
    expect((await drain).exitCode).toBe(0);
    // the new copy ran, not ready, while the old one served: the drain waited for it
    expect(samples.some((s) => s.length === 2 && s.some((x) => x.host === from && x.ready) && s.some((x) => x.host !== from && !x.ready))).toBe(true);
    const moved = await c.until('the move done', async () => {
      const w = await row('slow');
      return w?.host !== from && w?.state === 'running' && w.health === 'healthy' ? w : undefined;
    });
    expect(moved.generation).toBe(2);
    expect((await c.cli(['undrain', from])).exitCode).toBe(0);
    expect((await c.cli(['rm', 'slow'])).exitCode).toBe(0);
  }, 120_000);

  it('bad checks are refused naming the field, and nothing is applied', async () => {
    const bad: [object, string][] = [
      [{ intervalMs: 1000 }, 'jails.0.health: needs one check: exec, http or tcp'],
      [{ http: { port: 80 }, tcp: { port: 80 } }, 'jails.0.health.tcp: one check only, not http and tcp'],
      [{ tcp: { port: 70_000 } }, 'jails.0.health.tcp.port: must be a port from 1 to 65535'],
      [{ http: { port: 8080 }, intervalMs: 1000, timeoutMs: 5000 }, 'jails.0.health.intervalMs: must be at least timeoutMs (5000 ms)'],
      [{ http: { port: 8080, path: '/x\r\nHost: evil' } }, 'jails.0.health.http.path: must start with "/" and hold no spaces or control characters'],
    ];
    for (const [health, message] of bad) {
      const r = await c.cli(['apply', '-f', fleetFile([{ name: 'bad', command: ['/bin/sleep', '1'], health }])]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toContain('jailfleet: ');
      expect(r.stderr).toContain(message);
    }
    expect(await row('bad')).toBeUndefined();
  }, 60_000);
});
