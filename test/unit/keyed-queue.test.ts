// KeyedQueue, the one way work is serialised per name (the scheduler's reconciles, the agent's
// commands, a driver's steps): one task per key at a time and in order, keys side by side, a
// global limit that lets later lifecycle steps go first, "once more after this run" however often
// it is asked, a failure that never wedges its key, and a way to wait until all is done.
import { describe, expect, test } from '@jest/globals';
import { KeyedQueue } from '../../services/common/keyed-queue.js';

/** A promise and the function that settles it. */
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('KeyedQueue', () => {
  test('tasks of one key run one at a time, in the order they were given', async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    let active = 0;
    const task = (name: string, ms: number) => async () => {
      expect(++active).toBe(1);
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
      active--;
      return name;
    };
    const results = await Promise.all([q.run('web', task('a', 5)), q.run('web', task('b', 1)), q.run('web', task('c', 0))]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  test('different keys run at the same time', async () => {
    const q = new KeyedQueue();
    const a = gate();
    const started: string[] = [];
    const first = q.run('a', async () => (started.push('a'), a.p));
    const second = q.run('b', async () => void started.push('b'));
    await second;
    expect(started).toEqual(['a', 'b']);
    expect(q.has('a')).toBe(true);
    a.open();
    await first;
    expect(q.has('a')).toBe(false);
  });

  test('a task never runs inside the call that gives it', () => {
    const q = new KeyedQueue();
    let ran = false;
    void q.run('a', async () => void (ran = true));
    expect(ran).toBe(false);
  });

  test('a failing task rejects its own promise and the key goes on', async () => {
    const q = new KeyedQueue();
    const bad = q.run('a', async () => {
      throw new Error('boom');
    });
    const good = q.run('a', async () => 'after');
    await expect(bad).rejects.toThrow('boom');
    await expect(good).resolves.toBe('after');
    await expect(q.run('a', async () => 'later')).resolves.toBe('later');
    expect(q.size).toBe(0);
  });

  test('a global limit: never more at once, and waiting tasks go by priority, then in order', async () => {
    const q = new KeyedQueue({ concurrency: 1 });
    const order: string[] = [];
    const first = gate();
    const running = q.run('x', () => first.p.then(() => void order.push('first')));
    const queued = [
      ['prepare-a', 0],
      ['prepare-b', 0],
      ['start-a', 2],
      ['mount-a', 1],
      ['start-b', 2],
    ] as const;
    const runs = queued.map(([name, priority]) => q.run(name, async () => void order.push(name), { priority }));
    first.open();
    await Promise.all([running, ...runs]);
    expect(order).toEqual(['first', 'start-a', 'start-b', 'mount-a', 'prepare-a', 'prepare-b']);
  });

  test('under a burst the limit holds, and a busy key does not starve the others', async () => {
    const q = new KeyedQueue({ concurrency: 3 });
    let active = 0;
    let peak = 0;
    const done: string[] = [];
    await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        q.run(`k${i % 5}`, async () => {
          peak = Math.max(peak, ++active);
          await new Promise((r) => setTimeout(r, 1));
          active--;
          done.push(`k${i % 5}`);
        }),
      ),
    );
    expect(peak).toBe(3);
    // every key's first task finished before any key's last
    const firsts = ['k0', 'k1', 'k2', 'k3', 'k4'].map((k) => done.indexOf(k));
    expect(Math.max(...firsts)).toBeLessThan(done.lastIndexOf('k0'));
  });

  test('runCoalesced: asked many times during a run, it runs once more after it', async () => {
    const q = new KeyedQueue();
    const first = gate();
    let runs = 0;
    const reconcile = async () => {
      runs++;
      if (runs === 1) await first.p;
    };
    const p1 = q.runCoalesced('web', reconcile);
    await tick();
    const again = Array.from({ length: 10 }, () => q.runCoalesced('web', reconcile));
    expect(new Set(again).size).toBe(1); // one shared run
    first.open();
    await Promise.all([p1, ...again]);
    expect(runs).toBe(2);
    // idle again: the next ask runs at once
    await q.runCoalesced('web', reconcile);
    expect(runs).toBe(3);
  });

  test('runCoalesced: the run that waits takes the latest task; other keys are not joined', async () => {
    const q = new KeyedQueue();
    const first = gate();
    const seen: string[] = [];
    const p1 = q.runCoalesced('a', () => first.p.then(() => void seen.push('a1')));
    await tick();
    const p2 = q.runCoalesced('a', async () => void seen.push('a2'));
    const p3 = q.runCoalesced('a', async () => void seen.push('a3'));
    const pb = q.runCoalesced('b', async () => void seen.push('b1'));
    await pb;
    first.open();
    await Promise.all([p1, p2, p3]);
    expect(seen).toEqual(['b1', 'a1', 'a3']);
  });

  test('runCoalesced: a failed run does not keep the next ask from running', async () => {
    const q = new KeyedQueue();
    await expect(
      q.runCoalesced('a', async () => {
        throw new Error('lost a race');
      }),
    ).rejects.toThrow('lost a race');
    let ran = false;
    await q.runCoalesced('a', async () => void (ran = true));
    expect(ran).toBe(true);
  });

  test('idle: resolves at once when nothing runs, else once every key has drained', async () => {
    const q = new KeyedQueue();
    await q.idle();
    const g = gate();
    let last = false;
    void q.run('a', () => g.p);
    void q.run('a', async () => void (last = true));
    void q.run('b', async () => undefined);
    let idle = false;
    const waiting = q.idle().then(() => (idle = true));
    await tick();
    expect(idle).toBe(false);
    g.open();
    await waiting;
    expect(last).toBe(true);
    expect(q.size).toBe(0);
  });

  test('a limit below one is refused', () => {
    expect(() => new KeyedQueue({ concurrency: 0 })).toThrow(RangeError);
  });
});
