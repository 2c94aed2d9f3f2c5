// Placement and host liveness: the scheduler's pure decisions. Same jails and hosts, same
// answer; a jail that cannot be placed says why; a host is up for exactly the TTL after its
// last heartbeat. Packing never puts a host over capacity nor breaks a hard constraint.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { ClusterPacking, millicores, type PackHost, type PackJail, type PackStrategy } from '../../services/scheduler/packing.js';
import { lowerBoundOf, martelloTothL2, plan, planBatch } from '../../services/scheduler/plan.js';
import { CONSTRAINTS, demandOf, emptyView, explain, type HostView } from '../../services/scheduler/constraints.js';
import { HostLiveness } from '../../services/common/heartbeat-feed.js';


describe('HostLiveness', () => {
  const TTL = 3000;

  test('a host never seen is down and absent from the list', () => {
    const l = new HostLiveness(TTL);
    expect(l.isUp('a', 0)).toBe(false);
    expect(l.hosts(0)).toEqual([]);
  });

  test('up until exactly the TTL after its last heartbeat, down one millisecond later', () => {
    const l = new HostLiveness(TTL);
    l.seen('a', 1000);
    expect(l.isUp('a', 1000)).toBe(true);
    expect(l.isUp('a', 1000 + TTL)).toBe(true);
    expect(l.isUp('a', 1000 + TTL + 1)).toBe(false);
    expect(l.hosts(1000 + TTL)).toEqual([{ name: 'a', up: true, lastSeen: 1000 }]);
    expect(l.hosts(1000 + TTL + 1)).toEqual([{ name: 'a', up: false, lastSeen: 1000 }]);
  });

  test('seen is true only when a host comes up: first heartbeat or after a lapse', () => {
    const l = new HostLiveness(TTL);
    expect(l.seen('a', 0)).toBe(true); // first ever
    expect(l.seen('a', 1000)).toBe(false); // still up
    expect(l.seen('a', 1000 + TTL)).toBe(false); // exactly at the TTL: was still up
    expect(l.seen('a', 1000 + 2 * TTL + 1)).toBe(true); // TTL + 1 since the last: was down
    expect(l.seen('a', 1000 + 2 * TTL + 2)).toBe(false);
  });

  test('each heartbeat extends the lease from its own time', () => {
    const l = new HostLiveness(TTL);
    l.seen('a', 0);
    l.seen('a', 2000);
    expect(l.isUp('a', 2000 + TTL)).toBe(true);
    expect(l.isUp('a', 2000 + TTL + 1)).toBe(false);
  });

  test('hosts are independent and listed by name', () => {
    const l = new HostLiveness(TTL);
    expect(l.seen('c', 0)).toBe(true);
    expect(l.seen('a', 5000)).toBe(true);
    expect(l.seen('b', 5000)).toBe(true);
    expect(l.hosts(5000)).toEqual([
      { name: 'a', up: true, lastSeen: 5000 },
      { name: 'b', up: true, lastSeen: 5000 },
      { name: 'c', up: false, lastSeen: 0 },
    ]);
  });

  test('property: seen returns true exactly when the host was not up just before', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('a', 'b'), fc.nat({ max: 4000 })), { maxLength: 30 }), (beats) => {
        const l = new HostLiveness(1000);
        const last = new Map<string, number>();
        let now = 0;
        for (const [host, dt] of beats) {
          now += dt;
          const prev = last.get(host);
          const wasUp = prev !== undefined && now - prev <= 1000;
          expect(l.seen(host, now)).toBe(!wasUp);
          expect(l.isUp(host, now)).toBe(true);
          last.set(host, now);
        }
      }),
      { numRuns: 300 },
    );
  });
});

const host = (name: string, cpu = 4, memoryMB = 4096, more: Partial<PackHost> = {}): PackHost => ({
  name, up: true, draining: false, capacity: { cpu, memoryMB }, labels: {}, ...more,
});
const jail = (name: string, cpu = 0.5, memoryMB = 512, placement: PackJail['placement'] = {}): PackJail => ({ name, resources: { cpu, memoryMB }, placement });
const placeAll = (p: ClusterPacking, jails: PackJail[]) => jails.map((j) => p.place(j).host);

describe('ClusterPacking: binpack', () => {
  test('fills the used host before opening another, and opens the smallest name first', () => {
    const p = new ClusterPacking([host('b'), host('a'), host('c')]);
    expect(placeAll(p, [jail('x', 2, 2048), jail('y', 2, 2048), jail('z', 1, 512)])).toEqual(['a', 'a', 'b']);
    expect(p.hostsUsed()).toBe(2);
  });

  test('best fit: a jail goes to the used host it fills the most', () => {
    const p = new ClusterPacking([host('a'), host('b')], [
      { name: 'big', host: 'a', resources: { cpu: 3, memoryMB: 3072 } },
      { name: 'small', host: 'b', resources: { cpu: 1, memoryMB: 1024 } },
    ]);
    expect(p.place(jail('x', 1, 1024)).host).toBe('a');
    expect(p.place(jail('y', 1, 1024)).host).toBe('b');
  });

  test('cpu is counted in millicores: ten jails of 0.1 cores fill a host of 1 core exactly', () => {
    const p = new ClusterPacking([host('a', 1, 100_000), host('b', 1, 100_000)]);
    expect(placeAll(p, Array.from({ length: 11 }, (_, i) => jail(`j${i}`, 0.1, 64)))).toEqual([...Array(10).fill('a'), 'b']);
    expect(p.hosts()[0]!.allocated.cpu).toBe(1);
  });

  test('release frees the resources, and placing a placed jail again moves it rather than counting it twice', () => {
    const p = new ClusterPacking([host('a', 1, 1024)]);
    expect(p.place(jail('x', 1, 1024)).host).toBe('a');
    expect(p.place(jail('y', 1, 1024)).host).toBeNull();
    expect(p.release('x')).toBe(true);
    expect(p.release('x')).toBe(false);
    expect(p.place(jail('y', 1, 1024)).host).toBe('a');
    expect(p.place(jail('y', 1, 1024)).host).toBe('a');
    expect(p.hosts()[0]!.allocated).toEqual({ cpu: 1, memoryMB: 1024 });
  });

  test('peek answers without reserving', () => {
    const p = new ClusterPacking([host('a', 1, 1024)]);
    expect(p.peek(jail('x', 1, 1024))).toEqual({ host: 'a', reason: null });
    expect(p.hostsUsed()).toBe(0);
  });

  test('jails already placed count even past capacity, and on a host known only from them', () => {
    const p = new ClusterPacking([host('a', 1, 1024)], [
      { name: 'old', host: 'a', resources: { cpu: 2, memoryMB: 64 } },
      { name: 'lost', host: 'gone', resources: { cpu: 1, memoryMB: 64 } },
    ]);
    expect(p.place(jail('x', 0.1, 64)).reason).toMatch(/^no host fits: 1 host is down, 1 lacks cpu \(needs 0.1 cores, free 0\)$/);
    expect(p.hostOf('lost')).toBe('gone');
  });

  test('hosts that go down or start draining take nothing more; removing a host releases its jails', () => {
    const p = new ClusterPacking([host('a'), host('b')]);
    expect(p.place(jail('x')).host).toBe('a');
    p.upsertHost(host('a', 4, 4096, { draining: true }));
    expect(p.place(jail('y')).host).toBe('b');
    p.upsertHost(host('b', 4, 4096, { up: false }));
    expect(p.place(jail('z'))).toEqual({ host: null, reason: 'no host fits: 1 host is down, 1 is draining' });
    p.upsertHost(host('c'));
    expect(p.place(jail('z')).host).toBe('c');
    expect(p.removeHost('a')).toEqual(['x']);
    expect(p.hostOf('x')).toBeUndefined();
  });

  test('a host listed twice is refused', () => {
    expect(() => new ClusterPacking([host('a'), host('a')])).toThrow('host "a" is listed twice');
  });
});

describe('ClusterPacking: hard constraints and their reasons', () => {
  test('a pinned jail goes to its host even when another fits better, or nowhere', () => {
    const p = new ClusterPacking([host('a'), host('b', 1, 1024)], [{ name: 'old', host: 'a', resources: { cpu: 1, memoryMB: 512 } }]);
    expect(p.place(jail('x', 0.5, 512, { host: 'b' })).host).toBe('b');
    expect(p.place(jail('y', 0.5, 768, { host: 'b' }))).toEqual({ host: null, reason: 'pinned host "b" lacks memory (needs 768 MB, free 512 MB)' });
    expect(p.place(jail('z', 1, 64, { host: 'b' }))).toEqual({ host: null, reason: 'pinned host "b" lacks cpu (needs 1 cores, free 0.5)' });
    expect(p.place(jail('w', 0.1, 64, { host: 'ghost' })).reason).toBe('pinned host "ghost" is unknown (0 of 2 hosts match)');
    p.upsertHost(host('b', 1, 1024, { draining: true }));
    expect(p.place(jail('v', 0.1, 64, { host: 'b' })).reason).toBe('pinned host "b" is draining');
    expect(p.place(jail('u', 0.1, 64, { host: 'b', labels: { zone: 'eu' } })).reason).toBe('pinned host "b" is draining');
    p.upsertHost(host('b', 1, 1024));
    expect(p.place(jail('u', 0.1, 64, { host: 'b', labels: { zone: 'eu' } })).reason).toBe('pinned host "b" lacks label zone=eu');
  });

  test('every required label must be on the host, with its value', () => {
    const eu = { zone: 'eu', disk: 'ssd' };
    const p = new ClusterPacking([host('a', 4, 4096, { labels: { zone: 'eu' } }), host('b', 4, 4096, { labels: { zone: 'us', disk: 'ssd' } }), host('c', 4, 4096, { labels: eu })]);
    expect(p.place(jail('x', 0.5, 512, { labels: eu })).host).toBe('c');
    expect(p.place(jail('y', 0.5, 512, { labels: { zone: 'eu' } })).host).toBe('c');
    expect(p.place(jail('z', 0.5, 512, { labels: { zone: 'ap' } })).reason).toBe('no host fits: 3 hosts lack label zone=ap');
  });

  test('the reason counts each host under the first constraint it fails, the largest count first', () => {
    const hosts = [
      ...['a', 'b', 'c'].map((n) => host(n, 8, 8192, { labels: { zone: 'us' } })),
      host('d', 8, 256, { labels: { zone: 'eu' } }),
      host('e', 8, 128, { labels: { zone: 'eu' } }),
      host('f', 8, 8192, { labels: { zone: 'eu' }, draining: true }),
    ];
    const p = new ClusterPacking(hosts);
    expect(p.place(jail('x', 1, 512, { labels: { zone: 'eu' } })).reason).toBe(
      'no host fits: 3 hosts lack label zone=eu, 2 lack memory (needs 512 MB, most free 256 MB), 1 is draining',
    );
    expect(new ClusterPacking([]).place(jail('x')).reason).toBe('no host fits: no host is known');
  });

  test('a jail larger than any host says how much is free at most', () => {
    const p = new ClusterPacking([host('a', 2, 1024), host('b', 1.5, 1024)]);
    expect(p.place(jail('x', 4, 64)).reason).toBe('no host fits: 2 hosts lack cpu (needs 4 cores, most free 2)');
  });
});

describe('ClusterPacking: spreading', () => {
  const group = (name: string, extra: PackJail['placement'] = {}) => jail(name, 0.5, 512, { spreadGroup: 'web', ...extra });

  test('binpack still puts the jails of a group on different hosts while hosts allow it, then doubles up evenly', () => {
    const p = new ClusterPacking([host('a'), host('b'), host('c')]);
    expect(placeAll(p, ['w0', 'w1', 'w2', 'w3', 'w4'].map((n) => group(n)))).toEqual(['a', 'b', 'c', 'a', 'b']);
    // other jails are packed as usual
    expect(p.place(jail('other')).host).toBe('a');
  });

  test('maxPerHost makes it hard: the jail that would break it is not placed, and the reason says so', () => {
    const p = new ClusterPacking([host('a'), host('b')]);
    expect(placeAll(p, ['w0', 'w1', 'w2', 'w3', 'w4'].map((n) => group(n, { maxPerHost: 2 })))).toEqual(['a', 'b', 'a', 'b', null]);
    expect(p.place(group('w5', { maxPerHost: 2 })).reason).toBe('no host fits: 2 hosts already hold 2 of spread group web (maxPerHost 2)');
  });

  test('releasing a member lets the group use that host again', () => {
    const p = new ClusterPacking([host('a'), host('b')]);
    placeAll(p, [group('w0', { maxPerHost: 1 }), group('w1', { maxPerHost: 1 })]);
    expect(p.place(group('w2', { maxPerHost: 1 })).host).toBeNull();
    p.release('w0');
    expect(p.place(group('w2', { maxPerHost: 1 })).host).toBe('a');
  });

  test('strategy spread puts each jail on the least-loaded host (the larger share of cpu or memory)', () => {
    const p = new ClusterPacking([host('a'), host('b'), host('c', 8, 8192)], [], 'spread');
    expect(placeAll(p, [jail('x', 2, 512), jail('y', 1, 2048), jail('z', 1, 512), jail('w', 1, 512)])).toEqual(['a', 'b', 'c', 'c']);
  });
});

describe('plan (batch)', () => {
  const hosts10 = (n: number) => Array.from({ length: n }, (_, i) => host(`h${i}`, 1, 10));
  const items = (sizes: number[]) => sizes.map((m, i) => jail(`j${i}`, 0, m));

  test('reaches the optimum where first-fit decreasing does not (FFD: 6 hosts, optimum 5)', () => {
    const sizes = [3, 5, 3, 3, 9, 9, 2, 2, 4, 8];
    const r = plan(items(sizes), hosts10(10));
    expect(r.lowerBound).toBe(5);
    expect(r.hostsUsed).toBe(5);
    expect(plan(items(sizes), hosts10(10), 'binpack', { effortPerJail: 0 }).hostsUsed).toBe(6);
    for (const h of r.hosts) expect(h.memoryMB).toBeLessThanOrEqual(10);
    expect(r.hosts.flatMap((h) => h.jails).sort()).toEqual(sizes.map((_, i) => `j${i}`).sort());
  });

  test('the JSON shape: hosts used by name with their jails and totals, unplaced with reasons', () => {
    const r = plan([jail('b', 1.5, 512), jail('a', 0.5, 512), jail('huge', 64, 512), jail('eu', 0.1, 64, { labels: { zone: 'eu' } })], [host('h2', 2, 1024), host('h1', 2, 1024)]);
    expect(r).toEqual({
      hostsUsed: 1,
      lowerBound: 1,
      hosts: [{ host: 'h1', jails: ['a', 'b'], cpu: 2, memoryMB: 1024 }],
      unplaced: [
        { name: 'eu', reason: 'no host fits: 2 hosts lack label zone=eu' },
        { name: 'huge', reason: 'no host fits: 2 hosts lack cpu (needs 64 cores, most free 2)' },
      ],
    });
  });

  test('the lower bound counts only jails that fit on some host, and for unequal hosts the largest first', () => {
    expect(lowerBoundOf([jail('a', 3, 64), jail('b', 3, 64)], [host('s', 2, 1024), host('m', 4, 1024), host('l', 8, 1024)])).toBe(1);
    expect(lowerBoundOf([jail('a', 6, 64), jail('b', 6, 64)], [host('s', 2, 1024), host('m', 4, 1024), host('l', 8, 1024)])).toBe(2);
    expect(plan([jail('a', 1, 64), jail('x', 99, 64)], [host('h', 2, 1024)]).lowerBound).toBe(1);
  });

  test("Martello and Toth's L2 is at least the volume bound and counts big items one per host", () => {
    expect(martelloTothL2([6, 6, 6], 10)).toBe(3);
    expect(martelloTothL2([3, 5, 3, 3, 9, 9, 2, 2, 4, 8], 10)).toBe(5);
    expect(martelloTothL2([], 10)).toBe(0);
  });

  test('spread plans every host it can', () => {
    expect(plan(items([1, 1, 1]), hosts10(3), 'spread').hostsUsed).toBe(3);
    expect(plan(items([1, 1, 1]), hosts10(3)).hostsUsed).toBe(1);
  });
});

// --- properties: whatever the hosts and jails --------------------------------------------

const LABELS: Record<string, string>[] = [{}, { zone: 'eu' }, { zone: 'us' }, { zone: 'eu', disk: 'ssd' }];
const hostArb = fc.record({
  up: fc.boolean(),
  draining: fc.boolean(),
  cpu: fc.integer({ min: 0, max: 40 }).map((x) => x / 10),
  memoryMB: fc.integer({ min: 0, max: 4096 }),
  labels: fc.constantFrom(...LABELS),
});
const hostsArb = fc.uniqueArray(fc.tuple(fc.stringMatching(/^h[0-9]{1,2}$/), hostArb), { selector: ([n]) => n, maxLength: 8 }).map((xs) =>
  xs.map(([name, h]): PackHost => ({ name, up: h.up, draining: h.draining, capacity: { cpu: h.cpu, memoryMB: h.memoryMB }, labels: h.labels })),
);
// the jails of one spread group agree on maxPerHost, as replicas of one entry do
const maxPerGroupArb = fc.record({ g1: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }), g2: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }) });
const jailsArb = fc
  .tuple(
    fc.array(
      fc.record({
        cpu: fc.integer({ min: 1, max: 200 }).map((x) => x / 100),
        memoryMB: fc.integer({ min: 4, max: 1500 }),
        pin: fc.option(fc.stringMatching(/^h[0-9]$/), { nil: undefined, freq: 5 }),
        labels: fc.constantFrom<Record<string, string>>({}, {}, { zone: 'eu' }, { disk: 'ssd' }),
        group: fc.option(fc.constantFrom('g1' as const, 'g2' as const), { nil: undefined }),
      }),
      { maxLength: 30 },
    ),
    maxPerGroupArb,
  )
  .map(([xs, maxPerHost]) =>
    xs.map((x, i): PackJail => ({
      name: `j${i}`,
      resources: { cpu: x.cpu, memoryMB: x.memoryMB },
      placement: { host: x.pin, labels: x.labels, spreadGroup: x.group, maxPerHost: x.group ? maxPerHost[x.group] : undefined },
    })),
  );
const strategyArb = fc.constantFrom<PackStrategy>('binpack', 'spread');

/** Checks a whole assignment: capacity on both resources, and every hard constraint. */
function checkAssignment(hosts: PackHost[], jails: PackJail[], where: Map<string, string>) {
  const byName = new Map(hosts.map((h) => [h.name, h]));
  const used = new Map<string, { cpu: number; mem: number }>();
  const perGroup = new Map<string, number>();
  for (const j of jails) {
    const at = where.get(j.name);
    if (at === undefined) continue;
    const h = byName.get(at)!;
    expect(h.up && !h.draining).toBe(true);
    if (j.placement.host !== undefined) expect(at).toBe(j.placement.host);
    for (const [k, v] of Object.entries(j.placement.labels ?? {})) expect(h.labels[k]).toBe(v);
    const u = used.get(at) ?? { cpu: 0, mem: 0 };
    u.cpu += millicores(j.resources.cpu);
    u.mem += j.resources.memoryMB;
    used.set(at, u);
    if (j.placement.spreadGroup) perGroup.set(`${j.placement.spreadGroup}@${at}`, (perGroup.get(`${j.placement.spreadGroup}@${at}`) ?? 0) + 1);
  }
  for (const [name, u] of used) {
    expect(u.cpu).toBeLessThanOrEqual(millicores(byName.get(name)!.capacity.cpu));
    expect(u.mem).toBeLessThanOrEqual(byName.get(name)!.capacity.memoryMB);
  }
  for (const j of jails) {
    const at = where.get(j.name);
    if (at !== undefined && j.placement.maxPerHost !== undefined) expect(perGroup.get(`${j.placement.spreadGroup}@${at}`)!).toBeLessThanOrEqual(j.placement.maxPerHost);
  }
}

describe('packing properties', () => {
  test('online: never over capacity, never against a hard constraint, and unplaced only when no host could take it', () => {
    fc.assert(
      fc.property(hostsArb, jailsArb, strategyArb, (hosts, jails, strategy) => {
        const p = new ClusterPacking(hosts, [], strategy);
        const where = new Map<string, string>();
        for (const j of jails) {
          // what a host could take right now, checked by brute force
          const free = (h: PackHost) => {
            const on = jails.filter((o) => where.get(o.name) === h.name);
            const group = on.filter((o) => j.placement.spreadGroup !== undefined && o.placement.spreadGroup === j.placement.spreadGroup).length;
            return (
              h.up && !h.draining &&
              (j.placement.host === undefined || j.placement.host === h.name) &&
              Object.entries(j.placement.labels ?? {}).every(([k, v]) => h.labels[k] === v) &&
              (j.placement.maxPerHost === undefined || group < j.placement.maxPerHost) &&
              on.reduce((s, o) => s + millicores(o.resources.cpu), 0) + millicores(j.resources.cpu) <= millicores(h.capacity.cpu) &&
              on.reduce((s, o) => s + o.resources.memoryMB, 0) + j.resources.memoryMB <= h.capacity.memoryMB
            );
          };
          const r = p.place(j);
          if (r.host === null) {
            expect(hosts.some(free)).toBe(false);
            expect(r.reason).toMatch(/^(no host fits: |pinned host ")/);
          } else {
            expect(free(hosts.find((h) => h.name === r.host)!)).toBe(true);
            where.set(j.name, r.host);
          }
        }
        checkAssignment(hosts, jails, where);
      }),
      { numRuns: 400 },
    );
  });

  test('online and batch: the same input in another host order gives the same answer', () => {
    fc.assert(
      fc.property(
        hostsArb.chain((hosts) => fc.tuple(fc.constant(hosts), fc.shuffledSubarray(hosts, { minLength: hosts.length }))),
        jailsArb,
        strategyArb,
        ([hosts, shuffled], jails, strategy) => {
          const run = (hs: PackHost[]) => {
            const p = new ClusterPacking(hs, [], strategy);
            return jails.map((j) => p.place(j));
          };
          expect(run(shuffled)).toEqual(run(hosts));
          expect(plan(jails, shuffled, strategy)).toEqual(plan(jails, hosts, strategy));
        },
      ),
      { numRuns: 200 },
    );
  });

  test('batch: never over capacity, never against a hard constraint, never below the lower bound, never worse than without the search', () => {
    fc.assert(
      fc.property(hostsArb, jailsArb, strategyArb, (hosts, jails, strategy) => {
        const r = plan(jails, hosts, strategy);
        const where = new Map(r.hosts.flatMap((h) => h.jails.map((n) => [n, h.host] as const)));
        checkAssignment(hosts, jails, where);
        expect(where.size + r.unplaced.length).toBe(jails.length);
        // with jails left over the bound may say more hosts than there are room for
        if (r.unplaced.length === 0) expect(r.hostsUsed).toBeGreaterThanOrEqual(r.lowerBound);
        if (strategy === 'binpack') expect(r.hostsUsed).toBeLessThanOrEqual(plan(jails, hosts, strategy, { effortPerJail: 0 }).hostsUsed);
      }),
      { numRuns: 300 },
    );
  });

  test('batch on identical hosts, where the search moves and swaps jails the most: within capacity, at or above L2', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 20, max: 100 }), { minLength: 10, maxLength: 60 }), fc.array(fc.constantFrom(0.1, 0.5, 1), { minLength: 60, maxLength: 60 }), (sizes, cpus) => {
        const hosts = sizes.map((_, i) => host(`h${String(i).padStart(2, '0')}`, 4, 150));
        const jails = sizes.map((m, i) => jail(`j${i}`, cpus[i]!, m));
        const r = plan(jails, hosts);
        expect(r.unplaced).toEqual([]);
        checkAssignment(hosts, jails, new Map(r.hosts.flatMap((h) => h.jails.map((n) => [n, h.host] as const))));
        expect(r.hostsUsed).toBeGreaterThanOrEqual(martelloTothL2(sizes, 150));
      }),
      { numRuns: 200 },
    );
  });
});

// --- one checker per hard rule, shared by every engine ---------------------------------------

/** Puts the jails of `where` on their hosts one by one (by name) and asks every checker first. */
function replayThroughCheckers(hosts: PackHost[], jails: PackJail[], where: Map<string, string>) {
  const views = new Map<string, HostView>(hosts.map((h) => [h.name, emptyView(h)]));
  for (const j of [...jails].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const at = where.get(j.name);
    if (at === undefined) continue;
    const v = views.get(at)!;
    const d = demandOf(j);
    const refused = CONSTRAINTS.filter((c) => c.check(v, d) !== null).map((c) => c.name);
    if (refused.length) expect([j.name, at, refused]).toEqual([j.name, at, []]);
    const groups = new Map(v.groups);
    if (d.spreadGroup !== undefined) groups.set(d.spreadGroup, (groups.get(d.spreadGroup) ?? 0) + 1);
    views.set(at, { ...v, usedCpu: v.usedCpu + d.cpu, usedMem: v.usedMem + d.memoryMB, groups });
  }
}

describe('capacity at the boundary: an exact fit is taken, one MB or one millicore more is not', () => {
  const engines: [string, (hosts: PackHost[], jails: PackJail[]) => (string | null)[]][] = [
    ['online', (hosts, jails) => placeAll(new ClusterPacking(hosts), jails)],
    ['online, spread', (hosts, jails) => placeAll(new ClusterPacking(hosts, [], 'spread'), jails)],
    ['batch', (hosts, jails) => {
      const r = planBatch(jails, hosts);
      return jails.map((j) => r.placements.get(j.name)!.host);
    }],
  ];

  test.each(engines)('%s: memory', (_engine, run) => {
    expect(run([host('a', 4, 1024)], [jail('x', 1, 512), jail('y', 1, 512)])).toEqual(['a', 'a']);
    expect(run([host('a', 4, 1024)], [jail('x', 1, 1024)])).toEqual(['a']);
    expect(run([host('a', 4, 1024)], [jail('x', 1, 1025)])).toEqual([null]);
    expect(run([host('a', 4, 1024)], [jail('x', 1, 512), jail('y', 1, 513)])).toEqual(expect.arrayContaining([null]));
    // the jail one MB too large for the room left is refused
    expect(run([host('a', 4, 1024)], [jail('x', 1, 1000), jail('y', 1, 25)])).toEqual(['a', null]);
    expect(run([host('a', 4, 1024)], [jail('x', 1, 1000), jail('y', 1, 24)])).toEqual(['a', 'a']);
  });

  test.each(engines)('%s: cpu', (_engine, run) => {
    expect(run([host('a', 1, 4096)], [jail('x', 0.999, 64), jail('y', 0.001, 64)])).toEqual(['a', 'a']);
    expect(run([host('a', 1, 4096)], [jail('x', 1.001, 64)])).toEqual([null]);
    expect(run([host('a', 1, 4096)], [jail('x', 0.999, 64), jail('y', 0.002, 64)])).toEqual(['a', null]);
  });

  test('the refusal one MB short says how much is free, and a pinned jail is held to it too', () => {
    const p = new ClusterPacking([host('a', 4, 1024)]);
    p.place(jail('x', 1, 1000));
    expect(p.place(jail('p', 1, 25, { host: 'a' })).reason).toBe('pinned host "a" lacks memory (needs 25 MB, free 24 MB)');
    expect(p.place(jail('y', 1, 25)).reason).toBe('no host fits: 1 host lacks memory (needs 25 MB, free 24 MB)');
    expect(p.place(jail('z', 3.001, 24)).reason).toBe('no host fits: 1 host lacks cpu (needs 3.001 cores, free 3)');
    expect(p.place(jail('w', 3, 24)).host).toBe('a');
  });
});

describe('explain: each failing rule named with how many hosts it refused', () => {
  test('one host per rule, counts apart, the largest first and the earlier rule among equals', () => {
    const hosts = [
      host('d1', 8, 8192, { up: false }),
      host('r1', 8, 8192, { draining: true }),
      host('r2', 8, 8192, { draining: true }),
      ...['l1', 'l2', 'l3'].map((n) => host(n, 8, 8192, { labels: {} })),
      ...['m1', 'm2'].map((n) => host(n, 8, 256, { labels: { zone: 'eu' } })),
      ...['c1', 'c2'].map((n) => host(n, 0.5, 8192, { labels: { zone: 'eu' } })),
      host('g1', 8, 8192, { labels: { zone: 'eu' } }),
    ];
    const p = new ClusterPacking(hosts, [{ name: 'w0', host: 'g1', resources: { cpu: 0.1, memoryMB: 64 }, spreadGroup: 'web' }]);
    expect(p.place(jail('x', 1, 512, { labels: { zone: 'eu' }, spreadGroup: 'web', maxPerHost: 1 })).reason).toBe(
      'no host fits: 3 hosts lack label zone=eu, 2 are draining, 2 lack memory (needs 512 MB, most free 256 MB), 2 lack cpu (needs 1 cores, most free 0.5), 1 is down, 1 already holds 1 of spread group web (maxPerHost 1)',
    );
  });

  test('the same reason whatever order the hosts are listed in, from every engine', () => {
    const hosts = [host('b', 4, 4096, { labels: { zone: 'us' } }), host('a', 4, 4096, { labels: { disk: 'ssd' } })];
    const j = jail('x', 1, 64, { labels: { disk: 'ssd', zone: 'eu' } });
    // equal counts: the rule met first in host-name order (a lacks zone=eu) comes first
    const reason = 'no host fits: 1 host lacks label zone=eu, 1 lacks label disk=ssd';
    expect(new ClusterPacking(hosts).place(j).reason).toBe(reason);
    expect(new ClusterPacking([...hosts].reverse()).place(j).reason).toBe(reason);
    expect(plan([j], hosts).unplaced).toEqual([{ name: 'x', reason }]);
    expect(explain(hosts.map(emptyView), demandOf(j))).toBe(reason);
  });

  test('property: the counts of a refusal add up to the hosts, each part the hosts its checker refuses first', () => {
    fc.assert(
      fc.property(hostsArb, jailsArb, (hosts, jails) => {
        const p = new ClusterPacking(hosts);
        for (const j of jails.filter((x) => x.placement.host === undefined)) {
          const r = p.place(j);
          if (r.host !== null && hosts.length > 0) continue;
          if (hosts.length === 0) {
            expect(r.reason).toBe('no host fits: no host is known');
            continue;
          }
          const parts = r.reason!.replace(/^no host fits: /, '').split(/, (?=\d)/);
          const counts = parts.map((s) => Number(/^(\d+) /.exec(s)![1]));
          expect(counts.reduce((a, b) => a + b, 0)).toBe(hosts.length);
          expect([...counts].sort((a, b) => b - a)).toEqual(counts);
          const views = new Map(p.hosts().map((h) => [h.name, h]));
          const firstRefusals = new Map<string, number>();
          for (const h of hosts) {
            const v = views.get(h.name)!;
            const groupHere = j.placement.spreadGroup === undefined ? 0 : v.jails.filter((n) => jails.find((o) => o.name === n)!.placement.spreadGroup === j.placement.spreadGroup).length;
            const view: HostView = { ...emptyView(h), usedCpu: millicores(v.allocated.cpu), usedMem: v.allocated.memoryMB, groups: new Map(j.placement.spreadGroup ? [[j.placement.spreadGroup, groupHere]] : []) };
            const refusal = CONSTRAINTS.map((c) => c.check(view, demandOf(j))).find((x) => x !== null)!;
            expect(refusal).not.toBeUndefined();
            firstRefusals.set(refusal.constraint.name, (firstRefusals.get(refusal.constraint.name) ?? 0) + 1);
          }
          const words: Record<string, RegExp> = { 'host up': /down$/, 'not draining': /draining$/, labels: /lacks? label /, maxPerHost: /maxPerHost/, memory: /memory/, cpu: /cpu/ };
          for (const [name, n] of firstRefusals) {
            const named = parts.filter((s) => words[name]!.test(s)).reduce((a, s) => a + Number(/^(\d+) /.exec(s)![1]), 0);
            expect([name, named]).toEqual([name, n]);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

// hosts and jails cut to fit each other exactly: each host's capacity split into jails whose sizes
// add up to it, on cpu and memory, and sometimes one of them made a MB or a millicore larger
const exactArb = fc
  .array(
    fc.record({
      cpu: fc.integer({ min: 1, max: 4000 }),
      memoryMB: fc.integer({ min: 1, max: 4096 }),
      weights: fc.array(fc.tuple(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 10 })), { minLength: 1, maxLength: 6 }),
    }),
    { minLength: 1, maxLength: 4 },
  )
  .chain((hs) => {
    const hosts = hs.map((h, i): PackHost => ({ name: `h${i}`, up: true, draining: false, capacity: { cpu: h.cpu / 1000, memoryMB: h.memoryMB }, labels: {} }));
    const parts = hs.flatMap((h) => {
      const split = (cap: number, w: number[]) => {
        const total = w.reduce((a, b) => a + b, 0);
        const out = w.map((x) => Math.floor((cap * x) / total));
        out[out.length - 1]! += cap - out.reduce((a, b) => a + b, 0);
        return out;
      };
      const cpu = split(h.cpu, h.weights.map(([c]) => c));
      const mem = split(h.memoryMB, h.weights.map(([, m]) => m));
      return cpu.map((c, i) => ({ cpu: c, mem: mem[i]! }));
    });
    return fc.tuple(
      fc.constant(hosts),
      fc.shuffledSubarray(parts, { minLength: parts.length }),
      fc.option(fc.tuple(fc.nat({ max: parts.length - 1 }), fc.constantFrom<'cpu' | 'mem'>('cpu', 'mem')), { nil: undefined }),
    );
  })
  .map(([hosts, parts, bump]) => {
    const jails = parts.map((x, i): PackJail => {
      const more = bump && bump[0] === i ? 1 : 0;
      return jail(`j${String(i).padStart(2, '0')}`, (x.cpu + (bump?.[1] === 'cpu' ? more : 0)) / 1000, x.mem + (bump?.[1] === 'mem' ? more : 0));
    });
    return { hosts, jails, exact: bump === undefined };
  });

describe('packing properties at exact fits', () => {
  test('online and batch: full hosts are never one MB or one millicore over, and one host cut exactly takes all its jails', () => {
    fc.assert(
      fc.property(exactArb, strategyArb, ({ hosts, jails, exact }, strategy) => {
        const online = new ClusterPacking(hosts, [], strategy);
        const onlineWhere = new Map<string, string>();
        for (const j of jails) {
          const r = online.place(j);
          if (r.host) onlineWhere.set(j.name, r.host);
        }
        const batch = planBatch(jails, hosts, [], strategy);
        const batchWhere = new Map(batch.result.hosts.flatMap((h) => h.jails.map((n) => [n, h.host] as const)));
        for (const where of [onlineWhere, batchWhere]) {
          checkAssignment(hosts, jails, where);
          replayThroughCheckers(hosts, jails, where);
          if (exact && hosts.length === 1) expect(where.size).toBe(jails.length);
          if (!exact && hosts.length === 1) expect(where.size).toBeLessThan(jails.length);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('online, batch and plan agree on the hard rules', () => {
  test('property: every host a batch or the online packing places on passes each checker, and plan is the batch on empty hosts', () => {
    fc.assert(
      fc.property(hostsArb, jailsArb, strategyArb, (hosts, jails, strategy) => {
        const batch = planBatch(jails, hosts, [], strategy);
        expect(plan(jails, hosts, strategy)).toEqual(batch.result);
        const where = new Map([...batch.placements].flatMap(([n, r]) => (r.host ? [[n, r.host] as const] : [])));
        replayThroughCheckers(hosts, jails, where);
        const p = new ClusterPacking(hosts, [], strategy);
        const online = new Map(jails.flatMap((j) => {
          const r = p.place(j);
          return r.host ? [[j.name, r.host] as const] : [];
        }));
        replayThroughCheckers(hosts, jails, online);
        // a jail no empty host accepts is refused by both
        for (const j of jails) {
          if (hosts.some((h) => CONSTRAINTS.every((c) => c.check(emptyView(h), demandOf(j)) === null))) continue;
          expect([j.name, where.has(j.name), online.has(j.name)]).toEqual([j.name, false, false]);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('property: a batch around jails already placed never moves them and never puts a host over', () => {
    fc.assert(
      // one draw split in two, so that the jails of a spread group agree on maxPerHost across both
      fc.property(hostsArb, jailsArb, fc.nat(), strategyArb, (hosts, jails, cut, strategy) => {
        const k = jails.length === 0 ? 0 : cut % (jails.length + 1);
        const after = jails.slice(k);
        const p = new ClusterPacking(hosts, [], strategy);
        const old = jails.slice(0, k);
        const placed = old.flatMap((j) => {
          const r = p.place(j);
          return r.host ? [{ name: j.name, host: r.host, resources: j.resources, spreadGroup: j.placement.spreadGroup }] : [];
        });
        const batch = planBatch(after, hosts, placed, strategy);
        const where = new Map([...placed.map((x) => [x.name, x.host] as const), ...[...batch.placements].flatMap(([n, r]) => (r.host ? [[n, r.host] as const] : []))]);
        checkAssignment(hosts, [...old, ...after], where);
        replayThroughCheckers(hosts, [...old, ...after], where);
        expect(batch.placements.size).toBe(after.length);
      }),
      { numRuns: 300 },
    );
  });
});
