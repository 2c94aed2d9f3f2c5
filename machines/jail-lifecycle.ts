// The lifecycle of one jail as a pure XState machine: prepare, mount, start, watch, stop, unmount,
// destroy, with the restart policy and a capped exponential backoff. Every effect (the driver steps
// and watching the jail's init) is an injected actor, provided by the agent with
// `jailLifecycleMachine.provide({ actors })`. This file must never do I/O, read the clock or start
// timers of its own: the only timers are XState `after` delays, and every deadline the agent has to
// survive a restart with is kept in context (`restartAt`), because XState does not restore `after`.
import { assign, fromCallback, fromPromise, setup, type SnapshotFrom } from 'xstate';
import { JAIL_STATES, type DriverStep, type JailError, type JailSpec, type JailState } from '../contracts/index.js';

/** What the agent was asked to bring the jail to. `destroyed` is final: START and STOP no longer change it. */
export type DesiredState = 'running' | 'stopped' | 'destroyed';

/** The record the agent saves after each stable state and restores on restart. */
export interface PersistedJail {
  /** A stable state only: pending | prepared | mounted | running | stopped | failed | destroyed. */
  state: JailState;
  pid: number | null;
  exitCode: number | null;
  /** Automatic restarts so far (after an exit or a failure); drives the backoff. */
  restarts: number;
  error: JailError | null;
  /** Epoch ms deadline of a pending restart after an exit; null when none is pending. */
  restartAt: number | null;
}

export interface JailLifecycleInput {
  spec: JailSpec;
  generation: number;
  desired: DesiredState;
  /** When present the machine starts in `restore.state` instead of `pending`. */
  restore?: PersistedJail;
  /** Default { baseMs: 1000, maxMs: 30000 }. */
  backoff?: { baseMs: number; maxMs: number };
}

/** `state` in context is the last stable state entered (it lags behind in transitional states). */
export interface JailLifecycleContext extends PersistedJail {
  spec: JailSpec;
  generation: number;
  desired: DesiredState;
  backoff: { baseMs: number; maxMs: number };
}

export type JailLifecycleEvent =
  | { type: 'START' }
  | { type: 'STOP' }
  | { type: 'DESTROY' }
  /**
   * The jail's init exited; sent by the `watch` actor. `at` is epoch ms. `outOfMemory`: the
   * kernel killed it at its memory limit, which makes the exit a failure of the running jail.
   */
  | { type: 'EXITED'; exitCode: number | null; at: number; outOfMemory?: boolean }
  /**
   * The jail's health check failed `failures` times in a row (the agent's check runner); `at` is
   * epoch ms. The jail is stopped and, like a failed exit, restarted per its policy.
   */
  | { type: 'UNHEALTHY'; reason: string; at: number };

interface StepInput {
  spec: JailSpec;
}

const DEFAULT_BACKOFF = { baseMs: 1000, maxMs: 30_000 } as const;
const ERROR_MESSAGE_MAX = 4096;
const STABLE_STATES: ReadonlySet<string> = new Set<string>(JAIL_STATES);

function notProvided(name: string): never {
  throw new Error(`jail lifecycle: the "${name}" actor was not provided (use jailLifecycleMachine.provide({ actors }))`);
}

/** Capped exponential backoff: min(maxMs, baseMs * 2^restarts), never negative. */
export function restartDelayMs(restarts: number, backoff: { baseMs: number; maxMs: number }): number {
  const maxMs = Math.max(0, backoff.maxMs);
  if (backoff.baseMs <= 0) return 0;
  const delay = backoff.baseMs * 2 ** Math.max(0, Math.floor(restarts));
  return Number.isFinite(delay) ? Math.min(maxMs, delay) : maxMs;
}

function describeFailure(step: DriverStep, error: unknown): JailError {
  const text = error instanceof Error ? error.message : String(error);
  return { step, message: text.slice(0, ERROR_MESSAGE_MAX) };
}

/** The failure of a jail that its memory limit killed, as events and `jailfleet ps` show it. */
function outOfMemoryError(spec: JailSpec): JailError {
  return { step: 'run', message: `out of memory: killed at the ${spec.resources.memoryMB} MB limit` };
}

/** The failure of a jail its health check found hung, as events and `jailfleet ps` show it. */
function healthError(reason: string): JailError {
  return { step: 'run', message: reason.slice(0, ERROR_MESSAGE_MAX) };
}

/** Whether the restart policy asks for a restart after the jail's init exited with `exitCode`. */
function policyRestarts(policy: JailSpec['restart'], exitCode: number | null): boolean {
  if (policy === 'always') return true;
  if (policy === 'on-failure') return exitCode !== 0;
  return false;
}

export const jailLifecycleMachine = setup({
  types: {
    context: {} as JailLifecycleContext,
    events: {} as JailLifecycleEvent,
    input: {} as JailLifecycleInput,
  },
  actors: {
    prepare: fromPromise<void, StepInput>(async () => notProvided('prepare')),
    mount: fromPromise<void, StepInput>(async () => notProvided('mount')),
    start: fromPromise<{ pid: number }, StepInput>(async () => notProvided('start')),
    stop: fromPromise<{ exitCode: number | null }, StepInput>(async () => notProvided('stop')),
    unmount: fromPromise<void, StepInput>(async () => notProvided('unmount')),
    destroy: fromPromise<void, StepInput>(async () => notProvided('destroy')),
    watch: fromCallback<any, StepInput & { pid: number }>(() => notProvided('watch')),
  },
  guards: {
    wantsRunning: ({ context }) => context.desired === 'running',
    wantsStopped: ({ context }) => context.desired === 'stopped',
    wantsDestroyed: ({ context }) => context.desired === 'destroyed',
    notDestroyed: ({ context }) => context.desired !== 'destroyed',
    /** Stopped with desired running and no pending restart: start now. */
    startsNow: ({ context }) => context.desired === 'running' && context.restartAt === null,
    restartDue: ({ context }) => context.desired === 'running' && context.restartAt !== null,
    /** A failed jail is retried only while it should run and its policy allows restarts. */
    retriesAfterFailure: ({ context }) => context.desired === 'running' && context.spec.restart !== 'never',
    /** After a failed destroy, destroy is retried on DESTROY or after the backoff, never at once. */
    destroysNow: ({ context }) => context.desired === 'destroyed' && context.error?.step !== 'destroy',
    restartsAfterExit: ({ context, event }) =>
      event.type === 'EXITED' && context.desired === 'running' && policyRestarts(context.spec.restart, event.exitCode),
  },
  actions: {
    markStable: assign((_, params: { state: JailState }) => ({ state: params.state })),
    recordFailure: assign((_, params: { step: DriverStep; error: unknown }) => ({
      error: describeFailure(params.step, params.error),
      pid: null,
      restartAt: null,
    })),
  },
  delays: {
    /** The backoff of a restart after an exit; `restarts` was already counted when it exited. */
    restartDelay: ({ context }) => restartDelayMs(context.restarts - 1, context.backoff),
    /** The backoff before retrying a failed jail; `restarts` is counted when the retry begins. */
    retryDelay: ({ context }) => restartDelayMs(context.restarts, context.backoff),
  },
}).createMachine({
  id: 'jailLifecycle',
  initial: 'restoring',
  context: ({ input }) => {
    const r = input.restore;
    const desired = input.desired;
    return {
      spec: input.spec,
      generation: input.generation,
      desired,
      backoff: input.backoff ?? { ...DEFAULT_BACKOFF },
      state: r?.state ?? 'pending',
      pid: r?.pid ?? null,
      exitCode: r?.exitCode ?? null,
      restarts: r?.restarts ?? 0,
      error: r?.error ?? null,
      // Only a stopped jail that should run can have a restart pending.
      restartAt: r?.state === 'stopped' && desired === 'running' ? (r.restartAt ?? null) : null,
    };
  },
  on: {
    START: { guard: 'notDestroyed', actions: assign({ desired: 'running' }) },
    STOP: { guard: 'notDestroyed', actions: assign({ desired: 'stopped', restartAt: null }) },
    DESTROY: { actions: assign({ desired: 'destroyed', restartAt: null }) },
  },
  states: {
    restoring: {
      always: [
        { guard: ({ context }) => context.state === 'running' && context.pid !== null, target: 'running' },
        // A running record without a pid cannot be watched: its mounts exist, its process is unknown.
        { guard: ({ context }) => context.state === 'running' || context.state === 'mounted', target: 'mounted' },
        { guard: ({ context }) => context.state === 'prepared', target: 'prepared' },
        { guard: ({ context }) => context.state === 'stopped', target: 'stopped' },
        { guard: ({ context }) => context.state === 'failed', target: 'failed' },
        { guard: ({ context }) => context.state === 'destroyed', target: 'destroyed' },
        { target: 'pending' },
      ],
    },
    pending: {
      entry: { type: 'markStable', params: { state: 'pending' } },
      // Even a pending jail goes through destroy: a crash during `preparing` leaves a pending record.
      always: [{ guard: 'wantsDestroyed', target: 'destroying' }, { target: 'preparing' }],
    },
    preparing: {
      invoke: {
        id: 'prepare',
        src: 'prepare',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: { target: 'prepared' },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'prepare', error: event.error }) },
        },
      },
    },
    prepared: {
      entry: { type: 'markStable', params: { state: 'prepared' } },
      always: [
        { guard: 'wantsDestroyed', target: 'destroying' },
        { guard: 'wantsRunning', target: 'mounting' },
      ],
    },
    mounting: {
      invoke: {
        id: 'mount',
        src: 'mount',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: { target: 'mounted' },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'mount', error: event.error }) },
        },
      },
    },
    mounted: {
      entry: { type: 'markStable', params: { state: 'mounted' } },
      always: [
        { guard: 'wantsDestroyed', target: 'destroying' },
        { guard: 'wantsRunning', target: 'starting' },
        { target: 'unmounting' },
      ],
    },
    starting: {
      invoke: {
        id: 'start',
        src: 'start',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: {
          target: 'running',
          actions: assign(({ event }) => ({ pid: event.output.pid, exitCode: null, error: null, restartAt: null })),
        },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'start', error: event.error }) },
        },
      },
    },
    running: {
      entry: { type: 'markStable', params: { state: 'running' } },
      invoke: {
        id: 'watch',
        src: 'watch',
        // Entered only with a pid: from `starting` or from a restored running record that has one.
        input: ({ context }) => ({ spec: context.spec, pid: context.pid ?? 0 }),
      },
      always: [{ guard: ({ context }) => context.desired !== 'running', target: 'stopping' }],
      on: {
        EXITED: [
          {
            // a failure like a failed step: `failed` retries it per the restart policy (on-failure
            // and always do, never does not) and keeps the mounts until then
            guard: ({ event }) => event.outOfMemory === true,
            target: 'failed',
            actions: assign(({ context, event }) => ({ exitCode: event.exitCode, pid: null, restartAt: null, error: outOfMemoryError(context.spec) })),
          },
          {
            guard: 'restartsAfterExit',
            target: 'unmounting',
            actions: assign(({ context, event }) => ({
              exitCode: event.exitCode,
              pid: null,
              restarts: context.restarts + 1,
              restartAt: event.at + restartDelayMs(context.restarts, context.backoff),
            })),
          },
          {
            // The policy declines a restart: the jail is done running, so it now wants to stay stopped.
            target: 'unmounting',
            actions: assign(({ event }) => ({ exitCode: event.exitCode, pid: null, restartAt: null, desired: 'stopped' as const })),
          },
        ],
        // a hung jail is a failed one: stopped, then restarted as a failed exit would be (always
        // and on-failure restart, never leaves it stopped), the check's reason kept as its error
        UNHEALTHY: [
          {
            guard: ({ context }) => context.desired === 'running' && policyRestarts(context.spec.restart, 1),
            target: 'stopping',
            actions: assign(({ context, event }) => ({
              restarts: context.restarts + 1,
              restartAt: event.at + restartDelayMs(context.restarts, context.backoff),
              error: healthError(event.reason),
            })),
          },
          { target: 'stopping', actions: assign(({ event }) => ({ desired: 'stopped' as const, restartAt: null, error: healthError(event.reason) })) },
        ],
      },
    },
    stopping: {
      invoke: {
        id: 'stop',
        src: 'stop',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: {
          target: 'unmounting',
          actions: assign(({ event }) => ({ exitCode: event.output.exitCode, pid: null })),
        },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'stop', error: event.error }) },
        },
      },
    },
    unmounting: {
      invoke: {
        id: 'unmount',
        src: 'unmount',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: [{ guard: 'wantsDestroyed', target: 'destroying' }, { target: 'stopped' }],
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'unmount', error: event.error }) },
        },
      },
    },
    stopped: {
      entry: { type: 'markStable', params: { state: 'stopped' } },
      // Leaving stopped goes through preparing: stopping released the root's base mounts with
      // the rest (and a host reboot releases them too), and prepare remakes them, idempotently.
      always: [
        { guard: 'wantsDestroyed', target: 'destroying' },
        { guard: 'startsNow', target: 'preparing' },
      ],
      // A pending restart waits here. After an agent restart this timer starts over from the full
      // backoff; the agent sends START itself once the saved `restartAt` has passed
      // (Agent.resumeRestart), which cancels it.
      after: {
        restartDelay: { guard: 'restartDue', target: 'preparing', actions: assign({ restartAt: null }) },
      },
      on: {
        // START cancels the backoff and starts at once (through `startsNow`).
        START: { guard: 'notDestroyed', actions: assign({ desired: 'running', restartAt: null }) },
      },
    },
    failed: {
      entry: { type: 'markStable', params: { state: 'failed' } },
      exit: assign({ error: null }),
      always: [{ guard: 'destroysNow', target: 'destroying' }],
      after: {
        retryDelay: [
          {
            guard: 'retriesAfterFailure',
            target: 'recovering',
            actions: assign(({ context }) => ({ restarts: context.restarts + 1 })),
          },
          { guard: 'wantsDestroyed', target: 'destroying' },
        ],
      },
      on: {
        START: { guard: 'notDestroyed', target: 'recovering', actions: assign({ desired: 'running' }) },
        DESTROY: { target: 'destroying', actions: assign({ desired: 'destroyed', restartAt: null }) },
      },
    },
    recovering: {
      // Releases whatever a failed step left mounted, then prepares again (driver steps are idempotent).
      invoke: {
        id: 'unmount',
        src: 'unmount',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: [{ guard: 'wantsDestroyed', target: 'destroying' }, { target: 'preparing' }],
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'unmount', error: event.error }) },
        },
      },
    },
    destroying: {
      invoke: {
        id: 'destroy',
        src: 'destroy',
        input: ({ context }) => ({ spec: context.spec }),
        onDone: { target: 'destroyed', actions: assign({ pid: null, restartAt: null }) },
        onError: {
          target: 'failed',
          actions: { type: 'recordFailure', params: ({ event }) => ({ step: 'destroy', error: event.error }) },
        },
      },
    },
    destroyed: {
      type: 'final',
      entry: { type: 'markStable', params: { state: 'destroyed' } },
    },
  },
});

export type JailLifecycleSnapshot = SnapshotFrom<typeof jailLifecycleMachine>;

/** The JailState of a snapshot when it rests in a stable state; null in a transitional state. */
export function stableStateOf(snapshot: Pick<JailLifecycleSnapshot, 'value'>): JailState | null {
  const value = snapshot.value;
  return typeof value === 'string' && STABLE_STATES.has(value) ? (value as JailState) : null;
}

/**
 * The record to save. Meant for stable states; in a transitional state it carries the last
 * stable state entered, which is what a restart should resume from.
 */
export function persistedJailOf(snapshot: Pick<JailLifecycleSnapshot, 'value' | 'context'>): PersistedJail {
  const c = snapshot.context;
  return {
    state: stableStateOf(snapshot) ?? c.state,
    pid: c.pid,
    exitCode: c.exitCode,
    restarts: c.restarts,
    error: c.error,
    restartAt: c.restartAt,
  };
}
