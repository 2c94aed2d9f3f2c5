// The scheduler's decisions, one rule at a time: decideJail and the move protocol's steps are pure,
// so each rule is a table row here (records in, actions out).
import { describe, expect, test } from '@jest/globals';
import { WIRE_VERSION, jailSpecSchema, type DesiredRecord, type PlacementRecord } from '../../contracts/index.js';
import { decideJail, destroyCommand, ensureCommand, jailsToMove, placementOf, placementUnchanged, publishedKey, settled, type Facts, type JailView } from '../../services/scheduler/decide.js';
import { abandoned, checkMove, confirmMove, copyVerdict, copyWaitMs, dropNewCopy, movedPlacement, newCopyCommand, noHost, oldCopyCommand, touched } from '../../services/scheduler/move.js';

const NOW = Date.parse('2026-12-02T03:00:00Z');
const spec = (extra: Record<string, unknown> = {}) => jailSpecSchema.parse({ name: 'j', command: ['/bin/sleep', '9'], ...extra });
const desired = (o: Partial<DesiredRecord> = {}, extra?: Record<string, unknown>): DesiredRecord => ({ v: WIRE_VERSION, spec: spec(extra), desired: 'running', generation: 3, updatedAt: 'x', ...o });
const placed = (host: string | null, generation = 3, reason: string | null = null): PlacementRecord => ({ v: WIRE_VERSION, host, generation, reason });
const view = (d?: DesiredRecord, p?: PlacementRecord, published?: string, revs = { d: 10, p: 20 }): JailView => ({
  name: 'j',
  desired: d ? { key: 'j', revision: revs.d, value: d } : undefined,
  placement: p ? { key: 'j', revision: revs.p, value: p } : undefined,
  published,
});
const facts = (o: { down?: string[]; warming?: boolean } = {}): Facts => ({ now: NOW, warming: o.warming ?? false, hostDown: (h) => (o.down ?? []).includes(h) });
const kinds = (v: JailView, f = facts()) => decideJail(v, f).map((a) => (a.kind === 'publish' ? `publish ${a.command.op}${a.command.op === 'ensure' ? `:${a.command.desired}` : ''} g${a.command.generation} r${a.command.revision} → ${a.host}` : a.kind));

describe('decideJail', () => {
  test('no desired record: nothing', () => {
    expect(decideJail(view(undefined, placed('h1')), facts())).toEqual([]);
  });

  test('an unreadable desired or placement record is reported, nothing else', () => {
    const v: JailView = { name: 'j', desired: { key: 'j', revision: 7, unreadable: 'spec: Required' }, placement: undefined, published: undefined };
    expect(decideJail(v, facts())).toEqual([{ kind: 'report-unreadable', jail: 'j', bucket: 'desired', revision: 7, reason: 'spec: Required' }]);
    const w: JailView = { ...view(desired()), placement: { key: 'j', revision: 8, unreadable: 'host: bad' } };
    expect(decideJail(w, facts())).toEqual([{ kind: 'report-unreadable', jail: 'j', bucket: 'placements', revision: 8, reason: 'host: bad' }]);
    expect(settled(w, facts())).toBe(true);
  });

  test('removed: its host destroys it at the desired generation and revision, and the placement goes', () => {
    expect(kinds(view(desired({ desired: 'removed' }), placed('h1')))).toEqual(['publish destroy g3 r10 → h1', 'delete-placement']);
    expect(decideJail(view(desired({ desired: 'removed' }), placed('h1')), facts())[1]).toEqual({ kind: 'delete-placement', jail: 'j', revision: 20 });
    // unplaced: only the placement goes; no placement: nothing
    expect(kinds(view(desired({ desired: 'removed' }), placed(null, 3, 'no host fits')))).toEqual(['delete-placement']);
    expect(kinds(view(desired({ desired: 'removed' })))).toEqual([]);
    // rm removes even an unreadable placement
    const v: JailView = { ...view(desired({ desired: 'removed' })), placement: { key: 'j', revision: 4, unreadable: 'x' } };
    expect(decideJail(v, facts())).toEqual([{ kind: 'delete-placement', jail: 'j', revision: 4 }]);
  });

  test('placed and settled: ensure once per generation, revision and host', () => {
    const v = view(desired(), placed('h1'));
    expect(kinds(v)).toEqual(['publish ensure:running g3 r10 → h1']);
    const [a] = decideJail(v, facts());
    expect(a).toMatchObject({ settles: publishedKey(3, 10, 'h1') });
    expect(decideJail(view(desired(), placed('h1'), '3/10@h1'), facts())).toEqual([]);
    expect(settled(view(desired(), placed('h1'), '3/10@h1'), facts())).toBe(true);
    expect(settled(view(desired(), placed('h1'), '3/9@h1'), facts())).toBe(false);
    expect(kinds(view(desired({ desired: 'stopped' }), placed('h1')))).toEqual(['publish ensure:stopped g3 r10 → h1']);
  });

  test('not placed: placed, unless the scheduler is still warming up', () => {
    expect(decideJail(view(desired()), facts())).toEqual([{ kind: 'place', jail: 'j', spec: desired().spec, generation: 3, previous: null }]);
    expect(decideJail(view(desired()), facts({ warming: true }))).toEqual([]);
    const unplaced = placed(null, 3, 'no host fits');
    expect(decideJail(view(desired(), unplaced), facts())).toEqual([{ kind: 'place', jail: 'j', spec: desired().spec, generation: 3, previous: { revision: 20, record: unplaced } }]);
  });

  test('placed at an older generation: the placement follows the desired generation', () => {
    expect(decideJail(view(desired({ generation: 4 }), placed('h1', 3)), facts())).toEqual([{ kind: 'write-placement', jail: 'j', record: placed('h1', 4), revision: 20 }]);
  });

  test('placed at a newer generation (a move stopped halfway): the desired generation is raised first', () => {
    const acts = decideJail(view(desired(), placed('h2', 4)), facts({ down: ['h2'] }));
    expect(acts).toEqual([{ kind: 'raise-generation', jail: 'j', record: { ...desired(), generation: 4, updatedAt: new Date(NOW).toISOString() }, revision: 10, why: 'finish-move' }]);
  });

  test('its host down: the generation goes up, then the old copy is told to go and the jail is placed anew', () => {
    const acts = decideJail(view(desired(), placed('h1')), facts({ down: ['h1'] }));
    expect(acts).toEqual([{ kind: 'raise-generation', jail: 'j', record: { ...desired(), generation: 4, updatedAt: new Date(NOW).toISOString() }, revision: 10, why: 'failover' }]);
    expect(kinds(view(desired({ generation: 4 }), placed('h1', 3)), facts({ down: ['h1'] }))).toEqual(['publish destroy g3 r10 → h1', 'place']);
    expect(settled(view(desired(), placed('h1'), '3/10@h1'), facts({ down: ['h1'] }))).toBe(false);
  });

  test('a pinned jail or one that may not move stays on its dead host', () => {
    expect(kinds(view(desired({}, { placement: { host: 'h1' } }), placed('h1')), facts({ down: ['h1'] }))).toEqual(['publish ensure:running g3 r10 → h1']);
    expect(kinds(view(desired({}, { failover: { reschedule: false } }), placed('h1')), facts({ down: ['h1'] }))).toEqual(['publish ensure:running g3 r10 → h1']);
  });

  test('pinned elsewhere than placed: the old copy goes and the jail is placed anew', () => {
    expect(kinds(view(desired({}, { placement: { host: 'h2' } }), placed('h1')))).toEqual(['publish destroy g3 r10 → h1', 'place']);
    expect(kinds(view(desired({}, { placement: { host: 'h2' } }), placed('h1')), facts({ warming: true }))).toEqual(['publish destroy g3 r10 → h1']);
  });

  test('placement records and commands', () => {
    expect(placementOf(5, { host: 'h1', reason: null })).toEqual(placed('h1', 5));
    expect(placementOf(5, { host: null, reason: 'why' })).toEqual(placed(null, 5, 'why'));
    expect(placementUnchanged({ record: placed(null, 5, 'why') }, placed(null, 5, 'why'))).toBe(true);
    expect(placementUnchanged({ record: placed(null, 4, 'why') }, placed(null, 5, 'why'))).toBe(false);
    expect(placementUnchanged({ record: placed(null, 5, 'other') }, placed(null, 5, 'why'))).toBe(false);
    expect(placementUnchanged({ record: placed('h1', 5) }, placed(null, 5, null))).toBe(false);
    expect(placementUnchanged(null, placed(null, 5, 'why'))).toBe(false);
    expect(placementUnchanged({ record: placed(null, 5, 'why') }, placed('h1', 5))).toBe(false);
    expect(ensureCommand('j', desired(), 10, NOW)).toEqual({ v: 1, op: 'ensure', jail: 'j', generation: 3, revision: 10, desired: 'running', spec: desired().spec, issuedAt: new Date(NOW).toISOString() });
    expect(destroyCommand('j', 2, 11, NOW)).toEqual({ v: 1, op: 'destroy', jail: 'j', generation: 2, revision: 11, issuedAt: new Date(NOW).toISOString() });
  });
});

describe('jailsToMove', () => {
  const drain = { host: 'h1', parallel: 2, jails: ['a', 'b', 'c', 'd'], moving: 0 };
  test('up to parallel, minus those moving, skipping busy and recently blocked ones', () => {
    expect(jailsToMove(drain, () => false, () => 0, NOW, false)).toEqual(['a', 'b']);
    expect(jailsToMove({ ...drain, moving: 1 }, () => false, () => 0, NOW, false)).toEqual(['a']);
    expect(jailsToMove({ ...drain, moving: 2 }, () => false, () => 0, NOW, false)).toEqual([]);
    expect(jailsToMove(drain, (j) => j === 'a', () => 0, NOW, false)).toEqual(['b', 'c']);
    expect(jailsToMove(drain, () => false, (j) => (j === 'b' ? NOW + 1 : NOW), NOW, false)).toEqual(['a', 'c']);
    expect(jailsToMove(drain, () => false, () => 0, NOW, true)).toEqual([]);
  });
});

describe('the move protocol', () => {
  const rec = (d: DesiredRecord, p: PlacementRecord) => ({ desired: { key: 'j', revision: 10, value: d }, placement: { key: 'j', revision: 20, value: p } });

  test('check: moves only a jail still on the host, at its generation, not pinned', () => {
    expect(checkMove('j', 'h1', rec(desired(), placed('h1')))).toEqual({ go: { jail: 'j', from: 'h1', desired: desired(), desiredRevision: 10, placementRevision: 20 } });
    expect(checkMove('j', 'h1', rec(desired(), placed('h2')))).toEqual({ done: null });
    expect(checkMove('j', 'h1', rec(desired({ desired: 'removed' }), placed('h1')))).toEqual({ done: null });
    expect(checkMove('j', 'h1', { desired: undefined, placement: undefined })).toEqual({ done: null });
    expect(checkMove('j', 'h1', rec(desired({ generation: 4 }), placed('h1', 3)))).toEqual({ done: { reason: null, retryMs: 500 } });
    expect(checkMove('j', 'h1', rec(desired({}, { placement: { host: 'h1' } }), placed('h1')))).toEqual({
      done: { reason: 'pinned to host "h1" (placement.host): remove the pin to let it move', retryMs: 10_000 },
    });
  });

  test('the steps build the records and commands of generation + 1', () => {
    const b = { jail: 'j', from: 'h1', desired: desired(), desiredRevision: 10, placementRevision: 20 };
    expect(movedPlacement('h2', b)).toEqual(placed('h2', 4));
    expect(touched(b, NOW)).toEqual({ ...desired(), updatedAt: new Date(NOW).toISOString() });
    expect(newCopyCommand(b, 11, NOW)).toMatchObject({ op: 'ensure', jail: 'j', generation: 4, revision: 11, desired: 'running' });
    expect(newCopyCommand({ ...b, desired: desired({ desired: 'stopped' }) }, 11, NOW)).toMatchObject({ desired: 'running' });
    expect(oldCopyCommand(b, 12, NOW)).toMatchObject({ op: 'destroy', generation: 3, revision: 12 });
    expect(dropNewCopy(b, 13, NOW)).toMatchObject({ op: 'destroy', generation: 4, revision: 13 });
    expect(noHost('full')).toEqual({ reason: 'full', retryMs: 2000 });
    expect(abandoned('why')).toEqual({ reason: 'why', retryMs: 30_000 });
  });

  test('confirm: only while the record is the one the move touched', () => {
    const b = { jail: 'j', from: 'h1', desired: desired(), desiredRevision: 10, placementRevision: 20 };
    expect(confirmMove(b, { key: 'j', revision: 11, value: desired() }, 11, NOW)).toEqual({ record: { ...desired(), generation: 4, updatedAt: new Date(NOW).toISOString() }, revision: 11 });
    expect(confirmMove(b, { key: 'j', revision: 12, value: desired() }, 11, NOW)).toEqual({ abandon: 'was changed meanwhile' });
    expect(confirmMove(b, undefined, 11, NOW)).toEqual({ abandon: 'was changed meanwhile' });
  });

  test('the new copy: running, failed with why, or nothing yet', () => {
    expect(copyVerdict({ generation: 4, state: 'running', error: null }, 4)).toBe(true);
    expect(copyVerdict({ generation: 3, state: 'running', error: null }, 4)).toBeUndefined();
    expect(copyVerdict({ generation: 4, state: 'mounted', error: null }, 4)).toBeUndefined();
    expect(copyVerdict({ generation: 4, state: 'failed', error: { step: 'start', message: 'no such file' } }, 4)).toBe('failed (start: no such file)');
    expect(copyVerdict({ generation: 4, state: 'failed', error: null }, 4)).toBe('failed (no reason given)');
    // a jail with a check: running is not enough, healthy is
    expect(copyVerdict({ generation: 4, state: 'running', error: null }, 4, true)).toBeUndefined();
    expect(copyVerdict({ generation: 4, state: 'running', error: null, health: 'starting' }, 4, true)).toBeUndefined();
    expect(copyVerdict({ generation: 4, state: 'running', error: null, health: 'unhealthy' }, 4, true)).toBeUndefined();
    expect(copyVerdict({ generation: 4, state: 'running', error: null, health: 'healthy' }, 4, true)).toBe(true);
    expect(copyVerdict({ generation: 3, state: 'running', error: null, health: 'healthy' }, 4, true)).toBeUndefined();
    expect(copyWaitMs({}, 120_000)).toBe(120_000);
    expect(copyWaitMs({ health: { tcp: { port: 1 }, intervalMs: 1000, timeoutMs: 100, failures: 3, graceMs: 30_000 } }, 120_000)).toBe(153_000);
  });
});
