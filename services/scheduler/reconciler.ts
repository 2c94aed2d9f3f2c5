// The scheduler's executor: keeps what it hears (records, heartbeats, liveness, drains) and
// carries out what decide.ts and move.ts say, through its ports (the store, a command sink, a
// source of state events). No NATS and no timers of its own beyond a move's wait: the wiring
// (scheduler.ts) feeds it and ticks it, and tests drive it in-process on the memory store.
//
// Work goes in passes: every jail marked dirty since the last pass is decided at once, the jails
// that need a host are placed as one batch (so an apply of many packs as `plan` does), and the
// actions run (32 jails at a time, each jail's actions in order, a failed one ending that jail's
// turn with a retry). A jail whose actions changed a record is decided again in the next pass,
// until nothing is left to do. Jails being moved by a drain sit out the passes until the move ends.
import { WIRE_VERSION, type Command, type Heartbeat, type JailSpec, type PlacementRecord, type PlacementStrategy, type StateEvent } from '../../contracts/index.js';
import { DEFAULT_JAIL_CIDR, type HostLiveness, type Logger } from '../common/index.js';
import { JailNetwork } from '../common/jail-network.js';
import { addressWanted, decideJail, jailsToMove, placementOf, placementUnchanged, publishedKey, settled, type Action, type Facts, type JailView } from './decide.js';
import { LivePacking } from './live-packing.js';
import { abandoned, checkMove, confirmMove, copyVerdict, copyWaitMs, dropNewCopy, movedPlacement, newCopyCommand, noHost, oldCopyCommand, touched, type MoveBasis, type MoveOutcome } from './move.js';
import type { PlaceResult } from './packing.js';
import type { PlanResult } from './plan.js';
import { CasConflict, isReadable, type SchedulerStore, type StoreChange } from './store.js';
import type { ReconcilerMetrics } from './scheduler-metrics.js';

/** Where commands go: a host's durable stream. Rejects when it cannot publish (not leading, broker down). */
export interface CommandSink {
  publish(host: string, command: Command): Promise<void>;
}

/** State events of one jail on one host, while the returned function is not called. */
export interface EventSource {
  follow(host: string, jail: string, each: (e: StateEvent) => void): () => void;
}

export interface ReconcilerOptions {
  store: SchedulerStore;
  commands: CommandSink;
  events: EventSource;
  log: Logger;
  /** The one liveness rule (services/common), fed by the heartbeat feed the wiring owns. */
  liveness: HostLiveness;
  /** True while this scheduler holds the lease: only the leader acts. */
  leading: () => boolean;
  now: () => number;
  strategy: PlacementStrategy;
  moveTimeoutMs: number;
  /** How many jails' actions run at once in a pass. */
  parallel?: number;
  /** Told what the reconciler did (the /metrics of `serve scheduler`). */
  metrics?: ReconcilerMetrics;
  /** The cluster's jail network (`--jail-cidr`): where vnet jails' addresses come from (default DEFAULT_JAIL_CIDR). */
  jailNetwork?: JailNetwork;
}

export class Reconciler {
  readonly packing: LivePacking;
  private readonly liveness: HostLiveness;
  private readonly log: Logger;
  private readonly dirty = new Set<string>();
  /** Jails whose actions a pass is carrying out now (a drain leaves them alone meanwhile). */
  private readonly executing = new Set<string>();
  /** name → what was last published for it (see publishedKey). */
  private readonly published = new Map<string, string>();
  /** Revisions of unreadable records already reported, by `bucket/jail`. */
  private readonly reported = new Map<string, number>();
  /** What each host's last heartbeat says it holds (a move's new copy may be seen running there). */
  private readonly held = new Map<string, Heartbeat['jails']>();
  /** Jails being moved off a draining host (the target once chosen). */
  private readonly moves = new Map<string, { from: string; to: string | null }>();
  /** Jails a drain could not move: why, and not before when to try again. */
  private readonly blocked = new Map<string, { host: string; reason: string | null; retryAt: number }>();
  /** Moves waiting for their new copy: stop() ends the wait. */
  private readonly waiting = new Set<() => void>();
  private readonly work = new Set<Promise<unknown>>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private readonly warmUntil: number;
  private passing: Promise<void> | null = null;
  private stopped = false;
  /** The addresses bucket by jail (address → jail is the bucket itself), and addresses being claimed now. */
  private readonly addressOf = new Map<string, string>();
  private readonly holderOf = new Map<string, string>();
  private readonly claiming = new Set<string>();
  private lastClaimed: string | undefined;
  private readonly jailNetwork: JailNetwork;

  constructor(private readonly o: ReconcilerOptions) {
    this.log = o.log;
    this.liveness = o.liveness;
    this.packing = new LivePacking(o.strategy);
    this.jailNetwork = o.jailNetwork ?? JailNetwork.parse(DEFAULT_JAIL_CIDR);
    // a scheduler that has just started has not heard every live host: for one TTL it places nothing new
    this.warmUntil = o.liveness.startedAt + o.liveness.ttlMs;
    o.store.onChange((c) => this.onStoreChange(c));
  }

  // --- what the scheduler hears -----------------------------------------------------------------

  /** A host is down once it has been silent for a TTL (or was never heard in the TTL after the start). */
  hostDown(host: string, now = this.o.now()): boolean {
    return this.liveness.isDown(host, now);
  }

  /** Whether `host` was heard since the start, or holds a jail, or has a drain record. */
  knownHost(host: string): boolean {
    return this.liveness.hosts(this.o.now()).some((h) => h.name === host) || this.jailsOn(host).length > 0 || this.o.store.hosts.get(host) !== undefined;
  }

  /** Jails placed on `host` now, by name. */
  jailsOn(host: string): string[] {
    const out: string[] = [];
    for (const p of this.o.store.placements.entries()) if (isReadable(p) && p.value.host === host) out.push(p.key);
    return out.sort();
  }

  /** A heartbeat the feed admitted (liveness has noted it): the host's capacity, labels and what it holds. */
  onHeartbeat(hb: Heartbeat): void {
    this.held.set(hb.host, hb.jails);
    this.packing.host({ name: hb.host, up: true, capacity: hb.capacity, labels: hb.labels, volumes: hb.volumes });
  }

  /** A host heard for the first time, or again after it was down. */
  hostUp(host: string): void {
    this.log.info({ host }, 'host up');
    this.resync();
  }

  private onStoreChange(c: StoreChange): void {
    if (c.bucket === 'desired') {
      const d = c.slot;
      if (!d) this.packing.spec(c.key, undefined);
      else if (isReadable(d)) this.packing.spec(c.key, (d.value as { spec: Parameters<LivePacking['place']>[0] }).spec);
      // an unreadable record keeps what the packing held for the jail: it still runs as it was
      this.mark(c.key);
    } else if (c.bucket === 'placements') {
      this.notePlacement(c.key);
      this.mark(c.key);
    } else if (c.bucket === 'addresses') {
      const before = this.holderOf.get(c.key);
      if (before !== undefined && this.addressOf.get(before) === c.key) this.addressOf.delete(before);
      this.holderOf.delete(c.key);
      if (isReadable(c.slot)) {
        const jail = (c.slot.value as { jail: string }).jail;
        this.holderOf.set(c.key, jail);
        this.addressOf.set(jail, c.key);
      }
    } else {
      const r = isReadable(c.slot) ? (c.slot.value as { draining: boolean }) : undefined;
      this.packing.host({ name: c.key, draining: r?.draining ?? false });
      if (!r?.draining) for (const [name, b] of this.blocked) if (b.host === c.key) this.blocked.delete(name);
      this.drainSoon();
    }
  }

  /** The packing's reservation follows the placement (a move in flight keeps its target). */
  private notePlacement(name: string): void {
    const p = this.o.store.placements.get(name);
    this.packing.at(name, this.moves.get(name)?.to ?? (isReadable(p) ? p.value.host : null));
  }

  // --- ticks from the wiring ----------------------------------------------------------------------

  /** A host went down: its jails are reconciled (moved, or left `lost`). */
  hostWentDown(host: string): void {
    const jails = this.jailsOn(host);
    this.packing.host({ name: host, up: false });
    this.log.warn({ host, jails: jails.length }, 'host down');
    for (const name of jails) this.mark(name);
  }

  /** The periodic pass: marks only what is not settled, from the caches, asking nothing of the KV. */
  resync(): void {
    if (!this.o.leading()) return;
    const facts = this.facts();
    for (const d of this.o.store.desired.entries()) {
      if (!settled(this.view(d.key), facts)) this.mark(d.key);
    }
    this.sweepAddresses();
    this.drainSoon();
  }

  /**
   * Addresses whose jail is gone (no desired record, or a tombstone) and whose placement does not
   * hold them go back to the pool: what an `rm` cut short between its steps left behind.
   */
  private sweepAddresses(): void {
    for (const [address, jail] of this.holderOf) {
      const d = this.o.store.desired.get(jail);
      const p = this.o.store.placements.get(jail);
      if (d && (!isReadable(d) || d.value.desired !== 'removed')) continue;
      if (p && (!isReadable(p) || p.value.address === address)) continue;
      void this.releaseAddress(jail, address).catch(() => undefined);
    }
  }

  /** Deletes the address record if `jail` still holds it. */
  private async releaseAddress(jail: string, address: string): Promise<void> {
    const cur = await this.o.store.addresses.fetch(address);
    if (!isReadable(cur) || cur.value.jail !== jail) return;
    await this.o.store.addresses.remove(address, cur.revision);
    this.log.info({ jail, address }, 'address released');
  }

  /** Creates the address record for `jail` (true), or finds it held: true if by this jail. */
  private async claimOne(jail: string, address: string): Promise<boolean> {
    const a = this.o.store.addresses;
    this.claiming.add(address);
    try {
      await a.put(address, { v: WIRE_VERSION, jail, since: new Date(this.o.now()).toISOString() }, 0);
      return true;
    } catch (err) {
      if (!(err instanceof CasConflict)) throw err;
      const cur = await a.fetch(address);
      return isReadable(cur) && cur.value.jail === jail;
    } finally {
      this.claiming.delete(address);
    }
  }

  /**
   * An address for `jail`: `want` if given and free (or already its own), else the next free one
   * of the jail network. `reason` when there is none, naming the field or the pool.
   */
  private async claimAddress(jail: string, want: string | null): Promise<{ address: string } | { reason: string }> {
    const net = this.jailNetwork;
    if (want !== null) {
      const why = net.refuse(want);
      if (why) return { reason: `network.address: ${why}` };
      if (await this.claimOne(jail, want)) return { address: want };
      return { reason: `network.address: ${want} is held by jail "${this.holderOf.get(want) ?? 'another jail'}"` };
    }
    // an address claimed for it before (a pass cut short between the claim and the placement)
    const own = this.addressOf.get(jail);
    if (own && net.refuse(own) === null) return { address: own };
    for (const address of net.candidates(this.lastClaimed)) {
      if (this.holderOf.has(address) || this.claiming.has(address)) continue;
      this.lastClaimed = address;
      if (await this.claimOne(jail, address)) return { address };
    }
    return { reason: `no free address in the jail network ${net.cidr} (all ${net.capacity} are held)` };
  }

  /** The address a new placement of the jail holds: the previous one if its spec still fits it, else a claimed one. */
  private async addressFor(jail: string, spec: JailSpec, held: string | undefined): Promise<{ address?: string; release?: string } | { reason: string }> {
    const want = addressWanted(spec, held);
    if (want === 'ok') return held ? { address: held } : {};
    if (want === 'none') return { release: held };
    const r = await this.claimAddress(jail, want);
    if ('reason' in r) return r;
    return { address: r.address, ...(held && held !== r.address ? { release: held } : {}) };
  }

  /** Now leading: what another leader published is unknown here, so whatever is unsettled is published again. */
  gainedLead(): void {
    this.published.clear();
    this.resync();
  }

  /** Resolves when no pass runs, nothing is dirty and no move or retry is under way (for tests and shutdown). */
  async idle(): Promise<void> {
    for (;;) {
      if (this.passing) await this.passing;
      else if (this.work.size) await Promise.all(this.work);
      else if (this.dirty.size && this.o.leading() && !this.stopped) await this.pass();
      else return;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.retryTimers) clearTimeout(t);
    // a move waiting for its new copy gives up now (the copy is told to go, the jail stays put)
    for (const cancel of this.waiting) cancel();
    await this.idle();
  }

  // --- passes ---------------------------------------------------------------------------------------

  private facts(): Facts {
    const now = this.o.now();
    return { now, warming: now < this.warmUntil, hostDown: (h) => this.hostDown(h, now) };
  }

  private specOf(name: string): JailSpec | undefined {
    const d = this.o.store.desired.get(name);
    return isReadable(d) ? d.value.spec : undefined;
  }

  private view(name: string): JailView {
    return { name, desired: this.o.store.desired.get(name), placement: this.o.store.placements.get(name), published: this.published.get(name) };
  }

  /** Marks a jail for the next pass (only the leader acts). */
  mark(name: string): void {
    if (!this.o.leading() || this.stopped) return;
    this.dirty.add(name);
    if (!this.passing) void this.pass();
  }

  /** Failed turns in a row, per jail: each retry waits longer (200 ms doubling to 5 s, with jitter). */
  private readonly failures = new Map<string, number>();

  private retryLater(name: string): void {
    const n = this.failures.get(name) ?? 0;
    this.failures.set(name, n + 1);
    const ms = Math.min(5000, 200 * 2 ** n) * (0.75 + Math.random() / 2);
    const t = setTimeout(() => {
      this.retryTimers.delete(t);
      this.mark(name);
    }, ms);
    t.unref();
    this.retryTimers.add(t);
  }

  private pass(): Promise<void> {
    if (this.passing) return this.passing;
    const run = (async () => {
      // let the changes of this moment gather: one pass then carries them all
      await new Promise((r) => setImmediate(r));
      while (this.dirty.size && this.o.leading() && !this.stopped) {
        const began = performance.now();
        const names = [...this.dirty].filter((n) => !this.moves.has(n));
        this.dirty.clear();
        const facts = this.facts();
        const plans = names.map((name) => ({ name, actions: decideJail(this.view(name), facts) }));
        const places = plans.flatMap((p) => p.actions.filter((a): a is Extract<Action, { kind: 'place' }> => a.kind === 'place'));
        const chosen = this.placeAll(places);
        let next = 0;
        const worker = async () => {
          for (let i = next++; i < plans.length; i = next++) {
            const { name, actions } = plans[i]!;
            this.executing.add(name);
            await this.execute(name, actions, chosen).finally(() => this.executing.delete(name));
          }
        };
        await Promise.all(Array.from({ length: Math.min(this.o.parallel ?? 32, plans.length) }, worker));
        this.o.metrics?.passDone((performance.now() - began) / 1000);
      }
      // jails a pass held are free for a drain again
      this.drainSoon();
    })().finally(() => {
      this.passing = null;
    });
    this.passing = run;
    return run;
  }

  /** Hosts for every jail of a pass that needs one: one batch, so many new jails pack together as `plan` packs them. */
  private placeAll(places: Extract<Action, { kind: 'place' }>[]): Map<string, PlaceResult> {
    if (places.length === 1) return new Map([[places[0]!.jail, this.packing.place(places[0]!.spec)]]);
    return this.packing.placeBatch(places.map((a) => a.spec));
  }

  /**
   * `jailfleet plan` on the live cluster: what an apply of `specs` would do now. A jail already
   * placed on a live host (and pinned there, if pinned) stays where it is, as apply leaves it; the
   * rest go through the same batch engine the passes use. Nothing is reserved or written.
   */
  planFleet(specs: JailSpec[]): PlanResult {
    const stay = new Map<string, JailSpec & { host: string }>();
    const fresh: JailSpec[] = [];
    for (const s of specs) {
      const p = this.o.store.placements.get(s.name);
      const d = this.o.store.desired.get(s.name);
      const host = isReadable(p) && isReadable(d) && d.value.desired !== 'removed' ? p.value.host : null;
      if (host && (!s.placement.host || s.placement.host === host) && !this.hostDown(host)) stay.set(s.name, { ...s, host });
      else fresh.push(s);
    }
    const r = this.packing.dryRun(fresh);
    for (const s of stay.values()) {
      let row = r.hosts.find((h) => h.host === s.host);
      if (!row) r.hosts.push((row = { host: s.host, jails: [], cpu: 0, memoryMB: 0 }));
      row.jails.push(s.name);
      row.cpu = Math.round((row.cpu + s.resources.cpu) * 1000) / 1000;
      row.memoryMB += s.resources.memoryMB;
    }
    r.hosts.sort((a, b) => (a.host < b.host ? -1 : 1));
    return r;
  }

  /** Carries out one jail's actions in order; a failure ends its turn and retries it shortly. */
  private async execute(name: string, actions: Action[], chosen: Map<string, PlaceResult>): Promise<void> {
    const log = this.log.child({ jail: name });
    const store = this.o.store;
    if (actions.length === 0) this.failures.delete(name);
    for (const a of actions) {
      try {
        switch (a.kind) {
          case 'report-unreadable': {
            const key = `${a.bucket}/${name}`;
            if (this.reported.get(key) !== a.revision) {
              this.reported.set(key, a.revision);
              log.error({ bucket: a.bucket, revision: a.revision, reason: a.reason }, `unreadable ${a.bucket} record: the jail is left as it is (apply its spec again, or rm it)`);
            }
            break;
          }
          case 'publish':
            await this.o.commands.publish(a.host, a.command);
            if (a.settles) this.published.set(name, a.settles);
            break;
          case 'raise-generation':
            await store.desired.put(name, a.record, a.revision);
            if (a.why === 'failover') {
              log.warn({ generation: a.record.generation }, 'host down: rescheduling jail');
              this.o.metrics?.failover();
            }
            break;
          case 'write-placement':
            await store.placements.put(name, a.record, a.revision);
            break;
          case 'delete-placement':
            await store.placements.remove(name, a.revision);
            this.packing.at(name, null);
            this.published.delete(name);
            break;
          case 'place': {
            let r = chosen.get(name)!;
            const held = a.previous?.record?.address;
            // a host without an address is no place: the jail stays unplaced, saying why
            const addr = await this.addressFor(name, a.spec, held);
            if ('reason' in addr) {
              if (r.host) this.packing.at(name, null);
              r = { host: null, reason: addr.reason } as PlaceResult;
            }
            const record = placementOf(a.generation, r, 'reason' in addr ? held : addr.address);
            if (placementUnchanged(a.previous, record)) return void this.failures.delete(name);
            try {
              await store.placements.put(name, record, a.previous?.revision ?? 0);
            } catch (err) {
              this.notePlacement(name); // the reservation follows what the placement says
              throw err;
            }
            if (!r.host) {
              if (a.previous?.record?.reason !== record.reason) log.warn({ reason: record.reason }, 'jail not placed');
              return void this.failures.delete(name);
            }
            if (!('reason' in addr) && addr.release) await this.releaseAddress(name, addr.release);
            log.info({ host: r.host, generation: a.generation, ...(record.address ? { address: record.address } : {}) }, 'jail placed');
            this.o.metrics?.placed();
            break;
          }
          case 'readdress': {
            const addr = await this.addressFor(name, { ...this.specOf(name)! }, a.placement.address);
            let record: PlacementRecord;
            if ('reason' in addr) {
              // the address its spec names is not to be had: unplaced, saying why (the copy is fenced)
              record = { ...a.placement, host: null, reason: addr.reason };
              log.warn({ reason: addr.reason }, 'jail not placed');
            } else {
              const { address: _old, ...rest } = a.placement;
              record = { ...rest, ...(addr.address ? { address: addr.address } : {}) };
            }
            await store.placements.put(name, record, a.revision);
            if (!('reason' in addr) && addr.release) await this.releaseAddress(name, addr.release);
            break;
          }
          case 'release-address':
            await this.releaseAddress(name, a.address);
            break;
        }
      } catch (err) {
        if (err instanceof CasConflict) log.debug({ err: err.message }, 'a write lost a race; retrying');
        else log.warn({ err: (err as Error).message, action: a.kind }, 'action failed; retrying');
        this.retryLater(name);
        return;
      }
    }
    this.failures.delete(name);
  }

  // --- drains -------------------------------------------------------------------------------------
  // A draining host takes no new jails (the packing skips it); the leader moves its jails off,
  // `parallel` at a time, each by the move protocol of move.ts.

  private drainSoon(): void {
    if (!this.o.leading() || this.stopped) return;
    const now = this.o.now();
    for (const h of this.o.store.hosts.entries()) {
      if (!isReadable(h) || !h.value.draining) continue;
      const moving = [...this.moves.values()].filter((m) => m.from === h.key).length;
      const start = jailsToMove(
        { host: h.key, parallel: h.value.parallel, jails: this.jailsOn(h.key), moving },
        (n) => this.moves.has(n) || this.dirty.has(n) || this.executing.has(n),
        (n) => this.blocked.get(n)?.retryAt ?? 0,
        now,
        this.hostDown(h.key, now),
      );
      for (const name of start) this.startMove(name, h.key);
      void this.reportBlocked(h.key);
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.work.add(p);
    void p.finally(() => this.work.delete(p)).catch(() => undefined);
    return p;
  }

  private startMove(name: string, from: string): void {
    this.moves.set(name, { from, to: null });
    void this.track(
      this.move(name, from)
        .catch((err: Error): MoveOutcome => ({ reason: `move failed: ${err.message}`, retryMs: 5000 }))
        .then((outcome) => {
          this.moves.delete(name);
          this.notePlacement(name);
          if (outcome) this.blocked.set(name, { host: from, reason: outcome.reason, retryAt: this.o.now() + outcome.retryMs });
          else this.blocked.delete(name);
          this.mark(name);
          this.drainSoon();
        }),
    );
  }

  /** Runs the move protocol of move.ts for one jail; resolves null when it moved (or no longer needs to). */
  private async move(name: string, from: string): Promise<MoveOutcome> {
    const store = this.o.store;
    const now = () => this.o.now();
    const checked = checkMove(name, from, { desired: await store.desired.fetch(name), placement: await store.placements.fetch(name) });
    if ('done' in checked) return checked.done;
    const b: MoveBasis = checked.go;
    const r = this.packing.place(b.desired.spec);
    if (!r.host) {
      this.notePlacement(name);
      return noHost(r.reason ?? "no host fits");
    }
    const to = r.host;
    this.moves.set(name, { from, to });
    const log = this.log.child({ jail: name, from, to, generation: b.desired.generation + 1 });
    if (b.desired.desired !== 'running') {
      // nothing runs: the placement moves, and reconcile sends the new host its (stopped) copy
      try {
        await store.placements.put(name, movedPlacement(to, b), b.placementRevision);
        const revision = await store.desired.put(name, { ...b.desired, generation: b.desired.generation + 1, updatedAt: new Date(now()).toISOString() }, b.desiredRevision);
        await this.o.commands.publish(from, oldCopyCommand(b, revision, now()));
      } catch {
        return { reason: null, retryMs: 500 };
      }
      log.info('moved a stopped jail off a draining host');
      this.o.metrics?.moved('moved');
      return null;
    }
    // 2. a revision of this attempt's own
    let touchRevision: number;
    try {
      touchRevision = await store.desired.put(name, touched(b, now()), b.desiredRevision);
    } catch {
      return { reason: null, retryMs: 500 };
    }
    const abandon = async (why: string): Promise<MoveOutcome> => {
      const cur = await store.desired.fetch(name).catch(() => undefined);
      let revision = touchRevision + 1;
      if (isReadable(cur)) revision = await store.desired.put(name, { ...cur.value, updatedAt: new Date(now()).toISOString() }, cur.revision).catch(() => revision);
      await this.o.commands.publish(to, dropNewCopy(b, revision, now())).catch((err) =>
        // not the leader any more: the new host's agent fences the copy once it sees the placement
        // of whoever leads now (it checks the placement right after it creates a copy)
        log.warn({ err: (err as Error).message }, 'could not tell the new host to drop its copy'),
      );
      log.warn({ why }, 'move abandoned: the jail stays where it is');
      this.o.metrics?.moved('abandoned');
      return abandoned(why);
    };
    // 3. the new copy first
    const generation = b.desired.generation + 1;
    const copy = this.copyRunning(to, name, generation, b.desired.spec);
    try {
      await this.o.commands.publish(to, newCopyCommand(b, touchRevision, now()));
    } catch (err) {
      copy.cancel();
      return abandon(`its new copy could not be commanded (${(err as Error).message})`);
    }
    const ran = await copy.result;
    if (ran !== true) return abandon(`its new copy on ${to} ${ran}`);
    if (!this.o.leading()) return abandon('this scheduler no longer leads');
    // 4. the desired generation goes up, only if nothing changed since step 2
    const confirmed = confirmMove(b, await store.desired.fetch(name).catch(() => undefined), touchRevision, now());
    if ('abandon' in confirmed) return abandon(confirmed.abandon);
    let revision: number;
    try {
      revision = await store.desired.put(name, confirmed.record, confirmed.revision);
    } catch {
      return abandon('was changed meanwhile');
    }
    // 5. the placement moves: the old host's agent fences its copy
    await store.placements.put(name, movedPlacement(to, b), b.placementRevision).catch(() => log.warn('placement not written; reconcile settles it'));
    await this.o.commands.publish(from, oldCopyCommand(b, revision, now()));
    this.published.set(name, publishedKey(generation, revision, to));
    log.info('moved off a draining host');
    this.o.metrics?.moved('moved');
    return null;
  }

  /**
   * Resolves true once `host` runs `jail` at `generation`, healthy when it has a check (its event
   * or heartbeat), else what went wrong.
   */
  private copyRunning(host: string, jail: string, generation: number, spec: JailSpec): { result: Promise<true | string>; cancel: () => void } {
    const checked = spec.health !== undefined;
    const waitMs = copyWaitMs(spec, this.o.moveTimeoutMs);
    let cancel!: () => void;
    const result = new Promise<true | string>((resolve) => {
      let done = false;
      const finish = (r: true | string) => {
        if (done) return;
        done = true;
        this.waiting.delete(stopWait);
        clearInterval(poll);
        clearTimeout(timer);
        unfollow();
        resolve(r);
      };
      const stopWait = () => finish('was left waiting: the scheduler is stopping');
      cancel = stopWait;
      const unfollow = this.o.events.follow(host, jail, (e) => {
        const v = copyVerdict(e, generation, checked);
        if (v !== undefined) finish(v);
      });
      const poll = setInterval(() => {
        if (this.held.get(host)?.some((j) => j.name === jail && copyVerdict(j, generation, checked) === true)) finish(true);
        else if (this.hostDown(host)) finish('lost its host (down)');
      }, 200);
      const timer = setTimeout(() => finish(`did not ${checked ? 'become healthy' : 'run'} within ${waitMs / 1000} s`), waitMs);
      this.waiting.add(stopWait);
    });
    return { result, cancel };
  }

  /** Writes the jails a drain cannot move (and why) into the host's record, when that changed. */
  private async reportBlocked(host: string): Promise<void> {
    const cur = this.o.store.hosts.get(host);
    if (!isReadable(cur) || !cur.value.draining) return;
    const on = new Set(this.jailsOn(host));
    const list = [...this.blocked]
      .filter(([name, b]) => b.host === host && b.reason !== null && on.has(name))
      .map(([name, b]) => ({ name, reason: b.reason! }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    if (JSON.stringify(list) === JSON.stringify(cur.value.blocked)) return;
    // written meanwhile (drain, undrain): the change brings it back here, to compare again
    await this.o.store.hosts.put(host, { ...cur.value, blocked: list }, cur.revision).catch(() => undefined);
  }
}
