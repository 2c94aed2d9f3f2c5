// What `jailfleet ps` and `jailfleet hosts` say when a host falls silent, a jail is being removed,
// or the status service has only just started: lost, removing, draining and drained, each at the
// exact moment it becomes true. The cluster view is pure, so the clock is a number here.
import { describe, expect, test } from '@jest/globals';
import type { Heartbeat, HostRecord, JailState, PlacementRecord, StateEvent } from '../../contracts/index.js';
import { ClusterView } from '../../services/status/cluster-view.js';

const TTL = 3000;
const AT = '2025-01-01T00:00:00.000Z';

function ev(jail: string, host: string, generation: number, seq: number, state: JailState): StateEvent {
  return { v: 1, host, jail, generation, seq, state, pid: state === 'running' ? 100 + seq : null, exitCode: null, restarts: 0, error: null, at: AT };
}
const placed = (host: string | null, generation = 1): PlacementRecord => ({ v: 1, host, generation, reason: host ? null : 'no host fits' });
const hb = (host: string, jails = 0): Heartbeat => ({
  v: 1,
  host,
  at: AT,
  startedAt: AT,
  capacity: { cpu: 4, memoryMB: 8192 },
  labels: { zone: 'eu' },
  allocated: { cpu: 1, memoryMB: 512 },
  driver: 'linux',
  jails: Array.from({ length: jails }, (_, i) => ({ name: `j${i}`, generation: 1, state: 'running' as const, pid: i + 1 })),
});
const drain = (draining = true): HostRecord => ({ v: 1, draining, parallel: 1, since: AT, blocked: [] });
const states = (v: ClusterView, now?: number) => v.ps({}, now).map((r) => [r.name, r.state]);

describe('a jail whose host falls silent', () => {
  test('is lost once its host has been silent longer than the TTL, and back when the host is heard again', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 1), 1000);
    v.applyEvent(ev('web', 'h1', 1, 1, 'running'));
    expect(states(v, 1000 + TTL)).toEqual([['web', 'running']]);
    expect(states(v, 1000 + TTL + 1)).toEqual([['web', 'lost']]);
    // the row keeps everything else it knew
    expect(v.ps({}, 1000 + TTL + 1)[0]).toMatchObject({ host: 'h1', pid: 101, generation: 1 });
    v.applyHeartbeat(hb('h1', 1), 9000);
    expect(states(v, 9000)).toEqual([['web', 'running']]);
  });

  test('without the clock, ps shows what the host last reported', () => {
    const v = new ClusterView(TTL);
    v.applyEvent(ev('web', 'h1', 1, 1, 'running'));
    expect(states(v)).toEqual([['web', 'running']]);
  });

  test('a host never heard since the status service started is given one TTL from the start', () => {
    const v = new ClusterView(TTL, 50_000);
    v.applyEvent(ev('web', 'h1', 1, 1, 'running'));
    v.applyPlacement('db', placed('h2'));
    expect(states(v, 50_000 + TTL)).toEqual([
      ['db', 'pending'],
      ['web', 'running'],
    ]);
    expect(states(v, 50_000 + TTL + 1)).toEqual([
      ['db', 'lost'],
      ['web', 'lost'],
    ]);
    expect(v.hostDown('h1', 50_000 + TTL)).toBe(false);
    expect(v.hostDown('h1', 50_000 + TTL + 1)).toBe(true);
  });

  test('a jail that could not be placed has no host to lose', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed(null));
    expect(states(v, 10 * TTL)).toEqual([['web', 'unplaced']]);
  });

  test('only the jails of the silent host are lost', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1'), 0);
    v.applyHeartbeat(hb('h2'), 5000);
    v.applyEvent(ev('a', 'h1', 1, 1, 'running'));
    v.applyEvent(ev('b', 'h2', 1, 1, 'running'));
    expect(states(v, 5000)).toEqual([
      ['a', 'lost'],
      ['b', 'running'],
    ]);
    expect(v.ps({ state: 'lost' }, 5000).map((r) => r.name)).toEqual(['a']);
  });
});

describe('a removed jail', () => {
  test('shows removing once the placements are known and its own is gone, until its host reports it destroyed', () => {
    const v = new ClusterView(TTL);
    v.applyPlacement('web', placed('h1'));
    v.applyEvent(ev('web', 'h1', 1, 1, 'running'));
    v.applyPlacement('web', null);
    // before the placement bucket has been read whole, a missing placement proves nothing
    expect(states(v)).toEqual([['web', 'running']]);
    v.placementsSynced = true;
    expect(states(v)).toEqual([['web', 'removing']]);
    expect(v.ps()[0]).toMatchObject({ host: 'h1', generation: 1 });
    v.applyEvent(ev('web', 'h1', 1, 2, 'destroyed'));
    expect(states(v)).toEqual([]);
  });

  test('stays removing, not lost, while its host is down: the removal is what the user asked for', () => {
    const v = new ClusterView(TTL);
    v.placementsSynced = true;
    v.applyHeartbeat(hb('h1', 1), 0);
    v.applyEvent(ev('web', 'h1', 1, 1, 'running'));
    expect(states(v, 10 * TTL)).toEqual([['web', 'removing']]);
  });
});

describe('the hosts list', () => {
  test('a host shows what its last heartbeat offered, carried and reserved', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 2), 1234);
    expect(v.hosts(1234)).toEqual([
      {
        host: 'h1',
        status: 'up',
        jails: 2,
        lastSeen: new Date(1234).toISOString(),
        capacity: { cpu: 4, memoryMB: 8192 },
        labels: { zone: 'eu' },
        allocated: { cpu: 1, memoryMB: 512 },
      },
    ]);
  });

  test('a draining host whose agent holds nothing is still draining while a placement names it', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 0), 0);
    v.applyHostRecord('h1', drain());
    v.applyPlacement('web', placed('h1'));
    v.applyPlacement('db', placed('h1'));
    expect(v.hosts(0)[0]!.status).toBe('draining');
    v.applyPlacement('web', placed('h2'));
    expect(v.hosts(0)[0]!.status).toBe('draining');
    v.applyPlacement('db', placed(null));
    expect(v.hosts(0)[0]!.status).toBe('drained');
  });

  test('placements on other hosts do not keep a drained host draining', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 0), 0);
    v.applyHeartbeat(hb('h2', 3), 0);
    v.applyPlacement('web', placed('h2'));
    v.applyHostRecord('h1', drain());
    expect(v.hosts(0).map((h) => [h.host, h.status])).toEqual([
      ['h1', 'drained'],
      ['h2', 'up'],
    ]);
  });

  test('a host record that is not draining is an ordinary host, without drain details', () => {
    const v = new ClusterView(TTL);
    v.applyHeartbeat(hb('h1', 0), 0);
    v.applyHostRecord('h1', drain(false));
    expect(v.hosts(0)[0]!.status).toBe('up');
    expect(v.hosts(0)[0]).not.toHaveProperty('drain');
  });
});
