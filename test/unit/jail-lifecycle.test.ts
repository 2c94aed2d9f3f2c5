// The jail lifecycle machine, tested in isolation: a pure machine driven by fake driver steps
// (promises the test resolves or rejects) and a simulated clock. The last part walks the whole
// state graph with xstate/graph, checks every transition against a small reference model of the
// rules, and replays the shortest paths on a live actor.
import { afterEach, describe, expect, test } from '@jest/globals';
import { createActor, fromCallback, fromPromise, SimulatedClock, type AnyActorRef } from 'xstate';
import { adjacencyMapToArray, getAdjacencyMap, getShortestPaths } from 'xstate/graph';
import { JAIL_STATES, jailSpecSchema, type JailSpec, type JailState, type RestartPolicy } from '../../contracts/index.js';
import {
  jailLifecycleMachine,
  persistedJailOf,
  restartDelayMs,
  stableStateOf,
  type DesiredState,
  type JailLifecycleEvent,
  type JailLifecycleSnapshot,
  type PersistedJail,
} from '../../machines/index.js';

type StepInput = { spec: JailSpec };
type Step = 'prepare' | 'mount' | 'start' | 'stop' | 'unmount' | 'destroy';
type Outcome = { output?: unknown } | { error: unknown };

interface Deferred {
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** A driver whose steps succeed, fail or wait for the test, and which records what was called. */
class FakeDriver {
  readonly calls: Step[] = [];
  /** Steps that reject with this value, every time until deleted. */
  readonly failing = new Map<Step, unknown>();
  /** Steps that wait until `settle` is called. */
  readonly held = new Set<Step>();
  private readonly waiting = new Map<Step, Deferred>();
  nextPid = 100;
  stopExitCode: number | null = 143;
  watchedPid: number | null = null;
  private sendExit: ((event: JailLifecycleEvent) => void) | null = null;

  holdAll(): this {
    for (const s of ['prepare', 'mount', 'start', 'stop', 'unmount', 'destroy'] as const) this.held.add(s);
    return this;
  }

  isWaiting(step: Step): boolean {
    return this.waiting.has(step);
  }

  /** Ends a held step: with its output, or with an error. */
  settle(step: Step, outcome: Outcome = {}): void {
    const d = this.waiting.get(step);
    if (!d) throw new Error(`step ${step} is not waiting (calls: ${this.calls.join(', ')})`);
    this.waiting.delete(step);
    if ('error' in outcome) d.reject(outcome.error);
    else d.resolve(outcome.output);
  }

  /** The jail's init exits: what the watch actor reports. */
  exit(exitCode: number | null, at: number): void {
    if (!this.sendExit) throw new Error('no watch actor is running');
    this.sendExit({ type: 'EXITED', exitCode, at });
  }

  /** The jail's init exits after the kernel killed it (or its command) at the memory limit. */
  exitOutOfMemory(exitCode: number, at: number): void {
    if (!this.sendExit) throw new Error('no watch actor is running');
    this.sendExit({ type: 'EXITED', exitCode, at, outOfMemory: true });
  }

  private run<T>(step: Step, result: () => T): Promise<T> {
    this.calls.push(step);
    if (this.held.has(step)) {
      return new Promise<T>((resolve, reject) => this.waiting.set(step, { resolve: resolve as (v: unknown) => void, reject }));
    }
    if (this.failing.has(step)) return Promise.reject(this.failing.get(step));
    return Promise.resolve(result());
  }

  actors() {
    return {
      prepare: fromPromise<void, StepInput>(() => this.run('prepare', () => undefined)),
      mount: fromPromise<void, StepInput>(() => this.run('mount', () => undefined)),
      start: fromPromise<{ pid: number }, StepInput>(() => this.run('start', () => ({ pid: this.nextPid++ }))),
      stop: fromPromise<{ exitCode: number | null }, StepInput>(() => this.run('stop', () => ({ exitCode: this.stopExitCode }))),
      unmount: fromPromise<void, StepInput>(() => this.run('unmount', () => undefined)),
      destroy: fromPromise<void, StepInput>(() => this.run('destroy', () => undefined)),
      watch: fromCallback<JailLifecycleEvent, StepInput & { pid: number }>(({ sendBack, input }) => {
        this.watchedPid = input.pid;
        this.sendExit = sendBack;
        return () => {
          this.watchedPid = null;
          this.sendExit = null;
        };
      }),
    };
  }
}

const spec = (restart: RestartPolicy = 'always') => jailSpecSchema.parse({ name: 'web', command: ['/usr/sbin/httpd', '-f'], restart });

const started: AnyActorRef[] = [];
afterEach(() => {
  for (const a of started.splice(0)) a.stop();
});

interface JailOptions {
  restart?: RestartPolicy;
  desired?: DesiredState;
  restore?: PersistedJail;
  driver?: FakeDriver;
  backoff?: { baseMs: number; maxMs: number };
}

function startJail(opts: JailOptions = {}) {
  const driver = opts.driver ?? new FakeDriver();
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const actor = createActor(jailLifecycleMachine.provide({ actors: driver.actors() }), {
    input: {
      spec: spec(opts.restart),
      generation: 1,
      desired: opts.desired ?? 'running',
      restore: opts.restore,
      backoff: opts.backoff,
    },
    clock,
  });
  started.push(actor);
  actor.start();
  return { actor, driver, clock, snap: () => actor.getSnapshot() };
}

/** Lets every promise that is not held settle, so the machine comes to rest. */
const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

async function runningJail(opts: JailOptions = {}) {
  const jail = startJail(opts);
  await settled();
  expect(jail.snap().value).toBe('running');
  return jail;
}

const record = (over: Partial<PersistedJail> & { state: JailState }): PersistedJail => ({
  pid: null,
  exitCode: null,
  restarts: 0,
  error: null,
  restartAt: null,
  ...over,
});

describe('restartDelayMs: capped exponential backoff', () => {
  test('doubles from the base with each restart and stops at the cap', () => {
    const b = { baseMs: 1000, maxMs: 30_000 };
    expect([0, 1, 2, 3, 4, 5, 6].map((r) => restartDelayMs(r, b))).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
  });

  test('stays at the cap for huge counts instead of overflowing', () => {
    expect(restartDelayMs(5000, { baseMs: 1000, maxMs: 30_000 })).toBe(30_000);
    expect(restartDelayMs(-3, { baseMs: 250, maxMs: 30_000 })).toBe(250);
  });

  test('the default backoff (README: 1 s doubling to 30 s) is what a jail without one waits', async () => {
    // restored running after 4, 5 and 9 restarts: the next restart waits 16 s, then the 30 s cap
    for (const [restarts, delay] of [[4, 16_000], [5, 30_000], [9, 30_000]] as const) {
      const { snap, driver, clock } = startJail({ restore: record({ state: 'running', pid: 4242, restarts }) });
      await settled();
      const at = clock.now();
      driver.exit(1, at);
      await settled();
      expect(snap().context).toMatchObject({ restarts: restarts + 1, restartAt: at + delay });
    }
  });

  test('a zero base means no delay', () => {
    expect(restartDelayMs(10, { baseMs: 0, maxMs: 30_000 })).toBe(0);
    // 0 × 2^5000 is NaN, not 0: a zero base must not fall through to the cap after many restarts
    expect(restartDelayMs(5000, { baseMs: 0, maxMs: 30_000 })).toBe(0);
  });

  test('a negative cap is no delay rather than a negative one', () => {
    expect(restartDelayMs(3, { baseMs: 1000, maxMs: -5 })).toBe(0);
    expect(restartDelayMs(5000, { baseMs: 1000, maxMs: -5 })).toBe(0);
  });

  test('a fractional restart count counts the restarts completed', () => {
    expect(restartDelayMs(2.9, { baseMs: 1000, maxMs: 30_000 })).toBe(4000);
  });
});

describe('a new jail that should run', () => {
  test('goes from pending through prepare, mount and start to running, and its init is watched', async () => {
    const { snap, driver } = await runningJail();
    expect(driver.calls).toEqual(['prepare', 'mount', 'start']);
    expect(driver.watchedPid).toBe(100);
    expect(stableStateOf(snap())).toBe('running');
    expect(persistedJailOf(snap())).toEqual({ state: 'running', pid: 100, exitCode: null, restarts: 0, error: null, restartAt: null });
  });

  test('a transitional state is not stable, and its record resumes from the last stable state', async () => {
    const driver = new FakeDriver();
    driver.held.add('mount');
    const { snap } = startJail({ driver });
    await settled();
    expect(snap().value).toBe('mounting');
    expect(stableStateOf(snap())).toBeNull();
    expect(persistedJailOf(snap()).state).toBe('prepared');
  });

  test('a jail that should be stopped is only prepared, and rests there', async () => {
    const { snap, driver, clock } = startJail({ desired: 'stopped' });
    await settled();
    clock.increment(120_000);
    await settled();
    expect(snap().value).toBe('prepared');
    expect(driver.calls).toEqual(['prepare']);
  });
});

describe('when the jail exits, the restart policy decides', () => {
  const cases: Array<[RestartPolicy, number | null, boolean]> = [
    ['always', 0, true],
    ['always', 1, true],
    ['on-failure', 0, false],
    ['on-failure', 1, true],
    ['on-failure', null, true],
    ['never', 0, false],
    ['never', 137, false],
  ];

  test.each(cases)('policy %s, exit code %p: restarts=%p', async (restart, exitCode, restarts) => {
    const { snap, driver, clock } = await runningJail({ restart });
    const at = clock.now();
    driver.exit(exitCode, at);
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls.slice(3)).toEqual(['unmount']);
    expect(snap().context).toMatchObject({ exitCode, pid: null, error: null });
    if (restarts) {
      expect(persistedJailOf(snap())).toEqual({ state: 'stopped', pid: null, exitCode, restarts: 1, error: null, restartAt: at + 1000 });
      clock.increment(999);
      await settled();
      expect(snap().value).toBe('stopped');
      clock.increment(1);
      await settled();
      expect(snap().value).toBe('running');
      expect(snap().context).toMatchObject({ pid: 101, restarts: 1, restartAt: null, exitCode: null });
      expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'unmount', 'prepare', 'mount', 'start']);
    } else {
      expect(snap().context).toMatchObject({ restarts: 0, restartAt: null, desired: 'stopped' });
      clock.increment(600_000);
      await settled();
      expect(snap().value).toBe('stopped');
      expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'unmount']);
    }
  });

  test.each(['never', 'on-failure', 'always'] as const)('killed at its memory limit, policy %s: failed with "out of memory", retried unless never', async (restart) => {
    const { snap, driver, clock } = await runningJail({ restart });
    driver.exitOutOfMemory(137, clock.now());
    await settled();
    expect(snap().value).toBe('failed');
    expect(persistedJailOf(snap())).toEqual({
      state: 'failed',
      pid: null,
      exitCode: 137,
      restarts: 0,
      error: { step: 'run', message: 'out of memory: killed at the 64 MB limit' },
      restartAt: null,
    });
    expect(driver.calls).toEqual(['prepare', 'mount', 'start']); // mounts kept until recovered or destroyed
    clock.increment(1000);
    await settled();
    if (restart === 'never') {
      expect(snap().value).toBe('failed');
      expect(driver.calls).toEqual(['prepare', 'mount', 'start']);
    } else {
      expect(snap().value).toBe('running');
      expect(snap().context).toMatchObject({ restarts: 1, error: null, exitCode: null, pid: 101 });
      expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'unmount', 'prepare', 'mount', 'start']);
    }
  });

  test('each restart waits twice as long as the one before, up to the cap', async () => {
    const { snap, driver, clock } = await runningJail({ backoff: { baseMs: 1000, maxMs: 4000 } });
    for (const [i, expected] of [1000, 2000, 4000, 4000].entries()) {
      const at = clock.now();
      driver.exit(1, at);
      await settled();
      expect(snap().context).toMatchObject({ restarts: i + 1, restartAt: at + expected });
      clock.increment(expected - 1);
      await settled();
      expect(snap().value).toBe('stopped');
      clock.increment(1);
      await settled();
      expect(snap().value).toBe('running');
    }
  });

  test('STOP while a restart is pending cancels it', async () => {
    const { actor, snap, driver, clock } = await runningJail();
    driver.exit(1, clock.now());
    await settled();
    expect(snap().context.restartAt).not.toBeNull();
    actor.send({ type: 'STOP' });
    expect(snap().value).toBe('stopped');
    expect(snap().context).toMatchObject({ restartAt: null, desired: 'stopped', restarts: 1 });
    clock.increment(600_000);
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls.filter((c) => c === 'start')).toHaveLength(1);
  });

  test('START while a restart is pending starts at once', async () => {
    const { actor, snap, driver, clock } = await runningJail();
    driver.exit(1, clock.now());
    await settled();
    actor.send({ type: 'START' });
    await settled();
    expect(snap().value).toBe('running');
    expect(snap().context).toMatchObject({ restartAt: null, pid: 101 });
  });
});

describe('a jail its health check found hung is stopped, then restarted per its policy', () => {
  test.each([
    ['always', true],
    ['on-failure', true],
    ['never', false],
  ] as const)('policy %s: restarts=%p, the check\'s reason is the error until it runs again', async (restart, restarts) => {
    const { actor, snap, driver, clock } = await runningJail({ restart });
    const at = clock.now();
    const reason = 'health check failed 3 times in a row: HTTP 500';
    // the jail's init is alive: the check, not an exit, ends this run
    actor.send({ type: 'UNHEALTHY', reason, at });
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls.slice(3)).toEqual(['stop', 'unmount']);
    expect(snap().context.error).toEqual({ step: 'run', message: reason });
    if (restarts) {
      expect(persistedJailOf(snap())).toMatchObject({ state: 'stopped', restarts: 1, restartAt: at + 1000 });
      clock.increment(1000);
      await settled();
      expect(snap().value).toBe('running');
      expect(snap().context).toMatchObject({ restarts: 1, error: null, restartAt: null });
    } else {
      expect(snap().context).toMatchObject({ desired: 'stopped', restarts: 0, restartAt: null });
      clock.increment(600_000);
      await settled();
      expect(snap().value).toBe('stopped');
    }
  });

  test('ignored when the jail is not running', async () => {
    const { actor, snap } = startJail({ desired: 'stopped' });
    await settled();
    const before = snap().value;
    actor.send({ type: 'UNHEALTHY', reason: 'late', at: 0 });
    await settled();
    expect(snap().value).toBe(before);
    expect(snap().context.error).toBeNull();
  });
});

describe('stop and start', () => {
  test('STOP stops the process, releases the mounts, keeps the exit code, and is not restarted', async () => {
    const { actor, snap, driver, clock } = await runningJail({ restart: 'always' });
    actor.send({ type: 'STOP' });
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'stop', 'unmount']);
    expect(persistedJailOf(snap())).toEqual({ state: 'stopped', pid: null, exitCode: 143, restarts: 0, error: null, restartAt: null });
    expect(driver.watchedPid).toBeNull();
    clock.increment(600_000);
    await settled();
    expect(snap().value).toBe('stopped');
  });

  test('START on a stopped jail prepares, mounts and starts it again without counting a restart', async () => {
    const { actor, snap, driver } = await runningJail();
    actor.send({ type: 'STOP' });
    await settled();
    actor.send({ type: 'START' });
    await settled();
    expect(snap().value).toBe('running');
    expect(driver.calls.slice(5)).toEqual(['prepare', 'mount', 'start']);
    expect(snap().context).toMatchObject({ pid: 101, restarts: 0, exitCode: null });
  });

  test('a stop that cannot tell the exit code records null', async () => {
    const driver = new FakeDriver();
    driver.stopExitCode = null;
    const { actor, snap } = await runningJail({ driver });
    actor.send({ type: 'STOP' });
    await settled();
    expect(snap().context.exitCode).toBeNull();
  });
});

describe('destroy', () => {
  const restored: Array<[string, PersistedJail, Step[]]> = [
    ['pending', record({ state: 'pending' }), ['destroy']],
    ['prepared', record({ state: 'prepared' }), ['destroy']],
    ['mounted', record({ state: 'mounted' }), ['destroy']],
    ['running', record({ state: 'running', pid: 4242 }), ['stop', 'unmount', 'destroy']],
    ['stopped', record({ state: 'stopped', exitCode: 0 }), ['destroy']],
    ['failed', record({ state: 'failed', error: { step: 'mount', message: 'no such device' } }), ['destroy']],
    ['destroyed', record({ state: 'destroyed' }), []],
  ];

  test.each(restored)('a jail restored as %s that should be destroyed ends destroyed', async (_, restore, calls) => {
    const { snap, driver } = startJail({ restore, desired: 'destroyed' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(snap().status).toBe('done');
    expect(driver.calls).toEqual(calls);
    expect(persistedJailOf(snap())).toMatchObject({ state: 'destroyed', pid: null, restartAt: null });
  });

  test('DESTROY on a prepared jail destroys it', async () => {
    const { actor, snap, driver } = startJail({ desired: 'stopped' });
    await settled();
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['prepare', 'destroy']);
  });

  test('DESTROY on a running jail stops it, releases the mounts, then destroys it', async () => {
    const { actor, snap, driver } = await runningJail();
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'stop', 'unmount', 'destroy']);
  });

  test('DESTROY on a stopped jail with a pending restart destroys it and cancels the restart', async () => {
    const { actor, snap, driver, clock } = await runningJail();
    driver.exit(1, clock.now());
    await settled();
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'unmount', 'destroy']);
  });

  test('DESTROY on a failed jail still attempts destroy', async () => {
    const driver = new FakeDriver();
    driver.failing.set('prepare', new Error('zfs clone: dataset is busy'));
    const { actor, snap } = startJail({ driver, restart: 'never' });
    await settled();
    expect(snap().value).toBe('failed');
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(snap().context.error).toBeNull();
    expect(driver.calls).toEqual(['prepare', 'destroy']);
  });

  test('once destroy is requested, START and STOP no longer change the outcome', async () => {
    const driver = new FakeDriver();
    driver.held.add('destroy');
    const { actor, snap } = startJail({ driver, desired: 'destroyed' });
    await settled();
    actor.send({ type: 'START' });
    actor.send({ type: 'STOP' });
    expect(snap().context.desired).toBe('destroyed');
    driver.settle('destroy');
    await settled();
    expect(snap().value).toBe('destroyed');
  });
});

describe('a failing step leaves the jail failed, naming the step', () => {
  const scenarios: Array<[Step, (jail: ReturnType<typeof startJail>) => void]> = [
    ['prepare', () => {}],
    ['mount', () => {}],
    ['start', () => {}],
    ['stop', ({ actor }) => actor.send({ type: 'STOP' })],
    ['unmount', ({ actor }) => actor.send({ type: 'STOP' })],
  ];

  test.each(scenarios)('%s', async (step, act) => {
    const driver = new FakeDriver();
    driver.failing.set(step, new Error(`${step}: operation not permitted`));
    const jail = startJail({ driver, restart: 'never' });
    await settled();
    act(jail);
    await settled();
    expect(jail.snap().value).toBe('failed');
    expect(persistedJailOf(jail.snap())).toMatchObject({
      state: 'failed',
      pid: null,
      error: { step, message: `${step}: operation not permitted` },
    });
    expect(driver.calls.at(-1)).toBe(step);
  });

  test('destroy: failed with step destroy, retried on DESTROY and not in a tight loop', async () => {
    const driver = new FakeDriver();
    driver.failing.set('destroy', new Error('device busy'));
    const { actor, snap } = startJail({ driver, desired: 'destroyed' });
    await settled();
    expect(snap().value).toBe('failed');
    expect(snap().context.error).toEqual({ step: 'destroy', message: 'device busy' });
    expect(driver.calls).toEqual(['destroy']);
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(driver.calls).toEqual(['destroy', 'destroy']);
    driver.failing.delete('destroy');
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
  });

  test('destroy: a failed destroy is retried after the backoff', async () => {
    const driver = new FakeDriver();
    driver.failing.set('destroy', new Error('device busy'));
    const { snap, clock } = startJail({ driver, desired: 'destroyed' });
    await settled();
    driver.failing.delete('destroy');
    clock.increment(999);
    await settled();
    expect(snap().value).toBe('failed');
    clock.increment(1);
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['destroy', 'destroy']);
  });

  test('the message is cut to 4096 characters, and a rejection that is not an Error is kept as text', async () => {
    const driver = new FakeDriver();
    driver.failing.set('mount', new Error('x'.repeat(5000)));
    const first = startJail({ driver, restart: 'never' });
    await settled();
    expect(first.snap().context.error?.message).toBe('x'.repeat(4096));

    const other = new FakeDriver();
    other.failing.set('prepare', 'exit status 2');
    const second = startJail({ driver: other, restart: 'never' });
    await settled();
    expect(second.snap().context.error).toEqual({ step: 'prepare', message: 'exit status 2' });
  });

  test('a failed jail that should run is recovered after the backoff and counts a restart', async () => {
    const driver = new FakeDriver();
    driver.failing.set('mount', new Error('mount: busy'));
    const { snap, clock } = startJail({ driver, restart: 'on-failure' });
    await settled();
    expect(snap().value).toBe('failed');
    expect(snap().context).toMatchObject({ restarts: 0, restartAt: null });
    driver.failing.delete('mount');
    clock.increment(999);
    await settled();
    expect(snap().value).toBe('failed');
    clock.increment(1);
    await settled();
    expect(snap().value).toBe('running');
    expect(snap().context).toMatchObject({ restarts: 1, error: null, pid: 100 });
    expect(driver.calls).toEqual(['prepare', 'mount', 'unmount', 'prepare', 'mount', 'start']);
  });

  test('with policy never a failed jail waits for START', async () => {
    const driver = new FakeDriver();
    driver.failing.set('start', new Error('exec format error'));
    const { actor, snap, clock } = startJail({ driver, restart: 'never' });
    await settled();
    clock.increment(600_000);
    await settled();
    expect(snap().value).toBe('failed');
    driver.failing.delete('start');
    actor.send({ type: 'START' });
    await settled();
    expect(snap().value).toBe('running');
    expect(snap().context.restarts).toBe(0);
    expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'unmount', 'prepare', 'mount', 'start']);
  });

  test('a failure while recovering goes back to failed and waits a longer backoff', async () => {
    const driver = new FakeDriver();
    driver.failing.set('mount', new Error('mount: busy'));
    driver.failing.set('unmount', new Error('umount: busy'));
    const { snap, clock } = startJail({ driver, restart: 'always' });
    await settled();
    clock.increment(1000);
    await settled();
    expect(snap().value).toBe('failed');
    expect(snap().context).toMatchObject({ restarts: 1, error: { step: 'unmount', message: 'umount: busy' } });
    expect(driver.calls).toEqual(['prepare', 'mount', 'unmount']);
    clock.increment(1999);
    await settled();
    expect(driver.calls).toHaveLength(3);
    clock.increment(1);
    await settled();
    expect(driver.calls).toHaveLength(4);
    expect(snap().context.restarts).toBe(2);
  });

  test('a stop that fails during DESTROY still leads to destroy', async () => {
    const driver = new FakeDriver();
    driver.failing.set('stop', new Error('jail -r: no such jail'));
    const { actor, snap } = await runningJail({ driver });
    actor.send({ type: 'DESTROY' });
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls.slice(3)).toEqual(['stop', 'destroy']);
  });
});

describe('desired changes during a transitional state are acted on at the next stable state', () => {
  test('STOP during starting: the jail reaches running, then is stopped at once', async () => {
    const driver = new FakeDriver();
    driver.held.add('start');
    const { actor, snap } = startJail({ driver });
    await settled();
    expect(snap().value).toBe('starting');
    actor.send({ type: 'STOP' });
    expect(snap().value).toBe('starting');
    driver.settle('start', { output: { pid: 77 } });
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls).toEqual(['prepare', 'mount', 'start', 'stop', 'unmount']);
    expect(snap().context).toMatchObject({ pid: null, exitCode: 143, desired: 'stopped' });
  });

  test('DESTROY during preparing: destroyed right after prepared', async () => {
    const driver = new FakeDriver();
    driver.held.add('prepare');
    const { actor, snap } = startJail({ driver });
    await settled();
    actor.send({ type: 'DESTROY' });
    driver.settle('prepare');
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['prepare', 'destroy']);
  });

  test('STOP during mounting: mounts are released and the jail rests stopped', async () => {
    const driver = new FakeDriver();
    driver.held.add('mount');
    const { actor, snap } = startJail({ driver });
    await settled();
    actor.send({ type: 'STOP' });
    driver.settle('mount');
    await settled();
    expect(snap().value).toBe('stopped');
    expect(driver.calls).toEqual(['prepare', 'mount', 'unmount']);
  });

  test('STOP then START during stopping: the jail comes back up', async () => {
    const driver = new FakeDriver();
    const { actor, snap } = await runningJail({ driver });
    driver.held.add('stop');
    actor.send({ type: 'STOP' });
    actor.send({ type: 'START' });
    await settled();
    expect(snap().value).toBe('stopping');
    driver.settle('stop', { output: { exitCode: 0 } });
    await settled();
    expect(snap().value).toBe('running');
    expect(driver.calls.slice(3)).toEqual(['stop', 'unmount', 'prepare', 'mount', 'start']);
    expect(snap().context).toMatchObject({ pid: 101, restarts: 0 });
  });

  test('START during preparing of a jail that should be stopped: it goes on to running', async () => {
    const driver = new FakeDriver();
    driver.held.add('prepare');
    const { actor, snap } = startJail({ driver, desired: 'stopped' });
    await settled();
    actor.send({ type: 'START' });
    driver.settle('prepare');
    await settled();
    expect(snap().value).toBe('running');
  });

  test('DESTROY during recovering goes to destroy without preparing again', async () => {
    const driver = new FakeDriver();
    driver.failing.set('mount', new Error('mount: busy'));
    const { actor, snap } = startJail({ driver, restart: 'never' });
    await settled();
    driver.held.add('unmount');
    actor.send({ type: 'START' });
    await settled();
    expect(snap().value).toBe('recovering');
    actor.send({ type: 'DESTROY' });
    driver.settle('unmount');
    await settled();
    expect(snap().value).toBe('destroyed');
    expect(driver.calls).toEqual(['prepare', 'mount', 'unmount', 'destroy']);
  });
});

describe('restore from a saved record', () => {
  test('running with a pid: watched again, not started again; an exit is handled as usual', async () => {
    const { snap, driver, clock } = startJail({ restore: record({ state: 'running', pid: 4242, restarts: 3 }) });
    await settled();
    expect(snap().value).toBe('running');
    expect(driver.calls).toEqual([]);
    expect(driver.watchedPid).toBe(4242);
    driver.exit(1, clock.now());
    await settled();
    expect(snap().context).toMatchObject({ restarts: 4, restartAt: clock.now() + 8000 });
  });

  const cases: Array<[string, PersistedJail, DesiredState, string, Step[]]> = [
    ['running, should stop', record({ state: 'running', pid: 4242 }), 'stopped', 'stopped', ['stop', 'unmount']],
    ['running without a pid', record({ state: 'running' }), 'running', 'running', ['start']],
    ['pending', record({ state: 'pending' }), 'running', 'running', ['prepare', 'mount', 'start']],
    ['prepared, should run', record({ state: 'prepared' }), 'running', 'running', ['mount', 'start']],
    ['prepared, should stop', record({ state: 'prepared' }), 'stopped', 'prepared', []],
    ['mounted, should run', record({ state: 'mounted' }), 'running', 'running', ['start']],
    ['mounted, should stop', record({ state: 'mounted' }), 'stopped', 'stopped', ['unmount']],
    ['stopped, should stop', record({ state: 'stopped', exitCode: 0, restartAt: 5 }), 'stopped', 'stopped', []],
    ['stopped, should run', record({ state: 'stopped', exitCode: 0 }), 'running', 'running', ['prepare', 'mount', 'start']],
    ['failed, should stop', record({ state: 'failed', error: { step: 'start', message: 'boom' } }), 'stopped', 'failed', []],
    ['destroyed', record({ state: 'destroyed' }), 'running', 'destroyed', []],
  ];

  test.each(cases)('%s', async (_, restore, desired, value, calls) => {
    const { snap, driver, clock } = startJail({ restore, desired });
    await settled();
    clock.increment(600_000);
    await settled();
    expect(snap().value).toBe(value);
    expect(driver.calls).toEqual(calls);
    if (value === 'stopped' || value === 'prepared') expect(snap().context.restartAt).toBeNull();
    if (value === 'failed') expect(snap().context.error).toEqual({ step: 'start', message: 'boom' });
  });

  // The agent sends START once the saved restartAt has passed (test/integration/agent.test.ts);
  // here the machine alone, which can only wait its full backoff again.
  test('stopped with a pending restart: waits the backoff again', async () => {
    const restore = record({ state: 'stopped', exitCode: 1, restarts: 2, restartAt: 1_001_500 });
    const waiting = startJail({ restore });
    await settled();
    expect(waiting.snap().value).toBe('stopped');
    expect(waiting.snap().context.restartAt).toBe(1_001_500);
    waiting.clock.increment(restartDelayMs(1, { baseMs: 1000, maxMs: 30_000 }) - 1);
    await settled();
    expect(waiting.snap().value).toBe('stopped');
    waiting.clock.increment(1);
    await settled();
    expect(waiting.snap().value).toBe('running');
    expect(waiting.snap().context.restarts).toBe(2);
  });

  test('failed with a restart policy: retried after the backoff of its restart count', async () => {
    const restore = record({ state: 'failed', restarts: 2, error: { step: 'mount', message: 'busy' } });
    const { snap, driver, clock } = startJail({ restore, restart: 'always' });
    await settled();
    expect(snap().value).toBe('failed');
    expect(snap().context.error).toEqual({ step: 'mount', message: 'busy' });
    clock.increment(3999);
    await settled();
    expect(snap().value).toBe('failed');
    clock.increment(1);
    await settled();
    expect(snap().value).toBe('running');
    expect(snap().context).toMatchObject({ restarts: 3, error: null });
    expect(driver.calls).toEqual(['unmount', 'prepare', 'mount', 'start']);
  });

  test('a saved record restores to the same record', async () => {
    const { snap, driver, clock } = await runningJail();
    driver.exit(2, clock.now());
    await settled();
    const saved = persistedJailOf(snap());
    const again = startJail({ restore: saved });
    await settled();
    expect(persistedJailOf(again.snap())).toEqual(saved);
  });
});

// ---------------------------------------------------------------------------------------------
// Model-based: the whole graph of the machine, with the driver steps and timers as events.

const STEP_OF: Partial<Record<string, Step>> = {
  preparing: 'prepare',
  mounting: 'mount',
  starting: 'start',
  stopping: 'stop',
  unmounting: 'unmount',
  recovering: 'unmount',
  destroying: 'destroy',
};
const STABLE = new Set<string>(JAIL_STATES);
const GRAPH_BACKOFF = { baseMs: 1000, maxMs: 8000 };
const EXIT_AT = 5_000_000;

// Internal events (step outcomes, `after` timers) are not in the public event union.
type AnyEvent = JailLifecycleEvent | { type: string; output?: unknown; error?: unknown };
const asEvent = (e: AnyEvent) => e as JailLifecycleEvent;

function eventsFor(s: JailLifecycleSnapshot): JailLifecycleEvent[] {
  // A finished actor receives nothing (a live actor drops events once it is done).
  if (s.status === 'done') return [];
  const events: AnyEvent[] = [{ type: 'START' }, { type: 'STOP' }, { type: 'DESTROY' }];
  const value = s.value as string;
  const step = STEP_OF[value];
  if (step) {
    const output = step === 'start' ? { pid: 4242 } : step === 'stop' ? { exitCode: 143 } : undefined;
    events.push({ type: `xstate.done.actor.${step}`, output });
    events.push({ type: `xstate.error.actor.${step}`, error: new Error(`${step} broke`) });
  }
  if (value === 'running') {
    for (const exitCode of [0, 1, null]) events.push({ type: 'EXITED', exitCode, at: EXIT_AT });
    events.push({ type: 'EXITED', exitCode: 137, outOfMemory: true, at: EXIT_AT });
  }
  if (value === 'stopped') events.push({ type: 'xstate.after.restartDelay.jailLifecycle.stopped' });
  if (value === 'failed') events.push({ type: 'xstate.after.retryDelay.jailLifecycle.failed' });
  return events.map(asEvent);
}

/** Coarse enough for a finite graph (restart counts capped), fine enough for the rules. */
function serializeState(s: JailLifecycleSnapshot): string {
  const c = s.context;
  return JSON.stringify([
    s.value,
    c.state,
    c.desired,
    c.restartAt !== null,
    c.error?.step ?? null,
    c.pid !== null,
    Math.min(c.restarts, 2),
  ]);
}

/** Coarser still, for the paths replayed on a live actor: one path per distinct situation. */
function serializeSituation(s: JailLifecycleSnapshot): string {
  return JSON.stringify([modelOf(s), Math.min(s.context.restarts, 1)]);
}

/** The rules, written out independently of XState: what a jail should do next. */
interface ModelState {
  value: string;
  desired: DesiredState;
  restartPending: boolean;
  errorStep: string | null;
}

function settleModel(m: ModelState): ModelState {
  for (;;) {
    const next = ((): string | null => {
      switch (m.value) {
        case 'pending':
          return m.desired === 'destroyed' ? 'destroying' : 'preparing';
        case 'prepared':
          return m.desired === 'destroyed' ? 'destroying' : m.desired === 'running' ? 'mounting' : null;
        case 'mounted':
          return m.desired === 'destroyed' ? 'destroying' : m.desired === 'running' ? 'starting' : 'unmounting';
        case 'running':
          return m.desired === 'running' ? null : 'stopping';
        case 'stopped':
          if (m.desired === 'destroyed') return 'destroying';
          return m.desired === 'running' && !m.restartPending ? 'preparing' : null;
        case 'failed':
          return m.desired === 'destroyed' && m.errorStep !== 'destroy' ? 'destroying' : null;
        default:
          return null;
      }
    })();
    if (next === null) return m;
    m = { ...m, value: next, errorStep: m.value === 'failed' ? null : m.errorStep };
  }
}

function modelStep(from: ModelState, event: AnyEvent, policy: RestartPolicy): ModelState {
  let m: ModelState = { ...from };
  const leave = (value: string) => {
    m = { ...m, value, errorStep: m.value === 'failed' ? null : m.errorStep };
  };
  const step = STEP_OF[m.value];
  if (m.value === 'destroyed') return m;
  if (event.type === 'START') {
    if (m.desired !== 'destroyed') {
      m.desired = 'running';
      if (m.value === 'stopped') m.restartPending = false;
      if (m.value === 'failed') leave('recovering');
    }
  } else if (event.type === 'STOP') {
    if (m.desired !== 'destroyed') m = { ...m, desired: 'stopped', restartPending: false };
  } else if (event.type === 'DESTROY') {
    m = { ...m, desired: 'destroyed', restartPending: false };
    if (m.value === 'failed') leave('destroying');
  } else if (event.type === 'EXITED' && m.value === 'running' && 'outOfMemory' in event && event.outOfMemory) {
    // killed at its memory limit: a failure of the running jail, retried like a failed step
    m = { ...m, value: 'failed', errorStep: 'run', restartPending: false };
  } else if (event.type === 'EXITED' && m.value === 'running' && 'exitCode' in event) {
    const restart = m.desired === 'running' && (policy === 'always' || (policy === 'on-failure' && event.exitCode !== 0));
    m = { ...m, restartPending: restart, desired: restart ? m.desired : 'stopped' };
    leave('unmounting');
  } else if (step && event.type === `xstate.error.actor.${step}`) {
    m = { ...m, value: 'failed', errorStep: step, restartPending: false };
  } else if (step && event.type === `xstate.done.actor.${step}`) {
    const destroyNext = m.desired === 'destroyed' ? 'destroying' : null;
    const next: Record<string, string> = {
      preparing: 'prepared',
      mounting: 'mounted',
      starting: 'running',
      stopping: 'unmounting',
      unmounting: destroyNext ?? 'stopped',
      recovering: destroyNext ?? 'preparing',
      destroying: 'destroyed',
    };
    leave(next[m.value]!);
    if (m.value === 'running' || m.value === 'destroyed') m.restartPending = false;
  } else if (event.type.startsWith('xstate.after.') && m.value === 'stopped') {
    if (m.desired === 'running' && m.restartPending) {
      m.restartPending = false;
      leave('preparing');
    }
  } else if (event.type.startsWith('xstate.after.') && m.value === 'failed') {
    if (m.desired === 'running' && policy !== 'never') leave('recovering');
    else if (m.desired === 'destroyed') leave('destroying');
  }
  return settleModel(m);
}

const modelOf = (s: JailLifecycleSnapshot): ModelState => ({
  value: s.value as string,
  desired: s.context.desired,
  restartPending: s.context.restartAt !== null,
  errorStep: s.context.error?.step ?? null,
});

/** Problems with one transition of the machine, checked against the model and the invariants. */
function checkTransition(prev: JailLifecycleSnapshot, event: AnyEvent, next: JailLifecycleSnapshot, policy: RestartPolicy): string[] {
  const problems: string[] = [];
  const expected = modelStep(modelOf(prev), event, policy);
  const actual = modelOf(next);
  if (JSON.stringify(expected) !== JSON.stringify(actual)) {
    problems.push(`expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
  const c = next.context;
  const value = next.value as string;
  if ((c.pid !== null) !== (value === 'running' || value === 'stopping')) problems.push(`pid ${c.pid} in ${value}`);
  if ((c.error !== null) !== (value === 'failed')) problems.push(`error ${JSON.stringify(c.error)} in ${value}`);
  if (STABLE.has(value) && c.state !== value) problems.push(`context.state ${c.state} in ${value}`);
  if (!STABLE.has(c.state)) problems.push(`context.state ${c.state} is not a stable state`);
  if ((value === 'destroyed') !== (next.status === 'done')) problems.push(`status ${next.status} in ${value}`);
  const counted = c.restarts - prev.context.restarts;
  const restartsNow =
    (event.type === 'EXITED' && c.restartAt !== null) || (prev.value === 'failed' && event.type.startsWith('xstate.after.') && value === 'recovering');
  if (counted !== (restartsNow ? 1 : 0)) problems.push(`restarts went from ${prev.context.restarts} to ${c.restarts}`);
  if (event.type === 'EXITED' && 'exitCode' in event) {
    if (c.exitCode !== event.exitCode) problems.push(`exitCode ${c.exitCode} after EXITED ${event.exitCode}`);
    if (c.restartAt !== null && c.restartAt !== EXIT_AT + restartDelayMs(prev.context.restarts, GRAPH_BACKOFF)) {
      problems.push(`restartAt ${c.restartAt}`);
    }
  }
  const failedStep = event.type === 'EXITED' && 'outOfMemory' in event && event.outOfMemory ? 'run' : STEP_OF[prev.value as string];
  if (value === 'failed' && prev.value !== 'failed' && c.error?.step !== failedStep) {
    problems.push(`failed in ${String(prev.value)} names step ${c.error?.step}`);
  }
  return problems.map((p) => `${String(prev.value)} --${event.type}--> ${value}: ${p}`);
}

/** A state the machine may rest in, given the rules. */
function restsConsistently(s: JailLifecycleSnapshot): boolean {
  const { desired, restartAt, error } = s.context;
  switch (s.value) {
    case 'prepared':
      return desired === 'stopped';
    case 'running':
      return desired === 'running';
    case 'stopped':
      return desired === 'stopped' ? restartAt === null : desired === 'running' && restartAt !== null;
    case 'failed':
      return desired !== 'destroyed' || error?.step === 'destroy';
    case 'destroyed':
      return true;
    case 'pending':
    case 'mounted':
      return false;
    default:
      return STEP_OF[s.value as string] !== undefined;
  }
}

interface GraphConfig {
  name: string;
  policy: RestartPolicy;
  desired: DesiredState;
  restore?: PersistedJail;
}

const RESTORES: Array<PersistedJail | undefined> = [
  undefined,
  record({ state: 'pending' }),
  record({ state: 'prepared' }),
  record({ state: 'mounted' }),
  record({ state: 'running', pid: 4242 }),
  record({ state: 'stopped', exitCode: 1, restarts: 1, restartAt: 4_000_000 }),
  record({ state: 'failed', restarts: 1, error: { step: 'mount', message: 'busy' } }),
  record({ state: 'destroyed' }),
];

// A new jail under every policy; restored jails under on-failure (which has both kinds of exit
// decision) and a restored failed jail under never too. The rest of a restored jail's graph is
// the graph a new jail walks.
const CONFIGS: GraphConfig[] = (['always', 'on-failure', 'never'] as const).flatMap((policy) =>
  (['running', 'stopped', 'destroyed'] as const).flatMap((desired) =>
    RESTORES.filter((r) => r === undefined || policy === 'on-failure' || (policy === 'never' && r.state === 'failed')).map((restore) => ({
      name: `${policy}/${desired}/${restore?.state ?? 'new'}`,
      policy,
      desired,
      restore,
    })),
  ),
);

const graphInput = (c: GraphConfig) => ({ spec: spec(c.policy), generation: 1, desired: c.desired, restore: c.restore, backoff: GRAPH_BACKOFF });
const graphOptions = (c: GraphConfig) => ({ input: graphInput(c), events: eventsFor, serializeState, limit: 100_000 });

describe('model-based: every transition of the lifecycle graph follows the rules', () => {
  test('every transition reachable from a new or restored jail matches the model', () => {
    const problems: string[] = [];
    const seen = new Set<string>();
    let transitions = 0;
    for (const config of CONFIGS) {
      const adjacency = getAdjacencyMap(jailLifecycleMachine, graphOptions(config));
      for (const { state, event, nextState } of adjacencyMapToArray(adjacency)) {
        transitions++;
        problems.push(...checkTransition(state, event, nextState, config.policy).map((p) => `[${config.name}] ${p}`));
        for (const s of [state, nextState]) {
          seen.add(s.context.state);
          if (STABLE.has(s.value as string)) seen.add(s.value as string);
        }
      }
    }
    expect(problems.slice(0, 10)).toEqual([]);
    expect(transitions).toBeGreaterThan(1000);
    expect([...seen].sort()).toEqual([...JAIL_STATES].sort());
  });

  test('every shortest path ends in a state the rules allow it to rest in, and all stable states are reached', () => {
    const config = CONFIGS.find((c) => c.name === 'on-failure/running/new')!;
    const paths = getShortestPaths(jailLifecycleMachine, graphOptions(config));
    const reached = new Set<string>();
    const bad: string[] = [];
    for (const path of paths) {
      reached.add(path.state.context.state);
      if (!restsConsistently(path.state)) bad.push(`${serializeState(path.state)} via ${path.steps.map((s) => s.event.type).join(' ')}`);
    }
    expect(bad).toEqual([]);
    expect([...reached].sort()).toEqual([...JAIL_STATES].sort());
  });
});

describe('model-based: the shortest paths replayed on a live actor with fake steps', () => {
  const replayed: GraphConfig[] = [
    { name: 'new, on-failure, should run', policy: 'on-failure', desired: 'running' },
    { name: 'new, always, should stop', policy: 'always', desired: 'stopped' },
    { name: 'restored running, never, should run', policy: 'never', desired: 'running', restore: RESTORES.find((r) => r?.state === 'running') },
    { name: 'restored failed, always, should run', policy: 'always', desired: 'running', restore: RESTORES.find((r) => r?.state === 'failed') },
  ];

  test.each(replayed)('$name', async (config) => {
    const name = config.name;
    const paths = getShortestPaths(jailLifecycleMachine, { ...graphOptions(config), serializeState: serializeSituation });
    expect(paths.length).toBeGreaterThan(20);
    for (const path of paths) {
      const driver = new FakeDriver().holdAll();
      const clock = new SimulatedClock();
      const actor = createActor(jailLifecycleMachine.provide({ actors: driver.actors() }), { input: graphInput(config), clock });
      started.push(actor);
      actor.start();
      await settled();
      for (const { event, state } of path.steps.slice(1)) {
        const e = event as AnyEvent;
        const [, kind, , id] = e.type.split('.');
        if (e.type === 'EXITED' && 'outOfMemory' in e && e.outOfMemory) driver.exitOutOfMemory(e.exitCode ?? 137, e.at);
        else if (e.type === 'EXITED' && 'exitCode' in e) driver.exit(e.exitCode, e.at);
        else if (kind === 'done') driver.settle(id as Step, { output: 'output' in e ? e.output : undefined });
        else if (kind === 'error') driver.settle(id as Step, { error: 'error' in e ? e.error : undefined });
        else if (kind === 'after') clock.increment(GRAPH_BACKOFF.maxMs);
        else actor.send(asEvent(e));
        await settled();
        const live = actor.getSnapshot();
        const where = `${name}: ${path.steps.map((s) => s.event.type).join(' ')}`;
        // The graph merges restart counts from 1 up (see serializeSituation), so compare them capped.
        expect({ where, ...modelOf(live), restarts: Math.min(live.context.restarts, 1), pid: live.context.pid }).toEqual({
          where,
          ...modelOf(state),
          restarts: Math.min(state.context.restarts, 1),
          pid: state.context.pid,
        });
        const step = STEP_OF[live.value as string];
        if (step) expect({ where, waiting: driver.isWaiting(step) }).toEqual({ where, waiting: true });
        if (live.value === 'running') expect(driver.watchedPid).toBe(live.context.pid);
      }
      actor.stop();
    }
  });
});

describe('the default backoff is the one the README documents', () => {
  // README, spec format: "restart: always ... backoff 1 s doubling to 30 s". The agent runs the
  // machine without a backoff of its own unless --backoff-base-ms is given.
  test('a jail that keeps exiting waits 1 s, then twice as long each time, never more than 30 s', async () => {
    const { snap, driver, clock } = await runningJail();
    const waits = [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
    for (const [i, wait] of waits.entries()) {
      const at = clock.now();
      driver.exit(1, at);
      await settled();
      expect(snap().context).toMatchObject({ restarts: i + 1, restartAt: at + wait });
      clock.increment(wait - 1);
      await settled();
      expect(snap().value).toBe('stopped');
      clock.increment(1);
      await settled();
      expect(snap().value).toBe('running');
    }
  });

  test('a jail that failed many times is retried after the 30 s cap, not later', async () => {
    const restore = record({ state: 'failed', restarts: 40, error: { step: 'mount', message: 'busy' } });
    const { snap, clock } = startJail({ restore, restart: 'always' });
    await settled();
    clock.increment(30_000 - 1);
    await settled();
    expect(snap().value).toBe('failed');
    clock.increment(1);
    await settled();
    expect(snap().value).toBe('running');
  });
});
