// Placement and host liveness: the scheduler's pure decisions. Same jails and hosts, same
// answer; a jail that cannot be placed says why; a host is up for exactly the TTL after its
// last heartbeat.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { placeJail, type HostView } from '../../services/scheduler/placement.js';
import { HostLiveness } from '../../services/scheduler/host-liveness.js';

const anywhere = { placement: {} };
const pinned = (host: string) => ({ placement: { host } });
const h = (name: string, jails: number, up = true): HostView => ({ name, up, jails });

describe('placeJail', () => {
  test('a pinned jail goes to its host when it is up, even if it is the busiest', () => {
    expect(placeJail(pinned('b'), [h('a', 0), h('b', 9), h('c', 1)])).toEqual({ host: 'b', reason: null });
  });

  test('a pinned jail on an unknown host is not placed, and the reason names the host', () => {
    const p = placeJail(pinned('ghost'), [h('a', 0), h('b', 0)]);
    expect(p.host).toBeNull();
    expect(p.reason).toContain('"ghost"');
    expect(p.reason).toContain('unknown');
    expect(p.reason).toContain('2 hosts');
  });

  test('a pinned jail on a down host is not placed elsewhere; the reason says it is down', () => {
    const p = placeJail(pinned('b'), [h('a', 0), h('b', 0, false)]);
    expect(p).toEqual({ host: null, reason: 'pinned host "b" is down' });
  });

  test('no host up: not placed, with a reason', () => {
    const p = placeJail(anywhere, [h('a', 0, false), h('b', 0, false)]);
    expect(p.host).toBeNull();
    expect(p.reason).toBe('no host is up (0 of 2)');
    expect(placeJail(anywhere, []).reason).toBe('no host is up (0 of 0)');
  });

  test('the up host with the fewest jails wins; a down host never does', () => {
    expect(placeJail(anywhere, [h('a', 3), h('b', 1), h('c', 2)]).host).toBe('b');
    expect(placeJail(anywhere, [h('a', 3), h('b', 0, false), h('c', 2)]).host).toBe('c');
  });

  test('ties go to the smallest name, whatever the order of the hosts', () => {
    const hosts = [h('m', 1), h('c', 1), h('x', 1), h('d', 2), h('b', 1, false)];
    expect(placeJail(anywhere, hosts).host).toBe('c');
    expect(placeJail(anywhere, [...hosts].reverse()).host).toBe('c');
    expect(placeJail(anywhere, [h('host-10', 0), h('host-2', 0)]).host).toBe('host-10');
  });

  test('the answer carries no reason when placed', () => {
    expect(placeJail(anywhere, [h('a', 0)])).toEqual({ host: 'a', reason: null });
  });

  const hostsArb = fc
    .uniqueArray(
      fc.record({
        name: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,8}$/),
        up: fc.boolean(),
        jails: fc.nat({ max: 6 }),
      }),
      { selector: (x) => x.name, maxLength: 12 },
    );

  test('property: the chosen host is up and has no more jails than any other up host', () => {
    fc.assert(
      fc.property(hostsArb, (hosts) => {
        const p = placeJail(anywhere, hosts);
        const live = hosts.filter((x) => x.up);
        if (live.length === 0) {
          expect(p.host).toBeNull();
          expect(p.reason).toMatch(/no host is up/);
          return;
        }
        expect(p.reason).toBeNull();
        const chosen = hosts.find((x) => x.name === p.host);
        expect(chosen?.up).toBe(true);
        for (const other of live) {
          expect(chosen!.jails).toBeLessThanOrEqual(other.jails);
          if (other.jails === chosen!.jails) expect(chosen!.name <= other.name).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  test('property: the answer does not depend on the order of the hosts', () => {
    fc.assert(
      fc.property(
        hostsArb.chain((hosts) => fc.tuple(fc.constant(hosts), fc.shuffledSubarray(hosts, { minLength: hosts.length }))),
        fc.option(fc.stringMatching(/^[a-z0-9]{1,3}$/), { nil: undefined }),
        ([hosts, shuffled], pin) => {
          const spec = { placement: pin === undefined ? {} : { host: pin } };
          expect(placeJail(spec, shuffled)).toEqual(placeJail(spec, hosts));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('property: a pinned jail lands on its host or nowhere', () => {
    fc.assert(
      fc.property(hostsArb, fc.stringMatching(/^[a-z0-9]{1,2}$/), (hosts, pin) => {
        const p = placeJail(pinned(pin), hosts);
        const target = hosts.find((x) => x.name === pin);
        if (target?.up) expect(p).toEqual({ host: pin, reason: null });
        else {
          expect(p.host).toBeNull();
          expect(p.reason).toContain(`"${pin}"`);
        }
      }),
      { numRuns: 300 },
    );
  });
});

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
