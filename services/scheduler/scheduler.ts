// The scheduler: API handlers write the desired state (KV); the reconciler places each jail and
// publishes commands to its host's durable stream. It never talks to a host except through NATS.
import { hostname as osHostname } from 'node:os';
import { jetstream } from '@nats-io/jetstream';
import type { KvEntry } from '@nats-io/kv';
import {
  API_VERBS,
  BUCKET_DESIRED,
  BUCKET_HOSTS,
  BUCKET_PLACEMENT,
  SCHEDULER_QUEUE,
  WIRE_VERSION,
  applyRequestSchema,
  drainRequestSchema,
  hostRecordSchema,
  undrainRequestSchema,
  commandMsgId,
  desiredRecordSchema,
  heartbeatSchema,
  nameRequestSchema,
  placementRecordSchema,
  stateEventSchema,
  subjectTokens,
  subjects,
  type ApiVerb,
  type Command,
  type DesiredRecord,
  type Heartbeat,
  type HostRecord,
  type JailSpec,
  type PlacementStrategy,
  type PlacementRecord,
} from '../../contracts/index.js';
import { DEFAULT_LEASE_MS, connectNats, followBucket, decodeWith, encodeJson, ensureTopology, type Logger, type Msg, type NatsConnection, type Topology } from '../common/index.js';
import { HostLiveness } from './host-liveness.js';
import { LeaderLease } from './leader-lease.js';
import { LivePacking } from './live-packing.js';

export interface SchedulerOptions {
  servers: string[];
  logger: Logger;
  hostTtlMs?: number;
  /** Full reconcile pass interval (new hosts, unplaced jails). */
  resyncMs?: number;
  /** The leader lease: a standby scheduler takes over within this long after the leader dies. */
  leaseMs?: number;
  /** How new jails are packed: `binpack` (fewest hosts, the default) or `spread` (least loaded). */
  strategy?: PlacementStrategy;
  /** How long a drain waits for a jail's new copy to run before it gives up on that move. */
  moveTimeoutMs?: number;
}

class ApiError extends Error {
  constructor(
    readonly code: 'invalid' | 'not_found' | 'conflict' | 'internal',
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const sameSpec = (a: JailSpec, b: JailSpec) => JSON.stringify(a) === JSON.stringify(b);

export class Scheduler {
  private nc?: NatsConnection;
  private kv?: Topology;
  private readonly liveness: HostLiveness;
  private readonly placements = new Map<string, PlacementRecord>();
  /** Desired revision (and tombstone, and whether it may move when its host dies) of every jail, from the watch. */
  private readonly desiredSeen = new Map<string, { revision: number; removed: boolean; movable: boolean }>();
  private readonly busy = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  /** name → `${generation}/${revision}@host` of the last command published. */
  private readonly published = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  /** Moves waiting for their new copy to run: stop() ends the wait. */
  private readonly waitingCopies = new Set<() => void>();
  private livenessTimer?: NodeJS.Timeout;
  private downHosts = new Set<string>();
  private lease?: LeaderLease;
  private watchStop?: () => void;
  /**
   * A scheduler that has just started has not heard every live host yet: placing then would
   * pile every jail on the first host to speak. Until one TTL has passed it places nothing new.
   */
  private warmUntil = Number.POSITIVE_INFINITY;
  private warmTimer?: NodeJS.Timeout;
  private readonly log: Logger;
  /** Hosts' capacity, labels, liveness and drains, and every placed jail's resources. */
  private readonly packing: LivePacking;
  /** Drain requests by host, from the hosts bucket. */
  private readonly drains = new Map<string, { record: HostRecord; revision: number }>();
  /** Jails being moved off a draining host now (the target is set once chosen). */
  private readonly moves = new Map<string, { from: string; to: string | null }>();
  /** Jails a drain could not move: why, and not before when to try again. */
  private readonly blocked = new Map<string, { host: string; reason: string | null; retryAt: number }>();
  /** What each host's last heartbeat says it holds (a drain's new copy may be seen running there). */
  private readonly held = new Map<string, Heartbeat['jails']>();
  private hostsWatchStop?: () => void;

  constructor(private readonly opts: SchedulerOptions) {
    this.liveness = new HostLiveness(opts.hostTtlMs ?? 3000);
    this.log = opts.logger;
    this.packing = new LivePacking(opts.strategy ?? 'binpack');
  }

  private get hostTtlMs() {
    return this.opts.hostTtlMs ?? 3000;
  }

  /** True while this scheduler holds the lease: only the leader places and publishes. */
  get isLeader() {
    return this.lease?.isLeader ?? false;
  }

  /** A host is down once it has been silent for a TTL (or was never heard in the TTL after we started). */
  private hostDown(host: string, now = Date.now()): boolean {
    return now >= this.warmUntil && !this.liveness.isUp(host, now);
  }

  async start(): Promise<void> {
    const nc = await connectNats(this.opts.servers, `jailfleet-scheduler@${osHostname()}`, { waitOnFirstConnect: true });
    this.nc = nc;
    this.kv = await ensureTopology(nc, { leaseMs: this.opts.leaseMs });
    nc.subscribe(subjects.hbAll, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const hb = decodeWith(heartbeatSchema, msg.data);
          if (hb.host !== subjectTokens(msg.subject).host) throw new Error(`heartbeat of ${hb.host} on ${msg.subject}`);
          this.noteHeartbeat(hb);
          if (this.liveness.seen(hb.host, Date.now())) {
            this.log.info({ host: hb.host }, 'host up');
            this.resyncSoon();
          }
        } catch (e) {
          this.log.warn({ subject: msg.subject, reason: (e as Error).message }, 'malformed heartbeat dropped');
        }
      },
    });
    this.warmUntil = Date.now() + this.hostTtlMs;
    const verbs: ApiVerb[] = [...API_VERBS];
    for (const verb of verbs) {
      nc.subscribe(subjects.api(verb), {
        queue: SCHEDULER_QUEUE,
        callback: (err, msg) => {
          if (!err) void this.onApi(verb, msg);
        },
      });
    }
    // the placement cache: the whole bucket first, then every change (also other schedulers')
    const pwatch = followBucket(
      nc,
      BUCKET_PLACEMENT,
      (e) => {
        const p = e.operation === 'PUT' ? placementRecordSchema.safeParse(e.json()).data : undefined;
        if (p) this.placements.set(e.key, p);
        else this.placements.delete(e.key);
        this.notePlacement(e.key);
      },
      this.log,
    );
    await Promise.race([pwatch.synced, new Promise((r) => setTimeout(r, 30_000))]);
    // the desired state: every value first, then every change; each one is reconciled
    const watch = followBucket(
      nc,
      BUCKET_DESIRED,
      (e) => {
        if (e.operation !== 'PUT') {
          this.desiredSeen.delete(e.key);
          this.packing.spec(e.key, undefined);
          return;
        }
        const d = desiredRecordSchema.safeParse(e.json()).data;
        this.packing.spec(e.key, d?.spec);
        const movable = Boolean(d && d.spec.failover.reschedule && !d.spec.placement.host);
        this.desiredSeen.set(e.key, { revision: e.revision, removed: d?.desired === 'removed', movable });
        this.reconcileSoon(e.key);
      },
      this.log,
    );
    this.watchStop = () => (watch.stop(), pwatch.stop());
    await this.watchHosts();
    this.timer = setInterval(() => this.resyncSoon(), this.opts.resyncMs ?? 2000);
    this.warmTimer = setTimeout(() => this.resyncSoon(), this.warmUntil - Date.now());
    // a host going down is noticed within a quarter of the TTL of its last heartbeat
    this.livenessTimer = setInterval(() => this.checkHosts(), Math.max(50, Math.min(250, this.hostTtlMs / 4)));
    this.lease = new LeaderLease(this.kv.leader, `${osHostname()}/${process.pid}/${Math.random().toString(36).slice(2, 8)}`, this.opts.leaseMs ?? DEFAULT_LEASE_MS, {
      onGained: () => {
        this.log.info('leading: this scheduler places and commands');
        // what another leader published is unknown here: republish whatever is unsettled
        // (agents ignore a command whose revision they already applied)
        this.published.clear();
        this.resyncSoon();
      },
      onLost: () => this.log.warn('lease lost: standing by'),
    });
    this.lease.start();
    this.log.info('scheduler started');
  }

  /** Hosts that went down since the last check: their jails are reconciled (moved, or left `lost`). */
  private checkHosts() {
    const now = Date.now();
    const down = new Set(this.liveness.hosts(now).filter((h) => this.hostDown(h.name, now)).map((h) => h.name));
    for (const h of down) {
      if (this.downHosts.has(h)) continue;
      const jails = [...this.placements].filter(([, p]) => p.host === h).map(([name]) => name);
      this.packing.host({ name: h, up: false });
      this.log.warn({ host: h, jails: jails.length }, 'host down');
      if (this.isLeader) for (const name of jails) this.reconcileSoon(name);
    }
    this.downHosts = down;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.livenessTimer);
    clearTimeout(this.warmTimer);
    this.watchStop?.();
    this.hostsWatchStop?.();
    // a move waiting for its new copy gives up now (the copy is told to go, the jail stays put)
    for (const cancel of this.waitingCopies) cancel();
    await Promise.all(this.running);
    await this.lease?.stop();
    await this.nc?.drain().catch(() => undefined);
  }

  /**
   * The periodic pass: reconciles only what is not settled (unplaced, not yet commanded at its
   * current revision, removed but still placed), from the caches, without asking the KV.
   */
  private resyncSoon() {
    if (!this.isLeader) return;
    const now = Date.now();
    for (const [name, d] of this.desiredSeen) {
      const p = this.placements.get(name);
      const settled = d.removed
        ? p === undefined
        : Boolean(p?.host) && this.published.get(name) === `${p!.generation}/${d.revision}@${p!.host}` && !(d.movable && this.hostDown(p!.host!, now));
      if (!settled) this.reconcileSoon(name);
    }
    this.drainSoon();
  }

  /** Reconciles `name` again after a pause: a write lost a race or the broker refused it for now. */
  private retryLater(name: string, ms = 200 + Math.floor(Math.random() * 300)) {
    const t = setTimeout(() => this.reconcileSoon(name), ms);
    t.unref();
  }

  /** Reconciles one jail; calls for one name run one after another, repeats coalesce. */
  private reconcileSoon(name: string) {
    if (!this.isLeader) return;
    if (this.busy.has(name)) {
      this.dirty.add(name);
      return;
    }
    this.busy.add(name);
    const run = (async () => {
      do {
        this.dirty.delete(name);
        await this.reconcile(name).catch((err) => this.log.error({ err, jail: name }, 'reconcile failed'));
      } while (this.dirty.has(name));
      this.busy.delete(name);
    })();
    this.running.add(run);
    void run.then(() => this.running.delete(run));
  }

  private async reconcile(name: string) {
    if (!this.isLeader) return;
    const kv = this.kv!;
    const d = await kv.desired.get(name);
    if (!d || d.operation !== 'PUT') return;
    const parsed = desiredRecordSchema.safeParse(d.json());
    if (!parsed.success) {
      this.log.error({ jail: name }, 'unreadable desired record skipped');
      return;
    }
    const desired = parsed.data;
    const pEntry = await kv.placement.get(name);
    const placement = pEntry && pEntry.operation === 'PUT' ? placementRecordSchema.safeParse(pEntry.json()).data : undefined;

    if (desired.desired === 'removed') {
      if (placement?.host) await this.publish(placement.host, { v: WIRE_VERSION, op: 'destroy', jail: name, generation: desired.generation, revision: d.revision, issuedAt: new Date().toISOString() });
      if (pEntry && pEntry.operation === 'PUT') await kv.placement.delete(name).catch(() => undefined);
      this.placements.delete(name);
      this.packing.at(name, null);
      this.published.delete(name);
      return;
    }

    let host = placement?.host ?? null;
    const pin = desired.spec.placement.host;
    if (host && pin && pin !== host) {
      // the pin moved: the old copy goes, the jail is placed anew
      await this.publish(host, { v: WIRE_VERSION, op: 'destroy', jail: name, generation: desired.generation, revision: d.revision, issuedAt: new Date().toISOString() });
      host = null;
    }
    if (host && placement && placement.generation > desired.generation) {
      // a move wrote its placement and its leader stopped before the desired generation matched:
      // finish that first (also before any failover, which must go above both generations)
      await this.raiseGeneration(name, placement.generation);
      return;
    }
    if (host && placement && !pin && desired.spec.failover.reschedule && this.hostDown(host)) {
      if (placement.generation === desired.generation) {
        // failover: the next generation, so the copy on the dead host is fenced when it returns;
        // the desired-state watch brings the jail back here to be placed
        const next: DesiredRecord = { ...desired, generation: desired.generation + 1, updatedAt: new Date().toISOString() };
        try {
          await kv.desired.update(name, encodeJson(next), d.revision);
          this.log.warn({ jail: name, host, generation: next.generation }, 'host down: rescheduling jail');
        } catch {
          this.retryLater(name);
        }
        return;
      }
      // the next generation goes elsewhere; the old copy is told to go (its agent reads it on return)
      await this.publish(host, { v: WIRE_VERSION, op: 'destroy', jail: name, generation: placement.generation, revision: d.revision, issuedAt: new Date().toISOString() });
      host = null;
    }
    if (!host && Date.now() < this.warmUntil) return; // placed once the hosts are known
    if (!host) {
      // one placement decision at a time, so concurrent reconciles see each other's choices
      const release = await this.placementLock();
      let placed;
      try {
        placed = this.packing.place(desired.spec);
        const record: PlacementRecord = { v: WIRE_VERSION, host: placed.host, generation: desired.generation, reason: placed.reason };
        const unchanged = !placed.host && placement && placement.reason === placed.reason && placement.generation === desired.generation;
        if (!unchanged && !(await this.writePlacement(name, record, pEntry))) {
          // someone else wrote first: the reservation follows what the placement says
          this.notePlacement(name);
          return this.retryLater(name);
        }
      } finally {
        release();
      }
      if (!placed.host) {
        if (placement?.reason !== placed.reason) this.log.warn({ jail: name, reason: placed.reason }, 'jail not placed');
        return;
      }
      this.log.info({ jail: name, host: placed.host, generation: desired.generation }, 'jail placed');
      host = placed.host;
    } else if (placement && placement.generation !== desired.generation) {
      if (!(await this.writePlacement(name, { ...placement, generation: desired.generation }, pEntry))) return this.retryLater(name);
    }
    const key = `${desired.generation}/${d.revision}@${host}`;
    if (this.published.get(name) === key) return;
    await this.publish(host, {
      v: WIRE_VERSION,
      op: 'ensure',
      jail: name,
      generation: desired.generation,
      revision: d.revision,
      desired: desired.desired,
      spec: desired.spec,
      issuedAt: new Date().toISOString(),
    });
    this.published.set(name, key);
  }

  private lockChain: Promise<void> = Promise.resolve();
  private placementLock(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const acquired = this.lockChain.then(() => release);
    this.lockChain = this.lockChain.then(() => held);
    return acquired;
  }

  /** Compare-and-set on the placement entry's revision; false when someone else wrote first. */
  private async writePlacement(name: string, record: PlacementRecord, prev: KvEntry | null): Promise<boolean> {
    try {
      if (prev) await this.kv!.placement.update(name, encodeJson(record), prev.revision);
      else await this.kv!.placement.create(name, encodeJson(record));
      this.placements.set(name, record);
      this.notePlacement(name);
      return true;
    } catch (err) {
      this.log.debug({ err, jail: name }, 'placement write lost a race; retrying');
      return false;
    }
  }

  private async publish(host: string, cmd: Command) {
    if (!this.isLeader) throw new Error('not the leader: command not published');
    await jetstream(this.nc!).publish(subjects.cmd(host), encodeJson(cmd), { msgID: commandMsgId(cmd) });
  }

  private async onApi(verb: ApiVerb, msg: Msg) {
    try {
      const result =
        verb === 'apply' ? await this.apply(msg) : verb === 'drain' || verb === 'undrain' ? await this.setDrain(verb, msg) : await this.setDesired(verb, msg);
      msg.respond(encodeJson({ ok: true, result }));
    } catch (err) {
      const e = err as Error & { code?: string };
      const code = e.code === 'invalid' || e.code === 'not_found' || e.code === 'conflict' ? e.code : 'internal';
      if (code === 'internal') this.log.error({ err, verb }, 'API request failed');
      msg.respond(encodeJson({ ok: false, error: { code, message: e.message } }));
    }
  }

  private async apply(msg: Msg) {
    const req = decodeWith(applyRequestSchema, msg.data);
    // one read-modify-write per jail, 32 in flight: a fleet of thousands is answered in seconds
    const specs = req.fleet.jails;
    const out: { name: string; generation: number; changed: boolean }[] = new Array(specs.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < specs.length; i = next++) {
        const r = await this.applyOne(specs[i]!);
        out[i] = { name: r.name, generation: r.generation, changed: r.changed };
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, specs.length) }, worker));
    return { jails: out };
  }

  /** The same spec keeps its generation (and is started if stopped); a new one goes up by one. */
  private applyOne(spec: JailSpec) {
    return this.casDesired(spec.name, (cur) => {
      if (cur && cur.desired !== 'removed' && sameSpec(cur.spec, spec)) {
        return { record: { ...cur, desired: 'running' }, changed: false };
      }
      return {
        record: { v: WIRE_VERSION, spec, desired: 'running', generation: (cur?.generation ?? 0) + 1, updatedAt: new Date().toISOString() },
        changed: true,
      };
    });
  }

  private async setDesired(verb: 'stop' | 'start' | 'rm', msg: Msg) {
    const { name } = decodeWith(nameRequestSchema, msg.data);
    const target = verb === 'stop' ? 'stopped' : verb === 'start' ? 'running' : 'removed';
    const r = await this.casDesired(name, (cur) => {
      if (!cur || cur.desired === 'removed') throw new ApiError('not_found', `no jail named "${name}"`);
      return { record: { ...cur, desired: target, updatedAt: new Date().toISOString() }, changed: cur.desired !== target };
    });
    return { name, generation: r.generation };
  }

  /** Read-modify-write of one desired record, retried on a concurrent write. */
  private async casDesired(
    name: string,
    change: (cur: DesiredRecord | undefined) => { record: DesiredRecord; changed: boolean },
  ): Promise<{ name: string; generation: number; changed: boolean; revision: number }> {
    const kv = this.kv!.desired;
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await kv.get(name);
      const cur = e && e.operation === 'PUT' ? desiredRecordSchema.safeParse(e.json()).data : undefined;
      const { record, changed } = change(cur);
      try {
        const revision = e ? await kv.update(name, encodeJson(record), e.revision) : await kv.create(name, encodeJson(record));
        return { name, generation: record.generation, changed, revision };
      } catch {
        await new Promise((r) => setTimeout(r, 5 * (attempt + 1)));
      }
    }
    throw new ApiError('conflict', `jail "${name}" is being changed by someone else; try again`);
  }

  // --- packing: what the scheduler hears, kept in the live packing -----------------------------

  /** A heartbeat: the host's capacity, labels and (once it speaks) liveness, and what it holds. */
  private noteHeartbeat(hb: Heartbeat) {
    this.held.set(hb.host, hb.jails);
    this.packing.host({ name: hb.host, up: true, capacity: hb.capacity, labels: hb.labels });
  }

  /** The placement cache changed for `name`: its reservation follows (a move in flight keeps its target). */
  private notePlacement(name: string) {
    this.packing.at(name, this.moves.get(name)?.to ?? this.placements.get(name)?.host ?? null);
  }

  // --- drain -----------------------------------------------------------------------------------
  // A draining host takes no new jails (the packing skips it); the leader moves its jails off,
  // `parallel` at a time, each one started on its new host before its old copy stops:
  //   1. a host is chosen and reserved; the desired record is re-written (same generation) so this
  //      attempt's commands carry a revision of their own;
  //   2. `ensure` generation+1 goes to the new host, and the move waits until that copy runs (its
  //      event, or the host's heartbeat). The old host's agent leaves its copy alone meanwhile: the
  //      placement still names it at the old generation, and the new host's agent does not fence a
  //      copy whose generation is newer than the placement's;
  //   3. the placement is written (new host, generation+1): the old host's agent fences its copy,
  //      and is also told to destroy it; the desired generation is raised to match.
  // All of it is in KV, so a new leader picks a drain up where the old one stopped (reconcile
  // finishes a move whose placement is newer than its desired record).

  /** Follows the hosts bucket (drains). */
  private async watchHosts() {
    const watch = followBucket(
      this.nc!,
      BUCKET_HOSTS,
      (e) => {
        const r = e.operation === 'PUT' ? hostRecordSchema.safeParse(e.json()).data : undefined;
        if (r) this.drains.set(e.key, { record: r, revision: e.revision });
        else this.drains.delete(e.key);
        this.packing.host({ name: e.key, draining: r?.draining ?? false });
        if (!r?.draining) for (const [name, b] of this.blocked) if (b.host === e.key) this.blocked.delete(name);
        this.drainSoon();
      },
      this.log,
    );
    this.hostsWatchStop = () => watch.stop();
    await Promise.race([watch.synced, new Promise((r) => setTimeout(r, 30_000))]);
  }

  /** API `drain` / `undrain`: records the request in the hosts bucket; the leader acts on it. */
  private async setDrain(verb: 'drain' | 'undrain', msg: Msg) {
    const req = verb === 'drain' ? decodeWith(drainRequestSchema, msg.data) : { ...decodeWith(undrainRequestSchema, msg.data), parallel: 1 };
    const jails = this.jailsOn(req.host);
    const known = this.liveness.hosts(Date.now()).some((h) => h.name === req.host) || jails.length > 0 || this.drains.has(req.host);
    if (!known) throw new ApiError('not_found', `no host named "${req.host}" (not heard from since this scheduler started, and no jail is placed on it)`);
    const kv = this.kv!.hosts;
    if (verb === 'undrain') {
      await kv.delete(req.host);
      this.log.info({ host: req.host }, 'undrained: the host takes jails again');
      return { host: req.host, draining: false, jails };
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await kv.get(req.host);
      const cur = e?.operation === 'PUT' ? hostRecordSchema.safeParse(e.json()).data : undefined;
      const record: HostRecord = { v: WIRE_VERSION, draining: true, parallel: req.parallel, since: cur?.draining ? cur.since : new Date().toISOString(), blocked: cur?.blocked ?? [] };
      try {
        if (e) await kv.update(req.host, encodeJson(record), e.revision);
        else await kv.create(req.host, encodeJson(record));
        this.log.info({ host: req.host, jails: jails.length, parallel: req.parallel }, 'draining');
        return { host: req.host, draining: true, jails };
      } catch {
        await new Promise((r) => setTimeout(r, 5 * (attempt + 1)));
      }
    }
    throw new ApiError('conflict', `host "${req.host}" is being changed by someone else; try again`);
  }

  /** Jails placed on `host` now, by name. */
  private jailsOn(host: string): string[] {
    return [...this.placements].filter(([, p]) => p.host === host).map(([name]) => name).sort();
  }

  /** Starts moves off every draining host, up to its `parallel`, skipping jails blocked a moment ago. */
  private drainSoon() {
    if (!this.isLeader) return;
    const now = Date.now();
    for (const [host, { record }] of this.drains) {
      if (!record.draining || this.hostDown(host, now)) continue;
      let room = record.parallel - [...this.moves.values()].filter((m) => m.from === host).length;
      for (const name of this.jailsOn(host)) {
        if (room <= 0) break;
        if (this.moves.has(name) || this.busy.has(name) || (this.blocked.get(name)?.retryAt ?? 0) > now) continue;
        room--;
        this.startMove(name, host);
      }
      void this.reportBlocked(host);
    }
  }

  /** Runs one move with the jail's reconciles held off (they run after it, as after any change). */
  private startMove(name: string, from: string) {
    this.busy.add(name);
    this.moves.set(name, { from, to: null });
    const run = this.moveJail(name, from)
      .catch((err: Error) => ({ reason: `move failed: ${err.message}`, retryMs: 5000 }))
      .then((outcome) => {
        this.moves.delete(name);
        this.notePlacement(name);
        if (outcome) this.blocked.set(name, { host: from, reason: outcome.reason, retryAt: Date.now() + outcome.retryMs });
        else this.blocked.delete(name);
        this.busy.delete(name);
        if (this.dirty.delete(name)) this.reconcileSoon(name);
        this.drainSoon();
      });
    this.running.add(run);
    void run.then(() => this.running.delete(run));
  }

  /**
   * Moves one jail off `from`. Resolves undefined when it moved (or no longer needs to), else why
   * not (`reason: null` for a race that is simply retried) and when to try again.
   */
  private async moveJail(name: string, from: string): Promise<{ reason: string | null; retryMs: number } | undefined> {
    const kv = this.kv!;
    const d = await kv.desired.get(name);
    const desired = d?.operation === 'PUT' ? desiredRecordSchema.safeParse(d.json()).data : undefined;
    const pEntry = await kv.placement.get(name);
    const placement = pEntry?.operation === 'PUT' ? placementRecordSchema.safeParse(pEntry.json()).data : undefined;
    if (!d || !desired || desired.desired === 'removed' || !pEntry || placement?.host !== from) return undefined;
    if (placement.generation !== desired.generation) return { reason: null, retryMs: 500 }; // reconcile settles it first
    if (desired.spec.placement.host) return { reason: `pinned to host "${from}" (placement.host): remove the pin to let it move`, retryMs: 10_000 };
    const release = await this.placementLock();
    let to: string;
    try {
      const r = this.packing.place(desired.spec);
      if (!r.host) {
        this.notePlacement(name);
        return { reason: r.reason, retryMs: 2000 };
      }
      to = r.host;
      this.moves.set(name, { from, to });
    } finally {
      release();
    }
    const generation = desired.generation + 1;
    const log = this.log.child({ jail: name, from, to, generation });
    const now = () => new Date().toISOString();
    if (desired.desired !== 'running') {
      // nothing runs: the placement moves, and reconcile sends the new host its (stopped) copy
      if (!(await this.writePlacement(name, { v: WIRE_VERSION, host: to, generation, reason: null }, pEntry))) return { reason: null, retryMs: 500 };
      const { revision } = await this.raiseGeneration(name, generation);
      await this.publish(from, { v: WIRE_VERSION, op: 'destroy', jail: name, generation: desired.generation, revision, issuedAt: now() });
      log.info('moved a stopped jail off a draining host');
      return undefined;
    }
    // 1. a revision of this attempt's own (a retried move must not be taken for a replayed command)
    const touch = await this.casDesired(name, (cur) => {
      if (!cur || cur.generation !== desired.generation || cur.desired !== 'running') throw new ApiError('conflict', 'changed meanwhile');
      return { record: { ...cur, updatedAt: now() }, changed: false };
    }).catch(() => null);
    if (!touch) return { reason: null, retryMs: 500 };
    // 2. the new copy first
    const copy = this.copyRunning(to, name, generation, this.opts.moveTimeoutMs ?? 120_000);
    await this.publish(to, { v: WIRE_VERSION, op: 'ensure', jail: name, generation, revision: touch.revision, desired: 'running', spec: desired.spec, issuedAt: now() });
    const ran = await copy;
    const abandon = async (why: string) => {
      // the new copy goes (a later revision, or its agent would take the destroy for a replay)
      const again = await this.casDesired(name, (cur) => {
        if (!cur) throw new ApiError('not_found', 'gone');
        return { record: { ...cur, updatedAt: now() }, changed: false };
      }).catch(() => null);
      await this.publish(to, { v: WIRE_VERSION, op: 'destroy', jail: name, generation, revision: again?.revision ?? touch.revision + 1, issuedAt: now() }).catch((err) =>
        // not the leader any more: the new host's agent fences the copy once it sees the placement
        // of whoever leads now (it checks the placement right after it creates a copy)
        log.warn({ err: (err as Error).message }, 'could not tell the new host to drop its copy'),
      );
      log.warn({ why }, 'move abandoned: the jail stays where it is');
      return { reason: why, retryMs: 30_000 };
    };
    if (ran !== true) return abandon(`its new copy on ${to} ${ran}`);
    if (!this.isLeader) return abandon('this scheduler no longer leads');
    // 3. the desired generation goes up, only if nothing changed since step 1: an apply or a stop
    //    made meanwhile wins (the move is abandoned and reconcile carries the change out)
    const cur = await kv.desired.get(name).catch(() => null);
    const rec = cur && cur.operation === 'PUT' && cur.revision === touch.revision ? desiredRecordSchema.safeParse(cur.json()).data : undefined;
    if (!rec) return abandon('was changed meanwhile');
    let revision: number;
    try {
      revision = await kv.desired.update(name, encodeJson({ ...rec, generation, updatedAt: now() }), touch.revision);
    } catch {
      return abandon('was changed meanwhile');
    }
    // 4. the placement moves: the old host's agent fences its copy
    if (!(await this.writePlacement(name, { v: WIRE_VERSION, host: to, generation, reason: null }, pEntry))) log.warn('placement not written; reconcile settles it');
    await this.publish(from, { v: WIRE_VERSION, op: 'destroy', jail: name, generation: desired.generation, revision, issuedAt: now() });
    this.published.set(name, `${generation}/${revision}@${to}`);
    log.info('moved off a draining host');
    return undefined;
  }

  /** Raises the desired generation to at least `generation` (a move's), keeping every other change. */
  private raiseGeneration(name: string, generation: number) {
    return this.casDesired(name, (cur) => {
      if (!cur) throw new ApiError('not_found', `no jail named "${name}"`);
      if (cur.generation >= generation) return { record: cur, changed: false };
      return { record: { ...cur, generation, updatedAt: new Date().toISOString() }, changed: true };
    });
  }

  /**
   * Resolves true once `host` runs `jail` at `generation` (its event, or its heartbeat for a copy
   * that ran before we listened), else what went wrong: failed, its host went down, or too slow.
   */
  private copyRunning(host: string, jail: string, generation: number, timeoutMs: number): Promise<true | string> {
    return new Promise((resolve) => {
      let done = false;
      const cancel = () => finish('was left waiting: the scheduler is stopping');
      const finish = (r: true | string) => {
        if (done) return;
        done = true;
        this.waitingCopies.delete(cancel);
        clearInterval(poll);
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(r);
      };
      const sub = this.nc!.subscribe(subjects.evt(host, jail), {
        callback: (err, msg) => {
          if (err) return;
          let e;
          try {
            e = decodeWith(stateEventSchema, msg.data);
          } catch {
            return; // the status service reports malformed events
          }
          if (e.generation !== generation) return;
          if (e.state === 'running') finish(true);
          else if (e.state === 'failed') finish(`failed (${e.error ? `${e.error.step}: ${e.error.message}` : 'no reason given'})`);
        },
      });
      const poll = setInterval(() => {
        if (this.held.get(host)?.some((j) => j.name === jail && j.generation === generation && j.state === 'running')) finish(true);
        else if (this.hostDown(host)) finish('lost its host (down)');
      }, 200);
      const timer = setTimeout(() => finish(`did not run within ${timeoutMs / 1000} s`), timeoutMs);
      this.waitingCopies.add(cancel);
    });
  }

  /** Writes the jails a drain cannot move (and why) into the host's record, when that changed. */
  private async reportBlocked(host: string) {
    const cur = this.drains.get(host);
    if (!cur?.record.draining) return;
    const on = new Set(this.jailsOn(host));
    const list = [...this.blocked]
      .filter(([name, b]) => b.host === host && b.reason !== null && on.has(name))
      .map(([name, b]) => ({ name, reason: b.reason! }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    if (JSON.stringify(list) === JSON.stringify(cur.record.blocked)) return;
    const record: HostRecord = { ...cur.record, blocked: list };
    try {
      const revision = await this.kv!.hosts.update(host, encodeJson(record), cur.revision);
      this.drains.set(host, { record, revision });
    } catch {
      // written meanwhile (drain, undrain): the watch brings it, the next pass compares again
    }
  }
}
