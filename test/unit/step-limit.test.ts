// The agent's step limit: never more than n steps at once, and waiting steps go by priority
// (later lifecycle steps first), then in arrival order.
import { describe, expect, it } from '@jest/globals';
import { StepLimit } from '../../services/agent/agent.js';

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
});
