// The per-host agent: consumes its host's durable command stream, drives one lifecycle actor per
// jail through the host's driver, publishes an event on every stable state, heartbeats, and
// answers exec requests. It never decides placement. A malformed message is dropped, never fatal.
import os, { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { createActor, fromCallback, fromPromise, waitFor, type Actor } from 'xstate';
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, type JsMsg } from '@nats-io/jetstream';
import {
  BUCKET_PLACEMENT,
  CMD_STREAM,
  Conflict,
  NotFound,
  WIRE_VERSION,
  agentConsumerName,
  commandMsgId,
  commandSchema,
  execRequestSchema,
  logsRequestSchema,
  sessionRequestSchema,
  type SessionRequest,
  placementRecordSchema,
  subjects,
  type Command,
  type ExecRequest,
  type Heartbeat,
  type LogsRequest,
  type HostResources,
  type JailUsage,
  type Labels,
  type JailSpec,
  type PlacementRecord,
  type StateEvent,
  type HealthState,
  vnetOf,
} from '../../contracts/index.js';
import {
  jailLifecycleMachine,
  persistedJailOf,
  stableStateOf,
  type DesiredState,
  type PersistedJail,
} from '../../machines/index.js';
import {
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_PARALLEL_STEPS_PER_CORE,
  MAX_DEFAULT_PARALLEL_STEPS,
  MIN_DEFAULT_PARALLEL_STEPS,
  KeyedQueue,
  connectNats,
  decodeWith,
  encodeJson,
  ensureTopology,
  followRecords,
  keepConsuming,
  serveRpc,
  type KeptConsumer,
  type Logger,
  type NatsConnection,
  type Topology,
} from '../common/index.js';
import { DriverStepFailed, type JailDriver } from './drivers/driver.js';
import { JailStore, type StoredJail } from './jail-store.js';
import { JailSessions } from './jail-sessions.js';
import { CONSOLE_SAMPLE_MS, ConsoleTimes } from './console-times.js';
import { AgentMetrics } from './agent-metrics.js';
import { HealthChecks, type HealthResultListener, type JailAddress } from './health-checks.js';

export interface AgentOptions {
  host: string;
  dataDir: string;
  servers: string[];
  driver: JailDriver;
  logger: Logger;
  heartbeatMs?: number;
  /** What this host offers to jails (default: the machine's cores and memory). */
  capacity?: HostResources;
  labels?: Labels;
  /** Host volumes offered to jails, name → read-only (advertised in heartbeats for placement). */
  volumes?: Record<string, boolean>;
  /** The digests this host holds unpacked now (advertised in heartbeats). */
  images?: () => string[];
  /** Driver steps run at once (default: defaultParallelSteps()). */
  maxParallelSteps?: number;
  backoff?: { baseMs: number; maxMs: number };
  /** Where a jail's http and tcp checks go (default 127.0.0.1: `network: inherit` shares the host's stack). */
  healthAddress?: JailAddress;
  /** Told every health check's result (a metrics counter). */
  onHealthResult?: HealthResultListener;
}

/** The whole machine: every core, and the memory less a 5 % reserve for the host itself. */
export const machineCapacity = (): HostResources => ({ cpu: os.cpus().length, memoryMB: Math.floor((os.totalmem() / 1024 / 1024) * 0.95) });

/**
 * Driver steps at once when not told: four per core. A step mostly waits on the kernel (a spawn,
 * an exec, a pivot), so more than one per core keeps the cores busy; bounded so a burst of 1,000
 * starts still leaves the event loop free for heartbeats.
 */
export const defaultParallelSteps = (): number =>
  Math.min(MAX_DEFAULT_PARALLEL_STEPS, Math.max(MIN_DEFAULT_PARALLEL_STEPS, os.availableParallelism() * DEFAULT_PARALLEL_STEPS_PER_CORE));

/** The resources that `specs` reserve together (cpu rounded to 1/1000 core, against float drift). */
const allocatedOf = (specs: readonly JailSpec[]): HostResources => ({
  cpu: Math.round(specs.reduce((a, s) => a + s.resources.cpu, 0) * 1000) / 1000,
  memoryMB: specs.reduce((a, s) => a + s.resources.memoryMB, 0),
});

type JailActor = Actor<typeof jailLifecycleMachine>;

/** How often the agent reads its running jails' cgroups for the heartbeat (the ps usage column). */
const USAGE_EVERY_MS = 5000;

/** Resolves true once `p` settles, false after `ms` (p keeps going). */
const within = (ms: number, p: Promise<unknown> | undefined): Promise<boolean> =>
  new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    void Promise.resolve(p).finally(() => (clearTimeout(t), resolve(true)));
  });

/**
 * At most `n` tasks at once; the rest wait their turn, the highest priority first, then in order.
 * Later lifecycle steps go first, so a burst of jails comes up one after another (the first runs
 * in a moment) rather than all prepared, then all mounted, then all started at the very end.
 */
export class StepLimit {
  private active = 0;
  /** One FIFO per priority: a waiter is queued and released in O(1), however long the burst. */
  private readonly waiting = new Map<number, { go: () => void }[]>();
  private readonly priorities: number[] = [];
  private readonly head = new Map<number, number>();
  constructor(private readonly n: number) {}
  async run<T>(task: () => Promise<T>, priority = 0): Promise<T> {
    if (this.active >= this.n) {
      await new Promise<void>((go) => {
        let queue = this.waiting.get(priority);
        if (!queue) {
          this.waiting.set(priority, (queue = []));
          this.priorities.push(priority);
          this.priorities.sort((a, b) => b - a);
        }
        queue.push({ go });
      });
    }
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.next()?.go();
    }
  }

  /** The first waiter of the highest priority, taken off its queue. */
  private next(): { go: () => void } | undefined {
    for (const priority of this.priorities) {
      const queue = this.waiting.get(priority)!;
      const at = this.head.get(priority) ?? 0;
      if (at >= queue.length) continue;
      const waiter = queue[at]!;
      // drop the consumed front now and then, not at every shift (that would be O(n) each)
      if (at + 1 >= 1024 || at + 1 === queue.length) {
        queue.splice(0, at + 1);
        this.head.set(priority, 0);
      } else this.head.set(priority, at + 1);
      return waiter;
    }
    return undefined;
  }
}

/** Step priorities: a jail further along its way up (or going away) goes first. */
const STEP_PRIORITY = { prepare: 0, mount: 1, start: 2, stop: 3, unmount: 3, destroy: 3 } as const;

interface JailEntry {
  spec: JailSpec;
  generation: number;
  desired: DesiredState;
  actor: JailActor;
  /** Desired-state revision of the last command applied to this generation. */
  revision: number;
  seq: number;
  /** What the last event said, and what the store last holds: each written only on change. */
  lastKey: string;
  savedKey: string;
  record: PersistedJail | null;
  /** The START that a restored restart backoff is due to send (see resumeRestart). */
  restartTimer?: NodeJS.Timeout;
  /** While it runs with a health check: where the check stands, and why it last failed. */
  health?: HealthState;
  healthReason: string | null;
}

export class Agent {
  private nc?: NatsConnection;
  private readonly jails = new Map<string, JailEntry>();
  /** Commands and fencing, one at a time per jail. */
  private readonly perJail = new KeyedQueue();
  private readonly store: JailStore;
  private heartbeatTimer?: NodeJS.Timeout;
  /** The host's durable command consumer, made and consumed anew whenever it fails. */
  private commands?: KeptConsumer;
  /**
   * State events still being published, one chain per jail: a jail's events go out in order, and
   * one jail's wait for the broker's ack never holds up another's (a burst of 1,000 starts).
   */
  private readonly publishing = new Map<string, Promise<void>>();
  private readonly startedAt = new Date().toISOString();
  private readonly log: Logger;
  private stopping = false;
  private sessions?: JailSessions;
  private stopFencing?: () => void;
  /** When the broker last answered a ping, and since when the connection has been known down. */
  private lastContact = Date.now();
  private disconnectedSince: number | null = null;
  private probeSentAt = 0;
  private probeTimer?: NodeJS.Timeout;
  /** Samples the jails' console sizes for `logs --since` (console-times.ts). */
  private readonly consoleTimes = new ConsoleTimes();
  private readonly consolePaths = new Map<string, string>();
  private consoleTimer?: NodeJS.Timeout;
  private consoleSampleFailed = false;
  /** Jails this agent stopped by itself (failover.stopWhenDisconnectedMs), by generation. */
  private readonly selfFenced = new Map<string, number>();
  private topo?: Topology;
  /** Generation and revision of the last copy of each jail this agent destroyed (since it started). */
  private readonly gone = new Map<string, { generation: number; revision: number }>();
  /** The newest placement of every jail, from the placement bucket. */
  private readonly placementSeen = new Map<string, PlacementRecord>();
  /** Driver steps at once: a burst of commands must not starve the heartbeat or the host. */
  private readonly steps: StepLimit;
  /** Served on /metrics by `serve agent --metrics-addr`; the health check runner reports to it. */
  readonly metrics: AgentMetrics;
  /** What the running jails used at the last read, and whether a heartbeat has carried it yet. */
  private usage = new Map<string, JailUsage>();
  private usageFresh = false;
  private usageTimer?: NodeJS.Timeout;
  private readingUsage = false;
  /** The health checks of the running jails that have one. */
  private readonly health: HealthChecks;

  constructor(private readonly opts: AgentOptions) {
    this.store = new JailStore(join(opts.dataDir, 'state'));
    this.log = opts.logger;
    this.steps = new StepLimit(opts.maxParallelSteps ?? defaultParallelSteps());
    this.metrics = new AgentMetrics(opts.host, {
      jailStates: () => this.jailStates(),
      capacity: () => this.capacity(),
      allocated: () => allocatedOf(this.heldSpecs()),
      usage: () => this.readUsage(),
    });
    this.health = new HealthChecks({
      driver: opts.driver,
      log: opts.logger,
      // a vnet jail is checked at its own address, any other on the host's loopback
      address: opts.healthAddress ?? ((spec) => vnetOf(spec)?.address ?? '127.0.0.1'),
      onResult: (jail, kind, ok, reason) => {
        this.metrics.healthResult(jail, kind, ok);
        opts.onHealthResult?.(jail, kind, ok, reason);
      },
      onChange: (jail, status, reason) => {
        const entry = this.jails.get(jail);
        if (!entry) return;
        entry.health = status;
        entry.healthReason = reason;
        // a change while it runs is an event of its own (one made while a snapshot is handled goes with it)
        if (!this.inSnapshot) this.onSnapshot(entry, entry.actor.getSnapshot());
      },
      onUnhealthy: (jail, reason) => {
        const entry = this.jails.get(jail);
        if (!entry) return;
        // carried into the next run's `starting`, so ps says why it was restarted until a check passes
        entry.healthReason = reason;
        entry.actor.send({ type: 'UNHEALTHY', reason, at: Date.now() });
      },
    });
  }
  /** Set while onSnapshot runs: a health change it causes is published with it, not on its own. */
  private inSnapshot = false;

  async start(): Promise<void> {
    const nc = await connectNats(this.opts.servers, `jailfleet-agent-${this.opts.host}@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    this.topo = await ensureTopology(nc);
    await this.readopt();
    // fencing first: copies that another host now holds (or that were removed) are destroyed
    // before any command is taken
    await this.startFencing();
    this.watchConnection(nc);
    this.commands = this.consumeCommands(nc);
    serveRpc(nc, subjects.exec(this.opts.host), execRequestSchema, (req) => this.exec(req), { log: this.log });
    serveRpc(nc, subjects.logs(this.opts.host), logsRequestSchema, (req) => this.logs(req), { log: this.log });
    this.sessions = new JailSessions(nc, this.opts.host, this.opts.driver, this.log, (jail) => this.jails.has(jail));
    serveRpc(nc, subjects.session(this.opts.host), sessionRequestSchema, (req) => this.openSession(req), { log: this.log });
    const beat = () => this.heartbeat();
    beat();
    this.heartbeatTimer = setInterval(beat, this.opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
    this.consoleTimer = setInterval(() => void this.sampleConsoles(), CONSOLE_SAMPLE_MS);
    this.usageTimer = setInterval(() => void this.sampleUsage(), USAGE_EVERY_MS);
    this.log.info({ jails: this.jails.size, driver: this.opts.driver.kind }, 'agent started');
  }

  /**
   * Stops taking commands. With `teardown`, every jail is destroyed first (what `jailfleet up`
   * does on exit); otherwise jails keep running and a later agent re-adopts them.
   */
  async stop({ teardown = false } = {}): Promise<void> {
    this.stopping = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.usageTimer);
    clearInterval(this.probeTimer);
    clearInterval(this.consoleTimer);
    this.stopFencing?.();
    this.health.stopAll();
    this.sessions?.closeAll();
    // the broker may be gone already (a whole local cluster stopping): never wait on it for long
    await within(5000, this.commands?.stop());
    await within(5000, this.commands?.done);
    if (teardown) {
      const jails = [...this.jails.values()];
      this.log.info({ jails: jails.length }, 'tearing down: destroying every jail');
      await Promise.all(
        jails.map(async (e) => {
          e.actor.send({ type: 'DESTROY' });
          await waitFor(e.actor, (s) => s.status === 'done' || (stableStateOf(s) === 'failed' && s.context.desired === 'destroyed'), {
            timeout: 10 * 60_000,
          }).catch(() => undefined);
        }),
      );
      // whatever an actor could not remove, and driver state that no actor owned
      for (const name of await this.opts.driver.list()) {
        await this.opts.driver.destroy(name).catch((err) => this.log.error({ err, jail: name }, 'teardown: destroy failed'));
      }
      this.log.info('teardown done');
    }
    for (const e of this.jails.values()) {
      clearTimeout(e.restartTimer);
      e.actor.stop();
    }
    if (!(await within(5000, Promise.all(this.publishing.values())))) this.log.warn('stopping with state events not yet published');
    await within(5000, this.nc?.drain().catch(() => undefined));
  }

  /** Restores every persisted jail; removes driver state that no record owns (a crash mid-create). */
  private async readopt() {
    const { jails, broken } = this.store.loadAll();
    for (const name of broken) {
      this.log.warn({ jail: name }, 'unreadable jail record: destroying its leftovers');
      await this.opts.driver.destroy(name).catch((err) => this.log.error({ err, jail: name }, 'destroy failed'));
      this.store.remove(name);
    }
    for (const stored of jails) {
      const seen = await this.opts.driver.inspect(stored.name);
      this.log.info({ jail: stored.name, generation: stored.generation, state: stored.record.state, pid: seen.pid }, 're-adopting jail');
      this.resumeRestart(this.createJail(stored.spec, stored.generation, stored.desired, stored.revision, stored));
    }
    const known = new Set(jails.map((j) => j.name));
    for (const name of await this.opts.driver.list()) {
      if (known.has(name)) continue;
      this.log.warn({ jail: name }, 'driver state without a record: destroying it');
      await this.opts.driver.destroy(name).catch((err) => this.log.error({ err, jail: name }, 'destroy failed'));
    }
  }

  /**
   * Follows the placement bucket: a local jail whose placement names another host or a newer
   * generation, or whose placement was deleted (rm), is a stale copy and is destroyed. Resolves
   * once the bucket's current content has been seen (so a returning agent fences first).
   */
  private async startFencing() {
    // an unreadable placement is reported and skipped: never taken for a deletion (which would fence)
    const watch = followRecords(this.nc!, BUCKET_PLACEMENT, placementRecordSchema, this.log, (key, p) => {
      if (p) this.placementSeen.set(key, p);
      else this.placementSeen.delete(key);
      this.fence(key, p);
    });
    this.stopFencing = () => watch.stop();
    await within(60_000, watch.synced);
  }

  /**
   * The host's durable command consumer, consumed until the agent stops; made again and
   * consumed anew whenever it fails (a broker of the cluster died: its streams elect new leaders).
   */
  private consumeCommands(nc: NatsConnection): KeptConsumer {
    const durable = agentConsumerName(this.opts.host);
    return keepConsuming(
      nc,
      'command consumer',
      this.log,
      async () => {
        const jsm = await jetstreamManager(nc);
        await jsm.consumers.info(CMD_STREAM, durable).catch(() =>
          jsm.consumers.add(CMD_STREAM, {
            durable_name: durable,
            filter_subject: subjects.cmd(this.opts.host),
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.All,
            ack_wait: 60 * 1e9,
            max_ack_pending: 10_000,
          }),
        );
        const consumer = await jetstream(nc).consumers.get(CMD_STREAM, durable);
        return { messages: await consumer.consume({ max_messages: 512 }), behind: async () => (await consumer.info()).num_pending > 0 };
      },
      (m) => this.onCommand(m),
    );
  }

  private fence(name: string, p: PlacementRecord | null) {
    const entry = this.jails.get(name);
    if (!entry) return;
    const why =
      p === null
        ? 'its placement was removed'
        : p.generation > entry.generation
          ? `generation ${p.generation} is placed${p.host ? ` on ${p.host}` : ''}`
          : p.host !== this.opts.host && p.generation === entry.generation
            ? `it is placed on ${p.host ?? 'no host'}`
            : null;
    if (!why) return;
    void this.perJail.run(name, async () => {
      if (this.jails.get(name) !== entry || entry.actor.getSnapshot().status === 'done') return 'done';
      this.log.warn({ jail: name, generation: entry.generation, why }, 'fencing: destroying a stale copy');
      entry.actor.send({ type: 'DESTROY' });
      return (await this.settled(entry)) ? 'done' : 'retry';
    });
  }

  /**
   * Knows how long the agent has been cut from the broker: pings it every PROBE_MS, and takes the
   * client's disconnect as immediate. Jails with failover.stopWhenDisconnectedMs stop by
   * themselves once cut that long, and start again if, back in touch, they are still placed here.
   */
  private watchConnection(nc: NatsConnection) {
    const PROBE_MS = 250;
    void (async () => {
      for await (const st of nc.status()) {
        if (st.type === 'disconnect' || st.type === 'staleConnection') this.disconnectedSince ??= Date.now();
        if (st.type === 'reconnect') this.log.info('reconnected to NATS');
      }
    })().catch(() => undefined);
    this.probeTimer = setInterval(() => {
      const now = Date.now();
      if (this.probeSentAt === 0 || now - this.probeSentAt > 5000) {
        const sent = (this.probeSentAt = now);
        nc.rtt().then(
          () => {
            if (this.probeSentAt !== sent) return;
            this.probeSentAt = 0;
            this.lastContact = Date.now();
            this.disconnectedSince = null;
            if (this.selfFenced.size) void this.unfence();
          },
          () => {
            if (this.probeSentAt === sent) this.probeSentAt = 0;
          },
        );
      }
      const cutFor = this.disconnectedSince !== null ? now - this.disconnectedSince : Math.max(0, now - this.lastContact - PROBE_MS);
      if (cutFor > 0) this.selfFence(cutFor);
    }, PROBE_MS / 2);
  }

  /** One sample of every jail's console size (a jail's file is looked up once, when first seen). */
  private async sampleConsoles() {
    try {
      for (const name of this.jails.keys()) if (!this.consolePaths.has(name)) this.consolePaths.set(name, await this.opts.driver.consoleFile(name));
      for (const name of [...this.consolePaths.keys()]) if (!this.jails.has(name)) this.consolePaths.delete(name);
      await this.consoleTimes.sample(this.consolePaths.values());
      this.consoleSampleFailed = false;
    } catch (err) {
      // once per run of failures, not once a second
      if (!this.consoleSampleFailed) this.log.warn({ err }, 'sampling the consoles for logs --since failed');
      this.consoleSampleFailed = true;
    }
  }

  private selfFence(cutFor: number) {
    for (const [name, e] of this.jails) {
      const limit = e.spec.failover.stopWhenDisconnectedMs;
      if (limit === undefined || cutFor < limit || this.selfFenced.has(name) || e.desired !== 'running') continue;
      this.log.warn({ jail: name, cutForMs: cutFor, limitMs: limit }, 'cut from NATS: stopping the jail by itself (failover.stopWhenDisconnectedMs)');
      this.selfFenced.set(name, e.generation);
      e.actor.send({ type: 'STOP' });
    }
  }

  /** Back in touch: a self-fenced jail still placed here at its generation starts again. */
  private async unfence() {
    for (const [name, generation] of [...this.selfFenced]) {
      this.selfFenced.delete(name);
      const entry = this.jails.get(name);
      if (!entry || entry.generation !== generation) continue;
      const pe = await this.topo!.placement.get(name).catch(() => undefined);
      if (pe === undefined) {
        // the broker cannot answer yet (a stream electing its leader): ask again at the next probe
        this.selfFenced.set(name, generation);
        continue;
      }
      const p = pe?.operation === 'PUT' ? placementRecordSchema.safeParse(pe.json()).data : undefined;
      if (p && p.host === this.opts.host && p.generation === generation && entry.desired === 'stopped' && this.jails.get(name) === entry) {
        this.log.info({ jail: name, generation }, 'back in touch and still placed here: starting the jail again');
        entry.actor.send({ type: 'START' });
      } else if (p) this.fence(name, p);
    }
  }

  /**
   * A restored jail in restart backoff: XState does not restore the `after` timer (the machine's
   * starts over from the full backoff), so the agent sends START itself once the saved
   * `restartAt` has passed, at once when it already has. A STOP, a DESTROY or a START that came
   * first ended that backoff, and then the timer does nothing.
   */
  private resumeRestart(entry: JailEntry) {
    const due = entry.actor.getSnapshot().context.restartAt;
    if (due === null) return;
    entry.restartTimer = setTimeout(() => {
      const snap = entry.actor.getSnapshot();
      if (this.stopping || this.jails.get(entry.spec.name) !== entry || snap.value !== 'stopped' || snap.context.restartAt !== due) return;
      this.log.info({ jail: entry.spec.name, generation: entry.generation, restartAt: due }, 'restart backoff over: starting the jail again');
      entry.actor.send({ type: 'START' });
    }, Math.max(0, due - Date.now()));
  }

  private machineFor() {
    const d = this.opts.driver;
    // the event names the step and the jail already: a driver's failure gives it the reason alone
    const step = <T>(name: keyof typeof STEP_PRIORITY, run: () => Promise<T>): Promise<T> =>
      this.steps.run(run, STEP_PRIORITY[name]).catch((err: unknown) => {
        throw err instanceof DriverStepFailed ? new Error(err.reason, { cause: err }) : err;
      });
    type In = { input: { spec: JailSpec } };
    return jailLifecycleMachine.provide({
      actors: {
        prepare: fromPromise(({ input }: In) => step('prepare', () => d.prepare(input.spec))),
        mount: fromPromise(({ input }: In) => step('mount', () => d.mount(input.spec))),
        start: fromPromise(({ input }: In) =>
          step('start', async () => {
            const began = performance.now();
            const started = await d.start(input.spec);
            this.metrics.jailStarted((performance.now() - began) / 1000);
            return started;
          }),
        ),
        stop: fromPromise(({ input }: In) => step('stop', () => d.stop(input.spec))),
        unmount: fromPromise(({ input }: In) => step('unmount', () => d.unmount(input.spec))),
        destroy: fromPromise(({ input }: In) => step('destroy', () => d.destroy(input.spec.name))),
        watch: fromCallback(({ sendBack, input }: { sendBack: (e: any) => void; input: { spec: JailSpec; pid: number } }) => {
          const ac = new AbortController();
          d.wait(input.spec.name, input.pid, ac.signal).then(
            (r) => {
              if (r.outOfMemory) this.metrics.jailKilledForMemory();
              sendBack({ type: 'EXITED', exitCode: r.exitCode, outOfMemory: r.outOfMemory, at: Date.now() });
            },
            () => ac.signal.aborted || sendBack({ type: 'EXITED', exitCode: null, at: Date.now() }),
          );
          return () => ac.abort();
        }),
      },
    });
  }

  private createJail(spec: JailSpec, generation: number, desired: DesiredState, revision: number, stored?: StoredJail): JailEntry {
    // `always` transitions pass through stable states within one macrostep (pending → prepared
    // → mounting): the microsteps show each of them, so every stable state gets its event
    let self: JailEntry | undefined;
    const actor = createActor(this.machineFor(), {
      input: { spec, generation, desired, restore: stored?.record, backoff: this.opts.backoff },
      inspect: (ev) => {
        if (ev.type === '@xstate.microstep' && self && ev.actorRef === self.actor) this.onSnapshot(self, ev.snapshot as ReturnType<JailActor['getSnapshot']>);
      },
    });
    const entry: JailEntry = {
      spec,
      generation,
      desired,
      actor,
      revision: stored?.revision ?? revision,
      seq: stored?.seq ?? 0,
      lastKey: stored ? this.keyOf(stored.record) : '',
      savedKey: '',
      record: stored?.record ?? null,
      healthReason: null,
    };
    self = entry;
    this.jails.set(spec.name, entry);
    actor.subscribe({
      next: (snap) => this.onSnapshot(entry, snap),
      error: (err) => this.log.error({ err, jail: spec.name }, 'jail actor crashed'),
    });
    actor.start();
    return entry;
  }

  private keyOf(r: PersistedJail, health?: HealthState, healthReason?: string | null) {
    return JSON.stringify([r.state, r.pid, r.exitCode, r.restarts, r.error, ...(r.state === 'running' && health ? [health, healthReason] : [])]);
  }

  /** Checks run while the machine is in `running` itself (not while it stops), for its current init. */
  private followHealth(entry: JailEntry, snap: ReturnType<JailActor['getSnapshot']>) {
    const pid = snap.context.pid;
    if (snap.value === 'running' && pid !== null && entry.spec.health) {
      this.inSnapshot = true;
      try {
        this.health.watch(entry.spec, pid, entry.healthReason);
      } finally {
        this.inSnapshot = false;
      }
    } else {
      if (entry.health !== undefined) this.health.unwatch(entry.spec.name);
      entry.health = undefined;
      // stopped on purpose: a later start has no check failure to explain
      if (snap.context.desired !== 'running') entry.healthReason = null;
    }
  }

  private onSnapshot(entry: JailEntry, snap: ReturnType<JailActor['getSnapshot']>) {
    const name = entry.spec.name;
    const mine = this.jails.get(name) === entry; // an old generation being destroyed is not
    if (mine && !this.stopping) this.followHealth(entry, snap);
    const record = persistedJailOf(snap);
    entry.desired = snap.context.desired;
    const state = stableStateOf(snap);
    // the event: on a stable state whose visible fields changed
    const key = this.keyOf(record, entry.health, entry.healthReason);
    const publish = state !== null && key !== entry.lastKey;
    if (publish) {
      if (entry.record && mine) this.metrics.jailRestarted(record.restarts - entry.record.restarts);
      entry.lastKey = key;
      entry.record = record;
      entry.seq += 1;
    }
    // the record: whenever anything a restarted agent needs changed, desired and restartAt
    // included (a STOP during a restart backoff changes no state, but must survive a restart)
    if (state === 'destroyed') {
      if (mine) {
        this.store.remove(name);
        this.jails.delete(name);
      }
      const gone = this.gone.get(name);
      if (!gone || gone.generation < entry.generation || (gone.generation === entry.generation && gone.revision < entry.revision))
        this.gone.set(name, { generation: entry.generation, revision: entry.revision });
    } else if (mine) {
      const saved = { v: 1 as const, name, spec: entry.spec, generation: entry.generation, desired: entry.desired, revision: entry.revision, seq: entry.seq, record };
      const savedKey = JSON.stringify([saved.desired, saved.revision, saved.seq, record]);
      if (savedKey !== entry.savedKey) {
        this.store.save(saved);
        entry.savedKey = savedKey;
      }
    }
    if (!publish) return;
    const event: StateEvent = {
      v: WIRE_VERSION,
      host: this.opts.host,
      jail: name,
      generation: entry.generation,
      seq: entry.seq,
      state: state!,
      pid: record.pid,
      exitCode: record.exitCode,
      restarts: record.restarts,
      error: record.error,
      ...(state === 'running' && entry.health && { health: entry.health, ...(entry.healthReason && { healthReason: entry.healthReason }) }),
      at: new Date().toISOString(),
    };
    this.log.info({ jail: name, generation: entry.generation, state, pid: record.pid, error: record.error ?? undefined }, `jail ${state}`);
    this.publishEvent(event);
  }

  /** Publishes in order per jail; retries while the broker is away so no stable state is lost. */
  private publishEvent(event: StateEvent) {
    const js = jetstream(this.nc!);
    const data = encodeJson(event);
    const msgID = `${event.host}/${event.jail}/${event.generation}/${event.seq}`;
    const chain = (this.publishing.get(event.jail) ?? Promise.resolve()).then(async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          await js.publish(subjects.evt(event.host, event.jail), data, { msgID, timeout: 5000 });
          return;
        } catch (err) {
          if (this.nc?.isClosed() || attempt > 600) {
            this.log.error({ err, jail: event.jail }, 'state event not published');
            return;
          }
          await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
        }
      }
    });
    this.publishing.set(event.jail, chain);
    void chain.then(() => this.publishing.get(event.jail) === chain && this.publishing.delete(event.jail));
  }

  private onCommand(m: JsMsg) {
    let cmd: Command;
    try {
      cmd = decodeWith(commandSchema, m.data);
    } catch (err) {
      this.log.warn({ subject: m.subject, seq: m.seq, reason: (err as Error).message }, 'malformed command dropped');
      m.term();
      return;
    }
    // a long wait (an old generation stopping) must not make the broker redeliver meanwhile
    const working = setInterval(() => m.working(), 20_000);
    void this.perJail
      .run(cmd.jail, () => this.apply(cmd))
      .then(
        (outcome) => (outcome === 'retry' ? m.nak(2000) : m.ack()),
        (err) => {
          this.log.error({ err, jail: cmd.jail, id: commandMsgId(cmd) }, 'command failed');
          m.nak(5000);
        },
      )
      .finally(() => clearInterval(working));
  }

  /**
   * Carries out one command. 'retry' leaves it unacknowledged for later: the agent is stopping,
   * or an older generation of the jail could not be removed yet.
   */
  private async apply(cmd: Command): Promise<'done' | 'retry'> {
    if (this.stopping) return 'retry';
    const log = this.log.child({ jail: cmd.jail, generation: cmd.generation });
    let entry = this.jails.get(cmd.jail);
    // what this agent holds, or else what it last destroyed: a command not newer than that is a
    // replay (a redelivery that overtook a later destroy must not bring the jail back)
    const held = entry ?? this.gone.get(cmd.jail);
    if (held && (held.generation > cmd.generation || (held.generation === cmd.generation && held.revision >= cmd.revision))) {
      log.debug({ held: held.generation, revision: held.revision, op: cmd.op, cmdRevision: cmd.revision }, 'replayed or stale command ignored');
      return 'done';
    }
    if (cmd.op === 'destroy') {
      if (!entry) return 'done';
      entry.revision = cmd.revision;
      entry.actor.send({ type: 'DESTROY' });
      return (await this.settled(entry)) ? 'done' : 'retry';
    }
    if (entry && entry.generation < cmd.generation) {
      log.info({ old: entry.generation }, 'replacing an older generation');
      entry.actor.send({ type: 'DESTROY' });
      // the new copy starts only once the old one is gone: both must never hold the name
      if (!(await this.settled(entry))) return 'retry';
      entry = undefined;
    }
    if (entry && entry.actor.getSnapshot().status === 'done') entry = undefined;
    if (!entry) {
      this.createJail(cmd.spec, cmd.generation, cmd.desired, cmd.revision);
      // a command can arrive after the placement moved on (a leader that lost its lease mid-move,
      // a redelivery): the placement seen so far decides at once. One that merely lags (older than
      // the command) never fences, and an unplaced record (no host) is not another host's copy.
      const seen = this.placementSeen.get(cmd.jail);
      if (seen && (seen.generation > cmd.generation || (seen.host !== null && seen.generation === cmd.generation))) this.fence(cmd.jail, seen);
      return 'done';
    }
    entry.revision = cmd.revision;
    entry.actor.send({ type: cmd.desired === 'running' ? 'START' : 'STOP' });
    return 'done';
  }

  /** Waits until a jail being destroyed is gone: true, or its destroy failed (it retries): false. */
  private async settled(entry: JailEntry): Promise<boolean> {
    const s = await waitFor(entry.actor, (x) => x.status === 'done' || (stableStateOf(x) === 'failed' && x.context.desired === 'destroyed'), {
      timeout: 10 * 60_000,
    }).catch(() => null);
    return s?.status === 'done';
  }

  /** The state of every jail that has one: the metrics' jails by state. */
  private *jailStates(): Iterable<string> {
    for (const e of this.jails.values()) if (e.record) yield e.record.state;
  }

  private capacity(): HostResources {
    return this.opts.capacity ?? machineCapacity();
  }

  /** The specs of the jails this agent holds (they reserve the host's resources). */
  private heldSpecs(): JailSpec[] {
    const held: JailSpec[] = [];
    for (const e of this.jails.values()) if (e.record && e.record.state !== 'destroyed') held.push(e.spec);
    return held;
  }

  /** What every running jail uses now, from its cgroup (a scrape, and every USAGE_EVERY_MS for the heartbeat). */
  private async readUsage(): Promise<({ jail: string } & JailUsage)[]> {
    const d = this.opts.driver;
    if (!d.usage) return [];
    const running = [...this.jails.values()].filter((e) => e.record?.state === 'running').map((e) => e.spec.name);
    const out: ({ jail: string } & JailUsage)[] = [];
    // one jail after another (a read is a few tens of microseconds), the event loop let go every
    // 100: 1,000 jails never hold a heartbeat up for the whole read
    for (let i = 0; i < running.length; i++) {
      if (i > 0 && i % 100 === 0) await new Promise((r) => setImmediate(r));
      const usage = await d.usage(running[i]!).catch(() => null);
      if (usage) out.push({ jail: running[i]!, ...usage });
    }
    return out;
  }

  private async sampleUsage() {
    if (this.readingUsage || this.stopping) return;
    this.readingUsage = true;
    try {
      this.usage = new Map((await this.readUsage()).map(({ jail, ...u }) => [jail, u]));
      this.usageFresh = true;
    } finally {
      this.readingUsage = false;
    }
  }

  private heartbeat() {
    if (!this.nc || this.nc.isClosed()) return;
    // one pass over the jails, once a beat; usage only in the beat after a read (it is most of a
    // beat's bytes at 1,000 jails, and a read is every few seconds)
    const withUsage = this.usageFresh;
    this.usageFresh = false;
    const held: JailSpec[] = [];
    const jails: Heartbeat['jails'] = [];
    for (const e of this.jails.values()) {
      if (!e.record) continue;
      const usage = withUsage && e.record.state === 'running' ? this.usage.get(e.spec.name) : undefined;
      jails.push({ name: e.spec.name, generation: e.generation, state: e.record.state, pid: e.record.pid, ...(usage && { usage }), ...(e.record.state === 'running' && e.health && { health: e.health }) });
      if (e.record.state !== 'destroyed') held.push(e.spec);
    }
    const hb: Heartbeat = {
      v: WIRE_VERSION,
      host: this.opts.host,
      at: new Date().toISOString(),
      startedAt: this.startedAt,
      driver: this.opts.driver.kind,
      capacity: this.capacity(),
      labels: this.opts.labels ?? {},
      ...(this.opts.volumes && { volumes: this.opts.volumes }),
      ...(this.opts.images && { images: this.opts.images() }),
      allocated: allocatedOf(held),
      jails,
    };
    this.nc.publish(subjects.hb(this.opts.host), encodeJson(hb));
  }

  private async logs(req: LogsRequest) {
    if (!this.jails.has(req.jail)) throw new NotFound(`no jail "${req.jail}" on host ${this.opts.host}`);
    return this.opts.driver.consoleTail(req.jail, req.lines);
  }

  /** Starts an exec, console or cp session (jail-sessions.ts) in a running jail of this host. */
  private async openSession(req: SessionRequest) {
    const entry = this.jails.get(req.jail);
    if (!entry) throw new NotFound(`no jail "${req.jail}" on host ${this.opts.host}`);
    // a console is read whatever the jail's state; everything else runs in the jail
    if (req.kind !== 'logs' && entry.record?.state !== 'running') throw new Conflict(`jail "${req.jail}" is ${entry.record?.state ?? 'pending'}, not running`);
    return this.sessions!.open(entry.spec, req);
  }

  private async exec(req: ExecRequest) {
    const entry = this.jails.get(req.jail);
    if (!entry) throw new NotFound(`no jail "${req.jail}" on host ${this.opts.host}`);
    if (entry.record?.state !== 'running') throw new Conflict(`jail "${req.jail}" is ${entry.record?.state ?? 'pending'}, not running`);
    return this.opts.driver.exec(entry.spec, req.command, { timeoutMs: req.timeoutMs, maxOutputBytes: req.maxOutputBytes });
  }
}
