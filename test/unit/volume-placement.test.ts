// Host volumes as a hard placement rule: a jail that asks for a volume goes only to hosts that
// offer it (writable when the jail writes), and every engine — the online packing, the batch
// planner behind `plan`, explain() — says so with the same reason.
import { describe, expect, test } from '@jest/globals';
import { ClusterPacking, type PackHost, type PackJail } from '../../services/scheduler/packing.js';
import { plan } from '../../services/scheduler/plan.js';
import { demandOf, emptyView, explain } from '../../services/scheduler/constraints.js';
import { parseFleet, parseVolumeFlags } from '../../services/cli/flags.js';

const host = (name: string, volumes: Record<string, boolean> = {}): PackHost => ({ name, up: true, draining: false, capacity: { cpu: 4, memoryMB: 4096 }, labels: {}, volumes });
const jail = (name: string, volumes: { name: string; readOnly: boolean }[] = []): PackJail => ({ name, resources: { cpu: 0.1, memoryMB: 64 }, placement: {}, volumes });

describe('host volumes', () => {
  const hosts = [host('a'), host('b'), host('c'), host('db-1', { pgdata: false }), host('ro-1', { pgdata: true })];

  test('a jail with a volume is placed only where the volume is', () => {
    const r = plan([jail('pg', [{ name: 'pgdata', readOnly: false }]), jail('plain')], hosts);
    expect(r.hosts.find((h) => h.jails.includes('pg'))?.host).toBe('db-1');
    expect(r.unplaced).toEqual([]);
    const reader = plan([jail('reader', [{ name: 'pgdata', readOnly: true }])], [host('ro-1', { pgdata: true })]);
    expect(reader.unplaced).toEqual([]);
  });

  test('no host with it: the reason names the volume and counts the hosts', () => {
    const r = plan([jail('pg', [{ name: 'pgdata', readOnly: false }])], [host('a'), host('b'), host('c')]);
    expect(r.unplaced).toEqual([{ name: 'pg', reason: 'no host fits: 3 hosts lack volume pgdata' }]);
    expect(explain(hosts.map(emptyView), demandOf(jail('logs', [{ name: 'pgdata', readOnly: false }, { name: 'logs', readOnly: false }])))).toBe(
      'no host fits: 3 hosts lack volume pgdata, 1 lacks volume logs, 1 offers volume pgdata read-only only',
    );
  });

  test('the online packing follows the same rule', () => {
    const packing = new ClusterPacking(hosts, [], 'spread');
    for (let i = 0; i < 5; i++) expect(packing.place(jail(`pg-${i}`, [{ name: 'pgdata', readOnly: false }]))).toMatchObject({ host: 'db-1' });
  });

  test('specs and agent flags: volumes parsed, bad ones refused naming the field', () => {
    const fleet = parseFleet({ jails: [{ name: 'pg', command: ['/bin/true'], volumes: [{ name: 'pgdata', target: '/var/lib/pg' }] }] }, 'f');
    expect(fleet.jails[0]!.volumes).toEqual([{ name: 'pgdata', target: '/var/lib/pg', readOnly: false }]);
    expect(() => parseFleet({ jails: [{ name: 'pg', command: ['/bin/true'], volumes: [{ name: 'PG', target: '/x' }] }] }, 'f')).toThrow(/jails\.0\.volumes\.0\.name/);
    expect(() => parseFleet({ jails: [{ name: 'pg', command: ['/bin/true'], mounts: [{ source: '/srv', target: '/x' }], volumes: [{ name: 'pg', target: '/x' }] }] }, 'f')).toThrow(/same target/);
    expect([...parseVolumeFlags(['pgdata=/srv/pg', 'iso=/srv/iso:ro'])]).toEqual([
      ['pgdata', { path: '/srv/pg', readOnly: false }],
      ['iso', { path: '/srv/iso', readOnly: true }],
    ]);
    expect(() => parseVolumeFlags(['pgdata'])).toThrow('--volume: expected NAME=/path[:ro] (got "pgdata")');
    expect(() => parseVolumeFlags(['pg=relative'])).toThrow(/expected NAME=\/path/);
    expect(() => parseVolumeFlags(['pg=/a', 'pg=/b'])).toThrow('--volume: "pg" is given twice');
  });
});
