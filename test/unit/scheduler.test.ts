// The scheduler in-process, on the in-memory store with a simulated clock and simulated agents:
// the stories of failover, fencing, pins, drains and leader changes, told without NATS.
import { describe, expect, test } from '@jest/globals';
import { SchedulerHarness } from '../support/scheduler-harness.js';

describe('scheduler, in-process', () => {
  test('an applied jail is placed and its host is told to run it, once', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'web' });
    expect(h.placement('web')).toMatchObject({ host: 'h1', generation: 1, reason: null });
    expect(h.commandsFor('web')).toEqual(['ensure:running g1 → h1']);
    expect(h.runningOn('web')).toEqual(['h1']);
    // the same spec again changes nothing; the periodic pass publishes nothing more
    await h.apply({ name: 'web' });
    h.leader.rec.resync();
    await h.settle();
    expect(h.desired('web')!.generation).toBe(1);
    expect(h.commandsFor('web')).toEqual(['ensure:running g1 → h1']);
  });

  test('nothing new is placed while the scheduler is still hearing hosts after its start', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.apply({ name: 'early' });
    expect(h.placement('early')).toBeUndefined();
    await h.warm();
    expect(h.placement('early')?.host).toBe('h1');
  });

  test('a host dies: its jails get the next generation elsewhere, and the dead host is told to destroy the old copy', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'a' }, { name: 'b' });
    expect(h.runningOn('a')).toEqual(['h1']);
    h.kill('h1');
    await h.advance(3500);
    for (const j of ['a', 'b']) {
      expect(h.desired(j)!.generation).toBe(2);
      expect(h.placement(j)).toMatchObject({ host: 'h2', generation: 2 });
      expect(h.runningOn(j)).toEqual(['h2']);
      expect(h.commandsFor(j)).toEqual(['ensure:running g1 → h1', 'destroy g1 → h1', 'ensure:running g2 → h2']);
    }
    // the host returns: its stale copies are fenced, one copy of each remains
    h.revive('h1');
    await h.advance(1000);
    expect(h.runningOn('a')).toEqual(['h2']);
    expect(h.hosts.get('h1')!.copies.size).toBe(0);
  });

  test('pinned jails and jails that may not move stay on their dead host (shown lost), and run again when it returns', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'pinned', placement: { host: 'h1' } }, { name: 'stay', failover: { reschedule: false } } as never);
    expect(h.placement('stay')?.host).toBe('h1');
    h.kill('h1');
    await h.advance(5000);
    expect(h.placement('pinned')).toMatchObject({ host: 'h1', generation: 1 });
    expect(h.placement('stay')).toMatchObject({ host: 'h1', generation: 1 });
    expect(h.commandsFor('stay')).toEqual(['ensure:running g1 → h1']);
    h.revive('h1');
    await h.advance(1000);
    expect(h.runningOn('stay')).toEqual(['h1']);
  });

  test('stop, start and rm reach the host; rm leaves a tombstone so the generation never repeats', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.warm();
    await h.apply({ name: 'j' });
    await h.call('stop', { name: 'j' });
    expect(h.runningOn('j')).toEqual([]);
    await h.call('start', { name: 'j' });
    expect(h.runningOn('j')).toEqual(['h1']);
    await h.call('rm', { name: 'j' });
    expect(h.placement('j')).toBeUndefined();
    expect(h.desired('j')).toMatchObject({ desired: 'removed', generation: 1 });
    await expect(h.call('stop', { name: 'j' })).rejects.toMatchObject({ code: 'not_found' });
    await h.apply({ name: 'j' });
    expect(h.desired('j')!.generation).toBe(2);
    expect(h.commandsFor('j')).toEqual(['ensure:running g1 → h1', 'ensure:stopped g1 → h1', 'ensure:running g1 → h1', 'destroy g1 → h1', 'ensure:running g2 → h1']);
  });

  test('a jail that fits nowhere is unplaced with the reason, and placed once a host has room', async () => {
    const h = new SchedulerHarness(['small'], { capacity: { cpu: 1, memoryMB: 128 } });
    await h.warm();
    await h.apply({ name: 'big', resources: { cpu: 0.5, memoryMB: 512, maxProcs: 64 } });
    expect(h.placement('big')).toMatchObject({ host: null, reason: 'no host fits: 1 host lacks memory (needs 512 MB, free 128 MB)' });
    h.addHost('roomy');
    await h.advance(2000);
    h.leader.rec.resync();
    await h.settle();
    expect(h.placement('big')?.host).toBe('roomy');
  });

  test('a drain moves each jail make-before-break: the new copy runs before the placement moves and the old copy goes', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'm1' }, { name: 'm2' });
    await h.call('drain', { host: 'h1', parallel: 2 });
    await h.settle();
    for (const j of ['m1', 'm2']) {
      expect(h.placement(j)).toMatchObject({ host: 'h2', generation: 2 });
      expect(h.desired(j)!.generation).toBe(2);
      expect(h.runningOn(j)).toEqual(['h2']);
      const cmds = h.commandsFor(j);
      expect(cmds.indexOf('ensure:running g2 → h2')).toBeLessThan(cmds.indexOf('destroy g1 → h1'));
    }
    expect(h.leader.rec.jailsOn('h1')).toEqual([]);
    // undrain: the host takes jails again
    await h.call('undrain', { host: 'h1' });
    await h.apply({ name: 'after', placement: { host: 'h1' } });
    expect(h.placement('after')?.host).toBe('h1');
  });

  test('a drain of a jail with a health check stops the old copy only once the new one is healthy', async () => {
    const h = new SchedulerHarness(['h1', 'h2'], { moveTimeoutMs: 60_000 });
    await h.warm();
    await h.apply({ name: 'web', health: { http: { port: 8080 }, intervalMs: 1000, timeoutMs: 500, failures: 3, graceMs: 10_000 } });
    expect(h.healthyOn('web', 'h1')).toBe(true);
    h.hosts.get('h2')!.healthyAfterMs = 3000; // the new copy runs at once but answers only 3 s later
    await h.leader.api.handle('drain', { v: 1, host: 'h1' });
    await new Promise((r) => setTimeout(r, 100));
    // running but still starting on h2: the old copy serves, nothing is switched yet
    expect(h.commandsFor('web')).toEqual(['ensure:running g1 → h1', 'ensure:running g2 → h2']);
    expect(h.runningOn('web').sort()).toEqual(['h1', 'h2']);
    expect(h.healthyOn('web', 'h1')).toBe(true);
    expect(h.healthyOn('web', 'h2')).toBe(false);
    expect(h.placement('web')).toMatchObject({ host: 'h1', generation: 1 });
    const healthyAt = h.now + 3000;
    await h.advance(4000);
    expect(h.placement('web')).toMatchObject({ host: 'h2', generation: 2 });
    expect(h.runningOn('web')).toEqual(['h2']);
    const destroy = h.commands.find((c) => c.command.jail === 'web' && c.command.op === 'destroy')!;
    expect(destroy).toMatchObject({ host: 'h1' });
    expect(destroy.at).toBeGreaterThanOrEqual(healthyAt);
  }, 20_000);

  test('a new copy that never becomes healthy is dropped: the jail stays on its old host, and the drain says why', async () => {
    const h = new SchedulerHarness(['h1', 'h2'], { moveTimeoutMs: 200 });
    await h.warm();
    await h.apply({ name: 'hung', health: { tcp: { port: 80 }, intervalMs: 100, timeoutMs: 50, failures: 2, graceMs: 100 } });
    h.hosts.get('h2')!.healthyAfterMs = null;
    await h.call('drain', { host: 'h1' }); // waits out 200 ms + grace 100 ms + 2 × 100 ms
    await h.settle();
    expect(h.placement('hung')).toMatchObject({ host: 'h1', generation: 1 });
    expect(h.runningOn('hung')).toEqual(['h1']);
    // the old copy is never told to go (the abandon's own revision re-sends it its ensure)
    expect(h.commandsFor('hung').slice(0, 3)).toEqual(['ensure:running g1 → h1', 'ensure:running g2 → h2', 'destroy g2 → h2']);
    expect(h.commandsFor('hung')).not.toContain('destroy g1 → h1');
    const rec = h.store.hosts.get('h1') as { value: { blocked: { name: string; reason: string }[] } };
    expect(rec.value.blocked).toEqual([{ name: 'hung', reason: 'its new copy on h2 did not become healthy within 0.5 s' }]);
  }, 20_000);

  test('a drain leaves a pinned jail where it is and says why', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'pin', placement: { host: 'h1' } });
    await h.call('drain', { host: 'h1' });
    await h.settle();
    expect(h.placement('pin')?.host).toBe('h1');
    const rec = h.store.hosts.get('h1') as { value: { blocked: { name: string; reason: string }[] } };
    expect(rec.value.blocked).toEqual([{ name: 'pin', reason: 'pinned to host "h1" (placement.host): remove the pin to let it move' }]);
  });

  test('a stop made while a move waits for its new copy wins: the move is abandoned and the jail is stopped', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 's' });
    h.hosts.get('h2')!.mute = true; // the new copy never reports
    const drained = h.call('drain', { host: 'h1' });
    await drained;
    await new Promise((r) => setTimeout(r, 50));
    expect(h.commandsFor('s')).toContain('ensure:running g2 → h2');
    await h.leader.api.handle('stop', { v: 1, name: 's' });
    h.hosts.get('h2')!.mute = false;
    await h.settle(); // the move waits out its 1 s timeout, then abandons
    expect(h.desired('s')).toMatchObject({ desired: 'stopped', generation: 1 });
    expect(h.placement('s')).toMatchObject({ host: 'h1', generation: 1 });
    expect(h.commandsFor('s')).toContain('ensure:stopped g1 → h1');
    expect(h.commandsFor('s').filter((c) => c.startsWith('destroy g2 → h2'))).toHaveLength(1);
  }, 10_000);

  test('the leader changes halfway through a move: the new leader finishes the drain with one copy', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'x' });
    const standby = h.addScheduler(false);
    const first = h.leader;
    h.hosts.get('h2')!.mute = true;
    await h.call('drain', { host: 'h1' });
    await new Promise((r) => setTimeout(r, 50));
    expect(h.commandsFor('x')).toContain('ensure:running g2 → h2');
    // the lease passes; the old leader's move learns it when its copy reports
    h.handOver(standby);
    h.hosts.get('h2')!.mute = false;
    await h.advance(1000);
    await new Promise((r) => setTimeout(r, 1500));
    await h.advance(1000);
    expect(first.leading).toBe(false);
    expect(h.placement('x')?.host).toBe('h2');
    expect(h.desired('x')!.generation).toBeGreaterThanOrEqual(2);
    expect(h.placement('x')!.generation).toBe(h.desired('x')!.generation);
    expect(h.runningOn('x')).toEqual(['h2']);
  }, 30_000);

  test('a move stopped after its placement was written is finished by whoever leads next', async () => {
    const h = new SchedulerHarness(['h1', 'h2']);
    await h.warm();
    await h.apply({ name: 'half' });
    // as a leader that died between step 5 (placement) and raising the desired generation would leave it
    const p = h.store.placements.get('half')!;
    await h.store.placements.put('half', { v: 1, host: 'h2', generation: 2, reason: null }, p.revision);
    await h.settle();
    expect(h.desired('half')!.generation).toBe(2);
    expect(h.commandsFor('half')).toContain('ensure:running g2 → h2');
  });

  test('an unreadable desired record is reported once and the jail left as it is; applying the spec again mends it', async () => {
    const h = new SchedulerHarness(['h1']);
    await h.warm();
    await h.apply({ name: 'u' });
    const before = h.commands.length;
    h.store.desired.corrupt('u', 'spec.command: Required');
    await h.settle();
    h.leader.rec.resync();
    await h.settle();
    expect(h.commands.length).toBe(before);
    expect(h.placement('u')).toMatchObject({ host: 'h1', generation: 1 });
    expect(h.runningOn('u')).toEqual(['h1']);
    await expect(h.call('stop', { name: 'u' })).rejects.toMatchObject({ code: 'conflict', message: expect.stringContaining('unreadable') });
    await h.apply({ name: 'u' });
    expect(h.desired('u')!.generation).toBe(2);
    expect(h.placement('u')).toMatchObject({ host: 'h1', generation: 2 });
  });

  test('an apply of many jails is placed as one batch that packs hosts full', async () => {
    const h = new SchedulerHarness(['h1', 'h2', 'h3'], { capacity: { cpu: 1, memoryMB: 256 } });
    await h.warm();
    await h.apply(...Array.from({ length: 12 }, (_, i) => ({ name: `p${i}`, resources: { cpu: 0.25, memoryMB: 64, maxProcs: 64 } })));
    const perHost = new Map<string, number>();
    for (let i = 0; i < 12; i++) perHost.set(h.placement(`p${i}`)!.host!, (perHost.get(h.placement(`p${i}`)!.host!) ?? 0) + 1);
    expect([...perHost.values()].sort()).toEqual([4, 4, 4]);
  });
});
