// A jail with its own address, for real: the host is a network namespace this test makes (joined
// to the broker by a veth pair, as partition.test.ts does), its agent wires vnet jails to its jail
// bridge there. Two jails both serve port 8080, each its own content at its own address; the
// address stays across stop/start and an agent restart; rm leaves no link behind. No traffic
// leaves the namespaces the test made (no default route, no NAT).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { TestCluster } from '../support/cluster.js';
import type { PsRow } from '../../contracts/index.js';
import { scratchDir } from '../support/scratch.js';

const asRoot = process.getuid?.() === 0;
const d = asRoot ? describe : describe.skip;

const tag = `jfv${process.pid % 100000}`;
const NS = tag;
const HOST_IF = `${tag}h`;
const NS_IF = `${tag}n`;
const HOST_IP = '10.213.9.1';
const NS_IP = '10.213.9.2';

const ip = (...args: string[]) => execa('ip', args);
/** Runs argv in the host's namespace (where its jail bridge is). */
const inHost = (...argv: string[]) => execa('ip', ['netns', 'exec', NS, ...argv], { reject: false });
/** What http://ADDRESS:8080/ answers from inside the host, or the error. */
async function fetchFrom(address: string): Promise<string> {
  const r = await inHost('curl', '-sS', '--max-time', '2', `http://${address}:8080/`);
  return r.exitCode === 0 ? r.stdout.trim() : `error: ${r.stderr.trim()}`;
}
/** The host ends of jail links on the host: `jf` and 10 hex digits. */
async function jailLinks(): Promise<string[]> {
  const r = await inHost('ip', '-o', 'link', 'show');
  return [...r.stdout.matchAll(/^\d+: (jf[0-9a-f]{10})[@:]/gm)].map((m) => m[1]!);
}

// each jail writes its own name into a page and serves it on 8080 (python3 of the host's /usr)
const server = (name: string) => [
  '/bin/sh',
  '-c',
  `mkdir -p /tmp/www && echo "hello from ${name}" > /tmp/www/index.html && cd /tmp/www && exec python3 -m http.server 8080`,
];

d('vnet jails on one host', () => {
  let c: TestCluster | undefined;
  const addressOf = async (name: string) => (await c!.json<PsRow[]>(['ps', '--json'])).find((r) => r.name === name)?.address;

  beforeAll(async () => {
    await ip('netns', 'add', NS);
    await ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF);
    await ip('link', 'set', NS_IF, 'netns', NS);
    await ip('addr', 'add', `${HOST_IP}/30`, 'dev', HOST_IF);
    await ip('link', 'set', HOST_IF, 'up');
    await ip('-n', NS, 'addr', 'add', `${NS_IP}/30`, 'dev', NS_IF);
    await ip('-n', NS, 'link', 'set', NS_IF, 'up');
    await ip('-n', NS, 'link', 'set', 'lo', 'up');
    c = await TestCluster.start({ hosts: [], natsHost: HOST_IP });
    await c.startAgentServing('host-v', [], ['nsenter', `--net=/run/netns/${NS}`, '--'], 60_000);
  }, 120_000);

  afterAll(async () => {
    await c?.stop();
    await execa('ip', ['netns', 'delete', NS], { reject: false });
    await execa('ip', ['link', 'delete', HOST_IF], { reject: false });
  }, 180_000);

  it('two jails both serve 8080, each its own content at its own address, kept across stop/start and an agent restart; rm leaves no link', async () => {
    const dir = scratchDir('jf-vnet-');
    const file = join(dir, 'fleet.json');
    writeFileSync(
      file,
      JSON.stringify({
        jails: [
          { name: 'web-a', command: server('web-a'), network: 'vnet' },
          { name: 'web-b', command: server('web-b'), network: { mode: 'vnet', address: '10.88.42.42' } },
        ],
      }),
    );
    const r = await c!.cli(['apply', '-f', file, '--wait']);
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const a = await addressOf('web-a');
    expect(a).toMatch(/^10\.88\.\d+\.\d+$/);
    expect(await addressOf('web-b')).toBe('10.88.42.42');
    const ps = await c!.cli(['ps']);
    expect(ps.stdout).toMatch(/ADDRESS/);
    expect(ps.stdout).toMatch(/web-b\s+host-v\s+running\s+10\.88\.42\.42/);

    await c!.until('both answer', async () => (await fetchFrom(a!)) === 'hello from web-a' && (await fetchFrom('10.88.42.42')) === 'hello from web-b', 20_000);
    // the jail sees only its own interfaces: lo and eth0 with its address
    const inside = await c!.cli(['exec', 'web-a', '--', 'ip', '-o', '-4', 'addr', 'show']);
    expect(inside.exitCode).toBe(0);
    expect(inside.stdout).toMatch(new RegExp(`eth0\\s+inet ${a!.replace(/\./g, '\\.')}/16`));
    expect(inside.stdout).not.toMatch(/jailfleet0|10\.213\./);
    // one jail reaches the other by address
    const across = await c!.cli(['exec', 'web-a', '--', 'python3', '-c', 'import urllib.request;print(urllib.request.urlopen("http://10.88.42.42:8080/",timeout=3).read().decode().strip())']);
    expect(across.stdout.trim()).toBe('hello from web-b');
    expect((await jailLinks()).length).toBe(2);

    // stop/start: a new namespace, the same address
    const stateOf = async (name: string) => (await c!.json<PsRow[]>(['ps', '--json'])).find((r) => r.name === name)?.state;
    expect((await c!.cli(['stop', 'web-a'])).exitCode).toBe(0);
    await c!.until('web-a stopped', async () => (await stateOf('web-a')) === 'stopped', 20_000);
    expect(await fetchFrom(a!)).toMatch(/^error/);
    expect((await c!.cli(['start', 'web-a'])).exitCode).toBe(0);
    await c!.until('web-a running', async () => (await stateOf('web-a')) === 'running', 20_000);
    expect(await addressOf('web-a')).toBe(a);
    await c!.until('web-a answers again', async () => (await fetchFrom(a!)) === 'hello from web-a', 20_000);

    // the agent restarts: the jails keep running with their addresses
    await c!.stopAgent('host-v', 'SIGKILL');
    await c!.startAgentServing('host-v', [], undefined, 60_000);
    expect(await fetchFrom(a!)).toBe('hello from web-a');
    expect(await fetchFrom('10.88.42.42')).toBe('hello from web-b');
    expect(await addressOf('web-a')).toBe(a);

    // rm: the jail, its link and its address go
    expect((await c!.cli(['rm', 'web-a'])).exitCode).toBe(0);
    await c!.until('web-a gone from ps', async () => (await addressOf('web-a')) === undefined && !(await c!.json<PsRow[]>(['ps', '--json'])).some((r) => r.name === 'web-a'), 20_000);
    expect(await fetchFrom(a!)).toMatch(/^error/);
    await c!.until('one link left', async () => (await jailLinks()).length === 1, 10_000);
    expect(await fetchFrom('10.88.42.42')).toBe('hello from web-b');
  }, 240_000);

  it('bad input is one line naming the field, and nothing is written', async () => {
    const dir = scratchDir('jf-vnet-bad-');
    const cases: [unknown, RegExp][] = [
      [{ mode: 'vnet', address: '192.168.1.5' }, /jails\.0\.network\.address: 192\.168\.1\.5 is outside the jail network 10\.88\.0\.0\/16/],
      [{ mode: 'vnet', address: '10.88.42.42' }, /jails\.0\.network\.address: 10\.88\.42\.42 is held by jail "web-b"/],
      [{ mode: 'vnet', address: '10.88.1' }, /jails\.0\.network\.address: must be an IPv4 address/],
      [{ mode: 'inherit', ports: [{ host: 80, jail: 80 }] }, /jails\.0\.network\.ports: published ports need mode "vnet"/],
      [{ mode: 'vnet', ports: [{ host: 70000, jail: 80 }] }, /jails\.0\.network\.ports\.0\.host: must be a port from 1 to 65535/],
    ];
    for (const [network, rule] of cases) {
      const file = join(dir, 'bad.json');
      writeFileSync(file, JSON.stringify({ jails: [{ name: 'bad', command: ['/bin/true'], network }] }));
      const r = await c!.cli(['apply', '-f', file]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^jailfleet: /);
      expect(r.stderr).toMatch(rule);
    }
    expect((await c!.json<PsRow[]>(['ps', '--json'])).some((r) => r.name === 'bad')).toBe(false);
    const flag = await c!.cli(['serve', 'scheduler', '--jail-cidr', '10.88.0.1/16']);
    expect(flag.exitCode).toBe(2);
    expect(flag.stderr.trim()).toBe('jailfleet: --jail-cidr: jail network "10.88.0.1/16" has host bits set: write 10.88.0.0/16');
  }, 60_000);
});
