// Health as `jailfleet ps` shows it: the status view takes it from a running jail's events and
// drops it when the jail stops; the table has a HEALTH column only when some jail has a check.
import { describe, expect, test } from '@jest/globals';
import type { JailState, PsRow, StateEvent } from '../../contracts/index.js';
import { ClusterView } from '../../services/status/cluster-view.js';
import { psJson, psTable } from '../../services/cli/output.js';

const ev = (seq: number, state: JailState, extra: Partial<StateEvent> = {}): StateEvent => ({
  v: 1, host: 'h1', jail: 'web', generation: 1, seq, state, pid: state === 'running' ? 100 + seq : null, exitCode: null, restarts: 0, error: null,
  at: new Date(Date.UTC(2025, 0, 1, 0, 0, seq)).toISOString(), ...extra,
});
const rowOf = (v: ClusterView) => v.ps().find((r) => r.name === 'web')!;

describe('the status view carries health', () => {
  test('starting, healthy, the restart and why, starting again with the reason, healthy', () => {
    const v = new ClusterView(3000);
    v.applyEvent(ev(1, 'running', { health: 'starting' }));
    expect(rowOf(v)).toMatchObject({ state: 'running', health: 'starting' });
    expect(rowOf(v).healthReason).toBeUndefined();
    v.applyEvent(ev(2, 'running', { health: 'healthy' }));
    expect(rowOf(v)).toMatchObject({ health: 'healthy' });
    const why = 'health check failed 3 times in a row: GET http://127.0.0.1:80/: HTTP 500';
    v.applyEvent(ev(3, 'running', { health: 'unhealthy', healthReason: why }));
    expect(rowOf(v)).toMatchObject({ health: 'unhealthy', healthReason: why });
    // stopped for it: no health (nothing runs), the reason is the error
    v.applyEvent(ev(4, 'stopped', { exitCode: 143, restarts: 1, error: { step: 'run', message: why } }));
    expect(rowOf(v).health).toBeUndefined();
    expect(rowOf(v).healthReason).toBeUndefined();
    expect(rowOf(v).error).toEqual({ step: 'run', message: why });
    v.applyEvent(ev(5, 'running', { restarts: 1, health: 'starting', healthReason: why }));
    expect(rowOf(v)).toMatchObject({ health: 'starting', healthReason: why, restarts: 1, error: null });
    v.applyEvent(ev(6, 'running', { restarts: 1, health: 'healthy' }));
    expect(rowOf(v)).toMatchObject({ health: 'healthy', restarts: 1 });
    expect(rowOf(v).healthReason).toBeUndefined();
  });
});

describe('ps prints health', () => {
  const base: PsRow = { name: 'web', host: 'h1', state: 'running', generation: 1, pid: 7, since: '', exitCode: null, restarts: 0, error: null };
  test('no HEALTH column when no jail has a check (the table is what it was)', () => {
    expect(psTable([base]).split('\n')[0]).toMatch(/^NAME\s+HOST\s+STATE\s+GEN\s+PID\s+AGE\s+INFO$/);
    expect(psJson([base])[0]).not.toHaveProperty('health');
  });
  test('a HEALTH column when one has, "-" for the others; the reason in INFO', () => {
    const lines = psTable([
      { ...base, health: 'starting', restarts: 1, healthReason: 'health check failed 2 times in a row: tcp 127.0.0.1:80: connection refused' },
      { ...base, name: 'plain' },
    ]).split('\n');
    expect(lines[0]).toMatch(/^NAME\s+HOST\s+STATE\s+HEALTH\s+GEN\s+PID\s+AGE\s+INFO$/);
    expect(lines[1]).toMatch(/^web\s+h1\s+running\s+starting\s+1\s+7\s+-\s+1 restart, health check failed 2 times in a row: tcp 127.0.0.1:80: connection refused$/);
    expect(lines[2]).toMatch(/^plain\s+h1\s+running\s+-\s+1\s+7/);
    expect(psJson([{ ...base, health: 'healthy' }])[0]).toMatchObject({ health: 'healthy', healthReason: null });
  });
});
