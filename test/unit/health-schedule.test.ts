// The health check schedule on a simulated clock: probes every interval from the start, the grace
// period, consecutive failures, the restart they call for; and the spec's `health` contract, whose
// every bad input is refused with one message naming the field.
import { describe, expect, test } from '@jest/globals';
import { DEFAULT_HEALTH, describeIssues, healthCheckSchema, healthKindOf, jailSpecSchema, type HealthCheck } from '../../contracts/index.js';
import { probeBegun, probeDue, probeEnded, startHealth, type HealthTrack } from '../../services/agent/health-schedule.js';

const check = (over: Partial<HealthCheck> = {}): HealthCheck => healthCheckSchema.parse({ tcp: { port: 80 }, intervalMs: 1000, timeoutMs: 200, failures: 3, graceMs: 5000, ...over });

/**
 * Runs the schedule from t=0 to `until` in 10 ms ticks, as the agent's runner does: a due probe
 * begins and ends `takes` ms later with what `answer(t)` says. Returns every probe and the restart.
 */
function simulate(c: HealthCheck, answer: (t: number) => true | string, until: number, takes = 50) {
  let t: HealthTrack = startHealth(0);
  const probes: { at: number; ok: boolean; status: string }[] = [];
  let endsAt: number | null = null;
  for (let now = 0; now <= until; now += 10) {
    if (endsAt !== null && now >= endsAt) {
      const a = answer(now);
      const r = probeEnded(t, c, now, a === true ? { ok: true } : { ok: false, reason: a });
      t = r.track;
      probes.push({ at: now, ok: a === true, status: t.status });
      endsAt = null;
      if (r.restart) return { probes, restart: { at: now, why: r.restart }, track: t };
    }
    if (probeDue(t, now)) {
      t = probeBegun(t, now);
      endsAt = now + takes;
    }
  }
  return { probes, restart: null, track: t };
}

describe('the check schedule', () => {
  test('a jail that answers at once is healthy after its first probe, probed once an interval', () => {
    const r = simulate(check(), () => true, 4000);
    expect(r.restart).toBeNull();
    expect(r.probes.map((p) => p.at)).toEqual([50, 1050, 2050, 3050]);
    expect(r.probes.every((p) => p.status === 'healthy')).toBe(true);
  });

  test('failures in the grace period do not count: a jail slow to come up stays starting, then becomes healthy', () => {
    // answers from t=4.5 s on; grace 5 s, 3 failures: without the grace it would have been restarted at 2 s
    const r = simulate(check(), (t) => (t >= 4500 ? true : 'connection refused'), 8000);
    expect(r.restart).toBeNull();
    expect(r.probes.filter((p) => p.at < 4500).every((p) => p.status === 'starting' && !p.ok)).toBe(true);
    expect(r.probes.find((p) => p.ok)).toEqual({ at: 5050, ok: true, status: 'healthy' });
    expect(r.track.failuresInRow).toBe(0);
    expect(r.track.reason).toBeNull();
  });

  test('a jail that never passes is restarted once the grace period is over and `failures` more fail', () => {
    const r = simulate(check(), () => 'connection refused', 20_000);
    // probes at 0.05, 1.05, ... ; the first to count ends at 5.05 s, the third at 7.05 s
    expect(r.restart).toEqual({ at: 7050, why: 'health check failed 3 times in a row: connection refused' });
    expect(r.track.status).toBe('unhealthy');
    expect(r.track.nextAt).toBeNull();
  });

  test('a healthy jail whose check starts failing is unhealthy after `failures` in a row, not before', () => {
    const r = simulate(check({ graceMs: 0 }), (t) => (t < 3000 ? true : 'HTTP 500'), 20_000);
    const failing = r.probes.filter((p) => !p.ok);
    expect(failing.map((p) => p.status)).toEqual(['healthy', 'healthy', 'unhealthy']);
    expect(r.restart?.at).toBe(5050);
    expect(r.restart?.why).toBe('health check failed 3 times in a row: HTTP 500');
  });

  test('one pass in between starts the count again', () => {
    // fails twice, passes once, fails twice, ...: never three in a row
    const r = simulate(check({ graceMs: 0 }), (t) => (Math.floor(t / 1000) % 3 === 2 ? true : 'timed out'), 30_000);
    expect(r.restart).toBeNull();
    expect(r.probes.filter((p) => !p.ok).length).toBeGreaterThan(10);
  });

  test('once passed, the grace period is over for good: failures count at once', () => {
    const r = simulate(check({ graceMs: 60_000, failures: 2 }), (t) => (t < 1500 ? true : 'exit 1'), 10_000);
    expect(r.restart?.at).toBe(3050);
  });

  test('failures: 1 restarts on the first counted failure; a probe that ran late is followed by the next at once', () => {
    let t = probeBegun(startHealth(0), 0);
    const r = probeEnded(t, check({ graceMs: 0, failures: 1 }), 300, { ok: false, reason: 'timed out after 200 ms' });
    expect(r.restart).toBe('health check failed 1 time in a row: timed out after 200 ms');
    t = probeBegun(startHealth(0), 0);
    expect(probeEnded(t, check(), 2500, { ok: true }).track.nextAt).toBe(2500);
  });

  test('a restarted jail carries why, until its first pass', () => {
    const t = startHealth(100, 'health check failed 3 times in a row: HTTP 503');
    expect(t).toMatchObject({ status: 'starting', reason: 'health check failed 3 times in a row: HTTP 503', nextAt: 100 });
    // a failure in the grace period does not hide why it was restarted
    const early = probeEnded(probeBegun(t, 100), check(), 150, { ok: false, reason: 'connection refused' }).track;
    expect(early.reason).toBe('health check failed 3 times in a row: HTTP 503');
    expect(probeEnded(probeBegun(early, 1100), check(), 1150, { ok: true }).track.reason).toBeNull();
  });
});

describe('the health contract', () => {
  const spec = (health: unknown, extra: object = {}) => ({ name: 'web', command: ['/bin/true'], health, ...extra });
  const refused = (health: unknown, extra: object = {}) => {
    const r = jailSpecSchema.safeParse(spec(health, extra));
    expect(r.success).toBe(false);
    return describeIssues(r.error!);
  };

  test('defaults: a check with only its kind', () => {
    const h = jailSpecSchema.parse(spec({ http: { port: 8080 } })).health!;
    expect(h).toEqual({ http: { port: 8080, path: '/' }, ...DEFAULT_HEALTH });
    expect(healthKindOf(h)).toBe('http');
    expect(healthKindOf(jailSpecSchema.parse(spec({ exec: ['/bin/true'] })).health!)).toBe('exec');
    expect(healthKindOf(jailSpecSchema.parse(spec({ tcp: { port: 22 } })).health!)).toBe('tcp');
    // a spec without a check keeps its JSON: no `health` key appears
    expect('health' in jailSpecSchema.parse({ name: 'web', command: ['/bin/true'] })).toBe(false);
  });

  test.each([
    [{}, 'health: needs one check: exec, http or tcp'],
    [{ intervalMs: 1000 }, 'health: needs one check: exec, http or tcp'],
    [{ http: { port: 80 }, tcp: { port: 81 } }, 'health.tcp: one check only, not http and tcp'],
    [{ exec: ['/bin/true'], http: { port: 80 } }, 'health.http: one check only, not exec and http'],
    [{ http: { port: 0 } }, 'health.http.port: must be a port from 1 to 65535'],
    [{ tcp: { port: 65536 } }, 'health.tcp.port: must be a port from 1 to 65535'],
    [{ tcp: { port: 80.5 } }, 'health.tcp.port: must be a whole number'],
    [{ tcp: { port: '80' } }, 'health.tcp.port: must be a port number'],
    [{ tcp: { port: 80 }, intervalMs: 500, timeoutMs: 1000 }, 'health.intervalMs: must be at least timeoutMs (1000 ms): a check may not outlast the interval (got 500 ms)'],
    [{ tcp: { port: 80 }, timeoutMs: 20_000 }, 'health.intervalMs: must be at least timeoutMs (20000 ms)'],
    [{ tcp: { port: 80 }, failures: 0 }, 'health.failures: must be at least 1'],
    [{ tcp: { port: 80 }, graceMs: -1 }, 'health.graceMs:'],
    [{ exec: [] }, 'health.exec: must have at least one element'],
    [{ exec: ['/bin/x\0'] }, 'health.exec.0: must not contain a NUL byte'],
    [{ http: { port: 80, path: 'healthz' } }, 'health.http.path: must start with "/"'],
    [{ http: { port: 80, path: '/a b' } }, 'health.http.path: must start with "/" and hold no spaces'],
    [{ http: { port: 80, path: '/a\r\nHost: evil' } }, 'health.http.path:'],
    [{ tcp: { port: 80 }, retries: 3 }, 'health: Unrecognized key: "retries"'],
    ['tcp', 'health:'],
  ])('refused: %j', (health, message) => {
    expect(refused(health)).toContain(message);
  });

  test('an http or tcp check on a jail without a network is refused; exec is fine there', () => {
    expect(refused({ tcp: { port: 80 } }, { network: 'none' })).toBe('health: http and tcp checks need a network the agent can reach (network is "none"): use an exec check');
    expect(jailSpecSchema.safeParse(spec({ exec: ['/bin/true'] }, { network: 'none' })).success).toBe(true);
  });
});
