// The agent's step limit: never more than n steps at once, and waiting steps go by priority
// (later lifecycle steps first), then in arrival order.
import { describe, expect, it } from '@jest/globals';
import { availableParallelism } from 'node:os';
import { StepLimit, defaultParallelSteps } from '../../services/agent/agent.js';

describe('StepLimit', () => {
  it('runs at most n at once and lets the highest priority go next, in arrival order within one', async () => {
    const limit = new StepLimit(1);
    const order: string[] = [];
    let release!: () => void;
    const first = limit.run(() => new Promise<void>((r) => (release = r)).then(() => void order.push('first')));
    const queued = [
      ['prepare-a', 0],
      ['prepare-b', 0],
      ['start-a', 2],
      ['mount-a', 1],
      ['start-b', 2],
    ] as const;
    const runs = queued.map(([name, p]) => limit.run(async () => void order.push(name), p));
    release();
    await Promise.all([first, ...runs]);
    expect(order).toEqual(['first', 'start-a', 'start-b', 'mount-a', 'prepare-a', 'prepare-b']);
  });

  it('never exceeds its limit under a burst', async () => {
    const limit = new StepLimit(3);
    let active = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        limit.run(async () => {
          peak = Math.max(peak, ++active);
          await new Promise((r) => setTimeout(r, 1));
          active--;
        }, i % 3),
      ),
    );
    expect(peak).toBe(3);
  });
  it('keeps priority, then arrival order, across a burst of 1,000 waiters', async () => {
    const limit = new StepLimit(1);
    const order: number[] = [];
    let release!: () => void;
    const first = limit.run(() => new Promise<void>((r) => (release = r)));
    const runs = Array.from({ length: 1000 }, (_, i) => limit.run(async () => void order.push(i), i % 3));
    release();
    await Promise.all([first, ...runs]);
    const expected = [2, 1, 0].flatMap((p) => Array.from({ length: 1000 }, (_, i) => i).filter((i) => i % 3 === p));
    expect(order).toEqual(expected);
  });

  it('runs steps by cores when not told: four per core, at least 4, at most 64', () => {
    expect(defaultParallelSteps()).toBe(Math.min(64, Math.max(4, availableParallelism() * 4)));
  });
});
