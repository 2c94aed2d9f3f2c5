// `jailfleet plan` from a user's side: a hosts file and a fleet in, the packing out; bad input
// refused on one line naming the field and the rule (exit 2); a jail that fits nowhere printed
// with its reason and exit 1. Runs the built CLI (dist/), no cluster needed with --hosts.
import { describe, expect, test } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cliPath } from '../support/cluster.js';
import { scratchDir } from '../support/scratch.js';

const dir = scratchDir('jf-plan-');
const file = (name: string, data: unknown) => {
  const p = join(dir, name);
  writeFileSync(p, typeof data === 'string' ? data : JSON.stringify(data));
  return p;
};
const jailfleet = (...args: string[]) => execa(process.execPath, [cliPath, ...args], { reject: false, env: { JAILFLEET_NATS_URL: 'nats://127.0.0.1:1' } });

const fleet = file('fleet.json', {
  jails: [
    { name: 'web', command: ['/bin/web'], replicas: 3, resources: { cpu: 1, memoryMB: 1024 } },
    { name: 'db', command: ['/bin/db'], resources: { cpu: 2, memoryMB: 4096 }, placement: { labels: { disk: 'ssd' } } },
  ],
});
const hosts = file('hosts.yaml', 'hosts:\n  - { name: a, cpu: 4, memoryMB: 8192, labels: { disk: ssd } }\n  - { name: b, cpu: 4, memoryMB: 8192 }\n  - { name: c, cpu: 4, memoryMB: 8192 }\n');

describe('jailfleet plan', () => {
  test('packs a fleet onto the fewest hosts, replicas spread, and exits 0', async () => {
    const r = await jailfleet('plan', '-f', fleet, '--hosts', hosts, '--json');
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      hostsUsed: 3,
      lowerBound: 2,
      hosts: [
        { host: 'a', jails: ['db', 'web-0'], cpu: 3, memoryMB: 5120 },
        { host: 'b', jails: ['web-1'], cpu: 1, memoryMB: 1024 },
        { host: 'c', jails: ['web-2'], cpu: 1, memoryMB: 1024 },
      ],
      unplaced: [],
    });
    const text = await jailfleet('plan', '-f', fleet, '--hosts', hosts);
    expect(text.stdout).toMatch(/^hosts used: 3 \(lower bound 2\); jails placed: 4, unplaced: 0\n/);
    expect(text.stdout).toMatch(/\na +2 +3\/4 +75% +5120\/8192 +63% +db, web-0\n/);
  });

  test('a jail that fits nowhere is printed with its reason, then the command exits 1', async () => {
    const small = file('small.json', { hosts: [{ name: 'a', cpu: 1, memoryMB: 512 }] });
    const r = await jailfleet('plan', '-f', fleet, '--hosts', small);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('db        no host fits: 1 host lacks label disk=ssd');
    expect(r.stdout).toContain('web-0     no host fits: 1 host lacks memory (needs 1024 MB, free 512 MB)');
    expect(r.stderr).toBe('jailfleet: 4 of 4 jails cannot be placed (reasons above)');
  });

  test.each([
    ['cpu below the minimum', { hosts: [{ name: 'a', cpu: -1, memoryMB: 1024 }] }, 'hosts.0.cpu: must be at least 0.01 cores'],
    ['memory not whole', { hosts: [{ name: 'a', cpu: 1, memoryMB: 10.5 }] }, 'hosts.0.memoryMB: must be a whole number of MB'],
    ['a typo', { hosts: [{ name: 'a', cpu: 1, memory: 1024 }] }, 'hosts.0: Unrecognized key: "memory"'],
    ['a bad host name', { hosts: [{ name: 'A;reboot', cpu: 1, memoryMB: 1024 }] }, 'hosts.0.name: must be lowercase letters'],
    ['a bad label', { hosts: [{ name: 'a', cpu: 1, memoryMB: 1024, labels: { '$(id)': 'x' } }] }, 'hosts.0.labels.$(id): must be letters, digits'],
    ['a name twice', { hosts: [{ name: 'a', cpu: 1, memoryMB: 1024 }, { name: 'a', cpu: 2, memoryMB: 1024 }] }, 'hosts.1.name: duplicate host name "a"'],
    ['no hosts', { hosts: [] }, 'hosts: must list at least one host'],
  ])('a hosts file with %s is refused with the field and the rule (exit 2)', async (_what, data, message) => {
    const p = file('bad.json', data);
    const r = await jailfleet('plan', '-f', fleet, '--hosts', p);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.startsWith(`jailfleet: ${p}: invalid hosts file: ${message}`)).toBe(true);
    expect(r.stderr.split('\n')).toHaveLength(1);
  });

  test('an empty or missing hosts file, a bad strategy and a bad fleet are refused (exit 2)', async () => {
    const empty = file('empty.yaml', '\n');
    let r = await jailfleet('plan', '-f', fleet, '--hosts', empty);
    expect([r.exitCode, r.stderr]).toEqual([2, `jailfleet: ${empty}: file is empty (expected { hosts: [{ name, cpu, memoryMB, labels }, ...] })`]);
    r = await jailfleet('plan', '-f', fleet, '--hosts', join(dir, 'nope.yaml'));
    expect([r.exitCode, r.stderr]).toEqual([2, `jailfleet: cannot read ${join(dir, 'nope.yaml')}: no such file`]);
    r = await jailfleet('plan', '-f', fleet, '--hosts', hosts, '--strategy', 'fast');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^jailfleet: option '--strategy <strategy>' argument 'fast' is invalid\. Allowed choices are binpack, spread\./);
    const long = file('long.json', { jails: [{ name: 'a'.repeat(61), command: ['x'], replicas: 11 }] });
    r = await jailfleet('plan', '-f', long, '--hosts', hosts);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${long}: invalid spec: jails.0.name: with 11 replicas the last jail would be "${'a'.repeat(61)}-10" (64 characters, at most 63)`);
  });

  test('without --hosts it asks the live cluster, and says so when there is none', async () => {
    const r = await jailfleet('plan', '-f', fleet);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/^jailfleet: cannot reach NATS at nats:\/\/127\.0\.0\.1:1/);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });
});
