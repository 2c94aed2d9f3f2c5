// Metrics end to end: a running cluster (real nats-server, real `jailfleet serve` processes with
// --metrics-addr, real jails and cgroups) scraped by Debian's real prometheus, asked through its
// HTTP API; every endpoint's text passes `promtool check metrics`; ps --json shows what each
// running jail uses. Prometheus gets a config, a storage directory and a loopback port of its own,
// and is stopped (and its directory removed) whatever happens.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { TestCluster, cliPath } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';
import { freePort } from '../../services/common/nats-server.js';
import type { HostRow, PsRow } from '../../contracts/index.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;
if (!asRoot) console.warn('end-to-end tests need root (namespaces, mounts, cgroups): skipped');

const MiB = 1024 * 1024;
const SERVICES = ['scheduler', 'status', 'host-1', 'host-2'] as const;

d('Prometheus scrapes a running cluster', () => {
  let c: TestCluster;
  let prometheus: ResultPromise | undefined;
  let promUrl = '';
  const ports = new Map<string, number>();
  const metricsUrl = (name: string) => `http://127.0.0.1:${ports.get(name)}/metrics`;

  /** One instant query of Prometheus' HTTP API: each series' labels and value. */
  async function query(expr: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success') throw new Error(`prometheus: ${JSON.stringify(body)}`);
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  beforeAll(async () => {
    for (const name of SERVICES) ports.set(name, await freePort());
    const at = (name: string) => ['--metrics-addr', `127.0.0.1:${ports.get(name)}`];
    c = await TestCluster.start({ hosts: [], schedulerArgs: at('scheduler'), statusArgs: at('status') });
    c.startAgent('host-1', ['--cpu', '2', '--memory-mb', '1024', ...at('host-1')]);
    c.startAgent('host-2', ['--cpu', '2', '--memory-mb', '1024', ...at('host-2')]);
    await c.until('both hosts up', async () => (await c.json<HostRow[]>(['hosts'])).filter((h) => h.status === 'up').length === 2);

    const dir = scratchDir('jf-metrics-');
    const fleet = join(dir, 'fleet.json');
    writeFileSync(
      fleet,
      JSON.stringify({
        jails: [
          { name: 'web', command: ['/bin/sleep', '3600'], resources: { memoryMB: 64 } },
          { name: 'api', command: ['/bin/sleep', '3600'], resources: { memoryMB: 96 } },
          { name: 'db', command: ['/bin/sleep', '3600'], resources: { memoryMB: 128 } },
        ],
      }),
    );
    expect((await c.cli(['apply', '-f', fleet])).exitCode).toBe(0);
    await c.until('three jails running', async () => (await c.json<PsRow[]>(['ps'])).filter((r) => r.state === 'running').length === 3, 60_000);

    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: jailfleet',
        '    static_configs:',
        `      - targets: [${SERVICES.map((s) => `'127.0.0.1:${ports.get(s)}'`).join(', ')}]`,
        '',
      ].join('\n'),
    );
    prometheus = execa(
      'prometheus',
      [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
      { stdout: { file: join(c.dir, 'prometheus.log') }, stderr: { file: join(c.dir, 'prometheus.log') }, reject: false, cleanup: true, forceKillAfterDelay: 10_000 },
    );
    // every target scraped once at least
    await c.until('prometheus to scrape every service', async () => {
      const up = await query('up{job="jailfleet"} == 1');
      return up.length === SERVICES.length;
    });
  }, 120_000);

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    await prometheus;
    await c?.stop();
  }, 120_000);

  it('refuses a malformed --metrics-addr before it starts, naming the flag and the rule, exit 2', async () => {
    const r = await execa(process.execPath, [cliPath, 'serve', 'status', '--metrics-addr', '127.0.0.1'], { env: { JAILFLEET_NATS_URL: c.url }, reject: false });
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({
      exitCode: 2,
      stderr: 'jailfleet: --metrics-addr: must be HOST:PORT, e.g. 127.0.0.1:9464 (an IPv6 address in brackets) (got "127.0.0.1")',
    });
  });

  it('a --metrics-addr already taken fails the start at once, in one line, exit 1', async () => {
    const taken = ports.get('status')!;
    const r = await execa(process.execPath, [cliPath, 'serve', 'status', '--metrics-addr', `127.0.0.1:${taken}`], { env: { JAILFLEET_NATS_URL: c.url }, reject: false, timeout: 30_000 });
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({
      exitCode: 1,
      stderr: `jailfleet: cannot serve metrics on 127.0.0.1:${taken}: listen EADDRINUSE: address already in use 127.0.0.1:${taken}`,
    });
  });

  it('promtool check metrics passes on every endpoint', async () => {
    for (const name of SERVICES) {
      const text = await (await fetch(metricsUrl(name))).text();
      expect(text).toContain('# TYPE process_cpu_seconds_total counter');
      const r = await execa('promtool', ['check', 'metrics'], { input: text, reject: false });
      expect({ name, exitCode: r.exitCode, out: `${r.stdout}${r.stderr}` }).toEqual({ name, exitCode: 0, out: '' });
    }
  });

  it('Prometheus counts the jails the cluster runs, and a host allocates what ps and hosts say', async () => {
    const ps = await c.json<PsRow[]>(['ps']);
    const hosts = await c.json<HostRow[]>(['hosts']);
    const running = ps.filter((r) => r.state === 'running');
    await c.until('the running count in prometheus', async () => (await query('sum(jailfleet_jails{state="running"})'))[0]?.value === running.length);
    // the agents' own word agrees with the status service's
    await c.until('the agents to count them too', async () => (await query('sum(jailfleet_agent_jails{state="running"})'))[0]?.value === running.length);
    for (const h of hosts) {
      const want = ps.filter((r) => r.host === h.host).reduce((sum, r) => sum + ({ web: 64, api: 96, db: 128 } as Record<string, number>)[r.name]!, 0);
      expect(h.allocated?.memoryMB).toBe(want);
      const got = await query(`jailfleet_host_allocated_memory_bytes{host="${h.host}"}`);
      expect(got.map((s) => s.value)).toEqual([want * MiB]);
      expect((await query(`jailfleet_host_capacity_memory_bytes{host="${h.host}"}`)).map((s) => s.value)).toEqual([1024 * MiB]);
    }
    expect((await query('jailfleet_hosts{status="up"}')).map((s) => s.value)).toEqual([2]);
    expect((await query('jailfleet_scheduler_leader')).map((s) => s.value)).toEqual([1]);
    expect((await query('jailfleet_scheduler_placements_total')).map((s) => s.value)).toEqual([3]);
    expect((await query('jailfleet_agent_jail_start_duration_seconds_count')).reduce((n, s) => n + s.value, 0)).toBe(3);
  });

  it("each running jail's cpu and memory come from its cgroup: in Prometheus, and in ps --json", async () => {
    const memory = await query('jailfleet_jail_memory_bytes');
    expect(memory.map((s) => s.metric.jail).sort()).toEqual(['api', 'db', 'web']);
    // a sleeping jail still has pages charged to it (its init and sleep), and has used some cpu
    for (const s of memory) expect(s.value).toBeGreaterThan(0);
    const cpu = await query('jailfleet_jail_cpu_seconds_total');
    expect(cpu.map((s) => s.metric.jail).sort()).toEqual(['api', 'db', 'web']);
    for (const s of cpu) expect(s.value).toBeGreaterThan(0);
    // the agents send usage every few seconds: the status service puts the latest in the rows
    const rows = await c.until('usage in ps --json', async () => {
      const ps = await c.json<PsRow[]>(['ps']);
      return ps.every((r) => r.usage !== undefined) ? ps : undefined;
    });
    for (const r of rows) {
      expect(r.usage!.memoryBytes).toBeGreaterThan(0);
      expect(r.usage!.memoryBytes).toBeLessThan(64 * MiB);
      expect(r.usage!.cpuSeconds).toBeGreaterThan(0);
    }
  });

  it('a stopped jail leaves the per-jail series and the running count', async () => {
    expect((await c.cli(['stop', 'web'])).exitCode).toBe(0);
    await c.until('web stopped', async () => (await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'web')?.state === 'stopped');
    await c.until('prometheus to see it', async () => (await query('sum(jailfleet_jails{state="running"})'))[0]?.value === 2 && (await query('jailfleet_jail_memory_bytes{jail="web"}')).length === 0);
    expect((await query('jailfleet_jails{state="stopped"}')).map((s) => s.value)).toEqual([1]);
  });

  it("restarts and out-of-memory kills are counted as ps shows them", async () => {
    const dir = scratchDir('jf-metrics-crash-');
    const fleet = join(dir, 'fleet.json');
    const hog = '$x = "x" x (200 * 1024 * 1024); sleep 60';
    writeFileSync(
      fleet,
      JSON.stringify({
        jails: [
          { name: 'crash', command: ['/bin/sh', '-c', 'exit 3'], restart: 'always', resources: { memoryMB: 64 } },
          { name: 'hog', command: ['/usr/bin/perl', '-e', hog], restart: 'never', resources: { memoryMB: 64, cpu: 1 } },
        ],
      }),
    );
    expect((await c.cli(['apply', '-f', fleet])).exitCode).toBe(0);
    await c.until('the hog killed for memory', async () => (await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'hog')?.state === 'failed', 60_000);
    await c.until('one OOM kill in prometheus', async () => (await query('sum(jailfleet_agent_jail_oom_kills_total)'))[0]?.value === 1);
    // the backoff doubles from 200 ms: after a few restarts the count holds still for seconds
    await c.until('crash restarted thrice', async () => ((await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'crash')?.restarts ?? 0) >= 3, 60_000);
    await c.until('prometheus counting what ps says', async () => {
      const before = (await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'crash')!.restarts;
      const counted = (await query('sum(jailfleet_agent_jail_restarts_total)'))[0]?.value;
      const after = (await c.json<PsRow[]>(['ps'])).find((r) => r.name === 'crash')!.restarts;
      return before === after && counted === after;
    }, 60_000);
  }, 180_000);
});
