// The status service's cluster view, fed by hand: what `jailfleet ps` and `jailfleet hosts`
// show when events arrive late, twice or out of order, and before any event at all.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import type { Heartbeat, JailState, PlacementRecord, StateEvent } from '../../contracts/index.js';
import { ClusterView, namePattern } from '../../services/status/cluster-view.js';

const TTL = 3000;
const t = (s: number) => new Date(Date.UTC(2025, 0, 1, 0, 0, s)).toISOString();

function ev(jail: string, generation: number, seq: number, state: JailState, extra: Partial<StateEvent> = {}): StateEvent {
  return {
    v: 1,
    host: 'h1',
    jail,
    generation,
    seq,
    state,
    pid: state === 'running' ? 100 + seq : null,
    exitCode: null,
    restarts: 0,
    error: null,
    at: t(seq),
    ...extra,
  };
}
const placed = (host: string | null, generation: number, reason: string | null = null): PlacementRecord => ({ v: 1, host, generation, reason });
const hb = (host: string, jails = 0): Heartbeat => ({
  v: 1,
  host,
  at: t(0),
  startedAt: t(0),
  capacity: { cpu: 2, memoryMB: 4096 },
  labels: {},
  allocated: { cpu: 0, memoryMB: 0 },
  driver: 'linux',
  jails: Array.from({ length: jails }, (_, i) => ({ name: `j${i}`, generation: 1, state: 'running' as const, pid: i + 1 })),
});
const row = (v: ClusterView, name: string) => v.ps().find((r) => r.name === name);

describe('ClusterView events', () => {
  test('an event becomes a ps row with every field', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 1, 'running', { restarts: 2, at: t(5) }));
    expect(v.ps()).toEqual([
      { name: 'web', host: 'h1', state: 'running', generation: 1, pid: 101, since: t(5), exitCode: null, restarts: 2, error: null },
    ]);
  });

  test('the newest generation wins, whatever arrives later', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 2, 1, 'running', { host: 'h2' }));
    v.applyEvent(ev('web', 1, 9, 'stopped', { host: 'h1' }));
    expect(row(v, 'web')).toMatchObject({ generation: 2, host: 'h2', state: 'running' });
    v.applyEvent(ev('web', 3, 1, 'prepared', { host: 'h3' }));
    expect(row(v, 'web')).toMatchObject({ generation: 3, host: 'h3', state: 'prepared' });
  });

  test('within a generation the highest seq wins, regardless of arrival order', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 3, 'running'));
    v.applyEvent(ev('web', 1, 1, 'prepared'));
    v.applyEvent(ev('web', 1, 2, 'mounted'));
    expect(row(v, 'web')).toMatchObject({ state: 'running', pid: 103 });
    v.applyEvent(ev('web', 1, 4, 'stopped', { exitCode: 0 }));
    expect(row(v, 'web')).toMatchObject({ state: 'stopped', exitCode: 0 });
    // a redelivered event of the same seq changes nothing
    v.applyEvent(ev('web', 1, 4, 'failed'));
    expect(row(v, 'web')!.state).toBe('stopped');
  });

  test('property: any arrival order of one generation ends at its highest seq', () => {
    const states: JailState[] = ['pending', 'prepared', 'mounted', 'running', 'stopped', 'failed'];
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 10 }).chain((seqs) =>
          fc.tuple(fc.constant(seqs), fc.shuffledSubarray(seqs, { minLength: seqs.length })),
        ),
        ([seqs, order]) => {
          const v = new ClusterView(TTL);
          for (const s of order) v.applyEvent(ev('web', 1, s, states[s % states.length]));
          const max = Math.max(...seqs);
          expect(row(v, 'web')!.state).toBe(states[max % states.length]);
          expect(v.ps()).toHaveLength(1);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('destroyed removes the row; older events arriving later do not bring it back', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 2, 3, 'running'));
    v.applyEvent(ev('web', 2, 5, 'destroyed'));
    expect(v.ps()).toEqual([]);
    v.applyEvent(ev('web', 2, 4, 'stopped')); // same generation, late
    v.applyEvent(ev('web', 2, 9, 'running')); // same generation, even a higher seq
    v.applyEvent(ev('web', 1, 7, 'running')); // an older generation from another host
    expect(v.ps()).toEqual([]);
  });

  test('a newer generation after destroyed does show', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 2, 'destroyed'));
    v.applyEvent(ev('web', 2, 1, 'prepared', { host: 'h2' }));
    expect(v.ps()).toEqual([expect.objectContaining({ name: 'web', generation: 2, host: 'h2', state: 'prepared' })]);
  });

  test('destroyed of an older generation does not remove the current one', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 2, 1, 'running', { host: 'h2' }));
    v.applyEvent(ev('web', 1, 8, 'destroyed', { host: 'h1' }));
    expect(row(v, 'web')).toMatchObject({ generation: 2, state: 'running' });
  });

  test('destroyed of one jail leaves the others', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('a', 1, 1, 'running'));
    v.applyEvent(ev('b', 1, 1, 'running'));
    v.applyEvent(ev('a', 1, 2, 'destroyed'));
    expect(v.ps().map((r) => r.name)).toEqual(['b']);
  });

  test('pid is null unless running, even if an event carries one', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 1, 'running', { pid: 4242 }));
    expect(row(v, 'web')!.pid).toBe(4242);
    v.applyEvent(ev('web', 1, 2, 'stopped', { pid: 4242, exitCode: 143 }));
    expect(row(v, 'web')).toMatchObject({ pid: null, exitCode: 143 });
    v.applyEvent(ev('web', 1, 3, 'failed', { pid: 4242, error: { step: 'start', message: 'ENOENT' } }));
    expect(row(v, 'web')).toMatchObject({ pid: null, state: 'failed', error: { step: 'start', message: 'ENOENT' } });
  });

  test('since is when the state was entered, kept across repeated events of that state', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 1, 'running', { at: t(10) }));
    v.applyEvent(ev('web', 1, 2, 'running', { at: t(20), restarts: 1, pid: 7 }));
    expect(row(v, 'web')).toMatchObject({ since: t(10), restarts: 1, pid: 7 });
    v.applyEvent(ev('web', 1, 3, 'stopped', { at: t(30) }));
    expect(row(v, 'web')!.since).toBe(t(30));
    v.applyEvent(ev('web', 1, 4, 'running', { at: t(40) }));
    expect(row(v, 'web')!.since).toBe(t(40));
  });

  test('a new generation in the same state starts a new since', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 1, 'running', { at: t(10) }));
    v.applyEvent(ev('web', 2, 1, 'running', { at: t(50) }));
    expect(row(v, 'web')!.since).toBe(t(50));
  });

  test('a stale event does not reset since', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 2, 'running', { at: t(10) }));
    v.applyEvent(ev('web', 1, 1, 'mounted', { at: t(5) }));
    v.applyEvent(ev('web', 1, 3, 'running', { at: t(20) }));
    expect(row(v, 'web')!.since).toBe(t(10));
  });

  test('no internal bookkeeping leaks into a row', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 1, 'running'));
    expect(Object.keys(row(v, 'web')!).sort()).toEqual(
      ['error', 'exitCode', 'generation', 'host', 'name', 'pid', 'restarts', 'since', 'state'].sort(),
    );
  });
});

describe('ClusterView during a move (drain)', () => {
  test("the old copy is shown running until the new one runs, then the new one, and the old one's end is no news", () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('a', placed('h1', 1));
    v.applyEvent(ev('a', 1, 2, 'running', { host: 'h1', pid: 10 }));
    v.applyEvent(ev('a', 2, 1, 'prepared', { host: 'h2' }));
    v.applyEvent(ev('a', 2, 2, 'mounted', { host: 'h2' }));
    expect(v.ps()).toMatchObject([{ name: 'a', host: 'h1', state: 'running', generation: 1, pid: 10 }]);
    v.applyEvent(ev('a', 2, 3, 'running', { host: 'h2', pid: 20 }));
    expect(v.ps()).toMatchObject([{ name: 'a', host: 'h2', state: 'running', generation: 2, pid: 20 }]);
    v.applyPlacement('a', placed('h2', 2));
    v.applyEvent(ev('a', 1, 3, 'stopped', { host: 'h1' }));
    v.applyEvent(ev('a', 1, 4, 'destroyed', { host: 'h1' }));
    expect(v.ps()).toMatchObject([{ name: 'a', host: 'h2', state: 'running', generation: 2 }]);
  });

  test('once the placement names the new generation, its state is shown even before it runs (failover)', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('a', 1, 2, 'running', { host: 'h1' }));
    v.applyPlacement('a', placed('h2', 2));
    v.applyEvent(ev('a', 2, 1, 'prepared', { host: 'h2' }));
    expect(v.ps()).toMatchObject([{ name: 'a', host: 'h2', state: 'prepared', generation: 2 }]);
  });

  test('a move given up (the new copy destroyed) leaves the old copy as the jail', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('a', placed('h1', 1));
    v.applyEvent(ev('a', 1, 2, 'running', { host: 'h1', pid: 10 }));
    v.applyEvent(ev('a', 2, 1, 'failed', { host: 'h2' }));
    v.applyEvent(ev('a', 2, 2, 'destroyed', { host: 'h2' }));
    expect(v.ps()).toMatchObject([{ name: 'a', host: 'h1', state: 'running', generation: 1, pid: 10 }]);
  });
});

describe('ClusterView placements', () => {
  test('a placed jail with no event yet is pending on its host', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed('h2', 1));
    expect(v.ps()).toEqual([
      { name: 'web', host: 'h2', state: 'pending', generation: 1, pid: null, since: '', exitCode: null, restarts: 0, error: null },
    ]);
  });

  test('a jail that could not be placed is unplaced, with the reason as a place error', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed(null, 1, 'no host is up (0 of 3)'));
    expect(v.ps()).toEqual([
      expect.objectContaining({ name: 'web', host: null, state: 'unplaced', error: { step: 'place', message: 'no host is up (0 of 3)' } }),
    ]);
  });

  test('an unplaced jail without a reason still says it is not placed', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed(null, 1, null));
    expect(row(v, 'web')!.error).toEqual({ step: 'place', message: 'not placed' });
  });

  test('an event of the placed generation replaces the pending row', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed('h1', 1));
    v.applyEvent(ev('web', 1, 1, 'running'));
    expect(v.ps()).toEqual([expect.objectContaining({ state: 'running', generation: 1 })]);
  });

  test('a newer-generation placement over an older event row shows pending on the new host', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 4, 'running', { host: 'h1' }));
    v.applyPlacement('web', placed('h2', 2));
    expect(v.ps()).toEqual([expect.objectContaining({ name: 'web', host: 'h2', state: 'pending', generation: 2, pid: null })]);
    v.applyEvent(ev('web', 2, 1, 'running', { host: 'h2' }));
    expect(v.ps()).toEqual([expect.objectContaining({ host: 'h2', state: 'running', generation: 2 })]);
  });

  test('a newer generation that cannot be placed shows unplaced over the old row', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 1, 4, 'running', { host: 'h1' }));
    v.applyPlacement('web', placed(null, 2, 'pinned host "h9" is unknown'));
    expect(v.ps()).toEqual([expect.objectContaining({ state: 'unplaced', host: null, generation: 2 })]);
  });

  test('an older placement does not hide a newer event row', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 3, 1, 'running'));
    v.applyPlacement('web', placed('h9', 2));
    expect(v.ps()).toEqual([expect.objectContaining({ state: 'running', generation: 3, host: 'h1' })]);
  });

  test('the placement of a destroyed generation does not resurrect the jail; a newer one does', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed('h1', 1));
    v.applyEvent(ev('web', 1, 1, 'running'));
    v.applyEvent(ev('web', 1, 2, 'destroyed'));
    expect(v.ps()).toEqual([]);
    v.applyPlacement('web', placed('h2', 2));
    expect(v.ps()).toEqual([expect.objectContaining({ state: 'pending', host: 'h2', generation: 2 })]);
  });

  test('a removed placement removes a pending row', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed('h1', 1));
    v.applyPlacement('web', null);
    expect(v.ps()).toEqual([]);
  });

  test('ps lists each jail once', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('a', placed('h1', 1));
    v.applyEvent(ev('a', 1, 1, 'running'));
    v.applyPlacement('b', placed('h1', 2));
    v.applyEvent(ev('b', 1, 1, 'running'));
    v.applyPlacement('c', placed('h1', 1));
    expect(v.ps().map((r) => r.name)).toEqual(['a', 'b', 'c']);
  });
});

describe('ps filters and order', () => {
  const view = () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('zeta', 1, 1, 'running', { host: 'h1' }));
    v.applyEvent(ev('alpha', 1, 1, 'stopped', { host: 'h2' }));
    v.applyEvent(ev('mid', 1, 1, 'running', { host: 'h2' }));
    v.applyEvent(ev('beta', 1, 1, 'failed', { host: 'h1' }));
    v.applyPlacement('gamma', placed('h2', 1));
    v.applyPlacement('delta', placed(null, 1, 'no host is up (0 of 0)'));
    return v;
  };

  test('rows are sorted by name', () => {
    expect(view().ps().map((r) => r.name)).toEqual(['alpha', 'beta', 'delta', 'gamma', 'mid', 'zeta']);
  });

  test('by host', () => {
    expect(view().ps({ host: 'h2' }).map((r) => r.name)).toEqual(['alpha', 'gamma', 'mid']);
    expect(view().ps({ host: 'h1' }).map((r) => r.name)).toEqual(['beta', 'zeta']);
    expect(view().ps({ host: 'nowhere' })).toEqual([]);
  });

  test('by state, including the placement states', () => {
    expect(view().ps({ state: 'running' }).map((r) => r.name)).toEqual(['mid', 'zeta']);
    expect(view().ps({ state: 'pending' }).map((r) => r.name)).toEqual(['gamma']);
    expect(view().ps({ state: 'unplaced' }).map((r) => r.name)).toEqual(['delta']);
  });

  test('by host and state together', () => {
    expect(view().ps({ host: 'h2', state: 'running' }).map((r) => r.name)).toEqual(['mid']);
    expect(view().ps({ host: 'h1', state: 'stopped' })).toEqual([]);
  });

  test('an empty filter is no filter', () => {
    expect(view().ps({})).toEqual(view().ps());
    expect(view().ps()).toHaveLength(6);
  });
});

describe('hosts', () => {
  const fromHb = { capacity: { cpu: 2, memoryMB: 4096 }, labels: {}, allocated: { cpu: 0, memoryMB: 0 } };
  test('a host is up until exactly the TTL after its last heartbeat, then down', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 2), 10_000);
    expect(v.hosts(10_000 + TTL)).toEqual([{ host: 'h1', status: 'up', jails: 2, lastSeen: new Date(10_000).toISOString(), ...fromHb }]);
    expect(v.hosts(10_000 + TTL + 1)).toEqual([{ host: 'h1', status: 'down', jails: 2, lastSeen: new Date(10_000).toISOString(), ...fromHb }]);
  });

  test('a later heartbeat brings a host back and updates its jail count', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 2), 0);
    expect(v.hosts(TTL + 1)[0].status).toBe('down');
    v.applyHeartbeat(hb('h1', 5), TTL + 100);
    expect(v.hosts(TTL + 100)).toEqual([{ host: 'h1', status: 'up', jails: 5, lastSeen: new Date(TTL + 100).toISOString(), ...fromHb }]);
  });

  test('hosts are listed by name, each on its own clock', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h3'), 0);
    v.applyHeartbeat(hb('h1'), 5000);
    v.applyHeartbeat(hb('h2'), 5000);
    expect(v.hosts(5000).map((x) => [x.host, x.status])).toEqual([
      ['h1', 'up'],
      ['h2', 'up'],
      ['h3', 'down'],
    ]);
  });

  test('no heartbeat, no host', () => {
    expect(new ClusterView(TTL).hosts(0)).toEqual([]);
  });

  test('a draining host is drained once no placement names it and its agent holds nothing; down wins; undrain ends it', () => {
    const v = new ClusterView(TTL);
    const place = (host: string): PlacementRecord => ({ v: 1, host, generation: 1, reason: null });
    const drain = { v: 1 as const, draining: true, parallel: 2, since: '2025-01-01T00:00:00.000Z', blocked: [{ name: 'a', reason: 'no host fits' }] };
    v.applyPlacement('a', place('h1'));
    v.applyHeartbeat(hb('h1', 1), 0);
    v.applyHostRecord('h1', drain);
    expect(v.hosts(0)[0]).toMatchObject({ status: 'draining', drain: { parallel: 2, since: drain.since, blocked: drain.blocked } });
    // placed elsewhere, but the old copy still held: still draining
    v.applyPlacement('a', place('h2'));
    expect(v.hosts(0)[0]!.status).toBe('draining');
    v.applyHeartbeat(hb('h1', 0), 10);
    expect(v.hosts(10)[0]!.status).toBe('drained');
    expect(v.hosts(10 + TTL + 1)[0]!.status).toBe('down');
    v.applyHostRecord('h1', null);
    expect(v.hosts(10)[0]).toEqual({ host: 'h1', status: 'up', jails: 0, lastSeen: new Date(10).toISOString(), ...fromHb });
  });
});

describe('ps filters', () => {
  test('--name: * any run of characters, ? one, everything else literal; combined with --host and --state', () => {
    const v = new ClusterView(TTL, 0);
    for (const [jail, host, state] of [['web-1', 'h1', 'running'], ['web-12', 'h2', 'running'], ['web-2', 'h1', 'stopped'], ['db-1', 'h1', 'running'], ['webx1', 'h1', 'running']] as const)
      v.applyEvent(ev(jail, 1, 1, state, { host }));
    const names = (f: Parameters<ClusterView['ps']>[0]) => v.ps(f).map((r) => r.name);
    expect(names({ name: 'web-*' })).toEqual(['web-1', 'web-12', 'web-2']);
    expect(names({ name: 'web-?' })).toEqual(['web-1', 'web-2']);
    expect(names({ name: '*-1' })).toEqual(['db-1', 'web-1']);
    expect(names({ name: 'web-1' })).toEqual(['web-1']);
    expect(names({ name: 'web' })).toEqual([]);
    expect(names({ name: 'web-*', host: 'h1' })).toEqual(['web-1', 'web-2']);
    expect(names({ name: 'web-*', state: 'running' })).toEqual(['web-1', 'web-12']);
  });

  test('a pattern is never a regular expression: the characters of one match only themselves', () => {
    expect(namePattern('a.b').test('axb')).toBe(false);
    expect(namePattern('a-b').test('a-b')).toBe(true);
    expect(namePattern('*').test('anything-at-all')).toBe(true);
    expect(namePattern('a?c').test('ac')).toBe(false);
  });
});
