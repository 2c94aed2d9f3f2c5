// The scheduler's live packing: heartbeats, drains, specs and placements arrive in any order, and
// the packing reserves exactly what is placed, where it is placed.
import { describe, expect, test } from '@jest/globals';
import { jailSpecSchema, type JailSpec } from '../../contracts/index.js';
import { LivePacking } from '../../services/scheduler/live-packing.js';
import { plan } from '../../services/scheduler/plan.js';
import { CONSTRAINTS, demandOf, emptyView } from '../../services/scheduler/constraints.js';

const spec = (name: string, cpu: number, memoryMB: number, placement: Record<string, unknown> = {}): JailSpec =>
  jailSpecSchema.parse({ name, command: ['/bin/true'], resources: { cpu, memoryMB }, placement });
const host = (name: string, cpu = 2, memoryMB = 512) => ({ name, up: true, draining: false, capacity: { cpu, memoryMB }, labels: {} });

describe('LivePacking', () => {
  test('binpack fills one host before it opens the next, and says why a jail fits nowhere', () => {
    const p = new LivePacking('binpack');
    for (const h of ['h1', 'h2', 'h3']) p.host(host(h));
    const hosts = Array.from({ length: 6 }, (_, i) => p.place(spec(`j${i}`, 0.5, 128)).host);
    expect(hosts).toEqual(['h1', 'h1', 'h1', 'h1', 'h2', 'h2']);
    expect(p.place(spec('big', 0.5, 1024))).toEqual({ host: null, reason: 'no host fits: 3 hosts lack memory (needs 1024 MB, most free 512 MB)' });
  });

  test('placements heard from the bucket take room; a spec known later is counted then', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 256));
    p.host(host('h2', 1, 256));
    p.at('old', 'h1'); // placement first, spec unknown yet: nothing reserved
    expect(p.hostOf('old')).toBeUndefined();
    p.spec('old', spec('old', 1, 256));
    expect(p.hostOf('old')).toBe('h1');
    expect(p.place(spec('new', 0.5, 128)).host).toBe('h2');
    // removed: its room is free again
    p.at('old', null);
    expect(p.hostOf('old')).toBeUndefined();
    expect(p.place(spec('next', 0.5, 128)).host).toBe('h2');
    expect(p.place(spec('more', 1, 256)).host).toBe('h1');
  });

  test('a draining or down host takes nothing new, and the reason says so', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1'));
    p.host(host('h2'));
    p.host({ name: 'h1', draining: true });
    p.host({ name: 'h2', up: false });
    expect(p.place(spec('a', 0.1, 64))).toEqual({ host: null, reason: 'no host fits: 1 host is down, 1 is draining' });
    expect(p.place(spec('pinned', 0.1, 64, { host: 'h1' }))).toEqual({ host: null, reason: 'pinned host "h1" is draining' });
    p.host({ name: 'h1', draining: false });
    expect(p.place(spec('a', 0.1, 64)).host).toBe('h1');
  });

  test('a heartbeat that changes nothing changes nothing; a larger capacity makes room', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 128));
    expect(p.place(spec('a', 1, 128)).host).toBe('h1');
    p.host(host('h1', 1, 128));
    expect(p.place(spec('b', 1, 128)).host).toBeNull();
    p.host(host('h1', 2, 256));
    expect(p.place(spec('b', 1, 128)).host).toBe('h1');
  });

  test('spread puts each jail on the least loaded host', () => {
    const p = new LivePacking('spread');
    for (const h of ['h1', 'h2']) p.host(host(h));
    expect(['a', 'b', 'c', 'd'].map((n) => p.place(spec(n, 0.1, 64)).host)).toEqual(['h1', 'h2', 'h1', 'h2']);
  });

  test('an apply of many jails is placed as a batch, as tightly as plan packs them (FFD would take 6 hosts, the batch 5)', () => {
    const sizes = [3, 5, 3, 3, 9, 9, 2, 2, 4, 8];
    const specs = sizes.map((m, i) => spec(`j${i}`, 0.01, m * 10));
    const hosts = Array.from({ length: 10 }, (_, i) => host(`h${i}`, 1, 100));
    const p = new LivePacking('binpack');
    for (const h of hosts) p.host(h);
    const dry = p.dryRun(specs);
    expect(specs.every((s) => p.hostOf(s.name) === undefined)).toBe(true); // a dry run reserves nothing
    const placed = p.placeBatch(specs);
    expect(dry).toEqual(plan(specs, hosts));
    expect(dry.hostsUsed).toBe(5);
    expect(new Set([...placed.values()].map((r) => r.host)).size).toBe(5);
    for (const h of dry.hosts) for (const j of h.jails) expect([j, placed.get(j)]).toEqual([j, { host: h.host, reason: null }]);
    for (const s of specs) expect(p.hostOf(s.name)).toBe(placed.get(s.name)!.host);
  });

  test('a batch fills around the jails already placed, never moving them, and says why a jail fits nowhere', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 2, 512));
    p.host(host('h2', 2, 512));
    p.spec('old', spec('old', 1, 256));
    p.at('old', 'h2');
    const r = p.placeBatch([spec('a', 0.5, 256), spec('b', 0.5, 256), spec('c', 0.5, 256), spec('huge', 1, 1024)]);
    expect(p.hostOf('old')).toBe('h2');
    expect(Object.fromEntries(r)).toEqual({
      a: { host: 'h2', reason: null }, // the best fit: h2 has the least room left
      b: { host: 'h1', reason: null },
      c: { host: 'h1', reason: null },
      huge: { host: null, reason: 'no host fits: 2 hosts lack memory (needs 1024 MB, most free 512 MB)' },
    });
    // the jails already placed count in the hosts used and in the lower bound
    expect(p.dryRun([spec('d', 0.1, 4)])).toEqual({ hostsUsed: 2, lowerBound: 2, hosts: [], unplaced: [{ name: 'd', reason: 'no host fits: 2 hosts lack memory (needs 4 MB, most free 0 MB)' }] });
  });

  test('exact fits: a batch fills a host to the last MB and refuses one MB more, as place does', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 1024));
    p.spec('old', spec('old', 0.5, 512));
    p.at('old', 'h1');
    expect(p.dryRun([spec('x', 0.5, 513)]).unplaced).toEqual([{ name: 'x', reason: 'no host fits: 1 host lacks memory (needs 513 MB, free 512 MB)' }]);
    expect(p.place(spec('x', 0.5, 513))).toEqual({ host: null, reason: 'no host fits: 1 host lacks memory (needs 513 MB, free 512 MB)' });
    expect(p.placeBatch([spec('x', 0.5, 513)]).get('x')).toEqual({ host: null, reason: 'no host fits: 1 host lacks memory (needs 513 MB, free 512 MB)' });
    expect(p.placeBatch([spec('x', 0.25, 256), spec('y', 0.25, 256)])).toEqual(new Map([['x', { host: 'h1', reason: null }], ['y', { host: 'h1', reason: null }]]));
    expect(p.placeBatch([spec('z', 0.01, 4)]).get('z')!.host).toBeNull();
  });

  test('a jail in a batch that was placed is placed anew, its old room counted free; draining and down hosts take nothing', () => {
    const p = new LivePacking('binpack');
    p.host(host('h1', 1, 256));
    p.host(host('h2', 1, 256));
    p.host(host('h3', 1, 256));
    expect(p.place(spec('a', 1, 256)).host).toBe('h1');
    p.host({ name: 'h2', draining: true });
    p.host({ name: 'h3', up: false });
    expect(Object.fromEntries(p.placeBatch([spec('a', 1, 256), spec('b', 1, 256)]))).toEqual({
      a: { host: 'h1', reason: null },
      b: { host: null, reason: 'no host fits: 1 host is down, 1 is draining, 1 lacks memory (needs 256 MB, free 0 MB)' },
    });
  });

  test('every host a batch places on passes each checker, for the spread strategy too', () => {
    for (const strategy of ['binpack', 'spread'] as const) {
      const p = new LivePacking(strategy);
      const hosts = [host('h1', 2, 512), { ...host('h2', 2, 512), labels: { zone: 'eu' } }, host('h3', 1, 256)];
      for (const h of hosts) p.host(h);
      const specs = [
        ...Array.from({ length: 4 }, (_, i) => spec(`w${i}`, 0.5, 128, { spreadGroup: 'web', maxPerHost: 2 })),
        spec('eu', 1, 128, { labels: { zone: 'eu' } }),
        spec('pin', 0.5, 64, { host: 'h3' }),
      ];
      const r = p.placeBatch(specs);
      const view = new Map(hosts.map((h) => [h.name, emptyView(h)]));
      for (const s of [...specs].sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const at = r.get(s.name)!.host;
        expect([s.name, at]).not.toEqual([s.name, null]);
        const v = view.get(at!)!;
        const d = demandOf(s);
        expect([s.name, CONSTRAINTS.filter((c) => c.check(v, d) !== null).map((c) => c.name)]).toEqual([s.name, []]);
        const groups = new Map(v.groups);
        if (d.spreadGroup) groups.set(d.spreadGroup, (groups.get(d.spreadGroup) ?? 0) + 1);
        view.set(at!, { ...v, usedCpu: v.usedCpu + d.cpu, usedMem: v.usedMem + d.memoryMB, groups });
      }
    }
  });
});

