// The dashboard's pure parts: what the live feed sends after a change (and nothing when nothing
// changed), which rows the table keeps and in which order, the placement history read from a
// jail's events, and the --http-addr flag.
import { describe, expect, it } from '@jest/globals';
import type { HostRow, PsRow, StateEvent } from '../../contracts/index.js';
import { httpAddrSchema } from '../../services/cli/flags.js';
import { placementHistory } from '../../services/status/jail-detail.js';
import { countByState, defaultQuery, selectRows, type JailRow } from '../../services/status/page/jail-table.js';
import { ViewChangeTracker } from '../../services/status/view-changes.js';

const row = (name: string, over: Partial<PsRow> = {}): PsRow => ({ name, host: 'host-1', state: 'running', generation: 1, pid: 10, since: '2026-01-01T00:00:00Z', exitCode: null, restarts: 0, error: null, ...over });
const host = (name: string, over: Partial<HostRow> = {}): HostRow => ({ host: name, status: 'up', jails: 1, lastSeen: new Date().toISOString(), ...over });

describe('the live feed sends what changed, once per look', () => {
  it('sends every row first, then only the rows that changed, the names gone, and the hosts when they changed', () => {
    const t = new ViewChangeTracker();
    expect(t.next([row('a'), row('b')], [host('host-1')])).toEqual({ jails: [row('a'), row('b')], removed: [], hosts: [host('host-1')].map((h) => ({ ...h, lastSeen: expect.any(String) })) });
    // a heartbeat only moves lastSeen: no change
    expect(t.next([row('a'), row('b')], [host('host-1', { lastSeen: '2030-01-01T00:00:00Z' })])).toBeUndefined();
    const changes = t.next([row('a', { state: 'stopped', pid: null }), row('c')], [host('host-1', { status: 'down' })]);
    expect(changes?.jails.map((r) => [r.name, r.state])).toEqual([['a', 'stopped'], ['c', 'running']]);
    expect(changes?.removed).toEqual(['b']);
    expect(changes?.hosts?.[0]?.status).toBe('down');
    expect(t.snapshot().jails.map((r) => r.name).sort()).toEqual(['a', 'c']);
    expect(JSON.parse(t.snapshotJson())).toEqual(JSON.parse(JSON.stringify(t.snapshot())));
  });

  it('folds a burst of 1,000 changes into one message', () => {
    const t = new ViewChangeTracker();
    const rows = Array.from({ length: 1000 }, (_, i) => row(`j-${i}`));
    t.next(rows, []);
    const after = rows.map((r, i) => ({ ...r, restarts: i % 3 === 0 ? 1 : 0 }));
    expect(t.next(after, [])?.jails).toHaveLength(334);
    expect(t.next(after, [])).toBeUndefined();
  });

  it('reports the hosts alone when the rows are known unchanged', () => {
    const t = new ViewChangeTracker();
    t.next([row('a')], [host('host-1')]);
    expect(t.nextHosts([host('host-1')])).toBeUndefined();
    expect(t.nextHosts([host('host-1', { jails: 2 })])).toEqual({ jails: [], removed: [], hosts: [host('host-1', { jails: 2, lastSeen: expect.any(String) as unknown as string })] });
  });
});

describe('the jail table filters, searches and sorts', () => {
  const rows: JailRow[] = [
    row('web-1', { host: 'host-1' }),
    row('web-2', { host: 'host-2', state: 'failed', error: { step: 'start', message: 'exec: no such file' }, restarts: 4 }),
    row('db-1', { host: 'host-2', state: 'stopped', restarts: 1 }),
    { ...row('cache-1', { host: 'host-1' }), health: 'unhealthy', usage: { cpuSeconds: 3, memoryBytes: 1 << 20 } },
  ];
  const names = (q: Partial<ReturnType<typeof defaultQuery>>) => selectRows(rows, { ...defaultQuery(), ...q }).map((r) => r.name);

  it('keeps every row by name by default', () => expect(names({})).toEqual(['cache-1', 'db-1', 'web-1', 'web-2']));
  it('filters by state and by host', () => {
    expect(names({ state: 'failed' })).toEqual(['web-2']);
    expect(names({ host: 'host-2' })).toEqual(['db-1', 'web-2']);
  });
  it('searches every word in name, host, state, health and error, in any case', () => {
    expect(names({ search: 'WEB' })).toEqual(['web-1', 'web-2']);
    expect(names({ search: 'no such' })).toEqual(['web-2']);
    expect(names({ search: 'unhealthy' })).toEqual(['cache-1']);
    expect(names({ search: 'web host-2' })).toEqual(['web-2']);
    expect(names({ search: 'nothing-like-it' })).toEqual([]);
  });
  it('sorts by a column either way, by name within equal values; rows without usage last when ascending', () => {
    expect(names({ sort: 'restarts', desc: true })).toEqual(['web-2', 'db-1', 'cache-1', 'web-1']);
    expect(names({ sort: 'cpu', desc: true })[0]).toBe('cache-1');
  });
  it('counts jails by state, in the lifecycle order', () => expect(countByState(rows)).toEqual([['running', 2], ['stopped', 1], ['failed', 1]]));
  it('filters 10,000 rows quickly enough for every keystroke', () => {
    const many = Array.from({ length: 10_000 }, (_, i) => row(`svc-${i}`, { host: `host-${i % 20}` }));
    selectRows(many, { ...defaultQuery(), search: 'svc' });
    const t0 = performance.now();
    expect(selectRows(many, { ...defaultQuery(), search: 'svc-99' })).toHaveLength(111);
    expect(performance.now() - t0).toBeLessThan(100);
  });
});

describe('the placement history of a jail page', () => {
  const ev = (host: string, generation: number, seq: number, state: StateEvent['state'], at: string): StateEvent => ({ v: 1, host, jail: 'j', generation, seq, state, pid: null, exitCode: null, restarts: 0, error: null, at });
  it('makes one stretch per host and generation, ended by its destroyed event or else where the next began', () => {
    expect(
      placementHistory([
        ev('host-1', 1, 1, 'prepared', 't1'),
        ev('host-1', 1, 2, 'running', 't2'),
        ev('host-2', 2, 1, 'running', 't3'),
        ev('host-1', 1, 3, 'destroyed', 't4'),
      ]),
    ).toEqual([
      { generation: 1, host: 'host-1', from: 't1', to: 't4', lastState: 'destroyed' },
      { generation: 2, host: 'host-2', from: 't3', to: null, lastState: 'running' },
    ]);
    // a host that died never said: its stretch ends where the failover's began
    expect(placementHistory([ev('host-1', 1, 1, 'running', 't1'), ev('host-2', 2, 1, 'running', 't2')])[0]!.to).toBe('t2');
  });
});

describe('--http-addr', () => {
  it('takes HOST:PORT, an IPv6 host in brackets, and port 0', () => {
    expect(httpAddrSchema.parse('127.0.0.1:4280')).toEqual({ host: '127.0.0.1', port: 4280 });
    expect(httpAddrSchema.parse('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(httpAddrSchema.parse('localhost:8080')).toEqual({ host: 'localhost', port: 8080 });
  });
  it('refuses a missing or too large port', () => {
    expect(httpAddrSchema.safeParse('127.0.0.1').success).toBe(false);
    expect(httpAddrSchema.safeParse('127.0.0.1:70000').success).toBe(false);
    expect(httpAddrSchema.safeParse('http://x:1').success).toBe(false);
  });
});
