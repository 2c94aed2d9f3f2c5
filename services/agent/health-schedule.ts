// The health check schedule of one running jail, as pure steps: when the next probe is due, and
// what a probe's result makes of the jail's health (grace period, consecutive failures, the
// restart it calls for). The clock comes in as an argument; this file must never read the clock,
// start a timer or run a probe (health-checks.ts does, and acts on what these steps return).
import type { HealthCheck, HealthState } from '../../contracts/index.js';

/** Where one jail's check stands. */
export interface HealthTrack {
  status: HealthState;
  /** When the jail (this run of it) started: the grace period counts from here. */
  startedAt: number;
  /** Failed checks in a row that counted (none counts in the grace period before a first pass). */
  failuresInRow: number;
  /** When the next probe is due; null while one runs, or once the jail is unhealthy (no more probes). */
  nextAt: number | null;
  /** When the running probe began. */
  probeAt: number | null;
  /** A check passed since the jail started: the grace period is over for good. */
  passed: boolean;
  /** Why the last check that counted failed (or why the jail was restarted), until one passes. */
  reason: string | null;
  /** Why the last run was restarted: shown through the grace period (whose failures say little). */
  carried: string | null;
}

/** A new run of a jail: `starting`, the first probe at once. `carried`: why its last run was restarted. */
export const startHealth = (now: number, carried: string | null = null): HealthTrack => ({
  status: 'starting',
  startedAt: now,
  failuresInRow: 0,
  nextAt: now,
  probeAt: null,
  passed: false,
  reason: carried,
  carried,
});

export const probeDue = (t: HealthTrack, now: number): boolean => t.nextAt !== null && now >= t.nextAt;

export const probeBegun = (t: HealthTrack, now: number): HealthTrack => ({ ...t, nextAt: null, probeAt: now });

/** In the grace period: failures do not count until it ends or a check passes. */
export const inGrace = (t: HealthTrack, check: Pick<HealthCheck, 'graceMs'>, now: number): boolean => !t.passed && now < t.startedAt + check.graceMs;

/**
 * A probe's result. The next probe is due an interval after this one began (at once when it ran
 * late). `restart` is the reason to restart the jail with, when this failure made it unhealthy.
 */
export function probeEnded(
  t: HealthTrack,
  check: Pick<HealthCheck, 'intervalMs' | 'failures' | 'graceMs'>,
  now: number,
  result: { ok: true } | { ok: false; reason: string },
): { track: HealthTrack; restart: string | null } {
  const nextAt = Math.max(now, (t.probeAt ?? now) + check.intervalMs);
  if (result.ok) return { track: { ...t, status: 'healthy', failuresInRow: 0, passed: true, reason: null, carried: null, nextAt, probeAt: null }, restart: null };
  if (inGrace(t, check, now)) return { track: { ...t, reason: t.carried ?? result.reason, nextAt, probeAt: null }, restart: null };
  const failuresInRow = t.failuresInRow + 1;
  if (failuresInRow < check.failures) return { track: { ...t, failuresInRow, reason: result.reason, nextAt, probeAt: null }, restart: null };
  const why = `health check failed ${failuresInRow} time${failuresInRow === 1 ? '' : 's'} in a row: ${result.reason}`;
  return { track: { ...t, status: 'unhealthy', failuresInRow, reason: why, nextAt: null, probeAt: null }, restart: why };
}
