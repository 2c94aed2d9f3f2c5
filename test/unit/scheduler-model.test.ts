// Model-based test of the scheduler, in the style of the lifecycle machine's: random sequences of
// apply / stop / start / rm / host down / host up / drain / undrain / leader change, run in-process
// on the memory store with simulated agents, with the rules checked after every step:
//   - no jail is ever placed on two hosts at one generation;
//   - generations only rise (desired and placement);
//   - every desired jail is placed or has a reason;
//   - at most one live copy of a jail runs;
//   - once things settle, a draining host holds only the jails its record says it cannot move.
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { SchedulerHarness } from '../support/scheduler-harness.js';
import { isReadable } from '../../services/scheduler/store.js';

const HOSTS = ['h1', 'h2', 'h3'];
const JAILS = ['a', 'b', 'c', 'd'];

type Step =
  | { kind: 'apply'; jail: string; variant: number; pin: boolean; stay: boolean }
  | { kind: 'stop' | 'start' | 'rm'; jail: string }
  | { kind: 'down' | 'up' | 'drain' | 'undrain'; host: string }
  | { kind: 'leader' }
  | { kind: 'time'; ms: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('apply' as const), jail: fc.constantFrom(...JAILS), variant: fc.integer({ min: 0, max: 2 }), pin: fc.integer({ min: 0, max: 9 }).map((n) => n < 2), stay: fc.integer({ min: 0, max: 9 }).map((n) => n < 2) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constantFrom('stop' as const, 'start' as const, 'rm' as const), jail: fc.constantFrom(...JAILS) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constantFrom('down' as const, 'up' as const, 'drain' as const, 'undrain' as const), host: fc.constantFrom(...HOSTS) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'leader' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('time' as const), ms: fc.integer({ min: 500, max: 8000 }) }) },
);

/** Watches every record change for the rules that span time. */
function recorder(h: SchedulerHarness) {
  const hostAt = new Map<string, string>(); // `${jail}/${generation}` → host
  const lastGen = new Map<string, number>();
  const violations: string[] = [];
  h.store.onChange((c) => {
    if (!isReadable(c.slot)) return;
    const v = c.slot.value as { generation: number; host?: string | null };
    const gk = `${c.bucket}/${c.key}`;
    if (v.generation < (lastGen.get(gk) ?? 0)) violations.push(`${gk}: generation fell from ${lastGen.get(gk)} to ${v.generation}`);
    lastGen.set(gk, Math.max(v.generation, lastGen.get(gk) ?? 0));
    if (c.bucket === 'placements' && v.host) {
      const k = `${c.key}/${v.generation}`;
      if (hostAt.has(k) && hostAt.get(k) !== v.host) violations.push(`${c.key} placed on ${hostAt.get(k)} and ${v.host} at generation ${v.generation}`);
      hostAt.set(k, v.host);
    }
  });
  // a generation is also "placed" where its ensure went: never two hosts for one generation
  const ensured = () => {
    const seen = new Map<string, Set<string>>();
    for (const c of h.commands) {
      if (c.command.op !== 'ensure' || c.command.desired !== 'running') continue;
      const k = `${c.command.jail}/${c.command.generation}`;
      if (!seen.has(k)) seen.set(k, new Set());
      seen.get(k)!.add(c.host);
    }
    return [...seen].filter(([, hosts]) => hosts.size > 1).map(([k, hosts]) => `${k} commanded to run on ${[...hosts].join(' and ')}`);
  };
  return { violations, ensured };
}

async function run(h: SchedulerHarness, s: Step) {
  const leader = h.leader;
  const ignoreRefusal = (p: Promise<unknown>) => p.catch((e: { code?: string }) => {
    if (e.code !== 'not_found') throw e;
  });
  switch (s.kind) {
    case 'apply':
      await h.apply({
        name: s.jail,
        command: ['/bin/sleep', String(3600 + s.variant)],
        // one variant has a health check: a move waits for its new copy to be healthy
        ...(s.variant === 2 ? { health: { tcp: { port: 80 }, intervalMs: 100, timeoutMs: 50, failures: 1, graceMs: 0 } } : {}),
        ...(s.pin ? { placement: { host: 'h1' } } : {}),
        ...(s.stay ? { failover: { reschedule: false } } : {}),
      } as never);
      break;
    case 'stop':
    case 'start':
    case 'rm':
      await ignoreRefusal(h.call(s.kind, { name: s.jail }, leader));
      break;
    case 'down':
      h.kill(s.host);
      await h.advance(3500);
      break;
    case 'up':
      h.revive(s.host);
      await h.advance(1000);
      break;
    case 'drain':
    case 'undrain':
      await ignoreRefusal(h.call(s.kind, { host: s.host, ...(s.kind === 'drain' ? { parallel: 2 } : {}) }, leader));
      break;
    case 'leader':
      h.handOver(h.schedulers.find((x) => x !== leader)!);
      await h.advance(500);
      break;
    case 'time':
      await h.advance(s.ms);
      break;
  }
  await h.settle();
}

function checkNow(h: SchedulerHarness, rec: ReturnType<typeof recorder>) {
  expect(rec.violations).toEqual([]);
  expect(rec.ensured()).toEqual([]);
  for (const j of JAILS) {
    const d = h.desired(j);
    // at most one live copy (a dead host's copy is fenced when it returns)
    expect(h.runningOn(j).length).toBeLessThanOrEqual(1);
    if (!d || d.desired === 'removed') continue;
    const p = h.placement(j);
    // placed, or unplaced with a reason (nothing is placed while the scheduler warms up)
    expect(p).toBeDefined();
    expect(p!.host !== null || (p!.reason ?? '').length > 0).toBe(true);
  }
}

describe('scheduler model', () => {
  test('random histories keep the scheduler rules', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 18 }), async (steps) => {
        const h = new SchedulerHarness(HOSTS, { capacity: { cpu: 2, memoryMB: 512 } });
        h.addScheduler(false);
        const rec = recorder(h);
        await h.warm();
        for (const s of steps) {
          await run(h, s);
          checkNow(h, rec);
        }
        // settled: every host back, time for moves and their retries
        for (const host of HOSTS) h.revive(host);
        await h.advance(35_000);
        checkNow(h, rec);
        for (const host of HOSTS) {
          const r = h.store.hosts.get(host);
          if (!isReadable(r) || !r.value.draining) continue;
          const blocked = new Set(r.value.blocked.map((b) => b.name));
          expect(h.leader.rec.jailsOn(host).filter((j) => !blocked.has(j))).toEqual([]);
        }
        for (const s of h.schedulers) await s.rec.stop();
      }),
      { numRuns: 60, seed: Number(process.env.MODEL_SEED ?? Date.now() % 100000), verbose: 1 },
    );
  }, 240_000);
});
