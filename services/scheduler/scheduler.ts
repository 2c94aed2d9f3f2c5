// The scheduler: API handlers write the desired state (KV); the reconciler places each jail and
// publishes commands to its host's durable stream. It never talks to a host except through NATS.
import { hostname as osHostname } from 'node:os';
import { jetstream } from '@nats-io/jetstream';
import type { KvEntry } from '@nats-io/kv';
import {
  BUCKET_DESIRED,
  BUCKET_PLACEMENT,
  SCHEDULER_QUEUE,
  WIRE_VERSION,
  applyRequestSchema,
  commandMsgId,
  desiredRecordSchema,
  heartbeatSchema,
  nameRequestSchema,
  placementRecordSchema,
  subjectTokens,
  subjects,
  type ApiVerb,
  type Command,
  type DesiredRecord,
  type JailSpec,
  type PlacementRecord,
} from '../../contracts/index.js';
import { DEFAULT_LEASE_MS, connectNats, followBucket, decodeWith, encodeJson, ensureTopology, type Logger, type Msg, type NatsConnection, type Topology } from '../common/index.js';
import { HostLiveness } from './host-liveness.js';
import { LeaderLease } from './leader-lease.js';
import { placeJail } from './placement.js';

export interface SchedulerOptions {
  servers: string[];
  logger: Logger;
  hostTtlMs?: number;
  /** Full reconcile pass interval (new hosts, unplaced jails). */
  resyncMs?: number;
  /** The leader lease: a standby scheduler takes over within this long after the leader dies. */
  leaseMs?: number;
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

  constructor(private readonly opts: SchedulerOptions) {
    this.liveness = new HostLiveness(opts.hostTtlMs ?? 3000);
    this.log = opts.logger;
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
    const verbs: ApiVerb[] = ['apply', 'stop', 'start', 'rm'];
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
          return;
        }
        const d = desiredRecordSchema.safeParse(e.json()).data;
        const movable = Boolean(d && d.spec.failover.reschedule && !d.spec.placement.host);
        this.desiredSeen.set(e.key, { revision: e.revision, removed: d?.desired === 'removed', movable });
        this.reconcileSoon(e.key);
      },
      this.log,
    );
    this.watchStop = () => (watch.stop(), pwatch.stop());
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

  /** Jails placed per host, from the placement cache (kept by the watch and our own writes). */
  private placedCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const p of this.placements.values()) if (p.host) counts.set(p.host, (counts.get(p.host) ?? 0) + 1);
    return counts;
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
    if (host && placement && !pin && desired.spec.failover.reschedule && this.hostDown(host)) {
      if (placement.generation === desired.generation) {
        // failover: the next generation, so the copy on the dead host is fenced when it returns;
        // the desired-state watch brings the jail back here to be placed
        const next: DesiredRecord = { ...desired, generation: desired.generation + 1, updatedAt: new Date().toISOString() };
        try {
          await kv.desired.update(name, encodeJson(next), d.revision);
          this.log.warn({ jail: name, host, generation: next.generation }, 'host down: rescheduling jail');
        } catch {
          this.dirty.add(name);
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
        const counts = this.placedCounts();
        const views = this.liveness.hosts(Date.now()).map((h) => ({ name: h.name, up: h.up, jails: counts.get(h.name) ?? 0 }));
        placed = placeJail(desired.spec, views);
        const record: PlacementRecord = { v: WIRE_VERSION, host: placed.host, generation: desired.generation, reason: placed.reason };
        const unchanged = !placed.host && placement && placement.reason === placed.reason && placement.generation === desired.generation;
        if (!unchanged && !(await this.writePlacement(name, record, pEntry))) return this.dirty.add(name);
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
      if (!(await this.writePlacement(name, { ...placement, generation: desired.generation }, pEntry))) return this.dirty.add(name);
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
      const result = verb === 'apply' ? await this.apply(msg) : await this.setDesired(verb, msg);
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
      for (let i = next++; i < specs.length; i = next++) out[i] = await this.applyOne(specs[i]!);
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

  private async setDesired(verb: Exclude<ApiVerb, 'apply'>, msg: Msg) {
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
  ): Promise<{ name: string; generation: number; changed: boolean }> {
    const kv = this.kv!.desired;
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await kv.get(name);
      const cur = e && e.operation === 'PUT' ? desiredRecordSchema.safeParse(e.json()).data : undefined;
      const { record, changed } = change(cur);
      try {
        if (e) await kv.update(name, encodeJson(record), e.revision);
        else await kv.create(name, encodeJson(record));
        return { name, generation: record.generation, changed };
      } catch {
        await new Promise((r) => setTimeout(r, 5 * (attempt + 1)));
      }
    }
    throw new ApiError('conflict', `jail "${name}" is being changed by someone else; try again`);
  }
}
